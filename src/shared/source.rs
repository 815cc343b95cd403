//! [`SharedSource`]: the fetch of one process, going through the fleet's shared store first.
//!
//! The entry `token:{d}` holds the sealed token, `token:{d}:lease` the lease, and
//! `token:{d}:rejected` the fingerprints of tokens the fleet saw rejected; `{d}` is a Redis
//! hash tag, so all three live in one cluster slot.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::breaker::Breaker;
use super::sealed::{fingerprint, random_tag, Sealer, SharedToken};
use super::{SharedStore, Stored};
use crate::error::BoxError;
use crate::policy::CachePolicy;
use crate::source::{TokenFuture, TokenSource};
use crate::telemetry::Metrics;
use crate::{AccessToken, Error};

/// How often a process that lost the lease looks for the winner's token.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// The least a shared token must have left to be adopted: more than the store round trips
/// that follow and the request it is first used for need. No more than that: an adopted token
/// goes to the cache as relayed (never stretched to the policy's `min_lifetime`), so a short
/// one is refreshed when it runs out rather than used past its expiry.
const ADOPT_AT_LEAST: Duration = Duration::from_millis(100);

/// A lease expiring later than this (and later than our own lease) was not taken by a member
/// of the fleet: no fetch with a sane request timeout lasts that long. Generous, since
/// members may be configured with request timeouts far longer than ours.
const FOREIGN_LEASE_BEYOND: Duration = Duration::from_secs(300);

/// How many rejected tokens are remembered, by each process and in the store: enough for
/// every token a replay could plausibly bring back, small enough to read on each adoption.
const REJECTED_KEPT: usize = 16;

/// The least time the store remembers a rejected token: a replayed token older than its own
/// lifetime is expired at the endpoint anyway, but the list also outlives short tokens.
const REJECTED_FOR: Duration = Duration::from_secs(3600);

/// Everything a [`SharedSource`] needs besides the fetch it wraps.
pub(crate) struct SharedConfig {
    pub(crate) store: Arc<dyn SharedStore>,
    /// The entry's key: `token:{digest}`, the digest of what determines the token (and the
    /// key material it is bound to), as a hash tag.
    pub(crate) key: String,
    /// What the sealing key is derived from: the client secret, or a key the user gave.
    pub(crate) key_material: zeroize::Zeroizing<Vec<u8>>,
    pub(crate) policy: CachePolicy,
    /// How long a lease lasts: longer than the holder's whole fetch can take.
    pub(crate) lease: Duration,
    /// How long to wait for others' fetches before fetching alone (and publishing).
    pub(crate) patience: Duration,
    pub(crate) default_lifetime: Duration,
}

/// Wraps the process's own fetch (`fetch`): adopt the fleet's token if it is fresh, otherwise
/// fetch under a lease and publish, or wait for whoever holds the lease.
pub(crate) struct SharedSource {
    inner: Arc<Inner>,
}

/// The state a spawned task settling rejections shares with the source.
struct Inner {
    fetch: Arc<dyn TokenSource>,
    store: Arc<dyn SharedStore>,
    key: String,
    lease_key: String,
    rejected_key: String,
    sealer: Sealer,
    rejected_sealer: Sealer,
    policy: CachePolicy,
    lease: Duration,
    patience: Duration,
    default_lifetime: Duration,
    breaker: Breaker,
    rejections: Mutex<Rejections>,
    /// Held while this process rewrites the fleet's rejected list, so that sharing a rejection
    /// and withdrawing it (the identity provider issued the token again) happen in order.
    list_writer: tokio::sync::Mutex<()>,
}

/// Tokens a server rejected, so that none is adopted again.
#[derive(Default)]
struct Rejections {
    /// The last [`REJECTED_KEPT`] fingerprints, from this process and the store, oldest first.
    known: VecDeque<[u8; 32]>,
    /// Rejections this process has not yet shared through the store, with how long the token
    /// had left (how long it must be remembered at least).
    unshared: Vec<([u8; 32], Duration)>,
}

