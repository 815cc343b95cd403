//! [`TokenCache`], caching, single flight, refresh ahead and backoff in front of any
//! [`TokenSource`], and the [`CachePolicy`] that times it.
//!
//! How it behaves under load, across runtimes, on panics and failures:
//! [`guide::behaviour`](crate::guide::behaviour); what a request costs:
//! [`guide::performance`](crate::guide::performance).

// Every rule about when a token is fetched lives in this file; nothing about HTTP.
//
// # The rules
//
// - Whether a token may still be sent is decided by clocks, never by a task: the coarse clock
//   bounds every use in real time, and the slow path also reads tokio's clock (so that tests
//   under `tokio::time::pause` expire tokens by advancing time). The cache sets no tokio timer
//   at all, so it never advances a paused clock.
// - One fetch at a time per cache, shared by every waiter (`single_flight`).
// - A refresh ahead is started by the first caller past the refresh point, which keeps using
//   the current token; a token nobody uses is never refreshed.
// - Failed fetches set a backoff deadline; until then, callers with no valid token get the
//   last error at once.
// - A rejected token is dropped only if it is still the current one, at most once per
//   invalidation interval.
//
// # Glossary
//
// | term | meaning | where |
// |---|---|---|
// | entry | a cached token with its header, generation and deadlines | `entry` |
// | generation | a process-unique number per entry: "this token", without holding it | `entry` |
// | fresh / due / expired | before the refresh point / past it but usable / not to be sent | `entry` |
// | coarse clock, ticks | a monotonic clock cheap enough for every request, in 32.32 fixed point | `crate::clock` |
// | virtual clock | tokio's clock paused by a test: such entries always take the slow path | `entry` |
// | slot | a cache's small dense number, so that threads and responses name it without a reference | `registry` |
// | copy | one thread's own clone of an entry's header, valid until its `check_at` | `fast_path` |
// | epoch | a global counter bumped on every change; a thread whose copies are older re-checks them | `fast_path` |
// | control | the slow path's state under one mutex: the flight, failures, backoff, last error | here |
// | plan | when an entry is refreshed and stops being used, from its lifetime | `crate::policy` |
// | flight | one fetch whose outcome every waiter shares | `single_flight` |
// | owner | who started a flight and decides what its token becomes (this cache) | `single_flight` |
// | home | the runtime whose driver task polls a flight's source | `single_flight` |
// | beat | a sign that a flight's home still drives it | `single_flight` |
// | stall: timed out / orphaned | a flight past its fetch timeout / whose home stopped driving it | `single_flight` |
// | abandoned | a flight given up: its waiters ask again | `single_flight` |

mod entry;
mod fast_path;
mod per_request;
mod registry;
mod single_flight;

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::HeaderValue;

use crate::clock::{coarse_now, far_as_possible, ticks, Runtime};
pub use crate::policy::CachePolicy;
use crate::source::{TokenFuture, TokenSource};
use crate::telemetry::Metrics;
use crate::token::now;
use crate::{AccessToken, Error};
pub(crate) use entry::Entry;
use entry::Freshness;
pub(crate) use per_request::{Chosen, Kept};
pub use per_request::{PerRequestCaches, RequestHead};
#[cfg(test)]
use registry::report_rejected;
use registry::slots;
pub(crate) use registry::{cache_in, holds_generation};
use single_flight::{Outcome, Owner, Stall};

/// A flight of this cache: its waiters get the installed entry.
type Flight = single_flight::Flight<Arc<Entry>>;

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
/// use tower_oauth2::{source::from_fn, AccessToken, TokenCache, TokenSource};
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
    /// The first generation this cache can hand out: a generation below it, read with this
    /// cache's slot, is another (dropped) cache's that had the slot before.
    born: u64,
    source: Arc<dyn TokenSource>,
    policy: CachePolicy,
    current: ArcSwapOption<Entry>,
    control: Mutex<Control>,
    metrics: Metrics,
}

/// How often a thread re-asks the cache while a refresh is due: each time, a refresh is
/// started if none is running.
const DUE_RECHECK: Duration = Duration::from_millis(100);

