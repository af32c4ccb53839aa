//! The fleet (DESIGN §12) from the outside: a real service with scoped tokens, host
//! keys made with `integrity_trust`, reports built and signed here as an agent would,
//! and the reads with each scope.

#![allow(dead_code)]

use super::*;
use integrity_common::report::{
    BaselineSource, HostReport, ReportAnomaly, ReportBaseline, ReportMode, SignatureState,
};
use integrity_common::DriftSummary;
use serde_json::{json, Value};
use std::time::SystemTime;

pub const REPORT_TOKEN: &str = "rrrrrrrr-report-token-0123456789";
pub const READ_TOKEN: &str = "oooooooo-read-token-0123456789ab";
pub const ADMIN_TOKEN: &str = "aaaaaaaa-admin-token-0123456789a";
pub const BASELINE_TOKEN: &str = "bbbbbbbb-baseline-token-01234567";

pub fn tokens() -> String {
    format!(
        "report:agents:{REPORT_TOKEN},read:ops:{READ_TOKEN},admin:root:{ADMIN_TOKEN},baseline:ci:{BASELINE_TOKEN}"
    )
}

pub fn bearer(token: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {token}"))
}

/// A service with the four scoped tokens, and `args`.
pub fn start_fleet(data: &Path, args: &[&str]) -> Server {
    let tokens = tokens();
    start_with(data, args, &[("METADATA_TOKENS", tokens.as_str())])
}

/// Stores a small baseline for `image_id` (so reports of that image are known).
pub fn upload_image(server: &Server, image_id: &str) {
    let (key, value) = bearer(BASELINE_TOKEN);
    let answer = post(
        server,
        "/baselines",
        &baseline(image_id, 3),
        &[(key, &value)],
    );
    assert_eq!(answer.status, 201, "baseline upload: {}", answer.text());
}

/// A host id made of one repeated character pattern: `host_id(7)` is 32 hex digits.
pub fn host_id(n: u32) -> String {
    format!("{n:032x}")
}

pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

pub fn now() -> String {
    timestamp(SystemTime::now())
}

/// A host's key pair, kept in its own temporary directory like an agent's state.
pub struct HostKey {
    pub secret: integrity_trust::SecretKey,
    /// The `host.pub` text.
    pub public_text: String,
    pub public: integrity_trust::PublicKey,
    _dir: tempfile::TempDir,
}

impl HostKey {
    pub fn new() -> HostKey {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("host.key");
        let public = dir.path().join("host.pub");
        integrity_trust::keygen(&secret, &public, None).unwrap();
        HostKey {
            secret: integrity_trust::load_secret_key(
                &secret,
                integrity_trust::Password::PromptIfTerminal,
            )
            .unwrap(),
            public_text: std::fs::read_to_string(&public).unwrap(),
            public: integrity_trust::load_public_key(&public).unwrap(),
            _dir: dir,
        }
    }

    pub fn fingerprint(&self) -> String {
        integrity_trust::key_id(&self.public)
    }

    /// The `.minisig` text over `bytes`, with the report's trusted comment.
    pub fn sign(&self, bytes: &[u8], host_id: &str, seq: u64) -> String {
        integrity_trust::sign(
            &self.secret,
            bytes,
            // A hostile host id may hold a line break; a trusted comment cannot.
            &format!("bulletproof-report host_id:{host_id} seq:{seq}").replace(['\n', '\r'], " "),
        )
        .unwrap()
    }

    pub fn key_header(&self) -> String {
        integrity_trust::to_header(&self.public_text)
    }
}

/// A clean report of `host` for `image`, finished now.
pub fn report(host: &str, image: &str, seq: u64) -> HostReport {
    let now = now();
    HostReport {
        host_id: host.to_owned(),
        hostname: format!("web-{}", &host[28..]),
        image_id: image.to_owned(),
        seq,
        interval_secs: None,
        started: now.clone(),
        finished: now,
        agent_version: "0.1.0-test".to_owned(),
        mode: ReportMode::Full,
        baseline: Some(ReportBaseline {
            sha256: "ab".repeat(32),
            source: BaselineSource::Server,
            signature: SignatureState::Verified,
        }),
        summary: DriftSummary {
            scanned: 3,
            ..DriftSummary::default()
        },
        anomalies: Vec::new(),
        truncated: 0,
        error: None,
        spool_dropped: 0,
        last_full: None,
    }
}

/// A `modified` finding of `path` whose current digest is `digest`.
pub fn modified(path: &str, digest: &str) -> ReportAnomaly {
    ReportAnomaly {
        anomaly: "modified".to_owned(),
        path: path.to_owned(),
        changed: vec!["sha256".to_owned()],
        baseline: json!({"sha256": "00".repeat(32), "mode": 420, "uid": 0, "gid": 0, "kind": "file"}),
        current: json!({"sha256": digest, "mode": 420, "uid": 0, "gid": 0, "kind": "file"}),
    }
}

/// The report with `findings`, its summary counting them.
pub fn with_findings(mut report: HostReport, findings: Vec<ReportAnomaly>) -> HostReport {
    let mut summary = DriftSummary {
        scanned: report.summary.scanned,
        ..DriftSummary::default()
    };
    for finding in &findings {
        match finding.anomaly.as_str() {
            "added" => summary.added += 1,
            "deleted" => summary.deleted += 1,
            "modified" => summary.modified += 1,
            "metadata_changed" => summary.metadata_changed += 1,
            _ => summary.type_changed += 1,
        }
    }
    report.summary = summary;
    report.anomalies = findings;
    report
}

