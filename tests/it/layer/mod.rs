//! `BearerAuthLayer` (src/layer/, with src/error/grpc.rs for tonic) and `BearerAuthMiddleware`
//! (src/middleware.rs) in front of real clients and servers.

mod axum;
mod hyper;
mod per_request;
#[cfg(feature = "reqwest")]
mod reqwest;
mod tonic;
