//! [`DpopKey`]: the key DPoP tokens are bound to, and the proofs it signs.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Method, Uri};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};
use serde::Serialize;
use zeroize::Zeroizing;

use super::nonces::Nonces;
use super::{jwk, signature, Proof, Prove, Target};
use crate::client_auth::{JwsAlgorithm, Signer};
use crate::{ConfigError, Error};

/// How long a remote [`Signer`] may take to sign a proof asked for with [`DpopKey::proof`]
/// (the token client's default timeout). Proofs the crate asks for have the credentials'
/// timeout.
const REMOTE_SIGN_TIMEOUT: Duration = crate::transport::Settings::DEFAULT_TIMEOUT;

/// The key DPoP-bound tokens are bound to (RFC 9449): it signs a proof for every token
/// request and every request a token goes with. Clones share the key and the nonces servers
/// gave it.
///
/// - [`DpopKey::generate`]: a new key, held by this process only. Its tokens are never shared
///   with other processes (a shared cache keeps them per process).
/// - [`DpopKey::from_pem`]: a key from a PEM, which a fleet may share: processes holding the
///   same key share its tokens through a shared cache.
/// - [`DpopKey::from_signer`]: a key held elsewhere (a KMS, an HSM), through a
///   [`Signer`], with its public key.
///
/// The private key is never shown by `Debug`, errors or logs, and is zeroized when dropped.
///
/// ```
/// use tower_oauth2::client_auth::JwsAlgorithm;
/// use tower_oauth2::dpop::DpopKey;
///
/// let key = DpopKey::generate(JwsAlgorithm::ES256)?;
/// assert_eq!(key.algorithm(), JwsAlgorithm::ES256);
/// assert_eq!(key.thumbprint().len(), 43); // base64url of a SHA-256
/// # Ok::<(), tower_oauth2::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct DpopKey {
    inner: Arc<KeyInner>,
}

struct KeyInner {
    signing: Signing,
    algorithm: JwsAlgorithm,
    /// base64url of the proof's JWS header (`typ`, `alg`, `jwk`): the same for every proof.
    header: String,
    jwk: String,
    thumbprint: String,
    nonces: Nonces,
    provider: Arc<CryptoProvider>,
    sha256: &'static dyn rustls::crypto::hash::Hash,
    /// Whether other processes may hold the same key (so share its tokens).
    #[cfg_attr(not(feature = "shared-cache"), allow(dead_code))]
    shareable: bool,
}

enum Signing {
    /// Loaded by the crypto provider.
    Local(Box<dyn rustls::sign::Signer>),
    /// Held elsewhere.
    Remote(Remote),
}

/// A key held elsewhere, and what is known of it.
struct Remote {
    signer: Box<dyn Signer>,
    /// The public key the proofs name, as verifiers take it.
    public_key: Vec<u8>,
    /// Whether one of its signatures was verified with `public_key`: done once per key, so
    /// that a signer of another key, or a broken one, fails the first request saying so
    /// instead of every server refusing every proof.
    verified: AtomicBool,
}

#[derive(Serialize)]
struct Header<'a> {
    typ: &'static str,
    alg: &'static str,
    jwk: &'a serde_json::value::RawValue,
}

#[derive(Serialize)]
struct Claims<'a> {
    jti: &'a str,
    htm: &'a str,
    htu: &'a str,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ath: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
}

fn config(message: impl Into<String>) -> ConfigError {
    ConfigError::new("dpop", message)
}

/// `pem` with each line's leading and trailing blanks taken off: a PEM pasted indented (in a
/// YAML or TOML string, a Rust literal) is still the key. Only for a public key (no secret is
/// copied).
fn unindented(pem: &[u8]) -> Vec<u8> {
    let mut lines = Vec::with_capacity(pem.len());
    for line in pem.split(|byte| *byte == b'\n') {
        lines.extend_from_slice(line.trim_ascii());
        lines.push(b'\n');
    }
    lines
}

impl DpopKey {
    /// A new key for `algorithm`: `ES256` (P-256, what every DPoP server accepts), `ES384`
    /// (P-384) or `EdDSA` (Ed25519). Made by aws-lc-rs or ring (whichever the crate's features
    /// select); held by this process only.
    pub fn generate(algorithm: JwsAlgorithm) -> Result<DpopKey, ConfigError> {
        #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
        {
            let mut pkcs8 = crate::crypto::generate_pkcs8(algorithm).ok_or_else(|| {
                config(format!(
                    "dpop: cannot make a {algorithm} key (ES256, ES384 or EdDSA can be made)"
                ))
            })?;
            // Moved, not copied: `load` keeps it in a zeroizing wrapper.
            let der = PrivateKeyDer::Pkcs8(std::mem::take(&mut *pkcs8).into());
            DpopKey::load(der, false)
        }
        #[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
        {
            let _ = algorithm;
            Err(config(
                "dpop: making a key needs tower-oauth2's `aws-lc-rs` or `ring` feature; or give \
                 one with DpopKey::from_pem",
            ))
        }
    }

