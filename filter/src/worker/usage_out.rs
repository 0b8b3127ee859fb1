//! Usage metering: what each request of a known tenant used (`Meter`, filled along the
//! request's callbacks), added per worker into a bounded [`UsageBuffer`] in `on_log`, and
//! sent to the sidecar (`POST /v1/usage`) every `usage.interval_ms` or as soon as a batch is
//! full. With `usage.request_log` on, each request also becomes one `RequestLogEntry` in the
//! same batches.
//!
//! Per request, metering adds one host call (the response status, from `:status`; not even
//! that for the filter's own replies) and one clock read in `on_log`, and allocates nothing
//! (labels are indices into tables made from the configuration; the aggregate is found by a
//! borrowed key) unless the request log is on.
//!
//! Batches are sent exactly once the way `global` syncs are: `(sender, seq)` names a batch, at
//! most one is out, and one that got no answer is sent again byte for byte (its JSON is kept)
//! before anything newer, so a sidecar restart loses nothing (the sidecar applies a `seq`
//! once). While the sidecar is gone, requests keep adding into the buffer; what no longer fits
//! is counted in `wasmcustom.tollgate.usage.dropped` (`…usage.log_dropped` for the request log)
//! and logged, never lost silently.

use log::warn;

use super::host::Host;
use super::sidecar::{call, read_response};
use crate::decision::Decision;
use crate::policy::{PlanId, Policy, Sidecar};
use crate::usage::{
    MAX_LOG_ENTRIES, MAX_USAGE_RECORDS, RequestUsage, USAGE_PATH, UsageBuffer, UsageResponse,
    utc_date,
};
use crate::{Nanos, SECOND};

/// Records a worker holds at most while batches wait (16 full batches).
pub const MAX_HELD_RECORDS: usize = 16 * MAX_USAGE_RECORDS;

/// Request log entries a worker holds at most while batches wait (8 full batches, a few MB).
pub const MAX_HELD_LOG_ENTRIES: usize = 8 * MAX_LOG_ENTRIES;

/// The methods an endpoint label names; any other is `OTHER`.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

/// The request's tenant: one of the configuration's (an index into [`UsageOut`]'s table, so
/// metering a request allocates nothing) or another (from a verified JWT).
#[derive(Clone, Debug)]
pub enum TenantName {
    Known(u32),
    Other(String),
}

/// What one request used, so far.
#[derive(Clone, Debug)]
pub struct Meter {
    pub tenant: TenantName,
    pub plan: Option<PlanId>,
    /// Index of the endpoint label in [`UsageOut`]'s table.
    pub endpoint: u32,
    pub start: Nanos,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// 0 until the response headers are seen.
    pub status: u16,
    pub user: Option<u64>,
}

/// Counters for the host's stats.
#[derive(Clone, Copy, Debug, Default)]
pub struct UsageStats {
    pub batches: u64,
    pub failures: u64,
    pub dropped: u64,
    pub log_dropped: u64,
}

/// A batch on its way: its JSON, kept as sent so that a retry is the same batch byte for byte,
/// and whether a call is out for it.
#[derive(Debug)]
struct InFlight {
    body: Vec<u8>,
    waiting: bool,
}

/// The labels requests are metered under, made once from the configuration.
#[derive(Debug, Default)]
struct Labels {
    /// Tenant ids of the configuration's tenants; [`TenantName::Known`] indexes this.
    tenants: Vec<String>,
    tenant_index: hashbrown::HashMap<String, u32>,
    /// Plan names by [`PlanId`].
    plans: Vec<String>,
    /// `"{method} {rule}"` and `"{method} *"`, for every method and rule:
    /// `method * (rules + 1) + rule + 1` (`+ 0`: `*`).
    endpoints: Vec<String>,
    rules: usize,
}

