//! [`ResponseFuture`]: waits for a token if it must, calls the inner service, and watches the
//! response for a rejected token.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_util::future::BoxFuture;
use http::header::{HeaderName, AUTHORIZATION};
use http::{Request, Response, StatusCode, Version};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::cache::{cache_in, Entry, Kept};
use crate::dpop::{self, DpopWatch};
use crate::error::BoxError;
use crate::{Error, TokenCache};

/// gRPC status code 16, UNAUTHENTICATED, as it appears in a `grpc-status` header.
const GRPC_UNAUTHENTICATED: &[u8] = b"16";
/// Parsed once: looking a header up by `&str` would parse the name on every response.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

pin_project! {
    /// The response future of [`BearerAuth`](crate::BearerAuth).
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
        // For a key of `PerRequestCaches`: held until the response, so that a `401` reaches
        // the key's cache even if it was evicted meanwhile, and eviction sees it in use.
        held: Option<Arc<Kept>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        /// Slow path: no fresh token yet. Boxed, so the fast path's future stays small.
        Waiting {
            waiting: Option<Box<Waiting<S, ReqBody>>>,
        },
        /// The inner service has the request; `watch` says which token to drop on a 401;
        /// `dpop`, for a DPoP token, where the nonces its server gives go.
        Called {
            #[pin]
            future: S::Future,
            watch: Option<Watch>,
            dpop: Option<Box<DpopWatch>>,
        },
        /// No token can be had for this request, known before anything was sent (the user's
        /// code choosing its credentials panicked, say).
        Failed {
            error: Option<Error>,
        },
    }
}

/// Which cache handed out the token a request carries, and which token it was. Plain numbers,
/// so that `BearerAuth`'s fast path writes no shared reference count (its service holds the
/// cache; a slot taken over by another cache since is told apart by the generation).
#[derive(Clone, Copy)]
struct Watch {
    cache: usize,
    generation: u64,
    /// gRPC runs only over HTTP/2; other responses need no `grpc-status` lookup.
    http2: bool,
}

/// A token's entry, and for a DPoP token the proof for this request.
type Authorized = (Arc<Entry>, Option<(http::HeaderValue, Box<DpopWatch>)>);

/// What the slow path holds while the token is on its way.
struct Waiting<S, ReqBody> {
    token: BoxFuture<'static, Result<Authorized, Error>>,
    cache: TokenCache,
    service: S,
    request: Request<ReqBody>,
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn passthrough(future: S::Future) -> Self {
        ResponseFuture {
            state: State::Called {
                future,
                watch: None,
                dpop: None,
            },
            held: None,
        }
    }

    /// A request that fails with `error` without being sent.
    pub(crate) fn failed(error: Error) -> Self {
        ResponseFuture {
            state: State::Failed { error: Some(error) },
            held: None,
        }
    }

    pub(crate) fn sent(
        future: S::Future,
        cache: &TokenCache,
        generation: u64,
        version: Version,
        held: Option<Arc<Kept>>,
    ) -> Self {
        ResponseFuture {
            state: State::Called {
                future,
                watch: Some(Watch {
                    cache: cache.slot(),
                    generation,
                    http2: version == Version::HTTP_2,
                }),
                dpop: None,
            },
            held,
        }
    }

