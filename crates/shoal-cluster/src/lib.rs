//! Shoal's cluster layer: which nodes store which partitions, how nodes find each other, and
//! how they keep replicas in sync (quorum replication and the background syncer are to come).
//!
//! - [`layout`]: the versioned cluster layout (node roles: zone and capacity, or gateway; the
//!   replication factor; the assignment of the 256 ring partitions to nodes) and the pure,
//!   deterministic assignment algorithm: zone-aware, capacity-weighted, moving as few partitions
//!   as it can when the layout changes.
//! - [`node`]: a running node: membership by heartbeats, layout replication, and sync sessions
//!   with peers over RPC.
//!
//! This crate never depends on the HTTP API or the binary.

pub mod history;
pub mod kv;
pub mod layout;
pub mod node;
pub mod quorum;
pub mod replication;
pub mod worklist;
