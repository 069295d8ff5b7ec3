//! The cluster layout and the assignment of partitions to nodes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use shoal_table::crdt::NodeId;

/// Ring partitions of every table.
pub const PARTITIONS: usize = 256;

/// What a node is in the layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRole {
    /// Failure domain (rack, room, site): a partition's replicas spread over zones, at most
    /// [`replicas_per_zone`] of them in any one.
    pub zone: String,
    /// Relative storage capacity; `None` for a gateway that stores nothing.
    pub capacity: Option<u64>,
}

/// Why a layout cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Fewer storage nodes than the replication factor.
    #[error(
        "replication factor {rf} needs at least {rf} storage nodes (each replica of a partition on its own node); the layout would have {nodes}"
    )]
    TooFewNodes {
        /// Storage nodes available.
        nodes: usize,
        /// Replication factor.
        rf: usize,
    },
    /// A replication factor of 0.
    #[error("the replication factor must be at least 1")]
    ZeroReplication,
    /// A storage node with capacity 0.
    #[error("node {0:?} has capacity 0; make it a gateway instead")]
    ZeroCapacity(NodeId),
}

/// An applied layout: roles, replication factor, and the nodes of every partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Increases by one with every applied change.
    pub version: u64,
    /// Replicas per partition.
    pub replication_factor: usize,
    /// Every node's role.
    pub roles: BTreeMap<NodeId, NodeRole>,
    /// For each partition, its nodes (exactly `replication_factor`, distinct).
    pub assignment: Vec<Vec<NodeId>>,
}

impl Layout {
    /// The empty layout (version 0): no node stores anything.
    pub fn empty(replication_factor: usize) -> Self {
        Layout {
            version: 0,
            replication_factor,
            roles: BTreeMap::new(),
            assignment: vec![Vec::new(); PARTITIONS],
        }
    }

    /// The nodes storing partition `p`.
    pub fn nodes_of(&self, p: u8) -> &[NodeId] {
        &self.assignment[p as usize]
    }

    /// Every node with a role, in id order: where a fully replicated table lives.
    pub fn all_nodes(&self) -> Vec<NodeId> {
        self.roles.keys().copied().collect()
    }

    /// Partitions stored by `node`.
    pub fn partitions_of(&self, node: NodeId) -> Vec<u8> {
        (0..PARTITIONS)
            .filter(|&p| self.assignment[p].contains(&node))
            .map(|p| p as u8)
            .collect()
    }

    /// Applies `roles` (the whole new set of roles) as the next version, moving as few
    /// partitions as possible. Returns the new layout and how many replicas moved.
    pub fn apply(&self, roles: BTreeMap<NodeId, NodeRole>) -> Result<(Layout, usize), LayoutError> {
        let assignment = assign(&self.assignment, &roles, self.replication_factor)?;
        let moved = moved_replicas(&self.assignment, &assignment);
        Ok((
            Layout {
                version: self.version + 1,
                replication_factor: self.replication_factor,
                roles,
                assignment,
            },
            moved,
        ))
    }

    /// The newer of two layouts (replication of the layout between nodes: last version wins;
    /// two different layouts of the same version are ordered by their encoding so every node
    /// picks the same).
    pub fn merge(&mut self, other: &Layout) {
        let newer = other.version > self.version
            || (other.version == self.version && other.fingerprint() > self.fingerprint());
        if newer {
            *self = other.clone();
        }
    }

    fn fingerprint(&self) -> Vec<u8> {
        rmp_fingerprint(self)
    }
}

fn rmp_fingerprint(l: &Layout) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, r) in &l.roles {
        out.extend_from_slice(&n.0);
        out.extend_from_slice(r.zone.as_bytes());
        out.extend_from_slice(&r.capacity.unwrap_or(0).to_be_bytes());
    }
    for nodes in &l.assignment {
        for n in nodes {
            out.extend_from_slice(&n.0);
        }
    }
    out
}

/// Replicas (partition, node) present in `new` but not in `old`.
pub fn moved_replicas(old: &[Vec<NodeId>], new: &[Vec<NodeId>]) -> usize {
    new.iter()
        .zip(old.iter().chain(std::iter::repeat(&Vec::new())))
        .map(|(n, o)| n.iter().filter(|x| !o.contains(x)).count())
        .sum()
}

/// Splits `total` in proportion to `weights`, no share above its `cap`: shares that would
/// exceed their cap are fixed at it and the rest is split among the others (water-filling).
fn water_fill<K: Ord + Clone>(weights: &BTreeMap<K, (f64, f64)>, total: f64) -> BTreeMap<K, f64> {
    let mut out = BTreeMap::new();
    let mut free: BTreeSet<K> = weights.keys().cloned().collect();
    let mut remaining = total;
    while !free.is_empty() {
        let weight: f64 = free.iter().map(|k| weights[k].0).sum();
        let capped: Vec<K> = free
            .iter()
            .filter(|k| remaining * weights[*k].0 / weight > weights[*k].1)
            .cloned()
            .collect();
        if capped.is_empty() {
            for k in &free {
                out.insert(k.clone(), remaining * weights[k].0 / weight);
            }
            break;
        }
        for k in capped {
            remaining -= weights[&k].1;
            out.insert(k.clone(), weights[&k].1);
            free.remove(&k);
        }
    }
    out
}

