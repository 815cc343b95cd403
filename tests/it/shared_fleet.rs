//! The fleet against what production brings (issue 22): an identity provider slower than a
//! short lease, clocks a minute apart (`faketime`), per-pod keys, a Redis writer replaying an
//! old value or squatting the lease, and a read-only replica. Real `redis-server` processes
//! on loopback, stopped by PID; real processes where clocks must differ.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::fleet::{client, connect, entries, redis_server, short_lived, SECRET};
use crate::support::{self, json};
use http::StatusCode;
use tower_oauth2::cache::CachePolicy;
use tower_oauth2::client_auth::PrivateKeyJwt;
use tower_oauth2::shared::RedisStore;
use tower_oauth2::test_util::{RedisServer, TokenServer};
use tower_oauth2::ClientCredentials;

/// A token response: `token-n`, valid an hour.
fn token_response(n: usize) -> http::Response<support::Body> {
    json(
        StatusCode::OK,
        serde_json::json!({
            "access_token": format!("token-{n}"),
            "token_type": "Bearer",
            "expires_in": 3600,
        }),
    )
}

/// Set `key` to `value` in `redis` directly, kept for an hour: a Redis writer putting it back.
fn put_back(redis: &RedisServer, key: &str, value: &[u8]) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("PX")
        .arg(3_600_000)
        .query(&mut connect(redis))
        .unwrap();
}

