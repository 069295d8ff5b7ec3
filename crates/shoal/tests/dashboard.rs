//! The Grafana dashboard in `deploy/grafana/shoal.json` queries only metrics a live node
//! exports: a three-node `shoal dev` cluster takes a `shoal put` (replication calls between
//! nodes) and K2V requests (API series), then every metric name of every panel's query is
//! looked up in node 1's `/metrics`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{base_port, curl_k2v, shoal, start_dev, stop};

fn k2v_env(dir: &std::path::Path) -> std::collections::HashMap<String, String> {
    std::fs::read_to_string(dir.join("k2v.env"))
        .expect("shoal dev writes k2v.env")
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every metric name in a Prometheus exposition: sample names (with their `_total`,
/// `_bucket`, `_sum`, `_count` suffixes) and the families declared by `# TYPE`.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            names.insert(rest.split_whitespace().next().unwrap_or("").to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// The metric names a PromQL expression uses (Shoal's all start with `shoal_`).
fn queried(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("shoal_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        out.push(expr[start..end].to_string());
        i = end;
    }
    out
}

#[test]
fn every_dashboard_query_names_metrics_a_node_exports() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/shoal.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).unwrap();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());

    let dir = tempfile::tempdir().unwrap();
    let base = base_port(21000);
    let (dev, _) = start_dev(dir.path(), base, 3);
    let conf = dir.path().join("node1/shoal.toml");
    // Replication between nodes, then K2V traffic on node 1.
    let out = shoal()
        .arg("-c")
        .arg(&conf)
        .args(["put", "dash", "k", "v"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = k2v_env(dir.path());
    let url = format!("{}/{}/p?sort_key=s", env["K2V_ENDPOINT"], env["K2V_BUCKET"]);
    let (id, secret) = (&env["AWS_ACCESS_KEY_ID"], &env["AWS_SECRET_ACCESS_KEY"]);
    assert_eq!(curl_k2v("PUT", &url, id, secret).0, 204);
    assert_eq!(curl_k2v("GET", &url, id, secret).0, 200);
    // Heartbeats and a sync pass or two are counted too.
    std::thread::sleep(Duration::from_secs(3));
    let metrics = reqwest_free_get(&format!("127.0.0.1:{}", base + 2000), "/metrics");
    stop(dev);
    let names = exported(&metrics);
    assert!(names.contains("shoal_api_requests_total"), "{names:?}");

    let mut checked = 0;
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            let used = queried(expr);
            assert!(
                !used.is_empty(),
                "panel {title}: {expr} names no Shoal metric"
            );
            for name in used {
                assert!(
                    names.contains(&name),
                    "panel {title}: {name} is not exported by a node (query {expr})"
                );
                checked += 1;
            }
        }
    }
    eprintln!(
        "{} panels, {checked} metric references, all exported",
        panels.len()
    );
}

/// A plain HTTP/1.1 GET.
fn reqwest_free_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}
