//! One tenant's parts of a group merged into one [`INGEST_SCRIPT`] call.
//!
//! [`INGEST_SCRIPT`]: super::super::INGEST_SCRIPT

use foldhash::HashMap;
use foldhash::HashMapExt;

use super::super::{DAY_MS, NANOS_PER_MILLI, Shared};
use super::Part;
use crate::storage::SENDER_TTL;
use crate::storage::usage::{COUNTER_FIELDS, MAX_AGE_DAYS};

/// One aggregate's counters and plan, summed over the parts of one call.
#[derive(Default)]
pub(super) struct Merged<'r> {
    pub(super) values: [u64; 18],
    pub(super) plan: Option<&'r str>,
}

impl<'r> Merged<'r> {
    /// Adds one record: its counters (in `COUNTER_FIELDS` order, saturating) and its plan, if
    /// it names one (the last named wins).
    pub(super) fn add(&mut self, values: [u64; 18], plan: Option<&'r str>) {
        for (sum, add) in self.values.iter_mut().zip(values) {
            *sum = sum.saturating_add(add);
        }
        if plan.is_some() {
            self.plan = plan;
        }
    }
}

/// Per aggregate hash (sums, last plan) and per HyperLogLog key (users), first seen first.
type Merge<'r> = (Vec<(&'r str, Merged<'r>)>, Vec<(&'r str, Vec<u64>)>);

/// `parts` merged into one entry per aggregate hash and per HyperLogLog key.
fn merge<'r>(parts: &[&'r Part]) -> Merge<'r> {
    let mut hashes: Vec<(&str, Merged)> = Vec::new();
    let mut hash_index: HashMap<&str, usize> = HashMap::new();
    let mut hlls: Vec<(&str, Vec<u64>)> = Vec::new();
    let mut hll_index: HashMap<&str, usize> = HashMap::new();
    for (part, record) in parts
        .iter()
        .flat_map(|part| part.records.iter().map(move |record| (part, record)))
    {
        let slot = *hash_index.entry(&record.hash).or_insert_with(|| {
            hashes.push((&record.hash, Merged::default()));
            hashes.len() - 1
        });
        if let Some((_, merged)) = hashes.get_mut(slot) {
            let plan = record.plan.and_then(|n| part.plans.get(n));
            merged.add(record.values, plan.map(String::as_str));
        }
        if let Some(hll) = &record.hll {
            let slot = *hll_index.entry(hll).or_insert_with(|| {
                hlls.push((hll, Vec::new()));
                hlls.len() - 1
            });
            if let Some((_, users)) = hlls.get_mut(slot) {
                users.extend(&record.users);
            }
        }
    }
    (hashes, hlls)
}

/// The script call applying `parts` (one tenant's) merged, checking and then setting the
/// `marks` (`(mark key, seq)`, in order).
pub(super) fn invocation<'a>(
    shared: &'a Shared,
    tenant: &str,
    marks: &[(&str, &str)],
    parts: &[&Part],
) -> redis::ScriptInvocation<'a> {
    let (hashes, mut hlls) = merge(parts);
    call(shared, &shared.ingest, tenant, marks, &hashes, &mut hlls)
}

/// The call of `script` ([`INGEST_SCRIPT`](super::super::INGEST_SCRIPT) or its replay
/// variant) adding the merged `hashes` and `hlls` (their users sorted and deduplicated here)
/// of `tenant`, checking and then setting the `marks` (`(mark key, seq)`, in order).
pub(super) fn call<'a, K: AsRef<str>, H: AsRef<str>>(
    shared: &Shared,
    script: &'a redis::Script,
    tenant: &str,
    marks: &[(&str, &str)],
    hashes: &[(K, Merged)],
    hlls: &mut [(H, Vec<u64>)],
) -> redis::ScriptInvocation<'a> {
    let base = shared.tenant_base(tenant);
    let mut call = script.prepare_invoke();
    call.key(format!("{base}dirty"));
    for (mark, _) in marks {
        call.key(*mark);
    }
    call.arg(marks.len())
        .arg(SENDER_TTL / NANOS_PER_MILLI)
        .arg((MAX_AGE_DAYS as u64 + 2) * DAY_MS)
        .arg(hashes.len());
    for (_, seq) in marks {
        call.arg(*seq);
    }
    for (hash, merged) in hashes {
        call.key(hash.as_ref());
        let nonzero = merged.values.iter().filter(|&&v| v != 0).count();
        call.arg(merged.plan.unwrap_or("")).arg(nonzero);
        for (field, &value) in COUNTER_FIELDS.iter().zip(&merged.values) {
            if value != 0 {
                call.arg(*field).arg(value);
            }
        }
    }
    call.arg(hlls.len());
    for (hll, users) in hlls.iter_mut() {
        call.key(hll.as_ref());
        users.sort_unstable();
        users.dedup();
        call.arg(users.len());
        for user in users.iter() {
            call.arg(format!("{user:016x}"));
        }
    }
    call
}
