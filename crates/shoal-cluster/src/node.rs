//! A cluster node: membership by heartbeats, layout replication, and anti-entropy sessions
//! carried over RPC; the syncer's loop (`syncer`) and the tombstone collector (`gc`) live in
//! files of their own.
//!
//! Still over 1,000 lines: membership, layout state, the data-plane RPCs, sessions and the
//! endpoint dispatch share `State` and one `impl Node`; splitting them into a `node/` module
//! of one concern per file is issue 22's first deliverable.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use shoal_net::ClusterSecret;
use shoal_net::{Handler, NetConfig, Network, NodeId, NodeKey, RpcError, Transport};
use shoal_sync::driver::Transcript;
use shoal_sync::protocol::Message;
use shoal_sync::session::{Replica, Session, SyncError};
use tracing::{debug, info, warn};

use crate::layout::{Layout, NodeRole};

// The node's concerns in files of their own (issue 22 moves the rest: membership, layout,
// data-plane RPCs, sessions, dispatch, wire messages).
mod gc;
mod syncer;

use syncer::{SyncerEvents, backoff, panic_message, reraise, run_syncer};

/// A table as the node serves it to peers, whatever its schema: replicas of its partitions for
/// sync, and encoded items for replication. Methods may block on storage: the node calls them
/// off the async workers.
pub trait SyncTable: Send + Sync + 'static {
    /// The table's name.
    fn name(&self) -> &str;
    /// The local replica of partition `p`.
    fn replica(&self, p: u8) -> Box<dyn Replica + Send>;
    /// Merges encoded items (durably) and returns how many changed. Asynchronous: a write waits
    /// for its group commit without holding a blocking thread.
    fn merge_encoded(
        &self,
        items: Vec<Vec<u8>>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<usize, String>> + Send + 'static>>;
    /// The encoded item under an engine key.
    fn get_encoded(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String>;
    /// Whether this node holds any item of partition `p`.
    fn has_data(&self, p: u8) -> Result<bool, String>;
    /// Every (engine key, encoded item) of partition `p`.
    fn scan_partition(&self, p: u8) -> Result<shoal_storage::Entries, String>;
    /// Removes the items still stored exactly as given; returns how many were removed.
    fn delete_if_unchanged(&self, items: Vec<(Vec<u8>, Vec<u8>)>) -> Result<usize, String>;
    /// Items stored (tombstones included).
    fn item_count(&self) -> Result<u64, String>;
    /// Up to `limit` tombstones of partition `p`: (engine key, encoded tombstone).
    fn tombstones(&self, p: u8, limit: usize) -> Result<shoal_storage::Entries, String>;
    /// Up to `limit` (engine key, encoded item) in `range`, descending if `reverse`.
    fn scan_range(
        &self,
        range: &shoal_storage::KeyRange,
        reverse: bool,
        limit: usize,
    ) -> Result<shoal_storage::Entries, String>;
    /// Persists what the table keeps in memory (its partition index's heads), so that the
    /// next open rebuilds nothing. Blocks on storage.
    fn checkpoint(&self) -> Result<(), String>;
}

/// An RPC endpoint added by a higher layer (the API's node-to-node calls): the caller's id and
/// the request body in, the reply body out.
pub type Endpoint = Arc<
    dyn Fn(NodeId, Vec<u8>) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>>
        + Send
        + Sync,
>;

impl<S: shoal_table::Schema> SyncTable
    for (
        shoal_table::Table<S>,
        Arc<shoal_sync::index::PartitionIndex>,
    )
{
    fn name(&self) -> &str {
        S::TABLE_NAME
    }

    fn replica(&self, p: u8) -> Box<dyn Replica + Send> {
        Box::new(shoal_sync::replica::TableReplica::new(
            self.0.clone(),
            self.1.clone(),
            p,
        ))
    }

    fn merge_encoded(
        &self,
        items: Vec<Vec<u8>>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<usize, String>> + Send + 'static>> {
        let table = self.0.clone();
        Box::pin(async move {
            table
                .insert_encoded_async(items)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn get_encoded(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        self.0.get_raw(key).map_err(|e| e.to_string())
    }

    fn has_data(&self, p: u8) -> Result<bool, String> {
        Ok(!self
            .0
            .scan_raw(&shoal_sync::index::partition_range(p), 1)
            .map_err(|e| e.to_string())?
            .is_empty())
    }

    fn scan_partition(&self, p: u8) -> Result<shoal_storage::Entries, String> {
        self.0
            .scan_raw(&shoal_sync::index::partition_range(p), usize::MAX)
            .map_err(|e| e.to_string())
    }

    fn delete_if_unchanged(&self, items: Vec<(Vec<u8>, Vec<u8>)>) -> Result<usize, String> {
        self.0
            .delete_many_if_equal(items)
            .map_err(|e| e.to_string())
    }

    fn item_count(&self) -> Result<u64, String> {
        self.0.len().map_err(|e| e.to_string())
    }

    fn tombstones(&self, p: u8, limit: usize) -> Result<shoal_storage::Entries, String> {
        use shoal_table::Entry as _;
        use shoal_table::codec::Versioned as _;
        let items = self
            .0
            .scan_raw(&shoal_sync::index::partition_range(p), usize::MAX)
            .map_err(|e| e.to_string())?;
        Ok(items
            .into_iter()
            .filter(|(_, v)| S::Entry::decode(v).is_ok_and(|e| e.is_tombstone()))
            .take(limit)
            .collect())
    }

    fn scan_range(
        &self,
        range: &shoal_storage::KeyRange,
        reverse: bool,
        limit: usize,
    ) -> Result<shoal_storage::Entries, String> {
        let direction = if reverse {
            shoal_storage::Direction::Backward
        } else {
            shoal_storage::Direction::Forward
        };
        self.0
            .store()
            .scan(S::TABLE_NAME, range, direction, limit)
            .map_err(|e| e.to_string())
    }

    fn checkpoint(&self) -> Result<(), String> {
        self.1
            .checkpoint(self.0.store())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// How a table's tombstone collector behaves.
#[derive(Debug, Clone)]
pub struct GcConfig {
    /// Time between passes.
    pub interval: Duration,
    /// How long a tombstone must have been seen before it may be collected: writes still in
    /// flight when it was made have landed by then.
    pub min_age: Duration,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            interval: Duration::from_secs(600),
            min_age: Duration::from_secs(3600),
        }
    }
}

/// How a table's background syncer behaves.
#[derive(Debug, Clone)]
pub struct SyncerConfig {
    /// Delay before the first full scan after start.
    pub start_delay: Duration,
    /// A full scan happens again after this long without work.
    pub scan_interval: Duration,
    /// Seed of the random order in which partitions are taken.
    pub seed: u64,
}

impl Default for SyncerConfig {
    fn default() -> Self {
        SyncerConfig {
            start_delay: Duration::from_secs(20),
            scan_interval: Duration::from_secs(12 * 3600),
            seed: 0x5eed,
        }
    }
}

/// What became of a syncer's piece of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Processed {
    /// Synced with every replica, or offloaded.
    Done,
    /// Not finished (written to during an offload): take it again.
    Again,
    /// This node has every acknowledged write, but this many replicas that count as up
    /// could not be reached: the partition gets another pass for them.
    ReplicasLag(usize),
}

/// A partition waiting to be taken again after a failure.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at: tokio::time::Instant,
    work: crate::worklist::Work,
    /// Failures in a row: the delay doubles with each.
    failures: u32,
    /// Whole on this node; only a replica it could not reach lags. Such a partition does not
    /// hold back the table's "synced" mark for a layout version.
    lagging_only: bool,
}

/// Counters of a table's background syncer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncerStats {
    /// Partitions waiting.
    pub queued: u64,
    /// Partition syncs completed.
    pub synced: u64,
    /// Partitions offloaded.
    pub offloaded: u64,
    /// Failed partition syncs or offloads.
    pub errors: u64,
    /// Items received by this node's sessions.
    pub items_received: u64,
    /// Items sent by this node's sessions.
    pub items_sent: u64,
    /// Partitions being synced or offloaded right now.
    pub in_progress: u64,
    /// Full scans done (each queues every partition this node stores or must offload).
    pub full_scans: u64,
    /// Sync metadata and items bytes this node's sessions sent.
    pub bytes_sent: u64,
    /// Sync bytes this node's sessions received.
    pub bytes_received: u64,
    /// Bytes this node's sessions put on the wire both ways, with the framing that carries
    /// them (`SyncStep`, RPC envelope, Noise frames; not TCP/IP headers).
    #[serde(default)]
    pub wire_bytes: u64,
    /// Sync sessions this node started.
    pub sessions: u64,
    /// Thread CPU time, in microseconds, of this node's sync work (sessions it started or
    /// answered, offloads, work-list scans) off the async workers.
    #[serde(default)]
    pub cpu_us: u64,
    /// Tombstones collected (removed from every replica) by this node.
    #[serde(default)]
    pub tombstones_collected: u64,
    /// Partitions queued because a replica missed one of their writes while it counted as up
    /// (a dropped connection, a refusing disk): synced now rather than at the next full scan.
    #[serde(default)]
    pub missed_writes: u64,
    /// Panics caught in the syncer's work (each fails its partition, or restarts the syncer
    /// after a backoff): a bug to report, not a reason to stop syncing.
    #[serde(default)]
    pub panics: u64,
    /// Panics caught in the tombstone collector's passes (the next pass runs after a backoff).
    #[serde(default)]
    pub gc_panics: u64,
    /// Partitions completed over the last minute, per second.
    #[serde(default)]
    pub rate_per_sec: f64,
    /// Seconds until the queue is empty at that rate, if there is a queue and a rate.
    #[serde(default)]
    pub eta_secs: Option<u64>,
}

const SYSTEM_TREE: &str = "system~node";
const LAYOUT_KEY: &[u8] = b"layout";
const HISTORY_KEY: &[u8] = b"layout-history";
const STAGED_KEY: &[u8] = b"staged";

/// Layout changes staged on a node, applied together: node → new role (`None` removes it).
pub type Staged = BTreeMap<NodeId, Option<NodeRole>>;

/// A node as `shoal status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node.
    pub id: NodeId,
    /// Where it listens.
    pub addr: String,
    /// Its zone in the layout, if it has a role.
    pub zone: Option<String>,
    /// Its capacity (`None`: gateway or no role).
    pub capacity: Option<u64>,
    /// Whether it answers (always true for the node answering).
    pub up: bool,
    /// Partitions it stores in the current layout.
    pub partitions: usize,
}

