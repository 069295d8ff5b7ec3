//! The partition index keeps its heads in memory and persists them by checkpoints, with a
//! dirty marker committed atomically with the first write to a partition after a checkpoint.
//! These tests check the promise that design makes: whatever happens to the process (a clean
//! stop, no checkpoint at all, an aborted transaction, a SIGKILL in the middle of writes), the
//! heads served after the next open are exactly the heads the stored items imply.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{Items, item};
use rand::{Rng, SeedableRng};
use shoal_storage::{Direction, KeyRange, StorageError, Store, TxError};
use shoal_sync::ids::IdKey;
use shoal_sync::index::{Head, PartitionIndex};
use shoal_table::{Change, ChangeHook, Schema, Table};
use shoal_testkit::child::{WriterChild, ack};

const HEAD_TREE: &str = "items~head";

fn open(path: &Path, checkpoint_every: u64) -> (Table<Items>, Arc<PartitionIndex>) {
    let store = Store::open(path).unwrap();
    let index = PartitionIndex::open(&store, Items::TABLE_NAME, IdKey::insecure_default())
        .unwrap()
        .with_checkpoint_every(checkpoint_every);
    (Table::new(store).with_hook(index.clone()), index)
}

fn heads(index: &PartitionIndex) -> Vec<Head> {
    (0..=255u8).map(|p| index.head(p)).collect()
}

/// Dirty markers persisted: keys of the heads tree other than 1-byte heads and the format key.
fn markers(store: &Store) -> usize {
    store
        .scan(HEAD_TREE, &KeyRange::all(), Direction::Forward, usize::MAX)
        .unwrap()
        .iter()
        .filter(|(k, _)| k.len() == 2 && k[0] == b'd')
        .count()
}

fn write_items(table: &Table<Items>, from: u32, n: u32) {
    let items = (from..from + n)
        .map(|i| item(&format!("pk-{}", i % 300), &i.to_be_bytes(), 1, 1, b"v"))
        .collect();
    table.insert_many(items).unwrap();
}

fn assert_heads_match_items(index: &PartitionIndex, store: &Store, items: u64) {
    let report = index.verify(store).unwrap();
    assert!(
        report.id_tree_mismatched.is_empty(),
        "partitions whose id tree differs from their items: {:?}",
        report.id_tree_mismatched
    );
    assert!(
        report.mismatched.is_empty(),
        "partitions whose head differs from their items: {:?}",
        report.mismatched
    );
    assert_eq!(report.items, items);
}

#[test]
fn heads_survive_a_reopen_with_or_without_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let before = {
        let (table, index) = open(&path, 1_000_000);
        for i in 0..20 {
            write_items(&table, i * 50, 50);
        }
        assert!(
            markers(table.store()) > 100,
            "written partitions are marked"
        );
        heads(&index)
        // Dropped without a checkpoint: as after a crash, the next open must rebuild.
    };
    let (table, index) = open(&path, 1_000_000);
    assert_eq!(heads(&index), before, "rebuilt from the items");
    assert_eq!(
        markers(table.store()),
        0,
        "the open cleared what it rebuilt"
    );
    assert_heads_match_items(&index, table.store(), 1000);

    write_items(&table, 1000, 100);
    let after = heads(&index);
    assert_ne!(after, before);
    let persisted = index.checkpoint(table.store()).unwrap();
    assert!(persisted > 0);
    assert_eq!(markers(table.store()), 0, "a checkpoint clears the markers");
    drop((table, index));
    let (table, index) = open(&path, 1_000_000);
    assert_eq!(heads(&index), after, "loaded from the checkpoint");
    assert_heads_match_items(&index, table.store(), 1100);
}

#[test]
fn automatic_checkpoints_bound_the_partitions_to_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let (table, index) = open(&dir.path().join("s.redb"), 64);
    for i in 0..1000u32 {
        table
            .insert(&item(&format!("pk-{i}"), b"s", 1, 1, b"v"))
            .unwrap();
    }
    // The 1000th change is 1000 % 64 = 40 changes after the last automatic checkpoint.
    let m = markers(table.store());
    assert!(
        (1..=40).contains(&m),
        "markers left after the last checkpoint: {m}"
    );
    assert_heads_match_items(&index, table.store(), 1000);
}

#[test]
fn an_aborted_transaction_changes_no_head_and_leaves_nothing_in_flight() {
    let store = Store::memory();
    let index = PartitionIndex::open(&store, Items::TABLE_NAME, IdKey::insecure_default()).unwrap();
    let before = heads(&index);
    let hook = index.clone();
    let r = store.transact(move |tx| {
        hook.on_change(
            tx,
            &Change {
                table: Items::TABLE_NAME,
                key: &[7u8; 40],
                old: None,
                new: Some(b"value"),
            },
        )?;
        Err::<(), _>(StorageError::Corrupted("abort on purpose".into()))
    });
    assert!(matches!(r, Err(TxError::Aborted(_))));
    assert_eq!(heads(&index), before);
    // Nothing in flight: partition 7 is not held back from a checkpoint, and no marker of the
    // aborted transaction was committed.
    assert_eq!(markers(&store), 0);
    let table = Table::<Items>::new(store.clone()).with_hook(index.clone());
    table.insert(&item("x", b"s", 1, 1, b"v")).unwrap();
    assert_eq!(index.checkpoint(&store).unwrap(), 1);
    assert_eq!(markers(&store), 0);
}

