//! A node's life: started (listening, heartbeating), shut down, closed with a checkpoint of
//! every table's index.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};
use shoal_net::{ClusterSecret, Network, NodeKey, Transport};
use tracing::{info, warn};

use super::dispatch::NodeHandler;
use super::error::NodeError;
use super::layout_state::{HISTORY_KEY, SYSTEM_TREE};
use super::state::{Node, NodeConfig, Staged, State};
use crate::layout::Layout;

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
        let id_key = shoal_sync::ids::IdKey::derive(secret.as_bytes());
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
                probe_order: Mutex::new((Vec::new(), 0)),
                last_probe: Mutex::new(None),
                id_key,
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
            *node.state.public_addr.write() = bound.to_string();
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
        node.state.tasks.lock().push(task);
        info!(node = ?id, addr = %bound, "node started");
        Ok(node)
    }

    /// Stops the node: heartbeats, listener and every connection.
    pub fn shutdown(&self) {
        for t in self.state.tasks.lock().drain(..) {
            t.abort();
        }
        self.net().shutdown();
    }

    /// Stops the node ([`Node::shutdown`]) and checkpoints every registered table, so that the
    /// next start rebuilds no partition index. Returns the tables whose checkpoint failed (the
    /// next start rebuilds their written partitions; nothing is lost).
    pub async fn close(&self) -> Vec<(String, NodeError)> {
        self.shutdown();
        let tables = self.tables();
        let mut failed = Vec::new();
        for t in tables {
            let name = t.name().to_string();
            let r = self
                .blocking(move || t.checkpoint())
                .await
                .map_err(NodeError::from)
                .and_then(|r| r.map_err(NodeError::from));
            if let Err(e) = r {
                warn!(table = %name, error = %e, "index checkpoint at shutdown failed; the next start rebuilds");
                failed.push((name, e));
            }
        }
        failed
    }
}
