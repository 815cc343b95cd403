//! Client assertions (RFC 7523 §2.2 and §3, OpenID Connect Core §9): `private_key_jwt`, signed
//! with the client's private key, and `client_secret_jwt`, HMAC-SHA256 with the client secret.
//! A fresh assertion, with a fresh random `jti`, goes with every token request.
//!
//! Private keys are loaded and used by the rustls crypto provider the token client already
//! uses (the one the application installed, or aws-lc-rs / ring by our features): no second
//! crypto library, and every key format rustls reads (PKCS#8, PKCS#1, SEC1). HMAC comes from
//! aws-lc-rs or ring directly, as rustls does not expose a general one. Only the JWS compact
//! serialization is ours: three base64url parts joined by dots (RFC 7515 §7.1), and ECDSA
//! signatures turned from DER into the fixed-size `r || s` JWS wants (RFC 7518 §3.4).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::Uri;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::Signer;
use rustls::SignatureScheme;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::{ConfigError, Error};

/// `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub(crate) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The JWS algorithm that signs a `private_key_jwt` assertion (RFC 7518 §3.1).
///
/// Inferred from the key: RSA → `RS256`, P-256 → `ES256`, P-384 → `ES384`, Ed25519 → `EdDSA`.
/// Override it with [`PrivateKeyJwt::algorithm`], e.g. `PS256` for FAPI profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(clippy::upper_case_acronyms)]
pub enum JwsAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256 (FAPI).
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519 (RFC 8037).
    EdDSA,
}

impl JwsAlgorithm {
    /// The JWS `alg` value, e.g. `"RS256"`.
    pub fn name(self) -> &'static str {
        match self {
            JwsAlgorithm::RS256 => "RS256",
            JwsAlgorithm::RS384 => "RS384",
            JwsAlgorithm::RS512 => "RS512",
            JwsAlgorithm::PS256 => "PS256",
            JwsAlgorithm::PS384 => "PS384",
            JwsAlgorithm::PS512 => "PS512",
            JwsAlgorithm::ES256 => "ES256",
            JwsAlgorithm::ES384 => "ES384",
            JwsAlgorithm::EdDSA => "EdDSA",
        }
    }

    pub(crate) fn scheme(self) -> SignatureScheme {
        match self {
            JwsAlgorithm::RS256 => SignatureScheme::RSA_PKCS1_SHA256,
            JwsAlgorithm::RS384 => SignatureScheme::RSA_PKCS1_SHA384,
            JwsAlgorithm::RS512 => SignatureScheme::RSA_PKCS1_SHA512,
            JwsAlgorithm::PS256 => SignatureScheme::RSA_PSS_SHA256,
            JwsAlgorithm::PS384 => SignatureScheme::RSA_PSS_SHA384,
            JwsAlgorithm::PS512 => SignatureScheme::RSA_PSS_SHA512,
            JwsAlgorithm::ES256 => SignatureScheme::ECDSA_NISTP256_SHA256,
            JwsAlgorithm::ES384 => SignatureScheme::ECDSA_NISTP384_SHA384,
            JwsAlgorithm::EdDSA => SignatureScheme::ED25519,
        }
    }

    /// The size of `r` and of `s` in a JWS ECDSA signature.
    pub(crate) fn ecdsa_scalar_len(self) -> Option<usize> {
        match self {
            JwsAlgorithm::ES256 => Some(32),
            JwsAlgorithm::ES384 => Some(48),
            _ => None,
        }
    }

    /// What a key of this family signs with when the user does not say.
    const INFERRED: [JwsAlgorithm; 4] = [
        JwsAlgorithm::RS256,
        JwsAlgorithm::ES256,
        JwsAlgorithm::ES384,
        JwsAlgorithm::EdDSA,
    ];
}

