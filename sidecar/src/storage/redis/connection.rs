//! The connection of every Redis-backed store (counters, usage): one Redis, or a Redis
//! Cluster, behind one [`ConnectionLike`]. Both connect lazily: a Redis that is down now makes
//! commands fail (as `StoreError::Unavailable`) until it answers, never the constructor.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, Pipeline, RedisFuture, Value};

use super::{redact_url, unavailable};
use crate::storage::StoreError;

/// One Redis (a reconnecting [`ConnectionManager`]) or a Redis Cluster.
#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(connection) => connection.req_packed_command(cmd),
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
            Connection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

impl Connection {
    /// The Redis at `url` (`redis://[user:password@]host[:port][/db]`, `rediss://` for TLS if
    /// the crate was built with it, `redis+unix:///path`); each command and connection attempt
    /// may take `timeout`. Must be called inside a Tokio runtime.
    pub(crate) fn single(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        // The client's parse errors may quote the URL, password included: not echoed.
        let client = Client::open(url).map_err(|_| {
            StoreError::Unavailable(format!(
                "{} is not a Redis URL (redis://[user:password@]host[:port][/db])",
                redact_url(url)
            ))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Each failed request starts a new attempt anyway; retrying inside one attempt
            // would only make requests wait longer while Redis is down.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let connection =
            ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(Connection::Single(connection))
    }

    /// The Redis Cluster reachable through the seed nodes in `urls` (comma separated
    /// `redis://[user:password@]host:port`, one is enough; every node's slots are learnt from
    /// the first that answers). Must be called inside a Tokio runtime.
    pub(crate) fn cluster(urls: &str, timeout: Duration) -> Result<Self, StoreError> {
        let seeds: Vec<&str> = urls
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect();
        let shown = || {
            seeds
                .iter()
                .map(|url| redact_url(url))
                .collect::<Vec<_>>()
                .join(",")
        };
        if seeds.is_empty() {
            return Err(StoreError::Unavailable(
                "no Redis Cluster seed node (redis://host:port[,redis://host:port…])".into(),
            ));
        }
        // As in `single`: the client's parse errors may quote a URL, password included.
        let client = ClusterClient::builder(seeds.iter().copied())
            .retries(1)
            .min_retry_wait(10)
            .max_retry_wait(100)
            .build()
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "{} is not a list of Redis Cluster seed URLs (redis://host:port,…)",
                    shown()
                ))
            })?;
        let config = ClusterConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout);
        Ok(Connection::Cluster(
            client.get_pending_async_connection_with_config(config),
        ))
    }
}
