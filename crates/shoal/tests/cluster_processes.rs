//! Real `shoal` processes on loopback: `shoal dev` forms a 3-node cluster and applies a layout,
//! `shoal status --json` reports it from any node, a node with the wrong secret never joins and
//! is refused, and a second `shoal dev` run reuses the data.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn shoal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
}

/// Starts `shoal dev` and waits for its "ready" line; returns the child and what it printed.
fn dev(dir: &std::path::Path, base_port: u16) -> (Child, String) {
    dev_n(dir, base_port, 3)
}

fn dev_n(dir: &std::path::Path, base_port: u16, nodes: usize) -> (Child, String) {
    let mut child = shoal()
        .args([
            "dev",
            "--nodes",
            &nodes.to_string(),
            "--exit-with-stdin",
            "--dir",
        ])
        .arg(dir)
        .args(["--base-port", &base_port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            all.push_str(&line);
            all.push('\n');
            if line.contains("ready in") {
                let _ = tx.send(all.clone());
            }
        }
    });
    let out = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("shoal dev prints that the cluster is ready");
    (child, out)
}

fn stop(mut child: Child) {
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    panic!("shoal dev did not stop when asked");
}

fn status(config: &std::path::Path) -> serde_json::Value {
    let out = shoal()
        .arg("-c")
        .arg(config)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn dev_cluster_forms_reports_status_refuses_strangers_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let base = 20000 + (std::process::id() % 20000) as u16;
    let (child, out) = dev(dir.path(), base);
    assert!(
        out.contains("applied layout version 1 over 3 nodes"),
        "{out}"
    );

    // Any node reports the whole cluster.
    for k in 1..=3 {
        let s = status(&dir.path().join(format!("node{k}/shoal.toml")));
        assert_eq!(s["layout_version"], 1, "{s}");
        let nodes = s["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3, "{s}");
        for n in nodes {
            assert_eq!(n["up"], true, "{s}");
            assert!(n["zone"].as_str().unwrap().starts_with("dc"), "{s}");
            assert_eq!(n["id"].as_str().unwrap().len(), 64);
            assert!(n["addr"].as_str().unwrap().starts_with("127.0.0.1:"));
        }
    }

    // Write through one node, read through another.
    let put = shoal()
        .arg("-c")
        .arg(dir.path().join("node1/shoal.toml"))
        .args(["put", "bucket", "key", "hello"])
        .output()
        .unwrap();
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let get = shoal()
        .arg("-c")
        .arg(dir.path().join("node3/shoal.toml"))
        .args(["get", "bucket", "key"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "hello");

    // A node with another secret, bootstrapping to node 1, never joins.
    let stranger_dir = dir.path().join("stranger");
    std::fs::create_dir_all(&stranger_dir).unwrap();
    let stranger_conf = stranger_dir.join("shoal.toml");
    let mut f = std::fs::File::create(&stranger_conf).unwrap();
    write!(
        f,
        "data_dir = {:?}\nrpc_bind_addr = \"127.0.0.1:{}\"\nrpc_secret = \"{}\"\nbootstrap_peers = [\"127.0.0.1:{}\"]\nheartbeat_ms = 200\n",
        stranger_dir,
        base + 10,
        "ab".repeat(32),
        base
    )
    .unwrap();
    let mut stranger = shoal()
        .arg("-c")
        .arg(&stranger_conf)
        .args(["server", "--exit-with-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let id_out = shoal()
        .arg("-c")
        .arg(&stranger_conf)
        .args(["node", "id"])
        .output()
        .unwrap();
    let stranger_id = String::from_utf8(id_out.stdout).unwrap();
    let stranger_id = stranger_id.split('@').next().unwrap().to_string();
    let s = status(&dir.path().join("node1/shoal.toml"));
    assert_eq!(s["nodes"].as_array().unwrap().len(), 3, "{s}");
    assert!(
        !s.to_string().contains(&stranger_id),
        "the stranger is not a member: {s}"
    );
    let log = std::fs::read_to_string(dir.path().join("node1/node.log")).unwrap();
    assert!(
        log.contains("refused an incoming connection"),
        "the refusal is logged: {log}"
    );
    drop(stranger.stdin.take());
    let _ = stranger.wait();

    // Stop, start again: the data and the layout are reused.
    stop(child);
    let (child, out) = dev(dir.path(), base);
    assert!(
        out.contains("layout version 1 already covers the 3 nodes"),
        "{out}"
    );
    let s = status(&dir.path().join("node3/shoal.toml"));
    assert_eq!(s["layout_version"], 1, "{s}");
    stop(child);
}

#[test]
fn five_nodes_form_from_bootstrap_peers() {
    let dir = tempfile::tempdir().unwrap();
    let base = 20000 + ((std::process::id() + 3000) % 20000) as u16;
    let (child, out) = dev_n(dir.path(), base, 5);
    assert!(out.contains("over 5 nodes"), "{out}");
    let s = status(&dir.path().join("node4/shoal.toml"));
    let nodes = s["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 5, "{s}");
    assert!(nodes.iter().all(|n| n["up"] == true), "{s}");
    // Replication factor 3 over 5 nodes: 768 replicas spread over them.
    let total: u64 = nodes
        .iter()
        .map(|n| n["partitions"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 3 * 256, "{s}");
    stop(child);
}
