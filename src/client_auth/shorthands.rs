//! How a builder's shorthand setters (`.client_id`, `.client_secret`, `.auth_style`,
//! `.private_key_jwt`, `.client_secret_jwt`, `.tls_client_auth`, …) become one [`ClientAuth`]:
//! the one place where choices that exclude each other are refused.

use std::time::Duration;

use zeroize::Zeroizing;

use super::external::External;
#[cfg(feature = "rustls-no-provider")]
use super::PrivateKeyJwt;
use super::{ClientAuth, Method};
use crate::transport::ClientIdentity;
use crate::ConfigError;

/// How the client sends its client secret: a shorthand for the [`ClientAuth`] constructors of
/// the same names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthStyle {
    /// [`ClientAuth::basic`]: `client_secret_basic`. The default, and what RFC 6749 says every
    /// server must support.
    #[default]
    Basic,
    /// [`ClientAuth::post`]: `client_secret_post`.
    Form,
    /// [`ClientAuth::json`]: a JSON body.
    Json,
}

/// What a builder was told about client authentication.
#[derive(Default)]
pub(crate) struct Shorthands {
    pub(crate) explicit: Option<ClientAuth>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<Zeroizing<String>>,
    pub(crate) auth_style: Option<AuthStyle>,
    pub(crate) basic_urlencode: Option<bool>,
    #[cfg(feature = "rustls-no-provider")]
    pub(crate) private_key: Option<PrivateKeyJwt>,
    pub(crate) client_secret_jwt: bool,
    pub(crate) certificate: Option<ClientIdentity>,
    pub(crate) assertion_audience: Option<String>,
    pub(crate) assertion_lifetime: Option<Duration>,
    /// `.client_secret_file(..)`.
    pub(crate) client_secret_file: Option<std::path::PathBuf>,
    /// `.client_assertion_file(..)` / `.client_assertion_fn(..)`.
    pub(crate) assertion: Option<External>,
    /// No client authentication at all is a valid choice (token exchange, jwt-bearer).
    pub(crate) allow_none: bool,
}

impl Shorthands {
    #[cfg(feature = "rustls-no-provider")]
    fn private_key(&mut self) -> Option<PrivateKeyJwt> {
        self.private_key.take()
    }

    #[cfg(not(feature = "rustls-no-provider"))]
    fn private_key(&mut self) -> Option<std::convert::Infallible> {
        None
    }

    /// The one [`ClientAuth`] these describe, or why they contradict each other.
    pub(crate) fn resolve(mut self) -> Result<ClientAuth, ConfigError> {
        let private_key = self.private_key();
        let secret = self.client_secret.take();
        let mut auth = match self.explicit.take() {
            Some(explicit) => {
                let shorthand = self.client_id.is_some()
                    || secret.is_some()
                    || self.auth_style.is_some()
                    || private_key.is_some()
                    || self.client_secret_jwt
                    || self.certificate.is_some()
                    || self.client_secret_file.is_some()
                    || self.assertion.is_some();
                if shorthand {
                    return Err(ConfigError::new(
                        "client_auth",
                        "give either .client_auth(..) or the shorthands (.client_id, \
                         .client_secret, .client_secret_file, .client_assertion_file, \
                         .client_assertion_fn, .auth_style, .private_key_jwt, \
                         .client_secret_jwt, .tls_client_auth), not both",
                    ));
                }
                explicit
            }
            None => self
                .resolve_shorthands(secret, private_key)?
                .made_by_shorthands(),
        };
        if let Some(urlencode) = self.basic_urlencode {
            auth = auth.basic_urlencode(urlencode);
        }
        if let Some(audience) = self.assertion_audience {
            auth = auth.assertion_audience(audience);
        }
        if let Some(lifetime) = self.assertion_lifetime {
            auth = auth.assertion_lifetime(lifetime);
        }
        Ok(auth)
    }

