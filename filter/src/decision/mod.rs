//! One request's decision across every rule of the policy: which rules apply, their bucket
//! keys and quotas, the verdict, and what the response headers report.
//!
//! Pure: the host gathers the request's facts and hands over its shared store and clock.

use core::hash::{BuildHasher, Hasher};

use crate::algorithm::{Algorithm, Quota};
use crate::allocation::global_quota;
pub use crate::allocation::node_share;
use crate::engine::{Ask, Limiter, Outcome, SharedStore};
use crate::policy::{FailureMode, KeyPart, LimitSpec, Match, PlanId, Policy, Rule, Scope};
use crate::protocol::{CheckRequest, WireAlgorithm};
use crate::{Nanos, SECOND};

mod verdict;

use verdict::acquire_all;
pub use verdict::fold;

/// What the host knows about a request, borrowed from its own buffers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Facts<'a> {
    /// Path without the query string.
    pub path: &'a str,
    /// Method, upper case.
    pub method: &'a str,
    /// Client address without port.
    pub client_ip: &'a str,
    /// The API key presented, if any.
    pub api_key: Option<&'a str>,
    /// The tenant id, if identified.
    pub tenant: Option<&'a str>,
    /// The tenant's plan, if known.
    pub plan: Option<PlanId>,
    /// The request headers named in [`Needs::headers`] and their values.
    pub headers: &'a [(String, Option<String>)],
    /// The verified JWT claims named in [`Needs::claims`] and their values.
    pub claims: &'a [(String, Option<String>)],
}

/// Which request attributes the policy reads, so the host fetches nothing else.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Some rule matches on or keys by the path.
    pub path: bool,
    /// Some rule matches on or keys by the method.
    pub method: bool,
    /// Some rule keys by the client address.
    pub client_ip: bool,
    /// Some rule needs the tenant, its plan or the API key.
    pub tenant: bool,
    /// Request headers used as key parts (lower case).
    pub headers: Vec<String>,
    /// JWT claims used as key parts.
    pub claims: Vec<String>,
}

impl Needs {
    /// What `policy` reads.
    pub fn of(policy: &Policy) -> Needs {
        let mut needs = Needs::default();
        for rule in &policy.rules {
            let m = &rule.matcher;
            needs.path |= m.path_prefix.is_some() || m.path_exact.is_some();
            needs.method |= !m.methods.is_empty();
            for part in &rule.key {
                match part {
                    KeyPart::ClientIp => needs.client_ip = true,
                    KeyPart::Tenant | KeyPart::Plan | KeyPart::ApiKey => needs.tenant = true,
                    KeyPart::Path => needs.path = true,
                    KeyPart::Method => needs.method = true,
                    KeyPart::Header(name) if !needs.headers.contains(name) => {
                        needs.headers.push(name.clone())
                    }
                    KeyPart::Claim(name) if !needs.claims.contains(name) => {
                        needs.claims.push(name.clone())
                    }
                    KeyPart::Header(_) | KeyPart::Claim(_) => {}
                }
            }
            needs.tenant |= matches!(rule.limit, LimitSpec::Plan | LimitSpec::PerPlan { .. });
        }
        if policy.usage.is_some() {
            // Usage is metered per tenant and labelled with the method.
            needs.tenant = true;
            needs.method = true;
        }
        needs
    }
}

/// What to do with the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it, after `delay` (a leaky bucket queue) if non-zero.
    #[default]
    Admit,
    /// Forward it after this many nanoseconds.
    Delay(Nanos),
    /// Refuse with 429; retry after this many seconds.
    Refuse(u64),
    /// A `strict` rule could not be decided and `failure_mode` is `closed`: 503, naming the rule.
    Unavailable(usize),
}

/// One applicable rule's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleResult {
    /// Index into [`Policy::rules`].
    pub rule: usize,
    /// The question asked (a `global` rule's quota already cut to the node's share while the
    /// sidecar is silent, see [`Decision::global_share`]).
    pub ask: Ask,
    /// The rule's own quota for this request: what the sidecar counts a `global` rule
    /// against (equal to `ask.quota` otherwise).
    pub configured: Quota,
    /// The answer.
    pub outcome: Outcome,
    /// Whether it refused (a shadow rule's refusal is recorded but does not refuse).
    pub refused: bool,
    /// Whether it was only looked up in the cache after another rule had refused.
    pub cached_only: bool,
    /// Whether its permits were spent from the worker's `global` allowance (given back with
    /// the permits when another rule refuses the request).
    pub from_allowance: bool,
}

