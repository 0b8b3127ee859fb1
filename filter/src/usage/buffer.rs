//! What a filter worker keeps until it is sent: the per-request [`RequestUsage`] added into a
//! [`UsageAggregate`] and, when `usage.request_log` is on, a [`RequestLog`], cut into
//! [`UsageBatch`]es by a [`UsageBuffer`]. Adding a request allocates nothing (except the log's
//! entry); everything is bounded, and what does not fit is counted.

use core::hash::{Hash, Hasher};

use hashbrown::{Equivalent, HashMap};

use super::{
    MAX_BATCH_BYTES, MAX_LOG_ENTRIES, MAX_RECORD_COUNT, MAX_RECORD_USERS, MAX_USAGE_RECORDS,
    RequestLogEntry, UsageBatch, UsageRecord, check_label, latency_bucket,
};

/// What the filter knows about one finished request (in `on_log`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestUsage<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// The tenant's plan, when known.
    pub plan: Option<&'a str>,
    /// The UTC day of the request ([`super::utc_date`]).
    pub date: &'a str,
    /// The endpoint label.
    pub endpoint: &'a str,
    /// The response status.
    pub status: u16,
    /// Request bytes.
    pub bytes_in: u64,
    /// Response bytes.
    pub bytes_out: u64,
    /// Duration in milliseconds.
    pub latency_ms: u64,
    /// The hashed JWT subject, when there is one.
    pub user: Option<u64>,
}

/// A record's key as stored: `(tenant, date, endpoint)`.
type RecordKey = (String, String, String);

/// A record's key borrowed from a request: hashes like [`RecordKey`] and compares equal to it,
/// so finding a request's record allocates nothing.
#[derive(Clone, Copy)]
struct KeyRef<'a>(&'a str, &'a str, &'a str);

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The same as hashing the tuple of `String`s: `String` hashes as its `str`.
        (self.0, self.1, self.2).hash(state);
    }
}

impl Equivalent<RecordKey> for KeyRef<'_> {
    fn equivalent(&self, key: &RecordKey) -> bool {
        self.0 == key.0 && self.1 == key.1 && self.2 == key.2
    }
}

/// A worker's usage since its last batch: records keyed by `(tenant, date, endpoint)`, at most
/// `capacity` of them. A request that would need a record beyond that is dropped and counted
/// ([`UsageAggregate::take_dropped`]), never silently lost. Adding a request to an open record
/// allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct UsageAggregate {
    records: Vec<UsageRecord>,
    /// Key → index of the key's open record (the latest; earlier ones are full of users).
    open: HashMap<RecordKey, usize>,
    capacity: usize,
    dropped: u64,
}

