//! The small checks every part of the configuration shares: the error type, names, header
//! names and plan names. A leaf module: the compilers of each part import it, never each other
//! for these.

use super::Plan;

/// A configuration mistake: the field path and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ConfigError {
    /// Where, e.g. `rules[1].window`.
    pub path: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

/// The largest limit, burst, queue or cost: keeps `limit · cost` style arithmetic far from
/// overflowing `u64`.
pub(super) const MAX_LIMIT: u64 = 1_000_000_000_000;

/// An error at `path`.
pub(super) fn at(path: String, reason: String) -> ConfigError {
    ConfigError { path, reason }
}

/// 1-64 characters of `[A-Za-z0-9_.-]`: safe unescaped in headers, JSON and stat names.
pub(super) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// An HTTP token (RFC 9110 `tchar`s): header names and methods.
pub(super) fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header name, lower-cased.
pub(super) fn header_name(path: &str, name: &str) -> Result<String, ConfigError> {
    if is_token(name) {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(at(
            path.to_owned(),
            format!(
                "{name:?} is not a valid header name (use letters, digits and '-', e.g. \"x-api-key\")"
            ),
        ))
    }
}

/// The reason for a plan name that is not among `plans`.
pub(super) fn unknown_plan(name: &str, plans: &[Plan]) -> String {
    if plans.is_empty() {
        return format!("unknown plan {name:?} (no plans are defined: add it under plans)");
    }
    let names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
    format!("unknown plan {name:?} (use one of {})", names.join(", "))
}
