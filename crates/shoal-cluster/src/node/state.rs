//! A running node's shared state ([`State`]) and its handle ([`Node`]): what every concern of
//! the node reads, and the few accessors they all use (its id, clock, network, peers, and the
//! way storage work leaves the async workers).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use shoal_net::{NetConfig, Network, NodeId, Transport};
use shoal_sync::session::{Replica, Session};
use tokio::time::Instant;

use super::endpoint::Endpoint;
use super::error::BlockingFailed;
use super::stats::SyncerStats;
use super::table::SyncTable;
use crate::layout::{Layout, NodeRole};

/// Layout changes staged on a node, applied together: node → new role (`None` removes it).
pub type Staged = BTreeMap<NodeId, Option<NodeRole>>;

/// How a node behaves.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Address other nodes reach this one at.
    pub public_addr: String,
    /// Addresses to contact at start (other nodes' RPC addresses).
    pub bootstrap: Vec<String>,
    /// Time between heartbeats.
    pub heartbeat: Duration,
    /// Missed heartbeats before a peer is marked down.
    pub down_after: u32,
    /// Network tunables.
    pub net: NetConfig,
    /// Where the node keeps its own state (the applied layout, staged changes) across
    /// restarts; `None` keeps it in memory only.
    pub system_store: Option<shoal_storage::Store>,
    /// Run storage work in place instead of on the blocking pool (deterministic simulation).
    pub inline_storage: bool,
    /// The wall clock for write stamps (`None`: the system clock).
    pub clock: Option<Arc<dyn WallClock>>,
    /// What this node's reads and writes wait for (see [`crate::quorum`]).
    pub consistency: crate::quorum::ConsistencyMode,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            public_addr: String::new(),
            bootstrap: Vec::new(),
            heartbeat: Duration::from_secs(1),
            down_after: 3,
            net: NetConfig::default(),
            system_store: None,
            inline_storage: false,
            clock: None,
            consistency: crate::quorum::ConsistencyMode::default(),
        }
    }
}

/// A wall clock (milliseconds since the Unix epoch). Injected so a simulation can drive it, and
/// skew it per node.
pub trait WallClock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now_ms(&self) -> u64;
}

/// What a node knows of a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    /// The peer.
    pub id: NodeId,
    /// Where it listens.
    pub addr: String,
    /// Whether it answers heartbeats.
    pub up: bool,
    /// Heartbeats missed in a row.
    pub missed: u32,
}

/// A responder session: the initiator and its session number.
pub(super) type SessionKey = (NodeId, u64);

pub(super) type Responder = (Session, Box<dyn Replica + Send>, Instant);

