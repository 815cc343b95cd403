//! Credentials chosen per request: one cache per key, through the tower layer and the reqwest
//! middleware, against a real token endpoint and a real API on loopback (the public
//! `TokenServer`, a protected `Api`), no sleeps where a signal exists. The second half holds the
//! adversarial reviews' repros (issue #21), each of which failed on the code it was written
//! against: user code that panics or recurses, the bound under churn, hostile keys, keys held
//! by requests in flight.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_oauth2::cache::{CachePolicy, PerRequestCaches};
use tower_oauth2::layer::PerRequestLayer;
use tower_oauth2::source::StaticToken;
use tower_oauth2::test_util::{Received, TokenServer};
#[cfg(feature = "reqwest")]
use tower_oauth2::BearerAuthMiddleware;
use tower_oauth2::{AccessToken, ClientCredentials, TokenSource};

use crate::support::{json, raw, scripted, scripted_async, Api};

/// A token endpoint whose tokens name the audience they were asked for.
async fn audience_tokens() -> TokenServer {
    scripted(audience_token).await
}

/// Tokens naming the audience asked for; audiences starting with `dead` get a 503.
fn audience_token(
    request: &tower_oauth2::test_util::Received,
    n: usize,
) -> http::Response<Full<Bytes>> {
    let audience = request.form().get("audience").cloned().unwrap_or_default();
    if audience.starts_with("dead") {
        return crate::support::raw(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "down");
    }
    json(
        StatusCode::OK,
        serde_json::json!({
            "access_token": format!("{audience}-token-{n}"),
            "token_type": "Bearer",
            "expires_in": 3600,
        }),
    )
}

fn credentials(server: &TokenServer) -> ClientCredentials {
    ClientCredentials::builder()
        .token_url(server.url())
        .client_id("client")
        .client_secret("secret")
        .build()
        .expect("valid credentials")
}

/// The first path segment is the audience.
fn by_first_segment(credentials: ClientCredentials) -> PerRequestCaches {
    PerRequestCaches::new(
        |request| request.path().trim_start_matches('/').split('/').next(),
        move |audience| credentials.with_audience(audience),
    )
}

/// How many token requests asked for `audience`.
fn asked_for(tokens: &TokenServer, audience: &str) -> usize {
    tokens
        .received()
        .iter()
        .filter(|request| request.form().get("audience").map(String::as_str) == Some(audience))
        .count()
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>()
}

async fn get<S>(client: &mut S, url: String) -> Result<String, tower::BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<hyper::body::Incoming>>,
    S::Error: Into<tower::BoxError>,
{
    let request = Request::get(url).body(Full::default()).unwrap();
    let response = client
        .ready()
        .await
        .map_err(Into::into)?
        .call(request)
        .await
        .map_err(Into::into)?;
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8(body.to_vec())?)
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
    // Each request's key had been evicted by the two before it (the least recently used, and
    // idle: each request ended before the next began): a cache made anew, a token fetched
    // anew, every time.
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

// ---------------------------------------------------------------------------------------------
// The chooser and `make` are user code: invariant 7 says a panic there becomes an `Error`.
// ---------------------------------------------------------------------------------------------

/// A panicking chooser: the call fails with an error, and the next one works. (Before the fix,
/// the panic unwound through `PerRequestAuth::call` into the caller.)
#[tokio::test]
async fn a_panicking_chooser_fails_that_request_with_an_error_instead_of_unwinding() {
    let tokens = audience_tokens().await;
    let api = Api::start(|_| true).await;
    let base = credentials(&tokens);
    let caches = PerRequestCaches::new(
        |request| {
            if request.path().starts_with("/boom") {
                panic!("a chooser bug");
            }
            request.path().trim_start_matches('/').split('/').next()
        },
        move |audience| base.with_audience(audience),
    );
    let mut client = ServiceBuilder::new()
        .layer(PerRequestLayer::new(caches))
        .service(http_client());

    let request = Request::get(format!("http://{}/boom", api.addr))
        .body(Full::default())
        .unwrap();
    let ready = client.ready().await.unwrap();
    let called = std::panic::catch_unwind(AssertUnwindSafe(|| ready.call(request)));
    let Ok(future) = called else {
        panic!(
            "the chooser's panic unwound through PerRequestAuth::call instead of becoming an Error"
        );
    };
    assert!(future.await.is_err(), "the request fails with an error");
    let token = get(&mut client, format!("http://{}/orders/1", api.addr))
        .await
        .unwrap();
    assert!(token.starts_with("orders-token-"), "{token}");
}

