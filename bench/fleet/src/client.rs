//! The HTTP side: the token, a keep-alive client with the two bearer headers, the
//! baseline, and the fail-over over several service URLs (replicas).
//!
//! With more than one `--server`, a request tries the URLs in order, starting at the
//! one its host prefers: a connection error, a timeout or a `5xx` other than `503`
//! moves on to the next URL at once (after a whole round, a short backoff); `429` and
//! `503` wait (`Retry-After`, at most 2 s) and then try the next. It gives up after
//! twice the per-attempt `--timeout`. With one URL every request is tried once, as
//! before.

use crate::hosts::Baseline;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, ETAG, RETRY_AFTER};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// A token file's secret: the first non-empty, non-comment line; a service-style
/// `SCOPE:NAME:SECRET` line gives its SECRET.
pub(crate) fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .with_context(|| format!("the token file {} holds no token", path.display()))?;
    let mut parts = line.splitn(3, ':');
    if let (Some(scope), Some(name), Some(secret)) = (parts.next(), parts.next(), parts.next()) {
        if ["baseline", "report", "read", "admin"].contains(&scope)
            && !name.is_empty()
            && !secret.is_empty()
        {
            return Ok(secret.to_owned());
        }
    }
    Ok(line.to_owned())
}

pub(crate) fn bearer(secret: &str) -> Result<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {secret}"))
        .map_err(|_| anyhow::anyhow!("the token is not a valid header value"))?;
    value.set_sensitive(true);
    Ok(value)
}

pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) etag: Option<String>,
    /// `Retry-After` in seconds, when given.
    pub(crate) retry_after: Option<u64>,
    pub(crate) body: Bytes,
}

/// The outcome of a request over the URLs: the last answer, and how it got there.
pub(crate) struct Exchange {
    pub(crate) answer: Result<Answer, String>,
    /// Moves to the next URL after a connection error, a timeout or a 5xx.
    pub(crate) failovers: u32,
    /// Waits after a 429 or 503.
    pub(crate) waits: u32,
}

pub(crate) struct Http {
    pub(crate) client: Client<HttpConnector, Full<Bytes>>,
    /// The service's URLs (replicas), without a trailing slash.
    pub(crate) bases: Vec<String>,
    pub(crate) auth: HeaderValue,
    pub(crate) read_auth: HeaderValue,
    /// Per attempt.
    pub(crate) timeout: Duration,
}

impl Http {
    pub(crate) fn uri(&self, at: usize, path: &str) -> Uri {
        format!("{}{path}", self.bases[at % self.bases.len()])
            .parse()
            .expect("a valid URI from a valid base")
    }

    /// Sends the request `make` builds for a URL, starting at URL `first` and failing
    /// over as the module says.
    pub(crate) async fn exchange(
        &self,
        first: usize,
        path: &str,
        make: impl Fn(Uri) -> Request<Full<Bytes>>,
    ) -> Exchange {
        let count = self.bases.len();
        let deadline = tokio::time::Instant::now() + self.timeout * 2;
        let (mut at, mut failovers, mut waits, mut in_round) = (first % count, 0, 0, 0);
        let mut backoff = Duration::from_millis(50);
        loop {
            let answer = self.send(make(self.uri(at, path))).await;
            if count == 1 {
                return Exchange {
                    answer,
                    failovers,
                    waits,
                };
            }
            let wait = match &answer {
                Ok(a) if a.status == 429 || a.status == 503 => {
                    Some(Duration::from_secs(a.retry_after.unwrap_or(1).clamp(1, 2)))
                }
                Ok(a) if a.status >= 500 => None,
                Err(_) => None,
                Ok(_) => {
                    return Exchange {
                        answer,
                        failovers,
                        waits,
                    }
                }
            };
            if tokio::time::Instant::now() >= deadline {
                return Exchange {
                    answer,
                    failovers,
                    waits,
                };
            }
            at = (at + 1) % count;
            match wait {
                Some(wait) => {
                    waits += 1;
                    in_round = 0;
                    tokio::time::sleep(wait).await;
                }
                None => {
                    failovers += 1;
                    in_round += 1;
                    if in_round >= count {
                        in_round = 0;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
        }
    }

    pub(crate) async fn send(&self, request: Request<Full<Bytes>>) -> Result<Answer, String> {
        let exchange = async {
            let response = self.client.request(request).await.map_err(|error| {
                let mut text = error.to_string();
                let mut source = std::error::Error::source(&error);
                while let Some(cause) = source {
                    text.push_str(": ");
                    text.push_str(&cause.to_string());
                    source = cause.source();
                }
                text
            })?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|error| format!("reading the body: {error}"))?
                .to_bytes();
            Ok(Answer {
                status: parts.status.as_u16(),
                etag: parts
                    .headers
                    .get(ETAG)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned),
                retry_after: parts
                    .headers
                    .get(RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|text| text.trim().parse().ok()),
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)))
    }

    /// A GET of URL `at` only.
    pub(crate) async fn get_at(&self, at: usize, path: &str, auth: bool) -> Result<Answer, String> {
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(self.uri(at, path));
        if auth {
            request = request.header(AUTHORIZATION, self.read_auth.clone());
        }
        self.send(request.body(Full::new(Bytes::new())).expect("a request"))
            .await
    }

    /// A GET, from the first URL on (the next one if it fails).
    pub(crate) async fn get(&self, path: &str, auth: bool) -> Result<Answer, String> {
        self.exchange(0, path, |uri| {
            let mut request = Request::builder().method(Method::GET).uri(uri);
            if auth {
                request = request.header(AUTHORIZATION, self.read_auth.clone());
            }
            request.body(Full::new(Bytes::new())).expect("a request")
        })
        .await
        .answer
    }
}

pub(crate) fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

pub(crate) async fn fetch_baseline(http: &Http, image_id: &str) -> Result<(Baseline, String)> {
    let answer = http
        .get(&format!("/baselines/{image_id}"), false)
        .await
        .map_err(|error| anyhow::anyhow!("GET /baselines/{image_id}: {error}"))?;
    if answer.status != 200 {
        bail!(
            "GET /baselines/{image_id}: {} {}",
            answer.status,
            snippet(&answer.body)
        );
    }
    let etag = answer
        .etag
        .with_context(|| format!("GET /baselines/{image_id} gave no ETag"))?;
    let entries = serde_json::from_slice::<Value>(&answer.body)
        .ok()
        .and_then(|doc| doc.get("entries").and_then(Value::as_array).map(Vec::len))
        .unwrap_or(0) as u64;
    let baseline = Baseline {
        image_id: image_id.to_owned(),
        sha256: integrity_common::digest::Sha256Digest::of(&answer.body).to_hex(),
        entries,
    };
    Ok((baseline, etag))
}
