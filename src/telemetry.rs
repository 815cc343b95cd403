//! What the cache reports through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`), labelled `client` with [`CachePolicy::name`](crate::CachePolicy::name). Without
//! the feature, every call here compiles to nothing.
//!
//! | name | kind | what |
//! |---|---|---|
//! | `tower_oauth2_token_fetches_total` | counter, `outcome` = `ok`, `error`, `timeout` | fetches that ended |
//! | `tower_oauth2_token_fetch_duration_seconds` | histogram | how long each fetch took |
//! | `tower_oauth2_token_expires_at_seconds` | gauge | Unix time at which the cached token expires |
//! | `tower_oauth2_token_lifetime_seconds` | gauge | the cached token's lifetime when it was fetched |
//! | `tower_oauth2_flight_waiters` | histogram | callers that waited for each fetch |
//! | `tower_oauth2_token_invalidations_total` | counter | tokens dropped because a server rejected them |
//! | `tower_oauth2_consecutive_failures` | gauge | failed fetches in a row (0: healthy; above: backing off) |

use std::time::Duration;

#[cfg(feature = "metrics")]
use std::sync::Arc;

/// The label every metric of one cache carries.
#[derive(Clone, Debug, Default)]
pub(crate) struct Metrics {
    #[cfg(feature = "metrics")]
    client: Arc<str>,
}

impl Metrics {
    pub(crate) fn new(name: &str) -> Self {
        let _ = name;
        Metrics {
            #[cfg(feature = "metrics")]
            client: Arc::from(name),
        }
    }

    /// A fetch ended with `outcome` (`ok`, `error`, `timeout`) after `took`.
    pub(crate) fn fetched(&self, outcome: &'static str, took: Duration) {
        let _ = (outcome, took);
        #[cfg(feature = "metrics")]
        {
            let client = self.client.clone();
            metrics::counter!("tower_oauth2_token_fetches_total", "client" => client.clone(), "outcome" => outcome)
                .increment(1);
            metrics::histogram!("tower_oauth2_token_fetch_duration_seconds", "client" => client)
                .record(took.as_secs_f64());
        }
    }

    /// A token valid for `lifetime` from now is cached.
    pub(crate) fn installed(&self, lifetime: Option<Duration>) {
        let _ = lifetime;
        #[cfg(feature = "metrics")]
        if let Some(lifetime) = lifetime {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let client = self.client.clone();
            metrics::gauge!("tower_oauth2_token_expires_at_seconds", "client" => client.clone())
                .set((now + lifetime).as_secs_f64());
            metrics::gauge!("tower_oauth2_token_lifetime_seconds", "client" => client)
                .set(lifetime.as_secs_f64());
        }
    }

    /// `waiters` callers waited for a fetch that just ended.
    pub(crate) fn flight_waiters(&self, waiters: usize) {
        let _ = waiters;
        #[cfg(feature = "metrics")]
        metrics::histogram!("tower_oauth2_flight_waiters", "client" => self.client.clone())
            .record(waiters as f64);
    }

    pub(crate) fn invalidated(&self) {
        #[cfg(feature = "metrics")]
        metrics::counter!("tower_oauth2_token_invalidations_total", "client" => self.client.clone())
            .increment(1);
    }

    /// `failures` fetches in a row have failed (0: the last one succeeded).
    pub(crate) fn failures(&self, failures: u32) {
        let _ = failures;
        #[cfg(feature = "metrics")]
        metrics::gauge!("tower_oauth2_consecutive_failures", "client" => self.client.clone())
            .set(f64::from(failures));
    }
}
