//! `strict` rules: the request pauses while the sidecar decides its pending rules, then one
//! verdict comes from the local and the sidecar results ([`crate::decision::fold`]).
//!
//! Each request makes its own call, from its own callback (`POST /v1/check` for one rule,
//! `POST /v1/checks` with the request's rules as one group for several), so its answer comes
//! back to that request's context and the request is resumed or answered there. No request
//! waits behind another's call, and nothing is resumed from another context's callback
//! (which nginx's ngx_wasm_module cannot do: it resumes whichever request is current).

use super::Worker;
use super::host::{Host, Shared};
use super::sidecar::{call, read_response};
use super::usage_out::Meter;
use crate::Nanos;
use crate::decision::{self, Decision, PendingCheck, RuleResult, Verdict};
use crate::engine::Outcome;
use crate::headers::HeaderList;
use crate::policy::{FailureMode, Sidecar};
use crate::protocol::{
    CHECK_PATH, CHECKS_PATH, CheckBatch, CheckBatchResponse, CheckRequest, CheckResponse,
};

/// One request's checks, with the local results they complete.
#[derive(Debug, Default)]
pub struct Checks {
    local: Vec<RuleResult>,
    pending: Vec<PendingCheck>,
    /// The token of the request's call out, if any.
    pub call: Option<u32>,
}

/// A request's state across its callbacks: the response headers to add, its strict checks
/// and its meter.
#[derive(Debug)]
pub struct Stream {
    /// The HTTP context.
    pub context_id: u32,
    /// RateLimit headers for the response.
    pub headers: HeaderList,
    /// A local reply was sent: the response already carries the headers.
    pub replied: bool,
    /// `strict` checks waiting for the sidecar.
    pub checks: Checks,
    /// What the request used, when usage is metered and the tenant is known.
    pub meter: Option<Meter>,
}

impl Stream {
    /// A request's state.
    pub fn new(context_id: u32) -> Self {
        Stream {
            context_id,
            headers: HeaderList::new(),
            replied: false,
            checks: Checks::default(),
            meter: None,
        }
    }

    /// Answers the request itself: `status`, its RateLimit headers, `content_type`, `body`
    /// and `Retry-After` when given; notes the status for metering.
    pub fn reply(
        &mut self,
        host: &mut impl Host,
        status: u32,
        content_type: &str,
        body: &str,
        retry_after: Option<u64>,
    ) {
        let retry = retry_after.map(|s| s.to_string());
        let mut headers: Vec<(&str, &str)> =
            self.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        headers.push(("content-type", content_type));
        if let Some(retry) = retry.as_deref() {
            headers.push(("retry-after", retry));
        }
        self.replied = host.send_reply(self.context_id, status, &headers, body.as_bytes());
        if self.replied
            && let Some(meter) = self.meter.as_mut()
        {
            meter.status = u16::try_from(status).unwrap_or(0);
        }
    }
}

impl Checks {
    /// The checks `decision` left pending, sent for the request in `context_id` (the group
    /// id of several checks). `call` is `None` when the host refused the call.
    pub fn send(
        host: &mut impl Host,
        sidecar: &Sidecar,
        context_id: u32,
        decision: &Decision,
    ) -> Checks {
        let mut checks = Checks {
            local: decision.results.clone(),
            pending: decision.pending.clone(),
            call: None,
        };
        let body = match checks.pending.as_slice() {
            [one] => serde_json::to_vec(&one.request).map(|b| (CHECK_PATH, b)),
            several => serde_json::to_vec(&CheckBatch {
                // One refused, the others' permits go back on the sidecar.
                checks: several
                    .iter()
                    .map(|p| CheckRequest {
                        group: Some(context_id),
                        ..p.request.clone()
                    })
                    .collect(),
            })
            .map(|b| (CHECKS_PATH, b)),
        };
        checks.call = body
            .ok()
            .and_then(|(path, body)| call(host, sidecar, path, &body, sidecar.timeout_ms));
        checks
    }

    /// The sidecar's answers (`None`: the call failed) for each check, in order.
    pub fn read(
        &self,
        host: &mut impl Host,
        num_headers: usize,
        body_size: usize,
    ) -> Vec<Option<CheckResponse>> {
        let n = self.pending.len();
        if n == 1 {
            return vec![read_response::<CheckResponse>(host, num_headers, body_size)];
        }
        match read_response::<CheckBatchResponse>(host, num_headers, body_size) {
            Some(batch) if batch.results.len() == n => {
                batch.results.into_iter().map(Some).collect()
            }
            _ => vec![None; n],
        }
    }

    /// Folds `answers` (one per check, `None`: failed) into `worker.decision` (results in
    /// policy order, verdict) and returns the verdict; on a refusal the local rules' permits
    /// are given back.
    pub fn conclude(
        self,
        answers: &[Option<CheckResponse>],
        worker: &mut Worker,
        host: &mut impl Host,
        now: Nanos,
    ) -> Verdict {
        let mut results = self.local;
        let mut unavailable = None;
        for (index, check) in self.pending.into_iter().enumerate() {
            let rule = check.rule;
            let shadow = worker.policy.rules.get(rule).is_some_and(|r| r.shadow);
            let Some(Some(response)) = answers.get(index) else {
                if let Some(counter) = worker.counters.get_mut(rule) {
                    counter.sidecar_failures += 1;
                }
                if worker.policy.failure_mode == FailureMode::Closed && !shadow {
                    unavailable.get_or_insert(rule);
                }
                continue;
            };
            results.push(RuleResult {
                rule,
                ask: check.ask,
                configured: check.ask.quota,
                outcome: outcome(response, now),
                refused: !response.admitted && !shadow,
                cached_only: false,
                from_allowance: false,
            });
        }
        results.sort_by_key(|r| r.rule);
        let verdict = decision::fold(
            &mut worker.limiter,
            &mut Shared(&mut *host),
            &results,
            unavailable,
            now,
        );
        worker.decision.results = results;
        worker.decision.pending.clear();
        worker.decision.verdict = verdict;
        verdict
    }
}

/// The sidecar's answer as a local rule's outcome.
fn outcome(response: &CheckResponse, now: Nanos) -> Outcome {
    Outcome {
        admitted: response.admitted,
        remaining: response.remaining,
        reset: now.saturating_add(response.reset_after_ns),
        retry_at: now.saturating_add(response.retry_after_ns),
        delay: if response.admitted {
            response.delay_ns
        } else {
            0
        },
        ..Outcome::default()
    }
}
