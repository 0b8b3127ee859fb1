//! One `strict` decision: the filter's own [`Algorithm::acquire`] with `min == max == cost`,
//! run inside [`CounterStore::update`] so that concurrent checks of one bucket never both take
//! its last permit. A refused check takes nothing and writes nothing. `POST /v1/check` decides
//! one [`Check`]; `POST /v1/checks` ([`super::checks`]) decides its checks with the same
//! [`decide_in_order`].

use tollgate_filter::Nanos;
use tollgate_filter::algorithm::{Algorithm, Grant, Quota, State as BucketState};
use tollgate_filter::protocol::{CheckRequest, CheckResponse, ProtocolError};

use crate::metrics::Metrics;
use crate::storage::{CounterKey, CounterStore, StoreError, Write};

/// A validated check: its bucket and how to decide it.
#[derive(Clone)]
pub struct Check {
    key: CounterKey,
    algorithm: Algorithm,
    quota: Quota,
    cost: u64,
    /// The request the check belongs to within its batch ([`CheckRequest::group`]).
    pub(crate) group: Option<u32>,
}

impl Check {
    /// The check `request` asks for, if its fields are valid.
    pub fn new(request: CheckRequest) -> Result<Self, ProtocolError> {
        Ok(Check {
            quota: request.quota()?,
            group: request.group,
            algorithm: Algorithm::from(request.algorithm),
            cost: request.cost,
            key: CounterKey {
                rule: request.rule,
                key: request.key,
            },
        })
    }

    /// Takes the check's cost from `state` at `now`, or nothing if it does not fit.
    fn acquire(&self, state: &mut BucketState, now: Nanos) -> Grant {
        let Check {
            algorithm,
            quota,
            cost,
            ..
        } = self;
        algorithm.acquire(quota, state, now, *cost, *cost)
    }

    /// When `state` becomes idle under the check's quota.
    fn idle_at(&self, state: &BucketState) -> Nanos {
        self.algorithm.idle_at(&self.quota, state)
    }

    /// The check's bucket.
    pub(crate) fn key(&self) -> &CounterKey {
        &self.key
    }

    /// Gives back the permits this check took at `granted_at` (another check of its request
    /// was refused). Exact as far as the algorithm can tell (see [`Algorithm::refund`]).
    pub(crate) async fn refund<S: CounterStore>(
        &self,
        store: &S,
        granted_at: Nanos,
        now: Nanos,
    ) -> Result<(), StoreError> {
        store
            .update(&self.key, now, |state| {
                self.algorithm
                    .refund(&self.quota, state, now, granted_at, self.cost);
                let idle_at = self.idle_at(state);
                ((), Write::State { idle_at })
            })
            .await
    }

    /// Decides the check at `now` in one atomic update of its bucket, and counts the decision
    /// in `metrics`.
    pub async fn decide<S: CounterStore>(
        &self,
        store: &S,
        metrics: &Metrics,
        now: Nanos,
    ) -> Result<CheckResponse, StoreError> {
        let responses = decide_in_order(store, metrics, std::slice::from_ref(self), now).await?;
        responses.into_iter().next().ok_or(StoreError::Unavailable(
            "the store answered no decision".into(),
        ))
    }
}

/// Decides `checks`, all of one bucket, in their order, in one atomic update of the bucket
/// (one read-decide-write: with Redis usually two round trips, however many checks): each
/// check is the filter's [`Algorithm::acquire`] with `min == max == cost` on the state the
/// checks before it left, exactly as if each had been a `/v1/check` of its own, one after the
/// other. A refused check takes nothing; the bucket is written if any check was admitted, live
/// until the latest `idle_at` of the checks' quotas (they normally share one). Counts each
/// decision in `metrics`; the answers are in the checks' order.
pub async fn decide_in_order<S: CounterStore>(
    store: &S,
    metrics: &Metrics,
    checks: &[Check],
    now: Nanos,
) -> Result<Vec<CheckResponse>, StoreError> {
    let Some(first) = checks.first() else {
        return Ok(Vec::new());
    };
    let grants = store
        .update(&first.key, now, |state| {
            let grants: Vec<Grant> = checks
                .iter()
                .map(|check| check.acquire(state, now))
                .collect();
            let write = if grants.iter().any(|grant| grant.granted > 0) {
                let idle_at = checks.iter().map(|check| check.idle_at(state)).max();
                Write::State {
                    idle_at: idle_at.unwrap_or(now),
                }
            } else {
                Write::Nothing
            };
            (grants, write)
        })
        .await?;
    Ok(checks
        .iter()
        .zip(grants)
        .map(|(check, grant)| {
            metrics.decision(&check.key.rule, grant.granted > 0);
            CheckResponse::from_grant(&grant, now)
        })
        .collect())
}