/// A panicking `make`: an error for that request, nothing kept, and the key made on the next
/// request once `make` recovers. (Before the fix, the panic unwound through `call`.)
#[tokio::test]
async fn a_panicking_make_fails_that_request_with_an_error_instead_of_unwinding() {
    let tokens = audience_tokens().await;
    let api = Api::start(|_| true).await;
    let base = credentials(&tokens);
    let first = Arc::new(AtomicUsize::new(0));
    let caches = PerRequestCaches::new(
        |request| request.path().trim_start_matches('/').split('/').next(),
        move |audience| {
            if first.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("make failed once");
            }
            base.with_audience(audience)
        },
    );
    let mut client = ServiceBuilder::new()
        .layer(PerRequestLayer::new(caches.clone()))
        .service(http_client());

    let request = Request::get(format!("http://{}/orders/1", api.addr))
        .body(Full::default())
        .unwrap();
    let ready = client.ready().await.unwrap();
    let called = std::panic::catch_unwind(AssertUnwindSafe(|| ready.call(request)));
    let Ok(future) = called else {
        panic!("make's panic unwound through PerRequestAuth::call instead of becoming an Error");
    };
    assert!(future.await.is_err());
    assert_eq!(caches.len(), 0, "no half-made key is kept");
    let token = get(&mut client, format!("http://{}/orders/2", api.addr))
        .await
        .unwrap();
    assert!(token.starts_with("orders-token-"), "{token}");
}

/// The same in the reqwest middleware: `send()` returns an error. (Before the fix, the panic
/// escaped `send()`.)
#[cfg(feature = "reqwest")]
#[tokio::test]
async fn a_panicking_chooser_in_the_reqwest_middleware_is_an_error() {
    use futures_util::FutureExt;
    let tokens = audience_tokens().await;
    let api = Api::start(|_| true).await;
    let base = credentials(&tokens);
    let caches = PerRequestCaches::new(
        |_request| -> Option<&str> { panic!("a chooser bug") },
        move |audience| base.with_audience(audience),
    );
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(BearerAuthMiddleware::per_request(caches))
        .build();
    let sent = AssertUnwindSafe(client.get(format!("http://{}/orders", api.addr)).send())
        .catch_unwind()
        .await;
    match sent {
        Err(_) => panic!("the chooser's panic unwound through send() instead of an Error"),
        Ok(result) => assert!(result.is_err()),
    }
}

/// A `make` that asks the same caches for another key (a token exchange whose subject token is
/// another audience's, say): it returns, the nested key made (`make` runs with no lock held).
/// Before the fix it never returned: `make` ran under the writers' mutex, which the same thread
/// then locked again.
#[test]
fn a_make_that_asks_the_same_caches_for_another_key_does_not_deadlock() {
    let (done, finished) = mpsc::channel();
    // The thread is left behind if it deadlocks; the test process ends anyway.
    std::thread::spawn(move || {
        let slot: Arc<std::sync::OnceLock<PerRequestCaches>> = Arc::default();
        let inside = slot.clone();
        let caches = PerRequestCaches::new(
            |request| request.host(),
            move |key| {
                if key == "exchanged" {
                    // The subject token comes from the "base" key of the same caches.
                    let base = inside.get().expect("set").cache("base");
                    return base;
                }
                tower_oauth2::TokenCache::new(StaticToken::from(AccessToken::new(format!(
                    "{key}-token"
                ))))
            },
        );
        let _ = slot.set(caches.clone());
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| caches.cache("exchanged")));
        let _ = done.send(result.is_ok());
    });
    let returned = finished.recv_timeout(Duration::from_secs(2));
    assert!(
        returned.is_ok(),
        "a re-entrant make deadlocked on the writers' lock (no answer in 2 s)"
    );
}

/// A slow `make` for one new key (a file read, a blocking KMS call) does not hold up another
/// new key: `make` runs outside the map's lock. (Before the fix it ran under it, and every other
/// new key waited for it, on every thread.)
#[test]
fn a_slow_make_for_one_key_does_not_hold_up_other_new_keys() {
    let (entered_tx, entered) = mpsc::channel::<()>();
    let (release, released) = mpsc::channel::<()>();
    let released = Arc::new(std::sync::Mutex::new(released));
    let caches = PerRequestCaches::new(
        |request| request.host(),
        move |key| {
            if key == "slow" {
                let _ = entered_tx.send(());
                let _ = released
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(10));
            }
            StaticToken::from(AccessToken::new(format!("{key}-token")))
        },
    );
    let slow = {
        let caches = caches.clone();
        std::thread::spawn(move || drop(caches.cache("slow")))
    };
    entered.recv().unwrap();
    let (made_tx, made) = mpsc::channel();
    {
        let caches = caches.clone();
        std::thread::spawn(move || {
            drop(caches.cache("other"));
            let _ = made_tx.send(());
        });
    }
    let unblocked = made.recv_timeout(Duration::from_secs(2));
    release.send(()).unwrap();
    slow.join().unwrap();
    assert!(
        unblocked.is_ok(),
        "key \"other\" waited for key \"slow\"'s make (no answer in 2 s)"
    );
}

// ---------------------------------------------------------------------------------------------
// The bound.
// ---------------------------------------------------------------------------------------------

/// Bound 2: `a`, `b`, then `a` again, then a new key `c`. The least recently used key is `b`.
/// `b` is evicted and `a` costs no second token request. (Before the fix `a` was: uses were
/// written down at most once a second with ties going to the oldest made, so within a second
/// the bound was FIFO and evicted the hottest key first.)
#[tokio::test]
async fn the_least_recently_used_key_is_evicted_even_within_one_second() {
    let tokens = audience_tokens().await;
    let api = Api::start(|_| true).await;
    let caches = by_first_segment(credentials(&tokens)).max_keys(2);
    let mut client = ServiceBuilder::new()
        .layer(PerRequestLayer::new(caches.clone()))
        .service(http_client());
    for audience in ["a", "b", "a", "a", "a", "c", "a"] {
        let token = get(&mut client, format!("http://{}/{audience}/x", api.addr))
            .await
            .unwrap();
        assert!(token.starts_with(&format!("{audience}-token-")), "{token}");
    }
    assert_eq!(
        asked_for(&tokens, "a"),
        1,
        "the hot key `a` was evicted although `b` was the least recently used"
    );
}