/// POST /reports with exactly these bytes and headers (each optional).
pub fn post_raw_report(
    server: &Server,
    bytes: &[u8],
    token: Option<&str>,
    signature: Option<&str>,
    host_key: Option<&str>,
) -> Reply {
    let mut headers: Vec<(&str, String)> = vec![("Content-Type", "application/json".into())];
    if let Some(token) = token {
        headers.push(bearer(token));
    }
    if let Some(signature) = signature {
        headers.push((
            "X-Bulletproof-Signature",
            integrity_trust::to_header(signature),
        ));
    }
    if let Some(key) = host_key {
        headers.push(("X-Bulletproof-Host-Key", key.to_owned()));
    }
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    post(server, "/reports", bytes, &headers)
}

/// Signs `report` with `key` and posts it with the report token, offering the key.
pub fn send(server: &Server, key: &HostKey, report: &HostReport) -> Reply {
    send_bytes(server, key, &report.to_bytes(), &report.host_id, report.seq)
}

pub fn send_bytes(server: &Server, key: &HostKey, bytes: &[u8], host: &str, seq: u64) -> Reply {
    let signature = key.sign(bytes, host, seq);
    post_raw_report(
        server,
        bytes,
        Some(REPORT_TOKEN),
        Some(&signature),
        Some(&key.key_header()),
    )
}

/// `send`, asserting 201.
pub fn store(server: &Server, key: &HostKey, report: &HostReport) {
    let answer = send(server, key, report);
    assert_eq!(
        answer.status,
        201,
        "report {} of {}: {}",
        report.seq,
        report.host_id,
        answer.text()
    );
    let body = answer.json();
    assert_eq!(body["status"], "stored");
    assert_eq!(body["seq"], report.seq);
    assert_eq!(body["host_id"], report.host_id.as_str());
}

/// GET with the read token.
pub fn read(server: &Server, path: &str) -> Reply {
    let (key, value) = bearer(READ_TOKEN);
    get(server, path, &[(key, &value)])
}

/// GET with the read token, asserting 200, as JSON.
pub fn read_json(server: &Server, path: &str) -> Value {
    let answer = read(server, path);
    assert_eq!(answer.status, 200, "GET {path}: {}", answer.text());
    answer.json()
}

pub fn admin_get(server: &Server, path: &str) -> Reply {
    let (key, value) = bearer(ADMIN_TOKEN);
    get(server, path, &[(key, &value)])
}

pub fn admin_post(server: &Server, path: &str, body: &Value) -> Reply {
    let (key, value) = bearer(ADMIN_TOKEN);
    post(
        server,
        path,
        body.to_string().as_bytes(),
        &[(key, &value), ("Content-Type", "application/json")],
    )
}

pub fn delete(server: &Server, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = client().delete(server.url(path));
    for (key, value) in headers {
        request = request.header(*key, *value);
    }
    let mut response = request.call().expect("DELETE");
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(key, value)| {
            (
                key.as_str().to_owned(),
                value.to_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let body = response.body_mut().read_to_vec().unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}

pub fn admin_delete(server: &Server, path: &str) -> Reply {
    let (key, value) = bearer(ADMIN_TOKEN);
    delete(server, path, &[(key, &value)])
}

/// Creates an accept and returns its id.
pub fn accept(server: &Server, image: &str, host: Option<&str>, finding: &ReportAnomaly) -> String {
    let answer = admin_post(
        server,
        "/accepts",
        &json!({
            "image_id": image,
            "host_id": host,
            "path": finding.path,
            "anomaly": finding.anomaly,
            "current": finding.current,
            "comment": "rolled out on purpose",
        }),
    );
    assert_eq!(answer.status, 201, "POST /accepts: {}", answer.text());
    answer.json()["id"]
        .as_str()
        .expect("an accept id")
        .to_owned()
}

pub fn host_json(server: &Server, host: &str) -> Value {
    read_json(server, &format!("/hosts/{host}"))
}

/// The counts of `image` in GET /fleet (`Null` when the image is not listed).
pub fn fleet_counts(server: &Server, image: &str) -> Value {
    read_json(server, "/fleet")["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["image_id"] == image)
        .map_or(Value::Null, |entry| entry["hosts"].clone())
}

/// The seqs GET /hosts/{id}/reports lists, newest first (every page).
pub fn listed_seqs(server: &Server, host: &str) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let path = match before {
            Some(before) => format!("/hosts/{host}/reports?limit=1000&before={before}"),
            None => format!("/hosts/{host}/reports?limit=1000"),
        };
        let page = read_json(server, &path);
        let rows = page["reports"].as_array().unwrap().clone();
        seqs.extend(rows.iter().map(|row| row["seq"].as_u64().unwrap()));
        match page["next"].as_u64() {
            Some(next) if !rows.is_empty() => before = Some(next),
            _ => return seqs,
        }
    }
}

/// The audit records (newest first), admin.
pub fn audit(server: &Server) -> Vec<Value> {
    let answer = admin_get(server, "/audit?limit=1000");
    assert_eq!(answer.status, 200, "GET /audit: {}", answer.text());
    answer.json()["records"].as_array().unwrap().clone()
}

/// Polls `probe` until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of a metric line `name{labels}` (labels as written, e.g.
/// `outcome="stored"`), 0 when absent.
pub fn metric(server: &Server, name: &str, labels: &str) -> f64 {
    let text = get(server, "/metrics", &[]).text();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            let matches = if labels.is_empty() {
                key == name
            } else {
                key.starts_with(&format!("{name}{{")) && labels.split(',').all(|l| key.contains(l))
            };
            matches.then(|| value.parse().unwrap_or(0.0))
        })
        .unwrap_or(0.0)
}
