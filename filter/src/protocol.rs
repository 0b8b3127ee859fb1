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
use crate::algorithm::{Algorithm, Grant, Quota};

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

/// A `strict` rule's question for one request: may `cost` permits be taken from the bucket
/// `(rule, key)` now? The sidecar decides with [`Algorithm::acquire`] (`min == max == cost`)
/// on the bucket's shared state, atomically per bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// The rule's name (1 to [`MAX_RULE_LEN`] bytes); labels metrics and namespaces the key.
    pub rule: String,
    /// The bucket: the filter's hash of the rule and the request's key parts.
    pub key: u64,
    /// The rule's algorithm.
    pub algorithm: WireAlgorithm,
    /// Permits per window (≥ 1), plan already applied.
    pub limit: u64,
    /// Window length in nanoseconds (≥ 1).
    pub window_ns: Nanos,
    /// Token bucket capacity (≥ 1); absent: the limit. Other algorithms ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// Leaky bucket: requests that may wait for their turn (default 0).
    #[serde(default)]
    pub queue: u64,
    /// Permits this request takes (≥ 1, default 1).
    #[serde(default = "one")]
    pub cost: u64,
    /// Checks of one [`CheckBatch`] with the same `group` are one request's: when any of them
    /// is refused, the sidecar gives back what the others took (the request is refused as a
    /// whole, so their permits were never used). Absent: the check stands alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<u32>,
}

const fn one() -> u64 {
    1
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

impl CheckRequest {
    /// The validated quota. Unlike [`Quota::new`], which silently raises zeros to 1, a wire
    /// request with a zero (or otherwise impossible) value is refused.
    pub fn quota(&self) -> Result<Quota, ProtocolError> {
        if self.cost == 0 {
            return Err(invalid("cost", "must be at least 1"));
        }
        validated_quota(
            &self.rule,
            self.algorithm,
            self.limit,
            self.window_ns,
            self.burst,
            self.queue,
        )
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

/// The sidecar's answer to a [`CheckRequest`]. Durations count from the sidecar's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckResponse {
    /// Whether the request's permits were taken (refused requests take nothing).
    pub admitted: bool,
    /// Permits left right after this decision (RateLimit-Remaining).
    pub remaining: u64,
    /// Time until the whole quota is available again if nothing more is admitted (RateLimit-Reset).
    pub reset_after_ns: Nanos,
    /// Refused: time until the request's cost could be granted (Retry-After); admitted: 0.
    pub retry_after_ns: Nanos,
    /// Leaky bucket with a queue: how long the admitted request waits before it is forwarded.
    pub delay_ns: Nanos,
}

impl CheckResponse {
    /// The response for `grant`, decided at the sidecar's `now`.
    pub fn from_grant(grant: &Grant, now: Nanos) -> Self {
        CheckResponse {
            admitted: grant.granted > 0,
            remaining: grant.remaining,
            reset_after_ns: grant.reset.saturating_sub(now),
            retry_after_ns: grant.retry_at.saturating_sub(now),
            delay_ns: grant.delay,
        }
    }
}

/// Several `strict` checks in one call: a worker sends the checks of every request that
/// arrived while its previous call was out, so that under load one call carries many
/// decisions. Each check is decided exactly as one [`CheckRequest`] would be, atomically per
/// bucket; checks of the same bucket are decided in the batch's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckBatch {
    /// 1 to [`MAX_CHECK_BATCH`] checks.
    pub checks: Vec<CheckRequest>,
}

impl CheckBatch {
    /// Checks the batch's size; each check is checked with [`CheckRequest::quota`].
    pub fn validate(&self) -> Result<(), ProtocolError> {
        if self.checks.is_empty() || self.checks.len() > MAX_CHECK_BATCH {
            return Err(invalid(
                "checks",
                format!("must hold 1 to {MAX_CHECK_BATCH} checks"),
            ));
        }
        Ok(())
    }
}

/// How many of the first of `queued` checks one [`CheckBatch`] carries: at most `max`, and
/// never one request's checks (the same `request` id) split between two batches — the sidecar
/// refunds a [`CheckRequest::group`] as a whole only when it sees all of it. (A request with
/// more than `max` checks, which no policy makes, would be split.)
pub fn batch_end<T>(queued: &[T], max: usize, request: impl Fn(&T) -> u32) -> usize {
    let end = queued.len().min(max);
    let (Some(next), Some(taken)) = (queued.get(end), queued.get(..end)) else {
        return end;
    };
    let next = request(next);
    match taken.iter().rposition(|q| request(q) != next) {
        Some(last_other) => last_other + 1,
        None => end,
    }
}

/// The answers to a [`CheckBatch`], in its order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckBatchResponse {
    /// One answer per check.
    pub results: Vec<CheckResponse>,
}

