//! [`TokenExchange`]: OAuth 2.0 token exchange (RFC 8693). A token the service already holds
//! (a Kubernetes service-account token in a file, its own access token from another
//! [`TokenSource`]) is exchanged at the token endpoint for one scoped to a downstream
//! audience: Google's STS (workload identity federation), Okta, Keycloak, Entra's
//! on-behalf-of flows.
//!
//! It is the same client as [`ClientCredentials`] with another grant:
//! the same transport, client authentication (any, or none), cache, single flight, refresh
//! ahead and backoff. The subject token (and the optional actor token) is read at every
//! exchange, never at `build()`: a rotated file or a refreshed inner token is picked up by the
//! next exchange.
//!
//! ```no_run
//! # async fn run(channel: tonic::transport::Channel) -> Result<(), tower_oauth2::ConfigError> {
//! use tower_oauth2::token_exchange::{TokenExchange, TokenType};
//! use tower_oauth2::BearerAuthLayer;
//!
//! // Google workload identity federation: the pod's projected token for a Google STS token.
//! let exchange = TokenExchange::builder()
//!     .token_url("https://sts.googleapis.com/v1/token")
//!     .subject_token_file("/var/run/secrets/tokens/gcp-token", TokenType::Jwt)
//!     .audience("//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/k8s")
//!     .scope("https://www.googleapis.com/auth/cloud-platform")
//!     .requested_token_type(TokenType::AccessToken)
//!     .build()?;
//! let channel = tower::ServiceBuilder::new()
//!     .layer(BearerAuthLayer::new(exchange))
//!     .service(channel);
//! # let _ = channel;
//! # Ok(())
//! # }
//! ```
//!
//! A bad subject token is a permanent error ([`Error::is_transient`](crate::Error::is_transient)
//! is false) whether the server says `invalid_request` (RFC 8693 §2.2.2) or `invalid_grant`
//! (Okta, Google's STS); the cache backs off before the next exchange either way.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::client_auth::external::{External, Kind};
use crate::client_auth::{external_fn, AuthStyle, ClientAuth};
use crate::client_credentials::builder::OtherGrant;
use crate::client_credentials::ClientCredentialsBuilder;
use crate::error::BoxError;
use crate::grant::ReadParam;
use crate::source::TokenFuture;
use crate::{
    cache::CachePolicy, AccessToken, ClientCredentials, ConfigError, Error, TokenCache, TokenSource,
};

/// `grant_type` of token exchange (RFC 8693 §2.1).
pub(crate) const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// A token type identifier (RFC 8693 §3), for `subject_token_type`, `actor_token_type` and
/// `requested_token_type`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenType {
    /// `urn:ietf:params:oauth:token-type:access_token`: an OAuth 2.0 access token.
    AccessToken,
    /// `urn:ietf:params:oauth:token-type:refresh_token`: an OAuth 2.0 refresh token.
    RefreshToken,
    /// `urn:ietf:params:oauth:token-type:id_token`: an OpenID Connect ID token.
    IdToken,
    /// `urn:ietf:params:oauth:token-type:saml1`: a base64url-encoded SAML 1.1 assertion.
    Saml1,
    /// `urn:ietf:params:oauth:token-type:saml2`: a base64url-encoded SAML 2.0 assertion.
    Saml2,
    /// `urn:ietf:params:oauth:token-type:jwt`: a JWT (a Kubernetes service-account token, a
    /// SPIFFE JWT-SVID). Its `exp` is checked, without verifying it, before it is sent.
    Jwt,
    /// Any other URI (e.g. Google's `urn:ietf:params:aws:token-type:aws4_request`).
    Other(String),
}

impl TokenType {
    /// The URI that goes on the wire.
    pub fn uri(&self) -> &str {
        match self {
            TokenType::AccessToken => "urn:ietf:params:oauth:token-type:access_token",
            TokenType::RefreshToken => "urn:ietf:params:oauth:token-type:refresh_token",
            TokenType::IdToken => "urn:ietf:params:oauth:token-type:id_token",
            TokenType::Saml1 => "urn:ietf:params:oauth:token-type:saml1",
            TokenType::Saml2 => "urn:ietf:params:oauth:token-type:saml2",
            TokenType::Jwt => "urn:ietf:params:oauth:token-type:jwt",
            TokenType::Other(uri) => uri,
        }
    }

