//! `strict` checks in batches, on hosts that switch contexts (Envoy).
//!
//! One call per request costs the proxy a whole HTTP exchange per request (on one Envoy
//! worker that halves the strict throughput). Where the host lets one context resume another
//! request, a worker's strict requests instead wait in the [`Batcher`] and the root context
//! sends them, many per call:
//!
//! - a request that asks wakes the root context up through the host (a shared queue whose
//!   readiness the host reports to the root soon after, in the same event loop — no timer);
//! - the root sends what waits, up to [`MAX_CHECK_BATCH`] checks per call, while fewer than
//!   [`MAX_CALLS`] calls are out; what waits beyond that goes as soon as a call returns;
//! - a call's answer comes back to the root (which outlives every request) and each request
//!   it carried is concluded and resumed or answered through its own context.
//!
//! Light traffic thus pays one round trip and one wake-up per request; under load a request
//! waits at most for one of the calls out to return, and one call carries many decisions.
//! Hosts that do not switch contexts (nginx's ngx_wasm_module) never get here: there each
//! request makes its own call ([`super::strict`]).

use std::cell::RefCell;
use std::rc::Rc;

use hashbrown::HashMap;

use super::host::{ContextId, Host};
use super::sidecar::call;
use super::strict::{Stream, body, read_answers};
use crate::Nanos;
use crate::policy::Sidecar;
use crate::protocol::{CheckRequest, CheckResponse, MAX_CHECK_BATCH};

/// Calls a worker keeps out at once; beyond that, requests wait for one to return.
pub const MAX_CALLS: usize = 4;

/// A request waiting for its checks' answers.
pub struct Waiting {
    pub context_id: ContextId,
    pub stream: Rc<RefCell<Stream>>,
    /// When its checks are given up (the sidecar's timeout after the request asked).
    deadline: Nanos,
}

/// A request whose answers came: what to conclude it with.
pub struct Settled {
    pub waiting: Waiting,
    /// One per check, in order; `None` for a check whose call failed.
    pub answers: Vec<Option<CheckResponse>>,
}

/// A worker's strict requests waiting for the sidecar, and its calls out.
pub struct Batcher {
    /// The host's wake-up queue (a shared queue the root context registered).
    wakeup: u32,
    /// A wake-up is on its way to the root.
    woken: bool,
    /// Requests waiting for a call, oldest first.
    queue: Vec<Waiting>,
    /// The calls out and the requests each carries, in the call's order.
    out: HashMap<u32, Vec<Waiting>>,
}

impl Batcher {
    /// A batcher waking the root through the host's queue `wakeup`.
    pub fn new(wakeup: u32) -> Self {
        Batcher {
            wakeup,
            woken: false,
            queue: Vec::new(),
            out: HashMap::new(),
        }
    }

    /// Holds the request in `context_id` (its checks in its stream) until the root sends
    /// them; false, holding nothing, when the host would not wake the root (the request
    /// then makes its own call).
    pub fn hold(
        &mut self,
        host: &mut impl Host,
        sidecar: &Sidecar,
        context_id: ContextId,
        stream: &Rc<RefCell<Stream>>,
        now: Nanos,
    ) -> bool {
        if !self.woken {
            if !host.wake_root(self.wakeup) {
                return false;
            }
            self.woken = true;
        }
        self.queue.push(Waiting {
            context_id,
            stream: Rc::clone(stream),
            deadline: now.saturating_add(sidecar.timeout_ms.saturating_mul(1_000_000)),
        });
        true
    }

    /// The root woke up (in its callback): the wake-up is consumed.
    pub fn woke(&mut self, host: &mut impl Host) {
        host.take_wakeups(self.wakeup);
        self.woken = false;
    }

    /// The request in `context_id` ended: it no longer waits for a call (one out for it is
    /// answered into nothing).
    pub fn forget(&mut self, context_id: ContextId) {
        self.queue.retain(|w| w.context_id != context_id);
    }

    /// Whether a request waits for a call.
    pub fn waiting(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Sends what waits, many checks per call, while fewer than [`MAX_CALLS`] calls are out
    /// (from the root context: the answers come back there). Returns the requests that cannot
    /// be asked (the host refused the call, or their time is up), to conclude as failed.
    pub fn send(&mut self, host: &mut impl Host, sidecar: &Sidecar, now: Nanos) -> Vec<Settled> {
        let mut failed = Vec::new();
        while !self.queue.is_empty() && self.out.len() < MAX_CALLS {
            let batch = self.next_batch();
            let mut checks: Vec<CheckRequest> = Vec::new();
            for waiting in &batch {
                if let Ok(stream) = waiting.stream.try_borrow() {
                    checks.extend(stream.checks.requests(waiting.context_id));
                }
            }
            let deadline = batch.iter().map(|w| w.deadline).min().unwrap_or(now);
            let left = deadline.saturating_sub(now) / 1_000_000;
            let token = if left == 0 || checks.is_empty() {
                None
            } else {
                body(&checks).and_then(|(path, body)| call(host, sidecar, path, &body, left))
            };
            match token {
                Some(token) => {
                    self.out.insert(token, batch);
                }
                None => failed.extend(batch.into_iter().map(|waiting| {
                    let n = waiting.stream.try_borrow().map_or(0, |s| s.checks.len());
                    Settled {
                        waiting,
                        answers: vec![None; n],
                    }
                })),
            }
        }
        failed
    }

    /// The oldest waiting requests whose checks fit in one call (at least one request).
    fn next_batch(&mut self) -> Vec<Waiting> {
        let mut checks = 0;
        let mut take = 0;
        for waiting in &self.queue {
            let n = waiting.stream.try_borrow().map_or(0, |s| s.checks.len());
            if take > 0 && checks + n > MAX_CHECK_BATCH {
                break;
            }
            checks += n;
            take += 1;
        }
        self.queue.drain(..take).collect()
    }

    /// Call `token` answered (in the root's call-response callback): each request it
    /// carried with its answers, or `None` when the call is not one of the batcher's.
    pub fn answered(
        &mut self,
        host: &mut impl Host,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) -> Option<Vec<Settled>> {
        let batch = self.out.remove(&token)?;
        let sizes: Vec<usize> = batch
            .iter()
            .map(|w| w.stream.try_borrow().map_or(0, |s| s.checks.len()))
            .collect();
        let mut answers =
            read_answers(host, sizes.iter().sum(), num_headers, body_size).into_iter();
        Some(
            batch
                .into_iter()
                .zip(sizes)
                .map(|(waiting, n)| Settled {
                    waiting,
                    answers: answers.by_ref().take(n).collect(),
                })
                .collect(),
        )
    }
}