/// Wait (bounded: Redis has no signal to offer) until `redis` holds no token entry.
async fn until_no_entry(redis: &RedisServer, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !entries(redis).is_empty() {
        assert!(Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Defect 1: the lease outlasts the whole fetch, discovery included. With a 400 ms request
/// timeout and an IdP taking 300 ms for its metadata and 300 ms for a token, a lease of the
/// request timeout (as before) expired mid-fetch and every waiter fetched alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_fleet_makes_one_token_request_to_an_identity_provider_slower_than_a_request() {
    let redis = redis_server();
    let token_requests = Arc::new(AtomicUsize::new(0));
    let counted = token_requests.clone();
    let addr = support::serve(move |request: http::Request<hyper::body::Incoming>| {
        let counted = counted.clone();
        async move {
            let host = request
                .headers()
                .get(http::header::HOST)
                .and_then(|host| host.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            match request.uri().path() {
                "/.well-known/oauth-authorization-server" => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    json(
                        StatusCode::OK,
                        serde_json::json!({
                            "issuer": format!("http://{host}"),
                            "token_endpoint": format!("http://{host}/oauth/token"),
                        }),
                    )
                }
                "/oauth/token" => {
                    let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    token_response(n)
                }
                _ => json(StatusCode::NOT_FOUND, serde_json::json!({})),
            }
        }
    })
    .await;
    // Eight processes, each built on its own, cold-starting together.
    let fleet: Vec<ClientCredentials> = (0..8)
        .map(|_| {
            ClientCredentials::builder()
                .issuer(format!("http://{addr}"))
                .client_id("fleet-client")
                .client_secret(SECRET)
                .timeout(Duration::from_millis(400))
                .shared_cache(RedisStore::new(&redis.url()).unwrap())
                .build()
                .unwrap()
        })
        .collect();

    let tokens = futures_util::future::join_all(fleet.iter().map(|member| member.token())).await;

    for token in tokens {
        assert_eq!(token.unwrap().secret(), "token-1");
    }
    assert_eq!(
        token_requests.load(Ordering::SeqCst),
        1,
        "one token request for a cold fleet of 8"
    );
}

/// Defect 2: instances with different private keys (per pod) use different entries: neither
/// waits on the other's lease for a token it could not open, and each key makes one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_with_their_own_keys_use_their_own_entries_and_never_wait_on_each_other() {
    const LATENCY: Duration = Duration::from_millis(600);
    let redis = redis_server();
    let tokens = support::scripted_async(|_, n| async move {
        tokio::time::sleep(LATENCY).await;
        token_response(n)
    })
    .await;
    let key_a = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let key_b = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let pod = |pem: &str| {
        ClientCredentials::builder()
            .token_url(tokens.url())
            .client_id("fleet-client")
            .private_key_jwt(PrivateKeyJwt::from_pem(pem).unwrap())
            .shared_cache(RedisStore::new(&redis.url()).unwrap())
            .build()
            .unwrap()
    };
    let pods = [pod(&key_a), pod(&key_a), pod(&key_b), pod(&key_b)];

    let started = Instant::now();
    let got: Vec<String> = futures_util::future::join_all(pods.iter().map(|pod| pod.token()))
        .await
        .into_iter()
        .map(|token| token.unwrap().secret().to_owned())
        .collect();
    let took = started.elapsed();

    assert_eq!(tokens.requests(), 2, "one request per key: {got:?}");
    assert_eq!(got[0], got[1], "the pods with key A share their token");
    assert_eq!(got[2], got[3], "the pods with key B share theirs");
    assert_ne!(got[0], got[2], "no token crosses keys");
    assert_eq!(entries(&redis).len(), 2, "one entry per key");
    assert!(
        took < LATENCY + LATENCY / 2,
        "took {took:?}: one key's pods waited for the other's fetch"
    );
}

/// Defect 3, the reader: a process whose clock is a minute ahead (this test binary again,
/// under `faketime`, monotonic clock untouched) publishes a 2 s token; a process with the
/// right clock never hands it out past its expiry.
#[test]
fn clocks_a_minute_apart_hand_out_no_expired_token() {
    if std::env::var_os("SKEWED_PUBLISHER_REDIS").is_some() {
        return; // Running as the publisher: `skewed_publisher` does the work.
    }
    let redis = redis_server();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tokens = runtime.block_on(async {
        TokenServer::builder()
            .client("fleet-client", SECRET)
            .lifetime(Duration::from_secs(2))
            .start()
            .await
            .unwrap()
    });

    let publisher = Command::new("faketime")
        .args(["-f", "+60s"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "shared_fleet::skewed_publisher",
            "--nocapture",
            "--test-threads=1",
        ])
        // Only the wall clock is skewed, as between two machines.
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("SKEWED_PUBLISHER_REDIS", redis.url())
        .env("SKEWED_PUBLISHER_TOKEN_URL", tokens.url())
        .stdout(Stdio::piped())
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run `faketime` ({error}): this test needs it, install it, e.g. \
                 `apt-get install -y faketime`"
            )
        });
    let stdout = String::from_utf8_lossy(&publisher.stdout);
    assert!(publisher.status.success(), "the publisher failed: {stdout}");
    let their_clock: u64 = stdout
        .lines()
        .find_map(|line| Some(line.split_once("publisher clock: ")?.1))
        .and_then(|secs| secs.trim().parse().ok())
        .unwrap_or_else(|| panic!("the publisher did not say its clock: {stdout}"));
    let our_clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        their_clock >= our_clock + 50,
        "faketime did not move the publisher's clock ({their_clock} vs {our_clock})"
    );
    assert_eq!(tokens.requests(), 1, "published token-1");

    let reader = client(&tokens, &redis.url(), short_lived());
    runtime.block_on(async {
        let mut handed_out = Vec::new();
        let until = Instant::now() + Duration::from_millis(2500);
        while Instant::now() < until {
            let token = reader.token().await.unwrap();
            assert!(
                tokens.accepts(token.secret()),
                "handed out {} past its expiry (seen: {handed_out:?})",
                token.secret()
            );
            if handed_out.last() != Some(&token.secret().to_owned()) {
                handed_out.push(token.secret().to_owned());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            handed_out.first().map(String::as_str),
            Some("token-1"),
            "adopted the skewed publisher's token while it was fresh"
        );
    });
}

