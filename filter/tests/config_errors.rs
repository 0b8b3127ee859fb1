//! One fixture per kind of configuration mistake, each checked against the exact message the
//! filter gives (the message Envoy shows when it rejects the plugin configuration), and the
//! shared contract fixture checked to be accepted and compiled as written.
//!
//! `tests/fixtures/bad-config/NN-short-name.json` is a complete configuration with one mistake;
//! `NN-short-name.expected` holds the whole message on one line.
//!
//! These tests read files, so they do not run on `wasm32-unknown-unknown` (no file system);
//! the policy's unit tests do.
#![cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::path::{Path, PathBuf};

use tollgate_filter::SECOND;
use tollgate_filter::algorithm::Algorithm;
use tollgate_filter::policy::{
    ErrorFormat, FailureMode, HeaderStyle, KeyPart, LimitSpec, Match, Policy, Scope, Sidecar,
};

fn bad_config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad-config")
}

fn shared_fixture() -> Vec<u8> {
    // The repository's own copy of the contract fixture: the configuration every build accepts.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/filter-config.json");
    fs::read(&path)
        .unwrap_or_else(|e| panic!("the contract fixture {} is missing ({e})", path.display()))
}

#[test]
fn every_bad_config_fails_with_its_exact_message() {
    let mut fixtures: Vec<PathBuf> = fs::read_dir(bad_config_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 35, "only {} fixtures", fixtures.len());
    let mut failures = Vec::new();
    for fixture in &fixtures {
        let expected_path = fixture.with_extension("expected");
        let expected = fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        let expected = expected.trim();
        let name = fixture.file_name().unwrap().to_string_lossy();
        match Policy::from_json(&fs::read(fixture).unwrap()) {
            Ok(_) => failures.push(format!("{name}: accepted, expected `{expected}`")),
            Err(error) if error.to_string() == expected => {}
            Err(error) => failures.push(format!(
                "{name}:\n  expected `{expected}`\n  got      `{error}`"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures:\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_expected_message_has_a_fixture_and_is_one_line() {
    for entry in fs::read_dir(bad_config_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "expected") {
            assert!(
                path.with_extension("json").exists(),
                "{} has no .json",
                path.display()
            );
            let text = fs::read_to_string(&path).unwrap();
            assert_eq!(
                text.trim().lines().count(),
                1,
                "{} is not one line",
                path.display()
            );
        }
    }
}

#[test]
fn the_shared_fixture_is_accepted() {
    let policy = Policy::from_json(&shared_fixture()).unwrap_or_else(|e| panic!("rejected: {e}"));
    assert_eq!(policy.headers, HeaderStyle::Draft6);
    assert_eq!(policy.error_format, ErrorFormat::Json);
    assert_eq!(policy.failure_mode, FailureMode::Open);
    assert_eq!(policy.state_slots, 65_536);
    assert_eq!(
        policy.sidecar,
        Some(Sidecar {
            cluster: "tollgate_sidecar".into(),
            authority: "tollgate-sidecar".into(),
            timeout_ms: 100,
            sync_interval_ms: 200,
            nodes: None,
            token: None,
        })
    );
    assert_eq!(policy.identity.api_key_header.as_deref(), Some("x-api-key"));
    assert_eq!(policy.identity.xff_trusted_hops, 1);
    let jwt = policy.identity.jwt.as_ref().unwrap();
    assert_eq!(
        (
            jwt.header.as_str(),
            jwt.tenant_claim.as_str(),
            jwt.plan_claim.as_deref()
        ),
        ("authorization", "tenant", Some("plan"))
    );
    assert_eq!(jwt.metadata_namespace, "envoy.filters.http.jwt_authn");
    assert_eq!(jwt.payload_key, "jwt_payload");
}

#[test]
fn the_shared_fixture_compiles_its_plans_and_tenants() {
    let policy = Policy::from_json(&shared_fixture()).unwrap();
    let plans: Vec<(&str, u64)> = policy
        .plans
        .iter()
        .map(|p| (p.name.as_str(), p.requests_per_minute))
        .collect();
    assert_eq!(
        plans,
        [("free", 100), ("pro", 1_000), ("enterprise", 10_000)]
    );
    assert_eq!(policy.default_plan, Some(0));
    assert_eq!(policy.tenants.len(), 3);
    let pro = &policy.tenants["key-pro-0001"];
    assert_eq!((pro.id.as_str(), pro.plan), ("t-pro", 1));
    assert_eq!(pro.stripe_customer_id.as_deref(), Some("cus_TESTPRO0001"));
    let free = &policy.tenants["key-free-0001"];
    assert_eq!(
        (
            free.id.as_str(),
            free.plan,
            free.stripe_customer_id.as_deref()
        ),
        ("t-free", 0, None)
    );
    assert_eq!(policy.tenants["key-ent-0001"].plan, 2);
}

#[test]
fn the_shared_fixture_compiles_its_rules() {
    let policy = Policy::from_json(&shared_fixture()).unwrap();
    let names: Vec<&str> = policy.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "per-ip",
            "per-tenant",
            "reports",
            "exports",
            "integrations",
            "search-shadow"
        ]
    );
    let [per_ip, per_tenant, reports, exports, integrations, search] = &policy.rules[..] else {
        panic!("six rules expected");
    };
    let minute = 60 * SECOND;

    assert_eq!(per_ip.key, [KeyPart::ClientIp]);
    assert_eq!(per_ip.matcher, Match::default());
    assert_eq!(
        (per_ip.algorithm, per_ip.scope),
        (Algorithm::TokenBucket, Scope::Local)
    );
    assert_eq!(
        (&per_ip.limit, per_ip.window, per_ip.burst),
        (&LimitSpec::Fixed(600), minute, Some(50))
    );
    assert_eq!((per_ip.cost, per_ip.queue, per_ip.shadow), (1, 0, false));

    assert_eq!(
        (&per_tenant.limit, per_tenant.burst),
        (&LimitSpec::Plan, Some(10))
    );
    assert_eq!(
        (per_tenant.key.as_slice(), per_tenant.scope),
        (&[KeyPart::Tenant][..], Scope::Global)
    );

    assert_eq!(reports.key, [KeyPart::Tenant, KeyPart::Path]);
    assert_eq!(
        reports.matcher,
        Match {
            path_prefix: Some("/api/reports".into()),
            path_exact: None,
            methods: vec!["GET".into(), "POST".into()],
        }
    );
    assert_eq!(
        (reports.algorithm, reports.scope),
        (Algorithm::SlidingWindowLog, Scope::Strict)
    );
    assert_eq!(
        (&reports.limit, reports.burst),
        (&LimitSpec::Fixed(10), None)
    );

    assert_eq!(exports.algorithm, Algorithm::FixedWindow);
    assert_eq!(
        exports.limit,
        LimitSpec::PerPlan {
            by_plan: vec![Some(5), Some(50), Some(500)],
            default: 5
        }
    );
    assert_eq!(exports.window, 60 * minute);

    assert_eq!(integrations.algorithm, Algorithm::LeakyBucket);
    assert_eq!(
        (&integrations.limit, integrations.window, integrations.queue),
        (&LimitSpec::Fixed(5), SECOND, 10)
    );

    assert_eq!(search.algorithm, Algorithm::SlidingWindowCounter);
    assert!(search.shadow);
    assert_eq!(search.matcher.path_prefix.as_deref(), Some("/api/search"));
}
