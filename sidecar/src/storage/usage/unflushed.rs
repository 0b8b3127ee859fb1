//! Reading the usage that is not in the usage database yet: a tenant's live aggregates and its
//! staged snapshots, with the tenant's *stage generation*, so that a reader can add them to
//! the flushed rows without counting anything twice or missing it
//! ([`crate::services::live_usage`] states and proves the rule).
//!
//! Each store keeps, per tenant, a counter of stages that moved something (Redis:
//! `usage:{t}:stages`, bumped by the stage script in the same atomic step as the renames;
//! memory: under the store's lock). [`Unflushed`] is read in one atomic step (a Lua script on
//! Redis), so its live rows, its staged snapshots and its generation belong together.

use std::collections::BTreeMap;
use std::future::Future;

use super::{Snapshot, StoreError, UsageRow, UsageStore};

/// What one tenant has in the usage store, read at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unflushed {
    /// How many stages of the tenant moved something, ever (only grows).
    pub generation: u64,
    /// Live aggregates (not staged yet), by `(date, endpoint)`.
    pub live: Vec<UsageRow>,
    /// Staged snapshots not released yet, oldest first. Some may already be committed in
    /// the database (a flush between its commit and its release): the reader asks
    /// [`UsageSink::committed`](crate::storage::sql::UsageSink::committed).
    pub staged: Vec<Snapshot>,
}

/// Reads of what a [`UsageStore`] holds and has not flushed.
pub trait UnflushedUsage: UsageStore {
    /// `tenant`'s live aggregates, staged snapshots and stage generation, read atomically.
    fn unflushed(&self, tenant: &str)
    -> impl Future<Output = Result<Unflushed, StoreError>> + Send;

    /// The stage generation of each of `tenants`, in order (0: never staged).
    fn generations(
        &self,
        tenants: &[String],
    ) -> impl Future<Output = Result<Vec<u64>, StoreError>> + Send;

    /// The day's distinct users of `tenant` counted so far (the whole day, flushed or not:
    /// the store's per-day set or HyperLogLog outlives flushes), for each of `dates` the
    /// store still knows; other dates are absent.
    fn live_users(
        &self,
        tenant: &str,
        dates: &[String],
    ) -> impl Future<Output = Result<BTreeMap<String, u64>, StoreError>> + Send;
}

/// A boxed future of a [`LiveStore`] read.
pub type Read<'a, T> = std::pin::Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// [`UnflushedUsage`] (and the [`UsageStore::dirty_tenants`] it needs) behind a trait object,
/// so that one reader type serves whichever store the sidecar runs with (one allocation per
/// call). Every [`UnflushedUsage`] is one.
pub trait LiveStore: Send + Sync + 'static {
    /// [`UsageStore::dirty_tenants`].
    fn read_dirty(&self) -> Read<'_, Vec<String>>;
    /// [`UnflushedUsage::unflushed`].
    fn read_unflushed<'a>(&'a self, tenant: &'a str) -> Read<'a, Unflushed>;
    /// [`UnflushedUsage::generations`].
    fn read_generations<'a>(&'a self, tenants: &'a [String]) -> Read<'a, Vec<u64>>;
    /// [`UnflushedUsage::live_users`].
    fn read_users<'a>(
        &'a self,
        tenant: &'a str,
        dates: &'a [String],
    ) -> Read<'a, BTreeMap<String, u64>>;
}

impl<S: UnflushedUsage> LiveStore for S {
    fn read_dirty(&self) -> Read<'_, Vec<String>> {
        Box::pin(UsageStore::dirty_tenants(self))
    }
    fn read_unflushed<'a>(&'a self, tenant: &'a str) -> Read<'a, Unflushed> {
        Box::pin(UnflushedUsage::unflushed(self, tenant))
    }
    fn read_generations<'a>(&'a self, tenants: &'a [String]) -> Read<'a, Vec<u64>> {
        Box::pin(UnflushedUsage::generations(self, tenants))
    }
    fn read_users<'a>(
        &'a self,
        tenant: &'a str,
        dates: &'a [String],
    ) -> Read<'a, BTreeMap<String, u64>> {
        Box::pin(UnflushedUsage::live_users(self, tenant, dates))
    }
}
