//! Offload: a partition this node no longer stores is pushed to each of its owners, then
//! deleted here if nothing changed meanwhile.

use std::sync::Arc;

use shoal_net::Transport;
use tracing::info;

use super::error::NodeError;
use super::state::Node;
use super::syncer::Processed;
use super::table::SyncTable;
use crate::worklist::Work;

impl<T: Transport> Node<T> {
    /// Offloads partition `w` of `table`: pushes it to every owner, then deletes what is
    /// unchanged here. [`Processed::Again`] if it was written to meanwhile.
    pub(super) async fn offload(
        &self,
        table: &str,
        t: &Arc<dyn SyncTable>,
        w: Work,
    ) -> Result<Processed, NodeError> {
        // Offload: this node no longer stores the partition.
        let t2 = t.clone();
        let snapshot = self
            .blocking_sync(table, move || t2.scan_partition(w.partition))
            .await??;
        if snapshot.is_empty() {
            return Ok(Processed::Done);
        }
        let nodes = self.nodes_for(table, w.partition);
        if nodes.is_empty() {
            return Err(NodeError::NowhereToOffload(w.partition));
        }
        for owner in &nodes {
            let tr = self
                .push_to(*owner, table, w.partition)
                .await
                .map_err(|e| NodeError::Offload {
                    owner: *owner,
                    source: Box::new(e),
                })?;
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
            .await??;
        if left {
            // Written to while we offloaded: go round again.
            return Ok(Processed::Again);
        }
        info!(table, partition = w.partition, "partition offloaded");
        self.bump(table, |s| s.offloaded += 1);
        Ok(Processed::Done)
    }
}
