//! The node's layout and its history: the applied layout, the live versions and every node's
//! progress through them (synced, acknowledged, offloaded), the writes in flight that hold an
//! acknowledgement back, what is persisted across restarts, and the node sets and quorums
//! they give each partition.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use shoal_net::{NodeId, Transport};
use tracing::{info, warn};

use super::state::{Node, Staged};
use super::wire::encode;
use crate::layout::Layout;

pub(super) const SYSTEM_TREE: &str = "system~node";
pub(super) const LAYOUT_KEY: &[u8] = b"layout";
pub(super) const HISTORY_KEY: &[u8] = b"layout-history";
pub(super) const STAGED_KEY: &[u8] = b"staged";

/// Raises `table`'s version in a per-table progress map; returns whether it moved.
fn raise(map: &Mutex<HashMap<String, u64>>, table: &str, version: u64) -> bool {
    let mut m = map.lock();
    let v = m.entry(table.to_string()).or_default();
    let moved = *v < version;
    *v = (*v).max(version);
    moved
}

/// The lowest version in a per-table progress map (`None` without tables).
fn lowest(map: &Mutex<HashMap<String, u64>>) -> Option<u64> {
    map.lock().values().copied().min()
}

/// A write being coordinated (see [`Node::begin_write`]).
pub struct WriteInFlight {
    inflight: Arc<Mutex<BTreeMap<u64, usize>>>,
    version: u64,
}

impl Drop for WriteInFlight {
    fn drop(&mut self) {
        let mut m = self.inflight.lock();
        if let Some(n) = m.get_mut(&self.version) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.version);
            }
        }
    }
}

impl<T: Transport> Node<T> {
    /// The current layout.
    pub fn layout(&self) -> Layout {
        self.state.layout.read().clone()
    }

    /// Adopts `other` if it is newer, and persists it; returns whether it was adopted.
    pub(super) async fn merge_layout(&self, other: &Layout) -> bool {
        let adopted = {
            let mut l = self.state.layout.write();
            let before = l.clone();
            l.merge(other);
            *l != before
        };
        if adopted {
            let l = self.layout();
            let history = {
                let mut h = self.state.history.write();
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
        self.state.history.read().clone()
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
        let oldest = self.state.inflight.lock().keys().next().copied();
        let acked = oldest.map_or(current, |o| o.min(current));
        self.state.history.write().record_acked(self.id(), acked);
        acked
    }

    /// Registers a write this node coordinates, under the current layout version, until the
    /// guard drops.
    pub fn begin_write(&self) -> WriteInFlight {
        let version = self.layout().version;
        *self.state.inflight.lock().entry(version).or_default() += 1;
        WriteInFlight {
            inflight: self.state.inflight.clone(),
            version,
        }
    }

    /// A table's syncer has finished every piece of work up to layout `version`.
    pub(super) async fn table_done(&self, table: &str, version: u64) {
        if raise(&self.state.table_synced, table, version) {
            let id = self.id();
            self.note_synced(id, self.synced_version()).await;
        }
    }

    /// The highest layout version up to which this node holds nothing it does not store in
    /// that version (every table's syncer).
    pub fn offloaded_version(&self) -> u64 {
        let v = lowest(&self.state.table_offloaded).unwrap_or(self.layout().version);
        self.state.history.write().record_offloaded(self.id(), v);
        v
    }

    pub(super) fn table_offloaded(&self, table: &str, version: u64) {
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
            let mut h = self.state.history.write();
            h.forget(node)?.then(|| h.clone())
        };
        if let Some(history) = history {
            warn!(node = ?node, "node forgotten: its copies are no longer waited for");
            self.persist(HISTORY_KEY, &history).await;
        }
        Ok(())
    }

    pub(super) async fn absorb_forgotten(&self, nodes: &[NodeId]) {
        let history = {
            let mut h = self.state.history.write();
            h.absorb_forgotten(nodes).then(|| h.clone())
        };
        if let Some(history) = history {
            self.persist(HISTORY_KEY, &history).await;
        }
    }

    /// Records a node's sync progress; retires versions no longer needed.
    pub(super) async fn note_synced(&self, node: NodeId, version: u64) {
        let retired = {
            let mut h = self.state.history.write();
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
            .union(|l| replication.nodes_of(l, p))
    }

    pub(super) async fn persist<V: Serialize>(&self, key: &'static [u8], value: &V) {
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

    /// The replication factor of the current layout.
    pub fn replication_factor(&self) -> usize {
        self.state.layout.read().replication_factor
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
}
