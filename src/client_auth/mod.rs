//! [`ClientAuth`]: how a client proves who it is to the token endpoint, as one value. Every
//! decision that depends on it lives here: what goes on the wire, its name in RFC 8414
//! metadata, which strings must never be echoed into an error, the key material of the shared
//! cache, and what to check when the endpoint answers `invalid_client`. This file holds the
//! value and its checks; `prepared.rs` what it puts on each token request, `encoding.rs` the
//! form encodings of secrets, `shared_key.rs` what the shared cache derives from it.
//!
//! | method | constructor | on the wire |
//! |---|---|---|
//! | `client_secret_basic` | [`ClientAuth::basic`] | `Authorization: Basic …` |
//! | `client_secret_post` | [`ClientAuth::post`] | `client_id`, `client_secret` in the form body |
//! | (no standard name) | [`ClientAuth::json`] | `client_id`, `client_secret` in a JSON body |
//! | `client_secret_jwt` | [`ClientAuth::secret_jwt`] | an HS256 assertion signed with the secret |
//! | `private_key_jwt` | [`ClientAuth::private_key_jwt`] | an assertion signed with a private key |
//! | `tls_client_auth` | [`ClientAuth::tls`] | a TLS client certificate; `client_id` in the body |
//! | `private_key_jwt`, signed elsewhere | [`ClientAuth::assertion_file`], [`ClientAuth::assertion_fn`] | an assertion read at each request (workload identity) |
//! | `none` | [`ClientAuth::none`] | `client_id` in the body, if any (public clients, token exchange) |
//!
//! # Credentials made elsewhere
//!
//! On Kubernetes and in clouds a service often holds no secret of its own: the platform mounts
//! a short-lived signed JWT (a projected service-account token, a SPIFFE JWT-SVID) and rotates
//! it, or an operator syncs a secret into a file. [`ClientAuth::assertion_file`],
//! [`ClientAuth::assertion_fn`] and [`ClientAuth::secret_file`] (the builders'
//! `.client_assertion_file`, `.client_assertion_fn`, `.client_secret_file`) read them at every
//! token request, never at `build()`:
//!
//! - a file that does not exist yet is accepted by `build()`; a token request before it
//!   appears fails with a transient error naming the file, and the next one after it appears
//!   succeeds (nothing was sent, so the cache does not back off: the next request reads the
//!   file again at once, which costs a local read);
//! - an assertion whose `exp` (read without verifying) has passed is refused before it is
//!   sent, with an error naming the file: whatever writes it is late (read again at once too);
//! - surrounding whitespace (the newline at the end of a file, a CRLF) and a UTF-8 byte order
//!   mark are not part of the credential;
//! - what is read is never shown by `Debug`, errors or logs, and is redacted from anything the
//!   endpoint echoes back.
//!
//! With a secret or an assertion read from elsewhere there is no stable secret to derive the
//! shared cache's encryption key from: give `.shared_cache_key(..)`. Its entries are keyed on
//! the token URL, the client id, the method and the grant's parameters, none of which change
//! when the secret rotates.

#[cfg(feature = "rustls-no-provider")]
pub(crate) mod assertion;
#[cfg(not(feature = "rustls-no-provider"))]
#[path = "no_assertion.rs"]
pub(crate) mod assertion;
pub(crate) mod encoding;
pub(crate) mod external;
mod prepared;
#[cfg(feature = "shared-cache")]
mod shared_key;
mod shorthands;
#[cfg(feature = "rustls-no-provider")]
mod signer;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

#[cfg(feature = "rustls-no-provider")]
#[cfg_attr(docsrs, doc(cfg(feature = "rustls-no-provider")))]
pub use assertion::{JwsAlgorithm, PrivateKeyJwt};
pub(crate) use prepared::PreparedAuth;
pub use shorthands::AuthStyle;
pub(crate) use shorthands::Shorthands;
#[cfg(feature = "rustls-no-provider")]
pub(crate) use signer::signed_within;
#[cfg(feature = "rustls-no-provider")]
pub use signer::{LocalSigner, SignFuture, Signer};

use crate::error::BoxError;
use crate::transport::ClientIdentity;
use crate::{ConfigError, Error};
use external::{External, Kind};