/// Bound 1: a request for `orders` waits on its token (the endpoint holds that answer); a
/// request for `billing` evicts `orders` meanwhile; a second request for `orders` arrives while
/// the first one's cache is still fetching. A cache with a fetch in flight is not evicted below
/// twice the bound, so the second request joins the first one's flight: one token request per
/// key at a time. (Before the fix, `orders` was evicted, a second cache was built for it and
/// a second token request went out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_evicted_while_its_token_is_in_flight_does_not_get_a_second_cache() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let tokens = {
        let gate = gate.clone();
        scripted_async(move |request, n| {
            let gate = gate.clone();
            async move {
                if request.form().get("audience").map(String::as_str) == Some("orders") {
                    gate.notified().await;
                }
                audience_token(&request, n)
            }
        })
        .await
    };
    let api = Api::start(|_| true).await;
    let caches = by_first_segment(credentials(&tokens)).max_keys(1);
    let client = ServiceBuilder::new()
        .layer(PerRequestLayer::new(caches.clone()))
        .service(http_client());

    let first = {
        let mut client = client.clone();
        let url = format!("http://{}/orders/1", api.addr);
        tokio::spawn(async move { get(&mut client, url).await })
    };
    // Wait until the first token request for orders has reached the endpoint.
    while tokens.requests() < 1 {
        tokio::task::yield_now().await;
    }
    let billing = get(
        &mut client.clone(),
        format!("http://{}/billing/1", api.addr),
    )
    .await
    .unwrap();
    assert!(billing.starts_with("billing-token-"));
    let second = {
        let mut client = client.clone();
        let url = format!("http://{}/orders/2", api.addr);
        tokio::spawn(async move { get(&mut client, url).await })
    };
    // Give the second request the time to reach the endpoint, if it is going to.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    while asked_for(&tokens, "orders") < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gate.notify_waiters();
    gate.notify_one();
    let (first, second) = (
        first.await.unwrap().unwrap(),
        second.await.unwrap().unwrap(),
    );
    assert!(first.starts_with("orders-token-") && second.starts_with("orders-token-"));
    assert_eq!(
        asked_for(&tokens, "orders"),
        1,
        "two caches for `orders` fetched at once: {first} and {second}"
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile cardinality and telemetry.
// ---------------------------------------------------------------------------------------------

/// A key from a hostile header: 1,000 distinct audiences through a bound of 4. The caches hold,
/// but the metrics recorder keeps one `tokens_attached` series (and one of each other
/// metric once a fetch ran) per audience *ever seen*: the sibling's `audience` label is the
/// attacker's value, so memory grows without bound in every Prometheus exporter. Kept as
/// a documented limit (ignored): keys must come from a closed set.
#[test]
#[ignore = "a documented limit, not a defect: each key's cache reports under its own labels \
            (a sibling's `audience`), so keys must come from a closed set, not from a header a \
            caller controls (see PerRequestCaches, \"Choose keys from a closed set\")"]
fn hostile_keys_do_not_grow_the_metrics_registry_past_the_bound() {
    use metrics_util::debugging::DebuggingRecorder;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let tokens = audience_tokens().await;
            let caches = PerRequestCaches::new(
                |request| request.headers().get("x-tenant")?.to_str().ok(),
                {
                    let base = credentials(&tokens);
                    move |audience| base.with_audience(audience)
                },
            )
            .max_keys(4);
            for tenant in 0..1_000 {
                drop(caches.cache(&format!("tenant-{tenant}")));
            }
            assert!(caches.len() <= 4, "the bound holds");
            let series = snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .filter(|(key, ..)| key.key().name() == "tower_oauth2_tokens_attached_total")
                .count();
            assert!(
                series <= 4 + 1,
                "{series} tokens_attached series for 4 live keys (and the base client): one per \
                 hostile key ever seen"
            );
        })
    });
}

/// Hostile keys are long (a header the chooser borrows a key from can be 64 KiB and more).
/// A new key costs about its own length, whatever the residents': the map holds each key with
/// its hash, and a new map copies pointers and rehashes nothing. (Before the fix, each new key
/// copied and rehashed every resident key: with 64 resident keys of 256 KiB, 16 MiB a request.)
#[test]
fn a_new_key_costs_its_own_length_not_every_resident_keys() {
    let caches = |max_keys| {
        PerRequestCaches::new(
            |request| request.host(),
            |key: &str| StaticToken::from(AccessToken::new(format!("token-{}", key.len()))),
        )
        .max_keys(max_keys)
    };
    let big = |i: usize| format!("{i:08}{}", "x".repeat(256 * 1024));
    let insert_20_small = |caches: &PerRequestCaches| {
        let started = std::time::Instant::now();
        for i in 0..20 {
            drop(caches.cache(&format!("small-{i}")));
        }
        started.elapsed()
    };
    // The same 20 small keys, once past 64 small residents and once past 64 big ones.
    let small_residents = caches(64);
    for i in 0..64 {
        drop(small_residents.cache(&format!("resident-{i}")));
    }
    let among_small = insert_20_small(&small_residents);
    let big_residents = caches(64);
    for i in 0..64 {
        drop(big_residents.cache(&big(i)));
    }
    let among_big = insert_20_small(&big_residents);
    assert!(
        among_big < among_small * 20 + Duration::from_millis(30),
        "20 small keys took {among_big:?} among 64 keys of 256 KiB, {among_small:?} among small \
         ones: each new key copies every resident key"
    );
}