/// How many times a caller starts over after its flight was given up, before it reports that.
const ABANDONED_RETRIES: usize = 3;

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
    /// A new cache in front of `source`, with the default [`CachePolicy`].
    ///
    /// It always wraps: to share the cache a [`ClientCredentials`](crate::ClientCredentials)
    /// already has, convert it instead (`TokenCache::from(credentials)`, or hand it to the
    /// layer, which does).
    pub fn new(source: impl TokenSource) -> Self {
        Self::with_policy(source, CachePolicy::default())
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
            born: entry::next_generation(),
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
        self.invalidate_token(token);
    }

    /// [`invalidate`](Self::invalidate), saying whether the next caller may get another token.
    fn invalidate_token(&self, token: &AccessToken) -> bool {
        let generation = self
            .inner
            .current
            .load()
            .as_ref()
            .and_then(|entry| entry.token.same_as(token).then_some(entry.generation));
        match generation {
            Some(generation) => self.inner.invalidate(generation),
            // Not the cached one (any more): the next caller gets another.
            None => true,
        }
    }

    /// Whether this cache is fetching a token, or backing off after a failed fetch (its next
    /// attempt is in the future): dropping it would lose that flight or that backoff, and a
    /// new cache for the same credentials would fetch at once. A cache whose backoff is over
    /// loses only its failure count, which [`PerRequestCaches`] keeps for the key. Takes the slow path's
    /// lock; for [`PerRequestCaches`]' eviction, never for a request.
    pub(crate) fn is_busy(&self) -> bool {
        let control = self.inner.control();
        control.flight.is_some() || control.retry_at.is_some_and(|at| now() < at)
    }

    /// How many token requests in a row have failed (0 after a success).
    pub(crate) fn failures(&self) -> u32 {
        self.inner.control().failures
    }

    /// Count `failures` failed token requests before this cache's first, so that its backoff
    /// goes on from where an earlier cache for the same credentials left it (a per-request key
    /// made again after eviction). Nothing waits for it: the next caller fetches at once.
    pub(crate) fn resume_failures(&self, failures: u32) {
        let mut control = self.inner.control();
        if control.failures == 0 {
            control.failures = failures;
        }
    }

    /// The server rejected this cache's token of `generation`: drop it if it is still the
    /// cached one (see [`invalidate`](Self::invalidate)).
    pub(crate) fn reject(&self, generation: u64) {
        self.inner.invalidate(generation);
    }

    /// Whether this cache still holds the token of `generation`.
    pub(crate) fn holds(&self, generation: u64) -> bool {
        self.inner.holds(generation)
    }

    /// A request that carried a token of this cache's is sent again after a `401`: with a new
    /// token, or (`nonce`) with the resource server's DPoP nonce.
    pub(crate) fn count_replay(&self, nonce: bool) {
        self.inner.metrics.replayed();
        if nonce {
            self.inner.metrics.resource_nonce_retried();
        }
    }

    /// A request went out with a token of this cache's (the `tokens_attached` counter).
    #[inline]
    pub(crate) fn count_attached(&self) {
        self.inner.metrics.attached();
    }

    /// The fast path: this thread's copy of the header, and its generation, if it may be sent.
    #[inline]
    pub(crate) fn fresh_header(&self) -> Option<(HeaderValue, u64)> {
        fast_path::lookup(self.inner.slot).or_else(|| self.sync_header())
    }

    /// Ask the cache itself, and give this thread a copy of the answer. Starts a refresh if
    /// one is due; `None` when there is no usable token (the caller then takes the slow path).
    #[cold]
    #[inline(never)]
    fn sync_header(&self) -> Option<(HeaderValue, u64)> {
        let epoch = fast_path::epoch();
        let entry = self.inner.current.load_full()?;
        if entry.token.dpop().is_some() {
            // A DPoP token goes with a new proof on every request: never from a copy.
            return None;
        }
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
        let header = fast_path::keep(
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
        if single_flight::fetching_for(self.inner.slot) {
            return Err(Error::config(
                "a token source asked its own cache for a token while fetching one; it would \
                 wait for itself",
            ));
        }
        let Ok(_waits) = single_flight::waits_for(self.inner.slot) else {
            return Err(Error::config(
                "token sources wait for each other's tokens in a cycle (a subject token \
                 source that is, through another client, this one): they would wait for \
                 each other for ever",
            ));
        };
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
            let outcome =
                single_flight::wait(&flight, &*self.inner, here.as_ref().map(|r| r.id)).await;
            match outcome {
                // A waiter polled long after the flight ended (a stalled executor) may find its
                // token expired by now.
                Outcome::Landed(entry) if entry.freshness() != Freshness::Expired => {
                    return Ok(entry)
                }
                Outcome::Failed(error) => return Err(error),
                Outcome::Landed(_) | Outcome::Abandoned if retries < ABANDONED_RETRIES => {
                    retries += 1
                }
                Outcome::Landed(_) => {
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
        Box::pin(async move { self.entry().await.map(|entry| entry.relayed()) })
    }

    fn invalidate(&self, token: &AccessToken) -> bool {
        self.invalidate_token(token)
    }
}

impl From<crate::source::StaticToken> for TokenCache {
    fn from(source: crate::source::StaticToken) -> Self {
        TokenCache::new(source)
    }
}

impl<F, Fut> From<crate::source::FnSource<F>> for TokenCache
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<AccessToken, Error>> + Send + 'static,
{
    fn from(source: crate::source::FnSource<F>) -> Self {
        TokenCache::new(source)
    }
}

impl From<Arc<dyn TokenSource>> for TokenCache {
    fn from(source: Arc<dyn TokenSource>) -> Self {
        TokenCache::new(source)
    }
}

impl From<Box<dyn TokenSource>> for TokenCache {
    fn from(source: Box<dyn TokenSource>) -> Self {
        TokenCache::new(source)
    }
}

impl Inner {
    /// Whether the token of `generation` is the cached one.
    fn holds(&self, generation: u64) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|entry| entry.generation == generation)
    }

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
                    Arc::downgrade(self) as std::sync::Weak<dyn Owner<Arc<Entry>>>,
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
            let owner: std::sync::Weak<dyn Owner<Arc<Entry>>> = Arc::downgrade(self) as _;
            single_flight::spawn_driver(runtime, flight.clone(), owner);
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
    fn settle(&self, id: u64, result: Result<AccessToken, Error>) -> Outcome<Arc<Entry>> {
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
                Outcome::Landed(entry)
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
        let entry = Arc::new(Entry::new(token, &self.policy)?);
        self.current.store(Some(entry.clone()));
        fast_path::bump();
        self.metrics.installed(entry.lifetime);
        Ok(entry)
    }

    /// Drop the token of `generation` because a server rejected it. Whether the next caller
    /// may get another token: false when this cache keeps it (a second rejection within the
    /// invalidation interval) or its source would hand the same one back (a cache behind that
    /// keeps it, a static token), so that nobody replays a request with the token just
    /// rejected.
    fn invalidate(&self, generation: u64) -> bool {
        let Some(entry) = self
            .current
            .load_full()
            .filter(|entry| entry.generation == generation)
        else {
            // Already replaced: the next caller gets the replacement.
            return true;
        };
        if self.invalidated_lately() {
            tracing::debug!(
                target: "tower_oauth2::cache",
                generation,
                "token rejected again within the invalidation interval; keeping it"
            );
            return false;
        }
        // Outside the lock: the source is user code. Ask it first: a source that would hand
        // the same token back keeps this cache from dropping it for nothing.
        let source = AssertUnwindSafe(|| self.source.invalidate(&entry.token));
        let renewable = std::panic::catch_unwind(source).unwrap_or(true);
        if !renewable {
            tracing::debug!(
                target: "tower_oauth2::cache",
                generation,
                "token rejected, but the source would hand it back; keeping it"
            );
            return false;
        }
        let mut control = self.control();
        if self.invalidated_at(&control) {
            return false;
        }
        let previous = self.current.compare_and_swap(&entry, None::<Arc<Entry>>);
        let taken = previous
            .as_ref()
            .is_some_and(|previous| Arc::ptr_eq(previous, &entry));
        if !taken {
            return true;
        }
        fast_path::bump();
        self.metrics.invalidated();
        control.last_invalidation = Some(now());
        drop(control);
        tracing::info!(
            target: "tower_oauth2::cache",
            generation,
            "token rejected by the server; dropped from the cache"
        );
        true
    }

    /// Whether a token was dropped within the invalidation interval.
    fn invalidated_lately(&self) -> bool {
        self.invalidated_at(&self.control())
    }

    fn invalidated_at(&self, control: &Control) -> bool {
        control.last_invalidation.is_some_and(|last| {
            now().saturating_duration_since(last) < self.policy.invalidation_interval
        })
    }
}

impl Owner<Arc<Entry>> for Inner {
    fn land(&self, id: u64, result: Result<AccessToken, Error>) -> Outcome<Arc<Entry>> {
        self.settle(id, result)
    }

    fn give_up(&self, flight: &Flight, stall: Stall) {
        Inner::give_up(self, flight, stall)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Every thread drops its copies of this cache's header before reusing the slot.
        fast_path::bump();
        fast_path::forget(self.slot);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::StaticToken;

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
        assert_eq!(fast_path::held(), 1);
        drop(first);
        assert_eq!(fast_path::held(), 0, "the dropping thread drops its copy");
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
                to_main.send(fast_path::held()).unwrap();
                drop(doomed);
                from_main.recv().unwrap();
                assert!(kept.fresh_header().is_some());
                to_main.send(fast_path::held()).unwrap();
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
        // A source that can hand out another token (a static one cannot: it is kept).
        let cache = TokenCache::new(crate::source::from_fn(|| async {
            Ok(AccessToken::new("rejected").with_lifetime(Duration::from_secs(3600)))
        }));
        warm(&cache);
        let (_, generation) = cache.fresh_header().unwrap();
        report_rejected(cache.slot(), generation);
        assert!(cache.fresh_header().is_none());
    }
}