/// How a client authenticates to the token endpoint: a client id and exactly one method.
///
/// Give it to a builder with `.client_auth(..)`; the builder's shorthands (`.client_id(..)`,
/// `.client_secret(..)`, `.auth_style(..)`, `.private_key_jwt(..)`, `.client_secret_jwt()`,
/// `.tls_client_auth(..)`) make one of these. Secrets and keys are zeroized on drop and never
/// shown by `Debug`.
///
/// ```
/// use tower_oauth2::{ClientAuth, ClientCredentials};
///
/// let credentials = ClientCredentials::builder()
///     .token_url("https://idp.example.com/oauth/token")
///     .client_auth(ClientAuth::post("my-service", "s3cr3t"))
///     .build()?;
/// # Ok::<(), tower_oauth2::Error>(())
/// ```
#[derive(Clone)]
pub struct ClientAuth {
    client_id: String,
    method: Method,
    /// A client certificate on the TLS connection: the method itself with
    /// [`ClientAuth::tls`], or beside an assertion for certificate-bound tokens (RFC 8705 §3).
    certificate: Option<ClientIdentity>,
    /// Options of client assertions.
    assertion_audience: Option<String>,
    assertion_lifetime: Duration,
    /// Made by the builder's shorthands rather than given as a value: errors then name the
    /// shorthand to fix.
    from_shorthands: bool,
}

/// A client secret: given to the builder, or read from a file at each request.
#[derive(Clone)]
enum Secret {
    Held(Zeroizing<String>),
    Read(External),
}

impl Secret {
    fn held(secret: impl Into<String>) -> Self {
        Secret::Held(Zeroizing::new(secret.into()))
    }

    /// The secret for one request.
    async fn now(&self, timeout: Duration) -> Result<Zeroizing<String>, Error> {
        match self {
            Secret::Held(secret) => Ok(secret.clone()),
            Secret::Read(from) => from.read(Kind::CLIENT_SECRET, timeout).await,
        }
    }
}

#[derive(Clone)]
enum Method {
    Basic {
        secret: Secret,
        urlencode: bool,
    },
    Post {
        secret: Secret,
    },
    Json {
        secret: Secret,
    },
    SecretJwt {
        secret: Zeroizing<String>,
    },
    #[cfg(feature = "rustls-no-provider")]
    PrivateKeyJwt {
        key: PrivateKeyJwt,
    },
    Tls,
    /// `private_key_jwt` with a key held elsewhere.
    #[cfg(feature = "rustls-no-provider")]
    Signer {
        signer: std::sync::Arc<dyn Signer>,
    },
    /// An assertion made elsewhere, read at each request.
    Assertion {
        from: External,
    },
    /// No client authentication: `client_id` in the body, if there is one.
    None,
}

impl ClientAuth {
    /// How long a client assertion is valid (`exp` − `iat`) unless told otherwise: 60 seconds.
    pub const DEFAULT_ASSERTION_LIFETIME: Duration = Duration::from_secs(60);

    fn with(client_id: impl Into<String>, method: Method) -> Self {
        ClientAuth {
            client_id: client_id.into(),
            method,
            certificate: None,
            assertion_audience: None,
            assertion_lifetime: Self::DEFAULT_ASSERTION_LIFETIME,
            from_shorthands: false,
        }
    }

    /// This value as the builder's shorthands made it.
    pub(crate) fn made_by_shorthands(mut self) -> Self {
        self.from_shorthands = true;
        self
    }

    /// `client_secret_basic`: `Authorization: Basic base64(id ":" secret)`, id and secret
    /// form-urlencoded first as RFC 6749 §2.3.1 requires (a space as `%20`, which servers that
    /// only percent-decode read the same). What every server must support.
    pub fn basic(client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self::with(
            client_id,
            Method::Basic {
                secret: Secret::held(secret),
                urlencode: true,
            },
        )
    }

    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    pub fn post(client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self::with(
            client_id,
            Method::Post {
                secret: Secret::held(secret),
            },
        )
    }

    /// `client_id`, `client_secret` and the parameters in an `application/json` body, for
    /// endpoints that want JSON (some API gateways).
    pub fn json(client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self::with(
            client_id,
            Method::Json {
                secret: Secret::held(secret),
            },
        )
    }

    /// `client_secret_jwt` (RFC 7523 §2.2): each token request carries a fresh assertion
    /// signed with the secret (HS256), never the secret itself. The secret must be at least 32
    /// bytes (RFC 7518 §3.2). Needs the `aws-lc-rs` or `ring` feature.
    pub fn secret_jwt(client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self::with(
            client_id,
            Method::SecretJwt {
                secret: Zeroizing::new(secret.into()),
            },
        )
    }

    /// `private_key_jwt` (RFC 7523 §2.2, OpenID Connect Core §9): each token request carries
    /// a fresh assertion signed with the client's private key: `iss` and `sub` the client id,
    /// `aud` the token endpoint, a random `jti`.
    #[cfg(feature = "rustls-no-provider")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls-no-provider")))]
    pub fn private_key_jwt(client_id: impl Into<String>, key: PrivateKeyJwt) -> Self {
        Self::with(client_id, Method::PrivateKeyJwt { key })
    }

