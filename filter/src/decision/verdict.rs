//! Deciding a request's local rules and folding all rule results into one verdict.

use super::{RuleResult, Verdict, seconds_until};
use crate::engine::{Limiter, Outcome, SharedStore};
use crate::policy::{Policy, Scope};
use crate::{Nanos, SECOND};

/// Takes each local result's permits in order (leased rules first). Once a rule refused, the
/// remaining ones are not acquired: only a cached refusal of theirs is reported
/// ([`RuleResult::cached_only`]), so a refused request costs as little as possible.
pub(super) fn acquire_all(
    policy: &Policy,
    limiter: &mut Limiter,
    store: &mut impl SharedStore,
    results: &mut [RuleResult],
    global_share: u64,
    now: Nanos,
) {
    let mut refused = false;
    for result in results.iter_mut() {
        if refused {
            if let Some(retry_at) = limiter.cached_refusal(result.ask.key, now) {
                result.outcome = Outcome {
                    retry_at,
                    reset: retry_at,
                    ..Outcome::default()
                };
                result.refused = !policy.rules.get(result.rule).is_some_and(|r| r.shadow);
            }
            result.cached_only = true;
            continue;
        }
        let allowance = allowance(policy, limiter, result, global_share, now);
        result.outcome = match allowance {
            Some(left) if left < result.ask.cost => spent(now),
            _ => limiter.acquire(store, &result.ask, now),
        };
        if let (Some(left), true) = (allowance, result.outcome.admitted) {
            limiter
                .allowances
                .spend(result.ask.key, result.ask.cost, now);
            result.from_allowance = true;
            let left = left.saturating_sub(result.ask.cost);
            result.outcome.remaining = result.outcome.remaining.min(left);
        }
        let shadow = policy.rules.get(result.rule).is_some_and(|r| r.shadow);
        if !result.outcome.admitted {
            result.refused = !shadow;
            refused |= !shadow;
        }
    }
}

/// The verdict of a request's rule results (local ones, and `strict` ones once the sidecar
/// answered): refused if any rule refused, else unavailable if a rule could not be decided
/// (`unavailable`, `failure_mode` `closed`), else admitted after the longest queue delay.
/// On a refusal the permits the admitting rules took are given back: a refused request
/// consumes nothing.
pub fn fold(
    limiter: &mut Limiter,
    store: &mut impl SharedStore,
    results: &[RuleResult],
    unavailable: Option<usize>,
    now: Nanos,
) -> Verdict {
    let refused = results.iter().any(|r| r.refused);
    if refused || unavailable.is_some() {
        let mut retry_at = now;
        for result in results {
            if result.outcome.admitted && !result.cached_only {
                if result.from_allowance {
                    limiter
                        .allowances
                        .give_back(result.ask.key, result.ask.cost);
                }
                limiter.refund(store, &result.ask, &result.outcome, now);
            }
            if result.refused {
                retry_at = retry_at.max(result.outcome.retry_at);
            }
        }
        return match unavailable {
            Some(index) if !refused => Verdict::Unavailable(index),
            _ => Verdict::Refuse(seconds_until(retry_at, now).max(1)),
        };
    }
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
}

/// The permits a `global` rule's live allowance leaves for `result`'s bucket (`None`: not a
/// `global` rule, or its bucket is on the starter share).
fn allowance(
    policy: &Policy,
    limiter: &Limiter,
    result: &RuleResult,
    share: u64,
    now: Nanos,
) -> Option<u64> {
    let global = policy
        .rules
        .get(result.rule)
        .is_some_and(|r| r.scope == Scope::Global);
    if !global || share > 1 {
        return None;
    }
    limiter.allowances.left(result.ask.key, now)
}

/// The refusal of a request whose `global` allowance is spent: retry in a second (the
/// worker's next sync brings a new one, if the others left anything).
fn spent(now: Nanos) -> Outcome {
    let retry_at = now.saturating_add(SECOND);
    Outcome {
        retry_at,
        reset: retry_at,
        ..Outcome::default()
    }
}
