//! The node-wide bucket table: a fixed number of shared-data slots, open addressing.
//!
//! Shared data in Proxy-Wasm hosts has no delete, so one entry per client key would grow the
//! proxy's memory with every new client address. Instead a key lives in one of `PROBES`
//! consecutive slots starting at `hash % slots`. A slot holds `[owner hash][idle_at][state]`;
//! a slot whose owner has been idle past `idle_at` (its state equals a fresh one) is reused
//! without losing anything. Only when every probed slot holds an active bucket is the one idle
//! soonest evicted, and that is counted.
//!
//! Updates are compare-and-swap: read the slot with its CAS token, decide, write back with the
//! token, retry on conflict. A slot never used has no CAS token yet: it is created with its
//! first record by [`create`], which never overwrites a record another worker wrote meanwhile.

use core::fmt::Write as _;

use super::{Ask, EngineStats};
use crate::Nanos;
use crate::algorithm::{Algorithm, Grant, Quota, State};

/// Consecutive slots a key may occupy.
pub const PROBES: u32 = 4;
/// Compare-and-swap attempts before giving up.
const MAX_ATTEMPTS: u32 = 64;
const HEADER: usize = 16;

/// Why a shared-data write did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// Someone wrote the entry since it was read.
    CasMismatch,
    /// The host refused.
    Failed,
}

/// The host's shared key-value store with compare-and-swap (Proxy-Wasm shared data).
pub trait SharedStore {
    /// The value and its CAS token (0 when the host gives none), or `None` when absent.
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    /// Writes `value` if the entry's token is still `cas`. Token 0 means "unconditionally" on
    /// Envoy and "only if absent" on ngx_wasm_module: pass it only through [`create`].
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
}

/// A token no write is expected to hold: Envoy creates a missing key written with any
/// non-zero token and refuses an existing one unless its token matches (tokens count up from
/// 1 across the node, so this one matches only the one write in 2³² that got it).
const CREATE_TOKEN: u32 = u32::MAX;

/// Creates `key` with `value` if it is still absent; `Ok(false)` when another worker created
/// it first (read it again). Works on both hosts' CAS rules: Envoy creates on a non-zero token
/// and would overwrite on 0; ngx_wasm_module refuses a non-zero token on a missing key and
/// creates on 0 only if absent.
pub fn create(store: &mut impl SharedStore, key: &str, value: &[u8]) -> Result<bool, StoreError> {
    match store.set(key, value, CREATE_TOKEN) {
        Ok(()) => return Ok(true),
        Err(StoreError::CasMismatch) => {}
        Err(StoreError::Failed) => return Err(StoreError::Failed),
    }
    // Refused: either someone created the key (both hosts), or the host wants 0 for a new key.
    if store.get(key)?.is_some() {
        return Ok(false);
    }
    match store.set(key, value, 0) {
        Ok(()) => Ok(true),
        Err(StoreError::CasMismatch) => Ok(false),
        Err(StoreError::Failed) => Err(StoreError::Failed),
    }
}

/// Where a key's bucket was found (or will be created).
struct Located {
    index: u32,
    /// The slot's token; `None` for a slot never written.
    cas: Option<u32>,
    state: State,
    claimed: bool,
}

/// The slot table of one worker (the scratch buffers are its own; the slots are the node's).
#[derive(Debug)]
pub struct SlotTable {
    slots: u32,
    name: String,
    record: Vec<u8>,
}

impl SlotTable {
    /// A table of `slots` slots (at least `PROBES`).
    pub fn new(slots: u32) -> Self {
        SlotTable {
            slots: slots.max(PROBES),
            name: String::with_capacity(16),
            record: Vec::with_capacity(64),
        }
    }

    /// Runs `decide` on the state of `ask`'s bucket and stores the result atomically; `None` when the store
    /// failed or stayed contended for every attempt.
    pub fn update<F>(
        &mut self,
        store: &mut impl SharedStore,
        ask: &Ask,
        now: Nanos,
        stats: &mut EngineStats,
        mut decide: F,
    ) -> Option<Grant>
    where
        F: FnMut(Algorithm, &Quota, &mut State, Nanos) -> Grant,
    {
        let Ask {
            key,
            algorithm,
            ref quota,
            ..
        } = *ask;
        let owner = key.max(1);
        for _ in 0..MAX_ATTEMPTS {
            let found = self.locate(store, owner, now, stats).ok()?;
            let mut state = found.state.clone();
            let grant = decide(algorithm, quota, &mut state, now);
            if state == found.state && !found.claimed {
                return Some(grant);
            }
            self.record.clear();
            self.record.extend_from_slice(&owner.to_le_bytes());
            self.record
                .extend_from_slice(&algorithm.idle_at(quota, &state).to_le_bytes());
            state.encode(&mut self.record);
            self.set_name(found.index);
            let written = match found.cas {
                Some(cas) => store.set(&self.name, &self.record, cas),
                None => match create(store, &self.name, &self.record) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(StoreError::CasMismatch),
                    Err(err) => Err(err),
                },
            };
            match written {
                Ok(()) => return Some(grant),
                Err(StoreError::CasMismatch) => {
                    stats.cas_conflicts = stats.cas_conflicts.saturating_add(1)
                }
                Err(StoreError::Failed) => return None,
            }
        }
        None
    }

    fn locate(
        &mut self,
        store: &mut impl SharedStore,
        owner: u64,
        now: Nanos,
        stats: &mut EngineStats,
    ) -> Result<Located, StoreError> {
        let start = owner % u64::from(self.slots);
        let mut reusable: Option<(u32, u32)> = None;
        let mut soonest: Option<(u32, u32, Nanos)> = None;
        for probe in 0..u64::from(PROBES) {
            let index = u32::try_from((start + probe) % u64::from(self.slots)).unwrap_or(0);
            self.set_name(index);
            stats.shared_reads = stats.shared_reads.saturating_add(1);
            let Some((bytes, cas)) = store.get(&self.name)? else {
                // Never used, so the key is not further along: the slot is created with the
                // key's first record.
                return Ok(Located {
                    index,
                    cas: None,
                    state: State::default(),
                    claimed: true,
                });
            };
            let (slot_owner, idle_at) = header(&bytes);
            if slot_owner == owner {
                let state = bytes
                    .get(HEADER..)
                    .and_then(State::decode)
                    .unwrap_or_default();
                return Ok(Located {
                    index,
                    cas: Some(cas),
                    state,
                    claimed: false,
                });
            }
            if slot_owner == 0 || idle_at <= now {
                reusable.get_or_insert((index, cas));
            } else if soonest.is_none_or(|(_, _, at)| idle_at < at) {
                soonest = Some((index, cas, idle_at));
            }
        }
        let (index, cas) = match (reusable, soonest) {
            (Some(slot), _) => slot,
            (None, Some((index, cas, _))) => {
                stats.evicted_active = stats.evicted_active.saturating_add(1);
                (index, cas)
            }
            (None, None) => return Err(StoreError::Failed),
        };
        Ok(Located {
            index,
            cas: Some(cas),
            state: State::default(),
            claimed: true,
        })
    }

    fn set_name(&mut self, index: u32) {
        self.name.clear();
        let _ = write!(self.name, "tg/{index}");
    }
}

/// `(owner, idle_at)` of a slot record; `(0, 0)` for an empty or foreign value.
fn header(bytes: &[u8]) -> (u64, Nanos) {
    let word = |range: core::ops::Range<usize>| {
        bytes
            .get(range)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_le_bytes)
    };
    (word(0..8), word(8..16))
}
