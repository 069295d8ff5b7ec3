//! The HTTP surface of the K2V API: request routing, body limits, SigV4 authentication,
//! content negotiation and the spec's JSON shapes and status codes.

use std::borrow::Cow;
use std::net::SocketAddr;

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use shoal_net::Transport;

use crate::causality::DvvsValue;
use crate::service::{Api, ApiError};
use crate::sigv4;

mod operations;
mod query;
mod reply;

use operations::{
    delete_batch, insert_batch, item_response, poll_range, read_batch, read_index, read_item,
};
use query::{header_token, parse_query, parse_token, poll_timeout, required};
use reply::{Ctx, Failure};

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
