//! The shared cache on Redis as deployed in production: TLS with a private CA and client
//! certificates, ACL users (the default user off, scripting forbidden), a Redis Cluster losing
//! a master under load, memory limits, and the store's own promises (bounded reads, real-time
//! timeouts under a paused tokio clock, no password in any output). Real `redis-server`
//! processes on free loopback ports, stopped by their PIDs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::redis_deployments::{self as deploy, Scratch, APP_PASSWORD, NOSCRIPT_PASSWORD};
use crate::support::{self};
use tower_oauth2::shared::{RedisStore, SharedStore, MAX_VALUE_BYTES};
use tower_oauth2::test_util::{RedisServer, TokenServer};
use tower_oauth2::{cache::CachePolicy, ClientCredentials};

const SECRET: &str = "d3ploy-secret-value";

/// One process of the fleet, on `store`.
fn member(tokens: &TokenServer, store: RedisStore) -> ClientCredentials {
    member_with(tokens, store, CachePolicy::default())
}

fn member_with(tokens: &TokenServer, store: RedisStore, policy: CachePolicy) -> ClientCredentials {
    ClientCredentials::builder()
        .token_url(tokens.url())
        .client_id("fleet-client")
        .client_secret(SECRET)
        .cache_policy(policy)
        .shared_cache(store)
        .build()
        .unwrap()
}

