use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{watch, Notify};
use tower::{ServiceBuilder, ServiceExt};
use tower_oauth2::{BearerAuth, BearerAuthLayer, ClientCredentials};

use crate::support::{self, json, Api};
use tower_oauth2::test_util::TokenServer;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

#[derive(Clone)]
struct AppState {
    /// The outbound client to the upstream API, authenticated by the layer.
    upstream: BearerAuth<HttpClient>,
    upstream_url: String,
    /// Requests that reached the handler, and a signal when `expected` of them have.
    arrived: Arc<AtomicUsize>,
    expected: usize,
    all_arrived: Arc<Notify>,
}

/// Calls the upstream and relays what it answered: its body on success, 502 when it refused
/// our credentials, 503 when no token could be had.
async fn relay(State(state): State<AppState>) -> (StatusCode, String) {
    if state.arrived.fetch_add(1, Ordering::SeqCst) + 1 == state.expected {
        state.all_arrived.notify_one();
    }
    let request = Request::get(&state.upstream_url)
        .body(Full::default())
        .expect("request");
    match state.upstream.clone().oneshot(request).await {
        Ok(response) if response.status() == StatusCode::OK => {
            let body = response.into_body().collect().await;
            match body {
                Ok(body) => (
                    StatusCode::OK,
                    String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                ),
                Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()),
            }
        }
        Ok(response) if response.status() == StatusCode::UNAUTHORIZED => (
            StatusCode::BAD_GATEWAY,
            "the upstream refused our credentials".to_owned(),
        ),
        Ok(response) => (
            StatusCode::BAD_GATEWAY,
            format!("the upstream answered {}", response.status()),
        ),
        Err(error) if error.is::<tower_oauth2::Error>() => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no token for the upstream: {error}"),
        ),
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()),
    }
}

struct App {
    addr: SocketAddr,
    all_arrived: Arc<Notify>,
}

/// The axum app on a loopback port, calling `api` with tokens from `tokens`.
async fn app(tokens: &TokenServer, api: &Api, expected: usize) -> App {
    let credentials = ClientCredentials::builder()
        .token_url(tokens.url())
        .client_id("client")
        .client_secret("s3cr3t-value")
        .build()
        .expect("valid credentials");
    let all_arrived = Arc::new(Notify::new());
    let state = AppState {
        upstream: ServiceBuilder::new()
            .layer(BearerAuthLayer::new(credentials))
            .service(http_client()),
        upstream_url: api.url(),
        arrived: Arc::default(),
        expected,
        all_arrived: all_arrived.clone(),
    };
    let router = Router::new().route("/relay", get(relay)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    App { addr, all_arrived }
}

/// GET /relay on the app with a plain client: status and body.
async fn call(client: &HttpClient, app: SocketAddr) -> (StatusCode, String) {
    let request = Request::get(format!("http://{app}/relay"))
        .body(Full::default())
        .expect("request");
    let response = client.request(request).await.expect("the app answers");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_upstream_sees_the_bearer_token() {
    let tokens = support::issuing(3600).await;
    let api = Api::start(|token| token == "token-1").await;
    let app = app(&tokens, &api, 1).await;
    let client = http_client();

    assert_eq!(
        call(&client, app.addr).await,
        (StatusCode::OK, "token-1".to_owned())
    );
    assert_eq!(
        call(&client, app.addr).await,
        (StatusCode::OK, "token-1".to_owned())
    );
    assert_eq!(api.served(), 2);
    assert_eq!(tokens.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_requests_cost_one_token_request() {
    const REQUESTS: usize = 50;
    // The token endpoint holds its answer until every request is waiting in the handler.
    let (release, gate) = watch::channel(false);
    let tokens = support::scripted_async(move |_, n| {
        let mut gate = gate.clone();
        async move {
            let _ = gate.wait_for(|open| *open).await;
            json(
                StatusCode::OK,
                serde_json::json!({
                    "access_token": format!("token-{n}"),
                    "token_type": "Bearer",
                    "expires_in": 3600,
                }),
            )
        }
    })
    .await;
    let api = Api::start(|token| token == "token-1").await;
    let app = app(&tokens, &api, REQUESTS).await;
    let client = http_client();

    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..REQUESTS {
        let client = client.clone();
        calls.spawn(async move { call(&client, app.addr).await });
    }
    app.all_arrived.notified().await;
    assert_eq!(
        api.served() + api.rejected(),
        0,
        "no token has been issued yet"
    );
    release.send(true).expect("the token server is listening");

    let mut answered = 0;
    while let Some(result) = calls.join_next().await {
        let (status, body) = result.expect("the call task");
        assert_eq!((status, body.as_str()), (StatusCode::OK, "token-1"));
        answered += 1;
    }
    assert_eq!(answered, REQUESTS);
    assert_eq!(api.served(), REQUESTS);
    assert_eq!(
        tokens.requests(),
        1,
        "{REQUESTS} concurrent requests, one token request"
    );
}

#[tokio::test]
async fn an_upstream_401_becomes_the_status_the_handler_chooses() {
    let tokens = support::issuing(3600).await;
    let api = Api::start(|token| token == "token-2").await;
    let app = app(&tokens, &api, 1).await;
    let client = http_client();

    let (status, body) = call(&client, app.addr).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body, "the upstream refused our credentials");
    assert_eq!(api.rejected(), 1);

    // The rejected token was dropped: the next request goes out with a new one.
    assert_eq!(
        call(&client, app.addr).await,
        (StatusCode::OK, "token-2".to_owned())
    );
    assert_eq!(tokens.requests(), 2);
}

#[tokio::test]
async fn a_failing_token_endpoint_becomes_the_status_the_handler_chooses() {
    let tokens = support::scripted(|_, _| {
        json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({ "error": "invalid_client" }),
        )
    })
    .await;
    let api = Api::start(|_| true).await;
    let app = app(&tokens, &api, 1).await;
    let client = http_client();

    let (status, body) = call(&client, app.addr).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("invalid_client"), "{body}");
    assert!(!body.contains("s3cr3t-value"), "{body}");
    assert_eq!(
        api.served() + api.rejected(),
        0,
        "the upstream was never called"
    );
}
