//! Kill -9 a node of a real 3-node cluster, keep writing at quorum, restart it: background sync
//! alone (no reads) brings every partition back to the same digest as its peers.

use std::time::{Duration, Instant};

mod common;
use common::{base_port, shoal, start_dev, start_server, stop};

fn digests(config: &std::path::Path) -> Option<String> {
    let out = shoal().arg("-c").arg(config).arg("digests").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_killed_node_catches_up_by_background_sync_alone() {
    let items: u32 = std::env::var("SHOAL_CATCHUP_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().unwrap();
    let base = base_port(7000);
    let (dev, _) = start_dev(dir.path(), base, 3);
    let conf = |k: u32| dir.path().join(format!("node{k}/shoal.toml"));

    // Kill node 3 outright.
    shoal_testkit::kill_by_pid_file(&dir.path().join("node3/shoal.pid"));

    // Writes keep succeeding at quorum (2 of 3) while it is down.
    let out = shoal()
        .arg("-c")
        .arg(conf(1))
        .args([
            "put",
            "catchup",
            "item",
            "value",
            "--copies",
            &items.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = digests(&conf(1)).unwrap();

    // Restart it and wait, without reading anything, until its digests match.
    let start = Instant::now();
    let node3 = start_server(&conf(3));
    let mut caught_up = false;
    while start.elapsed() < Duration::from_secs(60) {
        if digests(&conf(3)).as_deref() == Some(reference.as_str()) {
            caught_up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = start.elapsed();
    eprintln!(
        "catch-up of {items} missed items: {:.2} s after restart",
        took.as_secs_f64()
    );
    assert!(caught_up, "node 3 never caught up");
    assert_eq!(digests(&conf(2)).unwrap(), reference, "node 2 agrees too");

    stop(node3);
    stop(dev);
}
