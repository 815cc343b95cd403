//! The per-request cost of `BearerAuth` with a token cached, against baselines in the same run:
//! tower-http's `SetRequestHeader` (the floor), itself on one thread, and a hand-rolled
//! `tokio::sync::Mutex<Option<AccessToken>>` cache.
//!
//! `cargo bench -p tower-oauth2-benches --bench fast_path`

#[path = "support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::{pin, Pin};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, Request, Response};
use support::Row;
use tower::{Layer, Service, ServiceExt};
use tower_http::set_header::SetRequestHeader;
use tower_oauth2::client_auth::JwsAlgorithm;
use tower_oauth2::dpop::DpopKey;
use tower_oauth2::{
    source::StaticToken, AccessToken, BearerAuth, BearerAuthLayer, ClientCredentials,
};

const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJiZW5jaCJ9.c2lnbmF0dXJl";

/// An inner service that does nothing, ready at once: all that is measured is the layer.
/// Like a real client it consumes the request (freeing its headers) and answers with a small
/// response; building the request is left out of the timing.
#[derive(Clone)]
struct Noop;

impl<B> Service<Request<B>> for Noop {
    type Response = Answer;
    type Error = Infallible;
    type Future = Ready<Result<Answer, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        drop(std::hint::black_box(request));
        ready(Ok(Response::new(())))
    }
}

type Answer = Response<()>;

/// A request as hyper or tonic hand it over: its header map already allocated.
fn request() -> Request<()> {
    let mut request = Request::new(());
    *request.headers_mut() = HeaderMap::with_capacity(8);
    request
}

fn cached_layer() -> BearerAuth<Noop> {
    let token = AccessToken::new(TOKEN).with_lifetime(Duration::from_secs(3600));
    let mut service = BearerAuthLayer::new(StaticToken::from(token)).layer(Noop);
    // The first call fills the cache; everything measured after it is the fast path.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let ready = ServiceExt::<Request<()>>::ready(&mut service)
                .await
                .unwrap();
            ready.call(request()).await.unwrap();
        });
    service
}

/// `PerRequestLayer` with one key, used by every request (its token cached): the cost of
/// choosing the key beside `bearer_auth`'s.
fn per_request_hot_key() -> tower_oauth2::layer::PerRequestAuth<Noop> {
    use tower_oauth2::cache::PerRequestCaches;
    use tower_oauth2::layer::PerRequestLayer;

    let caches = PerRequestCaches::new(
        |_request| Some("https://api.example.com"),
        |_audience| {
            StaticToken::from(AccessToken::new(TOKEN).with_lifetime(Duration::from_secs(3600)))
        },
    );
    let mut service = PerRequestLayer::new(caches).layer(Noop);
    // The first call makes the key's cache and fills it; what is measured after is the fast path.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let ready = ServiceExt::<Request<()>>::ready(&mut service)
                .await
                .unwrap();
            ready.call(request()).await.unwrap();
        });
    service
}

fn floor() -> SetRequestHeader<Noop, HeaderValue> {
    let value = HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap();
    SetRequestHeader::overriding(Noop, AUTHORIZATION, value)
}

/// Poll ready, call and poll the response once, as a runtime would; the no-op inner service
/// makes every step complete at once.
fn call_now<S>(service: &mut S, request: Request<()>) -> Answer
where
    S: Service<Request<()>, Response = Answer>,
    S::Error: std::fmt::Debug,
{
    let mut context = Context::from_waker(Waker::noop());
    assert!(service.poll_ready(&mut context).is_ready());
    let future = pin!(service.call(request));
    match future.poll(&mut context) {
        Poll::Ready(Ok(response)) => response,
        _ => panic!("the fast path completes at once"),
    }
}

/// A layer holding a DPoP token bound to a new `algorithm` key, from a token server on
/// loopback, with the runtime (and server) it was fetched on: every request it sends carries
/// a new proof. Requests need a full URL (the proof names it).
fn dpop_layer(
    algorithm: JwsAlgorithm,
) -> (
    BearerAuth<Noop>,
    tokio::runtime::Runtime,
    tower_oauth2::test_util::TokenServer,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (service, server) = runtime.block_on(async {
        let server = tower_oauth2::test_util::TokenServer::builder()
            .dpop_proofs(|_, _| Some("bench-thumbprint".into()))
            .start()
            .await
            .unwrap();
        let credentials = ClientCredentials::builder()
            .token_url(server.url())
            .client_id("test-client")
            .client_secret("test-secret")
            .dpop(DpopKey::generate(algorithm).unwrap())
            .build()
            .unwrap();
        let mut service = BearerAuthLayer::new(credentials).layer(Noop);
        let ready = ServiceExt::<Request<()>>::ready(&mut service)
            .await
            .unwrap();
        ready.call(dpop_request()).await.unwrap();
        (service, server)
    });
    (service, runtime, server)
}