impl Labels {
    fn new(policy: &Policy) -> Self {
        let mut labels = Labels {
            plans: policy.plans.iter().map(|p| p.name.clone()).collect(),
            rules: policy.rules.len(),
            ..Labels::default()
        };
        for tenant in policy.tenants.values() {
            if !labels.tenant_index.contains_key(&tenant.id) {
                let index = u32::try_from(labels.tenants.len()).unwrap_or(u32::MAX);
                labels.tenant_index.insert(tenant.id.clone(), index);
                labels.tenants.push(tenant.id.clone());
            }
        }
        for method in METHODS.iter().chain(&["OTHER"]) {
            labels.endpoints.push(format!("{method} *"));
            for rule in &policy.rules {
                labels.endpoints.push(format!("{method} {}", rule.name));
            }
        }
        labels
    }

    fn tenant(&self, tenant: &str) -> TenantName {
        match self.tenant_index.get(tenant) {
            Some(&index) => TenantName::Known(index),
            None => TenantName::Other(tenant.to_owned()),
        }
    }

    /// The request's endpoint label: its method (one of the standard ones, else `OTHER`) and
    /// the name of the first applicable rule that matches on the path, else `*` — never the
    /// raw path, so the number of labels is bounded by the configuration.
    fn endpoint(&self, policy: &Policy, decision: &Decision, method: &str) -> u32 {
        let method = METHODS
            .iter()
            .position(|m| *m == method)
            .unwrap_or(METHODS.len());
        let rule = decision
            .results
            .iter()
            .map(|r| r.rule)
            .chain(decision.pending.iter().map(|p| p.rule))
            .find(|&index| {
                policy.rules.get(index).is_some_and(|rule| {
                    rule.matcher.path_prefix.is_some() || rule.matcher.path_exact.is_some()
                })
            })
            .map_or(0, |index| index + 1);
        u32::try_from(method * (self.rules + 1) + rule).unwrap_or(0)
    }
}

/// A worker's usage on its way to the sidecar.
#[derive(Debug)]
pub struct UsageOut {
    /// Records and the request log (`usage.request_log`), not sent yet.
    buffer: UsageBuffer,
    labels: Labels,
    /// The batch out (or failed, to be sent again).
    in_flight: Option<InFlight>,
    call: Option<u32>,
    interval: Nanos,
    pub next_send: Nanos,
    /// The UTC day number and its `YYYY-MM-DD`, formatted once a day.
    today: (u64, String),
    pub stats: UsageStats,
}

impl UsageOut {
    /// The plan names requests are labelled with, after the plans changed (the registry's).
    pub fn set_plans(&mut self, plans: &[crate::policy::Plan]) {
        self.labels.plans = plans.iter().map(|p| p.name.clone()).collect();
    }

    /// A worker's usage under `policy` (whose `usage` is on), identified as `sender`, sent
    /// every `interval_ms`.
    pub fn new(
        sender: u64,
        interval_ms: u64,
        request_log: bool,
        policy: &Policy,
        now: Nanos,
    ) -> Self {
        let interval = interval_ms.saturating_mul(1_000_000);
        UsageOut {
            buffer: UsageBuffer::new(
                sender,
                MAX_HELD_RECORDS,
                request_log.then_some(MAX_HELD_LOG_ENTRIES),
            ),
            labels: Labels::new(policy),
            in_flight: None,
            call: None,
            interval,
            next_send: now.saturating_add(interval),
            today: (u64::MAX, String::new()),
            stats: UsageStats::default(),
        }
    }

    /// The meter of a request of `tenant` that arrived at `now` (allocates nothing for the
    /// configuration's tenants).
    pub fn meter(
        &self,
        policy: &Policy,
        decision: &Decision,
        tenant: &str,
        plan: Option<PlanId>,
        method: &str,
        now: Nanos,
    ) -> Meter {
        Meter {
            tenant: self.labels.tenant(tenant),
            plan,
            endpoint: self.labels.endpoint(policy, decision, method),
            start: now,
            bytes_in: 0,
            bytes_out: 0,
            status: 0,
            user: None,
        }
    }

