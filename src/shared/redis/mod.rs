//! [`RedisStore`]: the shared cache on Redis (feature `redis`): one node over TCP, TLS or a Unix
//! socket, or a Redis Cluster (feature `redis-cluster`).

#[cfg(feature = "redis-cluster")]
mod cluster_node;
mod connection;
mod sentinel;
#[cfg(feature = "rustls-no-provider")]
mod tls;
mod url;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::{self, Either};
use redis::{Client, Script};
use tokio::runtime::Id;

use self::connection::{Connection, Failure, Target};
use super::{SharedStore, StoreFuture, Stored, MAX_VALUE_BYTES};
use crate::error::BoxError;
use crate::ConfigError;
/// Deletes `KEYS[1]` only if it holds `ARGV[1]`: releasing our lease, or dropping the token a
/// server rejected, without touching what another process put there since. An empty
/// `ARGV[1]` is what `get` reports for a foreign value (of another type, or longer than
/// `ARGV[2]` = `MAX_VALUE_BYTES`), so it also deletes such a value: checked by `TYPE` and
/// `STRLEN` first, never read whole (a 200 MB string would be copied into Lua) and never a
/// `WRONGTYPE` error (which would open the breaker).
const DELETE_IF: &str = r"
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then
    return 0
end
local foreign = kind ~= 'string' or redis.call('STRLEN', KEYS[1]) > tonumber(ARGV[2])
if foreign then
    if ARGV[1] == '' then
        return redis.call('DEL', KEYS[1])
    end
    return 0
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
";

/// How many runtimes' connections a store keeps, dropping the least recently used beyond:
/// enough for a thread-per-core server on a large machine or many sibling runtimes, each
/// connection an idle socket and a parked driver task, where too few would reconnect (a TLS
/// handshake on managed Redis) on every operation of callers taking turns.
const RUNTIMES_KEPT: usize = 16;

/// A [`SharedStore`] on Redis: the instances of a fleet share one token through it.
///
/// Connects lazily, on the first fetch, and reconnects by itself after any failure. Every
/// operation gives up after [`timeout`](Self::timeout) (250 ms by default); while Redis is
/// failing, each process fetches its own tokens and tries Redis again after a backoff.
///
/// ```no_run
/// use tower_oauth2::{ClientCredentials, shared::RedisStore};
///
/// # fn demo() -> Result<(), tower_oauth2::Error> {
/// let store = RedisStore::new("redis://cache.internal:6379/")?
///     .key_prefix("orders-service:oauth:");
/// let credentials = ClientCredentials::builder()
///     .token_url("https://tenant.example.com/oauth/token")
///     .client_id("my-service")
///     .client_secret(std::env::var("CLIENT_SECRET").unwrap_or_default())
///     .shared_cache(store)
///     .build()?;
/// # Ok(())
/// # }
/// ```
pub struct RedisStore {
    target: Target,
    /// The URL without its password, and the secrets to keep out of messages.
    url: url::Redacted,
    prefix: String,
    timeout: Duration,
    delete_if: Script,
    /// Cleared when the server's ACL refuses scripts: compare-and-delete then runs without
    /// one (see [`SharedStore::delete_if`] below).
    scripting: AtomicBool,
    /// Cleared when the server's ACL refuses `MULTI` (no `@transaction`), found when a
    /// connection opens: reads then run as plain pipelines (see [`RedisStore::read`]).
    transactions: AtomicBool,
    /// One multiplexed connection per runtime (the [`RUNTIMES_KEPT`] most recently used): its
    /// driver task lives on the runtime that opened it, so a caller on another runtime opens
    /// its own rather than depend on one that may be gone or not running, and callers taking
    /// turns between runtimes (siblings sharing a store) do not reconnect each time.
    connections: Mutex<Vec<(Option<Id>, Connection)>>,
}

impl RedisStore {
    /// The default key prefix.
    pub const DEFAULT_PREFIX: &'static str = "tower-oauth2:";
    /// The default time allowed for each Redis operation, connecting included.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

