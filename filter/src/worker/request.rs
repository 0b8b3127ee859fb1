//! One HTTP request's callbacks: facts in, verdict out, headers on the way back.

use core::hash::BuildHasher;
use foldhash::quality::FixedState;

use std::cell::RefCell;
use std::rc::Rc;

use super::Worker;
use super::batch::Settled;
use super::facts::{self, RequestHeaders};
use super::host::{Host, Shared};
use super::keys::{Gate, Keys, Who};
use super::strict::{Checks, Stream};
use super::usage_out::Meter;
use crate::decision::{self, Facts, Verdict};
use crate::headers::{self, HeaderList, RuleStatus};
use crate::policy::PlanId;
use crate::registry::table::Table;
use crate::reply::{self, Refusal};
use crate::{Nanos, SECOND};

/// What a request callback tells the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Go on with the request.
    Continue,
    /// Hold it (a reply was sent, or it waits for the sidecar or the leaky-bucket queue).
    Pause,
}

/// The request headers arrived: decide (and pause for the sidecar when `strict` rules
/// apply). `handle` is the request's stream, which the worker holds while its checks wait in
/// a batch.
pub fn on_request_headers(
    worker: &mut Worker,
    handle: &Rc<RefCell<Stream>>,
    host: &mut impl Host,
) -> Action {
    let Ok(mut stream) = handle.try_borrow_mut() else {
        return Action::Continue;
    };
    let stream = &mut *stream;
    let now = host.now();
    let verdict = match decide(worker, host, now, &mut stream.meter) {
        Ok(verdict) => verdict,
        Err(gate) => {
            super::gate::refuse(worker, host, stream, &gate, now);
            return Action::Pause;
        }
    };
    let Some(sidecar) = worker.policy.sidecar.as_ref() else {
        return act(worker, host, stream, verdict, now);
    };
    if worker.decision.pending.is_empty() {
        return act(worker, host, stream, verdict, now);
    }
    stream.checks = Checks::new(&worker.decision);
    if let Some(batcher) = worker.batcher.as_mut()
        && batcher.hold(host, sidecar, stream.context_id, handle, now)
    {
        return Action::Pause;
    }
    stream.checks.send(host, sidecar, stream.context_id);
    if stream.checks.call.is_none() {
        // The host refused the call: decide now, as for a sidecar that does not answer.
        let checks = std::mem::take(&mut stream.checks);
        let verdict = checks.conclude(&[], worker, host, now);
        return act(worker, host, stream, verdict, now);
    }
    Action::Pause
}

/// A call this request made answered: conclude and resume or answer the request, from this
/// request's own callback.
pub fn on_call_response(
    worker: &mut Worker,
    stream: &mut Stream,
    host: &mut impl Host,
    token: u32,
    num_headers: usize,
    body_size: usize,
) {
    if stream.checks.call != Some(token) {
        return;
    }
    let now = host.now();
    let checks = std::mem::take(&mut stream.checks);
    let answers = checks.read(host, num_headers, body_size);
    let verdict = checks.conclude(&answers, worker, host, now);
    // ngx_wasm_module resumes the request itself once its last call is answered (Envoy
    // leaves it paused until the filter resumes it).
    if act(worker, host, stream, verdict, now) == Action::Continue && worker.host_switches_contexts
    {
        host.resume(stream.context_id);
    }
}

/// The root context woke up (a request's checks wait in the batcher): send them.
pub fn on_wakeup(worker: &mut Worker, host: &mut impl Host) {
    if let Some(batcher) = worker.batcher.as_mut() {
        batcher.woke(host);
    }
    send_batches(worker, host);
}

/// The root's tick: requests still waiting for a call go now (a wake-up the host lost would
/// otherwise leave them waiting for good, and every later request behind them).
pub fn on_tick(worker: &mut Worker, host: &mut impl Host) {
    if worker.batcher.as_ref().is_some_and(|b| b.waiting()) {
        on_wakeup(worker, host);
    }
}