    /// `tls_client_auth` / `self_signed_tls_client_auth` (RFC 8705 §2): `chain_pem` (the
    /// certificate first, then any intermediates) and its private key `key_pem` (PKCS#8,
    /// PKCS#1 or SEC1) are presented on the TLS connection, and the body carries only
    /// `client_id`. Needs the built-in HTTP client.
    pub fn tls(
        client_id: impl Into<String>,
        chain_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        let mut auth = Self::with(client_id, Method::Tls);
        auth.certificate = Some(ClientIdentity::new(chain_pem, key_pem));
        auth
    }

    /// The client secret read from the file at `path` at every token request, sent as
    /// `style` says: a secret rotated by rewriting the file (a Kubernetes Secret volume, a
    /// Vault agent template) is used from the next token request, without a restart. The
    /// file need not exist at `build()`; surrounding whitespace is not part of the secret.
    ///
    /// ```
    /// use tower_oauth2::{client_auth::AuthStyle, ClientAuth, ClientCredentials};
    ///
    /// let credentials = ClientCredentials::builder()
    ///     .token_url("https://idp.example.com/oauth/token")
    ///     .client_auth(ClientAuth::secret_file("my-service", "/var/run/secrets/idp/client-secret", AuthStyle::Basic))
    ///     .build()?;
    /// # Ok::<(), tower_oauth2::Error>(())
    /// ```
    pub fn secret_file(
        client_id: impl Into<String>,
        path: impl Into<PathBuf>,
        style: AuthStyle,
    ) -> Self {
        let secret = Secret::Read(External::file(path));
        Self::with(
            client_id,
            match style {
                AuthStyle::Basic => Method::Basic {
                    secret,
                    urlencode: true,
                },
                AuthStyle::Form => Method::Post { secret },
                AuthStyle::Json => Method::Json { secret },
            },
        )
    }

    /// A client assertion made elsewhere (RFC 7523 §2.2): the JWT in the file at `path`,
    /// read at every token request and sent as `client_assertion` with `client_id` and
    /// `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`. For
    /// workload identity: a Kubernetes projected service-account token, a SPIFFE JWT-SVID, a
    /// file `AZURE_FEDERATED_TOKEN_FILE` names. See [the module docs](self) for what happens
    /// while the file is missing or expired.
    ///
    /// ```
    /// use tower_oauth2::{ClientAuth, ClientCredentials};
    ///
    /// let credentials = ClientCredentials::builder()
    ///     .token_url("https://idp.example.com/oauth/token")
    ///     .client_auth(ClientAuth::assertion_file("my-service", "/var/run/secrets/tokens/idp-token"))
    ///     .build()?;
    /// # Ok::<(), tower_oauth2::Error>(())
    /// ```
    pub fn assertion_file(client_id: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self::with(
            client_id,
            Method::Assertion {
                from: External::file(path),
            },
        )
    }

    /// A client assertion made elsewhere, by `make` (a call to a metadata server, a KMS, a
    /// vault), called at every token request. A closure that panics, fails or takes longer
    /// than the token request's timeout fails that request only; the cache backs off and
    /// calls it again. An [`Error`] of this crate returned by the closure (from
    /// [`Error::custom`](crate::Error::custom), or another client's) keeps its transience.
    ///
    /// ```
    /// use tower_oauth2::{ClientAuth, ClientCredentials};
    ///
    /// let credentials = ClientCredentials::builder()
    ///     .token_url("https://idp.example.com/oauth/token")
    ///     .client_auth(ClientAuth::assertion_fn("my-service", || async {
    ///         Ok::<_, tower_oauth2::error::BoxError>(std::env::var("CLIENT_ASSERTION")?)
    ///     }))
    ///     .build()?;
    /// # Ok::<(), tower_oauth2::Error>(())
    /// ```
    pub fn assertion_fn<F, Fut, E>(client_id: impl Into<String>, make: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        Self::with(
            client_id,
            Method::Assertion {
                from: external_fn(make),
            },
        )
    }

    /// `private_key_jwt` with a key held elsewhere (a KMS, an HSM, Vault's transit engine):
    /// the crate makes each assertion's header (`alg` and `kid` from the signer) and claims,
    /// as for [`private_key_jwt`](Self::private_key_jwt), and `signer` signs it. A signer that
    /// panics, fails or takes longer than the token request's timeout fails that request only.
    /// With a shared cache, give `.shared_cache_key(..)` (the key is out of reach).
    #[cfg(feature = "rustls-no-provider")]
    pub fn signed_by(client_id: impl Into<String>, signer: impl Signer) -> Self {
        Self::with(
            client_id,
            Method::Signer {
                signer: std::sync::Arc::new(signer),
            },
        )
    }

