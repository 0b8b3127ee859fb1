//! Bodies of refusals: `429` (rate limited) and `503` (a `strict` rule's sidecar unreachable
//! under `failure_mode: closed`).
//!
//! Bodies are written by hand into one `String` with its capacity reserved: no serde on the
//! request path. Strings are JSON-escaped all the same (configured rule names never need it).
//!
//! ```
//! use tollgate_filter::policy::ErrorFormat;
//! use tollgate_filter::reply::{too_many_requests, Refusal};
//!
//! let refused = [Refusal { rule: "per-tenant", limit: 100, window_secs: 60, reset_secs: 12 }];
//! let (content_type, body) = too_many_requests(ErrorFormat::Json, 12, &refused);
//! assert_eq!(content_type, "application/json");
//! assert!(body.starts_with(r#"{"error":"rate_limit_exceeded","message":"Rate limit exceeded for rule per-tenant. Retry in 12 s.","retryAfter":12,"#));
//! ```

use core::fmt::Write as _;

pub mod gate;

use crate::policy::ErrorFormat;

/// A rule that refused the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal<'a> {
    /// The rule's name.
    pub rule: &'a str,
    /// Its limit per window.
    pub limit: u64,
    /// The window in seconds.
    pub window_secs: u64,
    /// Seconds until its quota is fully available again.
    pub reset_secs: u64,
}

/// `content-type` of [`ErrorFormat::Json`] bodies.
pub const JSON: &str = "application/json";

/// `content-type` of [`ErrorFormat::ProblemJson`] bodies (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The quota-exceeded problem type (draft-ietf-httpapi-ratelimit-headers-10 §5.1).
pub const QUOTA_EXCEEDED_TYPE: &str =
    "https://iana.org/assignments/http-problem-types#quota-exceeded";

/// The title draft-10 §5.1 gives the quota-exceeded problem type.
pub const QUOTA_EXCEEDED_TITLE: &str =
    "Request cannot be satisfied as assigned quota has been exceeded";

/// Room for one number.
const INT_LEN: usize = 20;

