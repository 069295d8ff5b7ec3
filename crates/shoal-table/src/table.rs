//! [`Table`]: typed items in one engine tree, merged as CRDTs on every write.

use std::marker::PhantomData;
use std::ops::Bound;
use std::sync::Arc;

use shoal_storage::{Direction, Entries, KeyRange, StorageError, Store, WriteTx};

use crate::codec::Versioned;
use crate::crdt::Crdt;
use crate::error::{TableError, hex};
use crate::schema::{Entry, KeyPart, PARTITION_HASH_LEN, PartitionHash, Schema, engine_key};

/// One change to one item, as seen inside the transaction that makes it.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    /// The table.
    pub table: &'static str,
    /// The item's engine key.
    pub key: &'a [u8],
    /// The encoded value before the change, if the item existed.
    pub old: Option<&'a [u8]>,
    /// The encoded value after the change; `None` if the item was removed.
    pub new: Option<&'a [u8]>,
}

/// Code run inside every transaction that changes a table's items, so that derived state (the
/// partition index of the sync layer, counters) commits atomically with the items.
pub trait ChangeHook: Send + Sync + 'static {
    /// Called once per changed item. An error aborts the whole transaction.
    fn on_change(&self, tx: &mut dyn WriteTx, change: &Change<'_>) -> Result<(), StorageError>;
}

/// Which items of a partition a [`Table::range`] returns.
#[derive(Debug, Clone)]
pub struct RangeQuery<S> {
    /// Where the scan begins (inclusive), in scan order; `None` for the first item.
    pub start: Option<S>,
    /// Where the scan stops (exclusive), in scan order; `None` for no bound.
    pub end: Option<S>,
    /// Most items returned.
    pub limit: usize,
    /// Scan in descending sort-key order: then `start` is the highest key returned.
    pub reverse: bool,
}

impl<S> Default for RangeQuery<S> {
    fn default() -> Self {
        RangeQuery {
            start: None,
            end: None,
            limit: usize::MAX,
            reverse: false,
        }
    }
}

/// A table of `S::Entry` items over a [`Store`]. Cheap to clone.
pub struct Table<S: Schema> {
    store: Store,
    hooks: Arc<Vec<Arc<dyn ChangeHook>>>,
    _schema: PhantomData<fn() -> S>,
}

impl<S: Schema> Clone for Table<S> {
    fn clone(&self) -> Self {
        Table {
            store: self.store.clone(),
            hooks: self.hooks.clone(),
            _schema: PhantomData,
        }
    }
}

/// Everything a write needs inside its transaction; `'static` so it can run on the writer.
struct Writer<S: Schema> {
    hooks: Arc<Vec<Arc<dyn ChangeHook>>>,
    _schema: PhantomData<fn() -> S>,
}

impl<S: Schema> Writer<S> {
    fn decode(key: &[u8], bytes: &[u8]) -> Result<S::Entry, TableError> {
        S::Entry::decode(bytes).map_err(|source| TableError::Decode {
            table: S::TABLE_NAME,
            key: hex(key),
            source,
        })
    }

    /// Read-merge-write of one entry; returns the merged entry and whether anything changed.
    fn merge_one(
        &self,
        tx: &mut dyn WriteTx,
        incoming: &S::Entry,
    ) -> Result<(S::Entry, bool), TableError> {
        let key = engine_key(incoming.partition_key(), incoming.sort_key());
        let old = tx.get(S::TABLE_NAME, &key)?;
        let merged = match &old {
            Some(bytes) => {
                let mut cur = Self::decode(&key, bytes)?;
                cur.merge(incoming);
                cur
            }
            None => incoming.clone(),
        };
        let new = merged.encode()?;
        if old.as_deref() == Some(new.as_slice()) {
            return Ok((merged, false));
        }
        tx.put(S::TABLE_NAME, &key, &new)?;
        self.notify(tx, &key, old.as_deref(), Some(&new))?;
        Ok((merged, true))
    }

