//! The background syncer's work list: which partitions to sync or offload next. Pure logic;
//! randomness comes from a seed.

use std::collections::BTreeMap;

use shoal_table::crdt::NodeId;

use crate::layout::{Layout, PARTITIONS};

/// One piece of work: sync a partition this node stores, or offload one it no longer stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    /// The partition.
    pub partition: u8,
    /// Whether this node stores it (sync) or not (offload).
    pub retain: bool,
}

/// How a table is spread over the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Replication {
    /// Each partition on its `replication_factor` nodes of the layout.
    #[default]
    Sharded,
    /// Every partition on every node of the layout (small system tables).
    Full,
}

impl Replication {
    /// The nodes storing partition `p` under `layout`.
    pub fn nodes_of(self, layout: &Layout, p: u8) -> Vec<NodeId> {
        match self {
            Replication::Sharded => layout.nodes_of(p).to_vec(),
            Replication::Full => layout.all_nodes(),
        }
    }
}

/// Partitions waiting to be synced or offloaded, popped in random order.
#[derive(Debug, Clone)]
pub struct WorkList {
    todo: BTreeMap<u8, bool>,
    rng: u64,
    replication: Replication,
}

impl WorkList {
    /// An empty list for a table replicated as `replication`, whose random order derives from
    /// `seed`.
    pub fn new(seed: u64, replication: Replication) -> Self {
        WorkList {
            todo: BTreeMap::new(),
            rng: seed | 1,
            replication,
        }
    }

    /// Pending partitions.
    pub fn len(&self) -> usize {
        self.todo.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.todo.is_empty()
    }

    /// Replaces the list with every partition this node stores, plus those it does not store
    /// but still holds data of (`holds_data`).
    pub fn full_scan(&mut self, layout: &Layout, me: NodeId, holds_data: impl Fn(u8) -> bool) {
        self.todo.clear();
        for p in 0..PARTITIONS {
            let p = p as u8;
            let retain = self.replication.nodes_of(layout, p).contains(&me);
            if retain || holds_data(p) {
                self.todo.insert(p, retain);
            }
        }
    }

    /// After a layout change: queues every partition whose nodes changed and that involves this
    /// node (it gains, keeps alongside new peers, or loses it); pending work is kept with its
    /// role updated. If this node joined or left the layout, everything is rescanned.
    pub fn layout_changed(
        &mut self,
        old: &Layout,
        new: &Layout,
        me: NodeId,
        holds_data: impl Fn(u8) -> bool,
    ) {
        if old.roles.contains_key(&me) != new.roles.contains_key(&me) {
            self.full_scan(new, me, holds_data);
            return;
        }
        for p in 0..PARTITIONS {
            let p = p as u8;
            let (was, is) = (
                self.replication.nodes_of(old, p),
                self.replication.nodes_of(new, p),
            );
            let retain = is.contains(&me);
            let involved = retain || was.contains(&me);
            if (involved && was != is) || self.todo.contains_key(&p) {
                self.todo.insert(p, retain);
            }
        }
    }

    /// A peer (re)appeared: queue at once the partitions this node shares with it, so it
    /// catches up now rather than at the next full scan.
    pub fn peer_up(&mut self, layout: &Layout, me: NodeId, peer: NodeId) {
        for p in 0..PARTITIONS {
            let p = p as u8;
            let nodes = self.replication.nodes_of(layout, p);
            if nodes.contains(&me) && nodes.contains(&peer) {
                self.todo.insert(p, true);
            }
        }
    }

    /// Puts a piece of work back (after a failure, or an offload not finished).
    pub fn push(&mut self, w: Work) {
        self.todo.insert(w.partition, w.retain);
    }

    /// Takes a random pending piece of work.
    pub fn pop(&mut self) -> Option<Work> {
        if self.todo.is_empty() {
            return None;
        }
        // xorshift64*: deterministic for a seed, good enough to spread the order.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let i = (r % self.todo.len() as u64) as usize;
        let (&partition, &retain) = self.todo.iter().nth(i).expect("index in range");
        self.todo.remove(&partition);
        Some(Work { partition, retain })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::NodeRole;

    fn id(i: u8) -> NodeId {
        NodeId([i; 32])
    }

    fn layout(nodes: &[u8], rf: usize) -> Layout {
        let roles = nodes
            .iter()
            .map(|&i| {
                (
                    id(i),
                    NodeRole {
                        zone: format!("z{i}"),
                        capacity: Some(1),
                    },
                )
            })
            .collect();
        Layout::empty(rf).apply(roles).unwrap().0
    }

    #[test]
    fn full_scan_takes_stored_partitions_and_stray_data() {
        let l = layout(&[1, 2, 3, 4], 2);
        let mut w = WorkList::new(1, Replication::Sharded);
        w.full_scan(&l, id(1), |p| p == 7 || p == 8);
        let mine = l.partitions_of(id(1));
        let mut expected: Vec<u8> = mine.clone();
        for p in [7u8, 8] {
            if !mine.contains(&p) {
                expected.push(p);
            }
        }
        assert_eq!(w.len(), expected.len());
        let mut seen = Vec::new();
        while let Some(x) = w.pop() {
            assert_eq!(x.retain, mine.contains(&x.partition));
            seen.push(x.partition);
        }
        seen.sort();
        expected.sort();
        assert_eq!(seen, expected, "each partition popped once");
    }

    #[test]
    fn layout_change_queues_what_changed_for_this_node() {
        let old = layout(&[1, 2, 3], 2);
        let roles = {
            let mut r = old.roles.clone();
            r.insert(
                id(4),
                NodeRole {
                    zone: "z4".into(),
                    capacity: Some(1),
                },
            );
            r
        };
        let new = old.apply(roles).unwrap().0;
        let mut w = WorkList::new(2, Replication::Sharded);
        w.layout_changed(&old, &new, id(1), |_| false);
        let mut queued = Vec::new();
        while let Some(x) = w.pop() {
            queued.push(x);
        }
        assert!(!queued.is_empty());
        for x in &queued {
            let p = x.partition;
            assert_ne!(old.nodes_of(p), new.nodes_of(p));
            assert!(old.nodes_of(p).contains(&id(1)) || new.nodes_of(p).contains(&id(1)));
            assert_eq!(x.retain, new.nodes_of(p).contains(&id(1)));
        }
        // Node 4 joined: on node 4 itself, a full scan.
        let mut w4 = WorkList::new(3, Replication::Sharded);
        w4.layout_changed(&old, &new, id(4), |_| false);
        assert_eq!(w4.len(), new.partitions_of(id(4)).len());
    }

    #[test]
    fn a_fully_replicated_table_is_everywhere() {
        let l = layout(&[1, 2, 3, 4], 2);
        let mut w = WorkList::new(5, Replication::Full);
        w.full_scan(&l, id(3), |_| false);
        assert_eq!(w.len(), 256);
        while let Some(x) = w.pop() {
            assert!(x.retain);
        }
    }

    #[test]
    fn peer_up_queues_shared_partitions() {
        let l = layout(&[1, 2, 3, 4], 2);
        let mut w = WorkList::new(4, Replication::Sharded);
        w.peer_up(&l, id(1), id(2));
        let shared = (0..=255u8)
            .filter(|&p| l.nodes_of(p).contains(&id(1)) && l.nodes_of(p).contains(&id(2)))
            .count();
        assert_eq!(w.len(), shared);
    }
}
