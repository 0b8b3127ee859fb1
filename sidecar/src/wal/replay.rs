//! Replay: the batches the database may not have, counted again through the store.
//!
//! Two passes over the segments, oldest first. The first finds, per tenant, the position up to
//! which its batches are known to be in the database: its last `Staged` frame whose flush id is
//! in `usage_flushes`, or its last `Clean` frame. The second ingests every batch, keeping per
//! tenant only the records after that position, a window of batches of distinct senders at a
//! time (in log order, so each sender's batches reach the store in the order it sent them, and
//! none after one that failed).

use std::collections::HashMap;
use std::path::Path;

use futures_util::future::join_all;
use tollgate_filter::Nanos;
use tollgate_filter::usage::UsageBatch;

use super::book::Book;
use super::segment::{self, Entry};
use crate::storage::sql::{Database, UsageSink};
use crate::storage::usage::{StoreError, UsageStore};

/// Batches ingested at once during a replay.
const WINDOW: usize = 512;

/// A position in the log: (segment, offset).
type Position = (u64, u64);

/// What a replay counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Batches (or parts of them) handed to the store.
    pub batches: u64,
    /// Their records.
    pub records: u64,
    /// Of those, records the store counted now (the others it had already).
    pub applied: u64,
}

/// Why a replay stopped (it is safe to run again).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Reading a segment failed.
    #[error("usage log: {0}")]
    Io(#[from] std::io::Error),
    /// The database did not say which flushes it holds.
    #[error("usage database: {0}")]
    Database(#[from] sqlx::Error),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Replays the segments of `dir` into `store` (only reads them when not `apply`); with the
/// truncation bookkeeping they imply.
pub(super) async fn replay<S: UsageStore>(
    dir: &Path,
    store: &S,
    database: &Database,
    now: Nanos,
    apply: bool,
) -> Result<(Replayed, Book), ReplayError> {
    let segments = segment::list(dir)?;
    let done = coverage(dir, &segments, database).await?;
    let mut replayed = Replayed::default();
    let mut book = Book::default();
    let mut window: Vec<UsageBatch> = Vec::with_capacity(WINDOW);
    for &number in &segments {
        let data = tokio::fs::read(segment::path(dir, number)).await?;
        for (offset, body) in segment::frames(&data) {
            let Some(Entry::Batch(mut batch)) = segment::decode(body) else {
                continue;
            };
            batch.records.retain(|record| {
                done.get(&record.tenant)
                    .is_none_or(|&until| until < (number, offset))
            });
            if batch.records.is_empty() {
                continue;
            }
            book.note(number, batch.records.iter().map(|r| r.tenant.as_str()));
            if !apply {
                continue;
            }
            // One batch per sender in a window, and a window only after the previous one
            // succeeded: a sender's later batch must never land before an earlier one that
            // failed, or its mark would make the earlier one a "duplicate".
            if window.len() == WINDOW || window.iter().any(|b| b.sender == batch.sender) {
                ingest(store, &mut window, now, &mut replayed).await?;
            }
            window.push(batch);
        }
    }
    ingest(store, &mut window, now, &mut replayed).await?;
    Ok((replayed, book))
}

async fn ingest<S: UsageStore>(
    store: &S,
    window: &mut Vec<UsageBatch>,
    now: Nanos,
    replayed: &mut Replayed,
) -> Result<(), StoreError> {
    let outcomes = join_all(window.iter().map(|batch| store.ingest(batch, now))).await;
    for (batch, outcome) in window.iter().zip(outcomes) {
        let ingested = outcome?;
        replayed.batches += 1;
        replayed.records += batch.records.len() as u64;
        replayed.applied += ingested.applied;
    }
    window.clear();
    Ok(())
}

/// Per tenant, the position up to which its batches are in the database.
async fn coverage(
    dir: &Path,
    segments: &[u64],
    database: &Database,
) -> Result<HashMap<String, Position>, ReplayError> {
    let mut staged: Vec<(Position, String, String)> = Vec::new();
    let mut done: HashMap<String, Position> = HashMap::new();
    for &number in segments {
        let data = tokio::fs::read(segment::path(dir, number)).await?;
        for (offset, body) in segment::frames(&data) {
            // Batch frames are most of the log: only the small kinds are decoded here.
            if body.first() == Some(&segment::BATCH) {
                continue;
            }
            match segment::decode(body) {
                Some(Entry::Staged { tenant, flush_id }) => {
                    staged.push(((number, offset), tenant, flush_id));
                }
                Some(Entry::Clean(tenants)) => {
                    for tenant in tenants {
                        done.insert(tenant, (number, offset));
                    }
                }
                _ => {}
            }
        }
    }
    let ids: Vec<String> = staged.iter().map(|(_, _, id)| id.clone()).collect();
    let committed = database.committed(&ids).await?;
    for (position, tenant, id) in staged {
        if committed.contains(&id) {
            let until = done.entry(tenant).or_insert(position);
            *until = (*until).max(position);
        }
    }
    Ok(done)
}
