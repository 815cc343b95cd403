//! A *flight*: one fetch whose outcome every waiter shares, and that no runtime, task or panic
//! can wedge.
//!
//! - The fetch is a `Shared` future: whoever awaits it drives it, on any runtime or none. A
//!   waiter that gives up does not cancel it.
//! - A panic in the source becomes an error inside the flight (it never reaches `Shared`,
//!   which would otherwise re-panic in every later waiter).
//! - The fetch holds its cache only weakly, and settles its outcome only if it is still the
//!   cache's flight; a flight that was given up on is simply forgotten, and its late result
//!   discarded.
//! - When started on a tokio runtime, a *driver* task there polls it (so a refresh nobody
//!   awaits still completes), gives a heartbeat, and enforces the fetch timeout. If that
//!   runtime is dropped, the driver's drop gives the flight up at once; if the runtime just
//!   stops being driven, waiters elsewhere see the heartbeat stop and give it up after
//!   [`ORPHANED_AFTER`].

use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Waker};
use std::time::Duration;

use futures_util::future::{self, AbortHandle, Abortable, BoxFuture, Either, FutureExt, Shared};
use tokio::runtime::Id;

use super::{Entry, Inner};
use crate::clock::{coarse_now, ticks, Runtime, Ticks};
use crate::source::TokenSource;
use crate::Error;

/// How a flight ended, as every waiter sees it.
#[derive(Clone)]
pub(super) enum Outcome {
    Token(Arc<Entry>),
    Failed(Error),
    /// Given up on (its runtime went away, it timed out, or its cache was dropped): ask again.
    Abandoned,
}

/// How often the driver beats and waiters look for a stalled flight.
const BEAT: Duration = Duration::from_millis(250);

/// A flight whose home runtime has not beaten for this long is given up by waiters elsewhere.
const ORPHANED_AFTER: Duration = Duration::from_secs(2);

pub(super) struct Flight {
    pub(super) id: u64,
    fetch: Shared<BoxFuture<'static, Outcome>>,
    abort: AbortHandle,
    /// The runtime whose driver task beats for this flight, if any.
    home: Option<Id>,
    beat: AtomicU64,
    deadline: Ticks,
}

/// Why a flight should be given up.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Stall {
    /// It ran past the fetch timeout: a failure of the endpoint.
    TimedOut,
    /// Its home runtime stopped driving it: nobody's failure.
    Orphaned,
}

impl Flight {
    /// A flight fetching from `source` for `cache`. Nothing runs until it is polled.
    pub(super) fn new(
        id: u64,
        source: Arc<dyn TokenSource>,
        cache: Weak<Inner>,
        timeout: Duration,
        home: Option<&Runtime>,
    ) -> Arc<Flight> {
        let fetch = async move {
            let result = AssertUnwindSafe(async { source.token().await })
                .catch_unwind()
                .await
                .unwrap_or_else(|_panic| {
                    tracing::error!(
                        target: "tower_oauth2::cache",
                        "the token source panicked; treating it as a failed fetch"
                    );
                    Err(Error::panicked())
                });
            match cache.upgrade() {
                Some(cache) => cache.settle(id, result),
                None => Outcome::Abandoned,
            }
        };
        let (abort, registration) = AbortHandle::new_pair();
        let fetch = Abortable::new(fetch, registration)
            .map(|outcome| outcome.unwrap_or(Outcome::Abandoned))
            .boxed()
            .shared();
        let now = coarse_now();
        Arc::new(Flight {
            id,
            fetch,
            abort,
            home: home
                .filter(|runtime| runtime.timers)
                .map(|runtime| runtime.id),
            beat: AtomicU64::new(now),
            deadline: now.saturating_add(ticks(timeout)),
        })
    }

    /// Whether this flight should be given up, as seen from runtime `here`.
    pub(super) fn stall(&self, here: Option<Id>) -> Option<Stall> {
        let now = coarse_now();
        if now >= self.deadline {
            return Some(Stall::TimedOut);
        }
        let silent = now.saturating_sub(self.beat.load(Ordering::Relaxed));
        match self.home {
            Some(home) if Some(home) != here && silent > ticks(ORPHANED_AFTER) => {
                Some(Stall::Orphaned)
            }
            _ => None,
        }
    }

    /// Stop it: every waiter sees [`Outcome::Abandoned`] at its next poll.
    pub(super) fn abort(&self) {
        self.abort.abort();
    }

    /// Advance it once, for callers that will not wait for it and have no runtime to spawn a
    /// driver on. A source that needs no runtime often completes right here.
    pub(super) fn poll_once(&self) {
        let mut fetch = self.fetch.clone();
        let _ = fetch.poll_unpin(&mut Context::from_waker(Waker::noop()));
    }
}

/// Wait for `flight`, giving it up if it stalls (when this waiter has timers to notice).
pub(super) async fn wait(flight: &Flight, cache: &Arc<Inner>, here: Option<&Runtime>) -> Outcome {
    let mut fetch = flight.fetch.clone();
    let Some(here) = here.filter(|runtime| runtime.timers) else {
        return fetch.await;
    };
    loop {
        let tick = pin!(tokio::time::sleep(BEAT));
        match future::select(&mut fetch, tick).await {
            Either::Left((outcome, _)) => return outcome,
            Either::Right(_) => {
                if let Some(stall) = flight.stall(Some(here.id)) {
                    cache.give_up(flight, stall);
                }
            }
        }
    }
}

/// Start `flight`'s driver on `runtime`.
pub(super) fn spawn_driver(runtime: &Runtime, flight: Arc<Flight>, cache: Weak<Inner>) {
    let timers = runtime.timers;
    // Spawned tasks are dropped at once on a runtime that is shutting down; the guard in
    // `drive` then gives the flight up, so this cannot leave a flight nobody drives.
    drop(runtime.handle.spawn(drive(flight, cache, timers)));
}

async fn drive(flight: Arc<Flight>, cache: Weak<Inner>, timers: bool) {
    let mut guard = GiveUpOnDrop {
        flight: flight.clone(),
        cache,
        armed: true,
    };
    let mut fetch = flight.fetch.clone();
    if !timers {
        fetch.await;
        guard.armed = false;
        return;
    }
    loop {
        let tick = pin!(tokio::time::sleep(BEAT));
        if let Either::Left(_) = future::select(&mut fetch, tick).await {
            break;
        }
        flight.beat.store(coarse_now(), Ordering::Relaxed);
        let Some(cache) = guard.cache.upgrade() else {
            // Nobody can use the result any more.
            flight.abort();
            break;
        };
        if let Some(stall) = flight.stall(flight.home) {
            cache.give_up(&flight, stall);
            break;
        }
    }
    guard.armed = false;
}

/// Gives the flight up if the driver is dropped before it ends: its runtime is shutting down
/// or its task was aborted.
struct GiveUpOnDrop {
    flight: Arc<Flight>,
    cache: Weak<Inner>,
    armed: bool,
}

impl Drop for GiveUpOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match self.cache.upgrade() {
            Some(cache) => cache.give_up(&self.flight, Stall::Orphaned),
            None => self.flight.abort(),
        }
    }
}

impl std::fmt::Debug for Flight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flight")
            .field("id", &self.id)
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}
