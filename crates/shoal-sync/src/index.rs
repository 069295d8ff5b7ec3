//! The persistent partition index, kept in the same transaction as every write.
//!
//! For each ring partition (the first byte of the engine key: 256 partitions), the index holds:
//! - the partition's *head*: the first [`MAINTAINED_CELLS`] cells of its sketch (cell 0 is the
//!   digest: XOR and count of all ids) and its difference-size [`Summary`];
//! - the *id map*: `partition ‖ id → engine key`, to list a partition's ids without reading
//!   values and to find the item behind a reconciled id.
//!
//! A [`ChangeHook`] updates both inside the transaction that changes the item, so the index can
//! never lag the items: a sync can never declare agreement over writes not yet indexed. Cost per
//! changed item: one id-map delete and put, and one head rewrite (about 1.5 KB).

use std::sync::Arc;

use shoal_storage::{Direction, Entries, KeyRange, ReadView, StorageError, Store, WriteTx};
use shoal_table::{Change, ChangeHook};

use crate::estimator::Summary;
use crate::ids::IdKey;
use crate::sketch::{Cell, ItemId, apply_id, cells_of};

/// Sketch cells kept up to date on every write; later cells are computed from the id map.
pub const MAINTAINED_CELLS: u64 = 64;

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

const CELL_BYTES: usize = 20;

/// The maintained part of a partition's index.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Head {
    /// Cells `0..MAINTAINED_CELLS`.
    pub cells: Vec<Cell>,
    /// The difference-size summary.
    pub summary: Summary,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            cells: vec![Cell::default(); MAINTAINED_CELLS as usize],
            summary: Summary::default(),
        }
    }
}

impl Head {
    /// The digest: cell 0.
    pub fn digest(&self) -> Cell {
        self.cells[0]
    }

    /// Number of items in the partition.
    pub fn count(&self) -> u64 {
        self.cells[0].count
    }

    fn toggle(&mut self, id: ItemId, remove: bool) {
        apply_id(&mut self.cells, 0, id, remove);
        self.summary.toggle(id);
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.cells.len() * CELL_BYTES + self.summary.0.len());
        for c in &self.cells {
            out.extend_from_slice(&c.xor.to_le_bytes());
            out.extend_from_slice(&c.check.to_le_bytes());
            out.extend_from_slice(&c.count.to_le_bytes());
        }
        out.extend_from_slice(&self.summary.0);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let cells_len = MAINTAINED_CELLS as usize * CELL_BYTES;
        if bytes.len() != cells_len + Summary::default().0.len() {
            return Err(StorageError::Corrupted(format!(
                "partition index head of {} bytes",
                bytes.len()
            )));
        }
        let cells = bytes[..cells_len]
            .chunks_exact(CELL_BYTES)
            .map(|c| Cell {
                xor: u64::from_le_bytes(c[0..8].try_into().expect("8")),
                check: u32::from_le_bytes(c[8..12].try_into().expect("4")),
                count: u64::from_le_bytes(c[12..20].try_into().expect("8")),
            })
            .collect();
        let mut summary = Summary::default();
        summary.0.copy_from_slice(&bytes[cells_len..]);
        Ok(Head { cells, summary })
    }
}

/// The index of one table. Attach it with `Table::with_hook`.
#[derive(Debug)]
pub struct PartitionIndex {
    table: String,
    ids_tree: String,
    head_tree: String,
    key: IdKey,
}

/// What [`PartitionIndex::verify`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Partitions checked (those holding items or index entries).
    pub partitions: usize,
    /// Items read.
    pub items: u64,
    /// Partitions whose stored index differs from the one computed from the items.
    pub mismatched: Vec<Partition>,
}

