//! `strict` rules: the request pauses while the sidecar decides each pending rule, then one
//! verdict comes from the local and the sidecar results.
//!
//! A worker's checks travel in batches ([`Calls`]): while fewer than [`MAX_CALLS`] calls are
//! out, a request sends its own checks at once (`POST /v1/check`); beyond that, checks queue
//! up and the root context sends them together (`POST /v1/checks`) as soon as a call returns.
//! Light traffic pays one round trip; under load one call carries many decisions, which is
//! what keeps the proxy's cost per request down. (The SDK hands an answer to the context that
//! made the call, so a call carrying other requests' checks is always made by the root, which
//! outlives every request.)

use hashbrown::HashMap;
use serde::de::DeserializeOwned;

use super::Worker;
use super::host::{Host, Shared};
use super::usage_out::Meter;
use crate::Nanos;
use crate::decision::{self, Decision, PendingCheck, RuleResult, Verdict};
use crate::engine::Outcome;
use crate::headers::HeaderList;
use crate::policy::{FailureMode, Sidecar};
use crate::protocol::{
    CHECK_PATH, CHECKS_PATH, CheckBatch, CheckBatchResponse, CheckRequest, CheckResponse,
    MAX_CHECK_BATCH, batch_end,
};

/// Calls a worker keeps out at once before checks queue up for a batch. One: under load the
/// queue then fills while the call is out and the next call carries all of it (measured:
/// one Envoy worker serves ≈ 10k strict req/s with 1, ≈ 8k with 2 or 4 — see BENCHMARKS.md).
pub const MAX_CALLS: usize = 1;

/// The sidecar's answer to one check, so far.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Waiting,
    Got(CheckResponse),
    /// Dispatch failed, timeout, non-200 status or a body that does not parse.
    Failed,
}

#[derive(Debug)]
struct Call {
    check: PendingCheck,
    answer: Answer,
}

/// One request's checks, with the local results they complete.
#[derive(Debug, Default)]
pub struct Checks {
    local: Vec<RuleResult>,
    calls: Vec<Call>,
}

/// A request's state that outlives its own callbacks: the response headers to add and its
/// strict checks (an answer may conclude the request from another context's callback).
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
}

impl Checks {
    /// The checks `decision` left pending, none answered yet.
    pub fn new(decision: &Decision) -> Checks {
        Checks {
            local: decision.results.clone(),
            calls: decision
                .pending
                .iter()
                .map(|check| Call {
                    check: check.clone(),
                    answer: Answer::Waiting,
                })
                .collect(),
        }
    }

    /// Whether there are checks and every one has answered (or failed).
    pub fn done(&self) -> bool {
        !self.calls.is_empty()
            && self
                .calls
                .iter()
                .all(|c| !matches!(c.answer, Answer::Waiting))
    }

    /// Records the answer to check `index` (`None`: it failed).
    pub fn answer(&mut self, index: usize, response: Option<CheckResponse>) {
        if let Some(call) = self.calls.get_mut(index) {
            call.answer = response.map_or(Answer::Failed, Answer::Got);
        }
    }

    /// Folds the answers into `worker.decision` (results in policy order, verdict) and
    /// returns the verdict; on a refusal the local rules' permits are given back.
    pub fn conclude(&mut self, worker: &mut Worker, host: &mut impl Host, now: Nanos) -> Verdict {
        let mut results = std::mem::take(&mut self.local);
        let mut unavailable = None;
        for call in self.calls.drain(..) {
            let index = call.check.rule;
            let shadow = worker.policy.rules.get(index).is_some_and(|r| r.shadow);
            let Answer::Got(response) = call.answer else {
                if let Some(counter) = worker.counters.get_mut(index) {
                    counter.sidecar_failures += 1;
                }
                if worker.policy.failure_mode == FailureMode::Closed && !shadow {
                    unavailable.get_or_insert(index);
                }
                continue;
            };
            let outcome = Outcome {
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
            };
            results.push(RuleResult {
                rule: index,
                ask: call.check.ask,
                configured: call.check.ask.quota,
                outcome,
                refused: !response.admitted && !shadow,
                cached_only: false,
            });
        }
        results.sort_by_key(|r| r.rule);
        let refused = results.iter().any(|r| r.refused);
        let verdict = if refused || unavailable.is_some() {
            let mut retry_at = now;
            for result in &results {
                if result.outcome.admitted && !result.cached_only {
                    worker.limiter.refund(
                        &mut Shared(&mut *host),
                        &result.ask,
                        &result.outcome,
                        now,
                    );
                }
                if result.refused {
                    retry_at = retry_at.max(result.outcome.retry_at);
                }
            }
            match unavailable {
                Some(index) if !refused => Verdict::Unavailable(index),
                _ => Verdict::Refuse(decision::seconds_until(retry_at, now).max(1)),
            }
        } else {
            let delay = results
                .iter()
                .filter(|r| r.outcome.admitted)
                .map(|r| r.outcome.delay)
                .max()
                .unwrap_or(0);
            if delay > 0 {
                Verdict::Delay(delay)
            } else {
                Verdict::Admit
            }
        };
        worker.decision.results = results;
        worker.decision.pending.clear();
        worker.decision.verdict = verdict;
        verdict
    }
}

/// Where the answers of one call go: `(context, check index)` per check, in the call's order.
type Targets = Vec<(u32, usize)>;

/// One check's answer for its `(context, check index)`; `None` when the call failed.
type Delivery = ((u32, usize), Option<CheckResponse>);

/// A check waiting for a call: `(context, check index, check, deadline)` — the deadline is
/// `timeout_ms` after the request asked, so that queueing never makes it wait longer.
type Queued = (u32, usize, CheckRequest, Nanos);

