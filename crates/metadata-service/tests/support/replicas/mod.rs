//! Helpers of `tests/replicas.rs` (DESIGN §13): replicas of the service on one
//! PostgreSQL database, started and asked here (processes, requests that may get no
//! answer, polling, the checks of what a replica shows and answers without its
//! database); simulated agents and the checks of what was acknowledged against what
//! the database holds in [`agents`]; the databases, and a PostgreSQL cluster of a
//! test's own that can be stopped and started again, in [`cluster`].

#![allow(dead_code)]

pub mod agents;
pub mod cluster;

pub use agents::*;
pub use cluster::*;

use crate::support::fleet::{self, HostKey};
use crate::support::{self, pg, Reply, Server, BIN};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

pub const IMG: &str = "img-replicas";

/// A minisign signature (of something else: nothing checks it without a collector key).
pub const SIG: &[u8] = b"untrusted comment: signature from minisign secret key\nRUQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3r2T2kbgJUCI+PmuzVBwBuAWD3n8tLZ7Fz4uHs0aqugI=\ntrusted comment: timestamp:1556193335\tfile:test\ny/rUw2y8/hOUYjZU71eHp/Wo1KZ40fGy2VJEDl34XMJM+TX48Ss/17u3IvIfbVR1FkZZSNCisQbuQY+bHwhEBg==\n";

/// A replica with the four scoped tokens on `store`, its own empty `--data`.
pub struct Replica {
    pub server: Server,
    _data: tempfile::TempDir,
}

impl Replica {
    pub fn start(store: &str) -> Replica {
        let data = tempfile::tempdir().unwrap();
        let server = fleet::start_fleet(data.path(), &["--store", store]);
        Replica {
            server,
            _data: data,
        }
    }

    pub fn base(&self) -> String {
        self.server.url("")
    }

    pub fn alive(&mut self) -> bool {
        self.server.child.try_wait().unwrap().is_none()
    }
}

/// `n` replicas started at the same moment (threads behind a barrier).
pub fn start_together(store: &str, n: usize) -> Vec<Replica> {
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (barrier, store) = (barrier.clone(), store.to_owned());
            std::thread::spawn(move || {
                barrier.wait();
                Replica::start(&store)
            })
        })
        .collect();
    let started: Vec<_> = threads.into_iter().map(|t| t.join()).collect();
    let failed = started.iter().filter(|r| r.is_err()).count();
    assert_eq!(
        failed, 0,
        "{failed} of {n} replicas started together did not start"
    );
    started.into_iter().map(Result::unwrap).collect()
}

