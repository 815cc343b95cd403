//! A *flight*: one fetch whose outcome every waiter shares, and that no runtime, task or panic
//! can wedge. It knows nothing about caching: its [`Owner`] (the cache) decides what a token
//! becomes when it lands, and forgets a flight it is asked to give up.
//!
//! - Started on a tokio runtime, a flight has a *home*: a driver task there is the only thing
//!   that polls the source, so whatever the source creates (connections, timers) belongs to one
//!   runtime. Waiters anywhere just wait for the outcome.
//! - Started with no runtime, waiters drive it themselves (the source then needs no runtime).
//! - Every clock here is real time, from a helper thread ([`futures_timer`]), never a tokio
//!   timer: a waiter with no runtime or a runtime without timers can still give a flight up,
//!   and nothing here advances a paused test clock.
//! - The driver beats while its runtime runs it, and every poll of the source counts as a beat
//!   (a source blocking its thread inside a poll is busy, not idle). A waiter elsewhere gives
//!   the flight up when the beat stops for [`ORPHANED_AFTER`] (the home runtime is idle), and
//!   the driver's drop gives it up at once (the home runtime shut down). The fetch timeout is
//!   enforced the same way; for a flight without a home it runs only while someone waits. A
//!   flight given up is forgotten; the next caller starts another.
//! - A panic in the source, whether in `token()`, a poll, or its future's drop, becomes an
//!   error inside the flight. A source that asks its own cache for a token while it fetches
//!   gets an error instead of waiting for itself.

use std::cell::Cell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_timer::Delay;
use futures_util::future::{self, AbortHandle, Abortable, BoxFuture, Either, FutureExt, Shared};
use tokio::runtime::Id;
use tokio::sync::Notify;

use crate::clock::{coarse_now, ticks, Runtime, Ticks, NEVER};
use crate::source::{TokenFuture, TokenSource};
use crate::{AccessToken, Error};

/// How a flight ended, as every waiter sees it.
#[derive(Clone)]
pub(super) enum Outcome<T> {
    /// What its owner made of the token.
    Landed(T),
    Failed(Error),
    /// Given up on (its runtime went away, it timed out, or its owner was dropped): ask again.
    Abandoned,
}

/// Whoever started a flight: told how it ended, and asked to give it up when it stalls. A
/// flight holds its owner weakly; an owner that is gone abandons its flight.
pub(super) trait Owner<T>: Send + Sync + 'static {
    /// Flight `id` ended with `result`: what its waiters get.
    fn land(&self, id: u64, result: Result<AccessToken, Error>) -> Outcome<T>;

    /// `flight` stalled: forget it (if it is still the owner's) and abort it.
    fn give_up(&self, flight: &Flight<T>, stall: Stall);
}

/// How often the driver beats and waiters look for a stalled flight.
const BEAT: Duration = Duration::from_millis(250);

/// A flight whose home runtime has not beaten for this long is given up by waiters elsewhere.
const ORPHANED_AFTER: Duration = Duration::from_secs(2);

pub(super) struct Flight<T> {
    pub(super) id: u64,
    fetch: Shared<BoxFuture<'static, Outcome<T>>>,
    abort: AbortHandle,
    /// The runtime whose driver task polls the source, if any.
    home: Option<Id>,
    activity: Arc<Activity>,
    deadline: Mutex<Deadline>,
    timeout: Ticks,
    outcome: Mutex<Option<Outcome<T>>>,
    ended: Notify,
    /// When it started, and how many callers asked for it, for metrics.
    started: std::time::Instant,
    callers: AtomicUsize,
}

/// Signs that a flight's home is still working on it.
struct Activity {
    /// Last time the driver ran or a poll of the source returned.
    beat: AtomicU64,
    /// How many threads are inside a poll of the source right now. A source that blocks its
    /// thread (synchronous IO, a slow key operation) keeps its home from beating, but is not
    /// an idle runtime.
    polling: AtomicUsize,
}

/// When a flight times out.
struct Deadline {
    at: Ticks,
    /// Callers waiting for a flight without a home. Such a flight only advances while someone
    /// waits and drives it, so its clock runs only then: a caller that gave up waiting (its task
    /// was cancelled) must not leave a timeout behind for the endpoint to be blamed for.
    waiters: usize,
}

