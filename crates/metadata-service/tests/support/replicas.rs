//! Helpers of `tests/replicas.rs` (DESIGN §13): replicas of the service on one
//! PostgreSQL database, a PostgreSQL cluster of our own that can be stopped and
//! started again, a simulated agent that fails over between replicas, and the checks
//! of what was acknowledged against what the database holds.

#![allow(dead_code)]

use crate::support::fleet::{self, HostKey};
use crate::support::{self, pg, Reply, Server, BIN};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const IMG: &str = "img-replicas";

/// A minisign signature (of something else: nothing checks it without a collector key).
pub const SIG: &[u8] = b"untrusted comment: signature from minisign secret key\nRUQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3r2T2kbgJUCI+PmuzVBwBuAWD3n8tLZ7Fz4uHs0aqugI=\ntrusted comment: timestamp:1556193335\tfile:test\ny/rUw2y8/hOUYjZU71eHp/Wo1KZ40fGy2VJEDl34XMJM+TX48Ss/17u3IvIfbVR1FkZZSNCisQbuQY+bHwhEBg==\n";

/// The database name of a URL of `pg::Cluster` or [`OwnCluster`].
pub fn db_name(url: &str) -> &str {
    url.split('?').next().unwrap().rsplit('/').next().unwrap()
}

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

/// One POST /reports and what came of it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub host: String,
    pub seq: u64,
    pub digest: String,
    pub replica: String,
    pub start: Instant,
    pub end: Instant,
    /// The status and body, or why there was no answer.
    pub outcome: Result<(u16, String), String>,
    pub retry_after: Option<String>,
}

impl Attempt {
    pub fn status(&self) -> Option<u16> {
        self.outcome.as_ref().ok().map(|(status, _)| *status)
    }
    pub fn acked(&self) -> bool {
        matches!(self.status(), Some(200 | 201))
    }
}

/// Posts a signed report to `base`, timed.
pub fn post_report(
    base: &str,
    key: &HostKey,
    bytes: &[u8],
    host: &str,
    seq: u64,
    timeout: Duration,
) -> (Attempt, Option<Reply>) {
    let signature = integrity_trust::to_header(&key.sign(bytes, host, seq));
    let (auth, token) = fleet::bearer(fleet::REPORT_TOKEN);
    let key_header = key.key_header();
    let start = Instant::now();
    let answer = request(
        "POST",
        &format!("{base}/reports"),
        Some(bytes),
        &[
            (auth, &token),
            ("Content-Type", "application/json"),
            ("X-Bulletproof-Signature", &signature),
            ("X-Bulletproof-Host-Key", &key_header),
        ],
        timeout,
    );
    let attempt = Attempt {
        host: host.to_owned(),
        seq,
        digest: digest(bytes),
        replica: base.to_owned(),
        start,
        end: Instant::now(),
        outcome: answer
            .as_ref()
            .map(|r| (r.status, r.text()))
            .map_err(Clone::clone),
        retry_after: answer
            .as_ref()
            .ok()
            .and_then(|r| r.header("retry-after").map(str::to_owned)),
    };
    (attempt, answer.ok())
}

/// The bytes of report `seq` of `host`; `variant` makes other bytes for the same seq.
pub fn report_bytes(host: &str, seq: u64, variant: &str) -> Vec<u8> {
    // One time for the whole run: the same (host, seq, variant) is the same bytes.
    static AT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let at = AT.get_or_init(fleet::now);
    let mut report = fleet::report(host, IMG, seq);
    report.agent_version = format!("0.1.0-test{variant}");
    (report.started, report.finished) = (at.clone(), at.clone());
    report.to_bytes()
}

