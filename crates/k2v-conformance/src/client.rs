//! A deliberately plain K2V client for the suite: HTTP/1.1 on a fresh connection per request
//! (no client library between the suite and the bytes on the wire), requests signed by the
//! `aws-sigv4` crate, the signer Garage's own K2V client uses.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{SignableRequest, SigningParams, SigningSettings, sign};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// SigV4's unreserved characters are left as they are; everything else is escaped.
const ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Escapes a key for a path segment or a query value.
pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, ESCAPE).to_string()
}

/// A K2V endpoint and the credentials to use it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its name in reports ("shoal", "garage").
    pub name: String,
    /// `host:port` of its K2V API.
    pub addr: String,
    /// The bucket the suite works in (it writes under partition keys of its own).
    pub bucket: String,
    /// Access key id, allowed to read and write the bucket.
    pub key_id: String,
    /// Its secret.
    pub secret: String,
    /// The region the server expects in signatures.
    pub region: String,
    /// `host:port` of the K2V API of the cluster's other nodes, for the cases that write
    /// through one node and read through another.
    pub others: Vec<String>,
}

impl Target {
    /// The same cluster through its `i`-th other node (this one if there are not enough).
    pub fn via(&self, i: usize) -> Target {
        let mut t = self.clone();
        if let Some(a) = self.others.get(i) {
            t.addr = a.clone();
        }
        t
    }
}

/// A response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The `code` of a JSON error body.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or("").to_string()
    }

    /// One line describing it, for failure messages.
    pub fn describe(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(300).collect();
        format!("{} {body}", self.status)
    }
}

/// A request to send.
#[derive(Debug, Clone, Default)]
pub struct Req {
    /// HTTP method.
    pub method: String,
    /// The path after the bucket, already escaped (`""` for the bucket itself).
    pub pk_path: Option<String>,
    /// The raw query string (escaped), without `?`.
    pub query: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Req {
    /// A request of `method` on the bucket.
    pub fn bucket(method: &str, query: &str) -> Self {
        Req {
            method: method.into(),
            pk_path: None,
            query: query.into(),
            ..Req::default()
        }
    }

    /// A request of `method` on partition key `pk` (escaped here).
    pub fn item(method: &str, pk: &str, query: &str) -> Self {
        Req {
            method: method.into(),
            pk_path: Some(enc(pk)),
            query: query.into(),
            ..Req::default()
        }
    }

    /// With a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// With a body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// How a request is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// Signed with the target's credentials.
    Good,
    /// Not signed at all.
    None,
    /// Signed with a wrong secret.
    WrongSecret,
    /// Signed for another region.
    WrongRegion,
}

impl Target {
    /// Sends `req` signed with this target's key.
    pub fn send(&self, req: &Req) -> Result<Reply, String> {
        self.send_as(req, Signing::Good)
    }

    /// Sends `req`, signed as `signing` says.
    pub fn send_as(&self, req: &Req, signing: Signing) -> Result<Reply, String> {
        let mut path = format!("/{}", enc(&self.bucket));
        if let Some(pk) = &req.pk_path {
            path.push('/');
            path.push_str(pk);
        }
        let target = if req.query.is_empty() {
            path
        } else {
            format!("{path}?{}", req.query)
        };
        let mut headers: Vec<(String, String)> = req.headers.clone();
        headers.push(("host".into(), self.addr.clone()));
        headers.push((
            "x-amz-content-sha256".into(),
            hex::encode(Sha256::digest(&req.body)),
        ));
        if signing != Signing::None {
            let (secret, region) = match signing {
                Signing::WrongSecret => ("0".repeat(64), self.region.clone()),
                Signing::WrongRegion => (self.secret.clone(), format!("{}-elsewhere", self.region)),
                _ => (self.secret.clone(), self.region.clone()),
            };
            let mut builder = http::Request::builder()
                .method(req.method.as_str())
                .uri(format!("http://{}{target}", self.addr));
            for (k, v) in &headers {
                builder = builder.header(k.as_str(), v.as_str());
            }
            let mut signed = builder
                .body(req.body.clone())
                .map_err(|e| format!("building the request: {e}"))?;
            let params = SigningParams::builder()
                .access_key(&self.key_id)
                .secret_key(&secret)
                .region(&region)
                .service_name("k2v")
                .time(SystemTime::now())
                .settings(SigningSettings::default())
                .build()
                .map_err(|e| format!("signing parameters: {e}"))?;
            let (instructions, _) = sign(SignableRequest::from(&signed), &params)
                .map_err(|e| format!("signing: {e}"))?
                .into_parts();
            instructions.apply_to_request(&mut signed);
            headers = signed
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
        }
        raw_request(&self.addr, &req.method, &target, &headers, &req.body)
    }
}

/// One HTTP/1.1 exchange on a fresh connection.
pub fn raw_request(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Reply, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    s.write_all(body).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .map_err(|e| format!("reading the response: {e}"))?;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no complete response head in {} bytes", out.len()))?;
    let text = String::from_utf8_lossy(&out[..split]).to_string();
    let mut lines = text.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("no status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = out[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body)?;
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// A chunked body, reassembled.
fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&b[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}