/// One worker's batch for `global` rules: what it admitted per bucket since its previous
/// batch. Sent every `sync_interval_ms` while anything changed, at most one batch in flight
/// per worker.
///
/// **Exactly once.** `(sender, seq)` names the batch. A batch that got no answer (timeout,
/// sidecar gone) is sent again *unchanged*, with the same `seq`, before anything newer; the
/// sidecar applies a `seq` only if it is higher than the last one it applied for `sender`, so a
/// batch that was applied but whose answer was lost is not counted twice
/// ([`SyncResponse::duplicate`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// The sending worker (random per filter instance).
    pub sender: u64,
    /// The node (one proxy) the worker belongs to; the sidecar counts the nodes that synced
    /// recently ([`SyncResponse::nodes`]).
    pub node: u64,
    /// The batch's number, increasing per sender.
    pub seq: u64,
    /// At most [`MAX_SYNC_ENTRIES`] buckets.
    pub entries: Vec<SyncEntry>,
    /// How long an allowance the sidecar grants for this batch stays the worker's
    /// ([`SyncTotal::allowance`]); 0 (the default, older filters): grant nothing, answer only
    /// the global totals.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lease_ns: Nanos,
    /// The sender's `sync_interval_ms` in nanoseconds: token and leaky buckets' allowances
    /// include what the global bucket refills in one interval (0: nothing).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval_ns: Nanos,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// One bucket's admissions in a [`SyncRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncEntry {
    /// The rule's name (1 to [`MAX_RULE_LEN`] bytes).
    pub rule: String,
    /// The bucket: the filter's hash of the rule and the request's key parts.
    pub key: u64,
    /// The rule's algorithm.
    pub algorithm: WireAlgorithm,
    /// Permits per window (≥ 1), plan already applied.
    pub limit: u64,
    /// Window length in nanoseconds (≥ 1).
    pub window_ns: Nanos,
    /// Token bucket capacity (≥ 1); absent: the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// Permits admitted on the node since the previous batch (0: only asking for the total).
    pub hits: u64,
    /// How long before sending the first of those permits was admitted. The sidecar applies
    /// the hits at its own `now` unless they are a whole window old, when they no longer
    /// count against any limit (after a long outage).
    #[serde(default)]
    pub age_ns: Nanos,
    /// Permits the worker refused for this bucket since its previous batch (its allowance or
    /// the node's bucket ran out). With `hits`, the worker's demand: the sidecar divides the
    /// global remaining in proportion to it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub denied: u64,
}

impl SyncEntry {
    /// The validated quota (see [`CheckRequest::quota`]).
    pub fn quota(&self) -> Result<Quota, ProtocolError> {
        validated_quota(
            &self.rule,
            self.algorithm,
            self.limit,
            self.window_ns,
            self.burst,
            0,
        )
    }
}

impl SyncRequest {
    /// Checks the batch's size; each entry is checked with [`SyncEntry::quota`].
    pub fn validate(&self) -> Result<(), ProtocolError> {
        if self.entries.len() > MAX_SYNC_ENTRIES {
            return Err(invalid(
                "entries",
                format!("at most {MAX_SYNC_ENTRIES} per batch (send the rest in the next one)"),
            ));
        }
        Ok(())
    }
}

/// The sidecar's answer to a [`SyncRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncResponse {
    /// Nodes that synced recently, this one included (≥ 1): while the sidecar is gone, each
    /// node limits `global` rules to its share, the limit divided by this.
    pub nodes: u64,
    /// This `(sender, seq)` was applied before (a retry whose first answer was lost): nothing
    /// was counted again, the totals are current.
    pub duplicate: bool,
    /// The global bucket of each entry after the batch, in the request's order.
    pub totals: Vec<SyncTotal>,
}

