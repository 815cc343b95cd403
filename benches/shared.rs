//! What the shared cache costs per refresh: a forced refresh through Redis (look, lease,
//! fetch, publish, release) against the same refresh with no shared cache, both over real HTTP
//! to a loopback token server, with a `redis-server` child on a loopback port.
//!
//! `cargo bench -p tower-oauth2-benches --bench shared` (needs `redis-server` on the PATH)

#[path = "../tests/it/support/servers.rs"]
mod servers;
#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use criterion::Criterion;
use support::Row;
use tokio::runtime::Runtime;
use tower_oauth2::test_util::RedisServer;
use tower_oauth2::{cache::CachePolicy, shared::RedisStore, ClientCredentials};

/// Every refresh is forced: the token is dropped as rejected, with no rate limit on that.
fn policy() -> CachePolicy {
    CachePolicy::default().invalidation_interval(Duration::ZERO)
}

fn refresh_cost(c: &mut Criterion, runtime: &Runtime) {
    let redis = RedisServer::start().expect("redis-server (apt-get install -y redis-server)");
    let tokens = runtime.block_on(servers::issuing(3600));
    let builder = || {
        ClientCredentials::builder()
            .token_url(tokens.url())
            .client_id("bench")
            .client_secret("bench-secret")
            .cache_policy(policy())
    };
    let alone = builder().build().unwrap();
    let shared = builder()
        .shared_cache(RedisStore::new(&redis.url()).unwrap())
        .build()
        .unwrap();

    let mut group = c.benchmark_group("shared_refresh");
    for (name, credentials) in [("alone", &alone), ("through_redis", &shared)] {
        group.bench_function(name, |b| {
            b.to_async(runtime).iter(|| async {
                let token = credentials.token().await.unwrap();
                credentials.invalidate(&token);
                credentials.token().await.unwrap()
            })
        });
    }
    group.finish();
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut c = support::criterion();
    refresh_cost(&mut c, &runtime);
    c.final_summary();

    let mut rows = Vec::new();
    if let Some(ratio) = support::ratio("shared_refresh", "through_redis", "alone") {
        rows.push(Row {
            name: "a refresh through Redis vs alone (latency, loopback)",
            ratio,
            unit: "x",
            goal: "<= 3x",
            met: ratio <= 3.0,
        });
    }
    support::report("shared cache", &rows);
}
