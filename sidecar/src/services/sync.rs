//! A filter worker's batch for `global` rules (`POST /v1/sync`), added into the global
//! buckets exactly once, answered with each bucket's global total.
//!
//! The route has checked the batch whole (a bad entry is a 422 naming it) and computed each
//! entry's [`Quota`]. Then [`apply`]:
//!
//! 1. [`CounterStore::begin_batch`] records the node as seen, counts the nodes seen in the last
//!    [`NODE_TTL`](crate::storage::NODE_TTL) (`nodes`), and marks `(sender, seq)` as applied
//!    unless the sender's latest applied `seq` is already as high (`duplicate`: a retry whose
//!    answer was lost, or a batch overtaken by a newer one).
//! 2. Each entry, in its own [`CounterStore::update`] of the bucket `(rule, key)` — the bucket
//!    `strict` checks use, so a rule moved between the modes keeps its state: unless the batch
//!    is a duplicate or the hits are a window old (`age_ns ≥ window_ns`, counted in
//!    `tollgate_sync_expired_total`), the hits are taken from the bucket with
//!    [`Algorithm::absorb`] (as many as it has left: the nodes admitted them already); then the
//!    bucket's total is read. Entries are processed [`CONCURRENCY`] at a time, the totals
//!    answered in the request's order.
//!
//! **Marked before applied.** The mark is atomic and comes first, so a batch is never counted
//! twice, however its deliveries race. The price: when the store fails after the mark (the
//! sidecar crashes, Redis goes away mid-batch), the answer is a 503, the filter's retry is a
//! duplicate, and the hits not yet applied are lost. Losing one batch of one worker under-counts
//! a little for one window; counting it twice would over-limit every node.

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt, stream};
use tollgate_filter::Nanos;
use tollgate_filter::algorithm::{Algorithm, Quota, State as BucketState};
use tollgate_filter::protocol::{SyncEntry, SyncRequest, SyncResponse, SyncTotal};

use crate::metrics::{Metrics, SyncCounts};
use crate::storage::{CounterKey, CounterStore, StoreError, Write};

/// How many entries of one batch are processed at once (each is one store update: with Redis,
/// a `GET` and a compare-and-set).
pub const CONCURRENCY: usize = 32;

/// Applies `batch` (validated; `quotas` are its entries' quotas, in order) at `now` and
/// answers with the totals (see the module docs).
pub async fn apply<S: CounterStore>(
    store: &Arc<S>,
    metrics: &Metrics,
    batch: SyncRequest,
    quotas: Vec<Quota>,
    now: Nanos,
) -> Result<SyncResponse, StoreError> {
    let start = store
        .begin_batch(batch.sender, batch.seq, batch.node, now)
        .await?;
    let counts = counts(&batch.entries);
    // Owned items: a stream of futures borrowing from the batch is not `Send` to the compiler
    // (its closure would have to be general over the borrows' lifetimes).
    let totals = stream::iter(batch.entries.into_iter().zip(quotas))
        .map(|(entry, quota)| {
            let hits = if start.fresh && !expired(&entry) {
                entry.hits
            } else {
                0
            };
            total(Arc::clone(store), entry, quota, hits, now)
        })
        .buffered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    if start.fresh {
        metrics.sync_applied(counts);
    } else {
        metrics.sync_duplicate();
    }
    metrics.nodes(start.nodes);
    Ok(SyncResponse {
        nodes: start.nodes.max(1),
        duplicate: !start.fresh,
        totals,
    })
}

/// Whether an entry's hits are a whole window old, so no longer count against any limit.
fn expired(entry: &SyncEntry) -> bool {
    entry.age_ns >= entry.window_ns
}

/// What an applied batch carried, for the metrics.
fn counts(entries: &[SyncEntry]) -> SyncCounts {
    entries
        .iter()
        .fold(SyncCounts::default(), |mut counts, entry| {
            counts.entries += 1;
            if expired(entry) {
                counts.expired += 1;
            } else {
                counts.hits = counts.hits.saturating_add(entry.hits);
            }
            counts
        })
}

/// Adds `hits` into the entry's bucket and reads its total, in one atomic update.
async fn total<S: CounterStore>(
    store: Arc<S>,
    entry: SyncEntry,
    quota: Quota,
    hits: u64,
    now: Nanos,
) -> Result<SyncTotal, StoreError> {
    let algorithm = Algorithm::from(entry.algorithm);
    let admitted_at = now.saturating_sub(entry.age_ns);
    let key = CounterKey {
        rule: entry.rule,
        key: entry.key,
    };
    store
        .update(&key, now, |state| {
            fold(algorithm, &quota, state, admitted_at, now, hits)
        })
        .await
}

/// Takes `hits` permits (as many as are left) from `state` as of `admitted_at` — when the
/// node admitted the first of them (`now − age_ns`), so that a token bucket that was full
/// then does not count them a sync interval late and come out a token short of the node's —
/// and reports the bucket's total at `now`; asks for a write only if something was taken.
///
/// `reset_after_ns` comes from an [`Algorithm::acquire`] of zero permits, which grants
/// nothing, changes nothing, and reports in `reset` when the whole quota is available again
/// for the state as it is (an `acquire` of one permit would report it for the state *after*
/// that permit, a window or a period too late).
fn fold(
    algorithm: Algorithm,
    quota: &Quota,
    state: &mut BucketState,
    admitted_at: Nanos,
    now: Nanos,
    hits: u64,
) -> (SyncTotal, Write) {
    let taken = algorithm.absorb(quota, state, admitted_at, hits);
    let total = SyncTotal {
        remaining: algorithm.available(quota, state, now),
        reset_after_ns: algorithm
            .acquire(quota, state, now, 0, 0)
            .reset
            .saturating_sub(now),
    };
    let write = if taken > 0 {
        Write::State {
            idle_at: algorithm.idle_at(quota, state),
        }
    } else {
        Write::Nothing
    };
    (total, write)
}

#[cfg(test)]
mod tests;
