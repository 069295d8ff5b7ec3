//! The HTTP surface of the K2V API: request routing, body limits, SigV4 authentication,
//! content negotiation and the spec's JSON shapes and status codes.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};
use shoal_net::Transport;

use crate::causality::{CausalContext, DvvsValue};
use crate::counters::IndexQuery;
use crate::model::K2vItem;
use crate::service::{Api, ApiError, DEFAULT_LIMIT, SortRange};
use crate::sigv4;

const CAUSALITY_HEADER: &str = "x-garage-causality-token";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Longest long poll, as the spec allows.
const MAX_POLL_SECS: u64 = 600;

/// Serves the K2V HTTP API of `api` on `bind` until the returned task is aborted.
pub async fn serve<T: Transport>(
    api: Api<T>,
    bind: &str,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    // Each connection is served by hyper's HTTP/1.1 state machine calling `handle` directly:
    // every K2V request goes to the one handler, so a router (a service clone, a boxed
    // future and an extension map per request) would only add work to the hot path.
    let task = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, typically: wait for connections to close
                    // rather than spin on the error.
                    tracing::error!(error = %e, "K2V API cannot accept connections");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            // Responses are written whole, in one call: nothing to gain from Nagle's delay.
            let _ = stream.set_nodelay(true);
            let api = api.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let api = api.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            handle(api, req.map(axum::body::Body::new)).await,
                        )
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "K2V API connection ended with an error");
                }
            });
        }
    });
    Ok((addr, task))
}

/// An accept error that concerns one connection only (the listener itself is fine).
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// An error as K2V clients expect it: a status and a JSON body.
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
    path: String,
    region: String,
}

impl Failure {
    /// The response, logged: every 5xx at warn with its reason and request id (the client gets
    /// the same id), others at debug; a 503 tells the client when to retry.
    fn into_response_logged(self, request_id: &str, operation: &str) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(request_id, operation, status = %self.status, path = %self.path, reason = %self.message, "K2V request failed");
        } else {
            tracing::debug!(request_id, operation, status = %self.status, path = %self.path, message = %self.message, "K2V request refused");
        }
        let unavailable = self.status == StatusCode::SERVICE_UNAVAILABLE;
        let mut response = self.into_response();
        if unavailable {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            code: &'a str,
            message: &'a str,
            region: &'a str,
            path: &'a str,
        }
        let body = serde_json::to_vec(&Body {
            code: self.code,
            message: &self.message,
            region: &self.region,
            path: &self.path,
        })
        .expect("error bodies encode");
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

fn status_of(e: &ApiError) -> (StatusCode, &'static str) {
    match e {
        ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "InvalidRequest"),
        ApiError::AccessDenied(_) => (StatusCode::FORBIDDEN, "AccessDenied"),
        ApiError::NoSuchBucket(_) => (StatusCode::NOT_FOUND, "NoSuchBucket"),
        ApiError::NoSuchKey => (StatusCode::NOT_FOUND, "NoSuchKey"),
        ApiError::AlreadyExists(_) => (StatusCode::CONFLICT, "AlreadyExists"),
        ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
        ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
    }
}

/// Seconds a client is asked to wait before retrying a 503.
const RETRY_AFTER_SECS: &str = "1";

/// The header naming a request in responses and logs.
const REQUEST_ID_HEADER: &str = "x-amz-request-id";

/// A request id unique within this process and unlikely to repeat across nodes: a random
/// prefix drawn at start, then a counter.
fn next_request_id() -> String {
    static PREFIX: std::sync::LazyLock<u32> = std::sync::LazyLock::new(rand::random);
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:08x}{n:016x}", *PREFIX)
}

struct Ctx<'a, T: Transport> {
    api: &'a Api<T>,
    path: String,
}

impl<T: Transport> Ctx<'_, T> {
    fn fail(&self, e: ApiError) -> Failure {
        let (status, code) = status_of(&e);
        Failure {
            status,
            code,
            message: e.to_string(),
            path: self.path.clone(),
            region: self.api.config().region.clone(),
        }
    }

    fn custom(&self, status: StatusCode, code: &'static str, message: String) -> Failure {
        Failure {
            status,
            code,
            message,
            path: self.path.clone(),
            region: self.api.config().region.clone(),
        }
    }
}