    /// No client authentication (RFC 8414 `none`): `client_id` goes in the body unless it is
    /// empty. For public clients, and for grants whose subject token or assertion is the
    /// whole proof (Google's STS token exchange, many jwt-bearer endpoints).
    pub fn none(client_id: impl Into<String>) -> Self {
        Self::with(client_id, Method::None)
    }

    /// Also present this TLS client certificate, beside an assertion, so that the identity
    /// provider binds the tokens to it (RFC 8705 §3, as FAPI profiles do).
    pub fn with_certificate(
        mut self,
        chain_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.certificate = Some(ClientIdentity::new(chain_pem, key_pem));
        self
    }

    /// With [`basic`](Self::basic), whether id and secret are form-urlencoded before base64
    /// (default `true`); `false` for servers that do not decode at all.
    pub fn basic_urlencode(mut self, urlencode: bool) -> Self {
        if let Method::Basic { urlencode: u, .. } = &mut self.method {
            *u = urlencode;
        }
        self
    }

    /// The `aud` of client assertions, for identity providers that want something other than
    /// the token endpoint URL (the issuer, say).
    pub fn assertion_audience(mut self, audience: impl Into<String>) -> Self {
        self.assertion_audience = Some(audience.into());
        self
    }

    /// How long a client assertion is valid (default
    /// [`DEFAULT_ASSERTION_LIFETIME`](Self::DEFAULT_ASSERTION_LIFETIME)); whole seconds, at
    /// least one.
    pub fn assertion_lifetime(mut self, lifetime: Duration) -> Self {
        self.assertion_lifetime = lifetime;
        self
    }