    /// The type `uri` names (`Other` for one RFC 8693 does not define).
    pub fn from_uri(uri: &str) -> TokenType {
        [
            TokenType::AccessToken,
            TokenType::RefreshToken,
            TokenType::IdToken,
            TokenType::Saml1,
            TokenType::Saml2,
            TokenType::Jwt,
        ]
        .into_iter()
        .find(|known| known.uri() == uri)
        .unwrap_or_else(|| TokenType::Other(uri.to_owned()))
    }

    /// Whether it is a JWT whose `exp` can be read.
    fn is_jwt(&self) -> bool {
        matches!(self, TokenType::Jwt | TokenType::IdToken)
    }
}

impl fmt::Display for TokenType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.uri())
    }
}

/// A token source for the token exchange grant (RFC 8693), with its cache built in, like
/// [`ClientCredentials`]: clones share the cache; give it to
/// [`BearerAuthLayer::new`](crate::BearerAuthLayer::new). See [the module docs](self).
#[derive(Clone)]
pub struct TokenExchange {
    client: ClientCredentials,
}

impl TokenExchange {
    /// Start configuring one.
    pub fn builder() -> TokenExchangeBuilder {
        TokenExchangeBuilder::default()
    }

    /// A usable token: the cached one, or one exchanged now (shared with every concurrent
    /// caller). [`AccessToken::issued_token_type`] says what the server issued.
    pub async fn token(&self) -> Result<AccessToken, Error> {
        self.client.token().await
    }

    /// Drop `token` from the cache if it is still the cached one (a server rejected it).
    pub fn invalidate(&self, token: &AccessToken) {
        self.client.invalidate(token);
    }

    /// **Bypasses the cache**: one exchange per call, for diagnostics and tests.
    pub async fn fetch_uncached(&self) -> Result<AccessToken, Error> {
        self.client.fetch_uncached().await
    }
}

impl TokenSource for TokenExchange {
    fn token(&self) -> TokenFuture<'_> {
        TokenSource::token(&self.client)
    }

    fn invalidate(&self, token: &AccessToken) -> bool {
        TokenSource::invalidate(&self.client, token)
    }
}

impl From<TokenExchange> for TokenCache {
    /// The exchange's own cache, which every clone shares.
    fn from(exchange: TokenExchange) -> Self {
        exchange.client.into()
    }
}

impl fmt::Debug for TokenExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.client, f)
    }
}

/// Where a subject or actor token comes from, and its type.
struct Party {
    from: ReadParam,
    token_type: TokenType,
}

impl Party {
    /// The `role` token (`subject token`, `actor token`) read from the file at `path`.
    fn file(role: &'static str, path: impl Into<PathBuf>, token_type: TokenType) -> Party {
        let from = ReadParam::External(External::file(path), kind(role, &token_type));
        Party { from, token_type }
    }

    /// The `role` token `make` returns.
    fn closure<F, Fut, E>(role: &'static str, make: F, token_type: TokenType) -> Party
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let from = closure(make, kind(role, &token_type));
        Party { from, token_type }
    }

    /// `source`'s token.
    fn source(source: impl TokenSource, token_type: TokenType) -> Party {
        let from = ReadParam::Source(Arc::new(source));
        Party { from, token_type }
    }
}

/// Configures a [`TokenExchange`]. Mistakes are reported by [`build`](Self::build).
#[must_use]
#[derive(Default)]
pub struct TokenExchangeBuilder {
    client: ClientCredentialsBuilder,
    subject: Option<Party>,
    actor: Option<Party>,
    audiences: Vec<String>,
    resources: Vec<String>,
    requested: Option<TokenType>,
}

impl fmt::Debug for TokenExchangeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenExchangeBuilder")
            .field("client", &self.client)
            .field(
                "subject_token_type",
                &self.subject.as_ref().map(|s| s.token_type.uri()),
            )
            .field("audience", &self.audiences)
            .finish_non_exhaustive()
    }
}

/// A closure handing out a token, as a parameter read at each request.
fn closure<F, Fut, E>(make: F, kind: Kind) -> ReadParam
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    ReadParam::External(external_fn(make), kind)
}

fn kind(name: &'static str, token_type: &TokenType) -> Kind {
    Kind {
        name,
        jwt: token_type.is_jwt(),
    }
}

