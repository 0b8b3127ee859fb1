//! The usage write-ahead log: a usage batch is acknowledged to the filter only once it is on
//! the sidecar's disk, so neither a Redis that lost its data nor a crash of the in-process
//! store loses usage that was acknowledged.
//!
//! [`Logged`] wraps any [`UsageStore`]. `ingest` appends the batch (its records, not its
//! request log entries) to the open segment — group commit: one `write` and one `fdatasync`
//! per group of concurrent batches ([`writer`]) — and only then counts it in the store and
//! answers. The flush steps go through it too, which is how the log learns what is safe to
//! forget:
//!
//! - **start of a flush** (`dirty_tenants`): the open segment is closed (a new one opened),
//!   and tenants of the closed segments that have nothing unflushed in the store are noted
//!   clean (an [`Entry::Clean`](segment::Entry) frame);
//! - **stage** of a tenant: a `Staged(tenant, flush id)` frame is made durable *before* the
//!   store stages; ingestion waits meanwhile (a write lock that every `ingest` holds for
//!   reading from append to count), so the frames of the tenant before it are exactly the
//!   batches in that snapshot or older ones;
//! - **finish** of a tenant (after every snapshot committed and released): the tenant is done
//!   in every segment closed before its stage; the oldest segments with nothing left are
//!   deleted ([`Book`]).
//!
//! **Replay** ([`replay`]) reads every segment in order. A tenant's batches are skipped up to
//! its last `Staged` frame whose flush id the database holds in `usage_flushes` (committed, so
//! that snapshot and every older one are in), or its last `Clean` frame; the rest are counted
//! again through the store's own exactly-once ingestion (`(sender, seq)` marks), in chunks of
//! consecutive batches applied as if one by one
//! ([`ingest_in_order`](crate::storage::usage::UsageStore::ingest_in_order): many batches of a
//! sender at once, none after one that failed), so replaying twice, replaying what the store
//! still has, or replaying again after a replay stopped midway, counts nothing twice. Batch
//! frames are binary ([`binary`]; logs with JSON batch frames are read too). It runs at
//! start, before
//! the sidecar serves, and, with Redis, whenever Redis lost its data: the log keeps a marker
//! key in Redis (`usage:wal:<log id>`); the ingest group commit checks it and refuses batches
//! while it is gone (so no newer batch of a sender lands before its replayed older ones), a
//! watcher checks it and Redis's `run_id` every second, and the store replays then. A batch
//! torn by a crash between `write` and `fsync` fails its checksum and ends the segment: it was
//! never acknowledged, and the filter sends it again.
//!
//! **Bound.** The segments may hold at most `TOLLGATE_USAGE_LOG_MAX_BYTES`; beyond it, or when
//! the disk is full, a batch is refused with 503 `usage_log_unavailable` (its message: `usage
//! log full …` / the disk's error) and the filter keeps it and sends it again later. Nothing
//! that was not written is acknowledged, and nothing is written after a torn tail (a segment
//! whose failed write could not be cut off is left for a fresh one).

mod binary;
mod book;
mod open;
mod replay;
mod segment;
mod store;
mod watch;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

pub use self::open::open_store;
pub use self::replay::{ReplayError, Replayed};
pub use self::store::{Logged, LoggedOptions};
pub use self::watch::{Marker, RedisWatch};
use crate::storage::StoreError;

/// Where the log lives and how large it may grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// The directory (created if missing; one sidecar per directory, locked).
    pub dir: PathBuf,
    /// The most bytes all segments may hold.
    pub max_bytes: u64,
}

/// A test hook: where the writer "dies" (nothing after it is written or acknowledged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashAt {
    /// After `write`, before `fdatasync`.
    AfterWrite,
    /// After `fdatasync`, before the batch is acknowledged.
    AfterSync,
    /// After deleting the first segment of a truncation.
    DuringTruncate,
}

