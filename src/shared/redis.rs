//! [`RedisStore`]: the shared cache on Redis (feature `redis`).

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Script};
use tokio::runtime::Id;

use super::{SharedStore, StoreFuture, Stored};
use crate::error::BoxError;
use crate::ConfigError;

/// Deletes `KEYS[1]` only if it holds `ARGV[1]`: releasing our lease, or dropping the token a
/// server rejected, without touching what another process put there since.
const DELETE_IF: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
";

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
    client: Client,
    /// The URL without credentials, for `Debug`.
    shown: String,
    prefix: String,
    timeout: Duration,
    delete_if: Script,
    /// One multiplexed connection, on the runtime that opened it: its driver task lives there,
    /// so a caller on another runtime opens its own rather than depend on one that may be gone.
    connection: Mutex<Option<(Option<Id>, MultiplexedConnection)>>,
}

impl RedisStore {
    /// The default key prefix.
    pub const DEFAULT_PREFIX: &'static str = "tower-oauth2:";
    /// The default time allowed for each Redis operation, connecting included.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

    /// A store on the Redis at `url` (`redis://[:password@]host[:port][/db]`, or `rediss://`
    /// if your `redis` dependency enables TLS). Nothing connects until the first fetch.
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        let shown = without_credentials(url);
        let client = Client::open(url).map_err(|e| {
            ConfigError::new(
                "RedisStore::new",
                format!("RedisStore: {shown:?} is not a Redis URL: {e}"),
            )
        })?;
        Ok(RedisStore {
            client,
            shown,
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            timeout: Self::DEFAULT_TIMEOUT,
            delete_if: Script::new(DELETE_IF),
            connection: Mutex::new(None),
        })
    }

    /// Put this before every key (default `tower-oauth2:`), to keep apart applications that
    /// share a Redis. Keys also hold a digest of the token URL, client id, authentication
    /// method, scopes, audience and parameters, so different clients never collide.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The time allowed for each operation, connecting included (default 250 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn connection(&self) -> Result<MultiplexedConnection, BoxError> {
        let here = tokio::runtime::Handle::try_current().ok().map(|h| h.id());
        if let Some((runtime, connection)) = &*self.lock() {
            if *runtime == here {
                return Ok(connection.clone());
            }
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *self.lock() = Some((here, connection.clone()));
        Ok(connection)
    }

    /// Run `operation` on a connection within the timeout; on any failure, forget the
    /// connection so that the next operation opens a new one.
    async fn run<T, F, Fut>(&self, operation: F) -> Result<T, BoxError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let attempt = async {
            let connection = self.connection().await?;
            operation(connection).await.map_err(BoxError::from)
        };
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(format!("Redis did not answer within {:?}", self.timeout).into()),
        };
        if result.is_err() {
            *self.lock() = None;
        }
        result
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Option<Id>, MultiplexedConnection)>> {
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SharedStore for RedisStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Stored>> {
        let key = self.key(key);
        Box::pin(self.run(move |mut connection| async move {
            // Each command's own result: a WRONGTYPE from GET must not hide PTTL's answer.
            let mut read: Vec<redis::RedisResult<redis::Value>> = redis::pipe()
                .atomic()
                .ignore_errors()
                .cmd("GET")
                .arg(&key)
                .cmd("PTTL")
                .arg(&key)
                .query_async(&mut connection)
                .await?;
            let (Some(pttl), Some(value)) = (read.pop(), read.pop()) else {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "GET and PTTL answered with fewer than two replies",
                )));
            };
            // PTTL: -1 no expiry, -2 no key (not between GET and PTTL: they run atomically).
            let expires_in = redis::from_redis_value::<i64>(pttl?)
                .ok()
                .and_then(|ms| u64::try_from(ms).ok())
                .map(Duration::from_millis);
            match value {
                Ok(value) => Ok(redis::from_redis_value::<Option<Vec<u8>>>(value)?
                    .map(|value| Stored::new(value, expires_in))),
                // Something else lives under our key (a list, a hash): not ours, so it is
                // treated like any foreign value, and the next publication replaces it.
                Err(error) if error.code() == Some("WRONGTYPE") => {
                    Ok(Some(Stored::new(Vec::new(), expires_in)))
                }
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

    fn delete_if<'a>(&'a self, key: &'a str, expected: &'a [u8]) -> StoreFuture<'a, bool> {
        let key = self.key(key);
        Box::pin(self.run(move |mut connection| async move {
            let deleted: i64 = self
                .delete_if
                .key(&key)
                .arg(expected)
                .invoke_async(&mut connection)
                .await?;
            Ok(deleted == 1)
        }))
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.shown)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// `url` with any `user:password@` removed.
fn without_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://[credentials]@{host}"),
            None => url.to_owned(),
        },
        None => "[not a URL]".to_owned(),
    }
}

/// Milliseconds for `PX`, at least 1 (Redis refuses 0).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}
