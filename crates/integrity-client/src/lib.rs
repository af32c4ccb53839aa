//! The blocking HTTP client of the metadata service (REFERENCE §2), shared by the
//! collector (uploads) and the agent (fetches). Small on purpose: it runs on every VM.
//!
//! Retries follow one rule: a connection error, a timeout or a `5xx` may be transient
//! and is retried with exponential backoff and jitter; a `4xx` is the service's
//! considered answer and is never retried, nor is an answer refused for what it holds
//! (`ClientError::Invalid`: over its limit, undecodable, not matching its `ETag`),
//! nor a certificate the client does not trust (`ClientError::Untrusted`).
//!
//! Several services may be given (`ClientConfig::fallback_servers`, DESIGN §13's
//! repeated `--server`): each attempt tries them in order, the next one on a
//! connection error, a timeout or a `5xx` (never on a `4xx`, which is an answer), and
//! the backoff comes between rounds over all of them.
//!
//! Uploads send `Expect: 100-continue`: a service refusing the request (a wrong token,
//! a body over its limit) answers before the body travels, so the refusal is read as
//! such instead of surfacing as a broken pipe mid-body (which would be retried).
//!
//! The service is not trusted with the agent's memory: every body is read through a
//! limit before it is buffered, a baseline's both compressed and decompressed
//! (`ClientConfig::max_baseline_bytes`), a signature's at `MAX_SIGNATURE_BYTES`
//! (`answer.rs`).

mod answer;
mod error;
pub mod fuzzing;
mod reports;
mod tls;

pub use reports::ReportAck;

pub use answer::{check_etag, etag_sha256, identity_etag};
pub use error::ClientError;

use answer::{Failure, Head};
use integrity_common::Sha256Digest;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often and how patiently to retry.
#[derive(Debug, Clone)]
pub struct Retry {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// Delay before the first retry; doubles each time up to `max_delay`. The actual
    /// delay is drawn between half and all of it (jitter), so a fleet does not retry in
    /// lockstep.
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 5,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl Retry {
    /// The delay before retry number `retry` (1-based).
    pub fn delay(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(20);
        let full = self
            .initial_delay
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay);
        full.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

/// Where and how to reach the service.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL, `http://host:port` or `https://host:port` (a path prefix is kept).
    pub server: String,
    /// More base URLs, tried in order after `server` when it cannot be reached, times
    /// out or answers `5xx` (replicas of one service: DESIGN §13).
    pub fallback_servers: Vec<String>,
    /// Bearer token for writes.
    pub token: Option<String>,
    /// PEM file of the CA (or self-signed certificate) to trust instead of the public
    /// web roots. Each certificate in it is also pinned: a service presenting exactly
    /// one of them is trusted even where webpki would refuse it as an end entity (a
    /// self-signed `CA:TRUE` certificate, as `openssl req -x509` makes).
    pub ca_cert: Option<PathBuf>,
    /// Time one attempt may take, body included.
    pub timeout: Duration,
    pub retry: Retry,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Largest baseline `fetch_baseline` accepts, counted once decompressed (and its
    /// compressed form is bounded by the same number).
    pub max_baseline_bytes: u64,
}

impl ClientConfig {
    pub fn new(server: impl Into<String>, user_agent: impl Into<String>) -> Self {
        ClientConfig {
            server: server.into(),
            fallback_servers: Vec::new(),
            token: None,
            ca_cert: None,
            timeout: Duration::from_secs(300),
            retry: Retry::default(),
            user_agent: user_agent.into(),
            max_baseline_bytes: DEFAULT_MAX_BASELINE_BYTES,
        }
    }
}

/// What `upload_baseline` achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uploaded {
    /// `201`: stored now.
    Created,
    /// `409` with the same digest: these exact bytes were already stored (e.g. an
    /// earlier attempt whose answer was lost).
    AlreadyStored,
}

/// A connection to one metadata service.
pub struct Client {
    agent: ureq::Agent,
    /// The services, in the order they are tried (at least one).
    bases: Vec<String>,
    /// The base that gave the last answer.
    answered_by: std::sync::Mutex<Option<String>>,
    token: Option<String>,
    ca_cert: Option<PathBuf>,
    retry: Retry,
    max_baseline_bytes: u64,
}

/// A small answer, read whole (bounded).
struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// What became of one attempt.
pub(crate) enum Step<T> {
    /// The answer (or a refusal worth no retry).
    Done(Result<T, ClientError>),
    /// Worth another attempt, for this reason.
    Retry(String),
}

/// What `fetch_baseline` got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// `304`: the cached copy (sent as `If-None-Match`) is current. `etag` is the tag
    /// the answer carried, if any.
    NotModified { etag: Option<String> },
    /// `200`: the stored bytes (decompressed if sent compressed), their `ETag` and their
    /// SHA-256 (computed while they were read; when the `ETag` names a digest, it is
    /// this one — the client refuses a body that does not match its tag).
    Body {
        bytes: Vec<u8>,
        etag: Option<String>,
        sha256: Sha256Digest,
    },
}

