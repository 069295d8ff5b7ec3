//! Kill -9 a node of a real 3-node cluster, keep writing at quorum, restart it: background sync
//! alone (no reads) brings every partition back to the same digest as its peers.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn shoal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
}

fn digests(config: &std::path::Path) -> Option<String> {
    let out = shoal().arg("-c").arg(config).arg("digests").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_ready(child: &mut Child) {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("ready in") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("cluster ready");
}

#[test]
fn a_killed_node_catches_up_by_background_sync_alone() {
    let items: u32 = std::env::var("SHOAL_CATCHUP_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().unwrap();
    let base = 20000 + ((std::process::id() + 7000) % 20000) as u16;
    let mut dev = shoal()
        .args(["dev", "--nodes", "3", "--exit-with-stdin", "--dir"])
        .arg(dir.path())
        .args(["--base-port", &base.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(&mut dev);
    let conf = |k: u32| dir.path().join(format!("node{k}/shoal.toml"));

    // Kill node 3 outright.
    let pid = std::fs::read_to_string(dir.path().join("node3/shoal.pid")).unwrap();
    assert!(
        Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_millis(300));

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
    let mut node3 = shoal()
        .arg("-c")
        .arg(conf(3))
        .args(["server", "--exit-with-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
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

    drop(node3.stdin.take());
    let _ = node3.wait();
    drop(dev.stdin.take());
    let _ = dev.wait();
}
