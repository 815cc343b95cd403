//! [`Signer`]: a key that signs `private_key_jwt` assertions wherever it lives (a cloud KMS,
//! an HSM, Vault's transit engine), so that the private key never enters the process. The
//! crate builds the JWS header and claims and asks the signer for the signature, at each
//! token request; a signer that panics, fails or hangs fails that request only, like an HTTP
//! client would. A local PEM key is one signer among others ([`PrivateKeyJwt::into_signer`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::Uri;
use rustls::crypto::CryptoProvider;
use zeroize::Zeroizing;

use super::assertion::{ecdsa_der_to_fixed, encode_json, Claims, Header, KeySigner};
use super::{JwsAlgorithm, PrivateKeyJwt};
use crate::error::BoxError;
use crate::{ConfigError, Error};

/// What [`Signer::sign`] returns.
pub type SignFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, BoxError>> + Send + 'a>>;

/// A key that signs client assertions (`private_key_jwt`), wherever it is held. Give it to
/// [`ClientAuth::signed_by`](super::ClientAuth::signed_by).
///
/// `sign` gets the JWS signing input (`base64url(header) "." base64url(claims)`) and returns
/// the signature as JWS wants it. For ECDSA that is `r || s` of fixed size (RFC 7518 §3.4);
/// the DER signatures KMS APIs return are accepted too and converted. It is called at every
/// token request, with the token request's timeout.
///
/// ```
/// use tower_oauth2::client_auth::{JwsAlgorithm, SignFuture, Signer};
///
/// /// A key in a (pretend) cloud KMS.
/// struct Kms {
///     key_name: String,
/// }
///
/// impl Signer for Kms {
///     fn algorithm(&self) -> JwsAlgorithm {
///         JwsAlgorithm::ES256
///     }
///
///     fn key_id(&self) -> Option<&str> {
///         Some(&self.key_name)
///     }
///
///     fn sign<'a>(&'a self, message: &'a [u8]) -> SignFuture<'a> {
///         Box::pin(async move {
///             // e.g. kms.asymmetric_sign(&self.key_name, sha256(message)).await
///             let _ = message;
///             Err("no KMS in this example".into())
///         })
///     }
/// }
/// ```
pub trait Signer: Send + Sync + 'static {
    /// The JWS `alg` it signs with.
    fn algorithm(&self) -> JwsAlgorithm;

    /// The JWS `kid`: which of the client's registered keys this is.
    fn key_id(&self) -> Option<&str> {
        None
    }

    /// The JWS `x5t#S256` header: the base64url SHA-256 thumbprint of the key's certificate,
    /// which Microsoft Entra ID certificate credentials need (a key in Azure Key Vault, say).
    fn x5t_s256(&self) -> Option<&str> {
        None
    }

    /// The signature of `message`.
    fn sign<'a>(&'a self, message: &'a [u8]) -> SignFuture<'a>;
}

/// A signer's future that is dropped inside `catch_unwind` however it goes: by
/// [`drop_now`](Self::drop_now) once signed or timed out, or with the future awaiting it when
/// that is dropped (a cancelled request): a panic in the signer's drop never unwinds into the
/// caller's.
struct Contained<F>(Option<F>);

impl<F> Contained<F> {
    /// Drop the signer's future now; whether that went without a panic.
    fn drop_now(&mut self) -> bool {
        let future = self.0.take();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(future))).is_ok()
    }
}

impl<F: std::future::Future + Unpin> std::future::Future for Contained<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        match self.0.as_mut() {
            Some(future) => std::pin::Pin::new(future).poll(cx),
            // Never polled after `drop_now`, which only runs once the outcome is known.
            None => std::task::Poll::Pending,
        }
    }
}

impl<F> Drop for Contained<F> {
    fn drop(&mut self) {
        if self.0.is_some() && !self.drop_now() {
            tracing::error!(
                target: "tower_oauth2::fetch",
                "a signer's future panicked when dropped (its request was cancelled)"
            );
        }
    }
}

/// `signer`'s signature of `message` within `timeout`, or an error naming `who` (`"the
/// assertion signer"`): its failure, its hang, or its panic (in `sign`, in a poll of its
/// future or in that future's drop). Only the signer's own code runs inside `catch_unwind`,
/// so that a failure of the crate's is never blamed on it.
///
/// The deadline is real time, from a helper thread (`futures_timer`, the single flight's
/// clock), never a tokio timer: a proof for a resource request may be signed on a runtime
/// without timers (or none), where creating a tokio timer panics, and a paused test clock does
/// not fire it while a KMS is still answering.
pub(crate) async fn signed_within(
    signer: &dyn Signer,
    message: &[u8],
    timeout: Duration,
    who: &str,
) -> Result<Vec<u8>, Error> {
    use futures_util::future::{select, Either};
    use futures_util::FutureExt as _;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    let panicked = || {
        tracing::error!(target: "tower_oauth2::fetch", "{who} panicked");
        Error::panicked_in(who)
    };
    let Ok(signing) = catch_unwind(AssertUnwindSafe(|| signer.sign(message))) else {
        return Err(panicked());
    };
    let mut signing = Contained(Some(AssertUnwindSafe(signing).catch_unwind()));
    let outcome = match select(&mut signing, futures_timer::Delay::new(timeout)).await {
        Either::Left((outcome, _)) => Some(outcome),
        Either::Right(_) => None,
    };
    // Dropping the signer's future (finished, or given up) runs its code too.
    let dropped = signing.drop_now();
    match outcome {
        Some(Ok(Ok(signature))) if dropped => Ok(signature),
        Some(Ok(Err(source))) if dropped => Err(Error::credential_from(
            format!("{who} failed"),
            true,
            source,
        )),
        None if dropped => Err(Error::credential(
            format!("{who} did not answer within {timeout:?}"),
            true,
        )),
        _ => Err(panicked()),
    }
}

