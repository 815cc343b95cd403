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

/// A request that carried a token of the cache in `slot` is sent again after a `401`: with a
/// new token, or (`nonce`) with the resource server's DPoP nonce.
pub(crate) fn count_replay(slot: usize, nonce: bool) {
    let Some(cache) = slots()
        .get(slot)
        .and_then(|cache| cache.as_ref()?.upgrade())
    else {
        return;
    };
    cache.metrics.replayed();
    if nonce {
        cache.metrics.resource_nonce_retried();
    }
}
