//! The admin HTTP endpoint: `/metrics` for Prometheus, `/health`, and the operator's calls
//! (`POST /v1/call/<endpoint>`, MessagePack bodies, `Authorization: Bearer <admin token>`),
//! which `shoal status`, `shoal layout …`, `shoal sync status`, `shoal repair`, `shoal key …`
//! and `shoal bucket …` use.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use shoal_net::Transport;

use crate::service::Api;

struct AdminState<T: Transport> {
    api: Api<T>,
    registry: Arc<Registry>,
    token: String,
}

/// Serves the admin endpoint on `bind`; `token` protects the operator's calls.
pub async fn serve<T: Transport>(
    api: Api<T>,
    registry: Arc<Registry>,
    token: String,
    bind: &str,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AdminState {
        api,
        registry,
        token,
    });
    let app = axum::Router::new()
        .route("/metrics", get(metrics::<T>))
        .route("/health", get(|| async { "ok\n" }))
        .route("/v1/call/{endpoint}", post(call::<T>))
        .with_state(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "admin endpoint stopped");
        }
    });
    Ok((addr, task))
}

async fn metrics<T: Transport>(State(s): State<Arc<AdminState<T>>>) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &s.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Compares in time independent of where the first difference is.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn call<T: Transport>(
    State(s): State<Arc<AdminState<T>>>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if s.token.is_empty() || !same_token(presented.trim().as_bytes(), s.token.as_bytes()) {
        return (StatusCode::FORBIDDEN, "missing or wrong admin token\n").into_response();
    }
    if !crate::endpoints::operator_may_call(&endpoint) {
        return (
            StatusCode::NOT_FOUND,
            format!("no operator endpoint {endpoint}\n"),
        )
            .into_response();
    }
    let node = s.api.node();
    match node
        .call_endpoint(node.id(), &endpoint, body.to_vec())
        .await
    {
        Ok(reply) => ([(header::CONTENT_TYPE, "application/msgpack")], reply).into_response(),
        Err(e) => (status_of(e.code()), format!("{e}\n")).into_response(),
    }
}

/// The HTTP status of a failed operator call, from its code: a caller (a script, the CLI)
/// can tell "retry later" (503) from "refused" (403) and "not found" (404).
fn status_of(code: shoal_net::ErrorCode) -> StatusCode {
    use shoal_net::ErrorCode;
    match code {
        ErrorCode::Malformed | ErrorCode::Unspecified => StatusCode::BAD_REQUEST,
        ErrorCode::Refused => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::RetryLater => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