async fn handle<T: Transport>(api: Api<T>, req: Request) -> Response {
    let started = std::time::Instant::now();
    let ctx = Ctx {
        api: &api,
        path: req.uri().path().to_string(),
    };
    let operation = operation_of(req.method(), req.uri());
    let request_id = next_request_id();
    // Long polls wait by design, for minutes: they take no request slot.
    let long_poll = matches!(operation, "PollItem" | "PollRange");
    let admitted = if long_poll { None } else { api.admit() };
    let mut response = match admitted {
        None if !long_poll => ctx
            .fail(ApiError::Unavailable(
                "this node has more requests in flight than it accepts; retry later".into(),
            ))
            .into_response_logged(&request_id, operation),
        _permit => match handle_inner(&ctx, req).await {
            Ok(r) => r,
            Err(f) => f.into_response_logged(&request_id, operation),
        },
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    api.metrics().record(
        operation,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The K2V operation a request asks for, by its shape alone (for metrics).
fn operation_of(method: &Method, uri: &axum::http::Uri) -> &'static str {
    let has_pk = uri.path().trim_start_matches('/').contains('/');
    let query = uri.query().unwrap_or("");
    let has = |p: &str| query.split('&').any(|kv| kv.split('=').next() == Some(p));
    match (method.as_str(), has_pk) {
        ("GET", true) if has("causality_token") => "PollItem",
        ("GET", true) => "ReadItem",
        ("PUT", true) => "InsertItem",
        ("DELETE", true) => "DeleteItem",
        ("POST", true) if has("poll_range") => "PollRange",
        ("SEARCH", true) if has("poll_range") => "PollRange",
        ("GET", false) => "ReadIndex",
        ("POST", false) if has("search") => "ReadBatch",
        ("SEARCH", false) => "ReadBatch",
        ("POST", false) if has("delete") => "DeleteBatch",
        ("POST", false) => "InsertBatch",
        _ => "Other",
    }
}

async fn handle_inner<T: Transport>(ctx: &Ctx<'_, T>, req: Request) -> Result<Response, Failure> {
    let api = ctx.api;
    let (parts, body) = req.into_parts();
    let bad = |m: String| ctx.fail(ApiError::BadRequest(m));

    // Refuse what must be refused before reading a byte of the body.
    let auth_header = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ctx.fail(ApiError::AccessDenied(
                sigv4::AuthError::Unsigned.to_string(),
            ))
        })?;
    let auth = sigv4::Authorization::parse(auth_header)
        .map_err(|e| ctx.fail(ApiError::AccessDenied(e.to_string())))?;
    let limit = api.config().max_body_bytes;
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(ctx.custom(
            StatusCode::PAYLOAD_TOO_LARGE,
            "EntityTooLarge",
            format!("request body of {len} bytes exceeds the limit of {limit}"),
        ));
    }
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ctx.custom(
            StatusCode::PAYLOAD_TOO_LARGE,
            "EntityTooLarge",
            format!("request body exceeds the limit of {limit} bytes"),
        )
    })?;

    // Authenticate.
    let secret = api
        .key_secret(auth.key_id)
        .await
        .map_err(|e| ctx.fail(e))?
        .ok_or_else(|| {
            ctx.fail(ApiError::AccessDenied(
                sigv4::AuthError::UnknownKey(auth.key_id.to_string()).to_string(),
            ))
        })?;
    let headers = &parts.headers;
    let lookup = |name: &str| -> Option<Cow<'_, str>> {
        let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
        let first = values.next()?;
        // One value, the usual case: borrowed. Several: joined as the signature covers them.
        let Some(second) = values.next() else {
            return Some(first.into());
        };
        let mut joined = format!("{first},{second}");
        for v in values {
            joined.push(',');
            joined.push_str(v);
        }
        Some(joined.into())
    };
    let body_hash = sigv4::sha256_hex(&body);
    let now = (crate::now_micros() / 1_000_000) as i64;
    sigv4::verify(
        &sigv4::RequestParts {
            method: parts.method.as_str(),
            raw_path: parts.uri.path(),
            raw_query: parts.uri.query().unwrap_or(""),
            header: &lookup,
            body_sha256: &body_hash,
        },
        &auth,
        &secret,
        &api.config().region,
        now,
    )
    .map_err(|e| match e {
        // A signature for another region or service is a malformed request, as AWS and Garage
        // answer it: the client is misconfigured, not refused.
        sigv4::AuthError::WrongScope(_) => ctx.custom(
            StatusCode::BAD_REQUEST,
            "AuthorizationHeaderMalformed",
            e.to_string(),
        ),
        e => ctx.fail(ApiError::AccessDenied(e.to_string())),
    })?;

    // Route.
    let path = parts.uri.path().trim_start_matches('/');
    let (bucket_raw, pk_raw) = match path.split_once('/') {
        Some((b, pk)) => (b, Some(pk)),
        None => (path, None),
    };
    fn percent_decoded(s: &str) -> Result<Cow<'_, str>, std::str::Utf8Error> {
        percent_decode_str(s).decode_utf8()
    }
    let decode = |s| percent_decoded(s).map_err(|_| bad("path is not UTF-8".into()));
    let bucket = decode(bucket_raw)?;
    if bucket.is_empty() {
        return Err(bad("no bucket in the path".into()));
    }
    let pk = pk_raw.map(decode).transpose()?;
    let query = parse_query(parts.uri.query().unwrap_or("")).map_err(bad)?;
    let method = &parts.method;
    let writes = matches!(*method, Method::PUT | Method::DELETE)
        || (*method == Method::POST && pk.is_none() && !query.contains_key("search"));
    let bucket_id = api
        .authorize(&bucket, auth.key_id, writes)
        .await
        .map_err(|e| ctx.fail(e))?;

    match (method.as_str(), pk) {
        ("GET", Some(pk)) => {
            let sk = required(&query, "sort_key").map_err(bad)?;
            match query.get("causality_token") {
                None => read_item(ctx, &bucket_id, &pk, sk, headers).await,
                Some(token) => {
                    let context = parse_token(token).map_err(bad)?;
                    let timeout = poll_timeout(&query).map_err(bad)?;
                    match api
                        .poll_item(&bucket_id, &pk, sk, &context, timeout)
                        .await
                        .map_err(|e| ctx.fail(e))?
                    {
                        Some(item) => item_response(ctx, &item, headers),
                        None => Ok(StatusCode::NOT_MODIFIED.into_response()),
                    }
                }
            }
        }
        ("PUT", Some(pk)) => {
            let sk = required(&query, "sort_key").map_err(bad)?;
            let context = header_token(headers).map_err(bad)?;
            api.insert(
                &bucket_id,
                &pk,
                sk,
                context.as_ref(),
                DvvsValue::Value(body.to_vec()),
            )
            .await
            .map_err(|e| ctx.fail(e))?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        ("DELETE", Some(pk)) => {
            let sk = required(&query, "sort_key").map_err(bad)?;
            // Without a token the deletion is concurrent with every value there is (as
            // Garage does it): they stay, beside a tombstone, until a write that saw them.
            let context = header_token(headers).map_err(bad)?;
            api.insert(&bucket_id, &pk, sk, context.as_ref(), DvvsValue::Deleted)
                .await
                .map_err(|e| ctx.fail(e))?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        ("POST", Some(pk)) if query.contains_key("poll_range") => {
            poll_range(ctx, &bucket_id, &pk, &body).await
        }
        // The specification's alternative route for PollRange (`?poll_range` still required,
        // as the specification writes it and Garage routes it).
        ("SEARCH", Some(pk)) if query.contains_key("poll_range") => {
            poll_range(ctx, &bucket_id, &pk, &body).await
        }
        ("GET", None) => read_index(ctx, &bucket_id, &query).await,
        ("POST", None) if query.contains_key("search") => read_batch(ctx, &bucket_id, &body).await,
        ("SEARCH", None) => read_batch(ctx, &bucket_id, &body).await,
        ("POST", None) if query.contains_key("delete") => {
            delete_batch(ctx, &bucket_id, &body).await
        }
        ("POST", None) => insert_batch(ctx, &bucket_id, &body).await,
        // As Garage answers them: a request that names no K2V operation is a bad request
        // (a PUT without a partition key, a POST on a partition key without poll_range).
        (m, pk) => Err(bad(format!(
            "{m} {} is not a K2V operation",
            if pk.is_some() {
                "/<bucket>/<partition key>"
            } else {
                "/<bucket>"
            }
        ))),
    }
}

/// A request's query parameters, decoded as HTML forms encode them (`+` is a space, as Garage
/// reads them), and borrowed from the request unless an escape had to be decoded. A handful at
/// most: a list searched in order costs less than building a hash map for every request.
struct Query<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl Query<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }

    fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Parses a query string; a parameter given twice, or not UTF-8 once decoded, is refused: a
