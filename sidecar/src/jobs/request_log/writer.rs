//! The writer task: takes batches out of the queue, writes them, keeps the partitions (or the
//! retention) up to date, and logs what was not written as totals.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tollgate_filter::usage::RequestLogEntry;

use crate::Clock;
use crate::jobs::JobHealth;
use crate::metrics::{LogOutcome, Metrics};
use crate::services::request_log::{LOG_EVERY, Queue, RequestLogSettings, len};
use crate::storage::sql::request_log::{DAYS_AHEAD, day_of_ms};
use crate::storage::sql::{Database, RequestLogStore};

/// Waits between the attempts of a batch (three attempts in all).
const RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(100), Duration::from_secs(1)];

/// How long the writer waits before trying failed partition upkeep again.
const MAINTAIN_RETRY: Duration = Duration::from_secs(60);

/// What was not written since the last warning.
#[derive(Default)]
struct Unreported {
    dropped: u64,
    failed: u64,
    out_of_range: u64,
    last_error: Option<String>,
}

struct Writer {
    database: Database,
    health: Arc<JobHealth>,
    metrics: Arc<Metrics>,
    clock: Clock,
    retention_days: u32,
    /// Days whose partition exists (PostgreSQL).
    known: HashSet<i64>,
    /// The day the storage was last maintained for.
    maintained: Option<i64>,
    /// When failed upkeep may be tried again.
    maintain_after: Option<Instant>,
    unreported: Unreported,
    last_warning: Option<Instant>,
}

/// The writer task: until the queue is closed and drained.
pub(super) async fn run(
    queue: Arc<Queue>,
    settings: RequestLogSettings,
    database: Database,
    metrics: Arc<Metrics>,
    clock: Clock,
    health: Arc<JobHealth>,
) {
    tracing::info!(
        database = database.kind(),
        retention_days = settings.retention_days,
        batch_entries = settings.batch_entries,
        queue_entries = settings.queue_entries,
        "request log on: entries of usage batches are written into api_request_log"
    );
    let mut writer = Writer {
        database,
        health,
        metrics,
        clock,
        retention_days: settings.retention_days,
        known: HashSet::new(),
        maintained: None,
        maintain_after: None,
        unreported: Unreported::default(),
        last_warning: None,
    };
    loop {
        writer.maintain().await;
        if !queue.is_closed() && queue.len() < queue.batch {
            tokio::select! {
                () = queue.ready.notified() => {}
                () = tokio::time::sleep(settings.flush_interval) => {}
            }
        }
        let closing = queue.is_closed();
        let drained = writer.drain(&queue).await;
        if closing {
            if !drained {
                let rest = queue.take(usize::MAX);
                writer.failed(len(&rest), None);
            }
            writer.metrics.request_log_queue(0);
            writer.report(&queue, true);
            return;
        }
        writer.report(&queue, false);
    }
}

impl Writer {
    /// Writes batches until the queue is empty (`true`) or a batch failed (`false`).
    async fn drain(&mut self, queue: &Queue) -> bool {
        loop {
            let batch = queue.take(queue.batch);
            self.metrics.request_log_queue(queue.len() as u64);
            if batch.is_empty() {
                return true;
            }
            if !self.write_batch(batch).await {
                return false;
            }
        }
    }

    /// Writes the entries of `batch` that have a partition, trying three times; `false` when
    /// the database refused them.
    async fn write_batch(&mut self, mut batch: Vec<RequestLogEntry>) -> bool {
        let today = self.today();
        let oldest = today - i64::from(self.retention_days);
        let before = batch.len();
        batch.retain(|entry| (oldest..=today + DAYS_AHEAD).contains(&day_of_ms(entry.time_ms)));
        let out_of_range = (before - batch.len()) as u64;
        if out_of_range > 0 {
            self.metrics
                .request_log(LogOutcome::OutOfRange, out_of_range);
            self.unreported.out_of_range += out_of_range;
        }
        if batch.is_empty() {
            return true;
        }
        let mut delays = RETRY_DELAYS.iter();
        loop {
            match self.database.write(&batch, &mut self.known).await {
                Ok(_) => {
                    self.metrics.request_log(LogOutcome::Written, len(&batch));
                    self.health.ran(true);
                    return true;
                }
                Err(error) => {
                    // A partition may have been dropped behind our back: check them again.
                    self.known.clear();
                    match delays.next() {
                        Some(delay) => tokio::time::sleep(*delay).await,
                        None => {
                            self.failed(len(&batch), Some(error.to_string()));
                            self.health.ran(false);
                            return false;
                        }
                    }
                }
            }
        }
    }