/// A request as a hyper client hands it over, with the full URL a proof names.
fn dpop_request() -> Request<()> {
    let mut request = request();
    *request.uri_mut() = http::Uri::from_static("https://api.example.com/v1/orders?page=2");
    request
}

/// What one proof costs: a DPoP request through the layer (token cached, a new proof signed),
/// and the same request through the bearer fast path.
fn dpop(c: &mut Criterion) {
    let mut group = c.benchmark_group("dpop");
    let mut bearer = cached_layer();
    group.bench_function("bearer_fast_path", |b| {
        b.iter_batched(
            dpop_request,
            |request| call_now(&mut bearer, request),
            BatchSize::SmallInput,
        )
    });
    for (name, algorithm) in [
        ("dpop_es256", JwsAlgorithm::ES256),
        ("dpop_eddsa", JwsAlgorithm::EdDSA),
    ] {
        let (mut service, runtime, _server) = dpop_layer(algorithm);
        let _entered = runtime.enter();
        group.bench_function(name, |b| {
            b.iter_batched(
                dpop_request,
                |request| call_now(&mut service, request),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// Microseconds per DPoP request through the layer, `algorithm`, timed over many requests.
fn dpop_micros(algorithm: JwsAlgorithm) -> f64 {
    const REQUESTS: u32 = 5_000;
    let (mut service, runtime, _server) = dpop_layer(algorithm);
    let _entered = runtime.enter();
    let began = Instant::now();
    for _ in 0..REQUESTS {
        drop(std::hint::black_box(call_now(&mut service, dpop_request())));
    }
    began.elapsed().as_secs_f64() * 1e6 / f64::from(REQUESTS)
}

fn single_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("fast_path");
    let mut baseline = floor();
    group.bench_function("set_request_header", |b| {
        b.iter_batched(
            request,
            |request| call_now(&mut baseline, request),
            BatchSize::SmallInput,
        )
    });
    let mut bearer = cached_layer();
    group.bench_function("bearer_auth", |b| {
        b.iter_batched(
            request,
            |request| call_now(&mut bearer, request),
            BatchSize::SmallInput,
        )
    });
    let mut hot_key = per_request_hot_key();
    group.bench_function("per_request_hot_key", |b| {
        b.iter_batched(
            request,
            |request| call_now(&mut hot_key, request),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// `iters` requests on each of `threads` threads at once; the time per request of one thread,
/// so equal numbers mean perfect scaling.
fn run_threads<S, F>(threads: usize, iters: u64, make: F) -> Duration
where
    S: Send + 'static,
    F: Fn() -> S,
    S: FnMut(Request<()>),
{
    let start = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let mut call = make();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..iters {
                    call(request());
                }
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    for worker in workers {
        worker.join().unwrap();
    }
    began.elapsed()
}

fn scaling(c: &mut Criterion) {
    let mut group = c.benchmark_group("threads");
    let floor = floor();
    for threads in [1usize, 2] {
        let name = format!("set_request_header_{threads}");
        group.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                run_threads(threads, iters, || {
                    let mut service = floor.clone();
                    move |request| {
                        call_now(&mut service, request);
                    }
                })
            })
        });
    }
    let shared = cached_layer();
    for threads in [1usize, 2] {
        let name = format!("bearer_auth_{threads}");
        group.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                run_threads(threads, iters, || {
                    let mut service = shared.clone();
                    move |request| {
                        call_now(&mut service, request);
                    }
                })
            })
        });
    }
    group.finish();
}

/// What people write by hand: lock a mutex on every call, check the token, format the header.
#[derive(Clone)]
struct MutexCache<S> {
    inner: S,
    token: Arc<tokio::sync::Mutex<Option<AccessToken>>>,
}

