//! The filter↔sidecar wire protocol: one definition, used by the filter (sender) and the
//! sidecar (receiver).
//!
//! Every message is JSON. Unknown fields are rejected on both sides, so a typo or a version
//! mismatch fails loudly instead of being silently ignored.
//!
//! **Times are relative.** Every duration in a response (`*_after_ns`, `delay_ns`) counts
//! nanoseconds from the instant the sidecar decided, never an absolute timestamp: nodes'
//! clocks may disagree, and a relative value means the same thing on every node (the filter
//! adds it to its own `now`).
//!
//! Two exchanges: `strict` rules ask [`CHECK_PATH`] once per request ([`CheckRequest`] →
//! [`CheckResponse`]); `global` rules decide locally and every `sync_interval_ms` each worker
//! sends what it admitted since its last batch to [`SYNC_PATH`] ([`SyncRequest`] →
//! [`SyncResponse`]), then folds the global totals back into its node's buckets.
//!
//! ```
//! use tollgate_filter::protocol::{CheckRequest, WireAlgorithm};
//!
//! let request: CheckRequest = serde_json::from_str(
//!     r#"{"rule": "per-tenant", "key": 42, "algorithm": "fixed_window",
//!         "limit": 100, "window_ns": 60000000000}"#,
//! ).unwrap();
//! assert_eq!(request.algorithm, WireAlgorithm::FixedWindow);
//! assert_eq!(request.quota().unwrap().burst, 100); // burst defaults to the limit
//! ```

use serde::{Deserialize, Serialize};

use crate::Nanos;
use crate::algorithm::{Algorithm, Quota};

mod check;
mod stats;
mod sync;
#[cfg(test)]
mod tests;

pub use check::{CheckBatch, CheckBatchResponse, CheckRequest, CheckResponse, batch_end};
pub use stats::{MAX_STATS_COUNTERS, MAX_STATS_RULES, RuleTotals, STATS_PATH, StatsReport};
pub use sync::{SyncEntry, SyncRequest, SyncResponse, SyncTotal};

/// The sidecar path that answers a [`CheckRequest`] with a [`CheckResponse`].
pub const CHECK_PATH: &str = "/v1/check";

/// The sidecar path that answers a [`CheckBatch`] with a [`CheckBatchResponse`].
pub const CHECKS_PATH: &str = "/v1/checks";

/// The most checks one [`CheckBatch`] may carry.
pub const MAX_CHECK_BATCH: usize = 256;

/// The sidecar path that answers a [`SyncRequest`] with a [`SyncResponse`].
pub const SYNC_PATH: &str = "/v1/sync";

/// The most entries one [`SyncRequest`] may carry (a worker with more changed keys sends the
/// rest in its next batch).
pub const MAX_SYNC_ENTRIES: usize = 512;

/// The longest rule name a request may carry.
pub const MAX_RULE_LEN: usize = 128;

/// The largest `limit` a `sliding_window_log` check may ask for: the log stores one timestamp
/// per admitted request (the same bound the filter's configuration enforces).
pub const MAX_LOG_LIMIT: u64 = 10_000;

/// [`Algorithm`] on the wire, spelled as in the filter configuration (`fixed_window`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireAlgorithm {
    /// [`Algorithm::FixedWindow`].
    FixedWindow,
    /// [`Algorithm::SlidingWindowLog`].
    SlidingWindowLog,
    /// [`Algorithm::SlidingWindowCounter`].
    SlidingWindowCounter,
    /// [`Algorithm::TokenBucket`].
    TokenBucket,
    /// [`Algorithm::LeakyBucket`].
    LeakyBucket,
}

impl From<Algorithm> for WireAlgorithm {
    fn from(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::FixedWindow => WireAlgorithm::FixedWindow,
            Algorithm::SlidingWindowLog => WireAlgorithm::SlidingWindowLog,
            Algorithm::SlidingWindowCounter => WireAlgorithm::SlidingWindowCounter,
            Algorithm::TokenBucket => WireAlgorithm::TokenBucket,
            Algorithm::LeakyBucket => WireAlgorithm::LeakyBucket,
        }
    }
}

impl From<WireAlgorithm> for Algorithm {
    fn from(algorithm: WireAlgorithm) -> Self {
        match algorithm {
            WireAlgorithm::FixedWindow => Algorithm::FixedWindow,
            WireAlgorithm::SlidingWindowLog => Algorithm::SlidingWindowLog,
            WireAlgorithm::SlidingWindowCounter => Algorithm::SlidingWindowCounter,
            WireAlgorithm::TokenBucket => Algorithm::TokenBucket,
            WireAlgorithm::LeakyBucket => Algorithm::LeakyBucket,
        }
    }
}

/// Why a [`CheckRequest`] cannot be decided; the message names the field and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A field's value is out of range.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// What is wrong and what would be accepted.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ProtocolError {
    ProtocolError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// The checks every bucket description on the wire passes (see [`CheckRequest::quota`]).
fn validated_quota(
    rule: &str,
    algorithm: WireAlgorithm,
    limit: u64,
    window_ns: Nanos,
    burst: Option<u64>,
    queue: u64,
) -> Result<Quota, ProtocolError> {
    if rule.is_empty() || rule.len() > MAX_RULE_LEN {
        return Err(invalid(
            "rule",
            format!("must be 1 to {MAX_RULE_LEN} bytes long"),
        ));
    }
    if limit == 0 {
        return Err(invalid("limit", "must be at least 1"));
    }
    if algorithm == WireAlgorithm::SlidingWindowLog && limit > MAX_LOG_LIMIT {
        return Err(invalid(
            "limit",
            format!(
                "sliding_window_log holds at most {MAX_LOG_LIMIT} (use sliding_window_counter)"
            ),
        ));
    }
    if window_ns == 0 {
        return Err(invalid("window_ns", "must be at least 1"));
    }
    let burst = burst.unwrap_or(limit);
    if burst == 0 {
        return Err(invalid(
            "burst",
            "must be at least 1 (or absent: the limit)",
        ));
    }
    Ok(Quota::new(limit, window_ns, burst, queue))
}