/// signature covers the sorted pairs, so which of two values counts must not be a guess.
fn parse_query(raw: &str) -> Result<Query<'_>, String> {
    let mut pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::new();
    for p in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        let k = form_decode(k)?;
        if pairs.iter().any(|(seen, _)| *seen == k) {
            return Err(format!("query parameter {k} is given more than once"));
        }
        pairs.push((k, form_decode(v)?));
    }
    Ok(Query(pairs))
}

/// A query component decoded: `+` is a space, then percent escapes; UTF-8 or refused.
fn form_decode(s: &str) -> Result<Cow<'_, str>, String> {
    let not_utf8 = |_| "a query parameter is not UTF-8".to_string();
    if s.contains('+') {
        let spaced = s.replace('+', " ");
        let decoded = percent_decode_str(&spaced)
            .decode_utf8()
            .map_err(not_utf8)?;
        Ok(Cow::Owned(decoded.into_owned()))
    } else {
        percent_decode_str(s).decode_utf8().map_err(not_utf8)
    }
}

/// A listing's `start` must lie within its `prefix`, as Garage requires (400 otherwise).
fn check_start_in_prefix(prefix: Option<&str>, start: Option<&str>) -> Result<(), String> {
    match (prefix, start) {
        (Some(p), Some(s)) if !s.starts_with(p) => {
            Err(format!("start {s:?} does not begin with prefix {p:?}"))
        }
        _ => Ok(()),
    }
}