/// A synchronous connection to `url`.
fn connect(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

/// The key of the token entry (not a lease, not the rejected list).
fn entry_key(connection: &mut redis::Connection) -> String {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(connection).unwrap();
    keys.into_iter()
        .find(|key| !key.contains("lease") && !key.contains("rejected"))
        .expect("a token entry")
}

/// Log lines, captured on this thread (tests here run on a current-thread runtime).
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

impl Captured {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::INFO)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish(),
        )
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// Defect 9: the password, in every URL form, in no output.
#[tokio::test]
async fn no_url_form_shows_the_password_in_debug_or_errors() {
    for url in [
        "redis+unix:///nonexistent/redis.sock?pass=hunter2-secret",
        "redis+unix:///nonexistent/redis.sock?db=0&user=app&pass=hunter2-secret",
        "unix:///nonexistent/redis.sock?user=app&pass=hunter2-secret",
        "redis://app:hunter2-secret@127.0.0.1:1/",
        "rediss://app:hunter2-secret@127.0.0.1:1/",
        "redis+sentinel://app:hunter2-secret@127.0.0.1:1,127.0.0.1:2/mymaster/0",
    ] {
        let store = RedisStore::new(url).unwrap();
        let shown = format!("{store:?} {store:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        // An operation fails (nothing listens there), and its error is what the log shows.
        let error = store.get("key").await.unwrap_err().to_string();
        assert!(!error.contains("hunter2"), "{error}");
    }
    for bad in [
        "redis+unix://?pass=hunter2-secret&db=notanumber",
        "redis://app:hunter2-secret@[::1/",
        "redis://app:hunter2-secret@host:notaport/",
        "rediss://app:hunter2-secret@host:notaport/",
        "hunter2-secret",
        "redis+sentinel://:hunter2-secret@127.0.0.1:26379",
        "redis+sentinel://:hunter2-secret@/mymaster",
        "redis+sentinel://:hunter2-secret@127.0.0.1:26379/mymaster/notadb",
    ] {
        let error = RedisStore::new(bad).unwrap_err();
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}

// Defect 8: a paused tokio clock (a user's `start_paused` test) times out no Redis operation.
#[tokio::test(start_paused = true)]
async fn a_paused_tokio_clock_times_out_no_redis_operation() {
    let redis = RedisServer::start().unwrap_or_else(|error| panic!("{error}"));
    let store = RedisStore::new(&redis.url()).unwrap();
    store
        .set("key", b"value", Duration::from_secs(60))
        .await
        .unwrap();
    let stored = store.get("key").await.unwrap().expect("stored");
    assert_eq!(stored.value, b"value");

    let tokens = support::issuing(3600).await;
    let first = member(&tokens, RedisStore::new(&redis.url()).unwrap());
    let second = member(&tokens, RedisStore::new(&redis.url()).unwrap());
    assert_eq!(first.token().await.unwrap().secret(), "token-1");
    assert_eq!(second.token().await.unwrap().secret(), "token-1");
    assert_eq!(
        tokens.requests(),
        1,
        "the second process adopted the first's token"
    );
}

// Defect 6: a huge value under the token key is read bounded, and replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_value_under_the_token_key_is_read_bounded_and_replaced() {
    let redis = RedisServer::start().unwrap_or_else(|error| panic!("{error}"));
    let tokens = support::issuing(3600).await;
    member(&tokens, RedisStore::new(&redis.url()).unwrap())
        .token()
        .await
        .unwrap();
    let mut connection = connect(&redis.url());
    let key = entry_key(&mut connection);
    let huge = vec![b'x'; 16 * 1024 * 1024];
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(&huge)
        .query(&mut connection)
        .unwrap();

    // The store hands back an empty (foreign) value, never the 16 MB.
    let store = RedisStore::new(&redis.url()).unwrap().key_prefix("");
    let stored = store.get(&key).await.unwrap().expect("a value is there");
    assert!(
        stored.value.len() <= MAX_VALUE_BYTES,
        "read {} bytes",
        stored.value.len()
    );
    assert!(stored.value.is_empty(), "oversized values come back empty");

    // The next process replaces it, and the one after adopts the replacement.
    let captured = Captured::default();
    let _log = captured.install();
    let replacing = member(&tokens, RedisStore::new(&redis.url()).unwrap());
    assert_eq!(replacing.token().await.unwrap().secret(), "token-2");
    let length: usize = redis::cmd("STRLEN")
        .arg(&key)
        .query(&mut connection)
        .unwrap();
    assert!(length < MAX_VALUE_BYTES, "replaced ({length} bytes)");
    let adopting = member(&tokens, RedisStore::new(&redis.url()).unwrap());
    assert_eq!(adopting.token().await.unwrap().secret(), "token-2");
    assert_eq!(tokens.requests(), 2);
    assert!(
        !captured.text().contains("store failed"),
        "{}",
        captured.text()
    );
}

/// Runs `calls` concurrent `token()` calls on each of `fleet`; every one must succeed.
async fn load(fleet: &[ClientCredentials], calls: usize) -> Vec<String> {
    let calls = fleet.iter().flat_map(|member| {
        (0..calls).map(move |_| {
            let member = member.clone();
            tokio::spawn(async move { member.token().await.unwrap().secret().to_owned() })
        })
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|call| call.expect("no call fails"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_a_client_certificate_and_an_acl_user_shares_one_token() {
    let pki = deploy::pki();
    let scratch = Scratch::new("tls");
    let (_redis, port) = deploy::tls_redis(&pki, &scratch);
    let url = format!("rediss://app:{APP_PASSWORD}@127.0.0.1:{port}/");
    let store = || {
        RedisStore::new(&url)
            .unwrap()
            .root_certificate_pem(pki.ca_pem.clone())
            .unwrap()
            .client_certificate_pem(pki.client_pem.clone(), pki.client_key_pem.clone())
            .unwrap()
    };
    let tokens = support::issuing(3600).await;
    let fleet: Vec<_> = (0..4).map(|_| member(&tokens, store())).collect();
    for token in load(&fleet, 20).await {
        assert_eq!(token, "token-1");
    }
    assert_eq!(
        tokens.requests(),
        1,
        "one token request for the fleet, over TLS"
    );

    // What Redis holds came through TLS (the only port) and is the sealed entry.
    let direct = store();
    let stored = direct.get("").await;
    assert!(stored.is_ok(), "the store reads over TLS: {stored:?}");
}

#[test]
fn tls_settings_are_checked_when_given() {
    let tls = RedisStore::new("rediss://127.0.0.1:6380/").unwrap();
    let error = tls.root_certificate_pem("not a certificate").unwrap_err();
    assert!(
        error.to_string().contains("root_certificate_pem"),
        "{error}"
    );
    let tls = RedisStore::new("rediss://127.0.0.1:6380/").unwrap();
    assert!(tls
        .client_certificate_pem("no chain", "no key")
        .unwrap_err()
        .to_string()
        .contains("certificate"));
    let plain = RedisStore::new("redis://127.0.0.1:6379/").unwrap();
    let pki = deploy::pki();
    let error = plain.root_certificate_pem(pki.ca_pem).unwrap_err();
    assert!(error.to_string().contains("not a rediss://"), "{error}");
    #[cfg(feature = "redis-cluster")]
    {
        let error =
            RedisStore::cluster(["redis://127.0.0.1:7000", "rediss://:hunter2-secret@b:7001"])
                .unwrap_err();
        assert!(error.to_string().contains("only redis://"), "{error}");
        assert!(!format!("{error} {error:?}").contains("hunter2"), "{error}");
        assert!(RedisStore::cluster(Vec::<String>::new()).is_err());
    }
}

/// The counter `tower_oauth2_shared_store_errors_total` for `cause`, from `snapshotter`.
fn store_errors(snapshotter: &metrics_util::debugging::Snapshotter, cause: &str) -> u64 {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            key.key().name() == "tower_oauth2_shared_store_errors_total"
                && key
                    .key()
                    .labels()
                    .any(|label| label.key() == "cause" && label.value() == cause)
        })
        .map(|(.., value)| match value {
            metrics_util::debugging::DebugValue::Counter(count) => count,
            other => panic!("a counter: {other:?}"),
        })
        .sum()
}

// A wrong CA, a missing client certificate, a wrong password: no call fails, and operators see
// a WARN line and a metric naming the cause. Current-thread, so that the log and metric
// recorders installed for this thread see everything.
#[tokio::test]
async fn a_wrong_ca_certificate_or_password_fails_no_call_and_says_why() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    let captured = Captured::default();
    let _log = captured.install();

    let pki = deploy::pki();
    let scratch = Scratch::new("tls-wrong");
    let (_redis, port) = deploy::tls_redis(&pki, &scratch);
    let tokens = support::issuing(3600).await;
    let url = |password: &str| format!("rediss://app:{password}@127.0.0.1:{port}/");
    let with_client_certificate = |store: RedisStore| {
        store
            .client_certificate_pem(pki.client_pem.clone(), pki.client_key_pem.clone())
            .unwrap()
    };

    let wrong_ca = with_client_certificate(
        RedisStore::new(&url(APP_PASSWORD))
            .unwrap()
            .root_certificate_pem(pki.other_ca_pem.clone())
            .unwrap(),
    );
    member(&tokens, wrong_ca).token().await.unwrap();
    assert!(store_errors(&snapshotter, "certificate") >= 1);
    let log = captured.text();
    assert!(log.contains("WARN") && log.contains("not trusted"), "{log}");

    let no_client_certificate = RedisStore::new(&url(APP_PASSWORD))
        .unwrap()
        .root_certificate_pem(pki.ca_pem.clone())
        .unwrap();
    member(&tokens, no_client_certificate)
        .token()
        .await
        .unwrap();
    assert!(
        store_errors(&snapshotter, "certificate") + store_errors(&snapshotter, "tls") >= 1,
        "the server's refusal of the handshake is counted: {}",
        captured.text()
    );

    let wrong_password = with_client_certificate(
        RedisStore::new(&url("not-the-password"))
            .unwrap()
            .root_certificate_pem(pki.ca_pem.clone())
            .unwrap(),
    );
    member(&tokens, wrong_password).token().await.unwrap();
    assert!(store_errors(&snapshotter, "auth") >= 1);
    let log = captured.text();
    assert!(log.contains("refused the credentials"), "{log}");
    assert!(
        !log.contains("not-the-password") && !log.contains(APP_PASSWORD),
        "{log}"
    );
    assert_eq!(tokens.requests(), 3, "each fetched alone");
}

// ACL users as managed Redis has them: the default user off, the application's own user (over
// TCP and over a Unix socket), and a user without scripting, for whom compare-and-delete
// leaves values to expire instead of failing (which would turn sharing off).
#[tokio::test]
async fn acl_users_share_tokens_and_a_user_without_scripting_fails_no_call() {
    let captured = Captured::default();
    let _log = captured.install();
    let scratch = Scratch::new("acl");
    let socket = scratch.path("redis.sock");
    let port = deploy::free_port();
    let acl = deploy::acl_args();
    let mut args: Vec<&str> = acl.iter().map(String::as_str).collect();
    args.extend(["--unixsocket", &socket, "--unixsocketperm", "700"]);
    let _redis = deploy::start(port, &args);
    let tokens = support::issuing(3600).await;

    let over_tcp = format!("redis://app:{APP_PASSWORD}@127.0.0.1:{port}/");
    let over_unix = format!("redis+unix://{socket}?user=app&pass={APP_PASSWORD}");
    let fleet = [
        member(&tokens, RedisStore::new(&over_tcp).unwrap()),
        member(&tokens, RedisStore::new(&over_unix).unwrap()),
    ];
    for token in load(&fleet, 10).await {
        assert_eq!(token, "token-1");
    }
    assert_eq!(
        tokens.requests(),
        1,
        "one request across TCP and the Unix socket"
    );

    // Without scripting: compare-and-delete still compares, and deletes only what it expects.
    let noscript = format!("redis://noscript:{NOSCRIPT_PASSWORD}@127.0.0.1:{port}/");
    let store = RedisStore::new(&noscript).unwrap().key_prefix("probe:");
    store
        .set("k", b"theirs", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(!store.delete_if("k", b"mine").await.unwrap(), "not ours");
    let kept = store.get("k").await.unwrap().expect("put back");
    assert_eq!(kept.value, b"theirs");
    assert!(
        kept.expires_in
            .is_some_and(|ttl| ttl > Duration::from_secs(50)),
        "with its expiry"
    );
    assert!(store.delete_if("k", b"theirs").await.unwrap(), "deleted");
    assert!(store.get("k").await.unwrap().is_none());
    let fleet: Vec<_> = (0..3)
        .map(|_| {
            member(
                &tokens,
                RedisStore::new(&noscript).unwrap().key_prefix("noscript:"),
            )
        })
        .collect();
    for token in load(&fleet, 10).await {
        assert_eq!(token, "token-2");
    }
    assert_eq!(
        tokens.requests(),
        2,
        "one request for the fleet without scripting"
    );
    // A rejected token: invalidating it deletes nothing, and no call fails.
    let rejected = fleet[0].token().await.unwrap();
    fleet[0].invalidate(&rejected);
    assert_ne!(fleet[0].token().await.unwrap().secret(), rejected.secret());
    let log = captured.text();
    // Said once per store (per process), at most.
    let said = log.matches("forbids scripting").count();
    assert!((1..=4).contains(&said), "{log}");
    assert!(
        !log.contains("store failed"),
        "the breaker never opened: {log}"
    );

    // The default user is off: a URL without credentials fails no call, and says why.
    let anonymous = member(
        &tokens,
        RedisStore::new(&format!("redis://127.0.0.1:{port}/")).unwrap(),
    );
    anonymous.token().await.unwrap();
    let log = captured.text();
    assert!(log.contains("refused the credentials"), "{log}");
    assert!(
        !log.contains(APP_PASSWORD) && !log.contains(NOSCRIPT_PASSWORD),
        "{log}"
    );
}

// Least-privilege ACL users (issue 22): with scripting and transactions, without scripting
// (compare-and-delete in a MULTI), and without either (plain pipelines). For each, a foreign
// value (a list, a string longer than MAX_VALUE_BYTES) under our key comes back empty and
// `delete_if(key, "")` removes it, never as an error (WRONGTYPE would open the breaker); a
// value of ours is compared as ever. Then a fleet of the barest user shares one token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acl_user_removes_foreign_values_and_the_barest_still_shares() {
    const BARE_PASSWORD: &str = "bare-p4ss-word";
    let captured = Captured::default();
    let _log = captured.install();
    let port = deploy::free_port();
    let mut acl = deploy::acl_args();
    acl.extend(
        format!("--user bare on >{BARE_PASSWORD} ~* +@read +@write +@connection")
            .split(' ')
            .map(str::to_owned),
    );
    let args: Vec<&str> = acl.iter().map(String::as_str).collect();
    let _redis = deploy::start(port, &args);
    let url = |user: &str, password: &str| format!("redis://{user}:{password}@127.0.0.1:{port}/");
    let mut admin = connect(&url("app", APP_PASSWORD));
    let huge = vec![b'x'; MAX_VALUE_BYTES + 1];

    for (user, password) in [
        ("app", APP_PASSWORD),
        ("noscript", NOSCRIPT_PASSWORD),
        ("bare", BARE_PASSWORD),
    ] {
        let store = RedisStore::new(&url(user, password))
            .unwrap()
            .key_prefix("probe:");
        let _: () = redis::cmd("RPUSH")
            .arg("probe:k")
            .arg("squatter")
            .query(&mut admin)
            .unwrap();
        let foreign = store.get("k").await.unwrap().expect("a list is there");
        assert!(foreign.value.is_empty(), "{user}: a list reads as empty");
        assert!(
            store.delete_if("k", &foreign.value).await.unwrap(),
            "{user}: a list is removed"
        );
        assert!(store.get("k").await.unwrap().is_none(), "{user}: list gone");

        let _: () = redis::cmd("SET")
            .arg("probe:k")
            .arg(&huge)
            .query(&mut admin)
            .unwrap();
        let foreign = store.get("k").await.unwrap().expect("a string is there");
        assert!(foreign.value.is_empty(), "{user}: too long reads as empty");
        assert!(
            store.delete_if("k", &foreign.value).await.unwrap(),
            "{user}: too long a string is removed"
        );
        assert!(store.get("k").await.unwrap().is_none(), "{user}: huge gone");

        store
            .set("k", b"theirs", Duration::from_secs(60))
            .await
            .unwrap();
        assert!(!store.delete_if("k", b"").await.unwrap(), "{user}: ours");
        assert!(!store.delete_if("k", b"mine").await.unwrap(), "{user}");
        let kept = store.get("k").await.unwrap().expect("kept or put back");
        assert_eq!(kept.value, b"theirs", "{user}");
        assert!(store.delete_if("k", b"theirs").await.unwrap(), "{user}");
        assert!(store.get("k").await.unwrap().is_none(), "{user}");
    }

    let tokens = support::issuing(3600).await;
    let fleet: Vec<_> = (0..3)
        .map(|_| {
            member(
                &tokens,
                RedisStore::new(&url("bare", BARE_PASSWORD)).unwrap(),
            )
        })
        .collect();
    for token in load(&fleet, 10).await {
        assert_eq!(token, "token-1");
    }
    assert_eq!(tokens.requests(), 1, "one request for the barest fleet");
    let log = captured.text();
    assert!(log.contains("forbids transactions"), "{log}");
    assert!(
        !log.contains("store failed"),
        "the breaker never opened: {log}"
    );
}

/// Tokens that live `expires_in`, refreshed at half-life, with no floors in the way.
fn short_lived() -> CachePolicy {
    CachePolicy::default()
        .min_lifetime(Duration::ZERO)
        .min_fetch_interval(Duration::ZERO)
        .expiry_margin(Duration::from_millis(100))
        .refresh_ahead(0.5, Duration::ZERO, Duration::from_secs(60))
        .jitter(0.0)
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
}

/// Calls `token()` on every member of `fleet` every 10 ms until `until`; any failure panics.
async fn calls_until(fleet: &[ClientCredentials], until: tokio::time::Instant) -> usize {
    let callers = fleet.iter().cloned().map(|member| {
        tokio::spawn(async move {
            let mut calls = 0;
            while tokio::time::Instant::now() < until {
                member.token().await.expect("no call fails");
                calls += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            calls
        })
    });
    futures_util::future::join_all(callers)
        .await
        .into_iter()
        .map(|calls| calls.expect("no call fails"))
        .sum()
}

// Redis Cluster: three masters with a replica each; the master holding the token entry is
// killed (by PID) while the fleet refreshes 2 s tokens through it. No call fails, token
// requests stay bounded, and sharing resumes on the promoted replica.
#[cfg(feature = "redis-cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_losing_a_master_under_load_fails_no_call() {
    let mut cluster = deploy::Cluster::start();
    let urls = cluster.urls();
    let tokens = support::issuing(2).await;
    let fleet: Vec<_> = (0..3)
        .map(|_| member_with(&tokens, RedisStore::cluster(&urls).unwrap(), short_lived()))
        .collect();
    for token in load(&fleet, 10).await {
        assert_eq!(token, "token-1");
    }
    assert_eq!(
        tokens.requests(),
        1,
        "one token request for the fleet, through the cluster"
    );

    let entry = (0..cluster.nodes.len())
        .find_map(|i| {
            let mut connection = connect(&cluster.nodes[i].url());
            let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut connection).unwrap();
            keys.into_iter()
                .find(|key| !key.contains("lease") && !key.contains("rejected"))
        })
        .expect("the entry is on some master");
    let master = cluster.master_of(&entry);

    // A paused tokio clock (a user's `start_paused` test) times out no cluster operation.
    let paused = RedisStore::cluster(&urls).unwrap().key_prefix("paused:");
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(async {
                // Enough round trips that tokio timers, auto-advanced while the runtime waits
                // on the socket, would fire.
                for _ in 0..100 {
                    paused
                        .set("k", b"v", Duration::from_secs(60))
                        .await
                        .unwrap();
                    assert_eq!(paused.get("k").await.unwrap().unwrap().value, b"v");
                }
            })
    })
    .await
    .unwrap();

    let started = tokio::time::Instant::now();
    let load = tokio::spawn({
        let fleet = fleet.clone();
        async move { calls_until(&fleet, started + Duration::from_secs(5)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.nodes[master].stop();
    let calls = load.await.unwrap();
    assert!(calls > 100, "the fleet kept calling ({calls} calls)");
    // 5 s of 2 s tokens refreshed at half-life: about 5 rounds; alone, 3 members make 3 each.
    let requests = tokens.requests();
    assert!(requests <= 20, "{requests} token requests");

    // The replica took over: a new process shares through the cluster again.
    let survivors: Vec<usize> = (0..cluster.nodes.len()).filter(|&i| i != master).collect();
    cluster.wait_until_ok(&survivors);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let store = RedisStore::cluster(&urls)
            .unwrap()
            .key_prefix("after-failover:");
        let shared = async {
            store.set(&entry, b"value", Duration::from_secs(60)).await?;
            store.get(&entry).await
        };
        match shared.await {
            Ok(stored) => break assert_eq!(stored.unwrap().value, b"value"),
            Err(error) if tokio::time::Instant::now() < deadline => {
                eprintln!("the cluster is still failing over: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("no failover within 5 s: {error}"),
        }
    }
}

/// Writes 1 KB values under other keys into `url` until Redis refuses (noeviction) or
/// `bytes` were written; the number of keys written.
fn fill(url: &str, bytes: usize) -> usize {
    let mut connection = connect(url);
    let value = vec![b'o'; 1024];
    for n in 0..bytes / 1024 {
        let written: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("other-application:{n}"))
            .arg(&value)
            .query(&mut connection);
        if written.is_err() {
            return n;
        }
    }
    bytes / 1024
}

// A Redis full of other applications' keys: evicting them (and ours) under allkeys-lru, or
// refusing writes under noeviction. No call fails, and token requests stay bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_evicting_or_refusing_writes_fails_no_call() {
    for policy in ["allkeys-lru", "noeviction"] {
        let port = deploy::free_port();
        let redis = deploy::start(port, &["--maxmemory", "3mb", "--maxmemory-policy", policy]);
        let written = fill(&redis.url(), 8 * 1024 * 1024);
        if policy == "noeviction" {
            assert!(written < 8 * 1024, "Redis refused writes once full");
        }
        // Other applications keep writing while the fleet works.
        let url = redis.url();
        let filler = std::thread::spawn(move || fill(&url, 2 * 1024 * 1024));

        let tokens = support::issuing(2).await;
        let fleet: Vec<_> = (0..3)
            .map(|_| {
                member_with(
                    &tokens,
                    RedisStore::new(&redis.url()).unwrap(),
                    short_lived(),
                )
            })
            .collect();
        let until = tokio::time::Instant::now() + Duration::from_millis(2500);
        let calls = calls_until(&fleet, until).await;
        filler.join().unwrap();
        assert!(
            calls > 50,
            "{policy}: the fleet kept calling ({calls} calls)"
        );
        // 2.5 s of 2 s tokens refreshed at half-life: 3 rounds; each member alone at worst.
        let requests = tokens.requests();
        eprintln!("{policy}: {calls} calls, {requests} token requests");
        assert!(requests <= 12, "{policy}: {requests} token requests");
    }
}

/// Connections `redis` has accepted so far (`INFO stats`), this one included.
fn connections_received(redis: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut connect(&redis.url()))
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("total_connections_received:"))
        .and_then(|count| count.trim().parse().ok())
        .expect("INFO stats has total_connections_received")
}