/// Why a flight should be given up.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Stall {
    /// It ran past the fetch timeout: a failure of the endpoint.
    TimedOut,
    /// Its home runtime stopped driving it: nobody's failure.
    Orphaned,
}

impl<T: Clone + Send + Sync + 'static> Flight<T> {
    /// A flight fetching from `source` for `owner` (known to [`fetching_for`] as `slot`).
    /// Nothing runs until it is polled; with a `home`, [`spawn_driver`] must follow.
    pub(super) fn new(
        id: u64,
        slot: usize,
        source: Arc<dyn TokenSource>,
        owner: Weak<dyn Owner<T>>,
        timeout: Duration,
        home: Option<&Runtime>,
    ) -> Arc<Flight<T>> {
        let fetch = async move {
            let started = as_fetching(slot, || catch_unwind(AssertUnwindSafe(|| source.token())));
            let result = match started {
                Ok(future) => Contained::new(slot, future).await,
                Err(_panic) => {
                    report_panic("");
                    Err(Error::panicked())
                }
            };
            match owner.upgrade() {
                Some(owner) => owner.land(id, result),
                None => Outcome::Abandoned,
            }
        };
        let now = coarse_now();
        let activity = Arc::new(Activity {
            beat: AtomicU64::new(now),
            polling: AtomicUsize::new(0),
        });
        let (abort, registration) = AbortHandle::new_pair();
        let fetch = Watched {
            activity: activity.clone(),
            future: Abortable::new(fetch, registration).boxed(),
        }
        .map(|outcome| outcome.unwrap_or(Outcome::Abandoned))
        .boxed()
        .shared();
        let timeout = ticks(timeout);
        Arc::new(Flight {
            id,
            fetch,
            abort,
            home: home.map(|runtime| runtime.id),
            activity,
            deadline: Mutex::new(Deadline {
                at: match home {
                    Some(_) => now.saturating_add(timeout),
                    None => NEVER,
                },
                waiters: 0,
            }),
            timeout,
            outcome: Mutex::new(None),
            ended: Notify::new(),
            started: std::time::Instant::now(),
            callers: AtomicUsize::new(1),
        })
    }

    /// Another caller asks for this flight.
    pub(super) fn joined(&self) {
        self.callers.fetch_add(1, Ordering::Relaxed);
    }

    /// How many callers asked for it.
    pub(super) fn callers(&self) -> usize {
        self.callers.load(Ordering::Relaxed)
    }

    /// How long it has run.
    pub(super) fn running_for(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether this flight should be given up, as seen from runtime `here`.
    pub(super) fn stall(&self, here: Option<Id>) -> Option<Stall> {
        let now = coarse_now();
        if now >= lock(&self.deadline).at {
            return Some(Stall::TimedOut);
        }
        let silent = now.saturating_sub(self.activity.beat.load(Ordering::Relaxed));
        let polled = self.activity.polling.load(Ordering::Relaxed) > 0;
        match self.home {
            Some(home) if Some(home) != here && silent > ticks(ORPHANED_AFTER) && !polled => {
                Some(Stall::Orphaned)
            }
            _ => None,
        }
    }

    /// Count a caller waiting for a flight without a home, starting its clock if it is the
    /// first; the clock stops when the last one leaves.
    fn waiting(&self) -> Option<Waiting<'_, T>> {
        if self.home.is_some() {
            return None;
        }
        let mut deadline = lock(&self.deadline);
        if deadline.waiters == 0 {
            deadline.at = coarse_now().saturating_add(self.timeout);
        }
        deadline.waiters += 1;
        Some(Waiting(self))
    }

    /// Whether a caller on runtime `here` may poll the source itself: it has no home, or this
    /// is its home. Elsewhere, polling would tie what the source creates to another runtime.
    pub(super) fn drivable_from(&self, here: Option<Id>) -> bool {
        self.home.is_none() || self.home == here
    }

    /// Stop it: every waiter sees [`Outcome::Abandoned`] at once.
    pub(super) fn abort(&self) {
        self.abort.abort();
        self.end(Outcome::Abandoned);
    }

    /// Advance it once, for callers that will not wait for it. A source that needs no runtime
    /// often completes right here, without waiting for a driver task to be scheduled.
    pub(super) fn poll_once(&self) {
        let mut fetch = self.fetch.clone();
        if let Poll::Ready(outcome) = fetch.poll_unpin(&mut Context::from_waker(Waker::noop())) {
            self.end(outcome);
        }
    }

    /// Record how it ended (the first report wins) and wake every waiter.
    fn end(&self, outcome: Outcome<T>) {
        let mut slot = lock(&self.outcome);
        if slot.is_none() {
            *slot = Some(outcome);
        }
        drop(slot);
        self.ended.notify_waiters();
    }

    fn ended(&self) -> Option<Outcome<T>> {
        lock(&self.outcome).clone()
    }
}

