//! A transaction's private writes, layered over the engine's shared write state.
//!
//! Group commit runs many transactions inside one engine transaction. Each must still commit or
//! abort on its own, and see its own writes, so its writes are buffered here and applied to the
//! shared state only when it commits.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::{AfterCommit, Direction, Entries, KeyRange, ReadView, StorageError, WriteTx};

/// The shared state a transaction overlays: the engine's open write transaction.
pub(crate) trait WriteBase {
    fn base_get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    fn base_scan(
        &self,
        tree: &str,
        range: &KeyRange,
        direction: Direction,
        limit: usize,
    ) -> Result<Entries, StorageError>;
    fn base_put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError>;
    fn base_delete(&self, tree: &str, key: &[u8]) -> Result<(), StorageError>;
}

type TreeWrites = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

pub(crate) struct Overlay<'b, B: WriteBase> {
    base: &'b B,
    /// Per tree, key → `Some(value)` written or `None` deleted.
    writes: BTreeMap<String, TreeWrites>,
    /// Run after the commit carrying this transaction succeeds.
    after_commit: Vec<AfterCommit>,
}

impl<'b, B: WriteBase> Overlay<'b, B> {
    pub(crate) fn new(base: &'b B) -> Self {
        Overlay {
            base,
            writes: BTreeMap::new(),
            after_commit: Vec::new(),
        }
    }

    /// The writes to `tree`, allocating its name only on its first write.
    fn tree_writes(&mut self, tree: &str) -> &mut TreeWrites {
        if !self.writes.contains_key(tree) {
            self.writes.insert(tree.to_owned(), TreeWrites::new());
        }
        self.writes.get_mut(tree).expect("just inserted")
    }

    /// Applies the buffered writes to the base, in key order, and returns the actions to run
    /// once they are committed.
    pub(crate) fn apply(self) -> Result<Vec<AfterCommit>, StorageError> {
        for (tree, writes) in &self.writes {
            for (key, value) in writes {
                match value {
                    Some(v) => self.base.base_put(tree, key, v)?,
                    None => self.base.base_delete(tree, key)?,
                }
            }
        }
        Ok(self.after_commit)
    }
}

impl<B: WriteBase> ReadView for Overlay<'_, B> {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(w) = self.writes.get(tree).and_then(|t| t.get(key)) {
            return Ok(w.clone());
        }
        self.base.base_get(tree, key)
    }

    fn scan(
        &self,
        tree: &str,
        range: &KeyRange,
        direction: Direction,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        let Some(writes) = self.writes.get(tree) else {
            return self.base.base_scan(tree, range, direction, limit);
        };
        let bounds: (Bound<&[u8]>, Bound<&[u8]>) = range.as_bounds();
        let mut local: Vec<(&Vec<u8>, &Option<Vec<u8>>)> = if range.is_empty() {
            Vec::new()
        } else {
            writes
                .range::<[u8], _>(bounds)
                .collect::<Vec<(&Vec<u8>, &Option<Vec<u8>>)>>()
        };
        if direction == Direction::Backward {
            local.reverse();
        }
        // Each local write can hide or replace at most one base entry, so this many base entries
        // always suffice to fill `limit`.
        let base =
            self.base
                .base_scan(tree, range, direction, limit.saturating_add(local.len()))?;

        let before = |a: &[u8], b: &[u8]| match direction {
            Direction::Forward => a < b,
            Direction::Backward => a > b,
        };
        let mut out = Vec::with_capacity(limit.min(base.len() + local.len()));
        let (mut bi, mut li) = (0, 0);
        while out.len() < limit && (bi < base.len() || li < local.len()) {
            let take_local = match (base.get(bi), local.get(li)) {
                (Some((bk, _)), Some((lk, _))) => !before(bk, lk),
                (None, Some(_)) => true,
                _ => false,
            };
            if take_local {
                let (lk, lv) = local[li];
                if base.get(bi).is_some_and(|(bk, _)| bk == lk) {
                    bi += 1; // shadowed by the local write
                }
                if let Some(v) = lv {
                    out.push((lk.clone(), v.clone()));
                }
                li += 1;
            } else {
                out.push(base[bi].clone());
                bi += 1;
            }
        }
        Ok(out)
    }
}

impl<B: WriteBase> WriteTx for Overlay<'_, B> {
    fn put(&mut self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.tree_writes(tree)
            .insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, tree: &str, key: &[u8]) -> Result<(), StorageError> {
        self.tree_writes(tree).insert(key.to_vec(), None);
        Ok(())
    }

    fn after_commit(&mut self, action: AfterCommit) {
        self.after_commit.push(action);
    }
}

/// Runs one transaction over `base`: its writes reach the base only if it commits, and then its
/// after-commit actions are returned for the engine to run once the commit is durable. A panic
/// in the closure aborts the transaction and is reported as [`StorageError::Panicked`].
pub(crate) fn run_job<B: WriteBase>(
    base: &B,
    job: crate::WriteJob,
) -> Result<Option<Vec<AfterCommit>>, StorageError> {
    let mut overlay = Overlay::new(base);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut overlay)))
        .map_err(|payload| {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            StorageError::Panicked(msg)
        })?;
    match outcome {
        crate::JobOutcome::Commit => overlay.apply().map(Some),
        crate::JobOutcome::Abort => Ok(None),
    }
}
