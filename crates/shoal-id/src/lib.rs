//! Shoal's shared identity types, in a crate of their own at the bottom of the workspace.
//!
//! A [`NodeId`] names a node everywhere: in write stamps (the table layer), in layouts (the
//! cluster) and on connections (the transport, where it is the node's static Noise public
//! key). Keeping it here lets the transport name nodes without linking the table layer and
//! its storage engine.

use serde::{Deserialize, Serialize};

/// A node's identity: its 32-byte public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct NodeId(pub [u8; 32]);

/// The first 8 bytes in hex: enough to tell nodes apart in logs.
impl std::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// All 32 bytes in hex, as configuration files and the operator CLI spell a node.
impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::NodeId;

    #[test]
    fn display_is_the_whole_key_and_debug_its_prefix() {
        let mut bytes = [0u8; 32];
        bytes[0] = 0xab;
        bytes[31] = 0x01;
        let id = NodeId(bytes);
        let shown = id.to_string();
        assert_eq!(shown.len(), 64);
        assert!(shown.starts_with("ab00") && shown.ends_with("01"));
        assert_eq!(format!("{id:?}"), "ab00000000000000");
    }

    #[test]
    fn the_encoding_is_unchanged_by_the_move() {
        // Stamps written before the type moved here must still decode: a 32-byte array.
        let id = NodeId([7u8; 32]);
        let bytes = rmp_serde::to_vec(&id).expect("encodes");
        let back: NodeId = rmp_serde::from_slice(&bytes).expect("decodes");
        assert_eq!(back, id);
        let plain: [u8; 32] = rmp_serde::from_slice(&bytes).expect("a plain array");
        assert_eq!(plain, [7u8; 32]);
    }
}
