//! The usage flush: live usage aggregates → `api_usage_daily`, **exactly once across crashes**.
//!
//! Runs every `TOLLGATE_FLUSH_INTERVAL` while serving ([`crate::jobs::flush`], once more on
//! shutdown) and once on `tollgate-sidecar flush`. For every tenant the store lists as dirty
//! ([`UsageStore::dirty_tenants`]: live usage, or a flush that did not finish):
//!
//! 1. **Stage** ([`UsageStore::stage`]): atomically move the tenant's live aggregates to
//!    snapshot keys named with a fresh flush id (Redis: `RENAME usage:{t}:<date>:<endpoint>`
//!    to `usage:{t}:flush:<id>:<date>:<endpoint>`, the id remembered in `usage:{t}:staging`);
//!    new traffic goes to fresh aggregates from this instant. The answer lists every
//!    unreleased id of the tenant — this one and any leftovers.
//! 2. **Commit**, per listed id: read the snapshot and, in ONE database transaction, insert
//!    the id into `usage_flushes` and add every row with an additive upsert
//!    ([`UsageSink::apply`]). If the id is already in `usage_flushes`, the transaction adds nothing.
//! 3. **Release** ([`UsageStore::release`]): delete the snapshot. When all are gone,
//!    [`UsageStore::finish`] the tenant.
//!
//! A few tenants go through these steps at once ([`UsageSink::writers`]); each tenant's steps
//! stay in this order, and tenants share nothing (keys, flush ids, transactions), so the
//! argument below holds per tenant whatever the others do.
//!
//! Why a crash anywhere neither loses nor double-counts:
//!
//! - *Before or during step 1*: staging is one atomic script; either the aggregates are still
//!   live (the tenant stays listed in `flushing-tenants`, so the next flush stages them) or
//!   they are staged.
//! - *After step 1, before the commit of step 2*: the snapshot is still staged and its id is
//!   not in `usage_flushes`; the next flush lists it as a leftover and applies it — once,
//!   since a snapshot never changes after staging.
//! - *After the commit, before step 3*: the id is in `usage_flushes`; the next flush lists the
//!   snapshot again and its transaction finds the id and adds nothing, then releases it.
//! - *After step 3*: the tenant may still be listed; the next flush stages nothing new for it.
//!
//! The commit and the `usage_flushes` row are one transaction, which is the whole trick: the
//! database itself says whether a snapshot is in. The same guard makes two sidecars flushing
//! at once safe (the second transaction for an id waits for the first and then adds nothing),
//! and a snapshot is only released after its id committed, so whoever commits an id first
//! read it whole.
//!
//! Distinct users are stored as the day's HyperLogLog count (`api_active_users_daily`), kept
//! with `GREATEST`: HLL counts are not additive (a user seen before and after a flush would
//! count twice), but the day's HLL holds the whole day so far, so its latest count is the
//! answer and a replayed older count can only be smaller.

use futures_util::{StreamExt, stream};
use tollgate_filter::Nanos;

use crate::storage::sql::UsageSink;
use crate::storage::sql::sink::Applied;
use crate::storage::usage::{StoreError, UsageStore, new_flush_id};

/// A test hook: where [`flush_with`] stops, as if the process died right there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailAfter {
    /// After step 1 (stage) of the first tenant.
    Stage,
    /// After step 2 (the database commit) of the first snapshot.
    Commit,
    /// After step 3 (release) of the first snapshot, before the tenant is finished.
    Release,
}

/// What one flush did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Tenants looked at.
    pub tenants: u64,
    /// Snapshots added into the database now.
    pub applied: u64,
    /// Snapshots found already added (leftovers of a flush interrupted after its commit).
    pub already_applied: u64,
    /// Rows upserted into `api_usage_daily`.
    pub rows: u64,
}

/// Why a flush stopped (it is safe to run again at any time).
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// The usage store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The database failed.
    #[error("usage database: {0}")]
    Database(#[from] sqlx::Error),
    /// [`flush_with`] was told to stop here.
    #[error("flush stopped after {0:?} (injected)")]
    Injected(FailAfter),
}

/// Flushes every dirty tenant once (see the module docs).
pub async fn flush<S: UsageStore>(
    store: &S,
    database: &impl UsageSink,
    now: Nanos,
) -> Result<FlushReport, FlushError> {
    flush_with(store, database, now, None).await
}

/// [`flush`], stopping with [`FlushError::Injected`] at `fail` (tests).
pub async fn flush_with<S: UsageStore>(
    store: &S,
    database: &impl UsageSink,
    now: Nanos,
    fail: Option<FailAfter>,
) -> Result<FlushReport, FlushError> {
    // Tenants are independent (their own keys, flush ids and transactions), so several are
    // flushed at once into PostgreSQL. SQLite has one writer anyway; an injected stop flushes
    // one tenant at a time, so that it stops exactly there.
    let width = if fail.is_none() {
        database.writers()
    } else {
        1
    };
    let mut flushes = stream::iter(store.dirty_tenants().await?)
        .map(|tenant| flush_tenant(store, database, now, fail, tenant))
        .buffer_unordered(width);
    let mut report = FlushReport::default();
    while let Some(one) = flushes.next().await {
        let one = one?;
        report.tenants += one.tenants;
        report.applied += one.applied;
        report.already_applied += one.already_applied;
        report.rows += one.rows;
    }
    Ok(report)
}

/// Steps 1–3 for one tenant (see the module docs).
async fn flush_tenant<S: UsageStore>(
    store: &S,
    database: &impl UsageSink,
    now: Nanos,
    fail: Option<FailAfter>,
    tenant: String,
) -> Result<FlushReport, FlushError> {
    let stop = |step| {
        if fail == Some(step) {
            Err(FlushError::Injected(step))
        } else {
            Ok(())
        }
    };
    let mut report = FlushReport {
        tenants: 1,
        ..FlushReport::default()
    };
    let ids = store.stage(&tenant, &new_flush_id(now)).await?;
    stop(FailAfter::Stage)?;
    for id in ids {
        let snapshot = store.snapshot(&tenant, &id).await?;
        match database.apply(&snapshot).await? {
            Applied::Now => {
                report.applied += 1;
                report.rows += snapshot.rows.len() as u64;
            }
            Applied::Before => report.already_applied += 1,
        }
        stop(FailAfter::Commit)?;
        store.release(&tenant, &id).await?;
        stop(FailAfter::Release)?;
    }
    store.finish(&tenant).await?;
    Ok(report)
}
