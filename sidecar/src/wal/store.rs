//! [`Logged`]: a usage store whose batches are on disk before they are counted.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use metrics::{Counter, Gauge};
use tokio::sync::RwLock;
use tollgate_filter::Nanos;
use tollgate_filter::usage::UsageBatch;

use super::book::Book;
use super::replay::{self, ReplayError, Replayed};
use super::watch::{Marker, RedisWatch};
use super::{UsageLog, segment};
use crate::metrics::Metrics;
use crate::storage::sql::Database;
use crate::storage::usage::{Ingested, Snapshot, StoreError, UsageStore, by_tenant};

/// How often the watcher looks at Redis.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// What [`Logged::open`] needs besides the store.
pub struct LoggedOptions {
    /// The log (`None`: off, every call goes straight to the store).
    pub log: Option<UsageLog>,
    /// The usage database (which flush ids are committed).
    pub database: Database,
    /// With Redis: the marker (also given to the store's group commit) and its connection.
    pub redis: Option<(Arc<Marker>, RedisWatch)>,
    /// Where the log's metrics go.
    pub metrics: Arc<Metrics>,
}

struct Parts {
    log: UsageLog,
    database: Database,
    redis: Option<(Arc<Marker>, RedisWatch)>,
    book: Mutex<Book>,
    bytes: Gauge,
    replays: Counter,
    replayed: Counter,
}

/// A [`UsageStore`] writing every batch to the usage log before counting it (see the module
/// docs of [`crate::wal`]).
pub struct Logged<S> {
    inner: S,
    /// Read by every ingestion (append to count), written by stages, rotations and replays.
    gate: RwLock<()>,
    parts: Option<Parts>,
}

impl<S: UsageStore> Logged<S> {
    /// Wraps `inner` and replays the log into it (with Redis: when Redis answers; until then
    /// batches are refused and the replay is retried).
    pub async fn open(inner: S, options: LoggedOptions) -> Result<Logged<S>, ReplayError> {
        let Some(log) = options.log else {
            return Ok(Logged {
                inner,
                gate: RwLock::new(()),
                parts: None,
            });
        };
        let metrics = &options.metrics;
        let parts = Parts {
            log,
            database: options.database,
            redis: options.redis,
            book: Mutex::new(Book::default()),
            bytes: metrics.own_gauge(
                "tollgate_usage_log_bytes",
                "Bytes in the usage log's segments (bounded by TOLLGATE_USAGE_LOG_MAX_BYTES).",
            ),
            replays: metrics.own_counter(
                "tollgate_usage_log_replays_total",
                "Replays of the usage log (at start, and when Redis lost its data).",
            ),
            replayed: metrics.own_counter(
                "tollgate_usage_log_replayed_records_total",
                "Usage records counted again by replays (records the store still had are not).",
            ),
        };
        let logged = Logged {
            inner,
            gate: RwLock::new(()),
            parts: Some(parts),
        };
        if logged.kept_by_redis().await? {
            return Ok(logged);
        }
        match logged.replay_now().await {
            Ok(_) => {}
            Err(ReplayError::Store(error)) if logged.has_redis() => {
                tracing::warn!(%error, "usage log: Redis does not answer; replayed when it does");
            }
            Err(error) => return Err(error),
        }
        Ok(logged)
    }

