//! Test support: an in-memory [`SharedStore`] with Envoy's CAS semantics.

use std::collections::HashMap;

use super::{SharedStore, StoreError};

/// Proxy-Wasm shared data as Envoy implements it: a CAS token per entry, bumped on every write.
#[derive(Default)]
pub struct MemStore {
    /// Key → (value, CAS token).
    pub entries: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

impl SharedStore for MemStore {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(self.entries.get(key).cloned())
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        if let Some((_, current)) = self.entries.get(key)
            && cas != 0
            && cas != *current
        {
            return Err(StoreError::CasMismatch);
        }
        self.next_cas += 1;
        self.entries
            .insert(key.to_owned(), (value.to_vec(), self.next_cas));
        Ok(())
    }
}
