//! The HTTP API (REFERENCE §2, §7): [`app`] builds the router, its layers and the
//! per-request middleware (timeout, metrics, request log); bearer auth is a layer on
//! the routes that need a scope ([`require`]). Handlers by resource: `baselines.rs`,
//! `signatures.rs`, `reports.rs`, `hosts.rs`, `fleet.rs` (fleet, drift, audit),
//! `accepts.rs`, `ops.rs` (`/healthz`, `/metrics`); `error.rs` is the one error type,
//! `cache.rs` the body cache.

pub(crate) mod accepts;
mod baselines;
mod cache;
mod error;
mod fleet;
pub(crate) mod hosts;
mod ops;
pub(crate) mod reports;
mod signatures;
#[cfg(test)]
pub(crate) mod tests;

use baselines::{get_baseline, list_baselines, post_baseline};
use cache::BodyCache;
pub use error::ApiError;
use ops::{healthz, metrics};
use signatures::{get_signature, put_signature};

use crate::audit::Audit;
use crate::auth::{AuthError, Caller, Scope, Tokens};
use crate::fleet::{Fleet, FleetConfig};
use crate::ingest::BaselineMeta;
use crate::metrics::Metrics;
use crate::store::Store;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::handler::Handler;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Limits and knobs of the HTTP layer.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted `POST /baselines` body.
    pub max_body_bytes: u64,
    /// Time a whole request (body included) may take before it is answered `408`.
    pub request_timeout: Duration,
    /// Uploads validated and compressed at once; others wait (bounds CPU and memory).
    /// The slot is taken after the body has arrived, so slow senders cannot hold it.
    pub concurrent_uploads: usize,
    /// Bytes of request bodies held in memory at once, over all uploads (taken as the
    /// bytes arrive); at least `max_body_bytes`.
    pub upload_memory_bytes: u64,
    /// Bytes of baseline bodies kept in memory for GETs.
    pub cache_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // A 1,000,000-entry baseline is about 200 MB; leave room for long paths.
            max_body_bytes: 512 * 1024 * 1024,
            request_timeout: Duration::from_secs(120),
            concurrent_uploads: 2,
            upload_memory_bytes: 1024 * 1024 * 1024,
            cache_bytes: 128 * 1024 * 1024,
        }
    }
}

/// Shared state of every request.
pub struct AppState {
    store: Arc<dyn Store>,
    /// Metadata of every stored baseline, loaded at start-up: listings, `404`s and
    /// `304`s never touch the store.
    metas: RwLock<BTreeMap<String, Arc<BaselineMeta>>>,
    /// Stored bodies (immutable, so a cache entry never goes stale).
    cache: BodyCache,
    tokens: Tokens,
    /// Collector keys: when any, every stored baseline carries a signature by one.
    collector_keys: Vec<integrity_trust::PublicKey>,
    limits: Limits,
    uploads: Semaphore,
    /// Memory for bodies being received, in `BUDGET_UNIT`s (see `read_body`).
    upload_budget: Semaphore,
    pub metrics: Metrics,
    /// Hosts, reports, drift groups, accepts (REFERENCE §7).
    pub fleet: Fleet,
    /// The pages' login sessions.
    sessions: crate::ui::session::Sessions,
    /// Why the store could not be reached at its last check (`None`: it could).
    store_health: Mutex<Option<String>>,
}

impl AppState {
    /// Builds the state, reading every stored baseline's metadata.
    pub fn new(
        store: Arc<dyn Store>,
        tokens: Tokens,
        limits: Limits,
        collector_keys: Vec<integrity_trust::PublicKey>,
        fleet: FleetConfig,
        audit: Option<Arc<Audit>>,
    ) -> Result<Arc<Self>, crate::store::StoreError> {
        let fleet = Fleet::load(store.clone(), audit, fleet)?;
        let metas: BTreeMap<_, _> = store
            .list()?
            .into_iter()
            .map(|meta| (meta.image_id.clone(), Arc::new(meta)))
            .collect();
        let metrics = Metrics::new();
        metrics.baselines.set(metas.len() as i64);
        let cache = BodyCache::new(limits.cache_bytes);
        Ok(Arc::new(AppState {
            uploads: Semaphore::new(limits.concurrent_uploads.max(1)),
            upload_budget: Semaphore::new(budget_units(
                limits.upload_memory_bytes.max(limits.max_body_bytes),
            ) as usize),
            store,
            metas: RwLock::new(metas),
            cache,
            tokens,
            collector_keys,
            limits,
            metrics,
            fleet,
            sessions: Default::default(),
            store_health: Mutex::new(None),
        }))
    }

