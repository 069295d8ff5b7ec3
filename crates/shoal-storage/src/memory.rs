//! An in-memory engine for logic tests. Nothing is persisted; never use it as the product.

use parking_lot::Mutex;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::overlay::{WriteBase, run_job};
use crate::{
    Direction, Engine, EngineStats, Entries, KeyRange, ReadView, StorageError, WriteCallback,
    WriteJob,
};

type Trees = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

/// An engine holding every tree in memory. Transactions run one at a time, in submission order.
#[derive(Default)]
pub struct MemoryEngine {
    trees: Mutex<Trees>,
    transactions: AtomicU64,
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Trees> {
        // A panic while holding the lock cannot leave a half-applied transaction: writes are
        // applied from an overlay after the closure returned, so the map is always whole.
        self.trees.lock()
    }
}

pub(crate) fn scan_map(
    map: Option<&BTreeMap<Vec<u8>, Vec<u8>>>,
    range: &KeyRange,
    direction: Direction,
    limit: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Some(map) = map else { return Vec::new() };
    if range.is_empty() {
        return Vec::new();
    }
    let it = map.range::<[u8], _>(range.as_bounds());
    let clone = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
    match direction {
        Direction::Forward => it.take(limit).map(clone).collect(),
        Direction::Backward => it.rev().take(limit).map(clone).collect(),
    }
}

impl ReadView for MemoryEngine {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock().get(tree).and_then(|t| t.get(key)).cloned())
    }

    fn scan(
        &self,
        tree: &str,
        range: &KeyRange,
        direction: Direction,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        Ok(scan_map(self.lock().get(tree), range, direction, limit))
    }
}

struct MemSnapshot(Trees);

impl ReadView for MemSnapshot {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.0.get(tree).and_then(|t| t.get(key)).cloned())
    }

    fn scan(
        &self,
        tree: &str,
        range: &KeyRange,
        direction: Direction,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        Ok(scan_map(self.0.get(tree), range, direction, limit))
    }
}

struct MemBase<'a>(RefCell<&'a mut Trees>);

impl WriteBase for MemBase<'_> {
    fn base_get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.0.borrow().get(tree).and_then(|t| t.get(key)).cloned())
    }

    fn base_scan(
        &self,
        tree: &str,
        range: &KeyRange,
        direction: Direction,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        Ok(scan_map(self.0.borrow().get(tree), range, direction, limit))
    }

    fn base_put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.0
            .borrow_mut()
            .entry(tree.to_owned())
            .or_default()
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn base_delete(&self, tree: &str, key: &[u8]) -> Result<(), StorageError> {
        if let Some(t) = self.0.borrow_mut().get_mut(tree) {
            t.remove(key);
        }
        Ok(())
    }
}

impl Engine for MemoryEngine {
    fn submit(&self, job: WriteJob, done: WriteCallback) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        let result = {
            let mut trees = self.lock();
            let base = MemBase(RefCell::new(&mut *trees));
            run_job(&base, job)
        };
        // The memory engine's commit is the apply itself: run the actions at once.
        let result = result.map(|actions| actions.into_iter().flatten().for_each(|a| a()));
        done(result);
    }

    fn snapshot(&self) -> Result<Box<dyn ReadView + Send + '_>, StorageError> {
        Ok(Box::new(MemSnapshot(self.lock().clone())))
    }

    fn tree_len(&self, tree: &str) -> Result<u64, StorageError> {
        Ok(self.lock().get(tree).map_or(0, |t| t.len() as u64))
    }

    fn approximate_size(&self) -> Result<u64, StorageError> {
        Ok(self
            .lock()
            .values()
            .flat_map(|t| t.iter())
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum())
    }

    fn describe(&self) -> String {
        "in-memory engine (not durable)".into()
    }

    fn stats(&self) -> EngineStats {
        let n = self.transactions.load(Ordering::Relaxed);
        EngineStats {
            transactions: n,
            commits: n,
            ..EngineStats::default()
        }
    }
}
