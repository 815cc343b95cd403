//! [`TokenCache`]: every rule about when a token is fetched. Nothing about HTTP.
//!
//! - `current` is a lock-free cell holding the token, its prebuilt header and its deadlines.
//!   The per-request fast path reads none of it: each thread keeps its own copy of the header
//!   with the coarse-clock instant until which it may be sent (see [`thread_copies`]), so a
//!   request costs an atomic load, a coarse clock read and a thread-local lookup.
//! - Whether a token may still be sent is decided by clocks, never by a task: the coarse clock
//!   bounds every copy in real time, and the slow path also reads tokio's clock (so that tests
//!   under `tokio::time::pause` expire tokens by advancing time). A token fetched while tokio's
//!   clock was paused skips the per-thread copies: every use asks the slow path. The cache
//!   sets no tokio timer at all, so it never advances a paused clock.
//! - Fetches run as *flights* ([`flight`]): one at a time, shared by every waiter, driven on the
//!   runtime that started them (or by whoever waits, if none did), contained against panics,
//!   and forgotten when their runtime goes away or stops being driven.
//! - A refresh ahead is started by the first caller past the refresh point, which keeps using
//!   the current token; a token nobody uses is never refreshed.
//! - Failed fetches set a backoff deadline; until then, callers with no valid token get the
//!   last error at once.

mod flight;
mod thread_copies;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use zeroize::Zeroizing;

use crate::clock::{coarse_deadline, coarse_now, ticks, Runtime, Ticks};
use crate::policy::CachePolicy;
use crate::source::{TokenFuture, TokenSource};
use crate::telemetry::Metrics;
use crate::token::now;
use crate::{AccessToken, Error};
use flight::{Flight, Outcome, Stall};

/// Caching, single flight, refresh ahead and backoff in front of any [`TokenSource`].
///
/// Clones share one cache. [`ClientCredentials`](crate::ClientCredentials) has one built in;
/// wrap your own sources in one, or let [`BearerAuthLayer::new`](crate::BearerAuthLayer::new)
/// do it. [`CachePolicy`] documents the timing rules.
///
/// It works from any tokio runtime, several runtimes, or none (with a source that needs
/// none): no fetch depends on the runtime that started it staying alive, a panicking source
/// counts as a failed fetch, and a token is never handed out after its expiry.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tower_oauth2::{from_fn, AccessToken, TokenCache, TokenSource};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_oauth2::Error> {
/// let fetches = Arc::new(AtomicUsize::new(0));
/// let counter = fetches.clone();
/// let cache = TokenCache::new(from_fn(move || {
///     counter.fetch_add(1, Ordering::SeqCst);
///     async { Ok(AccessToken::new("t").with_lifetime(Duration::from_secs(3600))) }
/// }));
///
/// for _ in 0..10 {
///     cache.token().await?;
/// }
/// assert_eq!(fetches.load(Ordering::SeqCst), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TokenCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field(
                "token",
                &self.inner.current.load().as_ref().map(|e| &e.token),
            )
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// This cache's number in [`SLOTS`] and in every thread's copies.
    slot: usize,
    source: Arc<dyn TokenSource>,
    policy: CachePolicy,
    current: ArcSwapOption<Entry>,
    control: Mutex<Control>,
    metrics: Metrics,
}

/// Every live cache, by slot. Slots are reused, so each thread's copies stay a short dense
/// vector. A response future reports a rejected token by slot instead of holding a reference
/// to its cache: that reference's counter would be written by every core on every request.
static SLOTS: Mutex<Vec<Option<Weak<Inner>>>> = Mutex::new(Vec::new());

fn slots() -> MutexGuard<'static, Vec<Option<Weak<Inner>>>> {
    SLOTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The server rejected the token of `generation` that the cache in `slot` handed out.
pub(crate) fn report_rejected(slot: usize, generation: u64) {
    let inner = slots()
        .get(slot)
        .and_then(|cache| cache.as_ref()?.upgrade());
    if let Some(inner) = inner {
        inner.invalidate(generation);
    }
}

