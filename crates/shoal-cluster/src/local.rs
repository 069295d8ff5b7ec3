//! A cluster of real nodes in one process ([`LocalCluster`]): each on loopback TCP with its
//! own key and on-disk store under one directory, found from the first node's address, with a
//! layout of every node in a zone of its own applied. For examples, tests, and trying Shoal as
//! a library before deploying one process per machine.

use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_net::{ClusterSecret, IdentityError, NetConfig, NodeKey, TcpTransport};
use shoal_storage::{OpenError, Store};

use crate::layout::{Layout, LayoutError, NodeRole};
use crate::node::{Node, NodeConfig};

/// Why a local cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalClusterError {
    /// A node's directory could not be made.
    #[error("cannot create {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A node's key could not be loaded or created.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A node's store could not be opened.
    #[error(transparent)]
    Store(#[from] OpenError),
    /// A node could not listen on loopback.
    #[error("a node cannot listen: {0}")]
    Listen(std::io::Error),
    /// The layout cannot be computed (a replication factor above the node count).
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The nodes did not all see each other, or the layout, in time.
    #[error("the local cluster did not form within {0:?}")]
    NotFormed(Duration),
}

/// One node of a [`LocalCluster`]: the running node and its store.
pub struct LocalNode {
    /// The node.
    pub node: Node<TcpTransport>,
    /// Its store, where tables declared with [`Node::open_table`] live.
    pub store: Store,
}

/// Nodes in one process, formed into a cluster with a layout applied.
pub struct LocalCluster {
    nodes: Vec<LocalNode>,
}

/// How long forming may take before [`LocalCluster::start`] gives up.
const FORM_TIMEOUT: Duration = Duration::from_secs(20);

impl LocalCluster {
    /// Starts `nodes` nodes under `dir` (`dir/node1`, `dir/node2`...; their keys and stores
    /// are kept there, so a second start with the same directory is the same cluster), waits
    /// until each sees every other, and applies a layout with `replication_factor` replicas
    /// of each partition, every node in a zone of its own with the same capacity.
    pub async fn start(
        dir: &Path,
        nodes: usize,
        replication_factor: usize,
    ) -> Result<Self, LocalClusterError> {
        // The secret is kept beside the nodes, so that a restart rejoins the same cluster.
        let secret_path = dir.join("cluster.secret");
        let secret = match std::fs::read_to_string(&secret_path) {
            Ok(hex) => ClusterSecret::from_hex(hex.trim())?,
            Err(_) => {
                let bytes = *blake3::hash(&NodeKey::generate().node_id().0).as_bytes();
                let secret = ClusterSecret::from_bytes(bytes);
                std::fs::create_dir_all(dir).map_err(|source| LocalClusterError::Dir {
                    path: dir.to_path_buf(),
                    source,
                })?;
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                std::fs::write(&secret_path, hex).map_err(|source| LocalClusterError::Dir {
                    path: secret_path.clone(),
                    source,
                })?;
                secret
            }
        };
        let mut started: Vec<LocalNode> = Vec::with_capacity(nodes);
        for i in 1..=nodes {
            let node_dir = dir.join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir).map_err(|source| LocalClusterError::Dir {
                path: node_dir.clone(),
                source,
            })?;
            let key = NodeKey::load_or_create(&node_dir)?;
            let store = Store::open(node_dir.join("db.redb"))?;
            let bootstrap = started
                .first()
                .map(|n| vec![n.node.public_addr()])
                .unwrap_or_default();
            let config = NodeConfig {
                bootstrap,
                heartbeat: Duration::from_millis(100),
                system_store: Some(store.clone()),
                net: NetConfig {
                    handshake_timeout: Duration::from_millis(500),
                    ..NetConfig::default()
                },
                ..NodeConfig::default()
            };
            let node = Node::start(
                key,
                secret.clone(),
                TcpTransport::default(),
                "127.0.0.1:0",
                config,
                Layout::empty(replication_factor),
            )
            .await
            .map_err(LocalClusterError::Listen)?;
            started.push(LocalNode { node, store });
        }
        let cluster = LocalCluster { nodes: started };
        cluster
            .wait(|| {
                cluster
                    .nodes
                    .iter()
                    .all(|n| n.node.peers().iter().filter(|p| p.up).count() + 1 >= nodes)
            })
            .await?;
        let first = &cluster.nodes[0].node;
        if first.layout().roles.len() != nodes {
            let roles = cluster
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let role = NodeRole {
                        zone: format!("zone{}", i + 1),
                        capacity: Some(1),
                    };
                    (n.node.id(), role)
                })
                .collect();
            let (layout, _) = Layout::empty(replication_factor).apply(roles)?;
            first.set_layout(layout).await;
        }
        let version = first.layout().version;
        cluster
            .wait(|| {
                cluster
                    .nodes
                    .iter()
                    .all(|n| n.node.layout().version == version)
            })
            .await?;
        Ok(cluster)
    }

    async fn wait(&self, done: impl Fn() -> bool) -> Result<(), LocalClusterError> {
        let deadline = tokio::time::Instant::now() + FORM_TIMEOUT;
        while !done() {
            if tokio::time::Instant::now() > deadline {
                return Err(LocalClusterError::NotFormed(FORM_TIMEOUT));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The nodes, in the order they started.
    pub fn nodes(&self) -> &[LocalNode] {
        &self.nodes
    }

    /// Closes every node, checkpointing its tables' indexes.
    pub async fn close(self) {
        for n in self.nodes {
            n.node.close().await;
        }
    }
}
