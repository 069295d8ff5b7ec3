//! The persistent partition index, kept in the same transaction as every write.
//!
//! For each ring partition (the first byte of the engine key: 256 partitions) the index keeps
//! what a sync session needs without reading the partition's items:
//! - its first [`MAINTAINED_CELLS`] sketch cells, cell 0 being the partition's *digest* (XOR,
//!   check and count of the ids of all its items), and its full difference-size summary (the
//!   16-byte mini summary of `Hello` is folded from it): updated in O(1) per id by every write,
//!   held in memory, persisted by checkpoints;
//! - an *id map* from each id to the item's engine key (`idmap`: a delta in memory, sorted runs
//!   on disk written by checkpoints): a session finds the items behind the ids it decoded with a
//!   few point reads each, and lists a partition's ids without reading or hashing its items.
//!
//! So a session's work follows the difference, not the partition: equal partitions compare two
//! digests; a difference of `d` ids costs about `1.4·d` cells read from memory and `d` point
//! reads. Only a difference too large for the maintained cells (or the id-list fallback) reads
//! the partition's ids, from the id map.
//!
//! The index can never lag the items: the in-memory cells, summary and id delta are updated by
//! the commit's after-commit action before the write is acknowledged. A sync can never declare
//! agreement over writes not yet indexed.

mod idmap;
mod state;

use std::sync::Arc;

use parking_lot::Mutex;

use shoal_storage::{Direction, Entries, KeyRange, ReadView, StorageError, Store, WriteTx};
use shoal_table::{Change, ChangeHook};

use self::idmap::PartitionIds;
pub use self::state::MAINTAINED_CELLS;
use self::state::PartitionState;
use crate::estimator::{MINI_WIRE_BYTES, Summary};
use crate::ids::IdKey;
use crate::sketch::{Cell, ItemId};

/// A ring partition: the first byte of an item's engine key.
pub type Partition = u8;

/// The partition of an engine key.
pub fn partition_of(engine_key: &[u8]) -> Partition {
    engine_key.first().copied().unwrap_or(0)
}

/// Engine keys of one partition.
pub fn partition_range(p: Partition) -> KeyRange {
    KeyRange::prefix(&[p])
}

/// What a `Hello` carries about a partition.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Head {
    /// The digest: sketch cell 0 over all the partition's ids.
    pub digest: Cell,
    /// The mini summary, carried by `Hello`.
    pub mini: [u8; MINI_WIRE_BYTES],
}

impl Head {
    /// Number of items in the partition.
    pub fn count(&self) -> u64 {
        self.digest.count
    }

    /// Adds or removes an id.
    pub fn toggle(&mut self, id: ItemId, remove: bool) {
        self.digest.toggle(id, remove);
        Summary::toggle_mini_packed(&mut self.mini, id);
    }
}

/// A partition's ids with the engine keys of their items, sorted by id, computed from the items
/// themselves: what [`PartitionIndex::verify`] checks the index against.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartitionScan {
    entries: Vec<(ItemId, Box<[u8]>)>,
}

impl PartitionScan {
    /// The ids, ascending.
    pub fn ids(&self) -> impl Iterator<Item = ItemId> + '_ {
        self.entries.iter().map(|(id, _)| *id)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the partition is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The engine key of the item with this id.
    pub fn key_of(&self, id: ItemId) -> Option<&[u8]> {
        self.entries
            .binary_search_by(|(i, _)| i.cmp(&id))
            .ok()
            .map(|i| &*self.entries[i].1)
    }

    /// The head these items imply.
    pub fn head(&self) -> Head {
        let mut h = Head::default();
        for (id, _) in &self.entries {
            h.toggle(*id, false);
        }
        h
    }
}

/// What [`PartitionIndex::verify`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Partitions checked (those holding items or index state).
    pub partitions: usize,
    /// Items read.
    pub items: u64,
    /// Partitions whose served cells or summary differ from those computed from the items.
    pub mismatched: Vec<Partition>,
    /// Partitions whose id map does not give exactly their items' ids and keys.
    pub id_tree_mismatched: Vec<Partition>,
}

impl VerifyReport {
    /// Whether the index matches the items everywhere.
    pub fn is_clean(&self) -> bool {
        self.mismatched.is_empty() && self.id_tree_mismatched.is_empty()
    }
}