// ---------------------------------------------------------------------------------------------
// What held in the review (kept as regression tests).
// ---------------------------------------------------------------------------------------------

/// The API rejects only `orders`' first token: the retry layer replays that request with a new
/// `orders` token, and `billing`'s token is neither dropped nor fetched again.
#[tokio::test]
async fn a_401_for_one_key_replays_with_that_keys_new_token_and_spares_the_others() {
    let tokens = audience_tokens().await;
    let api = Api::start(|token| token != "orders-token-2").await;
    let caches = by_first_segment(credentials(&tokens));
    let mut client = ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(
            tower_oauth2::layer::RetryOnUnauthorized::default(),
        ))
        .layer(PerRequestLayer::new(caches.clone()))
        .service(http_client());
    let billing = get(&mut client, format!("http://{}/billing/1", api.addr))
        .await
        .unwrap();
    assert_eq!(billing, "billing-token-1");
    let orders = get(&mut client, format!("http://{}/orders/1", api.addr))
        .await
        .unwrap();
    assert_eq!(orders, "orders-token-3", "replayed with orders' next token");
    let billing = get(&mut client, format!("http://{}/billing/2", api.addr))
        .await
        .unwrap();
    assert_eq!(
        billing, "billing-token-1",
        "billing's token survived orders' 401"
    );
    assert_eq!(tokens.requests(), 3);
    assert_eq!(api.rejected(), 1);
}

/// The same through the reqwest middleware with `replay_once_on_401`.
#[cfg(feature = "reqwest")]
#[tokio::test]
async fn the_reqwest_middleware_replays_a_401_with_the_same_keys_new_token() {
    let tokens = audience_tokens().await;
    let api = Api::start(|token| token != "orders-token-2").await;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(
            BearerAuthMiddleware::per_request(by_first_segment(credentials(&tokens)))
                .replay_once_on_401(true),
        )
        .build();
    let text = |path: &'static str| {
        let client = client.clone();
        let url = format!("http://{}/{path}", api.addr);
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(text("billing/1").await, "billing-token-1");
    assert_eq!(text("orders/1").await, "orders-token-3");
    assert_eq!(text("billing/2").await, "billing-token-1");
    assert_eq!(tokens.requests(), 3);
}

/// A brand-new key asked for by 2 runtimes × 200 requests at once: one cache, one token request.
#[test]
fn a_new_key_from_two_runtimes_at_once_costs_one_token_request() {
    let setup = tokio::runtime::Runtime::new().unwrap();
    let (tokens, api) =
        setup.block_on(async { (audience_tokens().await, Api::start(|_| true).await) });
    let caches = by_first_segment(credentials(&tokens));
    let layer = PerRequestLayer::new(caches.clone());
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (layer, barrier, addr) = (layer.clone(), barrier.clone(), api.addr);
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let client = ServiceBuilder::new().layer(layer).service(http_client());
                    barrier.wait();
                    let calls: Vec<_> = (0..200)
                        .map(|i| {
                            let mut client = client.clone();
                            let url = format!("http://{addr}/fresh/{i}");
                            tokio::spawn(async move { get(&mut client, url).await })
                        })
                        .collect();
                    for call in calls {
                        let token = call.await.unwrap().unwrap();
                        assert!(token.starts_with("fresh-token-"), "{token}");
                    }
                })
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(tokens.requests(), 1);
    assert_eq!(caches.len(), 1);
    drop(setup);
}

/// 20,000 distinct keys through a bound of 64: the bound holds all along.
#[test]
fn twenty_thousand_hostile_keys_keep_the_bound() {
    let caches = PerRequestCaches::new(
        |request| request.host(),
        |key: &str| StaticToken::from(AccessToken::new(format!("{key}-token"))),
    );
    for i in 0..20_000 {
        drop(caches.cache(&format!("\0tenant-\u{1F600}-{i}")));
        assert!(caches.len() <= PerRequestCaches::DEFAULT_MAX_KEYS);
    }
    drop(caches.cache(""));
    assert!(format!("{caches:?}").contains("keys"));
}