/// One caller counted by [`Flight::waiting`].
struct Waiting<'a, T>(&'a Flight<T>);

impl<T> Drop for Waiting<'_, T> {
    fn drop(&mut self) {
        let mut deadline = lock(&self.0.deadline);
        deadline.waiters -= 1;
        if deadline.waiters == 0 {
            deadline.at = NEVER;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while these locks are held; the data is plain values either way.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The fetch, recording in its [`Activity`] when it is being polled.
struct Watched<F> {
    activity: Arc<Activity>,
    future: F,
}

impl<F: Future + Unpin> Future for Watched<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let _polling = Polling::enter(&this.activity);
        this.future.poll_unpin(cx)
    }
}

/// Marks the source as being polled; leaving (even by unwinding) counts as a beat.
struct Polling<'a>(&'a Activity);

impl<'a> Polling<'a> {
    fn enter(activity: &'a Activity) -> Self {
        activity.polling.fetch_add(1, Ordering::Relaxed);
        Polling(activity)
    }
}

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        self.0.beat.store(coarse_now(), Ordering::Relaxed);
        self.0.polling.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Wait for `flight` from runtime `here`, driving it where [`Flight::drivable_from`] allows,
/// and giving it up if it stalls.
pub(super) async fn wait<T: Clone + Send + Sync + 'static>(
    flight: &Flight<T>,
    owner: &dyn Owner<T>,
    here: Option<Id>,
) -> Outcome<T> {
    let drives = flight.drivable_from(here);
    // A refresh started without a runtime was only polled once, and nobody drove it since.
    let _waiting = flight.waiting();
    let mut fetch = flight.fetch.clone();
    loop {
        let mut ended = pin!(flight.ended.notified());
        ended.as_mut().enable();
        if let Some(outcome) = flight.ended() {
            return outcome;
        }
        let tick = Delay::new(BEAT);
        let woken = if drives {
            match future::select(&mut fetch, future::select(ended, tick)).await {
                Either::Left((outcome, _)) => {
                    flight.end(outcome.clone());
                    return outcome;
                }
                Either::Right((woken, _)) => woken,
            }
        } else {
            future::select(ended, tick).await
        };
        if let Either::Right(_) = woken {
            if let Some(stall) = flight.stall(here) {
                owner.give_up(flight, stall);
            }
        }
    }
}

/// Start `flight`'s driver on `runtime`, its home.
pub(super) fn spawn_driver<T: Clone + Send + Sync + 'static>(
    runtime: &Runtime,
    flight: Arc<Flight<T>>,
    owner: Weak<dyn Owner<T>>,
) {
    // Spawned tasks are dropped at once on a runtime that is shutting down; the guard in
    // `drive` then gives the flight up, so this cannot leave a flight nobody drives.
    drop(runtime.handle.spawn(drive(flight, owner)));
}

async fn drive<T: Clone + Send + Sync + 'static>(
    flight: Arc<Flight<T>>,
    owner: Weak<dyn Owner<T>>,
) {
    let mut guard = GiveUpOnDrop {
        flight: flight.clone(),
        owner,
        armed: true,
    };
    let mut fetch = flight.fetch.clone();
    loop {
        if let Either::Left((outcome, _)) = future::select(&mut fetch, Delay::new(BEAT)).await {
            flight.end(outcome);
            break;
        }
        flight.activity.beat.store(coarse_now(), Ordering::Relaxed);
        let Some(owner) = guard.owner.upgrade() else {
            // Nobody can use the result any more.
            flight.abort();
            break;
        };
        if let Some(stall) = flight.stall(flight.home) {
            owner.give_up(&flight, stall);
            break;
        }
    }
    guard.armed = false;
}

/// Gives the flight up if the driver is dropped before it ends: its runtime is shutting down
/// or its task was aborted.
struct GiveUpOnDrop<T: Clone + Send + Sync + 'static> {
    flight: Arc<Flight<T>>,
    owner: Weak<dyn Owner<T>>,
    armed: bool,
}

