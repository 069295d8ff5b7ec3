//! Quorum replication: a write succeeds once a write quorum of the partition's nodes has it
//! durably; a read asks a read quorum, merges, and repairs stale replicas in the background.

use std::pin::Pin;
use std::task::Poll;

use shoal_net::Transport;
use shoal_table::codec::Versioned;
use shoal_table::crdt::Crdt;
use shoal_table::{Schema, Table, engine_key};
use tokio::sync::mpsc;

use crate::node::Node;

pub use crate::quorum::QuorumError;

/// A table replicated over the cluster through `node`. Its quorums come from the node
/// ([`Node::quorums`]): the layout's replication factor, how the table is replicated, and the
/// node's consistency mode.
pub struct Replicated<S: Schema, T: Transport> {
    node: Node<T>,
    _schema: std::marker::PhantomData<fn() -> S>,
}

impl<S: Schema, T: Transport> Replicated<S, T> {
    /// Replication of `S` through `node`.
    pub fn new(node: Node<T>) -> Self {
        Replicated {
            node,
            _schema: std::marker::PhantomData,
        }
    }

    /// Merges `entry` on its partition's nodes; returns once a write quorum of them have it
    /// durably, in the node set of every live layout version (during a layout change, both
    /// the old and the new replicas). The other writes continue in the background.
    pub async fn insert(&self, entry: &S::Entry) -> Result<(), QuorumError> {
        let bytes = entry
            .encode()
            .map_err(|e| QuorumError::Decode(e.to_string()))?;
        let partition = Table::<S>::key_of(entry)[0];
        // Until it returns, this write holds back this node's acknowledgement of any newer
        // layout version (see `LayoutHistory`).
        let _in_flight = self.node.begin_write();
        let sets = self.node.write_sets(S::TABLE_NAME, partition);
        if sets.is_empty() {
            return Err(QuorumError::NoLayout(partition));
        }
        self.write_group(sets, vec![partition], vec![bytes]).await
    }

    /// Merges `entries` as [`Replicated::insert`] does each, but one message per replica for
    /// all the entries that go to the same nodes (with three nodes and three replicas, all of
    /// them): they travel together and are committed together on each replica, one group
    /// commit instead of one per entry. Groups are written concurrently; the first failure is
    /// returned, and the others still complete.
    pub async fn insert_many(&self, entries: &[S::Entry]) -> Result<(), QuorumError> {
        type Group = (Vec<u8>, Vec<Vec<u8>>);
        let _in_flight = self.node.begin_write();
        let mut sets_of: std::collections::HashMap<u8, Vec<Vec<shoal_net::NodeId>>> =
            Default::default();
        let mut groups: std::collections::BTreeMap<Vec<Vec<shoal_net::NodeId>>, Group> =
            Default::default();
        for entry in entries {
            let bytes = entry
                .encode()
                .map_err(|e| QuorumError::Decode(e.to_string()))?;
            let partition = Table::<S>::key_of(entry)[0];
            let sets = sets_of
                .entry(partition)
                .or_insert_with(|| self.node.write_sets(S::TABLE_NAME, partition));
            if sets.is_empty() {
                return Err(QuorumError::NoLayout(partition));
            }
            let (partitions, items) = groups.entry(sets.clone()).or_default();
            if !partitions.contains(&partition) {
                partitions.push(partition);
            }
            items.push(bytes);
        }
        let writes = groups
            .into_iter()
            .map(|(sets, (partitions, items))| self.write_group(sets, partitions, items));
        futures::future::join_all(writes)
            .await
            .into_iter()
            .collect()
    }

