//! Layout changes staged by the operator, previewed, applied (and spread), and nodes forgotten.

use serde::{Deserialize, Serialize};
use shoal_net::{NodeId, Transport};

use super::error::NodeError;
use super::layout_state::STAGED_KEY;
use super::state::{Node, Staged};
use crate::layout::{Layout, NodeRole};

/// The layout, what is staged, and what applying it would do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayoutReport {
    /// The applied layout.
    pub current: Layout,
    /// Staged changes.
    pub staged: Vec<(NodeId, Option<NodeRole>)>,
    /// The layout applying the staged changes would give, and how many replicas it moves; or
    /// why it cannot be applied.
    pub preview: Result<(Layout, usize), String>,
    /// Live versions and every node's progress through them.
    #[serde(default)]
    pub history: crate::history::LayoutHistory,
}

impl<T: Transport> Node<T> {
    /// The layout, the staged changes, and what applying them would do.
    pub fn layout_report(&self) -> LayoutReport {
        let current = self.layout();
        let staged: Staged = self.state.staged.lock().clone();
        let mut roles = current.roles.clone();
        for (n, r) in &staged {
            match r {
                Some(r) => {
                    roles.insert(*n, r.clone());
                }
                None => {
                    roles.remove(n);
                }
            }
        }
        let preview = if staged.is_empty() {
            Err("nothing staged".to_string())
        } else {
            current.apply(roles).map_err(|e| e.to_string())
        };
        LayoutReport {
            current,
            staged: staged.into_iter().collect(),
            preview,
            history: self.history(),
        }
    }

    /// Stages a role change (`None` removes the node), persisted until applied.
    pub async fn stage(&self, node: NodeId, role: Option<NodeRole>) {
        let staged = {
            let mut s = self.state.staged.lock();
            s.insert(node, role);
            s.clone()
        };
        self.persist(STAGED_KEY, &staged).await;
    }

    /// Applies the staged changes: the new layout is adopted here and pushed to every peer,
    /// and nothing is staged any more.
    pub async fn apply_staged(&self) -> Result<(), NodeError> {
        let (next, _) = self.layout_report().preview.map_err(NodeError::Staged)?;
        self.set_layout(next).await;
        self.state.staged.lock().clear();
        self.persist(STAGED_KEY, &Staged::new()).await;
        Ok(())
    }
}
