//! The id map of a table: for each partition, the ids it holds and the engine key of each,
//! so that a session finds the item behind an id with a few point reads and lists a
//! partition's ids without reading or hashing its items.
//!
//! Ids are keyed hashes: an id-ordered index written in place on every write would dirty one
//! random page per write (measured: 0.70–0.73× durable insert throughput at 16 and 256
//! writers). So the map is log-structured instead:
//! - the changes since the last checkpoint live in memory, per partition (the *delta*: id →
//!   its engine key, or removed), applied by the writing transaction's after-commit action;
//! - a checkpoint writes each settled partition's delta as a new sorted *run* in the tree
//!   `{table}~ids`, under keys `[partition][run][id][flag]` (flag 0: held, value the engine
//!   key; flag 1: removed): the new run's keys all sort after the partition's older runs, so the
//!   run fills pages one after the other instead of dirtying one page per id;
//! - size-tiered compaction merges the newest runs while the older is at most four times the
//!   newer (and whenever a partition holds more than [`MAX_RUNS`]), so each entry is rewritten a
//!   logarithmic number of times, sequentially; a merge into the oldest run drops removals.
//!
//! A lookup reads the delta, then the runs from newest to oldest (one short range read each);
//! a listing merges the runs and the delta. The list of a partition's runs is persisted with
//! them (key `[b'r', partition]` of the state tree). Crash safety comes from the index's dirty
//! markers: a partition changed since its last checkpoint has its runs rebuilt from its items
//! when the index opens.

use std::collections::BTreeMap;

use shoal_storage::{Direction, KeyRange, ReadView, StorageError, WriteTx};

use super::{Partition, scan_all as tx_scan_all};
use crate::sketch::ItemId;

/// Runs a partition may hold before its newest ones are merged whatever their sizes.
pub(crate) const MAX_RUNS: usize = 8;

/// The in-memory delta entry of an id: its engine key, or `None` once removed.
pub(crate) type DeltaEntry = Option<Box<[u8]>>;

/// A persisted run: its number (runs of a partition are numbered in the order they were
/// written) and its number of entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) number: u32,
    pub(crate) len: u64,
}

/// A partition's id map: the delta and the runs, oldest first.
#[derive(Default, Debug, Clone)]
pub(crate) struct PartitionIds {
    pub(crate) delta: BTreeMap<ItemId, DeltaEntry>,
    pub(crate) runs: Vec<Run>,
}

impl PartitionIds {
    /// Records a committed change.
    pub(crate) fn record(&mut self, id: ItemId, key: DeltaEntry) {
        self.delta.insert(id, key);
    }

    /// Forgets the entries a committed flush wrote into a run, unless changed since.
    pub(crate) fn flushed(&mut self, written: &BTreeMap<ItemId, DeltaEntry>) {
        for (id, entry) in written {
            if self.delta.get(id) == Some(entry) {
                self.delta.remove(id);
            }
        }
    }
}

const FLAG_HELD: u8 = 0;
const FLAG_REMOVED: u8 = 1;

fn entry_key(p: Partition, run: u32, id: ItemId, held: bool) -> [u8; 14] {
    let mut k = [0u8; 14];
    k[0] = p;
    k[1..5].copy_from_slice(&run.to_be_bytes());
    k[5..13].copy_from_slice(&id.0.to_be_bytes());
    k[13] = if held { FLAG_HELD } else { FLAG_REMOVED };
    k
}

fn run_range(p: Partition, run: u32) -> KeyRange {
    let mut prefix = [0u8; 5];
    prefix[0] = p;
    prefix[1..].copy_from_slice(&run.to_be_bytes());
    KeyRange::prefix(&prefix)
}

/// The id and whether it is held, from a key of the id tree.
fn decode_entry_key(k: &[u8]) -> Result<(ItemId, bool), StorageError> {
    if k.len() != 14 || k[13] > FLAG_REMOVED {
        return Err(StorageError::Corrupted(format!(
            "id tree key of {} bytes (flag {:?}), expected 14 bytes with flag 0 or 1",
            k.len(),
            k.get(13)
        )));
    }
    let id = u64::from_be_bytes(k[5..13].try_into().expect("8 bytes"));
    Ok((ItemId(id), k[13] == FLAG_HELD))
}

/// The state tree's key of a partition's run list.
fn runs_key(p: Partition) -> [u8; 2] {
    [b'r', p]
}

