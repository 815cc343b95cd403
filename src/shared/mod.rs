//! A token shared by every instance of a fleet: one token request per lifetime for all of them.
//!
//! Each process keeps its own [`TokenCache`](crate::TokenCache) in front, so the per-request
//! path never touches the store. Only when a process would otherwise fetch (cold start,
//! refresh ahead, expiry, a rejected token) does it look at the [`SharedStore`]:
//!
//! 1. A token there that is still fresh by this process's [`CachePolicy`](crate::cache::CachePolicy)
//!    (judged on its whole lifetime, not what is left of it) is adopted. What is left is what
//!    the store says ([`Stored::expires_in`]), never more than the lifetime the token was
//!    published with: the store's clock is the only one the fleet shares.
//! 2. Otherwise the process takes a *lease* (set-if-absent with an expiry longer than its
//!    whole fetch can take, discovery included), fetches, publishes the token with an expiry
//!    at its own, and releases the lease (delete-if-mine).
//! 3. A process that loses the lease polls for the winner's token; when the lease is gone
//!    without one, it competes again. Only past what its fetch timeout leaves for a fetch of
//!    its own does it fetch alone (and publish). A lease without expiry, or with a longer one
//!    than any fetch, is foreign: removed and competed for.
//!
//! An entry's key digests what decides the token and a fingerprint of the key material
//! (secret, private key, TLS client certificate): instances with different keys never share
//! an entry, nor a certificate-bound token. Its lease (`…:lease`) and rejected list
//! (`…:rejected`) share its Redis hash tag (`token:{digest}`), so one cluster slot holds them.
//!
//! Values are sealed (`sealed`): AES-256-GCM under a key derived from the client secret (or
//! one the user gives), bound to the value's key, so the store never holds a bearer token or a
//! secret in the clear. A value that does not open (corrupt, foreign, another secret) is
//! ignored and overwritten. A rejected token is deleted at once and its fingerprint shared
//! (the last 16, sealed), so that an old value put back is adopted by nobody while that list
//! stands (a writer who deletes it too gets the token adopted by processes that never saw the
//! rejection, until their own first 401: see `guide/security.md`). The store
//! failing never fails a call (`breaker`): the process fetches alone, and tries the store
//! again after a backoff; only a write or an adoption closes the breaker again, so a
//! read-only store keeps it open.

mod breaker;
#[cfg(feature = "redis")]
mod redis;
mod sealed;
mod source;
mod wiring;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::error::BoxError;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::RedisStore;
pub(crate) use sealed::key_digest;
pub(crate) use source::{SharedConfig, SharedSource};
pub(crate) use wiring::{FetchShape, Fleet, Identity};

/// The longest value the crate stores or reads back; a store reads no more than this (a
/// sealed token is a few hundred bytes to a few kilobytes).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// A value read from a [`SharedStore`].
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stored {
    /// The bytes stored.
    pub value: Vec<u8>,
    /// How much longer the store keeps the value, by the store's own clock (Redis: `PTTL`);
    /// `None` when it has no expiry or the store cannot tell.
    pub expires_in: Option<Duration>,
}

impl Stored {
    /// `value`, kept by the store for `expires_in` more.
    pub fn new(value: Vec<u8>, expires_in: Option<Duration>) -> Self {
        Stored { value, expires_in }
    }

