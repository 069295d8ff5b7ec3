//! Real `shoal` processes on loopback: `shoal dev` forms a 3-node cluster and applies a layout,
//! `shoal status --json` reports it from any node, a node with the wrong secret never joins and
//! is refused, and a second `shoal dev` run reuses the data.

use std::io::Write;
use std::time::Duration;

mod common;
use common::{base_port, json, shoal, start_dev, start_server, stop};

fn status(config: &std::path::Path) -> serde_json::Value {
    json(config, &["status", "--json"])
}

fn dev(dir: &std::path::Path, base_port: u16) -> (std::process::Child, String) {
    start_dev(dir, base_port, 3)
}

#[test]
fn dev_cluster_forms_reports_status_refuses_strangers_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_port(0);
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
    let stranger = start_server(&stranger_conf);
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
    stop(stranger);

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
    let base = base_port(3000);
    let (child, out) = start_dev(dir.path(), base, 5);
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