    pub(crate) fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// The pages' sessions (`set_secure` when serving TLS).
    pub fn sessions(&self) -> &crate::ui::session::Sessions {
        &self.sessions
    }

    /// Every stored baseline's metadata and whether a signature is stored for it.
    pub(crate) async fn baselines_signed(self: &Arc<Self>) -> Vec<(Arc<BaselineMeta>, bool)> {
        let metas: Vec<Arc<BaselineMeta>> = self
            .metas
            .read()
            .expect("metas")
            .values()
            .cloned()
            .collect();
        let store = self.store.clone();
        blocking(move || {
            metas
                .into_iter()
                .map(|meta| {
                    let signed = matches!(store.signature(&meta.image_id), Ok(Some(_)));
                    (meta, signed)
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    /// Checks that the store can be reached (blocking) and keeps the answer for
    /// `/healthz`; returns whether it changed.
    pub fn check_store(&self) -> bool {
        let now = self.store.health().err().map(|error| error.to_string());
        let mut health = self.store_health.lock().unwrap_or_else(|p| p.into_inner());
        let changed = *health != now;
        *health = now;
        changed
    }

    /// Why the store could not be reached at its last check.
    pub fn store_unreachable(&self) -> Option<String> {
        self.store_health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn meta(&self, image_id: &str) -> Option<Arc<BaselineMeta>> {
        self.metas.read().expect("metas").get(image_id).cloned()
    }

    /// A baseline's metadata; on a store shared with other replicas, one that is not
    /// in memory yet (stored through another replica in the last second) is looked
    /// up in the store, so every replica answers alike at once.
    pub(crate) async fn find_meta(
        self: &Arc<Self>,
        image_id: &str,
    ) -> Result<Option<Arc<BaselineMeta>>, ApiError> {
        if let Some(meta) = self.meta(image_id) {
            return Ok(Some(meta));
        }
        if self.fleet.follow_from.is_none()
            || integrity_common::validate_image_id(image_id).is_err()
        {
            return Ok(None);
        }
        let store = self.store.clone();
        let id = image_id.to_owned();
        let found = blocking(move || store.meta(&id)).await??;
        Ok(found.map(|meta| {
            let meta = Arc::new(meta);
            self.learn(meta.clone());
            meta
        }))
    }

    /// Baselines stored through other replicas (see `fleet::follow`).
    pub fn learn_baselines(&self, metas: Vec<BaselineMeta>) {
        for meta in metas {
            self.learn(Arc::new(meta));
        }
    }

    fn learn(&self, meta: Arc<BaselineMeta>) {
        let mut metas = self.metas.write().expect("metas");
        if !metas.contains_key(&meta.image_id) {
            metas.insert(meta.image_id.clone(), meta);
            self.metrics.baselines.set(metas.len() as i64);
        }
    }

    /// Flushes the store (at shutdown).
    pub fn flush_store(&self) -> Result<(), crate::store::StoreError> {
        self.store.flush()
    }

    pub fn baseline_count(&self) -> usize {
        self.metas.read().expect("metas").len()
    }

    /// The last seq of a known host; `404` otherwise.
    fn known_host(&self, host_id: &str) -> Result<u64, ApiError> {
        self.fleet
            .state()
            .hosts
            .get(host_id)
            .map(|host| host.record.last_seq)
            .ok_or_else(|| ApiError::not_found("no such host"))
    }
}

/// The bearer-auth layer of the routes that need `scope` (or `admin`): the caller is
/// put in the request's extensions for the handler.
async fn require(
    State((state, scope)): State<(Arc<AppState>, Scope)>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = auth(&state, request.headers(), scope)?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

fn host_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_host_id",
            rejection.body_text(),
        )
    })?;
    integrity_common::report::validate_host_id(&id)
        .map_err(|why| ApiError::new(StatusCode::BAD_REQUEST, "invalid_host_id", why))?;
    Ok(id)
}

fn bad_query(rejection: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        rejection.body_text(),
    )
}

/// The caller of a request that needs a token of scope `needed` (or `admin`).
fn auth(state: &AppState, headers: &HeaderMap, needed: Scope) -> Result<Caller, ApiError> {
    state
        .tokens
        .check(headers, needed)
        .map_err(|error| match error {
            AuthError::Missing => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this request needs an `Authorization: Bearer <token>` header",
            ),
            AuthError::Invalid => {
                tracing::warn!("request refused: unknown bearer token");
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the bearer token is not one the service accepts",
                )
            }
            AuthError::Scope => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this token's scope does not allow this request (needs {needed:?})"),
            ),
        })
}