    /// A store on the Redis at `url`. Nothing connects until the first fetch.
    ///
    /// - `redis://[user:password@]host[:port][/db]`
    /// - `rediss://[user:password@]host[:port][/db]`: TLS through the same rustls, crypto
    ///   provider and root certificates as the token client (feature `rustls`); add a private
    ///   CA with [`root_certificate_pem`](Self::root_certificate_pem).
    /// - `redis+unix:///path/to/redis.sock[?db=N&user=U&pass=P]`
    /// - `redis+sentinel://[user:password@]host:26379[,host:26379…]/master[/db]`: the master
    ///   that Redis Sentinel names, found again after a failover; the credentials and database
    ///   are the master's (sentinels without a password, over plain TCP).
    ///
    /// The password never appears in `Debug`, errors or logs.
    ///
    /// ```
    /// use tower_oauth2::shared::RedisStore;
    ///
    /// let store = RedisStore::new("rediss://app:s3cret@cache.internal:6380/")?;
    /// assert!(!format!("{store:?}").contains("s3cret"));
    /// # Ok::<(), tower_oauth2::ConfigError>(())
    /// ```
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        let redacted = url::Redacted::new(url);
        let refuse = |why: String| {
            ConfigError::new(
                "RedisStore::new",
                redacted.scrub(&format!("RedisStore: {:?} {why}", redacted.shown)),
            )
        };
        let target = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            Target::Sentinel(sentinel::Sentinels::parse(rest).map_err(&refuse)?)
        } else if let Some(rest) = url.strip_prefix("rediss://") {
            tls_target(&format!("redis://{rest}")).map_err(&refuse)?
        } else {
            Target::Plain(
                Client::open(url).map_err(|e| refuse(format!("is not a Redis URL: {e}")))?,
            )
        };
        Ok(Self::with_target(target, redacted))
    }

    /// A store on the Redis Cluster that `nodes` belong to (feature `redis-cluster`): any
    /// of its masters or replicas, `redis://[user:password@]host:port`; the client learns the
    /// others from them and follows `MOVED` and `ASK` redirections and failovers. Each
    /// operation touches one key, so none fails with `CROSSSLOT`. TLS (`rediss://`) nodes are
    /// not supported yet.
    ///
    /// ```
    /// use tower_oauth2::shared::RedisStore;
    ///
    /// let store = RedisStore::cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])?;
    /// # Ok::<(), tower_oauth2::ConfigError>(())
    /// ```
    #[cfg(feature = "redis-cluster")]
    pub fn cluster<I>(nodes: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let nodes: Vec<String> = nodes.into_iter().map(|n| n.as_ref().to_owned()).collect();
        // Shown as the first node; every node's secrets scrubbed from messages.
        let mut redacted = url::Redacted::new(nodes.first().map_or("", String::as_str));
        for node in nodes.iter().skip(1) {
            redacted.absorb(url::Redacted::new(node));
        }
        let refuse = |why: String| {
            ConfigError::new(
                "RedisStore::cluster",
                redacted.scrub(&format!("RedisStore::cluster: {why}")),
            )
        };
        if nodes.is_empty() {
            return Err(refuse("no node given".to_owned()));
        }
        if let Some(node) = nodes.iter().find(|n| !n.starts_with("redis://")) {
            return Err(refuse(format!(
                "{:?}: only redis:// nodes are supported in a cluster",
                url::Redacted::new(node).shown
            )));
        }
        let client = redis::cluster::ClusterClient::builder(nodes.iter().map(String::as_str))
            .build()
            .map_err(|e| refuse(format!("not a cluster's node URLs: {e}")))?;
        let mut store = Self::with_target(Target::Cluster(Box::new(client)), redacted);
        store.url.shown = format!("cluster {}", store.url.shown);
        Ok(store)
    }

    fn with_target(target: Target, url: url::Redacted) -> Self {
        RedisStore {
            target,
            url,
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            timeout: Self::DEFAULT_TIMEOUT,
            delete_if: Script::new(DELETE_IF),
            scripting: AtomicBool::new(true),
            transactions: AtomicBool::new(true),
            connections: Mutex::new(Vec::new()),
        }
    }

    /// Put this before every key (default `tower-oauth2:`), to keep apart applications that
    /// share a Redis. Keys also hold a digest of the token URL, client id, authentication
    /// method, scopes, audience and parameters, so different clients never collide.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The time allowed for each operation, connecting included (default 250 ms). Measured in
    /// real time, also under a paused tokio clock.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Also trust the CA certificates in `pem` for a `rediss://` URL (a managed Redis's or your
    /// own CA), besides the roots the crate's features choose. Refused if `pem` holds no
    /// certificate, or the URL is not `rediss://`.
    ///
    /// ```no_run
    /// use tower_oauth2::shared::RedisStore;
    ///
    /// # fn demo() -> Result<(), tower_oauth2::ConfigError> {
    /// let ca = std::fs::read("/etc/redis/ca.pem").unwrap_or_default();
    /// let store = RedisStore::new("rediss://app:s3cret@cache.internal:6380/")?
    ///     .root_certificate_pem(ca)?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "rustls-no-provider")]
    pub fn root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Result<Self, ConfigError> {
        self.tls("root_certificate_pem")?.add_root(pem.into())?;
        Ok(self)
    }

    /// Present this client certificate (`chain_pem`, leaf first) and private key (`key_pem`:
    /// PKCS#8, PKCS#1 or SEC1) to a `rediss://` server that asks for one (`tls-auth-clients`).
    #[cfg(feature = "rustls-no-provider")]
    pub fn client_certificate_pem(
        mut self,
        chain_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Result<Self, ConfigError> {
        let identity = crate::transport::ClientIdentity::new(chain_pem, key_pem);
        self.tls("client_certificate_pem")?.set_identity(identity)?;
        Ok(self)
    }

    #[cfg(feature = "rustls-no-provider")]
    fn tls(&mut self, setter: &'static str) -> Result<&mut tls::Tls, ConfigError> {
        match &mut self.target {
            Target::Tls { tls, .. } => Ok(tls),
            _ => Err(ConfigError::new(
                setter,
                format!(
                    "RedisStore::{setter}: {:?} is not a rediss:// URL",
                    self.url.shown
                ),
            )),
        }
    }

    async fn connection(&self) -> Result<Connection, BoxError> {
        let here = tokio::runtime::Handle::try_current().ok().map(|h| h.id());
        {
            let mut connections = self.lock();
            if let Some(at) = connections.iter().position(|(runtime, _)| *runtime == here) {
                // Most recently used last: the first is the one to drop.
                let entry = connections.remove(at);
                let connection = entry.1.clone();
                connections.push(entry);
                return Ok(connection);
            }
        }
        let (connection, transactions) = self.target.connect(self.timeout).await?;
        if !transactions && self.transactions.swap(false, Ordering::Relaxed) {
            tracing::info!(
                target: "tower_oauth2::shared",
                "Redis's ACL forbids transactions (MULTI): reads run as plain pipelines"
            );
        }
        let mut connections = self.lock();
        connections.retain(|(runtime, _)| *runtime != here);
        if connections.len() >= RUNTIMES_KEPT {
            connections.remove(0);
        }
        connections.push((here, connection.clone()));
        Ok(connection)
    }

    /// Run `operation` on a connection within the timeout, on a real-time timer; on any
    /// failure, forget the connection so that the next operation opens a new one.
    async fn run<T, F, Fut>(&self, operation: F) -> Result<T, BoxError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let attempt = std::pin::pin!(async {
            let connection = self.connection().await?;
            operation(connection).await.map_err(connection::explain)
        });
        let result = match future::select(attempt, futures_timer::Delay::new(self.timeout)).await {
            Either::Left((result, _)) => result,
            Either::Right(_) => Err(Box::new(Failure {
                cause: "timeout",
                message: format!("Redis did not answer within {:?}", self.timeout),
            }) as BoxError),
        };
        if let Err(error) = &result {
            let here = tokio::runtime::Handle::try_current().ok().map(|h| h.id());
            self.lock().retain(|(runtime, _)| *runtime != here);
            crate::telemetry::shared_store_failed(connection::cause(error));
        }
        // No secret of the URL in what reaches the breaker's log line.
        result.map_err(|error| self.url.scrub(&error.to_string()).into())
    }

    /// `PTTL`, `STRLEN` and at most [`MAX_VALUE_BYTES`] of `key`'s value, each with its own
    /// result, in one transaction (`MULTI`), or, where the ACL forbids transactions, as a
    /// plain pipeline. Without a transaction another client's command may run between them;
    /// `PTTL` comes first so that a value replaced meanwhile is judged by the expiry of the
    /// one before (shorter: it was set earlier), which only refreshes early; a value deleted
    /// meanwhile reads as empty, foreign, and its removal ([`SharedStore::delete_if`]) checks
    /// again atomically; a value torn between `STRLEN` and `GETRANGE` fails to open and is
    /// replaced.
    fn read(&self, key: &str) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        if self.transactions.load(Ordering::Relaxed) {
            pipe.atomic();
        }
        pipe.ignore_errors()
            .cmd("PTTL")
            .arg(key)
            .cmd("STRLEN")
            .arg(key)
            .cmd("GETRANGE")
            .arg(key)
            .arg(0)
            .arg(MAX_VALUE_BYTES - 1);
        pipe
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Option<Id>, Connection)>> {
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The TLS target for `url` (given as `redis://`, the scheme the redis crate parses without
/// its own TLS).
#[cfg(feature = "rustls-no-provider")]
fn tls_target(url: &str) -> Result<Target, String> {
    use redis::IntoConnectionInfo;

    let info = url
        .into_connection_info()
        .map_err(|e| format!("is not a Redis URL: {e}"))?;
    let redis::ConnectionAddr::Tcp(host, port) = info.addr().clone() else {
        return Err("is not a Redis URL over TCP".to_owned());
    };
    let tls = tls::Tls::new().map_err(|e| e.to_string())?;
    Ok(Target::Tls {
        host,
        port,
        redis: info.redis_settings().clone(),
        tls,
    })
}

#[cfg(not(feature = "rustls-no-provider"))]
fn tls_target(_: &str) -> Result<Target, String> {
    Err("needs TLS: enable tower-oauth2's `rustls` feature".to_owned())
}

impl SharedStore for RedisStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Stored>> {
        let key = self.key(key);
        Box::pin(self.run(move |mut connection| async move {
            // Never more than MAX_VALUE_BYTES: a huge value under our key (anyone can write
            // Redis) must cost one bounded read, not a read until the timeout. Each command's
            // own result: a WRONGTYPE must not hide PTTL's answer.
            let mut read: Vec<redis::RedisResult<redis::Value>> =
                self.read(&key).query_async(&mut connection).await?;
            let (Some(value), Some(length), Some(pttl)) = (read.pop(), read.pop(), read.pop())
            else {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "PTTL, STRLEN and GETRANGE answered with fewer than three replies",
                )));
            };
            // PTTL: -2 no key, -1 no expiry.
            let pttl = redis::from_redis_value::<i64>(pttl?)?;
            if pttl == -2 {
                return Ok(None);
            }
            let expires_in = u64::try_from(pttl).ok().map(Duration::from_millis);
            let foreign = Ok(Some(Stored::new(Vec::new(), expires_in)));
            match length {
                Ok(length) => {
                    if redis::from_redis_value::<usize>(length)? > MAX_VALUE_BYTES {
                        return foreign;
                    }
                    let value = redis::from_redis_value::<Vec<u8>>(value?)?;
                    Ok(Some(Stored::new(value, expires_in)))
                }
                // Something else lives under our key (a list, a hash): not ours, so it is
                // treated like any foreign value, and the next publication replaces it.
                Err(error) if error.code() == Some("WRONGTYPE") => foreign,
                Err(error) => Err(error),
            }
        }))
    }

    fn time<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Duration>> {
        let key = self.key(key);
        Box::pin(self.run(move |mut connection| async move {
            // `EXISTS key` routes the pair to the node holding `key` in a cluster, whose clock
            // sealed the expiries read there.
            let mut pipe = redis::pipe();
            if self.transactions.load(Ordering::Relaxed) {
                pipe.atomic();
            }
            pipe.cmd("EXISTS").arg(&key).ignore().cmd("TIME");
            let read: redis::RedisResult<((u64, u64),)> = pipe.query_async(&mut connection).await;
            match read {
                Ok(((seconds, micros),)) => Ok(Some(
                    Duration::from_secs(seconds) + Duration::from_micros(micros.min(999_999)),
                )),
                // An ACL user without `TIME` (it is in `@fast`, not `@read`): no store clock,
                // so only `PTTL` judges shared tokens, as for a store without one.
                Err(error) if refused_by_acl(&error) => Ok(None),
                Err(error) => Err(error),
            }
        }))
    }

    fn set<'a>(&'a self, key: &'a str, value: &'a [u8], ttl: Duration) -> StoreFuture<'a, ()> {
        let key = self.key(key);
        Box::pin(self.run(move |mut connection| async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(value)
                .arg("PX")
                .arg(millis(ttl))
                .query_async(&mut connection)
                .await
        }))
    }

    fn set_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        let key = self.key(key);
        Box::pin(self.run(move |mut connection| async move {
            let set: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(value)
                .arg("NX")
                .arg("PX")
                .arg(millis(ttl))
                .query_async(&mut connection)
                .await?;
            Ok(set.is_some())
        }))
    }

    /// Compare-and-delete is a Lua script (Redis has no such command). Where the ACL forbids
    /// scripting (`-@scripting`, common on managed Redis), it runs without one: read, delete
    /// and put back what was not `expected` (see `delete_if_without_scripting`). Never an
    /// error for that reason, which would open the breaker and turn sharing off.
    fn delete_if<'a>(&'a self, key: &'a str, expected: &'a [u8]) -> StoreFuture<'a, bool> {
        let key = self.key(key);
        Box::pin(async move {
            if !self.scripting.load(Ordering::Relaxed) {
                return self.delete_if_without_scripting(&key, expected).await;
            }
            let key = key.as_str();
            let scripted = self
                .run(|mut connection| async move {
                    let deleted: redis::RedisResult<i64> = self
                        .delete_if
                        .key(key)
                        .arg(expected)
                        .arg(MAX_VALUE_BYTES)
                        .invoke_async(&mut connection)
                        .await;
                    match deleted {
                        Ok(deleted) => Ok(Some(deleted == 1)),
                        Err(error) if error.code() == Some("NOPERM") => {
                            if self.scripting.swap(false, Ordering::Relaxed) {
                                tracing::info!(
                                    target: "tower_oauth2::shared",
                                    %error,
                                    "Redis's ACL forbids scripting: compare-and-delete runs \
                                     without a script"
                                );
                            }
                            Ok(None)
                        }
                        Err(error) => Err(error),
                    }
                })
                .await?;
            match scripted {
                Some(deleted) => Ok(deleted),
                None => self.delete_if_without_scripting(key, expected).await,
            }
        })
    }
}

