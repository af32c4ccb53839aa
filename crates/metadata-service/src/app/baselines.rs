//! `POST /baselines`, `GET /baselines/{image_id}` (negotiation, `304`), `GET /baselines`.

use super::error::json_body;
use super::{auth, blocking, image_id, read_body, ApiError, AppState};
use crate::auth::Scope;
use crate::ingest::{self, BaselineMeta, Encoding, Invalid};
use crate::store::Inserted;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;
use serde::Serialize;
use std::sync::Arc;

pub(super) async fn post_baseline(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = auth(&state, &headers, Scope::Baseline)?;
    let signature = match headers.get("x-bulletproof-signature") {
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| "not text".to_owned())
                .and_then(|value| integrity_trust::from_header(value).map_err(|e| e.to_string()))
                .map_err(|why| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_signature",
                        format!("X-Bulletproof-Signature: {why}"),
                    )
                })?;
            ingest::validate_signature(text.as_bytes()).map_err(|Invalid(why)| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_signature", why)
            })?;
            Some(text)
        }
        None => None,
    };
    // The body first (memory from the shared budget as it arrives), then the slot:
    // a slow sender holds only the memory of what it sent, never a validation slot.
    let (bytes, _memory) = read_body(
        &headers,
        body,
        state.limits.max_body_bytes,
        Some(&state.upload_budget),
    )
    .await?;
    let _slot = state.uploads.acquire().await.map_err(ApiError::internal)?;
    let posted_by = Some(caller.id);
    let worker = state.clone();
    let meta = blocking(move || -> Result<Arc<BaselineMeta>, ApiError> {
        let meta = ingest::validate(&bytes).map_err(|Invalid(why)| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_baseline", why)
        })?;
        let exists = |stored: &BaselineMeta| ApiError {
            sha256: Some(stored.sha256.clone()),
            ..ApiError::new(
                StatusCode::CONFLICT,
                "exists",
                format!(
                    "image id {} is already stored (sha256 {}); baselines are immutable, \
                     give a new build a new image id",
                    stored.image_id, stored.sha256
                ),
            )
        };
        if let Some(stored) = worker.meta(&meta.image_id) {
            return Err(exists(&stored));
        }
        worker.check_signature(&bytes, signature.as_deref(), &meta.image_id)?;
        let mut prepared = ingest::prepare(BaselineMeta { posted_by, ..meta }, bytes);
        prepared.signature = signature.map(String::into_bytes);
        match worker.store.insert(&prepared).map_err(ApiError::store)? {
            Inserted::Created => {
                let meta = Arc::new(prepared.meta);
                let count = {
                    let mut metas = worker.metas.write().expect("metas");
                    metas.insert(meta.image_id.clone(), meta.clone());
                    metas.len()
                };
                worker.metrics.baselines.set(count as i64);
                Ok(meta)
            }
            Inserted::Exists(stored) => Err(exists(&stored)),
        }
    })
    .await??;
    tracing::info!(
        image_id = %meta.image_id,
        entries = meta.entries,
        bytes = meta.size,
        sha256 = %meta.sha256,
        "baseline stored"
    );
    let location = format!("/baselines/{}", meta.image_id);
    let mut response = (
        StatusCode::CREATED,
        json_body(serde_json::to_vec(&meta.public()).map_err(ApiError::internal)?),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(ApiError::internal)?,
    );
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&meta.etag(Encoding::Identity)).map_err(ApiError::internal)?,
    );
    Ok(response)
}

/// Picks the stored form to send: the acceptable coding with the highest `q`, zstd
/// before gzip before identity on a tie (RFC 9110 §12.5.3).
fn negotiate(headers: &HeaderMap, meta: &BaselineMeta) -> Encoding {
    let Some(accept) = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|value| value.to_str().ok())
    else {
        return Encoding::Identity;
    };
    let mut best = (Encoding::Identity, 0.0f32);
    let mut wildcard = None;
    let mut explicit = |encoding: Encoding, q: f32| {
        if meta.has(encoding) && q > 0.0 && q > best.1 {
            best = (encoding, q);
        }
    };
    let mut listed = Vec::new();
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|param| {
                let (name, value) = param.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("q")
                    .then(|| value.trim().parse::<f32>().ok())?
            })
            .next()
            .unwrap_or(1.0);
        match coding.as_str() {
            "zstd" => listed.push((Encoding::Zstd, q)),
            "gzip" | "x-gzip" => listed.push((Encoding::Gzip, q)),
            "*" => wildcard = Some(q),
            _ => {}
        }
    }
    // zstd first, so it wins ties.
    listed.sort_by_key(|(encoding, _)| *encoding != Encoding::Zstd);
    for (encoding, q) in &listed {
        explicit(*encoding, *q);
    }
    if let Some(q) = wildcard {
        for encoding in [Encoding::Zstd, Encoding::Gzip] {
            if !listed.iter().any(|(listed, _)| *listed == encoding) {
                explicit(encoding, q);
            }
        }
    }
    best.0
}

