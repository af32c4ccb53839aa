//! `PUT` and `GET /baselines/{image_id}/signature`, and who may store one.

use super::error::json_body;
use super::{auth, blocking, image_id, read_body, ApiError, AppState};
use crate::auth::Scope;
use crate::ingest::{self, Encoding, Invalid};
use crate::store::SignaturePut;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;
use std::sync::Arc;

impl AppState {
    /// With collector keys configured: `signature` must verify over `bytes` with one of
    /// them and its trusted comment must name `image_id`. Without keys: accepted here
    /// (a `PUT` then needs the poster's or an admin token, see `put_signature`).
    pub(super) fn check_signature(
        &self,
        bytes: &[u8],
        signature: Option<&str>,
        image_id: &str,
    ) -> Result<(), ApiError> {
        if self.collector_keys.is_empty() {
            return Ok(());
        }
        let refuse = |why: String| {
            tracing::warn!(image_id, reason = %why, "upload refused: untrusted signature");
            ApiError::new(StatusCode::FORBIDDEN, "untrusted_signature", why)
        };
        let signature = signature.ok_or_else(|| {
            refuse("this service stores only baselines signed by a collector key".into())
        })?;
        let mut last = String::new();
        for key in &self.collector_keys {
            match integrity_trust::verify(key, bytes, signature, false) {
                Ok(trusted) if integrity_trust::image_id_of(&trusted) == Some(image_id) => {
                    return Ok(())
                }
                Ok(trusted) => {
                    return Err(refuse(format!(
                    "the signature's trusted comment {trusted:?} does not name image id {image_id}"
                )))
                }
                Err(error) => last = error.to_string(),
            }
        }
        Err(refuse(format!("not signed by a collector key: {last}")))
    }
}

pub(super) async fn put_signature(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = auth(&state, &headers, Scope::Baseline)?;
    let id = image_id(path)?;
    let (bytes, _) = read_body(&headers, body, ingest::MAX_SIGNATURE_BYTES as u64, None).await?;
    ingest::validate_signature(&bytes)
        .map_err(|Invalid(why)| ApiError::new(StatusCode::BAD_REQUEST, "invalid_signature", why))?;
    let meta = state
        .find_meta(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no baseline for image id {id}")))?;
    let admin = caller.scope == Scope::Admin;
    if state.collector_keys.is_empty() {
        // Nothing to verify against: only the poster (or an admin) may vouch for the
        // bytes, or any holder of a token could squat a bogus signature on them.
        if !admin && meta.posted_by.as_deref() != Some(caller.id.as_str()) {
            tracing::warn!(image_id = %id, caller = %caller.id, "signature refused: not the poster");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "not_poster",
                format!(
                    "without --collector-key only the token that posted image id {id} (or an \
                     admin token) may store its signature"
                ),
            ));
        }
    } else {
        let worker = state.clone();
        let id2 = id.clone();
        let stored = blocking(move || worker.store.body(&id2, Encoding::Identity))
            .await?
            .map_err(ApiError::store)?
            .ok_or_else(|| ApiError::not_found(format!("no baseline for image id {id}")))?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        state.check_signature(&stored, Some(&text), &id)?;
    }
    let worker = state.clone();
    let id2 = id.clone();
    let outcome = blocking(move || {
        if admin {
            worker.store.replace_signature(&id2, &bytes)
        } else {
            worker.store.put_signature(&id2, &bytes)
        }
    })
    .await?
    .map_err(ApiError::store)?;
    let status = match outcome {
        SignaturePut::Created if admin => {
            tracing::warn!(image_id = %id, caller = %caller.id, "signature stored by an admin token (replaces any earlier one)");
            StatusCode::CREATED
        }
        SignaturePut::Created => {
            tracing::info!(image_id = %id, caller = %caller.id, "signature stored");
            StatusCode::CREATED
        }
        SignaturePut::Unchanged => StatusCode::OK,
        SignaturePut::Conflict => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "exists",
                format!("a different signature is already stored for image id {id}"),
            ))
        }
        SignaturePut::NoBaseline => {
            return Err(ApiError::not_found(format!(
                "no baseline for image id {id}; store the baseline first"
            )))
        }
    };
    let mut response = (status, json_body(br#"{"status":"stored"}"#.to_vec())).into_response();
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/baselines/{id}/signature")).map_err(ApiError::internal)?,
    );
    Ok(response)
}

pub(super) async fn get_signature(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = image_id(path)?;
    if state.find_meta(&id).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "no baseline for image id {id}"
        )));
    }
    let worker = state.clone();
    let id2 = id.clone();
    let signature = blocking(move || worker.store.signature(&id2))
        .await?
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::not_found(format!("no signature stored for image id {id}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        signature,
    )
        .into_response())
}