impl TokenExchangeBuilder {
    /// The token endpoint (see [`ClientCredentialsBuilder::token_url`]).
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.client = self.client.token_url(url);
        self
    }

    /// The issuer, to discover the token endpoint from (see
    /// [`ClientCredentialsBuilder::issuer`]).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.client = self.client.issuer(issuer);
        self
    }

    /// The client id. Without a secret or assertion, it is sent in the body and the client
    /// does not authenticate (a public client); without either, nothing identifies the client
    /// but the subject token (as Google's STS wants).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client = self.client.client_id(id);
        self
    }

    /// The client secret (see [`ClientCredentialsBuilder::client_secret`]).
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.client = self.client.client_secret(secret);
        self
    }

    /// The client secret, read from a file at each exchange (see
    /// [`ClientCredentialsBuilder::client_secret_file`]).
    pub fn client_secret_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.client = self.client.client_secret_file(path);
        self
    }

    /// A client assertion made elsewhere, read from a file at each exchange (see
    /// [`ClientCredentialsBuilder::client_assertion_file`]).
    pub fn client_assertion_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.client = self.client.client_assertion_file(path);
        self
    }

    /// A client assertion `make` returns, called at each exchange (see
    /// [`ClientCredentialsBuilder::client_assertion_fn`]).
    pub fn client_assertion_fn<F, Fut, E>(mut self, make: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.client = self.client.client_assertion_fn(make);
        self
    }

    /// How the client sends its secret (see [`ClientCredentialsBuilder::auth_style`]).
    pub fn auth_style(mut self, style: AuthStyle) -> Self {
        self.client = self.client.auth_style(style);
        self
    }

    /// How the client authenticates, as one value (see [`ClientAuth`]); [`ClientAuth::none`]
    /// for none.
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.client = self.client.client_auth(auth);
        self
    }

    /// The subject token (RFC 8693 §2.1 `subject_token`), read from the file at `path` at
    /// every exchange: a Kubernetes projected service-account token, a SPIFFE JWT-SVID. The
    /// file need not exist at `build()`. A JWT ([`TokenType::Jwt`], [`TokenType::IdToken`])
    /// whose `exp` has passed is refused before it is sent, with an error naming the file.
    pub fn subject_token_file(mut self, path: impl Into<PathBuf>, token_type: TokenType) -> Self {
        self.subject = Some(Party::file("subject token", path, token_type));
        self
    }

    /// The subject token `make` returns, called at every exchange. A closure that fails,
    /// panics or takes longer than the timeout fails that exchange only.
    pub fn subject_token_fn<F, Fut, E>(mut self, make: F, token_type: TokenType) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.subject = Some(Party::closure("subject token", make, token_type));
        self
    }

    /// The subject token is `source`'s token, asked for at every exchange: exchange the
    /// service's own token (a [`ClientCredentials`], another exchange) for one scoped to a
    /// downstream audience. The source's own cache refreshes it; this exchange's cache keeps
    /// the exchanged token.
    ///
    /// ```no_run
    /// use tower_oauth2::token_exchange::{TokenExchange, TokenType};
    /// use tower_oauth2::ClientCredentials;
    ///
    /// # fn demo() -> Result<(), tower_oauth2::ConfigError> {
    /// let own = ClientCredentials::builder()
    ///     .token_url("https://idp.example.com/oauth/token")
    ///     .client_id("orders")
    ///     .client_secret("secret")
    ///     .build()?;
    /// let for_billing = TokenExchange::builder()
    ///     .token_url("https://idp.example.com/oauth/token")
    ///     .client_id("orders")
    ///     .client_secret("secret")
    ///     .subject_token_source(own, TokenType::AccessToken)
    ///     .audience("https://billing.example.com")
    ///     .build()?;
    /// # let _ = for_billing;
    /// # Ok(())
    /// # }
    /// ```
    pub fn subject_token_source(mut self, source: impl TokenSource, token_type: TokenType) -> Self {
        self.subject = Some(Party::source(source, token_type));
        self
    }

    /// The actor token (RFC 8693 §2.1 `actor_token`, for delegation), read from a file at
    /// every exchange.
    pub fn actor_token_file(mut self, path: impl Into<PathBuf>, token_type: TokenType) -> Self {
        self.actor = Some(Party::file("actor token", path, token_type));
        self
    }

    /// The actor token `make` returns, called at every exchange.
    pub fn actor_token_fn<F, Fut, E>(mut self, make: F, token_type: TokenType) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.actor = Some(Party::closure("actor token", make, token_type));
        self
    }

    /// The actor token is `source`'s token, asked for at every exchange.
    pub fn actor_token_source(mut self, source: impl TokenSource, token_type: TokenType) -> Self {
        self.actor = Some(Party::source(source, token_type));
        self
    }

    /// The `audience` the token is for (a logical name of the downstream service).
    /// Repeatable.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// The `resource` the token is for (an absolute URI, RFC 8707). Repeatable.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resources.push(resource.into());
        self
    }

    /// Ask for a scope. Repeatable; scopes are sent space-joined.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.client = self.client.scope(scope);
        self
    }

    /// The `requested_token_type`; without it, the server chooses (usually an access token).
    pub fn requested_token_type(mut self, token_type: TokenType) -> Self {
        self.requested = Some(token_type);
        self
    }

    /// Any extra parameter (Google's `options`, say).
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.client = self.client.param(name, value);
        self
    }

    /// Time allowed for a whole exchange, a subject token closure included (see
    /// [`ClientCredentialsBuilder::timeout`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.client = self.client.timeout(timeout);
        self
    }

    /// Lifetime assumed when a response has no `expires_in`.
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.client = self.client.default_lifetime(lifetime);
        self
    }

    /// Trust this root certificate (PEM) besides the system's.
    pub fn root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.client = self.client.root_certificate_pem(pem);
        self
    }

    /// Allow `http://` token URLs on hosts that are not loopback.
    pub fn allow_insecure_http(mut self) -> Self {
        self.client = self.client.allow_insecure_http();
        self
    }

    /// Timing rules of the built-in cache.
    pub fn cache_policy(mut self, policy: CachePolicy) -> Self {
        self.client = self.client.cache_policy(policy);
        self
    }

    /// Every other setting of the client (proxy, HTTP client, body limit, shared cache, …),
    /// applied to the [`ClientCredentialsBuilder`] this builder fills.
    pub fn configure(
        mut self,
        configure: impl FnOnce(ClientCredentialsBuilder) -> ClientCredentialsBuilder,
    ) -> Self {
        self.client = configure(self.client);
        self
    }

    /// Check the configuration and build the exchange.
    pub fn build(self) -> Result<TokenExchange, ConfigError> {
        let subject = self.subject.ok_or_else(|| {
            ConfigError::new(
                "subject_token",
                "a token exchange needs a subject token: call .subject_token_file(..), \
                 .subject_token_fn(..) or .subject_token_source(..)",
            )
        })?;
        let text = |value: &str| Zeroizing::new(value.to_owned());
        let mut params = vec![(
            "subject_token_type".to_owned(),
            text(subject.token_type.uri()),
        )];
        for audience in &self.audiences {
            params.push(("audience".to_owned(), text(audience)));
        }
        for resource in &self.resources {
            params.push(("resource".to_owned(), text(resource)));
        }
        if let Some(requested) = &self.requested {
            params.push(("requested_token_type".to_owned(), text(requested.uri())));
        }
        let mut read = vec![("subject_token", subject.from)];
        if let Some(actor) = self.actor {
            params.push(("actor_token_type".to_owned(), text(actor.token_type.uri())));
            read.push(("actor_token", actor.from));
        }
        let client = self
            .client
            .other_grant(OtherGrant {
                grant_type: GRANT_TYPE,
                params,
                read,
            })
            .build()?;
        Ok(TokenExchange { client })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rfc_8693_token_type_round_trips() {
        for known in [
            TokenType::AccessToken,
            TokenType::RefreshToken,
            TokenType::IdToken,
            TokenType::Saml1,
            TokenType::Saml2,
            TokenType::Jwt,
        ] {
            assert!(known.uri().starts_with("urn:ietf:params:oauth:token-type:"));
            assert_eq!(TokenType::from_uri(known.uri()), known);
        }
        let aws = "urn:ietf:params:aws:token-type:aws4_request";
        assert_eq!(TokenType::from_uri(aws), TokenType::Other(aws.into()));
    }
}
