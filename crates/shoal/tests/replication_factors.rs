//! Real `shoal` processes at replication factors 1, 2, 3 and 5: writes and reads through every
//! node, quorums reported by `shoal status --json`, a five-replica cluster that keeps writing
//! with two nodes killed and refuses with a third while a `degraded` node still reads, and a
//! clean restart that rebuilds no table's partition index.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{base_port, json, run, shoal, stop};

fn config(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("node{k}/shoal.toml"))
}

/// `shoal -c config args…`: whether it succeeded, and what it printed on either stream.
fn try_run(config: &Path, args: &[&str]) -> (bool, String) {
    let out = shoal().arg("-c").arg(config).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every node writes a key, every node reads every key back.
fn write_and_read_through_every_node(dir: &Path, nodes: usize, tag: &str) {
    for k in 1..=nodes {
        run(
            &config(dir, k),
            &["put", tag, &format!("k{k}"), &format!("v{k}")],
        );
    }
    for reader in 1..=nodes {
        for k in 1..=nodes {
            let got = run(&config(dir, reader), &["get", tag, &format!("k{k}")]);
            assert_eq!(got.trim(), format!("v{k}"), "node {reader} reads k{k}");
        }
    }
}

fn dev_at(dir: &Path, base: u16, nodes: usize, rf: usize) -> (Child, String) {
    common::start_dev_with(dir, base, nodes, &["--replication-factor", &rf.to_string()])
}

#[test]
fn rf1_rf2_and_rf3_clusters_serve_every_node_and_report_their_quorums() {
    for (nodes, rf, quorum, offset) in [(1, 1, 1, 0), (2, 2, 2, 10), (3, 3, 2, 20)] {
        let dir = tempfile::tempdir().unwrap();
        let (child, out) = dev_at(dir.path(), base_port(offset), nodes, rf);
        assert!(out.contains(&format!("replication factor {rf}")), "{out}");
        write_and_read_through_every_node(dir.path(), nodes, &format!("rf{rf}"));
        for k in 1..=nodes {
            let s = json(&config(dir.path(), k), &["status", "--json"]);
            assert_eq!(s["replication_factor"], rf, "{s}");
            assert_eq!(s["write_quorum"], quorum, "{s}");
            assert_eq!(s["read_quorum"], quorum, "{s}");
            assert_eq!(s["consistency_mode"], "consistent", "{s}");
        }
        stop(child);
    }
}

#[test]
fn dev_refuses_a_replication_factor_it_cannot_place() {
    let dir = tempfile::tempdir().unwrap();
    let out = shoal()
        .args(["dev", "--nodes", "2", "--replication-factor", "3", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs at least 3 nodes"), "{err}");
    let out = shoal()
        .args(["dev", "--nodes", "8", "--replication-factor", "8", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("from 1 to 7"), "{err}");
}

/// A process killed with SIGKILL when the test ends, whatever happens.
struct Server(Option<Child>);

impl Server {
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes node `k`'s configuration for a cluster of `n` nodes at `base` with `rf` replicas.
fn write_config(dir: &Path, base: u16, n: usize, k: usize, rf: usize, mode: &str) -> PathBuf {
    let node_dir = dir.join(format!("node{k}"));
    std::fs::create_dir_all(&node_dir).unwrap();
    let rpc = |j: usize| format!("\"127.0.0.1:{}\"", base as usize + j - 1);
    let peers: Vec<String> = (1..=n).filter(|&j| j != k).map(rpc).collect();
    let text = format!(
        "data_dir = {node_dir:?}\nrpc_bind_addr = {}\nrpc_secret = \"{}\"\nbootstrap_peers = [{}]\n\
         replication_factor = {rf}\nconsistency_mode = \"{mode}\"\nheartbeat_ms = 300\n\
         admin_bind_addr = \"127.0.0.1:{}\"\nadmin_token = \"{}\"\n\
         api_bind_addr = \"127.0.0.1:{}\"\n",
        rpc(k),
        "5e".repeat(32),
        peers.join(", "),
        base as usize + 2000 + k - 1,
        "t0ken".repeat(4),
        base as usize + 1000 + k - 1,
    );
    let path = node_dir.join("shoal.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting until {what}");
}

#[test]
fn five_replicas_keep_writing_with_two_nodes_dead_and_refuse_with_three() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_port(40);
    // Node 1 reads in degraded mode (one replica); the others are consistent.
    let configs: Vec<PathBuf> = (1..=5)
        .map(|k| {
            let mode = if k == 1 { "degraded" } else { "consistent" };
            write_config(dir.path(), base, 5, k, 5, mode)
        })
        .collect();
    let mut servers: Vec<Server> = configs
        .iter()
        .map(|c| {
            Server(Some(
                Command::new(env!("CARGO_BIN_EXE_shoal"))
                    .arg("-c")
                    .arg(c)
                    .arg("server")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            ))
        })
        .collect();
    wait_until(
        "the five nodes see each other",
        Duration::from_secs(30),
        || {
            let (ok, out) = try_run(&configs[0], &["status", "--json"]);
            ok && serde_json::from_str::<serde_json::Value>(&out).is_ok_and(|s| {
                s["nodes"]
                    .as_array()
                    .is_some_and(|n| n.len() == 5 && n.iter().all(|n| n["up"] == true))
            })
        },
    );
    // A layout of five zones, as a user applies it.
    let status = json(&configs[0], &["status", "--json"]);
    for (i, n) in status["nodes"].as_array().unwrap().iter().enumerate() {
        let id = n["id"].as_str().unwrap();
        run(
            &configs[0],
            &[
                "layout",
                "assign",
                &id[..16],
                "--zone",
                &format!("z{i}"),
                "--capacity",
                "1",
            ],
        );
    }
    run(&configs[0], &["layout", "apply"]);
    wait_until("every node has the layout", Duration::from_secs(20), || {
        configs
            .iter()
            .all(|c| json(c, &["status", "--json"])["layout_version"] == 1)
    });
    let s = json(&configs[1], &["status", "--json"]);
    assert_eq!(
        (
            &s["replication_factor"],
            &s["write_quorum"],
            &s["read_quorum"]
        ),
        (&5.into(), &3.into(), &3.into()),
        "{s}"
    );
    let s = json(&configs[0], &["status", "--json"]);
    assert_eq!(s["consistency_mode"], "degraded", "{s}");
    assert_eq!(
        (&s["write_quorum"], &s["read_quorum"]),
        (&3.into(), &1.into())
    );

    write_and_read_through_every_node(dir.path(), 5, "all");
    // A K2V key and bucket, for a client's view of the same failures.
    let key = run(&configs[0], &["key", "create", "client"]);
    let field = |label: &str| {
        key.lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap()
            .trim()
            .to_string()
    };
    let (key_id, secret) = (field("Key ID:"), field("Secret key:"));
    run(&configs[0], &["bucket", "create", "bkt"]);
    run(
        &configs[0],
        &[
            "bucket", "allow", "bkt", "--key", &key_id, "--read", "--write",
        ],
    );
    let k2v_put = |pk: &str| {
        let url = format!(
            "http://127.0.0.1:{}/bkt/{pk}?sort_key=s",
            base as usize + 1000
        );
        common::curl_k2v("PUT", &url, &key_id, &secret)
    };
    wait_until("node 1 knows the key", Duration::from_secs(10), || {
        k2v_put("first").0 == 204
    });

    // Two nodes die: a majority of every partition's five replicas is left.
    servers[3].kill();
    servers[4].kill();
    for (k, c) in configs.iter().enumerate().take(3) {
        run(c, &["put", "two-dead", &format!("k{k}"), "v"]);
    }
    for c in &configs[..3] {
        for k in 0..3 {
            let got = run(c, &["get", "two-dead", &format!("k{k}")]);
            assert_eq!(got.trim(), "v");
        }
    }

    // A third dies: two replicas cannot make a quorum of three. Writes are refused, naming
    // what was needed; a consistent read is refused; the degraded node still reads.
    servers[2].kill();
    for c in &configs[..2] {
        let (ok, out) = try_run(c, &["put", "three-dead", "k", "v"]);
        assert!(!ok, "a write acknowledged by two of five replicas: {out}");
        assert!(
            out.contains("write quorum not reached") && out.contains("of 3 acknowledgements"),
            "{out}"
        );
    }
    let (ok, out) = try_run(&configs[1], &["get", "two-dead", "k0"]);
    assert!(!ok && out.contains("read quorum not reached"), "{out}");
    // A K2V client is told to come back later: 503 with Retry-After and a request id.
    let (status, text) = k2v_put("three-dead");
    let lower = text.to_ascii_lowercase();
    assert!(
        status == 503
            && lower.contains("retry-after: 1")
            && lower.contains("x-amz-request-id:")
            && text.contains("ServiceUnavailable")
            && text.contains("of 3 acknowledgements"),
        "{text}"
    );
    let got = run(&configs[0], &["get", "two-dead", "k0"]);
    assert_eq!(got.trim(), "v");
    drop(servers);
}

/// The rpc secret `shoal dev` keeps for its cluster.
fn dev_secret(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("rpc_secret"))
        .unwrap()
        .trim()
        .to_string()
}

/// What `shoal index verify` says of `table` in node 1's store.
fn verify(dir: &Path, table: &str) -> String {
    let out = shoal()
        .args(["index", "verify", "--store"])
        .arg(dir.join("node1/db.redb"))
        .args(["--table", table, "--cluster-secret", &dev_secret(dir)])
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
fn a_clean_restart_rebuilds_no_tables_index() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_port(60);
    let (child, _) = dev_at(dir.path(), base, 1, 1);
    let k2v_env = std::fs::read_to_string(dir.path().join("k2v.env")).unwrap();
    // Every table written: kv by `shoal put`, keys and buckets by `shoal dev` itself (its
    // key and bucket) and the CLI, k2v by a signed request from curl.
    let c = config(dir.path(), 1);
    run(&c, &["put", "pk", "sk", "v", "--copies", "50"]);
    run(&c, &["key", "create", "other"]);
    run(&c, &["bucket", "create", "other"]);
    let env = |name: &str| {
        k2v_env
            .lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap()
            .to_string()
    };
    for i in 0..20 {
        let status = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
            .args(["--aws-sigv4", "aws:amz:shoal:k2v", "--user"])
            .arg(format!(
                "{}:{}",
                env("AWS_ACCESS_KEY_ID"),
                env("AWS_SECRET_ACCESS_KEY")
            ))
            .args(["--data-binary", "value"])
            .arg(format!("{}/dev/pk{i}?sort_key=s", env("K2V_ENDPOINT")))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&status.stdout), "204");
    }
    stop(child);
    for table in ["kv", "k2v", "keys", "buckets"] {
        let report = verify(dir.path(), table);
        assert!(
            report.contains("0 partitions mismatched")
                && report.contains(" 0 rebuilt at open")
                && !report.contains(" 0 items"),
            "{report}"
        );
    }
    // The same writes and a crash instead (SIGKILL of the node): the next open rebuilds the
    // partitions written since their last checkpoint, and still agrees with the items.
    let (child, _) = dev_at(dir.path(), base, 1, 1);
    run(&c, &["put", "pk2", "sk", "v", "--copies", "50"]);
    let pid: i32 = std::fs::read_to_string(dir.path().join("node1/shoal.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    stop(child);
    let report = verify(dir.path(), "kv");
    assert!(
        report.contains("0 partitions mismatched") && !report.contains(" 0 rebuilt at open"),
        "{report}"
    );
}