fn image_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_image_id",
            rejection.body_text(),
        )
    })?;
    integrity_common::validate_image_id(&id)
        .map_err(|why| ApiError::new(StatusCode::BAD_REQUEST, "invalid_image_id", why))?;
    Ok(id)
}

/// Unit of the upload memory budget (a tokio semaphore counts `u32` permits).
const BUDGET_UNIT: u64 = 1024;

/// Permits of the upload budget for `bytes` bytes.
fn budget_units(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(BUDGET_UNIT)).unwrap_or(u32::MAX)
}

/// Reads a request body of at most `limit` bytes: `413` beyond, refused from
/// `Content-Length` before a byte of it is read when the client announces it.
///
/// With a `budget`, memory for the body is taken from it as the bytes arrive (not up
/// front), so a slow client holds only what it has sent, and all bodies being read at
/// once never hold more than the budget; the permit is returned with the body and
/// released when the caller drops it. An exhausted budget answers `503` with
/// `Retry-After` at once (waiting while holding part of it could deadlock two uploads).
async fn read_body<'a>(
    headers: &HeaderMap,
    mut body: Body,
    limit: u64,
    budget: Option<&'a Semaphore>,
) -> Result<(Bytes, Option<tokio::sync::SemaphorePermit<'a>>), ApiError> {
    let too_large = |size: Option<u64>| {
        let detail = match size {
            Some(size) => format!("body is {size} bytes; this service accepts at most {limit}"),
            None => format!("body is larger than the {limit} bytes this service accepts"),
        };
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", detail)
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(size) = announced.filter(|size| *size > limit) {
        return Err(too_large(Some(size)));
    }
    let mut held: Option<tokio::sync::SemaphorePermit<'a>> = None;
    // Room for what the client announced, up to 16 MiB; beyond, it grows as bytes come.
    let mut collected =
        bytes::BytesMut::with_capacity(announced.map_or(0, |size| size.min(16 << 20)) as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("reading the request body: {error}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let total = collected.len() as u64 + data.len() as u64;
        if total > limit {
            return Err(too_large(None));
        }
        if let Some(budget) = budget {
            let have = held.as_ref().map_or(0, |permit| permit.num_permits()) as u32;
            let need = budget_units(total).saturating_sub(have);
            if need > 0 {
                // Never wait while holding part of the budget: two uploads that each
                // hold some and wait for the rest would wait for each other. A full
                // budget is a 503 (the client retries), not a queue.
                let more = budget.try_acquire_many(need).map_err(|_| {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "busy",
                        "the memory for uploads being received is in use; retry shortly",
                    )
                })?;
                match &mut held {
                    Some(permit) => permit.merge(more),
                    None => held = Some(more),
                }
            }
        }
        collected.extend_from_slice(&data);
    }
    Ok((collected.freeze(), held))
}

/// Runs `work` as a task of its own and waits for it: a request that is cancelled (its
/// client gone, its deadline passed) stops waiting, but the work — a commit and the
/// change to the state in memory that follows it — runs to its end, so the two never
/// disagree.
async fn detached<T, F, Fut>(state: Arc<AppState>, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(Arc<AppState>) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    tokio::spawn(work(state)).await.map_err(ApiError::internal)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)
}