/// `keys_evicted` counts exactly the evictions, `tokens_attached` each request with a token,
/// both labelled `client`.
#[test]
fn evictions_and_attached_tokens_are_counted_exactly() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let tokens = audience_tokens().await;
            let api = Api::start(|_| true).await;
            let caches = by_first_segment(credentials(&tokens))
                .max_keys(2)
                .name("apis");
            let mut client = ServiceBuilder::new()
                .layer(PerRequestLayer::new(caches))
                .service(http_client());
            // a, b, c (evicts a), a (evicts b), a
            for audience in ["a", "b", "c", "a", "a"] {
                get(&mut client, format!("http://{}/{audience}/x", api.addr))
                    .await
                    .unwrap();
            }
            let snapshot = snapshotter.snapshot().into_vec();
            let total = |name: &str| -> u64 {
                snapshot
                    .iter()
                    .filter(|(key, ..)| key.key().name() == name)
                    .map(|(key, _, _, value)| {
                        assert!(key.key().labels().any(|label| label.key() == "client"));
                        match value {
                            DebugValue::Counter(count) => *count,
                            _ => 0,
                        }
                    })
                    .sum()
            };
            assert_eq!(total("tower_oauth2_keys_evicted_total"), 2);
            assert_eq!(total("tower_oauth2_tokens_attached_total"), 5);
        })
    });
}

