//! Group commit of usage batches into Redis.
//!
//! A request handler turns its batch into [`Pending`] (one [`Part`] per tenant, keys already
//! named) and queues it; one committer task per store takes whatever is queued (at most
//! [`MAX_GROUP_RECORDS`] records, one batch per sender), merges the deltas of all batches per
//! live hash and per users HLL, and applies each tenant's merge with ONE [`INGEST_SCRIPT`] call
//! (all tenants' calls in flight at once), then one `SADD` of the tenants to
//! `usage:dirty-tenants`. Each handler is answered only after that: its data is in Redis.
//! One group is in Redis at a time and the next one gathers meanwhile, so under load groups
//! grow by themselves and the Redis work per record shrinks towards the work per distinct key.
//! Groups run one after the other, so a batch left for the next group (its sender already had
//! one in this group) is applied after it.
//!
//! **Exactly once.** The script checks every batch's mark before writing anything; if one is
//! stale (a retry, or a batch another sidecar applied meanwhile) it writes nothing and names
//! the stale ones, and the tenant's merge is rebuilt without them and sent again — so what a
//! script adds is exactly the sum of the batches whose marks it moves, in one atomic step, as
//! if each batch had been applied alone. One batch per sender per group keeps two batches of
//! one sender from sharing a script (their order would matter); the second waits for the
//! next group. The `SADD` after the scripts is the parent module's crash argument unchanged.
//!
//! [`INGEST_SCRIPT`]: super::INGEST_SCRIPT

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use futures_util::future::join_all;
use tokio::sync::{mpsc, oneshot};
use tollgate_filter::usage::{UsageBatch, UsageRecord};

use super::{Shared, bad, unavailable};
use crate::storage::usage::{Counters, StoreError};

mod in_order;
mod merge;

pub(super) use in_order::in_order;
use merge::invocation;

/// A group stops growing at this many records (bounds one script's arguments).
pub(super) const MAX_GROUP_RECORDS: usize = 16 * 1024;

/// One batch, prepared by its request handler, waiting for its group.
pub(super) struct Pending {
    sender: u64,
    parts: Vec<Part>,
    records: usize,
    /// Per part: applied now (`true`) or a duplicate.
    reply: oneshot::Sender<Result<Vec<bool>, StoreError>>,
}

/// One tenant's records of one batch.
struct Part {
    tenant: String,
    mark: String,
    seq: String,
    records: Vec<Record>,
    /// The plans its records name (consecutive repeats stored once).
    plans: Vec<String>,
}

/// One record with its keys named.
struct Record {
    hash: String,
    /// The day's users HLL, when the record has users.
    hll: Option<String>,
    values: [u64; 18],
    /// Index into [`Part::plans`].
    plan: Option<usize>,
    users: Vec<u64>,
}

impl Part {
    fn push(&mut self, base: &str, record: &UsageRecord) {
        let plan = record.plan.as_ref().map(|plan| {
            if self.plans.last() != Some(plan) {
                self.plans.push(plan.clone());
            }
            self.plans.len() - 1
        });
        self.records.push(Record {
            hash: format!("{base}{}:{}", record.date, record.endpoint),
            hll: (!record.users.is_empty()).then(|| format!("{base}users:{}", record.date)),
            values: Counters::from(record).values(),
            plan,
            users: record.users.clone(),
        });
    }
}

/// `batch` split by tenant, in first-seen order, its keys named.
fn parts(shared: &Shared, batch: &UsageBatch) -> Vec<Part> {
    let mut parts: Vec<(String, Part)> = Vec::new();
    let mut index: foldhash::HashMap<&str, usize> = foldhash::HashMap::default();
    for record in &batch.records {
        let n = *index.entry(&record.tenant).or_insert_with(|| {
            let base = shared.tenant_base(&record.tenant);
            let part = Part {
                tenant: record.tenant.clone(),
                mark: format!("{base}seq:{:016x}", batch.sender),
                seq: format!("{:020}", batch.seq),
                records: Vec::new(),
                plans: Vec::new(),
            };
            parts.push((base, part));
            parts.len() - 1
        });
        if let Some((base, part)) = parts.get_mut(n) {
            part.push(base, record);
        }
    }
    parts.into_iter().map(|(_, part)| part).collect()
}

