//! Dispatch: every request a peer (or the operator, through the API's admin endpoint) sends
//! the node, by [`NodeEndpoint`], to the concern that serves it; anything else to the
//! endpoints a higher layer added.

use std::future::Future;
use std::pin::Pin;

use serde_bytes::ByteBuf;
use shoal_net::{Handler, NodeId, RemoteError, Transport};

use super::endpoint::NodeEndpoint;
use super::error::NodeError;
use super::state::{Node, State};
use super::wire::{decode, encode};
use crate::kv::{KvItem, KvTable};
use crate::layout::{Layout, NodeRole};
use crate::replication::Replicated;

/// The transport's handler of a node's requests. Holds the node weakly: a node whose every
/// handle dropped answers that it is shutting down.
pub(super) struct NodeHandler<T: Transport>(pub(super) std::sync::Weak<State<T>>);

impl<T: Transport> Handler for NodeHandler<T> {
    fn handle(
        &self,
        from: NodeId,
        endpoint: String,
        body: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, RemoteError>> + Send>> {
        let state = self.0.clone();
        Box::pin(async move {
            let Some(state) = state.upgrade() else {
                return Err(NodeError::ShuttingDown.into());
            };
            Node { state }
                .serve(from, &endpoint, body)
                .await
                .map_err(RemoteError::from)
        })
    }

    fn answers_at_once(&self, endpoint: &str) -> bool {
        NodeEndpoint::from_name(endpoint).is_some_and(NodeEndpoint::answers_at_once)
    }
}

impl<T: Transport> Node<T> {
    /// Serves one request from `from`.
    pub(super) async fn serve(
        &self,
        from: NodeId,
        endpoint: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, NodeError> {
        let Some(known) = NodeEndpoint::from_name(endpoint) else {
            let added = self.added_endpoint(endpoint);
            return match added {
                Some(e) => e(from, body).await.map_err(NodeError::Endpoint),
                None => Err(NodeError::UnknownEndpoint(endpoint.to_string())),
            };
        };
        match known {
            NodeEndpoint::Ping => self.serve_ping(from, &body),
            NodeEndpoint::LayoutGet => Ok(encode(&self.layout())),
            NodeEndpoint::LayoutPush => {
                let l: Layout = decode(&body)?;
                self.merge_layout(&l).await;
                Ok(Vec::new())
            }
            NodeEndpoint::AdminStatus => Ok(encode(&self.status())),
            NodeEndpoint::AdminPut => self.serve_admin_put(&body).await,
            NodeEndpoint::AdminGet => self.serve_admin_get(&body).await,
            NodeEndpoint::KvPut => self.serve_kv_put(&body).await,
            NodeEndpoint::KvGet => self.serve_kv_get(&body).await,
            NodeEndpoint::AdminDigests => {
                let name: String = decode(&body)?;
                Ok(encode(&self.digests(&name).await?))
            }
            NodeEndpoint::AdminLayout => Ok(encode(&self.layout_report())),
            NodeEndpoint::AdminSync => Ok(encode(&self.syncer_stats())),
            NodeEndpoint::AdminRepair => {
                let table: Option<String> = decode(&body)?;
                Ok(encode(&self.request_repair(table.as_deref())?))
            }
            NodeEndpoint::AdminStage => {
                let (node, role): (NodeId, Option<NodeRole>) = decode(&body)?;
                self.stage(node, role).await;
                Ok(encode(&self.layout_report()))
            }
            NodeEndpoint::AdminForget => {
                let node: NodeId = decode(&body)?;
                self.forget(node).await?;
                Ok(encode(&self.layout_report()))
            }
            NodeEndpoint::AdminApply => {
                self.apply_staged().await?;
                Ok(encode(&self.layout_report()))
            }
            NodeEndpoint::Sync => self.serve_sync(from, body).await,
            NodeEndpoint::TableWrite => self.serve_write(&body).await,
            NodeEndpoint::TableRead => self.serve_read(&body),
            NodeEndpoint::TableRange => self.serve_range(&body).await,
            NodeEndpoint::GcCheck => self.serve_gc_check(&body).await,
            NodeEndpoint::GcDelete => self.serve_gc_delete(&body).await,
            NodeEndpoint::SyncMissed => self.serve_missed(&body),
            NodeEndpoint::PingRelay => self.serve_ping_relay(&body).await,
            NodeEndpoint::MembersUpdate => self.serve_members_update(&body),
        }
    }

    /// Calls `endpoint` on `node`; on this node, the endpoint runs in place.
    pub async fn call_endpoint(
        &self,
        node: NodeId,
        endpoint: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, NodeError> {
        if node == self.id() {
            return self.serve(node, endpoint, body).await;
        }
        Ok(self.net().call(node, endpoint, body).await?)
    }

    /// Every partition's digest of table `name`: (xor, check, count).
    pub(super) async fn digests(&self, name: &str) -> Result<Vec<(u64, u32, u64)>, NodeError> {
        let table = self.table(name)?;
        let digests = self
            .blocking(move || {
                (0..=255u8)
                    .map(|p| {
                        let r = table.replica(p);
                        r.head()
                            .map(|h| (h.digest.xor, h.digest.check, h.digest.count))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await??;
        Ok(digests)
    }

    /// `shoal put`: `copies` writes (sort keys suffixed with their number when more than one)
    /// of the `kv` table at quorum.
    pub(super) async fn serve_admin_put(&self, body: &[u8]) -> Result<Vec<u8>, NodeError> {
        let (pk, sk, value, copies): (String, String, Option<ByteBuf>, u32) = decode(body)?;
        let rep = Replicated::<KvTable, T>::new(self.clone());
        let now = self.now_ms();
        let value = value.map(ByteBuf::into_vec);
        for i in 0..copies.max(1) {
            let sk = if copies > 1 {
                format!("{sk}{i:06}")
            } else {
                sk.clone()
            };
            rep.insert(&KvItem::new(&pk, &sk, value.clone(), now, self.id()))
                .await?;
        }
        Ok(encode(&copies.max(1)))
    }

    /// `shoal get`: the value of a `kv` item read at quorum (`None` if absent or deleted).
    pub(super) async fn serve_admin_get(&self, body: &[u8]) -> Result<Vec<u8>, NodeError> {
        let (pk, sk): (String, String) = decode(body)?;
        let rep = Replicated::<KvTable, T>::new(self.clone());
        let item = rep.get(&pk, &sk).await?;
        Ok(encode(
            &item.and_then(|i| i.value.get().clone()).map(ByteBuf::from),
        ))
    }

    /// A client write on the `kv` table at quorum; replies with the write's stamp.
    pub(super) async fn serve_kv_put(&self, body: &[u8]) -> Result<Vec<u8>, NodeError> {
        let (pk, sk, value): (String, String, Option<ByteBuf>) = decode(body)?;
        let rep = Replicated::<KvTable, T>::new(self.clone());
        let now = self.now_ms();
        let item = KvItem::new(&pk, &sk, value.map(ByteBuf::into_vec), now, self.id());
        rep.insert(&item).await?;
        Ok(encode(&(now, self.id())))
    }

    /// A client read at quorum: the value (`None` if deleted) with its stamp.
    pub(super) async fn serve_kv_get(&self, body: &[u8]) -> Result<Vec<u8>, NodeError> {
        let (pk, sk): (String, String) = decode(body)?;
        let rep = Replicated::<KvTable, T>::new(self.clone());
        let item = rep.get(&pk, &sk).await?;
        Ok(encode(&item.map(|i| {
            let stamp = i.value.stamp();
            (
                i.value.get().clone().map(ByteBuf::from),
                stamp.time,
                stamp.node,
            )
        })))
    }
}
