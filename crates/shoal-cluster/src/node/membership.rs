//! Membership: heartbeats to every known peer (and the bootstrap addresses), what a heartbeat
//! answers, peers counted up and down, and layouts spread to every peer.

use std::time::Duration;

use shoal_net::{NodeId, Transport};
use tracing::{debug, info, warn};

use super::endpoint::NodeEndpoint;
use super::error::NodeError;
use super::state::{Node, PeerStatus};
use super::wire::{PingReply, decode, encode};
use crate::layout::Layout;

impl<T: Transport> Node<T> {
    /// Adopts `layout` if newer and pushes it to every known peer.
    pub async fn set_layout(&self, layout: Layout) {
        self.merge_layout(&layout).await;
        let body = encode(&self.layout());
        for p in self.peers() {
            if let Err(e) = self
                .net()
                .call(p.id, NodeEndpoint::LayoutPush.name(), body.clone())
                .await
            {
                debug!(peer = ?p.id, error = %e, "layout push failed");
            }
        }
    }

    /// One round of heartbeats: bootstrap addresses not yet known, then every known peer.
    pub async fn heartbeat_once(&self) {
        let known: Vec<String> = self.peers().into_iter().map(|p| p.addr).collect();
        for addr in &self.state.config.bootstrap {
            if known.contains(addr) || *addr == self.public_addr() {
                continue;
            }
            match self.net().connect(addr, None).await {
                Ok(id) if id != self.id() => {
                    self.record(id, addr.clone(), true);
                }
                Ok(_) => {}
                Err(e) => debug!(%addr, error = %e, "bootstrap peer unreachable"),
            }
        }
        let timeout = self.state.config.heartbeat.max(Duration::from_millis(200));
        // Every peer at once, on the connections' priority lanes: one slow peer does not delay
        // the others' heartbeats, and data queued on a connection does not delay its ping.
        let peers = self.peers();
        let ping = encode(&self.public_addr());
        let answers = futures::future::join_all(peers.iter().map(|p| {
            self.net()
                .call_urgent(p.id, NodeEndpoint::Ping.name(), ping.clone(), timeout)
        }))
        .await;
        for (p, r) in peers.into_iter().zip(answers) {
            match r
                .map_err(NodeError::from)
                .and_then(|b| decode::<PingReply>(&b))
            {
                Ok(reply) => {
                    self.record(p.id, reply.addr.clone(), true);
                    self.note_synced(p.id, reply.synced).await;
                    self.state.history.write().record_acked(p.id, reply.acked);
                    self.state
                        .history
                        .write()
                        .record_offloaded(p.id, reply.offloaded);
                    if !reply.forgotten.is_empty() {
                        self.absorb_forgotten(&reply.forgotten).await;
                    }
                    for (id, addr) in reply.peers {
                        if id != self.id() {
                            self.learn(id, addr);
                        }
                    }
                    if reply.layout_version > self.layout().version {
                        self.fetch_layout(p.id).await;
                    }
                }
                Err(e) => {
                    // A peer whose other messages keep arriving is alive, only busy: its late
                    // answer is not a missed heartbeat.
                    let heard_lately = self
                        .net()
                        .silent_for(p.id)
                        .is_some_and(|silence| silence < timeout);
                    if heard_lately {
                        debug!(peer = ?p.id, error = %e, "heartbeat late from a peer still heard from");
                    } else {
                        debug!(peer = ?p.id, error = %e, "heartbeat missed");
                        self.record(p.id, p.addr.clone(), false);
                    }
                }
            }
        }
    }

    pub(super) async fn fetch_layout(&self, peer: NodeId) {
        match self
            .net()
            .call(peer, NodeEndpoint::LayoutGet.name(), Vec::new())
            .await
        {
            Ok(b) => match decode::<Layout>(&b) {
                Ok(l) => {
                    if self.merge_layout(&l).await {
                        info!(version = l.version, "adopted a newer layout");
                    }
                }
                Err(e) => warn!(peer = ?peer, error = %e, "bad layout"),
            },
            Err(e) => debug!(peer = ?peer, error = %e, "layout fetch failed"),
        }
    }

    pub(super) fn learn(&self, id: NodeId, addr: String) {
        let mut peers = self.state.peers.lock();
        peers.entry(id).or_insert_with(|| {
            self.net().add_peer_addr(id, addr.clone());
            PeerStatus {
                id,
                addr,
                up: false,
                missed: 0,
            }
        });
    }

    pub(super) fn record(&self, id: NodeId, addr: String, answered: bool) {
        let down_after = self.state.config.down_after;
        let mut peers = self.state.peers.lock();
        let p = peers.entry(id).or_insert_with(|| PeerStatus {
            id,
            addr: addr.clone(),
            up: false,
            missed: 0,
        });
        if answered {
            if !p.up {
                info!(peer = ?id, "peer up");
                // Syncers queue what they share with it at once.
                let _ = self.state.peer_up_tx.send(id);
            }
            p.up = true;
            p.missed = 0;
            p.addr = addr.clone();
            self.net().add_peer_addr(id, addr);
        } else {
            p.missed += 1;
            if p.up && p.missed >= down_after {
                p.up = false;
                warn!(peer = ?id, missed = p.missed, "peer down");
            }
        }
    }

    /// Answers a heartbeat: records the caller as up at the address it gives, and replies with
    /// this node's peers, layout version and progress through the layout history.
    pub(super) fn serve_ping(&self, from: NodeId, body: &[u8]) -> Result<Vec<u8>, NodeError> {
        if let Ok(addr) = decode::<String>(body)
            && !addr.is_empty()
        {
            self.record(from, addr, true);
        }
        let mut peers: Vec<(NodeId, String)> =
            self.peers().into_iter().map(|p| (p.id, p.addr)).collect();
        peers.push((self.id(), self.public_addr()));
        Ok(encode(&PingReply {
            addr: self.public_addr(),
            layout_version: self.layout().version,
            peers,
            synced: self.synced_version(),
            acked: self.acked_version(),
            offloaded: self.offloaded_version(),
            forgotten: self.history().forgotten.into_iter().collect(),
        }))
    }
}