impl PartitionIndex {
    /// The index of `table`, with ids keyed by `key`.
    pub fn new(table: impl Into<String>, key: IdKey) -> Arc<Self> {
        let table = table.into();
        Arc::new(PartitionIndex {
            ids_tree: format!("{table}~ids"),
            head_tree: format!("{table}~head"),
            table,
            key,
        })
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

    /// The head of partition `p` (empty head for an empty partition).
    pub fn head(&self, view: &dyn ReadView, p: Partition) -> Result<Head, StorageError> {
        match view.get(&self.head_tree, &[p])? {
            Some(b) => Head::decode(&b),
            None => Ok(Head::default()),
        }
    }

    /// Every id of partition `p`, ascending.
    pub fn ids(&self, view: &dyn ReadView, p: Partition) -> Result<Vec<ItemId>, StorageError> {
        let mut out = Vec::new();
        let mut range = KeyRange::prefix(&[p]);
        loop {
            let page = view.scan(&self.ids_tree, &range, Direction::Forward, 4096)?;
            for (k, _) in &page {
                out.push(Self::id_from_map_key(k)?);
            }
            match page.last() {
                Some((k, _)) if page.len() == 4096 => {
                    range.start = std::ops::Bound::Excluded(k.clone())
                }
                _ => return Ok(out),
            }
        }
    }

    fn id_from_map_key(k: &[u8]) -> Result<ItemId, StorageError> {
        k.get(1..9)
            .and_then(|b| b.try_into().ok())
            .map(|b| ItemId(u64::from_be_bytes(b)))
            .ok_or_else(|| StorageError::Corrupted("malformed id-map key".into()))
    }

    fn map_key(p: Partition, id: ItemId) -> [u8; 9] {
        let mut k = [0u8; 9];
        k[0] = p;
        k[1..].copy_from_slice(&id.0.to_be_bytes());
        k
    }

    /// The engine key of the item with id `id` in partition `p`, if held.
    pub fn key_of(
        &self,
        view: &dyn ReadView,
        p: Partition,
        id: ItemId,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        view.get(&self.ids_tree, &Self::map_key(p, id))
    }

    /// Cells `from..to` of partition `p`: from the head when maintained, else from the id map.
    pub fn cells(
        &self,
        view: &dyn ReadView,
        p: Partition,
        from: u64,
        to: u64,
    ) -> Result<Vec<Cell>, StorageError> {
        if to <= MAINTAINED_CELLS {
            let head = self.head(view, p)?;
            return Ok(head.cells[from as usize..to as usize].to_vec());
        }
        Ok(cells_of(self.ids(view, p)?, from, to))
    }

    /// Rebuilds the index of every partition from the items, each partition in one
    /// transaction. Returns the number of items indexed.
    pub fn rebuild(&self, store: &Store) -> Result<u64, StorageError> {
        let mut total = 0;
        for p in 0..=255u8 {
            let (ids_tree, head_tree, table, key) = (
                self.ids_tree.clone(),
                self.head_tree.clone(),
                self.table.clone(),
                self.key.clone(),
            );
            total += store.transact(move |tx| -> Result<u64, StorageError> {
                for (k, _) in scan_all(tx, &ids_tree, &partition_range(p))? {
                    tx.delete(&ids_tree, &k)?;
                }
                let mut head = Head::default();
                let mut n = 0;
                for (k, v) in scan_all(tx, &table, &partition_range(p))? {
                    let id = key.item_id(&k, &v);
                    tx.put(&ids_tree, &Self::map_key(p, id), &k)?;
                    head.toggle(id, false);
                    n += 1;
                }
                if n == 0 {
                    tx.delete(&head_tree, &[p])?;
                } else {
                    tx.put(&head_tree, &[p], &head.encode())?;
                }
                Ok(n)
            })?;
        }
        Ok(total)
    }

    /// Recomputes the index from the items, from one consistent snapshot, and compares it with
    /// the stored one.
    pub fn verify(&self, store: &Store) -> Result<VerifyReport, StorageError> {
        let snap = store.snapshot()?;
        let mut report = VerifyReport::default();
        for p in 0..=255u8 {
            let items = scan_all(&*snap, &self.table, &partition_range(p))?;
            let stored_ids = self.ids(&*snap, p)?;
            if items.is_empty() && stored_ids.is_empty() {
                continue;
            }
            report.partitions += 1;
            report.items += items.len() as u64;
            let mut head = Head::default();
            let mut ids = Vec::with_capacity(items.len());
            for (k, v) in &items {
                let id = self.key.item_id(k, v);
                head.toggle(id, false);
                ids.push(id);
            }
            ids.sort_unstable();
            let keys_match = ids.iter().all(|id| {
                matches!(self.key_of(&*snap, p, *id), Ok(Some(k)) if items.binary_search_by(|(ik, _)| ik.as_slice().cmp(&k)).is_ok())
            });
            if head != self.head(&*snap, p)? || ids != stored_ids || !keys_match {
                report.mismatched.push(p);
            }
        }
        Ok(report)
    }
}

fn scan_all(
    view: &(impl ReadView + ?Sized),
    tree: &str,
    range: &KeyRange,
) -> Result<Entries, StorageError> {
    view.scan(tree, range, Direction::Forward, usize::MAX)
}

impl ChangeHook for PartitionIndex {
    fn on_change(&self, tx: &mut dyn WriteTx, change: &Change<'_>) -> Result<(), StorageError> {
        let p = partition_of(change.key);
        let mut head = match tx.get(&self.head_tree, &[p])? {
            Some(b) => Head::decode(&b)?,
            None => Head::default(),
        };
        if let Some(old) = change.old {
            let id = self.key.item_id(change.key, old);
            tx.delete(&self.ids_tree, &Self::map_key(p, id))?;
            head.toggle(id, true);
        }
        if let Some(new) = change.new {
            let id = self.key.item_id(change.key, new);
            tx.put(&self.ids_tree, &Self::map_key(p, id), change.key)?;
            head.toggle(id, false);
        }
        if head.count() == 0 {
            tx.delete(&self.head_tree, &[p])
        } else {
            tx.put(&self.head_tree, &[p], &head.encode())
        }
    }
}