    // Without rustls no private key can be given: that branch is unreachable.
    #[cfg_attr(not(feature = "rustls-no-provider"), allow(unreachable_code))]
    fn resolve_shorthands<K: Into<KeyChoice>>(
        &mut self,
        secret: Option<Zeroizing<String>>,
        private_key: Option<K>,
    ) -> Result<ClientAuth, ConfigError> {
        let secret = secret.filter(|secret| !secret.is_empty());
        let authenticates = secret.is_some()
            || private_key.is_some()
            || self.client_secret_jwt
            || self.certificate.is_some()
            || self.client_secret_file.is_some()
            || self.assertion.is_some();
        if !authenticates && self.allow_none && self.auth_style.is_none() {
            return Ok(ClientAuth::none(self.client_id.take().unwrap_or_default()));
        }
        let id = match self.client_id.take() {
            Some(id) if !id.is_empty() => id,
            _ => {
                return Err(ConfigError::new(
                    "client_id",
                    "client_id is required: call .client_id(..)",
                ))
            }
        };
        if let Some(from) = self.assertion.take() {
            let other = if secret.is_some() {
                Some(".client_secret")
            } else if self.client_secret_file.is_some() {
                Some(".client_secret_file")
            } else if private_key.is_some() {
                Some(".private_key_jwt")
            } else if self.client_secret_jwt {
                Some(".client_secret_jwt")
            } else if self.auth_style.is_some() {
                Some(".auth_style")
            } else {
                None
            };
            if let Some(other) = other {
                return Err(ConfigError::new(
                    "client_assertion",
                    format!(
                        "a client assertion made elsewhere (.client_assertion_file or \
                         .client_assertion_fn) is the client's whole authentication: drop \
                         {other}"
                    ),
                ));
            }
            // A certificate beside it binds the tokens (RFC 8705 §3).
            let mut auth = ClientAuth::with(id, Method::Assertion { from });
            auth.certificate = self.certificate.take();
            return Ok(auth);
        }
        if let Some(path) = self.client_secret_file.take() {
            let other = if secret.is_some() {
                Some(".client_secret")
            } else if private_key.is_some() {
                Some(".private_key_jwt")
            } else if self.client_secret_jwt {
                Some(".client_secret_jwt (it signs with a secret held from build() on)")
            } else if self.certificate.is_some() {
                Some(".tls_client_auth")
            } else {
                None
            };
            if let Some(other) = other {
                return Err(ConfigError::new(
                    "client_secret_file",
                    format!("give either .client_secret_file or {other}, not both"),
                ));
            }
            let style = self.auth_style.unwrap_or_default();
            return Ok(ClientAuth::secret_file(id, path, style));
        }
        let signs = private_key.is_some() || self.client_secret_jwt;
        if signs && self.auth_style == Some(AuthStyle::Json) {
            return Err(ConfigError::new(
                "auth_style",
                "a client assertion goes in a form body (RFC 7523 §2.2): drop \
                 .auth_style(AuthStyle::Json)",
            ));
        }
        if let Some(style) = self
            .auth_style
            .filter(|_| signs || self.certificate.is_some())
        {
            return Err(ConfigError::new(
                "auth_style",
                format!(
                    ".auth_style(AuthStyle::{style:?}) chooses how a client secret is sent; this \
                 client sends none (it authenticates with an assertion or a TLS certificate)"
                ),
            ));
        }
        let certificate = self.certificate.take();
        if let Some(key) = private_key {
            if self.client_secret_jwt {
                return Err(ConfigError::new(
                    "client_secret_jwt",
                    "give either private_key_jwt or client_secret_jwt, not both",
                ));
            }
            if secret.is_some() {
                return Err(ConfigError::new(
                    "client_secret",
                    "give either a client secret or private_key_jwt, not both (for an assertion \
                     signed with the secret, use .client_secret_jwt())",
                ));
            }
            // FAPI: an assertion authenticates, the certificate binds the tokens.
            return Ok(ClientAuth {
                certificate,
                ..key.into().auth(id)
            });
        }
        if let Some(certificate) = certificate {
            if self.client_secret_jwt {
                return Err(ConfigError::new(
                    "client_secret_jwt",
                    "give either client_secret_jwt or tls_client_auth, not both",
                ));
            }
            if secret.is_some() {
                return Err(ConfigError::new(
                    "client_secret",
                    "give either a client secret or tls_client_auth, not both: with a TLS \
                     client certificate, the body carries only client_id",
                ));
            }
            let mut auth = ClientAuth::with(id, Method::Tls);
            auth.certificate = Some(certificate);
            return Ok(auth);
        }
        let Some(secret) = secret else {
            return Err(ConfigError::new(
                "client_secret",
                if self.client_secret_jwt {
                    "client_secret_jwt signs with the client secret: call .client_secret(..)"
                } else {
                    "client_secret is required: call .client_secret(..) with the secret the identity \
                 provider issued for this client"
                },
            ));
        };
        let secret = secret.to_string();
        Ok(
            match (self.client_secret_jwt, self.auth_style.unwrap_or_default()) {
                (true, _) => ClientAuth::secret_jwt(id, secret),
                (false, AuthStyle::Basic) => ClientAuth::basic(id, secret),
                (false, AuthStyle::Form) => ClientAuth::post(id, secret),
                (false, AuthStyle::Json) => ClientAuth::json(id, secret),
            },
        )
    }
}

/// A private key given to `.private_key_jwt(..)` (none can be, without rustls).
pub(crate) enum KeyChoice {
    #[cfg(feature = "rustls-no-provider")]
    Key(PrivateKeyJwt),
}

impl KeyChoice {
    #[cfg_attr(not(feature = "rustls-no-provider"), allow(unused_variables))]
    fn auth(self, id: String) -> ClientAuth {
        match self {
            #[cfg(feature = "rustls-no-provider")]
            KeyChoice::Key(key) => ClientAuth::private_key_jwt(id, key),
        }
    }
}

#[cfg(feature = "rustls-no-provider")]
impl From<PrivateKeyJwt> for KeyChoice {
    fn from(key: PrivateKeyJwt) -> Self {
        KeyChoice::Key(key)
    }
}

impl From<std::convert::Infallible> for KeyChoice {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}
