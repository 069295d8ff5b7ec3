//! The node's own RPC endpoints, in one list ([`NodeEndpoint`]): their names on the wire, which
//! an operator may call, and which are answered in place. Dispatch matches on the enum, so an
//! endpoint cannot be named in one place and forgotten in another.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use shoal_net::{NodeId, RemoteError};

/// An RPC endpoint added by a higher layer (the API's node-to-node calls): the caller's id and
/// the request body in, the reply body out.
pub type Endpoint = Arc<
    dyn Fn(NodeId, Vec<u8>) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, RemoteError>> + Send>>
        + Send
        + Sync,
>;

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Other nodes only (heartbeats, replication, sync).
    Nodes,
    /// Also the operator, through the admin endpoint.
    Operator,
}

macro_rules! endpoints {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $caller:ident; )*) => {
        /// The node's own RPC endpoints.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum NodeEndpoint {
            $( $(#[$doc])* $variant, )*
        }

        impl NodeEndpoint {
            /// Every endpoint of the node.
            pub const ALL: &'static [NodeEndpoint] = &[$( NodeEndpoint::$variant, )*];

            /// Its name on the wire.
            pub fn name(self) -> &'static str {
                match self {
                    $( NodeEndpoint::$variant => $name, )*
                }
            }

            /// The endpoint named `name`, if it is one of the node's own. A `match` on the
            /// name, not a scan of the list: every request the node serves asks.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $( $name => Some(NodeEndpoint::$variant), )*
                    _ => None,
                }
            }

            /// Who may call it.
            pub fn caller(self) -> Caller {
                match self {
                    $( NodeEndpoint::$variant => Caller::$caller, )*
                }
            }
        }
    };
}

endpoints! {
    /// A heartbeat: the caller's address in, the peers, layout version and sync progress out.
    Ping = "ping", Nodes;
    /// The current layout.
    LayoutGet = "layout.get", Nodes;
    /// A newer layout, adopted if it is.
    LayoutPush = "layout.push", Nodes;
    /// The cluster as the node sees it.
    AdminStatus = "admin.status", Operator;
    /// A write to the built-in `kv` table at quorum (the operator's `shoal put`).
    AdminPut = "admin.put", Operator;
    /// A read of the built-in `kv` table at quorum (the operator's `shoal get`).
    AdminGet = "admin.get", Operator;
    /// A client write to the `kv` table at quorum; replies with the write's stamp.
    KvPut = "kv.put", Nodes;
    /// A client read of the `kv` table at quorum, with the value's stamp.
    KvGet = "kv.get", Nodes;
    /// Every partition's digest of a table.
    AdminDigests = "admin.digests", Operator;
    /// The layout, what is staged and what applying it would do.
    AdminLayout = "admin.layout", Operator;
    /// The syncers' counters.
    AdminSync = "admin.sync", Operator;
    /// A full scan of one table's syncer, or every table's, now.
    AdminRepair = "admin.repair", Operator;
    /// Stages a role change.
    AdminStage = "admin.stage", Operator;
    /// Applies the staged changes.
    AdminApply = "admin.apply", Operator;
    /// Declares a departed node lost.
    AdminForget = "admin.forget", Operator;
    /// One step of an anti-entropy session.
    Sync = "sync", Nodes;
    /// Encoded items to merge durably.
    TableWrite = "table.write", Nodes;
    /// A point read of an encoded item.
    TableRead = "table.read", Nodes;
    /// A range read of encoded items.
    TableRange = "table.range", Nodes;
    /// Whether the node holds a tombstone (or nothing) and is settled on a layout version.
    GcCheck = "gc.check", Nodes;
    /// Removes a tombstone if unchanged.
    GcDelete = "gc.delete", Nodes;
    /// A replica missed a write of a partition: sync it now.
    SyncMissed = "sync.missed", Nodes;
    /// Pings a member for a node that could not reach it (an indirect probe).
    PingRelay = "ping.relay", Nodes;
    /// A member seen going down or coming up, told by the node that saw it.
    MembersUpdate = "members.update", Nodes;
}

impl NodeEndpoint {
    /// Whether the operator may call it through the admin endpoint.
    pub fn operator_may_call(self) -> bool {
        self.caller() == Caller::Operator
    }

    /// Whether it takes microseconds of CPU and no I/O: a heartbeat (in-memory state only) or
    /// a point read (one B-tree lookup in cached pages). The transport then answers it in
    /// place, on the connection's priority lane. Writes wait for a commit, syncs read
    /// partitions: never in place.
    pub fn answers_at_once(self) -> bool {
        matches!(self, NodeEndpoint::Ping | NodeEndpoint::TableRead)
    }

    /// The names of the endpoints an operator may call.
    pub fn operator_names() -> impl Iterator<Item = &'static str> {
        Self::ALL
            .iter()
            .filter(|e| e.operator_may_call())
            .map(|e| e.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn names_are_unique_and_map_back() {
        let mut names: Vec<&str> = NodeEndpoint::ALL.iter().map(|e| e.name()).collect();
        for e in NodeEndpoint::ALL {
            assert_eq!(NodeEndpoint::from_name(e.name()), Some(*e));
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), NodeEndpoint::ALL.len());
        assert_eq!(NodeEndpoint::from_name("api.key.create"), None);
    }

    #[test]
    pub(super) fn the_operator_reaches_admin_endpoints_only() {
        for e in NodeEndpoint::ALL {
            assert_eq!(
                e.operator_may_call(),
                e.name().starts_with("admin."),
                "{e:?}"
            );
        }
    }
}
