//! A [`ClientAuth`] made ready by `build()`, and what it puts on each token request.

use std::time::Duration;

use http::{HeaderValue, Uri};
use zeroize::Zeroizing;

use super::assertion::{AssertionConfig, ASSERTION_TYPE};
use super::external::Kind;
#[cfg(feature = "rustls-no-provider")]
use super::signer;
use super::{encoding, secret_forms, ClientAuth, Method, Secret};
use crate::error::hints;
use crate::{ConfigError, Error};

impl ClientAuth {
    /// Check what can be checked before any request, and get ready to sign: `build()` calls
    /// this once.
    pub(crate) fn prepare(self) -> Result<PreparedAuth, ConfigError> {
        self.check_id_and_secret()?;
        let assertion = match &self.method {
            Method::SecretJwt { secret } => Some(AssertionConfig::secret(
                secret,
                self.assertion_audience.clone(),
                self.assertion_lifetime,
            )?),
            #[cfg(feature = "rustls-no-provider")]
            Method::PrivateKeyJwt { key } => Some(AssertionConfig::private(
                key,
                self.assertion_audience.clone(),
                self.assertion_lifetime,
            )?),
            _ => None,
        };
        #[cfg(feature = "rustls-no-provider")]
        let signed_by = match &self.method {
            Method::Signer { signer } => Some(signer::SignerAssertion::new(
                signer.clone(),
                self.assertion_audience.clone(),
                self.assertion_lifetime,
            )?),
            _ => None,
        };
        let redact = self.secrets_sent();
        Ok(PreparedAuth {
            auth: self,
            assertion,
            #[cfg(feature = "rustls-no-provider")]
            signed_by,
            redact,
        })
    }
}

/// A [`ClientAuth`] checked and ready to sign, made once by `build()`.
#[derive(Clone)]
pub(crate) struct PreparedAuth {
    auth: ClientAuth,
    assertion: Option<AssertionConfig>,
    /// Assertions signed by a [`Signer`].
    #[cfg(feature = "rustls-no-provider")]
    signed_by: Option<signer::SignerAssertion>,
    /// Every form of the secret we send, so that no error can echo one back.
    redact: Vec<Zeroizing<String>>,
}

/// What one token request carries to authenticate the client.
pub(crate) struct Credentials {
    /// `Authorization`, for `client_secret_basic`.
    pub(crate) header: Option<HeaderValue>,
    /// Body fields, after `grant_type` and before the grant's parameters.
    pub(crate) fields: Vec<(&'static str, Zeroizing<String>)>,
    /// Credentials made for or read for this request only (an assertion, a secret read from
    /// a file), in every form they are sent, to redact from this request's errors.
    pub(crate) redact: Vec<Zeroizing<String>>,
}

impl PreparedAuth {
    pub(crate) fn auth(&self) -> &ClientAuth {
        &self.auth
    }

    /// Strings no error may show.
    pub(crate) fn redact(&self) -> &[Zeroizing<String>] {
        &self.redact
    }

    /// The credentials for one request to the token endpoint at `url`; what is read from
    /// elsewhere is read now, a closure given `timeout`.
    pub(crate) async fn credentials(
        &self,
        url: &Uri,
        timeout: Duration,
    ) -> Result<Credentials, Error> {
        let id = || Zeroizing::new(self.auth.client_id.clone());
        let mut credentials = Credentials {
            header: None,
            fields: Vec::new(),
            redact: Vec::new(),
        };
        let method = &self.auth.method;
        // Read once per request (a file may be rewritten between two reads); one read from
        // elsewhere is redacted, in every form, from this request's errors.
        let secret = match method {
            Method::Basic { secret, .. } | Method::Post { secret } | Method::Json { secret } => {
                let now = secret.now(timeout).await?;
                if let Secret::Read(_) = secret {
                    secret_forms(&self.auth.client_id, &now, method, &mut credentials.redact);
                }
                now
            }
            _ => Zeroizing::new(String::new()),
        };
        match method {
            Method::Basic { urlencode, .. } => {
                let basic = encoding::basic_credentials(&self.auth.client_id, &secret, *urlencode);
                let value = crate::wiped::concat(&[b"Basic ", basic.as_bytes()]);
                credentials.header =
                    Some(crate::wiped::sensitive_header(value).ok_or_else(|| {
                        Error::config("client credentials cannot form a Basic header")
                    })?);
            }
            Method::Post { .. } | Method::Json { .. } => {
                credentials.fields.push(("client_id", id()));
                credentials.fields.push(("client_secret", secret));
            }
            Method::Tls => credentials.fields.push(("client_id", id())),
            Method::None => {
                if !self.auth.client_id.is_empty() {
                    credentials.fields.push(("client_id", id()));
                }
            }
            Method::Assertion { from } => {
                let assertion = from.read(Kind::CLIENT_ASSERTION, timeout).await?;
                push_assertion(&mut credentials, id(), assertion);
            }
            Method::SecretJwt { .. } => {}
            #[cfg(feature = "rustls-no-provider")]
            Method::PrivateKeyJwt { .. } | Method::Signer { .. } => {}
        }
        #[cfg(feature = "rustls-no-provider")]
        if let Some(signed_by) = &self.signed_by {
            let signed = signed_by
                .assertion(&self.auth.client_id, url, timeout)
                .await?;
            push_assertion(&mut credentials, id(), signed);
        }
        if let Some(config) = &self.assertion {
            // RFC 7523 §2.2, with `client_id` (OpenID Connect Core §9 makes it optional;
            // Entra ID and others want it).
            let signed = config.assertion(&self.auth.client_id, url)?;
            push_assertion(&mut credentials, id(), signed);
        }
        Ok(credentials)
    }

    /// What to check when the endpoint answers `invalid_client` to this method.
    pub(crate) fn invalid_client_hint(&self) -> &'static str {
        match &self.auth.method {
            Method::Basic { .. } => hints::INVALID_CLIENT_BASIC,
            Method::Post { .. } | Method::Json { .. } => hints::INVALID_CLIENT_BODY,
            Method::Tls => hints::INVALID_CLIENT_TLS,
            Method::Assertion { .. } => hints::INVALID_CLIENT_FEDERATED,
            Method::None => hints::INVALID_CLIENT_NONE,
            _ => hints::INVALID_CLIENT_ASSERTION,
        }
    }
}

/// `client_id`, `client_assertion_type` and `client_assertion` (RFC 7523 §2.2, with
/// `client_id`, which OpenID Connect Core §9 makes optional and Entra ID and others want).
fn push_assertion(
    credentials: &mut Credentials,
    id: Zeroizing<String>,
    assertion: Zeroizing<String>,
) {
    credentials.fields.push(("client_id", id));
    credentials.fields.push((
        "client_assertion_type",
        Zeroizing::new(ASSERTION_TYPE.to_owned()),
    ));
    credentials
        .fields
        .push(("client_assertion", Zeroizing::new(assertion.to_string())));
    credentials.redact.push(encoding::urlencode(&assertion));
    credentials.redact.push(assertion);
}
