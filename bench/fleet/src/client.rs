//! The HTTP side: the token, a keep-alive client with the two bearer headers, the baseline.

use crate::hosts::Baseline;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, ETAG};
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
    pub(crate) body: Bytes,
}

pub(crate) struct Http {
    pub(crate) client: Client<HttpConnector, Full<Bytes>>,
    pub(crate) base: String,
    pub(crate) auth: HeaderValue,
    pub(crate) read_auth: HeaderValue,
    pub(crate) timeout: Duration,
}

impl Http {
    pub(crate) fn uri(&self, path: &str) -> Uri {
        format!("{}{path}", self.base)
            .parse()
            .expect("a valid URI from a valid base")
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
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)))
    }

    pub(crate) async fn get(&self, path: &str, auth: bool) -> Result<Answer, String> {
        let mut request = Request::builder().method(Method::GET).uri(self.uri(path));
        if auth {
            request = request.header(AUTHORIZATION, self.read_auth.clone());
        }
        self.send(request.body(Full::new(Bytes::new())).expect("a request"))
            .await
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
