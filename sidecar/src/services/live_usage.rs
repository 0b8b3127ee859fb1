//! Usage as it is now: the flushed rows of the usage database plus what the live usage store
//! ([`UnflushedUsage`]) holds and has not flushed yet, read through the same [`UsageQueries`]
//! the usage API, the quota job, billing, the dashboard and alerts use. [`LiveUsage`] wraps the
//! database and the store; without a store it reads the database alone.
//!
//! # The rule: each request counted exactly once, even while a flush runs
//!
//! A tenant's usage is in one of three places, and the flush ([`crate::services::flush`])
//! moves it along them: *live* → (stage, atomic in the store) → *staged under flush id X* →
//! (commit, one database transaction: the rows and X into `usage_flushes`) → *in the
//! database, and still staged* → (release, atomic in the store) → *in the database only*.
//! Between the commit and the release a snapshot is in both places. So a read of one tenant
//! is:
//!
//! 1. **R**: read the store atomically ([`UnflushedUsage::unflushed`]): live rows, every
//!    staged snapshot with its flush id, and the tenant's *stage generation* (how many stages
//!    moved something; bumped in the same atomic step as the stage).
//! 2. **C₁**: which of those flush ids are committed ([`UsageSink::committed`]).
//! 3. **S**: read the database rows.
//! 4. **C₂**: the same question again, and **G**: the generation again.
//!
//! The answer is **S + live + every staged snapshot whose id is not committed** — *provided*
//! C₁ = C₂ and G = R's generation; otherwise the read starts over, after a short pause, at
//! most [`ATTEMPTS`] times, and then fails (the quota job tries again on its next round, the
//! usage API answers 503). A tenant is staged once per flush interval (default 5 minutes)
//! and a read takes milliseconds, so a second attempt practically always succeeds; only a
//! tenant staged during each of [`ATTEMPTS`] reads in a row fails a read.
//!
//! Why that is exact, as of instant R: a commit is atomic and never undone, so C₁ = C₂ means
//! every staged id had the same state during all of S: committed ones are in S (and skipped
//! from the store), the others are not (and counted from the store). G unchanged means no
//! stage moved anything between R and G, so nothing that was live at R reached the database
//! before S (a stage comes before any commit), and usage ingested after R is still live,
//! outside S. What S holds beyond that came from snapshots released before R, which R no
//! longer sees. Nothing is counted twice, nothing acknowledged before R is missed. A
//! [`UsageQueries::period_requests`] of many tenants does steps 1–4 in bulk (one read of the
//! database for all, the store read only for tenants it lists as dirty or flushing) and redoes
//! the single-tenant read for the few tenants whose check failed.
//!
//! **Active users** are not additive: the database keeps, per day, the store's distinct-user
//! count as of the last flush, and the store's per-day set (Redis: a HyperLogLog, ±0.81 %)
//! keeps the whole day, flushed or not, for [`MAX_AGE_DAYS`] + 2 days after its last write.
//! So a day's live count is the larger of the two; older days are the database's.

mod summary;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures_util::future::try_join_all;
use tollgate_filter::usage::{format_date, parse_date};

use crate::storage::sql::query::{Counts, DailyRow};
use crate::storage::sql::summary::UsageSummary;
use crate::storage::sql::{TenantRange, UsageQueries, UsageSink};
use crate::storage::usage::{
    Counters, LiveStore, MAX_AGE_DAYS, StoreError, Unflushed, UnflushedUsage,
};

/// How many times a read starts over when a flush moved the tenant's usage under it.
pub const ATTEMPTS: u32 = 8;

/// The pause before attempt `n` (1-based) starts over: `n` ms, so that a flush in progress
/// (a few ms per tenant) gets to finish its stage and commit.
const BACKOFF: std::time::Duration = std::time::Duration::from_millis(1);

/// Tenants whose store state is read at once by a bulk read.
const CONCURRENCY: usize = 32;

/// The usage database and the live usage store, read as one ([`UsageQueries`]).
pub struct LiveUsage<D> {
    database: D,
    store: Option<Arc<dyn LiveStore>>,
}

impl<D: Clone> Clone for LiveUsage<D> {
    fn clone(&self) -> Self {
        LiveUsage {
            database: self.database.clone(),
            store: self.store.clone(),
        }
    }
}

impl<D> LiveUsage<D> {
    /// The database's flushed usage plus `store`'s unflushed usage.
    pub fn new<S: UnflushedUsage>(database: D, store: Arc<S>) -> Self {
        LiveUsage {
            database,
            store: Some(store),
        }
    }