/// Default of [`ClientConfig::max_baseline_bytes`]: the service's own default
/// `max_body_bytes` (512 MiB; a million entries is ≈ 200 MB).
pub const DEFAULT_MAX_BASELINE_BYTES: u64 = 512 * 1024 * 1024;

/// Largest signature answer read: the service stores at most this much
/// (`metadata_service::ingest::MAX_SIGNATURE_BYTES`); a minisign signature is ≈ 300.
pub const MAX_SIGNATURE_BYTES: u64 = 8192;

/// Largest error or metadata answer read.
const SMALL_BODY_LIMIT: u64 = 1 << 20;

fn load_ca(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, ClientError> {
    let pem = std::fs::read(path).map_err(|error| {
        ClientError::Config(format!("cannot read CA file {}: {error}", path.display()))
    })?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
            Ok(_) => None,
            Err(error) => Some(Err(error)),
        })
        .collect::<Result<_, _>>()
        .map_err(|error| ClientError::Config(format!("CA file {}: {error}", path.display())))?;
    if certs.is_empty() {
        return Err(ClientError::Config(format!(
            "CA file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

impl Client {
    pub fn new(config: &ClientConfig) -> Result<Client, ClientError> {
        let mut bases = Vec::new();
        for server in std::iter::once(&config.server).chain(&config.fallback_servers) {
            let base = server.trim_end_matches('/').to_owned();
            let scheme_ok = base.starts_with("http://") || base.starts_with("https://");
            if !scheme_ok || base.len() <= "https://".len() {
                return Err(ClientError::Config(format!(
                    "--server {server:?}: expected http://HOST:PORT or https://HOST:PORT"
                )));
            }
            bases.push(base);
        }
        let builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.timeout))
            .timeout_connect(Some(Duration::from_secs(10)))
            .user_agent(&config.user_agent)
            .max_redirects(0);
        let agent = match &config.ca_cert {
            Some(ca) => {
                let certs = load_ca(ca)?
                    .iter()
                    .map(|cert| rustls::pki_types::CertificateDer::from(cert.der().to_vec()))
                    .collect();
                ureq::Agent::with_parts(
                    builder.build(),
                    tls::connector(tls::client_config(certs)),
                    ureq::unversioned::resolver::DefaultResolver::default(),
                )
            }
            None => builder.build().new_agent(),
        };
        Ok(Client {
            agent,
            bases,
            answered_by: std::sync::Mutex::new(None),
            token: config.token.clone(),
            ca_cert: config.ca_cert.clone(),
            retry: config.retry.clone(),
            max_baseline_bytes: config.max_baseline_bytes,
        })
    }

    /// The largest baseline this client accepts ([`ClientConfig::max_baseline_bytes`]).
    pub fn max_baseline_bytes(&self) -> u64 {
        self.max_baseline_bytes
    }

    /// Whether a token would travel in clear text to another host (through any of
    /// the services).
    pub fn token_in_clear_text(&self) -> bool {
        self.token.is_some() && self.bases.iter().any(|base| clear_text_remote(base))
    }

    /// The service (base URL) that gave the last answer, if any did.
    pub fn answered_by(&self) -> Option<String> {
        self.answered_by
            .lock()
            .map_or(None, |answered| answered.clone())
    }

    /// Sends a request (built fresh for each attempt and each service, from the base
    /// URL it is given) with the retry rule; `answer` reads each answer's body (it
    /// bounds what it reads) and says whether to retry; `on_retry` hears about each
    /// retry before its delay. Within an attempt the services are tried in order, the
    /// next one when `answer` says the last one's failure is worth a retry.
    fn with_retries<T>(
        &self,
        send: impl Fn(&ureq::Agent, &str) -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        answer: impl Fn(&Head, &mut dyn Read) -> Step<T>,
        on_retry: &mut dyn FnMut(u32, &str, Duration),
    ) -> Result<T, ClientError> {
        let attempts = self.retry.attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            for base in &self.bases {
                match self.try_one(base, &send, &answer) {
                    Step::Done(result) => {
                        if let Ok(mut answered) = self.answered_by.lock() {
                            *answered = Some(base.clone());
                        }
                        return result;
                    }
                    Step::Retry(why) if self.bases.len() > 1 => last = format!("{base}: {why}"),
                    Step::Retry(why) => last = why,
                }
            }
            if attempt < attempts {
                let delay = self.retry.delay(attempt);
                on_retry(attempt, &last, delay);
                std::thread::sleep(delay);
            }
        }
        Err(ClientError::Unavailable { attempts, last })
    }

    /// One request to one service.
    fn try_one<T>(
        &self,
        base: &str,
        send: &impl Fn(&ureq::Agent, &str) -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        answer: &impl Fn(&Head, &mut dyn Read) -> Step<T>,
    ) -> Step<T> {
        match send(&self.agent, base) {
            Ok(mut response) => {
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|value| value.to_str().ok())
                        .map(str::to_owned)
                };
                let head = Head {
                    status: response.status().as_u16(),
                    etag: header("etag"),
                    encoding: header("content-encoding"),
                    content_length: response.body().content_length(),
                };
                // Unlimited here: `answer` bounds what it reads (ureq's own limit
                // would not tell a cut connection from an oversized body).
                let mut body = response.body_mut().as_reader();
                answer(&head, &mut body)
            }
            Err(error) => match certificate_refused(&error) {
                Some(detail) => Step::Done(Err(ClientError::Untrusted {
                    ca_cert: self.ca_cert.clone(),
                    detail,
                })),
                None => Step::Retry(error.to_string()),
            },
        }
    }

    fn bearer(&self) -> Option<String> {
        self.token.as_ref().map(|token| format!("Bearer {token}"))
    }

    /// `POST /baselines` with the exact `bytes` of a manifest.
    /// `signature_header`, when given, travels as `X-Bulletproof-Signature` (the
    /// `.minisig` text in base64), so a service that pins collector keys can check it
    /// before storing anything.
    pub fn upload_baseline(
        &self,
        image_id: &str,
        bytes: &[u8],
        signature_header: Option<&str>,
        on_retry: &mut dyn FnMut(u32, &str, Duration),
    ) -> Result<Uploaded, ClientError> {
        let bearer = self.bearer();
        let answer = self.with_retries(
            |agent, base| {
                let mut request = agent
                    .post(format!("{base}/baselines"))
                    .content_type("application/json");
                if let Some(bearer) = &bearer {
                    request = request.header("Authorization", bearer);
                }
                if let Some(signature) = signature_header {
                    request = request.header("X-Bulletproof-Signature", signature);
                }
                // The service checks the token (and the announced size) before it reads
                // the body: with this, its refusal arrives before the body is sent
                // (ureq waits up to a second for `100 Continue`, then sends anyway).
                request.header("Expect", "100-continue").send(bytes)
            },
            |head, body| small_answer(head, body, SMALL_BODY_LIMIT),
            on_retry,
        )?;
        match answer.status {
            201 => Ok(Uploaded::Created),
            409 => {
                let stored = json_field(&answer.body, "sha256").unwrap_or_default();
                if stored == Sha256Digest::of(bytes).to_hex() {
                    Ok(Uploaded::AlreadyStored)
                } else {
                    Err(ClientError::Conflict {
                        image_id: image_id.to_owned(),
                        stored_sha256: if stored.is_empty() {
                            "unknown".into()
                        } else {
                            stored
                        },
                    })
                }
            }
            status => Err(status_error(status, &answer.body, bytes.len())),
        }
    }
}