    /// `value`, from a store that keeps no expiry.
    pub fn without_expiry(value: Vec<u8>) -> Self {
        Stored::new(value, None)
    }
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Sealed, but still nobody's business: the length is enough to debug with.
        f.debug_struct("Stored")
            .field("len", &self.value.len())
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// What a [`SharedStore`] operation returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send + 'a>>;

/// A key-value store the instances of a fleet share tokens through, such as [`RedisStore`]
/// (feature `redis`). Give one to
/// [`ClientCredentialsBuilder::shared_cache`](crate::client_credentials::ClientCredentialsBuilder::shared_cache).
///
/// Values are opaque bytes, already encrypted; keys never contain a secret. Every operation
/// should give up quickly (a few hundred milliseconds) when the store is slow or down: an error
/// or a timeout only makes the process fetch alone for a while, but a hang holds up the fetch.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use std::time::{Duration, Instant};
/// use tower_oauth2::shared::{SharedStore, StoreFuture, Stored};
///
/// /// One process's store: useless across a fleet, but shows the contract.
/// #[derive(Default)]
/// struct InMemory(Mutex<HashMap<String, (Vec<u8>, Instant)>>);
///
/// impl InMemory {
///     /// The live entries: expired ones are gone, as in Redis.
///     fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Vec<u8>, Instant)>> {
///         let mut map = self.0.lock().unwrap();
///         let now = Instant::now();
///         map.retain(|_, (_, until)| *until > now);
///         map
///     }
/// }
///
/// impl SharedStore for InMemory {
///     fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Stored>> {
///         Box::pin(async move {
///             let map = self.live();
///             // With the time left by this store's clock: the fleet's only clock.
///             Ok(map.get(key).map(|(value, until)| {
///                 Stored::new(value.clone(), Some(until.saturating_duration_since(Instant::now())))
///             }))
///         })
///     }
///     fn set<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Duration) -> StoreFuture<'a, ()> {
///         Box::pin(async move {
///             self.live().insert(key.into(), (value.into(), Instant::now() + ttl));
///             Ok(())
///         })
///     }
///     fn set_if_absent<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Duration) -> StoreFuture<'a, bool> {
///         Box::pin(async move {
///             let mut map = self.live();
///             if map.contains_key(key) {
///                 return Ok(false);
///             }
///             map.insert(key.into(), (value.into(), Instant::now() + ttl));
///             Ok(true)
///         })
///     }
///     fn delete_if<'a>(&'a self, key: &'a str, expected: &'a [u8]) -> StoreFuture<'a, bool> {
///         Box::pin(async move {
///             let mut map = self.live();
///             let holds = map.get(key).is_some_and(|(value, _)| value == expected);
///             Ok(holds && map.remove(key).is_some())
///         })
///     }
/// }
/// ```
pub trait SharedStore: Send + Sync + 'static {
    /// The value under `key`, if there is one, with the time the store will keep it: by the
    /// store's own clock, the one every instance reads. A value reported without expiry is
    /// never adopted as a token, and a lease without expiry is taken for a squatter's.
    ///
    /// A value the store will not hand over whole (of another type, or longer than
    /// [`MAX_VALUE_BYTES`]) is returned as an empty value: it is treated as foreign and replaced.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Stored>>;

    /// Set `key` to `value`, to expire after `ttl`.
    fn set<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Duration) -> StoreFuture<'a, ()>;

    /// Set `key` to `value` with expiry `ttl` only if `key` holds nothing, atomically; whether
    /// it was set. (Redis: `SET key value NX PX ttl`.)
    fn set_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, bool>;

    /// The store's own clock, as the server holding `key` reads it: time since the Unix epoch
    /// (Redis: `TIME`). Tokens are published with their expiry by this clock, sealed, so that a
    /// value put back after it expired (by anyone who can write the store) is never taken for a
    /// live one, whatever expiry it was given. `None` (the default) when the store has no clock
    /// to offer; then only the store's expiries judge a shared token.
    fn time<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Duration>> {
        let _ = key;
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Delete `key` only if it holds `expected`, atomically; whether it was deleted.
    ///
    /// An empty `expected` (what [`get`](Self::get) returns for a foreign value) also deletes
    /// a value of another type or longer than [`MAX_VALUE_BYTES`], in the same atomic step: a
    /// foreign lease or entry must go, and never as an error (Redis's `WRONGTYPE`), which
    /// would turn sharing off.
    fn delete_if<'a>(&'a self, key: &'a str, expected: &'a [u8]) -> StoreFuture<'a, bool>;
}
