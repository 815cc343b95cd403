//! What the shared cache costs per refresh: a forced refresh through Redis (look, lease,
//! fetch, publish, release) against the same refresh with no shared cache, both over real HTTP
//! to a loopback token server, with a `redis-server` child on a loopback port.
//!
//! `cargo bench -p tower-oauth2-benches --bench shared` (needs `redis-server` on the PATH)

#[path = "../tests/support/mod.rs"]
mod servers;
#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use criterion::Criterion;
use servers::TokenServer;
use support::Row;
use tokio::runtime::Runtime;
use tower_oauth2::{CachePolicy, ClientCredentials, RedisStore};

/// A `redis-server` child on a free loopback port, killed when dropped.
struct Redis(Child, u16);

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("redis-server (apt-get install -y redis-server)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.contains("Ready to accept connections")));
        std::thread::spawn(move || lines.for_each(drop));
        Redis(child, port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every refresh is forced: the token is dropped as rejected, with no rate limit on that.
fn policy() -> CachePolicy {
    CachePolicy::default().invalidation_interval(Duration::ZERO)
}

fn refresh_cost(c: &mut Criterion, runtime: &Runtime) {
    let redis = Redis::start();
    let tokens = runtime.block_on(TokenServer::issuing(3600));
    let builder = || {
        ClientCredentials::builder()
            .token_url(tokens.url())
            .client_id("bench")
            .client_secret("bench-secret")
            .cache_policy(policy())
    };
    let alone = builder().build().unwrap();
    let shared = builder()
        .shared_cache(RedisStore::new(&format!("redis://127.0.0.1:{}/", redis.1)).unwrap())
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
