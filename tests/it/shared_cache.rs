//! The shared cache against a real `redis-server`, started here on a free loopback port and
//! stopped by its PID: several caches standing for several processes, real separate processes,
//! a lease holder dying, Redis dying and coming back, values that are not ours, encryption
//! checked by reading Redis directly.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::fleet::{client, contains, dump, redis_server, set, short_lived, SECRET};
use crate::support::{self, json};
use http::StatusCode;
use tower_oauth2::test_util::RedisServer;
use tower_oauth2::{cache::CachePolicy, shared::RedisStore, ClientCredentials};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_standing_for_processes_share_one_token_request() {
    let redis = redis_server();
    let tokens = support::issuing(3600).await;
    let fleet: Vec<_> = (0..8)
        .map(|_| client(&tokens, &redis.url(), CachePolicy::default()))
        .collect();

    let calls = fleet.iter().flat_map(|member| {
        (0..50).map(move |_| {
            let member = member.clone();
            tokio::spawn(async move { member.token().await.unwrap().secret().to_owned() })
        })
    });
    for call in futures_util::future::join_all(calls).await {
        assert_eq!(call.unwrap(), "token-1");
    }
    assert_eq!(
        tokens.requests(),
        1,
        "one token request for 8 caches × 50 callers"
    );
}

