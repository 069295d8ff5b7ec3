//! Declaring a replicated table of one's own schema: one call, [`Node::open_table`].
//!
//! The call does every step a replicated table needs, in the order that keeps them right: it
//! opens the table's partition index (rebuilding what a crash left dirty), hooks the index to
//! the table so that every write updates it (a table written without its hook would silently
//! stop syncing), registers the table with the node for sync sessions and replication, and
//! starts its background syncer and tombstone collector. [`Node::close`] checkpoints the
//! index at shutdown, so the next start rebuilds nothing.
//!
//! ```no_run
//! # async fn example(node: shoal_cluster::node::Node<shoal_net::TcpTransport>, store: shoal_storage::Store) -> Result<(), Box<dyn std::error::Error>> {
//! use shoal_cluster::kv::{KvItem, KvTable};
//! use shoal_cluster::tables::TableOptions;
//!
//! let kv = node.open_table::<KvTable>(&store, TableOptions::default()).await?;
//! kv.insert(&KvItem::new("user-1", "name", Some(b"Ada".to_vec()), node.now_ms(), node.id()))
//!     .await?;
//! let item = kv.get(&"user-1".to_string(), &"name".to_string()).await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use shoal_net::Transport;
use shoal_storage::Store;
use shoal_sync::index::PartitionIndex;
use shoal_table::{ChangeHook, Schema, Table};

use crate::node::{GcConfig, Node, NodeError, SyncerConfig};
use crate::quorum::QuorumError;
use crate::replication::Replicated;
use crate::worklist::Replication;

/// How a table declared with [`Node::open_table`] is replicated and maintained.
#[derive(Clone)]
pub struct TableOptions {
    /// Spread over the layout's partitions ([`Replication::Sharded`], the default) or held
    /// whole by every node ([`Replication::Full`], for small system tables).
    pub replication: Replication,
    /// The background syncer's settings; `None` runs no syncer (replicas then converge only
    /// through writes and read repair).
    pub syncer: Option<SyncerConfig>,
    /// The tombstone collector's settings; `None` keeps tombstones forever.
    pub gc: Option<GcConfig>,
    /// More hooks told of every change after the partition index (caches to invalidate,
    /// derived counters to maintain).
    pub hooks: Vec<Arc<dyn ChangeHook>>,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            replication: Replication::Sharded,
            syncer: Some(SyncerConfig::default()),
            gc: Some(GcConfig::default()),
            hooks: Vec::new(),
        }
    }
}

impl std::fmt::Debug for TableOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableOptions")
            .field("replication", &self.replication)
            .field("syncer", &self.syncer)
            .field("gc", &self.gc)
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

/// A table of schema `S` replicated over the cluster: quorum writes and reads through its
/// node, and the local copy for reads that need no quorum. Cheap to clone.
pub struct ReplicatedTable<S: Schema, T: Transport> {
    local: Table<S>,
    index: Arc<PartitionIndex>,
    replicated: Arc<Replicated<S, T>>,
    node: Node<T>,
}

impl<S: Schema, T: Transport> Clone for ReplicatedTable<S, T> {
    fn clone(&self) -> Self {
        ReplicatedTable {
            local: self.local.clone(),
            index: self.index.clone(),
            replicated: self.replicated.clone(),
            node: self.node.clone(),
        }
    }
}

impl<S: Schema, T: Transport> ReplicatedTable<S, T> {
    /// Merges `entry` on its partition's replicas; returns once a write quorum has it durably.
    pub async fn insert(&self, entry: &S::Entry) -> Result<(), QuorumError> {
        self.replicated.insert(entry).await
    }

    /// Merges `entries`, one message per replica set (see [`Replicated::insert_many`]).
    pub async fn insert_many(&self, entries: &[S::Entry]) -> Result<(), QuorumError> {
        self.replicated.insert_many(entries).await
    }

    /// The merge of a read quorum's copies of the item; stale replicas are repaired in the
    /// background.
    pub async fn get(
        &self,
        partition_key: &S::PartitionKey,
        sort_key: &S::SortKey,
    ) -> Result<Option<S::Entry>, QuorumError> {
        self.replicated.get(partition_key, sort_key).await
    }

    /// Up to `limit` items of a partition key, from a read quorum, in sort-key order.
    pub async fn range(
        &self,
        partition_key: &S::PartitionKey,
        range: shoal_storage::KeyRange,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<S::Entry>, QuorumError> {
        self.replicated
            .range(partition_key, range, reverse, limit)
            .await
    }

    /// This node's own copy: reads with no quorum, what this replica holds now.
    pub fn local(&self) -> &Table<S> {
        &self.local
    }

    /// The table's partition index (digests and sketches of each partition).
    pub fn index(&self) -> &Arc<PartitionIndex> {
        &self.index
    }

    /// The node the table is replicated through.
    pub fn node(&self) -> &Node<T> {
        &self.node
    }
}

impl<T: Transport> Node<T> {
    /// Declares the replicated table `S` stored in `store`: opens and hooks its partition
    /// index, registers it for sync and replication, and starts its syncer and collector as
    /// `options` say. Its index is checkpointed by [`Node::close`].
    ///
    /// Fails if the index cannot be opened (a storage error), or if a table of the same name
    /// is already registered on this node.
    pub async fn open_table<S: Schema>(
        &self,
        store: &Store,
        options: TableOptions,
    ) -> Result<ReplicatedTable<S, T>, NodeError> {
        if self.table(S::TABLE_NAME).is_ok() {
            return Err(NodeError::TableExists(S::TABLE_NAME.to_string()));
        }
        let index = PartitionIndex::open_async(store, S::TABLE_NAME, self.id_key())
            .await
            .map_err(shoal_table::TableError::from)?;
        let mut local = Table::<S>::new(store.clone()).with_hook(index.clone());
        for hook in options.hooks {
            local = local.with_hook(hook);
        }
        let registered = Arc::new((local.clone(), index.clone()));
        match options.replication {
            Replication::Sharded => self.add_table(registered),
            Replication::Full => self.add_full_table(registered),
        }
        if let Some(syncer) = options.syncer {
            self.start_syncer(S::TABLE_NAME, syncer)?;
        }
        if let Some(gc) = options.gc {
            self.start_gc(S::TABLE_NAME, gc)?;
        }
        Ok(ReplicatedTable {
            local,
            index,
            replicated: Arc::new(Replicated::new(self.clone())),
            node: self.clone(),
        })
    }
}
