//! Replay: the batches the database may not have, counted again through the store.
//!
//! Two passes over the segments, oldest first. The first finds, per tenant, the position up to
//! which its batches are known to be in the database: its last `Staged` frame whose flush id is
//! in `usage_flushes`, or its last `Clean` frame. The second reads every batch, keeping per
//! tenant only the records after that position, and hands them to the store in chunks of
//! consecutive batches in log order ([`UsageStore::ingest_in_order`]: as if one after the
//! other, so each sender's batches land in the order it sent them and none after one that
//! failed), a chunk only after the one before it succeeded. Reading and decoding run on a
//! blocking thread one chunk ahead of the store, so the disk and the decoding overlap the
//! store's work.

use std::collections::HashMap;
use std::path::Path;

use tokio::sync::mpsc;
use tollgate_filter::Nanos;
use tollgate_filter::usage::UsageBatch;

use super::book::Book;
use super::segment::{self, Entry};
use crate::storage::sql::{Database, UsageSink};
use crate::storage::usage::{StoreError, UsageStore};

/// Records per chunk handed to the store at once: about 50 MiB decoded, and up to three
/// chunks live (the one applied, the next one waiting, the one being read). Larger chunks
/// merge more: Redis's share of a replay is per aggregate and chunk.
const CHUNK_RECORDS: usize = 128 * 1024;

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
    replay_in_chunks(dir, store, database, now, apply, CHUNK_RECORDS).await
}

/// [`replay`] with chunks of `chunk_records` records (at least one batch each).
pub(super) async fn replay_in_chunks<S: UsageStore>(
    dir: &Path,
    store: &S,
    database: &Database,
    now: Nanos,
    apply: bool,
    chunk_records: usize,
) -> Result<(Replayed, Book), ReplayError> {
    let segments = segment::list(dir)?;
    let done = coverage(dir, &segments, database).await?;
    let (chunks, mut incoming) = mpsc::channel(1);
    // Applied chunks go back to the reader to be freed (millions of small strings): off the
    // task that waits for the store.
    let (used, spent) = std::sync::mpsc::channel();
    let reader = {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || {
            read(
                &dir,
                &segments,
                &done,
                apply,
                chunk_records,
                &chunks,
                &spent,
            )
        })
    };
    let mut replayed = Replayed::default();
    while let Some(chunk) = incoming.recv().await {
        // On an error the reader stops at its next chunk (its channel is gone).
        let ingested = store.ingest_in_order(&chunk, now).await?;
        replayed.batches += chunk.len() as u64;
        replayed.records += chunk.iter().map(|b| b.records.len() as u64).sum::<u64>();
        replayed.applied += ingested.applied;
        let _ = used.send(chunk);
    }
    let book = reader
        .await
        .map_err(|e| ReplayError::Io(std::io::Error::other(e)))??;
    Ok((replayed, book))
}

/// The reader: every batch's records not yet in the database, in log order, sent in chunks
/// (none when not `apply`); the bookkeeping of them.
fn read(
    dir: &Path,
    segments: &[u64],
    done: &HashMap<String, Position>,
    apply: bool,
    chunk_records: usize,
    chunks: &mpsc::Sender<Vec<UsageBatch>>,
    spent: &std::sync::mpsc::Receiver<Vec<UsageBatch>>,
) -> Result<Book, ReplayError> {
    let mut book = Book::default();
    let mut chunk: Vec<UsageBatch> = Vec::new();
    let mut records = 0;
    for &number in segments {
        let data = segment::read(dir, number)?;
        for (offset, body) in segment::frames(&data) {
            if !segment::is_batch(body) {
                continue;
            }
            let Some(Entry::Batch(mut batch)) = segment::decode(body) else {
                continue;
            };
            if !done.is_empty() {
                batch.records.retain(|record| {
                    done.get(&record.tenant)
                        .is_none_or(|&until| until < (number, offset))
                });
            }
            if batch.records.is_empty() {
                continue;
            }
            book.note(number, batch.records.iter().map(|r| r.tenant.as_str()));
            if !apply {
                continue;
            }
            records += batch.records.len();
            chunk.push(batch);
            // Free what the store is done with as soon as it is back.
            while spent.try_recv().is_ok() {}
            if records >= chunk_records {
                if chunks.blocking_send(std::mem::take(&mut chunk)).is_err() {
                    return Ok(book);
                }
                records = 0;
            }
        }
    }
    if !chunk.is_empty() {
        let _ = chunks.blocking_send(chunk);
    }
    Ok(book)
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
        let data = {
            let dir = dir.to_owned();
            tokio::task::spawn_blocking(move || segment::read(&dir, number))
                .await
                .map_err(std::io::Error::other)??
        };
        for (offset, body) in segment::frames(&data) {
            // Batch frames are most of the log: only the small kinds are decoded here.
            if segment::is_batch(body) {
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
