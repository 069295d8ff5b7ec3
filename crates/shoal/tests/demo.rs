//! `shoal demo` runs as a real process, converges its two replicas, and keeps its data across
//! runs.

use std::process::Command;

fn demo(dir: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["demo", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn demo_converges_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let first = demo(dir.path());
    assert!(first.contains("(run 1:"), "{first}");
    assert!(
        first.contains("converged: both replicas hold identical items"),
        "{first}"
    );
    let second = demo(dir.path());
    assert!(
        second.contains("(run 2:"),
        "the first run's data must persist: {second}"
    );
    assert!(second.contains("runs = \"2\""), "{second}");
}

#[test]
fn demo_refuses_a_corrupt_store_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("replica-a.redb"),
        b"definitely not a database",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("replica-a.redb") && err.contains("not a Shoal store"),
        "{err}"
    );
}
