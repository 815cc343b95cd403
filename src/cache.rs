//! [`TokenCache`]: every rule about when a token is fetched. Nothing about HTTP.
//!
//! - `current` is a lock-free cell holding the token and its prebuilt header. `published`
//!   mirrors its generation while it needs no clock check, and each thread keeps its own copy
//!   of the header for that generation: the per-request fast path is one atomic load, a
//!   thread-local lookup, and a reference count no other thread touches.
//! - A fetch runs as a *flight*: a spawned task whose result every waiter shares (success and
//!   failure). A caller that gives up does not cancel it, and at most one runs at a time.
//! - Each cached token has a *watcher* task that starts the refresh-ahead flight and drops the
//!   token at expiry, so the fast path never reads the clock. Without a tokio runtime there is
//!   no watcher and callers read the clock instead.
//! - Failed flights set a backoff deadline; until then, callers with no valid token get the
//!   last error at once.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use futures_util::future::{self, BoxFuture, Either, FutureExt, Shared};
use http::HeaderValue;
use tokio::runtime::Handle;
use tokio::task::AbortHandle;

use crate::policy::CachePolicy;
use crate::source::{TokenFuture, TokenSource};
use crate::token::now;
use crate::{AccessToken, Error};

/// Caching, single flight, refresh ahead and backoff in front of any [`TokenSource`].
///
/// Clones share one cache. [`ClientCredentials`](crate::ClientCredentials) has one built in;
/// wrap your own sources in one, or let [`BearerAuthLayer::new`](crate::BearerAuthLayer::new)
/// do it. [`CachePolicy`] documents the timing rules.
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
    /// This cache's key in [`REGISTRY`].
    id: u64,
    source: Box<dyn TokenSource>,
    policy: CachePolicy,
    current: ArcSwapOption<Entry>,
    /// The generation of `current` while it is watched (so fresh without a clock check), else
    /// [`UNPUBLISHED`].
    published: AtomicU64,
    control: Mutex<Control>,
}

/// No entry is published for the fast path; generations start at 1.
const UNPUBLISHED: u64 = 0;

/// Every live cache, by id. A response future reports a rejected token through this instead of
/// holding a reference to its cache: that reference's counter would be written by every core on
/// every request, while rejections are rare.
static REGISTRY: Mutex<BTreeMap<u64, Weak<Inner>>> = Mutex::new(BTreeMap::new());
static CACHE_IDS: AtomicU64 = AtomicU64::new(1);

fn registry() -> MutexGuard<'static, BTreeMap<u64, Weak<Inner>>> {
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The server rejected the token of `generation` that cache `cache` handed out.
pub(crate) fn report_rejected(cache: u64, generation: u64) {
    let inner = registry().get(&cache).and_then(Weak::upgrade);
    if let Some(inner) = inner {
        inner.invalidate(generation);
    }
}

/// Generations are unique across every cache in the process, so a thread's copy of a header
/// can be found by generation alone.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// How many caches' headers a thread keeps copies of; the oldest copy makes way.
const THREAD_COPIES: usize = 4;

thread_local! {
    /// This thread's own copies of published headers. Cloning a `HeaderValue` bumps a reference
    /// count; with one copy shared by all threads, that count's cache line would bounce between
    /// cores on every request.
    static HEADER_COPIES: RefCell<[Option<(u64, HeaderValue)>; THREAD_COPIES]> =
        const { RefCell::new([const { None }; THREAD_COPIES]) };
}

/// This thread's copy of the header of `generation`, if it has one.
#[inline]
fn thread_copy(generation: u64) -> Option<HeaderValue> {
    HEADER_COPIES
        .try_with(|copies| {
            let copies = copies.try_borrow().ok()?;
            copies
                .iter()
                .flatten()
                .find(|(copied, _)| *copied == generation)
                .map(|(_, header)| header.clone())
        })
        .ok()
        .flatten()
}

