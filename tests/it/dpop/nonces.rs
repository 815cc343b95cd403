//! Servers' nonces (RFC 9449 §8, §9) at both ends: asked for once, remembered per origin
//! (bounded, filtered), retried once within the same deadline, never dropping the token, and
//! a retry only with a nonce the crate kept that the refused proof did not carry.

use std::time::Duration;

use tower::retry::RetryLayer;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_oauth2::client_auth::JwsAlgorithm;
use tower_oauth2::layer::RetryOnUnauthorized;
use tower_oauth2::BearerAuthLayer;

use super::*;

#[tokio::test]
async fn the_token_endpoints_nonce_is_asked_for_once_and_then_sent() {
    let (tokens, _) = token_server(Some("server-nonce-1")).await;
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let token = credentials.token().await.unwrap();
    assert_eq!(token.token_type(), "DPoP");
    assert_eq!(
        tokens.requests(),
        2,
        "one refused for its nonce, one retried with it"
    );
    credentials.invalidate(&token);
    credentials.token().await.unwrap();
    assert_eq!(
        tokens.requests(),
        3,
        "the nonce is remembered: no second refusal"
    );
}

#[tokio::test]
async fn the_token_endpoints_nonce_is_retried_once_only() {
    // A server that wants a nonce no proof can carry: one retry, then the error.
    let tokens = TokenServer::builder()
        .dpop_proofs(|_, _| Some("jkt".into()))
        .script(|_, _| async {
            let mut response = raw(
                StatusCode::BAD_REQUEST,
                "application/json",
                r#"{"error":"use_dpop_nonce"}"#,
            );
            response
                .headers_mut()
                .insert("dpop-nonce", "always-new".parse().unwrap());
            Some(response)
        })
        .start()
        .await
        .unwrap();
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let error = credentials.fetch_uncached().await.unwrap_err();
    assert!(error.to_string().contains("use_dpop_nonce"), "{error}");
    assert_eq!(tokens.requests(), 2);
}

/// The builder's `timeout` is one deadline for a whole token request, and a nonce retry is
/// part of that request: it gets what is left, not a fresh timeout. An endpoint answering
/// `use_dpop_nonce` (with a new nonce each time) after 250 ms, to a client allowed 400 ms:
/// the retry cannot be answered in time, so the fetch is a timeout at 400 ms, not a refusal
/// at 500 ms.
#[tokio::test]
async fn a_token_endpoint_nonce_retry_shares_the_first_attempts_deadline() {
    let tokens = TokenServer::builder()
        .dpop_proofs(|_, _| Some("jkt".into()))
        .script(|_, n| async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let mut response = raw(
                StatusCode::BAD_REQUEST,
                "application/json",
                r#"{"error":"use_dpop_nonce"}"#,
            );
            response
                .headers_mut()
                .insert("dpop-nonce", format!("nonce-{n}").parse().unwrap());
            Some(response)
        })
        .start()
        .await
        .unwrap();
    let credentials = ClientCredentials::builder()
        .token_url(tokens.url())
        .client_id("test-client")
        .client_secret("test-secret")
        .timeout(Duration::from_millis(400))
        .dpop(DpopKey::generate(JwsAlgorithm::ES256).unwrap())
        .build()
        .unwrap();
    let error = credentials.fetch_uncached().await.unwrap_err();
    assert_eq!(
        error.kind(),
        tower_oauth2::ErrorKind::Timeout,
        "the retry had a timeout of its own: {error}"
    );
}

