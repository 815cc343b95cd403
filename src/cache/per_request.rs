//! [`PerRequestCaches`]: credentials chosen per request, one [`TokenCache`] per key.
//!
//! A service calling several APIs with one client registration needs a token per audience (or
//! scope, resource, organization). The user says which key a request needs, from its method,
//! URL and headers ([`RequestHead`]), and how to make a cache for a key; each key gets its own
//! cache on first use, with its own single flight, refresh and invalidation.
//!
//! Reading is lock-free and allocation-free for a key already known: the map is an immutable
//! snapshot behind an arc-swap, looked up with the `&str` the chooser borrows from the request
//! (or a `&'static str`). A new key's cache is made by the user's `make` with no lock held; only
//! adding it takes the writers' lock, to copy the map (pointers only: each key is hashed once,
//! when it enters) and re-check that no other caller added the key meanwhile.
//!
//! The number of live keys is bounded, least recently used first, exactly: each key holds the
//! value of a use counter at its last use, bumped only when the key used differs from the last
//! one (a single hot key writes nothing). Past [`max_keys`](PerRequestCaches::max_keys) a new
//! key drops the least recently used key whose cache is idle, and its cache with it (its token
//! zeroized then). A cache in use (held by a request in flight, fetching a token, or backing off
//! after a failed fetch) is dropped only once the keys would pass twice `max_keys`: dropping it
//! sooner would give its key a second cache fetching beside the first, a new cache without its
//! backoff, or a `401` that no cache hears of. A key evicted after failures keeps their count
//! (for the last `max_keys` such keys), so that made again its backoff goes on where it stood.
//!
//! A request in flight holds its key's [`Kept`] (one reference count written per request, on a
//! cache line of its own): its `401` reaches that cache, and its replay is counted for that
//! key, even if the key was evicted meanwhile; and eviction sees the key in use.

use std::cell::RefCell;
use std::hash::{BuildHasher, RandomState};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use hashbrown::HashTable;
use http::{HeaderMap, Method};

use super::TokenCache;
use crate::Error;

/// What a chooser sees of a request: its method, URL parts and headers, whether it came
/// through the tower layer (`http::Request`) or the reqwest middleware (`reqwest::Request`).
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    method: &'a Method,
    scheme: Option<&'a str>,
    host: Option<&'a str>,
    port: Option<u16>,
    path: &'a str,
    headers: &'a HeaderMap,
}

impl<'a> RequestHead<'a> {
    /// The head of an `http::Request`. A request in origin form (a path only, as tonic and
    /// hyper's HTTP/1 clients often hand over) has no scheme and no host here.
    pub fn of<B>(request: &'a http::Request<B>) -> Self {
        let uri = request.uri();
        RequestHead {
            method: request.method(),
            scheme: uri.scheme_str(),
            host: uri.host(),
            port: uri.port_u16(),
            path: uri.path(),
            headers: request.headers(),
        }
    }

    /// The head of a `reqwest::Request`.
    #[cfg(feature = "reqwest")]
    pub(crate) fn of_reqwest(request: &'a reqwest::Request) -> Self {
        let url = request.url();
        RequestHead {
            method: request.method(),
            scheme: Some(url.scheme()),
            host: url.host_str(),
            port: url.port(),
            path: url.path(),
            headers: request.headers(),
        }
    }

    /// The request's method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// `http` or `https`, when the URL has a scheme.
    pub fn scheme(&self) -> Option<&'a str> {
        self.scheme
    }

    /// The host the request goes to, when the URL names one.
    pub fn host(&self) -> Option<&'a str> {
        self.host
    }

    /// The port, when the URL gives one explicitly.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The path (for gRPC, `/package.Service/Method`).
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The request's headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }
}

type Chooser = dyn for<'a> Fn(&RequestHead<'a>) -> Option<&'a str> + Send + Sync;
type Maker = dyn Fn(&str) -> TokenCache + Send + Sync;

/// The keys' caches, each with its key and the key's hash. Each new map copies pointers and
/// rehashes nothing: a new key costs its own length, however long the resident keys are.
type Keys = HashTable<Arc<Kept>>;

