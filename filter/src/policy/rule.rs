//! Compiles `rules[]`: names, keys, matchers, algorithms and scopes (limits, bursts, queues
//! and costs are in [`super::limit`]).

use hashbrown::HashMap;

use super::check::{at, header_name, is_token, valid_name};
use super::duration::parse_window;
use super::limit::{burst, check_capacity, limit, queue};
use super::raw::{Object, RawMatch, RawRule};
use super::serde_error::{ALGORITHMS_HINT, child};
use super::{ConfigError, Identity, KeyPart, Match, Plan, Rule, Scope};
use crate::algorithm::Algorithm;

/// Compiles every rule, checking that names are unique.
pub(super) fn rules(
    raw: Vec<Object<RawRule>>,
    plans: &[Plan],
    identity: &Identity,
) -> Result<Vec<Rule>, ConfigError> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut rules = Vec::with_capacity(raw.len());
    for (index, raw) in raw.into_iter().enumerate() {
        let rule = rule(&format!("rules[{index}]"), raw.0, plans, identity)?;
        if let Some(first) = seen.insert(rule.name.clone(), index) {
            return Err(at(
                format!("rules[{index}].name"),
                format!(
                    "{:?} is already the name of rules[{first}] (rule names must be unique)",
                    rule.name
                ),
            ));
        }
        rules.push(rule);
    }
    Ok(rules)
}

fn rule(
    path: &str,
    raw: RawRule,
    plans: &[Plan],
    identity: &Identity,
) -> Result<Rule, ConfigError> {
    if !valid_name(&raw.name) {
        return Err(at(
            child(path, "name"),
            format!(
                "{:?} is not a valid rule name (use 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-': \
                 it appears unescaped in headers, bodies and stats)",
                raw.name
            ),
        ));
    }
    let key = key(&child(path, "key"), &raw.key, identity)?;
    let matcher = raw
        .matcher
        .map(|m| matcher(&child(path, "match"), m.0))
        .transpose()?
        .unwrap_or_default();
    let algorithm = algorithm(&child(path, "algorithm"), &raw.algorithm)?;
    let limit = limit(&child(path, "limit"), &raw.limit, plans)?;
    let window = parse_window(&raw.window).map_err(|reason| at(child(path, "window"), reason))?;
    let burst = raw
        .burst
        .map(|b| burst(&child(path, "burst"), b, algorithm))
        .transpose()?;
    let queue = raw
        .queue
        .map(|q| queue(&child(path, "queue"), q, algorithm))
        .transpose()?
        .unwrap_or(0);
    let scope = scope(&child(path, "scope"), raw.scope.as_deref())?;
    let rule = Rule {
        name: raw.name,
        key,
        matcher,
        algorithm,
        limit,
        window,
        burst,
        queue,
        cost: raw.cost.unwrap_or(1),
        scope,
        shadow: raw.shadow.unwrap_or(false),
    };
    check_capacity(path, &rule, plans)?;
    Ok(rule)
}

fn key(path: &str, raw: &[String], identity: &Identity) -> Result<Vec<KeyPart>, ConfigError> {
    if raw.is_empty() {
        return Err(at(
            path.to_owned(),
            "empty (list what a bucket is counted by, e.g. [\"client_ip\"] or [\"tenant\"])".into(),
        ));
    }
    let mut parts: Vec<KeyPart> = Vec::with_capacity(raw.len());
    for (index, text) in raw.iter().enumerate() {
        let part_path = format!("{path}[{index}]");
        let part = key_part(&part_path, text, identity)?;
        if parts.contains(&part) {
            return Err(at(
                part_path,
                format!("{text:?} is listed twice (remove one)"),
            ));
        }
        parts.push(part);
    }
    Ok(parts)
}