pub(crate) fn load_runs(
    view: &(impl ReadView + ?Sized),
    state_tree: &str,
    p: Partition,
) -> Result<Vec<Run>, StorageError> {
    let Some(bytes) = view.get(state_tree, &runs_key(p))? else {
        return Ok(Vec::new());
    };
    if !bytes.len().is_multiple_of(12) {
        return Err(StorageError::Corrupted(format!(
            "run list of partition {p} of {} bytes",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(12)
        .map(|c| Run {
            number: u32::from_le_bytes(c[0..4].try_into().expect("4 bytes")),
            len: u64::from_le_bytes(c[4..12].try_into().expect("8 bytes")),
        })
        .collect())
}

fn store_runs(
    tx: &mut dyn WriteTx,
    state_tree: &str,
    p: Partition,
    runs: &[Run],
) -> Result<(), StorageError> {
    if runs.is_empty() {
        return tx.delete(state_tree, &runs_key(p));
    }
    let mut out = Vec::with_capacity(runs.len() * 12);
    for r in runs {
        out.extend_from_slice(&r.number.to_le_bytes());
        out.extend_from_slice(&r.len.to_le_bytes());
    }
    tx.put(state_tree, &runs_key(p), &out)
}

/// The engine key of `id` in partition `p`, from the runs (newest first); `None` if no run
/// mentions it or the newest mention is a removal. The caller checks the delta first.
pub(crate) fn lookup(
    view: &(impl ReadView + ?Sized),
    id_tree: &str,
    p: Partition,
    runs: &[Run],
    id: ItemId,
) -> Result<Option<Vec<u8>>, StorageError> {
    for run in runs.iter().rev() {
        let range = KeyRange::half_open(
            entry_key(p, run.number, id, true).to_vec(),
            // Past the removal flag: [..id][2].
            {
                let mut end = entry_key(p, run.number, id, false).to_vec();
                end[13] = FLAG_REMOVED + 1;
                end
            },
        );
        if let Some((k, v)) = view
            .scan(id_tree, &range, Direction::Forward, 1)?
            .into_iter()
            .next()
        {
            let (_, held) = decode_entry_key(&k)?;
            return Ok(held.then_some(v));
        }
    }
    Ok(None)
}

/// The ids of one run, ascending, with whether each is held.
fn run_ids(
    view: &(impl ReadView + ?Sized),
    id_tree: &str,
    p: Partition,
    run: u32,
) -> Result<Vec<(ItemId, bool)>, StorageError> {
    let mut out = Vec::new();
    let mut bad = None;
    view.for_each_key(
        id_tree,
        &run_range(p, run),
        &mut |k| match decode_entry_key(k) {
            Ok(e) => {
                out.push(e);
                true
            }
            Err(e) => {
                bad = Some(e);
                false
            }
        },
    )?;
    match bad {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Applies `newer` (ascending, held or removed) over `held` (ascending ids held).
fn overlay(held: Vec<ItemId>, newer: impl Iterator<Item = (ItemId, bool)>) -> Vec<ItemId> {
    let mut out = Vec::with_capacity(held.len());
    let mut older = held.into_iter().peekable();
    for (id, is_held) in newer {
        while let Some(&o) = older.peek() {
            if o < id {
                out.push(o);
                older.next();
            } else {
                break;
            }
        }
        if older.peek() == Some(&id) {
            older.next();
        }
        if is_held {
            out.push(id);
        }
    }
    out.extend(older);
    out
}

/// Every id partition `p` holds, ascending: the runs oldest to newest, then the delta (ids
/// ascending, held or removed).
pub(crate) fn list(
    view: &(impl ReadView + ?Sized),
    id_tree: &str,
    p: Partition,
    runs: &[Run],
    delta: &[(ItemId, bool)],
) -> Result<Vec<ItemId>, StorageError> {
    let mut held = Vec::new();
    for run in runs {
        let entries = run_ids(view, id_tree, p, run.number)?;
        held = overlay(held, entries.into_iter());
    }
    Ok(overlay(held, delta.iter().copied()))
}

/// Every entry of one run, ascending: (id, engine key or `None` for a removal).
fn read_run(
    tx: &dyn WriteTx,
    id_tree: &str,
    p: Partition,
    run: u32,
) -> Result<Vec<(ItemId, DeltaEntry)>, StorageError> {
    tx_scan_all(tx, id_tree, &run_range(p, run))?
        .into_iter()
        .map(|(k, v)| {
            let (id, held) = decode_entry_key(&k)?;
            Ok((id, held.then(|| v.into_boxed_slice())))
        })
        .collect()
}

fn write_run<'a>(
    tx: &mut dyn WriteTx,
    id_tree: &str,
    p: Partition,
    run: u32,
    entries: impl Iterator<Item = (ItemId, Option<&'a [u8]>)>,
) -> Result<u64, StorageError> {
    let mut n = 0;
    for (id, key) in entries {
        match key {
            Some(k) => tx.put(id_tree, &entry_key(p, run, id, true), k)?,
            None => tx.put(id_tree, &entry_key(p, run, id, false), &[])?,
        }
        n += 1;
    }
    Ok(n)
}

fn delete_range(tx: &mut dyn WriteTx, tree: &str, range: &KeyRange) -> Result<(), StorageError> {
    for (k, _) in tx_scan_all(tx, tree, range)? {
        tx.delete(tree, &k)?;
    }
    Ok(())
}

/// Writes `delta` as partition `p`'s newest run, compacts, and persists the run list. Returns
/// the runs now held.
pub(crate) fn flush(
    tx: &mut dyn WriteTx,
    id_tree: &str,
    state_tree: &str,
    p: Partition,
    runs: &[Run],
    delta: &BTreeMap<ItemId, DeltaEntry>,
) -> Result<Vec<Run>, StorageError> {
    let mut runs = runs.to_vec();
    if !delta.is_empty() {
        let number = runs.last().map_or(0, |r| r.number + 1);
        let len = write_run(
            tx,
            id_tree,
            p,
            number,
            delta.iter().map(|(id, k)| (*id, k.as_deref())),
        )?;
        runs.push(Run { number, len });
    }
    while runs.len() >= 2 {
        let (older, newer) = (runs[runs.len() - 2], runs[runs.len() - 1]);
        if older.len > 4 * newer.len && runs.len() <= MAX_RUNS {
            break;
        }
        let into_oldest = runs.len() == 2;
        let mut merged: BTreeMap<ItemId, DeltaEntry> = read_run(tx, id_tree, p, older.number)?
            .into_iter()
            .collect();
        merged.extend(read_run(tx, id_tree, p, newer.number)?);
        if into_oldest {
            // Nothing older for a removal to hide.
            merged.retain(|_, k| k.is_some());
        }
        delete_range(tx, id_tree, &run_range(p, older.number))?;
        delete_range(tx, id_tree, &run_range(p, newer.number))?;
        let number = newer.number + 1;
        let len = write_run(
            tx,
            id_tree,
            p,
            number,
            merged.iter().map(|(id, k)| (*id, k.as_deref())),
        )?;
        runs.truncate(runs.len() - 2);
        if len > 0 {
            runs.push(Run { number, len });
        }
    }
    store_runs(tx, state_tree, p, &runs)?;
    Ok(runs)
}

/// Replaces partition `p`'s runs by one run of `entries` (ascending ids, held).
pub(crate) fn rebuild(
    tx: &mut dyn WriteTx,
    id_tree: &str,
    state_tree: &str,
    p: Partition,
    entries: &[(ItemId, Vec<u8>)],
) -> Result<Vec<Run>, StorageError> {
    delete_range(tx, id_tree, &KeyRange::prefix(&[p]))?;
    let runs = if entries.is_empty() {
        Vec::new()
    } else {
        let len = write_run(
            tx,
            id_tree,
            p,
            0,
            entries.iter().map(|(id, k)| (*id, Some(k.as_slice()))),
        )?;
        vec![Run { number: 0, len }]
    };
    store_runs(tx, state_tree, p, &runs)?;
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_applies_newer_entries_over_older_ids() {
        let held = vec![ItemId(1), ItemId(3), ItemId(5), ItemId(7)];
        let newer = vec![
            (ItemId(0), true),
            (ItemId(3), false),
            (ItemId(4), true),
            (ItemId(7), true),
            (ItemId(9), false),
        ];
        assert_eq!(
            overlay(held, newer.into_iter()),
            vec![ItemId(0), ItemId(1), ItemId(4), ItemId(5), ItemId(7)]
        );
    }

    #[test]
    fn entry_keys_sort_by_partition_run_and_id_and_decode_back() {
        let a = entry_key(3, 1, ItemId(u64::MAX), true);
        let b = entry_key(3, 2, ItemId(1), false);
        assert!(a < b, "a newer run sorts after an older one");
        assert_eq!(decode_entry_key(&b).unwrap(), (ItemId(1), false));
        assert!(decode_entry_key(&a[..13]).is_err());
    }
}
