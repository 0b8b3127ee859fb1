//! The in-process usage store: one lock over plain maps. Every operation is atomic (it runs
//! under the lock without awaiting), which is all the [`UsageStore`] contract asks; what a
//! crash of the process loses, it loses (the server flushes it on shutdown).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::{Future, ready};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tollgate_filter::Nanos;
use tollgate_filter::usage::{UsageBatch, parse_date};

use super::unflushed::{Unflushed, UnflushedUsage};
use super::{
    Counters, Ingested, MAX_AGE_DAYS, Snapshot, StoreError, UsageRow, UsageStore, by_tenant,
};
use crate::storage::SENDER_TTL;

/// `(tenant, date, endpoint)`.
type Key = (String, String, String);

/// A live aggregate.
#[derive(Default)]
struct Live {
    plan: String,
    counters: Counters,
}

#[derive(Default)]
struct Inner {
    /// `(sender, tenant)` → (latest applied seq, when last seen).
    marks: HashMap<(u64, String), (u64, Nanos)>,
    /// Marks are swept for expiry when there are this many (then twice what is left), so that
    /// sweeping costs O(1) per batch amortized.
    next_sweep: usize,
    live: BTreeMap<Key, Live>,
    /// `(tenant, date)` → the day's distinct users.
    users: HashMap<(String, String), HashSet<u64>>,
    /// `(tenant, date)` whose users changed since the tenant was last staged.
    dirty_users: BTreeSet<(String, String)>,
    /// Staged snapshots, oldest first.
    staged: Vec<Snapshot>,
    /// Tenant → how many of its stages moved something ([`Unflushed::generation`]).
    stages: HashMap<String, u64>,
}

/// A [`UsageStore`] in this process, holding at most `capacity` live aggregates and
/// `(tenant, date)` user sets (beyond: [`StoreError::Full`], 503, and the filter retries).
pub struct MemoryUsageStore {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl MemoryUsageStore {
    /// An empty store.
    pub fn new(capacity: usize) -> Self {
        MemoryUsageStore {
            inner: Mutex::new(Inner::default()),
            capacity,
        }
    }