/// Posts `bytes` until a definitive answer (retrying 429/503 on the same replica),
/// every attempt logged; the last attempt.
pub fn post_until_definitive(
    base: &str,
    key: &HostKey,
    bytes: &[u8],
    host: &str,
    seq: u64,
    log: &Mutex<Vec<Attempt>>,
) -> Attempt {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (attempt, _) = post_report(base, key, bytes, host, seq, Duration::from_secs(10));
        log.lock().unwrap().push(attempt.clone());
        let retry = matches!(attempt.status(), Some(429 | 503));
        if !retry || Instant::now() > deadline {
            return attempt;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// A simulated agent: sends report after report (`seq` from 1), each until it is
/// acknowledged: starting at its first URL, the next on a connection error, timeout
/// or 5xx, later again on 429/503; a 4xx other than 429 drops the report (logged).
pub fn run_agent(
    host: &str,
    urls: Vec<String>,
    stop: &AtomicBool,
    log: &Mutex<Vec<Attempt>>,
    pause: Duration,
) {
    let key = HostKey::new();
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let bytes = report_bytes(host, seq, "");
        // The report in hand is finished even after `stop` (bounded).
        let deadline = Instant::now() + Duration::from_secs(12);
        let mut at = 0;
        while Instant::now() < deadline {
            let (attempt, _) =
                post_report(&urls[at], &key, &bytes, host, seq, Duration::from_secs(5));
            let status = attempt.status();
            log.lock().unwrap().push(attempt);
            match status {
                Some(200 | 201) => break,
                Some(429 | 503) => {
                    at = (at + 1) % urls.len();
                    std::thread::sleep(Duration::from_millis(150));
                }
                None | Some(500..=599) => {
                    at = (at + 1) % urls.len();
                    std::thread::sleep(Duration::from_millis(20));
                }
                Some(_) => break,
            }
        }
        std::thread::sleep(pause);
    }
}

/// `(host, seq) -> digest of the bytes` of every report in the database.
pub fn stored_reports(psql: impl Fn(&str) -> String) -> BTreeMap<(String, u64), String> {
    psql("SELECT host_id, seq, encode(sha256(bytes), 'hex') FROM reports")
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split('|').collect();
            (
                (fields[0].to_owned(), fields[1].parse().unwrap()),
                fields[2].to_owned(),
            )
        })
        .collect()
}

/// The contract's checks of a log of report attempts against the database; the
/// violations found (empty: none). `allow_no_answer`: requests may fail without an
/// answer (a killed replica).
pub fn violations(
    log: &[Attempt],
    stored: &BTreeMap<(String, u64), String>,
    allow_no_answer: bool,
) -> Vec<String> {
    let mut found = Vec::new();
    let mut acked: BTreeMap<(String, u64), BTreeSet<String>> = BTreeMap::new();
    for a in log {
        match &a.outcome {
            Ok((status, body)) => match status {
                200 | 201 => {
                    acked
                        .entry((a.host.clone(), a.seq))
                        .or_default()
                        .insert(a.digest.clone());
                }
                409 => {
                    let last = serde_json::from_str::<Value>(body)
                        .ok()
                        .and_then(|v| v["last_seq"].as_u64());
                    match last {
                        Some(last) if last >= a.seq => {}
                        _ => found.push(format!(
                            "409 for seq {} with last_seq {last:?}: {body}",
                            a.seq
                        )),
                    }
                }
                429 | 503 if a.retry_after.is_none() => {
                    found.push(format!("{status} without Retry-After: {body}"))
                }
                429 | 503 => {}
                other => found.push(format!(
                    "status {other} for seq {} of {}: {body}",
                    a.seq, a.host
                )),
            },
            Err(error) if !allow_no_answer => found.push(format!(
                "no answer for seq {} from {}: {error}",
                a.seq, a.replica
            )),
            Err(_) => {}
        }
    }
    for ((host, seq), digests) in &acked {
        if digests.len() > 1 {
            found.push(format!(
                "{host} seq {seq}: two different reports acknowledged"
            ));
        }
        match stored.get(&(host.clone(), *seq)) {
            None => found.push(format!(
                "{host} seq {seq}: acknowledged but not stored (lost)"
            )),
            Some(d) if !digests.contains(d) => found.push(format!(
                "{host} seq {seq}: stored bytes are not the acknowledged ones"
            )),
            Some(_) => {}
        }
    }
    for ((host, seq), d) in stored {
        if acked.contains_key(&(host.clone(), *seq)) {
            continue;
        }
        let unanswered = log
            .iter()
            .any(|a| &a.host == host && a.seq == *seq && &a.digest == d && a.outcome.is_err());
        if !unanswered {
            found.push(format!("{host} seq {seq}: stored, but never acknowledged"));
        }
    }
    // A 201 after an acknowledgement (completed before it was sent) of a seq as high.
    for y in log.iter().filter(|a| a.status() == Some(201)) {
        if let Some(x) = log.iter().find(|x| {
            x.acked()
                && x.host == y.host
                && x.seq >= y.seq
                && x.end < y.start
                && !std::ptr::eq(*x, y)
        }) {
            found.push(format!(
                "{} seq {} got 201 after seq {} was acknowledged ({})",
                y.host, y.seq, x.seq, x.replica
            ));
        }
    }
    // A 409 for exactly the bytes stored: the very same report again must be 200.
    for y in log.iter().filter(|a| a.status() == Some(409)) {
        if stored.get(&(y.host.clone(), y.seq)) == Some(&y.digest) {
            found.push(format!(
                "{} seq {}: 409 for the stored bytes",
                y.host, y.seq
            ));
        }
    }
    // A 409 for exactly the bytes acknowledged before it was sent: must be 200.
    for y in log.iter().filter(|a| a.status() == Some(409)) {
        if log.iter().any(|x| {
            x.acked()
                && x.host == y.host
                && x.seq == y.seq
                && x.digest == y.digest
                && x.end < y.start
        }) {
            found.push(format!(
                "{} seq {}: 409 for the very same stored bytes",
                y.host, y.seq
            ));
        }
    }
    found
}

