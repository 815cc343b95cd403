//! What the integration tests share: servers on loopback (a scripted token endpoint, a
//! protected API, any handler), client keys for assertions, and HTTPS endpoints.
#![allow(dead_code)]

pub mod dpop;
pub mod issuer;
pub mod keys;
mod servers;
pub mod tls;

pub use servers::*;
