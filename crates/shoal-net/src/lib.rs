//! Shoal's node-to-node network: who a node is, how nodes find out that a peer is one of
//! theirs, and how they call each other.
//!
//! - [`identity`]: each node's static X25519 keypair (kept in its data directory; the public key
//!   is its [`NodeId`]) and the cluster secret.
//! - Connections ([`transport`]) are any byte stream: TCP in the product, a simulated network in
//!   tests. On each, a Noise `XXpsk3` handshake ([`noise`]) authenticates both nodes' static keys
//!   and proves both know the cluster secret (the pre-shared key is derived from it): a peer with
//!   another secret, or not the node expected, is refused.
//! - Frames are length-prefixed and at most one Noise message (64 KiB); larger messages are cut
//!   into several frames and reassembled, up to a configured maximum.
//! - [`rpc`]: one connection per peer pair carries many concurrent requests, matched to replies
//!   by request id, each with a timeout; bounded queues give backpressure.
//!
//! This crate knows nothing of layouts, tables or sync: it moves opaque bodies between
//! authenticated nodes, addressed by endpoint name.

pub mod identity;
mod metrics;
pub mod noise;
pub mod rpc;
pub mod transport;

pub use identity::{ClusterSecret, IdentityError, NodeKey};
pub use metrics::NetMetrics;
pub use rpc::{CallsOnly, ErrorCode, Handler, NetConfig, Network, RemoteError, RpcError};
pub use shoal_id::NodeId;
pub use transport::{TcpTransport, Transport};
