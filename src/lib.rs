//! OAuth 2.0 bearer tokens for any Tower client, obtained, cached and renewed by themselves.
//!
//! Put [`BearerAuthLayer`] in front of a tonic channel, a hyper-util client or any
//! `tower::Service<http::Request<B>>`, give it [`ClientCredentials`] (RFC 6749 §4.4) or any
//! other [`TokenSource`], and every request carries `Authorization: Bearer …`. Tokens are
//! fetched once, shared by every clone, refreshed before they expire, and a thousand
//! concurrent requests cost the identity provider one token request.
//!
//! ```no_run
//! # async fn run(channel: tonic::transport::Channel) -> Result<(), tower_oauth2::ConfigError> {
//! use tower_oauth2::{BearerAuthLayer, ClientCredentials};
//!
//! let credentials = ClientCredentials::builder()
//!     .token_url("https://idp.example.com/oauth/token")
//!     .client_id("my-service")
//!     .client_secret(std::env::var("CLIENT_SECRET").unwrap_or_default())
//!     .build()?;
//! let channel = tower::ServiceBuilder::new()
//!     .layer(BearerAuthLayer::new(credentials))
//!     .service(channel);
//! # let _ = channel;
//! # Ok(())
//! # }
//! ```
//!
//! # A map of the modules
//!
//! | module | what is in it |
//! |---|---|
//! | [`layer`] | [`BearerAuthLayer`] and its service; [`RetryOnUnauthorized`](layer::RetryOnUnauthorized) |
//! | [`middleware`] | [`BearerAuthMiddleware`], the same for reqwest (feature `reqwest`) |
//! | [`client_credentials`] | [`ClientCredentials`]: the client credentials grant and its builder |
//! | [`token_exchange`] | [`TokenExchange`](token_exchange::TokenExchange): RFC 8693 token exchange (workload identity federation, chained tokens) |
//! | [`workload`] | recipes: Azure / Entra workload identity from its environment, Google `external_account` files |
//! | [`jwt_bearer`] | [`JwtBearer`](jwt_bearer::JwtBearer): the RFC 7523 jwt-bearer grant |
//! | [`dpop`] | [`DpopKey`](dpop::DpopKey): tokens bound to a key, with a proof on every request (RFC 9449) |
//! | [`client_auth`] | [`ClientAuth`]: how a client authenticates (secrets, secret files, `private_key_jwt`, assertions made elsewhere, mTLS) |
//! | [`source`] | [`TokenSource`], "get me a token", and small sources ([`StaticToken`](source::StaticToken), [`from_fn`](source::from_fn)) |
//! | [`cache`] | [`TokenCache`] in front of any source, and its [`CachePolicy`](cache::CachePolicy) |
//! | [`shared`] | one token for a whole fleet through Redis (feature `redis`) |
//! | [`token`] | [`AccessToken`] |
//! | [`error`] | [`Error`], [`ErrorKind`], [`ConfigError`]; gRPC codes (feature `tonic`) |
//! | [`transport`] | the request type a custom HTTP client for the token endpoint takes |
//! | [`test_util`] | a token endpoint (and a `redis-server`) on loopback for your tests (feature `test-util`) |
//!
//! # Features
//!
//! - `rustls` (default): the built-in token-endpoint client speaks HTTPS with rustls
//!   (aws-lc-rs, system roots). `rustls-no-provider`, `aws-lc-rs`, `ring`, `native-roots` and
//!   `webpki-roots` choose the parts; see the README for the matrix.
//! - `reqwest`: [`BearerAuthMiddleware`], for `reqwest` clients through `reqwest-middleware`.
//! - `test-util`: `test_util::TokenServer`, a token endpoint on loopback for your tests.
//! - `metrics`: fetches, their latency, waiters, the cached token's expiry, invalidations and
//!   failures through the `metrics` facade, labelled with `CachePolicy::name`.
//! - `redis`: `shared::RedisStore`, so that a whole fleet shares one token (implies
//!   `shared-cache`: the `shared::SharedStore` trait, for stores of your own).
//! - `tonic`: token failures reach tonic callers with a gRPC code (`UNAUTHENTICATED`,
//!   `UNAVAILABLE`); `From<Error> for tonic::Status` and `error::grpc_status`.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

pub mod cache;
pub mod client_auth;
pub mod client_credentials;
mod clock;
mod crypto;
pub mod dpop;
pub mod error;
mod grant;
pub mod jwt_bearer;
pub mod layer;
#[cfg(feature = "reqwest")]
pub mod middleware;
mod policy;
#[cfg(feature = "shared-cache")]
pub mod shared;
pub mod source;
mod telemetry;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod token;
pub mod token_exchange;
pub mod transport;
mod wiped;
pub mod workload;

pub use cache::TokenCache;
pub use client_auth::ClientAuth;
pub use client_credentials::ClientCredentials;
pub use error::{ConfigError, Error, ErrorKind};
pub use layer::{BearerAuth, BearerAuthLayer};
#[cfg(feature = "reqwest")]
pub use middleware::BearerAuthMiddleware;
pub use source::TokenSource;
pub use token::AccessToken;

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