fn required<'q>(q: &'q Query<'_>, name: &str) -> Result<&'q str, String> {
    q.get(name)
        .ok_or_else(|| format!("query parameter {name} is required"))
}

fn parse_token(t: &str) -> Result<CausalContext, String> {
    CausalContext::decode(t).map_err(|e| e.to_string())
}

fn header_token(h: &HeaderMap) -> Result<Option<CausalContext>, String> {
    match h.get(CAUSALITY_HEADER) {
        None => Ok(None),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| "causality token is not ASCII".to_string())?;
            parse_token(s).map(Some)
        }
    }
}

fn poll_timeout(q: &Query<'_>) -> Result<Duration, String> {
    let secs = match q.get("timeout") {
        None => 300,
        Some(t) => t
            .parse::<u64>()
            .map_err(|_| format!("timeout {t} is not a number of seconds"))?,
    };
    Ok(Duration::from_secs(secs.min(MAX_POLL_SECS)))
}

fn json<V: Serialize>(status: StatusCode, v: &V) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(v).expect("responses encode"),
    )
        .into_response()
}

fn values_json(item: &K2vItem) -> Vec<Option<String>> {
    item.dvvs
        .values()
        .into_iter()
        .map(|v| match v {
            DvvsValue::Value(b) => Some(B64.encode(b)),
            DvvsValue::Deleted => None,
        })
        .collect()
}

