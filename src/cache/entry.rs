//! A cached token with everything the per-request path needs precomputed: its header, its
//! generation, and its deadlines on both clocks. Pure: what an entry is worth at an instant is
//! decided here, from the instants alone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::HeaderValue;
use zeroize::Zeroizing;

use crate::clock::{coarse_deadline, coarse_now, Ticks};
use crate::policy::CachePolicy;
use crate::token::now;
use crate::{AccessToken, Error};

/// Generations are unique across every cache in the process.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// The generation the next entry will have (or a later one's).
pub(crate) fn next_generation() -> u64 {
    GENERATIONS.load(Ordering::Relaxed)
}

/// A cached token with everything the fast path needs precomputed.
pub(crate) struct Entry {
    pub(crate) token: AccessToken,
    pub(crate) header: HeaderValue,
    pub(crate) generation: u64,
    /// On tokio's clock, which tests may pause.
    pub(crate) refresh_at: Option<Instant>,
    pub(crate) expires_at: Option<Instant>,
    /// The same two deadlines on the coarse clock, which no pause stops.
    pub(crate) fresh_until: Ticks,
    pub(crate) usable_until: Ticks,
    /// Fetched while tokio's clock did not follow real time (`tokio::time::pause`): the fast
    /// path cannot see that clock, so every use of this entry asks the slow path.
    pub(crate) virtual_clock: bool,
    /// How long it may be used from when it was fetched, for metrics.
    pub(crate) lifetime: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    Fresh,
    /// Still usable, but a refresh should start.
    Due,
    Expired,
}

impl Entry {
    pub(crate) fn freshness(&self) -> Freshness {
        self.freshness_at(coarse_now(), now())
    }

    pub(crate) fn freshness_at(&self, coarse: Ticks, now: Instant) -> Freshness {
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

impl Entry {
    /// Its token as the cache hands it out: expiring when the cache stops using it.
    pub(crate) fn relayed(&self) -> AccessToken {
        self.token.relayed(self.expires_at)
    }

    /// `token`, fetched now, planned by `policy`.
    pub(crate) fn new(token: AccessToken, policy: &CachePolicy) -> Result<Entry, Error> {
        let header = authorization_header(&token)?;
        let (fetched_at, virtual_clock) = runs_on_a_virtual_clock();
        let coarse = coarse_now();
        let plan = if token.is_relayed() {
            policy.plan_relayed(fetched_at, token.usable_until())
        } else {
            policy.plan(fetched_at, token.expires_at())
        };
        Ok(Entry {
            token,
            header,
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            refresh_at: plan.refresh_in.and_then(|d| fetched_at.checked_add(d)),
            expires_at: plan.expires_in.and_then(|d| fetched_at.checked_add(d)),
            fresh_until: coarse_deadline(coarse, plan.refresh_in),
            usable_until: coarse_deadline(coarse, plan.expires_in),
            virtual_clock,
            lifetime: plan.expires_in,
        })
    }
}

/// Whether tokio's clock is not following real time: it was paused (and maybe advanced) by a
/// test. Tokio's reading is bracketed by two real ones: a real runtime's clock falls between
/// them (with `test-util`, unpaused, a few nanoseconds before), a paused one lags by at least
/// the time since it was paused, or leads once advanced. Bracketing, not comparing one pair of
/// reads, so that a thread preempted between reads is never taken for a paused clock (which
/// would send every request of that token's life down the slow path).
fn runs_on_a_virtual_clock() -> (Instant, bool) {
    let before = Instant::now();
    let tokio_now = now();
    let after = Instant::now();
    (tokio_now, outside_real_time(before, tokio_now, after))
}

/// Whether tokio's reading `tokio_now` lies outside `[before - LAG, after]`, the real time
/// around it.
fn outside_real_time(before: Instant, tokio_now: Instant, after: Instant) -> bool {
    const LAG: Duration = Duration::from_micros(5);
    tokio_now > after || tokio_now.checked_add(LAG).is_some_and(|t| t < before)
}

/// `Bearer <token>` (or `DPoP <token>` for a DPoP-bound one), marked sensitive so that
/// logging layers redact it, in memory that is zeroized when the last copy drops.
fn authorization_header(token: &AccessToken) -> Result<HeaderValue, Error> {
    let scheme: &[u8] = match token.dpop() {
        Some(_) => b"DPoP ",
        None => b"Bearer ",
    };
    let mut value = Zeroizing::new(Vec::with_capacity(scheme.len() + token.secret().len()));
    value.extend_from_slice(scheme);
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

    #[test]
    fn a_thread_preempted_between_the_clock_reads_is_not_taken_for_a_paused_clock() {
        let before = Instant::now();
        let tokio_now = before + Duration::from_nanos(40);
        // Descheduled for a millisecond after reading tokio's clock (a busy machine).
        let after = before + Duration::from_millis(1);
        assert!(!outside_real_time(before, tokio_now, after));
        // A paused clock lags (paused a while ago) or leads (advanced by the test).
        assert!(outside_real_time(
            before,
            before - Duration::from_millis(2),
            after
        ));
        assert!(outside_real_time(
            before,
            after + Duration::from_secs(60),
            after
        ));
    }
    use crate::clock::ticks;

    fn entry(lifetime: Duration) -> Entry {
        let token = AccessToken::new("t").with_lifetime(lifetime);
        let policy = CachePolicy::default().jitter(0.0);
        Entry::new(token, &policy).unwrap()
    }

    #[test]
    fn an_entry_is_fresh_then_due_then_expired_on_either_clock() {
        let entry = entry(Duration::from_secs(100));
        // Defaults: usable until 10 s before expiry (90 s), refreshed a quarter of that before.
        let fetched = entry.expires_at.unwrap() - Duration::from_secs(90);
        let refresh_after = entry.refresh_at.unwrap() - fetched;
        assert!(refresh_after.abs_diff(Duration::from_millis(67_500)) < Duration::from_millis(1));
        let coarse = entry.fresh_until;
        assert_eq!(entry.freshness_at(coarse - 1, fetched), Freshness::Fresh);
        assert_eq!(entry.freshness_at(coarse, fetched), Freshness::Due);
        assert_eq!(
            entry.freshness_at(0, fetched + Duration::from_secs(75)),
            Freshness::Due,
            "tokio's clock alone makes it due"
        );
        assert_eq!(
            entry.freshness_at(entry.usable_until, fetched),
            Freshness::Expired
        );
        assert_eq!(
            entry.freshness_at(0, fetched + Duration::from_secs(90)),
            Freshness::Expired,
            "tokio's clock alone expires it"
        );
        let due_for = entry.usable_until - entry.fresh_until;
        assert!(
            due_for.abs_diff(ticks(Duration::from_millis(22_500)))
                < ticks(Duration::from_millis(1))
        );
    }

    #[test]
    fn a_token_without_expiry_is_always_fresh() {
        let token = AccessToken::new("forever");
        let entry = Entry::new(token, &CachePolicy::default()).unwrap();
        assert_eq!(
            entry.freshness_at(u64::MAX - 1, now() + Duration::from_secs(1 << 40)),
            Freshness::Fresh
        );
    }

    #[test]
    fn a_token_that_cannot_be_a_header_is_refused() {
        let token = AccessToken::new("line\nbreak").with_lifetime(Duration::from_secs(60));
        assert!(Entry::new(token, &CachePolicy::default()).is_err());
    }
}