/// What [`PerRequestCaches::snapshot`] returns.
pub(crate) type Snapshot = arc_swap::Guard<Arc<Keys>>;

/// The cache a request needs.
pub(crate) enum Chosen<'s> {
    /// None: the request goes without a token.
    NoKey,
    /// A key's cache, as it was in the snapshot: the request holds a clone until it ends.
    Known(&'s Arc<Kept>),
    /// A new key's cache, made just now.
    Made(Arc<Kept>),
    /// The user's `choose` or `make` failed (panicked, or `make` asked for the key it is
    /// making): the request fails with this error, unsent.
    Failed(Error),
}

/// One [`TokenCache`] per key, the key chosen from each request: give it to
/// [`PerRequestLayer`](crate::layer::PerRequestLayer) or
/// [`BearerAuthMiddleware::per_request`](crate::BearerAuthMiddleware::per_request).
///
/// `choose` returns the key a request needs, borrowed from the request or `'static` (so that
/// looking up a known key allocates nothing), or `None` to send the request without a token.
/// `make` builds the cache for a new key: a
/// [`ClientCredentials::with_audience`](crate::ClientCredentials::with_audience) sibling, say,
/// or anything that converts into a [`TokenCache`]. Clones share the caches.
///
/// ```
/// use tower_oauth2::cache::PerRequestCaches;
/// use tower_oauth2::ClientCredentials;
///
/// # fn demo(credentials: ClientCredentials) {
/// // Each API is its own audience, told by the request's path (a gRPC service's methods all
/// // start with `/package.Service/`) or, when the URL names one, by its host; other requests
/// // go out without a token.
/// let caches = PerRequestCaches::new(
///     |request| {
///         if request.path().starts_with("/orders.Orders/") {
///             return Some("https://orders.example.com");
///         }
///         match request.host()? {
///             "billing.internal" => Some("https://billing.example.com"),
///             _ => None,
///         }
///     },
///     move |audience| credentials.with_audience(audience),
/// );
/// # let _ = caches;
/// # }
/// ```
///
/// # Choose keys from a closed set
///
/// Take keys from a table of the APIs you call (as above), not from a header or any other
/// text a caller controls. Each key's cache reports its metrics under its own labels (a
/// `with_audience` sibling under its `audience`): the bound on live keys bounds the caches, not
/// the series a metrics recorder keeps for every key it ever saw. Keys copied from untrusted
/// input also make a token request per new key at the identity provider.
///
/// # When `choose` or `make` fail
///
/// They are your code, called on a request's way out. A panic in either fails that request
/// with an [`ErrorKind::Panic`](crate::ErrorKind::Panic) error naming which one panicked, and
/// keeps nothing for the key. `make` may ask these same caches for other keys (a token exchange
/// whose subject token is another audience's); if it asks for the key it is making, directly or
/// through other keys' `make`, it is given a cache that fails every request with an
/// [`ErrorKind::Config`](crate::ErrorKind::Config) error instead of recursing for ever.
///
/// That guard is per thread: it sees the `make` calls running on the thread that asks. A
/// `make` that asks for its own key from another thread (a spawned or scoped thread, a
/// blocking pool's `block_on`) while it waits for that thread is not caught, and recurses
/// until threads run out (blocking each thread before). Telling such a wait apart from two
/// independent first requests for the key (which may each run `make`, see below) would take
/// a lock across `make`, which could deadlock instead. Ask for other keys only from the
/// thread `make` runs on.
///
/// `make` runs with no lock held, so a slow `make` holds up no other key. Two requests that
/// are first to ask for the same key at the same moment may each run `make`; only one cache is
/// kept, and the other is dropped before it fetched anything.
#[derive(Clone)]
pub struct PerRequestCaches {
    shared: Arc<Shared>,
}

