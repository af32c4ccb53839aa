//! `GET /fleet`, `GET /drift` and `GET /audit` (REFERENCE §7).

use super::error::json_body;
use super::{bad_query, blocking, ApiError, AppState};
use crate::fleet::{now_secs, views};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;
use std::sync::Arc;

impl AppState {
    /// Every image's host counts (also the `hosts` metric).
    pub(crate) fn image_counts(&self) -> std::collections::BTreeMap<String, views::ImageCounts> {
        let images: Vec<String> = self.metas.read().expect("metas").keys().cloned().collect();
        let fleet = self.fleet.state();
        views::image_counts(
            &fleet,
            &images,
            now_secs(),
            self.fleet.config.stale_after.as_secs(),
        )
    }
}

pub(super) async fn get_fleet(State(state): State<Arc<AppState>>) -> Response {
    let body = views::fleet(&state.image_counts());
    json_body(body.to_string().into_bytes()).into_response()
}

#[derive(Deserialize)]
pub(super) struct DriftQuery {
    image_id: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn get_drift(
    State(state): State<Arc<AppState>>,
    query: Result<Query<DriftQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let limit = query.limit.unwrap_or(1000).clamp(1, 10_000);
    let body = views::drift(&state.fleet.state(), query.image_id.as_deref(), limit);
    Ok(json_body(body.to_string().into_bytes()).into_response())
}

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    limit: Option<usize>,
}

pub(super) async fn get_audit(
    State(state): State<Arc<AppState>>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
    if state.fleet.audit.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_audit",
            "this service keeps no audit log",
        ));
    }
    let worker = state.clone();
    let records = blocking(move || worker.fleet.audit_records(limit))
        .await?
        .map_err(|error| match error.downcast::<crate::store::StoreError>() {
            Ok(error) => ApiError::store(error),
            Err(error) => ApiError::internal(error),
        })?;
    let body = serde_json::json!({ "records": records });
    Ok(json_body(body.to_string().into_bytes()).into_response())
}
