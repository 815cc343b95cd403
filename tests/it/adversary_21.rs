//! Second adversarial pass on issue #21 (DPoP and credentials chosen per request), after the
//! first review's fixes. Each test FAILS on the code it was written against and would pass with
//! the defect fixed; its doc says what it shows, observed against expected.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST, WWW_AUTHENTICATE};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_oauth2::cache::{CachePolicy, PerRequestCaches};
use tower_oauth2::client_auth::{JwsAlgorithm, SignFuture, Signer};
use tower_oauth2::dpop::DpopKey;
use tower_oauth2::source::StaticToken;
use tower_oauth2::test_util::{Received, TokenServer};
use tower_oauth2::{AccessToken, BearerAuthLayer, ClientCredentials, TokenSource};

use crate::support::dpop::{Expect, ProofChecker};
use crate::support::{json, raw, scripted, serve};

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

/// Tokens naming the audience asked for; audiences starting with `dead` get a 503.
fn audience_token(request: &Received, n: usize) -> http::Response<Full<Bytes>> {
    let audience = request.form().get("audience").cloned().unwrap_or_default();
    if audience.starts_with("dead") {
        return raw(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "down");
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

fn asked_for(tokens: &TokenServer, audience: &str) -> usize {
    tokens
        .received()
        .iter()
        .filter(|request| request.form().get("audience").map(String::as_str) == Some(audience))
        .count()
}

/// `http://host/path` as the server knows its own URL.
fn url_of(headers: &http::HeaderMap, path: &str) -> String {
    format!("http://{}{path}", headers[HOST].to_str().unwrap())
}

/// A token endpoint issuing DPoP tokens to verified proofs.
async fn dpop_token_server() -> Arc<TokenServer> {
    let checker = Arc::new(ProofChecker::default());
    Arc::new(
        TokenServer::builder()
            .dpop_proofs(move |proof, request: &Received| {
                let htu = url_of(&request.headers, request.uri.path());
                let expect = Expect {
                    htm: "POST",
                    htu: &htu,
                    token: None,
                    nonce: None,
                };
                checker.check(proof, &expect).ok().map(|c| c.jkt)
            })
            .start()
            .await
            .unwrap(),
    )
}

fn dpop_credentials(server: &TokenServer, key: DpopKey) -> ClientCredentials {
    ClientCredentials::builder()
        .token_url(server.url())
        .client_id("test-client")
        .client_secret("test-secret")
        .dpop(key)
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Per-request caches.
// ---------------------------------------------------------------------------------------------

/// Two keys whose token request failed ONCE, long ago (their backoff long over, never asked
/// for again), count as "busy" for ever (`failures > 0` is reset only by a successful fetch,
/// which nobody will start). With `max_keys(2)` they outrank the two keys in use now: only one
/// live key is ever kept, so two live keys taking turns evict each other and every request
/// costs a token request.
///
/// Observed: 5 token requests per live key for 10 requests. Expected: 1 each (a cache whose
/// backoff is over has no backoff to lose; LRU should drop the stale failed keys first).
#[tokio::test]
async fn keys_that_failed_once_long_ago_make_live_keys_thrash_through_the_bound() {
    let tokens = scripted(audience_token).await;
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

/// The eviction rule counts a cache as busy only once its flight has started. A request that
/// was handed a new key's cache (`call` returned) but whose future has not been polled yet
/// holds a cache that looks idle: a request for another key evicts it, the next request for
/// the first key makes a second cache, and once both futures run, two caches fetch a token for
/// one key at the same time: what the first review's fix ("a cache fetching a token is not
/// evicted below twice the bound") meant to rule out. On a multi-threaded runtime the window
/// is the gap between `call` and the first poll; here it is laid out deterministically.
///
/// Observed: 2 token requests for `a`, in flight together. Expected: 1.
#[tokio::test]
async fn a_new_keys_cache_handed_to_a_request_not_yet_polled_is_evicted_and_made_twice() {
    use tower_oauth2::layer::PerRequestLayer;

    let tokens = scripted(audience_token).await;
    let api = crate::support::Api::start(|_| true).await;
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
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
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

/// The thread-local recursion guard only sees `make` calls on its own thread. A `make` that
/// asks these caches for its own key from another thread (a scoped thread, a blocking pool's
/// `block_on`) is not caught: each level makes the key again, on a new thread, blocking the
/// one before, without bound (here capped at depth 4 by the test itself).
///
/// Observed: `make` ran 4 times (the test's cap). Expected: at most twice (the inner ask
/// getting the documented "it would recurse for ever" Config error, or any bound short of the
/// test's cap; a racing second `make` for a new key is documented as allowed).
#[test]
#[ignore = "documented limit: the recursion guard of PerRequestCaches is per thread"]
fn a_make_asking_for_its_own_key_from_another_thread_recurses_without_bound() {
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

/// A `401` for a token of a key that was evicted while the request was in flight reaches no
/// cache: the response names the cache by slot number and the evicted cache is gone at once
/// (the fast path's request holds no reference to it, although the docs say its token is
/// dropped "once no request holds it"). With a shared store the rejection is never told to
/// Redis, and the key's next cache adopts the very token the server just rejected.
///
/// Observed: after the 401, the recreated key's cache serves `a-token-1` again. Expected:
/// another token (as a plain `BearerAuthLayer` over the same Redis gives).
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_401_for_an_evicted_keys_token_is_lost_and_the_fleet_serves_it_again() {
    use tower_oauth2::layer::PerRequestLayer;

    let redis = crate::support::fleet::redis_server();
    let tokens = scripted(audience_token).await;
    // The API has revoked `a-token-1`.
    let api = crate::support::Api::start(|token| token != "a-token-1").await;
    let base = crate::support::fleet::client(&tokens, &redis.url(), CachePolicy::default());
    let caches = PerRequestCaches::new(
        |head| head.path().trim_start_matches('/').split('/').next(),
        move |aud| base.with_audience(aud),
    )
    .max_keys(1);
    let mut client = ServiceBuilder::new()
        .layer(PerRequestLayer::new(caches.clone()))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());

    assert_eq!(
        caches.cache("a").token().await.unwrap().secret(),
        "a-token-1"
    );
    // R1 takes `a-token-1` from the fast path; not polled yet, so nothing is sent.
    let request = Request::get(format!("http://{}/a/1", api.addr))
        .body(Full::default())
        .unwrap();
    let in_flight = client.ready().await.unwrap().call(request);
    // Another key evicts `a` while R1 is in flight.
    caches.cache("b").token().await.unwrap();
    let response = in_flight.await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Let the shared store hear of the rejection, if anyone told it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let next = caches.cache("a").token().await.unwrap();
    assert_ne!(
        next.secret(),
        "a-token-1",
        "the token the server rejected is served again to the key's new cache"
    );
}

/// The contrast (holds): the same flow with room for both keys, so nothing is evicted; the
/// `401` reaches the cache, which tells Redis, and another process gets a new token.
#[cfg(feature = "redis")]
#[tokio::test]
async fn held_without_eviction_a_401_reaches_the_fleet() {
    use tower_oauth2::layer::PerRequestLayer;

    let redis = crate::support::fleet::redis_server();
    let tokens = scripted(audience_token).await;
    // The API has revoked `a-token-1`.
    let api = crate::support::Api::start(|token| token != "a-token-1").await;
    let base = crate::support::fleet::client(&tokens, &redis.url(), CachePolicy::default());
    let caches = PerRequestCaches::new(
        |head| head.path().trim_start_matches('/').split('/').next(),
        move |aud| base.with_audience(aud),
    )
    .max_keys(4);
    let mut client = ServiceBuilder::new()
        .layer(PerRequestLayer::new(caches.clone()))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());

    assert_eq!(
        caches.cache("a").token().await.unwrap().secret(),
        "a-token-1"
    );
    // R1 takes `a-token-1` from the fast path; not polled yet, so nothing is sent.
    let request = Request::get(format!("http://{}/a/1", api.addr))
        .body(Full::default())
        .unwrap();
    let in_flight = client.ready().await.unwrap().call(request);
    // Another key is used while R1 is in flight; `a` stays (room for four).
    caches.cache("b").token().await.unwrap();
    let response = in_flight.await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Let the shared store hear of the rejection, if anyone told it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let other = crate::support::fleet::client(&tokens, &redis.url(), CachePolicy::default())
        .with_audience("a");
    let next = other.token().await.unwrap();
    assert_ne!(
        next.secret(),
        "a-token-1",
        "the fleet did not hear of the 401"
    );
}

/// A request whose key was evicted while it was in flight is rejected (`401`) and replayed by
/// `RetryOnUnauthorized` with the key's new token: that replay is counted by slot number, and
/// the evicted cache's slot is empty (or already another key's), so
/// `tower_oauth2_requests_replayed_total` for the key's audience stays at 0 (the count is
/// lost, or lands on whichever key's cache took the slot).
///
/// Observed: 0 replays counted for `audience=a`. Expected: 1.
#[test]
fn a_replay_of_an_evicted_keys_request_is_counted_for_its_key() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use tower::retry::RetryLayer;
    use tower_oauth2::layer::{PerRequestLayer, RetryOnUnauthorized};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let tokens = scripted(audience_token).await;
            // The API has revoked `a-token-1`.
            let api = crate::support::Api::start(|token| token != "a-token-1").await;
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
                .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
            caches.cache("a").token().await.unwrap();
            let request = Request::get(format!("http://{}/a/1", api.addr))
                .body(Full::default())
                .unwrap();
            let in_flight = client.ready().await.unwrap().call(request);
            // `b` evicts `a`; `c` may take the evicted cache's slot.
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

// ---------------------------------------------------------------------------------------------
// DPoP.
// ---------------------------------------------------------------------------------------------

/// A server whose auth middleware verifies every request's proof (refusing a replayed `jti`),
/// then redirects `/page?step=1` to `/page?step=2` (the same path: pagination, a login step).
/// reqwest follows it inside the middleware, sending the same proof again; the server refuses
/// the replay. The redirect rule compares only `htu` (no query), so the middleware thinks the
/// answer came from the URL its proof named, takes the `401` for a rejected token and drops a
/// good token.
///
/// Observed: a second token request after the redirect. Expected: the token kept, as for a
/// redirect to another path (`a_reqwest_redirect_with_a_stale_proof_keeps_the_token`).
#[tokio::test]
async fn a_reqwest_redirect_to_the_same_path_with_another_query_drops_a_good_token() {
    let tokens = dpop_token_server().await;
    let checker = Arc::new(ProofChecker::default());
    let validator = tokens.clone();
    let addr = serve(move |request: Request<Incoming>| {
        let (checker, tokens) = (checker.clone(), validator.clone());
        async move {
            let headers = request.headers();
            let token = headers
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("DPoP "))
                .unwrap_or_default();
            let proof = headers
                .get("dpop")
                .map(|p| p.to_str().unwrap())
                .unwrap_or_default();
            let htu = url_of(headers, request.uri().path());
            let expect = Expect {
                htm: "GET",
                htu: &htu,
                token: Some(token),
                nonce: None,
            };
            match checker.check(proof, &expect) {
                Ok(checked) if tokens.cnf_jkt(token).as_deref() == Some(checked.jkt.as_str()) => {
                    if request.uri().query() == Some("step=1") {
                        let mut response = raw(StatusCode::FOUND, "", "");
                        response
                            .headers_mut()
                            .insert(http::header::LOCATION, "/page?step=2".parse().unwrap());
                        return response;
                    }
                    raw(StatusCode::OK, "text/plain", "ok")
                }
                _ => {
                    let mut response = raw(StatusCode::UNAUTHORIZED, "", "");
                    response.headers_mut().insert(
                        WWW_AUTHENTICATE,
                        "DPoP error=\"invalid_dpop_proof\"".parse().unwrap(),
                    );
                    response
                }
            }
        }
    })
    .await;
    let credentials = dpop_credentials(&tokens, DpopKey::generate(JwsAlgorithm::ES256).unwrap());
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(tower_oauth2::BearerAuthMiddleware::new(credentials.clone()))
        .build();
    let redirected = client
        .get(format!("http://{addr}/page?step=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(redirected.status(), 401, "the replayed proof is refused");
    let direct = client
        .get(format!("http://{addr}/page?step=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);
    assert_eq!(
        tokens.requests(),
        1,
        "a proof replayed by reqwest's redirect was taken for a rejected token"
    );
}

/// A P-256 "KMS": its first signature (the token request's proof) is a real one; every later
/// `sign` returns a future that never answers and panics when dropped (a KMS client whose
/// cancellation path is buggy), telling the test once it was polled.
struct DropBombKms {
    key: aws_lc_rs::signature::EcdsaKeyPair,
    calls: AtomicUsize,
    asked: Arc<tokio::sync::Notify>,
}

struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("KMS client bug in drop");
    }
}

impl Signer for DropBombKms {
    fn algorithm(&self) -> JwsAlgorithm {
        JwsAlgorithm::ES256
    }

    fn sign<'a>(&'a self, message: &'a [u8]) -> SignFuture<'a> {
        let first = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
        let asked = self.asked.clone();
        Box::pin(async move {
            if first {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                let signature = self.key.sign(&rng, message).map_err(|_| "KMS failed")?;
                return Ok(signature.as_ref().to_vec());
            }
            let _bomb = Bomb;
            asked.notify_one();
            std::future::pending::<()>().await;
            Ok(Vec::new())
        })
    }
}

/// `signed_within` catches a signer future's panic in `drop` only when it drops the future
/// itself (signed or timed out). When the request is cancelled first (a caller's timeout, a
/// client going away, `select!`), the signer's future is dropped with the request's future and
/// its panic unwinds through the caller's drop: user code panicking is not contained
/// (invariant 7; the function's doc promises "its panic ... in that future's drop").
///
/// Observed: dropping the cancelled request panics. Expected: the drop is silent.
#[tokio::test]
async fn a_cancelled_request_whose_signer_panics_in_drop_unwinds_into_the_caller() {
    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

    let tokens = dpop_token_server().await;
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pair.serialize_der()).unwrap();
    let asked = Arc::new(tokio::sync::Notify::new());
    let kms = DropBombKms {
        key,
        calls: AtomicUsize::new(0),
        asked: asked.clone(),
    };
    let dpop = DpopKey::from_signer(kms, pair.public_key_pem()).unwrap();
    let credentials = dpop_credentials(&tokens, dpop);
    credentials.token().await.expect("the first proof is real");
    let mut client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(credentials))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let request = Request::builder()
        .method(Method::GET)
        .uri("http://127.0.0.1:9/never-sent")
        .body(Full::default())
        .unwrap();
    let mut call = Box::pin(client.ready().await.unwrap().call(request));
    tokio::select! {
        _ = &mut call => panic!("the signer never answers"),
        _ = asked.notified() => {}
    }
    // The caller gives up on the request.
    let dropped = std::panic::catch_unwind(AssertUnwindSafe(move || drop(call)));
    assert!(
        dropped.is_ok(),
        "the signer's panic in drop unwound out of the cancelled request's drop"
    );
}

// ---------------------------------------------------------------------------------------------
// Elsewhere.
// ---------------------------------------------------------------------------------------------

/// `ClientCredentialsBuilder::timeout(Duration::MAX)` (a user's "no timeout") is accepted by
/// `build()`, but every token request then computes its one deadline as
/// `tokio::time::Instant::now() + timeout`, which overflows and panics in the crate's own code
/// (`fetch_once`, since the "one deadline per token request" change). The single flight turns
/// it into a `Panic` error: no token can ever be had.
///
/// Observed: `token()` fails with a panic error. Expected: a token (the deadline saturating
/// to "far away", as `futures_timer` and the cache's own deadlines do), or `build()` refusing
/// the timeout with a `ConfigError`.
#[tokio::test]
async fn a_timeout_of_duration_max_makes_every_token_request_panic() {
    let tokens = scripted(audience_token).await;
    let built = ClientCredentials::builder()
        .token_url(tokens.url())
        .client_id("client")
        .client_secret("secret")
        .timeout(Duration::MAX)
        .build();
    let Ok(credentials) = built else {
        return; // refused at build(): fine
    };
    let outcome = credentials.token().await;
    assert!(
        outcome.is_ok(),
        "Duration::MAX as the timeout: {:?}",
        outcome.map(|_| ()).map_err(|e| e.to_string())
    );
}