/// A `strict` rule the sidecar must decide before the request may go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingCheck {
    /// Index into [`Policy::rules`].
    pub rule: usize,
    /// The question, as the local rules would ask it (bucket key, quota, cost).
    pub ask: Ask,
    /// The same question on the wire.
    pub request: CheckRequest,
}

/// A request's decision.
#[derive(Clone, Debug, Default)]
pub struct Decision {
    /// The verdict of the local rules (`Admit` or `Delay` while checks are pending).
    pub verdict: Verdict,
    /// Every applicable rule decided locally, in policy order.
    pub results: Vec<RuleResult>,
    /// `strict` rules left to the sidecar, in policy order; empty when a local rule refused
    /// (no sidecar call is made then) or when the policy has no `sidecar`.
    pub pending: Vec<PendingCheck>,
    /// Input, set by the host: what `global` rules' limits are divided by (0 or 1: nothing;
    /// the node count while the sidecar is silent, see [`crate::sync::Sync::share`]).
    pub global_share: u64,
}

/// The sidecar question for `rule` asked as `ask`.
pub fn check_request(rule: &Rule, ask: &Ask) -> CheckRequest {
    CheckRequest {
        rule: rule.name.clone(),
        key: ask.key,
        algorithm: WireAlgorithm::from(ask.algorithm),
        limit: ask.quota.limit,
        window_ns: ask.quota.window,
        burst: Some(ask.quota.burst),
        queue: ask.quota.queue,
        cost: ask.cost,
        group: None,
    }
}

/// Decides `facts` against `policy`. `seed` keys the bucket hashes (the same on every worker).
///
/// `strict` rules: with a `sidecar` in the policy they are not decided here but listed in
/// [`Decision::pending`] (after the local rules admitted) for the host to ask the sidecar.
/// Without a `sidecar` they behave as with the sidecar unreachable: `failure_mode` `open`
/// skips them, `closed` refuses with [`Verdict::Unavailable`].
pub fn decide(
    policy: &Policy,
    seed: u64,
    limiter: &mut Limiter,
    store: &mut impl SharedStore,
    facts: &Facts<'_>,
    now: Nanos,
    out: &mut Decision,
) {
    out.verdict = Verdict::Admit;
    out.results.clear();
    out.pending.clear();
    if let Some(index) = gather(policy, seed, limiter, facts, now, out) {
        out.verdict = Verdict::Unavailable(index);
        return;
    }
    // Leased rules first: they are cheap, and a refusal there spares the shared-data rules.
    out.results.sort_by_key(|r| !r.ask.algorithm.leasable());
    acquire_all(
        policy,
        limiter,
        store,
        &mut out.results,
        out.global_share,
        now,
    );
    let unavailable = store_unavailable(policy, &out.results);
    out.verdict = fold(limiter, store, &out.results, unavailable, now);
    if !matches!(out.verdict, Verdict::Admit | Verdict::Delay(_)) {
        out.pending.clear();
    }
    out.results.sort_by_key(|r| r.rule);
}

/// Lists the rules that apply to the request: `strict` ones (with a sidecar) as
/// [`Decision::pending`] checks, the others as [`Decision::results`] to decide here. Returns
/// the rule that makes the request unavailable (a `strict` rule without a sidecar under
/// `failure_mode` `closed`), if any.
fn gather(
    policy: &Policy,
    seed: u64,
    limiter: &Limiter,
    facts: &Facts<'_>,
    now: Nanos,
    out: &mut Decision,
) -> Option<usize> {
    for (index, rule) in policy.rules.iter().enumerate() {
        if !applies(&rule.matcher, facts) {
            continue;
        }
        let Some(key) = bucket_key(seed, index, rule, facts) else {
            continue;
        };
        if rule.scope == Scope::Strict && policy.sidecar.is_some() {
            let ask = Ask {
                key,
                algorithm: rule.algorithm,
                quota: quota(policy, rule, facts.plan),
                cost: rule.cost,
            };
            let request = check_request(rule, &ask);
            out.pending.push(PendingCheck {
                rule: index,
                ask,
                request,
            });
            continue;
        }
        if rule.scope == Scope::Strict {
            // No sidecar configured: a strict rule behaves as with the sidecar unreachable.
            if policy.failure_mode == FailureMode::Closed && !rule.shadow {
                return Some(index);
            }
            continue;
        }
        let configured = quota(policy, rule, facts.plan);
        let ask = Ask {
            key,
            algorithm: rule.algorithm,
            quota: if rule.scope == Scope::Global {
                let (allowances, share) = (&limiter.allowances, out.global_share);
                global_quota(rule.algorithm, configured, allowances, key, share, now)
            } else {
                configured
            },
            cost: rule.cost,
        };
        out.results.push(RuleResult {
            rule: index,
            ask,
            configured,
            outcome: Outcome::default(),
            refused: false,
            cached_only: false,
            from_allowance: false,
        });
    }
    None
}

