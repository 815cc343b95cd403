//! `BearerAuthLayer` (src/layer.rs, src/future.rs, src/retry.rs, src/grpc.rs) and
//! `BearerAuthMiddleware` (src/middleware.rs) in front of real clients and servers.

mod axum;
mod hyper;
#[cfg(feature = "reqwest")]
mod reqwest;
mod tonic;