/// A fleet authenticating with private_key_jwt has no secret: the private key keys the
/// encryption, and only holders of the same key read the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_with_private_key_jwt_shares_through_a_key_derived_from_the_private_key() {
    let redis = redis_server();
    let tokens = support::issuing(3600).await;
    let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let other_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let member = |pem: &str| {
        ClientCredentials::builder()
            .token_url(tokens.url())
            .client_id("fleet-client")
            .private_key_jwt(tower_oauth2::client_auth::PrivateKeyJwt::from_pem(pem).unwrap())
            .shared_cache(RedisStore::new(&redis.url()).unwrap())
            .build()
            .unwrap()
    };
    assert_eq!(member(&key).token().await.unwrap().secret(), "token-1");
    assert_eq!(member(&key).token().await.unwrap().secret(), "token-1");
    assert_eq!(
        tokens.requests(),
        1,
        "the second process read the first one's token"
    );
    assert_eq!(
        member(&other_key).token().await.unwrap().secret(),
        "token-2",
        "another key cannot open the stored token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_refreshes_once_per_lifetime() {
    let redis = redis_server();
    let tokens = support::issuing(2).await;
    let fleet: Vec<_> = (0..4)
        .map(|_| client(&tokens, &redis.url(), short_lived()))
        .collect();

    // 5 s of traffic on 2 s tokens refreshed at half-life: about 5 lifetimes' worth of
    // refreshes for the whole fleet, not 4 times that.
    let until = Instant::now() + Duration::from_secs(5);
    let mut failures = 0;
    while Instant::now() < until {
        for member in &fleet {
            failures += usize::from(member.token().await.is_err());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert_eq!(failures, 0);
    let hits = tokens.requests();
    assert!(
        (2..=7).contains(&hits),
        "{hits} token requests for 4 processes over 5 s of 2 s tokens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_neither_a_token_nor_the_secret() {
    let redis = redis_server();
    let tokens = support::issuing(3600).await;
    let token = client(&tokens, &redis.url(), CachePolicy::default())
        .token()
        .await
        .unwrap();

    let dump = dump(&redis);
    assert_eq!(dump.len(), 1, "one entry, the lease released: {dump:?}");
    let (key, value) = &dump[0];
    assert!(key.starts_with("tower-oauth2:token:"), "{key}");
    for (name, text) in [("token", token.secret()), ("secret", SECRET)] {
        assert!(!contains(value, text), "the {name} is readable in Redis");
        assert!(!key.contains(text), "the {name} is in the key");
    }
    assert!(value.starts_with(b"TO2\x02"), "our sealed format");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_or_foreign_value_is_ignored_and_overwritten() {
    let redis = redis_server();
    let tokens = support::issuing(3600).await;
    client(&tokens, &redis.url(), CachePolicy::default())
        .token()
        .await
        .unwrap();
    let (key, _) = dump(&redis).remove(0);

    for foreign in [
        b"garbage".to_vec(),
        b"TO2\x01short".to_vec(),
        b"TO2\x01000000000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec(),
    ] {
        set(&redis, &key, &foreign);
        let hits = tokens.requests();
        let token = client(&tokens, &redis.url(), CachePolicy::default())
            .token()
            .await
            .unwrap();
        assert_eq!(tokens.requests(), hits + 1, "fetched instead of adopting");
        let (_, value) = dump(&redis).remove(0);
        assert_ne!(value, foreign, "overwritten");
        assert!(!contains(&value, token.secret()));
    }

    // Another type of value under the key: a list.
    {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut connection = client.get_connection().unwrap();
        let _: () = redis::cmd("DEL").arg(&key).query(&mut connection).unwrap();
        let _: () = redis::cmd("LPUSH")
            .arg(&key)
            .arg("x")
            .query(&mut connection)
            .unwrap();
    }
    let hits = tokens.requests();
    client(&tokens, &redis.url(), CachePolicy::default())
        .token()
        .await
        .unwrap();
    assert_eq!(tokens.requests(), hits + 1);
    let (_, value) = dump(&redis).remove(0);
    assert!(value.starts_with(b"TO2\x02"), "the list was replaced");

    // A client with another secret has an entry of its own: it neither reads this one nor
    // waits on its lease.
    let other = ClientCredentials::builder()
        .token_url(tokens.url())
        .client_id("fleet-client")
        .client_secret("another-secret")
        .shared_cache(RedisStore::new(&redis.url()).unwrap())
        .build()
        .unwrap();
    let hits = tokens.requests();
    other.token().await.unwrap();
    assert_eq!(
        tokens.requests(),
        hits + 1,
        "not readable with another secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_leaves_the_store_only_while_it_is_still_there() {
    let redis = redis_server();
    let tokens = support::issuing(3600).await;
    let a = client(&tokens, &redis.url(), CachePolicy::default());
    let b = client(&tokens, &redis.url(), CachePolicy::default());
    let first = a.token().await.unwrap();
    assert_eq!(b.token().await.unwrap().secret(), "token-1");

    // The API rejects token-1 for A: A drops it from Redis too, and fetches token-2.
    a.invalidate(&first);
    assert_eq!(a.token().await.unwrap().secret(), "token-2");

    // B's late report about token-1 must not drop token-2: B adopts it.
    let b_first = b.token().await.unwrap();
    b.invalidate(&b_first);
    assert_eq!(b.token().await.unwrap().secret(), "token-2");
    assert_eq!(tokens.requests(), 2);
}

/// The lease outlasts the holder's whole fetch (here a 500 ms request timeout: 1.5 s); when the
/// holder dies, a waiter competes for the lease again once it expires, fetches, and publishes
/// for the rest of the fleet.
#[test]
fn a_lease_holder_that_dies_mid_fetch_is_replaced_by_a_waiter_that_publishes() {
    let redis = redis_server();
    let servers = tokio::runtime::Runtime::new().unwrap();
    let stall_first = Arc::new(AtomicBool::new(true));
    let tokens = servers.block_on({
        let stall_first = stall_first.clone();
        support::scripted_async(move |_, n| {
            let stall = stall_first.swap(false, Ordering::SeqCst);
            async move {
                if stall {
                    std::future::pending::<()>().await;
                }
                json(
                    StatusCode::OK,
                    serde_json::json!({
                        "access_token": format!("token-{n}"),
                        "token_type": "Bearer",
                        "expires_in": 3600,
                    }),
                )
            }
        })
    });
    let member = || {
        ClientCredentials::builder()
            .token_url(tokens.url())
            .client_id("fleet-client")
            .client_secret(SECRET)
            .timeout(Duration::from_millis(500))
            .shared_cache(RedisStore::new(&redis.url()).unwrap())
            .build()
            .unwrap()
    };

    // The holder: takes the lease, its request hangs, and its process (runtime) dies.
    let holder = member();
    let doomed = tokio::runtime::Runtime::new().unwrap();
    doomed.spawn(async move { holder.token().await });
    while tokens.requests() == 0 {
        std::thread::yield_now();
    }
    drop(doomed);

    let other = member();
    let started = Instant::now();
    let token = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(other.token())
        .unwrap();
    let waited = started.elapsed();

    assert_eq!(token.secret(), "token-2");
    assert!(
        waited < Duration::from_secs(3),
        "waited {waited:?}, more than the 1.5 s lease and a fetch"
    );
    // What the waiter fetched was published: the next process adopts it.
    let third = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(member().token())
        .unwrap();
    assert_eq!(third.secret(), "token-2");
    assert_eq!(tokens.requests(), 2, "the dead holder's and the waiter's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load_fails_no_call() {
    let mut redis = redis_server();
    let port = redis.port();
    let tokens = support::issuing(1).await;
    let fleet: Vec<_> = (0..4)
        .map(|_| client(&tokens, &redis.url(), short_lived()))
        .collect();
    let failures = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = fleet
        .iter()
        .map(|member| {
            let (member, failures, calls, stop) = (
                member.clone(),
                failures.clone(),
                calls.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    if member.token().await.is_err() {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = RedisServer::start_on(port).unwrap();
    // Sharing resumes once each process's breaker lets it try again (a few seconds at most).
    let deadline = Instant::now() + Duration::from_secs(10);
    while dump(&restarted).is_empty() {
        assert!(Instant::now() < deadline, "sharing never resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }

    assert_eq!(failures.load(Ordering::SeqCst), 0);
    assert!(calls.load(Ordering::SeqCst) > 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_one_timeout_per_backoff_step() {
    // Accepts connections and never answers; counts them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let tokens = support::issuing(1).await;
    let member = client(
        &tokens,
        &format!("redis://127.0.0.1:{port}/"),
        short_lived(),
    );

    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        member.token().await.expect("a hung Redis fails no call");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let fetches = tokens.requests();
    let tried = connections.load(Ordering::SeqCst);
    assert!(fetches >= 6, "{fetches} fetches of 1 s tokens in 4 s");
    assert!(
        tried <= 4,
        "{tried} attempts on a hung Redis over {fetches} fetches: the breaker should allow \
         one per backoff step (1 s, 2 s, …)"
    );
}

/// Real separate processes: this test binary (`it`), run again as workers that run only
/// [`fleet_worker`], selected by its full path in the binary.
#[test]
fn separate_processes_share_one_token_request() {
    if std::env::var_os("FLEET_WORKER_REDIS").is_some() {
        return; // Running as a worker: `fleet_worker` does the work.
    }
    let redis = redis_server();
    let servers = tokio::runtime::Runtime::new().unwrap();
    let tokens = servers.block_on(support::issuing(3600));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "shared_cache::fleet_worker",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("FLEET_WORKER_REDIS", redis.url())
                .env("FLEET_WORKER_TOKEN_URL", tokens.url())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for worker in workers {
        let output = worker.wait_with_output().unwrap();
        assert!(output.status.success(), "a worker failed");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("worker token: token-1"),
            "every process uses the one token: {stdout}"
        );
    }
    assert_eq!(tokens.requests(), 1, "one token request for 4 processes");
}

/// One process of [`separate_processes_share_one_token_request`]; does nothing on its own.
#[test]
fn fleet_worker() {
    let (Some(redis), Some(token_url)) = (
        std::env::var_os("FLEET_WORKER_REDIS"),
        std::env::var_os("FLEET_WORKER_TOKEN_URL"),
    ) else {
        return;
    };
    let credentials = ClientCredentials::builder()
        .token_url(token_url.to_str().unwrap())
        .client_id("fleet-client")
        .client_secret(SECRET)
        .shared_cache(RedisStore::new(redis.to_str().unwrap()).unwrap())
        .build()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tokens = runtime.block_on(futures_util::future::join_all((0..20).map(|_| {
        let credentials = credentials.clone();
        async move { credentials.token().await.unwrap().secret().to_owned() }
    })));
    assert!(tokens.iter().all(|token| token == &tokens[0]));
    println!("worker token: {}", tokens[0]);
}

#[test]
fn without_a_runtime_it_is_a_runtime_error_and_the_store_is_untouched() {
    let redis = redis_server();
    let servers = tokio::runtime::Runtime::new().unwrap();
    let tokens = servers.block_on(support::issuing(3600));
    let member = client(&tokens, &redis.url(), CachePolicy::default());

    let error = futures_util::FutureExt::now_or_never(member.token())
        .expect("answers at once")
        .unwrap_err();
    assert_eq!(error.kind(), tower_oauth2::ErrorKind::Runtime, "{error}");

    // Nothing was poisoned: on a runtime it fetches and shares.
    let token = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(member.token())
        .unwrap();
    assert_eq!(token.secret(), "token-1");
    assert_eq!(dump(&redis).len(), 1);
}
