//! Shoal's table layer: typed, replicated-ready tables over the storage engine.
//!
//! A table is defined by a [`Schema`]: a partition key (which decides where an item lives on the
//! ring), a sort key (which orders items within a partition) and an entry type that is a
//! [`Crdt`](crdt::Crdt). Every write is a merge: [`Table::insert`] reads the stored item, merges
//! the incoming one into it and writes the result in one transaction, so replicas that receive
//! the same writes in any order converge. Deletes are tombstone entries.
//!
//! Items are stored under *engine keys*: the 32-byte hash of the partition key followed by the
//! sort key, so one ring partition (a range of hashes) is one contiguous key range. Values are
//! encoded with a version marker ([`codec`]), so data written by older versions stays readable.
//!
//! [`ChangeHook`]s run inside the writing transaction: this is where the sync layer keeps its
//! partition index exactly in step with the items.
//!
//! This crate knows nothing of the network, the cluster layout or replication.

pub mod codec;
pub mod crdt;
mod error;
mod schema;
mod table;

pub use error::TableError;
pub use schema::{Entry, KeyPart, PARTITION_HASH_LEN, PartitionHash, Schema, engine_key};
pub use table::{Change, ChangeHook, RangeQuery, Table, hash_range};