impl Rejections {
    fn remember(&mut self, fingerprint: [u8; 32]) {
        if !self.known.contains(&fingerprint) {
            if self.known.len() == REJECTED_KEPT {
                self.known.pop_front();
            }
            self.known.push_back(fingerprint);
        }
    }

    /// A token this process saw rejected, with how long it had left: remembered, and to be
    /// shared. Bounded like `known`: while the breaker is open nothing is shared, and a
    /// process rejecting token after token must not grow without end (the fleet's list
    /// keeps no more anyway).
    fn reject(&mut self, fingerprint: [u8; 32], left: Duration) {
        self.remember(fingerprint);
        self.unshared.retain(|(known, _)| *known != fingerprint);
        self.unshared.push((fingerprint, left));
        self.cap_unshared();
    }

    /// `unshared` failed to be shared: back in front of what was rejected since.
    fn unshare(&mut self, failed: Vec<([u8; 32], Duration)>) {
        let since = std::mem::replace(&mut self.unshared, failed);
        for (fingerprint, left) in since {
            self.unshared.retain(|(known, _)| *known != fingerprint);
            self.unshared.push((fingerprint, left));
        }
        self.cap_unshared();
    }

    fn cap_unshared(&mut self) {
        let excess = self.unshared.len().saturating_sub(REJECTED_KEPT);
        self.unshared.drain(..excess);
    }

    /// The identity provider issued `fingerprint`'s token to this process again: it vouches
    /// for it anew, so it is no longer rejected here, nor to be shared as rejected.
    fn withdraw(&mut self, fingerprint: &[u8; 32]) {
        self.known.retain(|known| known != fingerprint);
        self.unshared.retain(|(known, _)| known != fingerprint);
    }
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
        let rejected_key = format!("{}:rejected", config.key);
        let breaker = Breaker::new(Metrics::new(&config.policy.name, &config.policy.labels));
        SharedSource {
            inner: Arc::new(Inner {
                fetch,
                sealer: Sealer::new(&config.key_material, &config.key),
                rejected_sealer: Sealer::new(&config.key_material, &rejected_key),
                lease_key: format!("{}:lease", config.key),
                rejected_key,
                key: config.key,
                store: config.store,
                policy: config.policy,
                lease: config.lease,
                patience: config.patience,
                default_lifetime: config.default_lifetime,
                breaker,
                rejections: Mutex::default(),
                list_writer: tokio::sync::Mutex::new(()),
            }),
        }
    }
}

/// Whether the store can be used on this thread: it needs tokio's IO and timers. Without them
/// the fetch itself says what is missing (`ErrorKind::Runtime`), which is no failure of the
/// store.
fn store_usable() -> bool {
    crate::clock::Runtime::current().is_some_and(|runtime| runtime.timers() != Some(false))
}

impl Inner {
    async fn token(&self) -> Result<AccessToken, Error> {
        if !store_usable() || !self.breaker.closed() {
            return self.fetch_own().await;
        }
        match self.through_store().await {
            Ok(token) => Ok(token),
            Err(Failure::Fetch(error)) => Err(error),
            Err(Failure::Store(error)) => {
                self.breaker.trip(&error);
                self.fetch_own().await
            }
        }
    }

