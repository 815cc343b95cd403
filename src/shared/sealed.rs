//! What goes into the shared store, and how it is sealed.
//!
//! A value is `TO2` + format version (1 byte) + a random 96-bit nonce + AES-256-GCM of the
//! plaintext: for a token, a small JSON document (the token, its scope, and its lifetime as
//! published, in milliseconds); for an entry's rejected list, the fingerprints of the tokens
//! the fleet saw rejected. The value's key is the associated data: a value copied under
//! another key does not open. The AES key is derived with HKDF-SHA256 from the client secret
//! (or a key the user gives) and the entry's key.
//!
//! No process's wall-clock time is sealed: how long a token has left is what the store says
//! ([`Stored::expires_in`](super::Stored::expires_in), Redis's `PTTL`), the one clock the
//! fleet shares; a publisher or reader whose clock is off cannot stretch a token's life. The
//! store's own clock is ([`SharedStore::time`](super::SharedStore::time), Redis's `TIME`): the
//! expiry by that clock, sealed, is what refuses a value someone put back after it expired
//! with a fresh `PTTL`.
//!
//! The crypto comes from the library rustls already uses in this build (see `crate::crypto`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::{fill_random, sha256, Aes256Gcm, NONCE_LEN};
use crate::AccessToken;

/// Version 2: the lifetime as a duration (version 1 carried wall-clock instants).
const MAGIC: &[u8; 4] = b"TO2\x02";
const SALT: &[u8] = b"tower-oauth2 shared cache v1";

/// A token as the fleet shares it.
#[derive(Serialize, Deserialize)]
pub(super) struct SharedToken {
    #[serde(rename = "t")]
    pub(super) secret: String,
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub(super) scope: Option<String>,
    /// Its lifetime when it was published, in milliseconds: with what the store says is
    /// left, how old it is.
    #[serde(rename = "l")]
    lifetime_ms: u64,
    /// When it expires by the store's clock ([`SharedStore::time`](super::SharedStore::time)),
    /// in Unix milliseconds, if the store has one: a value put back after that is dead,
    /// whatever expiry the store was given for it.
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    store_expiry_ms: Option<u64>,
}

impl SharedToken {
    /// `token`, fetched just now: its lifetime is what it has left; `store_now` is the store's
    /// clock now, if it has one.
    pub(super) fn issued_now(
        token: &AccessToken,
        default_lifetime: Duration,
        store_now: Option<Duration>,
    ) -> Self {
        let lifetime = token
            .expires_at()
            .map(|at| at.saturating_duration_since(crate::token::now()))
            .unwrap_or(default_lifetime);
        SharedToken {
            secret: token.secret().to_owned(),
            scope: token.scope().map(str::to_owned),
            lifetime_ms: millis(lifetime),
            store_expiry_ms: store_now.map(|now| millis(now.saturating_add(lifetime))),
        }
    }

    /// How long it has left by the store's clock (`store_now`), when both it and the store
    /// have one.
    pub(super) fn left_by_store_clock(&self, store_now: Option<Duration>) -> Option<Duration> {
        let expiry = Duration::from_millis(self.store_expiry_ms?);
        Some(expiry.saturating_sub(store_now?))
    }

    /// Its whole lifetime, as published.
    pub(super) fn lifetime(&self) -> Duration {
        Duration::from_millis(self.lifetime_ms)
    }

    /// As a token for this process, living `remaining` more.
    pub(super) fn to_access_token(&self, remaining: Duration) -> AccessToken {
        let mut token = AccessToken::new(self.secret.as_str()).with_lifetime(remaining);
        if let Some(scope) = &self.scope {
            token = token.with_scope(scope.clone());
        }
        token
    }
}

impl Drop for SharedToken {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

/// Seals and opens values for one entry key.
pub(super) struct Sealer {
    key: Aes256Gcm,
    aad: Vec<u8>,
}

impl Sealer {
    /// A sealer for the entry `entry_key`, with a key derived from `secret`.
    pub(super) fn new(secret: &[u8], entry_key: &str) -> Self {
        Sealer {
            key: Aes256Gcm::derive(secret, SALT, entry_key.as_bytes()),
            aad: entry_key.as_bytes().to_vec(),
        }
    }

    pub(super) fn seal(&self, token: &SharedToken) -> Option<Vec<u8>> {
        let plain = Zeroizing::new(serde_json::to_vec(token).ok()?);
        self.seal_bytes(&plain)
    }

    /// `plain`, sealed.
    pub(super) fn seal_bytes(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        if !fill_random(&mut nonce) {
            return None;
        }
        let mut sealed = Zeroizing::new(plain.to_vec());
        let tag = self.key.seal(nonce, &self.aad, sealed.as_mut_slice())?;
        let mut value = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len() + tag.len());
        value.extend_from_slice(MAGIC);
        value.extend_from_slice(&nonce);
        value.extend_from_slice(&sealed);
        value.extend_from_slice(&tag);
        Some(value)
    }

