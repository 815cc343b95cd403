//! Every live cache, by *slot*: a small dense number that identifies a cache to the fast path
//! and to response futures without a reference to it (whose count every core would write on
//! every request).

use std::sync::{Mutex, MutexGuard, Weak};

use super::Inner;

/// Every live cache, by slot. Slots are reused, so each thread's copies stay a short dense
/// vector. A response future reports a rejected token by slot instead of holding a reference
/// to its cache: that reference's counter would be written by every core on every request.
pub(super) static SLOTS: Mutex<Vec<Option<Weak<Inner>>>> = Mutex::new(Vec::new());

pub(super) fn slots() -> MutexGuard<'static, Vec<Option<Weak<Inner>>>> {
    SLOTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The cache in `slot` that handed out the token of `generation`: none when that cache is gone,
/// even if another cache has taken its slot since (that one was born after `generation`).
pub(crate) fn cache_in(slot: usize, generation: u64) -> Option<super::TokenCache> {
    // The guard is released before the upgraded reference can drop (and with it, maybe the
    // cache, whose drop takes the same lock).
    let inner = slots()
        .get(slot)
        .and_then(|cache| cache.as_ref()?.upgrade())?;
    (inner.born <= generation).then_some(super::TokenCache { inner })
}

/// The server rejected the token of `generation` that the cache in `slot` handed out.
#[cfg(test)]
pub(crate) fn report_rejected(slot: usize, generation: u64) {
    if let Some(cache) = cache_in(slot, generation) {
        cache.reject(generation);
    }
}

/// Whether the cache in `slot` still holds the token of `generation`.
pub(crate) fn holds_generation(slot: usize, generation: u64) -> bool {
    cache_in(slot, generation).is_some_and(|cache| cache.holds(generation))
}
