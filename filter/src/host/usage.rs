//! Usage metering: what each request of a known tenant used (`Meter`, filled along the
//! request's callbacks), added per worker into a bounded [`UsageAggregate`] in `on_log`, and
//! sent to the sidecar (`POST /v1/usage`) every `usage.interval_ms` or as soon as a batch is
//! full.
//!
//! Batches are sent exactly once the way `global` syncs are: `(sender, seq)` names a batch, at
//! most one is out, and one that got no answer is sent again unchanged before anything newer,
//! so a sidecar restart loses nothing (the sidecar applies a `seq` once). While the sidecar is
//! gone, requests keep adding into the aggregate; what no longer fits is counted in
//! `wasmcustom.tollgate.usage.dropped` and logged, never lost silently.

use std::time::Duration;

use proxy_wasm::hostcalls;

use super::sidecar::read_response;
use crate::policy::Sidecar;
use crate::usage::{
    MAX_USAGE_RECORDS, RequestUsage, USAGE_PATH, UsageAggregate, UsageBatch, UsageResponse,
    utc_date,
};
use crate::{Nanos, SECOND};

/// Records a worker holds at most while batches wait (16 full batches).
pub const MAX_HELD_RECORDS: usize = 16 * MAX_USAGE_RECORDS;

/// What one request used, so far.
#[derive(Clone, Debug, Default)]
pub struct Meter {
    pub tenant: String,
    pub plan: Option<String>,
    pub endpoint: String,
    pub start: Nanos,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub status: u16,
    pub user: Option<u64>,
}

/// Counters for the host's stats.
#[derive(Clone, Copy, Debug, Default)]
pub struct UsageStats {
    pub batches: u64,
    pub failures: u64,
    pub dropped: u64,
}

/// A worker's usage on its way to the sidecar.
#[derive(Debug)]
pub struct UsageOut {
    aggregate: UsageAggregate,
    sender: u64,
    next_seq: u64,
    /// The batch out (or failed, to be sent again) and whether a call is out for it.
    in_flight: Option<(UsageBatch, bool)>,
    call: Option<u32>,
    interval: Nanos,
    pub next_send: Nanos,
    /// The UTC day number and its `YYYY-MM-DD`, formatted once a day.
    today: (u64, String),
    pub stats: UsageStats,
}

impl UsageOut {
    /// A worker's usage, identified as `sender`, sent every `interval_ms`.
    pub fn new(sender: u64, interval_ms: u64, now: Nanos) -> Self {
        let interval = interval_ms.saturating_mul(1_000_000);
        UsageOut {
            aggregate: UsageAggregate::new(MAX_HELD_RECORDS),
            sender,
            next_seq: 1,
            in_flight: None,
            call: None,
            interval,
            next_send: now.saturating_add(interval),
            today: (u64::MAX, String::new()),
            stats: UsageStats::default(),
        }
    }

    /// Adds a finished request; returns whether a full batch is waiting (send it soon).
    pub fn record(&mut self, meter: &Meter, now: Nanos) -> bool {
        let day = now / (86_400 * SECOND);
        if self.today.0 != day {
            self.today = (day, utc_date(now));
        }
        let latency_ms = now.saturating_sub(meter.start) / 1_000_000;
        self.aggregate.record(&RequestUsage {
            tenant: &meter.tenant,
            plan: meter.plan.as_deref(),
            date: &self.today.1,
            endpoint: &meter.endpoint,
            status: meter.status,
            bytes_in: meter.bytes_in,
            bytes_out: meter.bytes_out,
            latency_ms,
            user: meter.user,
        });
        self.stats.dropped = self
            .stats
            .dropped
            .saturating_add(self.aggregate.take_dropped());
        self.aggregate.len() >= MAX_USAGE_RECORDS
    }

    /// Whether a batch should go at `now`.
    pub fn due(&self, now: Nanos) -> bool {
        now >= self.next_send || self.aggregate.len() >= MAX_USAGE_RECORDS
    }

    /// Sends the failed batch again, or the next one, unless a call is out.
    pub fn send(&mut self, sidecar: &Sidecar, now: Nanos) {
        self.next_send = now.saturating_add(self.interval);
        if self.in_flight.as_ref().is_some_and(|(_, waiting)| *waiting) {
            return;
        }
        let batch = match self.in_flight.take() {
            Some((batch, _)) => batch,
            None if self.aggregate.is_empty() => return,
            None => {
                let seq = self.next_seq;
                self.next_seq = self.next_seq.saturating_add(1);
                UsageBatch {
                    sender: self.sender,
                    seq,
                    records: self.aggregate.drain(MAX_USAGE_RECORDS),
                    requests: Vec::new(),
                }
            }
        };
        self.call = serde_json::to_vec(&batch).ok().and_then(|body| {
            hostcalls::dispatch_http_call(
                &sidecar.cluster,
                vec![
                    (":method", "POST"),
                    (":path", USAGE_PATH),
                    (":authority", &sidecar.authority),
                    ("content-type", "application/json"),
                ],
                Some(&body),
                vec![],
                Duration::from_millis(sidecar.timeout_ms.max(1_000)),
            )
            .ok()
        });
        if self.call.is_none() {
            self.stats.failures = self.stats.failures.saturating_add(1);
        }
        self.in_flight = Some((batch, self.call.is_some()));
    }

    /// The answer to call `token`; false if it is not this worker's usage call.
    pub fn answered(&mut self, token: u32, num_headers: usize, body_size: usize) -> bool {
        if self.call != Some(token) {
            return false;
        }
        self.call = None;
        if read_response::<UsageResponse>(num_headers, body_size).is_some() {
            self.in_flight = None;
            self.stats.batches = self.stats.batches.saturating_add(1);
        } else {
            if let Some((_, waiting)) = self.in_flight.as_mut() {
                *waiting = false;
            }
            self.stats.failures = self.stats.failures.saturating_add(1);
        }
        true
    }
}