#[test]
fn a_corrupted_persisted_head_is_found_by_verify_and_fixed_by_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let (table, index) = open(&path, 1_000_000);
        write_items(&table, 0, 500);
        index.checkpoint(table.store()).unwrap();
        // Tamper with one clean partition's persisted state (same length, wrong content).
        let victim = (0..=255u8).find(|p| index.head(*p).count() > 0).unwrap();
        let len = table
            .store()
            .get(HEAD_TREE, &[victim])
            .unwrap()
            .unwrap()
            .len();
        table
            .store()
            .transact(move |tx| tx.put(HEAD_TREE, &[victim], &vec![0x02; len]))
            .unwrap();
    }
    let (table, index) = open(&path, 1_000_000);
    let report = index.verify(table.store()).unwrap();
    assert_eq!(report.mismatched.len(), 1, "{report:?}");
    assert_eq!(index.rebuild(table.store()).unwrap(), 500);
    assert_heads_match_items(&index, table.store(), 500);
}

/// The writer of the SIGKILL test: inert unless `SHOAL_INDEX_CRASH_DIR` is set.
#[test]
fn index_crash_child() {
    let Ok(dir) = std::env::var("SHOAL_INDEX_CRASH_DIR") else {
        return;
    };
    let round: u32 = std::env::var("SHOAL_INDEX_CRASH_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    // Frequent checkpoints, so kills land before, during and after them.
    let (table, _index) = open(&Path::new(&dir).join("crash.redb"), 50);
    let out = std::sync::Mutex::new(std::io::stdout());
    std::thread::scope(|sc| {
        for w in 0..4u32 {
            let (table, out) = (table.clone(), &out);
            sc.spawn(move || {
                for i in 0u32.. {
                    // Overwrites and new items, over all partitions.
                    let pk = format!("pk-{}", (i * 4 + w) % 997);
                    let sk = format!("{round}-{w}-{}", i % 50);
                    let value = format!("{round}-{w}-{i}");
                    table
                        .insert(&item(
                            &pk,
                            sk.as_bytes(),
                            u64::from(i) + 1,
                            1,
                            value.as_bytes(),
                        ))
                        .unwrap();
                    ack(&mut *out.lock().unwrap(), &format!("{pk} {sk} {value}"));
                }
            });
        }
    });
}

#[test]
fn heads_equal_the_items_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x1dec5);
    let rounds = 12;
    let mut acked_total = 0;
    for round in 0..rounds {
        let child = WriterChild::spawn(
            "index_crash_child",
            &[
                ("SHOAL_INDEX_CRASH_DIR", dir.path().display().to_string()),
                ("SHOAL_INDEX_CRASH_ROUND", round.to_string()),
            ],
        );
        let acked: Vec<(String, String, String)> = child
            .kill_after(Duration::from_millis(rng.random_range(50..400)))
            .into_iter()
            .filter_map(|line| {
                let f: Vec<String> = line.split(' ').map(String::from).collect();
                (f.len() == 3).then(|| (f[0].clone(), f[1].clone(), f[2].clone()))
            })
            .collect();

        let (table, index) = open(&dir.path().join("crash.redb"), 50);
        let items = table.len().unwrap();
        assert_heads_match_items(&index, table.store(), items);
        // The last acknowledged value of each key (or a later one) is stored.
        let mut last = std::collections::HashMap::new();
        for (pk, sk, value) in &acked {
            last.insert((pk.clone(), sk.clone()), value.clone());
        }
        for ((pk, sk), value) in &last {
            let got = table
                .get(pk, &sk.as_bytes().to_vec())
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: acknowledged {pk}/{sk} lost"));
            let got = String::from_utf8(got.value.get().clone()).unwrap();
            let n = |v: &str| v.rsplit('-').next().unwrap().parse::<u64>().unwrap();
            assert!(n(&got) >= n(value), "round {round}: {pk}/{sk} went back");
        }
        acked_total += acked.len();
    }
    assert!(
        acked_total > rounds,
        "the child must have written: {acked_total}"
    );
    eprintln!("{rounds} SIGKILL rounds, {acked_total} acknowledged writes, heads equal the items");
}

/// The id map is a delta in memory plus runs written by checkpoints and merged by compaction:
/// through many checkpoints (every 37 changes), overwrites, removals and reopenings, it must
/// give exactly the items' ids and keys, and sessions must still converge on it.
#[test]
fn the_id_map_stays_exact_through_checkpoints_compactions_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x1d_3a9);
    let mut written = 0u64;
    for round in 0..4 {
        let (table, index) = open(&path, 37);
        for _ in 0..40 {
            let items: Vec<_> = (0..50)
                .map(|_| {
                    // Few keys, so most writes overwrite: old ids leave the map, new ones come.
                    let k: u32 = rng.random_range(0..600);
                    written += 1;
                    item(
                        &format!("pk-{}", k % 7),
                        &k.to_be_bytes(),
                        written,
                        1,
                        format!("v{written}").as_bytes(),
                    )
                })
                .collect();
            table.insert_many(items).unwrap();
        }
        // Remove some items outright.
        let victims: Vec<(Vec<u8>, Vec<u8>)> = table
            .store()
            .scan(Items::TABLE_NAME, &KeyRange::all(), Direction::Forward, 30)
            .unwrap();
        table.delete_many_if_equal(victims).unwrap();
        let items = table.len().unwrap();
        assert_heads_match_items(&index, table.store(), items);
        if round % 2 == 0 {
            index.checkpoint(table.store()).unwrap();
        }
        // Dropped with or without a final checkpoint: the next open must serve the same.
    }
    let (table, index) = open(&path, 37);
    let items = table.len().unwrap();
    assert_heads_match_items(&index, table.store(), items);
}