fn key_part(path: &str, text: &str, identity: &Identity) -> Result<KeyPart, ConfigError> {
    let part = match text {
        "client_ip" => KeyPart::ClientIp,
        "tenant" => KeyPart::Tenant,
        "plan" => KeyPart::Plan,
        "api_key" => KeyPart::ApiKey,
        "path" => KeyPart::Path,
        "method" => KeyPart::Method,
        _ => {
            if let Some(name) = text.strip_prefix("header:") {
                return header_name(path, name)
                    .map(KeyPart::Header)
                    .map_err(|_| at(path.to_owned(), format!(
                        "{text:?} does not name a valid header (write header:<name>, e.g. header:x-org-id)"
                    )));
            }
            if let Some(name) = text.strip_prefix("claim:") {
                return claim(path, text, name, identity);
            }
            return Err(at(
                path.to_owned(),
                format!(
                    "unknown key part {text:?} (use client_ip, tenant, plan, api_key, path, method, \
                     header:<name> or claim:<name>)"
                ),
            ));
        }
    };
    Ok(part)
}

fn claim(path: &str, text: &str, name: &str, identity: &Identity) -> Result<KeyPart, ConfigError> {
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(at(
            path.to_owned(),
            format!("{text:?} does not name a claim (write claim:<name>, e.g. claim:org)"),
        ));
    }
    if identity.jwt.is_none() {
        return Err(at(
            path.to_owned(),
            format!(
                "{text:?} needs identity.jwt to read claims from (configure it, or remove this key part)"
            ),
        ));
    }
    Ok(KeyPart::Claim(name.to_owned()))
}

fn matcher(path: &str, raw: RawMatch) -> Result<Match, ConfigError> {
    if raw.path_prefix.is_some() && raw.path_exact.is_some() {
        return Err(at(
            path.to_owned(),
            "path_prefix and path_exact are both given (use one)".into(),
        ));
    }
    let path_prefix = raw
        .path_prefix
        .map(|p| request_path(&child(path, "path_prefix"), p))
        .transpose()?;
    let path_exact = raw
        .path_exact
        .map(|p| request_path(&child(path, "path_exact"), p))
        .transpose()?;
    let mut methods = Vec::new();
    if let Some(raw_methods) = raw.methods {
        let methods_path = child(path, "methods");
        if raw_methods.is_empty() {
            return Err(at(
                methods_path,
                "empty (list methods such as [\"GET\", \"POST\"], or remove methods to match every method)".into(),
            ));
        }
        for (index, method) in raw_methods.iter().enumerate() {
            if !is_token(method) {
                return Err(at(
                    format!("{methods_path}[{index}]"),
                    format!(
                        "{method:?} is not an HTTP method (such as GET, POST, PUT, PATCH or DELETE)"
                    ),
                ));
            }
            methods.push(method.to_ascii_uppercase());
        }
    }
    Ok(Match {
        path_prefix,
        path_exact,
        methods,
    })
}

fn request_path(path: &str, value: String) -> Result<String, ConfigError> {
    if !value.starts_with('/') {
        return Err(at(
            path.to_owned(),
            format!(
                "{value:?} must start with \"/\" (e.g. {:?})",
                format!("/{value}")
            ),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| matches!(c, '?' | '#') || c.is_control() || *c == ' ')
    {
        return Err(at(
            path.to_owned(),
            format!(
                "{value:?} contains {c:?} (paths are matched without the query string: give the path only)"
            ),
        ));
    }
    Ok(value)
}

fn algorithm(path: &str, text: &str) -> Result<Algorithm, ConfigError> {
    Ok(match text {
        "fixed_window" => Algorithm::FixedWindow,
        "sliding_window_log" => Algorithm::SlidingWindowLog,
        "sliding_window_counter" => Algorithm::SlidingWindowCounter,
        "token_bucket" => Algorithm::TokenBucket,
        "leaky_bucket" => Algorithm::LeakyBucket,
        _ => {
            return Err(at(
                path.to_owned(),
                format!("unknown algorithm {text:?} ({ALGORITHMS_HINT})"),
            ));
        }
    })
}

fn scope(path: &str, text: Option<&str>) -> Result<Scope, ConfigError> {
    Ok(match text {
        None | Some("local") => Scope::Local,
        Some("global") => Scope::Global,
        Some("strict") => Scope::Strict,
        Some(other) => {
            return Err(at(
                path.to_owned(),
                format!("unknown scope {other:?} (use local, global or strict)"),
            ));
        }
    })
}
