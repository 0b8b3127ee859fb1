//! The two tenants of the tenant-scoped usage API tests, and the instant they ask at.
#![allow(dead_code)]

/// 2026-11-26T12:00:00Z (Unix nanoseconds).
pub const NOW: u64 = 1_795_694_400_000_000_000;
pub const ADMIN: &str = "admin-s3cret";
pub const ACME_KEY: &str = "sk_acme_1";
pub const GLOBEX_KEY: &str = "sk_globex_1";
/// The filter configuration the sidecar reads its tenants (hashed keys) from.
pub const CONFIG: &str = r#"{
    "rules": [],
    "tenants": {
        "sk_acme_1": { "id": "acme", "plan": "free" },
        "sk_globex_1": { "id": "globex", "plan": "pro" }
    }
}"#;

pub fn clock() -> u64 {
    NOW
}