    pub(crate) fn waiting(
        cache: TokenCache,
        service: S,
        request: Request<ReqBody>,
        held: Option<Arc<Kept>>,
    ) -> Self {
        let waiting_on = cache.clone();
        let method = request.method().clone();
        let uri = request.uri().clone();
        ResponseFuture {
            state: State::Waiting {
                waiting: Some(Box::new(Waiting {
                    token: Box::pin(async move {
                        let entry = waiting_on.entry().await?;
                        let proof = dpop::prove(&entry.token, &method, &uri).await?;
                        Ok((entry, proof))
                    }),
                    cache,
                    service,
                    request,
                })),
            },
            held,
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ResBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut state = this.state;
        let held: &Option<Arc<Kept>> = this.held;
        loop {
            match state.as_mut().project() {
                StateProj::Called {
                    future,
                    watch,
                    dpop,
                } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    if let Some(sent) = dpop.take() {
                        let kept =
                            dpop::remember_nonce(&*sent.key, &sent.target, response.headers());
                        let fresh = dpop::is_new_nonce(kept, sent.nonce.as_deref());
                        let http2 = watch.is_some_and(|watch| watch.http2);
                        if rejects_token(&response, http2)
                            && dpop::asks_for_nonce(response.headers())
                        {
                            // The token is fine: the proof lacked the server's nonce, which the
                            // next proof to this origin carries (HTTP 401, or gRPC
                            // UNAUTHENTICATED, which has no other way to ask).
                            let mut response = response;
                            let cache = watch.and_then(|watch| the_cache(held, watch));
                            response
                                .extensions_mut()
                                .insert(NonceRequested { cache, fresh });
                            return Poll::Ready(Ok(response));
                        }
                    }
                    if let Some(watch) = watch.take() {
                        if rejects_token(&response, watch.http2) {
                            return Poll::Ready(Ok(rejected(response, held, watch)));
                        }
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Waiting { .. } => ready!(poll_waiting(state.as_mut(), cx))?,
                StateProj::Failed { error } => {
                    let error = error
                        .take()
                        .expect("a ResponseFuture is not polled after it completes");
                    return Poll::Ready(Err(error.into()));
                }
            }
        }
    }
}

/// The slow path's step: once the token is here, send the request and move to `Called`.
/// Out of line, so that the fast path's `poll` stays small.
#[cold]
#[inline(never)]
fn poll_waiting<S, ReqBody>(
    mut state: Pin<&mut State<S, ReqBody>>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Error>>
where
    S: Service<Request<ReqBody>>,
{
    let StateProj::Waiting { waiting } = state.as_mut().project() else {
        return Poll::Ready(Ok(()));
    };
    let pending = waiting
        .as_mut()
        .expect("a ResponseFuture is not polled after it completes");
    let (entry, proof) = ready!(pending.token.as_mut().poll(cx))?;
    let Some(pending) = waiting.take() else {
        unreachable!("checked above");
    };
    let Waiting {
        cache,
        mut service,
        mut request,
        ..
    } = *pending;
    request
        .headers_mut()
        .insert(AUTHORIZATION, entry.header.clone());
    let dpop = proof.map(|(proof, watch)| {
        request.headers_mut().insert(dpop::DPOP, proof);
        watch
    });
    cache.count_attached();
    let http2 = request.version() == Version::HTTP_2;
    let future = service.call(request);
    state.set(State::Called {
        future,
        watch: Some(Watch {
            cache: cache.slot(),
            generation: entry.generation,
            http2,
        }),
        dpop,
    });
    Poll::Ready(Ok(()))
}

/// The cache that handed out the token `watch` names: the one the request holds, or the one
/// in its slot if that is still it. Only on a refusal: it writes a reference count.
#[cold]
fn the_cache(held: &Option<Arc<Kept>>, watch: Watch) -> Option<TokenCache> {
    match held {
        Some(kept) => Some(kept.cache().clone()),
        None => cache_in(watch.cache, watch.generation),
    }
}

/// `response` rejected the token `watch` names: drop it from its cache, and say so on the
/// response for [`RetryOnUnauthorized`](super::RetryOnUnauthorized).
#[cold]
#[inline(never)]
fn rejected<B>(mut response: Response<B>, held: &Option<Arc<Kept>>, watch: Watch) -> Response<B> {
    let cache = the_cache(held, watch);
    if let Some(cache) = &cache {
        cache.reject(watch.generation);
    }
    response.extensions_mut().insert(TokenRejected {
        still_cached: cache
            .as_ref()
            .is_some_and(|cache| cache.holds(watch.generation)),
        cache,
    });
    response
}

/// Put on a response that rejected the token the layer sent: whether the cache still holds
/// that token (its invalidation was rate-limited), so that a replay would carry it again.
#[derive(Debug, Clone)]
pub(crate) struct TokenRejected {
    pub(crate) still_cached: bool,
    /// The cache, to count a replay for it (none if it is gone).
    pub(crate) cache: Option<TokenCache>,
}

/// Put on a refusal that asked for the resource server's DPoP nonce: the token was kept, and
/// the next proof to that origin carries the nonce.
#[derive(Debug, Clone)]
pub(crate) struct NonceRequested {
    /// The cache, to count the retry.
    pub(crate) cache: Option<TokenCache>,
    /// Whether the nonce was kept and is not the one the refused proof carried: only then is
    /// a replay worth it.
    pub(crate) fresh: bool,
}

/// HTTP 401, or a gRPC trailers-only UNAUTHENTICATED (looked for only over HTTP/2).
pub(crate) fn rejects_token<B>(response: &Response<B>, http2: bool) -> bool {
    match response.status() {
        StatusCode::UNAUTHORIZED => true,
        // gRPC answers every call with 200; its status travels in headers or trailers.
        StatusCode::OK if http2 => response
            .headers()
            .get(GRPC_STATUS)
            .is_some_and(|status| status.as_bytes() == GRPC_UNAUTHENTICATED),
        _ => false,
    }
}
