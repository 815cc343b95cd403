//! [`PerRequestCaches`]: credentials chosen per request, one [`TokenCache`] per key.
//!
//! A service calling several APIs with one client registration needs a token per audience (or
//! scope, resource, organization). The user says which key a request needs, from its method,
//! URL and headers ([`RequestHead`]), and how to make a cache for a key; each key gets its own
//! cache on first use, with its own single flight, refresh and invalidation.
//!
//! Reading is lock-free and allocation-free for a key already known: the map is an immutable
//! snapshot behind an arc-swap, looked up with the `&str` the chooser borrows from the request
//! (or a `&'static str`). Only a new key takes the writers' lock and copies the map. The number
//! of live keys is bounded: past [`max_keys`](PerRequestCaches::max_keys) the least recently
//! used key is dropped, and its cache with it (its token zeroized once no request holds it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::{HeaderMap, Method};

use super::TokenCache;
use crate::clock::{coarse_now, ticks, Ticks};

/// How often a key's last use is written down at most: a store on every request would make
/// every core write the same line.
const TOUCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

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

/// What [`PerRequestCaches::snapshot`] returns.
pub(crate) type Snapshot = arc_swap::Guard<Arc<HashMap<Box<str>, Arc<Kept>>>>;

/// The cache a request needs.
pub(crate) enum Chosen<'s> {
    /// None: the request goes without a token.
    NoKey,
    /// A key's cache, as it was in the snapshot.
    Known(&'s TokenCache),
    /// A new key's cache, made just now.
    Made(TokenCache),
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
/// // Each API host is its own audience; requests elsewhere go out without a token.
/// let caches = PerRequestCaches::new(
///     |request| match request.host()? {
///         "orders.internal" => Some("https://orders.example.com"),
///         "billing.internal" => Some("https://billing.example.com"),
///         _ => None,
///     },
///     move |audience| credentials.with_audience(audience),
/// );
/// # let _ = caches;
/// # }
/// ```
#[derive(Clone)]
pub struct PerRequestCaches {
    shared: Arc<Shared>,
}

struct Shared {
    choose: Arc<Chooser>,
    make: Arc<Maker>,
    max_keys: usize,
    caches: ArcSwap<HashMap<Box<str>, Arc<Kept>>>,
    /// Serializes inserting keys (readers never take it); counts the keys made.
    writer: Mutex<u64>,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    name: Arc<str>,
}

pub(crate) struct Kept {
    cache: TokenCache,
    /// When it was last used, to within [`TOUCH_EVERY`].
    last_used: AtomicU64,
    /// The order keys were made in, to choose among keys last used at the same time.
    made: u64,
}

impl Kept {
    fn touch(&self, now: Ticks) {
        // Read first: most requests find it recent and write nothing.
        if now.saturating_sub(self.last_used.load(Ordering::Relaxed)) > ticks(TOUCH_EVERY) {
            self.last_used.store(now, Ordering::Relaxed);
        }
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
                caches: ArcSwap::from_pointee(HashMap::new()),
                writer: Mutex::new(0),
                name: Arc::from("per-request"),
            }),
        }
    }

    /// Keep at most `max_keys` keys (at least 1; default 64): a new key past that drops the
    /// least recently used one, and its cache.
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
        let mut shared = Arc::try_unwrap(self.shared).unwrap_or_else(|shared| Shared {
            choose: shared.choose.clone(),
            make: shared.make.clone(),
            max_keys: shared.max_keys,
            caches: ArcSwap::new(shared.caches.load_full()),
            writer: Mutex::new(0),
            name: shared.name.clone(),
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

    /// The cache for `key`, made now if it has none.
    pub fn cache(&self, key: &str) -> TokenCache {
        match self.shared.caches.load().get(key) {
            Some(kept) => kept.cache.clone(),
            None => self.insert(key).cache.clone(),
        }
    }

    /// The keys' caches as they are now: hold it while using what [`choose`](Self::choose)
    /// finds in it.
    pub(crate) fn snapshot(&self) -> Snapshot {
        self.shared.caches.load()
    }

    /// The cache the request needs, found in `snapshot` (lock-free, no allocation) or made now.
    pub(crate) fn choose<'s>(&self, snapshot: &'s Snapshot, head: &RequestHead<'_>) -> Chosen<'s> {
        let Some(key) = (self.shared.choose)(head) else {
            return Chosen::NoKey;
        };
        match snapshot.get(key) {
            Some(kept) => {
                kept.touch(coarse_now());
                Chosen::Known(&kept.cache)
            }
            None => Chosen::Made(self.insert(key).cache.clone()),
        }
    }

    #[cold]
    fn insert(&self, key: &str) -> Arc<Kept> {
        let mut made = self
            .shared
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.shared.caches.load_full();
        if let Some(kept) = current.get(key) {
            return kept.clone();
        }
        // Made under the writers' lock: two callers of a new key must share one cache, or
        // each would fetch its own token. `make` is the user's; a panic there leaves the map
        // as it was.
        let kept = Arc::new(Kept {
            cache: (self.shared.make)(key),
            last_used: AtomicU64::new(coarse_now()),
            made: *made,
        });
        *made += 1;
        let mut next: HashMap<Box<str>, Arc<Kept>> = HashMap::with_capacity(current.len() + 1);
        next.extend(
            current
                .iter()
                .map(|(key, kept)| (key.clone(), kept.clone())),
        );
        let mut evicted = None;
        if next.len() >= self.shared.max_keys {
            let oldest = next
                .iter()
                .min_by_key(|(_, kept)| (kept.last_used.load(Ordering::Relaxed), kept.made))
                .map(|(key, _)| key.clone());
            evicted = oldest.and_then(|oldest| next.remove(&oldest));
        }
        next.insert(key.into(), kept.clone());
        self.shared.caches.store(Arc::new(next));
        drop(current);
        if evicted.is_some() {
            #[cfg(feature = "metrics")]
            metrics::counter!("tower_oauth2_keys_evicted_total", "client" => self.shared.name.to_string())
                .increment(1);
        }
        // The evicted cache drops here, or when the last request using it ends.
        drop(evicted);
        kept
    }
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
                Chosen::Known(cache) => Some(cache.slot()),
                Chosen::Made(cache) => Some(cache.slot()),
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
        // `a` used again much later than `b`.
        caches.shared.caches.load()["a"]
            .last_used
            .store(coarse_now() + ticks(TOUCH_EVERY) * 10, Ordering::Relaxed);
        caches.cache("c");
        let keys = caches.shared.caches.load();
        assert_eq!(keys.len(), 2);
        assert!(
            keys.contains_key("a") && keys.contains_key("c"),
            "b was evicted"
        );
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
