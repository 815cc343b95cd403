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
/// - it is used for at least `min_lifetime` (default 2 s) whatever `L` says, so an endpoint
///   answering `expires_in: 0` or a few milliseconds cannot turn every call into a token
///   request; a server that really rejects it answers 401, which drops it;
/// - it counts as expired `expiry_margin` before the server says it expires (default 10 s,
///   never more than a tenth of the lifetime), to allow for clock skew and the time a request
///   takes;
/// - the first call after the *refresh point* starts one background refresh, while callers
///   keep using the current token. The refresh point is `refresh_ahead` before expiry: 25 % of
///   the usable lifetime, at least 5 s and at most 5 min, plus up to 20 % random jitter so a
///   fleet started together does not refresh in lockstep, never earlier than half-way through
///   the lifetime, and never sooner than `min_fetch_interval` (default 1 s) after the fetch.
///   A token nobody uses is never refreshed: the next call after its expiry fetches;
/// - callers wait only when there is no token or it has expired;
/// - failed fetches are spaced by exponential backoff (1 s doubling to 60 s, with jitter),
///   or longer when the endpoint sends `Retry-After` (honoured up to 10 min);
/// - a fetch running longer than `fetch_timeout` (default 30 s) fails with a timeout;
/// - a token a server rejects (HTTP 401 / gRPC `UNAUTHENTICATED`) is dropped from the cache at
///   most once per `invalidation_interval` (default 5 s), so a server that rejects every token
///   cannot turn each request into a token request.
///
/// Every builder saturates: any `Duration` (including `Duration::MAX`) and any `f64`
/// (including NaN and infinities) gives a policy that never panics.
///
/// ```
/// use std::time::Duration;
/// use tower_oauth2::cache::CachePolicy;
///
/// let policy = CachePolicy::default()
///     .refresh_ahead(0.5, Duration::from_secs(1), Duration::from_secs(600))
///     .backoff(Duration::from_millis(200), Duration::from_secs(30))
///     .min_lifetime(Duration::from_secs(5));
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
    pub(crate) min_lifetime: Duration,
    pub(crate) min_fetch_interval: Duration,
    pub(crate) fetch_timeout: Duration,
    pub(crate) name: std::sync::Arc<str>,
    /// Labels beside `client` that tell sibling clients' metrics apart.
    pub(crate) labels: Vec<(&'static str, std::sync::Arc<str>)>,
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
            min_lifetime: Duration::from_secs(2),
            min_fetch_interval: Duration::from_secs(1),
            fetch_timeout: Duration::from_secs(30),
            name: std::sync::Arc::from("default"),
            labels: Vec::new(),
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

    /// Refresh `fraction` of the usable lifetime before expiry (clamped to `[0, 0.5]`), but at
    /// least `min` and at most `max` before it (and never before half-way through the
    /// lifetime). `max` below `min` counts as `min`.
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

    /// Random extra refresh-ahead time, as a fraction of it (clamped to `[0, 1]`; 0 disables
    /// jitter).
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

    /// The shortest time a token is used, whatever its `expires_in` says (default 2 s).
    pub fn min_lifetime(mut self, lifetime: Duration) -> Self {
        self.min_lifetime = lifetime;
        self
    }

    /// The shortest time between a fetch and the refresh ahead that follows it (default 1 s).
    pub fn min_fetch_interval(mut self, interval: Duration) -> Self {
        self.min_fetch_interval = interval;
        self
    }

    /// The name this cache's metrics are labelled with (`client`, feature `metrics`; default
    /// `default`): say which API or client registration it serves. Never put a secret here.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = std::sync::Arc::from(name.into());
        self
    }

    /// The longest a fetch may run before it fails with a timeout (default 30 s).
    /// [`ClientCredentials`](crate::ClientCredentials) has its own, shorter, request timeout.
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// When to refresh and when to stop using a token fetched at `now`, as durations from `now`
    /// (`None`: never).
    pub(crate) fn plan(&self, now: Instant, stated_expiry: Option<Instant>) -> Plan {
        self.plan_jittered(now, stated_expiry, random_unit(), true)
    }

    /// [`plan`](Self::plan) for a token another cache handed out: its expiry is taken as it is,
    /// never stretched to `min_lifetime` (that cache may have stretched it already, and a
    /// token near its end stays near its end).
    pub(crate) fn plan_relayed(&self, now: Instant, stated_expiry: Option<Instant>) -> Plan {
        self.plan_jittered(now, stated_expiry, random_unit(), false)
    }

    /// How long after it was issued a token of `lifetime` is due for refresh at the earliest,
    /// whatever the jitter draws: a token older than that is not fresh for any process.
    #[cfg(feature = "shared-cache")]
    pub(crate) fn earliest_refresh(&self, lifetime: Duration) -> Duration {
        let now = Instant::now();
        self.plan_jittered(now, now.checked_add(lifetime), 1.0, true)
            .refresh_in
            .unwrap_or(lifetime)
    }

    fn plan_jittered(
        &self,
        now: Instant,
        stated_expiry: Option<Instant>,
        unit: f64,
        floored: bool,
    ) -> Plan {
        let Some(stated_expiry) = stated_expiry else {
            return Plan {
                refresh_in: None,
                expires_in: None,
            };
        };
        let floor = if floored {
            self.min_lifetime
        } else {
            Duration::ZERO
        };
        let lifetime = stated_expiry.saturating_duration_since(now).max(floor);
        let margin = self.expiry_margin.min(lifetime / 10);
        let usable = lifetime.saturating_sub(margin);
        let ahead = scale(usable, self.refresh_fraction)
            .max(self.refresh_min)
            .min(self.refresh_max);
        let ahead = scale(ahead, 1.0 + self.jitter * unit).min(usable / 2);
        let refresh_in = usable
            .saturating_sub(ahead)
            .max(self.min_fetch_interval)
            .min(usable);
        Plan {
            refresh_in: Some(refresh_in),
            expires_in: Some(usable),
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
        let jittered = (step / 2).saturating_add(scale(step / 2, random_unit()).min(step / 2));
        jittered.max(retry_after.unwrap_or_default().min(self.retry_after_max))
    }
}

