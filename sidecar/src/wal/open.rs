//! The serving sidecar's usage store with its log, as the settings ask.

use std::sync::Arc;

use super::{Logged, LoggedOptions, Marker, RedisWatch, UsageLog};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::storage::sql::Database;
use crate::storage::usage::{AnyUsageStore, MemoryUsageStore, RedisUsageStore};

/// The usage store `settings` ask for ([`crate::server::usage_store`]), wrapped in the usage
/// log unless `TOLLGATE_USAGE_LOG` is off, replayed, and (with Redis) watched.
pub async fn open_store(
    settings: &Settings,
    database: &Database,
    metrics: &Arc<Metrics>,
) -> std::io::Result<Arc<Logged<AnyUsageStore>>> {
    let log = match settings.usage_log() {
        Some(log_settings) => {
            let log = UsageLog::open(&log_settings, None).map_err(std::io::Error::other)?;
            tracing::info!(
                dir = %log_settings.dir.display(),
                max_bytes = log_settings.max_bytes,
                "usage log on: batches are on disk before they are acknowledged"
            );
            Some(log)
        }
        None => {
            tracing::warn!(
                "usage log off (TOLLGATE_USAGE_LOG=off): a crash of this sidecar or a Redis \
                 restart loses the usage not yet flushed"
            );
            None
        }
    };
    let mut redis = None;
    let store = match (&settings.redis_url, &log) {
        (Some(url), Some(log)) => {
            let marker = Arc::new(Marker::new("usage", log.id()));
            let watch =
                RedisWatch::new(url, settings.redis_cluster).map_err(std::io::Error::other)?;
            let store = if settings.redis_cluster {
                RedisUsageStore::new_cluster(url)
            } else {
                RedisUsageStore::new(url)
            }
            .map_err(std::io::Error::other)?;
            redis = Some((Arc::clone(&marker), watch));
            AnyUsageStore::Redis(store.with_marker(marker))
        }
        (Some(_), None) => crate::server::usage_store(settings).map_err(std::io::Error::other)?,
        (None, _) => AnyUsageStore::Memory(MemoryUsageStore::new(settings.max_buckets)),
    };
    let options = LoggedOptions {
        log,
        database: database.clone(),
        redis,
        metrics: Arc::clone(metrics),
    };
    let logged = Arc::new(
        Logged::open(store, options)
            .await
            .map_err(std::io::Error::other)?,
    );
    logged.watch();
    Ok(logged)
}