/// The publisher of [`clocks_a_minute_apart_hand_out_no_expired_token`]; does nothing on its own.
#[test]
fn skewed_publisher() {
    let (Some(redis), Some(token_url)) = (
        std::env::var_os("SKEWED_PUBLISHER_REDIS"),
        std::env::var_os("SKEWED_PUBLISHER_TOKEN_URL"),
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
    let token = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(credentials.token())
        .unwrap();
    assert_eq!(token.secret(), "token-1");
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    println!("publisher clock: {clock}");
}

/// Defect 4: a rejected token leaves the store when it is invalidated (not at the rejecting
/// process's next fetch), and its fingerprint is shared: a Redis writer putting the old sealed
/// value back gets it adopted by no process, the rejecting one included after it rejected
/// another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_put_back_by_a_redis_writer_is_adopted_by_no_process() {
    let redis = redis_server();
    let tokens = support::issuing(3600).await;
    // A process whose API rejects two tokens in a row, without waiting between them.
    let rejecting = CachePolicy::default().invalidation_interval(Duration::ZERO);
    let a = client(&tokens, &redis.url(), rejecting);
    let first = a.token().await.unwrap();
    let (key, token_1) = entries(&redis).remove(0);

    a.invalidate(&first);
    until_no_entry(
        &redis,
        "the rejected token is still in Redis after invalidate",
    )
    .await;

    put_back(&redis, &key, &token_1);
    let c = client(&tokens, &redis.url(), CachePolicy::default());
    assert_eq!(c.token().await.unwrap().secret(), "token-2", "not token-1");

    let second = a.token().await.unwrap();
    assert_eq!(second.secret(), "token-2", "adopted from C");
    a.invalidate(&second);
    until_no_entry(&redis, "the second rejected token is still in Redis").await;
    put_back(&redis, &key, &token_1);
    assert_eq!(
        a.token().await.unwrap().secret(),
        "token-3",
        "A remembers more than the last token it rejected"
    );
    let d = client(&tokens, &redis.url(), CachePolicy::default());
    assert_eq!(d.token().await.unwrap().secret(), "token-3");
    assert_eq!(tokens.requests(), 3);
}

/// The task `invalidate` spawns to tell the fleet never runs (its runtime is dropped at once):
/// the process's next fetch, on another runtime, tells the fleet first, so a rejected token put
/// back by a Redis writer is still adopted by no process.
#[test]
fn a_rejection_whose_task_never_runs_is_shared_at_the_next_fetch() {
    let redis = redis_server();
    let main = tokio::runtime::Runtime::new().unwrap();
    let tokens = main.block_on(support::issuing(3600));
    let rejecting = CachePolicy::default().invalidation_interval(Duration::ZERO);
    let a = client(&tokens, &redis.url(), rejecting);
    let first = main.block_on(a.token()).unwrap();
    let (key, token_1) = entries(&redis).remove(0);

    let doomed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Spawned on `doomed`, which is never driven again: the task is dropped with it.
    doomed.block_on(async { a.invalidate(&first) });
    drop(doomed);
    assert_eq!(
        entries(&redis).len(),
        1,
        "the task did not run: the entry is still there"
    );

    assert_eq!(main.block_on(a.token()).unwrap().secret(), "token-2");
    put_back(&redis, &key, &token_1);
    let newcomer = client(&tokens, &redis.url(), CachePolicy::default());
    // The writer's value replaced token-2's entry: refusing token-1, the newcomer fetches.
    assert_eq!(
        main.block_on(newcomer.token()).unwrap().secret(),
        "token-3",
        "the newcomer refused token-1, rejected by the fleet"
    );
    assert_eq!(tokens.requests(), 3);
}

