//! [`CachePolicy`]: when a cached token is refreshed, when it counts as expired, and how
//! failed fetches back off. Pure arithmetic on instants; the cache applies it.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The timing rules of a [`TokenCache`](crate::TokenCache).
///
/// For a token whose stated lifetime is `L` (from `expires_in`):
///
/// - it counts as expired `expiry_margin` before the server says it expires (default 10 s,
///   never more than a tenth of `L`), to allow for clock skew and the time a request takes;
/// - one background refresh starts `refresh_ahead` before that point: 25 % of the usable
///   lifetime, at least 5 s and at most 5 min, plus up to 20 % random jitter so a fleet
///   started together does not refresh in lockstep, and never earlier than half-way through
///   the lifetime, so short-lived tokens cannot cause a refresh loop;
/// - callers keep using the current token while the refresh runs; they wait only when there is
///   no token or it has expired;
/// - failed fetches are spaced by exponential backoff (1 s doubling to 60 s, with jitter),
///   or longer when the endpoint sends `Retry-After` (honoured up to 10 min);
/// - a token a server rejects (HTTP 401 / gRPC `UNAUTHENTICATED`) is dropped from the cache at
///   most once per `invalidation_interval` (default 5 s), so a server that rejects every token
///   cannot turn each request into a token request.
///
/// ```
/// use std::time::Duration;
/// use tower_oauth2::CachePolicy;
///
/// let policy = CachePolicy::default()
///     .refresh_ahead(0.5, Duration::from_secs(1), Duration::from_secs(600))
///     .backoff(Duration::from_millis(200), Duration::from_secs(30));
/// # let _ = policy;
/// ```
#[derive(Debug, Clone)]
pub struct CachePolicy {
    pub(crate) expiry_margin: Duration,
    pub(crate) refresh_fraction: f64,
    pub(crate) refresh_min: Duration,
    pub(crate) refresh_max: Duration,
    pub(crate) jitter: f64,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) retry_after_max: Duration,
    pub(crate) invalidation_interval: Duration,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            expiry_margin: Duration::from_secs(10),
            refresh_fraction: 0.25,
            refresh_min: Duration::from_secs(5),
            refresh_max: Duration::from_secs(300),
            jitter: 0.2,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            retry_after_max: Duration::from_secs(600),
            invalidation_interval: Duration::from_secs(5),
        }
    }
}

impl CachePolicy {
    /// How long before its stated expiry a token stops being used (capped at a tenth of its
    /// lifetime).
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.expiry_margin = margin;
        self
    }

    /// Start the background refresh `fraction` of the usable lifetime before expiry, clamped to
    /// `[min, max]` (and never before half-way through the lifetime).
    pub fn refresh_ahead(mut self, fraction: f64, min: Duration, max: Duration) -> Self {
        self.refresh_fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 0.5)
        } else {
            0.25
        };
        self.refresh_min = min;
        self.refresh_max = max.max(min);
        self
    }

    /// Random extra refresh-ahead time, as a fraction of it (0 disables jitter).
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// Exponential backoff after failed fetches: the first wait is about `initial`, doubling up
    /// to `max`.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max.max(initial);
        self
    }

    /// The longest `Retry-After` that is honoured.
    pub fn retry_after_max(mut self, max: Duration) -> Self {
        self.retry_after_max = max;
        self
    }

    /// The least time between two invalidations of a rejected token.
    pub fn invalidation_interval(mut self, interval: Duration) -> Self {
        self.invalidation_interval = interval;
        self
    }

    /// When to refresh and when to stop using a token fetched at `now`.
    pub(crate) fn plan(&self, now: Instant, stated_expiry: Option<Instant>) -> Plan {
        let Some(stated_expiry) = stated_expiry else {
            return Plan {
                refresh_at: None,
                expires_at: None,
            };
        };
        let lifetime = stated_expiry.saturating_duration_since(now);
        let margin = self.expiry_margin.min(lifetime / 10);
        // A token already past its expiry is expired now, not at some instant before it.
        let expires_at = stated_expiry.checked_sub(margin).unwrap_or(now).max(now);
        let usable = expires_at.saturating_duration_since(now);
        let ahead = usable
            .mul_f64(self.refresh_fraction)
            .clamp(self.refresh_min, self.refresh_max);
        let ahead = ahead
            .mul_f64(1.0 + self.jitter * random_unit())
            .min(usable / 2);
        Plan {
            refresh_at: Some(expires_at.checked_sub(ahead).unwrap_or(now)),
            expires_at: Some(expires_at),
        }
    }

    /// How long to wait after the `failures`-th consecutive failure.
    pub(crate) fn backoff_delay(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let exponent = failures.saturating_sub(1).min(30);
        let step = self
            .backoff_initial
            .saturating_mul(1u32 << exponent)
            .min(self.backoff_max);
        // "Equal jitter": never less than half the step, so the schedule stays a bound.
        let jittered = step / 2 + (step / 2).mul_f64(random_unit());
        jittered.max(retry_after.unwrap_or_default().min(self.retry_after_max))
    }
}

/// The instants [`CachePolicy::plan`] decides for one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) refresh_at: Option<Instant>,
    pub(crate) expires_at: Option<Instant>,
}

/// A uniform number in `[0, 1)`. Jitter needs spread, not cryptographic quality, and std's
/// randomly keyed hasher gives it without another dependency.
fn random_unit() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn an_hour_long_token_refreshes_minutes_before_expiry() {
        let now = Instant::now();
        let plan = CachePolicy::default().plan(now, Some(now + secs(3600)));
        let expires_at = plan.expires_at.unwrap();
        assert_eq!(expires_at, now + secs(3590));
        let ahead = expires_at - plan.refresh_at.unwrap();
        assert!(ahead >= secs(300) && ahead <= secs(360), "{ahead:?}");
    }

    #[test]
    fn short_tokens_refresh_no_earlier_than_half_way() {
        let now = Instant::now();
        for lifetime in [0, 1, 2, 5, 9] {
            let plan = CachePolicy::default().plan(now, Some(now + secs(lifetime)));
            let expires_at = plan.expires_at.unwrap();
            let refresh_at = plan.refresh_at.unwrap();
            assert!(
                refresh_at >= now + (expires_at - now) / 2,
                "lifetime {lifetime}"
            );
            assert!(refresh_at <= expires_at);
        }
    }

    #[test]
    fn expired_tokens_plan_no_arithmetic_past_now() {
        let now = Instant::now() + secs(10);
        let plan = CachePolicy::default().plan(now, Some(now - secs(5)));
        assert_eq!(plan.expires_at, Some(now));
        assert_eq!(plan.refresh_at, Some(now));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_honours_retry_after() {
        let policy = CachePolicy::default();
        for failures in 1..40 {
            let step = secs(1)
                .saturating_mul(1 << (failures - 1).min(30))
                .min(secs(60));
            let delay = policy.backoff_delay(failures, None);
            assert!(delay >= step / 2 && delay <= step, "{failures}: {delay:?}");
        }
        assert_eq!(policy.backoff_delay(1, Some(secs(120))), secs(120));
        assert_eq!(policy.backoff_delay(1, Some(secs(100_000))), secs(600));
    }
}
