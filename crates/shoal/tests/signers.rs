//! Requests signed by signers nobody here wrote, over keys that need escaping: curl's own
//! `--aws-sigv4` (which signs the path and query exactly as sent) and botocore's `SigV4Auth`
//! (which encodes the sent path once more, and sorts the query as sent), each over random keys
//! with slashes, spaces, `+ & = ? # %`, non-ASCII and random code points. Every write is read
//! back with `Accept: */*` as raw bytes, and a forged or tampered request is still refused.
//!
//! Needs `curl` and Python's `botocore` (`.ci/run` installs both).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{base_port, start_dev, stop};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Characters every key draws from, beside random code points: each class that needs escaping.
const HARD: &[char] = &[
    '/', ' ', '+', '&', '=', '?', '#', '%', 'é', '日', '本', '🦀', ':', ';', ',', '@', '!', '$',
    '\'', '(', ')', '*', '[', ']', '"', '<', '>', '\\', '^', '`', '{', '|', '}', '~', '-', '.',
    '_', '\t', '\u{7f}', '\u{a0}', '\u{2028}',
];

/// A random key of 1 to 12 characters, mostly hard ones. Never `.` or `..` alone: curl and
/// botocore both remove such path segments before sending or signing (RFC 3986 dot-segment
/// removal), so no K2V client can address those keys in a path.
fn random_key(rng: &mut StdRng) -> String {
    loop {
        let n = rng.random_range(1..=12);
        let key: String = (0..n)
            .map(|_| {
                if rng.random_bool(0.7) {
                    HARD[rng.random_range(0..HARD.len())]
                } else {
                    loop {
                        if let Some(c) = char::from_u32(rng.random_range(0x20..0x2_FFFF)) {
                            break c;
                        }
                    }
                }
            })
            .collect();
        if key != "." && key != ".." {
            return key;
        }
    }
}

fn enc(s: &str) -> String {
    k2v_conformance::enc(s)
}

struct Cluster {
    endpoint: String,
    bucket: String,
    key: String,
    secret: String,
    region: String,
}

fn cluster_env(dir: &std::path::Path) -> Cluster {
    let env = std::fs::read_to_string(dir.join("k2v.env")).unwrap();
    let get = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap()
            .to_string()
    };
    Cluster {
        endpoint: get("K2V_ENDPOINT"),
        bucket: get("K2V_BUCKET"),
        key: get("AWS_ACCESS_KEY_ID"),
        secret: get("AWS_SECRET_ACCESS_KEY"),
        region: get("AWS_REGION"),
    }
}

/// `curl --aws-sigv4`: the status and body of one request.
fn curl(c: &Cluster, secret: &str, method: &str, target: &str, body: &str) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "-S", "-X", method, "-H", "accept: */*"])
        .args(["--aws-sigv4", &format!("aws:amz:{}:k2v", c.region)])
        .args(["--user", &format!("{}:{secret}", c.key)])
        .args(["-w", "\n%{http_code}"])
        .args(if method == "PUT" {
            vec!["--data-binary", body]
        } else {
            vec![]
        })
        .arg(format!("{}{target}", c.endpoint))
        .output()
        .expect("curl is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let split = out.stdout.iter().rposition(|&b| b == b'\n').unwrap();
    let status = String::from_utf8_lossy(&out.stdout[split + 1..])
        .trim()
        .parse()
        .unwrap();
    (status, out.stdout[..split].to_vec())
}

