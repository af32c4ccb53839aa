//! Accepted drift: `POST /accepts`, `GET /accepts`, `DELETE /accepts/{id}` (REFERENCE
//! §7). An accept matches exactly the current values it names; admin only, audited.

use super::error::json_body;
use super::{bad_query, read_body, ApiError, AppState};
use crate::audit::AuditRecord;
use crate::auth::Caller;
use crate::store::{Accept, FleetWrite};
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http::{HeaderMap, StatusCode};
use integrity_common::report::{validate_host_id, ANOMALY_KINDS, MAX_TEXT};
use serde::Deserialize;
use std::sync::Arc;

/// What `POST /accepts` (and the pages' accept forms) ask for.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewAccept {
    pub image_id: String,
    #[serde(default)]
    pub host_id: Option<String>,
    pub path: String,
    pub anomaly: String,
    #[serde(default)]
    pub current: serde_json::Value,
    #[serde(default)]
    pub comment: String,
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_accept", detail)
}

/// A new accept id: 16 hex digits from the kernel's random source.
fn new_id() -> Result<String, ApiError> {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(ApiError::internal)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

pub(super) async fn post_accept(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (bytes, _) = read_body(&headers, body, 1 << 20, None).await?;
    let new: NewAccept =
        serde_json::from_slice(&bytes).map_err(|error| invalid(error.to_string()))?;
    let accept = create_accept(state, &caller, new).await?;
    let body = serde_json::to_vec(&accept).unwrap_or_default();
    Ok((StatusCode::CREATED, json_body(body)).into_response())
}

/// Validates, commits (audited) and applies a new accept.
pub(crate) async fn create_accept(
    state: Arc<AppState>,
    caller: &Caller,
    new: NewAccept,
) -> Result<Accept, ApiError> {
    integrity_common::validate_image_id(&new.image_id)
        .map_err(|why| invalid(format!("image_id: {why}")))?;
    if state.find_meta(&new.image_id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_image",
            format!("no baseline is stored for image id {:?}", new.image_id),
        ));
    }
    if let Some(host) = &new.host_id {
        validate_host_id(host).map_err(|why| invalid(format!("host_id: {why}")))?;
    }
    if !ANOMALY_KINDS.contains(&new.anomaly.as_str()) {
        return Err(invalid(format!(
            "anomaly: one of {}",
            ANOMALY_KINDS.join(", ")
        )));
    }
    if new.path.is_empty() || new.path.len() > integrity_common::manifest::MAX_PATH_BYTES {
        return Err(invalid("path: empty or too long"));
    }
    if !(new.current.is_null() || new.current.is_object()) {
        return Err(invalid(
            "current: an object (the finding's current values) or null",
        ));
    }
    if serde_json::to_vec(&new.current).map_or(usize::MAX, |bytes| bytes.len())
        > integrity_common::report::MAX_FINDING_BYTES
    {
        return Err(invalid("current: larger than a finding may be"));
    }
    if new.comment.len() > MAX_TEXT {
        return Err(invalid(format!("comment: longer than {MAX_TEXT} bytes")));
    }
    let accept = Accept {
        id: new_id()?,
        image_id: new.image_id,
        host_id: new.host_id,
        path: new.path,
        anomaly: new.anomaly,
        current: new.current,
        comment: new.comment,
        created: integrity_common::manifest::now_timestamp(),
        created_by: caller.id.clone(),
    };
    let audit = AuditRecord::new(
        "accept_created",
        format!(
            "{} accepted {} of {} on {}",
            caller.id,
            accept.anomaly,
            accept.path,
            accept.host_id.as_deref().unwrap_or("every host")
        ),
        serde_json::to_value(&accept).unwrap_or_default(),
    );
    let applied = accept.clone();
    super::detached(state, move |state| async move {
        state
            .fleet
            .writer
            .commit(vec![FleetWrite::PutAccept(applied.clone())], vec![audit])
            .await?;
        state.fleet.accepted(applied);
        Ok::<(), crate::store::StoreError>(())
    })
    .await?
    .map_err(ApiError::store)?;
    Ok(accept)
}

#[derive(Deserialize)]
pub(super) struct AcceptsQuery {
    image_id: Option<String>,
}

pub(super) async fn list_accepts(
    State(state): State<Arc<AppState>>,
    query: Result<Query<AcceptsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let body = serde_json::json!({ "accepts": accepts(&state, query.image_id.as_deref()) });
    Ok(json_body(body.to_string().into_bytes()).into_response())
}

/// The accepts of one image (every image when `None`).
pub(crate) fn accepts(state: &AppState, image_id: Option<&str>) -> Vec<Accept> {
    state
        .fleet
        .state()
        .accepts
        .list(image_id)
        .into_iter()
        .cloned()
        .collect()
}

pub(super) async fn delete_accept(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            rejection.body_text(),
        )
    })?;
    revoke_accept(state, &caller, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Commits (audited) and applies the removal of an accept.
pub(crate) async fn revoke_accept(
    state: Arc<AppState>,
    caller: &Caller,
    id: String,
) -> Result<(), ApiError> {
    let accept = state
        .fleet
        .state()
        .accepts
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("no such accept"))?;
    let audit = AuditRecord::new(
        "accept_deleted",
        format!(
            "{} revoked accept {id} ({} of {})",
            caller.id, accept.anomaly, accept.path
        ),
        serde_json::json!({ "id": id, "by": caller.id, "image_id": accept.image_id }),
    );
    super::detached(state, move |state| async move {
        state
            .fleet
            .writer
            .commit(vec![FleetWrite::DeleteAccept(id.clone())], vec![audit])
            .await?;
        state.fleet.state().accepts.remove(&id);
        Ok::<(), crate::store::StoreError>(())
    })
    .await?
    .map_err(ApiError::store)
}
