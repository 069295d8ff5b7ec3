//! What the node needs of a table, whatever its schema ([`SyncTable`]), and that trait for a
//! typed table with its partition index.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use shoal_sync::session::Replica;
use shoal_table::TableError;

/// A table as the node serves it to peers, whatever its schema: replicas of its partitions for
/// sync, and encoded items for replication. Methods may block on storage: the node calls them
/// off the async workers.
pub trait SyncTable: Send + Sync + 'static {
    /// The table's name.
    fn name(&self) -> &str;
    /// The local replica of partition `p`.
    fn replica(&self, p: u8) -> Box<dyn Replica + Send>;
    /// Merges encoded items (durably) and returns how many changed. Asynchronous: a write waits
    /// for its group commit without holding a blocking thread.
    fn merge_encoded(
        &self,
        items: Vec<Vec<u8>>,
    ) -> Pin<Box<dyn Future<Output = Result<usize, TableError>> + Send + 'static>>;
    /// The encoded item under an engine key.
    fn get_encoded(&self, key: &[u8]) -> Result<Option<Vec<u8>>, TableError>;
    /// Whether this node holds any item of partition `p`.
    fn has_data(&self, p: u8) -> Result<bool, TableError>;
    /// Every (engine key, encoded item) of partition `p`.
    fn scan_partition(&self, p: u8) -> Result<shoal_storage::Entries, TableError>;
    /// Removes the items still stored exactly as given; returns how many were removed.
    fn delete_if_unchanged(&self, items: Vec<(Vec<u8>, Vec<u8>)>) -> Result<usize, TableError>;
    /// Items stored (tombstones included).
    fn item_count(&self) -> Result<u64, TableError>;
    /// Up to `limit` tombstones of partition `p`: (engine key, encoded tombstone).
    fn tombstones(&self, p: u8, limit: usize) -> Result<shoal_storage::Entries, TableError>;
    /// Up to `limit` (engine key, encoded item) in `range`, descending if `reverse`.
    fn scan_range(
        &self,
        range: &shoal_storage::KeyRange,
        reverse: bool,
        limit: usize,
    ) -> Result<shoal_storage::Entries, TableError>;
    /// Persists what the table keeps in memory (its partition index's heads), so that the
    /// next open rebuilds nothing. Blocks on storage.
    fn checkpoint(&self) -> Result<(), TableError>;
}

impl<S: shoal_table::Schema> SyncTable
    for (
        shoal_table::Table<S>,
        Arc<shoal_sync::index::PartitionIndex>,
    )
{
    fn name(&self) -> &str {
        S::TABLE_NAME
    }

    fn replica(&self, p: u8) -> Box<dyn Replica + Send> {
        Box::new(shoal_sync::replica::TableReplica::new(
            self.0.clone(),
            self.1.clone(),
            p,
        ))
    }

    fn merge_encoded(
        &self,
        items: Vec<Vec<u8>>,
    ) -> Pin<Box<dyn Future<Output = Result<usize, TableError>> + Send + 'static>> {
        let table = self.0.clone();
        Box::pin(async move { table.insert_encoded_async(items).await })
    }

    fn get_encoded(&self, key: &[u8]) -> Result<Option<Vec<u8>>, TableError> {
        self.0.get_raw(key)
    }

    fn has_data(&self, p: u8) -> Result<bool, TableError> {
        Ok(!self
            .0
            .scan_raw(&shoal_sync::index::partition_range(p), 1)?
            .is_empty())
    }

    fn scan_partition(&self, p: u8) -> Result<shoal_storage::Entries, TableError> {
        self.0
            .scan_raw(&shoal_sync::index::partition_range(p), usize::MAX)
    }

    fn delete_if_unchanged(&self, items: Vec<(Vec<u8>, Vec<u8>)>) -> Result<usize, TableError> {
        self.0.delete_many_if_equal(items)
    }

    fn item_count(&self) -> Result<u64, TableError> {
        self.0.len()
    }

    fn tombstones(&self, p: u8, limit: usize) -> Result<shoal_storage::Entries, TableError> {
        use shoal_table::Entry as _;
        use shoal_table::codec::Versioned as _;
        let items = self
            .0
            .scan_raw(&shoal_sync::index::partition_range(p), usize::MAX)?;
        Ok(items
            .into_iter()
            .filter(|(_, v)| S::Entry::decode(v).is_ok_and(|e| e.is_tombstone()))
            .take(limit)
            .collect())
    }

    fn scan_range(
        &self,
        range: &shoal_storage::KeyRange,
        reverse: bool,
        limit: usize,
    ) -> Result<shoal_storage::Entries, TableError> {
        let direction = if reverse {
            shoal_storage::Direction::Backward
        } else {
            shoal_storage::Direction::Forward
        };
        self.0
            .store()
            .scan(S::TABLE_NAME, range, direction, limit)
            .map_err(TableError::from)
    }

    fn checkpoint(&self) -> Result<(), TableError> {
        self.1
            .checkpoint(self.0.store())
            .map(|_| ())
            .map_err(TableError::from)
    }
}
