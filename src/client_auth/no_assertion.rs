//! Without rustls there is no crypto provider to sign client assertions with: no client can
//! have one, and the builder methods that make them are not compiled.

use http::Uri;
use zeroize::Zeroizing;

use crate::Error;

/// `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub(crate) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Never made in this build.
#[derive(Clone)]
pub(crate) enum AssertionConfig {}

impl AssertionConfig {
    pub(crate) fn secret(
        _secret: &str,
        _audience: Option<String>,
        _lifetime: std::time::Duration,
    ) -> Result<Self, crate::ConfigError> {
        Err(crate::ConfigError::new(
            "client_secret_jwt",
            "client_secret_jwt needs tower-oauth2's `rustls` feature (its crypto signs the \
             assertion)",
        ))
    }

    pub(crate) fn assertion(
        &self,
        _client_id: &str,
        _url: &Uri,
    ) -> Result<Zeroizing<String>, Error> {
        match *self {}
    }
}