/// A global bucket's state as one number the filter folds into its node's bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncTotal {
    /// Permits available across all nodes right after the batch was applied.
    pub remaining: u64,
    /// Time until the whole quota is available again if nothing more is admitted.
    pub reset_after_ns: Nanos,
    /// Only when the batch asked for allowances ([`SyncRequest::lease_ns`]): the permits this
    /// worker may admit for the bucket from the instant the batch was applied until its next
    /// answer or `lease_ns`, whichever comes first — its share of the global remaining.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowance: Option<u64>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn request() -> CheckRequest {
        CheckRequest {
            rule: "per-tenant".into(),
            key: u64::MAX,
            algorithm: WireAlgorithm::TokenBucket,
            limit: 10,
            window_ns: 60_000_000_000,
            burst: Some(20),
            queue: 0,
            cost: 2,
            group: None,
        }
    }

    #[test]
    fn check_request_round_trips() {
        let json = serde_json::to_string(&request()).unwrap();
        assert!(json.contains(r#""algorithm":"token_bucket""#), "{json}");
        assert_eq!(
            serde_json::from_str::<CheckRequest>(&json).unwrap(),
            request()
        );
        assert!(
            !json.contains("group"),
            "a lone check says nothing of groups: {json}"
        );
        let grouped = CheckRequest {
            group: Some(7),
            ..request()
        };
        let json = serde_json::to_string(&grouped).unwrap();
        assert_eq!(
            serde_json::from_str::<CheckRequest>(&json).unwrap(),
            grouped
        );
    }

    #[test]
    fn batches_never_split_a_request() {
        let ids = |q: &u32| *q;
        assert_eq!(
            batch_end(&[1, 1, 2, 2, 2], 4, ids),
            2,
            "request 2 waits whole"
        );
        assert_eq!(batch_end(&[1, 1, 2, 2, 3], 4, ids), 4);
        assert_eq!(batch_end(&[1, 2], 4, ids), 2, "everything fits");
        assert_eq!(
            batch_end(&[5, 5, 5, 5, 5], 4, ids),
            4,
            "a group larger than a batch"
        );
        assert_eq!(batch_end::<u32>(&[], 4, ids), 0);
    }

    #[test]
    fn check_response_round_trips() {
        let response = CheckResponse {
            admitted: false,
            remaining: 0,
            reset_after_ns: 5,
            retry_after_ns: 3,
            delay_ns: 0,
        };
        let json = serde_json::to_string(&response).unwrap();
        assert_eq!(
            serde_json::from_str::<CheckResponse>(&json).unwrap(),
            response
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let json =
            r#"{"rule":"r","key":1,"algorithm":"fixed_window","limit":1,"window_ns":1,"colour":1}"#;
        let error = serde_json::from_str::<CheckRequest>(json).unwrap_err();
        assert!(
            error.to_string().contains("unknown field `colour`"),
            "{error}"
        );
        let json = r#"{"admitted":true,"remaining":0,"reset_after_ns":0,"retry_after_ns":0,"delay_ns":0,"x":0}"#;
        assert!(serde_json::from_str::<CheckResponse>(json).is_err());
    }

    #[test]
    fn algorithm_names_match_the_configuration() {
        let names = [
            ("fixed_window", Algorithm::FixedWindow),
            ("sliding_window_log", Algorithm::SlidingWindowLog),
            ("sliding_window_counter", Algorithm::SlidingWindowCounter),
            ("token_bucket", Algorithm::TokenBucket),
            ("leaky_bucket", Algorithm::LeakyBucket),
        ];
        for (name, algorithm) in names {
            let wire: WireAlgorithm = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(Algorithm::from(wire), algorithm);
            assert_eq!(WireAlgorithm::from(algorithm), wire);
        }
    }

    #[test]
    fn defaults_and_validation() {
        let json = r#"{"rule":"r","key":1,"algorithm":"token_bucket","limit":7,"window_ns":9}"#;
        let request: CheckRequest = serde_json::from_str(json).unwrap();
        assert_eq!((request.cost, request.queue, request.burst), (1, 0, None));
        assert_eq!(request.quota().unwrap(), Quota::new(7, 9, 7, 0));
        let bad = [
            (
                CheckRequest {
                    limit: 0,
                    ..request.clone()
                },
                "limit: must be at least 1",
            ),
            (
                CheckRequest {
                    window_ns: 0,
                    ..request.clone()
                },
                "window_ns: must be at least 1",
            ),
            (
                CheckRequest {
                    cost: 0,
                    ..request.clone()
                },
                "cost: must be at least 1",
            ),
            (
                CheckRequest {
                    burst: Some(0),
                    ..request.clone()
                },
                "burst: must be at least 1",
            ),
            (
                CheckRequest {
                    rule: String::new(),
                    ..request.clone()
                },
                "rule: must be 1 to",
            ),
        ];
        for (request, message) in bad {
            let error = request.quota().unwrap_err().to_string();
            assert!(error.starts_with(message), "{error}");
        }
    }

    #[test]
    fn response_times_are_relative_to_the_decision() {
        let grant = Grant {
            granted: 0,
            reset: 150,
            retry_at: 120,
            remaining: 0,
            ..Grant::default()
        };
        let response = CheckResponse::from_grant(&grant, 100);
        assert_eq!(
            (
                response.admitted,
                response.reset_after_ns,
                response.retry_after_ns
            ),
            (false, 50, 20)
        );
        // A grant in the past (clock moved back) never yields a negative wait.
        assert_eq!(CheckResponse::from_grant(&grant, 200).retry_after_ns, 0);
    }

    #[test]
    fn sync_messages_round_trip_and_validate() {
        let json = r#"{"sender":1,"node":2,"seq":3,"entries":[{"rule":"per-tenant","key":9,
            "algorithm":"token_bucket","limit":100,"window_ns":60000000000,"burst":10,"hits":4,"age_ns":5}]}"#;
        let batch: SyncRequest = serde_json::from_str(json).unwrap();
        assert_eq!(batch.validate(), Ok(()));
        let entry = batch.entries.first().unwrap();
        assert_eq!(
            entry.quota().unwrap(),
            Quota::new(100, 60_000_000_000, 10, 0)
        );
        // An older filter's batch: no allowance asked, nothing denied.
        assert_eq!((batch.lease_ns, batch.interval_ns, entry.denied), (0, 0, 0));
        let again: SyncRequest =
            serde_json::from_str(&serde_json::to_string(&batch).unwrap()).unwrap();
        assert_eq!(again, batch);
        let asking = SyncRequest {
            lease_ns: 700,
            interval_ns: 200,
            ..batch.clone()
        };
        let text = serde_json::to_string(&asking).unwrap();
        assert_eq!(serde_json::from_str::<SyncRequest>(&text).unwrap(), asking);

        let too_many = SyncRequest {
            entries: vec![entry.clone(); MAX_SYNC_ENTRIES + 1],
            ..batch.clone()
        };
        assert!(
            too_many
                .validate()
                .unwrap_err()
                .to_string()
                .starts_with("entries: at most")
        );
        let zero = SyncEntry {
            limit: 0,
            ..entry.clone()
        };
        assert_eq!(
            zero.quota().unwrap_err().to_string(),
            "limit: must be at least 1"
        );

        let response = SyncResponse {
            nodes: 3,
            duplicate: false,
            totals: vec![SyncTotal {
                remaining: 7,
                reset_after_ns: 8,
                allowance: None,
            }],
        };
        let text = serde_json::to_string(&response).unwrap();
        // Without allowances the answer is what older filters parse (no unknown field).
        assert!(!text.contains("allowance"), "{text}");
        assert_eq!(
            serde_json::from_str::<SyncResponse>(&text).unwrap(),
            response
        );
        let granted = SyncResponse {
            totals: vec![SyncTotal {
                allowance: Some(5),
                ..*response.totals.first().unwrap()
            }],
            ..response.clone()
        };
        let text = serde_json::to_string(&granted).unwrap();
        assert_eq!(
            serde_json::from_str::<SyncResponse>(&text).unwrap(),
            granted
        );
        assert!(
            serde_json::from_str::<SyncResponse>(
                r#"{"nodes":1,"duplicate":false,"totals":[],"x":1}"#
            )
            .is_err()
        );
    }
}
