//! The sidecar's Prometheus metrics.
//!
//! Each [`Metrics`] owns its own recorder (no process-global state), so every `app()` — one in
//! production, one per test — counts on its own, and `/metrics` renders exactly its counters.
//!
//! | metric | type | what it counts |
//! | --- | --- | --- |
//! | `tollgate_decisions_total{rule, outcome}` | counter | `strict` checks, `admitted` or `refused`; `refunded`: admitted, then given back because another check of the same request was refused |
//! | `tollgate_errors_total{kind}` | counter | failed requests by stable error code |
//! | `tollgate_sync_batches_total{outcome}` | counter | `global` sync batches, `applied` or `duplicate` |
//! | `tollgate_sync_entries_total` | counter | entries of applied batches |
//! | `tollgate_sync_hits_total` | counter | hits of applied batches counted into global buckets (expired entries' excluded) |
//! | `tollgate_sync_expired_total` | counter | entries of applied batches whose hits were a window old or more, not counted |
//! | `tollgate_nodes` | gauge | nodes that synced in the last 10 s, as of the latest batch |
//! | `tollgate_usage_batches_total{outcome}` | counter | usage batches, `applied` (some record counted) or `duplicate` (none) |
//! | `tollgate_usage_records_total` | counter | usage records counted (duplicates excluded) |
//! | `tollgate_request_log_entries_total{outcome}` | counter | request log entries: `written`, `dropped` (queue full), `failed` (database refused), `out_of_range` (day outside the retention or too far ahead), `disabled` (`TOLLGATE_REQUEST_LOG` off) |
//! | `tollgate_request_log_queue` | gauge | request log entries waiting to be written |
//! | `tollgate_job_runs_total{job, outcome}` | counter | background job runs (`usage_flush`: one flush; `request_log`: one batch or upkeep), `ok` or `failed` |
//! | `tollgate_job_last_success_seconds{job}` | gauge | when the job last ran well (Unix seconds) |
//! | `tollgate_job_up{job}` | gauge | 1 while the job runs, 0 once it stopped (at shutdown, or by failing: then `/readyz` is 503 `job_stopped`) |
//! | `tollgate_filter_decisions_total{rule, outcome}` | counter | the filter workers' decisions as they report them (`POST /v1/stats`, every 10 s): `allowed`, `refused`, `shadow_refused`, `queued`, `sidecar_failures` |
//! | `tollgate_filter_events_total{counter}` | counter | the filter workers' other counters: `sync.batches`, `sync.failures`, `sync.dropped`, `usage.batches`, `usage.failures`, `usage.dropped`, `usage.log_dropped`, `registry.updates`, `registry.failures` |
//! | `tollgate_alerts_fired_total{type}` | counter | quota alerts recorded (`quota.threshold_reached`, `quota.period_ending`) |
//! | `tollgate_alert_deliveries_total{channel, outcome}` | counter | alert delivery attempts, `webhook`/`email`, `delivered`, `pending` (retried later), `failed` (given up), `disabled` |
//! | `tollgate_alert_evaluation_seconds`, `tollgate_alert_evaluated_tenants` | gauge | the last alert evaluation round's duration and tenants |
//! | `tollgate_redis_seconds` | histogram | every Redis round trip of the counter store (50 µs to 100 ms buckets) |
//! | `tollgate_billing_meter_events_total{outcome}` | counter | Stripe meter event attempts: `sent`, `duplicate` (the identifier already existed: delivered), `retried`, `dead`, `waiting` (no customer id or meter name) |
//! | `tollgate_billing_meter_events_stale` | gauge | ALERT when > 0: unsent meter events of usage older than 30 days (Stripe refuses them after 35) |
//! | `tollgate_billing_meter_events_dead` | gauge | meter events Stripe refused for good (error kept in `billing_meter_events`) |
//! | `tollgate_billing_meter_events_waiting` | gauge | meter events waiting for a tenant's `stripe_customer_id` or a meter name |
//! | `tollgate_billing_reconciliations_total{outcome}` | counter | reconciled (customer, meter, day): `matched`, `corrected`, `excess`, `pending` |

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

mod alerts;
mod filter;
mod help;

pub use filter::FilterTotals;