    /// The database's flushed usage only (no live store).
    pub fn flushed(database: D) -> Self {
        LiveUsage {
            database,
            store: None,
        }
    }

    /// The same, reading `store` too.
    pub fn with_store<S: UnflushedUsage>(mut self, store: Arc<S>) -> Self {
        self.store = Some(store);
        self
    }

    /// The usage database.
    pub fn database(&self) -> &D {
        &self.database
    }
}

/// A store failure, as the [`UsageQueries`] error.
fn store_error(error: StoreError) -> sqlx::Error {
    sqlx::Error::AnyDriverError(Box::new(error))
}

/// The usage of `unflushed` not in the database: the live rows and the staged snapshots whose
/// flush id is not in `committed`, as `(date, endpoint, counters)`.
pub fn pending(
    unflushed: &Unflushed,
    committed: &HashSet<String>,
) -> Vec<(String, String, Counters)> {
    let staged = unflushed
        .staged
        .iter()
        .filter(|snapshot| !committed.contains(&snapshot.flush_id))
        .flat_map(|snapshot| &snapshot.rows);
    unflushed
        .live
        .iter()
        .chain(staged)
        .map(|row| (row.date.clone(), row.endpoint.clone(), row.counters))
        .collect()
}

/// `rows` with `more` added in, by `(date, endpoint)`, only dates from `from` to `to`.
pub fn merge(
    rows: Vec<DailyRow>,
    more: &[(String, String, Counters)],
    from: &str,
    to: &str,
) -> Vec<DailyRow> {
    let mut merged: BTreeMap<(String, String), Counts> = rows
        .into_iter()
        .map(|row| ((row.date, row.endpoint), row.counts))
        .collect();
    for (date, endpoint, counters) in more {
        if date.as_str() < from || date.as_str() > to {
            continue;
        }
        merged
            .entry((date.clone(), endpoint.clone()))
            .or_default()
            .add(&counts(counters));
    }
    merged
        .into_iter()
        .map(|((date, endpoint), counts)| DailyRow {
            date,
            endpoint,
            counts,
        })
        .collect()
}

fn counts(counters: &Counters) -> Counts {
    Counts {
        requests: counters.requests,
        bytes_in: counters.bytes_in,
        bytes_out: counters.bytes_out,
        errors_4xx: counters.errors_4xx,
        errors_5xx: counters.errors_5xx,
        latency_ms_sum: counters.latency_ms_sum,
        latency_buckets: counters.latency_buckets.to_vec(),
    }
}

fn requests_in(pending: &[(String, String, Counters)], from: &str, to: &str) -> u64 {
    pending
        .iter()
        .filter(|(date, _, _)| date.as_str() >= from && date.as_str() <= to)
        .fold(0u64, |sum, (_, _, c)| sum.saturating_add(c.requests))
}

fn staged_ids(unflushed: &Unflushed) -> Vec<String> {
    unflushed
        .staged
        .iter()
        .map(|s| s.flush_id.clone())
        .collect()
}

impl<D: UsageSink> LiveUsage<D> {
    async fn committed(&self, ids: &[String]) -> Result<HashSet<String>, sqlx::Error> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        self.database.committed(ids).await
    }

    /// Steps 1–4 of the module docs for one tenant: `read`'s database answer and the
    /// tenant's pending usage, consistent with each other.
    async fn consistent<T, F, Fut>(
        &self,
        store: &dyn LiveStore,
        tenant: &str,
        read: F,
    ) -> Result<(T, Vec<(String, String, Counters)>), sqlx::Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let tenants = [tenant.to_owned()];
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(BACKOFF * attempt).await;
            }
            let unflushed = store.read_unflushed(tenant).await.map_err(store_error)?;
            let ids = staged_ids(&unflushed);
            let before = self.committed(&ids).await?;
            let value = read().await?;
            let after = self.committed(&ids).await?;
            let generation = store
                .read_generations(&tenants)
                .await
                .map_err(store_error)?;
            if before == after && generation.first() == Some(&unflushed.generation) {
                return Ok((value, pending(&unflushed, &after)));
            }
        }
        Err(store_error(StoreError::Unavailable(format!(
            "the usage of {tenant} kept moving under {ATTEMPTS} reads (flushes back to back)"
        ))))
    }
}