/// `If-None-Match` (weak comparison, RFC 9110 §13.1.2): any tag of any stored form of
/// this baseline, or `*`, matches.
fn not_modified(headers: &HeaderMap, meta: &BaselineMeta) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || meta.matches_etag(tag.strip_prefix("W/").unwrap_or(tag)))
}

pub(super) async fn get_baseline(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    // The request itself rather than a `HeaderMap` extractor, which clones every
    // header on each GET.
    let headers = request.headers();
    let id = image_id(path)?;
    let meta = state
        .find_meta(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no baseline for image id {id}")))?;
    let encoding = negotiate(headers, &meta);
    let etag = meta.etag_header(encoding);
    let mut response = if not_modified(headers, &meta) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let key = (id, encoding);
        let body = match state.cache.get(&key) {
            Some(body) => body,
            None => {
                let worker = state.clone();
                let key2 = key.clone();
                let body = blocking(move || worker.store.body(&key2.0, key2.1))
                    .await?
                    .map_err(ApiError::store)?
                    .ok_or_else(|| {
                        ApiError::internal(format!(
                            "metadata of {} without its {encoding:?} body",
                            key.0
                        ))
                    })?;
                state.cache.insert(key, body.clone());
                body
            }
        };
        let mut response = Response::new(Body::from(body));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(token) = encoding.token() {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(token));
        }
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag);
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

#[derive(Serialize)]
struct Listing<'a> {
    baselines: Vec<crate::ingest::PublicMeta<'a>>,
}

pub(super) async fn list_baselines(
    State(state): State<Arc<AppState>>,
) -> Result<Response, ApiError> {
    let metas: Vec<Arc<BaselineMeta>> = state
        .metas
        .read()
        .expect("metas")
        .values()
        .cloned()
        .collect();
    let body = serde_json::to_vec(&Listing {
        baselines: metas.iter().map(|meta| meta.public()).collect(),
    })
    .map_err(ApiError::internal)?;
    Ok(json_body(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> BaselineMeta {
        BaselineMeta {
            image_id: "a".into(),
            timestamp: "2026-11-23T07:31:43Z".into(),
            entries: 1,
            sha256: "ab".repeat(32),
            size: 100,
            gzip_size: Some(10),
            zstd_size: Some(9),
            stored_at: "2026-11-23T07:31:43Z".into(),
            posted_by: None,
            gzip_sha256: None,
            zstd_sha256: None,
            etags: Default::default(),
        }
    }

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, value.parse().unwrap());
        headers
    }

    #[test]
    fn negotiation() {
        let meta = meta();
        assert_eq!(negotiate(&HeaderMap::new(), &meta), Encoding::Identity);
        assert_eq!(negotiate(&accept("gzip"), &meta), Encoding::Gzip);
        assert_eq!(
            negotiate(&accept("gzip, deflate, br, zstd"), &meta),
            Encoding::Zstd
        );
        assert_eq!(
            negotiate(&accept("zstd;q=0.5, gzip"), &meta),
            Encoding::Gzip
        );
        assert_eq!(
            negotiate(&accept("zstd;q=0, gzip;q=0"), &meta),
            Encoding::Identity
        );
        assert_eq!(negotiate(&accept("*"), &meta), Encoding::Zstd);
        assert_eq!(negotiate(&accept("br"), &meta), Encoding::Identity);
        let mut plain = meta.clone();
        plain.zstd_size = None;
        assert_eq!(negotiate(&accept("zstd, gzip"), &plain), Encoding::Gzip);
    }

    #[test]
    fn if_none_match_weak_comparison() {
        let meta = meta();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            format!("\"other\", W/{}", meta.etag(Encoding::Gzip))
                .parse()
                .unwrap(),
        );
        assert!(not_modified(&headers, &meta));
        headers.insert(header::IF_NONE_MATCH, "\"other\"".parse().unwrap());
        assert!(!not_modified(&headers, &meta));
        headers.insert(header::IF_NONE_MATCH, "*".parse().unwrap());
        assert!(not_modified(&headers, &meta));
    }
}
