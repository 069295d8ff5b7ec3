//! The tables behind the API: K2V items (sharded), access keys and buckets (fully replicated
//! system tables).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use shoal_table::codec::{Initial, Versioned};
use shoal_table::crdt::{Flag, Lww, LwwMap, NodeId, Stamp};
use shoal_table::{Entry, KeyPart, Schema};

use crate::causality::Dvvs;

/// The partition of a K2V item: its bucket (by id) and the client's partition key. All items
/// of one partition key of one bucket live in one ring partition, sorted by sort key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct K2vPartition {
    /// The bucket's id (hex).
    pub bucket: String,
    /// The client's partition key.
    pub pk: String,
}

impl KeyPart for K2vPartition {
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        let mut b = Vec::with_capacity(self.bucket.len() + 1 + self.pk.len());
        b.extend_from_slice(self.bucket.as_bytes());
        b.push(0);
        b.extend_from_slice(self.pk.as_bytes());
        Cow::Owned(b)
    }
}

/// A K2V item: `(bucket, pk, sk)` and its multi-value register.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct K2vItem {
    /// Bucket and partition key.
    pub partition: K2vPartition,
    /// Sort key.
    pub sk: String,
    /// Values and causality.
    pub dvvs: Dvvs,
}
shoal_table::crdt_struct!(K2vItem { dvvs });

impl Versioned for K2vItem {
    const VERSION_MARKER: &'static [u8] = b"Sk2v1";
    type Previous = Initial;
    fn migrate(p: Initial) -> Self {
        match p {}
    }
}

impl Entry<K2vPartition, String> for K2vItem {
    fn partition_key(&self) -> &K2vPartition {
        &self.partition
    }
    fn sort_key(&self) -> &String {
        &self.sk
    }
    fn is_tombstone(&self) -> bool {
        self.dvvs.is_tombstone()
    }
}

/// The K2V items table.
pub struct K2vTable;

impl Schema for K2vTable {
    const TABLE_NAME: &'static str = "k2v";
    type PartitionKey = K2vPartition;
    type SortKey = String;
    type Entry = K2vItem;
}

/// Partition key of every row of the system tables below: they are small and fully
/// replicated, so one partition key per table is enough.
pub const SYSTEM_PK: &str = "all";

/// An access key: the id clients send, the secret they sign with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessKey {
    /// Always [`SYSTEM_PK`].
    pub pk: String,
    /// The access key id (`GK…`).
    pub id: String,
    /// Human name.
    pub name: Lww<String>,
    /// The secret (hex).
    pub secret: Lww<String>,
    /// Set once the key is deleted.
    pub deleted: Flag,
}
shoal_table::crdt_struct!(AccessKey {
    name,
    secret,
    deleted
});

impl Versioned for AccessKey {
    const VERSION_MARKER: &'static [u8] = b"Skey1";
    type Previous = Initial;
    fn migrate(p: Initial) -> Self {
        match p {}
    }
}

impl Entry<String, String> for AccessKey {
    fn partition_key(&self) -> &String {
        &self.pk
    }
    fn sort_key(&self) -> &String {
        &self.id
    }
    fn is_tombstone(&self) -> bool {
        self.deleted.is_set()
    }
}

/// The access keys table.
pub struct KeyTable;

impl Schema for KeyTable {
    const TABLE_NAME: &'static str = "keys";
    type PartitionKey = String;
    type SortKey = String;
    type Entry = AccessKey;
}

/// What a key may do in a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Permission {
    /// ReadItem, ReadIndex, ReadBatch, polls.
    pub read: bool,
    /// InsertItem, DeleteItem, InsertBatch, DeleteBatch.
    pub write: bool,
}

impl shoal_table::crdt::Crdt for Permission {
    fn merge(&mut self, other: &Self) {
        // Only reached for two grants with the same stamp: the larger wins, deterministically.
        if *other > *self {
            *self = *other;
        }
    }
}

/// A bucket: a name, an id (the K2V items' partition prefix), and the keys allowed in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Always [`SYSTEM_PK`].
    pub pk: String,
    /// The bucket's name, as in request paths.
    pub name: String,
    /// The bucket's id (hex); set once at creation.
    pub id: Lww<String>,
    /// Access key id → permission.
    pub grants: LwwMap<String, Permission>,
    /// Set once the bucket is deleted.
    pub deleted: Flag,
}
shoal_table::crdt_struct!(Bucket {
    id,
    grants,
    deleted
});

impl Versioned for Bucket {
    const VERSION_MARKER: &'static [u8] = b"Sbkt1";
    type Previous = Initial;
    fn migrate(p: Initial) -> Self {
        match p {}
    }
}

impl Entry<String, String> for Bucket {
    fn partition_key(&self) -> &String {
        &self.pk
    }
    fn sort_key(&self) -> &String {
        &self.name
    }
    fn is_tombstone(&self) -> bool {
        self.deleted.is_set()
    }
}

/// The buckets table.
pub struct BucketTable;

impl Schema for BucketTable {
    const TABLE_NAME: &'static str = "buckets";
    type PartitionKey = String;
    type SortKey = String;
    type Entry = Bucket;
}

/// A stamp for a system-table write by `node` now.
pub fn stamp_now(node: NodeId) -> Stamp {
    Stamp::new(crate::now_micros() / 1000, node)
}
