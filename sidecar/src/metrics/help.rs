//! Every metric's help text, given once when the recorder is built.

use metrics::{Recorder, SharedString, Unit};
use metrics_exporter_prometheus::PrometheusRecorder;

use super::{
    DECISIONS, ERRORS, FILTER_DECISIONS, FILTER_EVENTS, JOB_LAST_SUCCESS, JOB_RUNS, JOB_UP, NODES,
    REDIS_SECONDS, REQUEST_LOG_ENTRIES, REQUEST_LOG_QUEUE, SYNC_BATCHES, SYNC_ENTRIES,
    SYNC_EXPIRED, SYNC_HITS, USAGE_BATCHES, USAGE_RECORDS,
};

/// The help text of every counter.
const COUNTER_HELP: [(&str, &str); 12] = [
    (
        DECISIONS,
        "Strict decisions by rule and outcome (admitted, refused).",
    ),
    (ERRORS, "Requests that failed, by stable error code."),
    (
        SYNC_BATCHES,
        "Global sync batches by outcome (applied, duplicate: a retry already applied).",
    ),
    (SYNC_ENTRIES, "Entries of applied global sync batches."),
    (
        SYNC_HITS,
        "Hits of applied global sync batches counted into the global buckets.",
    ),
    (
        SYNC_EXPIRED,
        "Entries of applied global sync batches whose hits were a window old, not counted.",
    ),
    (
        USAGE_BATCHES,
        "Usage batches by outcome (applied: some record counted; duplicate: none).",
    ),
    (
        USAGE_RECORDS,
        "Usage records counted (duplicates excluded).",
    ),
    (
        REQUEST_LOG_ENTRIES,
        "Request log entries by outcome (written, dropped: queue full, failed: database \
         refused, out_of_range: no partition for their day, disabled: TOLLGATE_REQUEST_LOG off).",
    ),
    (
        JOB_RUNS,
        "Background job runs by job and outcome (ok, failed).",
    ),
    (
        FILTER_DECISIONS,
        "The filter workers' decisions by rule and outcome (allowed, refused, shadow_refused, \
         queued, sidecar_failures), as they report them every 10 s.",
    ),
    (
        FILTER_EVENTS,
        "The filter workers' other counters (sync, usage and registry calls: batches, \
         failures, dropped), as they report them every 10 s.",
    ),
];

/// The help text of every gauge.
const GAUGE_HELP: [(&str, &str); 4] = [
    (
        NODES,
        "Nodes that synced in the last 10 s, as of the latest batch.",
    ),
    (
        REQUEST_LOG_QUEUE,
        "Request log entries waiting to be written.",
    ),
    (
        JOB_LAST_SUCCESS,
        "When each background job last ran well (Unix seconds).",
    ),
    (JOB_UP, "1 while a background job runs, 0 once it stopped."),
];

/// Gives every metric its help text (and the Redis histogram its unit).
pub(super) fn describe(recorder: &PrometheusRecorder) {
    for (name, help) in COUNTER_HELP {
        recorder.describe_counter(name.into(), None, SharedString::const_str(help));
    }
    for (name, help) in GAUGE_HELP {
        recorder.describe_gauge(name.into(), None, SharedString::const_str(help));
    }
    recorder.describe_histogram(
        REDIS_SECONDS.into(),
        Some(Unit::Seconds),
        SharedString::const_str("Round trips of the Redis counter store, failures included."),
    );
}