/// Distinct rule names used as labels; decisions for further rules count under [`OTHER_RULE`]
/// (rule names come from requests, and a label per arbitrary name would grow without bound).
pub const MAX_RULE_LABELS: usize = 1_000;
/// The `rule` label of decisions beyond [`MAX_RULE_LABELS`] distinct rules.
pub const OTHER_RULE: &str = "_other";

/// The upper bounds (seconds) of `tollgate_redis_seconds`' buckets: 50 µs (a local Redis) to
/// 100 ms (a struggling one; the store gives up after one second).
pub const REDIS_BUCKETS: [f64; 11] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
];

const DECISIONS: &str = "tollgate_decisions_total";
const ERRORS: &str = "tollgate_errors_total";
const SYNC_BATCHES: &str = "tollgate_sync_batches_total";
const SYNC_ENTRIES: &str = "tollgate_sync_entries_total";
const SYNC_HITS: &str = "tollgate_sync_hits_total";
const SYNC_EXPIRED: &str = "tollgate_sync_expired_total";
const NODES: &str = "tollgate_nodes";
const REDIS_SECONDS: &str = "tollgate_redis_seconds";
const USAGE_BATCHES: &str = "tollgate_usage_batches_total";
const USAGE_RECORDS: &str = "tollgate_usage_records_total";
const REQUEST_LOG_ENTRIES: &str = "tollgate_request_log_entries_total";
const REQUEST_LOG_QUEUE: &str = "tollgate_request_log_queue";
const JOB_RUNS: &str = "tollgate_job_runs_total";
const JOB_LAST_SUCCESS: &str = "tollgate_job_last_success_seconds";
const JOB_UP: &str = "tollgate_job_up";
const FILTER_DECISIONS: &str = "tollgate_filter_decisions_total";
const FILTER_EVENTS: &str = "tollgate_filter_events_total";
/// How many store updates between two upkeeps of the recorder (see [`Metrics::decision`]).
const UPKEEP_EVERY: u64 = 4096;
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// What one applied `global` sync batch carried (see [`Metrics::sync_applied`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounts {
    /// Entries in the batch.
    pub entries: u64,
    /// Hits of the entries that were counted (not expired).
    pub hits: u64,
    /// Entries whose hits were a window old or more, not counted.
    pub expired: u64,
}

/// What became of request log entries (the `outcome` of `tollgate_request_log_entries_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogOutcome {
    /// Written into `api_request_log`.
    Written,
    /// Not queued: the queue was full.
    Dropped,
    /// The database refused them (after retries), or was down at shutdown.
    Failed,
    /// Their day is older than the retention or further ahead than the partitions.
    OutOfRange,
    /// The request log is off.
    Disabled,
}

impl LogOutcome {
    const ALL: [LogOutcome; 5] = [
        LogOutcome::Written,
        LogOutcome::Dropped,
        LogOutcome::Failed,
        LogOutcome::OutOfRange,
        LogOutcome::Disabled,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            LogOutcome::Written => "written",
            LogOutcome::Dropped => "dropped",
            LogOutcome::Failed => "failed",
            LogOutcome::OutOfRange => "out_of_range",
            LogOutcome::Disabled => "disabled",
        }
    }
}