struct Shared {
    choose: Arc<Chooser>,
    make: Arc<Maker>,
    max_keys: usize,
    caches: ArcSwap<Keys>,
    /// Hashes keys, once for a key in the map and once per lookup.
    hasher: RandomState,
    /// Serializes inserting keys (readers never take it; `make` runs outside it), and guards
    /// the failure counts of evicted keys.
    writer: Mutex<Failed>,
    /// Counts uses that changed which key was used last: a key's `last_used` is the count at
    /// its latest use, which orders keys exactly by their last use.
    uses: OwnLine<AtomicU64>,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    name: Arc<str>,
}

/// A key and its cache. Requests in flight hold it (see [`in_use`]); the reference count they
/// write sits on the allocation's first line, away from what lookups read (`fields`).
pub(crate) struct Kept {
    fields: OwnLine<Fields>,
    /// [`Shared::uses`] at this key's latest use.
    last_used: OwnLine<AtomicU64>,
}

struct Fields {
    /// Shared with a `make` running for it (see [`MAKING`]).
    key: Arc<str>,
    /// `key`'s hash by [`Shared::hasher`].
    hash: u64,
    cache: TokenCache,
}

impl Kept {
    fn new(key: Arc<str>, hash: u64, cache: TokenCache, last_used: u64) -> Arc<Kept> {
        Arc::new(Kept {
            fields: OwnLine(Fields { key, hash, cache }),
            last_used: OwnLine(AtomicU64::new(last_used)),
        })
    }

    /// The key's cache.
    pub(crate) fn cache(&self) -> &TokenCache {
        &self.fields.cache
    }
}

/// Whether a request holds `kept`, beyond the `maps` (the map being replaced and the one
/// replacing it) that the eviction's caller holds. A reader still holding an older map counts
/// too, for the moment it takes: that only keeps the key a little longer.
fn in_use(kept: &Arc<Kept>, maps: usize) -> bool {
    Arc::strong_count(kept) > maps
}

/// A value on a cache line of its own: keys taking turns write the use counters on every
/// request, which must not evict the read-mostly fields beside them (the map, the cache) from
/// other cores' caches. 128 bytes: adjacent-line prefetchers pair 64-byte lines.
#[repr(align(128))]
#[derive(Default)]
struct OwnLine<T>(T);

impl<T> std::ops::Deref for OwnLine<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

thread_local! {
    /// The keys this thread's `make` calls are making, with the [`Shared`] (by address) they
    /// are made for: a `make` asking for one of them would recurse for ever.
    static MAKING: RefCell<Vec<(usize, Arc<str>)>> = const { RefCell::new(Vec::new()) };
}

/// A key on [`MAKING`] while its `make` runs, off it when that returns or unwinds.
struct Making;

impl Making {
    /// Put `key` on this thread's list, unless it is on it already.
    fn enter(shared: usize, key: &Arc<str>) -> Option<Making> {
        MAKING.with(|making| {
            let mut making = making.borrow_mut();
            if making
                .iter()
                .any(|(of, made)| *of == shared && **made == **key)
            {
                return None;
            }
            making.push((shared, key.clone()));
            Some(Making)
        })
    }
}

impl Drop for Making {
    fn drop(&mut self) {
        // `make` calls nest on a thread, so the key this guard put on the list is the last.
        MAKING.with(|making| making.borrow_mut().pop());
    }
}

impl PerRequestCaches {
    /// The default bound on live keys.
    pub const DEFAULT_MAX_KEYS: usize = 64;

