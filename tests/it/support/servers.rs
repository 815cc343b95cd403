//! Real servers on loopback for the integration tests: token endpoints that are the crate's
//! public [`TokenServer`] with a script (so that tests hold, and show, the type users' tests
//! hold), a protected API that checks bearer tokens, and [`serve`] for any other handler. No
//! TLS and no keys here, so that the benches can include this file alone
//! (`#[path = "../tests/it/support/servers.rs"] mod servers;`).
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower_oauth2::test_util::{Received, TokenServer};

pub type Body = Full<Bytes>;

/// Serve `handler` over HTTP/1.1 and HTTP/2 on a fresh loopback port until the test ends.
pub async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(request).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A token endpoint that answers every request with `script(request, n)`, `n` counting from 1:
/// the public [`TokenServer`], whose [`script`](tower_oauth2::test_util::TokenServerBuilder::script)
/// always answers. Every request is recorded ([`TokenServer::received`]) and counted
/// ([`TokenServer::requests`]).
pub async fn scripted<F>(script: F) -> TokenServer
where
    F: Fn(&Received, usize) -> Response<Body> + Send + Sync + 'static,
{
    scripted_async(move |request, n| {
        let response = script(&request, n);
        async move { response }
    })
    .await
}

/// Like [`scripted`], with an async script (to delay or stall answers).
pub async fn scripted_async<F, Fut>(script: F) -> TokenServer
where
    F: Fn(Received, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    TokenServer::builder()
        .script(move |request, n| {
            let answer = script(request, n);
            async move { Some(answer.await) }
        })
        .start()
        .await
        .expect("a token server on loopback")
}

/// A token endpoint issuing `token-1`, `token-2`, … valid for `expires_in` seconds to any
/// request (`n` in `token-n` counts requests, as in [`scripted`]).
pub async fn issuing(expires_in: u64) -> TokenServer {
    scripted(move |_, n| {
        json(
            StatusCode::OK,
            serde_json::json!({
                "access_token": format!("token-{n}"),
                "token_type": "Bearer",
                "expires_in": expires_in,
            }),
        )
    })
    .await
}

/// The last request `server` received.
pub fn last(server: &TokenServer) -> Received {
    server
        .received()
        .pop()
        .expect("the token server received a request")
}

/// Under paused time the runtime jumps to the next timer whenever it is idle, including while a
/// loopback exchange is in flight. A 1 ms ticker bounds each jump, so virtual time moves as it
/// would in reality and no fetch timeout fires spuriously. Keep the handle alive for the test.
pub fn ticker() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
}

/// A JSON response.
pub fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    raw(status, "application/json", value.to_string())
}

/// A response with any content type and body.
pub fn raw(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if !content_type.is_empty() {
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            content_type.parse().expect("content type"),
        );
    }
    response
}

/// A protected API: answers 200 with the token it saw when `accepts(token)`, else 401.
#[derive(Clone)]
pub struct Api {
    pub addr: SocketAddr,
    served: Arc<AtomicUsize>,
    rejected: Arc<AtomicUsize>,
}

impl Api {
    pub async fn start<F>(accepts: F) -> Api
    where
        F: Fn(&str) -> bool + Send + Sync + 'static,
    {
        let accepts = Arc::new(accepts);
        let served = Arc::new(AtomicUsize::new(0));
        let rejected = Arc::new(AtomicUsize::new(0));
        let addr = {
            let (served, rejected) = (served.clone(), rejected.clone());
            serve(move |request: Request<Incoming>| {
                let accepts = accepts.clone();
                let (served, rejected) = (served.clone(), rejected.clone());
                async move {
                    let token = request
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .map(str::to_owned);
                    match token {
                        Some(token) if accepts(&token) => {
                            served.fetch_add(1, Ordering::SeqCst);
                            raw(StatusCode::OK, "text/plain", token)
                        }
                        _ => {
                            rejected.fetch_add(1, Ordering::SeqCst);
                            raw(StatusCode::UNAUTHORIZED, "text/plain", "unauthorized")
                        }
                    }
                }
            })
            .await
        };
        Api {
            addr,
            served,
            rejected,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/resource", self.addr)
    }

    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    pub fn rejected(&self) -> usize {
        self.rejected.load(Ordering::SeqCst)
    }
}