/// A local private key as a [`Signer`], from [`PrivateKeyJwt::into_signer`].
pub struct LocalSigner {
    key: Arc<KeySigner>,
    key_id: Option<String>,
    thumbprint: Option<String>,
}

impl PrivateKeyJwt {
    /// This key as a [`Signer`], loaded by the crypto provider now: for composing it (wrapping
    /// it with logging or a failover to a KMS, say). Fails, saying why, if it cannot sign.
    pub fn into_signer(self) -> Result<LocalSigner, ConfigError> {
        let provider = crate::crypto::provider()?;
        Ok(LocalSigner {
            key: Arc::new(self.signer(&provider)?),
            key_id: self.key_id_value().map(str::to_owned),
            thumbprint: self.thumbprint(&provider)?,
        })
    }
}

impl Signer for LocalSigner {
    fn algorithm(&self) -> JwsAlgorithm {
        self.key.algorithm
    }

    fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    fn x5t_s256(&self) -> Option<&str> {
        self.thumbprint.as_deref()
    }

    fn sign<'a>(&'a self, message: &'a [u8]) -> SignFuture<'a> {
        let signed = self.key.sign(message).map_err(BoxError::from);
        Box::pin(std::future::ready(signed))
    }
}

impl fmt::Debug for LocalSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalSigner")
            .field("algorithm", &self.key.algorithm)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Assertions signed by a [`Signer`]: the header made once, the claims per request.
#[derive(Clone)]
pub(crate) struct SignerAssertion {
    signer: Arc<dyn Signer>,
    /// base64url of the header JSON.
    header: String,
    algorithm: JwsAlgorithm,
    audience: Option<String>,
    lifetime: Duration,
    /// For the `jti`'s randomness.
    provider: Arc<CryptoProvider>,
}

impl SignerAssertion {
    pub(crate) fn new(
        signer: Arc<dyn Signer>,
        audience: Option<String>,
        lifetime: Duration,
    ) -> Result<Self, ConfigError> {
        let algorithm = signer.algorithm();
        let header = encode_json(&Header {
            alg: algorithm.name(),
            typ: "JWT",
            kid: signer.key_id(),
            x5t_s256: signer.x5t_s256(),
        })
        .map_err(|e| ConfigError::new("client_auth", e.to_string()))?;
        Ok(SignerAssertion {
            signer,
            header,
            algorithm,
            audience,
            lifetime,
            provider: crate::crypto::provider()?,
        })
    }

    /// A new assertion from `client_id` for a token request to `url`, signed within `timeout`.
    pub(crate) async fn assertion(
        &self,
        client_id: &str,
        url: &Uri,
        timeout: Duration,
    ) -> Result<Zeroizing<String>, Error> {
        let audience = match &self.audience {
            Some(audience) => audience.clone(),
            None => url.to_string(),
        };
        let issued_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Error::client_auth("the system clock is before 1970"))?
            .as_secs();
        let mut jti = [0u8; 16];
        self.provider
            .secure_random
            .fill(&mut jti)
            .map_err(|_| Error::client_auth("no random numbers for the assertion's jti"))?;
        let jti = URL_SAFE_NO_PAD.encode(jti);
        let claims = Claims {
            iss: client_id,
            sub: client_id,
            aud: &audience,
            jti: &jti,
            iat: issued_at,
            nbf: issued_at,
            exp: issued_at.saturating_add(self.lifetime.as_secs().max(1)),
        };
        let mut jwt = Zeroizing::new(String::with_capacity(2048));
        jwt.push_str(&self.header);
        jwt.push('.');
        jwt.push_str(&encode_json(&claims)?);
        let signature = self.sign(jwt.as_bytes(), timeout).await?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jwt);
        Ok(jwt)
    }

    /// The signer's signature, with its panics, failures and hangs contained.
    async fn sign(&self, message: &[u8], timeout: Duration) -> Result<Vec<u8>, Error> {
        let signature =
            signed_within(&*self.signer, message, timeout, "the assertion signer").await?;
        self.as_jws(signature)
    }

    /// The signature as JWS wants it: ECDSA as fixed-size `r || s`, from DER if need be.
    fn as_jws(&self, signature: Vec<u8>) -> Result<Vec<u8>, Error> {
        if signature.is_empty() {
            return Err(Error::credential(
                "the assertion signer returned no signature",
                false,
            ));
        }
        match self.algorithm.ecdsa_scalar_len() {
            Some(len) if signature.len() == 2 * len => Ok(signature),
            Some(len) => ecdsa_der_to_fixed(&signature, len).ok_or_else(|| {
                Error::credential(
                    format!(
                        "the assertion signer's {} signature is neither r || s of {} bytes nor DER",
                        self.algorithm,
                        2 * len
                    ),
                    false,
                )
            }),
            None => Ok(signature),
        }
    }
}
