//! Time for the cache: a coarse monotonic clock cheap enough to read on every request, and what
//! the caller's tokio runtime can do, found out without panicking.
//!
//! Two clocks are in play, on purpose:
//!
//! - **tokio's** ([`crate::token::now`]) plans a token's life on the slow path. Under
//!   `tokio::time::pause` it is the test's virtual clock, so tests and users' tests can expire
//!   tokens by advancing time (a token fetched on a paused clock is checked on the slow path at
//!   every use, since the fast path cannot read that clock).
//! - **the coarse clock** (`CLOCK_MONOTONIC_COARSE` on Linux, a few nanoseconds) bounds every
//!   use of a token on the fast path in real time. It depends on no task and no runtime, so no
//!   dropped, idle or absent runtime can make the cache send an expired token.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, Id};

/// An instant on the coarse clock: seconds in 32.32 fixed point since an arbitrary origin.
pub(crate) type Ticks = u64;

/// A deadline that never comes.
pub(crate) const NEVER: Ticks = u64::MAX;

/// How far the coarse clock may lag the precise one: one kernel tick (1 to 10 ms), with room.
/// Coarse deadlines are brought forward by this much, so they never fall after the precise one.
const COARSE_LAG: Duration = Duration::from_millis(15);

/// Now, on the coarse clock. Does not write the crate-global "recent" instant `coarsetime`
/// keeps: a store on every request would make every core fight over that cache line.
#[inline]
pub(crate) fn coarse_now() -> Ticks {
    coarsetime::Instant::now_without_cache_update().as_ticks()
}

/// `duration` in ticks, saturating.
pub(crate) fn ticks(duration: Duration) -> Ticks {
    let whole = duration.as_secs().saturating_mul(1 << 32);
    let fraction = (u64::from(duration.subsec_nanos()) << 32) / 1_000_000_000;
    whole.saturating_add(fraction)
}

/// The coarse deadline `remaining` from `now`, early enough to allow for the coarse clock's lag.
pub(crate) fn coarse_deadline(now: Ticks, remaining: Option<Duration>) -> Ticks {
    match remaining {
        None => NEVER,
        Some(remaining) => now
            .saturating_add(ticks(remaining))
            .saturating_sub(ticks(COARSE_LAG))
            .min(NEVER - 1),
    }
}

/// `from + delay`, or the farthest instant that can be represented: a backoff too long to
/// represent is still a backoff.
pub(crate) fn far_as_possible(from: Instant, delay: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    from.checked_add(delay)
        .or_else(|| from.checked_add(CENTURY))
        .unwrap_or(from)
}

/// The tokio runtime the caller runs on.
#[derive(Clone)]
pub(crate) struct Runtime {
    pub(crate) handle: Handle,
    pub(crate) id: Id,
}

impl Runtime {
    /// The caller's runtime, if there is one.
    pub(crate) fn current() -> Option<Runtime> {
        let handle = Handle::try_current().ok()?;
        let id = handle.id();
        Some(Runtime { handle, id })
    }

    /// Whether it has a time driver: `None` when that cannot be found out (see [`has_timers`]).
    pub(crate) fn timers(&self) -> Option<bool> {
        has_timers(self.id)
    }
}

/// Runtimes already asked whether they have timers. Bounded: a process that builds runtime
/// after runtime (a test suite) forgets the oldest.
static TIMERS: Mutex<Vec<(Id, bool)>> = Mutex::new(Vec::new());
const TIMERS_REMEMBERED: usize = 64;

/// Whether the current runtime (with id `id`) has a time driver. tokio offers no way to ask but
/// creating a timer, which panics without one; that panic is caught here, once per runtime.
/// Built with `panic = "abort"` there is no catching it, so the answer is `None`: unknown.
fn has_timers(id: Id) -> Option<bool> {
    if cfg!(panic = "abort") {
        return None;
    }
    let mut known = TIMERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, timers)) = known.iter().find(|(known, _)| *known == id) {
        return Some(*timers);
    }
    let timers = without_panic_hook(|| drop(tokio::time::sleep(Duration::ZERO)));
    if known.len() >= TIMERS_REMEMBERED {
        known.remove(0);
    }
    known.push((id, timers));
    Some(timers)
}

