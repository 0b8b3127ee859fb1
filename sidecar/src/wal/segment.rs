//! Segment files and their frames.
//!
//! A segment is `<20-digit number>.log` in the log directory, numbers increasing; a frame is
//! `length (u32 LE) | CRC-32C of the body (u32 LE) | body`, the body one kind byte and JSON
//! (a batch: binary, [`super::binary`]; logs written before that have JSON batches, still read).
//! Reading stops at the first frame that is short or fails its checksum: a torn tail written
//! by a crash between `write` and `fsync`, never acknowledged.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tollgate_filter::usage::{UsageBatch, UsageRecord};

/// Slice-by-16 tables (16 KiB): several times the byte-at-a-time speed, the same checksum.
const CASTAGNOLI: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);
const HEADER: usize = 8;
/// The largest frame body read back (a batch is at most a few MiB).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// What a frame holds.
#[derive(Debug)]
pub(super) enum Entry {
    /// An accepted batch (written before it is counted).
    Batch(UsageBatch),
    /// The tenant's live aggregates are staged now as `flush_id`: every batch of the tenant
    /// before this entry is in that snapshot or an older one.
    Staged { tenant: String, flush_id: String },
    /// These tenants had nothing unflushed: every batch of theirs before this entry is in the
    /// database (or was never counted, and not acknowledged either).
    Clean(Vec<String>),
}

/// A batch frame body of kind [`BATCH_JSON`].
#[derive(Serialize, Deserialize)]
pub(super) struct JsonBatch {
    pub sender: u64,
    pub seq: u64,
    pub records: Vec<UsageRecord>,
}

#[derive(Serialize, Deserialize)]
struct StagedBody {
    tenant: String,
    flush_id: String,
}

/// The kind byte of a batch frame in JSON (`sender`, `seq`, `records`), as logs written
/// before [`BATCH_BINARY`] hold them.
const BATCH_JSON: u8 = 1;
const STAGED: u8 = 2;
const CLEAN: u8 = 3;
/// The kind byte of a batch frame ([`super::binary`]).
const BATCH_BINARY: u8 = 4;

/// The frame of a batch (its records, not its request log entries).
pub(super) fn batch_frame(batch: &UsageBatch) -> Vec<u8> {
    // About 70 bytes a record with short labels and no users.
    let mut out = Vec::with_capacity(HEADER + 32 + 80 * batch.records.len());
    out.extend_from_slice(&[0; HEADER]);
    out.push(BATCH_BINARY);
    super::binary::encode(batch, &mut out);
    seal(out)
}

/// The frame of a batch in JSON, as logs written before binary batch frames hold them.
#[cfg(test)]
pub(super) fn json_batch_frame(batch: &UsageBatch) -> Vec<u8> {
    let body = JsonBatch {
        sender: batch.sender,
        seq: batch.seq,
        records: batch.records.clone(),
    };
    frame(BATCH_JSON, &body)
}

/// Whether a frame body holds a batch (most of a log: the other kinds are small).
pub(super) fn is_batch(body: &[u8]) -> bool {
    matches!(body.first(), Some(&(BATCH_BINARY | BATCH_JSON)))
}

/// The frame of a [`Entry::Staged`].
pub(super) fn staged_frame(tenant: &str, flush_id: &str) -> Vec<u8> {
    let body = StagedBody {
        tenant: tenant.to_owned(),
        flush_id: flush_id.to_owned(),
    };
    frame(STAGED, &body)
}

/// The frame of a [`Entry::Clean`].
pub(super) fn clean_frame(tenants: &[String]) -> Vec<u8> {
    frame(CLEAN, &tenants)
}

fn frame(kind: u8, body: &impl Serialize) -> Vec<u8> {
    let mut out = vec![0; HEADER];
    out.push(kind);
    // Serializing plain structs of strings and integers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, body);
    seal(out)
}

/// Fills in the header of `out` (a header's room, then the body).
fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let length = u32::try_from(out.len() - HEADER).unwrap_or(u32::MAX);
    let checksum = CASTAGNOLI.checksum(out.get(HEADER..).unwrap_or_default());
    out.splice(
        ..HEADER,
        length
            .to_le_bytes()
            .into_iter()
            .chain(checksum.to_le_bytes()),
    );
    out
}

/// The frames of a segment's bytes, each with its offset, up to the first torn one.
pub(super) fn frames(data: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let header = data.get(at..at + HEADER)?;
        let (length, checksum) = header.split_at(4);
        let length = u32::from_le_bytes(length.try_into().ok()?) as usize;
        let checksum = u32::from_le_bytes(checksum.try_into().ok()?);
        if length == 0 || length > MAX_BODY {
            return None;
        }
        let body = data.get(at + HEADER..at + HEADER + length)?;
        if CASTAGNOLI.checksum(body) != checksum {
            return None;
        }
        let offset = at as u64;
        at += HEADER + length;
        Some((offset, body))
    })
}

/// Decodes a frame body; `None` for a kind or JSON this version does not know.
pub(super) fn decode(body: &[u8]) -> Option<Entry> {
    let (&kind, json) = body.split_first()?;
    match kind {
        BATCH_BINARY => super::binary::decode(json).map(Entry::Batch),
        BATCH_JSON => serde_json::from_slice::<JsonBatch>(json).ok().map(|b| {
            Entry::Batch(UsageBatch {
                sender: b.sender,
                seq: b.seq,
                records: b.records,
                requests: Vec::new(),
            })
        }),
        STAGED => serde_json::from_slice::<StagedBody>(json)
            .ok()
            .map(|s| Entry::Staged {
                tenant: s.tenant,
                flush_id: s.flush_id,
            }),
        CLEAN => serde_json::from_slice(json).ok().map(Entry::Clean),
        _ => None,
    }
}

/// The path of segment `number`.
pub(super) fn path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.log"))
}

/// The bytes of segment `number`: as many as its length says (a segment entry that is not a
/// regular file, such as the disk-full test's link to `/dev/full`, reads as empty).
pub(super) fn read(dir: &Path, number: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path(dir, number))?;
    let length = file.metadata()?.len();
    let mut data = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
    file.take(length).read_to_end(&mut data)?;
    Ok(data)
}

/// The segment numbers in `dir`, ascending.
pub(super) fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(number) = name.strip_suffix(".log").and_then(|n| n.parse().ok()) {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Makes the directory's entries (new or removed files) durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
