//! A rule's limit (a number, `"plan"`, or per plan), burst, queue and cost, and the checks
//! that tie them together: a cost the rule can ever admit, a sliding log that stays small,
//! no limit large enough for its arithmetic to overflow.

use serde_json::Value;

use super::check::{MAX_LIMIT, at, unknown_plan};
use super::serde_error::{LIMIT_HINT, child, unknown_field};
use super::{ConfigError, LimitSpec, Plan, Rule};
use crate::algorithm::Algorithm;
use crate::{Nanos, SECOND};

/// The most permits a sliding window log rule may allow per window (its state is one
/// timestamp per admitted request).
const MAX_LOG_LIMIT: u64 = 10_000;

/// `rules[i].limit`: a number, `"plan"` (which needs a plan), or `{"plan": {…}, "default": n}`.
pub(super) fn limit(path: &str, value: &Value, plans: &[Plan]) -> Result<LimitSpec, ConfigError> {
    match value {
        Value::String(text) if text == "plan" => {
            if plans.is_empty() {
                return Err(at(
                    path.to_owned(),
                    "\"plan\" needs at least one plan (define plans, or give a number)".into(),
                ));
            }
            Ok(LimitSpec::Plan)
        }
        Value::Object(map) => per_plan(path, map, plans),
        other => count(path, other, LIMIT_HINT).map(LimitSpec::Fixed),
    }
}

fn per_plan(
    path: &str,
    map: &serde_json::Map<String, Value>,
    plans: &[Plan],
) -> Result<LimitSpec, ConfigError> {
    if let Some(field) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "plan" | "default"))
    {
        return Err(at(
            child(path, field),
            unknown_field(field, &["plan", "default"]),
        ));
    }
    let plan_path = child(path, "plan");
    let example = "e.g. {\"free\": 5, \"pro\": 50}";
    let entries = match map.get("plan") {
        None => {
            return Err(at(
                plan_path,
                format!("missing (map plan names to limits, {example})"),
            ));
        }
        Some(Value::Object(entries)) if entries.is_empty() => {
            return Err(at(
                plan_path,
                format!("empty (map plan names to limits, {example}, or use a number)"),
            ));
        }
        Some(Value::Object(entries)) => entries,
        Some(other) => {
            return Err(at(
                plan_path,
                format!("{other} is not a map of plan limits ({example})"),
            ));
        }
    };
    let mut by_plan = vec![None; plans.len()];
    for (name, value) in entries {
        let entry_path = child(&plan_path, name);
        let id = plans
            .iter()
            .position(|p| &p.name == name)
            .ok_or_else(|| at(entry_path.clone(), unknown_plan(name, plans)))?;
        let n = count(&entry_path, value, "use a positive integer")?;
        if let Some(slot) = by_plan.get_mut(id) {
            *slot = Some(n);
        }
    }
    let default_path = child(path, "default");
    let default = match map.get("default") {
        None => {
            return Err(at(
                default_path,
                "missing (give the limit for plans not listed and for requests without a tenant)"
                    .into(),
            ));
        }
        Some(value) => count(&default_path, value, "use a positive integer")?,
    };
    Ok(LimitSpec::PerPlan { by_plan, default })
}

/// A positive count no larger than [`MAX_LIMIT`].
fn count(path: &str, value: &Value, hint: &str) -> Result<u64, ConfigError> {
    match value.as_u64() {
        Some(0) => Err(at(
            path.to_owned(),
            "0 is too small (use at least 1)".into(),
        )),
        Some(n) if n > MAX_LIMIT => Err(at(
            path.to_owned(),
            format!("{n} is more than {MAX_LIMIT}, the largest limit (use a smaller number)"),
        )),
        Some(n) => Ok(n),
        None => Err(at(
            path.to_owned(),
            format!("{value} is not a limit ({hint})"),
        )),
    }
}