    /// The client identifier.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The method's name in RFC 8414 `token_endpoint_auth_methods_supported`
    /// (`client_secret_basic`, `private_key_jwt`, …); `None` for a JSON body, which has none.
    pub fn method_name(&self) -> Option<&'static str> {
        self.method_names().first().copied()
    }

    /// Every name in `token_endpoint_auth_methods_supported` that means this method.
    pub(crate) fn method_names(&self) -> &'static [&'static str] {
        match &self.method {
            Method::Basic { .. } => &["client_secret_basic"],
            Method::Post { .. } => &["client_secret_post"],
            Method::Json { .. } => &[],
            Method::SecretJwt { .. } => &["client_secret_jwt"],
            #[cfg(feature = "rustls-no-provider")]
            Method::PrivateKeyJwt { .. } => &["private_key_jwt"],
            Method::Tls => &["tls_client_auth", "self_signed_tls_client_auth"],
            Method::Assertion { .. } => &["private_key_jwt"],
            #[cfg(feature = "rustls-no-provider")]
            Method::Signer { .. } => &["private_key_jwt"],
            Method::None => &["none"],
        }
    }

    /// The secret this method holds from `build()` on, if any (not one read from a file).
    fn secret(&self) -> Option<&str> {
        match &self.method {
            Method::Basic { secret, .. } | Method::Post { secret } | Method::Json { secret } => {
                match secret {
                    Secret::Held(secret) => Some(secret.as_str()),
                    Secret::Read(_) => None,
                }
            }
            Method::SecretJwt { secret } => Some(secret.as_str()),
            #[cfg(feature = "rustls-no-provider")]
            Method::PrivateKeyJwt { .. } | Method::Signer { .. } => None,
            Method::Tls | Method::Assertion { .. } | Method::None => None,
        }
    }

    /// Whether a secret or an assertion is read from elsewhere at each request.
    #[cfg_attr(not(feature = "shared-cache"), allow(dead_code))]
    fn reads_elsewhere(&self) -> bool {
        matches!(
            &self.method,
            Method::Basic {
                secret: Secret::Read(_),
                ..
            } | Method::Post {
                secret: Secret::Read(_)
            } | Method::Json {
                secret: Secret::Read(_)
            } | Method::Assertion { .. }
        )
    }

    /// Whether the body carries a client assertion, whose parameters a grant may not set.
    pub(crate) fn sends_assertion(&self) -> bool {
        match &self.method {
            Method::SecretJwt { .. } | Method::Assertion { .. } => true,
            #[cfg(feature = "rustls-no-provider")]
            Method::PrivateKeyJwt { .. } | Method::Signer { .. } => true,
            _ => false,
        }
    }

    /// The TLS client certificate the HTTP client must present, if any.
    pub(crate) fn certificate(&self) -> Option<&ClientIdentity> {
        self.certificate.as_ref()
    }

    /// Whether the body is JSON rather than a form.
    pub(crate) fn json_body(&self) -> bool {
        matches!(self.method, Method::Json { .. })
    }

    /// The client id and secret, as an identity provider issues them: not empty, and without
    /// whitespace around them. Errors name the shorthand or the value that set them.
    fn check_id_and_secret(&self) -> Result<(), ConfigError> {
        let (id_setting, secret_setting, fix_id, fix_secret, trim_id, trim_secret) =
            if self.from_shorthands {
                (
                    "client_id",
                    "client_secret",
                    "call .client_id(..)",
                    "call .client_secret(..) with the secret the identity provider issued for \
                     this client",
                    ".client_id(id.trim())",
                    ".client_secret(secret.trim())",
                )
            } else {
                (
                    "client_auth",
                    "client_auth",
                    "give ClientAuth the client id",
                    "give ClientAuth the secret the identity provider issued for this client",
                    "ClientAuth::post(id.trim(), ..)",
                    "ClientAuth::post(.., secret.trim())",
                )
            };
        if self.client_id.is_empty() && !matches!(self.method, Method::None) {
            return Err(ConfigError::new(
                id_setting,
                format!("client_id is required: {fix_id}"),
            ));
        }
        if self.client_id.trim() != self.client_id {
            return Err(ConfigError::new(
                id_setting,
                format!(
                    "client_id has leading or trailing whitespace (a newline at the end of a file \
                     or variable?): pass it trimmed, e.g. {trim_id}"
                ),
            ));
        }
        let Some(secret) = self.secret() else {
            // A secret read from a file is checked at each request: it may not exist yet.
            return Ok(());
        };
        if secret.is_empty() {
            return Err(ConfigError::new(
                secret_setting,
                format!("client_secret is required: {fix_secret}"),
            ));
        }
        if secret.trim() != secret {
            // Never show it: say where the whitespace is, not what the secret is.
            return Err(ConfigError::new(
                secret_setting,
                format!(
                    "client_secret has leading or trailing whitespace (a newline at the end of a \
                     mounted secret file?): pass it trimmed, e.g. {trim_secret}"
                ),
            ));
        }
        Ok(())
    }

    /// Every form in which this method's secret leaves the process (a secret read from a
    /// file: per request, by [`PreparedAuth::credentials`]).
    fn secrets_sent(&self) -> Vec<Zeroizing<String>> {
        let mut secrets = Vec::new();
        if let Some(secret) = self.secret() {
            secret_forms(&self.client_id, secret, &self.method, &mut secrets);
        }
        secrets
    }
}

impl ClientAuth {
    /// Where a credential is read from at each request, for `Debug`: the path, never content.
    fn read_from(&self) -> Option<&External> {
        match &self.method {
            Method::Basic {
                secret: Secret::Read(from),
                ..
            }
            | Method::Post {
                secret: Secret::Read(from),
            }
            | Method::Json {
                secret: Secret::Read(from),
            }
            | Method::Assertion { from } => Some(from),
            _ => None,
        }
    }
}

/// `make` as the source of a credential.
pub(crate) fn external_fn<F, Fut, E>(make: F) -> External
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    use futures_util::TryFutureExt;
    External::from_fn(move || make().map_err(Into::into))
}

/// Every form in which `secret` leaves the process with `method`: plain, form-encoded, JSON
/// escaped, and inside the Basic credentials.
fn secret_forms(client_id: &str, secret: &str, method: &Method, out: &mut Vec<Zeroizing<String>>) {
    out.push(Zeroizing::new(secret.to_owned()));
    out.push(encoding::urlencode(secret));
    out.push(encoding::basic_urlencode(secret));
    // JSON escaping makes at most six bytes of one: a buffer that never grows.
    let mut json = Zeroizing::new(Vec::with_capacity(6 * secret.len() + 2));
    if serde_json::to_writer(&mut *json, secret).is_ok() {
        if let Ok(text) = std::str::from_utf8(&json) {
            out.push(Zeroizing::new(text.trim_matches('"').to_owned()));
        }
    }
    if let Method::Basic { urlencode, .. } = method {
        out.push(encoding::basic_credentials(client_id, secret, *urlencode));
    }
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAuth")
            .field("client_id", &self.client_id)
            .field("method", &self.method_name().unwrap_or("json"))
            .field("certificate", &self.certificate.is_some())
            .field("read_from", &self.read_from())
            .finish_non_exhaustive()
    }
}