impl UsageAggregate {
    /// An empty aggregate holding at most `capacity` records.
    pub fn new(capacity: usize) -> Self {
        UsageAggregate {
            capacity,
            ..UsageAggregate::default()
        }
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Adds one request; `false` when it needed a new record and the aggregate is full, or its
    /// tenant, plan or endpoint is not a valid label ([`UsageRecord::validate`]): the request
    /// is then counted as dropped.
    pub fn record(&mut self, request: &RequestUsage<'_>) -> bool {
        let Some(record) = self
            .open_record(request)
            .and_then(|index| self.records.get_mut(index))
        else {
            self.dropped = self.dropped.saturating_add(1);
            return false;
        };
        record.requests = record.requests.saturating_add(1);
        record.bytes_in = record.bytes_in.saturating_add(request.bytes_in);
        record.bytes_out = record.bytes_out.saturating_add(request.bytes_out);
        match request.status {
            400..=499 => record.errors_4xx = record.errors_4xx.saturating_add(1),
            500..=599 => record.errors_5xx = record.errors_5xx.saturating_add(1),
            _ => {}
        }
        record.latency_ms_sum = record.latency_ms_sum.saturating_add(request.latency_ms);
        if let Some(bucket) = record
            .latency_buckets
            .get_mut(latency_bucket(request.latency_ms))
        {
            *bucket = bucket.saturating_add(1);
        }
        if let Some(plan) = request.plan
            && record.plan.as_deref() != Some(plan)
        {
            record.plan = Some(plan.into());
        }
        if let Some(user) = request.user
            && !record.users.contains(&user)
        {
            record.users.push(user);
        }
        true
    }

    /// The index of the record `request` goes to, opening one if needed (`None`: full).
    fn open_record(&mut self, request: &RequestUsage<'_>) -> Option<usize> {
        let key = KeyRef(request.tenant, request.date, request.endpoint);
        if let Some(&index) = self.open.get(&key) {
            let record = self.records.get(index)?;
            let user_fits = request.user.is_none_or(|user| {
                record.users.len() < MAX_RECORD_USERS || record.users.contains(&user)
            });
            let count_fits = record.requests < MAX_RECORD_COUNT
                && record.bytes_in.saturating_add(request.bytes_in) <= MAX_RECORD_COUNT
                && record.bytes_out.saturating_add(request.bytes_out) <= MAX_RECORD_COUNT
                && record.latency_ms_sum.saturating_add(request.latency_ms) <= MAX_RECORD_COUNT;
            if user_fits && count_fits {
                return Some(index);
            }
        }
        let labels_valid = check_label("tenant", request.tenant, true).is_ok()
            && check_label("endpoint", request.endpoint, false).is_ok()
            && request
                .plan
                .is_none_or(|p| check_label("plan", p, false).is_ok());
        if self.records.len() >= self.capacity || !labels_valid {
            // A label the sidecar would refuse would hold every later batch back: drop it.
            return None;
        }
        self.records.push(UsageRecord::new(
            request.tenant,
            request.plan,
            request.date,
            request.endpoint,
        ));
        let index = self.records.len() - 1;
        let owned = (
            request.tenant.to_owned(),
            request.date.to_owned(),
            request.endpoint.to_owned(),
        );
        self.open.insert(owned, index);
        Some(index)
    }

    /// Takes up to `max` records out (for one [`UsageBatch`]); the rest stay for the next.
    pub fn drain(&mut self, max: usize) -> Vec<UsageRecord> {
        let mut unlimited = usize::MAX;
        self.drain_within(max, &mut unlimited)
    }

    /// Takes up to `max` records out, no more than fit in `budget` bytes of JSON (at least
    /// one), and takes their size off `budget`; the rest stay for the next batch.
    pub fn drain_within(&mut self, max: usize, budget: &mut usize) -> Vec<UsageRecord> {
        let take = fitting(self.records.iter().take(max), budget);
        let taken: Vec<UsageRecord> = self.records.drain(..take).collect();
        // Re-index what stays: only the latest record of each key is open.
        self.open.clear();
        for (index, record) in self.records.iter().enumerate() {
            let key = (
                record.tenant.clone(),
                record.date.clone(),
                record.endpoint.clone(),
            );
            self.open.insert(key, index);
        }
        taken
    }

    /// Requests dropped because the aggregate was full, since the last call (then reset).
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}

/// A worker's detailed request log (`usage.request_log`) since its last batch: entries oldest
/// first, at most `capacity` of them. An entry that does not fit is dropped and counted
/// ([`RequestLog::take_dropped`]), never silently lost.
#[derive(Clone, Debug, Default)]
pub struct RequestLog {
    entries: std::collections::VecDeque<RequestLogEntry>,
    capacity: usize,
    dropped: u64,
}

impl RequestLog {
    /// An empty log holding at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        RequestLog {
            capacity,
            ..RequestLog::default()
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds the entry of one finished request (`time_ms`: its arrival, Unix milliseconds);
    /// `false` when the log is full or the tenant or endpoint is not a valid label (the entry
    /// is then counted as dropped). A status outside 100 to 599 is logged as 0 (no response).
    pub fn push(&mut self, request: &RequestUsage<'_>, time_ms: u64) -> bool {
        let labels_valid = check_label("tenant", request.tenant, true).is_ok()
            && check_label("endpoint", request.endpoint, false).is_ok();
        if self.entries.len() >= self.capacity || !labels_valid {
            self.dropped = self.dropped.saturating_add(1);
            return false;
        }
        self.entries.push_back(RequestLogEntry {
            time_ms: time_ms.min(MAX_RECORD_COUNT),
            tenant: request.tenant.to_owned(),
            endpoint: request.endpoint.to_owned(),
            status: if (100..=599).contains(&request.status) {
                request.status
            } else {
                0
            },
            bytes_in: request.bytes_in.min(MAX_RECORD_COUNT),
            bytes_out: request.bytes_out.min(MAX_RECORD_COUNT),
            latency_ms: request.latency_ms.min(MAX_RECORD_COUNT),
            user: request.user,
        });
        true
    }

    /// Takes the oldest `max` entries at most (for one [`UsageBatch`]); the rest stay.
    pub fn drain(&mut self, max: usize) -> Vec<RequestLogEntry> {
        let mut unlimited = usize::MAX;
        self.drain_within(max, &mut unlimited)
    }

    /// Takes the oldest `max` entries at most, no more than fit in `budget` bytes of JSON (at
    /// least one), and takes their size off `budget`; the rest stay.
    pub fn drain_within(&mut self, max: usize, budget: &mut usize) -> Vec<RequestLogEntry> {
        let take = fitting(self.entries.iter().take(max), budget);
        self.entries.drain(..take).collect()
    }

