//! `POST /reports` and a host's stored reports (REFERENCE §7). The decisions are
//! `crate::fleet::admit`'s; this maps them to HTTP.

use super::error::json_body;
use super::{blocking, host_id, read_body, ApiError, AppState};
use crate::fleet::{Admitted, Refusal};
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::header::{HeaderMap, HeaderValue};
use http::StatusCode;
use serde::Deserialize;
use std::sync::Arc;

pub(super) const SIGNATURE_HEADER: &str = "x-bulletproof-signature";
pub(super) const HOST_KEY_HEADER: &str = "x-bulletproof-host-key";

fn refusal(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Invalid(detail) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_report", detail)
        }
        Refusal::BadSignature(detail) => {
            ApiError::new(StatusCode::FORBIDDEN, "bad_signature", detail)
        }
        Refusal::KeyMismatch => ApiError::new(
            StatusCode::FORBIDDEN,
            "key_mismatch",
            "signed by another key than the one pinned for this host; an admin re-opens \
             enrollment with DELETE /hosts/{host_id}/key",
        ),
        Refusal::NoHostKey => ApiError::new(
            StatusCode::FORBIDDEN,
            "no_host_key",
            "this host is not enrolled: its first report carries X-Bulletproof-Host-Key",
        ),
        Refusal::Replay { last_seq } => ApiError {
            last_seq: Some(last_seq),
            ..ApiError::new(
                StatusCode::CONFLICT,
                "replay",
                format!(
                    "seq is not above this host's last, {last_seq}, and the bytes differ \
                     from the stored report"
                ),
            )
        },
        Refusal::UnknownImage(image_id) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_image",
            format!("no baseline is stored for image id {image_id:?}"),
        ),
        Refusal::RateLimited => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "this host has a report in flight or sent too many; retry shortly",
        ),
        Refusal::Store(error) => ApiError::store(error),
        Refusal::Conflict(_) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "this host's reports are arriving through several replicas at once; retry shortly",
        ),
    }
}

pub(super) async fn post_report(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = state.fleet.config.max_report_bytes;
    // Bodies being received share the upload memory budget (503 when it is spent).
    let body = match read_body(&headers, body, limit, Some(&state.upload_budget)).await {
        Ok((body, _)) => body,
        Err(error) => {
            if error.status == StatusCode::PAYLOAD_TOO_LARGE {
                state.metrics.report("too_large");
            }
            return Err(error);
        }
    };
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let (signature, host_key) = (
        text(SIGNATURE_HEADER).map(str::to_owned),
        text(HOST_KEY_HEADER).map(str::to_owned),
    );
    let outcome = super::detached(state.clone(), move |state| async move {
        let admit = || {
            state.fleet.admit(
                body.clone(),
                signature.as_deref(),
                host_key.as_deref(),
                |image_id| state.meta(image_id).is_some(),
            )
        };
        match admit().await {
            // Stored through another replica in the last second: looked up, then
            // decided again.
            Err(Refusal::UnknownImage(image_id)) if state.find_meta(&image_id).await?.is_some() => {
                Ok(admit().await)
            }
            outcome => Ok::<_, ApiError>(outcome),
        }
    })
    .await??;
    match outcome {
        Ok(Admitted::Stored {
            host_id,
            seq,
            spool_dropped,
            missing,
        }) => {
            state.metrics.report("stored");
            state.metrics.report_losses(spool_dropped, missing);
            let body = serde_json::json!({"host_id": host_id, "seq": seq, "status": "stored"});
            Ok((
                StatusCode::CREATED,
                json_body(body.to_string().into_bytes()),
            )
                .into_response())
        }
        Ok(Admitted::Duplicate { host_id, seq }) => {
            state.metrics.report("duplicate");
            let body = serde_json::json!({"host_id": host_id, "seq": seq, "status": "duplicate"});
            Ok((StatusCode::OK, json_body(body.to_string().into_bytes())).into_response())
        }
        Err(error) => {
            state.metrics.report(error.code());
            if matches!(error, Refusal::BadSignature(_) | Refusal::KeyMismatch) {
                tracing::warn!(reason = error.code(), "report refused");
            }
            Err(refusal(error))
        }
    }
}

#[derive(Deserialize)]
pub(super) struct ReportsQuery {
    limit: Option<usize>,
    before: Option<u64>,
}

/// `GET /hosts/{host_id}/reports`: the newest first.
pub(super) async fn list_reports(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ReportsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let host_id = host_id(path)?;
    let Query(query) = query.map_err(super::bad_query)?;
    let body = report_history(&state, host_id, query.before, query.limit).await?;
    Ok(json_body(body.to_string().into_bytes()).into_response())
}

/// `GET /hosts/{host_id}/reports` (and the pages' report history): newest first,
/// `limit` at a time, below `before`.
pub(crate) async fn report_history(
    state: &AppState,
    host_id: String,
    before: Option<u64>,
    limit: Option<usize>,
) -> Result<serde_json::Value, ApiError> {
    state.known_host(&host_id)?;
    let limit = limit.unwrap_or(100).clamp(1, 1000);
    let store = state.fleet.store().clone();
    let rows = blocking(move || store.reports(&host_id, before, limit))
        .await?
        .map_err(ApiError::store)?;
    let reports: Vec<serde_json::Value> = rows
        .iter()
        .map(|(seq, stored)| {
            let report: serde_json::Value =
                serde_json::from_slice(&stored.bytes).unwrap_or_default();
            serde_json::json!({
                "seq": seq,
                "finished": report.get("finished"),
                "mode": report.get("mode"),
                "summary": report.get("summary"),
                "error": report.get("error"),
            })
        })
        .collect();
    let next = (rows.len() == limit)
        .then(|| rows.last().map(|(seq, _)| *seq))
        .flatten();
    Ok(serde_json::json!({ "reports": reports, "next": next }))
}

/// `GET /hosts/{host_id}/reports/{seq}`: the exact signed bytes, the signature in
/// `X-Bulletproof-Signature` (base64 of the `.minisig` text).
pub(super) async fn get_report(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, u64)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((host_id, seq)) = path.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            rejection.body_text(),
        )
    })?;
    integrity_common::report::validate_host_id(&host_id)
        .map_err(|why| ApiError::new(StatusCode::BAD_REQUEST, "invalid_host_id", why))?;
    let store = state.fleet.store().clone();
    let stored = blocking(move || store.report(&host_id, seq))
        .await?
        .map_err(ApiError::store)?
        .ok_or_else(|| {
            ApiError::not_found("no such report (unknown host, or removed by retention)")
        })?;
    let mut response = json_body(stored.bytes.to_vec()).into_response();
    if let Ok(value) = HeaderValue::from_str(&integrity_trust::to_header(&stored.signature)) {
        response.headers_mut().insert(SIGNATURE_HEADER, value);
    }
    Ok(response)
}
