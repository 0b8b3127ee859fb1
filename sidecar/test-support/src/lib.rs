//! Dev-only helpers for the sidecar's tests (a `[dev-dependencies]` entry of
//! `tollgate-sidecar`, never shipped): throw-away servers ([`postgres::TestPostgres`],
//! [`redis::TestRedis`], [`redis::TestCluster`]), a raw HTTP/1.1 client for a sidecar process
//! ([`process`]), scratch directories ([`temp::TempDir`]), and the one rule for a test whose service cannot be started ([`missing`]).
//!
//! Unit tests inside the sidecar and its integration tests both use this crate, so no test
//! includes another file by path.
#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing
)]

pub mod postgres;
pub mod process;
pub mod redis;
pub mod temp;

/// The variable that lets a local run skip tests whose Redis or PostgreSQL cannot be started.
pub const SKIP_VARIABLE: &str = "TOLLGATE_TEST_SKIP_SERVICES";

/// What a test does when the service it needs cannot be started (`message` says why and how
/// to install it): it fails (panics), unless a skip was asked for explicitly with
/// `TOLLGATE_TEST_SKIP_SERVICES=1` — then it says so on stderr and returns, and the caller
/// returns early. `CI=true` never skips, whatever `TOLLGATE_TEST_SKIP_SERVICES` says, so CI
/// never passes a test that did not run.
pub fn missing(message: &str) {
    if skip_allowed(
        std::env::var("CI").ok().as_deref(),
        std::env::var(SKIP_VARIABLE).ok().as_deref(),
    ) {
        eprintln!("skipped ({SKIP_VARIABLE}=1): {message}");
    } else {
        panic!("{message} (set {SKIP_VARIABLE}=1 to skip such tests locally; never under CI=true)");
    }
}

/// Whether a missing service may skip a test, given `CI` and `TOLLGATE_TEST_SKIP_SERVICES`.
fn skip_allowed(ci: Option<&str>, skip: Option<&str>) -> bool {
    ci != Some("true") && skip == Some("1")
}

#[cfg(test)]
mod tests {
    use super::skip_allowed;

    #[test]
    fn only_an_explicit_skip_outside_ci_skips() {
        assert!(skip_allowed(None, Some("1")));
        assert!(skip_allowed(Some("false"), Some("1")));
        assert!(!skip_allowed(Some("true"), Some("1")));
        assert!(!skip_allowed(None, None));
        assert!(!skip_allowed(None, Some("0")));
        assert!(!skip_allowed(None, Some("yes")));
    }
}
