//! [`Store`]: the handle the rest of Shoal uses.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::{
    Direction, Engine, Entries, JobOutcome, KeyRange, MemoryEngine, OpenError, ReadView,
    RedbEngine, RedbOptions, StorageError, TxError, WriteTx,
};

/// A shared handle to an engine. Cloning is cheap; all clones use the same engine.
#[derive(Clone)]
pub struct Store {
    engine: Arc<dyn Engine>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Store")
            .field(&self.engine.describe())
            .finish()
    }
}

impl Store {
    /// Opens (or creates) a durable store at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with(path, RedbOptions::default())
    }

    /// Opens (or creates) a store at `path` with explicit options.
    pub fn open_with(path: impl AsRef<Path>, options: RedbOptions) -> Result<Self, OpenError> {
        Ok(Self::from_engine(Arc::new(RedbEngine::open(
            path, options,
        )?)))
    }

    /// A fresh in-memory store, for logic tests.
    pub fn memory() -> Self {
        Self::from_engine(Arc::new(MemoryEngine::new()))
    }

    /// Wraps any engine (for instance a fault-injecting one).
    pub fn from_engine(engine: Arc<dyn Engine>) -> Self {
        Store { engine }
    }

    /// The engine behind this handle.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// Runs `f` in a write transaction and waits until it is committed.
    ///
    /// If `f` returns `Ok`, its writes are committed atomically (durably, on a durable engine)
    /// before this returns `Ok`. If `f` returns `Err`, none of its writes are applied. The
    /// closure runs on the engine's writer, alongside other transactions of the same commit
    /// group: keep it short and free of blocking I/O.
    ///
    /// Blocks the calling thread: from async code use [`Store::transact_async`].
    pub fn transact<R, E, F>(&self, f: F) -> Result<R, TxError<E>>
    where
        F: FnOnce(&mut dyn WriteTx) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: Send + 'static,
    {
        let (slot, mut rx) = self.submit(f);
        // An engine that commits in place (the memory engine) has answered already: take the
        // answer without blocking, which also works on an async thread (simulations run
        // storage in place).
        let committed = match rx.try_recv() {
            Ok(r) => r,
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => Err(StorageError::Closed),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                self.engine.commit_pending();
                match rx.try_recv() {
                    Ok(r) => r,
                    Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                        Err(StorageError::Closed)
                    }
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                        rx.blocking_recv().unwrap_or(Err(StorageError::Closed))
                    }
                }
            }
        };
        Self::finish(slot, committed)
    }

    /// [`Store::transact`] for async callers: waits without blocking the runtime.
    pub async fn transact_async<R, E, F>(&self, f: F) -> Result<R, TxError<E>>
    where
        F: FnOnce(&mut dyn WriteTx) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: Send + 'static,
    {
        let (slot, rx) = self.submit(f);
        let committed = rx.await.unwrap_or(Err(StorageError::Closed));
        Self::finish(slot, committed)
    }

    #[allow(clippy::type_complexity)]
    fn submit<R, E, F>(
        &self,
        f: F,
    ) -> (
        Arc<Mutex<Option<Result<R, E>>>>,
        tokio::sync::oneshot::Receiver<Result<(), StorageError>>,
    )
    where
        F: FnOnce(&mut dyn WriteTx) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: Send + 'static,
    {
        let slot = Arc::new(Mutex::new(None));
        let job_slot = slot.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.engine.submit(
            Box::new(move |wtx| {
                let r = f(wtx);
                let outcome = if r.is_ok() {
                    JobOutcome::Commit
                } else {
                    JobOutcome::Abort
                };
                *job_slot.lock() = Some(r);
                outcome
            }),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        (slot, rx)
    }

    fn finish<R, E>(
        slot: Arc<Mutex<Option<Result<R, E>>>>,
        committed: Result<(), StorageError>,
    ) -> Result<R, TxError<E>> {
        let outcome = slot.lock().take();
        match (outcome, committed) {
            (Some(Err(e)), _) => Err(TxError::Aborted(e)),
            (Some(Ok(r)), Ok(())) => Ok(r),
            (_, Err(e)) => Err(TxError::Commit(e)),
            (None, Ok(())) => Err(TxError::Commit(StorageError::Closed)),
        }
    }

    /// The value under `key` in `tree`, from the latest committed state.
    pub fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.engine.get(tree, key)
    }

    /// Up to `limit` entries of `tree` in `range`, from the latest committed state.
    pub fn scan(
        &self,
        tree: &str,
        range: &KeyRange,
        direction: Direction,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        self.engine.scan(tree, range, direction, limit)
    }

    /// Calls `f` on every entry of `tree` in `range`, in ascending order, reading `batch` entries
    /// at a time from one consistent snapshot. Stops early if `f` returns `false`.
    pub fn for_each(
        &self,
        tree: &str,
        range: &KeyRange,
        batch: usize,
        mut f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        let snapshot = self.engine.snapshot()?;
        let mut range = range.clone();
        loop {
            let page = snapshot.scan(tree, &range, Direction::Forward, batch.max(1))?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            range.start = std::ops::Bound::Excluded(last.clone());
            let full = page.len() >= batch.max(1);
            for (k, v) in &page {
                if !f(k, v) {
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// A consistent read-only view of the latest committed state.
    pub fn snapshot(&self) -> Result<Box<dyn ReadView + Send + '_>, StorageError> {
        self.engine.snapshot()
    }

    /// Number of entries in `tree`.
    pub fn tree_len(&self, tree: &str) -> Result<u64, StorageError> {
        self.engine.tree_len(tree)
    }

    /// Approximate bytes used by the store.
    pub fn approximate_size(&self) -> Result<u64, StorageError> {
        self.engine.approximate_size()
    }
}
