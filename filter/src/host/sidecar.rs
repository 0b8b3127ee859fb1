//! `strict` rules: one sidecar call per pending rule (`POST /v1/check`), the request paused
//! until every answer is in, then one verdict from the local and the sidecar results.

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};
use serde::de::DeserializeOwned;

use super::root::Worker;
use super::store::HostShared;
use crate::Nanos;
use crate::decision::{self, Decision, PendingCheck, RuleResult, Verdict};
use crate::engine::Outcome;
use crate::policy::{FailureMode, Sidecar};
use crate::protocol::{CHECK_PATH, CheckResponse};

/// The sidecar's answer to one call, so far.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Waiting,
    Got(CheckResponse),
    /// Dispatch failed, timeout, non-200 status or a body that is not a `CheckResponse`.
    Failed,
}

#[derive(Debug)]
struct Call {
    token: Option<u32>,
    check: PendingCheck,
    answer: Answer,
}

/// One request's sidecar calls in flight, with the local results they complete.
#[derive(Debug, Default)]
pub struct Checks {
    local: Vec<RuleResult>,
    calls: Vec<Call>,
}

impl Checks {
    /// Dispatches one call per pending check of `decision`. Holds no borrow of the worker.
    pub fn start(decision: &Decision, sidecar: &Sidecar) -> Checks {
        let calls = decision
            .pending
            .iter()
            .map(|check| {
                let token = serde_json::to_vec(&check.request)
                    .ok()
                    .and_then(|body| call(sidecar, CHECK_PATH, &body));
                Call {
                    token,
                    check: check.clone(),
                    answer: if token.is_some() {
                        Answer::Waiting
                    } else {
                        Answer::Failed
                    },
                }
            })
            .collect();
        Checks {
            local: decision.results.clone(),
            calls,
        }
    }

    /// Whether calls were started and every one has answered (or failed).
    pub fn done(&self) -> bool {
        !self.calls.is_empty()
            && self
                .calls
                .iter()
                .all(|c| !matches!(c.answer, Answer::Waiting))
    }

    /// Records the response of call `token` (headers and body are read from the host).
    /// Returns false if the token is not one of this request's.
    pub fn answer(&mut self, token: u32, num_headers: usize, body_size: usize) -> bool {
        let Some(call) = self.calls.iter_mut().find(|c| c.token == Some(token)) else {
            return false;
        };
        call.answer = read_response(num_headers, body_size).map_or(Answer::Failed, Answer::Got);
        true
    }

    /// Folds the answers into `worker.decision` (results in policy order, verdict) and
    /// returns the verdict; on a refusal the local rules' permits are given back.
    pub fn conclude(&mut self, worker: &mut Worker, now: Nanos) -> Verdict {
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
                    worker
                        .limiter
                        .refund(&mut HostShared, &result.ask, &result.outcome, now);
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

/// POSTs the JSON `body` to the sidecar's `path`; the call's token, or `None` if the host refused.
pub fn call(sidecar: &Sidecar, path: &str, body: &[u8]) -> Option<u32> {
    hostcalls::dispatch_http_call(
        &sidecar.cluster,
        vec![
            (":method", "POST"),
            (":path", path),
            (":authority", &sidecar.authority),
            ("content-type", "application/json"),
        ],
        Some(body),
        vec![],
        Duration::from_millis(sidecar.timeout_ms),
    )
    .ok()
}

/// The current call response as a `T` (`CheckResponse`, `SyncResponse`), or `None` (no headers
/// on a timeout or a failed connection, a status other than 200, or a body that does not parse). The headers
/// are only read when there are some: the SDK's getters panic on statuses other than
/// `Ok`/`NotFound`, which a host may return for a call that got no response.
pub fn read_response<T: DeserializeOwned>(num_headers: usize, body_size: usize) -> Option<T> {
    if num_headers == 0 {
        return None;
    }
    let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()?;
    if status != "200" {
        return None;
    }
    let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
        .ok()
        .flatten()?;
    serde_json::from_slice(&body).ok()
}
