//! The built-in `kv` table: string partition and sort keys, a last-writer-wins value, deletes
//! as tombstones. The operator CLI's `put`/`get` and the cluster tests write through it.

use serde::{Deserialize, Serialize};
use shoal_table::codec::{Initial, Versioned};
use shoal_table::crdt::{Lww, NodeId, Stamp};
use shoal_table::{Entry, Schema};

/// An item of the `kv` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvItem {
    /// Partition key.
    pub pk: String,
    /// Sort key.
    pub sk: String,
    /// The value; `None` once deleted.
    pub value: Lww<Option<Vec<u8>>>,
}
shoal_table::crdt_struct!(KvItem { value });

impl KvItem {
    /// `value` written at `time` by `node` (`None` deletes).
    pub fn new(pk: &str, sk: &str, value: Option<Vec<u8>>, time: u64, node: NodeId) -> Self {
        KvItem {
            pk: pk.into(),
            sk: sk.into(),
            value: Lww::new(Stamp::new(time, node), value),
        }
    }
}

impl Versioned for KvItem {
    const VERSION_MARKER: &'static [u8] = b"Skv1";
    type Previous = Initial;
    fn migrate(p: Initial) -> Self {
        match p {}
    }
}

impl Entry<String, String> for KvItem {
    fn partition_key(&self) -> &String {
        &self.pk
    }
    fn sort_key(&self) -> &String {
        &self.sk
    }
    fn is_tombstone(&self) -> bool {
        self.value.get().is_none()
    }
}

/// The `kv` table.
pub struct KvTable;

impl Schema for KvTable {
    const TABLE_NAME: &'static str = "kv";
    type PartitionKey = String;
    type SortKey = String;
    type Entry = KvItem;
}
