//! The K2V API's error paths over raw HTTP against a real node: unsigned, wrongly signed,
//! replayed-old and over-size requests, keys without a grant, malformed parameters, content
//! negotiation. Every refused write is checked not to have written anything.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{base_port, run, start_dev, stop};
use shoal_api::sigv4;

struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        v["code"].as_str().unwrap_or("").to_string()
    }
}

/// One HTTP/1.1 request on a fresh connection.
fn raw(addr: &str, method: &str, target: &str, headers: &[(String, String)], body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nconnection: close\r\n");
    if !headers.iter().any(|(k, _)| k == "content-length") {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: out[split + 4..].to_vec(),
    }
}

struct Signer {
    addr: String,
    key: String,
    secret: String,
}

impl Signer {
    /// A request signed at `unix` seconds (now, unless testing replays).
    #[allow(clippy::too_many_arguments)]
    fn at(
        &self,
        unix: i64,
        method: &str,
        path: &str,
        query: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let date = sigv4::format_amz_date(unix);
        let hash = sigv4::sha256_hex(body);
        let mut signed = vec![
            ("host", self.addr.as_str()),
            ("x-amz-date", date.as_str()),
            ("x-amz-content-sha256", hash.as_str()),
        ];
        signed.extend_from_slice(extra);
        let auth = sigv4::sign(
            method,
            path,
            query,
            &signed,
            &hash,
            &self.key,
            &self.secret,
            "shoal",
            &date,
        );
        let mut headers: Vec<(String, String)> = signed
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        headers.push(("authorization".into(), auth));
        let target = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
        raw(&self.addr, method, &target, &headers, body)
    }

