//! The cache across runtimes, without one, and against sources that panic: every case of the
//! runtime-robustness issue, with real runtimes (dropped, idle, absent, without timers), real
//! panics and real cancellations.
//!
//! The token server and the protected API run on their own background runtime, so that they
//! outlive every runtime a test drops. The API accepts a token only while the lifetime the
//! token server stated for it has not run out (in real time), so "no request carries an
//! expired token" is checked by the server that would reject it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crate::support::{self, json, Api};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{BoxError, Service, ServiceExt};
use tower_oauth2::test_util::TokenServer;
use tower_oauth2::{
    cache::CachePolicy, source::from_fn, AccessToken, BearerAuth, BearerAuthLayer,
    ClientCredentials, ErrorKind, TokenCache, TokenSource,
};

/// A token server issuing `token-N` with a stated lifetime, and an API that rejects tokens
/// past it, both on a runtime of their own.
struct World {
    servers: tokio::runtime::Runtime,
    token_server: TokenServer,
    api: Api,
}

impl World {
    /// Tokens valid for `lifetime`; the token server answers after `delay(n)` for the n-th.
    fn start(lifetime: Duration, delay: fn(usize) -> Duration) -> World {
        let servers = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the servers");
        let issued: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let (token_server, api) = servers.block_on(async {
            let record = issued.clone();
            let token_server = support::scripted_async(move |_, n| {
                let record = record.clone();
                async move {
                    tokio::time::sleep(delay(n)).await;
                    let token = format!("token-{n}");
                    record.lock().unwrap().insert(token.clone(), Instant::now());
                    json(
                        StatusCode::OK,
                        serde_json::json!({
                            "access_token": token,
                            "token_type": "Bearer",
                            "expires_in": lifetime.as_secs(),
                        }),
                    )
                }
            })
            .await;
            let api = Api::start(move |token| {
                issued
                    .lock()
                    .unwrap()
                    .get(token)
                    .is_some_and(|at| at.elapsed() < lifetime)
            })
            .await;
            (token_server, api)
        });
        World {
            servers,
            token_server,
            api,
        }
    }

    fn credentials(&self) -> ClientCredentials {
        ClientCredentials::builder()
            .token_url(self.token_server.url())
            .client_id("client")
            .client_secret("secret")
            .build()
            .expect("valid configuration")
    }

    /// The API behind a bearer layer over `source`.
    fn client(&self, source: impl Into<TokenCache>) -> BearerAuth<Upstream> {
        BearerAuthLayer::new(source).layer_service(Upstream {
            url: self.api.url(),
        })
    }

    fn fetches(&self) -> usize {
        self.token_server.requests()
    }
}

trait LayerService {
    fn layer_service<S>(self, inner: S) -> BearerAuth<S>;
}

impl LayerService for BearerAuthLayer {
    fn layer_service<S>(self, inner: S) -> BearerAuth<S> {
        tower::Layer::layer(&self, inner)
    }
}

/// The protected API over real HTTP, with a fresh connection for every request: a pooled one
/// would belong to the runtime that opened it, which these tests drop.
#[derive(Clone)]
struct Upstream {
    url: String,
}

impl Service<Request<()>> for Upstream {
    type Response = Response<()>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<()>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<()>) -> Self::Future {
        let url = self.url.clone();
        Box::pin(async move {
            let client = Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build_http::<Empty<Bytes>>();
            let (mut parts, ()) = request.into_parts();
            parts.uri = url.parse()?;
            let response = client
                .request(Request::from_parts(parts, Empty::new()))
                .await?;
            Ok(response.map(|_| ()))
        })
    }
}

/// What a stretch of calls saw.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    rejected: usize,
    failed: usize,
    slowest: Duration,
}

/// Call `client` every `every` until `until`, on the current runtime.
async fn call_until(client: &BearerAuth<Upstream>, every: Duration, until: Instant) -> Tally {
    let mut tally = Tally::default();
    while Instant::now() < until {
        let sent = Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            client.clone().oneshot(Request::new(())),
        )
        .await
        .expect("no call hangs");
        match answer {
            Ok(response) if response.status() == StatusCode::OK => tally.ok += 1,
            Ok(_) => tally.rejected += 1,
            Err(_) => tally.failed += 1,
        }
        tally.slowest = tally.slowest.max(sent.elapsed());
        tokio::time::sleep(every).await;
    }
    tally
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

const TWO_SECONDS: Duration = Duration::from_secs(2);