    /// Adds a finished request; returns whether a full batch is waiting (send it soon).
    pub fn record(&mut self, meter: &Meter, now: Nanos) -> bool {
        let day = now / (86_400 * SECOND);
        if self.today.0 != day {
            self.today = (day, utc_date(now));
        }
        let labels = &self.labels;
        let tenant = match &meter.tenant {
            TenantName::Known(index) => labels.tenants.get(*index as usize).map(String::as_str),
            TenantName::Other(name) => Some(name.as_str()),
        };
        let endpoint = labels.endpoints.get(meter.endpoint as usize);
        let (Some(tenant), Some(endpoint)) = (tenant, endpoint) else {
            self.stats.dropped = self.stats.dropped.saturating_add(1);
            return false;
        };
        let request = RequestUsage {
            tenant,
            plan: meter
                .plan
                .and_then(|p| labels.plans.get(p))
                .map(String::as_str),
            date: &self.today.1,
            endpoint,
            status: meter.status,
            bytes_in: meter.bytes_in,
            bytes_out: meter.bytes_out,
            latency_ms: now.saturating_sub(meter.start) / 1_000_000,
            user: meter.user,
        };
        let full = self.buffer.record(&request, meter.start / 1_000_000);
        let (dropped, log_dropped) = self.buffer.take_dropped();
        self.stats.dropped = self.stats.dropped.saturating_add(dropped);
        self.stats.log_dropped = self.stats.log_dropped.saturating_add(log_dropped);
        full
    }

    /// Whether a batch should go at `now`.
    pub fn due(&self, now: Nanos) -> bool {
        now >= self.next_send || self.buffer.full()
    }

    /// Sends the failed batch again, unchanged, or the next one, unless a call is out.
    pub fn send(&mut self, host: &mut impl Host, sidecar: &Sidecar, now: Nanos) {
        self.next_send = now.saturating_add(self.interval);
        if self.in_flight.as_ref().is_some_and(|b| b.waiting) {
            return;
        }
        let body = match self.in_flight.take() {
            Some(batch) => batch.body,
            None => match self.next_batch() {
                Some(body) => body,
                None => return,
            },
        };
        self.call = call(
            host,
            sidecar,
            USAGE_PATH,
            &body,
            sidecar.timeout_ms.max(1_000),
        );
        if self.call.is_none() {
            self.stats.failures = self.stats.failures.saturating_add(1);
        }
        self.in_flight = Some(InFlight {
            body,
            waiting: self.call.is_some(),
        });
    }

    /// The next batch's JSON, numbered; `None` when there is nothing to send.
    fn next_batch(&mut self) -> Option<Vec<u8>> {
        let batch = self.buffer.next_batch()?;
        match serde_json::to_vec(&batch) {
            Ok(body) => Some(body),
            Err(err) => {
                // Cannot happen with these types; if it did, say what was lost.
                let requests: u64 = batch.records.iter().map(|r| r.requests).sum();
                self.stats.dropped = self.stats.dropped.saturating_add(requests);
                let entries = batch.requests.len() as u64;
                self.stats.log_dropped = self.stats.log_dropped.saturating_add(entries);
                warn!(
                    "usage batch {} could not be encoded ({err}): its requests are lost",
                    batch.seq
                );
                None
            }
        }
    }

    /// The answer to call `token`; false if it is not this worker's usage call.
    pub fn answered(
        &mut self,
        host: &mut impl Host,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) -> bool {
        if self.call != Some(token) {
            return false;
        }
        self.call = None;
        if read_response::<UsageResponse>(host, num_headers, body_size).is_some() {
            self.in_flight = None;
            self.stats.batches = self.stats.batches.saturating_add(1);
        } else {
            if let Some(batch) = self.in_flight.as_mut() {
                batch.waiting = false;
            }
            self.stats.failures = self.stats.failures.saturating_add(1);
        }
        true
    }
}

/// A three-digit status from 100 to 599, else 0.
pub fn parse_status(bytes: &[u8]) -> u16 {
    match bytes {
        [a @ b'1'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9'] => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => 0,
    }
}