/// The most replicas of one partition that any zone may hold: the smallest number the zones'
/// storage nodes allow, so that a partition spreads over as many zones as it can (1 when there
/// are at least `rf` zones). Spreading even when zones are fewer than `rf` keeps a later
/// layout, with more zones, from having to move replicas between zones.
pub fn replicas_per_zone(roles: &BTreeMap<NodeId, NodeRole>, rf: usize) -> usize {
    let mut nodes_per_zone: BTreeMap<&str, usize> = BTreeMap::new();
    for r in roles.values().filter(|r| r.capacity.is_some()) {
        *nodes_per_zone.entry(r.zone.as_str()).or_default() += 1;
    }
    let largest = nodes_per_zone.values().copied().max().unwrap_or(0);
    (1..=largest.max(1))
        .find(|&m| nodes_per_zone.values().map(|&n| n.min(m)).sum::<usize>() >= rf)
        .unwrap_or(largest.max(1))
}

/// How many replicas each storage node should hold: proportional to capacity, but a node holds
/// at most one replica of each partition, and a zone at most [`replicas_per_zone`].
fn targets(roles: &BTreeMap<NodeId, NodeRole>, rf: usize) -> BTreeMap<NodeId, f64> {
    let storage: Vec<(NodeId, u64, &str)> = roles
        .iter()
        .filter_map(|(n, r)| r.capacity.map(|c| (*n, c, r.zone.as_str())))
        .collect();
    let zones: BTreeSet<&str> = storage.iter().map(|(_, _, z)| *z).collect();
    let per_partition = PARTITIONS as f64;
    let per_zone = replicas_per_zone(roles, rf) as f64;
    let mut zone_weights: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for (_, c, z) in &storage {
        let e = zone_weights.entry(z).or_insert((0.0, 0.0));
        e.0 += *c as f64;
        e.1 += per_partition;
    }
    for w in zone_weights.values_mut() {
        w.1 = w.1.min(per_partition * per_zone);
    }
    let zone_share = water_fill(&zone_weights, (PARTITIONS * rf) as f64);
    let mut out = BTreeMap::new();
    for z in zones {
        let nodes: BTreeMap<NodeId, (f64, f64)> = storage
            .iter()
            .filter(|(_, _, nz)| *nz == z)
            .map(|(n, c, _)| (*n, (*c as f64, per_partition)))
            .collect();
        out.extend(water_fill(&nodes, zone_share[z]));
    }
    out
}

