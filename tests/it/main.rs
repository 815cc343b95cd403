//! The integration tests: one binary whose modules mirror the crate's `src/` areas, so that
//! the test suite links tonic, axum, reqwest and jsonwebtoken once. See `tests/README.md` for
//! the layout, how to run one module, and where each invariant of the design is tested.
//!
//! Tests that need the whole process to themselves are separate binaries:
//! `tests/allocations.rs` (a counting `#[global_allocator]`) and `tests/proxy.rs` (it sets
//! proxy environment variables).

mod support;

#[cfg(feature = "redis")]
mod adversary_fleet;
#[cfg(feature = "test-util")]
mod adversary_workload;
mod cache;
mod client_credentials;
#[cfg(feature = "test-util")]
mod dpop;
mod faults;
#[cfg(feature = "test-util")]
mod jwt_bearer;
mod layer;
#[cfg(feature = "metrics")]
mod metrics;
mod regressions;
mod runtimes;
mod secrets;
#[cfg(feature = "redis")]
mod shared_cache;
#[cfg(feature = "redis")]
mod shared_deployments;
#[cfg(feature = "redis")]
mod shared_fleet;
#[cfg(feature = "test-util")]
mod test_util;
#[cfg(feature = "test-util")]
mod token_exchange;
#[cfg(feature = "test-util")]
mod workload;