    /// The lock; a poisoned one is still consistent (nothing under it panics).
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets stale sender marks, and checks that `batch` fits whole (forgetting user sets of
    /// days no batch may add to any more if needed): a batch is applied whole or refused whole.
    fn make_room(
        &self,
        inner: &mut Inner,
        batch: &UsageBatch,
        now: Nanos,
    ) -> Result<(), StoreError> {
        if inner.marks.len() >= inner.next_sweep {
            inner
                .marks
                .retain(|_, (_, seen)| now.saturating_sub(*seen) < SENDER_TTL);
            inner.next_sweep = inner.marks.len().saturating_mul(2).max(1_024);
        }
        // Bound first, so that a batch is applied whole or refused whole.
        let mut new_keys = 0;
        for record in &batch.records {
            let key = (
                record.tenant.clone(),
                record.date.clone(),
                record.endpoint.clone(),
            );
            new_keys += usize::from(!inner.live.contains_key(&key));
        }
        if inner.live.len() + inner.users.len() + new_keys > self.capacity {
            // Make room by forgetting user sets of days no batch may add to any more.
            let oldest = (now / 86_400_000_000_000) as i64 - MAX_AGE_DAYS;
            let Inner {
                users, dirty_users, ..
            } = inner;
            users.retain(|day, _| {
                dirty_users.contains(day) || parse_date(&day.1).is_some_and(|d| d >= oldest)
            });
        }
        if inner.live.len() + inner.users.len() + new_keys > self.capacity {
            return Err(StoreError::Full {
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    fn ingest_now(&self, batch: &UsageBatch, now: Nanos) -> Result<Ingested, StoreError> {
        self.apply(&mut self.lock(), batch, now)
    }

    /// [`UsageStore::ingest_in_order`] under one lock.
    fn ingest_all_now(&self, batches: &[UsageBatch], now: Nanos) -> Result<Ingested, StoreError> {
        let mut inner = self.lock();
        let mut sum = Ingested::default();
        for batch in batches {
            let ingested = self.apply(&mut inner, batch, now)?;
            sum.applied += ingested.applied;
            sum.duplicate += ingested.duplicate;
        }
        Ok(sum)
    }

    fn apply(
        &self,
        inner: &mut Inner,
        batch: &UsageBatch,
        now: Nanos,
    ) -> Result<Ingested, StoreError> {
        self.make_room(inner, batch, now)?;
        let mut outcome = Ingested::default();
        for (tenant, records) in by_tenant(batch) {
            let key = (batch.sender, tenant.to_owned());
            let fresh = inner
                .marks
                .get(&key)
                .is_none_or(|&(last, _)| last < batch.seq);
            if !fresh {
                if let Some(mark) = inner.marks.get_mut(&key) {
                    mark.1 = now;
                }
                outcome.duplicate += records.len() as u64;
                continue;
            }
            inner.marks.insert(key, (batch.seq, now));
            for record in records {
                let key = (
                    record.tenant.clone(),
                    record.date.clone(),
                    record.endpoint.clone(),
                );
                let live = inner.live.entry(key).or_default();
                live.counters.add(&Counters::from(record));
                if let Some(plan) = &record.plan {
                    live.plan.clone_from(plan);
                }
                if !record.users.is_empty() {
                    let day = (record.tenant.clone(), record.date.clone());
                    inner
                        .users
                        .entry(day.clone())
                        .or_default()
                        .extend(&record.users);
                    inner.dirty_users.insert(day);
                }
                outcome.applied += 1;
            }
        }
        Ok(outcome)
    }

    fn stage_now(&self, tenant: &str, flush_id: &str) -> Vec<String> {
        let mut inner = self.lock();
        let keys: Vec<Key> = inner
            .live
            .range((tenant.to_owned(), String::new(), String::new())..)
            .take_while(|((t, _, _), _)| t == tenant)
            .map(|(key, _)| key.clone())
            .collect();
        let mut snapshot = Snapshot {
            tenant: tenant.to_owned(),
            flush_id: flush_id.to_owned(),
            ..Snapshot::default()
        };
        for key in keys {
            if let Some(live) = inner.live.remove(&key) {
                let (_, date, endpoint) = key;
                snapshot.rows.push(UsageRow {
                    date,
                    endpoint,
                    plan: live.plan,
                    counters: live.counters,
                });
            }
        }
        let days: Vec<(String, String)> = inner
            .dirty_users
            .iter()
            .filter(|(t, _)| t == tenant)
            .cloned()
            .collect();
        for day in days {
            inner.dirty_users.remove(&day);
            let count = inner.users.get(&day).map_or(0, |users| users.len() as u64);
            snapshot.users.push((day.1, count));
        }
        if !snapshot.rows.is_empty() || !snapshot.users.is_empty() {
            inner.staged.push(snapshot);
            *inner.stages.entry(tenant.to_owned()).or_default() += 1;
        }
        inner
            .staged
            .iter()
            .filter(|s| s.tenant == tenant)
            .map(|s| s.flush_id.clone())
            .collect()
    }
}

impl UsageStore for MemoryUsageStore {
    fn ingest(
        &self,
        batch: &UsageBatch,
        now: Nanos,
    ) -> impl Future<Output = Result<Ingested, StoreError>> + Send {
        ready(self.ingest_now(batch, now))
    }

    fn ingest_in_order(
        &self,
        batches: &[UsageBatch],
        now: Nanos,
    ) -> impl Future<Output = Result<Ingested, StoreError>> + Send {
        ready(self.ingest_all_now(batches, now))
    }

    fn dirty_tenants(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send {
        let inner = self.lock();
        let tenants: BTreeSet<String> = inner
            .live
            .keys()
            .map(|(tenant, _, _)| tenant.clone())
            .chain(inner.dirty_users.iter().map(|(tenant, _)| tenant.clone()))
            .chain(inner.staged.iter().map(|s| s.tenant.clone()))
            .collect();
        ready(Ok(tenants.into_iter().collect()))
    }

    fn stage(
        &self,
        tenant: &str,
        flush_id: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send {
        ready(Ok(self.stage_now(tenant, flush_id)))
    }

    fn snapshot(
        &self,
        tenant: &str,
        flush_id: &str,
    ) -> impl Future<Output = Result<Snapshot, StoreError>> + Send {
        let inner = self.lock();
        let snapshot = inner
            .staged
            .iter()
            .find(|s| s.tenant == tenant && s.flush_id == flush_id)
            .cloned()
            .unwrap_or_else(|| Snapshot {
                tenant: tenant.to_owned(),
                flush_id: flush_id.to_owned(),
                ..Snapshot::default()
            });
        ready(Ok(snapshot))
    }

    fn release(
        &self,
        tenant: &str,
        flush_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.lock()
            .staged
            .retain(|s| s.tenant != tenant || s.flush_id != flush_id);
        ready(Ok(()))
    }

    fn finish(&self, _tenant: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
        // Dirty tenants are derived from the maps: nothing to forget.
        ready(Ok(()))
    }

    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        ready(Ok(()))
    }
}

impl UnflushedUsage for MemoryUsageStore {
    fn unflushed(
        &self,
        tenant: &str,
    ) -> impl Future<Output = Result<Unflushed, StoreError>> + Send {
        let inner = self.lock();
        let live = inner
            .live
            .range((tenant.to_owned(), String::new(), String::new())..)
            .take_while(|((t, _, _), _)| t == tenant)
            .map(|((_, date, endpoint), live)| UsageRow {
                date: date.clone(),
                endpoint: endpoint.clone(),
                plan: live.plan.clone(),
                counters: live.counters,
            })
            .collect();
        let unflushed = Unflushed {
            generation: inner.stages.get(tenant).copied().unwrap_or(0),
            live,
            staged: inner
                .staged
                .iter()
                .filter(|s| s.tenant == tenant)
                .cloned()
                .collect(),
        };
        ready(Ok(unflushed))
    }

    fn generations(
        &self,
        tenants: &[String],
    ) -> impl Future<Output = Result<Vec<u64>, StoreError>> + Send {
        let inner = self.lock();
        let generations = tenants
            .iter()
            .map(|t| inner.stages.get(t).copied().unwrap_or(0))
            .collect();
        ready(Ok(generations))
    }

    fn live_users(
        &self,
        tenant: &str,
        dates: &[String],
    ) -> impl Future<Output = Result<BTreeMap<String, u64>, StoreError>> + Send {
        let inner = self.lock();
        let users = dates
            .iter()
            .filter_map(|date| {
                let day = (tenant.to_owned(), date.clone());
                inner
                    .users
                    .get(&day)
                    .map(|users| (date.clone(), users.len() as u64))
            })
            .collect();
        ready(Ok(users))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::usage::contract;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_contract() {
        contract::run_all(|| MemoryUsageStore::new(1 << 16)).await;
    }
}
