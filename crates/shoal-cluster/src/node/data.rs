//! The data plane: encoded items written to, read from and ranged over on a replica, this node
//! or a peer, and the endpoints that serve them.

use serde_bytes::ByteBuf;
use shoal_net::{NodeId, Transport};

use super::endpoint::NodeEndpoint;
use super::error::NodeError;
use super::state::Node;
use super::wire::{
    MAX_RANGE_ITEMS, TableRange, TableRead, TableWrite, bound_from_wire, bound_to_wire, decode,
    encode,
};

impl<T: Transport> Node<T> {
    /// Sends encoded items of `table` to `node` (this node or a peer) to be merged durably.
    pub async fn write_to(
        &self,
        node: NodeId,
        table: &str,
        items: Vec<Vec<u8>>,
    ) -> Result<(), NodeError> {
        if node == self.id() {
            let t = self.table(table)?;
            t.merge_encoded(items).await?;
            return Ok(());
        }
        let body = encode(&TableWrite {
            table: table.to_string(),
            items: items.into_iter().map(ByteBuf::from).collect(),
        });
        self.net()
            .call(node, NodeEndpoint::TableWrite.name(), body)
            .await?;
        Ok(())
    }

    /// Reads the encoded item under `key` of `table` from this node's own store.
    pub fn read_local(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, NodeError> {
        // A point read is a few microseconds of B-tree lookup in cached pages: done in place,
        // it costs less than handing it to the blocking pool and back.
        Ok(self.table(table)?.get_encoded(key)?)
    }

    /// Reads the encoded item under `key` of `table` from `node` (this node or a peer).
    pub async fn read_from(
        &self,
        node: NodeId,
        table: &str,
        key: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, NodeError> {
        if node == self.id() {
            return self.read_local(table, &key);
        }
        let body = encode(&TableRead {
            table: table.into(),
            key: key.into(),
        });
        let reply = self
            .net()
            .call(node, NodeEndpoint::TableRead.name(), body)
            .await?;
        let v: Option<ByteBuf> = decode(&reply)?;
        Ok(v.map(ByteBuf::into_vec))
    }

    /// Reads up to `limit` (at most [`MAX_RANGE_ITEMS`]) encoded items of `table` in `range`
    /// from `node` (this node or a peer).
    pub async fn range_from(
        &self,
        node: NodeId,
        table: &str,
        range: shoal_storage::KeyRange,
        reverse: bool,
        limit: usize,
    ) -> Result<shoal_storage::Entries, NodeError> {
        let limit = limit.min(MAX_RANGE_ITEMS);
        if node == self.id() {
            let t = self.table(table)?;
            return Ok(self
                .blocking(move || t.scan_range(&range, reverse, limit))
                .await??);
        }
        let body = encode(&TableRange {
            table: table.to_string(),
            start: bound_to_wire(&range.start),
            end: bound_to_wire(&range.end),
            reverse,
            limit: limit as u32,
        });
        let reply = self
            .net()
            .call(node, NodeEndpoint::TableRange.name(), body)
            .await?;
        let v: Vec<(ByteBuf, ByteBuf)> = decode(&reply)?;
        Ok(v.into_iter()
            .map(|(k, v)| (k.into_vec(), v.into_vec()))
            .collect())
    }

    /// `table.write`: merges the items durably; replies with how many changed.
    pub(super) async fn serve_write(&self, body: &[u8]) -> Result<Vec<u8>, NodeError> {
        let w: TableWrite = decode(body)?;
        let table = self.table(&w.table)?;
        let items = w.items.into_iter().map(ByteBuf::into_vec).collect();
        let changed = table.merge_encoded(items).await?;
        Ok(encode(&changed))
    }

    /// `table.read`: in place, as for a local point read.
    pub(super) fn serve_read(&self, body: &[u8]) -> Result<Vec<u8>, NodeError> {
        let r: TableRead = decode(body)?;
        let table = self.table(&r.table)?;
        let v = table.get_encoded(&r.key)?;
        Ok(encode(&v.as_deref().map(serde_bytes::Bytes::new)))
    }

    /// `table.range`: at most [`MAX_RANGE_ITEMS`] items, whatever the caller asks.
    pub(super) async fn serve_range(&self, body: &[u8]) -> Result<Vec<u8>, NodeError> {
        let r: TableRange = decode(body)?;
        let table = self.table(&r.table)?;
        let range = shoal_storage::KeyRange {
            start: bound_from_wire(r.start),
            end: bound_from_wire(r.end),
        };
        let limit = (r.limit as usize).min(MAX_RANGE_ITEMS);
        let v = self
            .blocking(move || table.scan_range(&range, r.reverse, limit))
            .await??;
        let v: Vec<(ByteBuf, ByteBuf)> = v
            .into_iter()
            .map(|(k, v)| (ByteBuf::from(k), ByteBuf::from(v)))
            .collect();
        Ok(encode(&v))
    }
}
