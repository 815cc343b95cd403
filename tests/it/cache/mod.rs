//! `TokenCache` (src/cache/): every rule about when a token is fetched.

/// Single flight, refresh ahead, backoff, invalidation on 401, cancel safety, over real HTTP.
mod promises;

/// Flights (src/cache/single_flight.rs) against what users' sources and executors do to them.
mod flights;