/// Give this thread its own copy of `header` (one allocation per thread per token).
fn keep_thread_copy(generation: u64, header: &HeaderValue) {
    let _ = HEADER_COPIES.try_with(|copies| {
        let Ok(mut copies) = copies.try_borrow_mut() else {
            return;
        };
        let Ok(mut copy) = HeaderValue::from_bytes(header.as_bytes()) else {
            return;
        };
        copy.set_sensitive(true);
        // `Bytes` allocates its shared counter on the first clone; take that hit here, not in
        // the first request that uses the copy.
        drop(copy.clone());
        let oldest = copies
            .iter_mut()
            .min_by_key(|slot| slot.as_ref().map_or(0, |(copied, _)| *copied))
            .expect("THREAD_COPIES is not zero");
        *oldest = Some((generation, copy));
    });
}

/// A cached token with everything the fast path needs precomputed.
pub(crate) struct Entry {
    pub(crate) token: AccessToken,
    pub(crate) header: HeaderValue,
    pub(crate) generation: u64,
    refresh_at: Option<Instant>,
    expires_at: Option<Instant>,
    /// A watcher task refreshes and expires this entry on time, so readers need no clock.
    watched: bool,
}

impl Entry {
    fn is_fresh(&self, now: Instant) -> bool {
        self.refresh_at.is_none_or(|at| now < at)
    }

    fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

type Flight = Shared<BoxFuture<'static, Result<Arc<Entry>, Error>>>;

/// Slow-path bookkeeping. Never touched on the fast path.
#[derive(Default)]
struct Control {
    flight: Option<Flight>,
    waiters: usize,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<Error>,
    last_invalidation: Option<Instant>,
    watcher: Option<AbortHandle>,
}

/// Why no flight could be joined right now.
struct BackingOff {
    until: Instant,
    error: Error,
}

impl TokenCache {
    /// A cache in front of `source`, with the default [`CachePolicy`].
    pub fn new(source: impl TokenSource) -> Self {
        Self::with_policy(source, CachePolicy::default())
    }

    /// A cache in front of `source`, with the given timing rules.
    pub fn with_policy(source: impl TokenSource, policy: CachePolicy) -> Self {
        let id = CACHE_IDS.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::new(Inner {
            id,
            source: Box::new(source),
            policy,
            current: ArcSwapOption::empty(),
            published: AtomicU64::new(UNPUBLISHED),
            control: Mutex::new(Control::default()),
        });
        registry().insert(id, Arc::downgrade(&inner));
        TokenCache { inner }
    }

    /// This cache's key for [`report_rejected`].
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    /// Drop `token` from the cache if it is still the cached one, because a server rejected it.
    /// The next caller fetches a new token. Rate-limited by
    /// [`CachePolicy::invalidation_interval`].
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

    /// The fast path: the cached header and its generation, if a fresh token is cached.
    /// One atomic load and this thread's copy of the header; the first request on a thread
    /// after a new token makes that copy from the shared cell.
    #[inline]
    pub(crate) fn fresh_header(&self) -> Option<(HeaderValue, u64)> {
        let published = self.inner.published.load(Ordering::Acquire);
        if published != UNPUBLISHED {
            if let Some(header) = thread_copy(published) {
                return Some((header, published));
            }
        }
        self.fresh_header_from_cell(published)
    }

    #[cold]
    fn fresh_header_from_cell(&self, published: u64) -> Option<(HeaderValue, u64)> {
        let guard = self.inner.current.load();
        let entry = guard.as_ref()?;
        if !(entry.watched || entry.is_fresh(now())) {
            return None;
        }
        if entry.generation == published {
            keep_thread_copy(entry.generation, &entry.header);
        }
        Some((entry.header.clone(), entry.generation))
    }

