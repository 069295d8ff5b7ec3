//! The load generator's K2V client: InsertItem and ReadItem as signed HTTP/1.1 requests on
//! one kept-alive connection per simulated client.
//!
//! The benchmark runs servers and clients on the same two cores, so every microsecond the
//! client spends is taken from the systems measured. A general client (`k2v-client`: hyper's
//! pooled client, a task per connection, a fresh SigV4 signer per request) spent about 40 µs of
//! CPU per request, as much as a Shoal node spends serving it. This one writes each request
//! with one system call and reads the reply in the calling task; it still signs every
//! request (SigV4, with the day's signing key derived once) and checks every reply.

use parking_lot::Mutex;

use anyhow::{Context, bail};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type HmacSha256 = Hmac<Sha256>;

/// Characters left as they are in a path segment or a query value (SigV4's unreserved set).
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

fn push_encoded(out: &mut String, s: &str) {
    for &b in s.as_bytes() {
        if unreserved(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// A K2V endpoint (one node) and the credentials to sign with.
pub struct K2vHttp {
    /// `host:port`, as sent in the signed `host` header.
    host: String,
    bucket: String,
    key_id: String,
    secret: String,
    region: String,
    /// The signing key of the current day, with its `YYYYMMDD`.
    signing: Mutex<Option<(String, [u8; 32])>>,
    /// One connection per client slot, opened at first use and kept alive.
    conns: Vec<tokio::sync::Mutex<Option<Conn>>>,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A reply: its status and body.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl K2vHttp {
    /// A client of the K2V API at `endpoint` (`http://host:port`), with `slots` connections.
    pub fn new(
        endpoint: &str,
        key_id: &str,
        secret: &str,
        bucket: &str,
        region: &str,
        slots: usize,
    ) -> anyhow::Result<Self> {
        let host = endpoint
            .strip_prefix("http://")
            .with_context(|| format!("{endpoint}: only http:// endpoints"))?
            .trim_end_matches('/')
            .to_string();
        Ok(K2vHttp {
            host,
            bucket: bucket.into(),
            key_id: key_id.into(),
            secret: secret.into(),
            region: region.into(),
            signing: Mutex::new(None),
            conns: (0..slots).map(|_| tokio::sync::Mutex::new(None)).collect(),
        })
    }

    fn signing_key(&self, date: &str) -> [u8; 32] {
        let mut cached = self.signing.lock();
        if let Some((d, k)) = cached.as_ref()
            && d == date
        {
            return *k;
        }
        let k: [u8; 32] = shoal_api::sigv4::signing_key(&self.secret, date, &self.region, "k2v")
            .try_into()
            .expect("an HMAC-SHA256 output");
        *cached = Some((date.to_string(), k));
        k
    }

    /// InsertItem: `value` under (`pk`, `sk`), no causality token.
    pub async fn insert(
        &self,
        slot: usize,
        pk: &str,
        sk: &str,
        value: &[u8],
    ) -> anyhow::Result<()> {
        let r = self.call(slot, "PUT", Some((pk, sk)), value).await?;
        if !(200..300).contains(&r.status) {
            bail!("InsertItem {pk}/{sk}: status {}", r.status);
        }
        Ok(())
    }

    /// InsertBatch: every `(pk, sk, value)` in one request, no causality tokens.
    ///
    /// No client-side deadline: a durable peer may take seconds to commit a large batch, and
    /// giving up early would leave the batch's fate unknown (sending it again without
    /// causality tokens would add sibling values where the first attempt had landed).
    pub async fn insert_batch(
        &self,
        slot: usize,
        items: &[(String, String, Vec<u8>)],
    ) -> anyhow::Result<()> {
        let r = self.send_insert_batch(slot, items).await?;
        if !(200..300).contains(&r.status) {
            bail!(
                "InsertBatch of {} items: status {}: {}",
                items.len(),
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        Ok(())
    }

    /// InsertBatch as [`K2vHttp::insert_batch`], returning the status whatever it is.
    pub async fn insert_batch_status(
        &self,
        slot: usize,
        items: &[(String, String, Vec<u8>)],
    ) -> anyhow::Result<u16> {
        Ok(self.send_insert_batch(slot, items).await?.status)
    }

    async fn send_insert_batch(
        &self,
        slot: usize,
        items: &[(String, String, Vec<u8>)],
    ) -> anyhow::Result<Reply> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let body: Vec<serde_json::Value> = items
            .iter()
            .map(|(pk, sk, v)| serde_json::json!({"pk": pk, "sk": sk, "ct": null, "v": b64.encode(v)}))
            .collect();
        self.call(slot, "POST", None, &serde_json::to_vec(&body)?)
            .await
    }

    /// ReadItem as raw bytes: `None` when the item does not exist.
    pub async fn read(&self, slot: usize, pk: &str, sk: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let r = self.call(slot, "GET", Some((pk, sk)), &[]).await?;
        match r.status {
            200 => Ok(Some(r.body)),
            404 => Ok(None),
            s => bail!("ReadItem {pk}/{sk}: status {s}"),
        }
    }

    async fn call(
        &self,
        slot: usize,
        method: &str,
        item: Option<(&str, &str)>,
        body: &[u8],
    ) -> anyhow::Result<Reply> {
        let request = self.request(method, item, body);
        let mut conn = self.conns[slot % self.conns.len()].lock().await;
        // A kept-alive connection the server closed while it was idle fails at once, before
        // the server has read the request: that request is sent again, once, on a new
        // connection. A failure on a new connection is returned: the request may have been
        // applied, and sending it again without causality tokens could add a sibling value.
        loop {
            let reused = conn.is_some();
            if !reused {
                let stream = self.connect().await?;
                stream.set_nodelay(true)?;
                *conn = Some(Conn {
                    stream,
                    buf: Vec::with_capacity(4096),
                });
            }
            let c = conn.as_mut().expect("connected above");
            match c.exchange(&request).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    *conn = None;
                    if !reused {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// A new connection. A refused one is tried again for a few seconds: a node just started
    /// may not listen yet, and nothing was sent.
    async fn connect(&self) -> anyhow::Result<TcpStream> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match TcpStream::connect(&self.host).await {
                Ok(s) => return Ok(s),
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("connecting to {}", self.host)),
            }
        }
    }

    /// The whole request, signed: headers and body, ready for one write. `item` names one
    /// item (`/bucket/pk?sort_key=sk`); without it the request is for the bucket.
    fn request(&self, method: &str, item: Option<(&str, &str)>, body: &[u8]) -> Vec<u8> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let amz_date = shoal_api::sigv4::format_amz_date(now);
        let date = &amz_date[..8];
        let mut path = String::with_capacity(64);
        path.push('/');
        push_encoded(&mut path, &self.bucket);
        let mut query = String::new();
        if let Some((pk, sk)) = item {
            path.push('/');
            push_encoded(&mut path, pk);
            query.push_str("sort_key=");
            push_encoded(&mut query, sk);
        }
        let body_hash = hex::encode(Sha256::digest(body));
        const SIGNED: &str = "host;x-amz-content-sha256;x-amz-date";
        let mut canonical = Sha256::new();
        for part in [
            method,
            "\n",
            &path,
            "\n",
            &query,
            "\nhost:",
            &self.host,
            "\nx-amz-content-sha256:",
            &body_hash,
            "\nx-amz-date:",
            &amz_date,
            "\n\n",
            SIGNED,
            "\n",
            &body_hash,
        ] {
            canonical.update(part.as_bytes());
        }
        let mut mac = HmacSha256::new_from_slice(&self.signing_key(date)).expect("any key length");
        for part in [
            "AWS4-HMAC-SHA256\n",
            &amz_date,
            "\n",
            date,
            "/",
            &self.region,
            "/k2v/aws4_request\n",
            &hex::encode(canonical.finalize()),
        ] {
            mac.update(part.as_bytes());
        }
        let signature = hex::encode(mac.finalize().into_bytes());
        let mut out = format!(
            "{method} {path}{mark}{query} HTTP/1.1\r\nhost: {host}\r\nx-amz-date: {amz_date}\r\n\
             x-amz-content-sha256: {body_hash}\r\nauthorization: AWS4-HMAC-SHA256 \
             Credential={key_id}/{date}/{region}/k2v/aws4_request, SignedHeaders={SIGNED}, \
             Signature={signature}\r\naccept: application/octet-stream\r\ncontent-length: {len}\r\n\r\n",
            host = self.host,
            key_id = self.key_id,
            region = self.region,
            len = body.len(),
            mark = if query.is_empty() { "" } else { "?" },
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    }
}

impl Conn {
    /// Sends `request` and reads its reply (headers, then a `content-length` body).
    async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<Reply> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 24];
            let mut parsed = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = parsed.parse(&self.buf)? {
                let status = parsed.code.context("no status")?;
                if parsed
                    .headers
                    .iter()
                    .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
                {
                    bail!("chunked replies are not expected for single items");
                }
                let len = parsed
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| -> anyhow::Result<usize> {
                        Ok(std::str::from_utf8(h.value)?.trim().parse()?)
                    })
                    .transpose()?
                    .unwrap_or(0);
                while self.buf.len() < head + len {
                    self.fill().await?;
                }
                if self.buf.len() > head + len {
                    bail!("bytes after the reply: the server answered more than was asked");
                }
                return Ok(Reply {
                    status,
                    body: self.buf[head..].to_vec(),
                });
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed by the server");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The requests are checked by Shoal's own SigV4 verifier (Garage accepts them too: the
    /// benchmark counts every refused request as an error).
    #[test]
    fn requests_are_signed_as_sigv4_verifiers_expect() {
        let client = K2vHttp::new(
            "http://127.0.0.1:3904",
            "GKbench",
            "a-secret",
            "bench",
            "garage",
            1,
        )
        .unwrap();
        for (method, item, body) in [
            ("GET", Some(("p3", "item 00000012")), &b""[..]),
            ("PUT", Some(("p3", "w0-3-17")), &[7u8; 100][..]),
            (
                "POST",
                None,
                &br#"[{"pk":"p3","sk":"a","ct":null,"v":"AQ=="}]"#[..],
            ),
        ] {
            let bytes = client.request(method, item, body);
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut req = httparse::Request::new(&mut headers);
            let head = match req.parse(&bytes).unwrap() {
                httparse::Status::Complete(n) => n,
                httparse::Status::Partial => panic!("incomplete request"),
            };
            assert_eq!(&bytes[head..], body);
            let target = req.path.unwrap();
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            assert_eq!(
                path,
                if item.is_some() {
                    "/bench/p3"
                } else {
                    "/bench"
                }
            );
            let value = |name: &str| {
                req.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| std::str::from_utf8(h.value).unwrap())
            };
            let lookup = |name: &str| value(name).map(std::borrow::Cow::Borrowed);
            let auth =
                shoal_api::sigv4::Authorization::parse(value("authorization").unwrap()).unwrap();
            let hash = shoal_api::sigv4::sha256_hex(body);
            let parts = shoal_api::sigv4::RequestParts {
                method,
                raw_path: path,
                raw_query: query,
                header: &lookup,
                body_sha256: &hash,
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            assert_eq!(
                shoal_api::sigv4::verify(&parts, &auth, "a-secret", "garage", now),
                Ok(())
            );
            assert_eq!(
                shoal_api::sigv4::verify(&parts, &auth, "another-secret", "garage", now),
                Err(shoal_api::sigv4::AuthError::BadSignature)
            );
        }
    }

    /// A request that fails on a kept-alive connection is sent again once, on a new one; a
    /// failure on a new connection is an error, not sent a third time.
    #[tokio::test]
    async fn a_closed_kept_alive_connection_is_retried_once_and_a_new_one_is_not() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = requests.clone();
        tokio::spawn(async move {
            // Each connection serves one request, then closes: the first two answer, the
            // third closes without answering.
            for n in 0.. {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut chunk = [0u8; 1024];
                    match s.read(&mut chunk).await.unwrap() {
                        0 => break,
                        k => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                if n < 2 {
                    let body = [b'a' + n as u8];
                    let head = "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n";
                    s.write_all(head.as_bytes()).await.unwrap();
                    s.write_all(&body).await.unwrap();
                }
            }
        });
        let client = K2vHttp::new(&endpoint, "GKbench", "s", "bench", "garage", 1).unwrap();
        assert_eq!(client.read(0, "p", "a").await.unwrap(), Some(b"a".to_vec()));
        // The server closed that connection: the next read fails on it and goes out again.
        assert_eq!(client.read(0, "p", "b").await.unwrap(), Some(b"b".to_vec()));
        assert_eq!(requests.load(Ordering::SeqCst), 2);
        // Again on a closed kept-alive connection, then on a new one that closes unanswered.
        let third =
            tokio::time::timeout(std::time::Duration::from_secs(10), client.read(0, "p", "c"))
                .await
                .expect("no endless retries");
        assert!(third.is_err());
        assert_eq!(requests.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn keys_are_percent_encoded_in_paths_and_queries() {
        let mut s = String::new();
        push_encoded(&mut s, "a b/c~d.e_f-g%");
        assert_eq!(s, "a%20b%2Fc~d.e_f-g%25");
    }
}