// One store used from two runtimes in turn (siblings on different runtimes, a test and its
// application) keeps a connection on each instead of reconnecting at every switch.
#[test]
fn a_store_used_from_two_runtimes_in_turn_keeps_a_connection_on_each() {
    let redis = RedisServer::start().unwrap_or_else(|error| panic!("{error}"));
    let store = RedisStore::new(&redis.url()).unwrap();
    let runtimes: Vec<_> = (0..2)
        .map(|_| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        })
        .collect();
    let before = connections_received(&redis);
    for _ in 0..5 {
        for runtime in &runtimes {
            runtime.block_on(store.get("key")).unwrap();
        }
    }
    // Two for the store, one for each INFO.
    let opened = connections_received(&redis) - before - 1;
    assert_eq!(opened, 2, "one connection per runtime");
}

// Redis Sentinel: the master is killed (by PID) while the fleet refreshes 2 s tokens through
// it; the sentinel promotes the replica. No call fails, token requests stay bounded, and
// sharing resumes on the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_under_load_fails_no_call() {
    let scratch = Scratch::new("sentinel");
    let (mut master, _replica, sentinel) = deploy::sentinel_pair(&scratch);
    let url = format!(
        "redis+sentinel://:{}@127.0.0.1:{}/mymaster",
        deploy::SENTINEL_MASTER_PASSWORD,
        sentinel.port
    );
    let store = RedisStore::new(&url).unwrap();
    assert!(!format!("{store:?}").contains(deploy::SENTINEL_MASTER_PASSWORD));
    let tokens = support::issuing(2).await;
    let fleet: Vec<_> = (0..3)
        .map(|_| member_with(&tokens, RedisStore::new(&url).unwrap(), short_lived()))
        .collect();
    for token in load(&fleet, 10).await {
        assert_eq!(token, "token-1");
    }
    assert_eq!(
        tokens.requests(),
        1,
        "one token request for the fleet, through the sentinel's master"
    );

    let started = tokio::time::Instant::now();
    let calls = tokio::spawn({
        let fleet = fleet.clone();
        async move { calls_until(&fleet, started + Duration::from_secs(5)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    master.stop();
    let calls = calls.await.unwrap();
    assert!(calls > 100, "the fleet kept calling ({calls} calls)");
    let requests = tokens.requests();
    assert!(requests <= 20, "{requests} token requests");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let shared = async {
            store.set("k", b"v", Duration::from_secs(60)).await?;
            store.get("k").await
        };
        match shared.await {
            Ok(stored) => break assert_eq!(stored.unwrap().value, b"v"),
            Err(error) if tokio::time::Instant::now() < deadline => {
                eprintln!("the sentinel is still failing over: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("no failover within 5 s: {error}"),
        }
    }
}
