//! [`BearerAuthLayer`] and [`BearerAuth`]: put `Authorization: Bearer …` on every request.
//!
//! Recipes: [tonic](crate::guide::tonic), [hyper-util](crate::guide::hyper_util),
//! [axum](crate::guide::axum).

use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::BoxError;
mod future;
mod per_request;
mod retry;

pub use future::ResponseFuture;
pub use per_request::{PerRequestAuth, PerRequestLayer};
pub use retry::RetryOnUnauthorized;

use crate::TokenCache;

/// A [`Layer`] that authenticates every request with a bearer token from a [`TokenSource`](crate::TokenSource).
///
/// Clones share one [`TokenCache`]: a thousand concurrent requests cost the identity provider
/// one token request. Works in `tower::ServiceBuilder` in front of a tonic `Channel`, a
/// hyper-util `Client`, or any `Service<http::Request<B>>`.
///
/// ```no_run
/// use tower::ServiceBuilder;
/// use tower_oauth2::{BearerAuthLayer, ClientCredentials};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let credentials = ClientCredentials::builder()
///     .token_url("https://idp.example.com/oauth/token")
///     .client_id("my-service")
///     .client_secret("…")
///     .build()?;
///
/// let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
/// let channel = ServiceBuilder::new()
///     .layer(BearerAuthLayer::new(credentials))
///     .service(channel);
/// // let mut client = my_proto::my_service_client::MyServiceClient::new(channel);
/// # let _ = channel;
/// # Ok(())
/// # }
/// ```
///
/// - A token bound to a key ([DPoP](crate::dpop), RFC 9449) goes as `Authorization: DPoP …`
///   with a new `DPoP` proof for the request's method and URL (which must be absolute: for a
///   tonic client, make it `with_origin`), never as a bearer token.
/// - A request that already has an `Authorization` header is passed on untouched.
/// - When no token can be had, the call fails with a [`BoxError`] that downcasts to
///   [`crate::Error`].
/// - A response with status `401`, or with `grpc-status: 16` (UNAUTHENTICATED) in its headers,
///   drops the token that request carried from the cache, so the next request fetches a new
///   one. To replay such a request once, see [`RetryOnUnauthorized`].
#[derive(Clone, Debug)]
pub struct BearerAuthLayer {
    cache: TokenCache,
}

impl BearerAuthLayer {
    /// A layer getting tokens from `cache`: a [`TokenCache`], or anything that converts into
    /// one: a [`ClientCredentials`](crate::ClientCredentials),
    /// [`TokenExchange`](crate::token_exchange::TokenExchange) or
    /// [`JwtBearer`](crate::jwt_bearer::JwtBearer) (its own cache, shared by every clone), a
    /// [`StaticToken`](crate::source::StaticToken), a
    /// [`from_fn`](crate::source::from_fn) source or an `Arc<dyn TokenSource>`. Wrap any other
    /// [`TokenSource`](crate::TokenSource) yourself: `BearerAuthLayer::new(TokenCache::new(source))`.
    pub fn new(cache: impl Into<TokenCache>) -> Self {
        BearerAuthLayer {
            cache: cache.into(),
        }
    }

    /// The cache this layer reads tokens from.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }
}

impl<S> Layer<S> for BearerAuthLayer {
    type Service = BearerAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth {
            inner,
            cache: self.cache.clone(),
        }
    }
}

/// The service [`BearerAuthLayer`] makes: adds the bearer token, then calls `S`.
#[derive(Clone, Debug)]
pub struct BearerAuth<S> {
    inner: S,
    cache: TokenCache,
}

impl<S> BearerAuth<S> {
    /// Wrap `inner`, with tokens from `source` (see [`BearerAuthLayer::new`]).
    pub fn new(inner: S, cache: impl Into<TokenCache>) -> Self {
        BearerAuthLayer::new(cache).layer(inner)
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for BearerAuth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // Looking first is cheaper than the entry API: on the empty or small header maps
        // clients hand over, `contains_key` returns before hashing, where `entry` hashes and
        // reserves room every time (callgrind: ~100 instructions a request; benches/README.md).
        if request.headers().contains_key(AUTHORIZATION) {
            return ResponseFuture::passthrough(self.inner.call(request));
        }
        authorize(&self.cache, &mut self.inner, request, None)
    }
}

/// Send `request` through `inner` with a token from `cache`: from this thread's copy of the
/// header when it is fresh, otherwise after waiting for the cache. `held`, a per-request key,
/// goes along until the response.
fn authorize<S, ReqBody, ResBody>(
    cache: &TokenCache,
    inner: &mut S,
    mut request: Request<ReqBody>,
    held: Option<std::sync::Arc<crate::cache::Kept>>,
) -> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    if let Some((header, generation)) = cache.fresh_header() {
        request.headers_mut().insert(AUTHORIZATION, header);
        cache.count_attached();
        let version = request.version();
        return ResponseFuture::sent(inner.call(request), cache, generation, version, held);
    }
    // `poll_ready` readied `inner`; take that one along and leave a clone behind.
    let clone = inner.clone();
    let ready = std::mem::replace(inner, clone);
    ResponseFuture::waiting(cache.clone(), ready, request, held)
}
