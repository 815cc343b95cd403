//! `BearerAuthLayer` (src/layer/, with src/error/grpc.rs for tonic) and `BearerAuthMiddleware`
//! (src/middleware.rs) in front of real clients and servers.

mod axum;
mod hyper;
#[cfg(feature = "reqwest")]
mod reqwest;
mod tonic;
