//! Test support: an in-memory [`SharedStore`] with either host's CAS semantics, a capacity
//! (a full `shm_kv` zone), and a hook that slips a competing worker's writes in before any
//! one of this store's writes — that is, between the caller's `get` and its `set`.

use std::collections::HashMap;

use super::{SharedStore, StoreError};

/// A competing worker's turn: runs on the store right before one of the caller's writes.
pub type Competitor = Box<dyn FnOnce(&mut MemStore)>;

/// Proxy-Wasm shared data: a CAS token per entry, bumped on every write (node-wide counter).
///
/// `strict` (the default) follows ngx_wasm_module: a write with token 0 only creates a key,
/// and a non-zero token must match the entry (so it fails on a missing key). Otherwise it
/// follows Envoy: token 0 writes unconditionally, a non-zero token on a missing key creates it.
pub struct MemStore {
    /// Key → (value, CAS token).
    pub entries: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    /// ngx_wasm_module's rules (see the type's doc).
    pub strict: bool,
    /// Entries the store holds at most (a write of a new key beyond fails).
    pub capacity: Option<usize>,
    /// Runs the competitor right before the `n`th write from now (0: the next one).
    compete: Option<(usize, Competitor)>,
    /// Writes made (every `set` call, successful or not).
    pub writes: usize,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore {
            entries: HashMap::new(),
            next_cas: 0,
            strict: true,
            capacity: None,
            compete: None,
            writes: 0,
        }
    }
}

impl MemStore {
    /// A store with Envoy's semantics.
    pub fn envoy() -> Self {
        MemStore {
            strict: false,
            ..MemStore::default()
        }
    }

    /// Runs `competitor` right before the `nth` write from now (0: the next).
    pub fn compete_before_write(&mut self, nth: usize, competitor: Competitor) {
        self.compete = Some((nth, competitor));
    }

    /// Whether a competitor is still waiting for its write.
    pub fn competitor_pending(&self) -> bool {
        self.compete.is_some()
    }
}

impl SharedStore for MemStore {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(self.entries.get(key).cloned())
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        match self.compete.take() {
            Some((0, competitor)) => competitor(self),
            Some((n, competitor)) => self.compete = Some((n - 1, competitor)),
            None => {}
        }
        self.writes += 1;
        match self.entries.get(key) {
            Some((_, current)) if self.strict && cas != *current => {
                return Err(StoreError::CasMismatch);
            }
            Some((_, current)) if cas != 0 && cas != *current => {
                return Err(StoreError::CasMismatch);
            }
            None if self.strict && cas != 0 => return Err(StoreError::CasMismatch),
            None if self.capacity.is_some_and(|c| self.entries.len() >= c) => {
                return Err(StoreError::Failed);
            }
            _ => {}
        }
        self.next_cas += 1;
        self.entries
            .insert(key.to_owned(), (value.to_vec(), self.next_cas));
        Ok(())
    }
}