/// The process's panic hook, kept aside while [`without_panic_hook`] runs.
type Hook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send + 'static>;

/// Run `probe`, catching its panic, without the application's panic hook seeing that panic (a
/// hook that reports or aborts on every panic would turn a probe into a crash). Panics on other
/// threads meanwhile still reach the application's hook. Whether `probe` returned.
fn without_panic_hook(probe: impl FnOnce()) -> bool {
    use std::sync::Arc;

    let prober = std::thread::current().id();
    let application: Arc<Mutex<Option<Hook>>> = Arc::new(Mutex::new(Some(std::panic::take_hook())));
    let forward = application.clone();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == prober {
            return;
        }
        let hook = forward
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(hook) = hook.as_ref() {
            hook(info);
        }
    }));
    let returned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(probe)).is_ok();
    drop(std::panic::take_hook());
    let hook = application
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    if let Some(hook) = hook {
        std::panic::set_hook(hook);
    }
    returned
}

/// The deadline `timeout` from now on tokio's clock, or the farthest one that can be
/// represented: `Duration::MAX` (a user's "no timeout") is a deadline that never comes, not an
/// overflow.
pub(crate) fn deadline_in(timeout: std::time::Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    tokio::time::Instant::from_std(far_as_possible(now.into_std(), timeout))
}

/// The time left of a token request's timeout that ends at `deadline` (zero once it passed):
/// its stages (closures, sources, the HTTP exchange) share one timeout instead of each
/// getting it whole.
pub(crate) fn left(deadline: tokio::time::Instant) -> std::time::Duration {
    deadline.saturating_duration_since(tokio::time::Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests that probe runtimes, so that one's hook swap cannot interleave with another's.
    static PROBING: Mutex<()> = Mutex::new(());

    #[test]
    fn ticks_are_32_32_fixed_point_and_saturate() {
        assert_eq!(ticks(Duration::from_secs(1)), 1 << 32);
        assert_eq!(ticks(Duration::from_millis(500)), 1 << 31);
        assert_eq!(ticks(Duration::MAX), u64::MAX);
        let far = coarse_deadline(5, Some(Duration::MAX));
        assert!(far < NEVER && far > NEVER - ticks(Duration::from_secs(1)));
        assert_eq!(coarse_deadline(0, Some(Duration::ZERO)), 0);
        assert_eq!(coarse_deadline(7, None), NEVER);
    }

    #[test]
    fn the_coarse_clock_moves_forward() {
        let before = coarse_now();
        std::thread::sleep(Duration::from_millis(30));
        assert!(coarse_now() > before);
    }

    #[test]
    fn the_timers_probe_does_not_run_the_applications_panic_hook() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;

        let _alone = PROBING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        static SEEN_HERE: AtomicUsize = AtomicUsize::new(0);
        let here = std::thread::current().id();
        let previous = Arc::new(std::panic::take_hook());
        let chained = previous.clone();
        std::panic::set_hook(Box::new(move |info| {
            // Other tests in this process panic on purpose: count only this thread's.
            if std::thread::current().id() == here {
                SEEN_HERE.fetch_add(1, Ordering::SeqCst);
            }
            chained(info);
        }));
        let without = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let timers = without.block_on(async {
            let id = tokio::runtime::Handle::current().id();
            has_timers(id)
        });
        // The application's hook is back in place afterwards.
        let after = std::panic::catch_unwind(|| panic!("after the probe"));
        drop(std::panic::take_hook());
        assert_eq!(timers, Some(false));
        assert!(after.is_err());
        assert_eq!(
            SEEN_HERE.load(Ordering::SeqCst),
            1,
            "only the deliberate panic after the probe reaches the hook"
        );
    }

    #[test]
    fn a_runtime_without_timers_is_told_apart_without_a_panic_escaping() {
        let _alone = PROBING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let without = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let with = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        assert_eq!(
            without.block_on(async { Runtime::current().unwrap().timers() }),
            Some(false)
        );
        assert_eq!(
            with.block_on(async { Runtime::current().unwrap().timers() }),
            Some(true)
        );
        assert!(Runtime::current().is_none());
    }
}