/// Whether the cache in `slot` still holds the token of `generation`.
pub(crate) fn holds_generation(slot: usize, generation: u64) -> bool {
    // The guard is released before the upgraded reference can drop (and with it, maybe the
    // cache, whose drop takes the same lock).
    let Some(cache) = slots()
        .get(slot)
        .and_then(|cache| cache.as_ref()?.upgrade())
    else {
        return false;
    };
    let holds = cache
        .current
        .load()
        .as_ref()
        .is_some_and(|entry| entry.generation == generation);
    holds
}

/// Generations are unique across every cache in the process.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// How often a thread re-asks the cache while a refresh is due: each time, a refresh is
/// started if none is running.
const DUE_RECHECK: Duration = Duration::from_millis(100);

/// How many times a caller starts over after its flight was given up, before it reports that.
const ABANDONED_RETRIES: usize = 3;

/// A cached token with everything the fast path needs precomputed.
pub(crate) struct Entry {
    pub(crate) token: AccessToken,
    pub(crate) header: HeaderValue,
    pub(crate) generation: u64,
    /// On tokio's clock, which tests may pause.
    refresh_at: Option<Instant>,
    expires_at: Option<Instant>,
    /// The same two deadlines on the coarse clock, which no pause stops.
    fresh_until: Ticks,
    usable_until: Ticks,
    /// Fetched while tokio's clock did not follow real time (`tokio::time::pause`): the fast
    /// path cannot see that clock, so every use of this entry asks the slow path.
    virtual_clock: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    Fresh,
    /// Still usable, but a refresh should start.
    Due,
    Expired,
}

impl Entry {
    fn freshness(&self) -> Freshness {
        self.freshness_at(coarse_now(), now())
    }

    fn freshness_at(&self, coarse: Ticks, now: Instant) -> Freshness {
        let past = |at: Option<Instant>| at.is_some_and(|at| now >= at);
        if coarse >= self.usable_until || past(self.expires_at) {
            Freshness::Expired
        } else if coarse >= self.fresh_until || past(self.refresh_at) {
            Freshness::Due
        } else {
            Freshness::Fresh
        }
    }
}

/// Why a caller asks for a flight.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    /// It has no usable token.
    Token,
    /// Its token is due for a refresh.
    Refresh,
}

/// Slow-path bookkeeping. Never touched on the fast path.
#[derive(Default)]
struct Control {
    flight: Option<Arc<Flight>>,
    flights: u64,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<Error>,
    last_invalidation: Option<Instant>,
}

impl TokenCache {
    /// A cache in front of `source`, with the default [`CachePolicy`].
    ///
    /// A source that already has a cache (a [`ClientCredentials`](crate::ClientCredentials) or
    /// another `TokenCache`) is not wrapped in a second one: this returns that cache, so there
    /// is one place a token lives and a rejected token is dropped from it.
    pub fn new(source: impl TokenSource) -> Self {
        match source.cache() {
            Some(cache) => cache,
            None => Self::with_policy(source, CachePolicy::default()),
        }
    }

    /// A new cache in front of `source`, with the given timing rules. Over a caching source
    /// this stacks a second cache (with its own policy); rejected tokens are dropped from both
    /// (see [`TokenSource::invalidate`]).
    pub fn with_policy(source: impl TokenSource, policy: CachePolicy) -> Self {
        let mut slots = slots();
        let slot = slots
            .iter()
            .position(Option::is_none)
            .unwrap_or(slots.len());
        let inner = Arc::new(Inner {
            slot,
            source: Arc::new(source),
            policy: policy.clone(),
            current: ArcSwapOption::empty(),
            control: Mutex::new(Control::default()),
            metrics: Metrics::new(&policy.name, &policy.labels),
        });
        if slot == slots.len() {
            slots.push(None);
        }
        slots[slot] = Some(Arc::downgrade(&inner));
        TokenCache { inner }
    }

