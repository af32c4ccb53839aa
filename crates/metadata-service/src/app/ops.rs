//! The operators' routes: `GET /healthz` (and why the store cannot be reached) and
//! `GET /metrics` (OpenMetrics text).

use super::error::json_body;
use super::{blocking, ApiError, AppState};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderValue};
use http::StatusCode;
use std::sync::Arc;

/// `200 {"status":"ok"}`, or `503` with why while the store cannot be reached (the
/// last check of `lib::watch_store`, at most a couple of seconds old).
pub(super) async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    match state.store_unreachable() {
        None => json_body(br#"{"status":"ok"}"#.to_vec()).into_response(),
        Some(reason) => {
            let body = serde_json::json!({ "status": "unavailable", "reason": reason });
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                json_body(body.to_string().into_bytes()),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
    }
}

pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let worker = state.clone();
    if let Ok(Ok(bytes)) = blocking(move || worker.store.size_on_disk()).await {
        state.metrics.store_bytes.set(bytes as i64);
    }
    let counts = state.image_counts();
    state
        .metrics
        .set_hosts(counts.into_iter().flat_map(|(image, counts)| {
            crate::fleet::host::Status::ALL
                .into_iter()
                .map(move |status| {
                    let count = counts.by_status.get(&status).copied().unwrap_or(0);
                    (image.clone(), status.as_str(), count as i64)
                })
        }));
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.encode(),
    )
        .into_response())
}