async fn read_item<T: Transport>(
    ctx: &Ctx<'_, T>,
    bucket_id: &str,
    pk: &str,
    sk: &str,
    headers: &HeaderMap,
) -> Result<Response, Failure> {
    let item = ctx
        .api
        .read(bucket_id, pk, sk)
        .await
        .map_err(|e| ctx.fail(e))?
        .ok_or_else(|| ctx.fail(ApiError::NoSuchKey))?;
    item_response(ctx, &item, headers)
}

/// ReadItem's content negotiation, as the spec lays it out.
fn item_response<T: Transport>(
    ctx: &Ctx<'_, T>,
    item: &K2vItem,
    headers: &HeaderMap,
) -> Result<Response, Failure> {
    let accept: Vec<String> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .collect();
    // `*/*` accepts both (curl's default): a single value comes back as its raw bytes, as
    // Garage answers.
    let any = accept.iter().any(|a| a == "*/*");
    let (json_ok, raw_ok) = if accept.is_empty() {
        (true, false)
    } else {
        (
            any || accept.iter().any(|a| a == "application/json"),
            any || accept.iter().any(|a| a == "application/octet-stream"),
        )
    };
    let token = HeaderValue::from_str(&item.dvvs.context().encode()).expect("base64 is ASCII");
    let values = item.dvvs.values();
    let mut response = if raw_ok && values.len() == 1 {
        match values[0] {
            DvvsValue::Value(b) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/octet-stream")],
                b.clone(),
            )
                .into_response(),
            DvvsValue::Deleted => (
                StatusCode::NO_CONTENT,
                [(header::CONTENT_TYPE, "application/octet-stream")],
            )
                .into_response(),
        }
    } else if json_ok {
        json(StatusCode::OK, &values_json(item))
    } else if raw_ok {
        (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, "application/octet-stream")],
        )
            .into_response()
    } else {
        return Err(ctx.custom(
            StatusCode::NOT_ACCEPTABLE,
            "NotAcceptable",
            "Accept must allow application/json or application/octet-stream".into(),
        ));
    };
    response.headers_mut().insert(CAUSALITY_HEADER, token);
    Ok(response)
}

#[derive(Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Search {
    partition_key: String,
    prefix: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<u64>,
    #[serde(default)]
    reverse: bool,
    #[serde(default)]
    single_item: bool,
    #[serde(default)]
    conflicts_only: bool,
    #[serde(default)]
    tombstones: bool,
}

#[derive(Serialize)]
struct ItemJson {
    sk: String,
    ct: String,
    v: Vec<Option<String>>,
}

fn item_json(item: &K2vItem) -> ItemJson {
    ItemJson {
        sk: item.sk.clone(),
        ct: item.dvvs.context().encode(),
        v: values_json(item),
    }
}

fn parse_json<'a, V: Deserialize<'a>, T: Transport>(
    ctx: &Ctx<'_, T>,
    body: &'a [u8],
) -> Result<V, Failure> {
    serde_json::from_slice(body)
        .map_err(|e| ctx.fail(ApiError::BadRequest(format!("malformed JSON body: {e}"))))
}

async fn read_batch<T: Transport>(
    ctx: &Ctx<'_, T>,
    bucket_id: &str,
    body: &Bytes,
) -> Result<Response, Failure> {
    let searches: Vec<Search> = parse_json(ctx, body)?;
    for s in &searches {
        if s.single_item
            && (s.prefix.is_some() || s.end.is_some() || s.limit.is_some() || s.reverse)
        {
            return Err(ctx.fail(ApiError::BadRequest(
                "prefix, end, limit and reverse must not be set with singleItem".into(),
            )));
        }
    }
    let mut out = Vec::with_capacity(searches.len());
    for s in searches {
        let (items, next_start) = run_search(ctx, bucket_id, &s).await?;
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Result {
            #[serde(flatten)]
            search: Search,
            items: Vec<ItemJson>,
            more: bool,
            next_start: Option<String>,
        }
        out.push(Result {
            search: s,
            items: items.iter().map(item_json).collect(),
            more: next_start.is_some(),
            next_start,
        });
    }
    Ok(json(StatusCode::OK, &out))
}

