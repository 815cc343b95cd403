//! What the shared-cache tests share (`shared_cache`, `shared_fleet`): a `redis-server` started
//! here, direct reads and writes of Redis (standing for any Redis writer), and fleet members
//! built as a process would build them.
#![cfg(feature = "redis")]

use std::time::Duration;

use tower_oauth2::test_util::{RedisServer, TokenServer};
use tower_oauth2::{cache::CachePolicy, shared::RedisStore, ClientCredentials};

pub const SECRET: &str = "fl33t-secret-value";

/// A `redis-server` on a loopback port (the crate's own test helper), killed by its PID on
/// drop. Fails with an install hint when `redis-server` is missing.
pub fn redis_server() -> RedisServer {
    RedisServer::start().unwrap_or_else(|error| panic!("{error}"))
}

/// A plain connection to `redis`, as any Redis writer has.
pub fn connect(redis: &RedisServer) -> redis::Connection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Every key and value in `redis`, read directly.
pub fn dump(redis: &RedisServer) -> Vec<(String, Vec<u8>)> {
    let mut connection = connect(redis);
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut connection).unwrap();
    keys.into_iter()
        .map(|key| {
            let value: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut connection).unwrap();
            (key, value)
        })
        .collect()
}

/// The keys of token entries in `redis` (not their leases or rejected lists).
pub fn entries(redis: &RedisServer) -> Vec<(String, Vec<u8>)> {
    dump(redis)
        .into_iter()
        .filter(|(key, _)| !key.ends_with(":lease") && !key.ends_with(":rejected"))
        .collect()
}

/// Set `key` to `value` in `redis`, directly, without expiry.
pub fn set(redis: &RedisServer, key: &str, value: &[u8]) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(&mut connect(redis))
        .unwrap();
}

/// One client of the fleet: what a process would build.
pub fn client(tokens: &TokenServer, redis: &str, policy: CachePolicy) -> ClientCredentials {
    ClientCredentials::builder()
        .token_url(tokens.url())
        .client_id("fleet-client")
        .client_secret(SECRET)
        .cache_policy(policy)
        .shared_cache(RedisStore::new(redis).unwrap())
        .build()
        .unwrap()
}

/// Tokens that live `lifetime`, refreshed at half-life, with no floors in the way.
pub fn short_lived() -> CachePolicy {
    CachePolicy::default()
        .min_lifetime(Duration::ZERO)
        .min_fetch_interval(Duration::ZERO)
        .expiry_margin(Duration::from_millis(100))
        .refresh_ahead(0.5, Duration::ZERO, Duration::from_secs(60))
        .jitter(0.0)
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}
