//! OAuth 2.0 bearer tokens for any Tower client, obtained, cached and renewed by themselves.
//!
//! Put [`BearerAuthLayer`] in front of a tonic channel, a hyper-util client or any
//! `tower::Service<http::Request<B>>`, give it a [`TokenSource`] such as [`ClientCredentials`]
//! (RFC 6749 §4.4), and every request carries `Authorization: Bearer …`. Tokens are fetched
//! once, shared by every clone, refreshed in the background before they expire, and a thousand
//! concurrent requests cost the identity provider one token request.
//!
//! ```
//! use std::convert::Infallible;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_oauth2::{BearerAuthLayer, StaticToken};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! // In production the source is a `ClientCredentials`; see its docs and the README.
//! let source = StaticToken::new("token-from-your-provider");
//!
//! let api = service_fn(|request: http::Request<String>| async move {
//!     let auth = request.headers()[http::header::AUTHORIZATION].to_str().unwrap().to_owned();
//!     Ok::<_, Infallible>(http::Response::new(auth))
//! });
//! let client = ServiceBuilder::new()
//!     .layer(BearerAuthLayer::new(source))
//!     .service(api);
//!
//! let response = client.oneshot(http::Request::new(String::new())).await?;
//! assert_eq!(response.body(), "Bearer token-from-your-provider");
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `rustls` (default): the built-in token-endpoint client speaks HTTPS with rustls
//!   (aws-lc-rs, system roots). `rustls-no-provider`, `aws-lc-rs`, `ring`, `native-roots` and
//!   `webpki-roots` choose the parts; see the README for the matrix.
//! - `reqwest`: [`BearerAuthMiddleware`], the same for `reqwest` clients through
//!   `reqwest-middleware`.
//! - `test-util`: [`test_util::TokenServer`], a token endpoint on loopback for your tests.
//! - `metrics`: fetches, their latency, waiters, the cached token's expiry, invalidations and
//!   failures through the `metrics` facade, labelled with [`CachePolicy::name`].
//! - `redis`: [`RedisStore`], so that a whole fleet shares one token (implies `shared-cache`:
//!   the [`SharedStore`] trait, for stores of your own).
//! - `tonic`: token failures reach tonic callers with a gRPC code (`UNAUTHENTICATED`,
//!   `UNAVAILABLE`); `From<Error> for tonic::Status` and [`grpc_status`].
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

mod cache;
mod client_auth;
mod client_credentials;
mod clock;
mod crypto;
mod error;
mod future;
mod layer;
#[cfg(feature = "reqwest")]
mod middleware;
mod policy;
mod retry;
#[cfg(feature = "shared-cache")]
mod shared;
mod source;
mod telemetry;
#[cfg(feature = "test-util")]
pub mod test_util;
mod token;
mod transport;
mod wiped;

pub use cache::TokenCache;
pub use client_auth::{AuthStyle, ClientAuth};
#[cfg(feature = "rustls-no-provider")]
pub use client_auth::{JwsAlgorithm, PrivateKeyJwt};
pub use client_credentials::{ClientCredentials, ClientCredentialsBuilder};
#[cfg(feature = "tonic")]
pub use error::grpc_status;
pub use error::{BoxError, ConfigError, Error, ErrorKind, OAuthError};
pub use future::ResponseFuture;
pub use layer::{BearerAuth, BearerAuthLayer};
#[cfg(feature = "reqwest")]
pub use middleware::BearerAuthMiddleware;
pub use policy::CachePolicy;
pub use retry::RetryOnUnauthorized;
#[cfg(feature = "redis")]
pub use shared::RedisStore;
#[cfg(feature = "shared-cache")]
pub use shared::{SharedStore, StoreFuture};
pub use source::{from_fn, FnSource, StaticToken, TokenFuture, TokenSource};
pub use token::AccessToken;
pub use transport::TokenRequest;

/// The token-response decoder, for the fuzz target in `fuzz/`. Not a public API.
#[cfg(feature = "__fuzz")]
#[doc(hidden)]
pub fn __fuzz_decode(status: u16, content_type: &str, retry_after: &str, body: &[u8]) {
    client_credentials::fuzz_decode(status, content_type, retry_after, body);
}

/// The README's examples, compiled as doctests so that it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
