//! [`UsageStore::ingest_in_order`](crate::storage::usage::UsageStore::ingest_in_order) on
//! Redis: a run of batches (the usage log's replay) applied with one [`INGEST_SCRIPT`] call per
//! tenant and span of consecutive batches, instead of one group per batch of each sender
//! ([`REPLAY_SCRIPT`], which writes an aggregate that does not exist yet with one `HSET`).
//!
//! Per tenant, its records of each batch of the run are taken in run order. A batch whose
//! `seq` is not above an earlier batch's of the same sender is a duplicate for the tenant
//! whatever Redis holds (that earlier one either lands, moving the mark to its `seq`, or finds
//! the mark there already). The others are cut into spans of at most [`MAX_GROUP_RECORDS`]
//! records (the bound that keeps `HINCRBY` from overflowing midway), applied one after the
//! other. A span's records are merged per aggregate, and its script gets, per sender, its
//! mark twice: with the sender's first `seq` in the span and with its last. The script checks
//! every mark before writing anything and sets them in order, so a span lands whole with each
//! mark at its sender's last `seq`, exactly as its batches one by one would have, or — when a
//! mark is already at or above a sender's first `seq` (part of the run was applied before: a
//! replay run again, or one that stopped midway) — nothing is written: the marks named are
//! read, the batches at or below them dropped as duplicates, and the rest sent again. A span
//! that fails stops its tenant (no later span of it runs); tenants are independent (their
//! marks are their own) and run concurrently. Then one `SADD usage:dirty-tenants` of the
//! tenants whose scripts ran, as for a group.
//!
//! [`INGEST_SCRIPT`]: super::super::INGEST_SCRIPT
//! [`REPLAY_SCRIPT`]: super::super::REPLAY_SCRIPT

use foldhash::{HashMap, HashMapExt};
use futures_util::future::join_all;
use tollgate_filter::usage::{UsageBatch, UsageRecord};

use super::merge::{Merged, call};
use super::{MAX_GROUP_RECORDS, Shared, bad, unavailable};
use crate::storage::usage::Counters;
use crate::storage::usage::{Ingested, StoreError};

/// One tenant's records of one batch of the run.
struct Ordered<'b> {
    /// The batch's index in the run.
    batch: usize,
    sender: u64,
    seq: u64,
    records: Vec<&'b UsageRecord>,
}

impl Ordered<'_> {
    fn records(&self) -> u64 {
        self.records.len() as u64
    }
}

/// Per tenant (first seen first), its records of each batch of `batches`, in order.
fn by_tenant(batches: &[UsageBatch]) -> Vec<(&str, Vec<Ordered<'_>>)> {
    let mut tenants: Vec<(&str, Vec<Ordered>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (n, batch) in batches.iter().enumerate() {
        for record in &batch.records {
            let slot = *index.entry(&record.tenant).or_insert_with(|| {
                tenants.push((&record.tenant, Vec::new()));
                tenants.len() - 1
            });
            let Some((_, run)) = tenants.get_mut(slot) else {
                continue;
            };
            match run.last_mut() {
                Some(last) if last.batch == n => last.records.push(record),
                _ => run.push(Ordered {
                    batch: n,
                    sender: batch.sender,
                    seq: batch.seq,
                    records: vec![record],
                }),
            }
        }
    }
    tenants
}

/// Applies `batches` in order (see the module docs); the sums of applied and duplicate
/// records. On an error, what landed before it stays (and is a duplicate when run again).
pub(in super::super) async fn in_order(
    shared: &Shared,
    batches: &[UsageBatch],
) -> Result<Ingested, StoreError> {
    if let Some(marker) = &shared.marker {
        marker.check(&mut shared.connection.clone()).await?;
    }
    let tenants = by_tenant(batches);
    let outcomes = join_all(
        tenants
            .iter()
            .map(|(tenant, run)| apply_run(shared, tenant, run)),
    )
    .await;
    let ran: Vec<&str> = tenants
        .iter()
        .zip(&outcomes)
        .filter(|(_, (_, ran, _))| *ran)
        .map(|((tenant, _), _)| *tenant)
        .collect();
    if !ran.is_empty() {
        redis::cmd("SADD")
            .arg(shared.dirty_tenants_key())
            .arg(&ran)
            .query_async::<()>(&mut shared.connection.clone())
            .await
            .map_err(unavailable)?;
    }
    let mut sum = Ingested::default();
    for (ingested, _, outcome) in outcomes {
        outcome?;
        sum.applied += ingested.applied;
        sum.duplicate += ingested.duplicate;
    }
    Ok(sum)
}

/// One tenant's batches of the run, span after span: what it counted, whether a script ran
/// (the tenant's dirty `SADD` is due), and the first error (nothing after it was tried).
async fn apply_run(
    shared: &Shared,
    tenant: &str,
    run: &[Ordered<'_>],
) -> (Ingested, bool, Result<(), StoreError>) {
    let mut sum = Ingested::default();
    let mut top: HashMap<u64, u64> = HashMap::new();
    let mut rising: Vec<&Ordered> = Vec::with_capacity(run.len());
    for ordered in run {
        match top.get(&ordered.sender) {
            Some(&seq) if ordered.seq <= seq => sum.duplicate += ordered.records(),
            _ => {
                top.insert(ordered.sender, ordered.seq);
                rising.push(ordered);
            }
        }
    }
    let mut ran = false;
    let mut rest = rising.as_slice();
    while !rest.is_empty() {
        let mut records = 0;
        let end = rest
            .iter()
            .position(|ordered| {
                records += ordered.records.len();
                records > MAX_GROUP_RECORDS
            })
            .unwrap_or(rest.len())
            .max(1);
        let (span, later) = rest.split_at(end);
        match apply_span(shared, tenant, span).await {
            Ok(ingested) => {
                ran = true;
                sum.applied += ingested.applied;
                sum.duplicate += ingested.duplicate;
            }
            Err(error) => return (sum, ran, Err(error)),
        }
        rest = later;
    }
    (sum, ran, Ok(()))
}

/// Per aggregate hash and per users HyperLogLog of `tenant` (keys named), the records of
/// `span` merged: sums, the last plan, the users.
type Merge<'r> = (Vec<(String, Merged<'r>)>, Vec<(String, Vec<u64>)>);