impl<S> Service<Request<()>> for MutexCache<S>
where
    S: Service<Request<()>, Response = Answer, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Answer;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<()>) -> Self::Future {
        let token = self.token.clone();
        let mut inner = self.inner.clone();
        Box::pin(async move {
            let header = {
                let cached = token.lock().await;
                let token = cached.as_ref().expect("warmed up");
                assert!(token.expires_at().is_none_or(|at| Instant::now() < at));
                HeaderValue::from_str(&format!("Bearer {}", token.secret())).unwrap()
            };
            request.headers_mut().insert(AUTHORIZATION, header);
            inner.call(request).await
        })
    }
}

fn hand_rolled() -> MutexCache<Noop> {
    let token = AccessToken::new(TOKEN).with_lifetime(Duration::from_secs(3600));
    MutexCache {
        inner: Noop,
        token: Arc::new(tokio::sync::Mutex::new(Some(token))),
    }
}

/// A server's runtime: 2 worker threads.
fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

/// `2 × iters` requests from 16 tasks on a 2-worker runtime, each task awaiting its calls one
/// after another, as a server's handlers do; the time per request of one worker.
fn run_awaiting<S>(runtime: &tokio::runtime::Runtime, iters: u64, service: &S) -> Duration
where
    S: Service<Request<()>, Response = Answer> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
{
    const TASKS: u64 = 16;
    let per_task = (2 * iters).div_ceil(TASKS);
    runtime.block_on(async {
        let began = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let mut service = service.clone();
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        service.ready().await.unwrap();
                        service.call(request()).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        began.elapsed()
    })
}

fn versus_mutex(c: &mut Criterion) {
    let mut group = c.benchmark_group("two_threads");
    let hand_rolled = hand_rolled();
    let bearer = cached_layer();
    let runtime = two_workers();
    group.bench_function("mutex_cache", |b| {
        b.iter_custom(|iters| run_awaiting(&runtime, iters, &hand_rolled))
    });
    group.bench_function("bearer_auth", |b| {
        b.iter_custom(|iters| run_awaiting(&runtime, iters, &bearer))
    });
    // What the harness itself costs (tasks, building and dropping requests): the floor.
    let floor = floor();
    group.bench_function("set_request_header", |b| {
        b.iter_custom(|iters| run_awaiting(&runtime, iters, &floor))
    });
    group.finish();
}

/// How many times faster the fast path is than the hand-rolled cache on 2 threads; the median
/// of alternating rounds.
fn paired_speedup_over_mutex() -> f64 {
    const ROUNDS: usize = 21;
    const REQUESTS: u64 = 50_000;
    let hand_rolled = hand_rolled();
    let bearer = cached_layer();
    let runtime = two_workers();
    let rounds = support::alternate(
        ROUNDS,
        || run_awaiting(&runtime, REQUESTS, &hand_rolled).as_secs_f64(),
        || run_awaiting(&runtime, REQUESTS, &bearer).as_secs_f64(),
    );
    let ratio = |(mutex, bearer): &(f64, f64)| mutex / bearer;
    ratio(&support::median_round(rounds, ratio))
}

/// The fast path against the floor over identical pre-built requests; the median of
/// alternating rounds.
fn paired_ratio() -> f64 {
    const ROUNDS: usize = 41;
    const REQUESTS: usize = 20_000;
    let mut floor = floor();
    let mut bearer = cached_layer();
    let time = |subject: &mut dyn FnMut(Request<()>)| {
        let requests: Vec<_> = (0..REQUESTS).map(|_| request()).collect();
        let began = Instant::now();
        for request in requests {
            subject(request);
        }
        began.elapsed().as_secs_f64()
    };
    let rounds = support::alternate(
        ROUNDS,
        || time(&mut |request| drop(std::hint::black_box(call_now(&mut floor, request)))),
        || time(&mut |request| drop(std::hint::black_box(call_now(&mut bearer, request)))),
    );
    let ratio = |(floor, bearer): &(f64, f64)| bearer / floor;
    ratio(&support::median_round(rounds, ratio))
}

/// Throughput on 2 threads over 1; the median of alternating rounds. `make` gives each thread
/// its own handle, as each thread of a server has its own clone.
fn paired_scaling<S, F>(make: F) -> f64
where
    S: FnMut(Request<()>) + Send + 'static,
    F: Fn() -> S,
{
    const ROUNDS: usize = 21;
    const REQUESTS: u64 = 200_000;
    let rounds = support::alternate(
        ROUNDS,
        || run_threads(1, REQUESTS, &make).as_secs_f64(),
        || run_threads(2, REQUESTS, &make).as_secs_f64(),
    );
    let ratio = |(one_thread, two_threads): &(f64, f64)| 2.0 * one_thread / two_threads;
    ratio(&support::median_round(rounds, ratio))
}