    /// Today's UTC day by the clock.
    fn today(&self) -> i64 {
        day_of_ms((self.clock)() / 1_000_000)
    }

    fn failed(&mut self, entries: u64, error: Option<String>) {
        if entries == 0 {
            return;
        }
        self.metrics.request_log(LogOutcome::Failed, entries);
        self.unreported.failed += entries;
        if error.is_some() {
            self.unreported.last_error = error;
        }
    }

    /// Maintains the storage once per day (and retries failed upkeep after a while).
    async fn maintain(&mut self) {
        let today = self.today();
        if self.maintained == Some(today)
            || self
                .maintain_after
                .is_some_and(|after| Instant::now() < after)
        {
            return;
        }
        match self.database.maintain(today, self.retention_days).await {
            Ok(removed) => {
                self.health.ran(true);
                self.maintained = Some(today);
                self.maintain_after = None;
                self.known.extend(today..=today + DAYS_AHEAD);
                if removed > 0 {
                    tracing::info!(
                        removed,
                        retention_days = self.retention_days,
                        "request log: removed what is older than the retention \
                         (PostgreSQL: partitions dropped; SQLite: rows deleted)"
                    );
                }
            }
            Err(error) => {
                self.health.ran(false);
                self.maintain_after = Some(Instant::now() + MAINTAIN_RETRY);
                tracing::warn!(
                    %error,
                    "request log: cannot create partitions or apply the retention; retried in \
                     a minute"
                );
            }
        }
    }

    /// Logs what was not written, at most once per [`LOG_EVERY`] (`now`: whatever the time).
    fn report(&mut self, queue: &Queue, now: bool) {
        self.unreported.dropped += queue.dropped.swap(0, Ordering::Relaxed);
        let unreported = &self.unreported;
        if unreported.dropped + unreported.failed + unreported.out_of_range == 0 {
            return;
        }
        if !now && self.last_warning.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            return;
        }
        tracing::warn!(
            dropped_queue_full = unreported.dropped,
            failed = unreported.failed,
            out_of_range = unreported.out_of_range,
            last_error = unreported.last_error.as_deref().unwrap_or(""),
            "request log entries not written since the last report (see \
             tollgate_request_log_entries_total)"
        );
        self.unreported = Unreported::default();
        self.last_warning = Some(Instant::now());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::jobs::Jobs;
    use crate::jobs::request_log::start;

    fn now() -> u64 {
        1_795_694_400_000_000_000
    }

    /// A database without the table refuses every batch: each entry is counted `failed` (the
    /// first batch after three attempts, the rest at shutdown), none is lost silently.
    #[tokio::test]
    async fn failed_writes_are_counted() {
        let database = Database::connect(Some("sqlite::memory:")).await.unwrap();
        let metrics = Arc::new(Metrics::new());
        let settings = RequestLogSettings {
            enabled: true,
            batch_entries: 2,
            ..RequestLogSettings::default()
        };
        let mut jobs = Jobs::new(Arc::clone(&metrics), now);
        let log = start(&mut jobs, settings, database, Arc::clone(&metrics), now);
        let entries = (0..3)
            .map(|n| RequestLogEntry {
                time_ms: now() / 1_000_000 + n,
                tenant: "acme".into(),
                endpoint: "GET /x".into(),
                status: 200,
                bytes_in: 0,
                bytes_out: 0,
                latency_ms: 1,
                user: None,
            })
            .collect();
        log.submit(entries);
        jobs.stop().await;
        let text = metrics.render();
        for line in [
            r#"tollgate_request_log_entries_total{outcome="failed"} 3"#,
            r#"tollgate_request_log_entries_total{outcome="written"} 0"#,
            "tollgate_request_log_queue 0",
            // The upkeep (no table to delete from) and the first batch.
            r#"tollgate_job_runs_total{job="request_log",outcome="failed"} 2"#,
            r#"tollgate_job_up{job="request_log"} 0"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
