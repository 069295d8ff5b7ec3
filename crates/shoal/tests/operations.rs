//! The operator's surface on a real 3-node cluster: `/metrics` parses as Prometheus text and
//! its counters move with traffic; the admin endpoint refuses wrong tokens and node-only calls;
//! `shoal repair` on a node whose data was wiped shows progress and ends with every node
//! holding identical partition digests.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{base_port, run, shoal, start_dev, start_server, stop};

fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: 0\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).unwrap().parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

fn admin_addr(config: &Path) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    v["admin_bind_addr"].as_str().unwrap().to_string()
}

/// The value of the sample `name` whose labels include all of `labels`.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

fn scrape(addr: &str) -> prometheus_parse::Scrape {
    let (status, body) = http(addr, "GET", "/metrics", &[]);
    assert_eq!(status, 200);
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("/metrics parses as Prometheus text")
}

fn digests(config: &Path) -> Option<String> {
    let out = shoal().arg("-c").arg(config).arg("digests").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn metrics_admin_token_and_repair_of_a_wiped_node() {
    let dir = tempfile::tempdir().unwrap();
    let (dev, _) = start_dev(dir.path(), base_port(19000), 3);
    let conf = |k: u32| dir.path().join(format!("node{k}/shoal.toml"));
    let admin = admin_addr(&conf(1));

    // /metrics parses, and its counters move with traffic.
    let before = scrape(&admin);
    assert!(sample(&before, "shoal_store_bytes", &[]) > 0.0);
    assert_eq!(
        sample(&before, "shoal_cluster_nodes", &[("state", "up")]),
        3.0
    );
    let writes_before = sample(
        &before,
        "shoal_rpc_calls_total",
        &[("endpoint", "table.write")],
    );
    run(&conf(1), &["put", "metrics", "item", "v", "--copies", "50"]);
    let after = scrape(&admin);
    let writes_after = sample(
        &after,
        "shoal_rpc_calls_total",
        &[("endpoint", "table.write")],
    );
    assert!(
        writes_after >= writes_before + 50.0,
        "50 quorum writes call table.write on the peers: {writes_before} -> {writes_after}"
    );
    assert!(
        sample(
            &after,
            "shoal_rpc_call_seconds_count",
            &[("endpoint", "table.write")]
        ) >= 50.0,
        "latency histogram observed the calls"
    );
    assert!(sample(&after, "shoal_table_items", &[("table", "kv")]) >= 50.0);
    // An API request shows up per operation and status (this one unsigned: 403).
    let env = std::fs::read_to_string(dir.path().join("k2v.env")).unwrap();
    let api = env
        .lines()
        .find_map(|l| l.strip_prefix("export K2V_ENDPOINT=http://"))
        .unwrap()
        .to_string();
    let (status, _) = http(&api, "GET", "/dev/pk?sort_key=s", &[]);
    assert_eq!(status, 403);
    let api_scrape = scrape(&format!(
        "127.0.0.1:{}",
        api.rsplit(':').next().unwrap().parse::<u16>().unwrap() + 1000
    ));
    assert_eq!(
        sample(
            &api_scrape,
            "shoal_api_requests_total",
            &[("operation", "ReadItem"), ("status", "403")]
        ),
        1.0
    );

    // The admin endpoint: a token is required, and node-only endpoints are not exposed.
    assert_eq!(http(&admin, "POST", "/v1/call/admin.status", &[]).0, 403);
    let wrong = [("authorization", "Bearer not-the-token-at-all")];
    assert_eq!(http(&admin, "POST", "/v1/call/admin.status", &wrong).0, 403);
    let token = std::fs::read_to_string(dir.path().join("admin_token")).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    let right = [("authorization", bearer.as_str())];
    assert_eq!(http(&admin, "POST", "/v1/call/table.write", &right).0, 404);
    let status = run(&conf(1), &["status"]);
    assert!(
        status.contains("items on this node: ") && status.contains("kv "),
        "{status}"
    );
    let sync = run(&conf(1), &["sync", "status"]);
    assert!(sync.contains("QUEUED") && sync.contains("kv"), "{sync}");

    // Wipe node 3's data (not its key: it is the same node, with nothing).
    shoal_testkit::kill_by_pid_file(&dir.path().join("node3/shoal.pid"));
    std::fs::remove_file(dir.path().join("node3/db.redb")).unwrap();
    let node3 = start_server(&conf(3));
    let deadline = Instant::now() + Duration::from_secs(20);
    while Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("-c")
        .arg(conf(3))
        .arg("status")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "node 3 did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = run(&conf(3), &["repair"]);
    eprintln!("{out}");
    assert!(out.contains("repair started for"), "{out}");
    assert!(out.contains("repair: "), "progress lines: {out}");
    let done = out
        .lines()
        .find(|l| l.starts_with("repair done"))
        .expect("repair ends");
    assert!(done.contains("partitions"), "{done}");
    let reference = digests(&conf(1)).unwrap();
    assert_eq!(digests(&conf(2)).unwrap(), reference);
    assert_eq!(
        digests(&conf(3)).unwrap(),
        reference,
        "the wiped node is whole again"
    );
    let kv3 = run(&conf(3), &["get", "metrics", "item000049"]);
    assert!(kv3.contains('v'), "{kv3}");

    stop(node3);
    stop(dev);
}
