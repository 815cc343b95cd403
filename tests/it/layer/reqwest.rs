//! `BearerAuthMiddleware` with a real reqwest client, over loopback to a real token server and
//! a real API.

use std::sync::{Arc, Mutex};

use crate::support::{self, json, raw, serve, Api};
use http::header::{AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use tower_oauth2::test_util::TokenServer;
use tower_oauth2::{BearerAuthMiddleware, ClientCredentials, ErrorKind};

fn credentials(server: &TokenServer) -> ClientCredentials {
    ClientCredentials::builder()
        .token_url(server.url())
        .client_id("client")
        .client_secret("s3cr3t-value")
        .build()
        .unwrap()
}

fn client(middleware: BearerAuthMiddleware) -> reqwest_middleware::ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build()
}

/// An API that rejects the tokens in its deny list.
async fn api_denying(denied: Arc<Mutex<Vec<String>>>) -> Api {
    Api::start(move |token| !denied.lock().unwrap().iter().any(|d| d == token)).await
}

#[tokio::test]
async fn concurrent_requests_carry_one_token_from_one_token_request() {
    let tokens = support::issuing(3600).await;
    let api = Api::start(|token| token == "token-1").await;
    let client = client(BearerAuthMiddleware::new(credentials(&tokens)));

    let calls = (0..100).map(|_| {
        let client = client.clone();
        let url = api.url();
        tokio::spawn(async move {
            let response = client.get(url).send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        })
    });
    for call in futures_util::future::join_all(calls).await {
        assert_eq!(call.unwrap(), (StatusCode::OK, "token-1".to_owned()));
    }
    assert_eq!(tokens.requests(), 1);
    assert_eq!(api.served(), 100);
}

#[tokio::test]
async fn a_401_drops_the_rejected_token_and_the_next_request_carries_a_new_one() {
    let tokens = support::issuing(3600).await;
    let denied = Arc::new(Mutex::new(Vec::new()));
    let api = api_denying(denied.clone()).await;
    let client = client(BearerAuthMiddleware::new(credentials(&tokens)));

    let first = client.get(api.url()).send().await.unwrap();
    assert_eq!(first.text().await.unwrap(), "token-1");
    denied.lock().unwrap().push("token-1".into());

    let rejected = client.get(api.url()).send().await.unwrap();
    assert_eq!(
        rejected.status(),
        StatusCode::UNAUTHORIZED,
        "no replay unless asked for"
    );
    let next = client.get(api.url()).send().await.unwrap();
    assert_eq!(next.text().await.unwrap(), "token-2");
    assert_eq!(tokens.requests(), 2);
}

#[tokio::test]
async fn concurrent_rejections_of_one_token_cost_one_new_token() {
    let tokens = support::issuing(3600).await;
    let denied = Arc::new(Mutex::new(Vec::new()));
    let api = api_denying(denied.clone()).await;
    let client = client(BearerAuthMiddleware::new(credentials(&tokens)).replay_once_on_401(true));
    client.get(api.url()).send().await.unwrap();
    denied.lock().unwrap().push("token-1".into());

    let calls = (0..20).map(|_| {
        let client = client.clone();
        let url = api.url();
        tokio::spawn(async move { client.get(url).send().await.unwrap().text().await.unwrap() })
    });
    for call in futures_util::future::join_all(calls).await {
        assert_eq!(call.unwrap(), "token-2");
    }
    assert_eq!(tokens.requests(), 2, "one token request per rejected token");
}

#[tokio::test]
async fn with_replay_a_rejected_request_is_sent_again_with_its_body_and_a_new_token() {
    let tokens = support::issuing(3600).await;
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    let api = support::serve(move |request: http::Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            use http_body_util::BodyExt;
            let auth = request.headers()[http::header::AUTHORIZATION]
                .to_str()
                .unwrap()
                .to_owned();
            let body = request.into_body().collect().await.unwrap().to_bytes();
            seen.lock().unwrap().push((auth.clone(), body));
            let status = if auth == "Bearer token-1" {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::CREATED
            };
            support::raw(status, "text/plain", "")
        }
    })
    .await;
    let client = client(BearerAuthMiddleware::new(credentials(&tokens)).replay_once_on_401(true));

    let response = client
        .post(format!("http://{api}/orders"))
        .body("{\"item\":42}")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::CREATED);
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(
        bodies,
        vec![
            ("Bearer token-1".to_owned(), "{\"item\":42}".into()),
            ("Bearer token-2".to_owned(), "{\"item\":42}".into()),
        ]
    );
}

#[tokio::test]
async fn a_replay_rejected_again_returns_the_second_401_without_a_third_send() {
    let tokens = support::issuing(3600).await;
    let api = Api::start(|_| false).await;
    let client = client(BearerAuthMiddleware::new(credentials(&tokens)).replay_once_on_401(true));

    let response = client.get(api.url()).send().await.unwrap();

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api.rejected(), 2, "the request and one replay");
    assert_eq!(tokens.requests(), 2);
}

#[tokio::test]
async fn a_failing_token_endpoint_fails_the_request_with_our_error_before_it_is_sent() {
    let tokens = support::scripted(|_, _| {
        json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({ "error": "invalid_client" }),
        )
    })
    .await;
    let api = Api::start(|_| true).await;
    let client = client(BearerAuthMiddleware::new(credentials(&tokens)));

    let error = client.get(api.url()).send().await.unwrap_err();

    let reqwest_middleware::Error::Middleware(error) = error else {
        panic!("a middleware error, got {error:?}");
    };
    let ours = error
        .downcast_ref::<tower_oauth2::Error>()
        .expect("downcasts to tower_oauth2::Error");
    assert_eq!(ours.kind(), ErrorKind::Rejected);
    assert_eq!(ours.oauth_error().unwrap().code(), "invalid_client");
    assert!(!format!("{error:?} {error}").contains("s3cr3t-value"));
    assert_eq!(api.served() + api.rejected(), 0, "nothing was sent");
}