/// A call the root made answered; false when it was not a batch of strict checks. Each
/// request it carried is concluded and resumed or answered through its own context, then
/// what waits goes out.
pub fn on_batch_answer(
    worker: &mut Worker,
    host: &mut impl Host,
    token: u32,
    num_headers: usize,
    body_size: usize,
) -> bool {
    let Some(settled) = worker
        .batcher
        .as_mut()
        .and_then(|b| b.answered(host, token, num_headers, body_size))
    else {
        return false;
    };
    let now = host.now();
    for one in settled {
        settle(worker, host, one, now);
    }
    send_batches(worker, host);
    true
}

/// Sends what waits in the batcher (root context); requests it cannot ask are concluded as
/// for a sidecar that does not answer.
fn send_batches(worker: &mut Worker, host: &mut impl Host) {
    let now = host.now();
    let (Some(batcher), Some(sidecar)) = (worker.batcher.as_mut(), worker.policy.sidecar.as_ref())
    else {
        return;
    };
    if !batcher.waiting() {
        return;
    }
    for one in batcher.send(host, sidecar, now) {
        settle(worker, host, one, now);
    }
}

/// Concludes a request of a batch with its answers and resumes or answers it through its
/// own context (skipped if the request is gone: its permits are still settled).
fn settle(worker: &mut Worker, host: &mut impl Host, one: Settled, now: Nanos) {
    let Settled { waiting, answers } = one;
    let Ok(mut stream) = waiting.stream.try_borrow_mut() else {
        return;
    };
    let checks = std::mem::take(&mut stream.checks);
    let verdict = checks.conclude(&answers, worker, host, now);
    if !host.set_effective_context(waiting.context_id) {
        return;
    }
    if act(worker, host, &mut stream, verdict, now) == Action::Continue {
        host.resume(waiting.context_id);
    }
}

/// Request body bytes went by.
pub fn on_request_body(stream: &mut Stream, body_size: usize) {
    if let Some(meter) = stream.meter.as_mut() {
        meter.bytes_in = meter.bytes_in.saturating_add(body_size as u64);
    }
}

/// The response headers: add the RateLimit headers, note the status for metering.
pub fn on_response_headers(stream: &mut Stream, host: &mut impl Host) {
    if !stream.replied {
        for (name, value) in &stream.headers {
            host.add_response_header(name, value);
        }
    }
    // The status of the filter's own reply is known; any other is read (the one host
    // call metering adds to a request).
    if let Some(meter) = stream.meter.as_mut()
        && meter.status == 0
    {
        meter.status = host.response_status();
    }
}

/// Response body bytes went by.
pub fn on_response_body(stream: &mut Stream, body_size: usize) {
    if let Some(meter) = stream.meter.as_mut() {
        meter.bytes_out = meter.bytes_out.saturating_add(body_size as u64);
    }
}

/// The request is over: meter it.
pub fn on_log(worker: &mut Worker, stream: &mut Stream, host: &mut impl Host) {
    if let Some(batcher) = worker.batcher.as_mut() {
        batcher.forget(stream.context_id);
    }
    // A full batch goes at the next tick.
    if let (Some(meter), Some(usage)) = (stream.meter.take(), worker.usage.as_mut()) {
        usage.record(&meter, host.now());
    }
}

/// Headers, stats and the verdict's action (reply, pause or continue).
fn act(
    worker: &mut Worker,
    host: &mut impl Host,
    stream: &mut Stream,
    verdict: Verdict,
    now: Nanos,
) -> Action {
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
            worker
                .queue
                .push((now.saturating_add(delay), stream.context_id));
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
            stream.reply(host, 429, content_type, &body, Some(retry_after));
            Action::Pause
        }
        Verdict::Unavailable(index) => {
            let name = worker
                .policy
                .rules
                .get(index)
                .map_or("", |r| r.name.as_str());
            let (content_type, body) = reply::unavailable(worker.policy.error_format, name);
            stream.reply(host, 503, content_type, &body, None);
            Action::Pause
        }
    }
}

