//! `global` rules' exchange: a worker's [`SyncRequest`] batch and the totals it gets back.

use serde::{Deserialize, Serialize};

use super::{MAX_SYNC_ENTRIES, ProtocolError, WireAlgorithm, invalid, validated_quota};
use crate::Nanos;
use crate::algorithm::Quota;

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
    /// The rule's name (1 to [`MAX_RULE_LEN`](super::MAX_RULE_LEN) bytes).
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
