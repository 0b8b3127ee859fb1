//! The log's writer: one thread owning the open segment, committing in groups.
//!
//! It takes whatever frames are queued, writes them with one `write` and makes them durable
//! with one `fdatasync`, then answers each: under load a group grows by itself, so the disk
//! work per batch shrinks. A frame that would take the log past its bound is refused (the
//! batch gets 503 and the filter keeps it); a failed write (a full disk) is cut off the file
//! again and answered with the error, so nothing unwritten is ever acknowledged and no torn
//! frame sits before later ones. When even the cut fails, the segment is left as it is (its
//! whole frames were made durable by their own groups; a replay reads up to its torn tail and
//! goes on with the next segment) and nothing more is written to it: the next group first opens
//! a fresh segment, and is refused while that fails.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::segment;
use super::{CrashAt, LogError};

/// A segment is closed once it holds this much, even between flushes.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// A group takes at most this many queued operations.
const MAX_GROUP: usize = 4096;

/// What the writer is asked.
pub(super) enum Op {
    /// Append a frame; answered with its segment once durable. `bounded`: refused beyond the
    /// log's bound (batches; the flush's own small frames are not, or a full log could never
    /// be freed).
    Append {
        frame: Vec<u8>,
        bounded: bool,
        reply: oneshot::Sender<Result<u64, LogError>>,
    },
    /// Close the open segment and open the next; answered with the new one's number.
    Rotate {
        reply: oneshot::Sender<Result<u64, LogError>>,
    },
    /// Delete every closed segment numbered below `below`, oldest first.
    Delete {
        below: u64,
        reply: oneshot::Sender<Result<(), LogError>>,
    },
}

/// A frame waiting for its group: the frame, whether the bound applies, where to answer.
type Pending = (Vec<u8>, bool, oneshot::Sender<Result<u64, LogError>>);

/// The writer's state (owned by its thread).
pub(super) struct Writer {
    dir: PathBuf,
    number: u64,
    file: File,
    length: u64,
    /// Bytes of the closed segments, by number (ascending).
    closed: Vec<(u64, u64)>,
    max_bytes: u64,
    /// Every segment's bytes, for the size gauge.
    pub(super) total: Arc<AtomicU64>,
    crash: Option<CrashAt>,
    dead: bool,
    /// The open segment's tail is unknown (a failed write could not be cut off): nothing more
    /// is written to it.
    abandoned: bool,
}

impl Writer {
    /// Opens a fresh segment after every existing one (old ones are never appended to: their
    /// tails may be torn).
    pub(super) fn open(dir: PathBuf, max_bytes: u64, crash: Option<CrashAt>) -> io::Result<Writer> {
        let mut closed = Vec::new();
        for number in segment::list(&dir)? {
            let length = std::fs::metadata(segment::path(&dir, number))?.len();
            closed.push((number, length));
        }
        let number = closed.last().map_or(1, |&(n, _)| n + 1);
        let file = create(&dir, number)?;
        let total = closed.iter().map(|&(_, l)| l).sum();
        Ok(Writer {
            dir,
            number,
            file,
            length: 0,
            closed,
            max_bytes,
            total: Arc::new(AtomicU64::new(total)),
            crash,
            dead: false,
            abandoned: false,
        })
    }

    fn bytes(&self) -> u64 {
        self.closed.iter().map(|&(_, l)| l).sum::<u64>() + self.length
    }