#[tokio::test]
async fn a_request_with_its_own_authorization_is_sent_as_it_is() {
    let tokens = support::issuing(3600).await;
    let api = Api::start(|token| token == "mine").await;
    let client = client(BearerAuthMiddleware::new(credentials(&tokens)));

    let response = client
        .get(api.url())
        .bearer_auth("mine")
        .send()
        .await
        .unwrap();

    assert_eq!(response.text().await.unwrap(), "mine");
    assert_eq!(tokens.requests(), 0);
}

/// What the last request through [`record_sensitivity`] had as its `Authorization`.
static AUTHORIZATION_SENSITIVE: Mutex<Option<bool>> = Mutex::new(None);

fn record_sensitivity<'a>(
    request: reqwest::Request,
    extensions: &'a mut http::Extensions,
    next: reqwest_middleware::Next<'a>,
) -> futures_util::future::BoxFuture<'a, reqwest_middleware::Result<reqwest::Response>> {
    *AUTHORIZATION_SENSITIVE.lock().unwrap() = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(|value| value.is_sensitive());
    next.run(request, extensions)
}

#[tokio::test]
async fn the_header_is_marked_sensitive() {
    let tokens = support::issuing(3600).await;
    let api = Api::start(|_| true).await;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(BearerAuthMiddleware::new(credentials(&tokens)))
        .with(record_sensitivity)
        .build();

    client.get(api.url()).send().await.unwrap();

    assert_eq!(*AUTHORIZATION_SENSITIVE.lock().unwrap(), Some(true));
}

/// An API that answers 401 to everything and records the `Authorization` of each request.
async fn api_rejecting_all(seen: Arc<Mutex<Vec<String>>>) -> std::net::SocketAddr {
    support::serve(move |request: http::Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            let auth = request.headers().get(http::header::AUTHORIZATION);
            let auth = auth.and_then(|v| v.to_str().ok()).unwrap_or_default();
            seen.lock().unwrap().push(auth.to_owned());
            support::raw(StatusCode::UNAUTHORIZED, "text/plain", "unauthorized")
        }
    })
    .await
}

#[tokio::test]
async fn no_replay_when_the_cache_kept_the_rejected_token() {
    let tokens = tower_oauth2::test_util::TokenServer::builder()
        .client("client", "s3cr3t-value")
        .start()
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let api = api_rejecting_all(seen.clone()).await;
    let credentials = ClientCredentials::builder()
        .token_url(tokens.url())
        .client_id("client")
        .client_secret("s3cr3t-value")
        .build()
        .unwrap();
    let client = client(BearerAuthMiddleware::new(credentials).replay_once_on_401(true));
    let url = format!("http://{api}/orders");

    // token-1 is rejected and dropped: the replay carries token-2.
    let first = client.post(&url).body("order 1").send().await.unwrap();
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    // token-2 is rejected within the invalidation interval, so the cache keeps it: a replay
    // would send the same POST with the same token again.
    let second = client.post(&url).body("order 2").send().await.unwrap();
    assert_eq!(second.status(), StatusCode::UNAUTHORIZED);

    assert_eq!(
        *seen.lock().unwrap(),
        ["Bearer token-1", "Bearer token-2", "Bearer token-2"]
    );
    assert_eq!(tokens.requests(), 2);
}

/// reqwest follows a redirect to another origin inside the middleware and strips
/// `Authorization` from it: that origin's `401` answers a request that never carried our
/// token, and says nothing of it. The token is kept, and nothing is replayed.
#[tokio::test]
async fn a_401_from_another_origin_reqwest_was_redirected_to_keeps_the_bearer_token() {
    let tokens = TokenServer::start().await.unwrap();
    // The other origin: wants credentials of its own, and never saw ours.
    let elsewhere = serve(|request: Request<Incoming>| async move {
        let status = if request.headers().contains_key(AUTHORIZATION) {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        let mut response = raw(status, "", "");
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            "Bearer realm=\"storage\"".parse().unwrap(),
        );
        response
    })
    .await;
    let validator = tokens.validator();
    let api = serve(move |request: Request<Incoming>| {
        let validator = validator.clone();
        async move {
            let token = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "))
                .unwrap_or_default()
                .to_owned();
            if !validator(&token) {
                return raw(StatusCode::UNAUTHORIZED, "", "");
            }
            if request.uri().path() == "/download" {
                let mut response = raw(StatusCode::FOUND, "", "");
                response.headers_mut().insert(
                    LOCATION,
                    format!("http://{elsewhere}/blob").parse().unwrap(),
                );
                return response;
            }
            raw(StatusCode::OK, "text/plain", "ok")
        }
    })
    .await;
    let credentials = ClientCredentials::builder()
        .token_url(tokens.url())
        .client_id("test-client")
        .client_secret("test-secret")
        .build()
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(tower_oauth2::BearerAuthMiddleware::new(credentials))
        .build();
    let ok = client
        .get(format!("http://{api}/items"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let download = client
        .get(format!("http://{api}/download"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(
        download, 401,
        "the other origin refuses a request without credentials"
    );
    let again = client
        .get(format!("http://{api}/items"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(
        tokens.requests(),
        1,
        "a 401 from another origin, to a request reqwest had stripped our token from, dropped \
         the token (and the middleware replayed the download with a new one)"
    );
}