impl Client {
    /// `GET /baselines/{image_id}`, revalidating `etag` when given. The body is refused
    /// (never retried) when it passes `max_baseline_bytes` compressed or decompressed,
    /// does not decompress, or does not match the digest its `ETag` names.
    pub fn fetch_baseline(
        &self,
        image_id: &str,
        etag: Option<&str>,
        on_retry: &mut dyn FnMut(u32, &str, Duration),
    ) -> Result<Fetched, ClientError> {
        let max = self.max_baseline_bytes;
        self.with_retries(
            |agent, base| {
                // Decompressed here rather than by ureq: bounded, and independent of
                // which ureq features other crates of the workspace switch on.
                let mut request = agent
                    .get(format!("{base}/baselines/{image_id}"))
                    .header("Accept-Encoding", "gzip");
                if let Some(etag) = etag {
                    request = request.header("If-None-Match", etag);
                }
                request.call()
            },
            |head, body| baseline_answer(head, body, max),
            on_retry,
        )
    }
}

/// One answer to `GET /baselines/{id}`: the network-free part of `fetch_baseline`
/// (the fuzz target runs it on hostile answers).
pub(crate) fn baseline_answer(head: &Head, body: &mut dyn Read, max: u64) -> Step<Fetched> {
    if head.status != 200 {
        return match small_answer(head, body, SMALL_BODY_LIMIT) {
            Step::Done(Ok(answer)) if answer.status == 304 => {
                Step::Done(Ok(Fetched::NotModified {
                    etag: head.etag.clone(),
                }))
            }
            Step::Done(Ok(answer)) => Step::Done(Err(status_error(answer.status, &answer.body, 0))),
            Step::Done(Err(error)) => Step::Done(Err(error)),
            Step::Retry(why) => Step::Retry(why),
        };
    }
    match answer::read_baseline(head, body, max) {
        Ok(body) => Step::Done(Ok(Fetched::Body {
            bytes: body.bytes,
            etag: head.etag.clone(),
            sha256: body.sha256,
        })),
        Err(Failure::Transport(why)) => Step::Retry(why),
        Err(Failure::Refused(detail)) => Step::Done(Err(ClientError::Invalid { detail })),
    }
}

