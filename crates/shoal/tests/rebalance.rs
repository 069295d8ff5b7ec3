//! Add a node to a real 3-node cluster, then remove one: afterwards every item is on exactly
//! its current replicas, no node keeps items of partitions it no longer stores, nothing is lost.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
use common::{base_port, json, run, start_dev, start_server, stop};

/// Whether every partition's items sit on exactly its nodes, identical on each, `items` in all.
fn placed(members: &[(PathBuf, String)], retired: &[PathBuf], items: u64) -> bool {
    let layout = json(&members[0].0, &["layout", "show", "--json"]);
    let assignment = layout["assignment"].as_array().unwrap();
    let digests: Vec<Vec<serde_json::Value>> = members
        .iter()
        .map(|(c, _)| json(c, &["digests"]).as_array().unwrap().clone())
        .collect();
    let mut total = 0;
    for (p, owners) in assignment.iter().enumerate() {
        let owners: Vec<&str> = owners
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap())
            .collect();
        let mut reference = None;
        for (m, (_, id)) in members.iter().enumerate() {
            let d = &digests[m][p];
            let count = d[2].as_u64().unwrap();
            if owners.contains(&id.as_str()) {
                match &reference {
                    None => reference = Some(d.clone()),
                    Some(r) if r != d => {
                        if std::env::var_os("REBALANCE_DEBUG").is_some() {
                            eprintln!("partition {p}: owners differ: {r} vs {d} (member {m})");
                        }
                        return false;
                    }
                    _ => {}
                }
            } else if count > 0 {
                if std::env::var_os("REBALANCE_DEBUG").is_some() {
                    eprintln!("partition {p}: member {m} is not an owner but holds {count}");
                }
                return false;
            }
        }
        total += reference.map_or(0, |r| r[2].as_u64().unwrap());
    }
    let retired_empty = retired.iter().all(|c| {
        json(c, &["digests"])
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d[2].as_u64() == Some(0))
    });
    if std::env::var_os("REBALANCE_DEBUG").is_some() {
        eprintln!("total {total} of {items}, retired empty {retired_empty}");
    }
    total == items && retired_empty
}

fn wait_placed(members: &[(PathBuf, String)], retired: &[PathBuf], items: u64) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(90) {
        if placed(members, retired, items) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("items never settled on their replicas");
}

fn items_sent(members: &[(PathBuf, String)]) -> u64 {
    members
        .iter()
        .map(|(c, _)| {
            json(c, &["status", "--json"])["syncers"]["kv"]["items_sent"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn adding_and_removing_nodes_moves_items_to_exactly_their_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_port(11000);
    let (dev, _) = start_dev(dir.path(), base, 3);
    let conf = |k: u32| dir.path().join(format!("node{k}/shoal.toml"));
    let id = |c: &Path| {
        run(c, &["node", "id"])
            .split('@')
            .next()
            .unwrap()
            .to_string()
    };
    let items = 1500u64;
    run(
        &conf(1),
        &[
            "put",
            "rebalance",
            "item",
            "v",
            "--copies",
            &items.to_string(),
        ],
    );

    // A fourth node joins through node 1.
    let secret = std::fs::read_to_string(dir.path().join("rpc_secret")).unwrap();
    let n4 = dir.path().join("node4");
    std::fs::create_dir_all(&n4).unwrap();
    let mut f = std::fs::File::create(conf(4)).unwrap();
    write!(
        f,
        "data_dir = {n4:?}\nrpc_bind_addr = \"127.0.0.1:{}\"\nrpc_secret = \"{}\"\nbootstrap_peers = [\"127.0.0.1:{base}\"]\nheartbeat_ms = 500\nsync_start_delay_ms = 500\n",
        base + 3,
        secret.trim()
    )
    .unwrap();
    drop(f);
    let mut node4 = start_server(&conf(4));
    let start = Instant::now();
    loop {
        let s = json(&conf(1), &["status", "--json"]);
        let nodes = s["nodes"].as_array().unwrap();
        if nodes.len() == 4 && nodes.iter().all(|n| n["up"] == true) {
            break;
        }
        if let Some(status) = node4.try_wait().unwrap() {
            panic!("node 4 exited ({status}) before joining: {s}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "node 4 never joined: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let id4 = id(&conf(4));
    run(
        &conf(1),
        &[
            "layout",
            "assign",
            &id4[..12],
            "--zone",
            "dc4",
            "--capacity",
            "1",
        ],
    );
    let staged = json(&conf(1), &["layout", "show", "--json"]);
    let moved_add = staged["staged_moves"].as_u64().unwrap();
    run(&conf(1), &["layout", "apply"]);
    let members: Vec<(PathBuf, String)> = (1..=4).map(|k| (conf(k), id(&conf(k)))).collect();
    let took = wait_placed(&members, &[], items);
    let sent_add = items_sent(&members);
    // Placement done means the old version retired (offload waits for it): the history shows
    // one live version, read from, with every node's progress.
    let shown = run(&conf(1), &["layout", "show"]);
    assert!(
        shown.contains("live layout versions: 2 (reads use version 2)"),
        "{shown}"
    );
    let v = json(&conf(2), &["layout", "show", "--json"]);
    assert_eq!(v["live_versions"], serde_json::json!([2]));
    assert_eq!(v["progress"].as_object().unwrap().len(), 4, "{v}");
    eprintln!(
        "add a node: {moved_add} partition replicas moved, {sent_add} items sent, settled in {:.1} s",
        took.as_secs_f64()
    );
    assert!(moved_add > 0 && moved_add <= 256, "{moved_add}");

    // Node 2 leaves the layout: it offloads everything and ends empty.
    let id2 = id(&conf(2));
    run(&conf(1), &["layout", "remove", &id2[..12]]);
    let moved_remove = json(&conf(1), &["layout", "show", "--json"])["staged_moves"]
        .as_u64()
        .unwrap();
    run(&conf(1), &["layout", "apply"]);
    let remaining: Vec<(PathBuf, String)> =
        [1, 3, 4].iter().map(|&k| (conf(k), id(&conf(k)))).collect();
    let took = wait_placed(&remaining, &[conf(2)], items);
    let sent_remove = items_sent(&members) - sent_add;
    eprintln!(
        "remove a node: {moved_remove} partition replicas moved, {sent_remove} items sent, settled in {:.1} s",
        took.as_secs_f64()
    );

    // Node 2 is up, handing its copies off (or, if its report of a finished offload has
    // already spread, no longer holding anything back): it is not forgotten, nor is a member.
    for (who, says) in [
        (
            &id2,
            "is up and hands its copies off by itself|no node that left the layout",
        ),
        (&id(&conf(1)), "still has a role in the layout"),
    ] {
        let out = common::shoal()
            .arg("-c")
            .arg(conf(1))
            .args(["layout", "forget", &who[..12]])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && says.split('|').any(|s| err.contains(s)),
            "{:?} {err} {}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }

    stop(node4);
    stop(dev);
}