    /// Caches made by `make` for the keys `choose` picks (see the type's documentation).
    pub fn new<C, M, T>(choose: C, make: M) -> Self
    where
        C: for<'a> Fn(&RequestHead<'a>) -> Option<&'a str> + Send + Sync + 'static,
        M: Fn(&str) -> T + Send + Sync + 'static,
        T: Into<TokenCache>,
    {
        PerRequestCaches {
            shared: Arc::new(Shared {
                choose: Arc::new(choose),
                make: Arc::new(move |key| make(key).into()),
                max_keys: Self::DEFAULT_MAX_KEYS,
                caches: ArcSwap::from_pointee(HashTable::new()),
                hasher: RandomState::new(),
                writer: Mutex::new(Failed::default()),
                uses: OwnLine::default(),
                name: Arc::from("per-request"),
            }),
        }
    }

    /// Keep about `max_keys` keys (at least 1; default 64). A new key past that drops the
    /// least recently used key whose cache is idle, and its cache (its token zeroized). A
    /// cache in use is kept past the bound: one a request in flight holds (dropping it would
    /// give its key a second cache fetching beside the first), one fetching a token, or one
    /// backing off after a failed fetch (a new one would not wait, hammering a failing
    /// identity provider); once its backoff is over, a failed cache is idle again, and the key
    /// keeps its count of failures: made again, its cache backs off from where it stood. Caches in
    /// use too are dropped, least recently used first, once the keys would pass twice
    /// `max_keys`, so that no input can grow the map without bound; a request holding one
    /// still hears of its `401` and has its replay counted.
    pub fn max_keys(self, max_keys: usize) -> Self {
        self.reconfigure(|shared| shared.max_keys = max_keys.max(1))
    }

    /// The `client` label of this value's metrics (`tower_oauth2_keys_evicted_total`).
    pub fn name(self, name: impl Into<String>) -> Self {
        let name: Arc<str> = Arc::from(name.into());
        self.reconfigure(|shared| shared.name = name)
    }

    /// Settings are meant to be given before the value is cloned; a clone made earlier keeps
    /// its settings, and from then on its own caches.
    fn reconfigure(self, change: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Arc::try_unwrap(self.shared).unwrap_or_else(|shared| {
            // The same caches under new bookkeeping: the clone's uses are its own.
            let mut keys = Keys::new();
            for kept in shared.caches.load().iter() {
                let kept = Kept::new(
                    kept.fields.key.clone(),
                    kept.fields.hash,
                    kept.fields.cache.clone(),
                    kept.last_used.load(Ordering::Relaxed),
                );
                keys.insert_unique(kept.fields.hash, kept, |kept| kept.fields.hash);
            }
            Shared {
                choose: shared.choose.clone(),
                make: shared.make.clone(),
                max_keys: shared.max_keys,
                caches: ArcSwap::from_pointee(keys),
                hasher: shared.hasher.clone(),
                writer: Mutex::new(Failed::default()),
                uses: OwnLine(AtomicU64::new(shared.uses.load(Ordering::Relaxed))),
                name: shared.name.clone(),
            }
        });
        change(&mut shared);
        PerRequestCaches {
            shared: Arc::new(shared),
        }
    }

    /// How many keys have a cache now.
    pub fn len(&self) -> usize {
        self.shared.caches.load().len()
    }

    /// Whether no key has a cache yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cache for `key`, made now if it has none (a use of `key`, as a request's).
    ///
    /// If `make` panics, or asks these caches for `key` itself, nothing is kept for `key` and
    /// the cache returned fails every request with an error saying so.
    pub fn cache(&self, key: &str) -> TokenCache {
        if let Some(kept) = self.find(&self.shared.caches.load(), key) {
            self.touch(kept);
            return kept.fields.cache.clone();
        }
        match self.insert(key) {
            Ok(kept) => kept.fields.cache.clone(),
            Err(error) => {
                let error = error.found_locally();
                TokenCache::new(crate::source::from_fn(move || {
                    std::future::ready(Err(error.clone()))
                }))
            }
        }
    }

    /// The keys' caches as they are now: hold it while using what [`choose`](Self::choose)
    /// finds in it.
    pub(crate) fn snapshot(&self) -> Snapshot {
        self.shared.caches.load()
    }

    /// The cache the request needs, found in `snapshot` (lock-free, no allocation) or made now.
    pub(crate) fn choose<'s>(&self, snapshot: &'s Snapshot, head: &RequestHead<'_>) -> Chosen<'s> {
        // The chooser is the user's: a panic fails this request, not the caller's task.
        let key = match std::panic::catch_unwind(AssertUnwindSafe(|| (self.shared.choose)(head))) {
            Ok(Some(key)) => key,
            Ok(None) => return Chosen::NoKey,
            Err(_panic) => return Chosen::Failed(panicked("the `choose` closure")),
        };
        match self.find(snapshot, key) {
            Some(kept) => {
                self.touch(kept);
                Chosen::Known(kept)
            }
            None => match self.insert(key) {
                Ok(kept) => Chosen::Made(kept),
                Err(error) => Chosen::Failed(error),
            },
        }
    }

    /// `key`'s cache in `keys`.
    #[inline]
    fn find<'k>(&self, keys: &'k Keys, key: &str) -> Option<&'k Arc<Kept>> {
        let hash = self.shared.hasher.hash_one(key);
        keys.find(hash, |kept| *kept.fields.key == *key)
    }

    /// Write down a use of `kept`. A key used again while no other was used since writes
    /// nothing: the hot key's path reads shared memory only.
    #[inline]
    fn touch(&self, kept: &Kept) {
        let uses = self.shared.uses.load(Ordering::Relaxed);
        if kept.last_used.load(Ordering::Relaxed) != uses {
            kept.last_used.store(self.next_use(), Ordering::Relaxed);
        }
    }

    /// A new latest use.
    fn next_use(&self) -> u64 {
        self.shared.uses.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Make `key`'s cache and add it, or take the one another caller added meanwhile.
    #[cold]
    #[inline(never)]
    fn insert(&self, key: &str) -> Result<Arc<Kept>, Error> {
        let key: Arc<str> = Arc::from(key);
        let hash = self.shared.hasher.hash_one(&*key);
        let made = self.make(&key)?;
        let mut writer = self
            .shared
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.shared.caches.load_full();
        if let Some(theirs) = self.find(&current, &key) {
            // Another caller made this key while `make` ran: theirs is the one requests share.
            let theirs = theirs.clone();
            drop(writer);
            self.touch(&theirs);
            // Ours never fetched; it drops here, outside the lock (its drop is the user's code).
            drop(made);
            return Ok(theirs);
        }
        let mut next = Keys::with_capacity(current.len() + 1);
        for kept in current.iter() {
            next.insert_unique(kept.fields.hash, kept.clone(), |kept| kept.fields.hash);
        }
        let evicted = evict(&current, &mut next, self.shared.max_keys);
        writer.remember(&evicted, self.shared.max_keys);
        if let Some(failures) = writer.take(&key) {
            made.resume_failures(failures);
        }
        let kept = Kept::new(key, hash, made, self.next_use());
        next.insert_unique(hash, kept.clone(), |kept| kept.fields.hash);
        self.shared.caches.store(Arc::new(next));
        drop(current);
        drop(writer);
        if !evicted.is_empty() {
            #[cfg(feature = "metrics")]
            metrics::counter!("tower_oauth2_keys_evicted_total", "client" => self.shared.name.to_string())
                .increment(evicted.len() as u64);
        }
        // The evicted caches drop here, or when the last request using them ends.
        drop(evicted);
        Ok(kept)
    }

    /// The user's `make` for `key`, with no lock held: a panic, or a `make` asking for the key
    /// it is making, is an error.
    fn make(&self, key: &Arc<str>) -> Result<TokenCache, Error> {
        let Some(_making) = Making::enter(Arc::as_ptr(&self.shared) as usize, key) else {
            return Err(Error::config(
                "a `make` closure of PerRequestCaches asked the same caches for the key it is \
                 making (directly, or through the `make` of other keys): it would recurse for \
                 ever; make that key's cache from the base credentials instead",
            ));
        };
        std::panic::catch_unwind(AssertUnwindSafe(|| (self.shared.make)(key)))
            .map_err(|_panic| panicked("the `make` closure"))
    }
}

