//! The optional detailed request log (`TOLLGATE_REQUEST_LOG`, off by default): the request log
//! entries of usage batches ([`UsageBatch::requests`](tollgate_filter::usage::UsageBatch)),
//! written into `api_request_log` asynchronously, in batches, never in the way of ingestion.
//!
//! `POST /v1/usage` hands a batch's entries to [`RequestLog::submit`] once the batch's
//! aggregates were ingested; that only appends them to a bounded in-memory queue
//! ([`RequestLogSettings::queue_entries`]). A writer job ([`crate::jobs::request_log`]) takes them out in batches
//! of at most [`RequestLogSettings::batch_entries`], as soon as a full batch waits or every
//! [`RequestLogSettings::flush_interval`]:
//!
//! - PostgreSQL: one `COPY api_request_log (…) FROM STDIN` per batch (text format, see
//!   [`copy_text`](crate::storage::sql::copy_text)) into a table partitioned by UTC day. Partitions for today and the next
//!   [`DAYS_AHEAD`] days are created at start and whenever the day changes (and any day in
//!   retention a batch needs), partitions older than the retention are dropped (`DROP TABLE`).
//! - SQLite: one transaction of multi-row `INSERT`s per batch into a plain table; retention is
//!   a `DELETE` of the rows older than the retention.
//!
//! Nothing is lost silently: every entry ends in exactly one outcome of
//! `tollgate_request_log_entries_total{outcome}` — `written`; `dropped` (the queue was full);
//! `failed` (the database refused the batch three times, or was down at shutdown);
//! `out_of_range` (its day is older than the retention or more than [`DAYS_AHEAD`] days
//! ahead: there is no partition for it); `disabled` (the log is off, so the filter sends
//! entries for nothing). Drops, failures and out-of-range entries are logged by the writer as
//! totals, at most once per [`LOG_EVERY`], never per entry.
//!
//! **Duplicates.** A resent batch whose records were all applied before (ingest says
//! `applied == 0`, `duplicate > 0`) is not logged again. Residual cases: a batch that was half
//! applied (some tenants before, some now) is logged whole again, and a batch that carries
//! entries but no records cannot be told from its resend; both log its entries twice. Entries
//! still queued when the sidecar crashes (not on SIGTERM: shutdown drains the queue) are lost.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tollgate_filter::usage::RequestLogEntry;

pub use crate::storage::sql::request_log::{DAY_MS, DAYS_AHEAD, day_of_ms};

use crate::metrics::{LogOutcome, Metrics};

/// The writer logs drops and failures at most this often (as totals since the last message).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// How the request log runs (from `TOLLGATE_REQUEST_LOG*`, see [`crate::config::Settings`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLogSettings {
    /// Write entries (`false`: count them as `disabled` and forget them).
    pub enabled: bool,
    /// Keep this many days before today (UTC) as well as today; older days are dropped.
    pub retention_days: u32,
    /// The most entries one `COPY` (or one SQLite transaction) writes.
    pub batch_entries: usize,
    /// Queued entries are written at least this often.
    pub flush_interval: Duration,
    /// The most entries waiting to be written; beyond it new entries are `dropped`.
    pub queue_entries: usize,
}

impl Default for RequestLogSettings {
    fn default() -> Self {
        RequestLogSettings {
            enabled: false,
            retention_days: 30,
            batch_entries: 1_000,
            flush_interval: Duration::from_secs(1),
            queue_entries: 100_000,
        }
    }
}

/// Where `POST /v1/usage` hands request log entries: a cheap handle to the writer's queue
/// (or, when the log is off, a counter of what was sent for nothing).
#[derive(Clone)]
pub struct RequestLog {
    queue: Option<Arc<Queue>>,
    metrics: Arc<Metrics>,
    /// The "log is off" warning was given.
    warned: Arc<AtomicBool>,
}