    /// With Redis and the log's marker there, Redis has every batch acknowledged since the
    /// last replay: the log is only read (for what is not flushed yet), not counted again —
    /// which also keeps batches older than the `(sender, seq)` marks' lifetime from counting
    /// twice. `false` when a replay is due.
    async fn kept_by_redis(&self) -> Result<bool, ReplayError> {
        let Some(parts) = &self.parts else {
            return Ok(false);
        };
        let Some((marker, watch)) = &parts.redis else {
            return Ok(false);
        };
        if !watch.present(marker).await.unwrap_or(false) {
            return Ok(false);
        }
        let (_, book) = replay::replay(
            parts.log.dir(),
            &self.inner,
            &parts.database,
            crate::system_clock(),
            false,
        )
        .await?;
        *Self::book(parts) = book;
        marker.clear_lost();
        Ok(true)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Bytes in the log's segments (0 when off).
    pub fn log_bytes(&self) -> u64 {
        self.parts.as_ref().map_or(0, |p| p.log.bytes())
    }

    fn has_redis(&self) -> bool {
        self.parts.as_ref().is_some_and(|p| p.redis.is_some())
    }

    fn book(parts: &Parts) -> MutexGuard<'_, Book> {
        parts.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replays the whole log now (ingestion waits); with Redis, then sets the marker.
    pub async fn replay_now(&self) -> Result<Replayed, ReplayError> {
        let Some(parts) = &self.parts else {
            return Ok(Replayed::default());
        };
        let _closed = self.gate.write().await;
        self.replay_locked(parts).await
    }

    async fn replay_locked(&self, parts: &Parts) -> Result<Replayed, ReplayError> {
        let marker = parts.redis.as_ref().map(|(marker, _)| marker);
        if let Some(marker) = marker {
            marker.set_replaying(true);
        }
        let started = std::time::Instant::now();
        let outcome = replay::replay(
            parts.log.dir(),
            &self.inner,
            &parts.database,
            crate::system_clock(),
            true,
        )
        .await;
        if let Some(marker) = marker {
            marker.set_replaying(false);
        }
        let (replayed, book) = outcome?;
        if let Some((marker, watch)) = &parts.redis {
            watch.mark(marker).await?;
            marker.clear_lost();
        }
        *Self::book(parts) = book;
        parts.replays.increment(1);
        parts.replayed.increment(replayed.applied);
        parts.bytes.set(parts.log.bytes() as f64);
        tracing::info!(
            batches = replayed.batches,
            records = replayed.records,
            counted = replayed.applied,
            seconds = started.elapsed().as_secs_f64(),
            "usage log replayed"
        );
        Ok(replayed)
    }

    /// With Redis: replays when Redis lost its data (under the write lock).
    async fn recover_locked(&self, parts: &Parts) -> Result<(), StoreError> {
        let Some((marker, watch)) = &parts.redis else {
            return Ok(());
        };
        watch.look(marker).await?;
        if marker.is_lost() {
            self.replay_locked(parts)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        }
        Ok(())
    }

    /// Looks at Redis every second and replays when it lost its data; ends with the store.
    pub fn watch(self: &Arc<Self>) {
        if !self.has_redis() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            if let Some(logged) = weak.upgrade()
                && let Some((_, watch)) = logged.parts.as_ref().and_then(|p| p.redis.as_ref())
            {
                watch.warn_without_persistence().await;
            }
            let mut ticks = tokio::time::interval(WATCH_EVERY);
            loop {
                ticks.tick().await;
                let Some(logged) = weak.upgrade() else { return };
                let Some(parts) = &logged.parts else { return };
                let Some((marker, watch)) = &parts.redis else {
                    return;
                };
                if watch.look(marker).await.is_ok() && marker.is_lost() {
                    let _closed = logged.gate.write().await;
                    if let Err(error) = logged.recover_locked(parts).await {
                        tracing::warn!(%error, "usage log replay failed; retried");
                    }
                }
            }
        });
    }

    async fn ingest_logged(
        &self,
        parts: &Parts,
        batch: &UsageBatch,
        now: Nanos,
    ) -> Result<Ingested, StoreError> {
        if parts.redis.as_ref().is_some_and(|(m, _)| m.is_lost()) {
            let _closed = self.gate.write().await;
            self.recover_locked(parts).await?;
        }
        let _open = self.gate.read().await;
        let segment = parts.log.append(segment::batch_frame(batch)).await?;
        Self::book(parts).note(segment, by_tenant(batch).into_iter().map(|(t, _)| t));
        parts.bytes.set(parts.log.bytes() as f64);
        self.inner.ingest(batch, now).await
    }

    async fn dirty_logged(&self, parts: &Parts) -> Result<Vec<String>, StoreError> {
        let _closed = self.gate.write().await;
        self.recover_locked(parts).await?;
        let open = parts.log.rotate().await?;
        let dirty = self.inner.dirty_tenants().await?;
        let set: HashSet<String> = dirty.iter().cloned().collect();
        let clean = Self::book(parts).clean(&set, open);
        if !clean.is_empty() {
            parts.log.append_step(segment::clean_frame(&clean)).await?;
        }
        self.truncate(parts).await;
        Ok(dirty)
    }

    async fn stage_logged(
        &self,
        parts: &Parts,
        tenant: &str,
        flush_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let _closed = self.gate.write().await;
        self.recover_locked(parts).await?;
        let open = parts
            .log
            .append_step(segment::staged_frame(tenant, flush_id))
            .await?;
        let ids = self.inner.stage(tenant, flush_id).await?;
        Self::book(parts).staged(tenant, open);
        Ok(ids)
    }

    async fn truncate(&self, parts: &Parts) {
        let below = Self::book(parts).deletable_below(u64::MAX);
        if let Err(error) = parts.log.delete_below(below).await {
            tracing::warn!(%error, "usage log truncation failed; retried after the next flush");
        }
        parts.bytes.set(parts.log.bytes() as f64);
    }
}