fn at_once(_: usize) -> Duration {
    Duration::ZERO
}

/// Calls every 100 ms for 4.5 s with 2 s tokens: none may be rejected or fail, and the token
/// must be renewed (a 2 s token lasts 1.8 s here).
fn assert_served_throughout(world: &World, tally: &Tally) {
    assert_eq!(tally.rejected, 0, "expired tokens sent: {tally:?}");
    assert_eq!(tally.failed, 0, "{tally:?}");
    // 45 calls when nothing else runs; a loaded 2-core machine (the other tests of this file
    // run at the same time) fits fewer, and that is not what this checks.
    assert!(tally.ok >= 20, "{tally:?}");
    assert_eq!(world.api.rejected(), 0);
    let fetches = world.fetches();
    assert!((3..=6).contains(&fetches), "{fetches} fetches in 4.5 s");
}

// ---------------------------------------------------------------------------------------------
// Runtimes dropped, idle, absent, without timers
// ---------------------------------------------------------------------------------------------

#[test]
fn a_service_outlives_the_runtime_that_fetched_its_first_token() {
    let world = World::start(TWO_SECONDS, at_once);
    let client = world.client(world.credentials());
    for first in [current_thread(), multi_thread()] {
        let response = first.block_on(client.clone().oneshot(Request::new(())));
        assert_eq!(response.unwrap().status(), StatusCode::OK);
        drop(first);
    }
    let until = Instant::now() + Duration::from_millis(4500);
    let tally = current_thread().block_on(call_until(&client, Duration::from_millis(100), until));
    assert_served_throughout(&world, &tally);
}

#[test]
fn a_service_keeps_working_while_the_runtime_that_fetched_sits_idle() {
    let world = World::start(TWO_SECONDS, at_once);
    let client = world.client(world.credentials());
    let idle = current_thread();
    let response = idle.block_on(client.clone().oneshot(Request::new(())));
    assert_eq!(response.unwrap().status(), StatusCode::OK);

    // Past the refresh point, a call on `idle` starts the refresh there, and then `idle` is
    // never driven again: the refresh must not be stuck on it.
    let refresh = Instant::now() + Duration::from_millis(1300);
    std::thread::sleep(refresh.saturating_duration_since(Instant::now()));
    let response = idle.block_on(client.clone().oneshot(Request::new(())));
    assert_eq!(response.unwrap().status(), StatusCode::OK);

    let until = Instant::now() + Duration::from_millis(4500);
    let tally = multi_thread().block_on(call_until(&client, Duration::from_millis(100), until));
    assert_served_throughout(&world, &tally);
    assert!(
        tally.slowest < Duration::from_millis(2500),
        "a caller waited {:?} for a fetch stuck on an idle runtime",
        tally.slowest
    );
    drop(idle);
}

#[test]
fn a_runtime_dropped_while_its_fetch_is_in_flight_leaves_no_stuck_flight() {
    // The first token request is answered after 1 s; the runtime waiting for it is dropped
    // before then.
    let world = World::start(Duration::from_secs(60), |n| {
        if n == 1 {
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        }
    });
    let client = world.client(world.credentials());
    let doomed = multi_thread();
    doomed.spawn({
        let client = client.clone();
        async move { client.oneshot(Request::new(())).await }
    });
    // The first request reaching the token server is the signal that the fetch is in flight.
    let deadline = Instant::now() + Duration::from_secs(5);
    while world.fetches() == 0 {
        assert!(Instant::now() < deadline, "the first fetch never started");
        std::thread::yield_now();
    }
    doomed.shutdown_background();

    let later = current_thread();
    for _ in 0..3 {
        let response = later
            .block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(5),
                    client.clone().oneshot(Request::new(())),
                )
                .await
            })
            .expect("no hang");
        assert_eq!(response.expect("recovered").status(), StatusCode::OK);
    }
    assert_eq!(
        world.fetches(),
        2,
        "one abandoned fetch, one that served every call"
    );
}

#[test]
fn client_credentials_without_a_runtime_is_an_error_and_poisons_nothing() {
    let world = World::start(Duration::from_secs(60), at_once);
    let credentials = world.credentials();
    let client = world.client(credentials.clone());

    let error = block_on(credentials.token()).expect_err("no runtime, no fetch");
    assert_eq!(error.kind(), ErrorKind::Runtime, "{error}");
    assert!(error.to_string().contains("tokio runtime"), "{error}");
    let error = block_on(client.clone().oneshot(Request::new(()))).expect_err("no runtime");
    let error = error.downcast::<tower_oauth2::Error>().expect("our error");
    assert_eq!(error.kind(), ErrorKind::Runtime);
    assert_eq!(world.fetches(), 0);

    // Not backed off, not poisoned: the next call from a runtime fetches at once.
    let response = current_thread().block_on(client.oneshot(Request::new(())));
    assert_eq!(response.unwrap().status(), StatusCode::OK);
    assert_eq!(world.fetches(), 1);
}