async fn run_search<T: Transport>(
    ctx: &Ctx<'_, T>,
    bucket_id: &str,
    s: &Search,
) -> Result<(Vec<K2vItem>, Option<String>), Failure> {
    if s.single_item {
        let sk = s.start.as_ref().ok_or_else(|| {
            ctx.fail(ApiError::BadRequest(
                "singleItem needs start (the sort key)".into(),
            ))
        })?;
        let item = ctx
            .api
            .read(bucket_id, &s.partition_key, sk)
            .await
            .map_err(|e| ctx.fail(e))?;
        let keep = item.filter(|i| {
            (s.tombstones || !i.dvvs.is_tombstone())
                && (!s.conflicts_only || i.dvvs.values().len() > 1)
        });
        return Ok((keep.into_iter().collect(), None));
    }
    check_start_in_prefix(s.prefix.as_deref(), s.start.as_deref())
        .map_err(|e| ctx.fail(ApiError::BadRequest(e)))?;
    let range = SortRange {
        prefix: s.prefix.clone(),
        start: s.start.clone(),
        end: s.end.clone(),
        reverse: s.reverse,
    };
    // No limit: every item in the range, as Garage returns them (read in pages of the
    // cluster's range reads).
    let limit = s
        .limit
        .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let page = ctx
        .api
        .list(bucket_id, &s.partition_key, &range, limit, |i| {
            (s.tombstones || !i.dvvs.is_tombstone())
                && (!s.conflicts_only || i.dvvs.values().len() > 1)
        })
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok((page.items, page.next_start))
}

