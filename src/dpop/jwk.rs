//! A public key as the JWK a DPoP proof carries, and its RFC 7638 thumbprint, read from the
//! key's SubjectPublicKeyInfo (what rustls and KMS APIs give). Only the kinds DPoP servers
//! accept are read: P-256 (`ES256`), P-384 (`ES384`) and Ed25519 (`EdDSA`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::client_auth::JwsAlgorithm;

/// DER of the OIDs that tell the kinds apart.
const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// The algorithm a key of this SubjectPublicKeyInfo signs with, and its JWK with the members
/// RFC 7638 hashes, in its order and without whitespace (so it is its own canonical form).
pub(crate) fn from_spki(spki: &[u8]) -> Result<(JwsAlgorithm, String), &'static str> {
    let contains = |oid: &[u8]| spki.windows(oid.len()).any(|window| window == oid);
    // The key is the BIT STRING that ends the structure.
    let tail = |len: usize| spki.len().checked_sub(len).map(|at| &spki[at..]);
    if contains(ED25519) {
        let x = tail(32).ok_or("a truncated Ed25519 public key")?;
        let jwk = format!(
            r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(x)
        );
        return Ok((JwsAlgorithm::EdDSA, jwk));
    }
    if contains(EC_PUBLIC_KEY) {
        let (algorithm, crv, size) = if contains(P256) {
            (JwsAlgorithm::ES256, "P-256", 32)
        } else if contains(P384) {
            (JwsAlgorithm::ES384, "P-384", 48)
        } else {
            return Err("an EC key on a curve other than P-256 or P-384");
        };
        let point = tail(1 + 2 * size).ok_or("a truncated EC public key")?;
        if point[0] != 0x04 {
            return Err("a compressed EC public key");
        }
        let (x, y) = point[1..].split_at(size);
        let jwk = format!(
            r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(x),
            URL_SAFE_NO_PAD.encode(y)
        );
        return Ok((algorithm, jwk));
    }
    Err("not a P-256, P-384 or Ed25519 public key")
}