/// The cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node answering.
    pub node: NodeId,
    /// Its layout version.
    pub layout_version: u64,
    /// Every node known, this one first.
    pub nodes: Vec<NodeStatus>,
    /// This node's background syncers, per table.
    #[serde(default)]
    pub syncers: BTreeMap<String, SyncerStats>,
    /// Items (tombstones included) this node stores, per table.
    #[serde(default)]
    pub tables: BTreeMap<String, u64>,
    /// Replicas of each partition in the current layout.
    #[serde(default)]
    pub replication_factor: usize,
    /// This node's consistency mode: what its reads and writes wait for.
    #[serde(default)]
    pub consistency_mode: crate::quorum::ConsistencyMode,
    /// Durable acknowledgements a write of a sharded table coordinated here waits for.
    #[serde(default)]
    pub write_quorum: usize,
    /// Answers a read of a sharded table coordinated here waits for.
    #[serde(default)]
    pub read_quorum: usize,
    /// The same for the fully replicated system tables (keys, buckets), over every node of
    /// the layout.
    #[serde(default)]
    pub system_quorums: Option<crate::quorum::Quorums>,
}

/// The layout, what is staged, and what applying it would do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayoutReport {
    /// The applied layout.
    pub current: Layout,
    /// Staged changes.
    pub staged: Vec<(NodeId, Option<NodeRole>)>,
    /// The layout applying the staged changes would give, and how many replicas it moves; or
    /// why it cannot be applied.
    pub preview: Result<(Layout, usize), String>,
    /// Live versions and every node's progress through them.
    #[serde(default)]
    pub history: crate::history::LayoutHistory,
}

#[derive(Debug, Serialize, Deserialize)]
struct TableWrite {
    table: String,
    items: Vec<ByteBuf>,
}

/// A point read, borrowed from the caller's key when sent and from the message when served.
#[derive(Debug, Serialize, Deserialize)]
struct TableRead<'a> {
    #[serde(borrow)]
    table: std::borrow::Cow<'a, str>,
    #[serde(borrow, with = "serde_bytes")]
    key: std::borrow::Cow<'a, [u8]>,
}

/// A range of a table's engine keys, as sent to a replica.
#[derive(Debug, Serialize, Deserialize)]
struct TableRange {
    table: String,
    start: std::ops::Bound<ByteBuf>,
    end: std::ops::Bound<ByteBuf>,
    reverse: bool,
    limit: u32,
}

const BUILT_IN_ENDPOINTS: &[&str] = &[
    "ping",
    "layout.get",
    "layout.push",
    "admin.status",
    "admin.put",
    "admin.get",
    "kv.put",
    "kv.get",
    "admin.digests",
    "admin.layout",
    "admin.sync",
    "admin.repair",
    "admin.stage",
    "admin.apply",
    "admin.forget",
    "sync",
    "table.write",
    "table.read",
    "table.range",
    "gc.check",
    "gc.delete",
    "sync.missed",
];

/// Most items one range read returns, whatever the caller asks.
pub const MAX_RANGE_ITEMS: usize = 1000;

fn bound_to_wire(b: &std::ops::Bound<Vec<u8>>) -> std::ops::Bound<ByteBuf> {
    match b {
        std::ops::Bound::Included(k) => std::ops::Bound::Included(ByteBuf::from(k.clone())),
        std::ops::Bound::Excluded(k) => std::ops::Bound::Excluded(ByteBuf::from(k.clone())),
        std::ops::Bound::Unbounded => std::ops::Bound::Unbounded,
    }
}

fn bound_from_wire(b: std::ops::Bound<ByteBuf>) -> std::ops::Bound<Vec<u8>> {
    match b {
        std::ops::Bound::Included(k) => std::ops::Bound::Included(k.into_vec()),
        std::ops::Bound::Excluded(k) => std::ops::Bound::Excluded(k.into_vec()),
        std::ops::Bound::Unbounded => std::ops::Bound::Unbounded,
    }
}

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

#[derive(Debug, Serialize, Deserialize)]
struct PingReply {
    addr: String,
    layout_version: u64,
    peers: Vec<(NodeId, String)>,
    /// The highest layout version whose data the answering node has finished syncing.
    #[serde(default)]
    synced: u64,
    /// The highest layout version the answering node acknowledged (see `LayoutHistory`).
    #[serde(default)]
    acked: u64,
    /// The highest layout version up to which the answering node has offloaded.
    #[serde(default)]
    offloaded: u64,
    /// The nodes the answering node knows were forgotten (see `LayoutHistory::forgotten`).
    #[serde(default)]
    forgotten: Vec<NodeId>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SyncStep {
    table: String,
    partition: u8,
    session: u64,
    messages: Vec<ByteBuf>,
}

/// Bytes one sync call occupies on the wire between two nodes: the initiator's leg (messages of
/// the given encoded sizes) in a `SyncStep` request, the responder's leg as its reply, each in
/// its RPC envelope and Noise frames (session numbers taken as 32-bit). What the in-process
/// benchmark adds to a session's messages to report the bytes a cluster would carry.
pub fn sync_call_wire_bytes(table: &str, partition: u8, request: &[usize], reply: &[usize]) -> u64 {
    let step = SyncStep {
        table: table.to_string(),
        partition,
        session: u64::from(u32::MAX),
        messages: request
            .iter()
            .map(|&n| ByteBuf::from(vec![0u8; n]))
            .collect(),
    };
    let reply: Vec<ByteBuf> = reply.iter().map(|&n| ByteBuf::from(vec![0u8; n])).collect();
    shoal_net::rpc::request_wire_bytes("sync", encode(&step).len())
        + shoal_net::rpc::response_wire_bytes(encode(&reply).len())
}

/// A responder session: the initiator and its session number.
type SessionKey = (NodeId, u64);

type Responder = (Session, Box<dyn Replica + Send>, Instant);

struct State<T: Transport> {
    id: NodeId,
    config: NodeConfig,
    public_addr: RwLock<String>,
    net: OnceLock<Network<T>>,
    layout: RwLock<Layout>,
    /// Live layout versions and every node's sync progress.
    history: RwLock<crate::history::LayoutHistory>,
    /// Per table with a syncer: the newest layout version whose sync work it has finished.
    table_synced: Mutex<HashMap<String, u64>>,
    /// Per table with a syncer: the newest layout version up to which it has offloaded.
    table_offloaded: Mutex<HashMap<String, u64>>,
    /// Writes this node coordinates, by the layout version current when they started.
    inflight: Arc<Mutex<BTreeMap<u64, usize>>>,
    peers: Mutex<BTreeMap<NodeId, PeerStatus>>,
    tables: RwLock<HashMap<String, Arc<dyn SyncTable>>>,
    endpoints: RwLock<HashMap<String, Endpoint>>,
    replication: RwLock<HashMap<String, crate::worklist::Replication>>,
    staged: Mutex<Staged>,
    responders: Mutex<HashMap<SessionKey, Responder>>,
    /// Partitions this node, empty, is being filled with by one peer's session: other peers
    /// are asked to come back later rather than send the same items again.
    filling: Mutex<HashMap<(String, u8), (SessionKey, Instant)>>,
    next_session: std::sync::atomic::AtomicU64,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    layout_tx: tokio::sync::watch::Sender<Layout>,
    peer_up_tx: tokio::sync::broadcast::Sender<NodeId>,
    /// Tables whose syncer must run a full scan now (`shoal repair`).
    repair_tx: tokio::sync::broadcast::Sender<String>,
    /// Layout versions retired: syncers offload what only they gave this node.
    retired_tx: tokio::sync::broadcast::Sender<Layout>,
    /// Per table, partitions a replica missed a write of: their syncer takes them next. A set
    /// rather than a channel: a burst of failed writes (one per item) costs one sync each.
    missed: Mutex<HashMap<String, std::collections::BTreeSet<u8>>>,
    /// Bumped when `missed` grows, to wake the syncers.
    missed_tx: tokio::sync::watch::Sender<()>,
    syncer_stats: Mutex<HashMap<String, SyncerStats>>,
    /// When each table's recent partitions completed (last minute), for rates and ETAs.
    completions: Mutex<HashMap<String, std::collections::VecDeque<Instant>>>,
}

/// A running node. Cheap to clone.
pub struct Node<T: Transport> {
    state: Arc<State<T>>,
}

impl<T: Transport> Clone for Node<T> {
    fn clone(&self) -> Self {
        Node {
            state: self.state.clone(),
        }
    }
}

struct NodeHandler<T: Transport>(std::sync::Weak<State<T>>);

impl<T: Transport> Handler for NodeHandler<T> {
    fn handle(
        &self,
        from: NodeId,
        endpoint: String,
        body: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>> {
        let state = self.0.clone();
        Box::pin(async move {
            let Some(state) = state.upgrade() else {
                return Err("node is shutting down".into());
            };
            Node { state }.serve(from, &endpoint, body).await
        })
    }

    fn answers_at_once(&self, endpoint: &str) -> bool {
        // One B-tree lookup in cached pages, or a heartbeat (in-memory state only). Writes
        // wait for a commit, syncs read partitions.
        endpoint == "table.read" || endpoint == "ping"
    }
}

fn encode<V: Serialize>(v: &V) -> Vec<u8> {
    // Most messages are an item or a few: starting at this size spares the regrowths from
    // empty (8, 16, 32... bytes) that made up much of a point read's allocation work.
    let mut out = Vec::with_capacity(256);
    rmp_serde::encode::write_named(&mut out, v).expect("cluster messages encode");
    out
}

fn decode<'a, V: Deserialize<'a>>(b: &'a [u8]) -> Result<V, String> {
    rmp_serde::from_slice(b).map_err(|e| format!("malformed request: {e}"))
}

/// Raises `table`'s version in a per-table progress map; returns whether it moved.
fn raise(map: &Mutex<HashMap<String, u64>>, table: &str, version: u64) -> bool {
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    let v = m.entry(table.to_string()).or_default();
    let moved = *v < version;
    *v = (*v).max(version);
    moved
}

/// The lowest version in a per-table progress map (`None` without tables).
fn lowest(map: &Mutex<HashMap<String, u64>>) -> Option<u64> {
    map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .copied()
        .min()
}

/// A write being coordinated (see [`Node::begin_write`]).
pub struct WriteInFlight {
    inflight: Arc<Mutex<BTreeMap<u64, usize>>>,
    version: u64,
}

impl Drop for WriteInFlight {
    fn drop(&mut self) {
        let mut m = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.version) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.version);
            }
        }
    }
}