/// Changes between two automatic checkpoints of the in-memory state (see [`PartitionIndex`]).
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 65_536;

/// Key of the format marker in the state tree; its absence means "rebuild everything" (format
/// 1 kept heads only; format 2 an id tree written in place; format 3 wider cells).
const FORMAT_KEY: &[u8] = b"format-4";
const OLD_FORMAT_KEYS: &[&[u8]] = &[b"format-1", b"format-2", b"format-3"];
/// Prefix of a partition's *dirty marker* in the state tree (a state's key is the 1-byte `[p]`).
const DIRTY_PREFIX: u8 = b'd';

fn dirty_key(p: Partition) -> [u8; 2] {
    [DIRTY_PREFIX, p]
}

/// The index of one table. Open it with [`PartitionIndex::open`] and attach it to the table
/// with `Table::with_hook`.
///
/// The cells, summaries and id deltas live in memory, updated by an after-commit action of every
/// writing transaction (XOR and counts commute, so commits may apply in any order), and are
/// persisted by *checkpoints*: the state in the tree `{table}~head`, the deltas as runs of the
/// id map in `{table}~ids`. What makes this crash-safe is the *dirty marker*: the first transaction to
/// change a partition after its last checkpoint also writes the partition's marker, in the same
/// atomic commit. A checkpoint writes the state and removes the markers of the partitions with
/// no transaction in flight. Opening the index recomputes, from the items, the state and id map
/// of every partition still marked: so what it serves always equals what the items imply, and a
/// crash costs only a read of the partitions written since their last checkpoint.
///
/// Measured: persisting the heads in every transaction cost 8–10% of durable insert throughput
/// (one more tree dirtied per commit); with markers, a commit touches the state tree only for
/// the first write to a partition after a checkpoint.
pub struct PartitionIndex {
    table: String,
    head_tree: String,
    id_tree: String,
    key: IdKey,
    checkpoint_every: u64,
    state: Arc<Mutex<IndexState>>,
}

impl std::fmt::Debug for PartitionIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionIndex")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// The in-memory state and what is known of its persisted form. Only mutated on the store's
/// writer (inside transactions and their after-commit actions), read by anyone.
struct IndexState {
    /// The state of all committed writes; `None` for an empty partition.
    parts: Vec<Option<Box<PartitionState>>>,
    /// Each partition's id map (delta and persisted runs).
    ids: Vec<PartitionIds>,
    /// Whether the partition's dirty marker is known to be committed.
    marked: [bool; 256],
    /// Transactions that changed the partition and whose fate is not yet known.
    in_flight: [u32; 256],
    /// Changes since the last checkpoint.
    changes: u64,
    /// Partitions recomputed when the index was opened (marked dirty: written since their last
    /// checkpoint, by a run that did not close cleanly).
    rebuilt_at_open: usize,
}

impl IndexState {
    fn new() -> Self {
        IndexState {
            parts: (0..256).map(|_| None).collect(),
            ids: (0..256).map(|_| PartitionIds::default()).collect(),
            marked: [false; 256],
            in_flight: [0; 256],
            changes: 0,
            rebuilt_at_open: 0,
        }
    }

    fn toggle(&mut self, p: Partition, id: ItemId, remove: bool) {
        let part = self.parts[p as usize].get_or_insert_with(Default::default);
        part.toggle(id, remove);
        if part.head().count() == 0 && part.is_empty() {
            self.parts[p as usize] = None;
        }
    }

    fn set(&mut self, p: Partition, state: PartitionState) {
        self.parts[p as usize] = (!state.is_empty()).then(|| Box::new(state));
    }
}

/// A change's effect on the state, applied when its transaction commits.
struct PendingChange {
    state: Arc<Mutex<IndexState>>,
    partition: Partition,
    old: Option<ItemId>,
    new: Option<ItemId>,
    /// The item's engine key, moved into the id map's delta at commit.
    key: Option<Box<[u8]>>,
    marks: bool,
    committed: bool,
}

