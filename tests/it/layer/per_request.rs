//! Credentials chosen per request: one cache per key, through the tower layer and the reqwest
//! middleware, against a real token endpoint and a real API on loopback.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_oauth2::cache::PerRequestCaches;
use tower_oauth2::layer::PerRequestLayer;
use tower_oauth2::test_util::TokenServer;
#[cfg(feature = "reqwest")]
use tower_oauth2::BearerAuthMiddleware;
use tower_oauth2::{ClientCredentials, TokenSource};

use crate::support::{json, scripted, Api};

/// A token endpoint whose tokens name the audience they were asked for.
async fn audience_tokens() -> TokenServer {
    scripted(|request, n| {
        let audience = request.form().get("audience").cloned().unwrap_or_default();
        json(
            StatusCode::OK,
            serde_json::json!({
                "access_token": format!("{audience}-token-{n}"),
                "token_type": "Bearer",
                "expires_in": 3600,
            }),
        )
    })
    .await
}

fn credentials(server: &TokenServer) -> ClientCredentials {
    ClientCredentials::builder()
        .token_url(server.url())
        .client_id("client")
        .client_secret("secret")
        .build()
        .expect("valid credentials")
}

/// Requests under `/orders`, `/billing` and `/users` need tokens for those audiences; others
/// none.
fn by_path(credentials: ClientCredentials) -> PerRequestCaches {
    PerRequestCaches::new(
        |request| {
            let api = request.path().trim_start_matches('/').split('/').next()?;
            ["orders", "billing", "users"]
                .into_iter()
                .find(|known| *known == api)
        },
        move |audience| credentials.with_audience(audience),
    )
}

const AUDIENCES: [&str; 3] = ["orders", "billing", "users"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_audiences_and_900_concurrent_requests_cost_three_token_requests() {
    let tokens = audience_tokens().await;
    let api = Api::start(|_| true).await;
    let caches = by_path(credentials(&tokens));
    let client = ServiceBuilder::new()
        .layer(PerRequestLayer::new(caches.clone()))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());

    let calls: Vec<_> = (0..900)
        .map(|i| {
            let audience = AUDIENCES[i % 3];
            let url = format!("http://{}/{audience}/{i}", api.addr);
            let mut client = client.clone();
            tokio::spawn(async move {
                let request = Request::get(url).body(Full::default()).unwrap();
                let response = client.ready().await?.call(request).await?;
                let token = response.into_body().collect().await?.to_bytes();
                Ok::<_, tower::BoxError>((audience, String::from_utf8(token.to_vec())?))
            })
        })
        .collect();
    for call in calls {
        let (audience, token) = call.await.unwrap().expect("every call succeeds");
        assert!(
            token.starts_with(&format!("{audience}-token-")),
            "a request for {audience} carried {token}"
        );
    }
    assert_eq!(tokens.requests(), 3, "one token request per audience");
    assert_eq!(caches.len(), 3);
    let mut asked: Vec<String> = tokens
        .received()
        .iter()
        .map(|request| request.form()["audience"].clone())
        .collect();
    asked.sort();
    assert_eq!(asked, ["billing", "orders", "users"]);
}

#[tokio::test]
async fn a_request_for_which_no_key_is_chosen_goes_without_a_token() {
    let tokens = audience_tokens().await;
    let api = Api::start(|_| true).await;
    let mut client = ServiceBuilder::new()
        .layer(PerRequestLayer::new(by_path(credentials(&tokens))))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let request = Request::get(format!("http://{}/public/page", api.addr))
        .body(Full::default())
        .unwrap();
    let response = client.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "sent without a token"
    );
    assert_eq!(tokens.requests(), 0);
}

#[tokio::test]
async fn past_the_key_bound_the_least_recently_used_cache_is_dropped_and_made_again() {
    let tokens = audience_tokens().await;
    let api = Api::start(|_| true).await;
    let caches = by_path(credentials(&tokens)).max_keys(2);
    let mut client = ServiceBuilder::new()
        .layer(PerRequestLayer::new(caches.clone()))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    // Churn: three keys through a bound of two, in turn, so that each new one evicts the
    // oldest.
    for round in 0..3 {
        for audience in AUDIENCES {
            let request = Request::get(format!("http://{}/{audience}/{round}", api.addr))
                .body(Full::default())
                .unwrap();
            let response = client.ready().await.unwrap().call(request).await.unwrap();
            let token = response.into_body().collect().await.unwrap().to_bytes();
            assert!(token.starts_with(audience.as_bytes()));
            assert!(caches.len() <= 2, "the bound holds: {}", caches.len());
        }
    }
    // Each request's key had been evicted by the two before it: a cache made anew, a token
    // fetched anew, every time.
    assert_eq!(tokens.requests(), 9);
}

#[tokio::test]
async fn an_evicted_cache_is_dropped_once_no_request_holds_it() {
    let tokens = audience_tokens().await;
    let caches = by_path(credentials(&tokens)).max_keys(1);
    let orders = caches.cache("orders");
    orders.token().await.unwrap();
    caches.cache("billing");
    assert_eq!(caches.len(), 1);
    // The evicted cache lives on in `orders` only: asking the caches for it makes a new one.
    let again = caches.cache("orders");
    again.token().await.unwrap();
    assert_eq!(
        tokens.requests(),
        2,
        "orders' new cache fetched its own token"
    );
    orders.token().await.unwrap();
    assert_eq!(
        tokens.requests(),
        2,
        "the old handle still works from its own cache"
    );
}

#[cfg(feature = "reqwest")]
#[tokio::test]
async fn the_reqwest_middleware_chooses_per_request_too() {
    let tokens = audience_tokens().await;
    let api = Api::start(|_| true).await;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(BearerAuthMiddleware::per_request(by_path(credentials(
            &tokens,
        ))))
        .build();
    for audience in AUDIENCES.into_iter().chain(AUDIENCES) {
        let token = client
            .get(format!("http://{}/{audience}/x", api.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(token.starts_with(&format!("{audience}-token-")), "{token}");
    }
    let public = client
        .get(format!("http://{}/public", api.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(tokens.requests(), 3);
}
