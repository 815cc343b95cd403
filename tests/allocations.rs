//! Invariant 1: with a token cached, a request through the layer allocates nothing.
//!
//! A counting global allocator, so this is a count, not a timing. It counts only on the thread
//! under test: the test harness allocates on other threads while it runs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{HeaderMap, Request, Response};
use tower::{Layer, Service};
use tower_oauth2::{AccessToken, BearerAuthLayer, StaticToken, TokenSource};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_allocation() {
    // `try_with`: the allocator also runs while thread-locals are being torn down.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// An inner service that does nothing, ready at once.
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

/// A request whose header map already has room, as every request from hyper or tonic does.
fn request() -> Request<()> {
    let mut request = Request::new(());
    *request.headers_mut() = HeaderMap::with_capacity(8);
    request
}

fn assert_fast_path_allocates_nothing(source: impl TokenSource) {
    assert_fast_paths_allocate_nothing(vec![source]);
}

/// Requests through layers over each of `sources`, taken in turn on one thread.
fn assert_fast_paths_allocate_nothing(sources: Vec<impl TokenSource>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut services: Vec<_> = sources
        .into_iter()
        .map(|source| BearerAuthLayer::new(source).layer(Noop))
        .collect();
    // Warm up: the first call fetches and caches the token (the slow path allocates); the
    // second makes this thread's own copy of the header (once per thread per token).
    runtime.block_on(async {
        for service in &services {
            let mut warm = service.clone();
            for _ in 0..2 {
                std::future::poll_fn(|cx| Service::<Request<()>>::poll_ready(&mut warm, cx))
                    .await
                    .unwrap();
                warm.call(request()).await.unwrap();
            }
        }
    });
    ALLOCATIONS.set(0);

    let _entered = runtime.enter();
    let requests: Vec<_> = (0..1000).map(|_| request()).collect();
    let mut context = Context::from_waker(Waker::noop());
    COUNTING.set(true);
    for (n, request) in requests.into_iter().enumerate() {
        let caches = services.len();
        let service = &mut services[n % caches];
        assert!(Service::<Request<()>>::poll_ready(service, &mut context).is_ready());
        let future = pin!(service.call(request));
        let Poll::Ready(Ok(response)) = future.poll(&mut context) else {
            panic!("the fast path completes at once");
        };
        drop(response);
    }
    COUNTING.set(false);
    assert_eq!(ALLOCATIONS.get(), 0, "allocations in 1000 requests");
}

#[test]
fn the_fast_path_allocates_nothing() {
    assert_fast_path_allocates_nothing(StaticToken::from(
        AccessToken::new("cached").with_lifetime(Duration::from_secs(3600)),
    ));
}

#[test]
fn the_fast_path_allocates_nothing_with_many_caches_on_a_thread() {
    let sources = (0..12)
        .map(|n| {
            StaticToken::from(
                AccessToken::new(format!("cached-{n}")).with_lifetime(Duration::from_secs(3600)),
            )
        })
        .collect();
    assert_fast_paths_allocate_nothing(sources);
}
