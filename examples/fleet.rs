//! A fleet of processes sharing one token through Redis: token requests with and without the
//! shared cache, side by side.
//!
//! It starts the embedded token endpoint (4-second tokens) and a `redis-server` child on a
//! loopback port, then runs K worker processes (this program, run again) under load for a few
//! token lifetimes, once with each process on its own and once sharing through Redis, and
//! prints how many token requests the fleet made per lifetime. One process alone refreshes at
//! about half-life with such short tokens (about 2 per lifetime); sharing should bring the
//! whole fleet to what one process needs. It exits non-zero if it does not.
//!
//! ```text
//! cargo run --example fleet --features redis                         # 1 and 4 processes
//! cargo run --example fleet --features redis -- --processes 1,4,16   # the table in the README
//! cargo run --example fleet --features redis -- --check   # CI: 1 alone and 4 sharing only
//! ```
//!
//! Needs `redis-server` on the PATH (`apt-get install -y redis-server`).

#[path = "support/mod.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tower_oauth2::test_util::RedisServer;
use tower_oauth2::{error::BoxError, shared::RedisStore, ClientCredentials};

const LIFETIME: Duration = Duration::from_secs(4);
const LIFETIMES: u32 = 2;
/// Concurrent callers in each process, each asking for a token every 10 ms.
const CALLERS: usize = 8;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--worker") {
        return worker(&args[1..]);
    }
    let processes: Vec<usize> = match args.iter().position(|a| a == "--processes") {
        Some(at) => args
            .get(at + 1)
            .ok_or("--processes needs a list, like 1,4,16")?
            .split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()?,
        None => vec![1, 4],
    };

    // `--check` (CI): only what the check needs, one process alone (the baseline) and each
    // fleet sharing; the full table also runs each fleet alone.
    let check_only = args.iter().any(|a| a == "--check");

    let runtime = tokio::runtime::Runtime::new()?;
    let token_server = runtime.block_on(support::token_server_issuing_for(LIFETIME))?;
    let redis = RedisServer::start()?;

    println!(
        "{LIFETIMES} lifetimes of {LIFETIME:?} tokens, {CALLERS} callers per process; token \
         requests per lifetime, for the whole fleet:"
    );
    println!("| processes | each alone | sharing through Redis |");
    println!("|---|---|---|");
    let mut one_alone = None;
    let mut worst_shared: f64 = 0.0;
    for (run, &count) in processes.iter().enumerate() {
        let mut per_lifetime = [0.0; 2];
        for (column, shared) in [false, true].into_iter().enumerate() {
            if check_only && shared == (count == 1) {
                per_lifetime[column] = f64::NAN;
                continue;
            }
            let before = token_server.requests();
            let store = shared.then(|| (redis.url(), format!("fleet-{run}:")));
            let workers: Vec<Child> = (0..count)
                .map(|_| spawn_worker(&token_server.url(), store.as_ref()))
                .collect::<Result<_, _>>()?;
            for worker in workers {
                if !worker.wait_with_output()?.status.success() {
                    return Err("a worker failed a call".into());
                }
            }
            per_lifetime[column] = (token_server.requests() - before) as f64 / f64::from(LIFETIMES);
        }
        if count == 1 {
            one_alone = Some(per_lifetime[0]);
        }
        if !per_lifetime[1].is_nan() {
            worst_shared = worst_shared.max(per_lifetime[1]);
        }
        let shown = |requests: f64| {
            if requests.is_nan() {
                "-".to_owned()
            } else {
                format!("{requests:.1}")
            }
        };
        println!(
            "| {count} | {} | {} |",
            shown(per_lifetime[0]),
            shown(per_lifetime[1])
        );
    }
    // What one process needs, with room for a cold start spread over the run.
    let one_alone = one_alone.ok_or("include 1 in --processes: it is the baseline")?;
    if worst_shared > one_alone * 1.5 {
        return Err(format!(
            "sharing made {worst_shared:.1} token requests per lifetime; one process alone \
             makes {one_alone:.1}"
        )
        .into());
    }
    Ok(())
}

fn spawn_worker(token_url: &str, store: Option<&(String, String)>) -> std::io::Result<Child> {
    let mut command = Command::new(std::env::current_exe()?);
    command.arg("--worker").arg(token_url);
    match store {
        Some((url, prefix)) => command.arg(url).arg(prefix),
        None => command.arg("-"),
    };
    command.stdout(Stdio::null()).spawn()
}

/// One process of the fleet: `--worker TOKEN_URL (REDIS_URL PREFIX | -)`.
fn worker(args: &[String]) -> Result<(), BoxError> {
    let token_url = args.first().ok_or("--worker needs a token URL")?;
    let mut builder = ClientCredentials::builder()
        .token_url(token_url)
        .client_id(support::CLIENT_ID)
        .client_secret(support::CLIENT_SECRET);
    if let (Some(url), Some(prefix)) = (args.get(1).filter(|a| *a != "-"), args.get(2)) {
        builder = builder.shared_cache(RedisStore::new(url)?.key_prefix(prefix.as_str()));
    }
    let credentials = builder.build()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let until = Instant::now() + LIFETIME * LIFETIMES;
    runtime.block_on(async {
        let callers = (0..CALLERS).map(|_| {
            let credentials = credentials.clone();
            tokio::spawn(async move {
                while Instant::now() < until {
                    credentials.token().await?;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok::<_, tower_oauth2::Error>(())
            })
        });
        for caller in futures_util::future::join_all(callers).await {
            caller??;
        }
        Ok(())
    })
}