/// `duration` times a finite, non-negative `factor`, saturating instead of panicking.
fn scale(duration: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(duration.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// What [`CachePolicy::plan`] decides for one token, counted from when it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) refresh_in: Option<Duration>,
    pub(crate) expires_in: Option<Duration>,
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
        let expires_in = plan.expires_in.unwrap();
        assert_eq!(expires_in, secs(3590));
        let ahead = expires_in - plan.refresh_in.unwrap();
        assert!(ahead >= secs(300) && ahead <= secs(360), "{ahead:?}");
    }

    #[test]
    fn short_tokens_refresh_no_earlier_than_half_way() {
        let now = Instant::now();
        for lifetime in [3, 5, 9, 30] {
            let plan = CachePolicy::default().plan(now, Some(now + secs(lifetime)));
            let expires_in = plan.expires_in.unwrap();
            let refresh_in = plan.refresh_in.unwrap();
            assert!(refresh_in >= expires_in / 2, "lifetime {lifetime}");
            assert!(refresh_in <= expires_in);
        }
    }

    #[test]
    fn tiny_and_past_lifetimes_are_raised_to_the_floor() {
        let now = Instant::now() + secs(10);
        let policy = CachePolicy::default();
        for stated in [now - secs(5), now, now + Duration::from_millis(20)] {
            let plan = policy.plan(now, Some(stated));
            // 2 s, less a tenth as margin.
            assert_eq!(plan.expires_in, Some(Duration::from_millis(1800)));
            assert_eq!(plan.refresh_in, Some(secs(1)), "min_fetch_interval");
        }
        let unfloored = policy
            .clone()
            .min_lifetime(Duration::ZERO)
            .min_fetch_interval(Duration::ZERO)
            .plan(now, Some(now));
        assert_eq!(unfloored.expires_in, Some(Duration::ZERO));
        assert_eq!(unfloored.refresh_in, Some(Duration::ZERO));
    }

    #[test]
    fn no_input_makes_a_policy_panic() {
        let durations = [
            Duration::ZERO,
            Duration::from_nanos(1),
            secs(1),
            Duration::MAX,
        ];
        let fractions = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.0,
            0.0,
            0.5,
            1e300,
        ];
        let now = Instant::now();
        let expiries = [
            None,
            Some(now),
            Some(now + secs(3600)),
            now.checked_add(secs(u64::MAX / 4)),
        ];
        for &a in &durations {
            for &b in &durations {
                for &f in &fractions {
                    let policy = CachePolicy::default()
                        .refresh_ahead(f, a, b)
                        .jitter(f)
                        .backoff(a, b)
                        .expiry_margin(a)
                        .retry_after_max(b)
                        .invalidation_interval(a)
                        .min_lifetime(b)
                        .min_fetch_interval(a)
                        .fetch_timeout(b);
                    for expiry in expiries {
                        let plan = policy.plan(now, expiry);
                        if let (Some(refresh), Some(expires)) = (plan.refresh_in, plan.expires_in) {
                            assert!(refresh <= expires);
                        }
                    }
                    for failures in [0, 1, 2, 31, u32::MAX] {
                        policy.backoff_delay(failures, Some(b));
                    }
                }
            }
        }
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