/// A small answer: at most `limit` bytes of body. A `5xx`, or a `200` cut off by the
/// connection, is worth another attempt; a `200` longer than `limit` is refused.
fn small_answer(head: &Head, body: &mut dyn Read, limit: u64) -> Step<Answer> {
    let body = match answer::read_small(body, limit) {
        Ok(body) => body,
        Err(Failure::Transport(why)) if head.status == 200 => return Step::Retry(why),
        Err(Failure::Refused(detail)) if head.status == 200 => {
            return Step::Done(Err(ClientError::Invalid { detail }))
        }
        // The body of an error only adds detail.
        Err(_) => Vec::new(),
    };
    if head.status >= 500 {
        return Step::Retry(format!("HTTP {}: {}", head.status, detail(&body)));
    }
    Step::Done(Ok(Answer {
        status: head.status,
        body,
    }))
}

/// What `put_signature` achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureStored {
    /// `201`: stored now.
    Created,
    /// `200`: these exact bytes were already stored.
    Unchanged,
    /// `409`: another signature is stored for this baseline (signatures are
    /// immutable); the caller decides whether the stored one is acceptable.
    Conflict,
}

impl Client {
    /// `PUT /baselines/{image_id}/signature`.
    pub fn put_signature(
        &self,
        image_id: &str,
        signature: &[u8],
        on_retry: &mut dyn FnMut(u32, &str, Duration),
    ) -> Result<SignatureStored, ClientError> {
        let bearer = self.bearer();
        let answer = self.with_retries(
            |agent, base| {
                let mut request = agent
                    .put(format!("{base}/baselines/{image_id}/signature"))
                    .content_type("text/plain");
                if let Some(bearer) = &bearer {
                    request = request.header("Authorization", bearer);
                }
                request.send(signature)
            },
            |head, body| small_answer(head, body, SMALL_BODY_LIMIT),
            on_retry,
        )?;
        match answer.status {
            201 => Ok(SignatureStored::Created),
            200 => Ok(SignatureStored::Unchanged),
            409 => Ok(SignatureStored::Conflict),
            status => Err(status_error(status, &answer.body, signature.len())),
        }
    }