impl RedisStore {
    /// Compare-and-delete without a script: read, measure and delete atomically (MULTI), then
    /// put back, if absent, whatever was not `expected` (with the expiry it had). Another
    /// process's value is missing only for one round trip, and one that appeared meanwhile
    /// wins; a value too long to read back whole, or of another type, is foreign anyway and
    /// stays deleted. Where the ACL forbids transactions too, the same commands run as one
    /// plain pipeline: a value set between the read and the `DEL` is lost (the next fetch
    /// publishes again), the price of an ACL without either.
    async fn delete_if_without_scripting(
        &self,
        key: &str,
        expected: &[u8],
    ) -> Result<bool, BoxError> {
        self.run(|mut connection| async move {
            let mut read: Vec<redis::RedisResult<redis::Value>> = self
                .read(key)
                .cmd("DEL")
                .arg(key)
                .query_async(&mut connection)
                .await?;
            let (Some(_deleted), Some(value), Some(length), Some(pttl)) =
                (read.pop(), read.pop(), read.pop(), read.pop())
            else {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "PTTL, STRLEN, GETRANGE and DEL answered with fewer than four replies",
                )));
            };
            let pttl = redis::from_redis_value::<i64>(pttl?)?;
            if pttl == -2 {
                return Ok(false);
            }
            // A foreign value (not a string, or too long to read back whole) is gone for
            // good: what `get` reported for it, an empty value, matches it.
            let (Ok(length), Ok(value)) = (length, value) else {
                return Ok(expected.is_empty());
            };
            let length = redis::from_redis_value::<usize>(length)?;
            let value = redis::from_redis_value::<Vec<u8>>(value)?;
            if length > MAX_VALUE_BYTES {
                return Ok(expected.is_empty());
            }
            if value == expected {
                return Ok(true);
            }
            let mut restore = redis::cmd("SET");
            restore.arg(key).arg(value).arg("NX");
            if let Ok(pttl) = u64::try_from(pttl) {
                restore.arg("PX").arg(pttl.max(1));
            }
            let _: Option<String> = restore.query_async(&mut connection).await?;
            Ok(false)
        })
        .await
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url.shown)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Milliseconds for `PX`, at least 1 (Redis refuses 0).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Whether Redis refused a command to this user (`NOPERM`, or a transaction aborted for it).
fn refused_by_acl(error: &redis::RedisError) -> bool {
    matches!(error.code(), Some("NOPERM" | "EXECABORT")) || error.to_string().contains("NOPERM")
}
