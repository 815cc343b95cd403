//! What the cache reports through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`), labelled `client` with [`CachePolicy::name`](crate::cache::CachePolicy::name), and a
//! sibling client's metrics also `audience` or `scope` with what it asks for. Without
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
//! | `tower_oauth2_shared_store_errors_total` | counter, `cause` = `certificate`, `tls`, `auth`, `timeout`, `other`; no `client` label | failed operations on a [`RedisStore`](crate::shared::RedisStore) |
//! | `tower_oauth2_shared_store_failures` | gauge | failures of the shared store in a row (0: healthy; above: fetching alone, backing off) |
//! | `tower_oauth2_tokens_attached_total` | counter | requests the layer or middleware sent with a token |
//! | `tower_oauth2_requests_replayed_total` | counter | requests sent again after a `401` (a new token, or a DPoP nonce) |
//! | `tower_oauth2_dpop_nonce_retries_total` | counter, `endpoint` = `token`, `resource` | requests retried with a server's DPoP nonce |
//! | `tower_oauth2_keys_evicted_total` | counter | per-request keys dropped by `PerRequestCaches` (labelled by its own name) |
//!
//! The per-request counter (`tokens_attached`) is a handle resolved when the cache is made, so
//! counting costs the fast path no lookup and no allocation.

use std::time::Duration;

use std::sync::Arc;

/// The labels every metric of one cache carries: `client` (the policy's name) and, for a
/// sibling client ([`with_audience`](crate::ClientCredentials::with_audience),
/// [`with_scopes`](crate::ClientCredentials::with_scopes)), what it asks for differently, so
/// that siblings report apart.
#[derive(Clone, Debug, Default)]
pub(crate) struct Metrics {
    #[cfg(feature = "metrics")]
    labels: Arc<[metrics::Label]>,
    /// Resolved once: the fast path increments it without a registry lookup.
    #[cfg(feature = "metrics")]
    attached: Option<metrics::Counter>,
}

impl Metrics {
    pub(crate) fn new(name: &str, extra: &[(&'static str, Arc<str>)]) -> Self {
        let _ = (name, extra);
        #[cfg(feature = "metrics")]
        let labels: Arc<[metrics::Label]> =
            std::iter::once(metrics::Label::new("client", name.to_owned()))
                .chain(
                    extra
                        .iter()
                        .map(|(key, value)| metrics::Label::new(*key, value.to_string())),
                )
                .collect();
        Metrics {
            #[cfg(feature = "metrics")]
            attached: Some(metrics::counter!(
                "tower_oauth2_tokens_attached_total",
                labels.iter()
            )),
            #[cfg(feature = "metrics")]
            labels,
        }
    }

    /// A request went out with a token of this cache's.
    #[inline]
    pub(crate) fn attached(&self) {
        #[cfg(feature = "metrics")]
        if let Some(counter) = &self.attached {
            counter.increment(1);
        }
    }

    /// A request was sent again after a `401`.
    pub(crate) fn replayed(&self) {
        #[cfg(feature = "metrics")]
        metrics::counter!("tower_oauth2_requests_replayed_total", self.labels()).increment(1);
    }

    /// A token request was retried with the token endpoint's DPoP nonce.
    pub(crate) fn dpop_nonce_retried(&self) {
        self.nonce_retried("token");
    }

    /// A resource request is retried with the resource server's DPoP nonce.
    pub(crate) fn resource_nonce_retried(&self) {
        self.nonce_retried("resource");
    }

    fn nonce_retried(&self, endpoint: &'static str) {
        let _ = endpoint;
        #[cfg(feature = "metrics")]
        {
            let mut labels = self.labels.to_vec();
            labels.push(metrics::Label::new("endpoint", endpoint));
            metrics::counter!("tower_oauth2_dpop_nonce_retries_total", labels).increment(1);
        }
    }

    #[cfg(feature = "metrics")]
    fn labels(&self) -> std::slice::Iter<'_, metrics::Label> {
        self.labels.iter()
    }

    /// A fetch ended with `outcome` (`ok`, `error`, `timeout`) after `took`.
    pub(crate) fn fetched(&self, outcome: &'static str, took: Duration) {
        let _ = (outcome, took);
        #[cfg(feature = "metrics")]
        {
            let mut labels = self.labels.to_vec();
            labels.push(metrics::Label::new("outcome", outcome));
            metrics::counter!("tower_oauth2_token_fetches_total", labels).increment(1);
            metrics::histogram!("tower_oauth2_token_fetch_duration_seconds", self.labels())
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
            metrics::gauge!("tower_oauth2_token_expires_at_seconds", self.labels())
                .set((now + lifetime).as_secs_f64());
            metrics::gauge!("tower_oauth2_token_lifetime_seconds", self.labels())
                .set(lifetime.as_secs_f64());
        }
    }

    /// `waiters` callers waited for a fetch that just ended.
    pub(crate) fn flight_waiters(&self, waiters: usize) {
        let _ = waiters;
        #[cfg(feature = "metrics")]
        metrics::histogram!("tower_oauth2_flight_waiters", self.labels()).record(waiters as f64);
    }

    pub(crate) fn invalidated(&self) {
        #[cfg(feature = "metrics")]
        metrics::counter!("tower_oauth2_token_invalidations_total", self.labels()).increment(1);
    }

    /// `failures` fetches in a row have failed (0: the last one succeeded).
    pub(crate) fn failures(&self, failures: u32) {
        let _ = failures;
        #[cfg(feature = "metrics")]
        metrics::gauge!("tower_oauth2_consecutive_failures", self.labels())
            .set(f64::from(failures));
    }

    /// The shared store failed `failures` times in a row (0: it works again).
    #[cfg(feature = "shared-cache")]
    pub(crate) fn store_failures(&self, failures: u32) {
        let _ = failures;
        #[cfg(feature = "metrics")]
        metrics::gauge!("tower_oauth2_shared_store_failures", self.labels())
            .set(f64::from(failures));
    }
}

/// An operation on the shared store failed, for `cause` (`certificate`, `tls`, `auth`,
/// `timeout`, `other`): one per failed operation, and operations pause while the breaker is
/// open, so a wrong CA or password counts once per backoff step.
#[cfg(feature = "redis")]
pub(crate) fn shared_store_failed(cause: &'static str) {
    let _ = cause;
    #[cfg(feature = "metrics")]
    metrics::counter!("tower_oauth2_shared_store_errors_total", "cause" => cause).increment(1);
}
