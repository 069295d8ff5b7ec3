//! The cluster as one node sees it (`shoal status`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_net::{NodeId, Transport};

use super::state::Node;
use super::stats::SyncerStats;

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

impl<T: Transport> Node<T> {
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
}