impl Drop for PendingChange {
    // Runs both after a commit (with `committed` set) and when the transaction aborts or its
    // commit fails: either way the change is no longer in flight.
    fn drop(&mut self) {
        let mut s = lock(&self.state);
        let p = self.partition;
        s.in_flight[p as usize] -= 1;
        if self.committed {
            if let Some(old) = self.old {
                s.toggle(p, old, true);
                s.ids[p as usize].record(old, None);
            }
            if let Some(new) = self.new {
                s.toggle(p, new, false);
                let key = self.key.take();
                s.ids[p as usize].record(new, key);
            }
            if self.marks {
                s.marked[p as usize] = true;
            }
        }
    }
}

fn lock(state: &Mutex<IndexState>) -> parking_lot::MutexGuard<'_, IndexState> {
    state.lock()
}

impl PartitionIndex {
    /// Opens the index of `table` in `store`, ids keyed by `key`: loads the persisted state and
    /// recomputes every partition marked dirty (builds the whole index, id map included, for a
    /// table never indexed or indexed by an older format). Blocks: from async code use
    /// [`PartitionIndex::open_async`].
    pub fn open(
        store: &Store,
        table: impl Into<String>,
        key: IdKey,
    ) -> Result<Arc<Self>, StorageError> {
        let index = Self::unloaded(table.into(), key);
        let job = index.load_job();
        let state = store.transact(job).map_err(tx_error)?;
        *lock(&index.state) = state;
        Ok(Arc::new(index))
    }

    /// [`PartitionIndex::open`] for async callers.
    pub async fn open_async(
        store: &Store,
        table: impl Into<String>,
        key: IdKey,
    ) -> Result<Arc<Self>, StorageError> {
        let index = Self::unloaded(table.into(), key);
        let job = index.load_job();
        let state = store.transact_async(job).await.map_err(tx_error)?;
        *lock(&index.state) = state;
        Ok(Arc::new(index))
    }

    /// Sets how many changes trigger an automatic checkpoint (at least 1).
    pub fn with_checkpoint_every(mut self: Arc<Self>, changes: u64) -> Arc<Self> {
        Arc::get_mut(&mut self)
            .expect("set before the index is shared")
            .checkpoint_every = changes.max(1);
        self
    }

    fn unloaded(table: String, key: IdKey) -> Self {
        PartitionIndex {
            head_tree: format!("{table}~head"),
            id_tree: format!("{table}~ids"),
            table,
            key,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            state: Arc::new(Mutex::new(IndexState::new())),
        }
    }

