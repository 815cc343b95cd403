//! Where a [`RedisStore`](super::RedisStore) connects, and the connection it gets: one node
//! (plain TCP or a Unix socket through the redis crate, TLS through the crate's rustls), or a
//! Redis Cluster (feature `redis-cluster`).
//!
//! No timeout here is a tokio timer: the store bounds every operation with a real-time timer
//! (`futures_timer`), because tokio's are auto-advanced under a paused clock (`start_paused`
//! in a user's test), which would time out every operation while Redis is still answering.

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisFuture, Value};

use crate::error::BoxError;

/// Where to connect.
pub(super) enum Target {
    /// Plain TCP or a Unix socket: the redis crate connects.
    Plain(Client),
    /// TLS: the crate's rustls connects, the redis crate speaks over it.
    #[cfg(feature = "rustls-no-provider")]
    Tls {
        host: String,
        port: u16,
        redis: redis::RedisConnectionInfo,
        tls: super::tls::Tls,
    },
    /// The master that Redis Sentinel names.
    Sentinel(super::sentinel::Sentinels),
    /// A Redis Cluster, through any of its nodes.
    #[cfg(feature = "redis-cluster")]
    Cluster(Box<redis::cluster::ClusterClient>),
}

/// A connection to the target, cheap to clone (commands are multiplexed over it).
#[derive(Clone)]
pub(super) enum Connection {
    Node(MultiplexedConnection),
    #[cfg(feature = "redis-cluster")]
    Cluster(redis::cluster_async::ClusterConnection<super::cluster_node::NodeConnection>),
}

/// No tokio timers inside the redis crate (see the module's comment).
pub(super) fn without_tokio_timers() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(None)
        .set_response_timeout(None)
}

impl Target {
    /// A connection that Redis has accepted: a `PING` answered, so that a server wanting
    /// credentials the URL lacks says so here (as an `auth` failure) rather than in the middle
    /// of a transaction; and whether the ACL lets us use transactions (`MULTI`). That is asked
    /// here, by a `MULTI` and a `DISCARD` pipelined with the `PING` (no extra round trip) on a
    /// connection nobody else uses yet, because a `MULTI` refused inside a transaction
    /// pipeline panics the redis crate's driver task (debug builds) or garbles its replies.
    pub(super) async fn connect(&self, timeout: Duration) -> Result<(Connection, bool), BoxError> {
        let mut connection = self.open(timeout).await?;
        if !connection.is_cluster() {
            let mut replies: Vec<redis::RedisResult<Value>> = redis::pipe()
                .ignore_errors()
                .cmd("PING")
                .cmd("MULTI")
                .cmd("DISCARD")
                .query_async(&mut connection)
                .await
                .map_err(explain)?;
            replies.truncate(2);
            let (Some(multi), Some(ping)) = (replies.pop(), replies.pop()) else {
                return Err("Redis answered PING, MULTI and DISCARD with too few replies".into());
            };
            ping.map_err(explain)?;
            let transactions = match multi {
                Ok(_) => true,
                Err(error) if error.code() == Some("NOPERM") => false,
                Err(error) => return Err(explain(error)),
            };
            return Ok((connection, transactions));
        }
        // A cluster: its client spreads key-less commands over the nodes; transactions are
        // assumed (the ACL user needs `@transaction`, see the guide).
        let _: () = redis::cmd("PING")
            .query_async(&mut connection)
            .await
            .map_err(explain)?;
        Ok((connection, true))
    }

    /// `timeout` is the whole operation's (the store bounds it); a target that asks several
    /// servers in turn gives each a share of it.
    async fn open(&self, timeout: Duration) -> Result<Connection, BoxError> {
        match self {
            Target::Plain(client) => Ok(Connection::Node(
                client
                    .get_multiplexed_async_connection_with_config(&without_tokio_timers())
                    .await
                    .map_err(explain)?,
            )),
            #[cfg(feature = "rustls-no-provider")]
            Target::Tls {
                host,
                port,
                redis,
                tls,
            } => {
                let stream = tls.connect(host, *port).await?;
                let (connection, driver) =
                    MultiplexedConnection::new_with_config(redis, stream, without_tokio_timers())
                        .await
                        .map_err(explain)?;
                // The driver lives on the caller's runtime; the store opens a new connection
                // for a caller on another one.
                tokio::spawn(driver);
                Ok(Connection::Node(connection))
            }
            Target::Sentinel(sentinels) => Ok(Connection::Node(
                sentinels.connect(&without_tokio_timers(), timeout).await?,
            )),
            #[cfg(feature = "redis-cluster")]
            Target::Cluster(client) => Ok(Connection::Cluster({
                super::cluster_node::bound_by(timeout);
                client
                    .get_async_generic_connection::<super::cluster_node::NodeConnection>()
                    .await
                    .map_err(explain)?
            })),
        }
    }
}

/// A store failure an operator can act on, with its cause for logs and metrics.
#[derive(Debug)]
pub(super) struct Failure {
    /// `certificate`, `tls`, `auth` or `timeout`.
    pub(super) cause: &'static str,
    pub(super) message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.cause)
    }
}

impl std::error::Error for Failure {}

/// A redis error, saying what to check when it is about the credentials.
pub(super) fn explain(error: redis::RedisError) -> BoxError {
    let auth = error.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("WRONGPASS" | "NOAUTH"));
    // In TLS 1.3 the server judges our certificate after the handshake: its refusal arrives
    // as an alert with the first reply (the redis crate keeps the I/O error only as text).
    if error.kind() == redis::ErrorKind::Io && error.to_string().contains("received fatal alert") {
        return Box::new(Failure {
            cause: "certificate",
            message: format!(
                "Redis refused the TLS connection (a client certificate it wants? \
                 RedisStore::client_certificate_pem): {error}"
            ),
        });
    }
    if auth {
        Box::new(Failure {
            cause: "auth",
            message: format!(
                "Redis refused the credentials (check the URL's user and password): {error}"
            ),
        })
    } else {
        error.into()
    }
}

/// What an operator should look at for `error`: `certificate`, `tls`, `auth`, `timeout` or
/// `other`.
pub(super) fn cause(error: &BoxError) -> &'static str {
    error
        .downcast_ref::<Failure>()
        .map_or("other", |failure| failure.cause)
}

impl Connection {
    fn is_cluster(&self) -> bool {
        #[cfg(feature = "redis-cluster")]
        if let Connection::Cluster(_) = self {
            return true;
        }
        false
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Node(connection) => connection.req_packed_command(cmd),
            #[cfg(feature = "redis-cluster")]
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Node(connection) => connection.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "redis-cluster")]
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Node(connection) => connection.get_db(),
            #[cfg(feature = "redis-cluster")]
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}