/// Assigns `rf` distinct nodes to every partition, keeping what `previous` had where it is still
/// valid, at most [`replicas_per_zone`] in any zone, with per-node counts close
/// to capacity-proportional targets. Deterministic.
pub fn assign(
    previous: &[Vec<NodeId>],
    roles: &BTreeMap<NodeId, NodeRole>,
    rf: usize,
) -> Result<Vec<Vec<NodeId>>, LayoutError> {
    if rf == 0 {
        return Err(LayoutError::ZeroReplication);
    }
    if let Some((n, _)) = roles.iter().find(|(_, r)| r.capacity == Some(0)) {
        return Err(LayoutError::ZeroCapacity(*n));
    }
    let storage: Vec<NodeId> = roles
        .iter()
        .filter(|(_, r)| r.capacity.is_some())
        .map(|(n, _)| *n)
        .collect();
    if storage.len() < rf {
        return Err(LayoutError::TooFewNodes {
            nodes: storage.len(),
            rf,
        });
    }
    let zone_of = |n: &NodeId| roles[n].zone.as_str();
    let per_zone = replicas_per_zone(roles, rf);
    // Replicas among `nodes`, other than `except`, in `node`'s zone.
    let in_zone = |nodes: &[NodeId], node: &NodeId, except: Option<&NodeId>| {
        nodes
            .iter()
            .filter(|k| Some(*k) != except && zone_of(k) == zone_of(node))
            .count()
    };
    let target = targets(roles, rf);
    let mut count: BTreeMap<NodeId, usize> = storage.iter().map(|n| (*n, 0)).collect();

    // 1. Keep valid previous replicas: still storage nodes, within rf and the zone limit. Where
    //    a partition has too many, the node furthest over its target gives its replica up, so
    //    that what is dropped here is what the balance would have moved anyway.
    let mut out: Vec<Vec<NodeId>> = Vec::with_capacity(PARTITIONS);
    for p in 0..PARTITIONS {
        let mut kept: Vec<NodeId> = Vec::new();
        for n in previous.get(p).map(Vec::as_slice).unwrap_or(&[]) {
            if count.contains_key(n) && !kept.contains(n) {
                kept.push(*n);
            }
        }
        for n in &kept {
            *count.get_mut(n).expect("storage node") += 1;
        }
        out.push(kept);
    }
    for kept in &mut out {
        loop {
            let over_zone = |n: &NodeId| in_zone(kept, n, None) > per_zone;
            let droppable = kept.iter().filter(|n| kept.len() > rf || over_zone(n));
            let Some(&drop) = droppable.max_by(|a, b| {
                let sa = count[*a] as f64 - target[*a];
                let sb = count[*b] as f64 - target[*b];
                sa.partial_cmp(&sb).expect("finite").then_with(|| a.cmp(b))
            }) else {
                break;
            };
            kept.retain(|n| *n != drop);
            *count.get_mut(&drop).expect("storage node") -= 1;
        }
    }
    // 2. Fill every partition up to rf with the most under-target eligible node.
    #[allow(clippy::needless_range_loop)] // `p` indexes `out` inside a closure too.
    for p in 0..PARTITIONS {
        while out[p].len() < rf {
            let eligible = storage
                .iter()
                .filter(|n| !out[p].contains(n) && in_zone(&out[p], n, None) < per_zone);
            let best = eligible
                .max_by(|a, b| {
                    let da = target[*a] - count[*a] as f64;
                    let db = target[*b] - count[*b] as f64;
                    da.partial_cmp(&db).expect("finite").then_with(|| b.cmp(a))
                })
                .copied()
                .expect("enough nodes and zones were checked");
            *count.get_mut(&best).expect("storage node") += 1;
            out[p].push(best);
        }
    }
    // 3. Rebalance. Zone constraints can leave a node a replica or more short while others are over, with
    //    no single swap allowed between them. Augmenting paths fix that: u takes a slot of a1
    //    in some partition, a1 takes a slot of a2 elsewhere, ..., until a node over its target
    //    gives one up. Every path lowers the total deviation, so this ends.
    let valid_swap = |nodes: &[NodeId], out_node: NodeId, in_node: NodeId| {
        !nodes.contains(&in_node) && in_zone(nodes, &in_node, Some(&out_node)) < per_zone
    };
    loop {
        let deficit = |n: &NodeId, count: &BTreeMap<NodeId, usize>| target[n] - count[n] as f64;
        let mut applied = false;
        let mut short: Vec<NodeId> = storage
            .iter()
            .copied()
            .filter(|n| deficit(n, &count) > 0.0)
            .collect();
        short.sort_by(|a, b| {
            deficit(b, &count)
                .partial_cmp(&deficit(a, &count))
                .expect("finite")
                .then_with(|| a.cmp(b))
        });
        for u in short {
            // Cheapest path over nodes (Dijkstra): `via[b] = (a, p)` means a takes b's slot
            // in partition p. A step costs 1, plus 1 if it evicts a replica the previous
            // layout had there (a real move), minus 1 if it gives a back a partition it had:
            // reshuffling slots filled in this very computation moves nothing.
            let held_before = |n: &NodeId, p: usize| previous.get(p).is_some_and(|v| v.contains(n));
            let mut dist: BTreeMap<NodeId, usize> = [(u, 0)].into_iter().collect();
            let mut via: BTreeMap<NodeId, (NodeId, usize)> = BTreeMap::new();
            let mut done: BTreeSet<NodeId> = BTreeSet::new();
            let mut end = None;
            while let Some((&a, &da)) = dist
                .iter()
                .filter(|(n, _)| !done.contains(*n))
                .min_by_key(|(n, d)| (**d, **n))
            {
                done.insert(a);
                if a != u {
                    let surplus = -deficit(&a, &count);
                    if surplus > 0.0 && deficit(&u, &count) + surplus > 1.0 + 1e-9 {
                        end = Some(a);
                        break;
                    }
                }
                for (p, nodes) in out.iter().enumerate() {
                    for &b in nodes {
                        if done.contains(&b) || !valid_swap(nodes, b, a) {
                            continue;
                        }
                        let cost =
                            1 + usize::from(!held_before(&a, p)) - usize::from(!held_before(&b, p));
                        let nd = da + cost;
                        if dist.get(&b).is_none_or(|&d| nd < d) {
                            dist.insert(b, nd);
                            via.insert(b, (a, p));
                        }
                    }
                }
            }
            let Some(mut b) = end else { continue };
            // Apply the path backwards, checking each swap is still valid.
            let mut steps = Vec::new();
            while b != u {
                let (a, p) = via[&b];
                steps.push((a, b, p));
                b = a;
            }
            let used: BTreeSet<usize> = steps.iter().map(|s| s.2).collect();
            if used.len() != steps.len()
                || !steps.iter().all(|&(a, b, p)| valid_swap(&out[p], b, a))
            {
                continue;
            }
            for &(a, b, p) in &steps {
                let slot = out[p].iter().position(|x| *x == b).expect("present");
                out[p][slot] = a;
            }
            *count.get_mut(&u).expect("storage node") += 1;
            *count.get_mut(&steps[0].1).expect("storage node") -= 1;
            applied = true;
            break;
        }
        if !applied {
            break;
        }
    }
    for nodes in &mut out {
        nodes.sort();
    }
    Ok(out)
}

/// The share of replicas each storage node should hold (public for tests and `layout show`).
pub fn replica_targets(roles: &BTreeMap<NodeId, NodeRole>, rf: usize) -> BTreeMap<NodeId, f64> {
    targets(roles, rf)
}