/// Gathers what the policy needs about the request and decides it; `Err`: the registry
/// refuses it before any rate limit.
fn decide(
    worker: &mut Worker,
    host: &mut impl Host,
    now: Nanos,
    meter: &mut Option<Meter>,
) -> Result<Verdict, Gate> {
    worker.decision.global_share = worker.global_share(now);
    let needs = &worker.needs;
    let policy = &worker.policy;
    let headers = RequestHeaders::fetch(host, policy, needs);
    let path = headers
        .get(":path")
        .map_or("", |p| p.split(['?', '#']).next().unwrap_or(p));
    let client_ip = if needs.client_ip {
        facts::client_ip(host, policy, &headers)
    } else {
        String::new()
    };
    let table = worker.follow.as_ref().map(|f| &f.table);
    let (api_key, tenant, jwt) =
        identify(host, policy, needs, &headers, &mut worker.keys, table, now)?;
    let named: Vec<(String, Option<String>)> = needs
        .headers
        .iter()
        .map(|n| (n.clone(), headers.get(n).map(str::to_owned)))
        .collect();
    let claims: Vec<(String, Option<String>)> = needs
        .claims
        .iter()
        .map(|c| (c.clone(), jwt_claim(host, policy, jwt.as_ref(), c)))
        .collect();
    let facts = Facts {
        path,
        method: headers.get(":method").unwrap_or(""),
        client_ip: &client_ip,
        api_key,
        tenant: tenant
            .as_ref()
            .map(|(id, _)| &**id)
            .or(jwt.as_ref().and_then(|j| j.tenant.as_deref())),
        plan: match &tenant {
            Some((_, plan)) => *plan,
            None => jwt.as_ref().and_then(|j| j.plan),
        },
        headers: &named,
        claims: &claims,
    };
    decision::decide(
        &worker.policy,
        worker.seed,
        &mut worker.limiter,
        &mut Shared(&mut *host),
        &facts,
        now,
        &mut worker.decision,
    );
    *meter = start_meter(worker, host, &facts, jwt.as_ref(), now);
    Ok(worker.decision.verdict)
}

/// The request's meter, when usage is metered and its tenant is known: what the decision
/// charged, and the token's subject (hashed) as the user.
fn start_meter(
    worker: &Worker,
    host: &mut impl Host,
    facts: &Facts<'_>,
    jwt: Option<&super::jwt::Verified>,
    now: Nanos,
) -> Option<Meter> {
    let (usage, tenant) = (worker.usage.as_ref()?, facts.tenant?);
    let mut metered = usage.meter(
        &worker.policy,
        &worker.decision,
        tenant,
        facts.plan,
        facts.method,
        now,
    );
    metered.user = jwt_claim(host, &worker.policy, jwt, "sub")
        .map(|sub| FixedState::with_seed(worker.seed).hash_one(sub));
    Some(metered)
}

/// The request's API key, its tenant (registry or configuration) and plan, and else the
/// claims of a token the proxy verified: a verified token leaves its claims header (when
/// configured) or, on Envoy, metadata that is only looked for when the token's header is
/// there. `Err`: the key's tenant is refused (or the key, under `unknown_key: reject`).
fn identify<'a>(
    host: &mut impl Host,
    policy: &'a crate::policy::Policy,
    needs: &crate::decision::Needs,
    headers: &'a RequestHeaders,
    keys: &mut Keys,
    table: Option<&Table>,
    now: Nanos,
) -> Result<Identified<'a>, Gate> {
    let api_key = match (&policy.identity.api_key_header, needs.tenant) {
        (Some(name), true) => headers.get(name),
        _ => None,
    };
    let tenant = match api_key {
        Some(key) => match keys.who(policy, table, key, now / SECOND)? {
            Who::Tenant(id, plan) => Some((id, plan)),
            Who::Anonymous => None,
        },
        None => None,
    };
    let jwt = match &policy.identity.jwt {
        Some(config)
            if tenant.is_none()
                && needs.tenant
                && headers
                    .get(config.claims_header.as_deref().unwrap_or(&config.header))
                    .is_some() =>
        {
            super::jwt::verified(host, policy, headers)
        }
        _ => None,
    };
    Ok((api_key, tenant, jwt))
}

/// What [`identify`] finds: the API key, the tenant and plan, the verified token.
type Identified<'a> = (
    Option<&'a str>,
    Option<(Rc<str>, Option<PlanId>)>,
    Option<super::jwt::Verified>,
);

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

/// Claim `name` of the request's verified token, if there is one.
fn jwt_claim(
    host: &mut impl Host,
    policy: &crate::policy::Policy,
    verified: Option<&super::jwt::Verified>,
    name: &str,
) -> Option<String> {
    let config = policy.identity.jwt.as_ref()?;
    verified?.claim(host, config, name)
}
