//! Flights (one shared fetch) against what users' sources and executors do to them: sources
//! that block their thread, panic in `Drop` or ask their own cache, callers cancelled on a
//! flight nobody else drives, a thousand callers on several runtimes and none, saturated
//! backoff, and a paused clock waiting on the real world. Sources here need no HTTP: these are
//! about the cache.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tower_oauth2::{
    cache::CachePolicy, source::from_fn, source::TokenFuture, AccessToken, ErrorKind, TokenCache,
    TokenSource,
};

const HOUR: Duration = Duration::from_secs(3600);

/// A minimal executor: no tokio anywhere on this thread.
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

/// Run `f` on its own thread; not finishing within `limit` fails the test (it would hang).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match result.recv_timeout(limit) {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("hung: not done within {limit:?}"),
    }
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

/// A source that answers `t<n>` after `took`, counting its calls; it needs no runtime (a
/// thread wakes it).
fn thread_timed(calls: Arc<AtomicUsize>, took: Duration) -> impl TokenSource {
    thread_timed_lasting(calls, took, HOUR)
}

/// Like [`thread_timed`], issuing tokens that last `lifetime`.
fn thread_timed_lasting(
    calls: Arc<AtomicUsize>,
    took: Duration,
    lifetime: Duration,
) -> impl TokenSource {
    from_fn(move || {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        let (done, answer) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            std::thread::sleep(took);
            let _ = done.send(());
        });
        async move {
            let _ = answer.await;
            Ok(AccessToken::new(format!("t{n}")).with_lifetime(lifetime))
        }
    })
}

#[test]
fn a_source_blocking_its_home_thread_is_busy_not_orphaned() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let cache = TokenCache::new(from_fn(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            // A synchronous HTTP client or DNS lookup inside the source: longer than the 2 s
            // after which a silent home counts as gone.
            std::thread::sleep(Duration::from_millis(2500));
            Ok(AccessToken::new(format!("t{n}")).with_lifetime(HOUR))
        }
    }));
    let callers: Vec<_> = [0u64, 200]
        .into_iter()
        .map(|delay| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(delay));
                current_thread().block_on(cache.token())
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.join().unwrap().unwrap().secret(), "t1");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one flight, not given up");
}

/// A source that answers `t<n>` once the test opens its gate, counting its calls; it needs no
/// runtime (the gate's sender wakes it). Until then its fetch is pending, whatever the machine's
/// load: the first poll cannot find it finished.
fn gated(calls: Arc<AtomicUsize>) -> (impl TokenSource, tokio::sync::oneshot::Sender<()>) {
    let (open, gate) = tokio::sync::oneshot::channel::<()>();
    let gate = Arc::new(Mutex::new(Some(gate)));
    let source = from_fn(move || {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        let gate = gate.lock().unwrap().take();
        async move {
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            Ok(AccessToken::new(format!("t{n}")).with_lifetime(HOUR))
        }
    });
    (source, open)
}

#[test]
fn a_cancelled_waiter_leaves_no_timeout_on_a_flight_without_a_home() {
    for next_on_a_runtime in [false, true] {
        let calls = Arc::new(AtomicUsize::new(0));
        let fetch_timeout = Duration::from_millis(100);
        let policy = CachePolicy::default()
            .fetch_timeout(fetch_timeout)
            .backoff(Duration::from_secs(5), Duration::from_secs(10));
        let (source, open) = gated(calls.clone());
        let cache = TokenCache::with_policy(source, policy);

        // A caller with no runtime polls once and is cancelled (its own deadline, say). The
        // gate is closed, so the fetch is surely still running at that poll.
        let mut abandoned = Box::pin(cache.token());
        let polled = abandoned
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_pending());
        drop(abandoned);
        // The fetch finishes with nobody polling its flight...
        open.send(()).unwrap();
        // ...and the fetch timeout passes (real time: the cache's deadline is on the real
        // clock), still with nobody waiting.
        std::thread::sleep(fetch_timeout * 2);

        let next = within(Duration::from_secs(10), move || {
            if next_on_a_runtime {
                current_thread().block_on(cache.token())
            } else {
                block_on(cache.token())
            }
        });
        assert!(
            next.is_ok(),
            "next caller (runtime: {next_on_a_runtime}) got {next:?}: a phantom timeout"
        );
        assert_eq!(next.unwrap().secret(), "t1", "the abandoned flight's token");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

/// A source whose `token()` asks its own cache before returning its future.
#[derive(Clone, Default)]
struct AsksItselfFirst {
    me: Arc<Mutex<Option<TokenCache>>>,
    answer: Arc<Mutex<Option<Result<String, ErrorKind>>>>,
}

impl TokenSource for AsksItselfFirst {
    fn token(&self) -> TokenFuture<'_> {
        if let Some(me) = self.me.lock().unwrap().take() {
            let answer = block_on(me.token());
            *self.answer.lock().unwrap() =
                Some(answer.map(|t| t.secret().to_owned()).map_err(|e| e.kind()));
        }
        Box::pin(async { Ok(AccessToken::new("outer").with_lifetime(HOUR)) })
    }
}

