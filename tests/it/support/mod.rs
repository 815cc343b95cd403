//! What the integration tests share: servers on loopback (a scripted token endpoint, a
//! protected API, any handler), client keys for assertions, and HTTPS endpoints.
#![allow(dead_code)]

pub mod dpop;
#[cfg(feature = "redis")]
pub mod fleet;
pub mod issuer;
pub mod keys;
#[cfg(feature = "redis")]
pub mod redis_deployments;
mod servers;
pub mod tls;

pub use servers::*;