/// How many reports of `host` were acknowledged to attempts sent after `since`.
pub fn acks_after(log: &Mutex<Vec<Attempt>>, host: &str, since: Instant) -> usize {
    let log = log.lock().unwrap();
    log.iter()
        .filter(|a| a.host == host && a.acked() && a.start > since)
        .count()
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

/// The password of `pg::PASSWORD_ROLE`: it must appear in no log.
pub const PASSWORD: &str = "right-Pa55-c0ffee-replicas";
pub const WRONG: &str = "Wr0ng-Pa55-5ecret-d00d";

pub fn two(hint: &str) -> (String, Replica, Replica) {
    let url = pg::cluster().database(hint);
    let mut replicas = start_together(&url, 2);
    let b = replicas.pop().unwrap();
    (url, replicas.pop().unwrap(), b)
}

pub fn stored_of(url: &str, hosts: &[&str]) -> std::collections::BTreeMap<(String, u64), String> {
    stored_reports(|sql| pg::cluster().psql(db_name(url), sql))
        .into_iter()
        .filter(|((host, _), _)| hosts.contains(&host.as_str()))
        .collect()
}

pub fn seqs_of(
    stored: &std::collections::BTreeMap<(String, u64), String>,
    host: &str,
) -> BTreeSet<u64> {
    stored
        .keys()
        .filter(|(h, _)| h == host)
        .map(|(_, s)| *s)
        .collect()
}

pub fn baseline_auth() -> (&'static str, String) {
    fleet::bearer(fleet::BASELINE_TOKEN)
}

pub fn password_db(hint: &str) -> (String, &'static pg::Cluster) {
    let cluster = pg::cluster();
    cluster.password_role(PASSWORD);
    let url = cluster.database(hint);
    (db_name(&url).to_owned(), cluster)
}

pub fn password_file(password: &str) -> (tempfile::TempDir, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgpassword");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = file.display().to_string();
    (dir, path)
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

/// Posts one report to each of two replicas at the same moment (`(seq, variant)`
/// each), each until a definitive answer; the two statuses.
pub fn race_pair(
    bases: [&str; 2],
    host: &str,
    key: &HostKey,
    reports: [(u64, &str); 2],
    log: &Mutex<Vec<Attempt>>,
) -> (Option<u16>, Option<u16>) {
    let barrier = Barrier::new(2);
    let go = |base: &str, (seq, variant): (u64, &str)| {
        let bytes = report_bytes(host, seq, variant);
        barrier.wait();
        post_until_definitive(base, key, &bytes, host, seq, log).status()
    };
    std::thread::scope(|s| {
        let go = &go;
        let a = s.spawn(move || go(bases[0], reports[0]));
        let b = s.spawn(move || go(bases[1], reports[1]));
        (a.join().unwrap(), b.join().unwrap())
    })
}

/// Four clients, two on each replica, post `host`'s reports 1..=`total` as fast as
/// they can, seqs taken from one counter; the log.
pub fn flood(bases: &[String; 2], host: &str, key: &HostKey, total: u64) -> Vec<Attempt> {
    let (log, next) = (Mutex::new(Vec::new()), AtomicU64::new(0));
    std::thread::scope(|s| {
        for n in 0..4 {
            let (base, log, next) = (&bases[n % 2], &log, &next);
            s.spawn(move || loop {
                let seq = next.fetch_add(1, Ordering::SeqCst) + 1;
                if seq > total {
                    break;
                }
                let bytes = report_bytes(host, seq, "");
                post_until_definitive(base, key, &bytes, host, seq, log);
            });
        }
    });
    log.into_inner().unwrap()
}

/// How many attempts got each status (`none`: no answer).
pub fn summary(log: &[Attempt]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for a in log {
        let key = a.status().map_or("none".to_owned(), |s| s.to_string());
        *counts.entry(key).or_default() += 1;
    }
    format!("{counts:?}")
}

/// `(version, rows)` of `bulletproof_schema_version`, by version.
pub fn schema_versions(url: &str) -> Vec<(i64, i64)> {
    pg::cluster()
        .psql(
            db_name(url),
            "SELECT version, count(*) FROM bulletproof_schema_version GROUP BY version ORDER BY 1",
        )
        .lines()
        .map(|l| l.split_once('|').unwrap())
        .map(|(v, c)| (v.parse().unwrap(), c.parse().unwrap()))
        .collect()
}

/// The status of GET `path` (no token).
pub fn status_of(server: &Server, path: &str) -> u16 {
    support::get(server, path, &[]).status
}

/// Waits until agents sent after `since` got `n` 503s, from every one of `urls`.
pub fn wait_for_503s(log: &Mutex<Vec<Attempt>>, since: Instant, urls: &[String], n: usize) {
    poll(
        Duration::from_secs(8),
        "503s while the database is down",
        || {
            let log = log.lock().unwrap();
            let refused: Vec<&Attempt> = log
                .iter()
                .filter(|a| a.start > since && a.status() == Some(503))
                .collect();
            let every = urls.iter().all(|u| refused.iter().any(|a| &a.replica == u));
            (every && refused.len() >= n)
                .then_some(())
                .ok_or_else(|| format!("{} 503s", refused.len()))
        },
    );
}

/// Runs agents (`hosts`, URL orders alternating) until `disrupt` has happened and each
/// host has three reports acknowledged after it; returns the log.
pub fn agents_through(
    hosts: &[String],
    urls: [String; 2],
    pause: Duration,
    disrupt: impl FnOnce(&Mutex<Vec<Attempt>>) -> Instant,
) -> Vec<Attempt> {
    let (stop, log) = (AtomicBool::new(false), Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        for (n, host) in hosts.iter().enumerate() {
            let mut order = urls.to_vec();
            if n % 2 == 1 {
                order.reverse();
            }
            let (stop, log) = (&stop, &log);
            s.spawn(move || run_agent(host, order, stop, log, pause));
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let warm = Instant::now();
            poll(Duration::from_secs(10), "every agent reporting", || {
                hosts
                    .iter()
                    .all(|h| acks_after(&log, h, warm) >= 3)
                    .then_some(())
                    .ok_or_else(String::new)
            });
            let after = disrupt(&log);
            poll(
                Duration::from_secs(15),
                "every agent reporting afterwards",
                || {
                    let counts: Vec<usize> =
                        hosts.iter().map(|h| acks_after(&log, h, after)).collect();
                    counts
                        .iter()
                        .all(|n| *n >= 3)
                        .then_some(())
                        .ok_or_else(|| format!("{counts:?}"))
                },
            )
        }));
        stop.store(true, Ordering::Relaxed);
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    });
    log.into_inner().unwrap()
}