/// Runs the service on `store` expecting it to exit (a start-up error): its exit
/// code, its stderr, and how long it took. Killed (and a panic) after `limit`.
pub fn start_fails(
    store: &str,
    extra: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> (i32, String, Duration) {
    let data = tempfile::tempdir().unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .args(["--store", store])
        .args(extra)
        .env_remove("METADATA_TOKENS")
        .env_remove("PGPASSWORD")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let started = Instant::now();
    let mut child = command.spawn().unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout)
            );
            return (status.code().unwrap_or(-1), text, started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "the service on {store} did not exit within {limit:?}:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTP exchange that may fail without an answer (killed replica, no database).
pub fn request(
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Reply, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .accept_encoding(ureq::config::AutoHeaderValue::None)
        .timeout_global(Some(timeout))
        .build()
        .new_agent();
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (key, value) in headers {
        builder = builder.header(*key, *value);
    }
    let answer = match body {
        Some(body) => agent.run(builder.body(body.to_vec()).unwrap()),
        None => agent.run(builder.body(()).unwrap()),
    };
    let mut response = answer.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = response
        .body_mut()
        .read_to_vec()
        .map_err(|e| format!("answer cut: {e}"))?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// GET with the read token, on a base URL.
pub fn read_at(base: &str, path: &str) -> Result<Reply, String> {
    let (key, value) = fleet::bearer(fleet::READ_TOKEN);
    request(
        "GET",
        &format!("{base}{path}"),
        None,
        &[(key, &value)],
        Duration::from_secs(10),
    )
}

/// Polls `probe` (every 50 ms) until `Some`, or panics with `what` and the last
/// value seen after `timeout`; returns the value and how long it took.
pub fn poll<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(value) => return (value, start.elapsed()),
            Err(last) if start.elapsed() > timeout => {
                panic!("after {timeout:?}, still not {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A sha256 in hex, as PostgreSQL's `encode(sha256(bytes), 'hex')`.
pub fn digest(bytes: &[u8]) -> String {
    support::sha256_hex(bytes)
}

/// How long fleet views of one replica may lag behind another's writes.
pub const VIEW_LAG: Duration = Duration::from_secs(3);

/// Polls GET `path` on `base` (read token) until 200 with JSON that `pred` likes.
pub fn poll_json(base: &str, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    poll(VIEW_LAG, what, || {
        let reply = read_at(base, path)?;
        let json: Value = serde_json::from_slice(&reply.body)
            .map_err(|_| format!("{} {}", reply.status, reply.text()))?;
        if reply.status == 200 && pred(&json) {
            Ok(json)
        } else {
            Err(format!("{} {json}", reply.status))
        }
    })
    .0
}

/// Polls GET /hosts/{host} on `base` until its `last_seq` is the highest stored seq
/// and its gaps are exactly the missing seqs below it.
pub fn assert_host_view(
    base: &str,
    host: &str,
    stored: &BTreeSet<u64>,
    timeout: Duration,
) -> Duration {
    let last = *stored.iter().max().unwrap();
    let missing: BTreeSet<u64> = (1..=last).filter(|s| !stored.contains(s)).collect();
    let (_, took) = poll(timeout, &format!("{base} showing {host} at {last}"), || {
        let reply = read_at(base, &format!("/hosts/{host}"))?;
        let json: Value = serde_json::from_slice(&reply.body).map_err(|_| reply.text())?;
        if json["last_seq"].as_u64() != Some(last) {
            return Err(format!("{} {}", reply.status, json));
        }
        let mut gaps = BTreeSet::new();
        for gap in json["gaps"].as_array().cloned().unwrap_or_default() {
            let (from, to) = (gap[0].as_u64().unwrap(), gap[1].as_u64().unwrap());
            gaps.extend(from..=to);
        }
        if gaps != missing {
            return Err(format!("gaps {gaps:?}, missing {missing:?}: {json}"));
        }
        Ok(())
    });
    took
}

pub fn two(hint: &str) -> (String, Replica, Replica) {
    let url = pg::cluster().database(hint);
    let mut replicas = start_together(&url, 2);
    let b = replicas.pop().unwrap();
    (url, replicas.pop().unwrap(), b)
}

pub fn baseline_auth() -> (&'static str, String) {
    fleet::bearer(fleet::BASELINE_TOKEN)
}

/// An answer given without the database: 503 with Retry-After and a JSON body; or,
/// unless `must`, a whole 200 answer.
pub fn assert_unavailable(what: &str, reply: Result<Reply, String>, must: bool) {
    let reply = reply.unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
    if !must && reply.status == 200 {
        serde_json::from_slice::<Value>(&reply.body)
            .unwrap_or_else(|_| panic!("{what}: half an answer"));
        return;
    }
    assert_eq!(reply.status, 503, "{what}: {}", reply.text());
    let after = reply
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: 503 without Retry-After"));
    assert!(
        after.trim().parse::<u64>().is_ok_and(|s| s > 0),
        "{what}: Retry-After {after}"
    );
    serde_json::from_slice::<Value>(&reply.body).unwrap_or_else(|_| panic!("{what}: not JSON"));
}

pub fn healthz(base: &str) -> Result<Reply, String> {
    request(
        "GET",
        &format!("{base}/healthz"),
        None,
        &[],
        Duration::from_secs(10),
    )
}

/// What a replica answers without its database: 503 for whatever needs it (writes,
/// an unknown baseline, a signature: mutable), 503 or a whole answer for the rest.
pub fn assert_outage_answers(base: &str, key: &HostKey, host: &str, report: &[u8]) {
    let ten = Duration::from_secs(10);
    let (attempt, reply) = post_report(base, key, report, host, 2, ten);
    let reply = reply.ok_or(format!("{:?}", attempt.outcome));
    assert_unavailable("POST /reports", reply, true);
    let (k, v) = baseline_auth();
    let new = support::baseline("img-while-down", 3);
    let url = format!("{base}/baselines");
    let posted = request("POST", &url, Some(&new), &[(k, &v)], ten);
    assert_unavailable("POST /baselines", posted, true);
    let sig = format!("{url}/{IMG}/signature");
    let put = request("PUT", &sig, Some(SIG), &[(k, &v)], ten);
    assert_unavailable("PUT signature", put, true);
    for (path, must) in [
        (format!("{url}/img-nowhere"), true),
        (sig.clone(), true),
        (url.clone(), false),
        (format!("{url}/{IMG}"), false),
    ] {
        assert_unavailable(&path, request("GET", &path, None, &[], ten), must);
    }
    for path in [
        format!("/hosts/{host}"),
        "/fleet".into(),
        format!("/drift?image_id={IMG}"),
    ] {
        assert_unavailable(&path, read_at(base, &path), false);
    }
}

/// Whether GET /fleet JSON counts `n` hosts of [`IMG`] as `status`.
pub fn fleet_has(json: &Value, status: &str, n: u64) -> bool {
    json["images"].as_array().is_some_and(|images| {
        images
            .iter()
            .any(|e| e["image_id"] == IMG && e["hosts"][status] == n)
    })
}

/// Whether GET /drift JSON has /etc/motd on one host, `accepted` as given.
pub fn has_group(json: &Value, accepted: &Value) -> bool {
    json["groups"].as_array().is_some_and(|groups| {
        groups
            .iter()
            .any(|g| g["path"] == "/etc/motd" && g["hosts"] == 1 && &g["accepted"] == accepted)
    })
}

/// Sends report `seq` (`variant`) of `host` signed by `key` to `replica`.
pub fn send_seq(replica: &Replica, key: &HostKey, host: &str, seq: u64, variant: &str) -> Reply {
    let bytes = report_bytes(host, seq, variant);
    fleet::send_bytes(&replica.server, key, &bytes, host, seq)
}

/// Sends a report and asserts a 409 naming `last` as the host's last seq.
pub fn assert_replay(replica: &Replica, key: &HostKey, host: &str, report: (u64, &str), last: u64) {
    let (seq, variant) = report;
    let answer = send_seq(replica, key, host, seq, variant);
    let what = format!(
        "seq {seq}{variant} on {}: {}",
        replica.base(),
        answer.text()
    );
    assert_eq!(answer.status, 409, "{what}");
    assert_eq!(answer.json()["last_seq"], last, "{what}");
}

/// The status of GET `path` (no token).
pub fn status_of(server: &Server, path: &str) -> u16 {
    support::get(server, path, &[]).status
}