    /// Writes encoded items, of `partitions`, to the union of `sets` (one per live layout
    /// version), and waits for a write quorum in each set. The caller holds a
    /// [`crate::node::WriteInFlight`] taken before it computed the sets.
    async fn write_group(
        &self,
        sets: Vec<Vec<shoal_net::NodeId>>,
        partitions: Vec<u8>,
        items: Vec<Vec<u8>>,
    ) -> Result<(), QuorumError> {
        let mut nodes: Vec<shoal_net::NodeId> = sets.iter().flatten().copied().collect();
        nodes.sort();
        nodes.dedup();
        let (tx, mut rx) = mpsc::channel(nodes.len());
        for n in &nodes {
            let (node, tx, n, items) = (self.node.clone(), tx.clone(), *n, items.clone());
            tokio::spawn(async move {
                let r = node.write_to(n, S::TABLE_NAME, items).await;
                let _ = tx.send((n, r)).await;
            });
        }
        drop(tx);
        let needed: Vec<usize> = sets
            .iter()
            .map(|s| self.node.quorums(S::TABLE_NAME, s.len()).write)
            .collect();
        let (mut acked, mut failed, mut errors) = (Vec::new(), Vec::new(), Vec::new());
        let outcome = loop {
            let Some((n, r)) = rx.recv().await else {
                break Err(QuorumError::Write {
                    acks: acked.len(),
                    needed: needed.iter().copied().max().unwrap_or(0),
                    errors,
                });
            };
            match r {
                Ok(()) => acked.push(n),
                Err(e) => {
                    failed.push(n);
                    errors.push(e.to_string());
                }
            }
            let count = |set: &Vec<shoal_net::NodeId>, of: &Vec<shoal_net::NodeId>| {
                set.iter().filter(|n| of.contains(n)).count()
            };
            if sets
                .iter()
                .zip(&needed)
                .all(|(set, need)| count(set, &acked) >= *need)
            {
                break Ok(());
            }
            if sets
                .iter()
                .zip(&needed)
                .any(|(set, need)| set.len() - count(set, &failed) < *need)
            {
                break Err(QuorumError::Write {
                    acks: acked.len(),
                    needed: needed.iter().copied().max().unwrap_or(0),
                    errors,
                });
            }
        };
        // The writes still under way finish in the background. Once all have answered, the
        // replicas that missed it are caught up by a sync of the partition: queued only then,
        // so that the sync finds the item on every replica that took it.
        if !failed.is_empty() || acked.len() + failed.len() < nodes.len() {
            let node = self.node.clone();
            tokio::spawn(async move {
                while let Some((n, r)) = rx.recv().await {
                    if r.is_err() {
                        failed.push(n);
                    }
                }
                for n in failed {
                    for &partition in &partitions {
                        node.missed_write(S::TABLE_NAME, partition, n);
                    }
                }
            });
        }
        outcome
    }

    /// Reads the item from a read quorum of its partition's nodes and returns their merge;
    /// replicas that answered with less are sent the merge in the background.
    pub async fn get(
        &self,
        partition_key: &S::PartitionKey,
        sort_key: &S::SortKey,
    ) -> Result<Option<S::Entry>, QuorumError> {
        let key = engine_key(partition_key, sort_key);
        let (nodes, needed) = self.node.read_nodes(S::TABLE_NAME, key[0]);
        if nodes.is_empty() {
            return Err(QuorumError::NoLayout(key[0]));
        }
        // This node's own copy first, read in place: a B-tree lookup, no future to keep.
        let me = self.node.id();
        let (mut answers, mut errors) = (Vec::with_capacity(needed), Vec::new());
        let mut others = nodes;
        if let Some(i) = others.iter().position(|n| *n == me) {
            others.remove(i);
            match self.node.read_local(S::TABLE_NAME, &key) {
                Ok(v) => answers.push((me, v)),
                Err(e) => errors.push(e.to_string()),
            }
        }
        let (more, more_errors) = ask_quorum(me, others, needed - answers.len(), |n| {
            let (node, key) = (self.node.clone(), key.clone());
            async move { node.read_from(n, S::TABLE_NAME, key).await }
        })
        .await;
        answers.extend(more);
        errors.extend(more_errors);
        if answers.len() < needed {
            return Err(QuorumError::Read {
                answers: answers.len(),
                needed,
                errors,
            });
        }
        // The common case: every replica asked holds the same bytes. Nothing to merge and
        // nothing to repair: decode one copy.
        if answers.windows(2).all(|w| w[0].1 == w[1].1) {
            return match answers.first().and_then(|(_, v)| v.as_deref()) {
                Some(bytes) => Ok(Some(
                    S::Entry::decode(bytes).map_err(|e| QuorumError::Decode(e.to_string()))?,
                )),
                None => Ok(None),
            };
        }
        let mut merged: Option<S::Entry> = None;
        for (_, v) in &answers {
            if let Some(bytes) = v {
                let e = S::Entry::decode(bytes).map_err(|e| QuorumError::Decode(e.to_string()))?;
                match merged.as_mut() {
                    Some(m) => m.merge(&e),
                    None => merged = Some(e),
                }
            }
        }
        if let Some(m) = &merged {
            let bytes = m.encode().map_err(|e| QuorumError::Decode(e.to_string()))?;
            for (n, v) in answers {
                if v.as_deref() != Some(bytes.as_slice()) {
                    let (node, bytes) = (self.node.clone(), bytes.clone());
                    let partition = key[0];
                    tokio::spawn(async move {
                        if node.write_to(n, S::TABLE_NAME, vec![bytes]).await.is_err() {
                            node.missed_write(S::TABLE_NAME, partition, n);
                        }
                    });
                }
            }
        }
        Ok(merged)
    }