/// `closure` of a [`PerRequestCaches`] panicked; its message went to the panic hook (it may
/// name a key or a credential), not into the error.
fn panicked(closure: &str) -> Error {
    tracing::error!(target: "tower_oauth2::cache", "{closure} of PerRequestCaches panicked");
    Error::panicked_in(&format!("{closure} of PerRequestCaches"))
}

/// How many token requests in a row failed for keys evicted while their caches were failing,
/// newest last, at most `max_keys` of them: a key made again resumes its backoff where it
/// stood, so keys taking turns through the bound cannot restart a failing identity provider's
/// backoff at its first step.
#[derive(Default)]
struct Failed(std::collections::VecDeque<(Arc<str>, u32)>);

impl Failed {
    fn remember(&mut self, evicted: &[Arc<Kept>], max_keys: usize) {
        for kept in evicted {
            let failures = kept.fields.cache.failures();
            if failures > 0 {
                self.0.retain(|(key, _)| *key != kept.fields.key);
                self.0.push_back((kept.fields.key.clone(), failures));
            }
        }
        while self.0.len() > max_keys {
            self.0.pop_front();
        }
    }

    fn take(&mut self, key: &str) -> Option<u32> {
        let at = self.0.iter().position(|(failed, _)| **failed == *key)?;
        self.0.remove(at).map(|(_, failures)| failures)
    }
}

