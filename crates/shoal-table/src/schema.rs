//! What a table stores: its keys, its entry type, and how keys map to engine keys.

use std::borrow::Cow;
use std::fmt::Debug;

use crate::codec::Versioned;
use crate::crdt::Crdt;

/// Width of the partition-key hash that prefixes every engine key.
pub const PARTITION_HASH_LEN: usize = 32;

/// The hash of a partition key: it places the partition on the ring. All items of one partition
/// key share it, so they are contiguous in the engine; a ring partition (a range of hashes) is a
/// contiguous range of engine keys.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PartitionHash(pub [u8; PARTITION_HASH_LEN]);

impl PartitionHash {
    /// The hash of `partition_key`'s bytes.
    pub fn of(partition_key: &[u8]) -> Self {
        PartitionHash(*blake3::hash(partition_key).as_bytes())
    }
}

/// A key component: encodes to bytes whose order is the key's order.
pub trait KeyPart: Clone + Debug + PartialEq + Send + Sync + 'static {
    /// Order-preserving byte encoding.
    fn key_bytes(&self) -> Cow<'_, [u8]>;
}

impl KeyPart for String {
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

impl KeyPart for Vec<u8> {
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self)
    }
}

/// No sort key: one item per partition key.
impl KeyPart for () {
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&[])
    }
}

impl KeyPart for u64 {
    fn key_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.to_be_bytes().to_vec())
    }
}

/// An item of a table: a CRDT with a partition key and a sort key.
pub trait Entry<P, S>:
    Crdt + Versioned + Clone + PartialEq + Debug + Send + Sync + 'static
{
    /// The partition key: decides which nodes store the item.
    fn partition_key(&self) -> &P;
    /// The sort key: orders items within a partition.
    fn sort_key(&self) -> &S;
    /// Whether the entry records a deletion. Tombstones are stored and replicated like any
    /// entry, so a deletion reaches every replica and wins the merge where it should.
    fn is_tombstone(&self) -> bool;
}

/// A table's definition.
pub trait Schema: Send + Sync + 'static {
    /// Name of the table; also the engine tree holding its items.
    const TABLE_NAME: &'static str;
    /// Partition key type.
    type PartitionKey: KeyPart;
    /// Sort key type.
    type SortKey: KeyPart;
    /// Entry type.
    type Entry: Entry<Self::PartitionKey, Self::SortKey>;
}

/// The engine key of an item: partition-key hash, then sort-key bytes.
pub fn engine_key(partition_key: &impl KeyPart, sort_key: &impl KeyPart) -> Vec<u8> {
    let sk = sort_key.key_bytes();
    let mut k = Vec::with_capacity(PARTITION_HASH_LEN + sk.len());
    k.extend_from_slice(&PartitionHash::of(&partition_key.key_bytes()).0);
    k.extend_from_slice(&sk);
    k
}