impl fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The private key a client proves itself with (`private_key_jwt`, RFC 7523 §2.2): each token
/// request carries a fresh JWT signed with it. Give it to
/// [`ClientCredentialsBuilder::private_key_jwt`](crate::client_credentials::ClientCredentialsBuilder::private_key_jwt).
///
/// The key is PEM: PKCS#8 (`BEGIN PRIVATE KEY`), PKCS#1 (`BEGIN RSA PRIVATE KEY`) or SEC1
/// (`BEGIN EC PRIVATE KEY`); RSA, P-256, P-384 or Ed25519. It is zeroized when dropped and
/// never shown by `Debug`, errors or logs. Whether it can sign is checked by `build()`.
///
/// ```no_run
/// use tower_oauth2::{ClientCredentials, client_auth::PrivateKeyJwt};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let key = PrivateKeyJwt::from_pem(std::fs::read("client.key.pem")?)?
///     .key_id("my-key-1");
/// let credentials = ClientCredentials::builder()
///     .token_url("https://idp.example.com/oauth2/token")
///     .client_id("my-service")
///     .private_key_jwt(key)
///     .build()?;
/// # Ok(())
/// # }
/// ```
pub struct PrivateKeyJwt {
    key: Zeroizing<PrivateKeyDer<'static>>,
    key_id: Option<String>,
    algorithm: Option<JwsAlgorithm>,
    certificate: Option<CertificateDer<'static>>,
}

impl Clone for PrivateKeyJwt {
    fn clone(&self) -> Self {
        PrivateKeyJwt {
            key: Zeroizing::new(self.key.clone_key()),
            key_id: self.key_id.clone(),
            algorithm: self.algorithm,
            certificate: self.certificate.clone(),
        }
    }
}

impl PrivateKeyJwt {
    /// The first private key in `pem`.
    ///
    /// Fails when there is no private key block; the PEM text is never part of the error.
    pub fn from_pem(pem: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let pem = pem.as_ref();
        let contains = |needle: &[u8]| pem.windows(needle.len()).any(|window| window == needle);
        // PKCS#8 `BEGIN ENCRYPTED PRIVATE KEY`, or OpenSSL's legacy `Proc-Type: 4,ENCRYPTED`
        // header inside a `BEGIN RSA/EC PRIVATE KEY` block.
        if contains(b"BEGIN ENCRYPTED PRIVATE KEY") || contains(b"Proc-Type: 4,ENCRYPTED") {
            return Err(ConfigError::new(
                "private_key_jwt",
                "private_key_jwt: the private key is encrypted, which is not supported: decrypt \
                 it first (openssl pkcs8 -in key.pem -out plain.pem) and protect the file instead",
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
            ConfigError::new(
                "private_key_jwt",
                "private_key_jwt: no private key in the PEM (expected `BEGIN PRIVATE KEY`, \
                 `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY`)",
            )
        })?;
        Ok(PrivateKeyJwt {
            key: Zeroizing::new(key),
            key_id: None,
            algorithm: None,
            certificate: None,
        })
    }

    pub(super) fn key_id_value(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// The `x5t#S256` of its certificate, if one was given.
    pub(super) fn thumbprint(
        &self,
        provider: &CryptoProvider,
    ) -> Result<Option<String>, ConfigError> {
        match &self.certificate {
            None => Ok(None),
            Some(certificate) => Ok(Some(
                URL_SAFE_NO_PAD.encode(crate::crypto::provider_sha256(provider, certificate)?),
            )),
        }
    }

    /// The JWS `kid` header: which of the client's registered keys signed (the identity
    /// provider's key id, e.g. the JWK's `kid`).
    pub fn key_id(mut self, kid: impl Into<String>) -> Self {
        self.key_id = Some(kid.into());
        self
    }

    /// Sign with `algorithm` instead of the one inferred from the key (`PS256` for an RSA key,
    /// say). `build()` fails if the key cannot sign with it.
    pub fn algorithm(mut self, algorithm: JwsAlgorithm) -> Self {
        self.algorithm = Some(algorithm);
        self
    }

    /// Send the `x5t#S256` header, the SHA-256 thumbprint of this certificate (the first in
    /// `pem`), as Microsoft Entra ID certificate credentials need. Fails when `pem` holds no
    /// certificate.
    pub fn certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let certificate = CertificateDer::from_pem_slice(pem.as_ref()).map_err(|_| {
            ConfigError::new(
                "private_key_jwt",
                "private_key_jwt: no `BEGIN CERTIFICATE` block in the certificate PEM",
            )
        })?;
        self.certificate = Some(certificate);
        Ok(self)
    }

    /// The key's DER, to derive the shared cache's encryption key from when the client has
    /// no secret.
    #[cfg(feature = "shared-cache")]
    pub(crate) fn key_material(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.key.secret_der().to_vec())
    }

