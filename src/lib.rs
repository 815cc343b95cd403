//! OAuth 2.0 bearer tokens for any Tower client — a tonic channel, a hyper-util client, an
//! axum service calling another API, reqwest — obtained, cached and renewed by themselves.
//!
//! Put [`BearerAuthLayer`] in front of any `tower::Service<http::Request<B>>`, give it
//! [`ClientCredentials`] (RFC 6749 §4.4) or any other [`TokenSource`], and every request
//! carries `Authorization: Bearer …`. Tokens are fetched once, shared by every clone,
//! refreshed before they expire while requests keep using the current one, and a thousand
//! concurrent requests cost the identity provider one token request. With a token cached, a
//! request costs a thread-local lookup, a coarse clock read and a header insert: no lock, no
//! allocation. Secrets and tokens never appear in `Debug`, `Display`, errors or logs.
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
//!     .layer(BearerAuthLayer::new(credentials)) // every request: Authorization: Bearer …
//!     .service(channel);
//! # let _ = channel;
//! # Ok(())
//! # }
//! ```
//!
//! When no token can be had, the request is not sent: the call fails with an [`Error`] that
//! names the endpoint and says what is likely to fix it (with the `tonic` feature, as the gRPC
//! code gRFC A54 asks for: [`error::grpc`]).
//!
//! # Recipes
//!
//! In [`guide`], each compiled as a doctest: [a tonic channel](guide::tonic),
//! [a hyper-util client](guide::hyper_util), [an axum service calling another
//! API](guide::axum), [reqwest](guide::reqwest), [one token for a whole fleet](guide::fleet),
//! [client authentication](guide::client_authentication) (secrets, `private_key_jwt`,
//! `client_secret_jwt`, mutual TLS), [identity providers](guide::providers) (Auth0, Okta,
//! Entra ID, Keycloak, Cognito, discovery), and [testing your code](guide::testing) against a
//! real token endpoint on loopback. The reference: [how it behaves](guide::behaviour),
//! [security](guide::security), [performance](guide::performance), [metrics](guide::metrics).
//!
//! # A map of the modules
//!
//! | module | what is in it |
//! |---|---|
//! | [`layer`] | [`BearerAuthLayer`] and its service [`BearerAuth`]; [`RetryOnUnauthorized`](layer::RetryOnUnauthorized) |
//! | [`middleware`] | [`BearerAuthMiddleware`], the same for reqwest (feature `reqwest`) |
//! | [`client_credentials`] | [`ClientCredentials`]: the client credentials grant and its builder |
//! | [`token_exchange`] | [`TokenExchange`](token_exchange::TokenExchange): RFC 8693 token exchange (workload identity federation, chained tokens) |
//! | [`workload`] | recipes: Azure / Entra workload identity from its environment, Google `external_account` files |
//! | [`jwt_bearer`] | [`JwtBearer`](jwt_bearer::JwtBearer): the RFC 7523 jwt-bearer grant |
//! | [`dpop`] | [`DpopKey`](dpop::DpopKey): tokens bound to a key, with a proof on every request (RFC 9449) |
//! | [`client_auth`] | [`ClientAuth`]: how a client authenticates (secrets, secret files, `private_key_jwt`, assertions made elsewhere, mTLS) |
//! | [`source`] | [`TokenSource`], "get me a token", and small sources ([`StaticToken`](source::StaticToken), [`from_fn`](source::from_fn)) |
//! | [`cache`] | [`TokenCache`] in front of any source, and its [`CachePolicy`](cache::CachePolicy) |
//! | [`shared`] | one token for a whole fleet: [`SharedStore`](shared::SharedStore), [`RedisStore`](shared::RedisStore) (features `shared-cache`, `redis`) |
//! | [`token`] | [`AccessToken`] |
//! | [`error`] | [`Error`], [`ErrorKind`], [`ConfigError`]; gRPC codes in [`error::grpc`] (feature `tonic`) |
//! | [`transport`] | the request type a custom HTTP client for the token endpoint takes |
//! | [`test_util`] | a token endpoint (and a `redis-server`) on loopback for your tests (feature `test-util`) |
//! | [`guide`] | recipes and reference (documentation only) |
//!
//! # Features
//!
//! Items that need a feature say so on docs.rs. The defaults are lean: HTTPS for the token
//! client and nothing else.
//!
//! | feature | what it adds |
//! |---|---|
//! | `rustls` (default) | HTTPS for the built-in token client: rustls with aws-lc-rs and the system's roots, as reqwest's and hyper-rustls's defaults (`rustls-no-provider`, `aws-lc-rs`, `ring`, `native-roots`, `webpki-roots` choose the parts: [`guide::features`]) |
//! | `tonic` | token failures reach tonic callers with a meaningful gRPC code ([`error::grpc`]) |
//! | `reqwest` | [`BearerAuthMiddleware`], for reqwest through reqwest-middleware |
//! | `redis` | [`shared::RedisStore`]: one token for a whole fleet (implies `shared-cache`, the [`shared::SharedStore`] trait for stores of your own) |
//! | `redis-cluster` | `shared::RedisStore::cluster`, for Redis Cluster (implies `redis`) |
//! | `metrics` | fetches, latency, waiters, expiry, invalidations and failures through the `metrics` facade ([`guide::metrics`]) |
//! | `test-util` | [`test_util::TokenServer`], a token endpoint on loopback for your tests |
//!
//! # A command-line tool
//!
//! The `tower-oauth2-cli` package installs `tower-oauth2`, which fetches one token from a real
//! identity provider with this crate's client and shows what came back (endpoint, type, expiry,
//! scope, a JWT's claims) without printing the token: `cargo install tower-oauth2-cli`, then
//! `tower-oauth2 token --help`.
#![cfg_attr(docsrs, feature(doc_cfg))]
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
pub mod guide;
pub mod jwt_bearer;
pub mod layer;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod middleware;
mod policy;
#[cfg(feature = "shared-cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "shared-cache")))]
pub mod shared;
pub mod source;
mod telemetry;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
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
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
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