#[test]
fn client_credentials_on_a_runtime_without_timers_is_an_error_not_a_panic() {
    let world = World::start(Duration::from_secs(60), at_once);
    let credentials = world.credentials();
    let io_only = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let error = io_only
        .block_on(credentials.token())
        .expect_err("no timers");
    assert_eq!(error.kind(), ErrorKind::Runtime, "{error}");
    let time_only = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let error = time_only.block_on(credentials.token()).expect_err("no IO");
    assert_eq!(error.kind(), ErrorKind::Runtime, "{error}");
    let token = current_thread().block_on(credentials.token()).unwrap();
    assert_eq!(token.secret(), "token-1");
}

#[test]
fn a_runtime_free_source_renews_without_timers_or_without_a_runtime() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let cache =
        TokenCache::with_policy(
            from_fn(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    Ok(AccessToken::new(format!("token-{n}"))
                        .with_lifetime(Duration::from_millis(300)))
                }
            }),
            short_lived(),
        );
    let io_only = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let mut seen = Vec::new();
    let until = Instant::now() + Duration::from_millis(1000);
    while Instant::now() < until {
        let token = if seen.len() % 2 == 0 {
            io_only.block_on(cache.token())
        } else {
            block_on(cache.token())
        };
        let token = token.expect("a runtime-free source needs no runtime");
        seen.push((
            Instant::now(),
            token.secret().to_owned(),
            token.expires_at().unwrap(),
        ));
        std::thread::sleep(Duration::from_millis(20));
    }
    for (at, secret, expires_at) in &seen {
        assert!(at < expires_at, "{secret} handed out after its expiry");
    }
    let renewed = fetches.load(Ordering::SeqCst);
    assert!(
        (3..=8).contains(&renewed),
        "{renewed} fetches of 300 ms tokens in 1 s"
    );
}

/// No floors, so that tests can use tokens of a few hundred milliseconds.
fn short_lived() -> CachePolicy {
    CachePolicy::default()
        .min_lifetime(Duration::ZERO)
        .min_fetch_interval(Duration::ZERO)
        .expiry_margin(Duration::from_millis(20))
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
}

#[test]
fn without_a_runtime_a_due_refresh_does_not_make_callers_wait() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let cache = TokenCache::with_policy(
        from_fn(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n > 1 {
                    // The refresh never finishes.
                    std::future::pending::<()>().await;
                }
                Ok(AccessToken::new(format!("token-{n}")).with_lifetime(Duration::from_secs(2)))
            }
        }),
        short_lived(),
    );
    let first = block_on(cache.token()).unwrap();
    assert_eq!(first.secret(), "token-1");
    // Past the refresh point (1 s at the latest for a 2 s token), still valid.
    std::thread::sleep(Duration::from_millis(1200));
    for _ in 0..3 {
        let (sender, receiver) = std::sync::mpsc::channel();
        let cache = cache.clone();
        std::thread::spawn(move || sender.send(block_on(cache.token())));
        let token = receiver
            .recv_timeout(Duration::from_secs(2))
            .expect("a caller with a valid token does not wait for the refresh")
            .unwrap();
        assert_eq!(token.secret(), "token-1");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 2, "one refresh started");
}

// ---------------------------------------------------------------------------------------------
// Panics
// ---------------------------------------------------------------------------------------------

/// A source that panics (in the call itself or in its future) on the calls `panics` picks.
fn panicking(
    panics: fn(usize) -> bool,
    in_future: bool,
    lifetime: Duration,
) -> (TokenCache, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let cache = TokenCache::with_policy(
        from_fn(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            if panics(n) && !in_future {
                panic!("a bug in a token source (call {n})");
            }
            async move {
                if panics(n) {
                    panic!("a bug in a token source's future (call {n})");
                }
                Ok(AccessToken::new(format!("token-{n}")).with_lifetime(lifetime))
            }
        }),
        short_lived(),
    );
    (cache, calls)
}