/// The simplest correct alternative to per-thread copies: one shared `HeaderValue` behind an
/// arc-swap, with the coarse deadline beside it. Not the crate's code: a measured prototype
/// answering "do the per-thread copies still pay?" (benches/README.md).
#[derive(Clone)]
struct SharedHeader<S> {
    inner: S,
    current: Arc<arc_swap::ArcSwap<(HeaderValue, coarsetime::Instant)>>,
}

impl<S> Service<Request<()>> for SharedHeader<S>
where
    S: Service<Request<()>, Response = Answer, Error = Infallible>,
{
    type Response = Answer;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<()>) -> Self::Future {
        let current = self.current.load();
        assert!(coarsetime::Instant::now_without_cache_update() < current.1);
        request
            .headers_mut()
            .insert(AUTHORIZATION, current.0.clone());
        self.inner.call(request)
    }
}

fn shared_header() -> SharedHeader<Noop> {
    let value = HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap();
    let until = coarsetime::Instant::now() + coarsetime::Duration::from_secs(3600);
    SharedHeader {
        inner: Noop,
        current: Arc::new(arc_swap::ArcSwap::from_pointee((value, until))),
    }
}

/// The harness on one thread: a current-thread runtime, one task awaiting `ready` and
/// `call` for each request it builds; seconds for `requests`.
fn run_current_thread<S>(runtime: &tokio::runtime::Runtime, requests: u64, service: &S) -> f64
where
    S: Service<Request<()>, Response = Answer> + Clone,
    S::Error: std::fmt::Debug,
{
    let mut service = service.clone();
    runtime.block_on(async {
        let began = Instant::now();
        for _ in 0..requests {
            service.ready().await.unwrap();
            drop(std::hint::black_box(service.call(request()).await.unwrap()));
        }
        began.elapsed().as_secs_f64()
    })
}

/// `subject` over `baseline` in the harnesses (current-thread runtime, and 2 workers
/// with 16 tasks), alternating rounds; the median round of each.
fn paired_in_runtimes<A, B>(baseline: &A, subject: &B) -> (f64, f64)
where
    A: Service<Request<()>, Response = Answer> + Clone + Send + 'static,
    A::Error: std::fmt::Debug,
    A::Future: Send,
    B: Service<Request<()>, Response = Answer> + Clone + Send + 'static,
    B::Error: std::fmt::Debug,
    B::Future: Send,
{
    const ROUNDS: usize = 21;
    const REQUESTS: u64 = 100_000;
    let ratio = |(baseline, subject): &(f64, f64)| subject / baseline;
    let one = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let rounds = support::alternate(
        ROUNDS,
        || run_current_thread(&one, REQUESTS, baseline),
        || run_current_thread(&one, REQUESTS, subject),
    );
    let on_one = ratio(&support::median_round(rounds, ratio));
    let two = two_workers();
    let rounds = support::alternate(
        ROUNDS,
        || run_awaiting(&two, REQUESTS / 2, baseline).as_secs_f64(),
        || run_awaiting(&two, REQUESTS / 2, subject).as_secs_f64(),
    );
    (on_one, ratio(&support::median_round(rounds, ratio)))
}

/// `FAST_PATH_PROFILE=floor|bearer|shared`: only that subject, a million requests in the
/// current-thread harness, for `valgrind --tool=callgrind` (instruction counts, steady on a
/// busy machine).
fn profile(subject: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    const REQUESTS: u64 = 1_000_000;
    // Every subject starts from the same heap: glibc's malloc costs depend on what else lives
    // there, and a cache that exists only in one profile would move that cost between them.
    let _same_heap = (cached_layer(), shared_header());
    let seconds = match subject {
        "floor" => run_current_thread(&runtime, REQUESTS, &floor()),
        "bearer" => run_current_thread(&runtime, REQUESTS, &cached_layer()),
        "shared" => run_current_thread(&runtime, REQUESTS, &shared_header()),
        other => panic!("FAST_PATH_PROFILE={other}: floor, bearer or shared"),
    };
    println!(
        "{subject}: {:.1} ns per request",
        seconds * 1e9 / REQUESTS as f64
    );
}