    /// This cache's number for [`report_rejected`].
    pub(crate) fn slot(&self) -> usize {
        self.inner.slot
    }

    /// Drop `token` from the cache if it is still the cached one, because a server rejected it.
    /// The next caller fetches a new token. Rate-limited by
    /// [`CachePolicy::invalidation_interval`]; forwarded to the source (see
    /// [`TokenSource::invalidate`]).
    pub fn invalidate(&self, token: &AccessToken) {
        let generation = self
            .inner
            .current
            .load()
            .as_ref()
            .and_then(|entry| entry.token.same_as(token).then_some(entry.generation));
        if let Some(generation) = generation {
            self.inner.invalidate(generation);
        }
    }

    /// The fast path: this thread's copy of the header, and its generation, if it may be sent.
    #[inline]
    pub(crate) fn fresh_header(&self) -> Option<(HeaderValue, u64)> {
        thread_copies::lookup(self.inner.slot).or_else(|| self.sync_header())
    }

    /// Ask the cache itself, and give this thread a copy of the answer. Starts a refresh if
    /// one is due; `None` when there is no usable token (the caller then takes the slow path).
    #[cold]
    #[inline(never)]
    fn sync_header(&self) -> Option<(HeaderValue, u64)> {
        let epoch = thread_copies::epoch();
        let entry = self.inner.current.load_full()?;
        let coarse = coarse_now();
        let check_at = match entry.freshness_at(coarse, now()) {
            Freshness::Fresh => entry.fresh_until,
            Freshness::Due => {
                self.inner.start_refresh(Runtime::current().as_ref());
                entry
                    .usable_until
                    .min(coarse.saturating_add(ticks(DUE_RECHECK)))
            }
            Freshness::Expired => return None,
        };
        // Deadlines on a paused clock pass when the test advances it, which no coarse
        // deadline can foresee.
        let check_at = if entry.virtual_clock {
            coarse
        } else {
            check_at
        };
        let header = thread_copies::keep(
            self.inner.slot,
            epoch,
            entry.generation,
            &entry.header,
            check_at,
            holds_generation,
        );
        Some((header, entry.generation))
    }

    /// The slow path: a usable entry, waiting for a flight if there is none.
    pub(crate) async fn entry(&self) -> Result<Arc<Entry>, Error> {
        if flight::fetching_for(self.inner.slot) {
            return Err(Error::config(
                "a token source asked its own cache for a token while fetching one; it would \
                 wait for itself",
            ));
        }
        let here = Runtime::current();
        let mut retries = 0;
        loop {
            if let Some(entry) = self.inner.current.load_full() {
                match entry.freshness() {
                    Freshness::Fresh => return Ok(entry),
                    Freshness::Due => {
                        self.inner.start_refresh(here.as_ref());
                        return Ok(entry);
                    }
                    Freshness::Expired => {}
                }
            }
            let Some(flight) = self.inner.flight(here.as_ref(), Purpose::Token)? else {
                continue;
            };
            let outcome = flight::wait(&flight, &self.inner, here.as_ref().map(|r| r.id)).await;
            match outcome {
                // A waiter polled long after the flight ended (a stalled executor) may find its
                // token expired by now.
                Outcome::Token(entry) if entry.freshness() != Freshness::Expired => {
                    return Ok(entry)
                }
                Outcome::Failed(error) => return Err(error),
                Outcome::Token(_) | Outcome::Abandoned if retries < ABANDONED_RETRIES => {
                    retries += 1
                }
                Outcome::Token(_) => {
                    return Err(Error::runtime(
                        "every token fetched had expired before this caller was polled again: \
                         its executor is stalled",
                    ))
                }
                Outcome::Abandoned => {
                    return Err(Error::runtime(
                        "the token fetch was given up on repeatedly: the runtimes running it \
                         shut down or stopped being driven",
                    ))
                }
            }
        }
    }
}