/// The counters one sidecar exports.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Per rule: the admitted and refused counters.
    decisions: RwLock<HashMap<String, [Counter; 2]>>,
    /// Sync batches: applied, duplicate.
    batches: [Counter; 2],
    entries: Counter,
    hits: Counter,
    expired: Counter,
    nodes: Gauge,
    redis_seconds: Histogram,
    /// Store updates counted (decisions, sync batches and entries), for the upkeep.
    updates: AtomicU64,
    /// Usage batches: applied, duplicate.
    usage_batches: [Counter; 2],
    usage_records: Counter,
    /// Request log entries, by [`LogOutcome`] (in [`LogOutcome::ALL`] order).
    request_log: [Counter; 5],
    request_log_queue: Gauge,
    /// The filter workers' latest totals.
    filter: FilterTotals,
    /// The rule labels of `tollgate_filter_decisions_total`.
    filter_rules: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh, empty metrics.
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new();
        // Fails only for an empty list of buckets.
        let builder = builder
            .set_buckets_for_metric(Matcher::Full(REDIS_SECONDS.into()), &REDIS_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        help::describe(&recorder);
        let counter = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&Key::from_parts(name, labels), &METADATA)
        };
        let outcome = |outcome: &'static str| vec![Label::new("outcome", outcome)];
        let batches = [
            counter(SYNC_BATCHES, outcome("applied")),
            counter(SYNC_BATCHES, outcome("duplicate")),
        ];
        let entries = counter(SYNC_ENTRIES, vec![]);
        let hits = counter(SYNC_HITS, vec![]);
        let expired = counter(SYNC_EXPIRED, vec![]);
        let usage_batches = [
            counter(USAGE_BATCHES, outcome("applied")),
            counter(USAGE_BATCHES, outcome("duplicate")),
        ];
        let usage_records = counter(USAGE_RECORDS, vec![]);
        let request_log = LogOutcome::ALL.map(|o| counter(REQUEST_LOG_ENTRIES, outcome(o.label())));
        let request_log_queue =
            recorder.register_gauge(&Key::from_static_name(REQUEST_LOG_QUEUE), &METADATA);
        let nodes = recorder.register_gauge(&Key::from_static_name(NODES), &METADATA);
        let redis_seconds =
            recorder.register_histogram(&Key::from_static_name(REDIS_SECONDS), &METADATA);
        let handle = recorder.handle();
        Metrics {
            recorder,
            handle,
            decisions: RwLock::new(HashMap::new()),
            batches,
            entries,
            hits,
            expired,
            nodes,
            redis_seconds,
            updates: AtomicU64::new(0),
            usage_batches,
            usage_records,
            request_log,
            request_log_queue,
            filter: FilterTotals::default(),
            filter_rules: Default::default(),
        }
    }

    /// Counts what a filter worker's `report`, received at `now` (Unix seconds), adds to its
    /// previous one.
    pub fn filter_report(&self, report: &tollgate_filter::protocol::StatsReport, now: u64) {
        let increments = self.filter.increments(report, now);
        let mut known = self
            .filter_rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (rule, outcome, added) in increments.rules {
            let rule = filter::rule_label(&mut known, &rule);
            self.counter(FILTER_DECISIONS, rule, outcome)
                .increment(added);
        }
        for (name, added) in increments.counters {
            let key = Key::from_parts(FILTER_EVENTS, vec![Label::new("counter", name)]);
            self.recorder
                .register_counter(&key, &METADATA)
                .increment(added);
        }
    }

    /// Counts one decision of `rule`.
    pub fn decision(&self, rule: &str, admitted: bool) {
        let pick = |[yes, no]: &[Counter; 2]| if admitted { yes.clone() } else { no.clone() };
        let known = self
            .decisions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(rule)
            .map(pick);
        let counter = match known {
            Some(counter) => counter,
            None => {
                let mut decisions = self
                    .decisions
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                // Another request may have added `rule` since the read.
                let room = decisions.contains_key(rule) || decisions.len() < MAX_RULE_LABELS;
                let rule = if room { rule } else { OTHER_RULE };
                let counters = decisions.entry(rule.to_owned()).or_insert_with(|| {
                    [
                        self.counter(DECISIONS, rule, "admitted"),
                        self.counter(DECISIONS, rule, "refused"),
                    ]
                });
                pick(counters)
            }
        };
        counter.increment(1);
        self.upkeep_after(1);
    }

    /// Counts one admitted decision of `rule` given back because another check of the same
    /// request was refused (`outcome="refunded"`; it stays counted as admitted too).
    pub fn refunded(&self, rule: &str) {
        let known = self
            .decisions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(rule);
        let rule = if known { rule } else { OTHER_RULE };
        self.counter(DECISIONS, rule, "refunded").increment(1);
    }

    /// Counts `updates` store updates, and runs the recorder's upkeep every [`UPKEEP_EVERY`]:
    /// histogram samples wait in a queue until an upkeep (or a scrape) folds them into the
    /// buckets, so without it a sidecar nobody scrapes would keep every Redis round trip's
    /// sample (two or more per update) for ever.
    fn upkeep_after(&self, updates: u64) {
        let before = self.updates.fetch_add(updates, Ordering::Relaxed);
        if before / UPKEEP_EVERY != before.wrapping_add(updates) / UPKEEP_EVERY {
            self.handle.run_upkeep();
        }
    }

    fn counter(&self, name: &'static str, rule: &str, outcome: &'static str) -> Counter {
        let labels = vec![
            Label::new("rule", rule.to_owned()),
            Label::new("outcome", outcome),
        ];
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    /// Counts one failed request with the stable error code `kind`.
    pub fn error(&self, kind: &'static str) {
        let key = Key::from_parts(ERRORS, vec![Label::new("kind", kind)]);
        self.recorder.register_counter(&key, &METADATA).increment(1);
    }

    /// Counts one applied `global` sync batch and what it carried.
    pub fn sync_applied(&self, counts: SyncCounts) {
        let [applied, _] = &self.batches;
        applied.increment(1);
        self.entries.increment(counts.entries);
        self.hits.increment(counts.hits);
        self.expired.increment(counts.expired);
        self.upkeep_after(counts.entries.saturating_add(1));
    }

    /// Counts one duplicate `global` sync batch (nothing of it was counted again).
    pub fn sync_duplicate(&self) {
        let [_, duplicate] = &self.batches;
        duplicate.increment(1);
        self.upkeep_after(1);
    }

    /// A counter `name` (described by `help`) in this registry, for parts that keep their own
    /// (the usage log).
    pub fn own_counter(&self, name: &'static str, help: &'static str) -> Counter {
        self.recorder
            .describe_counter(name.into(), None, SharedString::const_str(help));
        self.recorder
            .register_counter(&Key::from_static_name(name), &METADATA)
    }

    /// A counter `name{label="value"}` (described by `help`) in this registry, for parts
    /// that keep their own (billing).
    pub fn own_labeled_counter(
        &self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        value: &'static str,
    ) -> Counter {
        self.recorder
            .describe_counter(name.into(), None, SharedString::const_str(help));
        self.recorder.register_counter(
            &Key::from_parts(name, vec![Label::new(label, value)]),
            &METADATA,
        )
    }

    /// A gauge `name` (described by `help`) in this registry.
    pub fn own_gauge(&self, name: &'static str, help: &'static str) -> Gauge {
        self.recorder
            .describe_gauge(name.into(), None, SharedString::const_str(help));
        self.recorder
            .register_gauge(&Key::from_static_name(name), &METADATA)
    }

    /// Counts one usage batch of which `records` were counted now; `duplicate`: none was
    /// (every tenant of it was applied before).
    pub fn usage_batch(&self, records: u64, duplicate: bool) {
        let [applied, again] = &self.usage_batches;
        if duplicate {
            again.increment(1);
        } else {
            applied.increment(1);
        }
        self.usage_records.increment(records);
    }

    /// Counts `entries` request log entries with `outcome`.
    pub fn request_log(&self, outcome: LogOutcome, entries: u64) {
        if let Some(counter) = self.request_log.get(outcome as usize) {
            counter.increment(entries);
        }
    }

    /// Sets the number of request log entries waiting to be written.
    pub fn request_log_queue(&self, entries: u64) {
        // Queue lengths are far below 2^53, so the conversion is exact.
        self.request_log_queue.set(entries as f64);
    }

    /// Sets the number of nodes that synced lately.
    pub fn nodes(&self, nodes: u64) {
        // Node counts are far below 2^53, so the conversion is exact.
        self.nodes.set(nodes as f64);
    }

    /// A handle to `tollgate_redis_seconds`, for [`crate::storage::RedisStore::with_latency`].
    pub fn redis_seconds(&self) -> Histogram {
        self.redis_seconds.clone()
    }

    /// Counts one run of the background job `job`, at `now_seconds` (Unix) when `ok`.
    pub fn job_run(&self, job: &'static str, ok: bool, now_seconds: f64) {
        let outcome = if ok { "ok" } else { "failed" };
        let labels = vec![Label::new("job", job), Label::new("outcome", outcome)];
        let key = Key::from_parts(JOB_RUNS, labels);
        self.recorder.register_counter(&key, &METADATA).increment(1);
        if ok {
            let key = Key::from_parts(JOB_LAST_SUCCESS, vec![Label::new("job", job)]);
            self.recorder
                .register_gauge(&key, &METADATA)
                .set(now_seconds);
        }
    }

    /// Sets `tollgate_job_up{job}`.
    pub fn job_up(&self, job: &'static str, up: bool) {
        let key = Key::from_parts(JOB_UP, vec![Label::new("job", job)]);
        let value = if up { 1.0 } else { 0.0 };
        self.recorder.register_gauge(&key, &METADATA).set(value);
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

#[cfg(test)]
mod tests;