    /// The token in `value`, or `None` if it is not one of ours under this key and secret.
    pub(super) fn open(&self, value: &[u8]) -> Option<SharedToken> {
        serde_json::from_slice(&self.open_bytes(value)?).ok()
    }

    /// What `value` seals, or `None` if it is not one of ours under this key and secret.
    pub(super) fn open_bytes(&self, value: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let rest = value.strip_prefix(MAGIC.as_slice())?;
        if rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let mut buffer = Zeroizing::new(sealed.to_vec());
        let len = self
            .key
            .open(nonce, &self.aad, buffer.as_mut_slice())?
            .len();
        buffer.truncate(len);
        Some(buffer)
    }
}

/// A fingerprint of a token's secret, to recognise it without keeping it.
pub(super) fn fingerprint(secret: &str) -> [u8; 32] {
    sha256(&[secret.as_bytes()])
}

/// A short hex digest of `parts`, each length-prefixed so that no two lists collide.
pub(crate) fn key_digest(parts: &[&str]) -> String {
    let lengths: Vec<[u8; 8]> = parts
        .iter()
        .map(|part| (part.len() as u64).to_be_bytes())
        .collect();
    let framed: Vec<&[u8]> = parts
        .iter()
        .zip(&lengths)
        .flat_map(|(part, length)| [length.as_slice(), part.as_bytes()])
        .collect();
    sha256(&framed)
        .iter()
        .take(16)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A random owner tag for a lease.
pub(super) fn random_tag() -> String {
    let mut bytes = [0u8; 16];
    // Without randomness, a constant still works: leases then only tell processes apart by
    // timing, never correctness of the token.
    let _ = fill_random(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> SharedToken {
        SharedToken {
            secret: "the-token".into(),
            scope: Some("read".into()),
            lifetime_ms: 60_000,
            store_expiry_ms: Some(1_000_060_000),
        }
    }

    #[test]
    fn the_store_clock_expiry_bounds_what_is_left() {
        let token = token();
        let at = |ms| Some(Duration::from_millis(ms));
        assert_eq!(
            token.left_by_store_clock(at(1_000_000_000)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            token.left_by_store_clock(at(1_000_070_000)),
            Some(Duration::ZERO)
        );
        assert_eq!(token.left_by_store_clock(None), None);
        let sealer = Sealer::new(b"client-secret", "token:abc");
        let opened = sealer.open(&sealer.seal(&token).unwrap()).unwrap();
        assert_eq!(
            opened.left_by_store_clock(at(1_000_030_000)),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn a_sealed_token_opens_under_its_key_and_secret_only() {
        let sealer = Sealer::new(b"client-secret", "token:abc");
        let value = sealer.seal(&token()).unwrap();
        assert!(!value.windows(9).any(|w| w == b"the-token"));

        let opened = sealer.open(&value).expect("opens");
        assert_eq!(opened.secret, "the-token");
        assert_eq!(opened.scope.as_deref(), Some("read"));
        assert_eq!(opened.lifetime(), Duration::from_secs(60));

        assert!(Sealer::new(b"other-secret", "token:abc")
            .open(&value)
            .is_none());
        assert!(Sealer::new(b"client-secret", "token:xyz")
            .open(&value)
            .is_none());
    }

    #[test]
    fn a_tampered_or_truncated_value_does_not_open() {
        let sealer = Sealer::new(b"client-secret", "token:abc");
        let value = sealer.seal(&token()).unwrap();
        for at in [0, 4, 10, value.len() / 2, value.len() - 1] {
            let mut tampered = value.clone();
            tampered[at] ^= 1;
            assert!(sealer.open(&tampered).is_none(), "byte {at}");
        }
        for len in 0..value.len() {
            assert!(sealer.open(&value[..len]).is_none(), "{len} bytes");
        }
    }

    #[test]
    fn bytes_sealed_under_one_key_open_under_that_key_only() {
        let sealer = Sealer::new(b"client-secret", "token:{abc}:rejected");
        let value = sealer.seal_bytes(&[7u8; 64]).unwrap();
        assert_eq!(sealer.open_bytes(&value).unwrap().as_slice(), &[7u8; 64]);
        assert!(Sealer::new(b"client-secret", "token:{abc}")
            .open_bytes(&value)
            .is_none());
        // A token's value is not a list of fingerprints, nor the reverse, under another key.
        assert!(Sealer::new(b"client-secret", "token:{abc}")
            .open(&value)
            .is_none());
    }

    #[test]
    fn a_version_1_value_with_wall_clock_instants_does_not_open() {
        let sealer = Sealer::new(b"client-secret", "token:abc");
        let mut value = sealer.seal(&token()).unwrap();
        value[3] = 1;
        assert!(sealer.open(&value).is_none());
    }

    #[test]
    fn two_seals_of_one_token_differ() {
        let sealer = Sealer::new(b"client-secret", "token:abc");
        assert_ne!(sealer.seal(&token()), sealer.seal(&token()));
    }
}