impl TokenSource for TokenCache {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(async move { self.entry().await.map(|entry| entry.token.clone()) })
    }

    fn cache(&self) -> Option<TokenCache> {
        Some(self.clone())
    }

    fn invalidate(&self, token: &AccessToken) {
        TokenCache::invalidate(self, token);
    }
}

impl Inner {
    fn control(&self) -> MutexGuard<'_, Control> {
        // Nothing panics while holding this lock; if something did, the state is still one
        // the code handles, which beats refusing service forever.
        self.control
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The running flight, or a new one (with its driver spawned on `here`); the last error
    /// while a backoff step is in progress; or nothing, when the token the caller looked at
    /// before taking the lock has been replaced by one that serves `purpose`.
    fn flight(
        self: &Arc<Self>,
        here: Option<&Runtime>,
        purpose: Purpose,
    ) -> Result<Option<Arc<Flight>>, Error> {
        let mut control = self.control();
        let mut stalled = None;
        if let Some(flight) = &control.flight {
            match flight.stall(here.map(|runtime| runtime.id)) {
                None => {
                    flight.joined();
                    return Ok(Some(flight.clone()));
                }
                Some(stall) => {
                    if stall == Stall::TimedOut {
                        self.metrics.fetched("timeout", flight.running_for());
                    }
                    stalled = control.flight.take();
                    if stall == Stall::TimedOut {
                        self.record_failure(
                            &mut control,
                            Error::timeout(self.policy.fetch_timeout),
                        );
                    }
                }
            }
        }
        // Tokens are installed under this lock: what is current now is what a new flight would
        // replace, and it may have been installed since the caller looked.
        let freshness = self.current.load().as_ref().map(|entry| entry.freshness());
        let served = match purpose {
            Purpose::Token => matches!(freshness, Some(Freshness::Fresh | Freshness::Due)),
            Purpose::Refresh => matches!(freshness, Some(Freshness::Fresh)),
        };
        if served {
            drop(control);
            if let Some(stalled) = stalled {
                stalled.abort();
            }
            return Ok(None);
        }
        let now = now();
        let backing_off = control
            .retry_at
            .filter(|until| now < *until)
            .and_then(|until| {
                let error = control.last_error.as_ref()?;
                Some(error.retrying_in(until.saturating_duration_since(now)))
            });
        let launched = match backing_off {
            Some(error) => Err(error),
            None => {
                control.flights += 1;
                let flight = Flight::new(
                    control.flights,
                    self.slot,
                    self.source.clone(),
                    Arc::downgrade(self),
                    self.policy.fetch_timeout,
                    here,
                );
                control.flight = Some(flight.clone());
                Ok(Some(flight))
            }
        };
        // Outside the lock: aborting wakes tasks, and a runtime that is shutting down drops a
        // spawned driver at once, which locks `control` to give its flight up.
        drop(control);
        if let Some(stalled) = stalled {
            stalled.abort();
        }
        if let (Ok(Some(flight)), Some(runtime)) = (&launched, here) {
            flight::spawn_driver(runtime, flight.clone(), Arc::downgrade(self));
        }
        launched
    }

    /// Start a refresh nobody waits for, unless one is running or backing off.
    fn start_refresh(self: &Arc<Self>, here: Option<&Runtime>) {
        if let Ok(Some(flight)) = self.flight(here, Purpose::Refresh) {
            if flight.drivable_from(here.map(|runtime| runtime.id)) {
                flight.poll_once();
            }
        }
    }

    /// Give `flight` up if it is still this cache's flight.
    fn give_up(&self, flight: &Flight, stall: Stall) {
        let mut control = self.control();
        let current = control.flight.as_ref().is_some_and(|f| f.id == flight.id);
        if current {
            let given_up = control.flight.take();
            match stall {
                Stall::TimedOut => {
                    self.metrics.fetched("timeout", flight.running_for());
                    self.record_failure(&mut control, Error::timeout(self.policy.fetch_timeout))
                }
                Stall::Orphaned => tracing::info!(
                    target: "tower_oauth2::cache",
                    "the runtime driving a token fetch went away; the next caller starts another"
                ),
            }
            drop(control);
            drop(given_up);
        } else {
            drop(control);
        }
        flight.abort();
    }