    fn notify(
        &self,
        tx: &mut dyn WriteTx,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<(), StorageError> {
        let change = Change {
            table: S::TABLE_NAME,
            key,
            old,
            new,
        };
        for h in self.hooks.iter() {
            h.on_change(tx, &change)?;
        }
        Ok(())
    }
}

impl<S: Schema> Table<S> {
    /// The table over `store`, with no hooks.
    pub fn new(store: Store) -> Self {
        Table {
            store,
            hooks: Arc::new(Vec::new()),
            _schema: PhantomData,
        }
    }

    /// Adds a hook run inside every transaction that changes an item.
    pub fn with_hook(mut self, hook: Arc<dyn ChangeHook>) -> Self {
        let mut hooks = (*self.hooks).clone();
        hooks.push(hook);
        self.hooks = Arc::new(hooks);
        self
    }

    /// The store holding the table.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The table's name, also its engine tree.
    pub fn name(&self) -> &'static str {
        S::TABLE_NAME
    }

    /// The engine key of an entry.
    pub fn key_of(entry: &S::Entry) -> Vec<u8> {
        engine_key(entry.partition_key(), entry.sort_key())
    }

    fn writer(&self) -> Writer<S> {
        Writer {
            hooks: self.hooks.clone(),
            _schema: PhantomData,
        }
    }

    /// Merges `entry` into the stored item (read, merge, write in one transaction) and returns
    /// the merged item. Once this returns, the write is committed (durably, on a durable store).
    pub fn insert(&self, entry: &S::Entry) -> Result<S::Entry, TableError> {
        let (w, e) = (self.writer(), entry.clone());
        Ok(self
            .store
            .transact(move |tx| w.merge_one(tx, &e).map(|r| r.0))?)
    }

    /// [`Table::insert`] for async callers.
    pub async fn insert_async(&self, entry: &S::Entry) -> Result<S::Entry, TableError> {
        let (w, e) = (self.writer(), entry.clone());
        Ok(self
            .store
            .transact_async(move |tx| w.merge_one(tx, &e).map(|r| r.0))
            .await?)
    }

    /// Merges every entry in one transaction: all are applied or none. Returns how many items
    /// changed.
    pub fn insert_many(&self, entries: Vec<S::Entry>) -> Result<usize, TableError> {
        let w = self.writer();
        Ok(self.store.transact(move |tx| w.merge_all(tx, &entries))?)
    }

    /// [`Table::insert_many`] for async callers.
    pub async fn insert_many_async(&self, entries: Vec<S::Entry>) -> Result<usize, TableError> {
        let w = self.writer();
        Ok(self
            .store
            .transact_async(move |tx| w.merge_all(tx, &entries))
            .await?)
    }

    /// Decodes encoded entries (as received from another replica) and merges them all in one
    /// transaction. The engine key is recomputed from each entry, never taken from the sender.
    /// Returns how many items changed.
    pub fn insert_encoded(&self, values: Vec<Vec<u8>>) -> Result<usize, TableError> {
        let entries = Self::decode_all(&values)?;
        self.insert_many(entries)
    }

    /// [`Table::insert_encoded`] for async callers.
    pub async fn insert_encoded_async(&self, values: Vec<Vec<u8>>) -> Result<usize, TableError> {
        let entries = Self::decode_all(&values)?;
        self.insert_many_async(entries).await
    }

    fn decode_all(values: &[Vec<u8>]) -> Result<Vec<S::Entry>, TableError> {
        values.iter().map(|v| Writer::<S>::decode(&[], v)).collect()
    }

    /// Records a deletion: merges a tombstone entry, which replicates like any write.
    pub fn delete(&self, tombstone: &S::Entry) -> Result<S::Entry, TableError> {
        if !tombstone.is_tombstone() {
            return Err(TableError::NotATombstone {
                table: S::TABLE_NAME,
            });
        }
        self.insert(tombstone)
    }

    /// Removes the item under `key` only if its stored bytes are still `expected`: a write that
    /// arrived meanwhile wins. Returns whether the item was removed.
    pub fn delete_if_equal(&self, key: &[u8], expected: &[u8]) -> Result<bool, TableError> {
        let (w, key, expected) = (self.writer(), key.to_vec(), expected.to_vec());
        Ok(self.store.transact(move |tx| {
            let cur = tx.get(S::TABLE_NAME, &key)?;
            if cur.as_deref() != Some(expected.as_slice()) {
                return Ok::<_, TableError>(false);
            }
            tx.delete(S::TABLE_NAME, &key)?;
            w.notify(tx, &key, Some(&expected), None)?;
            Ok(true)
        })?)
    }

