//! [`PerRequestLayer`] and [`PerRequestAuth`]: a token from the cache each request needs.

use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::{authorize, ResponseFuture};
use crate::cache::{Chosen, PerRequestCaches, RequestHead};
use crate::error::BoxError;

/// A [`Layer`] like [`BearerAuthLayer`](crate::BearerAuthLayer), whose token depends on the
/// request: one client stack calling several APIs, each with its own audience (or scope,
/// resource, organization). Each key [`PerRequestCaches`] chooses has its own cache, single
/// flight and refresh; a request for which it chooses no key is sent untouched.
///
/// Choose by what the request carries where this layer sits. A tonic `Channel` is handed
/// requests whose URI is a path only (`/orders.Orders/Get`): there
/// [`RequestHead::host`](crate::cache::RequestHead::host) is `None`, and the gRPC service in
/// the path tells the APIs apart. A hyper-util client gets absolute URIs, with a host.
/// Either way, map them to keys from a closed set (see [`PerRequestCaches`]):
///
/// ```no_run
/// use tower::ServiceBuilder;
/// use tower_oauth2::cache::PerRequestCaches;
/// use tower_oauth2::layer::PerRequestLayer;
/// use tower_oauth2::ClientCredentials;
///
/// # fn demo(client: hyper_util::client::legacy::Client<
/// #     hyper_util::client::legacy::connect::HttpConnector, String>) -> Result<(), tower_oauth2::ConfigError> {
/// let credentials = ClientCredentials::builder()
///     .token_url("https://idp.example.com/oauth/token")
///     .client_id("my-service")
///     .client_secret("…")
///     .build()?;
/// let caches = PerRequestCaches::new(
///     |request| {
///         // gRPC: `/package.Service/Method`, with no host on the URI under tonic.
///         let path = request.path();
///         if path.starts_with("/orders.Orders/") {
///             return Some("https://orders.example.com");
///         }
///         if path.starts_with("/billing.Billing/") {
///             return Some("https://billing.example.com");
///         }
///         // HTTP: the host, when the URI names one.
///         match request.host()? {
///             "users.internal" => Some("https://users.example.com"),
///             _ => None, // anything else goes out without a token
///         }
///     },
///     move |audience| credentials.with_audience(audience),
/// );
/// let client = ServiceBuilder::new()
///     .layer(PerRequestLayer::new(caches))
///     .service(client);
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
///
/// A panic in the chooser or in `make` fails that request with an
/// [`ErrorKind::Panic`](crate::ErrorKind::Panic) error; the inner service is not called.
///
/// Behaves as [`BearerAuthLayer`](crate::BearerAuthLayer) in every other way: a request that
/// already has an `Authorization` header is passed on, and a `401` (or gRPC UNAUTHENTICATED)
/// drops the token that request carried from its key's cache.
#[derive(Clone, Debug)]
pub struct PerRequestLayer {
    caches: PerRequestCaches,
}

impl PerRequestLayer {
    /// A layer taking each request's token from the cache `caches` chooses.
    pub fn new(caches: PerRequestCaches) -> Self {
        PerRequestLayer { caches }
    }

    /// The caches, one per key.
    pub fn caches(&self) -> &PerRequestCaches {
        &self.caches
    }
}

impl<S> Layer<S> for PerRequestLayer {
    type Service = PerRequestAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PerRequestAuth {
            inner,
            caches: self.caches.clone(),
        }
    }
}

/// The service [`PerRequestLayer`] makes.
#[derive(Clone, Debug)]
pub struct PerRequestAuth<S> {
    inner: S,
    caches: PerRequestCaches,
}

impl<S> PerRequestAuth<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for PerRequestAuth<S>
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
        if request.headers().contains_key(AUTHORIZATION) {
            return ResponseFuture::passthrough(self.inner.call(request));
        }
        let snapshot = self.caches.snapshot();
        match self.caches.choose(&snapshot, &RequestHead::of(&request)) {
            Chosen::Known(kept) => {
                authorize(kept.cache(), &mut self.inner, request, Some(kept.clone()))
            }
            Chosen::Made(kept) => {
                authorize(kept.cache(), &mut self.inner, request, Some(kept.clone()))
            }
            Chosen::NoKey => ResponseFuture::passthrough(self.inner.call(request)),
            Chosen::Failed(error) => ResponseFuture::failed(error),
        }
    }
}