#[test]
fn a_source_that_panics_once_is_an_error_and_then_recovers() {
    for in_future in [false, true] {
        let (cache, calls) = panicking(|n| n == 1, in_future, Duration::from_secs(60));
        let runtime = current_thread();
        let error = runtime
            .block_on(cache.token())
            .expect_err("the panic is an error");
        assert_eq!(error.kind(), ErrorKind::Panic);
        assert!(error.to_string().contains("panicked"), "{error}");
        assert!(
            !error.to_string().contains("a bug"),
            "the panic message stays out: {error}"
        );
        // Backed off like any failure: the next call right away gets the same error.
        let again = runtime.block_on(cache.token()).expect_err("backing off");
        assert_eq!(again.kind(), ErrorKind::Panic);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // After the backoff step, the source is called again and the cache recovers.
        std::thread::sleep(Duration::from_millis(120));
        let token = runtime.block_on(cache.token()).expect("recovered");
        assert_eq!(token.secret(), "token-2");
        // And it works from no runtime at all.
        assert_eq!(block_on(cache.token()).unwrap().secret(), "token-2");
    }
}

#[test]
fn a_source_that_panics_during_refresh_ahead_neither_spins_nor_sends_an_expired_token() {
    let (cache, calls) = panicking(|n| n > 1, true, Duration::from_millis(600));
    let runtime = current_thread();
    runtime.block_on(async {
        // On this one thread, a spinning task would starve the ticker.
        let ticks = Arc::new(AtomicUsize::new(0));
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let started = Instant::now();
        let first = cache.token().await.unwrap();
        let expires_at = first.expires_at().unwrap();
        let (mut ok, mut failed) = (0, 0);
        while started.elapsed() < Duration::from_millis(1500) {
            match cache.token().await {
                Ok(token) => {
                    assert!(
                        Instant::now() < expires_at,
                        "an expired token was handed out"
                    );
                    assert_eq!(token.secret(), "token-1");
                    ok += 1;
                }
                Err(error) => {
                    assert!(Instant::now() >= expires_at - Duration::from_millis(40));
                    assert_eq!(error.kind(), ErrorKind::Panic);
                    failed += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ticker.abort();
        assert!(ok > 10 && failed > 10, "{ok} ok, {failed} failed");
        // A task spinning on this thread would leave the ticker next to nothing; a busy machine
        // only makes its sleeps overshoot (73 of 150 ticks seen under `.ci/stress`), so the
        // bound is far below what load costs and far above what a spin leaves.
        let ticks = ticks.load(Ordering::SeqCst);
        assert!(
            ticks > 30,
            "the runtime was starved: {ticks} ticks of 10 ms in 1.5 s"
        );
        // Backoff of 50 ms doubling to 200 ms: a handful of attempts, not thousands.
        let calls = calls.load(Ordering::SeqCst);
        assert!((3..=20).contains(&calls), "{calls} calls to the source");
    });
}

#[test]
fn a_custom_http_client_that_panics_is_a_backed_off_error() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let client = tower::service_fn(move |_: tower_oauth2::transport::TokenRequest| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if true {
                panic!("a bug in a custom HTTP client");
            }
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                Bytes::new(),
            )))
        }
    });
    let credentials = ClientCredentials::builder()
        .token_url("http://127.0.0.1:9/token")
        .client_id("client")
        .client_secret("secret")
        .http_client(client)
        .build()
        .unwrap();
    let runtime = current_thread();
    for _ in 0..3 {
        let error = runtime
            .block_on(credentials.token())
            .expect_err("a panic is an error");
        assert_eq!(error.kind(), ErrorKind::Panic);
        assert!(
            error.to_string().contains("HTTP client panicked"),
            "{error}"
        );
        assert!(!error.to_string().contains("a bug"), "{error}");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "backed off after the first panic"
    );
}

// ---------------------------------------------------------------------------------------------
// Short lifetimes, policy input, leaks, stacked caches
// ---------------------------------------------------------------------------------------------

#[test]
fn tokens_of_zero_seconds_cost_one_token_request_per_two_seconds() {
    let world = World::start(Duration::ZERO, at_once);
    let credentials = world.credentials();
    let runtime = current_thread();
    runtime.block_on(async {
        for _ in 0..1000 {
            credentials.token().await.expect("a token");
        }
    });
    assert_eq!(
        world.fetches(),
        1,
        "used for min_lifetime (2 s) whatever expires_in says"
    );
}