impl RequestLog {
    /// A log that is off: entries are counted as `disabled`, and a warning is logged once.
    pub fn disabled(metrics: Arc<Metrics>) -> Self {
        RequestLog {
            queue: None,
            metrics,
            warned: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A log whose entries go to `queue` (its writer: [`crate::jobs::request_log::start`]).
    pub(crate) fn queued(queue: Arc<Queue>, metrics: Arc<Metrics>) -> Self {
        RequestLog {
            queue: Some(queue),
            metrics,
            warned: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether entries are written.
    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Queues `entries` for writing without waiting; what does not fit is `dropped`.
    pub fn submit(&self, entries: Vec<RequestLogEntry>) {
        if entries.is_empty() {
            return;
        }
        match &self.queue {
            Some(queue) => queue.push(entries, &self.metrics),
            None => {
                self.metrics
                    .request_log(LogOutcome::Disabled, len(&entries));
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the filter sends request log entries (usage.request_log) but \
                         TOLLGATE_REQUEST_LOG is off: they are not written (counted in \
                         tollgate_request_log_entries_total{{outcome=\"disabled\"}})"
                    );
                }
            }
        }
    }
}

/// The bounded queue between the handlers and the writer.
pub(crate) struct Queue {
    entries: Mutex<Waiting>,
    capacity: usize,
    pub(crate) batch: usize,
    /// A full batch waits, or the queue was closed.
    pub(crate) ready: Notify,
    /// Entries dropped since the writer last logged it.
    pub(crate) dropped: AtomicU64,
}

#[derive(Default)]
struct Waiting {
    entries: VecDeque<RequestLogEntry>,
    closed: bool,
}

impl Queue {
    pub(crate) fn new(capacity: usize, batch: usize) -> Self {
        Queue {
            entries: Mutex::new(Waiting::default()),
            capacity: capacity.max(1),
            batch: batch.max(1),
            ready: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends what fits; counts the rest as dropped.
    fn push(&self, entries: Vec<RequestLogEntry>, metrics: &Metrics) {
        let total = entries.len();
        let (accepted, waiting) = {
            let mut waiting = self.lock();
            let room = if waiting.closed {
                0
            } else {
                self.capacity.saturating_sub(waiting.entries.len())
            };
            let accepted = room.min(total);
            waiting.entries.extend(entries.into_iter().take(accepted));
            (accepted, waiting.entries.len())
        };
        let dropped = (total - accepted) as u64;
        if dropped > 0 {
            metrics.request_log(LogOutcome::Dropped, dropped);
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        metrics.request_log_queue(waiting as u64);
        if waiting >= self.batch {
            self.ready.notify_one();
        }
    }

    /// Takes up to `max` of the oldest entries.
    pub(crate) fn take(&self, max: usize) -> Vec<RequestLogEntry> {
        let mut waiting = self.lock();
        let n = max.min(waiting.entries.len());
        waiting.entries.drain(..n).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }
}

/// `entries.len()` as a counter increment.
pub(crate) fn len<T>(entries: &[T]) -> u64 {
    entries.len() as u64
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(n: u64) -> RequestLogEntry {
        RequestLogEntry {
            time_ms: n,
            tenant: "acme".into(),
            endpoint: "GET /x".into(),
            status: 200,
            bytes_in: 0,
            bytes_out: 0,
            latency_ms: 1,
            user: None,
        }
    }

    #[test]
    fn the_queue_keeps_what_fits_and_counts_the_rest_dropped() {
        let metrics = Metrics::new();
        let queue = Queue::new(3, 2);
        queue.push((0..2).map(entry).collect(), &metrics);
        queue.push((2..5).map(entry).collect(), &metrics);
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.dropped.load(Ordering::Relaxed), 2);
        let taken: Vec<u64> = queue.take(2).iter().map(|e| e.time_ms).collect();
        assert_eq!(taken, [0, 1]);
        queue.close();
        queue.push(vec![entry(9)], &metrics);
        assert_eq!(queue.take(10).len(), 1);
        let text = metrics.render();
        assert!(
            text.contains(r#"tollgate_request_log_entries_total{outcome="dropped"} 3"#),
            "{text}"
        );
    }

    #[test]
    fn a_disabled_log_counts_what_it_was_sent() {
        let metrics = Arc::new(Metrics::new());
        let log = RequestLog::disabled(Arc::clone(&metrics));
        assert!(!log.enabled());
        log.submit((0..4).map(entry).collect());
        log.submit(Vec::new());
        let text = metrics.render();
        assert!(
            text.contains(r#"tollgate_request_log_entries_total{outcome="disabled"} 4"#),
            "{text}"
        );
    }

    #[test]
    fn days_are_utc() {
        assert_eq!(day_of_ms(0), 0);
        assert_eq!(day_of_ms(DAY_MS - 1), 0);
        assert_eq!(day_of_ms(1_795_694_400_000), 20_783); // 2026-11-26T12:00Z
        assert_eq!(tollgate_filter::usage::format_date(20_783), "2026-11-26");
    }
}
