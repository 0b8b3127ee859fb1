use super::input::{PlanInput, TenantInput};
use super::keys::{new_key, sha256_hex, webhook_secret};

#[test]
fn keys_and_secrets_are_random_and_recognisable() {
    let (a, b) = (new_key(), new_key());
    assert_ne!(a, b);
    assert!(a.starts_with("tg_") && a.len() == 3 + 32, "{a}");
    let secret = webhook_secret();
    assert!(
        secret.starts_with("whsec_") && secret.len() == 6 + 44,
        "{secret}"
    );
    assert_eq!(
        sha256_hex("test"),
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    );
}

#[test]
fn inputs_default_and_name_the_refused_field() {
    let plan: PlanInput = serde_json::from_str(r#"{"requests_per_minute": 10}"#).unwrap();
    let plan = plan.validate("free").unwrap();
    assert_eq!(plan.meter_event_name, "api_requests");
    assert_eq!(plan.overage, tollgate_filter::registry::Overage::Block);
    let tenant: TenantInput = serde_json::from_str(r#"{"plan": "free"}"#).unwrap();
    let settings = tenant.clone().validate("acme").unwrap();
    assert_eq!(
        (settings.billing_anchor_day, settings.alerts.thresholds),
        (1, vec![80, 100])
    );
    let error = tenant.validate("a b").unwrap_err();
    assert_eq!(error.field, "id");
    for (json, field) in [
        (r#"{"requests_per_minute": 1, "burst": 0}"#, "burst"),
        (
            r#"{"requests_per_minute": 1, "monthly_quota": 0}"#,
            "monthly_quota",
        ),
        (
            r#"{"requests_per_minute": 1, "meter_event_name": ""}"#,
            "meter_event_name",
        ),
        (
            r#"{"requests_per_minute": 1, "overage_price": {"per": 0, "amount": 1, "currency": "usd"}}"#,
            "overage_price.per",
        ),
    ] {
        let plan: PlanInput = serde_json::from_str(json).unwrap();
        assert_eq!(plan.validate("p").unwrap_err().field, field, "{json}");
    }
    let long = format!(
        r#"{{"plan": "p", "alerts": {{"webhook_url": "https://x/{}"}}}}"#,
        "a".repeat(3000)
    );
    let tenant: TenantInput = serde_json::from_str(&long).unwrap();
    assert_eq!(
        tenant.validate("t").unwrap_err().field,
        "alerts.webhook_url"
    );
}
