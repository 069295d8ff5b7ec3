//! Shoal's cluster layer: which nodes store which partitions, how nodes find each other, and
//! how they keep replicas in sync: quorum replication, the background syncer, layout history
//! and tombstone collection.
//!
//! - [`layout`]: the versioned cluster layout (node roles: zone and capacity, or gateway; the
//!   replication factor; the assignment of the 256 ring partitions to nodes) and the pure,
//!   deterministic assignment algorithm: zone-aware, capacity-weighted, moving as few partitions
//!   as it can when the layout changes.
//! - [`node`]: a running node: membership by heartbeats, layout replication, sync sessions
//!   with peers over RPC, the background syncer and the tombstone collector.
//! - [`quorum`]: the quorums of every read and write, from the replication factor, how a table
//!   is replicated and the node's consistency mode (pure).
//! - [`replication`]: quorum writes and reads of a table, with read repair.
//! - [`history`]: the live layout versions and every node's progress through them (pure).
//! - [`worklist`]: the syncer's work list (pure).
//!
//! This crate never depends on the HTTP API or the binary.

pub mod history;
pub mod kv;
pub mod layout;
pub mod local;
pub mod node;
pub mod quorum;
pub mod replication;
pub mod tables;
pub mod worklist;
