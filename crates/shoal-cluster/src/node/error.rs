//! Why a node's operation failed ([`NodeError`]), and the code each failure carries on the
//! wire, so that a caller can tell "retry later" from "refused" without reading messages.

use shoal_net::{ErrorCode, NodeId, RemoteError, RpcError};
use shoal_sync::session::SyncError;
use shoal_table::TableError;

/// Storage work that panicked or was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("storage task failed: {0}")]
pub struct BlockingFailed(pub(crate) String);

/// Why an operation of a node failed: locally, or on the peer it called.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No table of that name is registered on the node.
    #[error("no table {0}")]
    NoTable(String),
    /// A table of that name is already registered on the node.
    #[error("a table named {0} is already registered")]
    TableExists(String),
    /// No endpoint of that name is served by the node.
    #[error("unknown endpoint {0}")]
    UnknownEndpoint(String),
    /// A higher layer tried to add an endpoint under one of the node's own names.
    #[error("endpoint {0} is the node's own")]
    ReservedEndpoint(String),
    /// A request or reply could not be decoded.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The local table failed (its storage, an undecodable item).
    #[error(transparent)]
    Table(#[from] TableError),
    /// Storage work run off the async workers panicked or was cancelled.
    #[error(transparent)]
    Blocking(#[from] BlockingFailed),
    /// A sync session failed on this side.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// A call to a peer failed, or the peer's handler did (its code says which).
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The partition is being filled by another replica's session: come back later.
    #[error("partition {partition} of {table} is being filled by another replica; retry later")]
    Filling {
        /// The table.
        table: String,
        /// The partition.
        partition: u8,
    },
    /// The calling node was declared lost (`shoal layout forget`).
    #[error("node {0} was forgotten (shoal layout forget): wipe its data before it rejoins")]
    Forgotten(NodeId),
    /// A node cannot be forgotten (see [`crate::history::ForgetError`]).
    #[error(transparent)]
    Forget(#[from] crate::history::ForgetError),
    /// `admin.apply` with nothing staged, or staged changes that give no valid layout.
    #[error("cannot apply the staged changes: {0}")]
    Staged(String),
    /// A replicated read or write of the node's own tables did not reach its quorum.
    #[error(transparent)]
    Quorum(#[from] crate::quorum::QuorumError),
    /// Too few replicas of a partition answered its sync to be sure this node has every
    /// acknowledged write of it.
    #[error(
        "{failed} of {tried} replicas failed: reached {reached} of the {needed} needed in a layout version's {set} nodes"
    )]
    ReplicasUnreached {
        /// Replicas whose session failed.
        failed: usize,
        /// Replicas tried.
        tried: usize,
        /// Nodes of the layout version's set reached (this one included).
        reached: usize,
        /// Nodes of that set needed.
        needed: usize,
        /// Nodes in that set.
        set: usize,
    },
    /// No node stores the partition in the current layout: nowhere to offload it.
    #[error("no node stores partition {0}: nowhere to offload")]
    NowhereToOffload(u8),
    /// Offloading a partition to one of its owners failed.
    #[error("offload to {owner:?}: {source}")]
    Offload {
        /// The owner.
        owner: NodeId,
        /// Why.
        #[source]
        source: Box<NodeError>,
    },
    /// The work panicked (a bug); the partition is retried.
    #[error("panicked: {0}")]
    Panicked(String),
    /// An endpoint added by a higher layer failed.
    #[error(transparent)]
    Endpoint(RemoteError),
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
}

impl NodeError {
    /// What a caller may do about this failure (see [`ErrorCode`]); a failed call to a peer
    /// keeps the code it came with.
    pub fn code(&self) -> ErrorCode {
        match self {
            NodeError::NoTable(_) | NodeError::UnknownEndpoint(_) => ErrorCode::NotFound,
            NodeError::Malformed(_) => ErrorCode::Malformed,
            NodeError::ReservedEndpoint(_)
            | NodeError::TableExists(_)
            | NodeError::Forgotten(_)
            | NodeError::Forget(_)
            | NodeError::Staged(_) => ErrorCode::Refused,
            NodeError::Filling { .. }
            | NodeError::ShuttingDown
            | NodeError::Quorum(_)
            | NodeError::ReplicasUnreached { .. }
            | NodeError::NowhereToOffload(_) => ErrorCode::RetryLater,
            NodeError::Offload { source, .. } => source.code(),
            NodeError::Table(_)
            | NodeError::Blocking(_)
            | NodeError::Sync(_)
            | NodeError::Panicked(_) => ErrorCode::Internal,
            NodeError::Rpc(e) => e.code(),
            NodeError::Endpoint(e) => e.code,
        }
    }

    /// Whether the same operation may succeed later (see [`ErrorCode::is_transient`]).
    pub fn is_transient(&self) -> bool {
        self.code().is_transient()
    }
}

impl From<NodeError> for RemoteError {
    fn from(e: NodeError) -> Self {
        match e {
            // A higher layer's failure goes back as it was given.
            NodeError::Endpoint(r) => r,
            // A peer's failure relayed by this node keeps its message and code.
            NodeError::Rpc(RpcError::Remote(r)) => r,
            other => RemoteError::new(other.code(), other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn failures_carry_the_code_a_caller_acts_on() {
        let busy = NodeError::Filling {
            table: "kv".into(),
            partition: 3,
        };
        assert_eq!(busy.code(), ErrorCode::RetryLater);
        assert!(busy.is_transient());
        let lost = NodeError::Forgotten(NodeId([1; 32]));
        assert_eq!(lost.code(), ErrorCode::Refused);
        assert!(!lost.is_transient());
        assert_eq!(NodeError::NoTable("t".into()).code(), ErrorCode::NotFound);
        let remote: RemoteError = NodeError::Malformed("eof".into()).into();
        assert_eq!(remote.code, ErrorCode::Malformed);
        assert!(remote.message.contains("eof"));
        // A relayed peer failure is not re-wrapped.
        let relayed = NodeError::Rpc(RpcError::Remote(RemoteError::refused("no")));
        assert_eq!(RemoteError::from(relayed), RemoteError::refused("no"));
    }
}