    /// The signer for this key, with the provider `build()` uses: fails, saying why, when the
    /// key cannot sign.
    pub(super) fn signer(&self, provider: &Arc<CryptoProvider>) -> Result<KeySigner, ConfigError> {
        let loaded = provider
            .key_provider
            .load_private_key(self.key.clone_key())
            .map_err(|_| {
                ConfigError::new(
                    "private_key_jwt",
                    "private_key_jwt: the crypto provider cannot use this key (RSA of at least \
                     2048 bits, P-256, P-384 or Ed25519 is needed)",
                )
            })?;
        let (algorithm, signer) = match self.algorithm {
            Some(algorithm) => {
                let signer = loaded.choose_scheme(&[algorithm.scheme()]).ok_or_else(|| {
                    ConfigError::new(
                        "private_key_jwt",
                        format!(
                            "private_key_jwt: this {:?} key cannot sign {algorithm}",
                            loaded.algorithm()
                        ),
                    )
                })?;
                (algorithm, signer)
            }
            None => JwsAlgorithm::INFERRED
                .iter()
                .find_map(|algorithm| {
                    let signer = loaded.choose_scheme(&[algorithm.scheme()])?;
                    Some((*algorithm, signer))
                })
                .ok_or_else(|| {
                    ConfigError::new(
                        "private_key_jwt",
                        format!(
                        "private_key_jwt: no JWS algorithm for this {:?} key (RSA, P-256, P-384 \
                         or Ed25519 is needed)",
                        loaded.algorithm()
                    ),
                    )
                })?,
        };
        let thumbprint = match &self.certificate {
            None => None,
            Some(certificate) => {
                Some(URL_SAFE_NO_PAD.encode(crate::crypto::provider_sha256(provider, certificate)?))
            }
        };
        let header = Header {
            alg: algorithm.name(),
            typ: "JWT",
            kid: self.key_id.as_deref(),
            x5t_s256: thumbprint.as_deref(),
        };
        let signer = KeySigner {
            header: encode_json(&header)
                .map_err(|e| ConfigError::new("private_key_jwt", e.to_string()))?,
            algorithm,
            signer,
            provider: provider.clone(),
        };
        // A key the provider loads may still fail to sign (a key whose parts do not match):
        // better at build() than at the first token request.
        signer.sign(b"tower-oauth2 key check").map_err(|_| {
            ConfigError::new(
                "private_key_jwt",
                format!(
                    "private_key_jwt: the key cannot sign {algorithm} with this crypto provider"
                ),
            )
        })?;
        Ok(signer)
    }
}

impl fmt::Debug for PrivateKeyJwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = match &*self.key {
            PrivateKeyDer::Pkcs1(_) => "PKCS#1",
            PrivateKeyDer::Sec1(_) => "SEC1",
            PrivateKeyDer::Pkcs8(_) => "PKCS#8",
            _ => "other",
        };
        f.debug_struct("PrivateKeyJwt")
            .field("key", &format_args!("[redacted {format} key]"))
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm)
            .field("certificate", &self.certificate.is_some())
            .finish()
    }
}

/// How assertions are signed, chosen at `build()`.
#[derive(Clone)]
pub(crate) enum AssertionKey {
    /// `private_key_jwt`.
    Private(Arc<KeySigner>),
    /// `client_secret_jwt`: HS256 with the client secret.
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    Secret(Arc<hmac::SecretSigner>),
}

impl AssertionKey {
    /// The signer for `key`, with the same crypto provider as the token client.
    pub(crate) fn private(key: &PrivateKeyJwt) -> Result<Self, ConfigError> {
        let provider = crate::crypto::provider()?;
        Ok(AssertionKey::Private(Arc::new(key.signer(&provider)?)))
    }

