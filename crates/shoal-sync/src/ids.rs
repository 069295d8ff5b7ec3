//! Item ids: what the sketch and the id lists reconcile.
//!
//! An item's id is a 64-bit *keyed* hash of its engine key and its stored bytes: it changes
//! whenever the stored value changes, so two replicas hold the same id exactly when they hold
//! the same version of the item. The key comes from the cluster secret: a client who can write
//! items but does not know the key cannot craft items whose ids cancel in the XOR digests.

use crate::sketch::ItemId;

/// The key of the id hash. Every replica of a cluster must use the same one.
#[derive(Clone, PartialEq, Eq)]
pub struct IdKey(pub [u8; 32]);

impl std::fmt::Debug for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdKey(..)")
    }
}

impl IdKey {
    /// Derives the id key from a cluster secret (domain-separated from every other use of it).
    pub fn derive(cluster_secret: &[u8]) -> Self {
        IdKey(blake3::derive_key(
            "shoal 2026 sync item ids",
            cluster_secret,
        ))
    }

    /// A fixed key for single-node use, tests and benchmarks.
    pub fn insecure_default() -> Self {
        Self::derive(b"shoal development cluster")
    }

    /// The id of the item stored under `engine_key` with encoded `value`.
    pub fn item_id(&self, engine_key: &[u8], value: &[u8]) -> ItemId {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(&(engine_key.len() as u32).to_le_bytes());
        h.update(engine_key);
        h.update(value);
        let bytes = h.finalize();
        let id = u64::from_le_bytes(bytes.as_bytes()[..8].try_into().expect("8 bytes"));
        // Zero is the empty cell's XOR: never an id.
        ItemId(id.max(1))
    }
}
