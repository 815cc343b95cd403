//! A proof's signature that can be trusted before it is sent: of the size its algorithm has,
//! with no zero ECDSA scalar, and (once per key) checked against the public key the proofs
//! name. (A remote signer's panics, failures and hangs are contained by
//! [`signed_within`](crate::client_auth::signed_within), as for client assertions.)

use rustls::crypto::CryptoProvider;
use rustls::pki_types::alg_id;

use crate::client_auth::assertion::ecdsa_der_to_fixed;
use crate::client_auth::JwsAlgorithm;
use crate::Error;

/// Who signs a remote key's proofs, as errors name it.
pub(super) const SIGNER: &str = "the DPoP proof signer";

/// `signature` as JWS wants it for `algorithm`: ECDSA as `r || s` of fixed size (from DER if
/// need be) with neither scalar zero, EdDSA as its 64 bytes. Anything else is refused before a
/// proof carrying it is sent.
pub(super) fn as_jws(algorithm: JwsAlgorithm, signature: Vec<u8>) -> Result<Vec<u8>, Error> {
    let scalar = algorithm.ecdsa_scalar_len();
    let expected = scalar.map_or(64, |scalar| 2 * scalar);
    let fixed = match scalar {
        Some(scalar) if signature.len() != expected => ecdsa_der_to_fixed(&signature, scalar),
        _ => Some(signature),
    };
    let Some(fixed) = fixed.filter(|fixed| fixed.len() == expected) else {
        let forms = if scalar.is_some() {
            format!("r || s of {expected} bytes or DER")
        } else {
            format!("{expected} bytes")
        };
        return Err(Error::credential(
            format!("{SIGNER} returned a signature that is not a {algorithm} signature ({forms})"),
            false,
        ));
    };
    if let Some(scalar) = scalar {
        let (r, s) = fixed.split_at(scalar);
        if r.iter().all(|&b| b == 0) || s.iter().all(|&b| b == 0) {
            return Err(Error::credential(
                format!("{SIGNER} returned an {algorithm} signature with r or s zero, which no server accepts"),
                false,
            ));
        }
    }
    Ok(fixed)
}

/// Whether `signature` (as JWS has it) of `message` verifies with `public_key` (the point or
/// the Ed25519 key), with the crypto provider's verifiers; a provider without a verifier for
/// `algorithm` cannot tell, and the signature is taken.
pub(super) fn verify(
    provider: &CryptoProvider,
    algorithm: JwsAlgorithm,
    public_key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    let (key_id, signature_id) = match algorithm {
        JwsAlgorithm::ES256 => (alg_id::ECDSA_P256, alg_id::ECDSA_SHA256),
        JwsAlgorithm::ES384 => (alg_id::ECDSA_P384, alg_id::ECDSA_SHA384),
        _ => (alg_id::ED25519, alg_id::ED25519),
    };
    let Some(verifier) = provider
        .signature_verification_algorithms
        .all
        .iter()
        .find(|v| v.public_key_alg_id() == key_id && v.signature_alg_id() == signature_id)
    else {
        return Ok(());
    };
    // webpki's ECDSA verifiers take the DER form.
    let signature = match algorithm.ecdsa_scalar_len() {
        Some(scalar) => fixed_to_der(signature, scalar),
        None => signature.to_vec(),
    };
    verifier
        .verify_signature(public_key, message, &signature)
        .map_err(|_| {
            Error::credential(
                format!(
                    "{SIGNER}'s signature does not verify with the public key given to \
                     DpopKey::from_signer: they are not one key pair (or the signer signs \
                     something other than the {algorithm} signature of the message it is given)"
                ),
                false,
            )
        })
}

/// `r || s` (each `scalar` bytes) as a DER `SEQUENCE { INTEGER r, INTEGER s }`.
fn fixed_to_der(signature: &[u8], scalar: usize) -> Vec<u8> {
    let mut integers = Vec::with_capacity(2 * scalar + 6);
    for half in signature.chunks(scalar.max(1)).take(2) {
        let first = half.iter().position(|&b| b != 0).unwrap_or(half.len() - 1);
        let digits = &half[first..];
        let pad = digits[0] & 0x80 != 0;
        integers.push(0x02);
        integers.push((digits.len() + usize::from(pad)) as u8);
        if pad {
            integers.push(0);
        }
        integers.extend_from_slice(digits);
    }
    let mut der = Vec::with_capacity(integers.len() + 2);
    der.push(0x30);
    der.push(integers.len() as u8);
    der.extend(integers);
    der
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_and_der_convert_both_ways() {
        let mut fixed = vec![0u8; 64];
        fixed[1] = 0x80; // r: a leading zero byte, then a high bit
        fixed[63] = 1; // s: 1
        let der = fixed_to_der(&fixed, 32);
        assert_eq!(ecdsa_der_to_fixed(&der, 32).unwrap(), fixed);
        assert_eq!(&der[..4], &[0x30, der.len() as u8 - 2, 0x02, 32]);
    }

    #[test]
    fn sizes_and_zero_scalars_are_checked() {
        assert!(as_jws(JwsAlgorithm::EdDSA, vec![1; 64]).is_ok());
        for len in [0, 63, 65, 16 * 1024] {
            let error = as_jws(JwsAlgorithm::EdDSA, vec![1; len]).unwrap_err();
            assert!(error.to_string().contains("64 bytes"), "{error}");
        }
        assert!(as_jws(JwsAlgorithm::ES384, vec![1; 96]).is_ok());
        let error = as_jws(JwsAlgorithm::ES384, vec![1; 64]).unwrap_err();
        assert!(error.to_string().contains("96 bytes"), "{error}");
        let mut zero_s = vec![1; 64];
        zero_s[32..].fill(0);
        assert!(as_jws(JwsAlgorithm::ES256, zero_s).is_err());
        assert!(as_jws(JwsAlgorithm::ES256, vec![0; 64]).is_err());
    }
}