async fn insert_batch<T: Transport>(
    ctx: &Ctx<'_, T>,
    bucket_id: &str,
    body: &Bytes,
) -> Result<Response, Failure> {
    #[derive(Deserialize)]
    struct Insert {
        pk: String,
        sk: String,
        ct: Option<String>,
        v: Option<String>,
    }
    let inserts: Vec<Insert> = parse_json(ctx, body)?;
    let mut writes = Vec::with_capacity(inserts.len());
    for i in inserts {
        let context =
            i.ct.as_deref()
                .map(parse_token)
                .transpose()
                .map_err(|e| ctx.fail(ApiError::BadRequest(e)))?;
        let value = match i.v {
            Some(b) => DvvsValue::Value(B64.decode(b).map_err(|_| {
                ctx.fail(ApiError::BadRequest(format!(
                    "value of {}/{} is not base64",
                    i.pk, i.sk
                )))
            })?),
            None => DvvsValue::Deleted,
        };
        writes.push((i.pk, i.sk, context, value));
    }
    ctx.api
        .insert_batch(bucket_id, writes)
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_batch<T: Transport>(
    ctx: &Ctx<'_, T>,
    bucket_id: &str,
    body: &Bytes,
) -> Result<Response, Failure> {
    let searches: Vec<Search> = parse_json(ctx, body)?;
    for s in &searches {
        if s.single_item && (s.prefix.is_some() || s.end.is_some()) {
            return Err(ctx.fail(ApiError::BadRequest(
                "prefix and end must not be set with singleItem".into(),
            )));
        }
        check_start_in_prefix(s.prefix.as_deref(), s.start.as_deref())
            .map_err(|e| ctx.fail(ApiError::BadRequest(e)))?;
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Deleted {
        partition_key: String,
        prefix: Option<String>,
        start: Option<String>,
        end: Option<String>,
        single_item: bool,
        deleted_items: u64,
    }
    let mut out = Vec::new();
    for s in searches {
        let mut deleted = 0u64;
        loop {
            // Each pass deletes what it lists; listing again finds only what is left.
            let search = Search {
                partition_key: s.partition_key.clone(),
                prefix: s.prefix.clone(),
                start: s.start.clone(),
                end: s.end.clone(),
                limit: (!s.single_item).then_some(DEFAULT_LIMIT as u64),
                single_item: s.single_item,
                ..Search::default()
            };
            let (items, more) = run_search(ctx, bucket_id, &search).await?;
            for item in &items {
                ctx.api
                    .insert(
                        bucket_id,
                        &s.partition_key,
                        &item.sk,
                        Some(&item.dvvs.context()),
                        DvvsValue::Deleted,
                    )
                    .await
                    .map_err(|e| ctx.fail(e))?;
                deleted += 1;
            }
            if more.is_none() || items.is_empty() {
                break;
            }
        }
        out.push(Deleted {
            partition_key: s.partition_key,
            prefix: s.prefix,
            start: s.start,
            end: s.end,
            single_item: s.single_item,
            deleted_items: deleted,
        });
    }
    Ok(json(StatusCode::OK, &out))
}

async fn read_index<T: Transport>(
    ctx: &Ctx<'_, T>,
    bucket_id: &str,
    query: &Query<'_>,
) -> Result<Response, Failure> {
    let limit = match query.get("limit") {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ctx.fail(ApiError::BadRequest(format!("limit {l}"))))?,
        ),
        None => None,
    };
    let reverse = match query.get("reverse") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(ctx.fail(ApiError::BadRequest(format!("reverse {other}")))),
    };
    check_start_in_prefix(query.get("prefix"), query.get("start"))
        .map_err(|e| ctx.fail(ApiError::BadRequest(e)))?;
    let q = IndexQuery {
        bucket: bucket_id.to_string(),
        prefix: query.get("prefix").map(str::to_string),
        start: query.get("start").map(str::to_string),
        end: query.get("end").map(str::to_string),
        reverse,
        // No limit: every partition key, as Garage lists them.
        limit: limit.unwrap_or(usize::MAX),
    };
    let page = ctx
        .api
        .read_index(q.clone())
        .await
        .map_err(|e| ctx.fail(e))?;
    #[derive(Serialize)]
    struct Pk {
        pk: String,
        entries: i64,
        conflicts: i64,
        values: i64,
        bytes: i64,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Out {
        prefix: Option<String>,
        start: Option<String>,
        end: Option<String>,
        limit: Option<usize>,
        reverse: bool,
        partition_keys: Vec<Pk>,
        more: bool,
        next_start: Option<String>,
    }
    Ok(json(
        StatusCode::OK,
        &Out {
            prefix: q.prefix,
            start: q.start,
            end: q.end,
            limit,
            reverse,
            partition_keys: page
                .keys
                .into_iter()
                .map(|(pk, c)| Pk {
                    pk,
                    entries: c.entries,
                    conflicts: c.conflicts,
                    values: c.values,
                    bytes: c.bytes,
                })
                .collect(),
            more: page.next_start.is_some(),
            next_start: page.next_start,
        },
    ))
}

async fn poll_range<T: Transport>(
    ctx: &Ctx<'_, T>,
    bucket_id: &str,
    pk: &str,
    body: &Bytes,
) -> Result<Response, Failure> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Poll {
        prefix: Option<String>,
        start: Option<String>,
        end: Option<String>,
        seen_marker: Option<String>,
        timeout: Option<u64>,
    }
    let p: Poll = parse_json(ctx, body)?;
    let seen = p
        .seen_marker
        .as_deref()
        .map(parse_token)
        .transpose()
        .map_err(|e| ctx.fail(ApiError::BadRequest(e)))?;
    let range = SortRange {
        prefix: p.prefix,
        start: p.start,
        end: p.end,
        reverse: false,
    };
    let timeout = Duration::from_secs(p.timeout.unwrap_or(300).min(MAX_POLL_SECS));
    match ctx
        .api
        .poll_range(bucket_id, pk, &range, seen.as_ref(), timeout)
        .await
        .map_err(|e| ctx.fail(e))?
    {
        None => Ok(StatusCode::NOT_MODIFIED.into_response()),
        Some((items, marker)) => {
            #[derive(Serialize)]
            #[serde(rename_all = "camelCase")]
            struct Out {
                items: Vec<ItemJson>,
                seen_marker: String,
            }
            Ok(json(
                StatusCode::OK,
                &Out {
                    items: items.iter().map(item_json).collect(),
                    seen_marker: marker.encode(),
                },
            ))
        }
    }
}
