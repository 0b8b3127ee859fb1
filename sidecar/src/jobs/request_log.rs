//! The request log writer job (`request_log`): takes the entries `POST /v1/usage` queued
//! ([`crate::services::request_log`]) out in batches and writes them through
//! [`RequestLogStore`](crate::storage::sql::RequestLogStore), keeping the partitions (or the
//! retention) up to date; on shutdown it writes what is queued.

mod writer;

use std::sync::Arc;

use super::Jobs;
use crate::Clock;
use crate::metrics::Metrics;
use crate::services::request_log::Queue;
pub use crate::services::request_log::{RequestLog, RequestLogSettings};
use crate::storage::sql::Database;

/// Starts the writer into `database` on `jobs` when `settings.enabled` (job `request_log`:
/// on shutdown it refuses new entries and writes every queued one, counting those the
/// database does not take as `failed`); returns the handle for `POST /v1/usage`.
pub fn start(
    jobs: &mut Jobs,
    settings: RequestLogSettings,
    database: Database,
    metrics: Arc<Metrics>,
    clock: Clock,
) -> RequestLog {
    if !settings.enabled {
        return RequestLog::disabled(metrics);
    }
    let queue = Arc::new(Queue::new(settings.queue_entries, settings.batch_entries));
    let writer_queue = Arc::clone(&queue);
    let writer_metrics = Arc::clone(&metrics);
    jobs.start("request_log", move |mut context| async move {
        let health = Arc::clone(&context.health);
        let closing = Arc::clone(&writer_queue);
        let close = async move {
            context.stopping().await;
            closing.close();
        };
        let write = writer::run(
            writer_queue,
            settings,
            database,
            writer_metrics,
            clock,
            health,
        );
        tokio::join!(close, write);
    });
    RequestLog::queued(queue, metrics)
}