    /// The HS256 signer for `secret`.
    pub(crate) fn secret(secret: &str) -> Result<Self, ConfigError> {
        #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
        return Ok(AssertionKey::Secret(Arc::new(hmac::SecretSigner::new(
            secret,
        )?)));
        #[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
        {
            let _ = secret;
            Err(ConfigError::new(
                "client_secret_jwt",
                "client_secret_jwt needs tower-oauth2's `aws-lc-rs` or `ring` feature for HMAC",
            ))
        }
    }

    /// A new assertion for one token request.
    fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        lifetime: Duration,
    ) -> Result<Zeroizing<String>, Error> {
        let issued_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Error::client_auth("the system clock is before 1970"))?
            .as_secs();
        let mut jti = [0u8; 16];
        self.fill_random(&mut jti)?;
        let jti = URL_SAFE_NO_PAD.encode(jti);
        let claims = Claims {
            iss: client_id,
            sub: client_id,
            aud: audience,
            jti: &jti,
            iat: issued_at,
            nbf: issued_at,
            exp: issued_at.saturating_add(lifetime.as_secs().max(1)),
        };
        let header = match self {
            AssertionKey::Private(signer) => signer.header.as_str(),
            #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
            AssertionKey::Secret(_) => hmac::HEADER,
        };
        let mut jwt = Zeroizing::new(String::with_capacity(1024));
        jwt.push_str(header);
        jwt.push('.');
        jwt.push_str(&encode_json(&claims)?);
        let signature = match self {
            AssertionKey::Private(signer) => signer.sign(jwt.as_bytes())?,
            #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
            AssertionKey::Secret(signer) => signer.sign(jwt.as_bytes()),
        };
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jwt);
        Ok(jwt)
    }

    fn fill_random(&self, bytes: &mut [u8]) -> Result<(), Error> {
        let filled = match self {
            AssertionKey::Private(signer) => signer.provider.secure_random.fill(bytes).is_ok(),
            #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
            AssertionKey::Secret(_) => crate::crypto::fill_random(bytes),
        };
        filled
            .then_some(())
            .ok_or_else(|| Error::client_auth("no random numbers for the assertion's jti"))
    }
}

/// How a client's assertions are made: the key, and the claims that are not per request.
#[derive(Clone)]
pub(crate) struct AssertionConfig {
    pub(crate) key: AssertionKey,
    /// `aud`; by default the token endpoint the request goes to (RFC 7523 §3).
    pub(crate) audience: Option<String>,
    pub(crate) lifetime: Duration,
}

impl AssertionConfig {
    /// `private_key_jwt` with `key`.
    pub(crate) fn private(
        key: &PrivateKeyJwt,
        audience: Option<String>,
        lifetime: Duration,
    ) -> Result<Self, ConfigError> {
        Ok(AssertionConfig {
            key: AssertionKey::private(key)?,
            audience,
            lifetime,
        })
    }

    /// `client_secret_jwt` with `secret`.
    pub(crate) fn secret(
        secret: &str,
        audience: Option<String>,
        lifetime: Duration,
    ) -> Result<Self, ConfigError> {
        Ok(AssertionConfig {
            key: AssertionKey::secret(secret)?,
            audience,
            lifetime,
        })
    }

    /// A new assertion from `client_id` for a token request to `url`.
    pub(crate) fn assertion(&self, client_id: &str, url: &Uri) -> Result<Zeroizing<String>, Error> {
        let audience = match &self.audience {
            Some(audience) => audience.clone(),
            None => url.to_string(),
        };
        self.key.assertion(client_id, &audience, self.lifetime)
    }
}

#[derive(Serialize)]
pub(super) struct Header<'a> {
    pub(super) alg: &'a str,
    pub(super) typ: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) kid: Option<&'a str>,
    #[serde(rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
    pub(super) x5t_s256: Option<&'a str>,
}