/// Churn: 64 tasks × 16 requests over 12 keys through a bound of 3 (and of 0, taken as 1),
/// with token answers slowed so evictions land while tokens are in flight: every request gets
/// a token for its own key, and the keys never pass twice the bound (caches fetching are kept
/// past the bound, up to that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_past_the_bound_with_tokens_in_flight_gives_each_request_its_own_keys_token() {
    let tokens = scripted_async(|request, n| async move {
        tokio::task::yield_now().await;
        audience_token(&request, n)
    })
    .await;
    let api = Api::start(|_| true).await;
    for bound in [3, 0] {
        let caches = by_first_segment(credentials(&tokens)).max_keys(bound);
        let client = ServiceBuilder::new()
            .layer(PerRequestLayer::new(caches.clone()))
            .service(http_client());
        let tasks: Vec<_> = (0..64)
            .map(|task| {
                let (mut client, addr, caches) = (client.clone(), api.addr, caches.clone());
                tokio::spawn(async move {
                    for i in 0..16 {
                        let key = format!("k{}", (task * 7 + i * 5) % 12);
                        let token = get(&mut client, format!("http://{addr}/{key}/{i}"))
                            .await
                            .unwrap();
                        assert!(
                            token.starts_with(&format!("{key}-token-")),
                            "{key}: {token}"
                        );
                        assert!(caches.len() <= 2 * bound.max(1), "{}", caches.len());
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }
}

/// The identity provider is down (503) and two keys take turns through a bound of 1.
/// A cache whose last fetch failed is not evicted below twice the bound, so it keeps its
/// backoff: about one token request per key, as with the bound not hit (invariants 2 and 8).
/// (Before the fix, every request made its key anew, without backoff: 20 requests, 20 token
/// requests to a failing endpoint.)
#[tokio::test]
async fn a_failing_endpoint_is_not_hammered_by_keys_taking_turns_through_the_bound() {
    let tokens = scripted(|_, n| {
        crate::support::raw(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("down {n}"),
        )
    })
    .await;
    let api = Api::start(|_| true).await;
    let caches = by_first_segment(credentials(&tokens)).max_keys(1);
    let mut client = ServiceBuilder::new()
        .layer(PerRequestLayer::new(caches))
        .service(http_client());
    for i in 0..20 {
        let key = ["a", "b"][i % 2];
        let failed = get(&mut client, format!("http://{}/{key}/{i}", api.addr)).await;
        assert!(failed.is_err(), "no token while the endpoint is down");
    }
    assert!(
        tokens.requests() <= 4,
        "{} token requests for 20 calls to a failing endpoint: eviction drops each key's backoff",
        tokens.requests()
    );
}

/// A request for a new key is cancelled while its token is being fetched; the next request
/// for that key joins that fetch: one token request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_a_new_key_cancelled_mid_fetch_costs_no_second_fetch() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let tokens = {
        let gate = gate.clone();
        scripted_async(move |request, n| {
            let gate = gate.clone();
            async move {
                let _ = gate.acquire().await;
                audience_token(&request, n)
            }
        })
        .await
    };
    let api = Api::start(|_| true).await;
    let caches = by_first_segment(credentials(&tokens));
    let client = ServiceBuilder::new()
        .layer(PerRequestLayer::new(caches))
        .service(http_client());
    let first = {
        let mut client = client.clone();
        let url = format!("http://{}/orders/1", api.addr);
        tokio::spawn(async move { get(&mut client, url).await })
    };
    while tokens.requests() < 1 {
        tokio::task::yield_now().await;
    }
    first.abort();
    let _ = first.await;
    let second = {
        let mut client = client.clone();
        let url = format!("http://{}/orders/2", api.addr);
        tokio::spawn(async move { get(&mut client, url).await })
    };
    gate.add_permits(10);
    let token = second.await.unwrap().unwrap();
    assert_eq!(token, "orders-token-1");
    assert_eq!(tokens.requests(), 1);
}

/// A cache whose token request failed is in use only while it backs off: two keys that failed
/// once, long ago (their backoff over, never asked for again), give way under `max_keys(2)` to
/// the two keys in use now, instead of making them evict each other on every request (repro of
/// the second adversarial pass on #21: 5 token requests per live key for 10 requests).
#[tokio::test]
async fn keys_whose_backoff_is_over_give_way_to_live_keys_under_the_bound() {
    let tokens = audience_tokens().await;
    let credentials = ClientCredentials::builder()
        .token_url(tokens.url())
        .client_id("client")
        .client_secret("secret")
        .cache_policy(
            CachePolicy::default()
                .jitter(0.0)
                .backoff(Duration::from_millis(5), Duration::from_millis(5)),
        )
        .build()
        .unwrap();
    let caches = PerRequestCaches::new(
        |head| head.host(),
        move |aud| credentials.with_audience(aud),
    )
    .max_keys(2);
    for dead in ["dead-1", "dead-2"] {
        caches.cache(dead).token().await.unwrap_err();
    }
    // Their 5 ms backoff is long over (no signal exists for "a backoff ended": real time).
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..10 {
        let live = ["live-1", "live-2"][i % 2];
        caches.cache(live).token().await.unwrap();
    }
    assert_eq!(
        (asked_for(&tokens, "live-1"), asked_for(&tokens, "live-2")),
        (1, 1),
        "two keys that failed once and were never used again keep two live keys from fitting \
         in max_keys(2): each request for a live key made its cache anew"
    );
}

/// A request holds its key's cache from `call` on: a new key's cache handed to a request not
/// yet polled is in use, so a request for another key does not evict it, and the next request
/// for the first key shares it (repro: the cache was evicted and made twice, two token
/// requests for one key in flight together). Laid out deterministically; on a multi-threaded
/// runtime the window is the gap between `call` and the first poll.
#[tokio::test]
async fn a_new_keys_cache_held_by_a_request_not_yet_polled_is_neither_evicted_nor_made_twice() {
    let tokens = audience_tokens().await;
    let api = Api::start(|_| true).await;
    let base = ClientCredentials::builder()
        .token_url(tokens.url())
        .client_id("client")
        .client_secret("secret")
        .build()
        .unwrap();
    let caches = PerRequestCaches::new(
        |head| head.path().trim_start_matches('/').split('/').next(),
        move |aud| base.with_audience(aud),
    )
    .max_keys(1);
    let mut client = ServiceBuilder::new()
        .layer(PerRequestLayer::new(caches))
        .service(http_client());
    let request = |path: &str| {
        Request::get(format!("http://{}{path}", api.addr))
            .body(Full::default())
            .unwrap()
    };
    let first = client.ready().await.unwrap().call(request("/a/1"));
    let other = client.ready().await.unwrap().call(request("/b/1"));
    let second = client.ready().await.unwrap().call(request("/a/2"));
    let (first, other, second) = tokio::join!(first, other, second);
    for response in [first, other, second] {
        assert_eq!(response.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(
        asked_for(&tokens, "a"),
        1,
        "two caches for `a` fetched at once"
    );
}

/// A documented limit, kept as its repro: the recursion guard is per thread, so a `make` that
/// asks for its own key from another thread (a scoped thread, a blocking pool's `block_on`)
/// recurses (here until the test's cap of 4). No sound fix: telling that wait apart from two
/// first requests racing would take a lock across `make`, which could deadlock instead.
#[test]
#[ignore = "documented limit: the recursion guard of PerRequestCaches is per thread"]
fn a_make_asking_for_its_own_key_from_another_thread_is_not_caught() {
    let depth = Arc::new(AtomicUsize::new(0));
    let slot: Arc<OnceLock<PerRequestCaches>> = Arc::default();
    let caches = {
        let (depth, slot) = (depth.clone(), slot.clone());
        PerRequestCaches::new(
            |head| head.host(),
            move |key| -> tower_oauth2::TokenCache {
                if depth.fetch_add(1, Ordering::SeqCst) >= 3 {
                    // The test's own brake: without it the recursion only ends when threads
                    // can no longer be spawned.
                    return StaticToken::from(AccessToken::new("runaway")).into();
                }
                let caches = slot.get().expect("set").clone();
                let key = key.to_owned();
                std::thread::spawn(move || caches.cache(&key))
                    .join()
                    .unwrap()
            },
        )
    };
    let _ = slot.set(caches.clone());
    let _ = caches.cache("a");
    let depth = depth.load(Ordering::SeqCst);
    assert!(
        depth <= 2,
        "a make asking for its own key through another thread recursed {depth} deep (the \
         test's cap)"
    );
}

/// Through the fleet's Redis, with `max_keys` keys at most: `a` gets `a-token-1` (which the API
/// has revoked), a request for `/a/1` takes it from the fast path, `b` is used while that
/// request is in flight (past the bound when `max_keys` is 1), and the request is answered
/// `401`. What the key's caches and the fleet make of it is the caller's to check.
#[cfg(feature = "redis")]
async fn a_rejected_while_b_is_used(
    max_keys: usize,
) -> (
    PerRequestCaches,
    TokenServer,
    tower_oauth2::test_util::RedisServer,
) {
    let redis = crate::support::fleet::redis_server();
    let tokens = audience_tokens().await;
    let api = Api::start(|token| token != "a-token-1").await;
    let base = crate::support::fleet::client(&tokens, &redis.url(), CachePolicy::default());
    let caches = PerRequestCaches::new(
        |head| head.path().trim_start_matches('/').split('/').next(),
        move |aud| base.with_audience(aud),
    )
    .max_keys(max_keys);
    let mut client = ServiceBuilder::new()
        .layer(PerRequestLayer::new(caches.clone()))
        .service(http_client());

    assert_eq!(
        caches.cache("a").token().await.unwrap().secret(),
        "a-token-1"
    );
    // R1 takes `a-token-1` from the fast path; not polled yet, so nothing is sent.
    let request = Request::get(format!("http://{}/a/1", api.addr))
        .body(Full::default())
        .unwrap();
    let in_flight = client.ready().await.unwrap().call(request);
    caches.cache("b").token().await.unwrap();
    let response = in_flight.await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Let the shared store hear of the rejection, if anyone told it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    (caches, tokens, redis)
}

/// A `401` for a token of a key whose cache a request holds reaches that cache, and through it
/// the fleet's Redis, even with `max_keys(1)` and another key used meanwhile: the key's next
/// cache does not adopt the token the server just rejected (repro: the 401 named the cache by a
/// slot that was empty by then, and `a-token-1` was served again).
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_401_for_a_key_pushed_past_the_bound_in_flight_reaches_its_cache_and_the_fleet() {
    let (caches, _tokens, _redis) = a_rejected_while_b_is_used(1).await;
    let next = caches.cache("a").token().await.unwrap();
    assert_ne!(
        next.secret(),
        "a-token-1",
        "the token the server rejected is served again to the key's new cache"
    );
}

/// The contrast: the same flow with room for both keys, so nothing is evicted; the
/// `401` reaches the cache, which tells Redis, and another process gets a new token.
#[cfg(feature = "redis")]
#[tokio::test]
async fn held_without_eviction_a_401_reaches_the_fleet() {
    let (_caches, tokens, redis) = a_rejected_while_b_is_used(4).await;
    let other = crate::support::fleet::client(&tokens, &redis.url(), CachePolicy::default())
        .with_audience("a");
    let next = other.token().await.unwrap();
    assert_ne!(
        next.secret(),
        "a-token-1",
        "the fleet did not hear of the 401"
    );
}

/// A request whose key was pushed past the bound while it was in flight (`max_keys(1)`, two
/// more keys used) is rejected (`401`) and replayed by `RetryOnUnauthorized` with the key's new
/// token: the replay is counted for that key, not for whichever cache took a slot since
/// (repro: the key was evicted and the replay counted by slot number: lost or credited to
/// another key). Now the request holds its key, which stays past the bound meanwhile.
#[test]
fn a_replay_of_a_request_whose_key_was_pushed_past_the_bound_in_flight_is_counted_for_its_key() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use tower::retry::RetryLayer;
    use tower_oauth2::layer::RetryOnUnauthorized;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let tokens = audience_tokens().await;
            // The API has revoked `a-token-1`.
            let api = Api::start(|token| token != "a-token-1").await;
            let base = ClientCredentials::builder()
                .token_url(tokens.url())
                .client_id("client")
                .client_secret("secret")
                .build()
                .unwrap();
            let caches = PerRequestCaches::new(
                |head| head.path().trim_start_matches('/').split('/').next(),
                move |aud| base.with_audience(aud),
            )
            .max_keys(1);
            let mut client = ServiceBuilder::new()
                .layer(RetryLayer::new(RetryOnUnauthorized::default()))
                .layer(PerRequestLayer::new(caches.clone()))
                .service(http_client());
            caches.cache("a").token().await.unwrap();
            let request = Request::get(format!("http://{}/a/1", api.addr))
                .body(Full::default())
                .unwrap();
            let in_flight = client.ready().await.unwrap().call(request);
            // `b` and `c` are used meanwhile, past `max_keys(1)`; `c` may take an evicted
            // cache's slot.
            caches.cache("b").token().await.unwrap();
            caches.cache("c").token().await.unwrap();
            let response = in_flight.await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "replayed with a-token-2");
            assert_eq!(asked_for(&tokens, "a"), 2);
        })
    });
    let recorded = snapshotter.snapshot().into_vec();
    let replays = |audience: &str| -> u64 {
        recorded
            .iter()
            .filter(|(key, ..)| {
                key.key().name() == "tower_oauth2_requests_replayed_total"
                    && key
                        .key()
                        .labels()
                        .any(|l| l.key() == "audience" && l.value() == audience)
            })
            .map(|(.., value)| match value {
                DebugValue::Counter(count) => *count,
                _ => 0,
            })
            .sum()
    };
    assert_eq!(
        (replays("a"), replays("b"), replays("c")),
        (1, 0, 0),
        "the replay of `a`'s request was not counted for `a`"
    );
}

