//! One piece of a syncer's work: a partition this node stores, synced with its other replicas
//! in every live layout version, or one it no longer stores, offloaded.

use std::sync::Arc;

use shoal_net::{NodeId, Transport};
use tracing::debug;

use super::error::NodeError;
use super::state::Node;
use super::syncer::Processed;
use super::table::SyncTable;
use crate::worklist::Work;

/// In a large cluster, the fewest peers a fully replicated table's partition is synced with
/// in one pass (see `Node::sync_partition`).
pub const FULL_TABLE_PEERS_PER_PASS: usize = 2;

impl<T: Transport> Node<T> {
    /// Takes one piece of work: syncs the partition if this node stores it in a live layout
    /// version, else offloads it.
    pub(super) async fn process(
        &self,
        table: &str,
        t: &Arc<dyn SyncTable>,
        w: Work,
    ) -> Result<Processed, NodeError> {
        let union = self.sync_nodes(table, w.partition);
        if union.contains(&self.id()) {
            self.sync_partition(table, w, union).await
        } else {
            self.offload(table, t, w).await
        }
    }

    /// Syncs partition `w` with each of its other replicas in turn (`union`: every node of the
    /// partition in a live layout version; during a change, the new replicas pull from the old
    /// ones through these sessions), and says whether this node now has every acknowledged
    /// write of it.
    pub(super) async fn sync_partition(
        &self,
        table: &str,
        w: Work,
        union: Vec<NodeId>,
    ) -> Result<Processed, NodeError> {
        let mut others: Vec<NodeId> = union.into_iter().filter(|n| *n != self.id()).collect();
        // One replica after the other, not all at once: what the first session brings is
        // then already here when the second compares digests, so a missed item crosses the
        // network once instead of once per replica (catch-up bytes halve with 3 replicas).
        // Partitions still sync in parallel, so the time barely changes. The starting
        // replica rotates with the partition to spread the work over the peers.
        // A fully replicated table's partition is on every node: in a large cluster, syncing
        // with all of them each pass would cost every node a session per partition per peer,
        // and the cluster the square of its size. There, a pass stops once it has reached
        // enough nodes that every write quorum intersects them (all completeness needs) and
        // at least `FULL_TABLE_PEERS_PER_PASS` peers; the starting peer rotates from pass to
        // pass (by the wall clock's minutes), so that items spread to every node over passes.
        let limited = self.replication_of(table) == crate::worklist::Replication::Full
            && others.len() > super::membership::FULL_PROBE_MAX_PEERS;
        if !others.is_empty() {
            let pass = if limited { self.now_ms() / 60_000 } else { 0 };
            let k = (w.partition as u64 + pass) as usize % others.len();
            others.rotate_left(k);
        }
        let sets = self.write_sets(table, w.partition);
        let enough = |reached: &[NodeId]| {
            reached.len() > FULL_TABLE_PEERS_PER_PASS
                && sets.iter().all(|nodes| {
                    let needed = self
                        .quorums(table, nodes.len())
                        .to_see_every_write(nodes.len());
                    nodes.iter().filter(|n| reached.contains(n)).count() >= needed
                })
        };
        let mut failed = Vec::new();
        let mut reached = vec![self.id()];
        for peer in others.clone() {
            if limited && enough(&reached) {
                break;
            }
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
                return Err(NodeError::ReplicasUnreached {
                    failed: failed.len(),
                    tried: others.len(),
                    reached: got,
                    needed,
                    set: nodes.len(),
                });
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
        Ok(if lagging > 0 {
            Processed::ReplicasLag(lagging)
        } else {
            Processed::Done
        })
    }
}