#[tokio::test]
async fn the_resource_servers_nonce_is_retried_once_and_keeps_the_token() {
    let (tokens, _) = token_server(None).await;
    let resource = Resource::start(tokens.clone(), Some("rs-nonce-7")).await;
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let mut client = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryOnUnauthorized::default()))
        .layer(BearerAuthLayer::new(credentials.clone()))
        .service(http_client());
    let response = client
        .ready()
        .await
        .unwrap()
        .call(request(Method::POST, &resource.url("/orders")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{:?}", resource.log());
    assert_eq!(
        resource.hits.load(Ordering::SeqCst),
        2,
        "asked for the nonce, then served"
    );
    assert_eq!(tokens.requests(), 1, "use_dpop_nonce never drops the token");

    // The nonce is remembered for this origin: the next request carries it at once.
    let response = client
        .ready()
        .await
        .unwrap()
        .call(request(Method::GET, &resource.url("/orders/1")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(resource.hits.load(Ordering::SeqCst), 3);
    assert_eq!(tokens.requests(), 1);
}

/// A resource server that keeps asking for a new nonce: one replay, never two, the token kept
/// (tower and reqwest), and the nonce the replay carried is the one the server gave.
#[tokio::test]
async fn a_server_asking_for_a_new_nonce_every_time_gets_one_replay_and_keeps_the_token() {
    let tokens = token_server(None).await.0;
    let seen = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let recording = seen.clone();
    let addr = serve(move |request: Request<Incoming>| {
        let proof = request.headers()["dpop"].to_str().unwrap().to_owned();
        let nonce = decode(&proof).1["nonce"].as_str().map(str::to_owned);
        let mut log = recording.lock().unwrap();
        log.push(nonce);
        let fresh = format!("nonce-{}", log.len());
        async move {
            let mut response = raw(StatusCode::UNAUTHORIZED, "", "");
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                "DPoP error=\"use_dpop_nonce\"".parse().unwrap(),
            );
            response
                .headers_mut()
                .insert("dpop-nonce", fresh.parse().unwrap());
            response
        }
    })
    .await;
    let credentials = credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let mut client = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryOnUnauthorized::default()))
        .layer(BearerAuthLayer::new(credentials.clone()))
        .service(Client::builder(TokioExecutor::new()).build_http());
    let response = client
        .ready()
        .await
        .unwrap()
        .call(request(Method::GET, &format!("http://{addr}/a")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![None, Some("nonce-1".to_owned())]
    );
    let reqwest = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(tower_oauth2::BearerAuthMiddleware::new(credentials.clone()).replay_once_on_401(true))
        .build();
    let response = reqwest
        .get(format!("http://{addr}/b#frag"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(seen.lock().unwrap().len(), 4, "one replay each");
    assert_eq!(tokens.requests(), 1, "use_dpop_nonce never drops the token");
}

/// A resource server's `401 use_dpop_nonce` whose `DPoP-Nonce` the crate refuses to keep (here
/// over its 1 KiB limit; a hostile or broken server) is not replayed: the replay's proof could
/// carry no nonce and would be refused the same way, sending the POST twice for nothing. The
/// same in tower (`RetryOnUnauthorized`) and reqwest.
#[tokio::test]
async fn a_nonce_that_cannot_be_kept_costs_no_replay() {
    let tokens = token_server(None).await.0;
    let hits = Arc::new(AtomicUsize::new(0));
    let counting = hits.clone();
    let huge = "n".repeat(4096);
    let addr = serve(move |_request: Request<Incoming>| {
        counting.fetch_add(1, Ordering::SeqCst);
        let huge = huge.clone();
        async move {
            let mut response = raw(StatusCode::UNAUTHORIZED, "", "");
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                "DPoP error=\"use_dpop_nonce\"".parse().unwrap(),
            );
            response
                .headers_mut()
                .insert("dpop-nonce", huge.parse().unwrap());
            response
        }
    })
    .await;
    let key = DpopKey::generate(JwsAlgorithm::ES256).unwrap();
    let credentials = credentials(&tokens, key);
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryOnUnauthorized::default()))
        .layer(BearerAuthLayer::new(credentials.clone()))
        .service(Client::builder(TokioExecutor::new()).build_http());
    let response = client
        .oneshot(request(Method::POST, &format!("http://{addr}/orders")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the POST was replayed with no nonce to offer"
    );

    // The reqwest middleware does the same.
    hits.store(0, Ordering::SeqCst);
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(tower_oauth2::BearerAuthMiddleware::new(credentials))
        .build();
    let response = client
        .post(format!("http://{addr}/orders"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "reqwest: the POST was replayed with no nonce to offer"
    );
}

/// Hostile `DPoP-Nonce` values are not kept (quotes, non-ASCII, over 1 KiB), a nonce goes only
/// to the origin that gave it (`:443` is the same origin as no port), and 10,000 origins leave
/// only the last 32 remembered.
#[tokio::test]
async fn nonces_are_kept_per_origin_bounded_and_filtered() {
    let key = DpopKey::generate(JwsAlgorithm::ES256).unwrap();
    let nonce_in = |url: &'static str| {
        let key = key.clone();
        async move {
            let proof = key
                .proof(&Method::GET, &url.parse().unwrap(), None)
                .await
                .unwrap();
            decode(&proof).1["nonce"].as_str().map(str::to_owned)
        }
    };
    let give = |url: &str, nonce: &[u8]| {
        let mut headers = http::HeaderMap::new();
        headers.insert("dpop-nonce", http::HeaderValue::from_bytes(nonce).unwrap());
        key.remember_nonce(&url.parse().unwrap(), &headers);
    };
    for hostile in [&b"a\"b"[..], "caf\u{e9}".as_bytes(), &[b'n'; 2000][..]] {
        give("https://h.example/x", hostile);
        assert_eq!(nonce_in("https://h.example/y").await, None);
    }
    give("https://h.example:443/x", b"good");
    assert_eq!(
        nonce_in("https://H.EXAMPLE/y").await.as_deref(),
        Some("good")
    );
    assert_eq!(nonce_in("http://h.example/y").await, None);
    assert_eq!(nonce_in("https://h.example:8443/y").await, None);
    for i in 0..10_000 {
        give(
            &format!("https://o{i}.example/"),
            format!("n{i}").as_bytes(),
        );
    }
    assert_eq!(nonce_in("https://o0.example/").await, None);
    assert_eq!(
        nonce_in("https://o9999.example/").await.as_deref(),
        Some("n9999")
    );
    assert_eq!(nonce_in("https://h.example/").await, None, "evicted");
}
