//! A public key as the JWK a DPoP proof carries, and its RFC 7638 thumbprint, read from the
//! key's SubjectPublicKeyInfo (what rustls and KMS APIs give). Only the kinds DPoP servers
//! accept are read: P-256 (`ES256`), P-384 (`ES384`) and Ed25519 (`EdDSA`).
//!
//! The DER of such a SubjectPublicKeyInfo is a fixed prefix (the algorithm and curve, the
//! lengths) followed by the key, so the input is compared with each whole prefix and must have
//! exactly its length: a certificate, a key with bytes after it, a compressed point or another
//! curve is refused rather than searched for something that looks like a key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::client_auth::JwsAlgorithm;

/// `SEQUENCE { SEQUENCE { ecPublicKey, prime256v1 }, BIT STRING (65 bytes: 04 || x || y) }`.
const P256_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
];
/// `SEQUENCE { SEQUENCE { ecPublicKey, secp384r1 }, BIT STRING (97 bytes: 04 || x || y) }`.
const P384_PREFIX: &[u8] = &[
    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00, 0x04,
];
/// `SEQUENCE { SEQUENCE { id-Ed25519 }, BIT STRING (32 bytes) }` (RFC 8410).
const ED25519_PREFIX: &[u8] = &[
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A public key DPoP can use, read from its SubjectPublicKeyInfo.
#[derive(Debug)]
pub(crate) struct PublicKey {
    pub(crate) algorithm: JwsAlgorithm,
    /// The JWK with the members RFC 7638 hashes, in its order and without whitespace (so it
    /// is its own canonical form).
    pub(crate) jwk: String,
    /// The key as signature verifiers take it: the uncompressed point (`04 || x || y`) for
    /// ECDSA, the 32 bytes for Ed25519.
    pub(crate) raw: Vec<u8>,
}

/// The key of this SubjectPublicKeyInfo, which must be exactly the DER of a P-256, P-384 or
/// Ed25519 public key; what it is otherwise, for an error.
pub(crate) fn from_spki(spki: &[u8]) -> Result<PublicKey, &'static str> {
    let kinds: [(&[u8], JwsAlgorithm, usize); 3] = [
        (P256_PREFIX, JwsAlgorithm::ES256, 64),
        (P384_PREFIX, JwsAlgorithm::ES384, 96),
        (ED25519_PREFIX, JwsAlgorithm::EdDSA, 32),
    ];
    for (prefix, algorithm, key_len) in kinds {
        let Some(key) = spki.strip_prefix(prefix) else {
            continue;
        };
        if key.len() != key_len {
            return Err(if key.len() > key_len {
                "followed by other bytes (give the SubjectPublicKeyInfo alone)"
            } else {
                "truncated"
            });
        }
        return Ok(match algorithm {
            JwsAlgorithm::EdDSA => PublicKey {
                algorithm,
                jwk: format!(
                    r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                    URL_SAFE_NO_PAD.encode(key)
                ),
                raw: key.to_vec(),
            },
            _ => {
                let crv = if algorithm == JwsAlgorithm::ES256 {
                    "P-256"
                } else {
                    "P-384"
                };
                let (x, y) = key.split_at(key_len / 2);
                let mut raw = Vec::with_capacity(1 + key_len);
                raw.push(0x04);
                raw.extend_from_slice(key);
                PublicKey {
                    algorithm,
                    jwk: format!(
                        r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
                        URL_SAFE_NO_PAD.encode(x),
                        URL_SAFE_NO_PAD.encode(y)
                    ),
                    raw,
                }
            }
        });
    }
    Err(
        "not the DER SubjectPublicKeyInfo of an uncompressed P-256 or P-384 key or an Ed25519 \
         key (a certificate? give its public key, e.g. `openssl x509 -pubkey -noout`)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p256() -> Vec<u8> {
        let mut spki = P256_PREFIX.to_vec();
        spki.extend((1..=64).map(|i| i as u8));
        spki
    }

    #[test]
    fn an_exact_spki_is_read() {
        let key = from_spki(&p256()).unwrap();
        assert_eq!(key.algorithm, JwsAlgorithm::ES256);
        assert_eq!(key.raw.len(), 65);
        assert!(key.jwk.starts_with(r#"{"crv":"P-256","kty":"EC","x":""#));
        let mut ed = ED25519_PREFIX.to_vec();
        ed.extend([7u8; 32]);
        assert_eq!(from_spki(&ed).unwrap().algorithm, JwsAlgorithm::EdDSA);
    }

    #[test]
    fn anything_but_an_exact_spki_is_refused() {
        let mut trailing = p256();
        trailing.push(0x0a);
        assert!(from_spki(&trailing).unwrap_err().contains("followed"));
        let mut short = p256();
        short.pop();
        assert!(from_spki(&short).unwrap_err().contains("truncated"));
        // The same key inside something else (a certificate, a wrapper) is not found there.
        let mut wrapped = vec![0x30, 0x5d, 0x02, 0x01, 0x00];
        wrapped.extend(p256());
        assert!(from_spki(&wrapped).is_err());
        // A compressed point changes the lengths, so the prefix no longer matches.
        let mut compressed = P256_PREFIX[..P256_PREFIX.len() - 1].to_vec();
        compressed[1] = 0x39;
        compressed[24] = 0x22;
        compressed.push(0x02);
        compressed.extend([1u8; 32]);
        assert!(from_spki(&compressed).is_err());
        assert!(from_spki(b"").is_err());
    }
}
