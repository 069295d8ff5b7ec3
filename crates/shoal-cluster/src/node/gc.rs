//! The tombstone collector: a tombstone leaves every replica once every node of the layout
//! holds it (or nothing), applies the same layout version with no change in progress, and no
//! departed node may still hold copies.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_bytes::ByteBuf;
use shoal_net::{NodeId, Transport};
use tokio::time::Instant;
use tracing::{debug, info};

use super::endpoint::NodeEndpoint;
use super::error::NodeError;
use super::state::Node;
use super::syncer::{backoff, panic_message, reraise};
use super::table::SyncTable;
use super::wire::{decode, encode};

/// How a table's tombstone collector behaves.
#[derive(Debug, Clone)]
pub struct GcConfig {
    /// Time between passes.
    pub interval: Duration,
    /// How long a tombstone must have been seen before it may be collected: writes still in
    /// flight when it was made have landed by then.
    pub min_age: Duration,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            interval: Duration::from_secs(600),
            min_age: Duration::from_secs(3600),
        }
    }
}

impl<T: Transport> Node<T> {
    /// Starts the tombstone collector of `table`: every `config.interval`, for the partitions
    /// this node is the first replica of, each tombstone seen for at least `config.min_age` is
    /// removed from every replica, once every replica of every live layout version holds that
    /// same tombstone (or nothing) under its key. A replica that is down, or still holds the
    /// deleted value, keeps the tombstone everywhere until it has caught up.
    pub fn start_gc(&self, table: &str, config: GcConfig) -> Result<(), NodeError> {
        let t = self.table(table)?;
        let node = Arc::downgrade(&self.state);
        let name = table.to_string();
        let task = tokio::spawn(async move {
            let mut first_seen: HashMap<Vec<u8>, Instant> = HashMap::new();
            let mut panics_in_a_row = 0;
            loop {
                let wait = if panics_in_a_row > 0 {
                    config.interval.max(backoff(panics_in_a_row))
                } else {
                    config.interval
                };
                tokio::time::sleep(wait).await;
                let Some(state) = node.upgrade() else { return };
                let me = Node { state };
                // A pass that panics is counted and logged; the next one runs after a backoff.
                let pass = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
                    me.collect_once(&name, &t, &config, &mut first_seen),
                ))
                .await;
                match pass {
                    Ok(collected) => {
                        panics_in_a_row = 0;
                        if collected > 0 {
                            info!(table = %name, collected, "tombstones collected");
                            me.bump(&name, |s| s.tombstones_collected += collected);
                        }
                    }
                    Err(panic) => {
                        panics_in_a_row += 1;
                        tracing::error!(table = %name, panic = %panic_message(&*panic), "a tombstone collection pass panicked");
                        me.bump(&name, |s| s.gc_panics += 1);
                    }
                }
            }
        });
        self.state.tasks.lock().push(task);
        Ok(())
    }

    /// One collector pass over `table` now, collecting tombstones of any age that every
    /// replica holds (operators, tests); returns how many were removed.
    pub async fn collect_now(&self, table: &str) -> Result<u64, NodeError> {
        let t = self.table(table)?;
        let config = GcConfig {
            interval: Duration::ZERO,
            min_age: Duration::ZERO,
        };
        let n = self
            .collect_once(table, &t, &config, &mut HashMap::new())
            .await;
        self.bump(table, |s| s.tombstones_collected += n);
        Ok(n)
    }

    /// One pass of the collector; returns the tombstones removed.
    pub(super) async fn collect_once(
        &self,
        table: &str,
        t: &Arc<dyn SyncTable>,
        config: &GcConfig,
        first_seen: &mut HashMap<Vec<u8>, Instant>,
    ) -> u64 {
        let mut collected = 0;
        let mut seen_now = std::collections::HashSet::new();
        let history = self.history();
        let current = self.layout();
        // During a change, or while a node that left the layout may still hold copies it has
        // not handed off, nothing is collected.
        if history.in_transition() || !history.departed.is_empty() {
            return 0;
        }
        for p in 0..=255u8 {
            let replicas = self.sync_nodes(table, p);
            // One collector per partition: its first replica in the current layout.
            if self.nodes_for(table, p).first() != Some(&self.id()) {
                continue;
            }
            let t2 = t.clone();
            let tombstones = self
                .blocking(move || t2.tombstones(p, 1000))
                .await
                .unwrap_or_else(|e| reraise(e));
            let Ok(tombstones) = tombstones else {
                continue;
            };
            for (key, bytes) in tombstones {
                // Aged per tombstone, not per key: a newer delete of the same key starts its
                // own wait, so writes in flight around it land before it can be collected.
                let tomb_id = {
                    let mut id = key.clone();
                    id.extend_from_slice(blake3::hash(&bytes).as_bytes());
                    id
                };
                seen_now.insert(tomb_id.clone());
                let since = *first_seen
                    .entry(tomb_id.clone())
                    .or_insert_with(Instant::now);
                if since.elapsed() < config.min_age {
                    continue;
                }
                let hash = ByteBuf::from(blake3::hash(&bytes).as_bytes().to_vec());
                let check = encode(&(table, ByteBuf::from(key.clone()), hash, current.version));
                // Every node of the layout, not only the replicas: one that is not a replica
                // could hold an old copy it has not handed off, or know a newer layout. A node
                // that does not answer holds the collection back if it is a replica, or if it
                // has not reported offloading everything outside its partitions.
                let mut everywhere = true;
                for n in current.roles.keys() {
                    let held = self
                        .ask(*n, NodeEndpoint::GcCheck, check.clone())
                        .await
                        .and_then(|b| decode::<bool>(&b));
                    let ok = match held {
                        Ok(ok) => ok,
                        Err(_) => {
                            !replicas.contains(n)
                                && history
                                    .offloaded
                                    .get(n)
                                    .is_some_and(|v| *v >= current.version)
                        }
                    };
                    if !ok {
                        debug!(table, partition = p, node = ?n, "tombstone not collectable yet");
                        everywhere = false;
                        break;
                    }
                }
                if !everywhere {
                    continue;
                }
                let delete = encode(&(table, ByteBuf::from(key.clone()), ByteBuf::from(bytes)));
                let mut all_done = true;
                for r in &replicas {
                    if self
                        .ask(*r, NodeEndpoint::GcDelete, delete.clone())
                        .await
                        .is_err()
                    {
                        all_done = false;
                    }
                }
                if all_done {
                    collected += 1;
                    first_seen.remove(&tomb_id);
                }
            }
        }
        first_seen.retain(|k, _| seen_now.contains(k));
        collected
    }

    /// Asks `node` (this one in place) one of the collector's questions.
    pub(super) async fn ask(
        &self,
        node: NodeId,
        endpoint: NodeEndpoint,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, NodeError> {
        if node != self.id() {
            return Ok(self.net().call(node, endpoint.name(), body).await?);
        }
        match endpoint {
            NodeEndpoint::GcCheck => self.serve_gc_check(&body).await,
            _ => self.serve_gc_delete(&body).await,
        }
    }

    /// `gc.check`: whether this node holds the given tombstone, or nothing, under the key, and
    /// applies the collector's layout version with no change in progress (a node that knows a
    /// newer layout may be pulling old copies the collector cannot see).
    pub(super) async fn serve_gc_check(&self, body: &[u8]) -> Result<Vec<u8>, NodeError> {
        let (table, key, hash, version): (String, ByteBuf, ByteBuf, u64) = decode(body)?;
        let settled = self.layout().version == version && !self.history().in_transition();
        let t = self.table(&table)?;
        let held = self.blocking(move || t.get_encoded(&key)).await??;
        Ok(encode(
            &(settled && held.is_none_or(|b| blake3::hash(&b).as_bytes()[..] == hash[..])),
        ))
    }

    /// `gc.delete`: removes the tombstone if it is still exactly what is stored.
    pub(super) async fn serve_gc_delete(&self, body: &[u8]) -> Result<Vec<u8>, NodeError> {
        let (table, key, bytes): (String, ByteBuf, ByteBuf) = decode(body)?;
        let t = self.table(&table)?;
        let n = self
            .blocking(move || t.delete_if_unchanged(vec![(key.into_vec(), bytes.into_vec())]))
            .await??;
        Ok(encode(&n))
    }
}
