//! Bodies of the refusals that come before any rate limit, from the registry: `401` (an API
//! key nothing knows, with `registry.unknown_key: reject`), `403` (a suspended tenant), `429`
//! (a used-up monthly quota).
//!
//! ```
//! use tollgate_filter::policy::ErrorFormat;
//! use tollgate_filter::reply::gate::quota_exceeded;
//!
//! let (content_type, body) = quota_exceeded(ErrorFormat::Json, "acme", Some(1000), 3600, 1767225600);
//! assert_eq!(content_type, "application/json");
//! assert!(body.starts_with(r#"{"error":"quota_exceeded","#));
//! ```

use super::{JSON, PROBLEM_JSON, QUOTA_EXCEEDED_TITLE, QUOTA_EXCEEDED_TYPE};
use super::{push_escaped, push_field};
use crate::policy::ErrorFormat;

/// The start of a body: `{"error":…,"message":"` or the problem's members up to `"detail":"`.
fn open(
    body: &mut String,
    format: ErrorFormat,
    error: &str,
    status: u16,
    title: &str,
) -> &'static str {
    match format {
        ErrorFormat::Json => {
            body.push_str(r#"{"error":""#);
            body.push_str(error);
            body.push_str(r#"","message":""#);
            JSON
        }
        ErrorFormat::ProblemJson => {
            body.push_str(r#"{"type":""#);
            body.push_str(if status == 429 {
                QUOTA_EXCEEDED_TYPE
            } else {
                "about:blank"
            });
            body.push_str(r#"","title":""#);
            body.push_str(title);
            body.push_str(r#"","status":"#);
            body.push_str(&status.to_string());
            body.push_str(r#","error":""#);
            body.push_str(error);
            body.push_str(r#"","detail":""#);
            PROBLEM_JSON
        }
    }
}

/// `401`: `{"error":"invalid_api_key","message":…}` (problem+json: `about:blank`,
/// `Unauthorized`, with `error` as an extension member).
pub fn invalid_api_key(format: ErrorFormat) -> (&'static str, String) {
    let mut body = String::with_capacity(200);
    let content_type = open(&mut body, format, "invalid_api_key", 401, "Unauthorized");
    body.push_str("The API key is unknown, revoked or expired.\"}");
    (content_type, body)
}

/// `403`: `{"error":"tenant_suspended","message":…,"tenant":…}`.
pub fn tenant_suspended(format: ErrorFormat, tenant: &str) -> (&'static str, String) {
    let mut body = String::with_capacity(200 + 3 * tenant.len());
    let content_type = open(&mut body, format, "tenant_suspended", 403, "Forbidden");
    body.push_str("Tenant ");
    push_escaped(&mut body, tenant);
    body.push_str(r#" is suspended.","tenant":""#);
    push_escaped(&mut body, tenant);
    body.push_str("\"}");
    (content_type, body)
}

/// `429`: `{"error":"quota_exceeded","message":…,"retryAfter":S,"tenant":…,"quota":N,
/// "periodEnd":T}` (`quota` omitted when the plan is unknown; problem+json: the draft-10
/// quota-exceeded problem with `violated-policies: ["quota"]`).
pub fn quota_exceeded(
    format: ErrorFormat,
    tenant: &str,
    quota: Option<u64>,
    retry_after_secs: u64,
    period_end: u64,
) -> (&'static str, String) {
    let mut body = String::with_capacity(300 + 3 * tenant.len());
    let content_type = open(
        &mut body,
        format,
        "quota_exceeded",
        429,
        QUOTA_EXCEEDED_TITLE,
    );
    body.push_str("Monthly quota used up for tenant ");
    push_escaped(&mut body, tenant);
    body.push_str(". Retry in ");
    body.push_str(&retry_after_secs.to_string());
    body.push_str(" s.\"");
    if format == ErrorFormat::ProblemJson {
        body.push_str(r#","violated-policies":["quota"]"#);
    }
    push_field(&mut body, "retryAfter", retry_after_secs);
    body.push_str(r#","tenant":""#);
    push_escaped(&mut body, tenant);
    body.push('"');
    if let Some(quota) = quota {
        push_field(&mut body, "quota", quota);
    }
    push_field(&mut body, "periodEnd", period_end);
    body.push('}');
    (content_type, body)
}

#[cfg(test)]
mod tests;