/// Under `/ui/` a refusal is a page (with the pages' headers), elsewhere JSON.
fn refused(request: &Request, error: ApiError) -> Response {
    if request.uri().path().starts_with("/ui") {
        crate::ui::layout::problem(error.status, None, &error.detail)
    } else {
        error.into_response()
    }
}

async fn not_found(request: Request) -> Response {
    let error = ApiError::not_found(format!("no route for {}", request.uri().path()));
    refused(&request, error)
}

async fn method_not_allowed(request: Request) -> Response {
    let error = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    );
    refused(&request, error)
}

/// Timeout, metrics and the request log around every request. Only the method, the
/// route template, the status and the time are recorded: never headers (tokens) and
/// never bodies.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = route_label(request.extensions().get::<MatchedPath>());
    let method = request.method().clone();
    let started = Instant::now();
    // Reads answer from memory or one bounded store read: no timer per GET (the
    // connection's exchange deadline still bounds writing the answer). Requests with
    // a body get the deadline here, so a trickled body is answered 408.
    let reads = matches!(method, Method::GET | Method::HEAD);
    let response = match if reads {
        Ok(next.run(request).await)
    } else {
        tokio::time::timeout(state.limits.request_timeout, next.run(request)).await
    } {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the request took longer than {} s",
                state.limits.request_timeout.as_secs_f64()
            ),
        )
        .into_response(),
    };
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state
        .metrics
        .observe(route, method.as_str(), status, elapsed.as_secs_f64());
    tracing::debug!(%method, %route, status, micros = elapsed.as_micros() as u64, "request");
    response
}

/// Every route template (the metrics' `route` label is one of these or `unmatched`).
const ROUTES: [&str; 16] = [
    "/baselines",
    "/baselines/{image_id}",
    "/baselines/{image_id}/signature",
    "/healthz",
    "/metrics",
    "/reports",
    "/fleet",
    "/drift",
    "/hosts",
    "/hosts/{host_id}",
    "/hosts/{host_id}/reports",
    "/hosts/{host_id}/reports/{seq}",
    "/hosts/{host_id}/key",
    "/accepts",
    "/accepts/{id}",
    "/audit",
];

fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    matched
        .and_then(|path| {
            ROUTES
                .iter()
                .chain(crate::ui::ROUTES.iter())
                .find(|route| **route == path.as_str())
        })
        .copied()
        .unwrap_or("unmatched")
}

/// The service: every route, the auth layer on those that need a scope, the
/// middleware around all of them.
pub fn app(state: Arc<AppState>) -> Router {
    let scope = |scope: Scope| middleware::from_fn_with_state((state.clone(), scope), require);
    Router::new()
        .route(ROUTES[0], get(list_baselines).post(post_baseline))
        .route(ROUTES[1], get(get_baseline))
        .route(ROUTES[2], put(put_signature).get(get_signature))
        .route(ROUTES[3], get(healthz))
        .route(ROUTES[4], get(metrics))
        .route(
            ROUTES[5],
            post(reports::post_report.layer(scope(Scope::Report))),
        )
        .route(ROUTES[6], get(fleet::get_fleet.layer(scope(Scope::Read))))
        .route(ROUTES[7], get(fleet::get_drift.layer(scope(Scope::Read))))
        .route(ROUTES[8], get(hosts::list_hosts.layer(scope(Scope::Read))))
        .route(ROUTES[9], get(hosts::get_host.layer(scope(Scope::Read))))
        .route(
            ROUTES[10],
            get(reports::list_reports.layer(scope(Scope::Read))),
        )
        .route(
            ROUTES[11],
            get(reports::get_report.layer(scope(Scope::Read))),
        )
        .route(
            ROUTES[12],
            delete(hosts::delete_key.layer(scope(Scope::Admin))),
        )
        .route(
            ROUTES[13],
            get(accepts::list_accepts.layer(scope(Scope::Admin)))
                .post(accepts::post_accept.layer(scope(Scope::Admin))),
        )
        .route(
            ROUTES[14],
            delete(accepts::delete_accept.layer(scope(Scope::Admin))),
        )
        .route(ROUTES[15], get(fleet::get_audit.layer(scope(Scope::Admin))))
        .merge(crate::ui::routes(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}
