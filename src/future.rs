//! [`ResponseFuture`]: waits for a token if it must, calls the inner service, and watches the
//! response for a rejected token.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_util::future::BoxFuture;
use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::cache::Entry;
use crate::error::BoxError;
use crate::{Error, TokenCache};

/// gRPC status code 16, UNAUTHENTICATED, as it appears in a `grpc-status` header.
const GRPC_UNAUTHENTICATED: &[u8] = b"16";

pin_project! {
    /// The response future of [`BearerAuth`](crate::BearerAuth).
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        /// Slow path: no fresh token yet.
        Waiting {
            token: BoxFuture<'static, Result<Arc<Entry>, Error>>,
            cache: TokenCache,
            service: Option<S>,
            request: Option<Request<ReqBody>>,
        },
        /// The inner service has the request; `watch` says which token to drop on a 401.
        Called {
            #[pin]
            future: S::Future,
            watch: Option<(TokenCache, u64)>,
        },
    }
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
            },
        }
    }

    pub(crate) fn sent(future: S::Future, cache: &TokenCache, generation: u64) -> Self {
        ResponseFuture {
            state: State::Called {
                future,
                watch: Some((cache.clone(), generation)),
            },
        }
    }

    pub(crate) fn waiting(cache: TokenCache, service: S, request: Request<ReqBody>) -> Self {
        let waiting_on = cache.clone();
        ResponseFuture {
            state: State::Waiting {
                token: Box::pin(async move { waiting_on.entry().await }),
                cache,
                service: Some(service),
                request: Some(request),
            },
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
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Waiting {
                    token,
                    cache,
                    service,
                    request,
                } => {
                    let entry = ready!(token.as_mut().poll(cx))?;
                    let (Some(mut service), Some(mut request)) = (service.take(), request.take())
                    else {
                        unreachable!("a waiting ResponseFuture is resumed only once");
                    };
                    request
                        .headers_mut()
                        .insert(AUTHORIZATION, entry.header.clone());
                    let future = service.call(request);
                    let watch = Some((cache.clone(), entry.generation));
                    state.set(State::Called { future, watch });
                }
                StateProj::Called { future, watch } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    if let Some((cache, generation)) = watch.take() {
                        if rejects_token(&response) {
                            cache.invalidate_generation(generation);
                        }
                    }
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}

/// HTTP 401, or a gRPC trailers-only UNAUTHENTICATED.
pub(crate) fn rejects_token<B>(response: &Response<B>) -> bool {
    response.status() == StatusCode::UNAUTHORIZED
        || response
            .headers()
            .get("grpc-status")
            .is_some_and(|status| status.as_bytes() == GRPC_UNAUTHENTICATED)
}
