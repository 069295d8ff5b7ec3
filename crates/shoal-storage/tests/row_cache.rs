//! The row cache in front of redb never answers with a value older than an acknowledged write,
//! while writers and readers race on the same keys, and its absence answers are forgotten too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use shoal_storage::{RedbOptions, StorageError, Store};

const KEYS: u64 = 16;
const WRITES_PER_KEY: u64 = 150;

fn key(k: u64) -> [u8; 8] {
    k.to_be_bytes()
}

fn value(v: &[u8]) -> u64 {
    u64::from_be_bytes(v.try_into().expect("8-byte values"))
}

#[test]
fn a_read_that_starts_after_an_acknowledged_write_never_sees_an_older_value() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path().join("rows.redb"),
        RedbOptions {
            // Small enough that eviction runs during the test.
            row_cache_size: 64 * 1024,
            ..RedbOptions::default()
        },
    )
    .unwrap();
    // acked[k]: the highest value of key k whose write was acknowledged.
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (store, acked, done) = (store.clone(), acked.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                let mut k = r;
                while !done.load(Ordering::SeqCst) {
                    k = (k * 7 + 3) % KEYS;
                    let floor = acked[k as usize].load(Ordering::SeqCst);
                    let seen = store.get("t", &key(k)).unwrap().map_or(0, |v| value(&v));
                    assert!(
                        seen >= floor,
                        "key {k}: read {seen} after write {floor} was acknowledged"
                    );
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (store, acked) = (store.clone(), acked.clone());
            std::thread::spawn(move || {
                for v in 1..=WRITES_PER_KEY {
                    for k in (w..KEYS).step_by(2) {
                        store
                            .transact(move |tx| -> Result<(), StorageError> {
                                tx.put("t", &key(k), &v.to_be_bytes())
                            })
                            .unwrap();
                        acked[k as usize].store(v, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 0);
    for k in 0..KEYS {
        let v = store.get("t", &key(k)).unwrap().map(|v| value(&v));
        assert_eq!(v, Some(WRITES_PER_KEY), "key {k} after all writes");
    }
    let stats = store.engine().stats();
    assert!(
        stats.row_cache_hits > 0,
        "the cache answered reads: {stats:?}"
    );

    // Deletes invalidate too, and a remembered absence is forgotten by a later write.
    assert_eq!(store.get("t", b"absent").unwrap(), None);
    assert_eq!(store.get("t", b"absent").unwrap(), None);
    store
        .transact(|tx| -> Result<(), StorageError> {
            tx.put("t", b"absent", &7u64.to_be_bytes())?;
            for k in 0..KEYS {
                tx.delete("t", &key(k))?;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(
        store.get("t", b"absent").unwrap().map(|v| value(&v)),
        Some(7)
    );
    for k in 0..KEYS {
        assert_eq!(store.get("t", &key(k)).unwrap(), None, "key {k} deleted");
    }
}

#[test]
fn an_aborted_transaction_leaves_the_cached_value_right() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("abort.redb")).unwrap();
    store
        .transact(|tx| -> Result<(), StorageError> { tx.put("t", b"k", b"old") })
        .unwrap();
    assert_eq!(store.get("t", b"k").unwrap().as_deref(), Some(&b"old"[..]));
    assert_eq!(store.get("t", b"k").unwrap().as_deref(), Some(&b"old"[..]));
    // A transaction that writes and then fails is not applied; the cache still answers "old".
    let r = store.transact(|tx| -> Result<(), &'static str> {
        tx.put("t", b"k", b"new").map_err(|_| "put")?;
        Err("changed my mind")
    });
    assert!(r.is_err());
    assert_eq!(store.get("t", b"k").unwrap().as_deref(), Some(&b"old"[..]));
    assert_eq!(store.get("t", b"k").unwrap().as_deref(), Some(&b"old"[..]));
}
