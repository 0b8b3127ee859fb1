//! The body of a batch frame (kind [`BATCH_BINARY`](super::segment)): a compact binary form
//! of a usage batch's records, several times smaller and faster to read back than its JSON
//! (which a replay of millions of records spends most of its time on).
//!
//! `sender (u64 LE) | seq (u64 LE) | records (varint)`, then per record: `tenant`, `plan`,
//! `date`, `endpoint` (each a varint length and UTF-8 bytes; `plan` as length + 1, 0 for
//! none), the 6 counters and 12 latency buckets (varints, in
//! [`COUNTER_FIELDS`](crate::storage::usage::COUNTER_FIELDS) order), and the users (a varint
//! count, then each as u64 LE). Varints are LEB128: 7 bits a byte, low first.

use tollgate_filter::usage::{LATENCY_BUCKETS, UsageBatch, UsageRecord};

use crate::storage::usage::Counters;

/// Appends `batch`'s sender, seq and records to `out`.
pub(super) fn encode(batch: &UsageBatch, out: &mut Vec<u8>) {
    out.extend_from_slice(&batch.sender.to_le_bytes());
    out.extend_from_slice(&batch.seq.to_le_bytes());
    varint(out, batch.records.len() as u64);
    for record in &batch.records {
        text(out, &record.tenant);
        match &record.plan {
            Some(plan) => {
                varint(out, plan.len() as u64 + 1);
                out.extend_from_slice(plan.as_bytes());
            }
            None => varint(out, 0),
        }
        text(out, &record.date);
        text(out, &record.endpoint);
        for value in Counters::from(record).values() {
            varint(out, value);
        }
        varint(out, record.users.len() as u64);
        for user in &record.users {
            out.extend_from_slice(&user.to_le_bytes());
        }
    }
}

/// The batch in `body` (without request log entries); `None` when it is not one whole.
pub(super) fn decode(body: &[u8]) -> Option<UsageBatch> {
    let mut reader = Reader { rest: body };
    let sender = reader.fixed()?;
    let seq = reader.fixed()?;
    let count = usize::try_from(reader.varint()?).ok()?;
    // Every record takes at least 23 bytes: no allocation beyond what the body can hold.
    let mut records = Vec::with_capacity(count.min(body.len() / 23));
    for _ in 0..count {
        let tenant = reader.text()?;
        let plan = match reader.varint()? {
            0 => None,
            n => Some(reader.string(usize::try_from(n - 1).ok()?)?),
        };
        let date = reader.text()?;
        let endpoint = reader.text()?;
        let mut scalars = [0u64; 6];
        for value in &mut scalars {
            *value = reader.varint()?;
        }
        let mut latency_buckets = [0u64; LATENCY_BUCKETS];
        for value in &mut latency_buckets {
            *value = reader.varint()?;
        }
        let users = usize::try_from(reader.varint()?).ok()?;
        let mut all = Vec::with_capacity(users.min(reader.rest.len() / 8));
        for _ in 0..users {
            all.push(reader.fixed()?);
        }
        let [
            requests,
            bytes_in,
            bytes_out,
            errors_4xx,
            errors_5xx,
            latency_ms_sum,
        ] = scalars;
        records.push(UsageRecord {
            tenant,
            plan,
            date,
            endpoint,
            requests,
            bytes_in,
            bytes_out,
            errors_4xx,
            errors_5xx,
            latency_ms_sum,
            latency_buckets,
            users: all,
        });
    }
    reader.rest.is_empty().then_some(UsageBatch {
        sender,
        seq,
        records,
        requests: Vec::new(),
    })
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn text(out: &mut Vec<u8>, text: &str) {
    varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn fixed(&mut self) -> Option<u64> {
        let (bytes, rest) = self.rest.split_first_chunk::<8>()?;
        self.rest = rest;
        Some(u64::from_le_bytes(*bytes))
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for (n, &byte) in self.rest.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f).checked_shl(7 * n as u32)?;
            if byte < 0x80 {
                self.rest = self.rest.get(n + 1..)?;
                return Some(value);
            }
        }
        None
    }

    fn string(&mut self, length: usize) -> Option<String> {
        if length > self.rest.len() {
            return None;
        }
        let (bytes, rest) = self.rest.split_at(length);
        self.rest = rest;
        String::from_utf8(bytes.to_vec()).ok()
    }

    fn text(&mut self) -> Option<String> {
        let length = usize::try_from(self.varint()?).ok()?;
        self.string(length)
    }
}
