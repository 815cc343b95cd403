//! Each thread's own copies of the headers it sends, and the epoch that tells it when to drop
//! them.
//!
//! Cloning one shared `HeaderValue` bumps one reference count; with every core doing that on
//! every request, its cache line would bounce between cores. So each thread keeps its own copy
//! (its own allocation, zeroized when the last clone of it drops), looked up by the cache's
//! dense slot number: no hashing and no allocation on the fast path, however many caches a
//! thread uses.
//!
//! Whenever a cache changes what callers may send (a new token, a rejected one, a refresh that
//! falls due, a dropped cache) it bumps the global [`EPOCH`]. A thread whose copies were made in
//! an older epoch stops trusting all of them: at its next request it drops (and zeroizes) every
//! copy its cache no longer holds, and re-checks the others. So a copy never outlives its entry
//! by more than that thread's next request; threads that exit drop theirs with their
//! thread-locals.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;
use zeroize::Zeroizing;

use crate::clock::{coarse_now, Ticks};

/// Bumped on every change that may make a thread's copy wrong.
static EPOCH: AtomicU64 = AtomicU64::new(1);

/// The current epoch. Read it *before* reading the entry a copy is made from, so that a change
/// that lands in between makes the copy stale at once.
#[inline]
pub(crate) fn epoch() -> u64 {
    EPOCH.load(Ordering::Acquire)
}

/// Every thread drops its copies before its next lookup.
pub(crate) fn bump() {
    EPOCH.fetch_add(1, Ordering::AcqRel);
}

struct Copy {
    generation: u64,
    header: HeaderValue,
    /// Until when (coarse clock) this copy may be sent without asking the cache.
    check_at: Ticks,
}

struct Copies {
    epoch: u64,
    by_slot: Vec<Option<Copy>>,
}

thread_local! {
    static COPIES: RefCell<Copies> = const {
        RefCell::new(Copies { epoch: 0, by_slot: Vec::new() })
    };
}

/// This thread's copy of the header for cache `slot`, if it may be sent now, with its
/// generation.
#[inline]
pub(crate) fn lookup(slot: usize) -> Option<(HeaderValue, u64)> {
    let epoch = epoch();
    COPIES
        .try_with(|copies| {
            let copies = copies.try_borrow().ok()?;
            if copies.epoch != epoch {
                return None;
            }
            let copy = copies.by_slot.get(slot)?.as_ref()?;
            if coarse_now() >= copy.check_at {
                return None;
            }
            Some((copy.header.clone(), copy.generation))
        })
        .ok()
        .flatten()
}

/// Keep (or re-arm) this thread's copy of `header` for cache `slot` until `check_at`, and hand
/// out a clone of it. `epoch` is what [`epoch`] said before the entry was read;
/// `still_current(slot, generation)` says whether a cache still holds a token.
pub(crate) fn keep(
    slot: usize,
    epoch: u64,
    generation: u64,
    header: &HeaderValue,
    check_at: Ticks,
    still_current: impl Fn(usize, u64) -> bool,
) -> HeaderValue {
    let kept = COPIES.try_with(|copies| {
        let mut copies = copies.try_borrow_mut().ok()?;
        if copies.epoch != epoch {
            // Any copy may be stale now. Drop (and so zeroize) those no longer current; the
            // rest are asked about again at their next use, without a new allocation.
            for (slot, copy) in copies.by_slot.iter_mut().enumerate() {
                let current = copy
                    .as_ref()
                    .is_some_and(|copy| still_current(slot, copy.generation));
                match copy {
                    Some(copy) if current => copy.check_at = 0,
                    _ => *copy = None,
                }
            }
            copies.epoch = epoch;
        }
        if copies.by_slot.len() <= slot {
            copies.by_slot.resize_with(slot + 1, || None);
        }
        let copy = &mut copies.by_slot[slot];
        match copy {
            Some(copy) if copy.generation == generation => copy.check_at = check_at,
            _ => {
                *copy = Some(Copy {
                    generation,
                    header: private_copy(header)?,
                    check_at,
                })
            }
        }
        copy.as_ref().map(|copy| copy.header.clone())
    });
    kept.ok().flatten().unwrap_or_else(|| header.clone())
}

/// Drop this thread's copy for `slot` (its cache is going away).
pub(crate) fn forget(slot: usize) {
    let _ = COPIES.try_with(|copies| {
        if let Ok(mut copies) = copies.try_borrow_mut() {
            if let Some(copy) = copies.by_slot.get_mut(slot) {
                *copy = None;
            }
        }
    });
}

/// How many copies this thread holds, for tests.
#[cfg(test)]
pub(crate) fn held() -> usize {
    COPIES.with(|copies| copies.borrow().by_slot.iter().flatten().count())
}

/// A copy of `header` in its own zeroizing allocation, so that no other thread touches its
/// reference count.
pub(crate) fn private_copy(header: &HeaderValue) -> Option<HeaderValue> {
    let mut copy = crate::wiped::sensitive_header(Zeroizing::new(header.as_bytes().to_vec()))?;
    copy.set_sensitive(header.is_sensitive());
    Some(copy)
}