/// A key evicted for real while a request holds it (every key in use, past twice the bound):
/// the request's `401` reaches the evicted cache it holds, the retry layer replays it with the
/// key's new cache, and the replay is counted for that key (on the old code, counted by a slot
/// that was empty by then: lost).
#[test]
fn a_request_holding_a_key_evicted_past_twice_the_bound_still_reports_its_401_and_replay() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use tower_oauth2::layer::RetryOnUnauthorized;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let tokens = audience_tokens().await;
            // The API has revoked `a-token-1`.
            let api = Api::start(|token| token != "a-token-1").await;
            let caches = by_first_segment(credentials(&tokens)).max_keys(1);
            let mut client = ServiceBuilder::new()
                .layer(tower::retry::RetryLayer::new(RetryOnUnauthorized::default()))
                .layer(PerRequestLayer::new(caches.clone()))
                .service(http_client());
            let request = |path: &str| {
                Request::get(format!("http://{}{path}", api.addr))
                    .body(Full::default())
                    .unwrap()
            };
            caches.cache("a").token().await.unwrap();
            // Both requests hold their keys, unpolled: `a` and `b` are in use.
            let a = client.ready().await.unwrap().call(request("/a/1"));
            let b = client.ready().await.unwrap().call(request("/b/1"));
            // A third key would pass twice the bound: the least recently used, `a`, goes.
            caches.cache("c");
            assert_eq!(
                caches.len(),
                2,
                "`a` was evicted to stay within twice the bound"
            );
            let (a, b) = tokio::join!(a, b);
            assert_eq!(
                a.unwrap().status(),
                StatusCode::OK,
                "replayed with a-token-2"
            );
            assert_eq!(b.unwrap().status(), StatusCode::OK);
            assert_eq!(asked_for(&tokens, "a"), 2);
        })
    });
    let replays: u64 = snapshotter
        .snapshot()
        .into_vec()
        .iter()
        .filter(|(key, ..)| {
            key.key().name() == "tower_oauth2_requests_replayed_total"
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == "audience" && l.value() == "a")
        })
        .map(|(.., value)| match value {
            DebugValue::Counter(count) => *count,
            _ => 0,
        })
        .sum();
    assert_eq!(
        replays, 1,
        "the replay of `a`'s request was not counted for `a`"
    );
}

