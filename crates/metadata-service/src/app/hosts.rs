//! `GET /hosts`, `GET /hosts/{host_id}` and `DELETE /hosts/{host_id}/key` (REFERENCE §7).

use super::error::json_body;
use super::{bad_query, blocking, host_id, ApiError, AppState};
use crate::audit::AuditRecord;
use crate::auth::Caller;
use crate::fleet::host::Status;
use crate::fleet::{now_secs, views};
use crate::store::{Expect, FleetWrite};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use std::ops::Bound;
use std::sync::Arc;

#[derive(Deserialize, Default)]
pub(crate) struct HostsQuery {
    pub image_id: Option<String>,
    pub status: Option<String>,
    pub limit: Option<usize>,
    pub after: Option<String>,
}

/// Hosts in host id order, filtered, a page at a time (`next` is the cursor).
pub(super) async fn list_hosts(
    State(state): State<Arc<AppState>>,
    query: Result<Query<HostsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let body = hosts_page(&state, &query)?;
    Ok(json_body(body.to_string().into_bytes()).into_response())
}

/// `GET /hosts` (and the pages' list of an image's hosts): `{"hosts", "next"}`.
pub(crate) fn hosts_page(state: &AppState, query: &HostsQuery) -> Result<Value, ApiError> {
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(Status::parse(text).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "status is one of clean, drifted, failing, stale",
            )
        })?),
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let now = now_secs();
    let stale_after = state.fleet.config.stale_after.as_secs();
    let fleet = state.fleet.state();
    let start = match &query.after {
        Some(after) => Bound::Excluded(after.clone()),
        None => Bound::Unbounded,
    };
    let mut hosts = Vec::new();
    let mut more = false;
    for (_, host) in fleet.hosts.range((start, Bound::Unbounded)) {
        if query
            .image_id
            .as_deref()
            .is_some_and(|image| image != host.record.image_id)
        {
            continue;
        }
        if status.is_some_and(|wanted| host.status(now, stale_after, &fleet.accepts) != wanted) {
            continue;
        }
        if hosts.len() == limit {
            more = true;
            break;
        }
        hosts.push(views::host(host, &fleet, now, stale_after));
    }
    let next = if more {
        hosts
            .last()
            .and_then(|host| host["host_id"].as_str().map(str::to_owned))
    } else {
        None
    };
    drop(fleet);
    Ok(serde_json::json!({ "hosts": hosts, "next": next }))
}

/// One host with its latest report (parsed; each finding marked with its accept).
pub(super) async fn get_host(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let body = host_detail(&state, host_id(path)?).await?;
    Ok(json_body(body.to_string().into_bytes()).into_response())
}

/// `GET /hosts/{host_id}` (and the pages' host): the host and its latest report.
pub(crate) async fn host_detail(state: &Arc<AppState>, host_id: String) -> Result<Value, ApiError> {
    let last_seq = state.known_host(&host_id)?;
    let store = state.fleet.store().clone();
    let id = host_id.clone();
    let stored = blocking(move || store.report(&id, last_seq))
        .await?
        .map_err(ApiError::store)?;
    let now = now_secs();
    let stale_after = state.fleet.config.stale_after.as_secs();
    let fleet = state.fleet.state();
    let host = fleet
        .hosts
        .get(&host_id)
        .ok_or_else(|| ApiError::not_found("no such host"))?;
    let mut body = views::host(host, &fleet, now, stale_after);
    body["latest"] = match &stored {
        Some(stored) => views::latest_report(&stored.bytes, host, &fleet),
        None => Value::Null,
    };
    Ok(body)
}

/// Re-opens a host's enrollment: its key is forgotten, the next report's is pinned.
pub(super) async fn delete_key(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let host_id = host_id(path)?;
    let audit = AuditRecord::new(
        "key_deleted",
        format!("{} re-opened the enrollment of host {host_id}", caller.id),
        serde_json::json!({ "host_id": host_id, "by": caller.id }),
    );
    super::detached(state, move |state| async move {
        // Another replica may have taken a report of the host since this one looked:
        // the store then refuses the write, and the host is read again.
        for _ in 0..3 {
            // Claimed like a report: a report of this host in flight is not
            // interleaved with the removal of its key (one of them waits: 429).
            let (record, expect) = {
                let mut fleet = state.fleet.state();
                let host = fleet
                    .hosts
                    .get_mut(&host_id)
                    .ok_or_else(|| ApiError::not_found("no such host"))?;
                if host.in_flight {
                    return Err(ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "busy",
                        "a report of this host is being stored; retry shortly",
                    ));
                }
                host.in_flight = true;
                let expect = Expect::of(Some(&host.record));
                let mut record = host.record.clone();
                record.public_key = None;
                (record, expect)
            };
            let committed = state
                .fleet
                .writer
                .commit(
                    vec![FleetWrite::Host {
                        host: record,
                        expect,
                    }],
                    vec![audit.clone()],
                )
                .await;
            {
                let mut fleet = state.fleet.state();
                if let Some(host) = fleet.hosts.get_mut(&host_id) {
                    host.in_flight = false;
                    if matches!(committed, Ok(true)) {
                        host.key = None;
                        host.record.public_key = None;
                    }
                }
            }
            match committed {
                Ok(true) => return Ok(()),
                Ok(false) => state.fleet.refresh_host(&host_id).await?,
                Err(error) => return Err(ApiError::store(error)),
            }
        }
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            "reports of this host keep arriving through other replicas; retry shortly",
        ))
    })
    .await??;
    Ok(StatusCode::NO_CONTENT.into_response())
}