    #[allow(clippy::type_complexity)]
    fn load_job(
        &self,
    ) -> impl FnOnce(&mut dyn WriteTx) -> Result<IndexState, StorageError> + Send + 'static {
        let (table, head_tree, id_tree, key) = (
            self.table.clone(),
            self.head_tree.clone(),
            self.id_tree.clone(),
            self.key.clone(),
        );
        move |tx| {
            let fresh = tx.get(&head_tree, FORMAT_KEY)?.is_none();
            let mut state = IndexState::new();
            if fresh {
                // Whatever an older format left is rebuilt from the items.
                for (k, _) in scan_all(tx, &id_tree, &KeyRange::all())? {
                    tx.delete(&id_tree, &k)?;
                }
                for old in OLD_FORMAT_KEYS {
                    tx.delete(&head_tree, old)?;
                }
            }
            for p in 0..=255u8 {
                let dirty = fresh || tx.get(&head_tree, &dirty_key(p))?.is_some();
                if dirty && !fresh {
                    state.rebuilt_at_open += 1;
                }
                let part = if dirty {
                    // Changed since its last checkpoint: the deltas that were only in memory
                    // are gone, so the partition is indexed again from its items.
                    let (part, runs) = index_items(tx, &table, &head_tree, &id_tree, &key, p)?;
                    state.ids[p as usize].runs = runs;
                    store_state(tx, &head_tree, p, &part)?;
                    tx.delete(&head_tree, &dirty_key(p))?;
                    part
                } else {
                    state.ids[p as usize].runs = idmap::load_runs(tx, &head_tree, p)?;
                    match tx.get(&head_tree, &[p])? {
                        Some(b) => PartitionState::decode(&b)?,
                        None => PartitionState::default(),
                    }
                };
                state.set(p, part);
            }
            if fresh {
                tx.put(&head_tree, FORMAT_KEY, b"")?;
            }
            Ok(state)
        }
    }

    /// Partitions whose state was recomputed when this index was opened: those written since
    /// their last checkpoint (0 after a clean shutdown; a table indexed for the first time is
    /// not counted).
    pub fn rebuilt_at_open(&self) -> usize {
        lock(&self.state).rebuilt_at_open
    }

    /// The table this index follows.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The id key.
    pub fn id_key(&self) -> &IdKey {
        &self.key
    }

    /// The id of an item.
    pub fn item_id(&self, engine_key: &[u8], value: &[u8]) -> ItemId {
        self.key.item_id(engine_key, value)
    }

    /// The head of partition `p` over all committed writes (the empty head for an empty
    /// partition). A write is acknowledged only after its change is in the head.
    pub fn head(&self, p: Partition) -> Head {
        lock(&self.state).parts[p as usize]
            .as_ref()
            .map(|s| s.head())
            .unwrap_or_default()
    }

    /// Sketch cells `from..to` of partition `p` from memory, if `to` is within the
    /// [`MAINTAINED_CELLS`].
    pub fn maintained_cells(&self, p: Partition, from: u64, to: u64) -> Option<Vec<Cell>> {
        if to > MAINTAINED_CELLS {
            return None;
        }
        Some(match &lock(&self.state).parts[p as usize] {
            Some(s) => s.cells(from, to),
            None => vec![Cell::default(); to.saturating_sub(from) as usize],
        })
    }

    /// The full difference-size summary of partition `p`.
    pub fn summary(&self, p: Partition) -> Summary {
        lock(&self.state).parts[p as usize]
            .as_ref()
            .map(|s| s.summary().clone())
            .unwrap_or_default()
    }

    /// The ids of partition `p`, ascending, from the id map (no item is read).
    pub fn ids(&self, view: &dyn ReadView, p: Partition) -> Result<Vec<ItemId>, StorageError> {
        // Only whether each changed id is held: the keys stay in memory, unread and uncopied.
        let (delta, runs): (Vec<(ItemId, bool)>, _) = {
            let s = lock(&self.state);
            let ids = &s.ids[p as usize];
            let delta = ids.delta.iter().map(|(id, k)| (*id, k.is_some()));
            (delta.collect(), ids.runs.clone())
        };
        idmap::list(view, &self.id_tree, p, &runs, &delta)
    }

    /// The engine key of the item of partition `p` with id `id`, if held: the in-memory delta,
    /// then one short range read per persisted run (newest first).
    ///
    /// The delta is read before the runs: an entry leaves the delta only after the checkpoint
    /// that wrote it into a run has committed, so nothing committed is missed. (A checkpoint
    /// that compacts the runs between the two reads can make a lookup miss an id held: the
    /// session then treats it as lacking, which costs an item sent again, never an item lost.)
    pub fn key_of(
        &self,
        view: &dyn ReadView,
        p: Partition,
        id: ItemId,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let runs = {
            let s = lock(&self.state);
            let ids = &s.ids[p as usize];
            if let Some(entry) = ids.delta.get(&id) {
                return Ok(entry.as_deref().map(<[u8]>::to_vec));
            }
            ids.runs.clone()
        };
        idmap::lookup(view, &self.id_tree, p, &runs, id)
    }

    /// Reads partition `p`'s items and computes their ids (the ground truth the index is checked
    /// against; sessions use the id map).
    pub fn scan(&self, view: &dyn ReadView, p: Partition) -> Result<PartitionScan, StorageError> {
        let mut entries = Vec::new();
        let mut range = partition_range(p);
        loop {
            let page = view.scan(&self.table, &range, Direction::Forward, 4096)?;
            let full = page.len() == 4096;
            for (k, v) in &page {
                entries.push((self.key.item_id(k, v), k.clone().into_boxed_slice()));
            }
            match page.last() {
                Some((k, _)) if full => range.start = std::ops::Bound::Excluded(k.clone()),
                _ => break,
            }
        }
        entries.sort_unstable_by_key(|(id, _)| *id);
        Ok(PartitionScan { entries })
    }

    /// Persists the state of every partition with no write in flight and clears their dirty
    /// markers, in one transaction; returns how many partitions it persisted. Run on clean
    /// shutdown, so the next open recomputes nothing; it also runs by itself every
    /// `checkpoint_every` changes, inside the transaction that reaches the count.
    pub fn checkpoint(&self, store: &Store) -> Result<usize, StorageError> {
        let (state, head_tree, id_tree) = (
            self.state.clone(),
            self.head_tree.clone(),
            self.id_tree.clone(),
        );
        store
            .transact(move |tx| checkpoint_in(tx, &state, &head_tree, &id_tree))
            .map_err(tx_error)
    }

    /// Recomputes every partition's id map and state from the items and persists them, each
    /// partition in one transaction. Returns the number of items indexed.
    pub fn rebuild(&self, store: &Store) -> Result<u64, StorageError> {
        let mut total = 0;
        for p in 0..=255u8 {
            loop {
                let (state, head_tree, id_tree, table, key) = (
                    self.state.clone(),
                    self.head_tree.clone(),
                    self.id_tree.clone(),
                    self.table.clone(),
                    self.key.clone(),
                );
                // A partition with a transaction in flight (earlier in the same group commit)
                // would count that transaction twice: its items are visible here and its change
                // is still to come. Wait for it to settle.
                let done = store
                    .transact(move |tx| -> Result<Option<u64>, StorageError> {
                        let mut s = lock(&state);
                        if s.in_flight[p as usize] > 0 {
                            return Ok(None);
                        }
                        let (part, runs) = index_items(tx, &table, &head_tree, &id_tree, &key, p)?;
                        let n = part.head().count();
                        store_state(tx, &head_tree, p, &part)?;
                        tx.delete(&head_tree, &dirty_key(p))?;
                        s.set(p, part);
                        s.ids[p as usize] = PartitionIds {
                            delta: Default::default(),
                            runs,
                        };
                        s.marked[p as usize] = false;
                        Ok(Some(n))
                    })
                    .map_err(tx_error)?;
                if let Some(n) = done {
                    total += n;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        Ok(total)
    }

    /// Recomputes every partition's state from the items of one consistent snapshot and
    /// compares it with the state served, and the id map (its listing and the key of every id)
    /// with the items' ids and keys. Meant for a quiet store (writes committing during the check
    /// may show as mismatches).
    pub fn verify(&self, store: &Store) -> Result<VerifyReport, StorageError> {
        let snap = store.snapshot()?;
        let mut report = VerifyReport::default();
        for p in 0..=255u8 {
            let scan = self.scan(&*snap, p)?;
            let served = lock(&self.state).parts[p as usize].clone();
            let listed = self.ids(&*snap, p)?;
            if scan.is_empty() && served.is_none() && listed.is_empty() {
                continue;
            }
            report.partitions += 1;
            report.items += scan.len() as u64;
            let computed = PartitionState::of(scan.ids());
            if served.map(|s| *s).unwrap_or_default() != computed {
                report.mismatched.push(p);
            }
            let mut same = listed.iter().copied().eq(scan.ids());
            for (id, key) in &scan.entries {
                if !same {
                    break;
                }
                same = self.key_of(&*snap, p, *id)?.as_deref() == Some(&**key);
            }
            if !same {
                report.id_tree_mismatched.push(p);
            }
        }
        Ok(report)
    }
}

fn tx_error(e: shoal_storage::TxError<StorageError>) -> StorageError {
    match e {
        shoal_storage::TxError::Aborted(e) | shoal_storage::TxError::Commit(e) => e,
    }
}

/// Indexes partition `p` again from its items: replaces its id map by one run of the items'
/// ids and returns the state they imply with the runs.
fn index_items(
    tx: &mut dyn WriteTx,
    table: &str,
    head_tree: &str,
    id_tree: &str,
    key: &IdKey,
    p: Partition,
) -> Result<(PartitionState, Vec<idmap::Run>), StorageError> {
    let mut entries: Vec<(ItemId, Vec<u8>)> = scan_all(tx, table, &partition_range(p))?
        .into_iter()
        .map(|(k, v)| (key.item_id(&k, &v), k))
        .collect();
    entries.sort_unstable_by_key(|(id, _)| *id);
    entries.dedup_by_key(|(id, _)| *id);
    let part = PartitionState::of(entries.iter().map(|(id, _)| *id));
    let runs = idmap::rebuild(tx, id_tree, head_tree, p, &entries)?;
    Ok((part, runs))
}

fn store_state(
    tx: &mut dyn WriteTx,
    head_tree: &str,
    p: Partition,
    state: &PartitionState,
) -> Result<(), StorageError> {
    if state.is_empty() {
        tx.delete(head_tree, &[p])
    } else {
        tx.put(head_tree, &[p], &state.encode())
    }
}

/// Persists the settled state inside `tx`, and writes the id deltas of the same partitions as
/// runs. Runs on the store's writer, so no transaction can change the state between the check
/// and the writes; a partition's marker is considered gone at once, so a later transaction of
/// the same group commit marks it again. The flushed deltas leave memory, and the new run lists
/// replace the old, only once the commit is durable.
fn checkpoint_in(
    tx: &mut dyn WriteTx,
    state: &Arc<Mutex<IndexState>>,
    head_tree: &str,
    id_tree: &str,
) -> Result<usize, StorageError> {
    let mut s = lock(state);
    let mut persisted = 0;
    let mut flushed = Vec::new();
    for p in 0..=255u8 {
        let i = p as usize;
        if !s.marked[i] || s.in_flight[i] > 0 {
            continue;
        }
        match &s.parts[i] {
            Some(part) => tx.put(head_tree, &[p], &part.encode())?,
            None => tx.delete(head_tree, &[p])?,
        }
        let delta = s.ids[i].delta.clone();
        let runs = idmap::flush(tx, id_tree, head_tree, p, &s.ids[i].runs, &delta)?;
        flushed.push((p, delta, runs));
        tx.delete(head_tree, &dirty_key(p))?;
        s.marked[i] = false;
        persisted += 1;
    }
    s.changes = 0;
    drop(s);
    if !flushed.is_empty() {
        let state = state.clone();
        tx.after_commit(Box::new(move || {
            let mut s = lock(&state);
            for (p, delta, runs) in flushed {
                let ids = &mut s.ids[p as usize];
                ids.flushed(&delta);
                ids.runs = runs;
            }
        }));
    }
    Ok(persisted)
}

pub(crate) fn scan_all(
    view: &(impl ReadView + ?Sized),
    tree: &str,
    range: &KeyRange,
) -> Result<Entries, StorageError> {
    view.scan(tree, range, Direction::Forward, usize::MAX)
}

impl ChangeHook for PartitionIndex {
    fn on_change(&self, tx: &mut dyn WriteTx, change: &Change<'_>) -> Result<(), StorageError> {
        let p = partition_of(change.key);
        let old = change.old.map(|v| self.key.item_id(change.key, v));
        let new = change.new.map(|v| self.key.item_id(change.key, v));
        if old == new {
            // The same bytes rewritten: nothing the index holds changes.
            return Ok(());
        }
        // All of this runs on the store's writer: no other transaction or after-commit action
        // interleaves, so the state read here is the state the marker decision is made on.
        let due = {
            let mut s = lock(&self.state);
            s.changes += 1;
            s.changes >= self.checkpoint_every
        };
        if due {
            checkpoint_in(tx, &self.state, &self.head_tree, &self.id_tree)?;
        }
        let marks = {
            let mut s = lock(&self.state);
            s.in_flight[p as usize] += 1;
            !s.marked[p as usize]
        };
        // Until this commit lands, the partition's state is only in memory: the marker, in the
        // same commit, makes the next open recompute it if we crash before a checkpoint.
        if marks {
            tx.put(&self.head_tree, &dirty_key(p), b"")?;
        }
        let pending = PendingChange {
            state: self.state.clone(),
            partition: p,
            old,
            new,
            key: new.map(|_| change.key.into()),
            marks,
            committed: false,
        };
        tx.after_commit(Box::new(move || {
            let mut pending = pending;
            pending.committed = true;
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_toggled_id_by_id_equals_the_maintained_state_head() {
        let mut head = Head::default();
        let mut state = PartitionState::default();
        for i in 1..5000u64 {
            let id = ItemId(crate::sketch::mix64(i) | 1);
            head.toggle(id, false);
            state.toggle(id, false);
        }
        assert_eq!(head, state.head());
    }
}