/// A refusal's `content-type` and body.
///
/// - [`ErrorFormat::Json`] → `{"error":"rate_limit_exceeded","message":…,"retryAfter":S,
///   "rule":…,"limit":L,"window":W,"reset":S,"rules":[{"rule":…,"limit":L,"window":W,"reset":S},…]}`
///   with the first refused rule at the top level (omitted when `refused` is empty) and every
///   one in `rules`.
/// - [`ErrorFormat::ProblemJson`] → the draft-10 §5.1 quota-exceeded problem,
///   `{"type":…,"title":…,"status":429,"detail":…,"violated-policies":[…],"retryAfter":S,
///   "rules":[…]}`; `retryAfter` and `rules` are extension members (RFC 9457 §3.2).
pub fn too_many_requests(
    format: ErrorFormat,
    retry_after_secs: u64,
    refused: &[Refusal<'_>],
) -> (&'static str, String) {
    let names: usize = refused.iter().map(|r| r.rule.len()).sum();
    let mut body = String::with_capacity(300 + 3 * names + refused.len() * (4 * INT_LEN + 50));
    match format {
        ErrorFormat::Json => {
            body.push_str(r#"{"error":"rate_limit_exceeded","message":""#);
            push_message(&mut body, retry_after_secs, refused);
            push_field(&mut body, "retryAfter", retry_after_secs);
            if let Some(first) = refused.first() {
                body.push_str(r#","rule":""#);
                push_escaped(&mut body, first.rule);
                body.push('"');
                push_numbers(&mut body, first);
            }
            push_rules(&mut body, refused);
            body.push('}');
            (JSON, body)
        }
        ErrorFormat::ProblemJson => {
            body.push_str(r#"{"type":""#);
            body.push_str(QUOTA_EXCEEDED_TYPE);
            body.push_str(r#"","title":""#);
            body.push_str(QUOTA_EXCEEDED_TITLE);
            body.push_str(r#"","status":429,"detail":""#);
            push_message(&mut body, retry_after_secs, refused);
            body.push_str(r#","violated-policies":["#);
            for (i, r) in refused.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push('"');
                push_escaped(&mut body, r.rule);
                body.push('"');
            }
            body.push(']');
            push_field(&mut body, "retryAfter", retry_after_secs);
            push_rules(&mut body, refused);
            body.push('}');
            (PROBLEM_JSON, body)
        }
    }
}

/// The body of the `503` a `strict` rule answers when the sidecar cannot decide and
/// `failure_mode` is `closed`.
///
/// - [`ErrorFormat::Json`] → `{"error":"rate_limit_unavailable","message":…,"rule":…}`.
/// - [`ErrorFormat::ProblemJson`] → `{"type":"about:blank","title":"Service Unavailable",
///   "status":503,"detail":…,"rule":…}` (RFC 9457 §4.2.1: with `about:blank` the title is the
///   status phrase); `rule` is an extension member.
pub fn unavailable(format: ErrorFormat, rule: &str) -> (&'static str, String) {
    let mut body = String::with_capacity(200 + 2 * rule.len());
    let content_type = match format {
        ErrorFormat::Json => {
            body.push_str(r#"{"error":"rate_limit_unavailable","message":""#);
            JSON
        }
        ErrorFormat::ProblemJson => {
            body.push_str(
                r#"{"type":"about:blank","title":"Service Unavailable","status":503,"detail":""#,
            );
            PROBLEM_JSON
        }
    };
    body.push_str("The rate limit of rule ");
    push_escaped(&mut body, rule);
    body.push_str(
        r#" cannot be checked right now, so the request was refused. Try again shortly.","rule":""#,
    );
    push_escaped(&mut body, rule);
    body.push_str(r#""}"#);
    (content_type, body)
}

/// Writes the rest of the human-readable message and its closing quote, e.g.
/// `Rate limit exceeded for rule per-tenant. Retry in 12 s."`.
fn push_message(body: &mut String, retry_after_secs: u64, refused: &[Refusal<'_>]) {
    body.push_str("Rate limit exceeded");
    for (i, r) in refused.iter().enumerate() {
        body.push_str(match (i, refused.len()) {
            (0, 1) => " for rule ",
            (0, _) => " for rules ",
            _ => ", ",
        });
        push_escaped(body, r.rule);
    }
    // Writing to a String cannot fail.
    let _ = write!(body, ". Retry in {retry_after_secs} s.\"");
}

/// Writes `,"rules":[{"rule":…,"limit":L,"window":W,"reset":S},…]`.
fn push_rules(body: &mut String, refused: &[Refusal<'_>]) {
    body.push_str(r#","rules":["#);
    for (i, r) in refused.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(r#"{"rule":""#);
        push_escaped(body, r.rule);
        body.push('"');
        push_numbers(body, r);
        body.push('}');
    }
    body.push(']');
}

/// Writes `,"limit":L,"window":W,"reset":S` of one refusal.
fn push_numbers(body: &mut String, r: &Refusal<'_>) {
    push_field(body, "limit", r.limit);
    push_field(body, "window", r.window_secs);
    push_field(body, "reset", r.reset_secs);
}

/// Writes `,"name":value`.
fn push_field(body: &mut String, name: &str, value: u64) {
    // Writing to a String cannot fail.
    let _ = write!(body, ",\"{name}\":{value}");
}

/// Writes `s` escaped for the inside of a JSON string (RFC 8259 §7).
fn push_escaped(body: &mut String, s: &str) {
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        body.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '"' => body.push_str("\\\""),
            '\\' => body.push_str("\\\\"),
            '\n' => body.push_str("\\n"),
            '\r' => body.push_str("\\r"),
            '\t' => body.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(body, "\\u{:04x}", u32::from(c));
            }
            c => body.push(c),
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::{Value, json};

    use super::*;

    const TENANT: Refusal<'static> = Refusal {
        rule: "per-tenant",
        limit: 100,
        window_secs: 60,
        reset_secs: 12,
    };
    const IP: Refusal<'static> = Refusal {
        rule: "per-ip",
        limit: 600,
        window_secs: 60,
        reset_secs: 30,
    };

    fn parsed(reply: (&'static str, String)) -> (&'static str, Value) {
        (reply.0, serde_json::from_str(&reply.1).unwrap())
    }

    #[test]
    fn json_429_names_the_refusing_rule() {
        let (content_type, body) = too_many_requests(ErrorFormat::Json, 12, &[TENANT]);
        assert_eq!(content_type, "application/json");
        assert_eq!(
            body,
            r#"{"error":"rate_limit_exceeded","message":"Rate limit exceeded for rule per-tenant. Retry in 12 s.","retryAfter":12,"rule":"per-tenant","limit":100,"window":60,"reset":12,"rules":[{"rule":"per-tenant","limit":100,"window":60,"reset":12}]}"#
        );
    }

    #[test]
    fn json_429_with_several_rules_lists_them_all() {
        let (_, body) = parsed(too_many_requests(ErrorFormat::Json, 30, &[TENANT, IP]));
        let expected = json!({
            "error": "rate_limit_exceeded",
            "message": "Rate limit exceeded for rules per-tenant, per-ip. Retry in 30 s.",
            "retryAfter": 30,
            "rule": "per-tenant", "limit": 100, "window": 60, "reset": 12,
            "rules": [
                {"rule": "per-tenant", "limit": 100, "window": 60, "reset": 12},
                {"rule": "per-ip", "limit": 600, "window": 60, "reset": 30},
            ],
        });
        assert_eq!(body, expected);
    }

    #[test]
    fn json_429_without_rules_is_still_valid() {
        let (_, body) = parsed(too_many_requests(ErrorFormat::Json, 0, &[]));
        let expected = json!({
            "error": "rate_limit_exceeded",
            "message": "Rate limit exceeded. Retry in 0 s.",
            "retryAfter": 0,
            "rules": [],
        });
        assert_eq!(body, expected);
    }

    #[test]
    fn problem_json_429_is_the_quota_exceeded_type() {
        let (content_type, body) = parsed(too_many_requests(
            ErrorFormat::ProblemJson,
            12,
            &[TENANT, IP],
        ));
        assert_eq!(content_type, "application/problem+json");
        let expected = json!({
            "type": "https://iana.org/assignments/http-problem-types#quota-exceeded",
            "title": "Request cannot be satisfied as assigned quota has been exceeded",
            "status": 429,
            "detail": "Rate limit exceeded for rules per-tenant, per-ip. Retry in 12 s.",
            "violated-policies": ["per-tenant", "per-ip"],
            "retryAfter": 12,
            "rules": [
                {"rule": "per-tenant", "limit": 100, "window": 60, "reset": 12},
                {"rule": "per-ip", "limit": 600, "window": 60, "reset": 30},
            ],
        });
        assert_eq!(body, expected);
    }

    #[test]
    fn unavailable_json_and_problem() {
        let (content_type, body) = parsed(unavailable(ErrorFormat::Json, "strict-rule"));
        assert_eq!(content_type, "application/json");
        let detail = "The rate limit of rule strict-rule cannot be checked right now, so the request was refused. Try again shortly.";
        assert_eq!(
            body,
            json!({"error": "rate_limit_unavailable", "message": detail, "rule": "strict-rule"})
        );

        let (content_type, body) = parsed(unavailable(ErrorFormat::ProblemJson, "strict-rule"));
        assert_eq!(content_type, "application/problem+json");
        let expected = json!({
            "type": "about:blank",
            "title": "Service Unavailable",
            "status": 503,
            "detail": detail,
            "rule": "strict-rule",
        });
        assert_eq!(body, expected);
    }

    #[test]
    fn names_are_json_escaped() {
        let odd = "a\"b\\c\n\u{1}é";
        let refused = [Refusal {
            rule: odd,
            ..TENANT
        }];
        for format in [ErrorFormat::Json, ErrorFormat::ProblemJson] {
            let (_, body) = parsed(too_many_requests(format, u64::MAX, &refused));
            assert_eq!(body["rules"][0]["rule"], odd);
            assert_eq!(body["retryAfter"], u64::MAX);
            let (_, body) = parsed(unavailable(format, odd));
            assert_eq!(body["rule"], odd);
        }
    }
}
