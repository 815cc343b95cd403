//! [`SharedSource`]: the fetch of one process, going through the fleet's shared store first.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::breaker::Breaker;
use super::sealed::{fingerprint, random_tag, Sealer, SharedToken};
use super::{SharedStore, Stored};
use crate::error::BoxError;
use crate::policy::CachePolicy;
use crate::source::{TokenFuture, TokenSource};
use crate::{AccessToken, Error};

/// How often a process that lost the lease looks for the winner's token.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Everything a [`SharedSource`] needs besides the fetch it wraps.
pub(crate) struct SharedConfig {
    pub(crate) store: Arc<dyn SharedStore>,
    /// The entry's key: the store's prefix and a digest of what determines the token.
    pub(crate) key: String,
    /// What the sealing key is derived from: the client secret, or a key the user gave.
    pub(crate) key_material: zeroize::Zeroizing<Vec<u8>>,
    pub(crate) policy: CachePolicy,
    /// How long a lease lasts, and so the longest a process waits for another's fetch.
    pub(crate) lease: Duration,
    pub(crate) default_lifetime: Duration,
}

/// Wraps the process's own fetch (`fetch`): adopt the fleet's token if it is fresh, otherwise
/// fetch under a lease and publish, or wait for whoever holds the lease.
pub(crate) struct SharedSource {
    fetch: Arc<dyn TokenSource>,
    store: Arc<dyn SharedStore>,
    key: String,
    lease_key: String,
    sealer: Sealer,
    policy: CachePolicy,
    lease: Duration,
    default_lifetime: Duration,
    breaker: Breaker,
    /// The token a server last rejected, so that it is neither adopted nor kept in the store.
    rejected: Mutex<Option<[u8; 32]>>,
}

/// Where a shared fetch went wrong.
enum Failure {
    /// The store failed: fetch alone.
    Store(BoxError),
    /// Our own fetch failed: that is the answer.
    Fetch(Error),
}

impl From<BoxError> for Failure {
    fn from(error: BoxError) -> Self {
        Failure::Store(error)
    }
}

impl SharedSource {
    pub(crate) fn new(fetch: Arc<dyn TokenSource>, config: SharedConfig) -> Self {
        SharedSource {
            fetch,
            sealer: Sealer::new(&config.key_material, &config.key),
            lease_key: format!("{}:lease", config.key),
            key: config.key,
            store: config.store,
            policy: config.policy,
            lease: config.lease,
            default_lifetime: config.default_lifetime,
            breaker: Breaker::default(),
            rejected: Mutex::new(None),
        }
    }

    async fn token(&self) -> Result<AccessToken, Error> {
        // The store needs tokio's IO and timers; without them the fetch itself says what is
        // missing (`ErrorKind::Runtime`), which is no failure of the store.
        let usable =
            crate::clock::Runtime::current().is_some_and(|runtime| runtime.timers() != Some(false));
        if !usable || !self.breaker.closed() {
            return self.fetch.token().await;
        }
        match self.through_store().await {
            Ok(token) => Ok(token),
            Err(Failure::Fetch(error)) => Err(error),
            Err(Failure::Store(error)) => {
                self.breaker.trip(&error);
                self.fetch.token().await
            }
        }
    }

    async fn through_store(&self) -> Result<AccessToken, Failure> {
        let waiting_since = Instant::now();
        loop {
            if let Some(token) = self.adoptable().await? {
                return Ok(token);
            }
            let owner = random_tag();
            if self
                .store
                .set_if_absent(&self.lease_key, owner.as_bytes(), self.lease)
                .await?
            {
                return self.fetch_and_publish(&owner).await;
            }
            // Another process is fetching: its token should appear within the lease.
            loop {
                if waiting_since.elapsed() >= self.lease {
                    tracing::info!(
                        target: "tower_oauth2::shared",
                        "no token published within the lease; fetching alone"
                    );
                    return self.fetch.token().await.map_err(Failure::Fetch);
                }
                futures_timer::Delay::new(POLL_EVERY).await;
                if let Some(token) = self.adoptable().await? {
                    return Ok(token);
                }
                if self.store.get(&self.lease_key).await?.is_none() {
                    // Released without a usable token (its fetch failed): take a turn.
                    break;
                }
            }
        }
    }

