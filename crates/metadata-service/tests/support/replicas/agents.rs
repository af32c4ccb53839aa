//! Simulated agents and what they were told: every POST /reports an [`Attempt`] in a
//! log; an agent failing over between replicas ([`run_agent`], [`agents_through`]),
//! races and floods of one host's reports on two replicas; and the contract's checks of
//! such a log against the reports the database holds ([`violations`]).

use super::cluster::db_name;
use super::{digest, poll, request, IMG};
use crate::support::fleet::{self, HostKey};
use crate::support::{pg, Reply};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

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

pub fn stored_of(url: &str, hosts: &[&str]) -> BTreeMap<(String, u64), String> {
    stored_reports(|sql| pg::cluster().psql(db_name(url), sql))
        .into_iter()
        .filter(|((host, _), _)| hosts.contains(&host.as_str()))
        .collect()
}

pub fn seqs_of(stored: &BTreeMap<(String, u64), String>, host: &str) -> BTreeSet<u64> {
    stored
        .keys()
        .filter(|(h, _)| h == host)
        .map(|(_, s)| *s)
        .collect()
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