    /// [`Table::delete_if_equal`] for many items in one transaction (offload batches): returns
    /// how many were removed.
    pub fn delete_many_if_equal(
        &self,
        items: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<usize, TableError> {
        let w = self.writer();
        Ok(self.store.transact(move |tx| {
            let mut removed = 0;
            for (key, expected) in &items {
                if tx.get(S::TABLE_NAME, key)?.as_deref() == Some(expected.as_slice()) {
                    tx.delete(S::TABLE_NAME, key)?;
                    w.notify(tx, key, Some(expected), None)?;
                    removed += 1;
                }
            }
            Ok::<_, TableError>(removed)
        })?)
    }

    /// The item with these keys, if stored.
    pub fn get(
        &self,
        partition_key: &S::PartitionKey,
        sort_key: &S::SortKey,
    ) -> Result<Option<S::Entry>, TableError> {
        let key = engine_key(partition_key, sort_key);
        match self.store.get(S::TABLE_NAME, &key)? {
            Some(bytes) => Ok(Some(Writer::<S>::decode(&key, &bytes)?)),
            None => Ok(None),
        }
    }

    /// The encoded item under an engine key.
    pub fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, TableError> {
        Ok(self.store.get(S::TABLE_NAME, key)?)
    }

    /// Items of one partition key, in sort-key order (or reverse), tombstones included.
    pub fn range(
        &self,
        partition_key: &S::PartitionKey,
        query: &RangeQuery<S::SortKey>,
    ) -> Result<Vec<S::Entry>, TableError> {
        let prefix = PartitionHash::of(&partition_key.key_bytes()).0;
        let bound = |sk: &Option<S::SortKey>, inclusive: bool| match sk {
            None => None,
            Some(sk) => {
                let mut k = prefix.to_vec();
                k.extend_from_slice(&sk.key_bytes());
                Some(if inclusive {
                    Bound::Included(k)
                } else {
                    Bound::Excluded(k)
                })
            }
        };
        let whole = KeyRange::prefix(&prefix);
        let first = bound(&query.start, true);
        let stop = bound(&query.end, false);
        let (lower, upper, direction) = if query.reverse {
            (stop, first, Direction::Backward)
        } else {
            (first, stop, Direction::Forward)
        };
        let range = KeyRange {
            start: lower.unwrap_or(whole.start),
            end: upper.unwrap_or(whole.end),
        };
        self.store
            .scan(S::TABLE_NAME, &range, direction, query.limit)?
            .into_iter()
            .map(|(k, v)| Writer::<S>::decode(&k, &v))
            .collect()
    }

    /// Encoded items whose engine keys lie in `range` (for sync and offload), ascending.
    pub fn scan_raw(&self, range: &KeyRange, limit: usize) -> Result<Entries, TableError> {
        Ok(self
            .store
            .scan(S::TABLE_NAME, range, Direction::Forward, limit)?)
    }

    /// Number of items stored (tombstones included).
    pub fn len(&self) -> Result<u64, TableError> {
        Ok(self.store.tree_len(S::TABLE_NAME)?)
    }

    /// Whether the table holds no item.
    pub fn is_empty(&self) -> Result<bool, TableError> {
        Ok(self.len()? == 0)
    }
}

impl<S: Schema> Writer<S> {
    fn merge_all(&self, tx: &mut dyn WriteTx, entries: &[S::Entry]) -> Result<usize, TableError> {
        let mut changed = 0;
        for e in entries {
            if self.merge_one(tx, e)?.1 {
                changed += 1;
            }
        }
        Ok(changed)
    }
}

/// The engine key range of the ring positions `[begin, end)` of partition hashes; `end = None`
/// means the end of the ring.
pub fn hash_range(
    begin: &[u8; PARTITION_HASH_LEN],
    end: Option<&[u8; PARTITION_HASH_LEN]>,
) -> KeyRange {
    KeyRange {
        start: Bound::Included(begin.to_vec()),
        end: match end {
            Some(e) => Bound::Excluded(e.to_vec()),
            None => Bound::Unbounded,
        },
    }
}
