//! A running cluster node, one concern per file. Every file adds methods to the one [`Node`]
//! handle over the shared `State`; each imports only the files below it, so the
//! module reads bottom-up:
//!
//! - Vocabulary, with no node in it: `wire` (the messages), `endpoint` (the node's RPC
//!   endpoints, one list), `error` (`NodeError` and its wire codes), `table` (what the node
//!   needs of a table), `stats` (the syncer's counters).
//! - `state`: the shared state, the `Node` handle and its basic accessors.
//! - `registry`: registered tables and added endpoints; `progress`: counting sync work.
//! - `layout_state`: the layout, its history and every node's progress through it.
//! - `membership`: heartbeats, peers up and down, layouts spread; `staging`: the operator's
//!   staged layout changes; `status`: the cluster as the node sees it.
//! - `data`: items written, read and ranged over on replicas (the data plane).
//! - `session`: anti-entropy sessions, initiated and answered.
//! - `offload` and `work`: one piece of the syncer's work; `syncer`: the `Syncer` that
//!   drains a table's work list; `gc`: the tombstone collector.
//! - `dispatch`: each incoming request to the concern that serves it.
//! - `lifecycle`: start, shutdown, close.

mod data;
mod dispatch;
mod endpoint;
mod error;
mod gc;
mod layout_state;
mod lifecycle;
mod membership;
mod offload;
mod progress;
mod registry;
mod session;
mod staging;
mod state;
mod stats;
mod status;
mod syncer;
mod table;
mod wire;
mod work;

pub use endpoint::{Caller, Endpoint, NodeEndpoint};
pub use error::{BlockingFailed, NodeError};
pub use gc::GcConfig;
pub use layout_state::WriteInFlight;
pub use membership::{FULL_PROBE_MAX_PEERS, INDIRECT_PROBES, PROBES_PER_PERIOD};
pub use session::PeerSyncError;
pub use staging::LayoutReport;
pub use state::{Node, NodeConfig, PeerStatus, Staged, WallClock};
pub use stats::SyncerStats;
pub use status::{ClusterStatus, NodeStatus};
pub use syncer::SyncerConfig;
pub use table::SyncTable;
pub use wire::{MAX_RANGE_ITEMS, sync_call_wire_bytes};
