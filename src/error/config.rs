//! [`ConfigError`]: what `build()` (and the other constructors that check their input) found
//! wrong with the configuration, before any request is made.

use std::fmt;

use super::{Error, ErrorKind};

/// A configuration mistake found before any request: which setting, and what to fix.
///
/// Returned by the builders' `build()`, [`PrivateKeyJwt::from_pem`](crate::client_auth::PrivateKeyJwt::from_pem)
/// and the shared store's constructors. It converts into an [`Error`] of kind
/// [`ErrorKind::Config`], so `?` works in functions that return either. Never shows a secret.
///
/// ```
/// let error = tower_oauth2::ClientCredentials::builder()
///     .token_url("https://idp.example.com/oauth/token")
///     .client_secret("secret")
///     .build()
///     .unwrap_err();
/// assert_eq!(error.setting(), "client_id");
/// assert!(error.to_string().contains(".client_id(..)"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigError {
    setting: &'static str,
    message: String,
}

impl ConfigError {
    /// `message` about `setting` (the builder method or constructor to fix).
    pub(crate) fn new(setting: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            setting,
            message: message.into(),
        }
    }

    /// The setting to fix, named as the builder method or constructor that sets it
    /// (`client_id`, `token_url`, `private_key_jwt`, `tls_client_auth`, …).
    pub fn setting(&self) -> &str {
        self.setting
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigError")
            .field("setting", &self.setting)
            .field("message", &self.message)
            .finish()
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for Error {
    fn from(error: ConfigError) -> Self {
        Error::from_inner(Error::build(ErrorKind::Config, error.message))
    }
}
