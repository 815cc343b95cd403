//! [`BearerAuthMiddleware`]: the layer's behaviour for `reqwest` clients, through
//! `reqwest-middleware` (enabled by the `reqwest` feature).

use http::header::AUTHORIZATION;
use http::{Extensions, HeaderValue, StatusCode};
use reqwest_middleware::{Middleware, Next};

use std::sync::Arc;

use crate::cache::{Chosen, Kept, PerRequestCaches, RequestHead};
use crate::TokenCache;

/// Adds `Authorization: Bearer …` to every request of a [`reqwest_middleware`] client, from
/// the same cache as [`BearerAuthLayer`](crate::BearerAuthLayer): one token request for any
/// number of concurrent requests, refreshed ahead of expiry, and a `401` drops exactly the
/// token that request carried.
///
/// A request that already has an `Authorization` header is sent as it is. When no token can
/// be had, the request is not sent and fails with [`reqwest_middleware::Error::Middleware`],
/// which downcasts to [`tower_oauth2::Error`](crate::Error).
///
/// With [`replay_once_on_401`](Self::replay_once_on_401), a request rejected with `401` is
/// sent once more with a new token, if its body can be cloned (streaming bodies cannot).
///
/// A DPoP token (see [`dpop`](crate::dpop)) goes as `Authorization: DPoP …` with a fresh
/// proof for each request (and each replay). A `401` asking for the server's DPoP nonce is
/// answered by sending the request once more with it, if its body can be cloned and the
/// server gave a new nonce, whatever `replay_once_on_401` says: the server refused it before
/// doing anything.
///
/// **Turn reqwest's redirects off for a DPoP client** (`reqwest::redirect::Policy::none()`):
/// reqwest follows a redirect inside the middleware, so the redirected request carries the
/// proof made for the first URL, which a server checking `htu` refuses. Such a `401` (from a
/// scheme, host, port or path other than the proof's) keeps the token, and is not replayed;
/// follow the redirect yourself to send it with a proof of its own. A redirect that ends where
/// it began (the same path with another query, or `/a` → `/login` → `/a`) cannot be told from
/// a direct answer: a server refusing the replayed proof's `jti` there makes the middleware
/// drop a good token (one more token request).
///
/// For bearer tokens too, a `401` from another origin than the request's (reqwest followed a
/// redirect there, without `Authorization`) keeps the token: it says nothing of it.
///
/// ```no_run
/// use tower_oauth2::{BearerAuthMiddleware, ClientCredentials};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let credentials = ClientCredentials::builder()
///     .token_url("https://idp.example.com/oauth/token")
///     .client_id("my-service")
///     .client_secret(std::env::var("CLIENT_SECRET")?)
///     .build()?;
///
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(BearerAuthMiddleware::new(credentials.clone()))
///     .build();
///
/// let orders = client.get("https://orders.example.com/v1/orders").send().await?;
/// println!("{}", orders.status());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct BearerAuthMiddleware {
    caches: Caches,
    replay: bool,
}

/// Where the middleware's tokens come from.
#[derive(Clone, Debug)]
enum Caches {
    One(TokenCache),
    PerRequest(PerRequestCaches),
}

impl BearerAuthMiddleware {
    /// Tokens from `cache`, or anything that converts into one, as for
    /// [`BearerAuthLayer::new`](crate::BearerAuthLayer::new).
    pub fn new(cache: impl Into<TokenCache>) -> Self {
        BearerAuthMiddleware {
            caches: Caches::One(cache.into()),
            replay: false,
        }
    }

    /// Tokens from the cache `caches` chooses for each request (see [`PerRequestCaches`]):
    /// one client calling several APIs, each with its own audience. A request for which it
    /// chooses no key is sent without a token; a panic in the chooser or in `make` fails that
    /// request with an [`ErrorKind::Panic`](crate::ErrorKind::Panic) error, unsent.
    ///
    /// ```no_run
    /// use tower_oauth2::cache::PerRequestCaches;
    /// use tower_oauth2::{BearerAuthMiddleware, ClientCredentials};
    ///
    /// # fn demo(credentials: ClientCredentials) {
    /// // A closed set of APIs, told apart by host (a reqwest URL always has one).
    /// let caches = PerRequestCaches::new(
    ///     |request| match request.host()? {
    ///         "orders.example.com" => Some("https://orders.example.com"),
    ///         "billing.example.com" => Some("https://billing.example.com"),
    ///         _ => None,
    ///     },
    ///     move |audience| credentials.with_audience(audience),
    /// );
    /// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
    ///     .with(BearerAuthMiddleware::per_request(caches))
    ///     .build();
    /// # let _ = client;
    /// # }
    /// ```
    pub fn per_request(caches: PerRequestCaches) -> Self {
        BearerAuthMiddleware {
            caches: Caches::PerRequest(caches),
            replay: false,
        }
    }

    /// Send a request rejected with `401` once more, with a new token, when its body can be
    /// cloned. Off by default: a replay sends the request twice, which is only right for
    /// requests that are safe to repeat.
    pub fn replay_once_on_401(mut self, replay: bool) -> Self {
        self.replay = replay;
        self
    }

    /// The cache `request` takes its token from, if any, and for a per-request key the key
    /// the request holds until it is answered (so that eviction sees it in use); an error when
    /// the user's code choosing it failed.
    fn cache_for(&self, request: &reqwest::Request) -> Result<Option<Using>, crate::Error> {
        match &self.caches {
            Caches::One(cache) => Ok(Some((cache.clone(), None))),
            Caches::PerRequest(caches) => {
                let snapshot = caches.snapshot();
                match caches.choose(&snapshot, &RequestHead::of_reqwest(request)) {
                    Chosen::NoKey => Ok(None),
                    Chosen::Known(kept) => Ok(Some((kept.cache().clone(), Some(kept.clone())))),
                    Chosen::Made(kept) => Ok(Some((kept.cache().clone(), Some(kept)))),
                    Chosen::Failed(error) => Err(error),
                }
            }
        }
    }
}

