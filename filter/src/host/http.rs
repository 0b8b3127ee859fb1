//! One HTTP request: facts in, verdict out, headers on the way back.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use super::abi;
use super::facts::{self, RequestHeaders};
use super::root::Worker;
use super::sidecar::Checks;
use super::{now, store::HostShared};
use crate::decision::{self, Facts, Verdict};
use crate::engine::Ask;
use crate::headers::{self, HeaderList, RuleStatus};
use crate::policy::Scope;
use crate::reply::{self, Refusal};
use crate::{Nanos, SECOND};

/// An HTTP context.
pub struct Request {
    context_id: u32,
    worker: Rc<RefCell<Worker>>,
    /// RateLimit headers for the response.
    headers: HeaderList,
    /// A local reply was sent: the response already carries the headers.
    replied: bool,
    /// `strict` rules' sidecar calls in flight.
    checks: Checks,
}

impl Request {
    pub fn new(context_id: u32, worker: Rc<RefCell<Worker>>) -> Self {
        Request {
            context_id,
            worker,
            headers: HeaderList::new(),
            replied: false,
            checks: Checks::default(),
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
        if !self.checks.answer(token_id, num_headers, body_size) || !self.checks.done() {
            return;
        }
        let shared = Rc::clone(&self.worker);
        let Ok(mut worker) = shared.try_borrow_mut() else {
            abi::resume_request(self.context_id);
            return;
        };
        let now = now();
        let verdict = self.checks.conclude(&mut worker, now);
        let action = self.act(&mut worker, verdict, now);
        drop(worker);
        if let Action::Continue = action {
            // Through the raw ABI: the SDK's wrapper panics if the stream is already gone.
            abi::resume_request(self.context_id);
        }
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let shared = Rc::clone(&self.worker);
        let Ok(mut worker) = shared.try_borrow_mut() else {
            return Action::Continue;
        };
        let now = now();
        let verdict = decide(&mut worker, now);
        if let (false, Some(sidecar)) = (worker.decision.pending.is_empty(), &worker.policy.sidecar)
        {
            self.checks = Checks::start(&worker.decision, sidecar);
            if !self.checks.done() {
                return Action::Pause;
            }
            // Every dispatch failed: decide now, in this callback.
            let verdict = self.checks.conclude(&mut worker, now);
            return self.act(&mut worker, verdict, now);
        }
        self.act(&mut worker, verdict, now)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if !self.replied {
            for (name, value) in &self.headers {
                let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value);
            }
        }
        Action::Continue
    }
}

impl Request {
    /// Headers, stats and the verdict's action (reply, pause or continue).
    fn act(&mut self, worker: &mut Worker, verdict: Verdict, now: Nanos) -> Action {
        render_headers(worker, now, &mut self.headers);
        count(worker, verdict);
        if matches!(verdict, Verdict::Admit | Verdict::Delay(_)) {
            record_global(worker, now);
        }
        match verdict {
            Verdict::Admit => Action::Continue,
            Verdict::Delay(delay) => {
                worker.enqueue(now.saturating_add(delay), self.context_id, now);
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
                self.local_reply(429, content_type, &body, Some(retry_after));
                Action::Pause
            }
            Verdict::Unavailable(index) => {
                let name = worker
                    .policy
                    .rules
                    .get(index)
                    .map_or("", |r| r.name.as_str());
                let (content_type, body) = reply::unavailable(worker.policy.error_format, name);
                self.local_reply(503, content_type, &body, None);
                Action::Pause
            }
        }
    }

    fn local_reply(
        &mut self,
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
        self.replied =
            hostcalls::send_http_response(status, headers, Some(body.as_bytes())).is_ok();
    }
}

/// Gathers what the policy needs about the request and decides it.
fn decide(worker: &mut Worker, now: Nanos) -> Verdict {
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

/// Counts the admitted request's `global` permits for the next sync batch.
fn record_global(worker: &mut Worker, now: Nanos) {
    let Worker {
        decision,
        sync,
        policy,
        ..
    } = worker;
    let Some(sync) = sync.as_mut() else {
        return;
    };
    for result in &decision.results {
        let global = policy
            .rules
            .get(result.rule)
            .is_some_and(|r| r.scope == Scope::Global);
        if global && result.outcome.admitted && !result.cached_only {
            let ask = Ask {
                quota: result.configured,
                ..result.ask
            };
            sync.record(result.rule, &ask, ask.cost, now);
        }
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
