//! The HTTP API (DESIGN §6): routes, handlers, JSON errors, content negotiation and
//! the per-request middleware (timeout, metrics, request log).

use crate::auth::{AuthError, Tokens};
use crate::ingest::{self, BaselineMeta, Encoding, Invalid};
use crate::metrics::Metrics;
use crate::store::{Inserted, SignaturePut, Store};
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;
use http_body_util::BodyExt;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
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
    /// Uploads validated and compressed at once; others wait (bounds memory).
    pub concurrent_uploads: usize,
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
            cache_bytes: 128 * 1024 * 1024,
        }
    }
}

/// Stored bodies kept in memory, least recently used evicted first, bounded by bytes.
///
/// Written here rather than taken from a cache crate: our items are few and large (a
/// baseline is tens of MB), and general caches split their capacity into shards and
/// admit new items into a small probation section, so an item larger than a shard or
/// than that section is never cached at all (measured with quick_cache: a 26 MB body
/// was re-read from disk on every GET, 715 MB RSS under load).
struct BodyCache {
    capacity: u64,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    entries: HashMap<(String, Encoding), (Bytes, u64)>,
    used: u64,
    clock: u64,
}

impl BodyCache {
    fn new(capacity: u64) -> Self {
        BodyCache {
            capacity,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    fn get(&self, key: &(String, Encoding)) -> Option<Bytes> {
        let mut inner = self.inner.lock().expect("body cache");
        inner.clock += 1;
        let clock = inner.clock;
        let (body, used) = inner.entries.get_mut(key)?;
        *used = clock;
        Some(body.clone())
    }

    fn insert(&self, key: (String, Encoding), body: Bytes) {
        let size = body.len() as u64;
        if size > self.capacity {
            return;
        }
        let mut inner = self.inner.lock().expect("body cache");
        inner.clock += 1;
        let clock = inner.clock;
        if let Some((old, _)) = inner.entries.insert(key, (body, clock)) {
            inner.used -= old.len() as u64;
        }
        inner.used += size;
        while inner.used > self.capacity {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            if let Some((evicted, _)) = inner.entries.remove(&oldest) {
                inner.used -= evicted.len() as u64;
            }
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
    pub metrics: Metrics,
}

impl AppState {
    /// Builds the state, reading every stored baseline's metadata.
    pub fn new(
        store: Arc<dyn Store>,
        tokens: Tokens,
        limits: Limits,
        collector_keys: Vec<integrity_trust::PublicKey>,
    ) -> Result<Arc<Self>, crate::store::StoreError> {
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
            store,
            metas: RwLock::new(metas),
            cache,
            tokens,
            collector_keys,
            limits,
            metrics,
        }))
    }

    /// With collector keys configured: `signature` must verify over `bytes` with one of
    /// them and its trusted comment must name `image_id`. Without keys: accepted.
    fn check_signature(
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

    fn meta(&self, image_id: &str) -> Option<Arc<BaselineMeta>> {
        self.metas.read().expect("metas").get(image_id).cloned()
    }

    /// Flushes the store (at shutdown).
    pub fn flush_store(&self) -> Result<(), crate::store::StoreError> {
        self.store.flush()
    }

    pub fn baseline_count(&self) -> usize {
        self.metas.read().expect("metas").len()
    }
}

/// An error answer: a status and the JSON body `{"error": …, "detail": …}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    detail: String,
    /// Extra fields (e.g. the stored digest on a 409).
    sha256: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            detail: detail.into(),
            sha256: None,
        }
    }

    fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the service log",
        )
    }

    fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody {
            error: self.error,
            detail: &self.detail,
            sha256: self.sha256.as_deref(),
        })
        .unwrap_or_default();
        let mut response = (self.status, json_body(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"metadata-service\""),
            );
        }
        response
    }
}

fn json_body(bytes: Vec<u8>) -> ([(header::HeaderName, HeaderValue); 1], Vec<u8>) {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
}

fn auth(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    state.tokens.check(headers).map_err(|error| match error {
        AuthError::Missing => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "writes need an `Authorization: Bearer <token>` header",
        ),
        AuthError::Invalid => {
            tracing::warn!("write refused: unknown bearer token");
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the bearer token is not one the service accepts",
            )
        }
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

/// Reads a request body of at most `limit` bytes: `413` beyond, refused from
/// `Content-Length` before a byte of it is read when the client announces it.
async fn read_body(headers: &HeaderMap, body: Body, limit: u64) -> Result<Bytes, ApiError> {
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
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match http_body_util::Limited::new(body, limit_usize)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large(None)),
        Err(error) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("reading the request body: {error}"),
        )),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)
}