#[test]
fn a_source_asking_its_own_cache_gets_a_config_error_not_a_wait() {
    // From `token()` itself.
    let source = AsksItselfFirst::default();
    let cache = TokenCache::new(source.clone());
    *source.me.lock().unwrap() = Some(cache.clone());
    let outer = within(Duration::from_secs(5), move || block_on(cache.token()));
    assert_eq!(outer.unwrap().secret(), "outer");
    assert_eq!(*source.answer.lock().unwrap(), Some(Err(ErrorKind::Config)));

    // From inside its future.
    let me: Arc<Mutex<Option<TokenCache>>> = Arc::default();
    let answer: Arc<Mutex<Option<ErrorKind>>> = Arc::default();
    let (me_inside, answer_inside) = (me.clone(), answer.clone());
    let cache = TokenCache::new(from_fn(move || {
        let me = me_inside.lock().unwrap().take();
        let answer = answer_inside.clone();
        async move {
            if let Some(me) = me {
                *answer.lock().unwrap() = me.token().await.err().map(|e| e.kind());
            }
            Ok(AccessToken::new("outer").with_lifetime(HOUR))
        }
    }));
    *me.lock().unwrap() = Some(cache.clone());
    let outer = within(Duration::from_secs(5), move || {
        current_thread().block_on(cache.token())
    });
    assert_eq!(outer.unwrap().secret(), "outer");
    assert_eq!(*answer.lock().unwrap(), Some(ErrorKind::Config));
}

/// A source future that panics when dropped, the first time.
struct PanicsOnDrop(bool);

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if self.0 {
            panic!("a source future panicking in drop");
        }
    }
}

#[test]
fn a_source_future_panicking_in_drop_is_an_error_and_the_cache_recovers() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let cache = TokenCache::with_policy(
        from_fn(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let guard = PanicsOnDrop(n == 1);
            async move {
                let _guard = guard;
                Ok(AccessToken::new(format!("t{n}")).with_lifetime(HOUR))
            }
        }),
        CachePolicy::default().backoff(Duration::ZERO, Duration::ZERO),
    );
    let runtime = current_thread();
    // The first token comes back; the panic in its future's drop is contained either way.
    let first = runtime.block_on(cache.token());
    let second = runtime.block_on(cache.token());
    assert!(
        first.is_ok() || second.is_ok(),
        "never recovered: {first:?} {second:?}"
    );
    let again = runtime.block_on(cache.token()).unwrap();
    assert!(again.secret().starts_with('t'));
}

#[test]
fn a_saturated_backoff_still_backs_off() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let cache = TokenCache::with_policy(
        from_fn(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Err(tower_oauth2::Error::custom(true, "down")) }
        }),
        CachePolicy::default().backoff(Duration::MAX, Duration::MAX),
    );
    let runtime = current_thread();
    for _ in 0..100 {
        assert!(runtime.block_on(cache.token()).is_err());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_paused_clock_waiting_on_the_real_world_is_not_advanced_by_the_cache() {
    let cache = TokenCache::new(thread_timed(Arc::default(), Duration::from_millis(300)));
    let started = tokio::time::Instant::now();

    let token = cache.token().await.unwrap();

    assert_eq!(token.secret(), "t1");
    // With a tokio timer of its own (a watcher, a timeout) the cache would let tokio jump the
    // paused clock ahead while the real world answers.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "virtual time moved {:?}",
        started.elapsed()
    );
}

#[test]
fn a_thousand_callers_on_runtimes_and_plain_threads_share_one_fetch() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = TokenCache::new(thread_timed(calls.clone(), Duration::from_millis(300)));
    let groups = 6;
    let per_group = 1000 / groups + 1;
    let start = Arc::new(Barrier::new(groups));
    let threads: Vec<_> = (0..groups)
        .map(|group| {
            let (cache, start) = (cache.clone(), start.clone());
            std::thread::spawn(move || {
                let all = move |cache: TokenCache| async move {
                    let calls = (0..per_group).map(|_| {
                        let cache = cache.clone();
                        async move { cache.token().await.map(|t| t.secret().to_owned()) }
                    });
                    futures_util::future::join_all(calls).await
                };
                start.wait();
                match group % 3 {
                    0 => current_thread().block_on(all(cache)),
                    1 => multi_thread().block_on(all(cache)),
                    _ => block_on(all(cache)),
                }
            })
        })
        .collect();
    let mut served = 0;
    for thread in threads {
        for token in thread.join().unwrap() {
            assert_eq!(token.unwrap(), "t1");
            served += 1;
        }
    }
    assert!(served >= 1000);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_waiter_polled_after_its_token_expired_gets_a_new_one() {
    let lifetime = Duration::from_secs(3);
    let cache = TokenCache::with_policy(
        thread_timed_lasting(Arc::default(), Duration::from_millis(100), lifetime),
        CachePolicy::default()
            .min_lifetime(Duration::ZERO)
            .expiry_margin(Duration::ZERO)
            .min_fetch_interval(Duration::ZERO),
    );
    // The fetch runs on its home runtime...
    let home = multi_thread();
    let at_home = home.spawn({
        let cache = cache.clone();
        async move { cache.token().await }
    });
    std::thread::sleep(Duration::from_millis(20));
    // ...while a waiter with no runtime joins it, and is not polled again until after the
    // token it waited for has expired (a stalled executor).
    let mut late = Box::pin({
        let cache = cache.clone();
        async move { cache.token().await }
    });
    let polled = late.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    assert!(polled.is_pending(), "joined the running fetch");
    assert_eq!(home.block_on(at_home).unwrap().unwrap().secret(), "t1");
    std::thread::sleep(lifetime + Duration::from_millis(200));

    let token = within(Duration::from_secs(5), move || block_on(late)).unwrap();
    assert_eq!(
        token.secret(),
        "t2",
        "not the token that expired while it slept"
    );
}
