//! Table operations on the real engine: ranges, tombstones, conditional delete, hooks, and
//! reading data written by an older version of an entry type.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use shoal_storage::{StorageError, Store, WriteTx};
use shoal_table::codec::{DecodeError, Initial, Versioned};
use shoal_table::crdt::{Crdt, Lww, NodeId, Stamp};
use shoal_table::{
    Change, ChangeHook, Entry, PartitionHash, RangeQuery, Schema, Table, TableError, engine_key,
};

mod common;
use common::{Doc, Docs, doc_at, tombstone_at};

fn redb_table() -> (Table<Docs>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("t.redb")).unwrap();
    (Table::new(store), dir)
}

fn names(docs: Vec<Doc>) -> Vec<String> {
    docs.into_iter().map(|d| d.name).collect()
}

#[test]
fn range_within_a_partition() {
    let (t, _d) = redb_table();
    for n in ["a", "b", "c", "d", "e"] {
        t.insert(&doc_at("bucket", n, 1, n.as_bytes())).unwrap();
        t.insert(&doc_at("other", n, 1, b"x")).unwrap();
    }
    let pk = "bucket".to_string();
    let q = |start: Option<&str>, end: Option<&str>, limit, reverse| RangeQuery {
        start: start.map(String::from),
        end: end.map(String::from),
        limit,
        reverse,
    };
    assert_eq!(
        names(t.range(&pk, &q(None, None, 100, false)).unwrap()),
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(
        names(t.range(&pk, &q(Some("b"), Some("d"), 100, false)).unwrap()),
        ["b", "c"]
    );
    assert_eq!(
        names(t.range(&pk, &q(None, None, 2, true)).unwrap()),
        ["e", "d"]
    );
    assert_eq!(
        names(t.range(&pk, &q(Some("d"), Some("a"), 100, true)).unwrap()),
        ["d", "c", "b"]
    );
    assert_eq!(
        names(t.range(&pk, &q(Some("c"), None, 1, false)).unwrap()),
        ["c"]
    );
    assert!(
        t.range(&"nobody".to_string(), &q(None, None, 10, false))
            .unwrap()
            .is_empty()
    );
    assert_eq!(t.len().unwrap(), 10);
}

#[test]
fn engine_keys_group_partitions_contiguously() {
    let a = engine_key(&"bucket".to_string(), &"x".to_string());
    let b = engine_key(&"bucket".to_string(), &"y".to_string());
    assert_eq!(a[..32], PartitionHash::of(b"bucket").0);
    assert_eq!(a[..32], b[..32]);
    assert!(a < b, "sort order follows the sort key");
    assert_eq!(&a[32..], b"x");
}

#[test]
fn tombstones_win_over_older_writes_and_lose_to_newer() {
    let (t, _d) = redb_table();
    let (pk, sk) = ("b".to_string(), "doc".to_string());
    t.insert(&doc_at("b", "doc", 10, b"v1")).unwrap();
    assert!(matches!(
        t.delete(&doc_at("b", "doc", 11, b"v2")),
        Err(TableError::NotATombstone { .. })
    ));
    t.delete(&tombstone_at("b", "doc", 20)).unwrap();
    let got = t.get(&pk, &sk).unwrap().unwrap();
    assert!(got.is_tombstone());
    // A late-arriving older write does not resurrect the item.
    t.insert(&doc_at("b", "doc", 15, b"late")).unwrap();
    let got = t.get(&pk, &sk).unwrap().unwrap();
    assert!(got.is_tombstone(), "the deletion is a flag: it stays");
    assert_eq!(t.len().unwrap(), 1, "the tombstone is stored, not removed");
}

#[test]
fn delete_if_equal_only_removes_unchanged_items() {
    let (t, _d) = redb_table();
    let d = doc_at("b", "x", 1, b"one");
    t.insert(&d).unwrap();
    let key = Table::<Docs>::key_of(&d);
    let sent = t.get_raw(&key).unwrap().unwrap();
    // A concurrent write changes the item after it was read for offload.
    t.insert(&doc_at("b", "x", 2, b"two")).unwrap();
    assert!(
        !t.delete_if_equal(&key, &sent).unwrap(),
        "changed item must stay"
    );
    assert!(t.get_raw(&key).unwrap().is_some());
    let now = t.get_raw(&key).unwrap().unwrap();
    assert!(t.delete_if_equal(&key, &now).unwrap());
    assert!(t.get_raw(&key).unwrap().is_none());
}

/// Counts items per partition in a side tree, inside the writing transaction.
struct CountHook {
    calls: AtomicUsize,
    fail_on: Option<Vec<u8>>,
}

impl ChangeHook for CountHook {
    fn on_change(&self, tx: &mut dyn WriteTx, c: &Change<'_>) -> Result<(), StorageError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail_on.as_deref() == Some(c.key) {
            return Err(StorageError::Engine("hook refused".into()));
        }
        let cur = tx
            .get("count", &c.key[..32])?
            .map(|v| u64::from_be_bytes(v.try_into().unwrap()))
            .unwrap_or(0);
        let delta: i64 = match (c.old.is_some(), c.new.is_some()) {
            (false, true) => 1,
            (true, false) => -1,
            _ => 0,
        };
        tx.put(
            "count",
            &c.key[..32],
            &((cur as i64 + delta) as u64).to_be_bytes(),
        )
    }
}

