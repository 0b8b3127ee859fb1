//! Seeing that Redis lost its data: a marker key the log keeps there, and Redis's `run_id`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::ConnectionLike;

use crate::storage::{RedisConnection, StoreError};

const TIMEOUT: Duration = Duration::from_secs(2);

/// The marker key of one log in Redis (`<prefix>:wal:<log id>`): set after every replay, so
/// while it is missing Redis has lost what was counted since.
pub struct Marker {
    key: String,
    /// A replay is running (its own batches must pass).
    replaying: AtomicBool,
    /// Seen missing: a replay is due.
    lost: AtomicBool,
}

impl Marker {
    /// The marker of the log `log_id` under `prefix` (`usage`).
    pub fn new(prefix: &str, log_id: &str) -> Marker {
        Marker {
            key: format!("{prefix}:wal:{log_id}"),
            replaying: AtomicBool::new(false),
            lost: AtomicBool::new(true),
        }
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// For the ingest group commit: fine while the marker is there (or a replay runs); an
    /// error, and a replay due, when Redis lost it.
    pub async fn check<C: ConnectionLike>(&self, connection: &mut C) -> Result<(), StoreError> {
        if self.replaying.load(Ordering::Acquire) {
            return Ok(());
        }
        let present: bool = redis::cmd("EXISTS")
            .arg(&self.key)
            .query_async(connection)
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?;
        if present {
            Ok(())
        } else {
            self.lost.store(true, Ordering::Release);
            Err(StoreError::Unavailable(
                "Redis lost the usage aggregates; the usage log is being replayed".into(),
            ))
        }
    }

    /// A replay is due.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    pub(super) fn set_replaying(&self, on: bool) {
        self.replaying.store(on, Ordering::Release);
    }

    pub(super) fn set_lost(&self) {
        self.lost.store(true, Ordering::Release);
    }

    pub(super) fn clear_lost(&self) {
        self.lost.store(false, Ordering::Release);
    }
}

/// The log's own connection to Redis, for the marker and `run_id`.
pub struct RedisWatch {
    connection: RedisConnection,
    cluster: bool,
    run_id: Mutex<Option<String>>,
}

impl RedisWatch {
    /// A connection to the Redis (Cluster when `cluster`) at `url`.
    pub fn new(url: &str, cluster: bool) -> Result<RedisWatch, StoreError> {
        let connection = if cluster {
            RedisConnection::cluster(url, TIMEOUT)?
        } else {
            RedisConnection::single(url, TIMEOUT)?
        };
        Ok(RedisWatch {
            connection,
            cluster,
            run_id: Mutex::new(None),
        })
    }

    /// Checks the marker (and, on one Redis, `run_id`): marks `marker` lost when either says so.
    pub(super) async fn look(&self, marker: &Marker) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        if marker.check(&mut connection).await.is_err() && !marker.is_lost() {
            return Err(StoreError::Unavailable("redis does not answer".into()));
        }
        if let Some(run_id) = self.run_id().await {
            let mut known = self.run_id.lock().unwrap_or_else(|e| e.into_inner());
            if known.as_ref().is_some_and(|known| *known != run_id) {
                marker.set_lost();
            }
            *known = Some(run_id);
        }
        Ok(())
    }

    /// Whether the marker is there (Redis kept everything since the last replay); notes
    /// `run_id`.
    pub(super) async fn present(&self, marker: &Marker) -> Result<bool, StoreError> {
        let present: bool = redis::cmd("EXISTS")
            .arg(marker.key())
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?;
        if let Some(run_id) = self.run_id().await {
            *self.run_id.lock().unwrap_or_else(|e| e.into_inner()) = Some(run_id);
        }
        Ok(present)
    }

    /// Sets the marker (after a replay).
    pub(super) async fn mark(&self, marker: &Marker) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("SET")
            .arg(marker.key())
            .arg(crate::system_clock())
            .query_async::<()>(&mut connection)
            .await
            .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?;
        if let Some(run_id) = self.run_id().await {
            *self.run_id.lock().unwrap_or_else(|e| e.into_inner()) = Some(run_id);
        }
        Ok(())
    }

    /// One Redis's `run_id` (`None` on a cluster, or when `INFO` is refused).
    async fn run_id(&self) -> Option<String> {
        if self.cluster {
            return None;
        }
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut self.connection.clone())
            .await
            .ok()?;
        info.lines()
            .find_map(|line| line.strip_prefix("run_id:"))
            .map(|id| id.trim().to_owned())
    }

    /// Warns when Redis keeps nothing on disk (`appendonly no` and no `save` points).
    pub async fn warn_without_persistence(&self) {
        if self.cluster {
            return;
        }
        let get = |name: &'static str| {
            let mut connection = self.connection.clone();
            async move {
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(name)
                    .query_async::<Vec<String>>(&mut connection)
                    .await
                    .ok()
                    .and_then(|pair| pair.get(1).cloned())
            }
        };
        let (appendonly, save) = (get("appendonly").await, get("save").await);
        if appendonly.as_deref() == Some("no") && save.as_deref() == Some("") {
            tracing::warn!(
                "Redis keeps nothing on disk (appendonly no, no save points): a restart loses \
                 `global`/`strict` counters; usage is kept by the usage log and replayed. Set \
                 `appendonly yes` in redis.conf"
            );
        }
    }
}
