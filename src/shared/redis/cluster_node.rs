//! A Redis Cluster node's connection, with deadlines of its own.
//!
//! The cluster client connects to every seed and then to every node of the topology, and
//! waits for all of them: one node that hangs (a host gone that drops packets, a master
//! paused by a long fork or a frozen VM) would hold every operation of the store past its
//! timeout, and the fleet would stop sharing although the master of our slot answers. So
//! each node gets a deadline to connect and answer `PING`, and one for each reply; a node
//! that misses it counts as down for the cluster client (it carries on with the others and
//! tries that one again later).
//!
//! The redis crate has these deadlines (`ClusterClientBuilder::connection_timeout` and
//! `response_timeout`), but as tokio timers, which a paused tokio clock (a user's test)
//! auto-advances while Redis is still answering: every operation would time out. Here they
//! are real-time timers. Its `Connect` trait hands a node connection no state of the store
//! that opens it, only those tokio settings (whose fields it keeps private), so the deadline
//! is process-wide: a share of the shortest timeout of the cluster stores that connected.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::{self, Either};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisFuture, Value};

/// The share of an operation's timeout one node may take to connect: the store's operation
/// may first wait on a hung seed, then on a hung node of the topology, and still needs time
/// for its own command.
const SHARES: u32 = 4;

/// The deadline to connect to a node, in microseconds (`u64::MAX`: no store has set it yet).
static CONNECT_DEADLINE_MICROS: AtomicU64 = AtomicU64::new(u64::MAX);

/// A store whose operations time out after `timeout` is connecting: nodes must connect
/// within a share of it (the shortest such share of the process's cluster stores).
pub(super) fn bound_by(timeout: Duration) {
    let share = u64::try_from((timeout / SHARES).as_micros()).unwrap_or(u64::MAX - 1);
    CONNECT_DEADLINE_MICROS.fetch_min(share.max(1), Ordering::Relaxed);
}

/// The time a node has to connect and answer `PING`.
fn connect_deadline() -> Duration {
    match CONNECT_DEADLINE_MICROS.load(Ordering::Relaxed) {
        u64::MAX => super::RedisStore::DEFAULT_TIMEOUT / SHARES,
        micros => Duration::from_micros(micros),
    }
}

/// The time a connected node has to answer: twice the connect deadline (a reply that takes
/// longer has outlived the store's operation anyway).
fn response_deadline() -> Duration {
    connect_deadline() * 2
}

/// `work`, or a timeout error naming `what` once `deadline` has passed (real time).
async fn within<T>(
    deadline: Duration,
    what: &'static str,
    work: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match future::select(std::pin::pin!(work), futures_timer::Delay::new(deadline)).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            what,
            format!("no answer within {deadline:?}"),
        ))),
    }
}

/// A cluster node's connection: no tokio timers (see the module's comment), real-time
/// deadlines instead.
#[derive(Clone)]
pub(super) struct NodeConnection(MultiplexedConnection);

impl redis::cluster_async::Connect for NodeConnection {
    fn connect_with_config<'a, T>(
        info: T,
        _tokio_timeouts: AsyncConnectionConfig,
    ) -> RedisFuture<'a, Self>
    where
        T: redis::IntoConnectionInfo + Send + 'a,
    {
        Box::pin(within(
            connect_deadline(),
            "a Redis Cluster node did not connect in time",
            async move {
                let client = Client::open(info.into_connection_info()?)?;
                let mut connection = client
                    .get_multiplexed_async_connection_with_config(
                        &super::connection::without_tokio_timers(),
                    )
                    .await?;
                // Connected is not answering: a paused process's kernel still accepts.
                let _: () = redis::cmd("PING").query_async(&mut connection).await?;
                Ok(NodeConnection(connection))
            },
        ))
    }
}

impl ConnectionLike for NodeConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(within(
            response_deadline(),
            "a Redis Cluster node did not answer in time",
            self.0.req_packed_command(cmd),
        ))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(within(
            response_deadline(),
            "a Redis Cluster node did not answer in time",
            self.0.req_packed_commands(pipeline, offset, count),
        ))
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}
