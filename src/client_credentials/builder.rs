//! [`ClientCredentialsBuilder`]: every setting of a client credentials client, checked once by
//! [`build`](ClientCredentialsBuilder::build).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body::Body;
use tower::Service;
use zeroize::Zeroizing;

#[cfg(feature = "rustls-no-provider")]
use crate::client_auth::PrivateKeyJwt;
use crate::client_auth::{AuthStyle, ClientAuth, Shorthands};
use crate::error::BoxError;
use crate::transport::proxy::ProxyConfig;
use crate::transport::url_rules::shown;
use crate::transport::{self, TokenRequest};
use crate::{cache::CachePolicy, ConfigError};

use super::request::RequestTemplate;
use super::{discovery, secrets_sent, Caching, ClientCredentials, Endpoint};
use crate::grant::Grant;

/// Configures a [`ClientCredentials`]. Mistakes are reported by [`build`](Self::build).
#[must_use]
pub struct ClientCredentialsBuilder {
    token_url: Option<String>,
    issuer: Option<String>,
    /// Client authentication, as the shorthands or one `ClientAuth`.
    auth: Shorthands,
    scopes: Vec<String>,
    audience: Option<String>,
    /// Values may be credentials (an assertion, say): zeroized on drop like the secret.
    params: Vec<(String, Zeroizing<String>)>,
    default_lifetime: Duration,
    /// How requests travel: timeout, body limit, roots, proxy, plain http, or the user's client.
    transport: transport::Settings,
    #[cfg(feature = "shared-cache")]
    shared_store: Option<Arc<dyn crate::shared::SharedStore>>,
    #[cfg(feature = "shared-cache")]
    shared_key: Option<Zeroizing<Vec<u8>>>,
    policy: CachePolicy,
    /// The key tokens are bound to (DPoP, RFC 9449).
    dpop: Option<std::sync::Arc<dyn crate::dpop::Prove>>,
    /// Another grant than client credentials, set by its own builder (token exchange,
    /// jwt-bearer), which then owns `audience`.
    pub(crate) grant: Option<OtherGrant>,
}

/// What a grant's own builder hands to this one.
pub(crate) struct OtherGrant {
    pub(crate) grant_type: &'static str,
    pub(crate) params: Vec<(String, Zeroizing<String>)>,
    pub(crate) read: Vec<(&'static str, crate::grant::ReadParam)>,
}

impl Default for ClientCredentialsBuilder {
    fn default() -> Self {
        ClientCredentialsBuilder {
            token_url: None,
            issuer: None,
            auth: Shorthands::default(),
            scopes: Vec::new(),
            audience: None,
            params: Vec::new(),
            default_lifetime: ClientCredentialsBuilder::DEFAULT_LIFETIME,
            transport: transport::Settings::default(),
            #[cfg(feature = "shared-cache")]
            shared_store: None,
            #[cfg(feature = "shared-cache")]
            shared_key: None,
            policy: CachePolicy::default(),
            dpop: None,
            grant: None,
        }
    }
}

impl fmt::Debug for ClientCredentialsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentialsBuilder")
            .field("token_url", &self.token_url)
            .field("client_id", &self.auth.client_id)
            .field("client_secret", &"[redacted]")
            .field("auth_style", &self.auth.auth_style)
            .field("proxy", &self.transport.proxy)
            .finish_non_exhaustive()
    }
}

impl ClientCredentialsBuilder {
    /// Lifetime assumed when a response has no `expires_in`: one hour.
    pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
    /// Time allowed for a whole token request, response body included: 10 seconds.
    pub const DEFAULT_TIMEOUT: Duration = transport::Settings::DEFAULT_TIMEOUT;
    /// Largest response body read: 1 MiB.
    pub const DEFAULT_BODY_LIMIT: usize = transport::Settings::DEFAULT_BODY_LIMIT;
    /// How long a client assertion is valid (`exp` − `iat`): 60 seconds.
    pub const DEFAULT_ASSERTION_LIFETIME: Duration = ClientAuth::DEFAULT_ASSERTION_LIFETIME;

