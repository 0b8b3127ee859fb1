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
    /// The checks `decision` left pending, with the local results they complete; not sent.
    pub fn new(decision: &Decision) -> Checks {
        Checks {
            local: decision.results.clone(),
            pending: decision.pending.clone(),
            call: None,
        }
    }

    /// How many checks wait for the sidecar.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no check waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The checks as the sidecar takes them: several of one request (the one in
    /// `context_id`) form a group, so that one refused, the others' permits go back on the
    /// sidecar.
    pub fn requests(&self, context_id: u32) -> impl Iterator<Item = CheckRequest> + '_ {
        let group = (self.pending.len() > 1).then_some(context_id);
        self.pending.iter().map(move |p| CheckRequest {
            group,
            ..p.request.clone()
        })
    }

    /// Sends the checks for the request in `context_id`, one call from its own callback;
    /// [`Checks::call`] stays `None` when the host refused the call.
    pub fn send(&mut self, host: &mut impl Host, sidecar: &Sidecar, context_id: u32) {
        let requests: Vec<CheckRequest> = self.requests(context_id).collect();
        self.call = body(&requests)
            .and_then(|(path, body)| call(host, sidecar, path, &body, sidecar.timeout_ms));
    }

    /// The sidecar's answers (`None`: the call failed) for each check, in order.
    pub fn read(
        &self,
        host: &mut impl Host,
        num_headers: usize,
        body_size: usize,
    ) -> Vec<Option<CheckResponse>> {
        read_answers(host, self.pending.len(), num_headers, body_size)
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

/// The path and JSON body of a call carrying `checks`: `POST /v1/check` for one,
/// `POST /v1/checks` for several; `None` if they do not serialize.
pub fn body(checks: &[CheckRequest]) -> Option<(&'static str, Vec<u8>)> {
    match checks {
        [one] => serde_json::to_vec(one).ok().map(|b| (CHECK_PATH, b)),
        several => serde_json::to_vec(&CheckBatch {
            checks: several.to_vec(),
        })
        .ok()
        .map(|b| (CHECKS_PATH, b)),
    }
}

/// The answers to a call that carried `n` checks, read in its call-response callback: one
/// per check, in order, each `None` when the call failed (or answered the wrong number).
pub fn read_answers(
    host: &mut impl Host,
    n: usize,
    num_headers: usize,
    body_size: usize,
) -> Vec<Option<CheckResponse>> {
    if n == 1 {
        return vec![read_response::<CheckResponse>(host, num_headers, body_size)];
    }
    match read_response::<CheckBatchResponse>(host, num_headers, body_size) {
        Some(batch) if batch.results.len() == n => batch.results.into_iter().map(Some).collect(),
        _ => vec![None; n],
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