#[tokio::test]
async fn short_tokens_nobody_uses_are_not_refreshed() {
    // A runtime cannot be built (nor dropped) inside another one's thread.
    let world = tokio::task::spawn_blocking(|| World::start(Duration::ZERO, at_once))
        .await
        .unwrap();
    let credentials = ClientCredentials::builder()
        .token_url(world.token_server.url())
        .client_id("client")
        .client_secret("secret")
        // Long enough that a busy machine hands the token over before it expires (a caller that
        // finds the token it waited for already expired fetches again, by design).
        .cache_policy(CachePolicy::default().min_lifetime(Duration::from_millis(300)))
        .build()
        .unwrap();
    credentials.token().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(world.fetches(), 1, "no refresh without traffic");
    credentials.token().await.unwrap();
    assert_eq!(world.fetches(), 2, "the next call after expiry fetches");
    tokio::task::spawn_blocking(move || drop(world))
        .await
        .unwrap();
}

#[test]
fn a_refresh_ahead_of_duration_max_neither_panics_nor_storms() {
    let world = World::start(Duration::from_secs(3600), at_once);
    let credentials = ClientCredentials::builder()
        .token_url(world.token_server.url())
        .client_id("client")
        .client_secret("secret")
        .cache_policy(CachePolicy::default().refresh_ahead(0.5, Duration::MAX, Duration::MAX))
        .build()
        .unwrap();
    let client = world.client(credentials);
    current_thread().block_on(async {
        for _ in 0..100 {
            let response = client.clone().oneshot(Request::new(())).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
    });
    // Refresh starts half-way through the lifetime at the earliest.
    assert_eq!(world.fetches(), 1);
}

#[test]
fn a_fetch_abandoned_without_a_runtime_frees_the_cache_and_its_source() {
    let alive = Arc::new(());
    let held = alive.clone();
    let cache = TokenCache::new(from_fn(move || {
        let held = held.clone();
        async move {
            std::future::pending::<()>().await;
            drop(held);
            Ok(AccessToken::new("never"))
        }
    }));
    {
        let waiting = pin!(cache.token());
        assert!(waiting
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending());
    }
    drop(cache);
    assert_eq!(
        Arc::strong_count(&alive),
        1,
        "the source was freed with the cache"
    );
}

#[test]
fn a_fetch_abandoned_on_a_runtime_frees_the_cache_and_its_source() {
    let alive = Arc::new(());
    let held = alive.clone();
    let cache = TokenCache::new(from_fn(move || {
        let held = held.clone();
        async move {
            std::future::pending::<()>().await;
            drop(held);
            Ok(AccessToken::new("never"))
        }
    }));
    let runtime = current_thread();
    runtime.block_on(async {
        let waiter = tokio::spawn({
            let cache = cache.clone();
            async move { cache.token().await }
        });
        tokio::task::yield_now().await;
        waiter.abort();
        drop(cache);
        // The fetch's driver notices at its next beat (250 ms) that nobody can use the result.
        let deadline = Instant::now() + Duration::from_secs(3);
        while Arc::strong_count(&alive) > 1 {
            assert!(Instant::now() < deadline, "the source is still held");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

#[test]
fn a_cache_over_client_credentials_drops_a_rejected_token_from_both() {
    for stacked in [false, true] {
        let world = World::start(Duration::from_secs(3600), at_once);
        // The API rejects the first token, as if it had been revoked.
        let api = world
            .servers
            .block_on(Api::start(|token| token != "token-1"));
        let credentials = world.credentials();
        let cache = if stacked {
            TokenCache::with_policy(credentials.clone(), CachePolicy::default())
        } else {
            TokenCache::new(credentials.clone())
        };
        let client = BearerAuthLayer::new(cache).layer_service(Upstream { url: api.url() });
        let runtime = current_thread();
        let statuses: Vec<_> = (0..3)
            .map(|_| {
                runtime
                    .block_on(client.clone().oneshot(Request::new(())))
                    .unwrap()
                    .status()
            })
            .collect();
        assert_eq!(
            statuses,
            [StatusCode::UNAUTHORIZED, StatusCode::OK, StatusCode::OK],
            "stacked: {stacked}"
        );
        // The credentials' own cache no longer hands out the rejected token either.
        let token = runtime.block_on(credentials.token()).unwrap();
        assert_eq!(token.secret(), "token-2", "stacked: {stacked}");
        assert_eq!(world.fetches(), 2);
    }
}

/// A minimal executor without any runtime, like `futures::executor::block_on`.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}