    /// The first private key in `pem` (PKCS#8 or SEC1; P-256, P-384 or Ed25519). Processes
    /// holding the same key may share its tokens. The PEM text is never part of an error.
    pub fn from_pem(pem: impl AsRef<[u8]>) -> Result<DpopKey, ConfigError> {
        let der = PrivateKeyDer::from_pem_slice(pem.as_ref()).map_err(|_| {
            config(
                "dpop: no private key in the PEM (expected `BEGIN PRIVATE KEY` or `BEGIN EC \
                 PRIVATE KEY`)",
            )
        })?;
        DpopKey::load(der, true)
    }

    /// A key held elsewhere: `signer` signs (see [`Signer`]; ECDSA signatures may be DER or
    /// `r || s`), and `public_key` is its public key as a SubjectPublicKeyInfo, in DER or PEM
    /// (`BEGIN PUBLIC KEY`, its lines indented or not), as KMS APIs return it: exactly that
    /// structure for a P-256, P-384 or Ed25519 key (not a certificate, nothing after it).
    /// Processes using the same key may share its tokens. The signer's algorithm must be the
    /// key's.
    ///
    /// The signer's first signature is verified with `public_key`, and a proof that does not
    /// verify is an error rather than a request: a signer of another key fails the first
    /// request saying so. A signature of the wrong size for its algorithm is always an error.
    pub fn from_signer(
        signer: impl Signer,
        public_key: impl AsRef<[u8]>,
    ) -> Result<DpopKey, ConfigError> {
        let public_key = public_key.as_ref();
        let spki = match SubjectPublicKeyInfoDer::from_pem_slice(public_key)
            .or_else(|_| SubjectPublicKeyInfoDer::from_pem_slice(&unindented(public_key)))
        {
            Ok(spki) => spki.as_ref().to_vec(),
            Err(_) if public_key.trim_ascii_start().starts_with(b"-----BEGIN") => {
                return Err(config(
                    "dpop: the public key is a PEM without `BEGIN PUBLIC KEY` (a certificate? \
                     give its public key, e.g. `openssl x509 -pubkey -noout`)",
                ));
            }
            Err(_) => public_key.to_vec(),
        };
        let key = jwk::from_spki(&spki)
            .map_err(|why| config(format!("dpop: the public key is {why}")))?;
        if signer.algorithm() != key.algorithm {
            return Err(config(format!(
                "dpop: the signer signs {} but the public key is for {}",
                signer.algorithm(),
                key.algorithm
            )));
        }
        let remote = Remote {
            signer: Box::new(signer),
            public_key: key.raw,
            verified: AtomicBool::new(false),
        };
        DpopKey::new(Signing::Remote(remote), key.algorithm, key.jwk, true)
    }

    fn load(der: PrivateKeyDer<'static>, shareable: bool) -> Result<DpopKey, ConfigError> {
        let der = Zeroizing::new(der);
        let provider = crate::crypto::provider()?;
        let loaded = provider
            .key_provider
            .load_private_key(der.clone_key())
            .map_err(|_| config("dpop: the crypto provider cannot use this key"))?;
        let spki = loaded.public_key().ok_or_else(|| {
            config("dpop: the crypto provider does not give this key's public key")
        })?;
        let jwk::PublicKey { algorithm, jwk, .. } = jwk::from_spki(spki.as_ref())
            .map_err(|why| config(format!("dpop: the key is {why}")))?;
        let signer = loaded
            .choose_scheme(&[algorithm.scheme()])
            .ok_or_else(|| config(format!("dpop: this key cannot sign {algorithm}")))?;
        let key = DpopKey::new(Signing::Local(signer), algorithm, jwk, shareable)?;
        // A key the provider loads may still fail to sign: better now than at a request.
        key.inner
            .sign_local(b"tower-oauth2 key check")
            .map_err(|_| config(format!("dpop: the key cannot sign {algorithm}")))?;
        Ok(key)
    }

    fn new(
        signing: Signing,
        algorithm: JwsAlgorithm,
        jwk: String,
        shareable: bool,
    ) -> Result<DpopKey, ConfigError> {
        let provider = crate::crypto::provider()?;
        let sha256 = crate::crypto::provider_sha256_hash(&provider)
            .ok_or_else(|| config("dpop: the crypto provider has no SHA-256"))?;
        let thumbprint = URL_SAFE_NO_PAD.encode(sha256.hash(jwk.as_bytes()).as_ref());
        let raw = serde_json::value::RawValue::from_string(jwk.clone())
            .map_err(|e| config(format!("dpop: {e}")))?;
        let header = serde_json::to_vec(&Header {
            typ: "dpop+jwt",
            alg: algorithm.name(),
            jwk: &raw,
        })
        .map_err(|e| config(format!("dpop: {e}")))?;
        Ok(DpopKey {
            inner: Arc::new(KeyInner {
                signing,
                algorithm,
                header: URL_SAFE_NO_PAD.encode(header),
                jwk,
                thumbprint,
                nonces: Nonces::default(),
                provider,
                sha256,
                shareable,
            }),
        })
    }

    /// The JWS algorithm its proofs are signed with.
    pub fn algorithm(&self) -> JwsAlgorithm {
        self.inner.algorithm
    }

