//! The API's node-to-node RPC endpoints ([`ApiEndpoint`]), added to the node's own: one list
//! from which their registration and the operator's allow-list derive.

use shoal_cluster::node::NodeEndpoint;

/// An RPC endpoint the API adds to its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiEndpoint {
    /// A node's local counts of a bucket's index (the K2V `ReadIndex` fan-out).
    K2vIndex,
    /// Creates an access key (`shoal key create`).
    KeyCreate,
    /// Lists the access keys (`shoal key list`).
    KeyList,
    /// Creates a bucket (`shoal bucket create`).
    BucketCreate,
    /// Grants a key access to a bucket (`shoal bucket allow`).
    BucketAllow,
    /// Lists the buckets (`shoal bucket list`).
    BucketList,
    /// The items one node stores under a partition key (operators, tests).
    LocalItems,
}

impl ApiEndpoint {
    /// Every endpoint the API adds.
    pub const ALL: &'static [ApiEndpoint] = &[
        ApiEndpoint::K2vIndex,
        ApiEndpoint::KeyCreate,
        ApiEndpoint::KeyList,
        ApiEndpoint::BucketCreate,
        ApiEndpoint::BucketAllow,
        ApiEndpoint::BucketList,
        ApiEndpoint::LocalItems,
    ];

    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ApiEndpoint::K2vIndex => "k2v.index",
            ApiEndpoint::KeyCreate => "api.key.create",
            ApiEndpoint::KeyList => "api.key.list",
            ApiEndpoint::BucketCreate => "api.bucket.create",
            ApiEndpoint::BucketAllow => "api.bucket.allow",
            ApiEndpoint::BucketList => "api.bucket.list",
            ApiEndpoint::LocalItems => "api.local.items",
        }
    }

    /// The endpoint named `name`, if the API adds it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|e| e.name() == name)
    }

    /// Whether the operator may call it through the admin endpoint (everything but the
    /// nodes' index fan-out).
    pub fn operator_may_call(self) -> bool {
        self != ApiEndpoint::K2vIndex
    }
}

/// Whether the operator may call the endpoint `name` through the admin endpoint: the node's
/// admin endpoints and the API's key, bucket and inspection calls. Everything else (sync
/// sessions, replication writes, index fan-outs) is for nodes only.
pub fn operator_may_call(name: &str) -> bool {
    NodeEndpoint::from_name(name).is_some_and(NodeEndpoint::operator_may_call)
        || ApiEndpoint::from_name(name).is_some_and(ApiEndpoint::operator_may_call)
}

/// The names of every endpoint the operator may call.
pub fn operator_endpoints() -> Vec<&'static str> {
    NodeEndpoint::operator_names()
        .chain(
            ApiEndpoint::ALL
                .iter()
                .filter(|e| e.operator_may_call())
                .map(|e| e.name()),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_list_holds_what_the_cli_calls_and_nothing_for_nodes_only() {
        let list = operator_endpoints();
        for name in [
            "admin.status",
            "admin.layout",
            "admin.stage",
            "admin.apply",
            "admin.forget",
            "admin.put",
            "admin.get",
            "admin.digests",
            "admin.sync",
            "admin.repair",
            "api.key.create",
            "api.key.list",
            "api.bucket.create",
            "api.bucket.allow",
            "api.bucket.list",
            "api.local.items",
        ] {
            assert!(list.contains(&name), "{name}");
            assert!(operator_may_call(name), "{name}");
        }
        for name in [
            "sync",
            "table.write",
            "gc.delete",
            "k2v.index",
            "ping",
            "nope",
        ] {
            assert!(!operator_may_call(name), "{name}");
        }
        assert_eq!(list.len(), 16);
    }

    #[test]
    fn names_do_not_collide_with_the_nodes_own() {
        for e in ApiEndpoint::ALL {
            assert_eq!(ApiEndpoint::from_name(e.name()), Some(*e));
            assert!(NodeEndpoint::from_name(e.name()).is_none(), "{e:?}");
        }
    }
}
