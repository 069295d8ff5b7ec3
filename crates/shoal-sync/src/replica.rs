//! [`TableReplica`]: a table's partition, with its index, as a session's [`Replica`].

use std::cell::RefCell;
use std::ops::Bound;
use std::sync::Arc;

use shoal_storage::KeyRange;
use shoal_table::codec::Versioned;
use shoal_table::{Schema, Table};

use crate::index::{Head, Partition, PartitionIndex, PartitionScan, partition_of, partition_range};
use crate::session::{ApplyStats, Replica, SyncError};

/// One partition of a table on this node.
pub struct TableReplica<S: Schema> {
    table: Table<S>,
    index: Arc<PartitionIndex>,
    partition: Partition,
    scan: RefCell<Option<Arc<PartitionScan>>>,
}

impl<S: Schema> TableReplica<S> {
    /// Partition `partition` of `table`, whose index is `index` (attached to the table as a hook).
    pub fn new(table: Table<S>, index: Arc<PartitionIndex>, partition: Partition) -> Self {
        TableReplica {
            table,
            index,
            partition,
            scan: RefCell::new(None),
        }
    }

    fn view(&self) -> &dyn shoal_storage::ReadView {
        &**self.table.store().engine()
    }
}

impl<S: Schema> Replica for TableReplica<S> {
    fn head(&self) -> Result<Head, SyncError> {
        Ok(self.index.head(self.partition))
    }

    fn scan(&self) -> Result<Arc<PartitionScan>, SyncError> {
        if let Some(s) = &*self.scan.borrow() {
            return Ok(s.clone());
        }
        let s = Arc::new(self.index.scan(self.view(), self.partition)?);
        *self.scan.borrow_mut() = Some(s.clone());
        Ok(s)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, SyncError> {
        Ok(self.table.get_raw(key)?)
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
        Ok(self.table.scan_raw(&range, limit)?)
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
        // The partition changed: the cached scan no longer describes it.
        self.scan.borrow_mut().take();
        Ok(stats)
    }
}
