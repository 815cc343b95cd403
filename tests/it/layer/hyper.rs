use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use std::time::Duration;
use tokio::sync::{watch, Notify};

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::retry::RetryLayer;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_oauth2::{
    cache::CachePolicy, layer::RetryOnUnauthorized, BearerAuth, BearerAuthLayer, ClientCredentials,
    ErrorKind,
};

use crate::support::{self, json, raw, serve, Api};
use tower_oauth2::test_util::TokenServer;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn credentials(server: &TokenServer) -> ClientCredentials {
    credentials_with(server, CachePolicy::default())
}

fn credentials_with(server: &TokenServer, policy: CachePolicy) -> ClientCredentials {
    ClientCredentials::builder()
        .token_url(server.url())
        .client_id("client")
        .client_secret("secret")
        .cache_policy(policy)
        .build()
        .expect("valid credentials")
}

/// A cache that drops a rejected token every time it is told to.
fn no_invalidation_limit() -> CachePolicy {
    CachePolicy::default().invalidation_interval(Duration::ZERO)
}

fn authenticated(server: &TokenServer) -> BearerAuth<HttpClient> {
    ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials(server)))
        .service(http_client())
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).expect("request")
}

async fn text(response: Response<Incoming>) -> String {
    let body = response
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    String::from_utf8(body.to_vec()).expect("utf-8 body")
}

#[tokio::test]
async fn requests_carry_the_token_and_share_one_token_request() {
    let server = support::issuing(3600).await;
    let api = Api::start(|token| token == "token-1").await;
    let mut client = authenticated(&server);

    for _ in 0..10 {
        let response = client.ready().await.unwrap().call(get(&api.url())).await;
        let response = response.expect("the call succeeds");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(text(response).await, "token-1", "the token the Api saw");
    }
    assert_eq!(api.served(), 10);
    assert_eq!(api.rejected(), 0);
    assert_eq!(server.requests(), 1, "ten requests, one token request");
}

#[tokio::test]
async fn clones_of_the_service_share_the_cached_token() {
    let server = support::issuing(3600).await;
    let api = Api::start(|token| token == "token-1").await;
    let client = authenticated(&server);

    for _ in 0..5 {
        let response = client.clone().oneshot(get(&api.url())).await.unwrap();
        assert_eq!(text(response).await, "token-1");
    }
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_request_with_its_own_authorization_is_passed_through_untouched() {
    let server = support::issuing(3600).await;
    let api = Api::start(|token| token == "caller-token").await;
    let client = authenticated(&server);

    let mut request = get(&api.url());
    request.headers_mut().insert(
        AUTHORIZATION,
        HeaderValue::from_static("Bearer caller-token"),
    );
    let response = client.oneshot(request).await.expect("the call succeeds");

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(text(response).await, "caller-token");
    assert_eq!(api.served(), 1);
    assert_eq!(server.requests(), 0, "no token was needed");
}

#[tokio::test]
async fn a_caller_header_is_not_replaced_even_when_a_token_is_cached() {
    let server = support::issuing(3600).await;
    let api = Api::start(|token| token == "token-1" || token == "caller-token").await;
    let client = authenticated(&server);

    let response = client.clone().oneshot(get(&api.url())).await.unwrap();
    assert_eq!(text(response).await, "token-1");

    let mut request = get(&api.url());
    request.headers_mut().insert(
        AUTHORIZATION,
        HeaderValue::from_static("Bearer caller-token"),
    );
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(text(response).await, "caller-token");
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_failing_token_endpoint_fails_the_call_without_calling_the_inner_service() {
    let server = support::scripted(|_, _| {
        json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({ "error": "invalid_client" }),
        )
    })
    .await;
    let api = Api::start(|_| true).await;
    let client = authenticated(&server);

    let error: tower::BoxError = client
        .oneshot(get(&api.url()))
        .await
        .expect_err("no token, no call");

    let error = error
        .downcast_ref::<tower_oauth2::Error>()
        .unwrap_or_else(|| panic!("a tower_oauth2::Error, got {error:?}"));
    assert_eq!(error.kind(), ErrorKind::Rejected);
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(
        error.oauth_error().map(|e| e.code()),
        Some("invalid_client")
    );
    assert!(!error.is_transient());
    assert_eq!(server.requests(), 1);
    assert_eq!(api.served() + api.rejected(), 0, "the Api was never called");
}

#[tokio::test]
async fn a_rejected_token_is_dropped_and_the_next_call_carries_a_new_one() {
    let server = support::issuing(3600).await;
    let api = Api::start(|token| token == "token-2").await;
    let client = authenticated(&server);

    let response = client.clone().oneshot(get(&api.url())).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "without a retry layer the 401 reaches the caller"
    );
    assert_eq!(server.requests(), 1);

    let response = client.clone().oneshot(get(&api.url())).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(text(response).await, "token-2");

    let response = client.oneshot(get(&api.url())).await.unwrap();
    assert_eq!(text(response).await, "token-2");
    assert_eq!(server.requests(), 2, "exactly one refetch");
    assert_eq!(api.rejected(), 1);
    assert_eq!(api.served(), 2);
}

