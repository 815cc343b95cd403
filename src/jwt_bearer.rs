//! [`JwtBearer`]: the JWT bearer grant (RFC 7523 §2.1). A JWT made elsewhere (a mounted
//! workload token, a closure's) is itself the authorization grant, sent as `assertion` with
//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`, with any client authentication
//! or none (some servers authenticate the client for every grant).
//!
//! The same client as [`ClientCredentials`] with another grant: same
//! transport, cache, single flight, refresh ahead and backoff. The assertion is read at every
//! token request; an expired one (by its `exp`, read without verifying) is refused before it is
//! sent, with an error naming the file.
//!
//! ```no_run
//! # fn demo() -> Result<(), tower_oauth2::ConfigError> {
//! use tower_oauth2::jwt_bearer::JwtBearer;
//!
//! let grant = JwtBearer::builder()
//!     .token_url("https://idp.example.com/oauth2/token")
//!     .assertion_file("/var/run/secrets/tokens/idp-token")
//!     .scope("orders:read")
//!     .build()?;
//! let layer = tower_oauth2::BearerAuthLayer::new(grant);
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

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

/// `grant_type` of the JWT bearer grant (RFC 7523 §2.1).
pub(crate) const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

const ASSERTION: Kind = Kind {
    name: "assertion",
    jwt: true,
};

/// A token source for the JWT bearer grant, with its cache built in, like
/// [`ClientCredentials`]: clones share the cache; give it to
/// [`BearerAuthLayer::new`](crate::BearerAuthLayer::new). See [the module docs](self).
#[derive(Clone)]
pub struct JwtBearer {
    client: ClientCredentials,
}

impl JwtBearer {
    /// Start configuring one.
    pub fn builder() -> JwtBearerBuilder {
        JwtBearerBuilder::default()
    }

    /// A usable token: the cached one, or one fetched now (shared with every concurrent
    /// caller).
    pub async fn token(&self) -> Result<AccessToken, Error> {
        self.client.token().await
    }

    /// Drop `token` from the cache if it is still the cached one (a server rejected it).
    pub fn invalidate(&self, token: &AccessToken) {
        self.client.invalidate(token);
    }

    /// **Bypasses the cache**: one token request per call, for diagnostics and tests.
    pub async fn fetch_uncached(&self) -> Result<AccessToken, Error> {
        self.client.fetch_uncached().await
    }
}

impl TokenSource for JwtBearer {
    fn token(&self) -> TokenFuture<'_> {
        TokenSource::token(&self.client)
    }

    fn invalidate(&self, token: &AccessToken) -> bool {
        TokenSource::invalidate(&self.client, token)
    }
}

impl From<JwtBearer> for TokenCache {
    /// Its own cache, which every clone shares.
    fn from(grant: JwtBearer) -> Self {
        grant.client.into()
    }
}

impl fmt::Debug for JwtBearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.client, f)
    }
}

/// Configures a [`JwtBearer`]. Mistakes are reported by [`build`](Self::build).
#[must_use]
#[derive(Default)]
pub struct JwtBearerBuilder {
    client: ClientCredentialsBuilder,
    assertion: Option<ReadParam>,
}

impl fmt::Debug for JwtBearerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtBearerBuilder")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl JwtBearerBuilder {
    /// The token endpoint (see [`ClientCredentialsBuilder::token_url`]).
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.client = self.client.token_url(url);
        self
    }

    /// The issuer, to discover the token endpoint from.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.client = self.client.issuer(issuer);
        self
    }

    /// The JWT grant, read from the file at `path` at every token request. The file need not
    /// exist at `build()`.
    pub fn assertion_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.assertion = Some(ReadParam::External(External::file(path), ASSERTION));
        self
    }

    /// The JWT grant `make` returns, called at every token request. A closure that fails,
    /// panics or takes longer than the timeout fails that request only.
    pub fn assertion_fn<F, Fut, E>(mut self, make: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.assertion = Some(ReadParam::External(external_fn(make), ASSERTION));
        self
    }

    /// Ask for a scope. Repeatable; scopes are sent space-joined.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.client = self.client.scope(scope);
        self
    }

    /// The client id (with no secret: sent in the body, no client authentication).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client = self.client.client_id(id);
        self
    }

    /// The client secret, for servers that authenticate the client for every grant.
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.client = self.client.client_secret(secret);
        self
    }

    /// How the client sends its secret.
    pub fn auth_style(mut self, style: AuthStyle) -> Self {
        self.client = self.client.auth_style(style);
        self
    }

    /// How the client authenticates, as one value (see [`ClientAuth`]).
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.client = self.client.client_auth(auth);
        self
    }

    /// Any extra parameter (`audience`, `resource`, …).
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.client = self.client.param(name, value);
        self
    }

    /// Time allowed for a whole token request, an assertion closure included.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.client = self.client.timeout(timeout);
        self
    }

    /// Timing rules of the built-in cache.
    pub fn cache_policy(mut self, policy: CachePolicy) -> Self {
        self.client = self.client.cache_policy(policy);
        self
    }

    /// Every other setting of the client (proxy, HTTP client, roots, shared cache, …),
    /// applied to the [`ClientCredentialsBuilder`] this builder fills.
    pub fn configure(
        mut self,
        configure: impl FnOnce(ClientCredentialsBuilder) -> ClientCredentialsBuilder,
    ) -> Self {
        self.client = configure(self.client);
        self
    }

    /// Check the configuration and build the grant.
    pub fn build(self) -> Result<JwtBearer, ConfigError> {
        let assertion = self.assertion.ok_or_else(|| {
            ConfigError::new(
                "assertion",
                "the jwt-bearer grant needs its assertion: call .assertion_file(..) or \
                 .assertion_fn(..)",
            )
        })?;
        let client = self
            .client
            .other_grant(OtherGrant {
                grant_type: GRANT_TYPE,
                params: Vec::new(),
                read: vec![("assertion", assertion)],
            })
            .build()?;
        Ok(JwtBearer { client })
    }
}