impl<D> UsageQueries for LiveUsage<D>
where
    D: UsageQueries + UsageSink,
{
    async fn daily_rows(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<DailyRow>, sqlx::Error> {
        let Some(store) = &self.store else {
            return self.database.daily_rows(tenant, from, to).await;
        };
        let (rows, more) = self
            .consistent(store.as_ref(), tenant, || {
                self.database.daily_rows(tenant, from, to)
            })
            .await?;
        Ok(merge(rows, &more, from, to))
    }

    async fn active_users(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<BTreeMap<String, u64>, sqlx::Error> {
        let mut users = self.database.active_users(tenant, from, to).await?;
        let Some(store) = &self.store else {
            return Ok(users);
        };
        let dates = recent_dates(from, to);
        let live = store
            .read_users(tenant, &dates)
            .await
            .map_err(store_error)?;
        for (date, count) in live {
            let day = users.entry(date).or_default();
            *day = (*day).max(count);
        }
        Ok(users)
    }

    /// The database's summary with the pending usage added ([`summary`]); folded from every
    /// row when that cannot be exact.
    async fn usage_summary(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
        top: usize,
    ) -> Result<UsageSummary, sqlx::Error> {
        let Some(store) = &self.store else {
            return self.database.usage_summary(tenant, from, to, top).await;
        };
        let asked = top.saturating_add(summary::EXTRA);
        let (database, more) = self
            .consistent(store.as_ref(), tenant, || {
                self.database.usage_summary(tenant, from, to, asked)
            })
            .await?;
        match summary::merge_summary(database, asked, &more, from, to, top) {
            Some(merged) => Ok(merged),
            None => {
                let rows = self.daily_rows(tenant, from, to).await?;
                Ok(UsageSummary::fold(&rows, top))
            }
        }
    }

    async fn period_requests(
        &self,
        ranges: &[TenantRange],
    ) -> Result<HashMap<String, u64>, sqlx::Error> {
        let Some(store) = &self.store else {
            return self.database.period_requests(ranges).await;
        };
        let dirty: HashSet<String> = store
            .read_dirty()
            .await
            .map_err(store_error)?
            .into_iter()
            .collect();
        let mut wanted: HashMap<&str, &TenantRange> = HashMap::new();
        for range in ranges.iter().filter(|r| dirty.contains(&r.tenant)) {
            wanted.insert(&range.tenant, range);
        }
        let wanted: Vec<&TenantRange> = wanted.into_values().collect();
        let mut reads: Vec<(&TenantRange, Unflushed)> = Vec::with_capacity(wanted.len());
        for chunk in wanted.chunks(CONCURRENCY) {
            let one = chunk
                .iter()
                .map(|range| store.read_unflushed(&range.tenant));
            let read = try_join_all(one).await.map_err(store_error)?;
            reads.extend(chunk.iter().copied().zip(read));
        }
        let ids: Vec<String> = reads.iter().flat_map(|(_, u)| staged_ids(u)).collect();
        let before = self.committed(&ids).await?;
        let mut totals = self.database.period_requests(ranges).await?;
        let after = self.committed(&ids).await?;
        let tenants: Vec<String> = reads.iter().map(|(r, _)| r.tenant.clone()).collect();
        let generations = store
            .read_generations(&tenants)
            .await
            .map_err(store_error)?;
        for ((range, unflushed), generation) in reads.iter().zip(generations) {
            let ids = staged_ids(unflushed);
            let steady = generation == unflushed.generation
                && ids
                    .iter()
                    .all(|id| before.contains(id) == after.contains(id));
            let requests = if steady {
                let flushed = totals.get(&range.tenant).copied().unwrap_or(0);
                flushed.saturating_add(requests_in(
                    &pending(unflushed, &after),
                    &range.from,
                    &range.to,
                ))
            } else {
                let rows = self
                    .daily_rows(&range.tenant, &range.from, &range.to)
                    .await?;
                rows.iter()
                    .fold(0u64, |sum, row| sum.saturating_add(row.counts.requests))
            };
            if requests > 0 {
                totals.insert(range.tenant.clone(), requests);
            }
        }
        Ok(totals)
    }
}

/// The dates from `from` to `to` whose users the store may still hold: at most the last
/// [`MAX_AGE_DAYS`] + 2 of them.
fn recent_dates(from: &str, to: &str) -> Vec<String> {
    let (Some(first), Some(last)) = (parse_date(from), parse_date(to)) else {
        return Vec::new();
    };
    let first = first.max(last - MAX_AGE_DAYS - 1);
    (first..=last).map(format_date).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