fn main() {
    if let Ok(subject) = std::env::var("FAST_PATH_PROFILE") {
        return profile(&subject);
    }
    let mut c = support::criterion();
    single_thread(&mut c);
    scaling(&mut c);
    versus_mutex(&mut c);
    dpop(&mut c);
    c.final_summary();

    let mut rows = Vec::new();
    let filtered = support::filtered();
    if !filtered {
        let ratio = paired_ratio();
        rows.push(Row {
            name: "fast path vs tower-http SetRequestHeader (time, paired)",
            ratio,
            unit: "x",
            goal: "<= 1.10x",
            met: ratio <= 1.10,
        });
    }
    if let Some(ratio) = support::ratio("fast_path", "bearer_auth", "set_request_header") {
        rows.push(Row::reference(
            "  the same from criterion's two medians (for reference)",
            ratio,
        ));
    }
    if !filtered {
        let shared = cached_layer();
        let throughput = paired_scaling(|| {
            let mut service = shared.clone();
            move |request| drop(call_now(&mut service, request))
        });
        rows.push(Row {
            name: "fast path throughput, 2 threads vs 1 (paired)",
            ratio: throughput,
            unit: "x",
            goal: ">= 1.8x",
            met: throughput >= 1.8,
        });
        let floor = floor();
        let throughput = paired_scaling(|| {
            let mut service = floor.clone();
            move |request| drop(call_now(&mut service, request))
        });
        rows.push(Row::reference(
            "  the floor's own scaling, 2 threads vs 1 (for reference)",
            throughput,
        ));
    }
    if !filtered {
        let ratio = paired_speedup_over_mutex();
        rows.push(Row {
            name: "fast path vs hand-rolled Mutex cache, 2 threads (paired)",
            ratio,
            unit: "x",
            goal: ">= 6x faster",
            met: ratio >= 6.0,
        });
    }
    if let Some(ratio) = support::ratio("two_threads", "mutex_cache", "bearer_auth") {
        rows.push(Row::reference(
            "  the same from criterion's two medians (for reference)",
            ratio,
        ));
    }
    if let Some(ratio) = support::ratio("two_threads", "bearer_auth", "set_request_header") {
        rows.push(Row::reference(
            "  in that harness, the fast path vs the floor (for reference)",
            ratio,
        ));
    }
    if !filtered {
        let (one, two) = paired_in_runtimes(&floor(), &cached_layer());
        rows.push(Row {
            name: "issue harness: vs SetRequestHeader, current-thread runtime",
            ratio: one,
            unit: "x",
            goal: "<= 1.10x",
            met: one <= 1.10,
        });
        rows.push(Row {
            name: "issue harness: vs SetRequestHeader, 2 workers, 16 tasks",
            ratio: two,
            unit: "x",
            goal: "<= 0.90x",
            met: two <= 0.90,
        });
        let (one, two) = paired_in_runtimes(&shared_header(), &cached_layer());
        rows.push(Row::reference(
            "  vs one shared HeaderValue behind arc-swap, current-thread",
            one,
        ));
        rows.push(Row::reference(
            "  vs one shared HeaderValue behind arc-swap, 2 workers",
            two,
        ));
    }
    if !filtered {
        for (name, algorithm) in [
            (
                "DPoP request through the layer, ES256 (one proof signed)",
                JwsAlgorithm::ES256,
            ),
            (
                "DPoP request through the layer, EdDSA (one proof signed)",
                JwsAlgorithm::EdDSA,
            ),
        ] {
            let micros = dpop_micros(algorithm);
            rows.push(Row {
                name,
                ratio: micros,
                unit: "us",
                goal: "<= 30 us",
                met: micros <= 30.0,
            });
        }
    }
    for proof in ["dpop_es256", "dpop_eddsa"] {
        if let Some(ratio) = support::ratio("dpop", proof, "bearer_fast_path") {
            rows.push(Row::reference(
                if proof == "dpop_es256" {
                    "  ES256 vs the bearer fast path (criterion medians)"
                } else {
                    "  EdDSA vs the bearer fast path (criterion medians)"
                },
                ratio,
            ));
        }
    }
    support::report("fast path ratios (same run)", &rows);
}
