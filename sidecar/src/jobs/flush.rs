//! The usage flush job (`usage_flush`): [`flush`] every `TOLLGATE_FLUSH_INTERVAL` while
//! serving, and once more on shutdown (so that an in-process store loses nothing on a clean
//! stop). A failed flush is logged, counted and retried at the next interval.

use std::sync::Arc;
use std::time::Duration;

use super::Jobs;
use crate::Clock;
use crate::services::flush::flush;
use crate::storage::sql::UsageSink;
use crate::storage::usage::UsageStore;

/// Starts the flush of `store` into `database` every `interval` on `jobs`.
pub fn start<S: UsageStore, D: UsageSink>(
    jobs: &mut Jobs,
    store: Arc<S>,
    database: D,
    interval: Duration,
    clock: Clock,
) {
    let database = Arc::new(database);
    jobs.every("usage_flush", interval, move || {
        let store = Arc::clone(&store);
        let database = Arc::clone(&database);
        async move { run_logged(&*store, &*database, clock).await }
    });
}

async fn run_logged<S: UsageStore>(
    store: &S,
    database: &impl UsageSink,
    clock: Clock,
) -> Result<(), String> {
    match flush(store, database, clock()).await {
        Ok(report) => {
            if report.tenants > 0 {
                tracing::info!(
                    tenants = report.tenants,
                    applied = report.applied,
                    already_applied = report.already_applied,
                    rows = report.rows,
                    "usage flushed"
                );
            }
            Ok(())
        }
        Err(error) => Err(format!("usage flush failed: {error}")),
    }
}
