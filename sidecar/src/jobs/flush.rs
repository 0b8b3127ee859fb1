//! The usage flush job: [`flush`] every `TOLLGATE_FLUSH_INTERVAL` while serving, and once
//! more on shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tollgate_filter::Nanos;

use crate::services::flush::flush;
use crate::storage::sql::UsageSink;
use crate::storage::usage::UsageStore;

/// Runs [`flush`] every `interval` until `shutdown` turns true, then once more (so that an
/// in-process store loses nothing on a clean stop). Failures are logged and retried at the
/// next tick.
pub fn spawn<S: UsageStore, D: UsageSink>(
    store: Arc<S>,
    database: D,
    interval: Duration,
    clock: crate::Clock,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                _ = ticks.tick() => run_logged(&*store, &database, clock()).await,
                _ = shutdown.changed() => break,
            }
            if *shutdown.borrow() {
                break;
            }
        }
        run_logged(&*store, &database, clock()).await;
    })
}

async fn run_logged<S: UsageStore>(store: &S, database: &impl UsageSink, now: Nanos) {
    match flush(store, database, now).await {
        Ok(report) if report.tenants > 0 => tracing::info!(
            tenants = report.tenants,
            applied = report.applied,
            already_applied = report.already_applied,
            rows = report.rows,
            "usage flushed"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "usage flush failed; retried at the next interval"),
    }
}
