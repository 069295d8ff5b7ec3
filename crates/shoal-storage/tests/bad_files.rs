//! A store file that is not whole is refused with an error naming it: never a panic, never a
//! silently empty store, and the file is left as it was.

use std::path::Path;

use rand::{Rng, SeedableRng};
use shoal_storage::{OpenError, StorageError, Store};

fn make_store(path: &Path, items: usize) {
    let s = Store::open(path).unwrap();
    for chunk in 0..(items / 100) {
        s.transact(move |tx| {
            for i in 0..100 {
                let k = format!("key-{chunk:05}-{i:03}");
                tx.put("items", k.as_bytes(), &[7u8; 200])?;
            }
            Ok::<_, StorageError>(())
        })
        .unwrap();
    }
}

fn assert_refused(path: &Path, what: &str) -> OpenError {
    let before = std::fs::read(path).unwrap();
    let err = Store::open(path).expect_err(what);
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "{what}: the error must name the file: {msg}"
    );
    assert!(
        std::fs::read(path).unwrap() == before,
        "{what}: a refused file is not modified"
    );
    err
}

#[test]
fn truncated_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.redb");
    make_store(&path, 5_000);
    let len = std::fs::metadata(&path).unwrap().len();
    for cut in [len / 2, len / 3, 4096, 100] {
        let copy = dir.path().join(format!("cut-{cut}.redb"));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&copy, &bytes[..cut as usize]).unwrap();
        let err = assert_refused(&copy, "truncated store");
        assert!(
            matches!(err, OpenError::Corrupt { .. }),
            "cut at {cut}: {err:?}"
        );
    }
}

#[test]
fn random_bytes_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for (i, len) in [1usize, 3, 512, 4096, 1 << 20].into_iter().enumerate() {
        let path = dir.path().join(format!("r{i}.redb"));
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        std::fs::write(&path, bytes).unwrap();
        let err = assert_refused(&path, "random bytes");
        assert!(matches!(err, OpenError::NotADatabase { .. }), "{err:?}");
    }
}

#[test]
fn random_bytes_behind_a_valid_header_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.redb");
    make_store(&path, 2_000);
    let mut bytes = std::fs::read(&path).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    // Keep the header page, scramble everything after it.
    for b in bytes.iter_mut().skip(4096) {
        *b = rng.random();
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = assert_refused(&path, "scrambled pages");
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
}

#[test]
fn empty_file_is_refused_not_reinitialised() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.redb");
    std::fs::write(&path, b"").unwrap();
    let err = assert_refused(&path, "empty file");
    assert!(matches!(err, OpenError::Empty { .. }), "{err:?}");
}

#[test]
fn foreign_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("other");
            txn.open_table(def).unwrap().insert("x", 1).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = assert_refused(&path, "foreign database");
    assert!(matches!(err, OpenError::Foreign { .. }), "{err:?}");
}

#[test]
fn second_open_of_a_live_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let _s = Store::open(&path).unwrap();
    let err = Store::open(&path).expect_err("already open");
    assert!(matches!(err, OpenError::AlreadyOpen { .. }), "{err:?}");
}