/// Make room in `keys` (a copy of `current`) for one more, by the rule
/// [`PerRequestCaches::max_keys`] documents; what it took out.
fn evict(current: &Keys, keys: &mut Keys, max_keys: usize) -> Vec<Arc<Kept>> {
    if keys.len() < max_keys {
        return Vec::new();
    }
    // Least recently used first. `last_used` values are distinct but for racing uses, where
    // either order is right. Borrowed from `current`, so that each key's reference count is
    // the two maps' and its requests'.
    let mut by_age: Vec<&Arc<Kept>> = current.iter().collect();
    by_age.sort_unstable_by_key(|kept| kept.last_used.load(Ordering::Relaxed));
    let mut evicted = Vec::new();
    let mut take = |keys: &mut Keys, kept: &Arc<Kept>| {
        if let Ok(entry) = keys.find_entry(kept.fields.hash, |other| Arc::ptr_eq(other, kept)) {
            evicted.push(entry.remove().0);
        }
    };
    // Idle caches, down to the bound (more than one when busy ones pushed it past).
    for kept in &by_age {
        if keys.len() < max_keys {
            break;
        }
        if !in_use(kept, 2) && !kept.fields.cache.is_busy() {
            take(keys, kept);
        }
    }
    // Busy ones only past twice the bound: memory stays bounded whatever the keys.
    let hard_bound = max_keys.saturating_mul(2);
    for kept in &by_age {
        if keys.len() < hard_bound {
            break;
        }
        take(keys, kept);
    }
    evicted
}