    /// `GET /baselines/{image_id}/signature`; an answer longer than
    /// [`MAX_SIGNATURE_BYTES`] is refused (`ClientError::Invalid`).
    pub fn fetch_signature(
        &self,
        image_id: &str,
        on_retry: &mut dyn FnMut(u32, &str, Duration),
    ) -> Result<Vec<u8>, ClientError> {
        let answer = self.with_retries(
            |agent, base| {
                agent
                    .get(format!("{base}/baselines/{image_id}/signature"))
                    .call()
            },
            |head, body| small_answer(head, body, MAX_SIGNATURE_BYTES),
            on_retry,
        )?;
        match answer.status {
            200 => Ok(answer.body),
            status => Err(status_error(status, &answer.body, 0)),
        }
    }
}

/// Why the service's certificate was refused, when that is why `error` happened: a
/// refusal, not an outage (retrying cannot change the certificate).
fn certificate_refused(error: &ureq::Error) -> Option<String> {
    let tls = match error {
        ureq::Error::Rustls(tls) => tls,
        ureq::Error::Io(io) => tls::rustls_error(io)?,
        _ => return None,
    };
    matches!(
        tls,
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
    )
    .then(|| tls.to_string())
}

/// Whether `base` is plain http to a host other than this one.
fn clear_text_remote(base: &str) -> bool {
    let Some(rest) = base.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(host, _)| host);
    !matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

fn status_error(status: u16, body: &[u8], size: usize) -> ClientError {
    let detail = detail(body);
    match status {
        401 => ClientError::Unauthorized { status, detail },
        404 => ClientError::NotFound { detail },
        413 => ClientError::TooLarge { size, detail },
        _ => ClientError::Rejected { status, detail },
    }
}

fn json_field(body: &[u8], field: &str) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get(field)?
        .as_str()
        .map(str::to_owned)
}

/// The `detail` of a JSON error answer, or the body's first line.
fn detail(body: &[u8]) -> String {
    json_field(body, "detail").unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let line = text.lines().next().unwrap_or("").trim();
        if line.is_empty() {
            "no detail given".into()
        } else {
            line.chars().take(300).collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_a_ceiling() {
        let retry = Retry {
            attempts: 10,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        for _ in 0..100 {
            let first = retry.delay(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = retry.delay(3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            assert!(retry.delay(30) <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn urls_are_checked() {
        assert!(Client::new(&ClientConfig::new("ftp://x", "t")).is_err());
        assert!(Client::new(&ClientConfig::new("http://", "t")).is_err());
        assert!(Client::new(&ClientConfig::new("localhost:8080", "t")).is_err());
        let mut config = ClientConfig::new("http://10.0.0.1:8080/", "t");
        let client = Client::new(&config).unwrap();
        assert_eq!(client.bases, ["http://10.0.0.1:8080"]);
        assert!(!client.token_in_clear_text());
        config.token = Some("x".into());
        assert!(Client::new(&config).unwrap().token_in_clear_text());
        config.server = "http://127.0.0.1:8080".into();
        assert!(!Client::new(&config).unwrap().token_in_clear_text());
        config.server = "https://10.0.0.1".into();
        assert!(!Client::new(&config).unwrap().token_in_clear_text());
        // Any of several services in clear text counts.
        config.fallback_servers = vec!["http://10.0.0.2:8080".into()];
        assert!(Client::new(&config).unwrap().token_in_clear_text());
        config.fallback_servers = vec!["ftp://x".into()];
        assert!(Client::new(&config).is_err(), "every --server is checked");
    }

    #[test]
    fn error_details_come_from_json_or_the_first_line() {
        assert_eq!(detail(br#"{"error":"x","detail":"why"}"#), "why");
        assert_eq!(detail(b"plain text\nmore"), "plain text");
        assert_eq!(detail(b""), "no detail given");
    }
}