/// Why the log refused something.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LogError {
    /// The segments hold `max_bytes` already.
    #[error(
        "usage log full ({max_bytes} bytes, TOLLGATE_USAGE_LOG_MAX_BYTES): batches are refused \
         until a flush frees it"
    )]
    Full {
        /// The bound.
        max_bytes: u64,
    },
    /// The disk refused (full, read-only, …).
    #[error("usage log: {0}")]
    Io(String),
    /// The writer is gone.
    #[error("usage log stopped")]
    Stopped,
}

impl From<LogError> for StoreError {
    fn from(error: LogError) -> Self {
        StoreError::UsageLog(error.to_string())
    }
}

/// The open log: a handle on its writer thread.
pub struct UsageLog {
    ops: Option<mpsc::UnboundedSender<writer::Op>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: PathBuf,
    id: String,
    bytes: Arc<AtomicU64>,
    /// Held while open: one sidecar per directory.
    _lock: File,
}

impl UsageLog {
    /// Opens (creates) the log in `settings.dir`; an error when another process has it open.
    pub fn open(settings: &LogSettings, crash: Option<CrashAt>) -> Result<UsageLog, LogError> {
        let io = |e: std::io::Error| LogError::Io(format!("{}: {e}", settings.dir.display()));
        std::fs::create_dir_all(&settings.dir).map_err(io)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(settings.dir.join("LOCK"))
            .map_err(io)?;
        lock.try_lock().map_err(|_| {
            LogError::Io(format!(
                "{} is used by another sidecar (one usage log per sidecar: set \
                 TOLLGATE_USAGE_LOG_DIR)",
                settings.dir.display()
            ))
        })?;
        let id = log_id(&settings.dir).map_err(io)?;
        let writer =
            writer::Writer::open(settings.dir.clone(), settings.max_bytes, crash).map_err(io)?;
        let bytes = Arc::clone(&writer.total);
        let (ops, incoming) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("usage-log".into())
            .spawn(move || writer.run(incoming))
            .map_err(io)?;
        Ok(UsageLog {
            ops: Some(ops),
            thread: Some(thread),
            dir: settings.dir.clone(),
            id,
            bytes,
            _lock: lock,
        })
    }

    /// The log's id (random, kept in the directory): names its Redis marker.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes in all segments.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    async fn ask<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, LogError>>) -> writer::Op,
    ) -> Result<T, LogError> {
        let (reply, answer) = oneshot::channel();
        self.ops
            .as_ref()
            .ok_or(LogError::Stopped)?
            .send(op(reply))
            .map_err(|_| LogError::Stopped)?;
        answer.await.map_err(|_| LogError::Stopped)?
    }

    /// Appends the batch frame `frame` durably (within the bound); its segment's number.
    async fn append(&self, frame: Vec<u8>) -> Result<u64, LogError> {
        self.ask(|reply| writer::Op::Append {
            frame,
            bounded: true,
            reply,
        })
        .await
    }

    /// Appends a flush step's frame durably, even beyond the bound (it is what frees the log).
    async fn append_step(&self, frame: Vec<u8>) -> Result<u64, LogError> {
        self.ask(|reply| writer::Op::Append {
            frame,
            bounded: false,
            reply,
        })
        .await
    }

    /// Closes the open segment; the new one's number.
    async fn rotate(&self) -> Result<u64, LogError> {
        self.ask(|reply| writer::Op::Rotate { reply }).await
    }

    /// Deletes the closed segments numbered below `below`.
    async fn delete_below(&self, below: u64) -> Result<(), LogError> {
        self.ask(|reply| writer::Op::Delete { below, reply }).await
    }
}

impl Drop for UsageLog {
    fn drop(&mut self) {
        self.ops = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The directory's id: read from `dir/ID`, or made up and written there.
fn log_id(dir: &Path) -> std::io::Result<String> {
    let path = dir.join("ID");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let id = crate::storage::usage::new_flush_id(crate::system_clock());
    let temporary = dir.join("ID.new");
    std::fs::write(&temporary, &id)?;
    File::open(&temporary)?.sync_all()?;
    std::fs::rename(&temporary, &path)?;
    segment::sync_dir(dir)?;
    Ok(id)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests;
