//! A full disk: writes fail with a clear error and lose nothing acknowledged; once space is
//! back, the engine (whose redb handle the I/O error poisoned) reopens itself and writes again.
//! Needs a real full filesystem: a small tmpfs, mounted here (root only).

use std::process::Command;

use shoal_storage::{RedbOptions, StorageError, Store, TxError};

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_writes_loses_nothing_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(dir.path())
        .output();
    match mounted {
        Ok(o) if o.status.success() => {}
        other => {
            // Without root there is no small filesystem to fill; say so loudly.
            eprintln!("SKIPPED: cannot mount a tmpfs here ({other:?}); run as root");
            return;
        }
    }
    let _mount = Mount(dir.path().to_path_buf());
    let path = dir.path().join("store.redb");
    let store = Store::open_with(&path, RedbOptions::default()).unwrap();
    let mut acked = Vec::new();
    let mut first_error = None;
    for i in 0u32..100_000 {
        let key = i.to_be_bytes().to_vec();
        let value = vec![(i % 251) as u8; 1024];
        let (k, v) = (key.clone(), value.clone());
        match store.transact(move |tx| tx.put("t", &k, &v)) {
            Ok(()) => acked.push(key),
            Err(e) => {
                first_error = Some(e);
                break;
            }
        }
    }
    let e = first_error.expect("a 2 MiB filesystem fills up");
    assert!(
        matches!(e, TxError::Commit(StorageError::DiskFull)),
        "a full disk is reported as such: {e}"
    );
    assert!(
        acked.len() > 100,
        "{} writes before the disk filled",
        acked.len()
    );
    // Still full: writes keep failing, reads keep working.
    assert!(
        store
            .transact(|tx| tx.put("t", b"more", &[0; 1024]))
            .is_err()
    );
    // Space comes back.
    let grown = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(grown.success());
    let mut recovered = false;
    for _ in 0..50 {
        if store.transact(|tx| tx.put("t", b"after", b"space")).is_ok() {
            recovered = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(recovered, "the store writes again once the disk has room");
    for key in &acked {
        assert!(
            store.get("t", key).unwrap().is_some(),
            "acknowledged write lost"
        );
    }
    drop(store);
    let store = Store::open_with(&path, RedbOptions::default()).unwrap();
    let mut missing = 0;
    for key in &acked {
        if store.get("t", key).unwrap().is_none() {
            missing += 1;
        }
    }
    assert_eq!(missing, 0, "of {} acknowledged writes", acked.len());
    assert_eq!(
        store.get("t", b"after").unwrap().as_deref(),
        Some(&b"space"[..])
    );
    println!(
        "{} acknowledged writes before the disk filled; none lost; writes resumed",
        acked.len()
    );
}
