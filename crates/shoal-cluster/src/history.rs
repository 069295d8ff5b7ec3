//! Layout history: the layout versions still live during a change, and how far each node has
//! synced, so that no acknowledged write becomes invisible to a quorum read while partitions
//! move.
//!
//! A write must reach a write quorum in the node set of *every* live version; a read asks the
//! *read version*: the newest version all of whose storage nodes report having synced it (or,
//! while none has, the oldest live one). Once every storage node of a newer version has synced
//! it, the versions before it retire. Pure: no I/O, directly tested.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use shoal_net::NodeId;

use crate::layout::Layout;

/// Live layout versions, oldest first, and the highest version each node has fully synced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayoutHistory {
    /// Live versions, ascending. Layouts without any role are never live.
    pub versions: Vec<Layout>,
    /// Node → the highest version whose data it has finished syncing.
    pub synced: BTreeMap<NodeId, u64>,
    /// Node → the highest version it *acknowledged*: it knows it, and no write it coordinates
    /// was started without it. Syncing for a version counts only from a pass that began once
    /// every node acknowledged it, so no write lands on old replicas behind a finished sync.
    #[serde(default)]
    pub acked: BTreeMap<NodeId, u64>,
    /// Node → the highest version for which it holds nothing outside what it stores in that
    /// version (everything else offloaded). A tombstone may be collected without asking a node
    /// that is not its replica only if that node has offloaded up to the current version.
    #[serde(default)]
    pub offloaded: BTreeMap<NodeId, u64>,
    /// Nodes that left the layout → the version without them, until they report having
    /// offloaded up to it: until then they may still hold copies nobody else checks.
    #[serde(default)]
    pub departed: BTreeMap<NodeId, u64>,
    /// Nodes that left the layout and that an operator declared lost (`shoal layout forget`):
    /// nothing waits for their offload any more, and their sync sessions are refused, so the
    /// copies they may still hold cannot bring a collected deletion back. Spread by heartbeats.
    #[serde(default)]
    pub forgotten: BTreeSet<NodeId>,
}

/// Why a node cannot be forgotten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgetError {
    /// The node still has a role in the newest layout: remove it first.
    #[error("node {0} still has a role in the layout: remove it and apply first")]
    InLayout(NodeId),
    /// The node answers heartbeats: it hands its copies off by itself.
    #[error("node {0} is up and hands its copies off by itself: forget only a node that is gone")]
    Up(NodeId),
}

impl LayoutHistory {
    /// Adds the layout a node just adopted if it is newer than every live version; returns
    /// whether it did. A layout of the newest version with other content (two changes applied
    /// concurrently, settled by `Layout::merge`) replaces it.
    pub fn push(&mut self, layout: &Layout) -> bool {
        if layout.roles.is_empty() {
            return false;
        }
        if let Some(last) = self.versions.last_mut() {
            if last.version > layout.version || last == layout {
                return false;
            }
            if last.version == layout.version {
                *last = layout.clone();
                return true;
            }
        }
        if let Some(last) = self.versions.last() {
            for n in last.roles.keys() {
                if !layout.roles.contains_key(n) && !self.forgotten.contains(n) {
                    self.departed.insert(*n, layout.version);
                }
            }
        }
        for n in layout.roles.keys() {
            self.departed.remove(n);
            // Given a role again: a member like any other (an operator who forgot it and
            // brings it back with the same key chose to).
            self.forgotten.remove(n);
        }
        self.versions.push(layout.clone());
        true
    }

    /// The newest version.
    pub fn current(&self) -> Option<&Layout> {
        self.versions.last()
    }

    /// Records that `node` has synced everything up to `version` (never goes back).
    pub fn record_synced(&mut self, node: NodeId, version: u64) {
        let v = self.synced.entry(node).or_default();
        *v = (*v).max(version);
    }

    /// Records that `node` has offloaded up to `version` (never goes back).
    pub fn record_offloaded(&mut self, node: NodeId, version: u64) {
        let v = self.offloaded.entry(node).or_default();
        *v = (*v).max(version);
        let done = *v;
        if self.departed.get(&node).is_some_and(|d| done >= *d) {
            self.departed.remove(&node);
        }
    }

