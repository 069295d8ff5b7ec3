//! Shoal's cluster layer: which nodes store which partitions, and (to come) how nodes find each
//! other, replicate writes at quorum and keep replicas in sync in the background.
//!
//! - [`layout`]: the versioned cluster layout (node roles: zone and capacity, or gateway; the
//!   replication factor; the assignment of the 256 ring partitions to nodes) and the pure,
//!   deterministic assignment algorithm: zone-aware, capacity-weighted, moving as few partitions
//!   as it can when the layout changes.
//!
//! This crate never depends on the HTTP API or the binary.

pub mod layout;
