//! Which segments still hold batches the database may not have: the truncation bookkeeping.

use std::collections::{BTreeMap, HashMap, HashSet};

/// Per segment, the tenants whose batches in it are not known to be in the database.
#[derive(Debug, Default)]
pub(super) struct Book {
    /// (Noted for every record replayed: a fast hasher.)
    pending: BTreeMap<u64, foldhash::HashSet<String>>,
    /// Per tenant: the segment open when this process last staged it.
    staged_at: HashMap<String, u64>,
}

impl Book {
    /// Batches of `tenants` were appended to `segment`.
    pub(super) fn note<'a>(&mut self, segment: u64, tenants: impl Iterator<Item = &'a str>) {
        let set = self.pending.entry(segment).or_default();
        for tenant in tenants {
            if !set.contains(tenant) {
                set.insert(tenant.to_owned());
            }
        }
    }

    /// `tenant` was staged while `segment` was open.
    pub(super) fn staged(&mut self, tenant: &str, segment: u64) {
        self.staged_at.insert(tenant.to_owned(), segment);
    }

    /// Every snapshot of `tenant` is committed: its batches in segments closed before its
    /// stage are in the database.
    pub(super) fn finished(&mut self, tenant: &str) {
        if let Some(open) = self.staged_at.remove(tenant) {
            for (_, tenants) in self.pending.range_mut(..open) {
                tenants.remove(tenant);
            }
        }
    }

    /// The tenants of segments below `open` that are not `dirty` (nothing unflushed in the
    /// store): forgotten there, and returned.
    pub(super) fn clean(&mut self, dirty: &HashSet<String>, open: u64) -> Vec<String> {
        let mut clean = HashSet::new();
        for (_, tenants) in self.pending.range_mut(..open) {
            tenants.retain(|tenant| {
                let keep = dirty.contains(tenant);
                if !keep {
                    clean.insert(tenant.clone());
                }
                keep
            });
        }
        let mut clean: Vec<String> = clean.into_iter().collect();
        clean.sort();
        clean
    }

    /// Segments below this number (and below `open`) hold nothing pending, nor does any older
    /// one: they may be deleted.
    pub(super) fn deletable_below(&mut self, open: u64) -> u64 {
        let below = self
            .pending
            .iter()
            .find(|(number, tenants)| **number >= open || !tenants.is_empty())
            .map_or(open, |(&number, _)| number.min(open));
        self.pending = self.pending.split_off(&below);
        below
    }
}