    /// Declares `node`, which left the layout, lost: collection stops waiting for its offload.
    /// Returns whether anything changed.
    pub fn forget(&mut self, node: NodeId) -> Result<bool, ForgetError> {
        if self.current().is_some_and(|l| l.roles.contains_key(&node)) {
            return Err(ForgetError::InLayout(node));
        }
        let was_departed = self.departed.remove(&node).is_some();
        Ok(self.forgotten.insert(node) || was_departed)
    }

    /// Adopts the nodes another node has forgotten, except any that has a role in this node's
    /// newest layout (its layout may be newer than theirs); returns whether anything changed.
    pub fn absorb_forgotten(&mut self, nodes: &[NodeId]) -> bool {
        let mut changed = false;
        for n in nodes {
            changed |= self.forget(*n).unwrap_or(false);
        }
        changed
    }

    /// Records that `node` acknowledged `version` (never goes back).
    pub fn record_acked(&mut self, node: NodeId, version: u64) {
        let v = self.acked.entry(node).or_default();
        *v = (*v).max(version);
    }

    /// Whether every node of the newest version (gateways included: they coordinate writes)
    /// acknowledged it.
    pub fn all_acked(&self, version: u64) -> bool {
        self.versions
            .iter()
            .find(|l| l.version == version)
            .is_some_and(|l| {
                l.roles
                    .keys()
                    .all(|n| self.acked.get(n).is_some_and(|v| *v >= version))
            })
    }

    /// Whether every storage node of `layout` has synced it.
    fn fully_synced(&self, layout: &Layout) -> bool {
        layout
            .roles
            .keys()
            .all(|n| self.synced.get(n).is_some_and(|v| *v >= layout.version))
    }

    /// The index of the read version in `versions`.
    fn read_index(&self) -> Option<usize> {
        if self.versions.is_empty() {
            return None;
        }
        Some(
            (0..self.versions.len())
                .rev()
                .find(|&i| self.fully_synced(&self.versions[i]))
                .unwrap_or(0),
        )
    }

    /// The version reads use.
    pub fn read_version(&self) -> Option<&Layout> {
        self.read_index().map(|i| &self.versions[i])
    }

    /// Retires the versions older than the read version; returns them.
    pub fn prune(&mut self) -> Vec<Layout> {
        match self.read_index() {
            Some(i) if i > 0 => self.versions.drain(..i).collect(),
            _ => Vec::new(),
        }
    }

    /// Whether a change is in progress (more than one live version).
    pub fn in_transition(&self) -> bool {
        self.versions.len() > 1
    }

    /// The node sets a write of partition `p` must reach a quorum in, one per live version
    /// (identical sets once), as `nodes_of` gives them for a version.
    pub fn write_sets(&self, nodes_of: impl Fn(&Layout) -> Vec<NodeId>) -> Vec<Vec<NodeId>> {
        let mut sets: Vec<Vec<NodeId>> = Vec::new();
        for l in &self.versions {
            let mut s = nodes_of(l);
            s.sort();
            if !s.is_empty() && !sets.contains(&s) {
                sets.push(s);
            }
        }
        sets
    }

    /// The nodes a read asks.
    pub fn read_set(&self, nodes_of: impl Fn(&Layout) -> Vec<NodeId>) -> Vec<NodeId> {
        self.read_version().map(nodes_of).unwrap_or_default()
    }

