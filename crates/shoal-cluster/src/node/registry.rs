//! The tables and extra endpoints registered on a node, and how each table is replicated.

use std::collections::BTreeMap;
use std::sync::Arc;

use shoal_net::Transport;

use super::endpoint::{Endpoint, NodeEndpoint};
use super::error::NodeError;
use super::state::Node;
use super::table::SyncTable;

impl<T: Transport> Node<T> {
    /// The registered table `name`.
    pub fn table(&self, name: &str) -> Result<Arc<dyn SyncTable>, NodeError> {
        self.state
            .tables
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| NodeError::NoTable(name.to_string()))
    }

    /// Every registered table.
    pub(super) fn tables(&self) -> Vec<Arc<dyn SyncTable>> {
        self.state.tables.read().values().cloned().collect()
    }

    /// Registers a table (sharded over the layout) for sync.
    pub fn add_table(&self, table: Arc<dyn SyncTable>) {
        self.state
            .tables
            .write()
            .insert(table.name().to_string(), table);
    }

    /// Registers a table replicated on every node of the layout (small system tables).
    pub fn add_full_table(&self, table: Arc<dyn SyncTable>) {
        self.state
            .replication
            .write()
            .insert(table.name().to_string(), crate::worklist::Replication::Full);
        self.add_table(table);
    }

    /// How `table` is replicated.
    pub fn replication_of(&self, table: &str) -> crate::worklist::Replication {
        self.state
            .replication
            .read()
            .get(table)
            .copied()
            .unwrap_or_default()
    }

    /// Items stored here, per table.
    pub fn table_sizes(&self) -> BTreeMap<String, u64> {
        let tables = self.tables();
        tables
            .into_iter()
            .map(|t| (t.name().to_string(), t.item_count().unwrap_or(0)))
            .collect()
    }

    /// Adds an RPC endpoint served by a higher layer. Names of the node's own endpoints are
    /// refused.
    pub fn add_endpoint(&self, name: &str, endpoint: Endpoint) -> Result<(), NodeError> {
        if NodeEndpoint::from_name(name).is_some() {
            return Err(NodeError::ReservedEndpoint(name.to_string()));
        }
        self.state
            .endpoints
            .write()
            .insert(name.to_string(), endpoint);
        Ok(())
    }

    /// The endpoint a higher layer added under `name`.
    pub(super) fn added_endpoint(&self, name: &str) -> Option<Endpoint> {
        self.state.endpoints.read().get(name).cloned()
    }
}