#[test]
fn hooks_run_atomically_with_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("h.redb")).unwrap();
    let bad = doc_at("b", "bad", 1, b"x");
    let hook = Arc::new(CountHook {
        calls: AtomicUsize::new(0),
        fail_on: Some(Table::<Docs>::key_of(&bad)),
    });
    let t = Table::<Docs>::new(store.clone()).with_hook(hook.clone());
    let count = || {
        store
            .get("count", &PartitionHash::of(b"b").0)
            .unwrap()
            .map(|v| u64::from_be_bytes(v.try_into().unwrap()))
    };
    t.insert(&doc_at("b", "one", 1, b"1")).unwrap();
    t.insert(&doc_at("b", "two", 1, b"2")).unwrap();
    assert_eq!(count(), Some(2));
    // An unchanged merge changes nothing and calls no hook.
    let calls = hook.calls.load(Ordering::SeqCst);
    t.insert(&doc_at("b", "one", 1, b"1")).unwrap();
    assert_eq!(hook.calls.load(Ordering::SeqCst), calls);
    // A failing hook aborts the whole batch: neither item nor count moves.
    let r = t.insert_many(vec![doc_at("b", "three", 1, b"3"), bad.clone()]);
    assert!(r.is_err());
    assert!(t.get(&"b".into(), &"three".into()).unwrap().is_none());
    assert_eq!(count(), Some(2));
    let one = t
        .get_raw(&engine_key(&"b".to_string(), &"one".to_string()))
        .unwrap()
        .unwrap();
    assert!(
        t.delete_if_equal(&engine_key(&"b".to_string(), &"one".to_string()), &one)
            .unwrap()
    );
    assert_eq!(count(), Some(1));
}

#[test]
fn insert_encoded_recomputes_keys_and_rejects_garbage() {
    let (t, _d) = redb_table();
    let d = doc_at("b", "enc", 3, b"z");
    assert_eq!(t.insert_encoded(vec![d.encode().unwrap()]).unwrap(), 1);
    assert_eq!(t.get(&"b".into(), &"enc".into()).unwrap().unwrap(), d);
    assert_eq!(
        t.insert_encoded(vec![d.encode().unwrap()]).unwrap(),
        0,
        "idempotent"
    );
    let err = t.insert_encoded(vec![b"garbage".to_vec()]).unwrap_err();
    assert!(
        matches!(
            err,
            TableError::Decode {
                source: DecodeError::UnknownVersion { .. },
                ..
            }
        ),
        "{err}"
    );
    let mut truncated = d.encode().unwrap();
    truncated.truncate(truncated.len() - 3);
    let err = t.insert_encoded(vec![truncated]).unwrap_err();
    assert!(
        matches!(
            err,
            TableError::Decode {
                source: DecodeError::Malformed { .. },
                ..
            }
        ),
        "{err}"
    );
}