    /// Every node holding or due to hold the partition in a live version: a node syncs its
    /// partitions with all of them.
    pub fn union(&self, nodes_of: impl Fn(&Layout) -> Vec<NodeId>) -> Vec<NodeId> {
        let mut all: Vec<NodeId> = self.versions.iter().flat_map(&nodes_of).collect();
        all.sort();
        all.dedup();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::NodeRole;

    fn id(b: u8) -> NodeId {
        NodeId([b; 32])
    }

    fn layout(version: u64, nodes: &[u8]) -> Layout {
        let mut l = Layout::empty(2);
        for n in nodes {
            l.roles.insert(
                id(*n),
                NodeRole {
                    zone: format!("z{n}"),
                    capacity: Some(1),
                },
            );
        }
        l.version = version;
        l.assignment = vec![nodes.iter().map(|n| id(*n)).take(2).collect(); 256];
        l
    }

    #[test]
    fn reads_stay_on_the_old_version_until_every_new_node_has_synced() {
        let mut h = LayoutHistory::default();
        assert!(!h.push(&Layout::empty(2)), "an empty layout is never live");
        assert!(h.push(&layout(1, &[1, 2])));
        assert!(h.push(&layout(2, &[3, 4])));
        assert!(
            !h.push(&layout(2, &[3, 4])),
            "the same layout twice is one version"
        );
        assert!(!h.push(&layout(1, &[1, 2])), "versions only go forward");
        assert!(
            h.push(&layout(2, &[3, 5])),
            "a concurrent version 2 that won the merge"
        );
        assert!(h.push(&layout(2, &[3, 4])));
        assert_eq!(h.versions.len(), 2);
        let nodes = |l: &Layout| l.nodes_of(0).to_vec();
        assert_eq!(h.read_version().unwrap().version, 1);
        assert_eq!(
            h.write_sets(nodes),
            vec![vec![id(1), id(2)], vec![id(3), id(4)]]
        );
        assert_eq!(h.union(nodes).len(), 4);

        h.record_synced(id(3), 2);
        assert_eq!(
            h.read_version().unwrap().version,
            1,
            "node 4 has not synced"
        );
        assert!(h.prune().is_empty());
        h.record_synced(id(4), 2);
        h.record_synced(id(4), 1);
        assert_eq!(h.synced[&id(4)], 2, "synced versions never go back");
        assert_eq!(h.read_version().unwrap().version, 2);
        assert_eq!(h.read_set(nodes), vec![id(3), id(4)]);
        assert_eq!(h.prune().len(), 1);
        assert!(!h.in_transition());
        assert_eq!(h.write_sets(nodes), vec![vec![id(3), id(4)]]);
    }

    #[test]
    fn a_forgotten_node_is_no_longer_waited_for_until_it_gets_a_role_again() {
        let mut h = LayoutHistory::default();
        h.push(&layout(1, &[1, 2, 3]));
        assert_eq!(h.forget(id(3)), Err(ForgetError::InLayout(id(3))));
        h.push(&layout(2, &[1, 2]));
        assert_eq!(h.departed.get(&id(3)), Some(&2));
        assert_eq!(h.forget(id(3)), Ok(true));
        assert!(h.departed.is_empty(), "collection no longer waits for it");
        assert_eq!(
            h.forget(id(3)),
            Ok(false),
            "forgetting twice changes nothing"
        );
        // Another change: a forgotten node does not become departed again.
        h.push(&layout(3, &[1, 2, 4]));
        assert!(h.departed.is_empty());
        // Heartbeats spread it; a node whose newest layout gives it a role keeps it.
        let mut other = LayoutHistory::default();
        other.push(&layout(1, &[1, 2, 3]));
        other.push(&layout(2, &[1, 2]));
        assert!(other.absorb_forgotten(&[id(3)]));
        assert!(other.departed.is_empty() && other.forgotten.contains(&id(3)));
        let mut newer = LayoutHistory::default();
        newer.push(&layout(5, &[1, 3]));
        assert!(!newer.absorb_forgotten(&[id(3)]));
        assert!(newer.forgotten.is_empty());
        // Given a role again, it is a member like any other.
        h.push(&layout(4, &[1, 2, 3]));
        assert!(h.forgotten.is_empty());
    }

    #[test]
    fn a_node_that_left_stays_departed_until_it_has_offloaded() {
        let mut h = LayoutHistory::default();
        h.push(&layout(1, &[1, 2, 3]));
        h.push(&layout(2, &[1, 2]));
        assert_eq!(h.departed.get(&id(3)), Some(&2));
        h.record_offloaded(id(3), 1);
        assert!(
            h.departed.contains_key(&id(3)),
            "offloaded only up to version 1"
        );
        h.record_offloaded(id(3), 2);
        assert!(h.departed.is_empty());
        // Coming back into the layout also ends it.
        h.push(&layout(3, &[1, 2]));
        h.push(&layout(4, &[1]));
        h.push(&layout(5, &[1, 2]));
        assert!(h.departed.is_empty());
    }

    #[test]
    fn a_version_synced_ahead_of_an_older_one_is_read_at_once() {
        let mut h = LayoutHistory::default();
        for v in 1..=3 {
            h.push(&layout(v, &[v as u8, 10]));
        }
        // Nodes of version 3 synced it; version 2's did not: version 3 is read, 1 and 2 retire.
        h.record_synced(id(3), 3);
        h.record_synced(id(10), 3);
        assert_eq!(h.read_version().unwrap().version, 3);
        assert_eq!(h.prune().len(), 2);
    }
}