impl std::fmt::Debug for PerRequestCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerRequestCaches")
            .field("keys", &self.len())
            .field("max_keys", &self.shared.max_keys)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::StaticToken;
    use crate::AccessToken;

    fn caches(max_keys: usize) -> PerRequestCaches {
        PerRequestCaches::new(
            |head| head.host(),
            |key| StaticToken::from(AccessToken::new(format!("token-for-{key}"))),
        )
        .max_keys(max_keys)
    }

    fn head(uri: &str) -> http::Request<()> {
        http::Request::get(uri).body(()).unwrap()
    }

    #[test]
    fn each_key_gets_one_cache_and_a_request_without_a_key_none() {
        let caches = caches(8);
        let slot = |uri: &str| {
            let request = head(uri);
            let snapshot = caches.snapshot();
            match caches.choose(&snapshot, &RequestHead::of(&request)) {
                Chosen::NoKey => None,
                Chosen::Known(kept) => Some(kept.cache().slot()),
                Chosen::Made(kept) => Some(kept.cache().slot()),
                Chosen::Failed(error) => panic!("{error}"),
            }
        };
        let first = slot("https://a.example/x");
        assert!(first.is_some());
        assert_eq!(slot("https://a.example/y"), first);
        assert_ne!(slot("https://b.example/x"), first);
        assert_eq!(caches.len(), 2);
        assert_eq!(slot("/path/only"), None);
    }

    #[test]
    fn past_the_bound_the_least_recently_used_key_goes() {
        let caches = caches(2);
        caches.cache("a");
        caches.cache("b");
        // `a` used again after `b`, within the same instant.
        caches.cache("a");
        caches.cache("c");
        let keys = caches.shared.caches.load();
        assert_eq!(keys.len(), 2);
        let kept = |key| caches.find(&keys, key).is_some();
        assert!(kept("a") && kept("c"), "b was evicted");
    }

    #[test]
    fn failing_caches_stay_past_the_bound_until_twice_it() {
        let caches = PerRequestCaches::new(
            |head| head.host(),
            |key| {
                let failing = key.starts_with("failing");
                TokenCache::new(crate::source::from_fn(move || {
                    std::future::ready(if failing {
                        Err(Error::config("the endpoint is down"))
                    } else {
                        Ok(AccessToken::new("t"))
                    })
                }))
            },
        )
        .max_keys(2);
        let fail = |key: &str| {
            let cache = caches.cache(key);
            let fetched = futures_util::FutureExt::now_or_never(cache.entry()).expect("at once");
            assert!(fetched.is_err());
        };
        let has = |key| caches.find(&caches.shared.caches.load(), key).is_some();
        fail("failing-1");
        fail("failing-2");
        caches.cache("idle-1");
        // Both failing caches are backing off: kept past the bound.
        assert!(has("failing-1") && has("failing-2") && has("idle-1"));
        caches.cache("idle-2");
        // The idle key goes first, although it was used after the failing ones.
        assert!(!has("idle-1") && has("idle-2") && caches.len() == 3);
        fail("failing-3");
        assert!(!has("idle-2") && caches.len() == 3);
        fail("failing-4");
        assert_eq!(caches.len(), 4, "no idle key left to drop");
        // A fifth key would pass twice the bound: the least recently used goes, failing or not.
        caches.cache("idle-3");
        assert_eq!(caches.len(), 4);
        assert!(!has("failing-1") && has("failing-2") && has("idle-3"));
    }

    #[test]
    fn a_hot_key_writes_nothing_and_keys_taking_turns_count_each_use() {
        let caches = caches(8);
        caches.cache("hot");
        let uses = || caches.shared.uses.load(Ordering::Relaxed);
        let before = uses();
        for _ in 0..100 {
            caches.cache("hot");
        }
        assert_eq!(uses(), before, "the hot key's uses write nothing");
        caches.cache("other");
        caches.cache("hot");
        caches.cache("other");
        assert_eq!(uses(), before + 3);
    }

    #[test]
    fn a_make_asking_for_its_own_key_through_a_cycle_gets_an_error_instead_of_recursing() {
        let slot: Arc<std::sync::OnceLock<PerRequestCaches>> = Arc::default();
        let inside = slot.clone();
        // `a` is made from `b`, and `b` from `a`: a cycle through two keys.
        let caches = PerRequestCaches::new(
            |head| head.host(),
            move |key| {
                let other = if key == "a" { "b" } else { "a" };
                inside.get().expect("set").cache(other)
            },
        );
        let _ = slot.set(caches.clone());
        let cache = caches.cache("a");
        let error = futures_util::FutureExt::now_or_never(cache.entry())
            .expect("fails at once")
            .unwrap_err();
        assert_eq!(error.kind(), crate::ErrorKind::Config);
        assert!(error.to_string().contains("recurse"), "{error}");
        // `b`'s make got that failing cache for `a` and returned it: the user's cycle fails
        // every request for both keys, with that error, until it is fixed.
        let b = caches.cache("b");
        let error = futures_util::FutureExt::now_or_never(b.entry())
            .expect("fails at once")
            .unwrap_err();
        assert!(error.to_string().contains("recurse"), "{error}");
    }

    #[test]
    fn settings_changed_on_a_shared_value_keep_its_caches() {
        let caches = caches(8);
        caches.cache("a");
        let clone = caches.clone();
        let bounded = caches.max_keys(1);
        assert_eq!(bounded.len(), 1);
        assert_eq!(clone.len(), 1);
    }
}