/// `rules[i].burst`: token buckets only, at least 1.
pub(super) fn burst(path: &str, burst: u64, algorithm: Algorithm) -> Result<u64, ConfigError> {
    if algorithm != Algorithm::TokenBucket {
        return Err(at(
            path.to_owned(),
            "only token_bucket rules have a burst (remove it, or use \"algorithm\": \"token_bucket\")".into(),
        ));
    }
    match burst {
        0 => Err(at(
            path.to_owned(),
            "0 is too small (a bucket must hold at least 1 request)".into(),
        )),
        n if n > MAX_LIMIT => Err(at(
            path.to_owned(),
            format!("{n} is more than {MAX_LIMIT}, the largest burst"),
        )),
        n => Ok(n),
    }
}

/// `rules[i].queue`: leaky buckets only.
pub(super) fn queue(path: &str, queue: u64, algorithm: Algorithm) -> Result<u64, ConfigError> {
    if algorithm != Algorithm::LeakyBucket {
        return Err(at(
            path.to_owned(),
            "only leaky_bucket rules have a queue (remove it, or use \"algorithm\": \"leaky_bucket\")".into(),
        ));
    }
    if queue > MAX_LIMIT {
        return Err(at(
            path.to_owned(),
            format!("{queue} is more than {MAX_LIMIT}, the largest queue"),
        ));
    }
    Ok(queue)
}

/// The limits a rule can end up with: (path, permits per window, how to name it).
fn effective_limits(path: &str, rule: &Rule, plans: &[Plan]) -> Vec<(String, u64, String)> {
    let limit_path = child(path, "limit");
    match &rule.limit {
        LimitSpec::Fixed(n) => vec![(limit_path, *n, format!("the limit {n}"))],
        LimitSpec::Plan => plans
            .iter()
            .map(|p| {
                let n = scaled(p.requests_per_minute, rule.window);
                (
                    limit_path.clone(),
                    n,
                    format!("plan {:?}'s limit of {n} per window", p.name),
                )
            })
            .collect(),
        LimitSpec::PerPlan { by_plan, default } => {
            let plan_path = child(&limit_path, "plan");
            let mut limits: Vec<_> = plans
                .iter()
                .zip(by_plan)
                .filter_map(|(p, n)| {
                    n.map(|n| {
                        (
                            child(&plan_path, &p.name),
                            n,
                            format!("the limit {n} of plan {:?}", p.name),
                        )
                    })
                })
                .collect();
            limits.push((
                child(&limit_path, "default"),
                *default,
                format!("the default limit {default}"),
            ));
            limits
        }
    }
}

/// A plan's requests per minute over `window`, at least 1.
fn scaled(requests_per_minute: u64, window: Nanos) -> u64 {
    let n = u128::from(requests_per_minute) * u128::from(window) / u128::from(60 * SECOND);
    u64::try_from(n).unwrap_or(u64::MAX).max(1)
}

/// Checks every limit the rule can end up with: not too large, small enough for a sliding
/// log, and at least the cost (or the burst at least the cost), so some request can be admitted.
pub(super) fn check_capacity(path: &str, rule: &Rule, plans: &[Plan]) -> Result<(), ConfigError> {
    let cost_path = child(path, "cost");
    if rule.cost == 0 {
        return Err(at(cost_path, "0 is too small (use at least 1)".into()));
    }
    let never = "no request could ever be admitted";
    for (limit_path, n, what) in effective_limits(path, rule, plans) {
        if n > MAX_LIMIT {
            return Err(at(
                limit_path,
                format!("{what} is more than {MAX_LIMIT} (use a lower limit or a shorter window)"),
            ));
        }
        if rule.algorithm == Algorithm::SlidingWindowLog && n > MAX_LOG_LIMIT {
            return Err(at(
                limit_path,
                format!(
                    "{what} is more than sliding_window_log can hold (it stores one timestamp per admitted \
                     request: use at most {MAX_LOG_LIMIT}, or use sliding_window_counter)"
                ),
            ));
        }
        if rule.burst.is_none() && rule.cost > n {
            return Err(at(
                cost_path,
                format!(
                    "{} is more than {what} ({never}: lower the cost or raise the limit)",
                    rule.cost
                ),
            ));
        }
    }
    match rule.burst {
        Some(burst) if rule.cost > burst => Err(at(
            cost_path,
            format!(
                "{} is more than the burst {burst} ({never}: lower the cost or raise the burst)",
                rule.cost
            ),
        )),
        _ => Ok(()),
    }
}
