//! A node with room for one written item at a time and no wait for more: concurrent K2V writes
//! beyond it are pushed back with 503 and `Retry-After` (never another error), and every write
//! answered 204 is there.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{base_port, run, shoal};

#[test]
fn writes_beyond_a_nodes_room_are_pushed_back_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_port(0);
    let config = dir.path().join("shoal.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nrpc_bind_addr = \"127.0.0.1:{base}\"\nrpc_secret = \"{}\"\n\
             replication_factor = 1\napi_bind_addr = \"127.0.0.1:{}\"\n\
             admin_bind_addr = \"127.0.0.1:{}\"\nadmin_token = \"{}\"\n\
             api_max_writes_in_flight = 1\napi_write_wait_ms = 0\n",
            dir.path().join("data"),
            "7a".repeat(32),
            base + 1000,
            base + 2000,
            "admission-token-0",
        ),
    )
    .unwrap();
    let mut server = shoal()
        .arg("-c")
        .arg(&config)
        .arg("server")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let out = shoal()
            .arg("-c")
            .arg(&config)
            .args(["status", "--json"])
            .output()
            .unwrap();
        if out.status.success() {
            let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            break s["node"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "the node did not start");
        std::thread::sleep(Duration::from_millis(200));
    };
    run(
        &config,
        &[
            "layout",
            "assign",
            &id[..16],
            "--zone",
            "z",
            "--capacity",
            "1",
        ],
    );
    run(&config, &["layout", "apply"]);
    let key = run(&config, &["key", "create", "k"]);
    let field = |label: &str| {
        key.lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap()
            .trim()
            .to_string()
    };
    let (key_id, secret) = (field("Key ID:"), field("Secret key:"));
    run(&config, &["bucket", "create", "bkt"]);
    run(
        &config,
        &[
            "bucket", "allow", "bkt", "--key", &key_id, "--read", "--write",
        ],
    );

    // 8 clients, 25 writes each, at once.
    let url = |pk: &str| format!("http://127.0.0.1:{}/bkt/{pk}?sort_key=s", base + 1000);
    let put = |pk: String| common::curl_k2v("PUT", &url(&pk), &key_id, &secret);
    let answers: Vec<(String, u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|c| {
                s.spawn(move || {
                    (0..25)
                        .map(|i| {
                            let pk = format!("c{c}-{i}");
                            let (status, text) = put(pk.clone());
                            (pk, status, text)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let pushed_back: Vec<_> = answers.iter().filter(|a| a.1 == 503).collect();
    let written: Vec<_> = answers.iter().filter(|a| a.1 == 204).collect();
    assert_eq!(
        pushed_back.len() + written.len(),
        answers.len(),
        "only 204 and 503: {:?}",
        answers.iter().find(|a| a.1 != 204 && a.1 != 503)
    );
    assert!(
        !pushed_back.is_empty(),
        "200 concurrent writes through a room of one"
    );
    for (_, _, text) in &pushed_back {
        let lower = text.to_ascii_lowercase();
        assert!(
            lower.contains("retry-after: 1") && text.contains("ServiceUnavailable"),
            "{text}"
        );
    }
    // What was acknowledged is there.
    for (pk, _, _) in written.iter().take(20) {
        let (status, text) = common::curl_k2v("GET", &url(pk), &key_id, &secret);
        assert_eq!(status, 200, "{pk}: {text}");
    }
    eprintln!(
        "{} writes: {} answered 204, {} pushed back with 503",
        answers.len(),
        written.len(),
        pushed_back.len()
    );
    server.kill().unwrap();
    server.wait().unwrap();
}
