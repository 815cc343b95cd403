//! How a client joins the fleet: the entry its tokens live under (a digest of everything that
//! decides which token the endpoint issues, nothing secret), the key its values are sealed
//! with, and how long a lease lasts.

use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use super::{key_digest, SharedConfig, SharedSource, SharedStore};
use crate::cache::CachePolicy;
use crate::client_auth::ClientAuth;
use crate::grant::Grant;
use crate::source::TokenSource;
use crate::ConfigError;

/// The longest a process waits for another's fetch before fetching itself.
const LEASE: Duration = Duration::from_secs(5);

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
        fetch_timeout: Duration,
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
        let mut parts = vec![identity.token_url, client_id, method];
        parts.extend(identity.grant.identity());
        if let Some(jkt) = identity.dpop_jkt {
            parts.extend(["dpop_jkt", jkt]);
        }
        Ok(SharedSource::new(
            fetch,
            SharedConfig {
                store: self.store.clone(),
                key: format!("token:{}", key_digest(&parts)),
                key_material,
                policy: policy.clone(),
                lease: LEASE.min(fetch_timeout),
                default_lifetime,
            },
        ))
    }
}