/// The queue of a store's committer.
pub(super) type Queue = mpsc::UnboundedSender<Pending>;

/// Queues `batch` and waits for its group: per tenant of the batch (first-seen order),
/// applied or a duplicate, and its record count.
pub(super) async fn submit(
    shared: &Shared,
    queue: &Queue,
    batch: &UsageBatch,
) -> Result<Vec<(bool, u64)>, StoreError> {
    let Some((pending, answer)) = prepare(shared, batch) else {
        return Ok(Vec::new());
    };
    let sizes: Vec<u64> = pending
        .parts
        .iter()
        .map(|p| p.records.len() as u64)
        .collect();
    queue
        .send(pending)
        .map_err(|_| StoreError::Unavailable("usage committer stopped".into()))?;
    let fresh = answer
        .await
        .map_err(|_| StoreError::Unavailable("usage committer stopped".into()))??;
    Ok(fresh.into_iter().zip(sizes).collect())
}

/// The answer a [`Pending`] gets: per part, applied now or a duplicate.
pub(super) type Answer = oneshot::Receiver<Result<Vec<bool>, StoreError>>;

/// `batch` made ready for a group, with where its answer comes; `None` when it has no record.
pub(super) fn prepare(shared: &Shared, batch: &UsageBatch) -> Option<(Pending, Answer)> {
    let parts = parts(shared, batch);
    if parts.is_empty() {
        return None;
    }
    let (reply, answer) = oneshot::channel();
    let pending = Pending {
        sender: batch.sender,
        records: batch.records.len(),
        parts,
        reply,
    };
    Some((pending, answer))
}

/// Starts the committer of `shared`; it stops when every [`Queue`] is dropped.
pub(super) fn start(shared: Arc<Shared>) -> Queue {
    let (queue, mut incoming) = mpsc::unbounded_channel::<Pending>();
    tokio::spawn(async move {
        // Batches left out of a group (a second one of its sender), oldest first.
        let mut carried: VecDeque<Pending> = VecDeque::new();
        loop {
            let first = match carried.pop_front() {
                Some(first) => first,
                None => match incoming.recv().await {
                    Some(first) => first,
                    None => return,
                },
            };
            let mut senders = HashSet::from([first.sender]);
            let mut records = first.records;
            let mut group = vec![first];
            let mut later = VecDeque::new();
            while records < MAX_GROUP_RECORDS {
                let Some(pending) = carried.pop_front().or_else(|| incoming.try_recv().ok()) else {
                    break;
                };
                if senders.insert(pending.sender) {
                    records += pending.records;
                    group.push(pending);
                } else {
                    later.push_back(pending);
                }
            }
            later.append(&mut carried);
            carried = later;
            // One group at a time: measured, two in flight merged less and did less.
            commit(&shared, group).await;
        }
    });
    queue
}