    async fn through_store(&self) -> Result<AccessToken, Failure> {
        // Rejections not yet shared (their spawned task did not run, or failed) first, so that
        // no process adopts them meanwhile.
        self.settle_rejections().await?;
        // The lease outlasts any one fetch, so a wait longer than that means holders keep
        // failing or dying; and past our patience, our own fetch would not end within the
        // cache's fetch timeout: fetch alone rather than wait on.
        let give_up_at = crate::clock::far_as_possible(Instant::now(), self.patience);
        // A foreign lease is reported once per fetch, not at every round.
        let mut warned = false;
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
                // A write went through: the store is usable again.
                self.breaker.reset();
                return self.fetch_and_publish(&owner).await;
            }
            // Another process is fetching: its token should appear before its lease expires,
            // and once the lease is gone (released, or expired with its holder), compete again.
            loop {
                // Checked on every turn, also after removing a foreign lease, so that a squatter
                // setting it again and again cannot keep this process from fetching.
                if Instant::now() >= give_up_at {
                    tracing::info!(
                        target: "tower_oauth2::shared",
                        waited = ?self.patience,
                        "no token published while waiting for the lease; fetching alone"
                    );
                    return self.fetch_and_publish_now().await;
                }
                match self.store.get(&self.lease_key).await? {
                    None => break,
                    Some(lease) if self.foreign(&lease) => {
                        if !warned {
                            warned = true;
                            tracing::warn!(
                                target: "tower_oauth2::shared",
                                expires_in = ?lease.expires_in,
                                lease = ?self.lease,
                                "the shared lease has no expiry or outlives any fetch (not set \
                                 by this crate); removing it"
                            );
                        }
                        self.store.delete_if(&self.lease_key, &lease.value).await?;
                        // Then wait like any round, removed or not: a lease that cannot be
                        // removed (or a writer setting it again at once) must not turn this
                        // into a busy loop against the store until our patience runs out.
                        futures_timer::Delay::new(POLL_EVERY).await;
                        break;
                    }
                    Some(_) => {}
                }
                futures_timer::Delay::new(POLL_EVERY).await;
                if let Some(token) = self.adoptable().await? {
                    return Ok(token);
                }
            }
        }
    }

    /// Whether a lease was set by someone else than a process of this fleet: without expiry,
    /// or expiring later than any lease a fleet member could take (leases only run down).
    ///
    /// Not "later than ours": members of one fleet may differ in request timeout (a batch job
    /// at 30 s beside a web service at 2 s, or a rolling deploy changing it), and so in lease.
    /// Removing a longer lease of a member still fetching would make a second token request.
    /// So a lease is foreign only beyond both ours and [`FOREIGN_LEASE_BEYOND`].
    fn foreign(&self, lease: &Stored) -> bool {
        lease
            .expires_in
            .is_none_or(|left| left > self.lease.max(FOREIGN_LEASE_BEYOND))
    }

    /// The shared token, if it is one of ours, not rejected, and fresh by our policy. A rejected
    /// one is removed (only if it is still there).
    async fn adoptable(&self) -> Result<Option<AccessToken>, Failure> {
        let asked_at = Instant::now();
        let Some(stored) = self.store.get(&self.key).await? else {
            return Ok(None);
        };
        let Some(shared) = self.sealer.open(&stored.value) else {
            tracing::debug!(
                target: "tower_oauth2::shared",
                "the shared entry is not a token of this client; it will be replaced"
            );
            return Ok(None);
        };
        // The store's clock is the only one the fleet shares: what it says is left, less the
        // time its answer took to arrive, and never more than the token was published with.
        let Some(store_left) = stored.expires_in else {
            tracing::debug!(
                target: "tower_oauth2::shared",
                "the shared entry has no expiry; it will be replaced"
            );
            return Ok(None);
        };
        let lifetime = shared.lifetime();
        let mut remaining = store_left.min(lifetime).saturating_sub(asked_at.elapsed());
        // A value put back after it expired carries its old expiry by the store's clock, sealed
        // where no writer can change it: dead, whatever `PTTL` it was given.
        if let Some(left) = shared.left_by_store_clock(self.store.time(&self.key).await?) {
            remaining = remaining.min(left);
        }
        let rejected = fingerprint(&shared.secret);
        if self.is_rejected(&rejected) {
            self.store.delete_if(&self.key, &stored.value).await?;
            return Ok(None);
        }
        if !self.fresh(lifetime, remaining) {
            return Ok(None);
        }
        // Another process may have seen it rejected (and a Redis writer put it back).
        self.learn_fleet_rejections().await?;
        if self.is_rejected(&rejected) {
            self.store.delete_if(&self.key, &stored.value).await?;
            return Ok(None);
        }
        self.breaker.reset();
        tracing::debug!(
            target: "tower_oauth2::shared",
            ?remaining,
            "adopted the fleet's token"
        );
        // Relayed: the cache takes its expiry as it is. Its own fetch would stretch a token
        // shorter than `min_lifetime` to that floor, past what the store says is left.
        let token = shared.to_access_token(remaining);
        let until = token.expires_at();
        Ok(Some(token.relayed(until)))
    }

    /// Whether no process would refresh a token of `lifetime` with `remaining` left yet, had it
    /// fetched it: judged on its whole lifetime, with the earliest refresh point jitter allows.
    /// (With the lifetime that is left, a process refreshing a token would find the same token
    /// fresh again, and keep it.)
    ///
    /// A token is due a little early (2 % of its lifetime): its store expiry was set after the
    /// fetch, and this process's refresh may fire a few milliseconds early on the coarse
    /// clock. A token with less than [`ADOPT_AT_LEAST`] left is not adopted. The policy's
    /// [`min_lifetime`](CachePolicy::min_lifetime) is no condition: the adopted token is
    /// relayed (see [`adoptable`](Self::adoptable)), so the cache never stretches it to that
    /// floor, and a fleet of short-lived tokens still shares them.
    fn fresh(&self, lifetime: Duration, remaining: Duration) -> bool {
        let age = lifetime.saturating_sub(remaining);
        let slack = lifetime / 50;
        age.saturating_add(slack) < self.policy.earliest_refresh(lifetime)
            && remaining >= ADOPT_AT_LEAST
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
        let token = self.fetch_own().await.map_err(Failure::Fetch)?;
        // The token is good whatever the store does; its failure only opens the breaker.
        match self.publish(&token).await {
            Ok(()) => self.breaker.reset(),
            Err(error) => self.breaker.trip(&error),
        }
        Ok(token)
    }

    /// A token from the identity provider itself. Identity providers and token proxies often
    /// hand out the same token again until it nears expiry: one issued to us again after a
    /// 401 is vouched for anew, so it is no longer rejected (by this process now; in the
    /// fleet's list once published).
    async fn fetch_own(&self) -> Result<AccessToken, Error> {
        let token = self.fetch.token().await?;
        self.rejections().withdraw(&fingerprint(token.secret()));
        Ok(token)
    }

    /// Store `token` for the fleet, to expire when it does: its lifetime, from now.
    async fn publish(&self, token: &AccessToken) -> Result<(), BoxError> {
        let store_now = self.store.time(&self.key).await?;
        let shared = SharedToken::issued_now(token, self.default_lifetime, store_now);
        let Some(value) = self.sealer.seal(&shared) else {
            return Err("could not encrypt the token for the shared store".into());
        };
        let ttl = shared.lifetime().max(Duration::from_millis(1));
        self.store.set(&self.key, &value, ttl).await?;
        self.withdraw_from_fleet(&fingerprint(&shared.secret)).await
    }

    /// Take `fingerprint` off the fleet's rejected list, if there: its token was just issued
    /// to this process again (see [`fetch_and_publish_now`](Self::fetch_and_publish_now)), and
    /// other processes would otherwise refuse, and delete, the entry just published.
    async fn withdraw_from_fleet(&self, fingerprint: &[u8; 32]) -> Result<(), BoxError> {
        let _writing = self.list_writer.lock().await;
        let (mut listed, kept_for) = self.read_fleet_rejections().await?;
        if !listed.contains(fingerprint) {
            return Ok(());
        }
        listed.retain(|known| known != fingerprint);
        self.write_fleet_rejections(&listed, kept_for.unwrap_or(REJECTED_FOR))
            .await
    }

    fn rejections(&self) -> std::sync::MutexGuard<'_, Rejections> {
        self.rejections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_rejected(&self, fingerprint: &[u8; 32]) -> bool {
        self.rejections().known.contains(fingerprint)
    }

    /// `token` was rejected: never adopt it again, and tell the fleet.
    fn reject(&self, token: &AccessToken) {
        let rejected = fingerprint(token.secret());
        let left = token.expires_at().map_or(self.default_lifetime, |at| {
            at.saturating_duration_since(crate::token::now())
        });
        self.rejections().reject(rejected, left);
    }

    /// The fleet's rejected list, merged into ours; the sealed list and the time the store
    /// keeps it.
    async fn learn_fleet_rejections(&self) -> Result<(Vec<[u8; 32]>, Option<Duration>), BoxError> {
        let (listed, kept_for) = self.read_fleet_rejections().await?;
        let mut rejections = self.rejections();
        for fingerprint in &listed {
            rejections.remember(*fingerprint);
        }
        Ok((listed, kept_for))
    }

    /// The fleet's rejected list as the store holds it (empty if it holds none of ours), and
    /// the time the store keeps it.
    async fn read_fleet_rejections(&self) -> Result<(Vec<[u8; 32]>, Option<Duration>), BoxError> {
        let stored = self.store.get(&self.rejected_key).await?;
        let Some(stored) = stored else {
            return Ok((Vec::new(), None));
        };
        let Some(plain) = self.rejected_sealer.open_bytes(&stored.value) else {
            // Not ours (or another secret's): replaced at the next rejection.
            return Ok((Vec::new(), None));
        };
        let listed: Vec<[u8; 32]> = plain
            .chunks_exact(32)
            .filter_map(|chunk| chunk.try_into().ok())
            .collect();
        Ok((listed, stored.expires_in))
    }

    /// Store `listed` (its last [`REJECTED_KEPT`]) as the fleet's rejected list, for `ttl`.
    async fn write_fleet_rejections(
        &self,
        listed: &[[u8; 32]],
        ttl: Duration,
    ) -> Result<(), BoxError> {
        let start = listed.len().saturating_sub(REJECTED_KEPT);
        let plain = zeroize::Zeroizing::new(listed[start..].concat());
        let Some(value) = self.rejected_sealer.seal_bytes(&plain) else {
            return Err("could not encrypt the rejected tokens for the shared store".into());
        };
        self.store.set(&self.rejected_key, &value, ttl).await
    }

    /// Share this process's rejections through the store, and delete the entry if it holds a
    /// rejected token. Idempotent; what fails stays to be shared at the next fetch.
    async fn settle_rejections(&self) -> Result<(), BoxError> {
        if self.rejections().unshared.is_empty() {
            return Ok(());
        }
        let _writing = self.list_writer.lock().await;
        let unshared = std::mem::take(&mut self.rejections().unshared);
        if unshared.is_empty() {
            return Ok(());
        }
        let settled = self.share_rejections(&unshared).await;
        if settled.is_err() {
            self.rejections().unshare(unshared);
        }
        settled
    }

    async fn share_rejections(&self, unshared: &[([u8; 32], Duration)]) -> Result<(), BoxError> {
        // Read, merge, write: two processes rejecting at once may lose one's addition to the
        // list, but each still refuses its own, and the entry is deleted by both.
        let (mut listed, kept_for) = self.learn_fleet_rejections().await?;
        for (rejected, _) in unshared {
            listed.retain(|known| known != rejected);
            listed.push(*rejected);
        }
        let ttl = unshared
            .iter()
            .map(|(_, left)| *left)
            .chain(kept_for)
            .fold(REJECTED_FOR, Duration::max);
        self.write_fleet_rejections(&listed, ttl).await?;
        // Now the entry: deleted only while it still holds a rejected token.
        if let Some(stored) = self.store.get(&self.key).await? {
            let holds_rejected = self
                .sealer
                .open(&stored.value)
                .is_some_and(|shared| self.is_rejected(&fingerprint(&shared.secret)));
            if holds_rejected {
                self.store.delete_if(&self.key, &stored.value).await?;
            }
        }
        Ok(())
    }
}

