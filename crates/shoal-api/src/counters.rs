//! Per-partition-key counts of the K2V items a node stores (for ReadIndex), kept by a change
//! hook in the same transaction as the items, and a change signal for long polls.
//!
//! Each node counts what it stores; ReadIndex asks every node and keeps, per partition key, the
//! largest count (every item is on all of its replicas, so the largest is the most complete).
//! The spec calls these counts approximate: they are exact on each node, and converge with
//! anti-entropy.

use serde::{Deserialize, Serialize};
use shoal_storage::{Direction, StorageError, Store, WriteTx};
use shoal_table::codec::Versioned;
use shoal_table::{Change, ChangeHook};
use tokio::sync::watch;

use crate::causality::DvvsValue;
use crate::model::K2vItem;

/// The tree of the counts.
pub const COUNTS_TREE: &str = "k2v~counts";

/// What ReadIndex reports for a partition key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Items that are not tombstones.
    pub entries: i64,
    /// Items with several concurrent values.
    pub conflicts: i64,
    /// Values (not deletions) over all items.
    pub values: i64,
    /// Bytes of those values.
    pub bytes: i64,
}

impl Counts {
    fn of(item: &K2vItem) -> Counts {
        let values = item.dvvs.values();
        let live: Vec<&Vec<u8>> = values
            .iter()
            .filter_map(|v| match v {
                DvvsValue::Value(b) => Some(b),
                DvvsValue::Deleted => None,
            })
            .collect();
        Counts {
            entries: i64::from(!item.dvvs.is_tombstone()),
            conflicts: i64::from(values.len() > 1),
            values: live.len() as i64,
            bytes: live.iter().map(|b| b.len() as i64).sum(),
        }
    }

    fn add(&mut self, o: &Counts, sign: i64) {
        self.entries += sign * o.entries;
        self.conflicts += sign * o.conflicts;
        self.values += sign * o.values;
        self.bytes += sign * o.bytes;
    }

    /// Field-wise maximum.
    pub fn max(&mut self, o: &Counts) {
        self.entries = self.entries.max(o.entries);
        self.conflicts = self.conflicts.max(o.conflicts);
        self.values = self.values.max(o.values);
        self.bytes = self.bytes.max(o.bytes);
    }

    fn encode(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        for (i, v) in [self.entries, self.conflicts, self.values, self.bytes]
            .iter()
            .enumerate()
        {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    fn decode(b: &[u8]) -> Counts {
        let w = |i: usize| {
            b.get(i * 8..i * 8 + 8)
                .map_or(0, |s| i64::from_le_bytes(s.try_into().expect("8 bytes")))
        };
        Counts {
            entries: w(0),
            conflicts: w(1),
            values: w(2),
            bytes: w(3),
        }
    }

    fn is_zero(&self) -> bool {
        *self == Counts::default()
    }
}

/// The counts key of a partition key of a bucket.
fn counts_key(bucket: &str, pk: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + 1 + pk.len());
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k.extend_from_slice(pk.as_bytes());
    k
}

/// The hook: keeps the counts and signals every committed change.
pub struct K2vCounters {
    changes: watch::Sender<u64>,
}

impl K2vCounters {
    /// A hook and the receiver of its change signal.
    pub fn new() -> (std::sync::Arc<Self>, watch::Receiver<u64>) {
        let (tx, rx) = watch::channel(0);
        (std::sync::Arc::new(K2vCounters { changes: tx }), rx)
    }
}

impl ChangeHook for K2vCounters {
    fn on_change(&self, tx: &mut dyn WriteTx, change: &Change<'_>) -> Result<(), StorageError> {
        let decode = |b: Option<&[u8]>| b.and_then(|b| K2vItem::decode(b).ok());
        let (old, new) = (decode(change.old), decode(change.new));
        let Some(any) = new.as_ref().or(old.as_ref()) else {
            return Ok(());
        };
        let key = counts_key(&any.partition.bucket, &any.partition.pk);
        let mut counts = tx
            .get(COUNTS_TREE, &key)?
            .map(|b| Counts::decode(&b))
            .unwrap_or_default();
        if let Some(o) = &old {
            counts.add(&Counts::of(o), -1);
        }
        if let Some(n) = &new {
            counts.add(&Counts::of(n), 1);
        }
        if counts.is_zero() {
            tx.delete(COUNTS_TREE, &key)?;
        } else {
            tx.put(COUNTS_TREE, &key, &counts.encode())?;
        }
        let changes = self.changes.clone();
        tx.after_commit(Box::new(move || {
            changes.send_modify(|n| *n += 1);
        }));
        Ok(())
    }
}

/// A ReadIndex query over one node's counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IndexQuery {
    /// Bucket id.
    pub bucket: String,
    /// Only partition keys with this prefix.
    pub prefix: Option<String>,
    /// First partition key (the highest when `reverse`).
    pub start: Option<String>,
    /// Partition key where the listing stops, excluded.
    pub end: Option<String>,
    /// Descending order.
    pub reverse: bool,
    /// Most partition keys.
    pub limit: usize,
}

/// The node's counts matching `q`, in order.
pub fn local_counts(store: &Store, q: &IndexQuery) -> Result<Vec<(String, Counts)>, StorageError> {
    let base = counts_key(&q.bucket, "");
    let range = crate::range::key_range(
        &base,
        q.prefix.as_deref(),
        q.start.as_deref(),
        q.end.as_deref(),
        q.reverse,
    );
    let direction = if q.reverse {
        Direction::Backward
    } else {
        Direction::Forward
    };
    Ok(store
        .scan(COUNTS_TREE, &range, direction, q.limit)?
        .into_iter()
        .map(|(k, v)| {
            let pk = String::from_utf8_lossy(&k[base.len()..]).into_owned();
            (pk, Counts::decode(&v))
        })
        .collect())
}
