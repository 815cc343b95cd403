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
//! `error=use_dpop_nonce`, a resource server with `401` and `WWW-Authenticate: DPoP
//! error="use_dpop_nonce"`, each with a `DPoP-Nonce` header. The nonce is remembered per origin
//! (for the last 32 origins) and put into later proofs to
//! it. A token request is retried once with it; a resource request is retried once where it
//! can be replayed (reqwest with a cloneable body; [`RetryOnUnauthorized`] in tower). Such an
//! answer never drops the token.
//!
//! [`RetryOnUnauthorized`]: crate::layer::RetryOnUnauthorized

#[cfg(feature = "rustls-no-provider")]
mod jwk;
#[cfg(feature = "rustls-no-provider")]
mod key;
pub(crate) mod nonces;
mod target;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

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
    /// A new proof for a `method` request to `target`, covering `access_token` if given.
    fn proof<'a>(
        &'a self,
        method: &'a Method,
        target: &'a Target,
        access_token: Option<&'a str>,
    ) -> BoxFuture<'a, Result<HeaderValue, Error>>;

    /// The nonces servers asked this key's proofs to carry.
    fn nonces(&self) -> &nonces::Nonces;

    /// The key's RFC 7638 thumbprint.
    fn thumbprint(&self) -> &str;

    /// Whether other processes may hold the same key (from a PEM or a signer), so share the
    /// tokens bound to it.
    #[cfg_attr(not(feature = "shared-cache"), allow(dead_code))]
    fn shareable(&self) -> bool;
}

/// The key a token is bound to.
pub(crate) type Bound = Arc<dyn Prove>;

/// Remember the nonce a response from `target`'s origin gives (servers may send a new one on
/// any response); whether there was one.
pub(crate) fn remember_nonce(key: &Bound, target: &Target, headers: &HeaderMap) -> bool {
    match headers.get(DPOP_NONCE) {
        Some(nonce) if nonces::acceptable(nonce) => {
            key.nonces().remember(target.origin(), nonce);
            true
        }
        _ => false,
    }
}

/// Whether a resource server's response asks for a proof with its nonce: `401` with
/// `WWW-Authenticate: DPoP error="use_dpop_nonce"` and a `DPoP-Nonce`.
pub(crate) fn resource_wants_nonce(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::UNAUTHORIZED
        && headers.contains_key(DPOP_NONCE)
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

/// The key a DPoP token went with, and where: the server's nonces are remembered for it.
pub(crate) struct DpopWatch {
    pub(crate) key: Bound,
    pub(crate) target: Target,
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
    let proof = key.proof(method, &target, Some(token.secret())).await?;
    Ok(Some((
        proof,
        Box::new(DpopWatch {
            key: key.clone(),
            target,
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