impl TokenSource for SharedSource {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(self.inner.token())
    }

    /// The token is never adopted again by this process, and the fleet is told at once (a
    /// spawned task deletes the entry if it still holds `token`, and adds it to the entry's
    /// rejected list), or at this process's next fetch at the latest if that task never runs.
    fn invalidate(&self, token: &AccessToken) -> bool {
        self.inner.reject(token);
        if store_usable() && self.inner.breaker.closed() {
            let inner = self.inner.clone();
            // At once rather than at the next fetch: a process that stops fetching (its traffic
            // moved away) must not leave a rejected token for the others to adopt.
            tokio::spawn(async move {
                if let Err(error) = inner.settle_rejections().await {
                    inner.breaker.trip(&error);
                }
            });
        }
        true
    }
}

impl std::fmt::Debug for SharedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSource")
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::shared::StoreFuture;

    fn fingerprint_of(n: u32) -> [u8; 32] {
        let mut fingerprint = [0u8; 32];
        fingerprint[..4].copy_from_slice(&n.to_be_bytes());
        fingerprint
    }

    /// While the breaker is open nothing is shared, so rejections pile up unshared: bounded,
    /// the newest kept.
    #[test]
    fn rejections_waiting_to_be_shared_are_bounded() {
        let mut rejections = Rejections::default();
        for n in 0..1000 {
            rejections.reject(fingerprint_of(n), Duration::from_secs(60));
        }
        assert_eq!(rejections.unshared.len(), REJECTED_KEPT);
        assert_eq!(rejections.unshared.last().unwrap().0, fingerprint_of(999));

        let failed = std::mem::take(&mut rejections.unshared);
        rejections.reject(fingerprint_of(1000), Duration::from_secs(60));
        rejections.unshare(failed);
        assert_eq!(rejections.unshared.len(), REJECTED_KEPT);
        assert_eq!(rejections.unshared.last().unwrap().0, fingerprint_of(1000));
    }

    /// A store whose lease key holds a foreign lease (no expiry) that it never removes, as a
    /// store refusing the compare-and-delete would; it counts the reads.
    #[derive(Default)]
    struct UnremovableLease {
        reads: AtomicUsize,
    }

    impl SharedStore for UnremovableLease {
        fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Stored>> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let lease = key
                .ends_with(":lease")
                .then(|| Stored::without_expiry(b"squatter".to_vec()));
            Box::pin(async move { Ok(lease) })
        }

        fn set<'a>(&'a self, _: &'a str, _: &'a [u8], _: Duration) -> StoreFuture<'a, ()> {
            Box::pin(async { Ok(()) })
        }

        fn set_if_absent<'a>(
            &'a self,
            _: &'a str,
            _: &'a [u8],
            _: Duration,
        ) -> StoreFuture<'a, bool> {
            Box::pin(async { Ok(false) })
        }

        fn delete_if<'a>(&'a self, _: &'a str, _: &'a [u8]) -> StoreFuture<'a, bool> {
            Box::pin(async { Ok(false) })
        }
    }

    struct Issuing;

    impl TokenSource for Issuing {
        fn token(&self) -> TokenFuture<'_> {
            Box::pin(async { Ok(AccessToken::new("own").with_lifetime(Duration::from_secs(60))) })
        }
    }

    #[tokio::test]
    async fn a_foreign_lease_that_cannot_be_removed_is_polled_not_spun_on() {
        let store = Arc::new(UnremovableLease::default());
        let patience = Duration::from_millis(300);
        let source = SharedSource::new(
            Arc::new(Issuing),
            SharedConfig {
                store: store.clone(),
                key: "token:{test}".into(),
                key_material: zeroize::Zeroizing::new(vec![7; 32]),
                policy: CachePolicy::default(),
                lease: Duration::from_secs(1),
                patience,
                default_lifetime: Duration::from_secs(60),
            },
        );

        let token = source.token().await.unwrap();

        assert_eq!(token.secret(), "own", "fetched alone past the patience");
        // A round every 50 ms reads the entry and the lease (and the entry again after the
        // wait): a few dozen reads in 300 ms, not thousands.
        let rounds = (patience.as_millis() / POLL_EVERY.as_millis()) as usize + 1;
        let reads = store.reads.load(Ordering::Relaxed);
        assert!(
            reads <= rounds * 4,
            "{reads} reads of the store in {patience:?}"
        );
    }
}
