//! A K2V-like test table: items of a partition key and a sort key holding an LWW value.
#![allow(dead_code)]

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shoal_storage::Store;
use shoal_sync::ids::IdKey;
use shoal_sync::index::{Partition, PartitionIndex};
use shoal_sync::replica::TableReplica;
use shoal_table::codec::{Initial, Versioned};
use shoal_table::crdt::{Flag, Lww, NodeId, Stamp};
use shoal_table::{Entry, PartitionHash, Schema, Table};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub pk: String,
    pub sk: Vec<u8>,
    pub value: Lww<Vec<u8>>,
    pub deleted: Flag,
}
shoal_table::crdt_struct!(Item { value, deleted });

impl Versioned for Item {
    const VERSION_MARKER: &'static [u8] = b"Ti1";
    type Previous = Initial;
    fn migrate(p: Initial) -> Self {
        match p {}
    }
}

impl Entry<String, Vec<u8>> for Item {
    fn partition_key(&self) -> &String {
        &self.pk
    }
    fn sort_key(&self) -> &Vec<u8> {
        &self.sk
    }
    fn is_tombstone(&self) -> bool {
        self.deleted.is_set()
    }
}

pub struct Items;
impl Schema for Items {
    const TABLE_NAME: &'static str = "items";
    type PartitionKey = String;
    type SortKey = Vec<u8>;
    type Entry = Item;
}

pub fn item(pk: &str, sk: &[u8], time: u64, node: u8, value: &[u8]) -> Item {
    Item {
        pk: pk.into(),
        sk: sk.to_vec(),
        value: Lww::new(Stamp::new(time, NodeId([node; 32])), value.to_vec()),
        deleted: Flag::unset(),
    }
}

/// A replica: a store with the items table and its index.
pub struct Node {
    pub table: Table<Items>,
    pub index: Arc<PartitionIndex>,
    pub _dir: Option<tempfile::TempDir>,
}

impl Node {
    pub fn memory() -> Self {
        Self::on(Store::memory(), None)
    }

    pub fn on_disk() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("node.redb")).unwrap();
        Self::on(store, Some(dir))
    }

    fn on(store: Store, dir: Option<tempfile::TempDir>) -> Self {
        let index =
            PartitionIndex::open(&store, Items::TABLE_NAME, IdKey::insecure_default()).unwrap();
        let table = Table::<Items>::new(store).with_hook(index.clone());
        Node {
            table,
            index,
            _dir: dir,
        }
    }

    pub fn replica(&self, p: Partition) -> TableReplica<Items> {
        TableReplica::new(self.table.clone(), self.index.clone(), p)
    }

    /// Every stored (engine key, bytes), all partitions.
    pub fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.table
            .scan_raw(&shoal_storage::KeyRange::all(), usize::MAX)
            .unwrap()
    }

    pub fn head(&self, p: Partition) -> shoal_sync::index::Head {
        self.index.head(p)
    }
}

/// A partition key whose items fall in ring partition `p`.
pub fn pk_in(p: Partition, nth: usize) -> String {
    (0..)
        .map(|i| format!("pk-{p}-{i}"))
        .filter(|k| PartitionHash::of(k.as_bytes()).0[0] == p)
        .nth(nth)
        .unwrap()
}