    /// The end of flight `id`: install its token or record its failure, unless it was given up.
    fn settle(self: &Arc<Self>, id: u64, result: Result<AccessToken, Error>) -> Outcome {
        let mut control = self.control();
        if control.flight.as_ref().map(|flight| flight.id) != Some(id) {
            return Outcome::Abandoned;
        }
        let finished = control.flight.take();
        if let Some(flight) = &finished {
            let outcome = if result.is_ok() { "ok" } else { "error" };
            self.metrics.fetched(outcome, flight.running_for());
            self.metrics.flight_waiters(flight.callers());
        }
        let outcome = match result.and_then(|token| self.install(token)) {
            Ok(entry) => {
                self.metrics.failures(0);
                control.failures = 0;
                control.retry_at = None;
                control.last_error = None;
                tracing::debug!(
                    target: "tower_oauth2::cache",
                    outcome = "ok",
                    generation = entry.generation,
                    expires_in = ?entry.token.expires_at().map(|at| at.saturating_duration_since(now())),
                    "fetched a token"
                );
                Outcome::Token(entry)
            }
            Err(error) => {
                self.record_failure(&mut control, error.clone());
                Outcome::Failed(error)
            }
        };
        drop(control);
        drop(finished);
        outcome
    }

    fn record_failure(&self, control: &mut Control, error: Error) {
        if !error.counts_as_endpoint_failure() {
            tracing::warn!(target: "tower_oauth2::cache", %error, "token fetch could not run here");
            return;
        }
        control.failures = control.failures.saturating_add(1);
        self.metrics.failures(control.failures);
        let delay = self
            .policy
            .backoff_delay(control.failures, error.retry_after());
        control.retry_at = Some(far_as_possible(now(), delay));
        tracing::warn!(
            target: "tower_oauth2::cache",
            outcome = "error",
            failures = control.failures,
            backoff = ?delay,
            transient = error.is_transient(),
            %error,
            "token fetch failed; backing off"
        );
        control.last_error = Some(error);
    }

    /// Make `token` the cached one.
    fn install(&self, token: AccessToken) -> Result<Arc<Entry>, Error> {
        let header = bearer_header(&token)?;
        let fetched_at = now();
        let virtual_clock = runs_on_a_virtual_clock(fetched_at);
        let coarse = coarse_now();
        let plan = self.policy.plan(fetched_at, token.expires_at());
        let entry = Arc::new(Entry {
            token,
            header,
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            refresh_at: plan.refresh_in.and_then(|d| fetched_at.checked_add(d)),
            expires_at: plan.expires_in.and_then(|d| fetched_at.checked_add(d)),
            fresh_until: coarse_deadline(coarse, plan.refresh_in),
            usable_until: coarse_deadline(coarse, plan.expires_in),
            virtual_clock,
        });
        self.current.store(Some(entry.clone()));
        thread_copies::bump();
        self.metrics.installed(plan.expires_in);
        Ok(entry)
    }

    fn invalidate(&self, generation: u64) {
        let Some(entry) = self
            .current
            .load_full()
            .filter(|entry| entry.generation == generation)
        else {
            return;
        };
        let mut control = self.control();
        let now = now();
        if let Some(last) = control.last_invalidation {
            if now.saturating_duration_since(last) < self.policy.invalidation_interval {
                tracing::debug!(
                    target: "tower_oauth2::cache",
                    generation,
                    "token rejected again within the invalidation interval; keeping it"
                );
                return;
            }
        }
        let previous = self.current.compare_and_swap(&entry, None::<Arc<Entry>>);
        let taken = previous
            .as_ref()
            .is_some_and(|previous| Arc::ptr_eq(previous, &entry));
        if !taken {
            return;
        }
        thread_copies::bump();
        self.metrics.invalidated();
        control.last_invalidation = Some(now);
        drop(control);
        tracing::info!(
            target: "tower_oauth2::cache",
            generation,
            "token rejected by the server; dropped from the cache"
        );
        // A source with a cache of its own would hand the same token back.
        self.source.invalidate(&entry.token);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Every thread drops its copies of this cache's header before reusing the slot.
        thread_copies::bump();
        thread_copies::forget(self.slot);
        if let Some(slot) = slots().get_mut(self.slot) {
            *slot = None;
        }
        let control = self
            .control
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(flight) = control.flight.take() {
            flight.abort();
        }
    }
}