/// The rule the shared memory failed for (a full zone) and that therefore could not be
/// decided, when `failure_mode` is `closed` and the rule is not a shadow.
fn store_unavailable(policy: &Policy, results: &[RuleResult]) -> Option<usize> {
    results
        .iter()
        .find(|r| r.outcome.store_failed && !r.cached_only)
        .filter(|_| policy.failure_mode == FailureMode::Closed)
        .filter(|r| !policy.rules.get(r.rule).is_some_and(|rule| rule.shadow))
        .map(|r| r.rule)
}

/// Whole seconds from `now` until `at`, rounded up.
pub fn seconds_until(at: Nanos, now: Nanos) -> u64 {
    at.saturating_sub(now).div_ceil(SECOND)
}

/// Whether `matcher` accepts the request.
pub fn applies(matcher: &Match, facts: &Facts<'_>) -> bool {
    matcher
        .path_prefix
        .as_deref()
        .is_none_or(|p| facts.path.starts_with(p))
        && matcher
            .path_exact
            .as_deref()
            .is_none_or(|p| facts.path == p)
        && (matcher.methods.is_empty() || matcher.methods.iter().any(|m| m == facts.method))
}

/// The quota `rule` gives a request of `plan`.
pub fn quota(policy: &Policy, rule: &Rule, plan: Option<PlanId>) -> Quota {
    let limit = match &rule.limit {
        LimitSpec::Fixed(n) => *n,
        LimitSpec::Plan => {
            let rpm = plan
                .or(policy.default_plan)
                .and_then(|p| policy.plans.get(p))
                .map_or(1, |p| p.requests_per_minute);
            let scaled = u128::from(rpm) * u128::from(rule.window) / u128::from(60 * SECOND);
            u64::try_from(scaled).unwrap_or(u64::MAX).max(1)
        }
        LimitSpec::PerPlan { by_plan, default } => plan
            .and_then(|p| by_plan.get(p).copied().flatten())
            .unwrap_or(*default),
    };
    // A registry plan's burst sizes the token bucket of the rules its rate limits.
    let plan_burst = match rule.limit {
        LimitSpec::Plan => plan
            .or(policy.default_plan)
            .and_then(|p| policy.plans.get(p))
            .and_then(|p| p.burst),
        _ => None,
    };
    let burst = match rule.algorithm {
        Algorithm::TokenBucket => plan_burst.or(rule.burst).unwrap_or(limit).max(1),
        _ => limit,
    };
    Quota::new(limit, rule.window, burst, rule.queue)
}

/// The bucket of `rule` for this request, or `None` when a key part is missing (a rule keyed
/// by tenant does not apply to anonymous requests).
pub fn bucket_key(seed: u64, index: usize, rule: &Rule, facts: &Facts<'_>) -> Option<u64> {
    let mut hasher = foldhash::quality::FixedState::with_seed(seed).build_hasher();
    hasher.write_usize(index);
    for part in &rule.key {
        let value: &str = match part {
            KeyPart::ClientIp => facts.client_ip,
            KeyPart::Tenant => facts.tenant?,
            KeyPart::Plan => facts.tenant.and(facts.plan).map(|_| "plan")?,
            KeyPart::ApiKey => facts.api_key?,
            KeyPart::Path => facts.path,
            KeyPart::Method => facts.method,
            KeyPart::Header(name) => lookup(facts.headers, name)?,
            KeyPart::Claim(name) => lookup(facts.claims, name)?,
        };
        if let KeyPart::Plan = part {
            hasher.write_usize(facts.plan.unwrap_or(usize::MAX));
        } else {
            hasher.write(value.as_bytes());
        }
        hasher.write_u8(0xff);
    }
    Some(hasher.finish())
}

fn lookup<'a>(pairs: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(n, _)| n == name)?.1.as_deref()
}

#[cfg(test)]
mod tests;