    /// The public key as a JWK (JSON), as each proof's `jwk` header carries it.
    pub fn public_jwk(&self) -> &str {
        &self.inner.jwk
    }

    /// The RFC 7638 thumbprint of the public key (base64url SHA-256): the `cnf.jkt` of the
    /// tokens bound to it, and the `dpop_jkt` of an authorization request.
    pub fn thumbprint(&self) -> &str {
        &self.inner.thumbprint
    }

    /// A new proof for a `method` request to `url` (its query and fragment are left out),
    /// covering `access_token` (`ath`) if given, with the nonce the server gave, if any: for
    /// an HTTP client the layer and middleware do not wrap.
    pub async fn proof(
        &self,
        method: &Method,
        url: &Uri,
        access_token: Option<&str>,
    ) -> Result<String, Error> {
        let target = Target::of(url)?;
        let (jws, _nonce) = self
            .inner
            .make_proof(method.as_str(), &target, access_token, REMOTE_SIGN_TIMEOUT)
            .await?;
        Ok(jws)
    }

    /// Remember the `DPoP-Nonce` a response from `url` carried, for the next proofs to its
    /// origin (for an HTTP client the layer and middleware do not wrap).
    pub fn remember_nonce(&self, url: &Uri, headers: &http::HeaderMap) {
        if let Ok(target) = Target::of(url) {
            super::remember_nonce(&*self.inner, &target, headers);
        }
    }

    /// The key as tokens carry it.
    pub(crate) fn bound(&self) -> Arc<dyn Prove> {
        self.inner.clone()
    }
}

impl KeyInner {
    /// A proof, and the nonce it carries; a remote signer has `timeout` to sign it.
    async fn make_proof(
        &self,
        htm: &str,
        target: &Target,
        access_token: Option<&str>,
        timeout: Duration,
    ) -> Result<(String, Option<String>), Error> {
        let mut jti = [0u8; 16];
        self.provider
            .secure_random
            .fill(&mut jti)
            .map_err(|_| Error::client_auth("no random numbers for a DPoP proof's jti"))?;
        let jti = URL_SAFE_NO_PAD.encode(jti);
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Error::client_auth("the system clock is before 1970"))?
            .as_secs();
        let ath = access_token
            .map(|token| URL_SAFE_NO_PAD.encode(self.sha256.hash(token.as_bytes()).as_ref()));
        let nonce = self.nonces.for_origin(target.origin());
        let claims = serde_json::to_vec(&Claims {
            jti: &jti,
            htm,
            htu: target.htu(),
            iat,
            ath: ath.as_deref(),
            nonce: nonce.as_deref(),
        })
        .map_err(|e| Error::client_auth(format!("cannot encode a DPoP proof: {e}")))?;
        let mut jws = String::with_capacity(self.header.len() + 2 * claims.len() + 200);
        jws.push_str(&self.header);
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut jws);
        let signature = match &self.signing {
            Signing::Local(_) => self.sign_local(jws.as_bytes())?,
            Signing::Remote(remote) => self.sign_remote(remote, jws.as_bytes(), timeout).await?,
        };
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jws);
        Ok((jws, nonce))
    }

    fn sign_local(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let Signing::Local(signer) = &self.signing else {
            unreachable!("only called for local keys")
        };
        let signature = signer
            .sign(message)
            .map_err(|_| Error::client_auth("the crypto provider failed to sign a DPoP proof"))?;
        signature::as_jws(self.algorithm, signature)
    }

    /// The remote signer's signature, with its panics, failures and hangs contained, of the
    /// size its algorithm has, and the first one verified with the public key.
    async fn sign_remote(
        &self,
        remote: &Remote,
        message: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        let signature =
            crate::client_auth::signed_within(&*remote.signer, message, timeout, signature::SIGNER)
                .await?;
        let signature = signature::as_jws(self.algorithm, signature)?;
        if !remote.verified.load(Ordering::Relaxed) {
            signature::verify(
                &self.provider,
                self.algorithm,
                &remote.public_key,
                message,
                &signature,
            )?;
            remote.verified.store(true, Ordering::Relaxed);
        }
        Ok(signature)
    }
}

impl Prove for KeyInner {
    fn proof<'a>(
        &'a self,
        method: &'a Method,
        target: &'a Target,
        access_token: Option<&'a str>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Proof, Error>> {
        Box::pin(async move {
            let (jws, nonce) = self
                .make_proof(method.as_str(), target, access_token, timeout)
                .await?;
            let mut header = HeaderValue::try_from(jws)
                .map_err(|_| Error::client_auth("a DPoP proof is not a valid header value"))?;
            header.set_sensitive(true);
            Ok(Proof { header, nonce })
        })
    }

    fn nonces(&self) -> &Nonces {
        &self.nonces
    }

    fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    fn shareable(&self) -> bool {
        self.shareable
    }
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopKey")
            .field("algorithm", &self.inner.algorithm)
            .field("thumbprint", &self.inner.thumbprint)
            .field(
                "held",
                &match self.inner.signing {
                    Signing::Local(_) => "in this process",
                    Signing::Remote(_) => "by a signer",
                },
            )
            .finish()
    }
}