    /// Reads the items of `partition_key` in `range` of sort keys (engine-key bounds, from
    /// [`shoal_table::hash_range`]-style ranges within the partition) from a read quorum of
    /// its nodes: the merge of their answers, in key order (descending if `reverse`), at most
    /// `limit`. An item one replica lacks is still returned if another has it.
    pub async fn range(
        &self,
        partition_key: &S::PartitionKey,
        range: shoal_storage::KeyRange,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<S::Entry>, QuorumError> {
        let p = engine_key(partition_key, &())[0];
        let (nodes, needed) = self.node.read_nodes(S::TABLE_NAME, p);
        if nodes.is_empty() {
            return Err(QuorumError::NoLayout(p));
        }
        let (replies, errors) = ask_quorum(self.node.id(), nodes, needed, |n| {
            let (node, range) = (self.node.clone(), range.clone());
            async move {
                node.range_from(n, S::TABLE_NAME, range, reverse, limit)
                    .await
            }
        })
        .await;
        let answers = replies.len();
        let mut merged: std::collections::BTreeMap<Vec<u8>, S::Entry> = Default::default();
        for (_, items) in replies {
            for (k, v) in items {
                let e = S::Entry::decode(&v).map_err(|e| QuorumError::Decode(e.to_string()))?;
                match merged.get_mut(&k) {
                    Some(m) => m.merge(&e),
                    None => {
                        merged.insert(k, e);
                    }
                }
            }
        }
        if answers < needed {
            return Err(QuorumError::Read {
                answers,
                needed,
                errors,
            });
        }
        // Each replica returned its first `limit`: the first `limit` of the union are exact
        // for what these replicas hold.
        let items: Vec<S::Entry> = if reverse {
            merged.into_values().rev().take(limit).collect()
        } else {
            merged.into_values().take(limit).collect()
        };
        Ok(items)
    }
}

/// After this long without enough answers, a read asks one more replica.
const READ_HEDGE: std::time::Duration = std::time::Duration::from_millis(50);

/// Asks `needed` of `nodes` (this node first: its answer costs no network), and one more
/// whenever an asked node fails or the answers are late by [`READ_HEDGE`], until `needed`
/// answered or too many failed. Returns the answers (with who gave them) and the errors.
/// Quorum intersection needs only `needed` answers; asking every replica each time would
/// double the network work of a read for nothing.
async fn ask_quorum<A, E, F, Fut>(
    me: shoal_net::NodeId,
    mut nodes: Vec<shoal_net::NodeId>,
    needed: usize,
    ask: F,
) -> (Vec<(shoal_net::NodeId, A)>, Vec<String>)
where
    A: Send + 'static,
    E: std::fmt::Display + Send + 'static,
    F: Fn(shoal_net::NodeId) -> Fut,
    Fut: std::future::Future<Output = Result<A, E>> + Send + 'static,
{
    // More than there are nodes to ask: ask them all; the caller sees the quorum missed.
    let needed = needed.min(nodes.len());
    let (mut answers, mut errors) = (Vec::with_capacity(needed), Vec::new());
    if needed == 0 {
        return (answers, errors);
    }
    if let Some(i) = nodes.iter().position(|n| *n == me) {
        nodes[..=i].rotate_right(1);
    }
    let total = nodes.len();
    // The asks are polled inside this task (no task or channel per replica): a read is on
    // the hot path, and an ask left over when the quorum answers is simply dropped. At most
    // a few are in flight, so each wake-up polls them all rather than tracking which woke.
    let mut asking: Vec<(shoal_net::NodeId, Pin<Box<Fut>>)> = Vec::with_capacity(total);
    let mut pending = nodes.into_iter();
    let launch = |pending: &mut std::vec::IntoIter<shoal_net::NodeId>,
                  asking: &mut Vec<(shoal_net::NodeId, Pin<Box<Fut>>)>| {
        if let Some(n) = pending.next() {
            asking.push((n, Box::pin(ask(n))));
        }
    };
    for _ in 0..needed {
        launch(&mut pending, &mut asking);
    }
    let hedge = tokio::time::sleep(READ_HEDGE);
    tokio::pin!(hedge);
    while answers.len() < needed && errors.len() <= total - needed && !asking.is_empty() {
        let next = std::future::poll_fn(|cx| {
            for i in 0..asking.len() {
                if let Poll::Ready(r) = asking[i].1.as_mut().poll(cx) {
                    let (n, _) = asking.swap_remove(i);
                    return Poll::Ready(Some((n, r)));
                }
            }
            Poll::Pending
        });
        // Biased: an answer ready at the same poll as the hedge's timer is taken first, and a
        // simulation replays the same choice (an unbiased select draws from the runtime's RNG).
        let answered = tokio::select! {
            biased;
            a = next => a,
            () = &mut hedge => None,
        };
        match answered {
            Some((n, Ok(a))) => answers.push((n, a)),
            Some((_, Err(e))) => {
                errors.push(e.to_string());
                launch(&mut pending, &mut asking);
            }
            None => {
                launch(&mut pending, &mut asking);
                hedge
                    .as_mut()
                    .reset(tokio::time::Instant::now() + READ_HEDGE);
            }
        }
    }
    (answers, errors)
}
