//! Client key pairs for the assertion tests, generated per run, in every PEM format a user may
//! have: PKCS#8, PKCS#1 (RSA) and SEC1 (EC), with the public key as SPKI PEM for the verifier.
#![allow(dead_code)]

use aws_lc_rs::encoding::AsDer;
use base64::Engine as _;
use rcgen::{KeyPair, SignatureAlgorithm};

/// A generated key: its private PEM in one format, its public SPKI PEM, and the JWS `alg` it
/// signs with unless told otherwise.
pub struct TestKey {
    pub name: &'static str,
    pub private_pem: String,
    pub public_pem: String,
    pub alg: jsonwebtoken::Algorithm,
}

fn generate(algorithm: &'static SignatureAlgorithm) -> KeyPair {
    KeyPair::generate_for(algorithm).expect("generate a key pair")
}

pub fn rsa_pkcs8() -> TestKey {
    let key = generate(&rcgen::PKCS_RSA_SHA256);
    TestKey {
        name: "RSA PKCS#8",
        private_pem: key.serialize_pem(),
        public_pem: key.public_key_pem(),
        alg: jsonwebtoken::Algorithm::RS256,
    }
}

pub fn rsa_pkcs1() -> TestKey {
    let key = generate(&rcgen::PKCS_RSA_SHA256);
    TestKey {
        name: "RSA PKCS#1",
        private_pem: pem("RSA PRIVATE KEY", pkcs1_inside(&key.serialize_der())),
        public_pem: key.public_key_pem(),
        alg: jsonwebtoken::Algorithm::RS256,
    }
}

pub fn p256_pkcs8() -> TestKey {
    ec_pkcs8(
        "P-256 PKCS#8",
        &rcgen::PKCS_ECDSA_P256_SHA256,
        jsonwebtoken::Algorithm::ES256,
    )
}

pub fn p384_pkcs8() -> TestKey {
    ec_pkcs8(
        "P-384 PKCS#8",
        &rcgen::PKCS_ECDSA_P384_SHA384,
        jsonwebtoken::Algorithm::ES384,
    )
}

pub fn p256_sec1() -> TestKey {
    ec_sec1(
        "P-256 SEC1",
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        jsonwebtoken::Algorithm::ES256,
    )
}

pub fn p384_sec1() -> TestKey {
    ec_sec1(
        "P-384 SEC1",
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        jsonwebtoken::Algorithm::ES384,
    )
}

pub fn ed25519() -> TestKey {
    let key = generate(&rcgen::PKCS_ED25519);
    TestKey {
        name: "Ed25519 PKCS#8",
        private_pem: key.serialize_pem(),
        public_pem: key.public_key_pem(),
        alg: jsonwebtoken::Algorithm::EdDSA,
    }
}

/// Every key type and format the crate reads.
pub fn all() -> Vec<TestKey> {
    vec![
        rsa_pkcs8(),
        rsa_pkcs1(),
        p256_pkcs8(),
        p256_sec1(),
        p384_pkcs8(),
        p384_sec1(),
        ed25519(),
    ]
}

fn ec_pkcs8(
    name: &'static str,
    algorithm: &'static SignatureAlgorithm,
    alg: jsonwebtoken::Algorithm,
) -> TestKey {
    let key = generate(algorithm);
    TestKey {
        name,
        private_pem: key.serialize_pem(),
        public_pem: key.public_key_pem(),
        alg,
    }
}

fn ec_sec1(
    name: &'static str,
    algorithm: &'static SignatureAlgorithm,
    signing: &'static aws_lc_rs::signature::EcdsaSigningAlgorithm,
    alg: jsonwebtoken::Algorithm,
) -> TestKey {
    let key = generate(algorithm);
    let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(signing, &key.serialize_der())
        .expect("read back the EC key");
    let sec1 = pair.private_key().as_der().expect("SEC1 encoding");
    TestKey {
        name,
        private_pem: pem("EC PRIVATE KEY", sec1.as_ref()),
        public_pem: key.public_key_pem(),
        alg,
    }
}

/// `label` PEM of `der`.
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The PKCS#1 `RSAPrivateKey` a PKCS#8 `PrivateKeyInfo` wraps: its third element's content.
fn pkcs1_inside(pkcs8: &[u8]) -> &[u8] {
    let (_, info, _) = element(pkcs8);
    let (_, _version, rest) = element(info);
    let (_, _algorithm, rest) = element(rest);
    let (tag, private_key, _) = element(rest);
    assert_eq!(tag, 0x04, "PKCS#8 private key is an OCTET STRING");
    private_key
}

fn element(bytes: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = bytes[0];
    let (len, header) = match bytes[1] {
        short @ 0..=0x7f => (usize::from(short), 2),
        long => {
            let count = usize::from(long & 0x7f);
            let len = bytes[2..2 + count]
                .iter()
                .fold(0usize, |len, byte| len << 8 | usize::from(*byte));
            (len, 2 + count)
        }
    };
    (tag, &bytes[header..header + len], &bytes[header + len..])
}
