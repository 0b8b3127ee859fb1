#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::registry::{Overage, RegistryKey, TenantStatus};

fn hex(hash: &KeyHash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

fn key(plain: &str, tenant: &str) -> RegistryKey {
    RegistryKey {
        sha256: hex(&sha256(plain)),
        tenant: tenant.into(),
        expires_at: None,
    }
}

fn tenant(id: &str, plan: &str) -> RegistryTenant {
    RegistryTenant {
        id: id.into(),
        plan: plan.into(),
        status: TenantStatus::Active,
        period_start: 0,
        period_end: 100,
        quota_exhausted: false,
    }
}

fn feed(version: u64, full: bool) -> RegistryFeed {
    RegistryFeed {
        version,
        full,
        ..RegistryFeed::default()
    }
}

#[test]
fn sha256_is_the_standard_one() {
    // printf test | sha256sum
    assert_eq!(
        hex(&sha256("test")),
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    );
    let upper = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
    assert_eq!(parse_hash(upper), Some(sha256("test")));
    assert_eq!(parse_hash("9f86"), None);
    assert_eq!(parse_hash(&"g".repeat(64)), None);
    assert_eq!(parse_hash(&"é".repeat(32)), None);
}

#[test]
fn full_then_deltas_in_version_order() {
    let mut table = Table::default();
    let mut first = feed(5, true);
    first.plans.push(RegistryPlan {
        name: "pro".into(),
        requests_per_minute: 600,
        burst: None,
        monthly_quota: Some(10),
        overage: Overage::Block,
    });
    first.tenants.push(tenant("acme", "pro"));
    first.keys.push(key("k1", "acme"));
    assert!(table.apply(first));
    assert_eq!(table.version, 5);
    assert!(table.keys.contains_key(&sha256("k1")));

    let mut delta = feed(6, false);
    delta.keys.push(key("k2", "acme"));
    delta.removed_keys.push(hex(&sha256("k1")));
    assert!(table.apply(delta.clone()));
    assert!(!table.keys.contains_key(&sha256("k1")), "revoked");
    assert!(table.keys.contains_key(&sha256("k2")), "added");

    // An old or repeated delta changes nothing.
    let mut stale = feed(6, false);
    stale.keys.push(key("k3", "acme"));
    assert!(!table.apply(stale));
    assert!(!table.keys.contains_key(&sha256("k3")));
    assert_eq!(table.version, 6);
}

#[test]
fn a_full_feed_replaces_everything() {
    let mut table = Table::default();
    let mut first = feed(3, true);
    first.tenants.push(tenant("acme", "pro"));
    first.keys.push(key("k1", "acme"));
    table.apply(first);
    let mut second = feed(9, true);
    second.tenants.push(tenant("beta", "free"));
    second.keys.push(key("k2", "beta"));
    assert!(table.apply(second));
    assert!(!table.keys.contains_key(&sha256("k1")));
    assert!(!table.tenants.contains_key("acme"));
    assert!(table.tenants.contains_key("beta"));
    // A sidecar that starts its versions again sends a full feed with a lower version.
    assert!(table.apply(feed(1, true)));
    assert_eq!(table.version, 1);
    assert!(table.keys.is_empty());
    // The same full version twice: nothing to do.
    assert!(!table.apply(feed(1, true)));
}

#[test]
fn removals_win_over_additions_in_one_feed() {
    let mut table = Table::default();
    let mut both = feed(2, true);
    both.tenants.push(tenant("acme", "pro"));
    both.keys.push(key("k1", "acme"));
    both.removed_keys.push(hex(&sha256("k1")));
    both.removed_tenants.push("gone".into());
    table.apply(both);
    assert!(table.keys.is_empty());
    let mut delete = feed(3, false);
    delete.removed_tenants.push("acme".into());
    table.apply(delete);
    assert!(table.tenants.is_empty());
}