    /// The token endpoint. Must be `https`, except for loopback hosts (see
    /// [`allow_insecure_http`](Self::allow_insecure_http)).
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.token_url = Some(url.into());
        self
    }

    /// The issuer (`https://idp.example.com`), instead of the token URL: the token endpoint is
    /// read from its metadata (RFC 8414 `/.well-known/oauth-authorization-server`, then OpenID
    /// Connect `/.well-known/openid-configuration`) on the first fetch, and kept. Metadata
    /// whose `issuer` is not exactly this one is refused before any credential is sent.
    /// `build()` stays synchronous.
    ///
    /// ```
    /// let credentials = tower_oauth2::ClientCredentials::builder()
    ///     .issuer("https://idp.example.com")
    ///     .client_id("my-service")
    ///     .client_secret("secret")
    ///     .build()?;
    /// # Ok::<(), tower_oauth2::Error>(())
    /// ```
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// How the client authenticates, as one value: see [`ClientAuth`]. Instead of the
    /// shorthands [`client_id`](Self::client_id), [`client_secret`](Self::client_secret),
    /// [`auth_style`](Self::auth_style), `private_key_jwt`,
    /// [`client_secret_jwt`](Self::client_secret_jwt) and
    /// [`tls_client_auth`](Self::tls_client_auth).
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.auth.explicit = Some(auth);
        self
    }

    /// The client identifier.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.auth.client_id = Some(id.into());
        self
    }

    /// The client secret. Kept zeroized-on-drop and never printed.
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.auth.client_secret = Some(Zeroizing::new(secret.into()));
        self
    }

    /// The client secret, read from the file at `path` at every token request instead of
    /// once: a secret rotated by rewriting the file (a Kubernetes Secret volume, a Vault agent
    /// template) is used from the next token request on, without a restart. The file need not
    /// exist at `build()`: until it does, token requests fail with a transient error naming
    /// it. Surrounding whitespace (a trailing newline) is not part of the secret. Sent as
    /// [`auth_style`](Self::auth_style) says.
    ///
    /// With a [shared cache](Self::shared_cache), give
    /// [`shared_cache_key`](Self::shared_cache_key): a key derived from a secret that rotates
    /// would change with it. The shared entry is keyed on the token URL, the client id, the
    /// method and the grant's parameters, which do not.
    ///
    /// ```
    /// let credentials = tower_oauth2::ClientCredentials::builder()
    ///     .token_url("https://idp.example.com/oauth/token")
    ///     .client_id("my-service")
    ///     .client_secret_file("/var/run/secrets/idp/client-secret")
    ///     .build()?;
    /// # Ok::<(), tower_oauth2::Error>(())
    /// ```
    pub fn client_secret_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.auth.client_secret_file = Some(path.into());
        self
    }

    /// Authenticate with a client assertion made elsewhere (RFC 7523 §2.2): the JWT in the
    /// file at `path` (a Kubernetes projected service-account token, a SPIFFE JWT-SVID, the
    /// file `AZURE_FEDERATED_TOKEN_FILE` names), read at every token request and sent as
    /// `client_assertion` with `client_id`. The file need not exist at `build()`. A missing,
    /// empty or expired assertion (its `exp` is read without verifying) fails the token
    /// request with an error naming the file, transient where waiting may fix it; the cache
    /// recovers as soon as the file is right. See [`ClientAuth::assertion_file`].
    ///
    /// ```
    /// let credentials = tower_oauth2::ClientCredentials::builder()
    ///     .token_url("https://idp.example.com/oauth/token")
    ///     .client_id("my-service")
    ///     .client_assertion_file("/var/run/secrets/tokens/idp-token")
    ///     .build()?;
    /// # Ok::<(), tower_oauth2::Error>(())
    /// ```
    pub fn client_assertion_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.auth.assertion = Some(crate::client_auth::external::External::file(path));
        self
    }

    /// Authenticate with a client assertion that `make` returns, called at every token request
    /// (a metadata server, a KMS-signed JWT, a vault). A closure that fails, panics or takes
    /// longer than the [timeout](Self::timeout) fails that token request only. See
    /// [`ClientAuth::assertion_fn`].
    pub fn client_assertion_fn<F, Fut, E>(mut self, make: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<String, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.auth.assertion = Some(crate::client_auth::external_fn(make));
        self
    }

    /// How the client sends its secret: [`AuthStyle::Basic`] (default), `Form` or `Json`.
    pub fn auth_style(mut self, style: AuthStyle) -> Self {
        self.auth.auth_style = Some(style);
        self
    }

    /// With [`AuthStyle::Basic`], whether id and secret are form-urlencoded before base64, as
    /// RFC 6749 §2.3.1 requires (default `true`). A space is sent as `%20`, not `+`, so that
    /// servers that only percent-decode (such as Authlib) read the same secret. Set `false`
    /// for servers that do not decode at all.
    pub fn basic_auth_urlencode(mut self, urlencode: bool) -> Self {
        self.auth.basic_urlencode = Some(urlencode);
        self
    }

    /// Ask for a scope. Repeatable; scopes are sent space-joined as one `scope` parameter.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }

    /// The `audience` parameter (the API identifier, as Auth0 and others need).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Any extra parameter, e.g. `resource` (RFC 8707). `grant_type` overrides the grant type.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params
            .push((name.into(), Zeroizing::new(value.into())));
        self
    }

    /// Lifetime assumed when a response has no `expires_in` (default
    /// [`DEFAULT_LIFETIME`](Self::DEFAULT_LIFETIME)).
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.default_lifetime = lifetime;
        self
    }

    /// Time allowed for a whole token request (default [`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT)):
    /// the credentials made elsewhere (closures, sources, a remote signer) and the HTTP exchange
    /// share it, one deadline for all.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.transport.timeout = timeout;
        self
    }

    /// Largest response body read (default [`DEFAULT_BODY_LIMIT`](Self::DEFAULT_BODY_LIMIT)).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.transport.body_limit = bytes;
        self
    }

    /// Allow `http://` token URLs on hosts that are not loopback. The client secret then
    /// crosses the network in clear text: only for trusted networks.
    pub fn allow_insecure_http(mut self) -> Self {
        self.transport.allow_insecure_http = true;
        self
    }

    /// Trust this root certificate (PEM, one or more) besides the system's, for private
    /// identity providers. Repeatable. Ignored when a custom [`http_client`](Self::http_client)
    /// is set.
    pub fn root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.transport.root_certificates.push(pem.into());
        self
    }

    /// Send token requests through this HTTP proxy (`http://host:port`, with
    /// `user:password@` for Basic proxy authentication) instead of the one the environment
    /// names. The proxy sees a `CONNECT` to the token endpoint's host and port; TLS runs end to
    /// end inside it. Loopback token URLs always connect directly. Ignored with a custom
    /// [`http_client`](Self::http_client).
    ///
    /// Without this, the built-in client honours `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and
    /// `NO_PROXY` (and their lowercase forms) as curl reads them, when `build()` runs.
    ///
    /// ```
    /// let credentials = tower_oauth2::ClientCredentials::builder()
    ///     .token_url("https://idp.example.com/oauth/token")
    ///     .client_id("my-service")
    ///     .client_secret("secret")
    ///     .proxy("http://proxy.internal:3128")
    ///     .build()?;
    /// # Ok::<(), tower_oauth2::Error>(())
    /// ```
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.transport.proxy = ProxyConfig::Explicit(url.into());
        self
    }

    /// Authenticate with a TLS client certificate instead of a secret (RFC 8705 §2:
    /// `tls_client_auth` and `self_signed_tls_client_auth`): `chain_pem` (the certificate
    /// first, then any intermediates) and its private key `key_pem` (PKCS#8, PKCS#1 or SEC1)
    /// are presented on the TLS connection to the token endpoint, and the body carries only
    /// `client_id`. With [`issuer`](Self::issuer), the metadata's
    /// `mtls_endpoint_aliases.token_endpoint` is used when there is one. Needs the built-in
    /// HTTP client (not [`http_client`](Self::http_client)). The key is zeroized on drop and
    /// never shown.
    pub fn tls_client_auth(
        mut self,
        chain_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.auth.certificate = Some(transport::ClientIdentity::new(chain_pem, key_pem));
        self
    }

    /// Authenticate with a JWT signed by the client's private key instead of a secret
    /// (`private_key_jwt`: RFC 7523 §2.2, OpenID Connect Core §9), as Okta, Entra ID
    /// certificate credentials, Keycloak "Signed JWT" and Auth0 "Private Key JWT" do. Each
    /// token request carries a fresh assertion: `iss` and `sub` the client id, `aud` the token
    /// endpoint (see [`assertion_audience`](Self::assertion_audience)), a random `jti`, valid
    /// for [`assertion_lifetime`](Self::assertion_lifetime). `build()` fails, saying why, if
    /// the key cannot sign. Needs the `rustls` feature (the key is used by its crypto
    /// provider).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_oauth2::{ClientCredentials, client_auth::PrivateKeyJwt};
    ///
    /// let key = PrivateKeyJwt::from_pem(std::fs::read("client.key.pem")?)?.key_id("my-key-1");
    /// let credentials = ClientCredentials::builder()
    ///     .token_url("https://idp.example.com/oauth2/token")
    ///     .client_id("my-service")
    ///     .private_key_jwt(key)
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "rustls-no-provider")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls-no-provider")))]
    pub fn private_key_jwt(mut self, key: PrivateKeyJwt) -> Self {
        self.auth.private_key = Some(key);
        self
    }

    /// Authenticate with a JWT signed with the client secret (HS256) instead of sending the
    /// secret (`client_secret_jwt`: RFC 7523 §2.2, OpenID Connect Core §9). The secret must be
    /// at least 32 bytes (RFC 7518 §3.2). Needs the `aws-lc-rs` or `ring` feature.
    ///
    /// ```
    /// let credentials = tower_oauth2::ClientCredentials::builder()
    ///     .token_url("https://idp.example.com/oauth2/token")
    ///     .client_id("my-service")
    ///     .client_secret("a-client-secret-of-at-least-32-bytes")
    ///     .client_secret_jwt()
    ///     .build()?;
    /// # Ok::<(), tower_oauth2::Error>(())
    /// ```
    pub fn client_secret_jwt(mut self) -> Self {
        self.auth.client_secret_jwt = true;
        self
    }

    /// The `aud` of client assertions, for identity providers that want something other than
    /// the token endpoint URL (the issuer, say).
    pub fn assertion_audience(mut self, audience: impl Into<String>) -> Self {
        self.auth.assertion_audience = Some(audience.into());
        self
    }

    /// How long a client assertion is valid (default
    /// [`DEFAULT_ASSERTION_LIFETIME`](Self::DEFAULT_ASSERTION_LIFETIME)); whole seconds, at
    /// least one.
    pub fn assertion_lifetime(mut self, lifetime: Duration) -> Self {
        self.auth.assertion_lifetime = Some(lifetime);
        self
    }

    /// Connect to the token endpoint directly, ignoring the proxy environment variables.
    pub fn no_proxy(mut self) -> Self {
        self.transport.proxy = ProxyConfig::Direct;
        self
    }

    /// Use your own HTTP client for the token endpoint (a proxy, custom TLS, a test double):
    /// any cloneable tower service taking [`TokenRequest`]. It must not follow redirects.
    pub fn http_client<S, B>(mut self, client: S) -> Self
    where
        S: Service<TokenRequest, Response = http::Response<B>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.transport.http = Some(transport::boxed(client));
        self
    }

    /// Share tokens with every other instance of this client through `store` (a
    /// [`RedisStore`](crate::shared::RedisStore), feature `redis`): one token request per lifetime for
    /// the whole fleet. The in-process cache stays in front, so requests never wait on the
    /// store; it is consulted only when this process would otherwise fetch.
    ///
    /// Tokens are stored encrypted with a key derived from the client secret (so only
    /// instances holding the secret can read them) or from
    /// [`shared_cache_key`](Self::shared_cache_key), under an entry per key material:
    /// instances with different secrets, private keys or TLS client certificates share
    /// nothing. When the store fails, the process fetches alone and tries the store again
    /// after a backoff. See the README for the details.
    #[cfg(feature = "shared-cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "shared-cache")))]
    pub fn shared_cache(mut self, store: impl crate::shared::SharedStore) -> Self {
        self.shared_store = Some(Arc::new(store));
        self
    }

    /// Derive the key that encrypts shared tokens from `key` (at least 32 random bytes)
    /// instead of the client secret (or private key). The entry stays per key material: this
    /// key decides who can read it, not which instances share it.
    #[cfg(feature = "shared-cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "shared-cache")))]
    pub fn shared_cache_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.shared_key = Some(Zeroizing::new(key.into()));
        self
    }

    /// Bind tokens to `key` (DPoP, RFC 9449): every token request carries a proof by it, the
    /// endpoint must answer with a token of type `DPoP`, and the layer and middleware send that
    /// token as `Authorization: DPoP …` with a fresh proof on every request. See
    /// [`dpop`](crate::dpop).
    ///
    /// A proof's remote [`Signer`](crate::client_auth::Signer) (a key from
    /// [`DpopKey::from_signer`](crate::dpop::DpopKey::from_signer)) shares the token request's
    /// [`timeout`](Self::timeout); for a request the token goes with, it has that timeout
    /// whole. With reqwest, turn redirects off (`reqwest::redirect::Policy::none()`): reqwest
    /// follows them inside [`BearerAuthMiddleware`](crate::BearerAuthMiddleware), which cannot
    /// sign a proof for the new URL, so a server checking proofs refuses the redirected
    /// request (the token is kept).
    ///
    /// ```no_run
    /// use tower_oauth2::{client_auth::JwsAlgorithm, dpop::DpopKey, ClientCredentials};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let credentials = ClientCredentials::builder()
    ///     .token_url("https://idp.example.com/oauth/token")
    ///     .client_id("my-service")
    ///     .client_secret("…")
    ///     .dpop(DpopKey::generate(JwsAlgorithm::ES256)?)
    ///     .build()?;
    /// # let _ = credentials;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "rustls-no-provider")]
    pub fn dpop(mut self, key: crate::dpop::DpopKey) -> Self {
        self.dpop = Some(key.bound());
        self
    }

    /// Timing rules of the built-in cache.
    pub fn cache_policy(mut self, policy: CachePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Ask for `grant` instead of client credentials, with or without client authentication:
    /// for the builders of the other grants.
    pub(crate) fn other_grant(mut self, grant: OtherGrant) -> Self {
        self.grant = Some(grant);
        self.auth.allow_none = true;
        self
    }

    /// Check the configuration and build the client.
    pub fn build(mut self) -> Result<ClientCredentials, ConfigError> {
        let (url, discover) = self.checked_url()?;
        let auth = std::mem::take(&mut self.auth).resolve()?;
        let auth = auth.prepare()?;
        let signs = auth.auth().sends_assertion();
        let grant = match self.grant.take() {
            None => Grant::client_credentials(&self.scopes, self.audience, self.params, signs)?,
            Some(other) => Grant::other(
                other.grant_type,
                other.params,
                &self.scopes,
                self.params,
                other.read,
                signs,
            )?,
        };
        let rules = self.transport.url_rules();
        let transport = self.transport.build(auth.auth().certificate())?;
        let template = RequestTemplate {
            url,
            auth,
            grant,
            dpop: self
                .dpop
                .take()
                .map(|key| crate::dpop::Bound::new(key, transport.timeout)),
        };
        let redact = secrets_sent(&template);
        let shown = shown(&template.url);
        let mtls = template.auth.auth().certificate().is_some();
        let auth_methods = template.auth.auth().method_names().to_vec();
        let discovery = discover.then(|| {
            Arc::new(discovery::Discovery::new(
                self.issuer.clone().unwrap_or_default(),
                template.url.clone(),
                rules,
                mtls,
                auth_methods,
            ))
        });
        let endpoint = Arc::new(Endpoint {
            shown,
            discovery,
            template,
            transport,
            default_lifetime: self.default_lifetime,
            redact,
            metrics: crate::telemetry::Metrics::new(&self.policy.name, &self.policy.labels),
        });
        let caching = Arc::new(Caching {
            policy: self.policy,
            #[cfg(feature = "shared-cache")]
            fleet: self.shared_store.map(|store| crate::shared::Fleet {
                store,
                key: self.shared_key,
            }),
        });
        let cache = caching.cache(&endpoint)?;
        Ok(ClientCredentials {
            endpoint,
            cache,
            caching,
        })
    }

    /// The configured token URL or issuer, checked, and which of the two it is.
    fn checked_url(&self) -> Result<(Uri, bool), ConfigError> {
        let rules = self.transport.url_rules();
        match (&self.token_url, &self.issuer) {
            (Some(_), Some(_)) => Err(ConfigError::new(
                "token_url",
                "give either token_url or issuer, not both: with an issuer, the token endpoint \
                 comes from its metadata",
            )),
            (Some(raw), None) => Ok((rules.check(raw, "token_url")?, false)),
            (None, Some(raw)) => Ok((rules.check(raw, "issuer")?, true)),
            (None, None) => Err(ConfigError::new(
                "token_url",
                "token_url is required: call .token_url(..) (or .issuer(..) to discover it)",
            )),
        }
    }
}
