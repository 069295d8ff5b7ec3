//! AWS Signature Version 4 verification, as K2V clients sign (service `k2v`).
//!
//! Pure: the request's method, raw path and query, headers and payload hash in; the access key
//! id named by the request out, once its secret verifies the signature. The canonical URI is
//! accepted both singly encoded (S3 style) and doubly encoded (what AWS SDKs do for every other
//! service, `k2v` included): both bind the signature to the same path. Derived signing keys
//! are memoized (a function of their inputs alone), so a day's requests derive one.
//!
//! Over 800 lines, of which about 250 are its tests (AWS's published vectors and each real
//! signer's canonical forms): the algorithm itself is under 600.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Characters SigV4 leaves unencoded: `A-Z a-z 0-9 - _ . ~`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// The same, keeping `/` (paths).
const UNRESERVED_PATH: &AsciiSet = &UNRESERVED.remove(b'/');

/// How far a request's date may be from the server's clock.
pub const MAX_CLOCK_SKEW_SECS: i64 = 15 * 60;

/// Why a request is not authenticated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("the request is not signed (no Authorization header)")]
    Unsigned,
    /// The header is not a SigV4 one, or misses a part.
    #[error("malformed Authorization header: {0}")]
    Malformed(String),
    /// The key id is unknown (or deleted).
    #[error("unknown access key {0}")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("the request signature does not match")]
    BadSignature,
    /// The request's date is too far from now: an old request replayed, or a wrong clock.
    #[error("request date {0} is more than 15 minutes from the server's time")]
    Expired(String),
    /// Scope for another region or service.
    #[error("credential scope {0} is not valid here")]
    WrongScope(String),
    /// `x-amz-content-sha256` does not match the body.
    #[error("x-amz-content-sha256 does not match the body")]
    PayloadMismatch,
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 …` header, borrowed from it: a request
/// is authenticated without copying them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization<'a> {
    /// Access key id.
    pub key_id: &'a str,
    /// Scope date, `YYYYMMDD`.
    pub date: &'a str,
    /// Scope region.
    pub region: &'a str,
    /// Scope service.
    pub service: &'a str,
    /// Signed header names, lowercase, in the header's order.
    pub signed_headers: Vec<Cow<'a, str>>,
    /// Hex signature.
    pub signature: &'a str,
}

impl<'a> Authorization<'a> {
    /// Parses the header's value.
    pub fn parse(value: &'a str) -> Result<Self, AuthError> {
        let rest = value
            .strip_prefix("AWS4-HMAC-SHA256")
            .ok_or_else(|| AuthError::Malformed("not AWS4-HMAC-SHA256".into()))?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("Credential=") {
                credential = Some(v);
            } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
                signed = Some(v);
            } else if let Some(v) = part.strip_prefix("Signature=") {
                signature = Some(v);
            }
        }
        let missing = |what: &str| AuthError::Malformed(format!("no {what}"));
        let credential = credential.ok_or_else(|| missing("Credential"))?;
        let mut scope = credential.split('/');
        let mut next = || scope.next();
        let (Some(key_id), Some(date), Some(region), Some(service), Some("aws4_request"), None) =
            (next(), next(), next(), next(), next(), next())
        else {
            return Err(AuthError::Malformed(format!("credential {credential}")));
        };
        Ok(Authorization {
            key_id,
            date,
            region,
            service,
            signed_headers: signed
                .ok_or_else(|| missing("SignedHeaders"))?
                .split(';')
                .map(|h| lowercase(h.trim()))
                .collect(),
            signature: signature.ok_or_else(|| missing("Signature"))?.trim(),
        })
    }
}

/// `s` in ASCII lowercase, copied only if it has an uppercase letter: clients send signed
/// header names and hex digests lowercase, as the specification asks.
fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// What a signature covers.
pub struct RequestParts<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// The path exactly as received (still percent-encoded).
    pub raw_path: &'a str,
    /// The query string as received, without `?`.
    pub raw_query: &'a str,
    /// Header lookup by lowercase name (all values of the header, joined by `,`).
    pub header: &'a dyn Fn(&str) -> Option<Cow<'a, str>>,
    /// Hex SHA-256 of the body.
    pub body_sha256: &'a str,
}

/// Hex SHA-256 of `body`.
pub fn sha256_hex(body: &[u8]) -> String {
    if body.is_empty() {
        // Every GET: no need to hash nothing each time.
        return EMPTY_SHA256.to_string();
    }
    hex::encode(Sha256::digest(body))
}

/// Hex SHA-256 of no bytes.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Verifies `req` signed with `secret` under `auth`, at `now_unix` seconds, for `region` and
/// service `k2v`.
pub fn verify(
    req: &RequestParts<'_>,
    auth: &Authorization<'_>,
    secret: &str,
    region: &str,
    now_unix: i64,
) -> Result<(), AuthError> {
    if auth.service != "k2v" || auth.region != region {
        return Err(AuthError::WrongScope(format!(
            "{}/{}",
            auth.region, auth.service
        )));
    }
    let amz_date = (req.header)("x-amz-date")
        .ok_or_else(|| AuthError::Malformed("no x-amz-date header".into()))?;
    let signed_at = parse_amz_date(&amz_date)
        .ok_or_else(|| AuthError::Malformed(format!("x-amz-date {amz_date}")))?;
    if (signed_at - now_unix).abs() > MAX_CLOCK_SKEW_SECS {
        return Err(AuthError::Expired(amz_date.into_owned()));
    }
    if !amz_date.starts_with(auth.date) {
        return Err(AuthError::WrongScope(format!(
            "date {} vs {amz_date}",
            auth.date
        )));
    }
    if !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(AuthError::Malformed("host is not signed".into()));
    }
    let payload_hash = match (req.header)("x-amz-content-sha256") {
        Some(h) if h == "UNSIGNED-PAYLOAD" => {
            // A body nobody signed could be replaced in flight: refused for K2V.
            return Err(AuthError::Malformed(
                "unsigned payloads are not accepted".into(),
            ));
        }
        Some(h) if !h.eq_ignore_ascii_case(req.body_sha256) => {
            return Err(AuthError::PayloadMismatch);
        }
        Some(Cow::Borrowed(h)) => lowercase(h),
        Some(Cow::Owned(h)) => Cow::Owned(h.to_ascii_lowercase()),
        None => Cow::Borrowed(req.body_sha256),
    };

    let mut headers = String::with_capacity(256);
    for name in &auth.signed_headers {
        let value = (req.header)(name)
            .ok_or_else(|| AuthError::Malformed(format!("signed header {name} is absent")))?;
        headers.push_str(name);
        headers.push(':');
        headers.push_str(&collapse_spaces(value.trim()));
        headers.push('\n');
    }
    let query = canonical_query(req.raw_query);
    let key = cached_signing_key(secret, auth.date, auth.region, auth.service);
    let mut signature = [0u8; 32];
    hex::decode_to_slice(auth.signature, &mut signature).map_err(|_| AuthError::BadSignature)?;

    // The canonical request and the string to sign are streamed into their hashes: a request
    // is verified without building either.
    let matches_with = |uri: &str, query: &str| {
        let mut canonical = Sha256::new();
        for part in [req.method, "\n", uri, "\n", query, "\n", &headers, "\n"] {
            canonical.update(part.as_bytes());
        }
        for (i, name) in auth.signed_headers.iter().enumerate() {
            if i > 0 {
                canonical.update(b";");
            }
            canonical.update(name.as_bytes());
        }
        canonical.update(b"\n");
        canonical.update(payload_hash.as_bytes());
        let mut canonical_hex = [0u8; 64];
        hex::encode_to_slice(canonical.finalize(), &mut canonical_hex)
            .expect("64 hex digits for 32 bytes");
        let mut mac = HmacSha256::new_from_slice(&key).expect("any key length");
        for part in [
            "AWS4-HMAC-SHA256\n",
            &amz_date,
            "\n",
            auth.date,
            "/",
            auth.region,
            "/",
            auth.service,
            "/aws4_request\n",
        ] {
            mac.update(part.as_bytes());
        }
        mac.update(&canonical_hex);
        // Constant-time comparison.
        mac.verify_slice(&signature).is_ok()
    };
    // The common case first: a path and query of unreserved characters only, which every
    // signer canonicalises the same way, are checked once. Otherwise each way real signers
    // canonicalise a percent-encoded path and query is tried (see `canonical_forms`).
    let (paths, queries) = canonical_forms(req.raw_path, req.raw_query, &query);
    for uri in &paths {
        for q in &queries {
            if matches_with(uri, q) {
                return Ok(());
            }
        }
    }
    Err(AuthError::BadSignature)
}

/// The canonical URIs and query strings that real signers derive from a request's raw path and
/// query, each listed once, the AWS rule first. They differ only for characters outside
/// SigV4's unreserved set:
///
/// - paths: S3's rule (the decoded path encoded once; `k2v-client`, AWS's S3 signers), the
///   other AWS services' rule (that encoded again), the path exactly as sent (curl
///   `--aws-sigv4`, Garage's verifier), and the path as sent encoded once more (botocore's
///   `SigV4Auth` given an encoded URL);
/// - queries: AWS's rule (pairs decoded, strictly re-encoded, sorted), the same with `+` read
///   as a space (Garage's verifier, HTML forms), the query exactly as sent (curl 7, which
///   neither sorts nor re-encodes), and its pairs sorted as sent (botocore).
///
/// Every form is a function of the bytes received, and none maps two requests of different
/// meaning to the same string: a signature still binds the method, path, query, signed headers
/// and body it was made for.
fn canonical_forms<'a>(
    raw_path: &'a str,
    raw_query: &'a str,
    aws_query: &Cow<'a, str>,
) -> (Vec<Cow<'a, str>>, Vec<Cow<'a, str>>) {
    fn push<'a>(v: &mut Vec<Cow<'a, str>>, c: Cow<'a, str>) {
        if !v.contains(&c) {
            v.push(c);
        }
    }
    let mut paths = Vec::with_capacity(4);
    let plain = raw_path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.~/".contains(&b));
    if plain {
        // Nothing escaped or to escape: the one form every signer computes, and no copy.
        paths.push(Cow::Borrowed(raw_path));
    } else {
        let decoded_path = percent_decode_str(raw_path).decode_utf8_lossy();
        let single: Cow<'a, str> =
            Cow::Owned(utf8_percent_encode(&decoded_path, UNRESERVED_PATH).to_string());
        let double = utf8_percent_encode(&single, UNRESERVED_PATH).to_string();
        let sent_encoded = utf8_percent_encode(raw_path, UNRESERVED_PATH).to_string();
        push(&mut paths, single);
        push(&mut paths, Cow::Owned(double));
        push(&mut paths, Cow::Borrowed(raw_path));
        push(&mut paths, Cow::Owned(sent_encoded));
    }
    let mut queries = vec![aws_query.clone()];
    if *aws_query != raw_query {
        push(&mut queries, Cow::Owned(canonical_query_form(raw_query)));
        push(&mut queries, Cow::Borrowed(raw_query));
        push(&mut queries, Cow::Owned(sorted_as_sent(raw_query)));
    }
    (paths, queries)
}

/// The query's pairs sorted by name and value as sent, each with its `=` (botocore signing a
/// URL's query).
fn sorted_as_sent(raw: &str) -> String {
    let mut pairs: Vec<(&str, &str)> = raw
        .split('&')
        .filter(|p| !p.is_empty())
        .map(split_pair)
        .collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// [`canonical_query`] with `+` read as a space, as HTML forms encode one.
fn canonical_query_form(raw: &str) -> String {
    canonical_query_rebuilt(&raw.replace('+', "%20"))
}

/// Signs a request the way a client does (tests and Shoal's own tools).
#[allow(clippy::too_many_arguments)]
pub fn sign(
    method: &str,
    raw_path: &str,
    raw_query: &str,
    headers: &[(&str, &str)],
    body_sha256: &str,
    key_id: &str,
    secret: &str,
    region: &str,
    amz_date: &str,
) -> String {
    let date = &amz_date[..8];
    let mut names: Vec<String> = headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    names.sort();
    let mut canonical_headers = String::new();
    for name in &names {
        let v = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .unwrap_or_default();
        canonical_headers.push_str(&format!("{name}:{}\n", collapse_spaces(v.trim())));
    }
    let decoded = percent_decode_str(raw_path).decode_utf8_lossy();
    let uri = utf8_percent_encode(&decoded, UNRESERVED_PATH).to_string();
    let canonical = format!(
        "{method}\n{uri}\n{}\n{canonical_headers}\n{}\n{body_sha256}",
        canonical_query(raw_query),
        names.join(";")
    );
    let scope = format!("{date}/{region}/k2v/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let mut mac = HmacSha256::new_from_slice(&signing_key(secret, date, region, "k2v"))
        .expect("any key length");
    mac.update(to_sign.as_bytes());
    format!(
        "AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders={}, Signature={}",
        names.join(";"),
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Signing keys derived so far: a key signs with the same one all day, and deriving it costs
/// four HMACs per request. Keyed by everything the derivation reads, the secret included, so a
/// changed secret never meets an old key. Bounded; it starts over when full.
static SIGNING_KEYS: std::sync::LazyLock<parking_lot::Mutex<HashMap<String, Arc<[u8]>>>> =
    std::sync::LazyLock::new(Default::default);

/// Most signing keys remembered.
const MAX_SIGNING_KEYS: usize = 1024;

/// A signing key with what it was derived from: secret, date, region, service.
type KeyedSigningKey = ([String; 4], Arc<[u8]>);

fn cached_signing_key(secret: &str, date: &str, region: &str, service: &str) -> Arc<[u8]> {
    // Each worker thread first looks at the last key it used: requests run in bursts from one
    // key, and that look needs neither the lock nor an allocation.
    thread_local! {
        static LAST: std::cell::RefCell<Option<KeyedSigningKey>> =
            const { std::cell::RefCell::new(None) };
    }
    let hit = LAST.with_borrow(|last| {
        last.as_ref()
            .filter(|(id, _)| id == &[secret, date, region, service])
            .map(|(_, k)| k.clone())
    });
    if let Some(k) = hit {
        return k;
    }
    let k = shared_signing_key(secret, date, region, service);
    LAST.set(Some((
        [secret, date, region, service].map(str::to_string),
        k.clone(),
    )));
    k
}

fn shared_signing_key(secret: &str, date: &str, region: &str, service: &str) -> Arc<[u8]> {
    let id = format!("{date}/{region}/{service}/{secret}");
    let mut keys = SIGNING_KEYS.lock();
    if let Some(k) = keys.get(&id) {
        return k.clone();
    }
    let k: Arc<[u8]> = signing_key(secret, date, region, service).into();
    if keys.len() >= MAX_SIGNING_KEYS {
        keys.clear();
    }
    keys.insert(id, k.clone());
    k
}

/// The signing key of a day (`YYYYMMDD`), region and service: what a client that signs many
/// requests derives once per day rather than once per request.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let mut k = format!("AWS4{secret}").into_bytes();
    for part in [date, region, service, "aws4_request"] {
        let mut mac = HmacSha256::new_from_slice(&k).expect("any key length");
        mac.update(part.as_bytes());
        k = mac.finalize().into_bytes().to_vec();
    }
    k
}

fn collapse_spaces(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains("  ") {
        return std::borrow::Cow::Borrowed(v);
    }
    let mut out = String::with_capacity(v.len());
    let mut space = false;
    for c in v.chars() {
        if c == ' ' {
            if !space {
                out.push(' ');
            }
            space = true;
        } else {
            out.push(c);
            space = false;
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Sorted, strictly re-encoded `key=value` pairs.
fn canonical_query(raw: &str) -> std::borrow::Cow<'_, str> {
    // The common case, already canonical (only unreserved characters, every pair with its
    // `=`, pairs in order): as received.
    let plain = raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.~=&".contains(&b));
    if plain {
        let pairs: Vec<&str> = raw.split('&').collect();
        if pairs
            .iter()
            .all(|p| p.bytes().filter(|&b| b == b'=').count() == 1)
            && pairs
                .windows(2)
                .all(|w| split_pair(w[0]) < split_pair(w[1]))
        {
            return std::borrow::Cow::Borrowed(raw);
        }
    }
    canonical_query_rebuilt(raw).into()
}

/// [`canonical_query`] the long way: every pair decoded, re-encoded and sorted.
fn canonical_query_rebuilt(raw: &str) -> String {
    let mut pairs: Vec<(String, String)> = raw
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let enc = |s: &str| {
                let d = percent_decode_str(s).decode_utf8_lossy();
                utf8_percent_encode(&d, UNRESERVED).to_string()
            };
            (enc(k), enc(v))
        })
        .collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn split_pair(p: &str) -> (&str, &str) {
    p.split_once('=').unwrap_or((p, ""))
}

/// `YYYYMMDDTHHMMSSZ` → Unix seconds.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Unix seconds → `YYYYMMDDTHHMMSSZ`.
pub fn format_amz_date(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

// Howard Hinnant's civil-date algorithms: days since 1970-01-01 in the proleptic Gregorian
// calendar.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The shortcut for queries already canonical gives what the long way gives, for
        /// queries canonical or not (unsorted, repeated keys, missing `=`, encoded bytes).
        #[test]
        fn canonical_query_shortcut_agrees_with_the_long_way(
            q in "([a-c~_.-]{0,3}(=[a-c0-9%2A+ ]{0,3})?&?){0,4}",
        ) {
            let (short, long) = (canonical_query(&q).into_owned(), canonical_query_rebuilt(&q));
            prop_assert_eq!(short, long);
        }
    }

    #[test]
    fn a_canonical_query_is_taken_as_it_is() {
        let q = "end=b&prefix=a&sort_key=x";
        assert!(matches!(canonical_query(q), std::borrow::Cow::Borrowed(_)));
        assert_eq!(canonical_query("sort_key=x&end=b"), "end=b&sort_key=x");
    }

    #[test]
    fn dates_round_trip() {
        for t in [0i64, 951_782_400, 1_700_000_000, 1_795_000_000] {
            assert_eq!(parse_amz_date(&format_amz_date(t)), Some(t));
        }
        assert_eq!(format_amz_date(0), "19700101T000000Z");
        assert_eq!(parse_amz_date("2026-11-26"), None);
    }

    /// The signing-key example of AWS's SigV4 documentation.
    #[test]
    fn signing_key_matches_the_aws_documentation() {
        let k = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20120215",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex::encode(k),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    fn check(
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
        auth_secret: &str,
        now: i64,
    ) -> Result<(), AuthError> {
        let date = format_amz_date(1_795_000_000);
        let hash = sha256_hex(body);
        let header_value = sign(
            "PUT",
            "/bucket/pk%20one",
            "sort_key=a%2Fb",
            &[
                ("host", "127.0.0.1:3902"),
                ("x-amz-date", &date),
                ("x-amz-content-sha256", &sha256_hex(b"value")),
            ],
            &sha256_hex(b"value"),
            "GKtest",
            "secret",
            "shoal",
            &date,
        );
        let auth = Authorization::parse(&header_value)?;
        let date2 = date.clone();
        let header = move |name: &str| -> Option<Cow<'_, str>> {
            match name {
                "host" => Some("127.0.0.1:3902".into()),
                "x-amz-date" => Some(date2.clone().into()),
                "x-amz-content-sha256" => Some(sha256_hex(b"value").into()),
                _ => None,
            }
        };
        verify(
            &RequestParts {
                method,
                raw_path: path,
                raw_query: query,
                header: &header,
                body_sha256: &hash,
            },
            &auth,
            auth_secret,
            "shoal",
            now,
        )
    }

    #[test]
    fn a_signature_verifies_only_for_what_it_signed() {
        let now = 1_795_000_000;
        assert_eq!(
            check(
                "PUT",
                "/bucket/pk%20one",
                "sort_key=a%2Fb",
                b"value",
                "secret",
                now
            ),
            Ok(())
        );
        // Query order and encoding variants canonicalise to the same request.
        assert_eq!(
            check(
                "PUT",
                "/bucket/pk%20one",
                "sort_key=a/b",
                b"value",
                "secret",
                now
            ),
            Ok(())
        );
        let bad = [
            check(
                "PUT",
                "/bucket/pk%20one",
                "sort_key=a%2Fb",
                b"value",
                "wrong",
                now,
            ),
            check(
                "POST",
                "/bucket/pk%20one",
                "sort_key=a%2Fb",
                b"value",
                "secret",
                now,
            ),
            check(
                "PUT",
                "/bucket/pk%20two",
                "sort_key=a%2Fb",
                b"value",
                "secret",
                now,
            ),
            check(
                "PUT",
                "/bucket/pk%20one",
                "sort_key=other",
                b"value",
                "secret",
                now,
            ),
        ];
        for b in bad {
            assert_eq!(b, Err(AuthError::BadSignature));
        }
        assert_eq!(
            check(
                "PUT",
                "/bucket/pk%20one",
                "sort_key=a%2Fb",
                b"other",
                "secret",
                now
            ),
            Err(AuthError::PayloadMismatch)
        );
        assert!(matches!(
            check(
                "PUT",
                "/bucket/pk%20one",
                "sort_key=a%2Fb",
                b"value",
                "secret",
                now + 3600
            ),
            Err(AuthError::Expired(_))
        ));
    }

    #[test]
    fn the_empty_body_hash_is_sha256_of_nothing() {
        assert_eq!(sha256_hex(b""), hex::encode(Sha256::digest(b"")));
    }

    #[test]
    fn a_path_signed_double_encoded_verifies_too() {
        let now = 1_795_000_000;
        let date = format_amz_date(now);
        let headers = [("host", "h"), ("x-amz-date", date.as_str())];
        // A client of the non-S3 style encodes the path twice: `pk one` -> `pk%2520one`.
        let signed_as = |path: &str| {
            sign(
                "GET",
                path,
                "",
                &headers,
                EMPTY_SHA256,
                "GKtest",
                "secret",
                "shoal",
                &date,
            )
        };
        let header = |name: &str| -> Option<Cow<'_, str>> {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| Cow::Borrowed(*v))
        };
        let received = RequestParts {
            method: "GET",
            raw_path: "/bucket/pk%20one",
            raw_query: "",
            header: &header,
            body_sha256: EMPTY_SHA256,
        };
        for path in ["/bucket/pk%20one", "/bucket/pk%2520one"] {
            assert_eq!(
                verify(
                    &received,
                    &Authorization::parse(&signed_as(path)).unwrap(),
                    "secret",
                    "shoal",
                    now
                ),
                Ok(()),
                "{path}"
            );
        }
        assert_eq!(
            verify(
                &received,
                &Authorization::parse(&signed_as("/bucket/pk%252520one")).unwrap(),
                "secret",
                "shoal",
                now
            ),
            Err(AuthError::BadSignature),
            "three times is not a way of encoding it"
        );
    }
}