/// Tenant → (batch index, part index) of its parts in `group`, in arrival order.
fn tenants_of(group: &[Pending]) -> Vec<(&str, Vec<(usize, usize)>)> {
    let mut tenants: Vec<(&str, Vec<(usize, usize)>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (b, pending) in group.iter().enumerate() {
        for (p, part) in pending.parts.iter().enumerate() {
            let slot = *index.entry(&part.tenant).or_insert_with(|| {
                tenants.push((&part.tenant, Vec::new()));
                tenants.len() - 1
            });
            if let Some((_, parts)) = tenants.get_mut(slot) {
                parts.push((b, p));
            }
        }
    }
    tenants
}

/// Applies one group (one batch per sender) and answers each of its batches.
pub(super) async fn commit(shared: &Shared, group: Vec<Pending>) {
    // Redis lost its data: nothing lands before the usage log replayed the older batches.
    if let Some(marker) = &shared.marker
        && let Err(error) = marker.check(&mut shared.connection.clone()).await
    {
        for pending in group {
            let _ = pending.reply.send(Err(error.clone()));
        }
        return;
    }
    let tenants = tenants_of(&group);
    let outcomes = join_all(
        tenants
            .iter()
            .map(|(tenant, parts)| apply_tenant(shared, tenant, &group, parts)),
    )
    .await;
    // The dirty-tenants SADD, of every tenant whose script ran (duplicates too).
    let done: Vec<&str> = tenants
        .iter()
        .zip(&outcomes)
        .filter(|(_, outcome)| outcome.is_ok())
        .map(|((tenant, _), _)| *tenant)
        .collect();
    let marked = if done.is_empty() {
        Ok(())
    } else {
        let mut connection = shared.connection.clone();
        redis::cmd("SADD")
            .arg(shared.dirty_tenants_key())
            .arg(&done)
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    };
    let mut answers: Vec<Result<Vec<bool>, StoreError>> = group
        .iter()
        .map(|pending| Ok(vec![false; pending.parts.len()]))
        .collect();
    for ((_, parts), outcome) in tenants.iter().zip(outcomes) {
        for (n, &(b, p)) in parts.iter().enumerate() {
            let Some(answer) = answers.get_mut(b) else {
                continue;
            };
            match (&outcome, &marked, answer.as_mut()) {
                (Ok(fresh), Ok(()), Ok(slots)) => {
                    if let (Some(slot), Some(&fresh)) = (slots.get_mut(p), fresh.get(n)) {
                        *slot = fresh;
                    }
                }
                (Err(error), _, Ok(_)) | (Ok(_), Err(error), Ok(_)) => *answer = Err(error.clone()),
                (_, _, Err(_)) => {}
            }
        }
    }
    for (pending, answer) in group.into_iter().zip(answers) {
        // A handler that is gone (its client hung up) retries and finds its batch applied.
        let _ = pending.reply.send(answer);
    }
}

/// One tenant's parts of a group: merged, applied by one script (again without the stale
/// batches when there are some). Per part: applied now or a duplicate.
async fn apply_tenant(
    shared: &Shared,
    tenant: &str,
    group: &[Pending],
    parts: &[(usize, usize)],
) -> Result<Vec<bool>, StoreError> {
    let part = |&(b, p): &(usize, usize)| group.get(b).and_then(|pending| pending.parts.get(p));
    let mut live: Vec<usize> = (0..parts.len()).collect();
    let mut fresh = vec![false; parts.len()];
    // Each round either succeeds or drops at least one batch.
    for _ in 0..=parts.len() {
        if live.is_empty() {
            break;
        }
        let chosen: Vec<&Part> = live
            .iter()
            .filter_map(|&n| parts.get(n).and_then(part))
            .collect();
        if chosen.len() != live.len() {
            return Err(bad(format!("a group lost a part of tenant {tenant}")));
        }
        let marks: Vec<(&str, &str)> = chosen
            .iter()
            .map(|part| (part.mark.as_str(), part.seq.as_str()))
            .collect();
        let stale: Vec<usize> = invocation(shared, tenant, &marks, &chosen)
            .invoke_async(&mut shared.connection.clone())
            .await
            .map_err(unavailable)?;
        if stale.is_empty() {
            for &n in &live {
                if let Some(slot) = fresh.get_mut(n) {
                    *slot = true;
                }
            }
            break;
        }
        if stale.iter().any(|&s| s == 0 || s > live.len()) {
            return Err(bad(format!("ingest script answered {stale:?}")));
        }
        let mut position = 0;
        live.retain(|_| {
            position += 1;
            !stale.contains(&position)
        });
    }
    Ok(fresh)
}