    /// The shared token, if it is one of ours, not rejected, and fresh by our policy. A rejected
    /// one is removed (only if it is still there).
    async fn adoptable(&self) -> Result<Option<AccessToken>, Failure> {
        let value = self.store.get(&self.key).await?;
        // It answers; a later failure (publishing, say) trips the breaker again.
        self.breaker.reset();
        let Some(Stored { value, .. }) = value else {
            return Ok(None);
        };
        let Some(shared) = self.sealer.open(&value) else {
            tracing::debug!(
                target: "tower_oauth2::shared",
                "the shared entry is not a token of this client; it will be replaced"
            );
            return Ok(None);
        };
        let rejected = *self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        if rejected == Some(fingerprint(&shared.secret)) {
            self.store.delete_if(&self.key, &value).await?;
            return Ok(None);
        }
        if !self.fresh(&shared) {
            return Ok(None);
        }
        tracing::debug!(
            target: "tower_oauth2::shared",
            remaining = ?shared.remaining(),
            "adopted the fleet's token"
        );
        Ok(Some(shared.to_access_token()))
    }

    /// Whether no process would refresh `shared` yet, had it fetched it: judged on its whole
    /// lifetime, with the earliest refresh point jitter allows. (With the lifetime that is left,
    /// a process refreshing a token would find the same token fresh again, and keep it.)
    ///
    /// A token is due a little early (2 % of its lifetime): its `issued_at` was stamped after
    /// the fetch, and this process's refresh may fire a few milliseconds early on the coarse
    /// clock. And a token with less left than the policy's
    /// [`min_lifetime`](CachePolicy::min_lifetime) is not adopted: the cache would use it for
    /// that floor, past its expiry.
    fn fresh(&self, shared: &SharedToken) -> bool {
        let lifetime = shared.lifetime();
        let slack = lifetime / 50;
        shared.age().saturating_add(slack) < self.policy.earliest_refresh(lifetime)
            && shared.remaining() >= self.policy.min_lifetime.max(Duration::from_millis(1))
    }

    async fn fetch_and_publish(&self, owner: &str) -> Result<AccessToken, Failure> {
        // The previous holder may have published and released between our look and our lease.
        let fetched = match self.adoptable().await {
            Ok(Some(token)) => Ok(token),
            Ok(None) => self.fetch_and_publish_now().await,
            Err(error) => Err(error),
        };
        let released = self
            .store
            .delete_if(&self.lease_key, owner.as_bytes())
            .await;
        if let Err(error) = released {
            self.breaker.trip(&error);
        }
        fetched
    }

    async fn fetch_and_publish_now(&self) -> Result<AccessToken, Failure> {
        let fetched = self.fetch.token().await;
        let token = fetched.map_err(Failure::Fetch)?;
        // The token is good whatever the store does; its failure only opens the breaker.
        if let Err(error) = self.publish(&token).await {
            self.breaker.trip(&error);
        }
        Ok(token)
    }

    async fn publish(&self, token: &AccessToken) -> Result<(), BoxError> {
        let shared = SharedToken::issued_now(token, self.default_lifetime);
        let Some(value) = self.sealer.seal(&shared) else {
            return Err("could not encrypt the token for the shared store".into());
        };
        let ttl = shared.remaining().max(Duration::from_millis(1));
        self.store.set(&self.key, &value, ttl).await
    }
}

impl TokenSource for SharedSource {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(SharedSource::token(self))
    }

    /// The next fetch deletes the fleet's entry if it still holds `token`, and fetches anew.
    fn invalidate(&self, token: &AccessToken) -> bool {
        *self.rejected.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(fingerprint(token.secret()));
        true
    }
}

impl std::fmt::Debug for SharedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSource")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