// A PostgreSQL cluster of our own, stopped and started at will.

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// `program` as the cluster's owner: `nobody` when we are root.
fn as_owner(program: &Path) -> Command {
    let mut command = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]);
        c.arg(program);
        c
    } else {
        Command::new(program)
    };
    command.stdin(Stdio::null()).current_dir("/");
    command
}

fn run(mut command: Command, what: &str) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn server_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server programs in /usr/lib/postgresql (apt-get install postgresql)")
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("pg_ctl").is_file())
        .collect();
    found.sort();
    found.pop().expect("no /usr/lib/postgresql/*/bin/pg_ctl").1
}

/// A cluster on a unix socket in a temp dir, run as `nobody` when we are root. A
/// watchdog (reading a pipe we hold) stops it and removes the dir when we are gone.
pub struct OwnCluster {
    bin: PathBuf,
    root: PathBuf,
    data: PathBuf,
    socket: PathBuf,
    watchdog: Option<(Child, ChildStdin)>,
}

impl OwnCluster {
    pub fn new() -> OwnCluster {
        let bin = server_bin();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let root = PathBuf::from(format!(
            "/tmp/bp-rpg-{}-{}",
            std::process::id(),
            nanos % 1_000_000_000
        ));
        let (data, socket) = (root.join("data"), root.join("sock"));
        std::fs::create_dir_all(&socket).unwrap();
        if is_root() {
            let mut chown = Command::new("chown");
            chown.args(["-R", "nobody:nogroup"]).arg(&root);
            run(chown, "chown");
        }
        let stop_as = if is_root() {
            "setpriv --reuid=nobody --regid=nogroup --clear-groups --"
        } else {
            ""
        };
        let mut watchdog = Command::new("sh")
            .args([
                "-c",
                "trap '' INT TERM HUP; read _; \
                 $PG_AS \"$PG_CTL\" -D \"$PG_DATA\" stop -m immediate -w >/dev/null 2>&1; \
                 rm -rf \"$PG_ROOT\"",
            ])
            .env("PG_AS", stop_as)
            .env("PG_CTL", bin.join("pg_ctl"))
            .env("PG_DATA", &data)
            .env("PG_ROOT", &root)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pipe = watchdog.stdin.take().unwrap();
        let cluster = OwnCluster {
            bin: bin.clone(),
            root,
            data: data.clone(),
            socket,
            watchdog: Some((watchdog, pipe)),
        };
        let mut initdb = as_owner(&bin.join("initdb"));
        initdb
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
                "-D",
            ])
            .arg(&data);
        run(initdb, "initdb");
        cluster.start();
        cluster
    }

    pub fn start(&self) {
        let mut pg_ctl = as_owner(&self.bin.join("pg_ctl"));
        pg_ctl
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.root.join("server.log"))
            .args(["-w", "-t", "30", "-o"])
            .arg(format!(
                "-k {} -p 5432 -c listen_addresses='' -c fsync=off -c max_connections=200",
                self.socket.display()
            ))
            .arg("start");
        run(pg_ctl, "pg_ctl start");
    }

    /// Stops the server as a crash would (`-m immediate`): every connection cut.
    pub fn stop(&self) {
        let mut pg_ctl = as_owner(&self.bin.join("pg_ctl"));
        pg_ctl
            .arg("-D")
            .arg(&self.data)
            .args(["stop", "-m", "immediate", "-w"]);
        run(pg_ctl, "pg_ctl stop");
    }

    pub fn url(&self, name: &str) -> String {
        format!(
            "postgresql:///{name}?host={}&port=5432&user=postgres",
            self.socket.display()
        )
    }

    pub fn database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    pub fn psql(&self, name: &str, sql: &str) -> String {
        let mut psql = Command::new(self.bin.join("psql"));
        psql.arg("-h")
            .arg(&self.socket)
            .args(["-p", "5432", "-U", "postgres", "-X", "-q", "-A", "-t"])
            .args(["-v", "ON_ERROR_STOP=1", "-d", name, "-c", sql])
            .stdin(Stdio::null());
        run(psql, &format!("psql {sql:?}"))
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        if let Some((mut child, mut pipe)) = self.watchdog.take() {
            let _ = pipe.flush();
            drop(pipe);
            let _ = child.wait();
        }
    }
}
