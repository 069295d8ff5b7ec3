//! A test node: a cluster node over loopback TCP with an on-disk store and one table of the
//! test's schema, declared with [`Node::open_table`] (no syncer, no collector: the test
//! starts them when it wants them).

use std::time::Duration;

use shoal_cluster::layout::Layout;
use shoal_cluster::node::{Node, NodeConfig};
use shoal_cluster::tables::{ReplicatedTable, TableOptions};
use shoal_net::{ClusterSecret, NetConfig, NodeKey, TcpTransport};
use shoal_storage::Store;
use shoal_table::{Schema, Table};

/// How a [`TestNode`] starts.
pub struct TestNodeConfig {
    /// Addresses of nodes already running.
    pub bootstrap: Vec<String>,
    /// Where it listens (`127.0.0.1:0`: any port).
    pub bind: String,
    /// Missed heartbeats (of 100 ms) before a peer counts as down.
    pub down_after: u32,
    /// Timeout of each RPC call (`None`: the transport's default).
    pub call_timeout: Option<Duration>,
    /// Keep the layout and staged changes in the store across restarts.
    pub persist_state: bool,
    /// Replicas of each partition in the node's empty layout.
    pub replication_factor: usize,
}

impl Default for TestNodeConfig {
    fn default() -> Self {
        TestNodeConfig {
            bootstrap: Vec::new(),
            bind: "127.0.0.1:0".into(),
            down_after: 3,
            call_timeout: None,
            persist_state: false,
            replication_factor: 3,
        }
    }
}

/// A running test node and what it stands on.
pub struct TestNode<S: Schema> {
    /// The node.
    pub node: Node<TcpTransport>,
    /// Its table, this replica's copy (writes here bypass replication).
    pub table: Table<S>,
    /// The table, replicated through the node.
    pub replicated: ReplicatedTable<S, TcpTransport>,
    /// Its store.
    pub store: Store,
    /// Its directory (its key, and the store unless given): removed when the node is dropped.
    pub dir: tempfile::TempDir,
}

impl<S: Schema> TestNode<S> {
    /// A node in a fresh directory.
    pub async fn start(secret: &ClusterSecret, config: TestNodeConfig) -> Self {
        Self::start_in(
            tempfile::tempdir().expect("a temp dir"),
            None,
            secret,
            config,
        )
        .await
    }

    /// A node on `dir` (its key) and `store` (opened in `dir` if `None`): a restart when both
    /// were a stopped node's.
    pub async fn start_in(
        dir: tempfile::TempDir,
        store: Option<Store>,
        secret: &ClusterSecret,
        config: TestNodeConfig,
    ) -> Self {
        let key = NodeKey::load_or_create(dir.path()).expect("the node's key");
        let store =
            store.unwrap_or_else(|| Store::open(dir.path().join("db.redb")).expect("a store"));
        let mut net = NetConfig {
            handshake_timeout: Duration::from_millis(500),
            ..NetConfig::default()
        };
        if let Some(t) = config.call_timeout {
            net.call_timeout = t;
        }
        let node_config = NodeConfig {
            bootstrap: config.bootstrap,
            heartbeat: Duration::from_millis(100),
            down_after: config.down_after,
            net,
            system_store: config.persist_state.then(|| store.clone()),
            ..NodeConfig::default()
        };
        let node = Node::start(
            key,
            secret.clone(),
            TcpTransport::default(),
            &config.bind,
            node_config,
            Layout::empty(config.replication_factor),
        )
        .await
        .expect("the node starts");
        let options = TableOptions {
            syncer: None,
            gc: None,
            ..TableOptions::default()
        };
        let replicated = node
            .open_table::<S>(&store, options)
            .await
            .expect("the table opens");
        TestNode {
            table: replicated.local().clone(),
            replicated,
            node,
            store,
            dir,
        }
    }
}