/// A worker's strict checks waiting to be sent, and its calls out.
#[derive(Debug, Default)]
pub struct Calls {
    /// Checks waiting for a call: `(context, check index, check, deadline)`.
    queue: Vec<Queued>,
    out: HashMap<u32, Targets>,
}

impl Calls {
    /// Sends the checks of the request in context `context_id` at once when fewer than
    /// [`MAX_CALLS`] calls are out (the answer comes back to that request's context, which
    /// waits for it), else queues them for [`Calls::flush`]. Returns the checks whose call the
    /// host refused.
    pub fn send_own(
        &mut self,
        host: &mut impl Host,
        sidecar: &Sidecar,
        context_id: u32,
        checks: &Checks,
        now: Nanos,
    ) -> Targets {
        let deadline = now.saturating_add(sidecar.timeout_ms.saturating_mul(1_000_000));
        // Several checks of one request travel as a group: one refused, the others' permits
        // go back on the sidecar.
        let group = (checks.calls.len() > 1).then_some(context_id);
        let own = checks
            .calls
            .iter()
            .enumerate()
            .map(|(index, call)| {
                let request = CheckRequest {
                    group,
                    ..call.check.request.clone()
                };
                (context_id, index, request, deadline)
            })
            .collect();
        if self.out.len() < MAX_CALLS {
            self.dispatch(host, sidecar, own, now)
        } else {
            self.queue.extend(own);
            Vec::new()
        }
    }

    /// Whether checks wait for a [`Calls::flush`].
    pub fn queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Sends queued checks, many per call, while fewer than [`MAX_CALLS`] calls are out.
    /// Only from the root context's callbacks: an answer goes back to the context that made
    /// the call, and the root is the one context sure to outlive it. Returns the checks whose
    /// call the host refused.
    pub fn flush(&mut self, host: &mut impl Host, sidecar: &Sidecar, now: Nanos) -> Targets {
        let mut failed = Vec::new();
        while !self.queue.is_empty() && self.out.len() < MAX_CALLS {
            let take = batch_end(&self.queue, MAX_CHECK_BATCH, |q| q.0);
            let batch: Vec<Queued> = self.queue.drain(..take).collect();
            failed.extend(self.dispatch(host, sidecar, batch, now));
        }
        failed
    }

    /// One call for `batch`, given until the earliest of its deadlines; its targets back if
    /// that has passed already or the host refused the call.
    fn dispatch(
        &mut self,
        host: &mut impl Host,
        sidecar: &Sidecar,
        batch: Vec<Queued>,
        now: Nanos,
    ) -> Targets {
        let targets: Targets = batch
            .iter()
            .map(|&(ctx, index, _, _)| (ctx, index))
            .collect();
        let deadline = batch.iter().map(|q| q.3).min().unwrap_or(now);
        let left = deadline.saturating_sub(now) / 1_000_000;
        if left == 0 {
            return targets;
        }
        let (path, body) = match batch.as_slice() {
            [(_, _, single, _)] => (CHECK_PATH, serde_json::to_vec(single)),
            _ => (
                CHECKS_PATH,
                serde_json::to_vec(&CheckBatch {
                    checks: batch
                        .into_iter()
                        .map(|(_, _, request, _)| request)
                        .collect(),
                }),
            ),
        };
        match body
            .ok()
            .and_then(|body| call(host, sidecar, path, &body, left))
        {
            Some(token) => {
                self.out.insert(token, targets);
                Vec::new()
            }
            None => targets,
        }
    }

    /// The answers to call `token`, one per check it carried (`None` for each when it failed),
    /// or nothing when the token is not one of these calls.
    pub fn answered(
        &mut self,
        host: &mut impl Host,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) -> Option<Vec<Delivery>> {
        let targets = self.out.remove(&token)?;
        let responses: Vec<Option<CheckResponse>> = if targets.len() == 1 {
            vec![read_response::<CheckResponse>(host, num_headers, body_size)]
        } else {
            match read_response::<CheckBatchResponse>(host, num_headers, body_size) {
                Some(batch) if batch.results.len() == targets.len() => {
                    batch.results.into_iter().map(Some).collect()
                }
                _ => vec![None; targets.len()],
            }
        };
        Some(targets.into_iter().zip(responses).collect())
    }
}

/// Records `response` for check `index` of the waiting request `context_id`; returns the
/// request's stream, taken out of the waiting list, once all of its checks have answered.
pub fn deliver(
    worker: &mut Worker,
    context_id: u32,
    index: usize,
    response: Option<CheckResponse>,
) -> Option<std::rc::Rc<std::cell::RefCell<Stream>>> {
    let stream = worker.waiting.get(&context_id)?;
    let done = {
        let mut stream = stream.try_borrow_mut().ok()?;
        stream.checks.answer(index, response);
        stream.checks.done()
    };
    if done {
        worker.waiting.remove(&context_id)
    } else {
        None
    }
}

/// POSTs the JSON `body` to the sidecar's `path`, given `timeout_ms`; the call's token, or
/// `None` if the host refused.
pub fn call(
    host: &mut impl Host,
    sidecar: &Sidecar,
    path: &str,
    body: &[u8],
    timeout_ms: u64,
) -> Option<u32> {
    host.call(&sidecar.cluster, &sidecar.authority, path, body, timeout_ms)
}

/// The current call response as a `T` (`CheckResponse`, `SyncResponse`), or `None` (a
/// timeout or a failed connection, a status other than 200, or a body that does not parse).
pub fn read_response<T: DeserializeOwned>(
    host: &mut impl Host,
    num_headers: usize,
    body_size: usize,
) -> Option<T> {
    let body = host.call_response(num_headers, body_size)?;
    serde_json::from_slice(&body).ok()
}