/// Storage work that panicked or was cancelled.
#[derive(Debug)]
pub struct BlockingFailed(String);

impl std::fmt::Display for BlockingFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "storage task failed: {}", self.0)
    }
}

/// A wall clock (milliseconds since the Unix epoch). Injected so a simulation can drive it, and
/// skew it per node.
pub trait WallClock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now_ms(&self) -> u64;
}

/// Why a sync with a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerSyncError {
    /// The call failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The session failed on this side.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// A reply was malformed.
    #[error("malformed sync reply: {0}")]
    Malformed(String),
    /// The local table is unknown.
    #[error("no table {0}")]
    NoTable(String),
}

impl<T: Transport> Node<T> {
    /// Starts a node: listens on `bind`, then heartbeats its bootstrap peers and every peer it
    /// learns of.
    pub async fn start(
        key: NodeKey,
        secret: ClusterSecret,
        transport: T,
        bind: &str,
        config: NodeConfig,
        layout: Layout,
    ) -> std::io::Result<Self> {
        let id = key.node_id();
        let (mut layout, staged) = match &config.system_store {
            Some(store) => {
                let (persisted, staged) = Self::load_persisted(store);
                let mut l = layout;
                if let Some(p) = persisted {
                    l.merge(&p);
                }
                (l, staged)
            }
            None => (layout, Staged::new()),
        };
        layout.replication_factor = layout.replication_factor.max(1);
        let mut history: crate::history::LayoutHistory = config
            .system_store
            .as_ref()
            .and_then(|s| s.get(SYSTEM_TREE, HISTORY_KEY).ok().flatten())
            .and_then(|b| rmp_serde::from_slice(&b).ok())
            .unwrap_or_default();
        history.push(&layout);
        let state = Arc::new_cyclic(|weak: &std::sync::Weak<State<T>>| {
            let net = Network::new(
                key,
                secret,
                transport,
                config.net.clone(),
                Arc::new(NodeHandler(weak.clone())),
            );
            let cell = OnceLock::new();
            let _ = cell.set(net);
            State {
                id,
                config: config.clone(),
                public_addr: RwLock::new(config.public_addr.clone()),
                net: cell,
                layout: RwLock::new(layout.clone()),
                history: RwLock::new(history),
                table_synced: Mutex::new(HashMap::new()),
                table_offloaded: Mutex::new(HashMap::new()),
                inflight: Arc::new(Mutex::new(BTreeMap::new())),
                peers: Mutex::new(BTreeMap::new()),
                tables: RwLock::new(HashMap::new()),
                endpoints: RwLock::new(HashMap::new()),
                replication: RwLock::new(HashMap::new()),
                staged: Mutex::new(staged.clone()),
                responders: Mutex::new(HashMap::new()),
                filling: Mutex::new(HashMap::new()),
                next_session: std::sync::atomic::AtomicU64::new(1),
                tasks: Mutex::new(Vec::new()),
                layout_tx: tokio::sync::watch::channel(layout.clone()).0,
                peer_up_tx: tokio::sync::broadcast::channel(64).0,
                repair_tx: tokio::sync::broadcast::channel(64).0,
                retired_tx: tokio::sync::broadcast::channel(64).0,
                missed: Mutex::new(HashMap::new()),
                missed_tx: tokio::sync::watch::channel(()).0,
                syncer_stats: Mutex::new(HashMap::new()),
                completions: Mutex::new(HashMap::new()),
            }
        });
        let node = Node { state };
        let bound = node.net().listen(bind).await?;
        if config.public_addr.is_empty() {
            *node
                .state
                .public_addr
                .write()
                .unwrap_or_else(|p| p.into_inner()) = bound.to_string();
        }
        // The heartbeat task holds only a weak reference: dropping every `Node` handle (or
        // `shutdown`) stops it.
        let weak = Arc::downgrade(&node.state);
        let heartbeat = node.state.config.heartbeat;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(state) = weak.upgrade() else { return };
                Node { state }.heartbeat_once().await;
            }
        });
        node.state
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
        info!(node = ?id, addr = %bound, "node started");
        Ok(node)
    }

    fn net(&self) -> &Network<T> {
        self.state.net.get().expect("network set at start")
    }

    /// Runs storage work off the async workers, or in place when the node is simulated (one
    /// thread, virtual time: a blocking pool would make runs irreproducible).
    fn blocking<R: Send + 'static>(
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

    /// [`Node::blocking`] for sync work of `table`: the thread CPU time the work took is added
    /// to the table's [`SyncerStats::cpu_us`], so that the syncer's share of the node's CPU can
    /// be read (what runs on the async workers, encoding and RPC, is not counted).
    async fn blocking_sync<R: Send + 'static>(
        &self,
        table: &str,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, BlockingFailed> {
        let (r, cpu) = self
            .blocking(move || {
                let start = cpu_time::ThreadTime::now();
                let r = f();
                (r, start.elapsed())
            })
            .await?;
        let us = u64::try_from(cpu.as_micros()).unwrap_or(u64::MAX);
        self.bump(table, |s| s.cpu_us = s.cpu_us.saturating_add(us));
        Ok(r)
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

    /// The current layout.
    pub fn layout(&self) -> Layout {
        self.state
            .layout
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Adopts `layout` if newer and pushes it to every known peer.
    pub async fn set_layout(&self, layout: Layout) {
        self.merge_layout(&layout).await;
        let body = encode(&self.layout());
        for p in self.peers() {
            if let Err(e) = self.net().call(p.id, "layout.push", body.clone()).await {
                debug!(peer = ?p.id, error = %e, "layout push failed");
            }
        }
    }

    /// Adopts `other` if it is newer, and persists it; returns whether it was adopted.
    async fn merge_layout(&self, other: &Layout) -> bool {
        let adopted = {
            let mut l = self.state.layout.write().unwrap_or_else(|p| p.into_inner());
            let before = l.clone();
            l.merge(other);
            *l != before
        };
        if adopted {
            let l = self.layout();
            let history = {
                let mut h = self
                    .state
                    .history
                    .write()
                    .unwrap_or_else(|p| p.into_inner());
                h.push(&l);
                h.clone()
            };
            self.state.layout_tx.send_replace(l.clone());
            self.persist(LAYOUT_KEY, &l).await;
            self.persist(HISTORY_KEY, &history).await;
        }
        adopted
    }

    /// The live layout versions and every node's sync progress, as this node knows them.
    pub fn history(&self) -> crate::history::LayoutHistory {
        self.state
            .history
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The highest layout version this node has finished syncing (every table's syncer).
    pub fn synced_version(&self) -> u64 {
        // A node without syncers (tests, tools) has nothing to move.
        lowest(&self.state.table_synced).unwrap_or(self.layout().version)
    }

    /// The newest layout version this node acknowledges: it knows it, and every write it
    /// coordinates started under it (or later).
    pub fn acked_version(&self) -> u64 {
        let current = self.layout().version;
        let oldest = self
            .state
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .next()
            .copied();
        let acked = oldest.map_or(current, |o| o.min(current));
        self.state
            .history
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .record_acked(self.id(), acked);
        acked
    }

    /// Registers a write this node coordinates, under the current layout version, until the
    /// guard drops.
    pub fn begin_write(&self) -> WriteInFlight {
        let version = self.layout().version;
        *self
            .state
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(version)
            .or_default() += 1;
        WriteInFlight {
            inflight: self.state.inflight.clone(),
            version,
        }
    }

    /// A table's syncer has finished every piece of work up to layout `version`.
    async fn table_done(&self, table: &str, version: u64) {
        if raise(&self.state.table_synced, table, version) {
            let id = self.id();
            self.note_synced(id, self.synced_version()).await;
        }
    }

    /// The highest layout version up to which this node holds nothing it does not store in
    /// that version (every table's syncer).
    pub fn offloaded_version(&self) -> u64 {
        let v = lowest(&self.state.table_offloaded).unwrap_or(self.layout().version);
        self.state
            .history
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .record_offloaded(self.id(), v);
        v
    }

    fn table_offloaded(&self, table: &str, version: u64) {
        raise(&self.state.table_offloaded, table, version);
    }

    /// Declares `node`, which left the layout and is down, lost (`shoal layout forget`):
    /// tombstone collection stops waiting for it to report its offload, and its sync sessions
    /// are refused from now on. Heartbeats spread it to every node.
    pub async fn forget(&self, node: NodeId) -> Result<(), crate::history::ForgetError> {
        if self.peers().iter().any(|p| p.id == node && p.up) {
            return Err(crate::history::ForgetError::Up(node));
        }
        let history = {
            let mut h = self
                .state
                .history
                .write()
                .unwrap_or_else(|p| p.into_inner());
            h.forget(node)?.then(|| h.clone())
        };
        if let Some(history) = history {
            warn!(node = ?node, "node forgotten: its copies are no longer waited for");
            self.persist(HISTORY_KEY, &history).await;
        }
        Ok(())
    }

    async fn absorb_forgotten(&self, nodes: &[NodeId]) {
        let history = {
            let mut h = self
                .state
                .history
                .write()
                .unwrap_or_else(|p| p.into_inner());
            h.absorb_forgotten(nodes).then(|| h.clone())
        };
        if let Some(history) = history {
            self.persist(HISTORY_KEY, &history).await;
        }
    }

    /// Records a node's sync progress; retires versions no longer needed.
    async fn note_synced(&self, node: NodeId, version: u64) {
        let retired = {
            let mut h = self
                .state
                .history
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let before = h.synced.get(&node).copied();
            h.record_synced(node, version);
            let retired = h.prune();
            // Syncers hear of the retirement before anyone can see the shorter history idle.
            for l in &retired {
                let _ = self.state.retired_tx.send(l.clone());
            }
            (!retired.is_empty() || before != h.synced.get(&node).copied())
                .then(|| (retired, h.clone()))
        };
        if let Some((retired, history)) = retired {
            if !retired.is_empty() {
                info!(
                    retired = retired.len(),
                    read_version = history.read_version().map_or(0, |l| l.version),
                    "old layout versions retired"
                );
            }
            self.persist(HISTORY_KEY, &history).await;
        }
    }

    /// The node sets a write of partition `p` of `table` must reach a quorum in: one per live
    /// layout version.
    pub fn write_sets(&self, table: &str, p: u8) -> Vec<Vec<NodeId>> {
        let replication = self.replication_of(table);
        self.state
            .history
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .write_sets(|l| replication.nodes_of(l, p))
    }

    /// The nodes a read of partition `p` of `table` asks (those of the read version), and how
    /// many of them must answer: one look-up of the table's replication for both, on the read
    /// path.
    pub fn read_nodes(&self, table: &str, p: u8) -> (Vec<NodeId>, usize) {
        let replication = self.replication_of(table);
        let nodes = self
            .state
            .history
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .read_set(|l| replication.nodes_of(l, p));
        let needed = crate::quorum::Quorums::of(
            replication,
            nodes.len(),
            self.replication_factor(),
            self.state.config.consistency,
        )
        .read;
        (nodes, needed)
    }

    /// Every node of partition `p` of `table` in a live version: whom a replica syncs with.
    pub fn sync_nodes(&self, table: &str, p: u8) -> Vec<NodeId> {
        let replication = self.replication_of(table);
        self.state
            .history
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .union(|l| replication.nodes_of(l, p))
    }

    async fn persist<V: Serialize>(&self, key: &'static [u8], value: &V) {
        let Some(store) = &self.state.config.system_store else {
            return;
        };
        let bytes = encode(value);
        let r = store
            .transact_async(move |tx| tx.put(SYSTEM_TREE, key, &bytes))
            .await;
        if let Err(e) = r {
            warn!(error = %e, "cannot persist node state");
        }
    }

    /// The layout and staged changes persisted by an earlier run, if any.
    pub fn load_persisted(store: &shoal_storage::Store) -> (Option<Layout>, Staged) {
        let layout = store
            .get(SYSTEM_TREE, LAYOUT_KEY)
            .ok()
            .flatten()
            .and_then(|b| rmp_serde::from_slice(&b).ok());
        let staged = store
            .get(SYSTEM_TREE, STAGED_KEY)
            .ok()
            .flatten()
            .and_then(|b| rmp_serde::from_slice(&b).ok())
            .unwrap_or_default();
        (layout, staged)
    }

    /// The registered table `name`.
    pub fn table(&self, name: &str) -> Result<Arc<dyn SyncTable>, String> {
        self.state
            .tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no table {name}"))
    }

    /// Sends encoded items of `table` to `node` (this node or a peer) to be merged durably.
    pub async fn write_to(
        &self,
        node: NodeId,
        table: &str,
        items: Vec<Vec<u8>>,
    ) -> Result<(), String> {
        if node == self.id() {
            let t = self.table(table)?;
            t.merge_encoded(items).await?;
            return Ok(());
        }
        let body = encode(&TableWrite {
            table: table.to_string(),
            items: items.into_iter().map(ByteBuf::from).collect(),
        });
        self.net()
            .call(node, "table.write", body)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Reads the encoded item under `key` of `table` from this node's own store.
    pub fn read_local(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        // A point read is a few microseconds of B-tree lookup in cached pages: done in place,
        // it costs less than handing it to the blocking pool and back.
        self.table(table)?.get_encoded(key)
    }

    /// Reads the encoded item under `key` of `table` from `node` (this node or a peer).
    pub async fn read_from(
        &self,
        node: NodeId,
        table: &str,
        key: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, String> {
        if node == self.id() {
            return self.read_local(table, &key);
        }
        let body = encode(&TableRead {
            table: table.into(),
            key: key.into(),
        });
        let reply = self
            .net()
            .call(node, "table.read", body)
            .await
            .map_err(|e| e.to_string())?;
        let v: Option<ByteBuf> = decode(&reply)?;
        Ok(v.map(ByteBuf::into_vec))
    }

    /// Reads up to `limit` (at most [`MAX_RANGE_ITEMS`]) encoded items of `table` in `range`
    /// from `node` (this node or a peer).
    pub async fn range_from(
        &self,
        node: NodeId,
        table: &str,
        range: shoal_storage::KeyRange,
        reverse: bool,
        limit: usize,
    ) -> Result<shoal_storage::Entries, String> {
        let limit = limit.min(MAX_RANGE_ITEMS);
        if node == self.id() {
            let t = self.table(table)?;
            return self
                .blocking(move || t.scan_range(&range, reverse, limit))
                .await
                .map_err(|e| e.to_string())?;
        }
        let body = encode(&TableRange {
            table: table.to_string(),
            start: bound_to_wire(&range.start),
            end: bound_to_wire(&range.end),
            reverse,
            limit: limit as u32,
        });
        let reply = self
            .net()
            .call(node, "table.range", body)
            .await
            .map_err(|e| e.to_string())?;
        let v: Vec<(ByteBuf, ByteBuf)> = decode(&reply)?;
        Ok(v.into_iter()
            .map(|(k, v)| (k.into_vec(), v.into_vec()))
            .collect())
    }

    /// Adds an RPC endpoint served by a higher layer. Names of the node's own endpoints are
    /// refused.
    pub fn add_endpoint(&self, name: &str, endpoint: Endpoint) -> Result<(), String> {
        if BUILT_IN_ENDPOINTS.contains(&name) {
            return Err(format!("endpoint {name} is the node's own"));
        }
        self.state
            .endpoints
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), endpoint);
        Ok(())
    }

    /// Calls `endpoint` on `node`; on this node, the endpoint runs in place.
    pub async fn call_endpoint(
        &self,
        node: NodeId,
        endpoint: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        if node == self.id() {
            return self.serve(node, endpoint, body).await;
        }
        self.net()
            .call(node, endpoint, body)
            .await
            .map_err(|e| e.to_string())
    }

    /// Registers a table replicated on every node of the layout (small system tables).
    pub fn add_full_table(&self, table: Arc<dyn SyncTable>) {
        self.state
            .replication
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(table.name().to_string(), crate::worklist::Replication::Full);
        self.add_table(table);
    }

    /// How `table` is replicated.
    pub fn replication_of(&self, table: &str) -> crate::worklist::Replication {
        self.state
            .replication
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(table)
            .copied()
            .unwrap_or_default()
    }

    /// The replication factor of the current layout.
    pub fn replication_factor(&self) -> usize {
        self.state
            .layout
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .replication_factor
    }

    /// This node's consistency mode.
    pub fn consistency_mode(&self) -> crate::quorum::ConsistencyMode {
        self.state.config.consistency
    }

    /// The quorums of `table` over one of its node sets of `set_len` nodes (a partition's
    /// nodes in one layout version), under this node's consistency mode.
    pub fn quorums(&self, table: &str, set_len: usize) -> crate::quorum::Quorums {
        crate::quorum::Quorums::of(
            self.replication_of(table),
            set_len,
            self.replication_factor(),
            self.state.config.consistency,
        )
    }

    /// The nodes storing partition `p` of `table` in the current layout.
    pub fn nodes_for(&self, table: &str, p: u8) -> Vec<NodeId> {
        self.replication_of(table).nodes_of(&self.layout(), p)
    }

    /// Registers a table (sharded over the layout) for sync.
    pub fn add_table(&self, table: Arc<dyn SyncTable>) {
        self.state
            .tables
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(table.name().to_string(), table);
    }

    /// The cluster as this node sees it.
    pub fn status(&self) -> ClusterStatus {
        let layout = self.layout();
        let describe = |id: NodeId, addr: String, up: bool| {
            let role = layout.roles.get(&id);
            NodeStatus {
                id,
                addr,
                zone: role.map(|r| r.zone.clone()),
                capacity: role.and_then(|r| r.capacity),
                up,
                partitions: layout.partitions_of(id).len(),
            }
        };
        let mut nodes = vec![describe(self.id(), self.public_addr(), true)];
        for p in self.peers() {
            nodes.push(describe(p.id, p.addr, p.up));
        }
        let rf = layout.replication_factor;
        let mode = self.consistency_mode();
        let sharded =
            crate::quorum::Quorums::of(crate::worklist::Replication::Sharded, rf, rf, mode);
        let everyone = layout.all_nodes().len();
        ClusterStatus {
            node: self.id(),
            layout_version: layout.version,
            nodes,
            syncers: self.syncer_stats().into_iter().collect(),
            tables: self.table_sizes(),
            replication_factor: rf,
            consistency_mode: mode,
            write_quorum: sharded.write,
            read_quorum: sharded.read,
            system_quorums: (everyone > 0).then(|| {
                crate::quorum::Quorums::of(crate::worklist::Replication::Full, everyone, rf, mode)
            }),
        }
    }

    /// The layout, the staged changes, and what applying them would do.
    pub fn layout_report(&self) -> LayoutReport {
        let current = self.layout();
        let staged: Staged = self
            .state
            .staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut roles = current.roles.clone();
        for (n, r) in &staged {
            match r {
                Some(r) => {
                    roles.insert(*n, r.clone());
                }
                None => {
                    roles.remove(n);
                }
            }
        }
        let preview = if staged.is_empty() {
            Err("nothing staged".to_string())
        } else {
            current.apply(roles).map_err(|e| e.to_string())
        };
        LayoutReport {
            current,
            staged: staged.into_iter().collect(),
            preview,
            history: self.history(),
        }
    }

    /// Closes the connection to `peer`, as a network fault would: calls in flight on it fail,
    /// and the next call dials again. The peer is not counted down for it.
    pub fn disconnect(&self, peer: NodeId) {
        self.net().disconnect(peer);
    }

    /// Every peer heard of, with its state.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.state
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The address this node tells others to use.
    pub fn public_addr(&self) -> String {
        self.state
            .public_addr
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops the node: heartbeats, listener and every connection.
    pub fn shutdown(&self) {
        for t in self
            .state
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
        self.net().shutdown();
    }

    /// Stops the node ([`Node::shutdown`]) and checkpoints every registered table, so that the
    /// next start rebuilds no partition index. Returns the tables whose checkpoint failed (the
    /// next start rebuilds their written partitions; nothing is lost).
    pub async fn close(&self) -> Vec<(String, String)> {
        self.shutdown();
        let tables = self.tables();
        let mut failed = Vec::new();
        for t in tables {
            let name = t.name().to_string();
            let r = self
                .blocking(move || t.checkpoint())
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
            if let Err(e) = r {
                warn!(table = %name, error = %e, "index checkpoint at shutdown failed; the next start rebuilds");
                failed.push((name, e));
            }
        }
        failed
    }

    /// Handshakes this node refused (wrong secret, strangers, garbage).
    pub fn refused_handshakes(&self) -> u64 {
        self.net().refused_handshakes()
    }

    /// One round of heartbeats: bootstrap addresses not yet known, then every known peer.
    pub async fn heartbeat_once(&self) {
        let known: Vec<String> = self.peers().into_iter().map(|p| p.addr).collect();
        for addr in &self.state.config.bootstrap {
            if known.contains(addr) || *addr == self.public_addr() {
                continue;
            }
            match self.net().connect(addr, None).await {
                Ok(id) if id != self.id() => {
                    self.record(id, addr.clone(), true);
                }
                Ok(_) => {}
                Err(e) => debug!(%addr, error = %e, "bootstrap peer unreachable"),
            }
        }
        let timeout = self.state.config.heartbeat.max(Duration::from_millis(200));
        // Every peer at once, on the connections' priority lanes: one slow peer does not delay
        // the others' heartbeats, and data queued on a connection does not delay its ping.
        let peers = self.peers();
        let ping = encode(&self.public_addr());
        let answers = futures::future::join_all(
            peers
                .iter()
                .map(|p| self.net().call_urgent(p.id, "ping", ping.clone(), timeout)),
        )
        .await;
        for (p, r) in peers.into_iter().zip(answers) {
            match r
                .map_err(|e| e.to_string())
                .and_then(|b| decode::<PingReply>(&b))
            {
                Ok(reply) => {
                    self.record(p.id, reply.addr.clone(), true);
                    self.note_synced(p.id, reply.synced).await;
                    self.state
                        .history
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .record_acked(p.id, reply.acked);
                    self.state
                        .history
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .record_offloaded(p.id, reply.offloaded);
                    if !reply.forgotten.is_empty() {
                        self.absorb_forgotten(&reply.forgotten).await;
                    }
                    for (id, addr) in reply.peers {
                        if id != self.id() {
                            self.learn(id, addr);
                        }
                    }
                    if reply.layout_version > self.layout().version {
                        self.fetch_layout(p.id).await;
                    }
                }
                Err(e) => {
                    // A peer whose other messages keep arriving is alive, only busy: its late
                    // answer is not a missed heartbeat.
                    let heard_lately = self
                        .net()
                        .silent_for(p.id)
                        .is_some_and(|silence| silence < timeout);
                    if heard_lately {
                        debug!(peer = ?p.id, error = %e, "heartbeat late from a peer still heard from");
                    } else {
                        debug!(peer = ?p.id, error = %e, "heartbeat missed");
                        self.record(p.id, p.addr.clone(), false);
                    }
                }
            }
        }
    }

    async fn fetch_layout(&self, peer: NodeId) {
        match self.net().call(peer, "layout.get", Vec::new()).await {
            Ok(b) => match decode::<Layout>(&b) {
                Ok(l) => {
                    if self.merge_layout(&l).await {
                        info!(version = l.version, "adopted a newer layout");
                    }
                }
                Err(e) => warn!(peer = ?peer, error = %e, "bad layout"),
            },
            Err(e) => debug!(peer = ?peer, error = %e, "layout fetch failed"),
        }
    }

    fn learn(&self, id: NodeId, addr: String) {
        let mut peers = self.state.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.entry(id).or_insert_with(|| {
            self.net().add_peer_addr(id, addr.clone());
            PeerStatus {
                id,
                addr,
                up: false,
                missed: 0,
            }
        });
    }

    fn record(&self, id: NodeId, addr: String, answered: bool) {
        let down_after = self.state.config.down_after;
        let mut peers = self.state.peers.lock().unwrap_or_else(|p| p.into_inner());
        let p = peers.entry(id).or_insert_with(|| PeerStatus {
            id,
            addr: addr.clone(),
            up: false,
            missed: 0,
        });
        if answered {
            if !p.up {
                info!(peer = ?id, "peer up");
                // Syncers queue what they share with it at once.
                let _ = self.state.peer_up_tx.send(id);
            }
            p.up = true;
            p.missed = 0;
            p.addr = addr.clone();
            self.net().add_peer_addr(id, addr);
        } else {
            p.missed += 1;
            if p.up && p.missed >= down_after {
                p.up = false;
                warn!(peer = ?id, missed = p.missed, "peer down");
            }
        }
    }

    async fn serve(&self, from: NodeId, endpoint: &str, body: Vec<u8>) -> Result<Vec<u8>, String> {
        match endpoint {
            "ping" => {
                if let Ok(addr) = decode::<String>(&body)
                    && !addr.is_empty()
                {
                    self.record(from, addr, true);
                }
                let mut peers: Vec<(NodeId, String)> =
                    self.peers().into_iter().map(|p| (p.id, p.addr)).collect();
                peers.push((self.id(), self.public_addr()));
                Ok(encode(&PingReply {
                    addr: self.public_addr(),
                    layout_version: self.layout().version,
                    peers,
                    synced: self.synced_version(),
                    acked: self.acked_version(),
                    offloaded: self.offloaded_version(),
                    forgotten: self.history().forgotten.into_iter().collect(),
                }))
            }
            "layout.get" => Ok(encode(&self.layout())),
            "layout.push" => {
                let l: Layout = decode(&body)?;
                self.merge_layout(&l).await;
                Ok(Vec::new())
            }
            "admin.status" => Ok(encode(&self.status())),
            "admin.put" => {
                let (pk, sk, value, copies): (String, String, Option<ByteBuf>, u32) =
                    decode(&body)?;
                let rep =
                    crate::replication::Replicated::<crate::kv::KvTable, T>::new(self.clone());
                let now = self.now_ms();
                let value = value.map(ByteBuf::into_vec);
                for i in 0..copies.max(1) {
                    let sk = if copies > 1 {
                        format!("{sk}{i:06}")
                    } else {
                        sk.clone()
                    };
                    let item = crate::kv::KvItem::new(&pk, &sk, value.clone(), now, self.id());
                    rep.insert(&item).await.map_err(|e| e.to_string())?;
                }
                Ok(encode(&copies.max(1)))
            }
            "kv.put" => {
                // A client write on the `kv` table at quorum; replies with the write's stamp.
                let (pk, sk, value): (String, String, Option<ByteBuf>) = decode(&body)?;
                let rep =
                    crate::replication::Replicated::<crate::kv::KvTable, T>::new(self.clone());
                let now = self.now_ms();
                let item =
                    crate::kv::KvItem::new(&pk, &sk, value.map(ByteBuf::into_vec), now, self.id());
                rep.insert(&item).await.map_err(|e| e.to_string())?;
                Ok(encode(&(now, self.id())))
            }
            "kv.get" => {
                // A client read at quorum: the value (`None` if deleted) with its stamp.
                let (pk, sk): (String, String) = decode(&body)?;
                let rep =
                    crate::replication::Replicated::<crate::kv::KvTable, T>::new(self.clone());
                let item = rep.get(&pk, &sk).await.map_err(|e| e.to_string())?;
                Ok(encode(&item.map(|i| {
                    let stamp = i.value.stamp();
                    (
                        i.value.get().clone().map(ByteBuf::from),
                        stamp.time,
                        stamp.node,
                    )
                })))
            }
            "admin.get" => {
                let (pk, sk): (String, String) = decode(&body)?;
                let rep =
                    crate::replication::Replicated::<crate::kv::KvTable, T>::new(self.clone());
                let item = rep.get(&pk, &sk).await.map_err(|e| e.to_string())?;
                Ok(encode(
                    &item.and_then(|i| i.value.get().clone()).map(ByteBuf::from),
                ))
            }
            "admin.digests" => {
                let name: String = decode(&body)?;
                let table = self.table(&name)?;
                let digests = self
                    .blocking(move || {
                        (0..=255u8)
                            .map(|p| {
                                let r = table.replica(p);
                                r.head()
                                    .map(|h| (h.digest.xor, h.digest.check, h.digest.count))
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                Ok(encode(&digests))
            }
            "admin.layout" => Ok(encode(&self.layout_report())),
            "admin.sync" => Ok(encode(&self.syncer_stats())),
            "admin.repair" => {
                let table: Option<String> = decode(&body)?;
                Ok(encode(&self.request_repair(table.as_deref())?))
            }
            "admin.stage" => {
                let (node, role): (NodeId, Option<NodeRole>) = decode(&body)?;
                let staged = {
                    let mut s = self.state.staged.lock().unwrap_or_else(|p| p.into_inner());
                    s.insert(node, role);
                    s.clone()
                };
                self.persist(STAGED_KEY, &staged).await;
                Ok(encode(&self.layout_report()))
            }
            "admin.forget" => {
                let node: NodeId = decode(&body)?;
                self.forget(node).await.map_err(|e| e.to_string())?;
                Ok(encode(&self.layout_report()))
            }
            "admin.apply" => {
                let (next, _) = self.layout_report().preview?;
                self.set_layout(next).await;
                self.state
                    .staged
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                self.persist(STAGED_KEY, &Staged::new()).await;
                Ok(encode(&self.layout_report()))
            }
            "sync" => self.serve_sync(from, body).await,
            "table.write" => {
                let w: TableWrite = decode(&body)?;
                let table = self.table(&w.table)?;
                let items = w.items.into_iter().map(ByteBuf::into_vec).collect();
                let changed = table.merge_encoded(items).await?;
                Ok(encode(&changed))
            }
            "sync.missed" => {
                // A coordinator that does not store the partition passes its failed write on
                // to a replica that does; this node does not pass it further.
                let (table, partition): (String, u8) = decode(&body)?;
                self.table(&table)?;
                self.queue_missed(&table, partition);
                Ok(Vec::new())
            }
            "table.read" => {
                let r: TableRead = decode(&body)?;
                let table = self.table(&r.table)?;
                // In place, as for a local point read.
                let v = table.get_encoded(&r.key)?;
                Ok(encode(&v.as_deref().map(serde_bytes::Bytes::new)))
            }
            "gc.check" => {
                // Whether this node holds the given tombstone, or nothing, under the key, and
                // applies the collector's layout version with no change in progress (a node
                // that knows a newer layout may be pulling old copies the collector cannot see).
                let (table, key, hash, version): (String, ByteBuf, ByteBuf, u64) = decode(&body)?;
                let settled = self.layout().version == version && !self.history().in_transition();
                let t = self.table(&table)?;
                let held = self
                    .blocking(move || t.get_encoded(&key))
                    .await
                    .map_err(|e| e.to_string())??;
                Ok(encode(
                    &(settled && held.is_none_or(|b| blake3::hash(&b).as_bytes()[..] == hash[..])),
                ))
            }
            "gc.delete" => {
                // Removes the tombstone if it is still exactly what is stored.
                let (table, key, bytes): (String, ByteBuf, ByteBuf) = decode(&body)?;
                let t = self.table(&table)?;
                let n = self
                    .blocking(move || {
                        t.delete_if_unchanged(vec![(key.into_vec(), bytes.into_vec())])
                    })
                    .await
                    .map_err(|e| e.to_string())??;
                Ok(encode(&n))
            }
            "table.range" => {
                let r: TableRange = decode(&body)?;
                let table = self.table(&r.table)?;
                let range = shoal_storage::KeyRange {
                    start: bound_from_wire(r.start),
                    end: bound_from_wire(r.end),
                };
                let limit = (r.limit as usize).min(MAX_RANGE_ITEMS);
                let v = self
                    .blocking(move || table.scan_range(&range, r.reverse, limit))
                    .await
                    .map_err(|e| e.to_string())??;
                let v: Vec<(ByteBuf, ByteBuf)> = v
                    .into_iter()
                    .map(|(k, v)| (ByteBuf::from(k), ByteBuf::from(v)))
                    .collect();
                Ok(encode(&v))
            }
            other => {
                let endpoint = self
                    .state
                    .endpoints
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(other)
                    .cloned();
                match endpoint {
                    Some(e) => e(from, body).await,
                    None => Err(format!("unknown endpoint {other}")),
                }
            }
        }
    }

    async fn serve_sync(&self, from: NodeId, body: Vec<u8>) -> Result<Vec<u8>, String> {
        // What a forgotten node still holds may include values whose deletions were collected
        // since: none of it comes back in.
        if self
            .state
            .history
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .forgotten
            .contains(&from)
        {
            return Err(format!(
                "node {from} was forgotten (shoal layout forget): wipe its data before it rejoins"
            ));
        }
        let step: SyncStep = decode(&body)?;
        let key = (from, step.session);
        let fill_key = (step.table.clone(), step.partition);
        // Sessions whose initiator went away are forgotten after a while.
        self.state
            .responders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (_, _, at)| at.elapsed() < Duration::from_secs(300));
        let existing = self
            .state
            .responders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        let (session, replica) = match existing {
            Some((s, r, _)) => (Some(s), r),
            None => {
                let table = self
                    .state
                    .tables
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&step.table)
                    .cloned()
                    .ok_or_else(|| format!("no table {}", step.table))?;
                (None, table.replica(step.partition))
            }
        };
        // Storage work (scans, durable merges) runs off the async workers.
        let table_name = step.table.clone();
        let result = self
            .blocking_sync(&table_name, move || {
                let mut session = session;
                for raw in step.messages {
                    let msg = Message::decode(&raw).map_err(|e| e.to_string())?;
                    match session.as_mut() {
                        Some(s) => s.receive(&*replica, msg).map_err(|e| e.to_string())?,
                        None => {
                            session =
                                Some(Session::respond(&*replica, msg).map_err(|e| e.to_string())?)
                        }
                    }
                }
                let mut s = session.ok_or("an empty first step")?;
                let mut out = Vec::new();
                while let Some(m) = s.poll_send(&*replica).map_err(|e| e.to_string())? {
                    out.push(ByteBuf::from(m.encode()));
                }
                Ok::<_, String>((s, replica, out))
            })
            .await
            .map_err(|e| format!("sync step failed: {e}"))??;
        let (session, replica, out) = result;
        let asks_everything = out.iter().any(|m| **m == Message::WantAll.encode());
        {
            let mut filling = self.state.filling.lock().unwrap_or_else(|p| p.into_inner());
            // A fill whose initiator has been silent for a minute is abandoned.
            filling.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(60));
            if let Some((holder, at)) = filling.get_mut(&fill_key)
                && *holder == key
            {
                *at = Instant::now();
            }
            if asks_everything {
                // A peer runs one session per partition at a time: a new one from the peer
                // holding the fill means its earlier one ended (a dropped connection), and
                // takes the fill over rather than wait for it to expire.
                if let Some((other, _)) = filling.get(&fill_key)
                    && *other != key
                    && other.0 != from
                {
                    return Err(format!(
                        "partition {} of {} is being filled by another replica; retry later",
                        fill_key.1, fill_key.0
                    ));
                }
                filling.insert(fill_key.clone(), (key, Instant::now()));
            }
            if session.is_done() && filling.get(&fill_key).is_some_and(|(k, _)| *k == key) {
                filling.remove(&fill_key);
            }
        }
        if !session.is_done() {
            self.state
                .responders
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, (session, replica, Instant::now()));
        }
        Ok(encode(&out))
    }

    /// Runs one anti-entropy session for partition `p` of `table` with `peer`, this node
    /// initiating. Afterwards both hold the merge of both.
    pub async fn sync_with(
        &self,
        peer: NodeId,
        table: &str,
        p: u8,
    ) -> Result<Transcript, PeerSyncError> {
        self.session_with(peer, table, p, false).await
    }

    /// Sends `peer` the items of partition `p` of `table` that it lacks, asking nothing back
    /// (offload).
    pub async fn push_to(
        &self,
        peer: NodeId,
        table: &str,
        p: u8,
    ) -> Result<Transcript, PeerSyncError> {
        self.session_with(peer, table, p, true).await
    }

    async fn session_with(
        &self,
        peer: NodeId,
        table: &str,
        p: u8,
        push_only: bool,
    ) -> Result<Transcript, PeerSyncError> {
        let t = self
            .state
            .tables
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(table)
            .cloned()
            .ok_or_else(|| PeerSyncError::NoTable(table.to_string()))?;
        let session_id = self
            .state
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let replica = t.replica(p);
        let (mut session, mut replica, mut outgoing) = self
            .blocking_sync(table, move || -> Result<_, SyncError> {
                let mut s = if push_only {
                    Session::initiate_push_only(&*replica)?
                } else {
                    Session::initiate(&*replica)?
                };
                let mut out = Vec::new();
                while let Some(m) = s.poll_send(&*replica)? {
                    out.push(m.encode());
                }
                Ok((s, replica, out))
            })
            .await
            .map_err(|e| PeerSyncError::Malformed(e.to_string()))??;
        let mut transcript = Transcript::default();
        loop {
            transcript.legs += 1;
            transcript.bytes_a_to_b += outgoing.iter().map(|m| m.len() as u64).sum::<u64>();
            transcript.item_bytes += outgoing
                .iter()
                .map(|m| Message::encoded_item_bytes(m))
                .sum::<u64>();
            let step = SyncStep {
                table: table.to_string(),
                partition: p,
                session: session_id,
                messages: outgoing.into_iter().map(ByteBuf::from).collect(),
            };
            let body = encode(&step);
            transcript.wire_bytes += shoal_net::rpc::request_wire_bytes("sync", body.len());
            let reply = self.net().call(peer, "sync", body).await?;
            transcript.wire_bytes += shoal_net::rpc::response_wire_bytes(reply.len());
            let replies: Vec<ByteBuf> = rmp_serde::from_slice(&reply)
                .map_err(|e| PeerSyncError::Malformed(e.to_string()))?;
            if !replies.is_empty() {
                transcript.legs += 1;
            }
            transcript.bytes_b_to_a += replies.iter().map(|m| m.len() as u64).sum::<u64>();
            transcript.item_bytes += replies
                .iter()
                .map(|m| Message::encoded_item_bytes(m))
                .sum::<u64>();
            let (s, r, out) = self
                .blocking_sync(table, move || -> Result<_, SyncError> {
                    for raw in replies {
                        session.receive(&*replica, Message::decode(&raw)?)?;
                    }
                    let mut out = Vec::new();
                    while let Some(m) = session.poll_send(&*replica)? {
                        out.push(m.encode());
                    }
                    Ok((session, replica, out))
                })
                .await
                .map_err(|e| PeerSyncError::Malformed(e.to_string()))??;
            session = s;
            replica = r;
            outgoing = out;
            if outgoing.is_empty() {
                if session.is_done() {
                    transcript.a = session.stats();
                    return Ok(transcript);
                }
                return Err(PeerSyncError::Malformed(
                    "the peer stopped answering before the session ended".into(),
                ));
            }
        }
    }
}

impl<T: Transport> Node<T> {
    /// Starts the background syncer of table `table`: a full scan `start_delay` after start and
    /// after `scan_interval` without work, the partitions whose nodes change with each layout,
    /// and at once the partitions shared with a peer that comes (back) up. Partitions this node
    /// stores are synced with all their other replicas; those it no longer stores are pushed to
    /// their owners and deleted here if unchanged.
    pub fn start_syncer(&self, table: &str, config: SyncerConfig) -> Result<(), String> {
        let t = self.table(table)?;
        // Until its first pass, the table has synced and offloaded nothing.
        self.state
            .table_synced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(table.to_string())
            .or_insert(0);
        self.state
            .table_offloaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(table.to_string())
            .or_insert(0);
        let node = Arc::downgrade(&self.state);
        // Subscribed now, not in the task: nothing that happens before it first runs is missed.
        let mut events = SyncerEvents::subscribe(&self.state);
        let name = table.to_string();
        // The syncer's loop runs under a supervisor: a panic in its work (a bug, a storage
        // layer that panics) is caught, counted and logged, and the loop starts again after a
        // backoff with a full scan, instead of the table silently never syncing again.
        let task = tokio::spawn(async move {
            let mut first_scan = config.start_delay;
            let mut panics_in_a_row = 0u32;
            loop {
                let started = Instant::now();
                let run = std::panic::AssertUnwindSafe(run_syncer(
                    node.clone(),
                    name.clone(),
                    t.clone(),
                    config.clone(),
                    first_scan,
                    events,
                ));
                let Err(panic) = futures::FutureExt::catch_unwind(run).await else {
                    return;
                };
                let Some(state) = node.upgrade() else { return };
                if started.elapsed() > Duration::from_secs(600) {
                    panics_in_a_row = 0;
                }
                panics_in_a_row += 1;
                let backoff = backoff(panics_in_a_row);
                tracing::error!(table = %name, panic = %panic_message(&*panic), restart_in = ?backoff, "the syncer panicked; it restarts with a full scan");
                Node {
                    state: state.clone(),
                }
                .bump(&name, |s| s.panics += 1);
                events = SyncerEvents::subscribe(&state);
                drop(state);
                tokio::time::sleep(backoff).await;
                first_scan = Duration::ZERO;
            }
        });
        self.state
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
        Ok(())
    }

    /// A write of `table`'s `partition` to `node` failed (its local write, if `node` is this
    /// node). A node counted down will be synced with when it comes back, but for one that
    /// counts as up (its connection dropped, its disk refused) nothing else would queue the
    /// partition, and the item would wait for the next full scan. So the partition is synced
    /// now: by this node if it stores it, else by a replica that does (told by `sync.missed`).
    pub fn missed_write(&self, table: &str, partition: u8, node: NodeId) {
        let me = self.id();
        let up: Vec<NodeId> = self
            .peers()
            .into_iter()
            .filter(|p| p.up)
            .map(|p| p.id)
            .collect();
        if node != me && !up.contains(&node) {
            return;
        }
        let holders = self
            .replication_of(table)
            .nodes_of(&self.layout(), partition);
        if holders.contains(&me) {
            self.queue_missed(table, partition);
            return;
        }
        let Some(relay) = holders.into_iter().find(|h| *h != node && up.contains(h)) else {
            return;
        };
        let (net, body) = (self.net().clone(), encode(&(table, partition)));
        tokio::spawn(async move {
            if let Err(e) = net.call(relay, "sync.missed", body).await {
                debug!(?relay, error = %e, "could not pass on a missed write");
            }
        });
    }

    /// Queues `partition` of `table` for its syncer, if this node stores it.
    fn queue_missed(&self, table: &str, partition: u8) {
        let me = self.id();
        let holders = self
            .replication_of(table)
            .nodes_of(&self.layout(), partition);
        if !holders.contains(&me) {
            return;
        }
        let added = self
            .state
            .missed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(table.to_string())
            .or_default()
            .insert(partition);
        if added {
            self.state.missed_tx.send_replace(());
        }
    }

    /// Asks the syncer of `table` (every table if `None`) for a full scan now; returns the
    /// tables asked.
    pub fn request_repair(&self, table: Option<&str>) -> Result<Vec<String>, String> {
        let tables: Vec<String> = match table {
            Some(t) => {
                self.table(t)?;
                vec![t.to_string()]
            }
            None => {
                let mut all: Vec<String> = self
                    .state
                    .tables
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .keys()
                    .cloned()
                    .collect();
                all.sort();
                all
            }
        };
        for t in &tables {
            let _ = self.state.repair_tx.send(t.clone());
        }
        Ok(tables)
    }

    /// Counters of every table's syncer, with the recent rate and the time left.
    pub fn syncer_stats(&self) -> HashMap<String, SyncerStats> {
        let mut stats = self
            .state
            .syncer_stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut done = self
            .state
            .completions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (table, s) in stats.iter_mut() {
            let recent = done.entry(table.clone()).or_default();
            while recent
                .front()
                .is_some_and(|t| t.elapsed() > Duration::from_secs(60))
            {
                recent.pop_front();
            }
            // Over the last minute, or since the first completion if more recent.
            let window = recent
                .front()
                .map_or(60.0, |t| t.elapsed().as_secs_f64().clamp(1.0, 60.0));
            s.rate_per_sec = recent.len() as f64 / window;
            let left = s.queued + s.in_progress;
            s.eta_secs = (left > 0 && s.rate_per_sec > 0.0)
                .then(|| (left as f64 / s.rate_per_sec).ceil() as u64);
        }
        stats
    }

    /// Every registered table.
    fn tables(&self) -> Vec<Arc<dyn SyncTable>> {
        self.state
            .tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Items stored here, per table.
    pub fn table_sizes(&self) -> BTreeMap<String, u64> {
        let tables = self.tables();
        tables
            .into_iter()
            .map(|t| (t.name().to_string(), t.item_count().unwrap_or(0)))
            .collect()
    }

    /// This node's RPC metrics.
    pub fn net_metrics(&self) -> shoal_net::NetMetrics {
        self.net().metrics().clone()
    }

    fn completed(&self, table: &str) {
        self.state
            .completions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(table.to_string())
            .or_default()
            .push_back(Instant::now());
    }

    fn bump(&self, table: &str, f: impl FnOnce(&mut SyncerStats)) {
        let mut all = self
            .state
            .syncer_stats
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        f(all.entry(table.to_string()).or_default());
    }

    fn set_queued(&self, table: &str, n: usize) {
        self.bump(table, |s| s.queued = n as u64);
    }

    /// One piece of work. `Ok(false)`: not finished, queue it again.
    async fn process(
        &self,
        table: &str,
        t: &Arc<dyn SyncTable>,
        w: crate::worklist::Work,
    ) -> Result<Processed, String> {
        // Every node of the partition in a live layout version: during a change, the new
        // replicas pull from the old ones through these sessions.
        let union = self.sync_nodes(table, w.partition);
        if union.contains(&self.id()) {
            let mut others: Vec<NodeId> = union.into_iter().filter(|n| *n != self.id()).collect();
            // One replica after the other, not all at once: what the first session brings is
            // then already here when the second compares digests, so a missed item crosses the
            // network once instead of once per replica (catch-up bytes halve with 3 replicas).
            // Partitions still sync in parallel, so the time barely changes. The starting
            // replica rotates with the partition to spread the work over the peers.
            if !others.is_empty() {
                let k = w.partition as usize % others.len();
                others.rotate_left(k);
            }
            let mut failed = Vec::new();
            let mut reached = vec![self.id()];
            for peer in others.clone() {
                match self.sync_with(peer, table, w.partition).await {
                    Ok(tr) => {
                        reached.push(peer);
                        self.bump(table, |s| {
                            s.items_received += tr.a.items_received;
                            s.items_sent += tr.a.items_sent;
                            s.bytes_sent += tr.bytes_a_to_b;
                            s.bytes_received += tr.bytes_b_to_a;
                            s.wire_bytes += tr.wire_bytes;
                            s.sessions += 1;
                        })
                    }
                    Err(e) => {
                        failed.push(peer);
                        debug!(table, partition = w.partition, error = %e, "sync with a replica failed");
                    }
                }
            }
            // In every live version's node set, enough nodes were reached that any write quorum
            // of that set intersects them: every acknowledged write is now here.
            for nodes in self.write_sets(table, w.partition) {
                let needed = self
                    .quorums(table, nodes.len())
                    .to_see_every_write(nodes.len());
                let got = nodes.iter().filter(|n| reached.contains(n)).count();
                if got < needed {
                    return Err(format!(
                        "{} of {} replicas failed: reached {got} of the {needed} needed in a layout version's {} nodes",
                        failed.len(),
                        others.len(),
                        nodes.len()
                    ));
                }
            }
            self.bump(table, |s| s.synced += 1);
            // A replica counted down is synced with when it comes back; nothing else would
            // bring this partition to one that counts as up.
            let up: Vec<NodeId> = self
                .peers()
                .into_iter()
                .filter(|p| p.up)
                .map(|p| p.id)
                .collect();
            let lagging = failed.iter().filter(|n| up.contains(n)).count();
            return Ok(if lagging > 0 {
                Processed::ReplicasLag(lagging)
            } else {
                Processed::Done
            });
        }
        // Offload: this node no longer stores the partition.
        let t2 = t.clone();
        let snapshot = self
            .blocking_sync(table, move || t2.scan_partition(w.partition))
            .await
            .map_err(|e| e.to_string())??;
        if snapshot.is_empty() {
            return Ok(Processed::Done);
        }
        let nodes = self.nodes_for(table, w.partition);
        if nodes.is_empty() {
            return Err("no node stores the partition: nowhere to offload".into());
        }
        for owner in &nodes {
            let tr = self
                .push_to(*owner, table, w.partition)
                .await
                .map_err(|e| format!("offload to {owner:?}: {e}"))?;
            self.bump(table, |s| {
                s.items_sent += tr.a.items_sent;
                s.bytes_sent += tr.bytes_a_to_b;
                s.bytes_received += tr.bytes_b_to_a;
                s.wire_bytes += tr.wire_bytes;
                s.sessions += 1;
            });
        }
        // The partition may have become ours again meanwhile: then keep everything.
        if self.sync_nodes(table, w.partition).contains(&self.id()) {
            return Ok(Processed::Done);
        }
        let t2 = t.clone();
        let left = self
            .blocking_sync(table, move || {
                t2.delete_if_unchanged(snapshot)?;
                t2.has_data(w.partition)
            })
            .await
            .map_err(|e| e.to_string())??;
        if left {
            // Written to while we offloaded: go round again.
            return Ok(Processed::Again);
        }
        info!(table, partition = w.partition, "partition offloaded");
        self.bump(table, |s| s.offloaded += 1);
        Ok(Processed::Done)
    }
}