/// botocore: sends `requests` (method, target, body, target signed) and returns each status and
/// body.
fn botocore(
    c: &Cluster,
    secret: &str,
    requests: &[(&str, String, String, Option<String>)],
) -> Vec<(u16, String)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/signers/botocore_k2v.py");
    let job = serde_json::json!({
        "endpoint": c.endpoint,
        "key": c.key,
        "secret": secret,
        "region": c.region,
        "requests": requests.iter().map(|(m, t, b, signed)| {
            let mut r = serde_json::json!({"method": m, "target": t, "body": b});
            if let Some(s) = signed {
                r["sign_target"] = serde_json::json!(s);
            }
            r
        }).collect::<Vec<_>>(),
    });
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(job.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "botocore client failed (pip install botocore; .ci/run installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replies: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    replies
        .into_iter()
        .map(|r| {
            (
                r["status"].as_u64().unwrap() as u16,
                r["body"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Keys per signer.
const KEYS: usize = 100;

#[test]
fn curl_and_botocore_signatures_verify_for_any_key_and_forgeries_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let (child, _) = start_dev(dir.path(), base_port(0), 3);
    let c = cluster_env(dir.path());
    let mut rng = StdRng::seed_from_u64(0x5160_0e25);
    let item = |pk: &str, sk: &str| format!("/{}/{}?sort_key={}", c.bucket, enc(pk), enc(sk));

    // The issue's own example first: a slash in the partition key, a space in the sort key.
    let (status, _) = curl(
        &c,
        &c.secret,
        "PUT",
        "/dev/user%2F42?sort_key=profile%20v1",
        "hello",
    );
    assert_eq!(status, 204);
    let (status, body) = curl(
        &c,
        &c.secret,
        "GET",
        "/dev/user%2F42?sort_key=profile%20v1",
        "",
    );
    assert_eq!((status, body.as_slice()), (200, &b"hello"[..]));

    // curl: a write and a read per random key pair.
    for i in 0..KEYS {
        let (pk, sk) = (random_key(&mut rng), random_key(&mut rng));
        let target = item(&format!("curl-{i}-{pk}"), &sk);
        let (status, body) = curl(&c, &c.secret, "PUT", &target, &format!("curl {i}"));
        assert_eq!(
            status,
            204,
            "curl PUT {pk:?}/{sk:?}: {}",
            String::from_utf8_lossy(&body)
        );
        let (status, body) = curl(&c, &c.secret, "GET", &target, "");
        assert_eq!(
            (status, String::from_utf8_lossy(&body).to_string()),
            (200, format!("curl {i}")),
            "curl GET {pk:?}/{sk:?}"
        );
    }

    // botocore: the same, in one process.
    let keys: Vec<(String, String)> = (0..KEYS)
        .map(|i| {
            (
                format!("boto-{i}-{}", random_key(&mut rng)),
                random_key(&mut rng),
            )
        })
        .collect();
    let puts: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, (pk, sk))| ("PUT", item(pk, sk), format!("boto {i}"), None))
        .collect();
    for (r, (pk, sk)) in botocore(&c, &c.secret, &puts).into_iter().zip(&keys) {
        assert_eq!(r.0, 204, "botocore PUT {pk:?}/{sk:?}: {}", r.1);
    }
    // Read back through curl, with its default Accept: */*: raw bytes.
    for (i, (pk, sk)) in keys.iter().enumerate() {
        let (status, body) = curl(&c, &c.secret, "GET", &item(pk, sk), "");
        assert_eq!(
            (status, String::from_utf8_lossy(&body).to_string()),
            (200, format!("boto {i}")),
            "{pk:?}/{sk:?}"
        );
    }

    // Forgeries: a wrong secret, and a request signed for one key but sent for another.
    let (status, _) = curl(&c, &"0".repeat(64), "PUT", &item("forged", "a"), "x");
    assert_eq!(status, 403);
    let forged = botocore(
        &c,
        &"0".repeat(64),
        &[("PUT", item("forged", "b"), "x".into(), None)],
    );
    assert_eq!(forged[0].0, 403, "{}", forged[0].1);
    let tampered = botocore(
        &c,
        &c.secret,
        &[(
            "PUT",
            item("tampered/ sent", "a&b"),
            "x".into(),
            Some(item("tampered/ signed", "a&b")),
        )],
    );
    assert_eq!(tampered[0].0, 403, "{}", tampered[0].1);
    for (pk, sk) in [("forged", "a"), ("forged", "b"), ("tampered/ sent", "a&b")] {
        let (status, _) = curl(&c, &c.secret, "GET", &item(pk, sk), "");
        assert_eq!(status, 404, "{pk}/{sk} must not have been written");
    }
    eprintln!("{KEYS} random key pairs through curl and {KEYS} through botocore verified");
    stop(child);
}
