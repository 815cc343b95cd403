//! [`RetryOnUnauthorized`]: replay a request once after the server rejected its token.

use std::future::{ready, Ready};

use http::header::AUTHORIZATION;
use http::{Request, Response};
use tower::retry::Policy;

use super::future::{rejects_token, NonceRequested, TokenRejected};
use crate::TokenCache;

/// Whether a replay is worth it, and the cache whose token the request carried:
/// the layer dropped the rejected token, so that a replay carries another one; or the
/// resource server asked for a new DPoP nonce, which the replay's proof carries (a nonce the
/// layer could not keep, or the one the request already sent, is not worth a replay). A
/// response the layer did not mark carried no token of ours.
fn worth_replaying<B>(response: &Response<B>) -> Option<(Option<&TokenCache>, bool)> {
    if let Some(asked) = response.extensions().get::<NonceRequested>() {
        return asked.fresh.then_some((asked.cache.as_ref(), true));
    }
    response
        .extensions()
        .get::<TokenRejected>()
        .filter(|rejected| !rejected.still_cached)
        .map(|rejected| (rejected.cache.as_ref(), false))
}

/// A [`tower::retry::Policy`] that replays a request once when the response says its token was
/// rejected (HTTP 401, or gRPC UNAUTHENTICATED in the headers), or, for a DPoP token, that the
/// resource server wants its nonce in the proof (`401` with `WWW-Authenticate: DPoP
/// error="use_dpop_nonce"`): the replay carries a new proof with that nonce, and the same
/// token.
///
/// [`BearerAuth`](crate::BearerAuth) has already dropped the rejected token by then, so the
/// replay carries a fresh one. When it kept the token (a second rejection within
/// [`CachePolicy::invalidation_interval`](crate::cache::CachePolicy::invalidation_interval)), the
/// request is not replayed: it would carry the same token again. Only requests whose body is `Clone` can be replayed; streaming
/// bodies cannot, and this policy never tries. Requests that carried their own `Authorization`
/// header are not replayed.
///
/// **Not for tonic channels**: tonic's request bodies are streams (`tonic::body::Body` is not
/// `Clone`), so a tonic request cannot be replayed by a tower retry layer. It does not need
/// one to recover: when a call fails with `UNAUTHENTICATED`, the layer has already dropped the
/// rejected token, so calling again (once) from your code carries a fresh one.
///
/// Put the retry layer *outside* the bearer layer:
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower::{service_fn, ServiceBuilder};
/// use tower::retry::RetryLayer;
/// use tower_oauth2::{BearerAuthLayer, layer::RetryOnUnauthorized, source::StaticToken};
///
/// let service = ServiceBuilder::new()
///     .layer(RetryLayer::new(RetryOnUnauthorized::default()))
///     .layer(BearerAuthLayer::new(StaticToken::new("t")))
///     .service(service_fn(|_req: http::Request<Full<Bytes>>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(()))
///     }));
/// # let _ = service;
/// ```
#[derive(Clone, Debug, Default)]
pub struct RetryOnUnauthorized {
    retried: bool,
}

impl<ReqBody, ResBody, E> Policy<Request<ReqBody>, Response<ResBody>, E> for RetryOnUnauthorized
where
    ReqBody: Clone,
{
    type Future = Ready<()>;

    fn retry(
        &mut self,
        request: &mut Request<ReqBody>,
        result: &mut Result<Response<ResBody>, E>,
    ) -> Option<Self::Future> {
        let http2 = request.version() == http::Version::HTTP_2;
        let Ok(response) = result else { return None };
        if self.retried || !rejects_token(response, http2) {
            return None;
        }
        let (cache, nonce) = worth_replaying(response)?;
        self.retried = true;
        if let Some(cache) = cache {
            cache.count_replay(nonce);
        }
        Some(ready(()))
    }

    fn clone_request(&mut self, request: &Request<ReqBody>) -> Option<Request<ReqBody>> {
        if self.retried || request.headers().contains_key(AUTHORIZATION) {
            return None;
        }
        let mut clone = Request::new(request.body().clone());
        *clone.method_mut() = request.method().clone();
        *clone.uri_mut() = request.uri().clone();
        *clone.version_mut() = request.version();
        *clone.headers_mut() = request.headers().clone();
        *clone.extensions_mut() = request.extensions().clone();
        Some(clone)
    }
}
