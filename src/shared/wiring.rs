//! How a client joins the fleet: the entry its tokens live under (a digest of everything that
//! decides which token the endpoint issues, and of the key material it is issued to, nothing
//! secret in the clear), the key its values are sealed with, and how long a lease lasts.

use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use super::{key_digest, SharedConfig, SharedSource, SharedStore};
use crate::cache::CachePolicy;
use crate::client_auth::ClientAuth;
use crate::grant::Grant;
use crate::source::TokenSource;
use crate::ConfigError;

/// What a lease adds to the longest fetch: the store round trips around it (each given up
/// after a few hundred milliseconds) and the time to publish.
const STORE_SLACK: Duration = Duration::from_secs(1);

/// What bounds one fetch of a client: the lease and the wait for another's fetch follow.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FetchShape {
    /// Each HTTP request's timeout.
    pub(crate) request_timeout: Duration,
    /// Whether a fetch may first discover the token endpoint (two metadata locations).
    pub(crate) discovery: bool,
}

impl FetchShape {
    /// The longest a fetch can take: every request it may make, each within the timeout, and
    /// never past the cache's own limit.
    fn longest(self, policy: &CachePolicy) -> Duration {
        let requests = if self.discovery { 3 } else { 1 };
        self.request_timeout
            .saturating_mul(requests)
            .min(policy.fetch_timeout)
    }

    /// How long a lease lasts: longer than the holder's whole fetch and its store round
    /// trips, so that nobody else fetches while the holder still might publish.
    fn lease(self, policy: &CachePolicy) -> Duration {
        self.longest(policy).saturating_add(STORE_SLACK)
    }

    /// How long a process waits for others' fetches before fetching alone: what the cache's
    /// fetch timeout leaves after a token request of its own (but at least half of it, or a
    /// fetch timeout shorter than the request timeout would leave no single flight at all),
    /// and at most two leases.
    fn patience(self, policy: &CachePolicy) -> Duration {
        policy
            .fetch_timeout
            .saturating_sub(self.request_timeout.saturating_add(STORE_SLACK))
            .max(policy.fetch_timeout / 2)
            .min(self.lease(policy).saturating_mul(2))
    }
}

/// A client's shared store, and the sealing key given for it, if any.
#[derive(Clone)]
pub(crate) struct Fleet {
    pub(crate) store: Arc<dyn SharedStore>,
    pub(crate) key: Option<Zeroizing<Vec<u8>>>,
}

/// What decides which token the endpoint issues to a client.
pub(crate) struct Identity<'a> {
    pub(crate) token_url: &'a str,
    pub(crate) auth: &'a ClientAuth,
    pub(crate) grant: &'a Grant,
    /// The thumbprint of the key DPoP tokens are bound to: only holders of that key share them.
    pub(crate) dpop_jkt: Option<&'a str>,
}

impl Fleet {
    /// `fetch`, going through the fleet's store first.
    pub(crate) fn source(
        &self,
        fetch: Arc<dyn TokenSource>,
        identity: Identity<'_>,
        policy: &CachePolicy,
        shape: FetchShape,
        default_lifetime: Duration,
    ) -> Result<SharedSource, ConfigError> {
        let key_material = match &self.key {
            Some(key) if key.len() >= 32 => key.clone(),
            Some(_) => {
                return Err(ConfigError::new(
                    "shared_cache_key",
                    "shared_cache_key: give at least 32 random bytes",
                ))
            }
            // Without one, what only this client holds: its secret or private key.
            None => identity.auth.key_material().ok_or_else(|| {
                ConfigError::new(
                    "shared_cache_key",
                    "shared_cache encrypts tokens with a key derived from the client secret \
                     (or private key): set one, or give a key with .shared_cache_key(..)",
                )
            })?,
        };
        let [client_id, method] = identity.auth.identity();
        let bound_to: String = identity
            .auth
            .key_fingerprint()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let mut parts = vec![identity.token_url, client_id, method, &bound_to];
        parts.extend(identity.grant.identity());
        if let Some(jkt) = identity.dpop_jkt {
            parts.extend(["dpop_jkt", jkt]);
        }
        Ok(SharedSource::new(
            fetch,
            SharedConfig {
                store: self.store.clone(),
                // The digest is a Redis hash tag: the entry, its lease and its rejected list
                // share one cluster slot, so that no script spans slots.
                key: format!("token:{{{}}}", key_digest(&parts)),
                key_material,
                policy: policy.clone(),
                lease: shape.lease(policy),
                patience: shape.patience(policy),
                default_lifetime,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn shape(request_timeout: Duration, discovery: bool) -> FetchShape {
        FetchShape {
            request_timeout,
            discovery,
        }
    }

    #[test]
    fn a_lease_outlasts_every_request_of_a_fetch_and_the_store_round_trips() {
        let policy = CachePolicy::default(); // fetch timeout 30 s
        assert_eq!(shape(S(10), false).lease(&policy), S(11));
        // Two metadata locations and the token request, each up to 10 s; capped at 30 s.
        assert_eq!(shape(S(10), true).lease(&policy), S(31));
        assert_eq!(shape(S(5), true).lease(&policy), S(16));
    }

    #[test]
    fn a_waiter_keeps_time_for_a_request_of_its_own_within_the_fetch_timeout() {
        let policy = CachePolicy::default();
        assert_eq!(shape(S(10), false).patience(&policy), S(19));
        // Never more than two leases.
        assert_eq!(shape(S(1), false).patience(&policy), S(4));
        // A fetch timeout shorter than a request still leaves half of it to wait.
        let short = CachePolicy::default().fetch_timeout(S(4));
        assert_eq!(shape(S(10), false).patience(&short), S(2));
    }
}
