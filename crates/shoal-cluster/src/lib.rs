//! Shoal's cluster layer: which nodes store which partitions, how nodes find each other, and
//! how replicas stay in sync: quorum replication with read repair, the background syncer,
//! layout history and tombstone collection.
//!
//! # Replicated tables of your own
//!
//! A table is a [`shoal_table::Schema`]: a partition key (which nodes store an item), a sort
//! key (the order within a partition), and an entry type that is a CRDT, merged on every write
//! (see [`shoal_table::crdt`] and its `crdt_struct!` macro). Declaring it on a running node is
//! one call, [`node::Node::open_table`], which returns a [`tables::ReplicatedTable`]:
//!
//! 1. Define the entry, its keys and its `VERSION_MARKER` (so a later version can migrate it).
//! 2. Start nodes: [`node::Node::start`] per process, or [`local::LocalCluster::start`] for
//!    several nodes in one process (examples, tests).
//! 3. `node.open_table::<MySchema>(&store, TableOptions::default()).await?` on every node. It
//!    opens the partition index, hooks it to the table, registers the table for sync, and
//!    starts its syncer and tombstone collector.
//! 4. Write with `insert` (returns once a write quorum has the entry durably) and read with
//!    `get` or `range` (a read quorum, merged, stale replicas repaired); `local()` reads this
//!    replica alone.
//! 5. [`node::Node::close`] at shutdown checkpoints every table's index.
//!
//! Two runnable programs show it whole: `cargo run -p shoal-cluster --example counter` (a
//! replicated counter per user: each node counts in its own slot, replicas add up to the same
//! total) and `cargo run -p shoal-cluster --example chat` (a chat room's log: last-writer-wins
//! edits, deletions as flags, read in order from any node).
//!
//! # Modules
//!
//! - [`layout`]: the versioned cluster layout (node roles: zone and capacity, or gateway; the
//!   replication factor; the assignment of the 256 ring partitions to nodes) and the pure,
//!   deterministic assignment algorithm: zone-aware, capacity-weighted, moving as few partitions
//!   as it can when the layout changes.
//! - [`node`]: a running node, one concern per file: membership by heartbeats, layout state
//!   and history, the data-plane RPCs, sync sessions, the `Syncer`, offload, the tombstone
//!   collector, and the dispatch of the node's endpoints ([`node::NodeEndpoint`]). Its errors
//!   ([`node::NodeError`]) carry a code on the wire, so a caller tells "retry later" from
//!   "refused".
//! - [`tables`]: declaring a replicated table in one call.
//! - [`local`]: a cluster of real nodes in one process.
//! - [`replication`]: quorum writes and reads of a table, with read repair.
//! - [`quorum`]: the quorums of every read and write, from the replication factor, how a table
//!   is replicated and the node's consistency mode (pure).
//! - [`history`]: the live layout versions and every node's progress through them (pure).
//! - [`worklist`]: the syncer's work list (pure).
//! - [`kv`]: the built-in `kv` table the operator CLI writes through.
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
