//! Several `strict` checks in one call (`POST /v1/checks`), each decided exactly as
//! `POST /v1/check` decides one. The route has checked the batch whole before.
//!
//! - **Same decisions as `/v1/check`, in the batch's order per bucket.** The checks of one
//!   bucket are decided together by [`decide_in_order`] — the function `/v1/check` uses for
//!   its one check — in one atomic update of the bucket: each check sees what the ones before
//!   it took, exactly as consecutive `/v1/check`s would (the third check of a bucket with two
//!   permits left is refused, whatever else the batch holds), for the price of one update (with
//!   Redis, usually two round trips) per bucket instead of per check. Different buckets are
//!   decided concurrently, [`CONCURRENCY`] at a time. Every decision is counted in
//!   `tollgate_decisions_total`.
//! - **A store failure fails the batch.** If any update fails (Redis unavailable, a bucket too
//!   contended, the in-memory store full), the whole batch is answered 503 with that error,
//!   and the filter handles it as it would a failed `/v1/check` for every check of the batch.
//!   Checks decided before the failure keep what they took (as a `/v1/check` whose answer is
//!   lost does): a failure never admits more than the limit, at worst it under-admits.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt, stream};
use tollgate_filter::Nanos;
use tollgate_filter::protocol::CheckResponse;

use super::check::{Check, decide_in_order};
use crate::metrics::Metrics;
use crate::storage::{CounterKey, CounterStore, StoreError};

/// How many buckets of one batch are decided at once.
pub const CONCURRENCY: usize = 32;

/// Decides `checks` (validated, in the batch's order) at `now`; one answer per check, in
/// their order (see the module docs).
pub async fn decide_all<S: CounterStore>(
    store: &Arc<S>,
    metrics: &Arc<Metrics>,
    checks: Vec<Check>,
    now: Nanos,
) -> Result<Vec<CheckResponse>, StoreError> {
    // Checks that belong to a request with others (several strict rules): kept to refund.
    let grouped: Vec<(usize, Check)> = checks
        .iter()
        .enumerate()
        .filter(|(_, check)| check.group.is_some())
        .map(|(n, check)| (n, check.clone()))
        .collect();
    let mut results: Vec<Option<CheckResponse>> = vec![None; checks.len()];
    // Owned items, as in `/v1/sync`: a stream of futures borrowing from the batch would not
    // be `Send`.
    let mut decided = stream::iter(by_bucket(checks))
        .map(|group| decide_group(Arc::clone(store), Arc::clone(metrics), group, now))
        .buffer_unordered(CONCURRENCY);
    while let Some((places, answers)) = decided.try_next().await? {
        for (n, answer) in places.into_iter().zip(answers) {
            if let Some(result) = results.get_mut(n) {
                *result = Some(answer);
            }
        }
    }
    drop(decided);
    refund_refused_groups(&**store, metrics, &grouped, &results, now).await?;
    // Every group answered every one of its checks: nothing is left `None`.
    Ok(results.into_iter().flatten().collect())
}

/// Gives back what the admitted checks of a refused request took: `grouped` are the batch's
/// checks that share a [`Check::group`] with others, by their place in the batch. The answers
/// stay as decided (the filter refuses the request anyway); the refunds are counted in
/// `tollgate_decisions_total{outcome="refunded"}`.
async fn refund_refused_groups<S: CounterStore>(
    store: &S,
    metrics: &Metrics,
    grouped: &[(usize, Check)],
    results: &[Option<CheckResponse>],
    now: Nanos,
) -> Result<(), StoreError> {
    let admitted = |n: usize| results.get(n).and_then(Option::as_ref).map(|r| r.admitted);
    let refused: HashSet<u32> = grouped
        .iter()
        .filter(|(n, _)| admitted(*n) == Some(false))
        .filter_map(|(_, check)| check.group)
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    for (n, check) in grouped {
        if admitted(*n) == Some(true) && check.group.is_some_and(|g| refused.contains(&g)) {
            check.refund(store, now, now).await?;
            metrics.refunded(&check.key().rule);
        }
    }
    Ok(())
}

/// One bucket's checks (in the batch's order) and their places in the batch.
struct Group {
    places: Vec<usize>,
    checks: Vec<Check>,
}

/// The checks grouped by bucket: each group in the batch's order, the groups in the order of
/// their first check.
fn by_bucket(checks: Vec<Check>) -> Vec<Group> {
    let mut group_of: HashMap<&CounterKey, usize> = HashMap::with_capacity(checks.len());
    let groups: Vec<usize> = checks
        .iter()
        .map(|check| {
            let next = group_of.len();
            *group_of.entry(check.key()).or_insert(next)
        })
        .collect();
    let mut grouped: Vec<Group> = Vec::with_capacity(group_of.len());
    grouped.resize_with(group_of.len(), || Group {
        places: Vec::new(),
        checks: Vec::new(),
    });
    for (n, (check, group)) in checks.into_iter().zip(groups).enumerate() {
        if let Some(group) = grouped.get_mut(group) {
            group.places.push(n);
            group.checks.push(check);
        }
    }
    grouped
}

/// Decides one bucket's checks; their places and answers.
async fn decide_group<S: CounterStore>(
    store: Arc<S>,
    metrics: Arc<Metrics>,
    group: Group,
    now: Nanos,
) -> Result<(Vec<usize>, Vec<CheckResponse>), StoreError> {
    let answers = decide_in_order(&*store, &metrics, &group.checks, now).await?;
    Ok((group.places, answers))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use tollgate_filter::protocol::{CheckRequest, WireAlgorithm};

    use super::*;

    fn check(rule: &str, key: u64) -> Check {
        Check::new(CheckRequest {
            rule: rule.into(),
            key,
            algorithm: WireAlgorithm::FixedWindow,
            limit: 1,
            window_ns: 1,
            burst: None,
            queue: 0,
            cost: 1,
            group: None,
        })
        .unwrap()
    }

    #[test]
    fn groups_keep_the_batch_order() {
        let checks = vec![check("a", 1), check("b", 1), check("a", 1), check("a", 2)];
        let places: Vec<Vec<usize>> = by_bucket(checks)
            .into_iter()
            .map(|group| group.places)
            .collect();
        assert_eq!(places, [vec![0, 2], vec![1], vec![3]]);
    }
}