    /// The slow path: a usable entry, waiting for a flight if there is none.
    pub(crate) async fn entry(&self) -> Result<Arc<Entry>, Error> {
        let held = self.inner.current.load_full();
        let now = now();
        if let Some(entry) = &held {
            let usable = if entry.watched {
                !entry.is_expired(now)
            } else {
                entry.is_fresh(now)
            };
            if usable {
                return Ok(entry.clone());
            }
        }
        let outcome = match Inner::join_flight(&self.inner) {
            Ok(flight) => flight.await,
            Err(backing_off) => Err(backing_off.error),
        };
        // A failed refresh leaves a still-valid token in service.
        outcome.or_else(|error| match held {
            Some(entry) if !entry.is_expired(crate::token::now()) => Ok(entry),
            _ => Err(error),
        })
    }
}

impl TokenSource for TokenCache {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(async move { self.entry().await.map(|entry| entry.token.clone()) })
    }

    fn cache(&self) -> Option<TokenCache> {
        Some(self.clone())
    }
}

impl Inner {
    fn control(&self) -> MutexGuard<'_, Control> {
        // A panic while holding this lock cannot leave `Control` inconsistent in a way that
        // matters more than refusing service forever would.
        self.control
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn holds(&self, entry: &Arc<Entry>) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, entry))
    }

    /// Join the running flight, or start one unless a backoff step is in progress.
    fn join_flight(this: &Arc<Self>) -> Result<Flight, BackingOff> {
        let mut control = this.control();
        if let Some(flight) = control.flight.clone() {
            control.waiters += 1;
            return Ok(flight);
        }
        if let (Some(until), Some(error)) = (control.retry_at, &control.last_error) {
            if now() < until {
                return Err(BackingOff {
                    until,
                    error: error.clone(),
                });
            }
        }
        let flight = Self::launch(this.clone());
        control.flight = Some(flight.clone());
        control.waiters = 1;
        Ok(flight)
    }

    /// Start a fetch that runs to completion whoever waits for it.
    fn launch(this: Arc<Self>) -> Flight {
        let fetch = Self::fetch(this);
        match Handle::try_current() {
            Ok(runtime) => {
                let task = runtime.spawn(fetch);
                async move {
                    task.await.unwrap_or_else(|join_error| {
                        Err(Error::custom(
                            true,
                            format!("the token fetch task failed: {join_error}"),
                        ))
                    })
                }
                .boxed()
                .shared()
            }
            // Without a runtime the waiters drive the fetch; if they all give up, the next
            // caller resumes the same flight.
            Err(_) => fetch.boxed().shared(),
        }
    }

    async fn fetch(this: Arc<Self>) -> Result<Arc<Entry>, Error> {
        let started = now();
        let result = this.source.token().await;
        let finished = now();
        let elapsed = finished.saturating_duration_since(started);
        let mut control = this.control();
        control.flight = None;
        let waiters = std::mem::take(&mut control.waiters);
        let result = result.and_then(|token| this.install(&mut control, token, finished));
        match &result {
            Ok(entry) => {
                control.failures = 0;
                control.retry_at = None;
                control.last_error = None;
                tracing::debug!(
                    target: "tower_oauth2::cache",
                    outcome = "ok",
                    ?elapsed,
                    waiters,
                    generation = entry.generation,
                    expires_in = ?entry.token.expires_at().map(|at| at.saturating_duration_since(finished)),
                    "fetched a token"
                );
            }
            Err(error) => {
                control.failures = control.failures.saturating_add(1);
                let delay = this
                    .policy
                    .backoff_delay(control.failures, error.retry_after());
                control.retry_at = finished.checked_add(delay);
                control.last_error = Some(error.clone());
                tracing::warn!(
                    target: "tower_oauth2::cache",
                    outcome = "error",
                    ?elapsed,
                    waiters,
                    failures = control.failures,
                    backoff = ?delay,
                    transient = error.is_transient(),
                    %error,
                    "token fetch failed; backing off"
                );
            }
        }
        result
    }

    /// Make `token` the cached one and start its watcher.
    fn install(
        self: &Arc<Self>,
        control: &mut Control,
        token: AccessToken,
        now: Instant,
    ) -> Result<Arc<Entry>, Error> {
        let header = bearer_header(&token)?;
        let plan = self.policy.plan(now, token.expires_at());
        let runtime = Handle::try_current().ok();
        let entry = Arc::new(Entry {
            token,
            header,
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            refresh_at: plan.refresh_at,
            expires_at: plan.expires_at,
            watched: plan.refresh_at.is_none() || runtime.is_some(),
        });
        self.current.store(Some(entry.clone()));
        let published = if entry.watched {
            entry.generation
        } else {
            UNPUBLISHED
        };
        self.published.store(published, Ordering::Release);
        if let Some(previous) = control.watcher.take() {
            previous.abort();
        }
        if let (Some(runtime), Some(_)) = (runtime, plan.refresh_at) {
            let watcher = runtime.spawn(watch(Arc::downgrade(self), entry.clone()));
            control.watcher = Some(watcher.abort_handle());
        }
        Ok(entry)
    }

    fn invalidate(&self, generation: u64) {
        let current = self.current.load();
        let Some(entry) = current.as_ref().filter(|e| e.generation == generation) else {
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
        if self.take_if_current(entry) {
            control.last_invalidation = Some(now);
            tracing::info!(
                target: "tower_oauth2::cache",
                generation,
                "token rejected by the server; dropped from the cache"
            );
        }
    }

    /// Take `generation` off the fast path, unless a newer one was published meanwhile.
    fn unpublish(&self, generation: u64) {
        let _ = self.published.compare_exchange(
            generation,
            UNPUBLISHED,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// Remove `entry` from the cache and the fast path, if it is still the cached one.
    fn take_if_current(&self, entry: &Arc<Entry>) -> bool {
        let previous = self.current.compare_and_swap(entry, None);
        let taken = previous
            .as_ref()
            .is_some_and(|previous| Arc::ptr_eq(previous, entry));
        if taken {
            self.unpublish(entry.generation);
        }
        taken
    }

    /// Drop `entry` if it is still cached: it has expired.
    fn expire(&self, entry: &Arc<Entry>) {
        if self.take_if_current(entry) {
            tracing::info!(
                target: "tower_oauth2::cache",
                generation = entry.generation,
                "token expired before a new one could be fetched"
            );
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        registry().remove(&self.id);
        let control = self
            .control
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(watcher) = control.watcher.take() {
            watcher.abort();
        }
    }
}

/// Refresh `entry` ahead of its expiry, retrying on the backoff schedule, and drop it when it
/// expires. Holds the cache only weakly while asleep, so a dropped cache ends it.
async fn watch(cache: Weak<Inner>, entry: Arc<Entry>) {
    let (Some(refresh_at), Some(expires_at)) = (entry.refresh_at, entry.expires_at) else {
        return;
    };
    let expires_at = tokio::time::Instant::from_std(expires_at);
    tokio::time::sleep_until(tokio::time::Instant::from_std(refresh_at)).await;
    loop {
        let Some(inner) = cache.upgrade() else {
            return;
        };
        if !inner.holds(&entry) {
            return;
        }
        if entry.is_expired(now()) {
            inner.expire(&entry);
            return;
        }
        let attempt = Inner::join_flight(&inner);
        drop(inner);
        match attempt {
            Ok(flight) => {
                let expiry = std::pin::pin!(tokio::time::sleep_until(expires_at));
                if let Either::Left((Ok(_), _)) = future::select(flight, expiry).await {
                    return;
                }
            }
            Err(backing_off) => {
                let until = tokio::time::Instant::from_std(backing_off.until);
                tokio::time::sleep_until(until.min(expires_at)).await;
            }
        }
    }
}

/// `Bearer <token>`, marked sensitive so that logging layers redact it.
fn bearer_header(token: &AccessToken) -> Result<HeaderValue, Error> {
    let value = zeroize::Zeroizing::new(format!("Bearer {}", token.secret()));
    let mut header = HeaderValue::from_str(&value).map_err(|_| {
        Error::invalid_response("the access token contains characters not allowed in a header")
    })?;
    header.set_sensitive(true);
    Ok(header)
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
