//! `shoal index verify` finds a damaged index and `shoal index rebuild` repairs it.

use std::process::Command;

fn shoal(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn verify_detects_and_rebuild_repairs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert!(shoal(&["demo", "--dir", d]).0);
    let store = format!("{d}/replica-a.redb");
    let args = ["--store", store.as_str(), "--table", "notes"];
    let (ok, out) = shoal(&[&["index", "verify"], &args[..]].concat());
    assert!(ok, "{out}");
    assert!(
        out.contains("0 partitions mismatched") && out.contains("4 items"),
        "{out}"
    );

    // Damage the index: flip a byte of one partition's head behind the table's back.
    {
        let s = shoal_storage::Store::open(&store).unwrap();
        let (k, mut v) = s
            .scan(
                "notes~head",
                &shoal_storage::KeyRange::all(),
                shoal_storage::Direction::Forward,
                usize::MAX,
            )
            .unwrap()
            .into_iter()
            .find(|(k, _)| k.len() == 1) // a partition's head (its key is the partition byte)
            .expect("a persisted head");
        v[0] ^= 1;
        s.transact(move |tx| tx.put("notes~head", &k, &v)).unwrap();
    }
    let (ok, out) = shoal(&[&["index", "verify"], &args[..]].concat());
    assert!(!ok && out.contains("1 partitions mismatched"), "{out}");
    let (ok, out) = shoal(&[&["index", "rebuild"], &args[..]].concat());
    assert!(ok && out.contains("rebuilt from 4 items"), "{out}");
    let (ok, out) = shoal(&[&["index", "verify"], &args[..]].concat());
    assert!(ok, "{out}");
}
