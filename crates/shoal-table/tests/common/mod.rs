//! A test schema shared by the table tests: documents in buckets.
#![allow(dead_code)]

use serde::{Deserialize, Serialize};
use shoal_table::codec::{Initial, Versioned};
use shoal_table::crdt::{Flag, Lww, LwwMap, NodeId, Stamp};
use shoal_table::{Entry, Schema};

/// A composed entry: keys, an LWW value, an LWW map of metadata, a deletion flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    pub bucket: String,
    pub name: String,
    pub body: Lww<Vec<u8>>,
    pub meta: LwwMap<String, Option<String>>,
    pub deleted: Flag,
}
shoal_table::crdt_struct!(Doc {
    body,
    meta,
    deleted
});

impl Versioned for Doc {
    const VERSION_MARKER: &'static [u8] = b"Tdoc1";
    type Previous = Initial;
    fn migrate(p: Initial) -> Self {
        match p {}
    }
}

impl Entry<String, String> for Doc {
    fn partition_key(&self) -> &String {
        &self.bucket
    }
    fn sort_key(&self) -> &String {
        &self.name
    }
    fn is_tombstone(&self) -> bool {
        self.deleted.is_set()
    }
}

pub struct Docs;
impl Schema for Docs {
    const TABLE_NAME: &'static str = "docs";
    type PartitionKey = String;
    type SortKey = String;
    type Entry = Doc;
}

/// A live document written at `time` by node 1.
pub fn doc_at(bucket: &str, name: &str, time: u64, body: &[u8]) -> Doc {
    Doc {
        bucket: bucket.into(),
        name: name.into(),
        body: Lww::new(Stamp::new(time, NodeId([1; 32])), body.to_vec()),
        meta: LwwMap::new(),
        deleted: Flag::unset(),
    }
}

/// The tombstone of a document, written at `time`.
pub fn tombstone_at(bucket: &str, name: &str, time: u64) -> Doc {
    Doc {
        deleted: Flag::set(),
        ..doc_at(bucket, name, time, b"")
    }
}
