//! Redis Sentinel: `redis+sentinel://[user:password@]host:26379[,host:26379…]/master[/db]`.
//!
//! Done here rather than with the redis crate's `sentinel` feature (which adds `rand` and
//! `log`, and uses tokio timers): ask each sentinel in turn for the master's address
//! (`SENTINEL get-master-addr-by-name`), connect to it with the URL's credentials, and check
//! that it is a master (`ROLE`), since a sentinel may still name a demoted one. After a
//! failover the old connection fails (or answers `READONLY`), the store drops it, and the next
//! operation asks the sentinels again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::{self, Either};
use redis::aio::MultiplexedConnection;
use redis::{Client, IntoConnectionInfo, RedisConnectionInfo};

use crate::error::BoxError;

/// The sentinels of one master, and how to log in to that master.
pub(super) struct Sentinels {
    sentinels: Vec<Client>,
    /// The sentinel that last named a reachable master: asked first next time.
    last_good: AtomicUsize,
    master: String,
    login: RedisConnectionInfo,
}

impl Sentinels {
    /// From a `redis+sentinel://` URL (without its scheme: `rest`); an error says what is wrong
    /// (never quoting the password: the caller scrubs it anyway).
    pub(super) fn parse(rest: &str) -> Result<Self, String> {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let mut path = path.split('/').filter(|part| !part.is_empty());
        let master = path
            .next()
            .ok_or("names no master (redis+sentinel://host:26379/<master>)")?
            .to_owned();
        let db = path.next().unwrap_or("0");
        // The redis crate parses the credentials and database, percent-decoding included.
        let login = format!(
            "redis://{}localhost/{db}",
            userinfo.map(|u| format!("{u}@")).unwrap_or_default()
        )
        .into_connection_info()
        .map_err(|e| format!("has unusable credentials or database: {e}"))?
        .redis_settings()
        .clone();
        let sentinels = hosts
            .split(',')
            .filter(|host| !host.is_empty())
            .map(|host| {
                let host = if host.contains(':') {
                    host.to_owned()
                } else {
                    format!("{host}:26379")
                };
                Client::open(format!("redis://{host}/"))
                    .map_err(|e| format!("has an unusable sentinel address: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if sentinels.is_empty() {
            return Err("names no sentinel".to_owned());
        }
        Ok(Sentinels {
            sentinels,
            last_good: AtomicUsize::new(0),
            master,
            login,
        })
    }

    /// A connection to the current master, through the first sentinel that names one that
    /// answers as a master, starting with the one that did last time.
    ///
    /// Each sentinel gets a share of the operation's `timeout` (one more share is left for the
    /// operation itself): three sentinels are deployed so that one can be down, and one that
    /// hangs (a host gone, packets dropped) must not use up the whole operation before the
    /// next is asked. Real-time timers, as everywhere in the store.
    pub(super) async fn connect(
        &self,
        config: &redis::AsyncConnectionConfig,
        timeout: Duration,
    ) -> Result<MultiplexedConnection, BoxError> {
        let share = timeout / u32::try_from(self.sentinels.len() + 1).unwrap_or(u32::MAX);
        let first = self.last_good.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for at in (0..self.sentinels.len()).map(|i| (first + i) % self.sentinels.len()) {
            let asking = std::pin::pin!(self.master_through(&self.sentinels[at], config));
            let answered = match future::select(asking, futures_timer::Delay::new(share)).await {
                Either::Left((answered, _)) => answered,
                Either::Right(_) => Err(format!("no answer within {share:?}").into()),
            };
            match answered {
                Ok(connection) => {
                    self.last_good.store(at, Ordering::Relaxed);
                    return Ok(connection);
                }
                Err(error) => failures.push(format!("sentinel {}: {error}", at + 1)),
            }
        }
        Err(format!(
            "no sentinel named a reachable master {:?}: {}",
            self.master,
            failures.join("; ")
        )
        .into())
    }

    async fn master_through(
        &self,
        sentinel: &Client,
        config: &redis::AsyncConnectionConfig,
    ) -> Result<MultiplexedConnection, BoxError> {
        let mut asking = sentinel
            .get_multiplexed_async_connection_with_config(config)
            .await?;
        let address: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master)
            .query_async(&mut asking)
            .await?;
        let (host, port) =
            address.ok_or_else(|| format!("the sentinel knows no master {:?}", self.master))?;
        let info = redis::ConnectionAddr::Tcp(host.clone(), port)
            .into_connection_info()?
            .set_redis_settings(self.login.clone());
        let mut connection = Client::open(info)?
            .get_multiplexed_async_connection_with_config(config)
            .await
            .map_err(super::connection::explain)?;
        let role: Vec<redis::Value> = redis::cmd("ROLE")
            .query_async(&mut connection)
            .await
            .map_err(super::connection::explain)?;
        match role.first() {
            Some(redis::Value::BulkString(role)) if role == b"master" => Ok(connection),
            _ => Err(format!("{host}:{port}, named by the sentinel, is not a master (yet)").into()),
        }
    }
}
