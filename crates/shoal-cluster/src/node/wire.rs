//! The messages nodes exchange on the node's own endpoints, in named MessagePack, and how
//! they are encoded.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use shoal_net::NodeId;

use super::error::NodeError;

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct TableWrite {
    pub(super) table: String,
    pub(super) items: Vec<ByteBuf>,
}

/// A point read, borrowed from the caller's key when sent and from the message when served.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct TableRead<'a> {
    #[serde(borrow)]
    pub(super) table: std::borrow::Cow<'a, str>,
    #[serde(borrow, with = "serde_bytes")]
    pub(super) key: std::borrow::Cow<'a, [u8]>,
}

/// A range of a table's engine keys, as sent to a replica.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct TableRange {
    pub(super) table: String,
    pub(super) start: std::ops::Bound<ByteBuf>,
    pub(super) end: std::ops::Bound<ByteBuf>,
    pub(super) reverse: bool,
    pub(super) limit: u32,
}

/// Most items one range read returns, whatever the caller asks.
pub const MAX_RANGE_ITEMS: usize = 1000;

pub(super) fn bound_to_wire(b: &std::ops::Bound<Vec<u8>>) -> std::ops::Bound<ByteBuf> {
    match b {
        std::ops::Bound::Included(k) => std::ops::Bound::Included(ByteBuf::from(k.clone())),
        std::ops::Bound::Excluded(k) => std::ops::Bound::Excluded(ByteBuf::from(k.clone())),
        std::ops::Bound::Unbounded => std::ops::Bound::Unbounded,
    }
}

pub(super) fn bound_from_wire(b: std::ops::Bound<ByteBuf>) -> std::ops::Bound<Vec<u8>> {
    match b {
        std::ops::Bound::Included(k) => std::ops::Bound::Included(k.into_vec()),
        std::ops::Bound::Excluded(k) => std::ops::Bound::Excluded(k.into_vec()),
        std::ops::Bound::Unbounded => std::ops::Bound::Unbounded,
    }
}

/// A heartbeat: the caller's address and a digest of the members it knows. (A node older than
/// the digest sends its address alone, as a string.)
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PingRequest {
    pub(super) addr: String,
    pub(super) peers_digest: u64,
}

/// A change of a member's state, told to every peer by the node that saw it (large clusters:
/// see `membership`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct MemberChange {
    pub(super) id: NodeId,
    pub(super) addr: String,
    pub(super) up: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PingReply {
    pub(super) addr: String,
    pub(super) layout_version: u64,
    /// Every member the answering node knows, itself included, with its address: sent only
    /// when the caller's digest of them differs from the answering node's (or the caller sent
    /// none), so that an idle cluster's heartbeats do not carry the member list.
    #[serde(default)]
    pub(super) peers: Vec<(NodeId, String)>,
    /// The answering node's digest of the members it knows.
    #[serde(default)]
    pub(super) peers_digest: u64,
    /// The highest layout version whose data the answering node has finished syncing.
    #[serde(default)]
    pub(super) synced: u64,
    /// The highest layout version the answering node acknowledged (see `LayoutHistory`).
    #[serde(default)]
    pub(super) acked: u64,
    /// The highest layout version up to which the answering node has offloaded.
    #[serde(default)]
    pub(super) offloaded: u64,
    /// The nodes the answering node knows were forgotten (see `LayoutHistory::forgotten`).
    #[serde(default)]
    pub(super) forgotten: Vec<NodeId>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SyncStep {
    pub(super) table: String,
    pub(super) partition: u8,
    pub(super) session: u64,
    pub(super) messages: Vec<ByteBuf>,
}

/// Bytes one sync call occupies on the wire between two nodes: the initiator's leg (messages of
/// the given encoded sizes) in a `SyncStep` request, the responder's leg as its reply, each in
/// its RPC envelope and Noise frames (session numbers taken as 32-bit). What the in-process
/// benchmark adds to a session's messages to report the bytes a cluster would carry.
pub fn sync_call_wire_bytes(table: &str, partition: u8, request: &[usize], reply: &[usize]) -> u64 {
    let step = SyncStep {
        table: table.to_string(),
        partition,
        session: u64::from(u32::MAX),
        messages: request
            .iter()
            .map(|&n| ByteBuf::from(vec![0u8; n]))
            .collect(),
    };
    let reply: Vec<ByteBuf> = reply.iter().map(|&n| ByteBuf::from(vec![0u8; n])).collect();
    shoal_net::rpc::request_wire_bytes("sync", encode(&step).len())
        + shoal_net::rpc::response_wire_bytes(encode(&reply).len())
}

pub(super) fn encode<V: Serialize>(v: &V) -> Vec<u8> {
    // Most messages are an item or a few: starting at this size spares the regrowths from
    // empty (8, 16, 32... bytes) that made up much of a point read's allocation work.
    let mut out = Vec::with_capacity(256);
    rmp_serde::encode::write_named(&mut out, v).expect("cluster messages encode");
    out
}

pub(super) fn decode<'a, V: Deserialize<'a>>(b: &'a [u8]) -> Result<V, NodeError> {
    rmp_serde::from_slice(b).map_err(|e| NodeError::Malformed(e.to_string()))
}
