//! Membership: heartbeats (every peer in a small cluster, a few per period with indirect
//! probes in a large one), what a heartbeat answers (the member list only when the caller's
//! digest of it differs), members seen going down or coming up told to every peer, and
//! layouts spread to every peer.

use std::time::Duration;

use shoal_net::{NodeId, Transport};
use tracing::{debug, info, warn};

use super::endpoint::NodeEndpoint;
use super::error::NodeError;
use super::state::{Node, PeerStatus};
use super::wire::{MemberChange, PingReply, PingRequest, decode, encode};
use crate::layout::Layout;

/// Up to this many peers, every peer is probed every period (small clusters, as before).
pub const FULL_PROBE_MAX_PEERS: usize = 7;
/// Beyond, peers probed per period.
pub const PROBES_PER_PERIOD: usize = 1;
/// Beyond, the shortest period between probes (a shorter heartbeat probes no faster): with a
/// peer probed per second by every node, each node is probed about once a second.
pub const LARGE_PROBE_PERIOD: Duration = Duration::from_secs(1);
/// Peers asked to ping a peer whose probe failed before it is declared down.
pub const INDIRECT_PROBES: usize = 2;

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

    /// One round of heartbeats: bootstrap addresses not yet known, then the peers probed this
    /// period. In a cluster of up to [`FULL_PROBE_MAX_PEERS`] peers every peer is probed each
    /// period and marked down after `down_after` misses in a row. Beyond, each period probes
    /// [`PROBES_PER_PERIOD`] peer(s) in a shuffled round (every peer once per round): a probe
    /// that fails is retried through [`INDIRECT_PROBES`] other peers (`ping.relay`), and a
    /// peer none of them reaches is marked down and the change told to every peer
    /// (`members.update`), as is a peer seen coming back. A node's cost per period then no
    /// longer grows with the cluster, and every node learns of a failure within a few periods.
    pub async fn heartbeat_once(&self) {
        self.dial_bootstrap().await;
        let timeout = self.state.config.heartbeat.max(Duration::from_millis(200));
        let peers = self.peers();
        let large = peers.len() > FULL_PROBE_MAX_PEERS;
        let targets = if large {
            // At most one probe round per `LARGE_PROBE_PERIOD`, however short the heartbeat.
            let mut last = self.state.last_probe.lock();
            let due = last.is_none_or(|t| t.elapsed() >= LARGE_PROBE_PERIOD);
            if !due {
                return;
            }
            *last = Some(tokio::time::Instant::now());
            drop(last);
            self.next_probe_targets(&peers)
        } else {
            peers
        };
        let request = encode(&PingRequest {
            addr: self.public_addr(),
            peers_digest: self.peers_digest(),
        });
        // The targets at once, on the connections' priority lanes: one slow peer does not
        // delay the others' heartbeats, and data queued on a connection does not delay a ping.
        let answers = futures::future::join_all(targets.iter().map(|p| {
            self.net()
                .call_urgent(p.id, NodeEndpoint::Ping.name(), request.clone(), timeout)
        }))
        .await;
        for (p, r) in targets.into_iter().zip(answers) {
            match r
                .map_err(NodeError::from)
                .and_then(|b| decode::<PingReply>(&b))
            {
                Ok(reply) => self.absorb_ping_reply(p.id, reply, large).await,
                Err(e) => {
                    // A peer whose other messages keep arriving is alive, only busy: its late
                    // answer is not a missed heartbeat.
                    let heard_lately = self
                        .net()
                        .silent_for(p.id)
                        .is_some_and(|silence| silence < timeout);
                    if heard_lately {
                        debug!(peer = ?p.id, error = %e, "heartbeat late from a peer still heard from");
                    } else if large {
                        self.probe_indirectly(&p, timeout).await;
                    } else {
                        debug!(peer = ?p.id, error = %e, "heartbeat missed");
                        self.record(p.id, p.addr.clone(), false);
                    }
                }
            }
        }
    }

    /// Connects to the bootstrap addresses not yet known as a peer.
    async fn dial_bootstrap(&self) {
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
    }

    /// What a heartbeat's answer tells: the peer is up, its progress through the layout
    /// history, the members it knows (when they differ), a newer layout.
    async fn absorb_ping_reply(&self, peer: NodeId, reply: PingReply, large: bool) {
        if self.heard(peer, reply.addr.clone()) && large {
            self.announce(MemberChange {
                id: peer,
                addr: reply.addr.clone(),
                up: true,
            });
        }
        self.note_synced(peer, reply.synced).await;
        self.state.history.write().record_acked(peer, reply.acked);
        self.state
            .history
            .write()
            .record_offloaded(peer, reply.offloaded);
        if !reply.forgotten.is_empty() {
            self.absorb_forgotten(&reply.forgotten).await;
        }
        for (id, addr) in reply.peers {
            if id != self.id() {
                self.learn(id, addr);
            }
        }
        if reply.layout_version > self.layout().version {
            self.fetch_layout(peer).await;
        }
    }

    /// The next peers to probe in a large cluster: a shuffled round over every peer, so each
    /// is probed by this node once per round and, over the cluster, about once per period.
    fn next_probe_targets(&self, peers: &[PeerStatus]) -> Vec<PeerStatus> {
        let mut order = self.state.probe_order.lock();
        let mut targets = Vec::with_capacity(PROBES_PER_PERIOD);
        while targets.len() < PROBES_PER_PERIOD.min(peers.len()) {
            if order.0.is_empty() {
                order.1 += 1;
                let round = order.1;
                let mut ids: Vec<NodeId> = peers.iter().map(|p| p.id).collect();
                // Shuffled by a keyed hash: different on every node and in every round, and
                // the same in every replay of a simulation.
                ids.sort_by_key(|id| {
                    let mut h = blake3::Hasher::new();
                    h.update(&self.id().0);
                    h.update(&round.to_le_bytes());
                    h.update(&id.0);
                    *h.finalize().as_bytes()
                });
                order.0 = ids;
            }
            let Some(id) = order.0.pop() else { break };
            if let Some(p) = peers.iter().find(|p| p.id == id)
                && !targets.iter().any(|t: &PeerStatus| t.id == id)
            {
                targets.push(p.clone());
            }
        }
        targets
    }

    /// A probe of `peer` failed: asks up to [`INDIRECT_PROBES`] other peers to ping it; if
    /// none can, it is down, and every peer is told.
    async fn probe_indirectly(&self, peer: &PeerStatus, timeout: Duration) {
        let helpers: Vec<NodeId> = self
            .peers()
            .into_iter()
            .filter(|p| p.up && p.id != peer.id)
            .map(|p| p.id)
            .take(INDIRECT_PROBES)
            .collect();
        let body = encode(&(peer.id, peer.addr.clone()));
        let relayed = futures::future::join_all(helpers.iter().map(|h| {
            self.net().call_urgent(
                *h,
                NodeEndpoint::PingRelay.name(),
                body.clone(),
                timeout * 3,
            )
        }))
        .await;
        let reached = relayed
            .into_iter()
            .any(|r| r.ok().and_then(|b| decode::<bool>(&b).ok()) == Some(true));
        if reached {
            debug!(peer = ?peer.id, "probe failed, but a relay reached the peer");
            return;
        }
        if self.mark_down(peer.id) {
            self.announce(MemberChange {
                id: peer.id,
                addr: peer.addr.clone(),
                up: false,
            });
        }
    }

    /// `ping.relay`: pings a member for a node that could not reach it; answers whether it
    /// answered.
    pub(super) async fn serve_ping_relay(&self, body: &[u8]) -> Result<Vec<u8>, NodeError> {
        let (target, addr): (NodeId, String) = decode(body)?;
        if target == self.id() {
            return Ok(encode(&true));
        }
        self.learn(target, addr);
        let timeout = self.state.config.heartbeat.max(Duration::from_millis(200));
        let request = encode(&PingRequest {
            addr: self.public_addr(),
            peers_digest: self.peers_digest(),
        });
        let answered = self
            .net()
            .call_urgent(target, NodeEndpoint::Ping.name(), request, timeout)
            .await
            .is_ok();
        Ok(encode(&answered))
    }

    /// Tells every peer (but the subject) of a member's change, in the background.
    fn announce(&self, change: MemberChange) {
        let body = encode(&vec![change.clone()]);
        let net = self.net().clone();
        let peers: Vec<NodeId> = self
            .peers()
            .into_iter()
            .map(|p| p.id)
            .filter(|id| *id != change.id)
            .collect();
        tokio::spawn(async move {
            let calls = peers
                .iter()
                .map(|p| net.call(*p, NodeEndpoint::MembersUpdate.name(), body.clone()));
            futures::future::join_all(calls).await;
        });
    }

    /// `members.update`: members another node saw change. A member said to be up is taken as
    /// up (a probe corrects a mistake); one said to be down only if this node has not heard
    /// from it lately itself. Nothing is passed further.
    pub(super) fn serve_members_update(&self, body: &[u8]) -> Result<Vec<u8>, NodeError> {
        let changes: Vec<MemberChange> = decode(body)?;
        let window = self.state.config.heartbeat * self.state.config.down_after.max(1);
        for c in changes {
            if c.id == self.id() {
                continue;
            }
            if c.up {
                self.heard(c.id, c.addr);
            } else {
                let heard_lately = self.net().silent_for(c.id).is_some_and(|s| s < window);
                if !heard_lately {
                    self.mark_down(c.id);
                }
            }
        }
        Ok(Vec::new())
    }

    /// A digest of the members this node knows, itself included, with their addresses.
    pub(super) fn peers_digest(&self) -> u64 {
        let mut members: Vec<(NodeId, String)> =
            self.peers().into_iter().map(|p| (p.id, p.addr)).collect();
        members.push((self.id(), self.public_addr()));
        members.sort();
        let mut h = blake3::Hasher::new();
        for (id, addr) in &members {
            h.update(&id.0);
            h.update(addr.as_bytes());
            h.update(&[0]);
        }
        let bytes = h.finalize();
        u64::from_le_bytes(bytes.as_bytes()[..8].try_into().expect("8 bytes"))
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

    /// A heartbeat's outcome for peer `id`: answered (up at once), or missed (down after
    /// `down_after` misses in a row).
    pub(super) fn record(&self, id: NodeId, addr: String, answered: bool) {
        if answered {
            self.heard(id, addr);
            return;
        }
        let down_after = self.state.config.down_after;
        let mut peers = self.state.peers.lock();
        let p = peers.entry(id).or_insert_with(|| PeerStatus {
            id,
            addr,
            up: false,
            missed: 0,
        });
        p.missed += 1;
        if p.up && p.missed >= down_after {
            p.up = false;
            warn!(peer = ?id, missed = p.missed, "peer down");
        }
    }

    /// Peer `id` answered, or spoke, at `addr`: it is up. Returns whether it was not.
    pub(super) fn heard(&self, id: NodeId, addr: String) -> bool {
        let mut peers = self.state.peers.lock();
        let p = peers.entry(id).or_insert_with(|| PeerStatus {
            id,
            addr: addr.clone(),
            up: false,
            missed: 0,
        });
        let was_down = !p.up;
        if was_down {
            info!(peer = ?id, "peer up");
            // Syncers queue what they share with it at once.
            let _ = self.state.peer_up_tx.send(id);
        }
        p.up = true;
        p.missed = 0;
        p.addr = addr.clone();
        self.net().add_peer_addr(id, addr);
        was_down
    }

    /// Marks peer `id` down; returns whether it was up.
    pub(super) fn mark_down(&self, id: NodeId) -> bool {
        let mut peers = self.state.peers.lock();
        let Some(p) = peers.get_mut(&id) else {
            return false;
        };
        let was_up = p.up;
        if was_up {
            warn!(peer = ?id, "peer down");
        }
        p.up = false;
        was_up
    }

    /// Answers a heartbeat: records the caller as up at the address it gives, and replies with
    /// this node's peers, layout version and progress through the layout history.
    pub(super) fn serve_ping(&self, from: NodeId, body: &[u8]) -> Result<Vec<u8>, NodeError> {
        // A node older than the digest sends its address alone.
        let request = decode::<PingRequest>(body).ok().or_else(|| {
            decode::<String>(body).ok().map(|addr| PingRequest {
                addr,
                peers_digest: 0,
            })
        });
        let mut callers_digest = 0;
        if let Some(r) = request
            && !r.addr.is_empty()
        {
            callers_digest = r.peers_digest;
            let newly_up = self.heard(from, r.addr.clone());
            if newly_up && self.peers().len() > FULL_PROBE_MAX_PEERS {
                self.announce(MemberChange {
                    id: from,
                    addr: r.addr,
                    up: true,
                });
            }
        }
        let digest = self.peers_digest();
        let peers = if callers_digest == digest {
            Vec::new()
        } else {
            let mut peers: Vec<(NodeId, String)> =
                self.peers().into_iter().map(|p| (p.id, p.addr)).collect();
            peers.push((self.id(), self.public_addr()));
            peers
        };
        Ok(encode(&PingReply {
            addr: self.public_addr(),
            layout_version: self.layout().version,
            peers,
            peers_digest: digest,
            synced: self.synced_version(),
            acked: self.acked_version(),
            offloaded: self.offloaded_version(),
            forgotten: self.history().forgotten.into_iter().collect(),
        }))
    }
}