    /// Entries dropped because the log was full, since the last call (then reset).
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}

/// How many of `items` fit in `budget` bytes of JSON, at least one if there is one (so that
/// every batch makes progress); their size is taken off `budget`.
fn fitting<'a, T: JsonBound + 'a>(items: impl Iterator<Item = &'a T>, budget: &mut usize) -> usize {
    let mut count = 0;
    for item in items {
        let size = item.json_bound();
        if count > 0 && size > *budget {
            break;
        }
        *budget = budget.saturating_sub(size);
        count += 1;
    }
    count
}

/// An upper bound of a value's JSON size (with the comma after it), computed without
/// serializing: every label escapes to at most twice its length (labels hold no control
/// characters), every number to at most 20 digits.
trait JsonBound {
    fn json_bound(&self) -> usize;
}

impl JsonBound for UsageRecord {
    fn json_bound(&self) -> usize {
        let labels = self.tenant.len()
            + self.plan.as_ref().map_or(0, String::len)
            + self.date.len()
            + self.endpoint.len();
        // Field names and punctuation ≈ 200, 18 numbers ≤ 21 bytes each.
        600 + 2 * labels + 21 * self.users.len()
    }
}

impl JsonBound for RequestLogEntry {
    fn json_bound(&self) -> usize {
        // Field names and punctuation ≈ 110, 6 numbers ≤ 21 bytes each.
        250 + 2 * (self.tenant.len() + self.endpoint.len())
    }
}

/// What a worker has not sent yet: the aggregate and, when `usage.request_log` is on, the
/// request log, cut into numbered [`UsageBatch`]es (records and log entries of the same
/// requests travel together, at most [`MAX_USAGE_RECORDS`] and [`MAX_LOG_ENTRIES`] a batch).
#[derive(Clone, Debug)]
pub struct UsageBuffer {
    /// The records.
    pub aggregate: UsageAggregate,
    /// The request log, when on.
    pub log: Option<RequestLog>,
    sender: u64,
    next_seq: u64,
}

impl UsageBuffer {
    /// An empty buffer of `sender`'s usage holding at most `records` records and, when
    /// `log_entries` is `Some`, that many request log entries; the first batch is `seq` 1.
    pub fn new(sender: u64, records: usize, log_entries: Option<usize>) -> Self {
        UsageBuffer {
            aggregate: UsageAggregate::new(records),
            log: log_entries.map(RequestLog::new),
            sender,
            next_seq: 1,
        }
    }

    /// Adds a finished request that arrived at `time_ms` (Unix milliseconds): into its record,
    /// and into the request log when on. Returns whether a full batch is waiting.
    pub fn record(&mut self, request: &RequestUsage<'_>, time_ms: u64) -> bool {
        self.aggregate.record(request);
        if let Some(log) = self.log.as_mut() {
            log.push(request, time_ms);
        }
        self.full()
    }

    /// Whether a whole batch (of records or of log entries) is waiting.
    pub fn full(&self) -> bool {
        self.aggregate.len() >= MAX_USAGE_RECORDS
            || self
                .log
                .as_ref()
                .is_some_and(|l| l.len() >= MAX_LOG_ENTRIES)
    }

    /// The next batch, numbered, with the oldest records and log entries, at most
    /// [`MAX_BATCH_BYTES`] of JSON; `None` (and no number used) when there is nothing to send.
    pub fn next_batch(&mut self) -> Option<UsageBatch> {
        let log_empty = self.log.as_ref().is_none_or(RequestLog::is_empty);
        if self.aggregate.is_empty() && log_empty {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        // The envelope (`{"sender":…,"seq":…,"records":[],"requests":[]}`) is under 100 bytes.
        let mut budget = MAX_BATCH_BYTES - 100;
        let records = self.aggregate.drain_within(MAX_USAGE_RECORDS, &mut budget);
        let requests = match self.log.as_mut() {
            // Entries wait for the next batch rather than go beyond the budget; a batch of
            // records that took it all still carries one entry (each is under 1 KiB).
            Some(log) => log.drain_within(MAX_LOG_ENTRIES, &mut budget.max(1)),
            None => Vec::new(),
        };
        Some(UsageBatch {
            sender: self.sender,
            seq,
            records,
            requests,
        })
    }

    /// Requests dropped from the aggregate and from the log since the last call (then reset).
    pub fn take_dropped(&mut self) -> (u64, u64) {
        let log = self.log.as_mut().map_or(0, RequestLog::take_dropped);
        (self.aggregate.take_dropped(), log)
    }
}
