//! The load generator's K2V client: InsertItem and ReadItem as signed HTTP/1.1 requests on
//! one kept-alive connection per simulated client.
//!
//! The benchmark runs servers and clients on the same two cores, so every microsecond the
//! client spends is taken from the systems measured. A general client (`k2v-client`: hyper's
//! pooled client, a task per connection, a fresh SigV4 signer per request) spent about 40 µs of
//! CPU per request, as much as a Shoal node spends serving it. This one writes each request
//! with one system call and reads the reply in the calling task; it still signs every
//! request (SigV4, with the day's signing key derived once) and checks every reply.

use std::sync::Mutex;

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
        let mut cached = self.signing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((d, k)) = cached.as_ref()
            && d == date
        {
            return *k;
        }
        let mac = |key: &[u8], data: &str| -> [u8; 32] {
            let mut m = HmacSha256::new_from_slice(key).expect("any key length");
            m.update(data.as_bytes());
            m.finalize().into_bytes().into()
        };
        let k = mac(&format!("AWS4{}", self.secret).into_bytes(), date);
        let k = mac(&k, &self.region);
        let k = mac(&k, "k2v");
        let k = mac(&k, "aws4_request");
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
        let r = self.call(slot, "PUT", pk, sk, value).await?;
        if !(200..300).contains(&r.status) {
            bail!("InsertItem {pk}/{sk}: status {}", r.status);
        }
        Ok(())
    }

    /// ReadItem as raw bytes: `None` when the item does not exist.
    pub async fn read(&self, slot: usize, pk: &str, sk: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let r = self.call(slot, "GET", pk, sk, &[]).await?;
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
        pk: &str,
        sk: &str,
        body: &[u8],
    ) -> anyhow::Result<Reply> {
        let request = self.request(method, pk, sk, body);
        let mut conn = self.conns[slot % self.conns.len()].lock().await;
        // A kept-alive connection the server closed since the last request fails at once:
        // that request is sent again on a new connection (both are idempotent here).
        for attempt in 0..2 {
            if conn.is_none() {
                let stream = TcpStream::connect(&self.host)
                    .await
                    .with_context(|| format!("connecting to {}", self.host))?;
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
                    if attempt == 1 {
                        return Err(e);
                    }
                }
            }
        }
        unreachable!("the second attempt returns")
    }

    /// The whole request, signed: headers and body, ready for one write.
    fn request(&self, method: &str, pk: &str, sk: &str, body: &[u8]) -> Vec<u8> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let amz_date = amz_date(now);
        let date = &amz_date[..8];
        let mut path = String::with_capacity(64);
        path.push('/');
        push_encoded(&mut path, &self.bucket);
        path.push('/');
        push_encoded(&mut path, pk);
        let mut query = String::from("sort_key=");
        push_encoded(&mut query, sk);
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
            "{method} {path}?{query} HTTP/1.1\r\nhost: {host}\r\nx-amz-date: {amz_date}\r\n\
             x-amz-content-sha256: {body_hash}\r\nauthorization: AWS4-HMAC-SHA256 \
             Credential={key_id}/{date}/{region}/k2v/aws4_request, SignedHeaders={SIGNED}, \
             Signature={signature}\r\naccept: application/octet-stream\r\ncontent-length: {len}\r\n\r\n",
            host = self.host,
            key_id = self.key_id,
            region = self.region,
            len = body.len(),
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

/// `YYYYMMDDTHHMMSSZ` of a Unix time.
fn amz_date(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_formatted_as_sigv4_wants() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(951_782_400), "20000229T000000Z");
        assert_eq!(amz_date(1_796_601_599), "20261206T235959Z");
    }

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
        for (method, sk, body) in [
            ("GET", "item 00000012", &b""[..]),
            ("PUT", "w0-3-17", &[7u8; 100][..]),
        ] {
            let bytes = client.request(method, "p3", sk, body);
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut req = httparse::Request::new(&mut headers);
            let head = match req.parse(&bytes).unwrap() {
                httparse::Status::Complete(n) => n,
                httparse::Status::Partial => panic!("incomplete request"),
            };
            assert_eq!(&bytes[head..], body);
            let (path, query) = req.path.unwrap().split_once('?').unwrap();
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

    #[test]
    fn keys_are_percent_encoded_in_paths_and_queries() {
        let mut s = String::new();
        push_encoded(&mut s, "a b/c~d.e_f-g%");
        assert_eq!(s, "a%20b%2Fc~d.e_f-g%25");
    }
}