/// Reads go to the store the log sits in front of (while Redis has lost its data and the log
/// is being replayed into it, they see less than was acknowledged).
impl<S: crate::storage::usage::UnflushedUsage> crate::storage::usage::UnflushedUsage for Logged<S> {
    async fn unflushed(
        &self,
        tenant: &str,
    ) -> Result<crate::storage::usage::Unflushed, StoreError> {
        self.inner.unflushed(tenant).await
    }

    async fn generations(&self, tenants: &[String]) -> Result<Vec<u64>, StoreError> {
        self.inner.generations(tenants).await
    }

    async fn live_users(
        &self,
        tenant: &str,
        dates: &[String],
    ) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        self.inner.live_users(tenant, dates).await
    }
}

impl<S: UsageStore> UsageStore for Logged<S> {
    async fn ingest(&self, batch: &UsageBatch, now: Nanos) -> Result<Ingested, StoreError> {
        match &self.parts {
            Some(parts) if !batch.records.is_empty() => self.ingest_logged(parts, batch, now).await,
            _ => self.inner.ingest(batch, now).await,
        }
    }

    async fn dirty_tenants(&self) -> Result<Vec<String>, StoreError> {
        match &self.parts {
            Some(parts) => self.dirty_logged(parts).await,
            None => self.inner.dirty_tenants().await,
        }
    }

    async fn stage(&self, tenant: &str, flush_id: &str) -> Result<Vec<String>, StoreError> {
        match &self.parts {
            Some(parts) => self.stage_logged(parts, tenant, flush_id).await,
            None => self.inner.stage(tenant, flush_id).await,
        }
    }

    async fn snapshot(&self, tenant: &str, flush_id: &str) -> Result<Snapshot, StoreError> {
        let snapshot = self.inner.snapshot(tenant, flush_id).await?;
        // A staged id always holds something; an empty one vanished with the store's data,
        // and committing it would mark its batches flushed.
        if self.parts.is_some() && snapshot.rows.is_empty() && snapshot.users.is_empty() {
            if let Some((marker, _)) = self.parts.as_ref().and_then(|p| p.redis.as_ref()) {
                marker.set_lost();
            }
            return Err(StoreError::Unavailable(format!(
                "the staged usage {flush_id} of {tenant} is gone (the store lost its data); \
                 the usage log is replayed before the next flush"
            )));
        }
        Ok(snapshot)
    }

    async fn release(&self, tenant: &str, flush_id: &str) -> Result<(), StoreError> {
        self.inner.release(tenant, flush_id).await
    }

    async fn finish(&self, tenant: &str) -> Result<(), StoreError> {
        self.inner.finish(tenant).await?;
        if let Some(parts) = &self.parts {
            Self::book(parts).finished(tenant);
            self.truncate(parts).await;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}
