#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use serde_json::{Value, json};

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap()
}

#[test]
fn invalid_api_key_json() {
    let (content_type, body) = invalid_api_key(ErrorFormat::Json);
    assert_eq!(content_type, JSON);
    assert_eq!(
        parse(&body),
        json!({"error": "invalid_api_key", "message": "The API key is unknown, revoked or expired."})
    );
}

#[test]
fn tenant_suspended_names_the_tenant_escaped() {
    let (content_type, body) = tenant_suspended(ErrorFormat::Json, "ac\"me");
    assert_eq!(content_type, JSON);
    assert_eq!(
        parse(&body),
        json!({"error": "tenant_suspended", "message": "Tenant ac\"me is suspended.", "tenant": "ac\"me"})
    );
}

#[test]
fn quota_exceeded_json_and_problem() {
    let (content_type, body) =
        quota_exceeded(ErrorFormat::Json, "acme", Some(1000), 3600, 1_767_225_600);
    assert_eq!(content_type, JSON);
    assert_eq!(
        parse(&body),
        json!({"error": "quota_exceeded",
               "message": "Monthly quota used up for tenant acme. Retry in 3600 s.",
               "retryAfter": 3600, "tenant": "acme", "quota": 1000, "periodEnd": 1_767_225_600u64})
    );
    let (content_type, body) = quota_exceeded(ErrorFormat::ProblemJson, "acme", None, 5, 10);
    assert_eq!(content_type, PROBLEM_JSON);
    let body = parse(&body);
    assert_eq!(body["type"], QUOTA_EXCEEDED_TYPE);
    assert_eq!(body["status"], 429);
    assert_eq!(body["error"], "quota_exceeded");
    assert_eq!(body["violated-policies"], json!(["quota"]));
    assert_eq!(body["retryAfter"], 5);
    assert!(body.get("quota").is_none(), "no plan known: no quota");
}

#[test]
fn problem_bodies_for_401_and_403() {
    let (content_type, body) = invalid_api_key(ErrorFormat::ProblemJson);
    assert_eq!(content_type, PROBLEM_JSON);
    let body = parse(&body);
    assert_eq!(
        (body["status"].as_u64(), body["title"].as_str()),
        (Some(401), Some("Unauthorized"))
    );
    assert_eq!(body["type"], "about:blank");
    let body = parse(&tenant_suspended(ErrorFormat::ProblemJson, "acme").1);
    assert_eq!(
        (body["status"].as_u64(), body["error"].as_str()),
        (Some(403), Some("tenant_suspended"))
    );
}
