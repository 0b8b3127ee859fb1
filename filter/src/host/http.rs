//! One HTTP request: facts in, verdict out, headers on the way back.

use core::hash::BuildHasher;
use std::cell::RefCell;
use std::rc::Rc;

use foldhash::quality::FixedState;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use super::abi;
use super::facts::{self, RequestHeaders};
use super::root::Worker;
use super::sidecar::{self, Checks, Stream};
use super::usage::{self, Meter};
use super::{now, store::HostShared};
use crate::decision::{self, Facts, Verdict};
use crate::headers::{self, HeaderList, RuleStatus};
use crate::reply::{self, Refusal};
use crate::{Nanos, SECOND};

/// An HTTP context.
pub struct Request {
    context_id: u32,
    worker: Rc<RefCell<Worker>>,
    /// Headers, reply state and strict checks; shared with the worker while checks wait.
    stream: Rc<RefCell<Stream>>,
}

impl Request {
    pub fn new(context_id: u32, worker: Rc<RefCell<Worker>>) -> Self {
        Request {
            context_id,
            worker,
            stream: Rc::new(RefCell::new(Stream::new(context_id))),
        }
    }
}

impl Context for Request {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let shared = Rc::clone(&self.worker);
        let Ok(mut worker) = shared.try_borrow_mut() else {
            abi::resume_request(self.context_id);
            return;
        };
        let now = now();
        answer_call(&mut worker, token_id, num_headers, body_size, now);
        if worker.calls.queued() {
            // Queued checks go from the root context: wake it.
            worker.wake_soon(now);
        }
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let shared = Rc::clone(&self.worker);
        let Ok(mut worker) = shared.try_borrow_mut() else {
            return Action::Continue;
        };
        let Ok(mut stream) = self.stream.try_borrow_mut() else {
            return Action::Continue;
        };
        let now = now();
        let verdict = decide(&mut worker, now, &mut stream.meter);
        if worker.decision.pending.is_empty() || worker.policy.sidecar.is_none() {
            return act(&mut worker, &mut stream, verdict, now);
        }
        stream.checks = Checks::new(&worker.decision);
        let Some(sidecar) = worker.policy.sidecar.clone() else {
            return Action::Continue;
        };
        let failed = worker
            .calls
            .send_own(&sidecar, self.context_id, &stream.checks, now);
        for (_, index) in failed {
            stream.checks.answer(index, None);
        }
        if stream.checks.done() {
            // Every check failed to go out: decide now, in this callback.
            return settle(&mut worker, &mut stream, now);
        }
        drop(stream);
        worker
            .waiting
            .insert(self.context_id, Rc::clone(&self.stream));
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        if let Ok(mut stream) = self.stream.try_borrow_mut()
            && let Some(meter) = stream.meter.as_mut()
        {
            meter.bytes_in = meter.bytes_in.saturating_add(body_size as u64);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Ok(mut stream) = self.stream.try_borrow_mut() {
            if !stream.replied {
                for (name, value) in &stream.headers {
                    let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value);
                }
            }
            // The status of the filter's own reply is known; any other is read (the one host
            // call metering adds to a request).
            if let Some(meter) = stream.meter.as_mut()
                && meter.status == 0
            {
                meter.status = usage::response_status();
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        if let Ok(mut stream) = self.stream.try_borrow_mut()
            && let Some(meter) = stream.meter.as_mut()
        {
            meter.bytes_out = meter.bytes_out.saturating_add(body_size as u64);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let Ok(mut worker) = self.worker.try_borrow_mut() else {
            return;
        };
        // A request that ends while its checks are out: their answers are ignored.
        worker.waiting.remove(&self.context_id);
        let meter = self
            .stream
            .try_borrow_mut()
            .ok()
            .and_then(|mut s| s.meter.take());
        if let (Some(meter), Some(usage)) = (meter, worker.usage.as_mut()) {
            let now = now();
            if usage.record(&meter, now) {
                worker.wake_soon(now);
            }
        }
    }
}

/// Hands the answers of call `token` to the requests they belong to, concluding those whose
/// checks are all in; false if the call is not a strict one.
pub fn answer_call(
    worker: &mut Worker,
    token: u32,
    num_headers: usize,
    body_size: usize,
    now: Nanos,
) -> bool {
    let Some(answers) = worker.calls.answered(token, num_headers, body_size) else {
        return false;
    };
    for ((context_id, index), response) in answers {
        if let Some(stream) = sidecar::deliver(worker, context_id, index, response) {
            settle_elsewhere(worker, &stream, now);
        }
    }
    true
}

/// Sends the worker's queued strict checks (root context only); checks the host refused to
/// send fail at once (`failure_mode`), concluding their requests.
pub fn flush_checks(worker: &mut Worker, now: Nanos) {
    let Some(sidecar) = worker.policy.sidecar.clone() else {
        return;
    };
    for (context_id, index) in worker.calls.flush(&sidecar, now) {
        if let Some(stream) = sidecar::deliver(worker, context_id, index, None) {
            settle_elsewhere(worker, &stream, now);
        }
    }
}

/// Concludes a request whose checks have all answered, from a callback of any context.
pub fn settle_elsewhere(worker: &mut Worker, stream: &Rc<RefCell<Stream>>, now: Nanos) {
    let Ok(mut stream) = stream.try_borrow_mut() else {
        return;
    };
    if !abi::set_effective_context(stream.context_id) {
        return; // the request is gone
    }
    if let Action::Continue = settle(worker, &mut stream, now) {
        // Through the raw ABI: the SDK's wrapper panics if the stream is already gone.
        abi::resume_request(stream.context_id);
    }
}

/// Folds a request's strict answers into its verdict and acts on it.
fn settle(worker: &mut Worker, stream: &mut Stream, now: Nanos) -> Action {
    let mut checks = std::mem::take(&mut stream.checks);
    let verdict = checks.conclude(worker, now);
    act(worker, stream, verdict, now)
}

/// Headers, stats and the verdict's action (reply, pause or continue).
fn act(worker: &mut Worker, stream: &mut Stream, verdict: Verdict, now: Nanos) -> Action {
    render_headers(worker, now, &mut stream.headers);
    count(worker, verdict);
    record_global(
        worker,
        matches!(verdict, Verdict::Admit | Verdict::Delay(_)),
        now,
    );
    match verdict {
        Verdict::Admit => Action::Continue,
        Verdict::Delay(delay) => {
            worker.enqueue(now.saturating_add(delay), stream.context_id, now);
            Action::Pause
        }
        Verdict::Refuse(retry_after) => {
            let refused: Vec<Refusal<'_>> = worker
                .decision
                .results
                .iter()
                .filter(|r| r.refused)
                .filter_map(|r| {
                    let rule = worker.policy.rules.get(r.rule)?;
                    Some(Refusal {
                        rule: &rule.name,
                        limit: r.ask.quota.limit,
                        window_secs: rule.window.div_ceil(SECOND),
                        reset_secs: decision::seconds_until(r.outcome.reset, now),
                    })
                })
                .collect();
            let (content_type, body) =
                reply::too_many_requests(worker.policy.error_format, retry_after, &refused);
            local_reply(stream, 429, content_type, &body, Some(retry_after));
            Action::Pause
        }
        Verdict::Unavailable(index) => {
            let name = worker
                .policy
                .rules
                .get(index)
                .map_or("", |r| r.name.as_str());
            let (content_type, body) = reply::unavailable(worker.policy.error_format, name);
            local_reply(stream, 503, content_type, &body, None);
            Action::Pause
        }
    }
}

fn local_reply(
    stream: &mut Stream,
    status: u32,
    content_type: &str,
    body: &str,
    retry_after: Option<u64>,
) {
    let retry = retry_after.map(|s| s.to_string());
    let mut headers: Vec<(&str, &str)> = stream
        .headers
        .iter()
        .map(|(n, v)| (*n, v.as_str()))
        .collect();
    headers.push(("content-type", content_type));
    if let Some(retry) = retry.as_deref() {
        headers.push(("retry-after", retry));
    }
    stream.replied = hostcalls::send_http_response(status, headers, Some(body.as_bytes())).is_ok();
    if stream.replied
        && let Some(meter) = stream.meter.as_mut()
    {
        meter.status = u16::try_from(status).unwrap_or(0);
    }
}

/// Gathers what the policy needs about the request and decides it.
fn decide(worker: &mut Worker, now: Nanos, meter: &mut Option<Meter>) -> Verdict {
    worker.decision.global_share = worker.global_share(now);
    let needs = &worker.needs;
    let policy = &worker.policy;
    let headers = RequestHeaders::fetch(policy, needs);
    let path = headers
        .get(":path")
        .map_or("", |p| p.split(['?', '#']).next().unwrap_or(p));
    let client_ip = if needs.client_ip {
        facts::client_ip(policy, &headers)
    } else {
        String::new()
    };
    let api_key = match (&policy.identity.api_key_header, needs.tenant) {
        (Some(name), true) => headers.get(name),
        _ => None,
    };
    let tenant = api_key.and_then(|key| policy.tenants.get(key));
    let jwt = match &policy.identity.jwt {
        Some(config)
            if tenant.is_none() && needs.tenant && headers.get(&config.header).is_some() =>
        {
            super::jwt::verified(policy)
        }
        _ => None,
    };
    let named: Vec<(String, Option<String>)> = needs
        .headers
        .iter()
        .map(|n| (n.clone(), headers.get(n).map(str::to_owned)))
        .collect();
    let claims: Vec<(String, Option<String>)> = needs
        .claims
        .iter()
        .map(|c| (c.clone(), jwt.as_ref().and_then(|j| j.claim(c))))
        .collect();
    let facts = Facts {
        path,
        method: headers.get(":method").unwrap_or(""),
        client_ip: &client_ip,
        api_key,
        tenant: tenant
            .map(|t| t.id.as_str())
            .or(jwt.as_ref().and_then(|j| j.tenant.as_deref())),
        plan: tenant.map(|t| t.plan).or(jwt.as_ref().and_then(|j| j.plan)),
        headers: &named,
        claims: &claims,
    };
    decision::decide(
        &worker.policy,
        worker.seed,
        &mut worker.limiter,
        &mut HostShared,
        &facts,
        now,
        &mut worker.decision,
    );
    if let (Some(usage), Some(tenant)) = (worker.usage.as_ref(), facts.tenant) {
        let mut metered = usage.meter(
            &worker.policy,
            &worker.decision,
            tenant,
            facts.plan,
            facts.method,
            now,
        );
        metered.user = jwt
            .as_ref()
            .and_then(|j| j.claim("sub"))
            .map(|sub| FixedState::with_seed(worker.seed).hash_one(sub));
        *meter = Some(metered);
    }
    worker.decision.verdict
}

fn render_headers(worker: &Worker, now: Nanos, out: &mut HeaderList) {
    out.clear();
    let statuses: Vec<RuleStatus<'_>> = worker
        .decision
        .results
        .iter()
        .filter_map(|r| {
            let rule = worker.policy.rules.get(r.rule)?;
            (!rule.shadow).then(|| RuleStatus {
                name: &rule.name,
                limit: r.ask.quota.limit,
                remaining: r.outcome.remaining,
                reset_secs: decision::seconds_until(r.outcome.reset, now),
                window_secs: rule.window.div_ceil(SECOND),
                partition: r.ask.key,
            })
        })
        .collect();
    headers::render(worker.policy.headers, &statuses, now / SECOND, out);
}

/// Counts the request's `global` permits (admitted) or refusals (demand) for the next sync batch.
fn record_global(worker: &mut Worker, admitted: bool, now: Nanos) {
    if let Some(sync) = worker.sync.as_mut() {
        sync.record_decision(&worker.policy, &worker.decision.results, admitted, now);
    }
}

fn count(worker: &mut Worker, verdict: Verdict) {
    let Worker {
        decision,
        counters,
        policy,
        ..
    } = worker;
    for result in &decision.results {
        let Some(counter) = counters.get_mut(result.rule) else {
            continue;
        };
        let shadow = policy.rules.get(result.rule).is_some_and(|r| r.shadow);
        if shadow && !result.outcome.admitted && !result.cached_only {
            counter.shadow_refused += 1;
        } else if result.refused {
            counter.refused += 1;
        } else if matches!(verdict, Verdict::Admit | Verdict::Delay(_)) {
            counter.allowed += 1;
            if result.outcome.delay > 0 {
                counter.queued += 1;
            }
        }
    }
}
