//! Anti-entropy sessions over RPC: this node initiating one with a peer (a sync, or a push
//! when offloading), and answering one a peer started, one step at a time.

use std::time::Duration;

use serde_bytes::ByteBuf;
use shoal_net::{NodeId, Transport};
use shoal_sync::driver::Transcript;
use shoal_sync::protocol::Message;
use shoal_sync::session::{Session, SyncError};
use tokio::time::Instant;

use super::endpoint::NodeEndpoint;
use super::error::NodeError;
use super::state::Node;
use super::wire::{SyncStep, decode, encode};

/// Why a sync with a peer failed: a [`NodeError`] (the call, the session on this side, a
/// malformed reply, an unknown table). Kept as a name for the callers of [`Node::sync_with`].
pub type PeerSyncError = NodeError;

impl<T: Transport> Node<T> {
    /// One step of a session a peer started (or its first): the peer's messages in, this
    /// node's answers out. Refuses a forgotten node, and a second replica trying to fill a
    /// partition another one is filling.
    pub(super) async fn serve_sync(
        &self,
        from: NodeId,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, NodeError> {
        // What a forgotten node still holds may include values whose deletions were collected
        // since: none of it comes back in.
        if self.state.history.read().forgotten.contains(&from) {
            return Err(NodeError::Forgotten(from));
        }
        let step: SyncStep = decode(&body)?;
        let key = (from, step.session);
        let fill_key = (step.table.clone(), step.partition);
        // Sessions whose initiator went away are forgotten after a while.
        self.state
            .responders
            .lock()
            .retain(|_, (_, _, at)| at.elapsed() < Duration::from_secs(300));
        let existing = self.state.responders.lock().remove(&key);
        let (session, replica) = match existing {
            Some((s, r, _)) => (Some(s), r),
            None => {
                let table = self
                    .state
                    .tables
                    .read()
                    .get(&step.table)
                    .cloned()
                    .ok_or_else(|| NodeError::NoTable(step.table.clone()))?;
                (None, table.replica(step.partition))
            }
        };
        // Storage work (scans, durable merges) runs off the async workers.
        let table_name = step.table.clone();
        let result = self
            .blocking_sync(&table_name, move || {
                let mut session = session;
                for raw in step.messages {
                    let msg = Message::decode(&raw).map_err(SyncError::from)?;
                    match session.as_mut() {
                        Some(s) => s.receive(&*replica, msg)?,
                        None => session = Some(Session::respond(&*replica, msg)?),
                    }
                }
                let mut s =
                    session.ok_or_else(|| NodeError::Malformed("an empty first step".into()))?;
                let mut out = Vec::new();
                while let Some(m) = s.poll_send(&*replica)? {
                    out.push(ByteBuf::from(m.encode()));
                }
                Ok::<_, NodeError>((s, replica, out))
            })
            .await??;
        let (session, replica, out) = result;
        let asks_everything = out.iter().any(|m| **m == Message::WantAll.encode());
        {
            let mut filling = self.state.filling.lock();
            // A fill whose initiator has been silent for a minute is abandoned.
            filling.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(60));
            if let Some((holder, at)) = filling.get_mut(&fill_key)
                && *holder == key
            {
                *at = Instant::now();
            }
            if asks_everything {
                // A peer runs one session per partition at a time: a new one from the peer
                // holding the fill means its earlier one ended (a dropped connection), and
                // takes the fill over rather than wait for it to expire.
                if let Some((other, _)) = filling.get(&fill_key)
                    && *other != key
                    && other.0 != from
                {
                    return Err(NodeError::Filling {
                        table: fill_key.0.clone(),
                        partition: fill_key.1,
                    });
                }
                filling.insert(fill_key.clone(), (key, Instant::now()));
            }
            if session.is_done() && filling.get(&fill_key).is_some_and(|(k, _)| *k == key) {
                filling.remove(&fill_key);
            }
        }
        if !session.is_done() {
            self.state
                .responders
                .lock()
                .insert(key, (session, replica, Instant::now()));
        }
        Ok(encode(&out))
    }

    /// Runs one anti-entropy session for partition `p` of `table` with `peer`, this node
    /// initiating. Afterwards both hold the merge of both.
    pub async fn sync_with(
        &self,
        peer: NodeId,
        table: &str,
        p: u8,
    ) -> Result<Transcript, NodeError> {
        self.session_with(peer, table, p, false).await
    }

    /// Sends `peer` the items of partition `p` of `table` that it lacks, asking nothing back
    /// (offload).
    pub async fn push_to(&self, peer: NodeId, table: &str, p: u8) -> Result<Transcript, NodeError> {
        self.session_with(peer, table, p, true).await
    }

    pub(super) async fn session_with(
        &self,
        peer: NodeId,
        table: &str,
        p: u8,
        push_only: bool,
    ) -> Result<Transcript, NodeError> {
        let t = self
            .state
            .tables
            .read()
            .get(table)
            .cloned()
            .ok_or_else(|| NodeError::NoTable(table.to_string()))?;
        let session_id = self
            .state
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let replica = t.replica(p);
        let (mut session, mut replica, mut outgoing) = self
            .blocking_sync(table, move || -> Result<_, SyncError> {
                let mut s = if push_only {
                    Session::initiate_push_only(&*replica)?
                } else {
                    Session::initiate(&*replica)?
                };
                let mut out = Vec::new();
                while let Some(m) = s.poll_send(&*replica)? {
                    out.push(m.encode());
                }
                Ok((s, replica, out))
            })
            .await??;
        let mut transcript = Transcript::default();
        loop {
            transcript.legs += 1;
            transcript.bytes_a_to_b += outgoing.iter().map(|m| m.len() as u64).sum::<u64>();
            transcript.item_bytes += outgoing
                .iter()
                .map(|m| Message::encoded_item_bytes(m))
                .sum::<u64>();
            let step = SyncStep {
                table: table.to_string(),
                partition: p,
                session: session_id,
                messages: outgoing.into_iter().map(ByteBuf::from).collect(),
            };
            let body = encode(&step);
            transcript.wire_bytes +=
                shoal_net::rpc::request_wire_bytes(NodeEndpoint::Sync.name(), body.len());
            let reply = self
                .net()
                .call(peer, NodeEndpoint::Sync.name(), body)
                .await?;
            transcript.wire_bytes += shoal_net::rpc::response_wire_bytes(reply.len());
            let replies: Vec<ByteBuf> =
                rmp_serde::from_slice(&reply).map_err(|e| NodeError::Malformed(e.to_string()))?;
            if !replies.is_empty() {
                transcript.legs += 1;
            }
            transcript.bytes_b_to_a += replies.iter().map(|m| m.len() as u64).sum::<u64>();
            transcript.item_bytes += replies
                .iter()
                .map(|m| Message::encoded_item_bytes(m))
                .sum::<u64>();
            let (s, r, out) = self
                .blocking_sync(table, move || -> Result<_, SyncError> {
                    for raw in replies {
                        session.receive(&*replica, Message::decode(&raw)?)?;
                    }
                    let mut out = Vec::new();
                    while let Some(m) = session.poll_send(&*replica)? {
                        out.push(m.encode());
                    }
                    Ok((session, replica, out))
                })
                .await??;
            session = s;
            replica = r;
            outgoing = out;
            if outgoing.is_empty() {
                if session.is_done() {
                    transcript.a = session.stats();
                    return Ok(transcript);
                }
                return Err(NodeError::Malformed(
                    "the peer stopped answering before the session ended".into(),
                ));
            }
        }
    }
}