// ---- schema evolution -------------------------------------------------------------------

/// Version 1 of a counter entry: a single LWW value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CounterV1 {
    name: String,
    value: Lww<u64>,
}
impl Versioned for CounterV1 {
    const VERSION_MARKER: &'static [u8] = b"Tcnt1";
    type Previous = Initial;
    fn migrate(p: Initial) -> Self {
        match p {}
    }
}

/// Version 2: the value is split in a label and a value, and gains an optional note (a named
/// field with a default, readable from v2 data written before the note existed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CounterV2 {
    name: String,
    value: Lww<u64>,
    label: Lww<String>,
    #[serde(default)]
    note: Option<String>,
}
impl Versioned for CounterV2 {
    const VERSION_MARKER: &'static [u8] = b"Tcnt2";
    type Previous = CounterV1;
    fn migrate(p: CounterV1) -> Self {
        CounterV2 {
            label: Lww::new(p.value.stamp(), format!("migrated {}", p.name)),
            name: p.name,
            value: p.value,
            note: None,
        }
    }
}
shoal_table::crdt_struct!(CounterV2 { value, label, note });

impl Entry<String, ()> for CounterV2 {
    fn partition_key(&self) -> &String {
        &self.name
    }
    fn sort_key(&self) -> &() {
        &()
    }
    fn is_tombstone(&self) -> bool {
        false
    }
}

struct Counters;
impl Schema for Counters {
    const TABLE_NAME: &'static str = "counters";
    type PartitionKey = String;
    type SortKey = ();
    type Entry = CounterV2;
}

/// v2 as it was before the `note` field existed.
#[derive(Serialize)]
struct CounterV2WithoutNote {
    name: String,
    value: Lww<u64>,
    label: Lww<String>,
}

#[test]
fn data_written_by_an_older_version_is_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.redb");
    let n = NodeId([9; 32]);
    let old = CounterV1 {
        name: "hits".into(),
        value: Lww::new(Stamp::new(7, n), 41),
    };
    let key = engine_key(&"hits".to_string(), &());
    let old_note_less = CounterV2WithoutNote {
        name: "misses".into(),
        value: Lww::new(Stamp::new(3, n), 2),
        label: Lww::new(Stamp::new(3, n), "m".into()),
    };
    let mut note_less_bytes = b"Tcnt2".to_vec();
    rmp_serde::encode::write_named(&mut note_less_bytes, &old_note_less).unwrap();
    {
        // An old binary wrote these.
        let store = Store::open(&path).unwrap();
        let (k, v) = (key.clone(), old.encode().unwrap());
        let (k2, v2) = (engine_key(&"misses".to_string(), &()), note_less_bytes);
        store
            .transact(move |tx| {
                tx.put("counters", &k, &v)?;
                tx.put("counters", &k2, &v2)
            })
            .unwrap();
    }
    let t = Table::<Counters>::new(Store::open(&path).unwrap());
    let got = t.get(&"hits".into(), &()).unwrap().unwrap();
    assert_eq!(got.value.get(), &41);
    assert_eq!(got.label.get(), "migrated hits");
    let misses = t.get(&"misses".into(), &()).unwrap().unwrap();
    assert_eq!((misses.value.get(), misses.note.clone()), (&2, None));

    // Merging into a migrated item rewrites it in the current version.
    let mut newer = got.clone();
    newer.value.set(Stamp::new(8, n), 42);
    t.insert(&newer).unwrap();
    let raw = t.get_raw(&key).unwrap().unwrap();
    assert!(raw.starts_with(b"Tcnt2"));
    assert_eq!(
        t.get(&"hits".into(), &()).unwrap().unwrap().value.get(),
        &42
    );
    let mut expect = got;
    expect.merge(&newer);
    assert_eq!(t.get(&"hits".into(), &()).unwrap().unwrap(), expect);
}