async fn post_baseline(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    auth(&state, &headers)?;
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
    let _permit = state.uploads.acquire().await.map_err(ApiError::internal)?;
    let bytes = read_body(&headers, body, state.limits.max_body_bytes).await?;
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
        let mut prepared = ingest::prepare(meta, bytes);
        prepared.signature = signature.map(String::into_bytes);
        match worker.store.insert(&prepared).map_err(ApiError::internal)? {
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
        json_body(serde_json::to_vec(&*meta).map_err(ApiError::internal)?),
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

async fn get_baseline(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = image_id(path)?;
    let meta = state
        .meta(&id)
        .ok_or_else(|| ApiError::not_found(format!("no baseline for image id {id}")))?;
    let encoding = negotiate(&headers, &meta);
    let etag = HeaderValue::from_str(&meta.etag(encoding)).map_err(ApiError::internal)?;
    let mut response = if not_modified(&headers, &meta) {
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
                    .map_err(ApiError::internal)?
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
    baselines: Vec<&'a BaselineMeta>,
}

async fn list_baselines(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let metas: Vec<Arc<BaselineMeta>> = state
        .metas
        .read()
        .expect("metas")
        .values()
        .cloned()
        .collect();
    let body = serde_json::to_vec(&Listing {
        baselines: metas.iter().map(|meta| &**meta).collect(),
    })
    .map_err(ApiError::internal)?;
    Ok(json_body(body).into_response())
}

async fn put_signature(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    auth(&state, &headers)?;
    let id = image_id(path)?;
    let bytes = read_body(&headers, body, ingest::MAX_SIGNATURE_BYTES as u64).await?;
    ingest::validate_signature(&bytes)
        .map_err(|Invalid(why)| ApiError::new(StatusCode::BAD_REQUEST, "invalid_signature", why))?;
    if !state.collector_keys.is_empty() {
        let worker = state.clone();
        let id2 = id.clone();
        let stored = blocking(move || worker.store.body(&id2, Encoding::Identity))
            .await?
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found(format!("no baseline for image id {id}")))?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        state.check_signature(&stored, Some(&text), &id)?;
    }
    let worker = state.clone();
    let id2 = id.clone();
    let outcome = blocking(move || worker.store.put_signature(&id2, &bytes))
        .await?
        .map_err(ApiError::internal)?;
    let status = match outcome {
        SignaturePut::Created => {
            tracing::info!(image_id = %id, "signature stored");
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

async fn get_signature(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = image_id(path)?;
    if state.meta(&id).is_none() {
        return Err(ApiError::not_found(format!(
            "no baseline for image id {id}"
        )));
    }
    let worker = state.clone();
    let id2 = id.clone();
    let signature = blocking(move || worker.store.signature(&id2))
        .await?
        .map_err(ApiError::internal)?
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

async fn healthz() -> Response {
    json_body(br#"{"status":"ok"}"#.to_vec()).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let worker = state.clone();
    if let Ok(Ok(bytes)) = blocking(move || worker.store.size_on_disk()).await {
        state.metrics.store_bytes.set(bytes as i64);
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.encode(),
    )
        .into_response())
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!("no route for {}", request.uri().path()))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Timeout, metrics and the request log around every request. Only the method, the
/// route template, the status and the time are recorded: never headers (tokens) and
/// never bodies.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();
    let started = Instant::now();
    let response = match tokio::time::timeout(state.limits.request_timeout, next.run(request)).await
    {
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
        .observe(&route, method.as_str(), status, elapsed.as_secs_f64());
    tracing::debug!(%method, %route, status, micros = elapsed.as_micros() as u64, "request");
    response
}

/// The service's router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/baselines", get(list_baselines).post(post_baseline))
        .route("/baselines/{image_id}", get(get_baseline))
        .route(
            "/baselines/{image_id}/signature",
            put(put_signature).get(get_signature),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_cache_keeps_large_items_and_evicts_the_least_recently_used() {
        let cache = BodyCache::new(100);
        let key = |name: &str| (name.to_owned(), Encoding::Identity);
        cache.insert(key("a"), Bytes::from(vec![0; 60]));
        assert!(
            cache.get(&key("a")).is_some(),
            "an item of 60 % of the capacity is kept"
        );
        cache.insert(key("b"), Bytes::from(vec![0; 30]));
        assert!(cache.get(&key("a")).is_some());
        cache.insert(key("c"), Bytes::from(vec![0; 30]));
        assert!(cache.get(&key("b")).is_none(), "b was least recently used");
        assert!(cache.get(&key("a")).is_some() && cache.get(&key("c")).is_some());
        cache.insert(key("huge"), Bytes::from(vec![0; 101]));
        assert!(cache.get(&key("huge")).is_none());
        assert_eq!(cache.inner.lock().unwrap().used, 90);
    }

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
