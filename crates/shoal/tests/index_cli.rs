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

    // Damage the index: drop one id-map entry behind the table's back.
    {
        let s = shoal_storage::Store::open(&store).unwrap();
        let (k, _) = s
            .scan(
                "notes~ids",
                &shoal_storage::KeyRange::all(),
                shoal_storage::Direction::Forward,
                1,
            )
            .unwrap()
            .remove(0);
        s.transact(move |tx| tx.delete("notes~ids", &k)).unwrap();
    }
    let (ok, out) = shoal(&[&["index", "verify"], &args[..]].concat());
    assert!(!ok && out.contains("1 partitions mismatched"), "{out}");
    let (ok, out) = shoal(&[&["index", "rebuild"], &args[..]].concat());
    assert!(ok && out.contains("rebuilt from 4 items"), "{out}");
    let (ok, out) = shoal(&[&["index", "verify"], &args[..]].concat());
    assert!(ok, "{out}");
}
