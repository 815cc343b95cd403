//! The per-request cost of `BearerAuth` with a token cached, against baselines in the same run:
//! tower-http's `SetRequestHeader` (the floor), itself on one thread, and a hand-rolled
//! `tokio::sync::Mutex<Option<AccessToken>>` cache.
//!
//! `cargo bench --bench fast_path`

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
use tower_oauth2::{AccessToken, BearerAuth, BearerAuthLayer, StaticToken};

const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJiZW5jaCJ9.c2lnbmF0dXJl";

/// An inner service that does nothing, ready at once: all that is measured is the layer.
#[derive(Clone)]
struct Noop;

impl<B> Service<Request<B>> for Noop {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        ready(Ok(Response::new(())))
    }
}

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

fn floor() -> SetRequestHeader<Noop, HeaderValue> {
    let value = HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap();
    SetRequestHeader::overriding(Noop, AUTHORIZATION, value)
}

/// Poll ready, call and poll the response once, as a runtime would; the no-op inner service
/// makes every step complete at once.
fn call_now<S>(service: &mut S, request: Request<()>) -> Response<()>
where
    S: Service<Request<()>, Response = Response<()>>,
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
    S: Service<Request<()>, Response = Response<()>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<()>, Infallible>> + Send>>;

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

fn versus_mutex(c: &mut Criterion) {
    let mut group = c.benchmark_group("two_threads");
    let token = AccessToken::new(TOKEN).with_lifetime(Duration::from_secs(3600));
    let hand_rolled = MutexCache {
        inner: Noop,
        token: Arc::new(tokio::sync::Mutex::new(Some(token))),
    };
    let bearer = cached_layer();
    // Both run in a current-thread runtime per thread, awaiting each call as users would.
    group.bench_function("mutex_cache", |b| {
        b.iter_custom(|iters| run_threads(2, iters, || awaiting(hand_rolled.clone())))
    });
    group.bench_function("bearer_auth", |b| {
        b.iter_custom(|iters| run_threads(2, iters, || awaiting(bearer.clone())))
    });
    group.finish();
}

fn awaiting<S>(mut service: S) -> impl FnMut(Request<()>) + Send
where
    S: Service<Request<()>, Response = Response<()>> + Send + 'static,
    S::Error: std::fmt::Debug,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    move |request| {
        runtime.block_on(async {
            service.ready().await.unwrap();
            service.call(request).await.unwrap();
        })
    }
}

fn main() {
    let mut c = support::criterion();
    single_thread(&mut c);
    scaling(&mut c);
    versus_mutex(&mut c);
    c.final_summary();

    let mut rows = Vec::new();
    if let Some(ratio) = support::ratio("fast_path", "bearer_auth", "set_request_header") {
        rows.push(Row {
            name: "fast path vs tower-http SetRequestHeader (time)",
            ratio,
            unit: "x",
            goal: "<= 1.10x",
            met: ratio <= 1.10,
        });
    }
    if let Some(ratio) = support::ratio("threads", "bearer_auth_1", "bearer_auth_2") {
        // Per-request times of one thread: 2 threads give 2 / (t2 / t1) the throughput.
        let throughput = 2.0 * ratio;
        rows.push(Row {
            name: "fast path throughput, 2 threads vs 1",
            ratio: throughput,
            unit: "x",
            goal: ">= 1.8x",
            met: throughput >= 1.8,
        });
    }
    if let Some(ratio) = support::ratio("two_threads", "mutex_cache", "bearer_auth") {
        rows.push(Row {
            name: "fast path vs hand-rolled Mutex cache, 2 threads (speed-up)",
            ratio,
            unit: "x",
            goal: ">= 5x",
            met: ratio >= 5.0,
        });
    }
    support::report("fast path ratios (same run)", &rows);
}