fn merge<'r>(shared: &Shared, tenant: &str, span: &[&Ordered<'r>]) -> Merge<'r> {
    let base = shared.tenant_base(tenant);
    let mut hashes: Vec<(String, Merged)> = Vec::new();
    let mut hash_index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut hlls: Vec<(String, Vec<u64>)> = Vec::new();
    let mut hll_index: HashMap<&str, usize> = HashMap::new();
    for record in span.iter().flat_map(|ordered| &ordered.records) {
        let slot = *hash_index
            .entry((&record.date, &record.endpoint))
            .or_insert_with(|| {
                let key = format!("{base}{}:{}", record.date, record.endpoint);
                hashes.push((key, Merged::default()));
                hashes.len() - 1
            });
        if let Some((_, merged)) = hashes.get_mut(slot) {
            merged.add(Counters::from(*record).values(), record.plan.as_deref());
        }
        if !record.users.is_empty() {
            let slot = *hll_index.entry(&record.date).or_insert_with(|| {
                hlls.push((format!("{base}users:{}", record.date), Vec::new()));
                hlls.len() - 1
            });
            if let Some((_, users)) = hlls.get_mut(slot) {
                users.extend(&record.users);
            }
        }
    }
    (hashes, hlls)
}

/// One span (each sender's `seq`s rising): one script, again without the batches that the
/// marks it names show applied already.
async fn apply_span(
    shared: &Shared,
    tenant: &str,
    span: &[&Ordered<'_>],
) -> Result<Ingested, StoreError> {
    let base = shared.tenant_base(tenant);
    let mut live: Vec<&Ordered> = span.to_vec();
    let mut sum = Ingested::default();
    // Each round either lands or drops at least one batch (but for a mark that expired between
    // the script and its read: then the next round lands).
    for _ in 0..=span.len() + 1 {
        if live.is_empty() {
            return Ok(sum);
        }
        // Per sender (first seen first): its first seq in the span and its last.
        let mut senders: Vec<(u64, u64, u64)> = Vec::new();
        let mut slots: HashMap<u64, usize> = HashMap::new();
        for ordered in &live {
            let slot = *slots.entry(ordered.sender).or_insert_with(|| {
                senders.push((ordered.sender, ordered.seq, ordered.seq));
                senders.len() - 1
            });
            if let Some((_, _, last)) = senders.get_mut(slot) {
                *last = ordered.seq;
            }
        }
        let mut named: Vec<(u64, String, String)> = Vec::with_capacity(2 * senders.len());
        for &(sender, first, last) in &senders {
            let mark = format!("{base}seq:{sender:016x}");
            named.push((sender, mark.clone(), format!("{first:020}")));
            if last != first {
                named.push((sender, mark, format!("{last:020}")));
            }
        }
        let marks: Vec<(&str, &str)> = named
            .iter()
            .map(|(_, mark, seq)| (mark.as_str(), seq.as_str()))
            .collect();
        let (hashes, mut hlls) = merge(shared, tenant, &live);
        let stale: Vec<usize> = call(shared, &shared.replay, tenant, &marks, &hashes, &mut hlls)
            .invoke_async(&mut shared.connection.clone())
            .await
            .map_err(unavailable)?;
        if stale.is_empty() {
            sum.applied += live.iter().map(|ordered| ordered.records()).sum::<u64>();
            return Ok(sum);
        }
        // The marks named (each sender once): all of the tenant's hash tag, so one MGET
        // (legal on a cluster).
        let mut stale_marks: Vec<(u64, &str)> = Vec::new();
        for position in stale {
            let (sender, mark, _) = position
                .checked_sub(1)
                .and_then(|n| named.get(n))
                .ok_or_else(|| bad(format!("ingest script answered position {position}")))?;
            if !stale_marks.iter().any(|(s, _)| s == sender) {
                stale_marks.push((*sender, mark));
            }
        }
        let keys: Vec<&str> = stale_marks.iter().map(|(_, mark)| *mark).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut shared.connection.clone())
            .await
            .map_err(unavailable)?;
        for ((sender, _), value) in stale_marks.iter().zip(values) {
            let Some(value) = value else { continue };
            let mark: u64 = value
                .parse()
                .map_err(|_| bad(format!("a sender mark of {tenant} holds {value:?}")))?;
            live.retain(|ordered| {
                let applied = ordered.sender == *sender && ordered.seq <= mark;
                if applied {
                    sum.duplicate += ordered.records();
                }
                !applied
            });
        }
    }
    Err(bad(format!(
        "the sender marks of {tenant} kept moving during a replay"
    )))
}