    /// Serves `ops` until every sender is gone.
    pub(super) fn run(mut self, mut ops: mpsc::UnboundedReceiver<Op>) {
        let mut appends = Vec::new();
        while let Some(first) = ops.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match ops.try_recv() {
                    Ok(op) => group.push(op),
                    Err(_) => break,
                }
            }
            for op in group {
                match op {
                    Op::Append {
                        frame,
                        bounded,
                        reply,
                    } => appends.push((frame, bounded, reply)),
                    Op::Rotate { reply } => {
                        self.commit(&mut appends);
                        let rotated = self.checked(Self::rotate);
                        self.publish();
                        let _ = reply.send(rotated);
                    }
                    Op::Delete { below, reply } => {
                        self.commit(&mut appends);
                        let deleted = self.checked(|w| w.delete(below));
                        self.publish();
                        let _ = reply.send(deleted);
                    }
                }
            }
            self.commit(&mut appends);
            if self.length >= SEGMENT_BYTES && !self.dead {
                let _ = self.rotate();
            }
            self.publish();
        }
    }

    /// Updates the size gauge (before answering, so that an answer implies its size).
    fn publish(&self) {
        self.total.store(self.bytes(), Ordering::Relaxed);
    }

    fn checked<T>(&mut self, op: impl FnOnce(&mut Self) -> io::Result<T>) -> Result<T, LogError> {
        if self.dead {
            return Err(LogError::Stopped);
        }
        op(self).map_err(|e| LogError::Io(e.to_string()))
    }

    /// Writes the queued frames that fit, syncs once, answers every one.
    fn commit(&mut self, appends: &mut Vec<Pending>) {
        if appends.is_empty() {
            return;
        }
        let mut buffer = Vec::new();
        let mut accepted = Vec::new();
        let mut room = self.max_bytes.saturating_sub(self.bytes());
        for (frame, bounded, reply) in appends.drain(..) {
            if self.dead {
                let _ = reply.send(Err(LogError::Stopped));
            } else if bounded && frame.len() as u64 > room {
                let _ = reply.send(Err(LogError::Full {
                    max_bytes: self.max_bytes,
                }));
            } else {
                room = room.saturating_sub(frame.len() as u64);
                buffer.extend_from_slice(&frame);
                accepted.push(reply);
            }
        }
        if accepted.is_empty() {
            return;
        }
        let outcome = if self.abandoned {
            self.rotate()
                .map(drop)
                .map_err(|e| LogError::Io(e.to_string()))
        } else {
            Ok(())
        };
        let outcome = outcome.and_then(|()| self.write(&buffer));
        self.publish();
        for reply in accepted {
            let _ = reply.send(match &outcome {
                Ok(()) => Ok(self.number),
                Err(error) => Err(error.clone()),
            });
        }
    }

    fn write(&mut self, buffer: &[u8]) -> Result<(), LogError> {
        let written = self.file.write_all(buffer);
        if written.is_ok() && self.crash == Some(CrashAt::AfterWrite) {
            return self.die();
        }
        match written.and_then(|()| self.file.sync_data()) {
            Ok(()) => {
                self.length += buffer.len() as u64;
                if self.crash == Some(CrashAt::AfterSync) {
                    return self.die();
                }
                Ok(())
            }
            Err(error) => {
                // Cut the partial write off, so later frames follow the last whole one.
                let cut = self
                    .file
                    .set_len(self.length)
                    .and_then(|()| self.file.seek(SeekFrom::Start(self.length)).map(drop));
                if cut.is_err() {
                    // The file cannot be repaired: the next group goes to a fresh segment.
                    self.abandoned = true;
                }
                tracing::error!(%error, "usage log write failed; the batches are refused");
                Err(LogError::Io(error.to_string()))
            }
        }
    }

    /// A crash injected by a test: nothing after this point is acknowledged or written.
    fn die(&mut self) -> Result<(), LogError> {
        self.dead = true;
        Err(LogError::Stopped)
    }

    fn rotate(&mut self) -> io::Result<u64> {
        // An abandoned segment's whole frames were synced by their groups; syncing it again
        // may fail for good.
        if !self.abandoned {
            self.file.sync_data()?;
        }
        let next = self.number + 1;
        let file = create(&self.dir, next)?;
        self.closed.push((self.number, self.length));
        self.file = file;
        self.number = next;
        self.length = 0;
        self.abandoned = false;
        Ok(next)
    }

    fn delete(&mut self, below: u64) -> io::Result<()> {
        let before = self.closed.len();
        while let Some(&(number, _)) = self.closed.first() {
            if number >= below {
                break;
            }
            match std::fs::remove_file(segment::path(&self.dir, number)) {
                // Already gone (removed by hand): deleted all the same.
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
            self.closed.remove(0);
            if self.crash == Some(CrashAt::DuringTruncate) {
                self.dead = true;
                return Err(io::Error::other("crash injected during truncation"));
            }
        }
        if self.closed.len() == before {
            return Ok(());
        }
        segment::sync_dir(&self.dir)
    }
}

/// Opens segment `number`, new. An entry already there (none is: numbers only grow, and the
/// directory is locked) is taken only when it is empty, so no frame is ever appended after an
/// old, possibly torn, tail; the disk-full test points one at `/dev/full` that way.
fn create(dir: &std::path::Path, number: u64) -> io::Result<File> {
    let path = segment::path(dir, number);
    let file = OpenOptions::new().create(true).append(true).open(&path)?;
    if file.metadata()?.len() != 0 {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not empty", path.display()),
        ));
    }
    segment::sync_dir(dir)?;
    Ok(file)
}
