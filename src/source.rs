//! [`TokenSource`]: "get me a token", and its small implementations.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{AccessToken, Error};

/// The future a [`TokenSource`] returns. Boxed: it runs only when a token must be fetched,
/// never on the per-request fast path.
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<AccessToken, Error>> + Send + 'a>>;

/// Something that can produce an access token.
///
/// Implement it for your own way of getting tokens (a vault, a metadata server, a signed
/// assertion) and wrap it in a [`TokenCache`](crate::TokenCache)(crate::TokenCache) (`TokenCache::new(source)`),
/// which gives it caching, single flight, refresh ahead and backoff, so that `token` is called
/// only when a new token is needed. A source knows nothing about caching; the cache wraps it
/// from outside.
///
/// The trait is object safe: `Arc<dyn TokenSource>` and `Box<dyn TokenSource>` are sources too.
///
/// ```
/// use tower_oauth2::{AccessToken, Error, source::TokenFuture, TokenSource};
/// use std::time::Duration;
///
/// struct FromEnvironment;
///
/// impl TokenSource for FromEnvironment {
///     fn token(&self) -> TokenFuture<'_> {
///         Box::pin(async {
///             let secret = std::env::var("API_TOKEN").map_err(|e| Error::custom(false, e))?;
///             Ok(AccessToken::new(secret).with_lifetime(Duration::from_secs(300)))
///         })
///     }
/// }
///
/// let source: std::sync::Arc<dyn TokenSource> = std::sync::Arc::new(FromEnvironment);
/// # let _ = source;
/// ```
pub trait TokenSource: Send + Sync + 'static {
    /// A token to send. Sources that cache (like [`ClientCredentials`](crate::ClientCredentials)
    /// and [`TokenCache`](crate::TokenCache)) answer from their cache; others fetch a new one.
    fn token(&self) -> TokenFuture<'_>;

    /// A server rejected `token`, which this source handed out. Sources that cache tokens
    /// drop it, so that the next [`token`](TokenSource::token) call does not return it again;
    /// the default does nothing. A [`TokenCache`](crate::TokenCache) in front of this source calls it after
    /// dropping the token from its own entry.
    ///
    /// Returns whether the next `token` call may return another token: `true` (the default)
    /// for sources that fetch a new one each time; `false` for a source that would hand the
    /// same one back (a [`StaticToken`], a cache that keeps it), so that a cache in front keeps
    /// it too and nobody replays a request with the token just rejected.
    fn invalidate(&self, token: &AccessToken) -> bool {
        let _ = token;
        true
    }
}

impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn token(&self) -> TokenFuture<'_> {
        (**self).token()
    }

    fn invalidate(&self, token: &AccessToken) -> bool {
        (**self).invalidate(token)
    }
}

impl TokenSource for Box<dyn TokenSource> {
    fn token(&self) -> TokenFuture<'_> {
        (**self).token()
    }

    fn invalidate(&self, token: &AccessToken) -> bool {
        (**self).invalidate(token)
    }
}

/// A fixed token, for tests, development, or long-lived API keys sent as bearer tokens.
///
/// ```
/// use tower_oauth2::{BearerAuthLayer, source::StaticToken};
///
/// let layer = BearerAuthLayer::new(StaticToken::new("dev-token"));
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct StaticToken {
    token: AccessToken,
}

impl StaticToken {
    /// A source that always answers with this token, which never expires.
    pub fn new(secret: impl Into<String>) -> Self {
        StaticToken {
            token: AccessToken::new(secret),
        }
    }
}

impl From<AccessToken> for StaticToken {
    fn from(token: AccessToken) -> Self {
        StaticToken { token }
    }
}

impl TokenSource for StaticToken {
    fn token(&self) -> TokenFuture<'_> {
        let token = self.token.clone();
        Box::pin(async move { Ok(token) })
    }

    /// It has no other token to give.
    fn invalidate(&self, _token: &AccessToken) -> bool {
        false
    }
}

/// A source made from an async closure; see [`from_fn`].
#[derive(Clone)]
pub struct FnSource<F> {
    fetch: F,
}

impl<F> std::fmt::Debug for FnSource<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnSource").finish_non_exhaustive()
    }
}

/// A token source from a closure returning a future, called each time a token is needed.
///
/// ```
/// use std::time::Duration;
/// use tower_oauth2::{source::from_fn, AccessToken, TokenCache};
///
/// let cache = TokenCache::new(from_fn(|| async {
///     Ok(AccessToken::new("minted").with_lifetime(Duration::from_secs(60)))
/// }));
/// # let _ = cache;
/// ```
pub fn from_fn<F, Fut>(fetch: F) -> FnSource<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<AccessToken, Error>> + Send + 'static,
{
    FnSource { fetch }
}

impl<F, Fut> TokenSource for FnSource<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<AccessToken, Error>> + Send + 'static,
{
    fn token(&self) -> TokenFuture<'_> {
        Box::pin((self.fetch)())
    }
}
