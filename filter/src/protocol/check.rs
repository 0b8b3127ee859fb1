//! `strict` rules' exchange: one [`CheckRequest`] per request, or several in a [`CheckBatch`].

use serde::{Deserialize, Serialize};

use super::{MAX_CHECK_BATCH, ProtocolError, WireAlgorithm, invalid, validated_quota};
use crate::Nanos;
use crate::algorithm::{Grant, Quota};

/// A `strict` rule's question for one request: may `cost` permits be taken from the bucket
/// `(rule, key)` now? The sidecar decides with
/// [`Algorithm::acquire`](crate::algorithm::Algorithm::acquire) (`min == max == cost`) on the
/// bucket's shared state, atomically per bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// The rule's name (1 to [`MAX_RULE_LEN`](super::MAX_RULE_LEN) bytes); labels metrics and
    /// namespaces the key.
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
