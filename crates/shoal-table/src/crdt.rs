//! Conflict-free replicated data types: the building blocks of table entries.
//!
//! Every replica merges what it receives into what it holds; [`Crdt::merge`] is commutative,
//! associative and idempotent, so replicas that have seen the same writes hold the same value
//! whatever the order, repetition or grouping in which the writes arrived.
//!
//! Blocks: [`Lww`] (last-writer-wins register ordered by [`Stamp`] = (timestamp, node id)),
//! [`LwwMap`] (a map of such registers), [`Flag`] (once true, true forever), and merges for
//! `Option`, `BTreeMap`, pairs and plain ordered values ([`Max`]). [`crdt_struct!`](crate::crdt_struct) composes
//! them field by field into an entry type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A state-based CRDT.
pub trait Crdt {
    /// Merges `other` into `self`. Must be commutative, associative and idempotent.
    fn merge(&mut self, other: &Self);
}

/// A node's identity (its 32-byte public key), from the leaf crate `shoal-id`.
pub use shoal_id::NodeId;

/// When and where a value was written: ordered by time, then by node id, so that two writes
/// are never tied unless they are the same write.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Stamp {
    /// Milliseconds since the Unix epoch (or any clock the writer chose; only the order counts).
    pub time: u64,
    /// The writing node.
    pub node: NodeId,
}

impl Stamp {
    /// A stamp at `time` by `node`.
    pub fn new(time: u64, node: NodeId) -> Self {
        Stamp { time, node }
    }
}

/// A last-writer-wins register: the value with the greatest [`Stamp`] wins. Two values with the
/// same stamp (only possible for the same write, or a buggy writer) are merged with `T`'s own
/// merge, so the result never depends on arrival order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lww<T> {
    stamp: Stamp,
    value: T,
}

impl<T> Lww<T> {
    /// A register holding `value` written at `stamp`.
    pub fn new(stamp: Stamp, value: T) -> Self {
        Lww { stamp, value }
    }
    /// The current value.
    pub fn get(&self) -> &T {
        &self.value
    }
    /// When the current value was written.
    pub fn stamp(&self) -> Stamp {
        self.stamp
    }
    /// Writes `value` at `stamp` (ignored if an equal or later write is already held).
    pub fn set(&mut self, stamp: Stamp, value: T)
    where
        T: Crdt + Clone,
    {
        self.merge(&Lww::new(stamp, value));
    }
}

impl<T: Crdt + Clone> Crdt for Lww<T> {
    fn merge(&mut self, other: &Self) {
        match other.stamp.cmp(&self.stamp) {
            std::cmp::Ordering::Greater => *self = other.clone(),
            std::cmp::Ordering::Equal => self.value.merge(&other.value),
            std::cmp::Ordering::Less => {}
        }
    }
}

/// A map whose every key holds a last-writer-wins register. Keys are never forgotten: to
/// delete, write a tombstone value (for instance `None` in an `LwwMap<K, Option<V>>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize + Ord, V: Serialize",
    deserialize = "K: Deserialize<'de> + Ord, V: Deserialize<'de>"
))]
pub struct LwwMap<K, V> {
    entries: BTreeMap<K, Lww<V>>,
}

impl<K, V> Default for LwwMap<K, V> {
    fn default() -> Self {
        LwwMap {
            entries: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone, V: Crdt + Clone> LwwMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }
    /// Writes `value` under `key` at `stamp`.
    pub fn set(&mut self, key: K, stamp: Stamp, value: V) {
        let reg = Lww::new(stamp, value);
        match self.entries.get_mut(&key) {
            Some(cur) => cur.merge(&reg),
            None => {
                self.entries.insert(key, reg);
            }
        }
    }
    /// The value under `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(Lww::get)
    }
    /// Every key with its value, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v.get()))
    }
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// Whether the map holds no key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<K: Ord + Clone, V: Crdt + Clone> Crdt for LwwMap<K, V> {
    fn merge(&mut self, other: &Self) {
        Crdt::merge(&mut self.entries, &other.entries);
    }
}

/// A flag that can only go from false to true (for instance "deleted").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Flag(bool);

impl Flag {
    /// A flag that is not set.
    pub fn unset() -> Self {
        Flag(false)
    }
    /// A flag that is set.
    pub fn set() -> Self {
        Flag(true)
    }
    /// Sets the flag, for good.
    pub fn raise(&mut self) {
        self.0 = true;
    }
    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.0
    }
}

impl Crdt for Flag {
    fn merge(&mut self, other: &Self) {
        self.0 |= other.0;
    }
}

/// A value merged by keeping the greater of the two: for plain ordered data (counters that only
/// grow, tie-breaks inside [`Lww`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Max<T>(pub T);

impl<T: Ord + Clone> Crdt for Max<T> {
    fn merge(&mut self, other: &Self) {
        if other.0 > self.0 {
            self.0 = other.0.clone();
        }
    }
}

/// Plain ordered values merge as [`Max`]: the greater wins. This makes them usable inside
/// [`Lww`], where they only matter for two values written with the same stamp.
macro_rules! max_crdt {
    ($($t:ty),*) => {$(
        impl Crdt for $t {
            fn merge(&mut self, other: &Self) {
                if *other > *self {
                    *self = other.clone();
                }
            }
        }
    )*};
}
max_crdt!(bool, u8, u16, u32, u64, i64, String, Vec<u8>);

impl Crdt for () {
    fn merge(&mut self, _other: &Self) {}
}

/// Absent is the bottom: `Some` wins over `None`, two `Some` merge.
impl<T: Crdt + Clone> Crdt for Option<T> {
    fn merge(&mut self, other: &Self) {
        match (self.as_mut(), other) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => *self = Some(b.clone()),
            (_, None) => {}
        }
    }
}

/// Union of keys; values under the same key merge.
impl<K: Ord + Clone, V: Crdt + Clone> Crdt for BTreeMap<K, V> {
    fn merge(&mut self, other: &Self) {
        for (k, v) in other {
            match self.get_mut(k) {
                Some(cur) => cur.merge(v),
                None => {
                    self.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

impl<A: Crdt, B: Crdt> Crdt for (A, B) {
    fn merge(&mut self, other: &Self) {
        self.0.merge(&other.0);
        self.1.merge(&other.1);
    }
}

/// Implements [`Crdt`] for a struct by merging each listed field with its own merge. Fields not
/// listed must be identical on every replica (the entry's keys, for instance).
///
/// ```
/// use shoal_table::crdt::{Crdt, Flag, Lww, Stamp, NodeId};
/// #[derive(Clone)]
/// struct Note { id: String, text: Lww<String>, deleted: Flag }
/// shoal_table::crdt_struct!(Note { text, deleted });
///
/// let n = NodeId([1; 32]);
/// let mut a = Note { id: "x".into(), text: Lww::new(Stamp::new(1, n), "old".into()), deleted: Flag::unset() };
/// let b = Note { id: "x".into(), text: Lww::new(Stamp::new(2, n), "new".into()), deleted: Flag::set() };
/// a.merge(&b);
/// assert_eq!(a.text.get(), "new");
/// assert!(a.deleted.is_set());
/// ```
#[macro_export]
macro_rules! crdt_struct {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        impl $crate::crdt::Crdt for $ty {
            fn merge(&mut self, other: &Self) {
                $( $crate::crdt::Crdt::merge(&mut self.$field, &other.$field); )*
            }
        }
    };
}