    fn req(
        &self,
        method: &str,
        path: &str,
        query: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        self.at(now(), method, path, query, extra, body)
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn env(dir: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(dir.join("k2v.env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn key_from(output: &str, label: &str) -> String {
    output
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} in {output}"))
        .trim()
        .to_string()
}

#[test]
fn k2v_requests_are_refused_with_the_right_status_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (dev, _) = start_dev(dir.path(), base_port(17000), 1);
    let env = env(dir.path());
    let addr = env["K2V_ENDPOINT"]
        .trim_start_matches("http://")
        .to_string();
    let good = Signer {
        addr: addr.clone(),
        key: env["AWS_ACCESS_KEY_ID"].clone(),
        secret: env["AWS_SECRET_ACCESS_KEY"].clone(),
    };
    let absent = |pk: &str| {
        let r = good.req("GET", &format!("/dev/{pk}"), "sort_key=s", &[], b"");
        assert_eq!(r.status, 404, "{pk} must not have been written");
        assert_eq!(r.code(), "NoSuchKey");
    };

    // The happy path, so the refusals below are not refusing everything.
    let r = good.req("PUT", "/dev/ok", "sort_key=s", &[], b"fine");
    assert_eq!(r.status, 204);
    let r = good.req(
        "GET",
        "/dev/ok",
        "sort_key=s",
        &[("accept", "application/octet-stream")],
        b"",
    );
    assert_eq!((r.status, r.body.as_slice()), (200, &b"fine"[..]));
    assert!(r.headers.contains_key("x-garage-causality-token"));
    let token = r.headers["x-garage-causality-token"].clone();

    // Unsigned.
    let r = raw(&addr, "PUT", "/dev/unsigned?sort_key=s", &[], b"x");
    assert_eq!((r.status, r.code().as_str()), (403, "AccessDenied"));
    absent("unsigned");

    // Wrong secret, and a signature over other content.
    let forger = Signer {
        secret: "f".repeat(64),
        ..Signer {
            addr: addr.clone(),
            key: good.key.clone(),
            secret: String::new(),
        }
    };
    let r = forger.req("PUT", "/dev/forged", "sort_key=s", &[], b"x");
    assert_eq!(r.status, 403);
    absent("forged");
    let unknown = Signer {
        addr: addr.clone(),
        key: "GKnobody".into(),
        secret: good.secret.clone(),
    };
    assert_eq!(
        unknown
            .req("PUT", "/dev/nobody", "sort_key=s", &[], b"x")
            .status,
        403
    );
    absent("nobody");
    {
        // Signed for one body, sent with another.
        let date = sigv4::format_amz_date(now());
        let hash = sigv4::sha256_hex(b"signed");
        let signed = [
            ("host", addr.as_str()),
            ("x-amz-date", date.as_str()),
            ("x-amz-content-sha256", hash.as_str()),
        ];
        let auth = sigv4::sign(
            "PUT",
            "/dev/swapped",
            "sort_key=s",
            &signed,
            &hash,
            &good.key,
            &good.secret,
            "shoal",
            &date,
        );
        let mut headers: Vec<(String, String)> = signed
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        headers.push(("authorization".into(), auth));
        let r = raw(
            &addr,
            "PUT",
            "/dev/swapped?sort_key=s",
            &headers,
            b"tampered",
        );
        assert_eq!(r.status, 403);
        absent("swapped");
    }

    // A request signed an hour ago (a replay, or a wrong clock).
    let r = good.at(
        now() - 3600,
        "PUT",
        "/dev/replayed",
        "sort_key=s",
        &[],
        b"x",
    );
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("15 minutes"));
    absent("replayed");

    // Over the body limit: refused from its Content-Length, before reading it.
    let huge = [("content-length", "20000000")];
    let r = good.req("PUT", "/dev/huge", "sort_key=s", &huge, b"");
    assert_eq!((r.status, r.code().as_str()), (413, "EntityTooLarge"));
    absent("huge");

    // A key with no grant on the bucket, then a read-only grant.
    let config = dir.path().join("node1/shoal.toml");
    let out = run(&config, &["key", "create", "reader"]);
    let reader = Signer {
        addr: addr.clone(),
        key: key_from(&out, "Key ID:"),
        secret: key_from(&out, "Secret key:"),
    };
    let r = reader.req("GET", "/dev/ok", "sort_key=s", &[], b"");
    assert_eq!((r.status, r.code().as_str()), (403, "AccessDenied"));
    run(
        &config,
        &["bucket", "allow", "dev", "--key", &reader.key, "--read"],
    );
    let r = reader.req("GET", "/dev/ok", "sort_key=s", &[], b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = reader.req("PUT", "/dev/by-reader", "sort_key=s", &[], b"x");
    assert_eq!(r.status, 403, "read-only keys cannot write");
    absent("by-reader");
    let listed = run(&config, &["bucket", "list"]);
    assert!(listed.contains(&format!("{}(r)", reader.key)), "{listed}");

    // Unknown bucket; malformed parameters; methods K2V does not have.
    let r = good.req("GET", "/nope/ok", "sort_key=s", &[], b"");
    assert_eq!((r.status, r.code().as_str()), (404, "NoSuchBucket"));
    assert_eq!(
        good.req("GET", "/dev/ok", "", &[], b"").status,
        400,
        "sort_key is required"
    );
    let r = good.req(
        "PUT",
        "/dev/badtoken",
        "sort_key=s",
        &[("x-garage-causality-token", "!!")],
        b"x",
    );
    assert_eq!(r.status, 400);
    absent("badtoken");
    let r = good.req("DELETE", "/dev/gone", "sort_key=s", &[], b"");
    assert_eq!(
        r.status, 204,
        "DeleteItem without a token is a concurrent delete"
    );
    let r = good.req("POST", "/dev", "", &[], b"{not json");
    assert_eq!((r.status, r.code().as_str()), (400, "InvalidRequest"));
    assert_eq!(
        good.req("PATCH", "/dev/ok", "sort_key=s", &[], b"").status,
        400
    );

    // Content negotiation: 406 for an Accept K2V cannot serve, 409 for siblings as raw bytes.
    let r = good.req(
        "GET",
        "/dev/ok",
        "sort_key=s",
        &[("accept", "text/plain")],
        b"",
    );
    assert_eq!(r.status, 406);
    assert_eq!(
        good.req("PUT", "/dev/ok", "sort_key=s", &[], b"sibling")
            .status,
        204
    );
    let r = good.req(
        "GET",
        "/dev/ok",
        "sort_key=s",
        &[("accept", "application/octet-stream")],
        b"",
    );
    assert_eq!(r.status, 409);
    let r = good.req("GET", "/dev/ok", "sort_key=s", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    let values: Vec<Option<String>> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(values.len(), 2);
    // The stale token from before the sibling supersedes only the first value.
    let r = good.req(
        "PUT",
        "/dev/ok",
        "sort_key=s",
        &[("x-garage-causality-token", &token)],
        b"next",
    );
    assert_eq!(r.status, 204);
    let r = good.req("GET", "/dev/ok", "sort_key=s", &[], b"");
    let values: Vec<Option<String>> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(values.len(), 2, "sibling and next: {values:?}");

    // A poll that times out answers 304.
    let r = good.req("GET", "/dev/ok", "sort_key=s", &[], b"");
    let token = r.headers["x-garage-causality-token"].clone();
    let q = format!("sort_key=s&causality_token={token}&timeout=1");
    assert_eq!(good.req("GET", "/dev/ok", &q, &[], b"").status, 304);

    stop(dev);
}