/// The reqwest middleware holds its request's key until the answer too: with `max_keys(1)`,
/// another key used while a request for `a` waits on the API does not evict `a`, whose next
/// request reuses its token (on the old code: `a` looked idle, was evicted, and made again
/// with a second token request).
#[cfg(feature = "reqwest")]
#[tokio::test]
async fn the_reqwest_middleware_holds_its_requests_key_until_the_answer() {
    use crate::support::{raw, serve};

    let tokens = audience_tokens().await;
    let (arrived, release) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let addr = {
        let (arrived, release) = (arrived.clone(), release.clone());
        serve(move |request: Request<hyper::body::Incoming>| {
            let (arrived, release) = (arrived.clone(), release.clone());
            async move {
                if request.uri().path() == "/a/slow" {
                    arrived.notify_one();
                    release.notified().await;
                }
                raw(StatusCode::OK, "text/plain", "ok")
            }
        })
        .await
    };
    let caches = by_first_segment(credentials(&tokens)).max_keys(1);
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(BearerAuthMiddleware::per_request(caches.clone()))
        .build();
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.get(format!("http://{addr}/a/slow")).send().await }
    });
    arrived.notified().await;
    caches.cache("b").token().await.unwrap();
    release.notify_one();
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    let again = client
        .get(format!("http://{addr}/a/again"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(asked_for(&tokens, "a"), 1, "`a` was evicted while in use");
}

/// A key evicted after failures keeps their count: made again, its cache backs off from where
/// the evicted one stood, not from the first step (keys taking turns through the bound would
/// otherwise ask a failing identity provider at every first step). Here `a` failed 3 times,
/// one request for `b` evicts it (its backoff over: idle), and `a`'s 4th failure backs off at
/// least 400 ms (100 ms steps, wide margins for a busy machine): a request 200 ms later is
/// answered from the backoff, not the endpoint (made anew, `a` would back off 50-100 ms).
#[tokio::test]
async fn a_key_evicted_after_failures_resumes_its_backoff_when_made_again() {
    let tokens = scripted(|_: &Received, n| {
        raw(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("down {n}"),
        )
    })
    .await;
    let credentials = ClientCredentials::builder()
        .token_url(tokens.url())
        .client_id("client")
        .client_secret("secret")
        .cache_policy(
            CachePolicy::default().backoff(Duration::from_millis(100), Duration::from_secs(10)),
        )
        .build()
        .unwrap();
    let caches = PerRequestCaches::new(
        |head| head.host(),
        move |aud| credentials.with_audience(aud),
    )
    .max_keys(1);
    // Three failures for `a`, each after the previous backoff (at most 100, 200, 400 ms) ended.
    // Real time: no signal exists for "a backoff ended", as in the crate's own test.
    for wait in [105, 205, 405] {
        caches.cache("a").token().await.unwrap_err();
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    assert_eq!(asked_for(&tokens, "a"), 3);
    // One request for another key: `a`'s backoff is over, so it counts as idle and is evicted.
    caches.cache("b").token().await.unwrap_err();
    // `a`'s 4th failure: its own schedule (failures = 4) would wait 400-800 ms before a 5th.
    caches.cache("a").token().await.unwrap_err();
    assert_eq!(asked_for(&tokens, "a"), 4);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = caches.cache("a").token().await;
    assert_eq!(
        asked_for(&tokens, "a"),
        4,
        "200 ms after a's 4th consecutive failure its cache asked the failing endpoint again: \
         eviction made it anew and its backoff restarted at the first step"
    );
}
