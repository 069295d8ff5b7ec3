//! What the K2V handlers answer with: failures as K2V clients expect them (a status and a JSON
//! body, `Retry-After` on a 503), the per-request context that builds them, and JSON replies.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Serialize;
use shoal_net::Transport;

use crate::causality::DvvsValue;
use crate::model::K2vItem;
use crate::service::{Api, ApiError};

pub(super) const CAUSALITY_HEADER: &str = "x-garage-causality-token";
pub(super) const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// An error as K2V clients expect it: a status and a JSON body.
pub(super) struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
    pub(super) path: String,
    region: String,
}

impl Failure {
    /// The response, logged: every 5xx at warn with its reason and request id (the client gets
    /// the same id), others at debug; a 503 tells the client when to retry.
    pub(super) fn into_response_logged(self, request_id: &str, operation: &str) -> Response {
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

pub(super) fn status_of(e: &ApiError) -> (StatusCode, &'static str) {
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
pub(super) const RETRY_AFTER_SECS: &str = "1";

pub(super) struct Ctx<'a, T: Transport> {
    pub(super) api: &'a Api<T>,
    pub(super) path: String,
}

impl<T: Transport> Ctx<'_, T> {
    pub(super) fn fail(&self, e: ApiError) -> Failure {
        let (status, code) = status_of(&e);
        Failure {
            status,
            code,
            message: e.to_string(),
            path: self.path.clone(),
            region: self.api.config().region.clone(),
        }
    }

    pub(super) fn custom(
        &self,
        status: StatusCode,
        code: &'static str,
        message: String,
    ) -> Failure {
        Failure {
            status,
            code,
            message,
            path: self.path.clone(),
            region: self.api.config().region.clone(),
        }
    }
}

pub(super) fn json<V: Serialize>(status: StatusCode, v: &V) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(v).expect("responses encode"),
    )
        .into_response()
}

pub(super) fn values_json(item: &K2vItem) -> Vec<Option<String>> {
    item.dvvs
        .values()
        .into_iter()
        .map(|v| match v {
            DvvsValue::Value(b) => Some(B64.encode(b)),
            DvvsValue::Deleted => None,
        })
        .collect()
}
