//! A storage engine that can lose what it has not committed yet, for crash faults.
//!
//! Shoal's real engine acknowledges a transaction only after the group commit carrying it has
//! reached the disk; whatever was queued behind that commit is lost by a crash, and its writers
//! never hear back. The memory engine commits inside `submit`, so a simulated crash could never
//! catch a transaction in that window. This engine queues transactions and commits them on a
//! timer of simulated time (the fsync latency); [`CrashableEngine::crash`] drops the queue, as a
//! power cut drops a write-back cache. Reads see only committed state, as with redb.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shoal_storage::{
    Direction, Engine, EngineStats, Entries, KeyRange, MemoryEngine, ReadView, StorageError,
    WriteCallback, WriteJob,
};

/// A memory engine behind a queue of transactions that are not durable yet.
#[derive(Default)]
pub struct CrashableEngine {
    durable: MemoryEngine,
    queued: Mutex<Vec<(WriteJob, WriteCallback)>>,
    lost: AtomicU64,
}

impl CrashableEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    fn take_queue(&self) -> Vec<(WriteJob, WriteCallback)> {
        std::mem::take(&mut *self.queued.lock())
    }

    /// Drops every queued transaction, as a crash would: none of them was acknowledged, none
    /// will be. Returns how many were lost.
    pub fn crash(&self) -> usize {
        let queue = self.take_queue();
        let n = queue.len();
        self.lost.fetch_add(n as u64, Ordering::Relaxed);
        // Dropping the callbacks closes the writers' channels: they see the store closed.
        drop(queue);
        n
    }

    /// Transactions waiting for the next commit.
    pub fn queued(&self) -> usize {
        self.queued.lock().len()
    }

    /// Transactions lost by crashes since the engine was made.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Commits on simulated time, every `interval`, until the host running it crashes.
    pub async fn run_commits(self: std::sync::Arc<Self>, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            self.commit_pending();
        }
    }
}

impl ReadView for CrashableEngine {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.durable.get(tree, key)
    }

    fn scan(
        &self,
        tree: &str,
        range: &KeyRange,
        direction: Direction,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        self.durable.scan(tree, range, direction, limit)
    }
}

impl Engine for CrashableEngine {
    fn submit(&self, job: WriteJob, done: WriteCallback) {
        self.queued.lock().push((job, done));
    }

    fn commit_pending(&self) {
        // In submission order, as one group commit would.
        for (job, done) in self.take_queue() {
            self.durable.submit(job, done);
        }
    }

    fn snapshot(&self) -> Result<Box<dyn ReadView + Send + '_>, StorageError> {
        self.durable.snapshot()
    }

    fn tree_len(&self, tree: &str) -> Result<u64, StorageError> {
        self.durable.tree_len(tree)
    }

    fn approximate_size(&self) -> Result<u64, StorageError> {
        self.durable.approximate_size()
    }

    fn describe(&self) -> String {
        "simulated crashable engine (commits on simulated time)".into()
    }

    fn stats(&self) -> EngineStats {
        self.durable.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_storage::Store;
    use std::sync::Arc;

    #[test]
    fn a_crash_loses_queued_transactions_and_nothing_committed() {
        let engine = Arc::new(CrashableEngine::new());
        let store = Store::from_engine(engine.clone());
        // A blocking caller commits at once (and with it everything queued before it).
        store
            .transact(|tx| tx.put("t", b"a", b"1"))
            .expect("blocking commit");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let queued = store.clone();
        let waiter =
            rt.spawn(async move { queued.transact_async(|tx| tx.put("t", b"b", b"2")).await });
        rt.block_on(tokio::task::yield_now());
        assert_eq!(
            store.get("t", b"b").unwrap(),
            None,
            "not visible before its commit"
        );
        assert_eq!(engine.crash(), 1);
        let answer = rt.block_on(waiter).unwrap();
        assert!(answer.is_err(), "a lost transaction is never acknowledged");
        assert_eq!(store.get("t", b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(store.get("t", b"b").unwrap(), None);
        assert_eq!(engine.lost(), 1);
    }
}