/// The cache a request takes its token from, and for a per-request key the key it holds.
type Using = (TokenCache, Option<Arc<Kept>>);

/// What goes on a request: the `Authorization` header, the generation of its token, and for
/// a DPoP token the proof and what to watch in the answer.
type Authorization = (
    HeaderValue,
    u64,
    Option<(HeaderValue, Box<crate::dpop::DpopWatch>)>,
);

/// The headers for `request` from `cache`.
async fn header_from(
    cache: &TokenCache,
    request: &reqwest::Request,
) -> Result<Authorization, crate::Error> {
    if let Some((header, generation)) = cache.fresh_header() {
        return Ok((header, generation, None));
    }
    let entry = cache.entry().await?;
    let proof = match entry.token.dpop() {
        None => None,
        Some(_) => {
            let uri: http::Uri =
                request.url().as_str().parse().map_err(|_| {
                    crate::Error::config("a DPoP proof cannot name this request's URL")
                })?;
            crate::dpop::prove(&entry.token, request.method(), &uri).await?
        }
    };
    Ok((entry.header.clone(), entry.generation, proof))
}

/// Put the headers on `request`; the DPoP watch, if any.
fn authorize(
    request: &mut reqwest::Request,
    (header, _, proof): Authorization,
) -> Option<Box<crate::dpop::DpopWatch>> {
    request.headers_mut().insert(AUTHORIZATION, header);
    proof.map(|(proof, watch)| {
        request.headers_mut().insert(crate::dpop::DPOP, proof);
        watch
    })
}

/// Where a request went, as far as its credentials are concerned: the scheme, host and port
/// (reqwest sends `Authorization` only there, across redirects) and, for a DPoP proof, the path
/// too (its `htu`). Compared between the request sent and the URL the response came from, to
/// tell a followed redirect from a direct answer. Not the query: a later middleware may add one
/// (an `api-version`), and the answer to a nonce request must still be heard. A hash, so that
/// a bearer request allocates nothing for it.
fn place(url: &reqwest::Url, with_path: bool) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    url.scheme().hash(&mut hasher);
    url.host_str().hash(&mut hasher);
    url.port_or_known_default().hash(&mut hasher);
    if with_path {
        url.path().hash(&mut hasher);
    }
    hasher.finish()
}

#[async_trait::async_trait]
impl Middleware for BearerAuthMiddleware {
    async fn handle(
        &self,
        mut request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        if request.headers().contains_key(AUTHORIZATION) {
            return next.run(request, extensions).await;
        }
        let chosen = self
            .cache_for(&request)
            .map_err(reqwest_middleware::Error::middleware)?;
        let Some((cache, _held)) = chosen else {
            return next.run(request, extensions).await;
        };
        let authorization = header_from(&cache, &request)
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        let generation = authorization.1;
        let dpop = authorization.2.is_some();
        // A DPoP request may have to be sent again with the server's nonce.
        let replay = if self.replay || dpop {
            request.try_clone()
        } else {
            None
        };
        // Where this request and its proof went (reqwest may answer from elsewhere).
        let sent = place(request.url(), dpop);
        let watch = authorize(&mut request, authorization);
        cache.count_attached();
        let response = next.clone().run(request, extensions).await?;
        if place(response.url(), dpop) != sent {
            // reqwest followed a redirect: to another origin, where it sent no `Authorization`,
            // or (DPoP) with the first URL's proof again. A refusal there says nothing of the
            // token: keep it, replay nothing.
            return Ok(response);
        }
        if let Some(watch) = &watch {
            let kept = crate::dpop::remember_nonce(&*watch.key, &watch.target, response.headers());
            let fresh = crate::dpop::is_new_nonce(kept, watch.nonce.as_deref());
            if response.status() == StatusCode::UNAUTHORIZED
                && crate::dpop::asks_for_nonce(response.headers())
            {
                // The token is fine; the next proof carries the nonce, if the server gave a
                // new one that could be kept (otherwise a replay would be refused the same way).
                let Some(mut replay) = replay.filter(|_| fresh) else {
                    return Ok(response);
                };
                let authorization = header_from(&cache, &replay)
                    .await
                    .map_err(reqwest_middleware::Error::middleware)?;
                let generation = authorization.1;
                let sent = place(replay.url(), true);
                let watch = authorize(&mut replay, authorization);
                cache.count_replay(true);
                cache.count_attached();
                drop(response);
                let response = next.run(replay, extensions).await?;
                if let Some(watch) = watch.filter(|_| place(response.url(), true) == sent) {
                    crate::dpop::remember_nonce(&*watch.key, &watch.target, response.headers());
                    if response.status() == StatusCode::UNAUTHORIZED
                        && !crate::dpop::asks_for_nonce(response.headers())
                    {
                        cache.reject(generation);
                    }
                }
                return Ok(response);
            }
        }
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        cache.reject(generation);
        let Some(mut replay) = replay.filter(|_| self.replay) else {
            return Ok(response);
        };
        let authorization = header_from(&cache, &replay)
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        if authorization.1 == generation {
            // The cache kept the rejected token (invalidations are rate-limited): a replay
            // would send the same request with the same token again.
            return Ok(response);
        }
        authorize(&mut replay, authorization);
        cache.count_replay(false);
        cache.count_attached();
        // The first answer is not read: its connection goes back to the pool once dropped.
        drop(response);
        next.run(replay, extensions).await
    }
}
