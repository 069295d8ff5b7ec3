//! [`TableReplica`]: a table's partition, with its index, as a session's [`Replica`].
//!
//! Everything a session asks is answered from the index (see [`crate::index`]): the head, the
//! first cells and the summary from memory, an id's item by a lookup in the id map (memory,
//! then a short read per run) and a point read of the table. Only cells beyond the maintained
//! ones and the id-list fallback read the partition's ids, once per session (until the
//! partition changes). [`TableReplica::reads`] counts what was read.

use std::cell::{Cell as Counter, RefCell};
use std::ops::Bound;
use std::sync::Arc;

use shoal_storage::KeyRange;
use shoal_table::codec::Versioned;
use shoal_table::{Schema, Table};

use crate::estimator::Summary;
use crate::index::{Head, Partition, PartitionIndex, partition_of, partition_range};
use crate::session::{ApplyStats, Replica, SyncError};
use crate::sketch::{Cell, ItemId, cells_of};

/// What a replica read from storage during a session.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    /// Ids read from the id map by listing the partition's ids.
    pub ids_listed: u64,
    /// Lookups in the id map (an id's engine key).
    pub id_lookups: u64,
    /// Items read from the table (point reads and streamed items).
    pub items_read: u64,
}

/// One partition of a table on this node.
pub struct TableReplica<S: Schema> {
    table: Table<S>,
    index: Arc<PartitionIndex>,
    partition: Partition,
    ids: RefCell<Option<Arc<Vec<ItemId>>>>,
    ids_listed: Counter<u64>,
    id_lookups: Counter<u64>,
    items_read: Counter<u64>,
}

impl<S: Schema> TableReplica<S> {
    /// Partition `partition` of `table`, whose index is `index` (attached to the table as a hook).
    pub fn new(table: Table<S>, index: Arc<PartitionIndex>, partition: Partition) -> Self {
        TableReplica {
            table,
            index,
            partition,
            ids: RefCell::new(None),
            ids_listed: Counter::new(0),
            id_lookups: Counter::new(0),
            items_read: Counter::new(0),
        }
    }

    /// What this replica has read so far.
    pub fn reads(&self) -> ReadStats {
        ReadStats {
            ids_listed: self.ids_listed.get(),
            id_lookups: self.id_lookups.get(),
            items_read: self.items_read.get(),
        }
    }

    /// The partition's ids, listed once from the id map and kept until the partition changes.
    fn listed_ids(&self) -> Result<Arc<Vec<ItemId>>, SyncError> {
        if let Some(ids) = &*self.ids.borrow() {
            return Ok(ids.clone());
        }
        let ids = Arc::new(self.index.ids(self.view(), self.partition)?);
        self.ids_listed
            .set(self.ids_listed.get() + ids.len() as u64);
        *self.ids.borrow_mut() = Some(ids.clone());
        Ok(ids)
    }

    fn view(&self) -> &dyn shoal_storage::ReadView {
        &**self.table.store().engine()
    }
}

impl<S: Schema> Replica for TableReplica<S> {
    fn head(&self) -> Result<Head, SyncError> {
        Ok(self.index.head(self.partition))
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, SyncError> {
        self.items_read.set(self.items_read.get() + 1);
        Ok(self.table.get_raw(key)?)
    }

    fn cells(&self, from: u64, to: u64) -> Result<Vec<Cell>, SyncError> {
        match self.index.maintained_cells(self.partition, from, to) {
            Some(cells) => Ok(cells),
            None => Ok(cells_of(self.listed_ids()?.iter().copied(), from, to)),
        }
    }

    fn ids(&self) -> Result<Vec<ItemId>, SyncError> {
        Ok(self.listed_ids()?.to_vec())
    }

    fn summary(&self) -> Result<Summary, SyncError> {
        Ok(self.index.summary(self.partition))
    }

    fn key_of(&self, id: ItemId) -> Result<Option<Vec<u8>>, SyncError> {
        self.id_lookups.set(self.id_lookups.get() + 1);
        Ok(self.index.key_of(self.view(), self.partition, id)?)
    }

    fn items_after(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<shoal_storage::Entries, SyncError> {
        let mut range = partition_range(self.partition);
        if let Some(a) = after {
            range = KeyRange {
                start: Bound::Excluded(a.to_vec()),
                end: range.end,
            };
        }
        let page = self.table.scan_raw(&range, limit)?;
        self.items_read
            .set(self.items_read.get() + page.len() as u64);
        Ok(page)
    }

    fn apply(&self, items: Vec<Vec<u8>>) -> Result<ApplyStats, SyncError> {
        let mut stats = ApplyStats::default();
        let mut entries = Vec::with_capacity(items.len());
        for bytes in &items {
            let entry = S::Entry::decode(bytes)
                .map_err(|e| SyncError::BadItem(format!("undecodable item: {e}")))?;
            let key = Table::<S>::key_of(&entry);
            if partition_of(&key) != self.partition {
                return Err(SyncError::BadItem(format!(
                    "item of partition {} in a session for partition {}",
                    partition_of(&key),
                    self.partition
                )));
            }
            stats.received += 1;
            if self.table.get_raw(&key)?.as_deref() == Some(bytes.as_slice()) {
                stats.identical += 1;
            }
            entries.push(entry);
        }
        self.table.insert_many(entries)?;
        // The partition changed: the listed ids no longer describe it.
        self.ids.borrow_mut().take();
        Ok(stats)
    }
}
