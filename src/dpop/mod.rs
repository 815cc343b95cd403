//! DPoP (RFC 9449): tokens bound to a key of the client's, sent with a fresh proof of that key
//! on every request.
//!
//! Give a [`DpopKey`] to a client's builder with `.dpop(key)`. Its token requests then carry
//! a `DPoP` proof, the token endpoint answers with a token of type `DPoP` bound to the key
//! (its `cnf.jkt` is the key's [thumbprint](DpopKey::thumbprint)), and
//! [`BearerAuthLayer`](crate::BearerAuthLayer) and
//! [`BearerAuthMiddleware`](crate::BearerAuthMiddleware) send it as `Authorization: DPoP …`
//! with a new proof for each request: its method (`htm`), its URL without query or fragment
//! (`htu`), the time (`iat`), a unique `jti` and the token's hash (`ath`). Such a token is never
//! sent as a bearer token, and never without a proof.
//!
//! ```no_run
//! use tower_oauth2::client_auth::JwsAlgorithm;
//! use tower_oauth2::dpop::DpopKey;
//! use tower_oauth2::{BearerAuthLayer, ClientCredentials};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let credentials = ClientCredentials::builder()
//!     .token_url("https://idp.example.com/oauth/token")
//!     .client_id("my-service")
//!     .client_secret(std::env::var("CLIENT_SECRET").unwrap_or_default())
//!     .dpop(DpopKey::generate(JwsAlgorithm::ES256)?)
//!     .build()?;
//! let layer = BearerAuthLayer::new(credentials);
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```
//!
//! # Nonces
//!
//! A server may ask for a nonce of its own in proofs: the token endpoint with `400` and
//! `error=use_dpop_nonce`, a resource server with `401` (a gRPC one with UNAUTHENTICATED) and
//! `WWW-Authenticate: DPoP error="use_dpop_nonce"`, each with a `DPoP-Nonce` header. The nonce
//! is remembered per origin (for the last 32 origins) and put into later proofs to it. A token
//! request is retried once with it, within the same timeout; a resource request is retried
//! once where it can be replayed (reqwest with a cloneable body; [`RetryOnUnauthorized`] in
//! tower; a tonic call succeeds when called again). Such an answer never drops the token. A
//! retry is made only with a new nonce: one the crate could keep (printable, at most 1 KiB)
//! and not the one the refused proof carried.
//!
//! # Keys held elsewhere
//!
//! A remote signer ([`DpopKey::from_signer`]) has the credentials' timeout to sign a proof (a
//! token request's proof shares that request's deadline), counted in real time, so a runtime
//! without timers can use it too. Its signatures must have their algorithm's size (64 bytes
//! for ES256 and EdDSA, 96 for ES384), and its first one must verify with the public key it
//! was given: otherwise no request is sent, and the error says why.
//!
//! # Redirects
//!
//! A proof names one URL. reqwest follows redirects inside
//! [`BearerAuthMiddleware`](crate::BearerAuthMiddleware), which cannot sign again for the new
//! URL: give a DPoP client `reqwest::redirect::Policy::none()`, or expect a `401` after a
//! redirect (the token is kept).
//!
//! [`RetryOnUnauthorized`]: crate::layer::RetryOnUnauthorized

#[cfg(feature = "rustls-no-provider")]
mod jwk;
#[cfg(feature = "rustls-no-provider")]
mod key;
pub(crate) mod nonces;
#[cfg(feature = "rustls-no-provider")]
mod signature;
mod target;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Method};

#[cfg(feature = "rustls-no-provider")]
pub use key::DpopKey;
pub(crate) use target::Target;

use crate::{AccessToken, Error};

/// The `DPoP` request header that carries a proof.
pub(crate) const DPOP: http::HeaderName = http::HeaderName::from_static("dpop");
/// The `DPoP-Nonce` response header.
pub(crate) const DPOP_NONCE: http::HeaderName = http::HeaderName::from_static("dpop-nonce");

/// What a token bound to a key needs from that key: proofs, and the nonces servers gave it.
pub(crate) trait Prove: Send + Sync + 'static {
    /// A new proof for a `method` request to `target`, covering `access_token` if given; a
    /// key held elsewhere has `timeout` to sign it.
    fn proof<'a>(
        &'a self,
        method: &'a Method,
        target: &'a Target,
        access_token: Option<&'a str>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Proof, Error>>;

    /// The nonces servers asked this key's proofs to carry.
    fn nonces(&self) -> &nonces::Nonces;

    /// The key's RFC 7638 thumbprint.
    fn thumbprint(&self) -> &str;

    /// Whether other processes may hold the same key (from a PEM or a signer), so share the
    /// tokens bound to it.
    #[cfg_attr(not(feature = "shared-cache"), allow(dead_code))]
    fn shareable(&self) -> bool;
}

/// A proof as a header, and the server's nonce it carries, if any.
pub(crate) struct Proof {
    pub(crate) header: HeaderValue,
    pub(crate) nonce: Option<String>,
}

/// The key a token is bound to, with the time a key held elsewhere has to sign a proof for a
/// request the token goes with: the credentials' timeout (a token request's proof shares
/// that request's deadline instead).
#[derive(Clone)]
pub(crate) struct Bound {
    key: Arc<dyn Prove>,
    pub(crate) timeout: Duration,
}

impl Bound {
    pub(crate) fn new(key: Arc<dyn Prove>, timeout: Duration) -> Bound {
        Bound { key, timeout }
    }
}

impl std::ops::Deref for Bound {
    type Target = dyn Prove;

    fn deref(&self) -> &Self::Target {
        &*self.key
    }
}

/// Remember the nonce a response from `target`'s origin gives (servers may send a new one on
/// any response); the nonce, if one was given and kept.
pub(crate) fn remember_nonce<'h>(
    key: &dyn Prove,
    target: &Target,
    headers: &'h HeaderMap,
) -> Option<&'h HeaderValue> {
    let nonce = headers.get(DPOP_NONCE)?;
    if !nonces::acceptable(nonce) {
        return None;
    }
    key.nonces().remember(target.origin(), nonce);
    Some(nonce)
}

/// Whether a kept `nonce` is one a retry can use: new, not the one the refused proof carried.
pub(crate) fn is_new_nonce(kept: Option<&HeaderValue>, sent: Option<&str>) -> bool {
    kept.is_some_and(|kept| Some(kept.as_bytes()) != sent.map(str::as_bytes))
}

/// Whether a resource server's refusal (`401`, or gRPC UNAUTHENTICATED) asks for a proof with
/// its nonce: `WWW-Authenticate: DPoP error="use_dpop_nonce"` and a `DPoP-Nonce`.
pub(crate) fn asks_for_nonce(headers: &HeaderMap) -> bool {
    headers.contains_key(DPOP_NONCE)
        && headers
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .any(|value| {
                value
                    .as_bytes()
                    .windows(b"use_dpop_nonce".len())
                    .any(|window| window == b"use_dpop_nonce")
            })
}

/// The key a DPoP token went with, where, and with which nonce: the server's nonces are
/// remembered for it, and a retry is worth it only with another one.
pub(crate) struct DpopWatch {
    pub(crate) key: Bound,
    pub(crate) target: Target,
    pub(crate) nonce: Option<String>,
}

/// For a DPoP token, a fresh proof for a `method` request to `uri` covering the token, and
/// what to watch in the answer; nothing for a bearer token.
pub(crate) async fn prove(
    token: &AccessToken,
    method: &Method,
    uri: &http::Uri,
) -> Result<Option<(HeaderValue, Box<DpopWatch>)>, Error> {
    let Some(key) = token.dpop() else {
        return Ok(None);
    };
    let target = Target::of(uri)?;
    let proof = key
        .proof(method, &target, Some(token.secret()), key.timeout)
        .await?;
    Ok(Some((
        proof.header,
        Box::new(DpopWatch {
            key: key.clone(),
            target,
            nonce: proof.nonce,
        }),
    )))
}

/// A source whose tokens are bound to `key`: tokens a shared store hands back (sealed without
/// the key) are bound again, so that none is ever sent as a bearer token.
#[cfg(feature = "shared-cache")]
pub(crate) struct BoundSource<S> {
    pub(crate) inner: S,
    pub(crate) key: Bound,
}

#[cfg(feature = "shared-cache")]
impl<S: crate::TokenSource> crate::TokenSource for BoundSource<S> {
    fn token(&self) -> crate::source::TokenFuture<'_> {
        Box::pin(async move {
            let token = self.inner.token().await?;
            Ok(match token.dpop() {
                Some(_) => token,
                None => token.with_dpop(self.key.clone()),
            })
        })
    }

    fn invalidate(&self, token: &AccessToken) -> bool {
        self.inner.invalidate(token)
    }
}