/// Whether tokio's clock, read as `tokio_now`, is not following real time: it was paused (and
/// maybe advanced) by a test. Read back to back, the two clocks of a real runtime differ by
/// nanoseconds; a paused clock lags by at least the time the fetch took, or leads once advanced.
fn runs_on_a_virtual_clock(tokio_now: Instant) -> bool {
    const APART: Duration = Duration::from_micros(5);
    let real = Instant::now();
    tokio_now > real || real.duration_since(tokio_now) > APART
}

/// `from + delay`, or the farthest instant that can be represented: a backoff too long to
/// represent is still a backoff.
fn far_as_possible(from: Instant, delay: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    from.checked_add(delay)
        .or_else(|| from.checked_add(CENTURY))
        .unwrap_or(from)
}

/// `Bearer <token>`, marked sensitive so that logging layers redact it, in memory that is
/// zeroized when the last copy drops.
fn bearer_header(token: &AccessToken) -> Result<HeaderValue, Error> {
    let mut value = Zeroizing::new(Vec::with_capacity(7 + token.secret().len()));
    value.extend_from_slice(b"Bearer ");
    value.extend_from_slice(token.secret().as_bytes());
    crate::wiped::sensitive_header(value).ok_or_else(|| {
        Error::invalid_response("the access token contains characters not allowed in a header")
    })
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("token", &self.token)
            .field("generation", &self.generation)
            .field("refresh_at", &self.refresh_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StaticToken;

    fn cache(secret: &str) -> TokenCache {
        let token = AccessToken::new(secret).with_lifetime(Duration::from_secs(3600));
        TokenCache::new(StaticToken::from(token))
    }

    fn warm(cache: &TokenCache) {
        futures_util::FutureExt::now_or_never(cache.entry())
            .expect("a static token needs no waiting")
            .unwrap();
        assert!(cache.fresh_header().is_some());
    }

    #[test]
    fn a_threads_copy_is_dropped_with_its_cache() {
        let first = cache("first");
        warm(&first);
        assert_eq!(thread_copies::held(), 1);
        drop(first);
        assert_eq!(
            thread_copies::held(),
            0,
            "the dropping thread drops its copy"
        );
    }

    #[test]
    fn other_threads_drop_their_copies_at_their_next_request() {
        let doomed = cache("doomed");
        let kept = cache("kept");
        let (to_thread, from_main) = std::sync::mpsc::channel::<()>();
        let (to_main, from_thread) = std::sync::mpsc::channel::<usize>();
        let worker = {
            let (doomed, kept) = (doomed.clone(), kept.clone());
            std::thread::spawn(move || {
                warm(&doomed);
                warm(&kept);
                to_main.send(thread_copies::held()).unwrap();
                drop(doomed);
                from_main.recv().unwrap();
                assert!(kept.fresh_header().is_some());
                to_main.send(thread_copies::held()).unwrap();
            })
        };
        assert_eq!(from_thread.recv().unwrap(), 2);
        drop(doomed);
        to_thread.send(()).unwrap();
        assert_eq!(
            from_thread.recv().unwrap(),
            1,
            "only the live cache's copy is left"
        );
        worker.join().unwrap();
    }

    #[test]
    fn a_rejected_token_leaves_the_fast_path_at_once() {
        let cache = cache("rejected");
        warm(&cache);
        let (_, generation) = cache.fresh_header().unwrap();
        report_rejected(cache.slot(), generation);
        assert!(cache.fresh_header().is_none());
    }
}
