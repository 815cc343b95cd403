//! Every choice of crypto library, in one place. The crate compiles none of its own: TLS and
//! `private_key_jwt` signatures go through the rustls crypto provider (the application's
//! installed one, else the one our features select), and the few primitives rustls does not
//! expose (HMAC for `client_secret_jwt`, AES-GCM and HKDF for the shared cache, randomness and
//! SHA-256) come from the library that provider is built on: aws-lc-rs, or ring.

#[cfg(feature = "rustls-no-provider")]
use crate::ConfigError;

/// The process-wide provider if the application installed one (its choice wins), else the one
/// our features select. Never `ClientConfig::builder()`, which panics when rustls was compiled
/// with two providers and none is installed.
#[cfg(feature = "rustls-no-provider")]
pub(crate) fn provider() -> Result<std::sync::Arc<rustls::crypto::CryptoProvider>, ConfigError> {
    if let Some(installed) = rustls::crypto::CryptoProvider::get_default() {
        return Ok(installed.clone());
    }
    #[cfg(feature = "aws-lc-rs")]
    return Ok(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ));
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    return Ok(std::sync::Arc::new(rustls::crypto::ring::default_provider()));
    #[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
    Err(ConfigError::new(
        "rustls::crypto::CryptoProvider",
        "no rustls crypto provider: enable tower-oauth2's `aws-lc-rs` or `ring` feature, or \
         install one with rustls::crypto::CryptoProvider::install_default() before build()",
    ))
}

#[cfg(feature = "rustls-no-provider")]
/// The SHA-256 of `data`, by the provider's own hash.
pub(crate) fn provider_sha256(
    provider: &rustls::crypto::CryptoProvider,
    data: &[u8],
) -> Result<Vec<u8>, ConfigError> {
    let hash = provider_sha256_hash(provider).ok_or_else(|| {
        ConfigError::new(
            "private_key_jwt",
            "private_key_jwt: the crypto provider has no SHA-256 for x5t#S256",
        )
    })?;
    Ok(hash.hash(data).as_ref().to_vec())
}

#[cfg(feature = "rustls-no-provider")]
/// The provider's own SHA-256, if it has one (every TLS 1.3 provider does).
pub(crate) fn provider_sha256_hash(
    provider: &rustls::crypto::CryptoProvider,
) -> Option<&'static dyn rustls::crypto::hash::Hash> {
    provider
        .cipher_suites
        .iter()
        .filter_map(|suite| suite.tls13().map(|tls13| tls13.common.hash_provider))
        .find(|hash| hash.algorithm() == rustls::crypto::hash::HashAlgorithm::SHA256)
}

#[cfg(all(
    feature = "shared-cache",
    not(any(feature = "aws-lc-rs", feature = "ring"))
))]
compile_error!(
    "the `shared-cache` feature encrypts with the crypto library rustls uses: enable \
     tower-oauth2's `aws-lc-rs` (a default) or `ring` feature"
);

#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
pub(crate) use primitives::*;

#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
// AES-GCM, HKDF and SHA-256 serve the shared cache only.
#[cfg_attr(not(feature = "shared-cache"), allow(dead_code))]
mod primitives {
    #[cfg(feature = "aws-lc-rs")]
    use aws_lc_rs as library;
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    use ring as library;

    use library::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    use library::rand::{SecureRandom, SystemRandom};
    use library::{digest, hkdf, hmac};

    /// The length of an AES-GCM nonce.
    pub(crate) const NONCE_LEN: usize = library::aead::NONCE_LEN;
    /// The length of an AES-GCM tag.
    pub(crate) const TAG_LEN: usize = 16;

    /// Fill `bytes` from the system's secure random number generator; false if it failed.
    pub(crate) fn fill_random(bytes: &mut [u8]) -> bool {
        SystemRandom::new().fill(bytes).is_ok()
    }

    /// SHA-256 of `parts`, one after the other.
    pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
        let mut context = digest::Context::new(&digest::SHA256);
        for part in parts {
            context.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(context.finish().as_ref());
        out
    }

    /// A new private key as PKCS#8 DER, for a DPoP key made in this process: P-256 for
    /// `ES256`, P-384 for `ES384`, Ed25519 for `EdDSA`; `None` for other algorithms or when the
    /// random number generator fails.
    #[cfg(feature = "rustls-no-provider")]
    pub(crate) fn generate_pkcs8(
        algorithm: crate::client_auth::JwsAlgorithm,
    ) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        use crate::client_auth::JwsAlgorithm;
        use library::signature::{
            EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
            ECDSA_P384_SHA384_FIXED_SIGNING,
        };
        let random = SystemRandom::new();
        let document = match algorithm {
            JwsAlgorithm::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &random).ok()?
            }
            JwsAlgorithm::ES384 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &random).ok()?
            }
            JwsAlgorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&random).ok()?,
            _ => return None,
        };
        Some(zeroize::Zeroizing::new(document.as_ref().to_vec()))
    }

    /// An HMAC-SHA256 key.
    pub(crate) struct HmacSha256(hmac::Key);

    impl HmacSha256 {
        pub(crate) fn new(key: &[u8]) -> Self {
            HmacSha256(hmac::Key::new(hmac::HMAC_SHA256, key))
        }

        pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
            hmac::sign(&self.0, message).as_ref().to_vec()
        }
    }

    /// An AES-256-GCM key derived with HKDF-SHA256.
    pub(crate) struct Aes256Gcm(LessSafeKey);

    impl Aes256Gcm {
        /// The key HKDF-SHA256 derives from `secret` with `salt` and `info`.
        pub(crate) fn derive(secret: &[u8], salt: &[u8], info: &[u8]) -> Self {
            let info = [info];
            let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(secret);
            let okm = prk
                .expand(&info, &AES_256_GCM)
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            Aes256Gcm(LessSafeKey::new(UnboundKey::from(okm)))
        }

        /// Encrypt `plain` in place; the tag.
        pub(crate) fn seal(
            &self,
            nonce: [u8; NONCE_LEN],
            aad: &[u8],
            plain: &mut [u8],
        ) -> Option<[u8; TAG_LEN]> {
            let tag = self
                .0
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    plain,
                )
                .ok()?;
            tag.as_ref().try_into().ok()
        }

        /// Decrypt `sealed` (ciphertext then tag) in place; the plaintext, if it authenticates.
        pub(crate) fn open<'a>(
            &self,
            nonce: &[u8],
            aad: &[u8],
            sealed: &'a mut [u8],
        ) -> Option<&'a mut [u8]> {
            let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
            self.0.open_in_place(nonce, Aad::from(aad), sealed).ok()
        }
    }
}