#[tokio::test]
async fn a_late_rejection_of_an_old_token_does_not_drop_the_new_one() {
    let server = support::issuing(3600).await;
    // An Api that accepts only token-2; on /slow it holds its answer until released.
    let (release, gate) = watch::channel(false);
    let slow_arrived = Arc::new(Notify::new());
    let api = {
        let slow_arrived = slow_arrived.clone();
        serve(move |request| {
            let mut gate = gate.clone();
            let slow_arrived = slow_arrived.clone();
            async move {
                let auth = request.headers().get(AUTHORIZATION).cloned();
                if request.uri().path() == "/slow" {
                    slow_arrived.notify_one();
                    let _ = gate.wait_for(|open| *open).await;
                }
                match auth {
                    Some(auth) if auth == "Bearer token-2" => raw(StatusCode::OK, "", "ok"),
                    _ => raw(StatusCode::UNAUTHORIZED, "", ""),
                }
            }
        })
        .await
    };
    let client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials_with(
            &server,
            no_invalidation_limit(),
        )))
        .service(http_client());

    let slow = tokio::spawn(client.clone().oneshot(get(&format!("http://{api}/slow"))));
    slow_arrived.notified().await;
    let fast = format!("http://{api}/fast");
    let response = client.clone().oneshot(get(&fast)).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "token-1 rejected"
    );
    let response = client.clone().oneshot(get(&fast)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "token-2 accepted");
    assert_eq!(server.requests(), 2);

    // The slow request carried token-1; its 401 arrives after token-2 is cached.
    release.send(true).unwrap();
    let response = slow.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let response = client.oneshot(get(&fast)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(server.requests(), 2, "token-2 survived the stale rejection");
}

#[tokio::test]
async fn retry_on_unauthorized_replays_once_with_a_fresh_token() {
    let server = support::issuing(3600).await;
    let api = Api::start(|token| token == "token-2").await;
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryOnUnauthorized::default()))
        .layer(BearerAuthLayer::new(credentials(&server)))
        .service(http_client());

    let response = client.clone().oneshot(get(&api.url())).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(text(response).await, "token-2");
    assert_eq!(api.rejected(), 1);
    assert_eq!(api.served(), 1);
    assert_eq!(server.requests(), 2);

    // Later calls use token-2 straight away.
    let response = client.oneshot(get(&api.url())).await.unwrap();
    assert_eq!(text(response).await, "token-2");
    assert_eq!(api.rejected(), 1);
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn retry_on_unauthorized_gives_up_after_one_replay() {
    let server = support::issuing(3600).await;
    let api = Api::start(|_| false).await;
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryOnUnauthorized::default()))
        .layer(BearerAuthLayer::new(credentials_with(
            &server,
            no_invalidation_limit(),
        )))
        .service(http_client());

    let response = client.clone().oneshot(get(&api.url())).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api.rejected(), 2, "one attempt and one replay");
    assert_eq!(server.requests(), 2);

    // The policy is per request: the next call gets its own single replay, no more.
    let response = client.oneshot(get(&api.url())).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api.rejected(), 4);
    assert_eq!(server.requests(), 4);
    assert_eq!(api.served(), 0);
}