impl<T: Clone + Send + Sync + 'static> Drop for GiveUpOnDrop<T> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match self.owner.upgrade() {
            Some(owner) => owner.give_up(&self.flight, Stall::Orphaned),
            None => self.flight.abort(),
        }
    }
}

thread_local! {
    /// The slot of the cache whose source this thread is polling, if any.
    static FETCHING: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Whether this thread is inside the source of the cache in `slot`: that source asked its own
/// cache for a token, and would wait for itself.
pub(super) fn fetching_for(slot: usize) -> bool {
    FETCHING.with(Cell::get) == Some(slot)
}

/// Which caches' sources wait for which caches' flights, as `(waiting, awaited)` slot pairs:
/// a source that waits for another cache whose source waits for it (two chained exchanges
/// wired to each other) would never end. Worse, each flight's `Shared` wakes the other's while
/// holding its own waker lock, so the first wake-up deadlocks the thread. Rare (only sources
/// that are caches' clients add edges) and short-lived, so one global list is enough.
static WAITS: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

/// A wait of the source being polled on this thread for the cache in `awaited`, recorded in
/// [`WAITS`] until dropped.
pub(super) struct WaitsFor(Option<(usize, usize)>);

/// Record that the source this thread is polling (if any) waits for the cache in `awaited`;
/// `Err` if `awaited` already waits, through any chain of caches, for that source's cache.
pub(super) fn waits_for(awaited: usize) -> Result<WaitsFor, ()> {
    let Some(waiting) = FETCHING.with(Cell::get) else {
        return Ok(WaitsFor(None));
    };
    let mut waits = lock(&WAITS);
    let mut reached = vec![awaited];
    let mut next = 0;
    while let Some(&slot) = reached.get(next) {
        if slot == waiting {
            return Err(());
        }
        for &(from, to) in waits.iter() {
            if from == slot && !reached.contains(&to) {
                reached.push(to);
            }
        }
        next += 1;
    }
    waits.push((waiting, awaited));
    Ok(WaitsFor(Some((waiting, awaited))))
}

impl Drop for WaitsFor {
    fn drop(&mut self) {
        if let Some(edge) = self.0 {
            let mut waits = lock(&WAITS);
            if let Some(at) = waits.iter().position(|e| *e == edge) {
                waits.swap_remove(at);
            }
        }
    }
}

/// Run `inside` (which calls into the source of the cache in `slot`) marked as such, for
/// [`fetching_for`]. `inside` must not unwind: callers catch panics within it.
fn as_fetching<T>(slot: usize, inside: impl FnOnce() -> T) -> T {
    let outer = FETCHING.with(|fetching| fetching.replace(Some(slot)));
    let result = inside();
    FETCHING.with(|fetching| fetching.set(outer));
    result
}

/// A source's future with every panic it can raise (in a poll or in its drop) turned into an
/// error, so that none reaches `Shared` (which would re-raise it in every waiter).
struct Contained<'a> {
    slot: usize,
    future: Option<TokenFuture<'a>>,
}

impl<'a> Contained<'a> {
    fn new(slot: usize, future: TokenFuture<'a>) -> Self {
        Contained {
            slot,
            future: Some(future),
        }
    }

    fn discard(&mut self) {
        if let Some(future) = self.future.take() {
            if catch_unwind(AssertUnwindSafe(|| drop(future))).is_err() {
                report_panic("while its future was dropped");
            }
        }
    }
}

impl Future for Contained<'_> {
    type Output = Result<AccessToken, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let slot = self.slot;
        let Some(future) = self.future.as_mut() else {
            return Poll::Ready(Err(Error::panicked()));
        };
        let polled = as_fetching(slot, || {
            catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx)))
        });
        let result = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(result)) => result,
            Err(_panic) => {
                report_panic("");
                Err(Error::panicked())
            }
        };
        self.discard();
        Poll::Ready(result)
    }
}

impl Drop for Contained<'_> {
    fn drop(&mut self) {
        self.discard();
    }
}

fn report_panic(when: &str) {
    tracing::error!(
        target: "tower_oauth2::cache",
        "the token source panicked{}{when}; treating it as a failed fetch",
        if when.is_empty() { "" } else { " " },
    );
}

impl<T> std::fmt::Debug for Flight<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flight")
            .field("id", &self.id)
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}