pub(super) struct State<T: Transport> {
    pub(super) id: NodeId,
    pub(super) config: NodeConfig,
    pub(super) public_addr: RwLock<String>,
    pub(super) net: OnceLock<Network<T>>,
    pub(super) layout: RwLock<Layout>,
    /// Live layout versions and every node's sync progress.
    pub(super) history: RwLock<crate::history::LayoutHistory>,
    /// Per table with a syncer: the newest layout version whose sync work it has finished.
    pub(super) table_synced: Mutex<HashMap<String, u64>>,
    /// Per table with a syncer: the newest layout version up to which it has offloaded.
    pub(super) table_offloaded: Mutex<HashMap<String, u64>>,
    /// Writes this node coordinates, by the layout version current when they started.
    pub(super) inflight: Arc<Mutex<BTreeMap<u64, usize>>>,
    pub(super) peers: Mutex<BTreeMap<NodeId, PeerStatus>>,
    pub(super) tables: RwLock<HashMap<String, Arc<dyn SyncTable>>>,
    pub(super) endpoints: RwLock<HashMap<String, Endpoint>>,
    pub(super) replication: RwLock<HashMap<String, crate::worklist::Replication>>,
    pub(super) staged: Mutex<Staged>,
    pub(super) responders: Mutex<HashMap<SessionKey, Responder>>,
    /// Partitions this node, empty, is being filled with by one peer's session: other peers
    /// are asked to come back later rather than send the same items again.
    pub(super) filling: Mutex<HashMap<(String, u8), (SessionKey, Instant)>>,
    pub(super) next_session: std::sync::atomic::AtomicU64,
    /// Large clusters: the peers still to probe in this cycle, and the cycles done.
    pub(super) probe_order: Mutex<(Vec<NodeId>, u64)>,
    /// Large clusters: when the last probe went out.
    pub(super) last_probe: Mutex<Option<Instant>>,
    /// The key of the partition index's id hash, derived from the cluster secret: the same
    /// on every node, so that replicas' sketches compare.
    pub(super) id_key: shoal_sync::ids::IdKey,
    pub(super) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub(super) layout_tx: tokio::sync::watch::Sender<Layout>,
    pub(super) peer_up_tx: tokio::sync::broadcast::Sender<NodeId>,
    /// Tables whose syncer must run a full scan now (`shoal repair`).
    pub(super) repair_tx: tokio::sync::broadcast::Sender<String>,
    /// Layout versions retired: syncers offload what only they gave this node.
    pub(super) retired_tx: tokio::sync::broadcast::Sender<Layout>,
    /// Per table, partitions a replica missed a write of: their syncer takes them next. A set
    /// rather than a channel: a burst of failed writes (one per item) costs one sync each.
    pub(super) missed: Mutex<HashMap<String, std::collections::BTreeSet<u8>>>,
    /// Bumped when `missed` grows, to wake the syncers.
    pub(super) missed_tx: tokio::sync::watch::Sender<()>,
    pub(super) syncer_stats: Mutex<HashMap<String, SyncerStats>>,
    /// When each table's recent partitions completed (last minute), for rates and ETAs.
    pub(super) completions: Mutex<HashMap<String, std::collections::VecDeque<Instant>>>,
}

/// A running node. Cheap to clone.
pub struct Node<T: Transport> {
    pub(super) state: Arc<State<T>>,
}

impl<T: Transport> Clone for Node<T> {
    fn clone(&self) -> Self {
        Node {
            state: self.state.clone(),
        }
    }
}

impl<T: Transport> Node<T> {
    pub(super) fn net(&self) -> &Network<T> {
        self.state.net.get().expect("network set at start")
    }

    /// Runs storage work off the async workers, or in place when the node is simulated (one
    /// thread, virtual time: a blocking pool would make runs irreproducible).
    pub(super) fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> impl Future<Output = Result<R, BlockingFailed>> + Send + 'static {
        let inline = self.state.config.inline_storage;
        async move {
            if inline {
                Ok(f())
            } else {
                tokio::task::spawn_blocking(f)
                    .await
                    .map_err(|e| BlockingFailed(e.to_string()))
            }
        }
    }

    /// Wall-clock milliseconds, from the configured clock.
    pub fn now_ms(&self) -> u64 {
        match &self.state.config.clock {
            Some(c) => c.now_ms(),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.state.id
    }

    /// Every peer heard of, with its state.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.state.peers.lock().values().cloned().collect()
    }

    /// The address this node tells others to use.
    pub fn public_addr(&self) -> String {
        self.state.public_addr.read().clone()
    }

    /// Closes the connection to `peer`, as a network fault would: calls in flight on it fail,
    /// and the next call dials again. The peer is not counted down for it.
    pub fn disconnect(&self, peer: NodeId) {
        self.net().disconnect(peer);
    }

    /// Handshakes this node refused (wrong secret, strangers, garbage).
    pub fn refused_handshakes(&self) -> u64 {
        self.net().refused_handshakes()
    }

    /// This node's RPC metrics.
    pub fn net_metrics(&self) -> shoal_net::NetMetrics {
        self.net().metrics().clone()
    }

    /// The key of every table's id hash (see [`shoal_sync::ids::IdKey`]), derived from the
    /// cluster secret.
    pub fn id_key(&self) -> shoal_sync::ids::IdKey {
        self.state.id_key.clone()
    }
}
