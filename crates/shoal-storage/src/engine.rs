//! The engine interface: what any ordered key-value engine must provide to Shoal.

use std::ops::Bound;

use crate::StorageError;

/// Order of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Ascending keys.
    Forward,
    /// Descending keys.
    Backward,
}

/// A range of keys, with explicit bounds on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// Lower bound.
    pub start: Bound<Vec<u8>>,
    /// Upper bound.
    pub end: Bound<Vec<u8>>,
}

impl KeyRange {
    /// Every key of the tree.
    pub fn all() -> Self {
        KeyRange {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
        }
    }

    /// Keys in `[start, end)`.
    pub fn half_open(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            start: Bound::Included(start.into()),
            end: Bound::Excluded(end.into()),
        }
    }

    /// Keys that start with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        let start = Bound::Included(prefix.to_vec());
        let end = match prefix_successor(prefix) {
            Some(s) => Bound::Excluded(s),
            None => Bound::Unbounded,
        };
        KeyRange { start, end }
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        let after_start = match &self.start {
            Bound::Included(s) => key >= s.as_slice(),
            Bound::Excluded(s) => key > s.as_slice(),
            Bound::Unbounded => true,
        };
        let before_end = match &self.end {
            Bound::Included(e) => key <= e.as_slice(),
            Bound::Excluded(e) => key < e.as_slice(),
            Bound::Unbounded => true,
        };
        after_start && before_end
    }

    /// Whether no key can lie in the range.
    pub fn is_empty(&self) -> bool {
        match (&self.start, &self.end) {
            (Bound::Included(s), Bound::Included(e)) => s > e,
            (Bound::Included(s), Bound::Excluded(e))
            | (Bound::Excluded(s), Bound::Included(e))
            | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
            _ => false,
        }
    }

    /// The bounds as borrowed slices, the form engines take.
    pub fn as_bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (as_slice_bound(&self.start), as_slice_bound(&self.end))
    }
}

fn as_slice_bound(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The smallest key greater than every key starting with `prefix`, if one exists.
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut s = prefix.to_vec();
    while let Some(last) = s.pop() {
        if last < u8::MAX {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

/// Key-value pairs, in scan order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Reads over one consistent state of the store.
pub trait ReadView {
    /// The value stored under `key` in `tree`, if any. A tree never written reads as empty.
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Up to `limit` entries of `tree` within `range`, in `direction` order.
    fn scan(
        &self,
        tree: &str,
        range: &KeyRange,
        direction: Direction,
        limit: usize,
    ) -> Result<Entries, StorageError>;

    /// Calls `f` with every key of `tree` within `range`, ascending, from one consistent state
    /// where the engine allows it; stops early when `f` returns `false`. Engines that can lend
    /// their keys (redb) copy nothing; the default pages through [`ReadView::scan`].
    fn for_each_key(
        &self,
        tree: &str,
        range: &KeyRange,
        f: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), StorageError> {
        let mut range = range.clone();
        loop {
            let page = self.scan(tree, &range, Direction::Forward, 4096)?;
            let full = page.len() == 4096;
            for (k, _) in &page {
                if !f(k) {
                    return Ok(());
                }
            }
            match page.last() {
                Some((k, _)) if full => range.start = Bound::Excluded(k.clone()),
                _ => return Ok(()),
            }
        }
    }
}

/// A write transaction: reads see the transaction's own writes.
pub trait WriteTx: ReadView {
    /// Stores `value` under `key` in `tree`, creating the tree if needed.
    fn put(&mut self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError>;
    /// Removes `key` from `tree` (nothing happens if it is absent).
    fn delete(&mut self, tree: &str, key: &[u8]) -> Result<(), StorageError>;

    /// Runs `action` once the commit carrying this transaction has succeeded, on the engine's
    /// writer, before any later transaction runs and before the transaction is acknowledged. If
    /// the transaction aborts or its commit fails, `action` is dropped without being called.
    ///
    /// This is how in-memory state derived from the store (the partition index's heads) follows
    /// exactly the committed writes, without a caller having to survive until the commit.
    fn after_commit(&mut self, action: AfterCommit);
}

/// An action run after a successful commit: see [`WriteTx::after_commit`].
pub type AfterCommit = Box<dyn FnOnce() + Send>;

/// What a transaction closure decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Apply the transaction's writes.
    Commit,
    /// Discard the transaction's writes.
    Abort,
}

/// A transaction submitted to an engine: runs once, on the engine's writer.
pub type WriteJob = Box<dyn FnOnce(&mut dyn WriteTx) -> JobOutcome + Send>;

/// Called once the transaction's fate is final: `Ok` once its writes are committed (durably, if
/// the engine is durable) or it aborted, `Err` if the commit carrying it failed.
pub type WriteCallback = Box<dyn FnOnce(Result<(), StorageError>) + Send>;

/// An ordered key-value engine. Reads on the engine itself see the latest committed state.
pub trait Engine: ReadView + Send + Sync {
    /// Queues a write transaction. `done` is called exactly once, after the commit that carries
    /// the transaction has finished (or failed), from any thread.
    fn submit(&self, job: WriteJob, done: WriteCallback);

    /// A consistent read-only view of the latest committed state: later commits are not seen.
    fn snapshot(&self) -> Result<Box<dyn ReadView + Send + '_>, StorageError>;

    /// Number of entries in `tree` (0 for a tree never written).
    fn tree_len(&self, tree: &str) -> Result<u64, StorageError>;

    /// Approximate bytes used by the store (the file size for on-disk engines).
    fn approximate_size(&self) -> Result<u64, StorageError>;

    /// A human-readable name of the engine and where it lives, for logs and errors.
    fn describe(&self) -> String;

    /// Counters since the engine was opened.
    fn stats(&self) -> EngineStats;

    /// Commits every queued transaction now. A caller that blocks on its answer asks for this
    /// first, so an engine that defers commits to a timer of its own (the simulator's crashable
    /// engine, which commits on simulated time) cannot leave it waiting for a timer that its own
    /// thread would have to drive. Engines with a writer of their own need nothing here.
    fn commit_pending(&self) {}
}

/// Counters of an engine's write path and point reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Transactions submitted and run (committed or aborted).
    pub transactions: u64,
    /// Engine commits performed; with group commit, fewer than `transactions`.
    pub commits: u64,
    /// Point reads answered by the row cache (engines that have one).
    pub row_cache_hits: u64,
    /// Point reads the row cache sent to the B-trees.
    pub row_cache_misses: u64,
}