#[derive(Serialize)]
pub(super) struct Claims<'a> {
    pub(super) iss: &'a str,
    pub(super) sub: &'a str,
    pub(super) aud: &'a str,
    pub(super) jti: &'a str,
    pub(super) iat: u64,
    pub(super) nbf: u64,
    pub(super) exp: u64,
}

pub(super) fn encode_json(value: &impl Serialize) -> Result<String, Error> {
    let json = serde_json::to_vec(value)
        .map_err(|e| Error::client_auth(format!("cannot encode the assertion: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

/// A private key loaded by the crypto provider, and the JWS header that goes with it.
pub(crate) struct KeySigner {
    /// base64url of the header JSON.
    header: String,
    pub(super) algorithm: JwsAlgorithm,
    signer: Box<dyn Signer>,
    provider: Arc<CryptoProvider>,
}

impl KeySigner {
    pub(super) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let signature = self
            .signer
            .sign(message)
            .map_err(|_| Error::client_auth("the crypto provider failed to sign the assertion"))?;
        match self.algorithm.ecdsa_scalar_len() {
            Some(len) => ecdsa_der_to_fixed(&signature, len).ok_or_else(|| {
                Error::client_auth("the crypto provider's ECDSA signature is not DER")
            }),
            None => Ok(signature),
        }
    }
}

/// An ECDSA signature as DER `SEQUENCE { INTEGER r, INTEGER s }` (what TLS uses) turned into
/// `r || s`, each left-padded to `len` bytes (what JWS uses, RFC 7518 §3.4).
pub(crate) fn ecdsa_der_to_fixed(der: &[u8], len: usize) -> Option<Vec<u8>> {
    let (tag, sequence, rest) = der_element(der)?;
    if tag != 0x30 || !rest.is_empty() {
        return None;
    }
    let mut fixed = Vec::with_capacity(2 * len);
    let mut remaining = sequence;
    for _ in 0..2 {
        let (tag, integer, rest) = der_element(remaining)?;
        if tag != 0x02 {
            return None;
        }
        let digits = match integer {
            [0, digits @ ..] => digits,
            digits => digits,
        };
        if digits.len() > len {
            return None;
        }
        fixed.resize(fixed.len() + len - digits.len(), 0);
        fixed.extend_from_slice(digits);
        remaining = rest;
    }
    remaining.is_empty().then_some(fixed)
}

/// One DER element: its tag, its content and what follows it.
fn der_element(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        short @ 0..=0x7f => (usize::from(short), rest),
        0x81 => {
            let (&len, rest) = rest.split_first()?;
            (usize::from(len), rest)
        }
        _ => return None,
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

impl fmt::Debug for KeySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKeyJwt")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// HS256 for `client_secret_jwt`, from the crypto library rustls uses in this build.
#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
mod hmac {
    use crate::crypto::HmacSha256;
    use crate::ConfigError;

    /// base64url of `{"alg":"HS256","typ":"JWT"}`.
    pub(super) const HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

    pub(crate) struct SecretSigner(HmacSha256);

    impl SecretSigner {
        pub(super) fn new(secret: &str) -> Result<Self, ConfigError> {
            // RFC 7518 §3.2: the key must be at least as long as the hash output.
            if secret.len() < 32 {
                return Err(ConfigError::new(
                    "client_secret_jwt",
                    "client_secret_jwt: the client secret is shorter than the 32 bytes HS256 \
                     needs (RFC 7518 §3.2)",
                ));
            }
            Ok(SecretSigner(HmacSha256::new(secret.as_bytes())))
        }

        pub(super) fn sign(&self, message: &[u8]) -> Vec<u8> {
            self.0.sign(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_legacy_encrypted_rsa_key_is_reported_as_encrypted() {
        let pem = "-----BEGIN RSA PRIVATE KEY-----\n\
                   Proc-Type: 4,ENCRYPTED\n\
                   DEK-Info: AES-128-CBC,0123456789ABCDEF0123456789ABCDEF\n\
                   \n\
                   c2VjcmV0LWJ1dC1lbmNyeXB0ZWQta2V5LWJ5dGVz\n\
                   -----END RSA PRIVATE KEY-----\n";
        let error = PrivateKeyJwt::from_pem(pem).unwrap_err();
        assert!(error.to_string().contains("is encrypted"), "{error}");
    }

    #[test]
    fn ecdsa_der_signatures_become_fixed_size() {
        // r with a leading zero (high bit set), s short: both padded to 32 bytes.
        let mut der = vec![0x30, 0x00, 0x02, 33, 0x00];
        der.extend([0xff; 32]);
        der.extend([0x02, 2, 0x01, 0x02]);
        der[1] = (der.len() - 2) as u8;
        let fixed = ecdsa_der_to_fixed(&der, 32).unwrap();
        assert_eq!(fixed.len(), 64);
        assert_eq!(&fixed[..32], &[0xff; 32]);
        assert_eq!(&fixed[32..62], &[0; 30]);
        assert_eq!(&fixed[62..], &[1, 2]);
    }

    #[test]
    fn malformed_ecdsa_signatures_are_refused() {
        assert!(ecdsa_der_to_fixed(&[], 32).is_none());
        assert!(ecdsa_der_to_fixed(&[0x30, 0x05, 0x02], 32).is_none());
        assert!(ecdsa_der_to_fixed(&[0x30, 0x03, 0x02, 0x01, 0x01], 32).is_none());
        let mut too_long = vec![0x30, 37, 0x02, 33];
        too_long.extend([0x7f; 33]);
        too_long.extend([0x02, 0x01, 0x01]);
        assert!(ecdsa_der_to_fixed(&too_long, 32).is_none());
    }

    /// Both providers rustls ships, every key type and format they read: the signature is what
    /// an independent verifier (jsonwebtoken) accepts. Runs with `--all-features`.
    #[cfg(all(feature = "aws-lc-rs", feature = "ring"))]
    #[test]
    fn every_provider_signs_every_key_type_verifiably() {
        use jsonwebtoken::{Algorithm, DecodingKey, Validation};

        let providers = [
            ("aws-lc-rs", rustls::crypto::aws_lc_rs::default_provider()),
            ("ring", rustls::crypto::ring::default_provider()),
        ];
        let keys = [
            (&rcgen::PKCS_RSA_SHA256, Algorithm::RS256),
            (&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256),
            (&rcgen::PKCS_ECDSA_P384_SHA384, Algorithm::ES384),
            (&rcgen::PKCS_ED25519, Algorithm::EdDSA),
        ];
        for (name, provider) in providers {
            let provider = Arc::new(provider);
            for (algorithm, alg) in keys {
                let pair = rcgen::KeyPair::generate_for(algorithm).unwrap();
                let key = PrivateKeyJwt::from_pem(pair.serialize_pem()).unwrap();
                let key = AssertionKey::Private(Arc::new(key.signer(&provider).unwrap()));
                let public = pair.public_key_pem();
                let decoding = match alg {
                    Algorithm::RS256 => DecodingKey::from_rsa_pem(public.as_bytes()),
                    Algorithm::EdDSA => DecodingKey::from_ed_pem(public.as_bytes()),
                    _ => DecodingKey::from_ec_pem(public.as_bytes()),
                }
                .unwrap();
                let mut rules = Validation::new(alg);
                rules.set_audience(&["https://idp.example.com/token"]);
                // Many signatures: short r or s must still come out fixed-size.
                for _ in 0..50 {
                    let jwt = key
                        .assertion(
                            "client",
                            "https://idp.example.com/token",
                            Duration::from_secs(60),
                        )
                        .unwrap();
                    jsonwebtoken::decode::<serde_json::Value>(jwt.as_str(), &decoding, &rules)
                        .unwrap_or_else(|e| panic!("{name} {alg:?}: {e}"));
                }
            }
        }
    }

    #[test]
    fn the_hs256_header_is_what_it_says() {
        #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
        assert_eq!(
            URL_SAFE_NO_PAD.decode(hmac::HEADER).unwrap(),
            br#"{"alg":"HS256","typ":"JWT"}"#
        );
    }
}