/// Defect 5: a lease set by a Redis writer without expiry, or with one longer than any fetch,
/// is foreign: removed at once, and competed for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_squatted_lease_is_removed_and_costs_no_wait() {
    let redis = redis_server();
    let tokens = support::issuing(3600).await;
    client(&tokens, &redis.url(), CachePolicy::default())
        .token()
        .await
        .unwrap();
    let (key, _) = entries(&redis).remove(0);
    let lease = format!("{key}:lease");

    for expiry in [None, Some(3_600_000)] {
        let mut connection = connect(&redis);
        let _: () = redis::cmd("DEL").arg(&key).query(&mut connection).unwrap();
        let mut squat = redis::cmd("SET");
        squat.arg(&lease).arg("squatter");
        if let Some(millis) = expiry {
            squat.arg("PX").arg(millis);
        }
        let _: () = squat.query(&mut connection).unwrap();

        let hits = tokens.requests();
        let started = Instant::now();
        client(&tokens, &redis.url(), CachePolicy::default())
            .token()
            .await
            .unwrap();
        let took = started.elapsed();

        assert!(
            took < Duration::from_secs(1),
            "a lease squatted with expiry {expiry:?} cost {took:?}"
        );
        assert_eq!(tokens.requests(), hits + 1);
        let exists: bool = redis::cmd("EXISTS")
            .arg(&lease)
            .query(&mut connection)
            .unwrap();
        assert!(!exists, "the squatter's lease was removed, ours released");
        assert_eq!(entries(&redis).len(), 1, "the token was published");
    }
}

/// A `redis-server` replicating `master`: read-only, as after a failover that left clients on
/// a replica. Killed by its PID on drop.
struct Replica {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Replica {
    fn start(master: &RedisServer) -> Replica {
        // The master streams its data to a new replica at once, not after the default 5 s.
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("repl-diskless-sync-delay")
            .arg(0)
            .query(&mut connect(master))
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // A replica writes what it receives to disk before loading it: in a directory of its
        // own, removed on drop, never the working directory.
        let dir = std::env::temp_dir().join(format!("tower-oauth2-replica-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(["--replicaof", "127.0.0.1", &master.port().to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start redis-server ({error}): `apt-get install -y redis-server`")
            });
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (synced, sync) = std::sync::mpsc::channel();
        // Reads its log to the end, so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.contains("MASTER <-> REPLICA sync: Finished with success") {
                    let _ = synced.send(());
                }
            }
        });
        let replica = Replica { child, port, dir };
        if sync.recv_timeout(Duration::from_secs(10)).is_err() {
            panic!("the replica did not sync with its master within 10 s");
        }
        replica
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a `tracing` subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Defect 7: on a read-only Redis every publish fails. The breaker opens on the failed write
/// and stays open, backing off (1 s, then 2 s): no "store is back" after each successful read,
/// and no warning per fetch.
#[tokio::test]
async fn a_read_only_replica_keeps_the_breaker_open_with_backoff() {
    let master = redis_server();
    let replica = Replica::start(&master);
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    // This test's runtime is this thread: a local recorder sees all it reports.
    #[cfg(feature = "metrics")]
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    #[cfg(feature = "metrics")]
    let _metrics = metrics::set_default_local_recorder(&recorder);

    let tokens = support::issuing(1).await;
    let member = client(&tokens, &replica.url(), short_lived());
    let until = Instant::now() + Duration::from_millis(2300);
    while Instant::now() < until {
        member
            .token()
            .await
            .expect("a read-only Redis fails no call");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let shared: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("tower_oauth2::shared"))
        .collect();
    let failed = shared
        .iter()
        .filter(|line| line.contains("shared token store failed"))
        .count();
    let back = shared
        .iter()
        .filter(|line| line.contains("shared token store is back"))
        .count();
    assert!(
        tokens.requests() >= 4,
        "{} fetches of 1 s tokens over 2.3 s",
        tokens.requests()
    );
    assert_eq!(back, 0, "the breaker flapped: {shared:#?}");
    assert!(
        (1..=2).contains(&failed) && logs.contains("failures=2"),
        "one warning per backoff step (1 s, 2 s): {shared:#?}"
    );
    #[cfg(feature = "metrics")]
    {
        let gauge = recorder
            .snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .find(|(key, ..)| key.key().name() == "tower_oauth2_shared_store_failures")
            .map(|(.., value)| value);
        assert_eq!(
            gauge,
            Some(metrics_util::debugging::DebugValue::Gauge(2.0.into())),
            "operators see the store failing"
        );
    }
}
