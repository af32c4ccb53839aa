//! The one error type of the API: a status and the JSON body `{"error", "detail"}`.

use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderValue};
use http::StatusCode;
use serde::Serialize;

/// An error answer: a status and the JSON body `{"error": …, "detail": …}`.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) error: &'static str,
    pub(crate) detail: String,
    /// Extra fields (e.g. the stored digest on a 409).
    pub(crate) sha256: Option<String>,
    /// A host's last seq (a report's 409: the agent goes on above it).
    pub(crate) last_seq: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            detail: detail.into(),
            sha256: None,
            last_seq: None,
        }
    }

    pub(crate) fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the service log",
        )
    }

    /// A store failure: `503` (with `Retry-After`) while the store cannot be reached,
    /// else a `500`.
    pub(crate) fn store(error: crate::store::StoreError) -> Self {
        if error.is_unavailable() {
            tracing::warn!(error = %error, "store unreachable: answering 503");
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the service's database cannot be reached now; retry later",
            );
        }
        Self::internal(error)
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seq: Option<u64>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody {
            error: self.error,
            detail: &self.detail,
            sha256: self.sha256.as_deref(),
            last_seq: self.last_seq,
        })
        .unwrap_or_default();
        let mut response = (self.status, json_body(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::TOO_MANY_REQUESTS
        {
            // A database outage lasts longer than a busy moment: clients come back later.
            let after = if self.error == "store_unavailable" {
                "5"
            } else {
                "1"
            };
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(after));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"metadata-service\""),
            );
        }
        response
    }
}

pub(crate) fn json_body(bytes: Vec<u8>) -> ([(header::HeaderName, HeaderValue); 1], Vec<u8>) {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        ApiError::store(error)
    }
}
