//! In-memory copies of the small, fully replicated system tables (access keys, buckets), which
//! every request reads twice before it touches an item.
//!
//! Correctness rests on one counter: every committed change to the table bumps its generation
//! (after the commit, from the table's change hook), and a cached entry is used only while the
//! generation it was read at is current. A reader that races a commit tags its entry with the
//! older generation, so the next request reads the store again: the cache never serves a value
//! older than the last commit it could have seen.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use shoal_storage::{StorageError, WriteTx};
use shoal_table::{Change, ChangeHook};

/// Most entries kept; past it the cache starts over (keys and buckets are few).
const MAX_ENTRIES: usize = 4096;

/// A cached row (`None`: known absent) and the generation it was read at.
type Tagged<V> = (u64, Option<Arc<V>>);

/// A generation-checked cache of one table's rows by sort key.
pub struct RowCache<V> {
    generation: Arc<AtomicU64>,
    rows: Mutex<HashMap<String, Tagged<V>>>,
}

impl<V> Default for RowCache<V> {
    fn default() -> Self {
        RowCache {
            generation: Arc::new(AtomicU64::new(0)),
            rows: Mutex::new(HashMap::new()),
        }
    }
}

impl<V> RowCache<V> {
    /// The hook to install on the table: it invalidates the cache after each commit.
    pub fn invalidator(&self) -> Arc<dyn ChangeHook> {
        Arc::new(Invalidator(self.generation.clone()))
    }

    /// The current generation, to read before loading a row from the store.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The cached row (`Some(None)`: known absent), if still current.
    pub fn get(&self, key: &str) -> Option<Option<Arc<V>>> {
        let now = self.generation();
        let rows = self.rows.lock();
        match rows.get(key) {
            Some((g, v)) if *g == now => Some(v.clone()),
            _ => None,
        }
    }

    /// The row under `key`: the cached copy while current, else what `load` reads from this
    /// node's store. Only rows found are remembered: one not synced here yet is looked for
    /// again (and elsewhere, by the caller) next time.
    pub fn get_or_load<E>(
        &self,
        key: &str,
        load: impl FnOnce() -> Result<Option<V>, E>,
    ) -> Result<Option<Arc<V>>, E> {
        if let Some(cached) = self.get(key) {
            return Ok(cached);
        }
        let at = self.generation();
        let row = load()?.map(Arc::new);
        if row.is_some() {
            self.put(key, at, row.clone());
        }
        Ok(row)
    }

    /// Remembers a row loaded from the store at generation `at`.
    pub fn put(&self, key: &str, at: u64, row: Option<Arc<V>>) {
        let mut rows = self.rows.lock();
        if rows.len() >= MAX_ENTRIES {
            rows.clear();
        }
        rows.insert(key.to_string(), (at, row));
    }
}

struct Invalidator(Arc<AtomicU64>);

impl ChangeHook for Invalidator {
    fn on_change(&self, tx: &mut dyn WriteTx, _change: &Change<'_>) -> Result<(), StorageError> {
        let generation = self.0.clone();
        tx.after_commit(Box::new(move || {
            generation.fetch_add(1, Ordering::AcqRel);
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_read_before_a_commit_is_not_served_after_it() {
        let cache = RowCache::<String>::default();
        let at = cache.generation();
        cache.put("k", at, Some(Arc::new("old".into())));
        assert_eq!(cache.get("k").unwrap().as_deref(), Some(&"old".to_string()));
        // A commit lands (what the hook's after-commit action does).
        cache.generation.fetch_add(1, Ordering::AcqRel);
        assert!(cache.get("k").is_none());
        // A reader that loaded before the commit but stores after it tags the old generation.
        cache.put("k", at, Some(Arc::new("old".into())));
        assert!(cache.get("k").is_none());
        cache.put("k", cache.generation(), None);
        assert_eq!(cache.get("k"), Some(None));
    }

    #[test]
    fn rows_found_are_loaded_once_per_generation_and_missing_ones_every_time() {
        let cache = RowCache::<u32>::default();
        let loads = std::cell::Cell::new(0);
        let load = |v: Option<u32>| {
            loads.set(loads.get() + 1);
            Ok::<_, ()>(v)
        };
        for _ in 0..3 {
            assert_eq!(cache.get_or_load("absent", || load(None)), Ok(None));
        }
        assert_eq!(loads.get(), 3);
        for _ in 0..3 {
            let row = cache.get_or_load("k", || load(Some(7))).unwrap();
            assert_eq!(row.as_deref(), Some(&7));
        }
        assert_eq!(loads.get(), 4);
        cache.generation.fetch_add(1, Ordering::AcqRel);
        let row = cache.get_or_load("k", || load(Some(8))).unwrap();
        assert_eq!((row.as_deref(), loads.get()), (Some(&8), 5));
        assert_eq!(cache.get_or_load("k", || Err(())), Ok(Some(Arc::new(8))));
    }
}