#[tokio::test]
async fn an_api_rejecting_every_token_cannot_turn_requests_into_token_requests() {
    // Default policy: a token is dropped at most once per invalidation interval (5 s), so
    // the replay's rejection of token-2 keeps it, and so do the next calls' rejections: those
    // are not replayed, since a replay would carry token-2 again.
    let server = support::issuing(3600).await;
    let api = Api::start(|_| false).await;
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryOnUnauthorized::default()))
        .layer(BearerAuthLayer::new(credentials(&server)))
        .service(http_client());

    for _ in 0..3 {
        let response = client.clone().oneshot(get(&api.url())).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        api.rejected(),
        4,
        "the first call and its replay; the next two are not replayed: the cache kept token-2"
    );
    assert_eq!(server.requests(), 2, "token-1 dropped once; token-2 kept");
}

#[tokio::test]
async fn retry_does_not_replay_a_request_with_its_own_authorization() {
    let server = support::issuing(3600).await;
    let api = Api::start(|_| false).await;
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryOnUnauthorized::default()))
        .layer(BearerAuthLayer::new(credentials(&server)))
        .service(http_client());

    let mut request = get(&api.url());
    request
        .headers_mut()
        .insert(AUTHORIZATION, HeaderValue::from_static("Bearer mine"));
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api.rejected(), 1);
    assert_eq!(server.requests(), 0);
}

#[tokio::test]
async fn works_through_ready_and_call_and_through_oneshot() {
    let server = support::issuing(3600).await;
    let api = Api::start(|token| token == "token-1").await;
    let mut service = authenticated(&server);

    let ready = ServiceExt::<Request<Full<Bytes>>>::ready(&mut service)
        .await
        .expect("ready");
    let response = ready.call(get(&api.url())).await.expect("call");
    assert_eq!(text(response).await, "token-1");

    let response = service.oneshot(get(&api.url())).await.expect("oneshot");
    assert_eq!(text(response).await, "token-1");
    assert_eq!(api.served(), 2);
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn the_inner_service_receives_a_sensitive_bearer_header() {
    let server = support::issuing(3600).await;
    let seen: Arc<Mutex<Vec<HeaderValue>>> = Arc::default();
    let inner = {
        let seen = seen.clone();
        service_fn(move |request: Request<Full<Bytes>>| {
            let seen = seen.clone();
            async move {
                let header = request.headers().get(AUTHORIZATION).cloned();
                seen.lock().unwrap().extend(header);
                Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
            }
        })
    };
    let service = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials(&server)))
        .service(inner);

    // The first call waits for the token; the second takes the cached one.
    for _ in 0..2 {
        service.clone().oneshot(Request::default()).await.unwrap();
    }

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for header in &seen {
        assert_eq!(header, "Bearer token-1");
        assert!(header.is_sensitive(), "the bearer header must be sensitive");
    }
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn retry_on_unauthorized_does_not_replay_when_the_cache_kept_the_rejected_token() {
    let tokens = tower_oauth2::test_util::TokenServer::builder()
        .client("client", "secret")
        .start()
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let api = {
        let seen = seen.clone();
        serve(move |request: Request<Incoming>| {
            let seen = seen.clone();
            async move {
                let auth = request.headers().get(AUTHORIZATION);
                let auth = auth.and_then(|v| v.to_str().ok()).unwrap_or_default();
                seen.lock().unwrap().push(auth.to_owned());
                raw(StatusCode::UNAUTHORIZED, "text/plain", "unauthorized")
            }
        })
        .await
    };
    // The default policy: a second rejection within 5 s keeps the token.
    let credentials = ClientCredentials::builder()
        .token_url(tokens.url())
        .client_id("client")
        .client_secret("secret")
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryOnUnauthorized::default()))
        .layer(BearerAuthLayer::new(credentials))
        .service(http_client());
    let url = format!("http://{api}/orders");

    for _ in 0..2 {
        let mut post = get(&url);
        *post.method_mut() = http::Method::POST;
        let response = client.clone().oneshot(post).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        *seen.lock().unwrap(),
        ["Bearer token-1", "Bearer token-2", "Bearer token-2"],
        "the second POST is not replayed with the token the cache kept"
    );
    assert_eq!(tokens.requests(), 2);
}
