//! `fleet-sim`: the fleet benchmark of issue 18 (docs/BENCHMARKS.md). N simulated hosts,
//! each with its own minisign key, enroll (their first report carries the host key),
//! then every interval revalidate their baseline (`If-None-Match` → `304`) and post a
//! signed report (mostly clean; `--drift-percent` of the hosts carry `--anomalies`
//! findings that repeat across hosts). `--rate R1,R2,…` instead runs an open-loop
//! ingest ramp: reports only, R per second for `--duration` seconds each.
//! `--duration 0` stops after the enrollment (to fill a store, e.g. for the pages'
//! benchmark of issue 19), still verifying and timing the reads.
//!
//! At the end it checks what the service stored against what it acknowledged (lost =
//! acknowledged but not stored), reads the service's RSS (`--service-pid`) and times
//! `GET /fleet` and `GET /drift`. Prints a summary; `--json` writes every figure.
//!
//! Latency is measured two ways: request sent → whole answer read (`latency`), and
//! scheduled time → whole answer read (`sojourn`: it adds the wait for one of the
//! `--connections` slots, so an overloaded service cannot hide behind a client that
//! slowed down — no coordinated omission).

mod hosts;
mod stats;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use hosts::{Baseline, Host};
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use stats::{KindSummary, Percentiles, Stats};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(
    name = "fleet-sim",
    about = "Simulates a fleet of agents against a metadata-service (issue 18's benchmark)"
)]
struct Cli {
    /// Base URL of the service, e.g. http://127.0.0.1:8080
    #[arg(long)]
    server: String,
    /// File holding the token (scope admin or report): its first line, either the bare
    /// secret or the service's SCOPE:NAME:SECRET form. Never printed.
    #[arg(long, value_name = "FILE")]
    token_file: PathBuf,
    /// Token for the reads (GET /fleet, /drift, /hosts) when --token-file is report-only
    #[arg(long, value_name = "FILE")]
    read_token_file: Option<PathBuf>,
    /// Simulated hosts
    #[arg(long, default_value_t = 1000)]
    hosts: usize,
    /// Seconds between two checks of a host (steady state)
    #[arg(long, default_value_t = 300)]
    interval: u64,
    /// Seconds of steady state, or of each --rate step; 0: enrollment only (no steady
    /// state, no ramp)
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// Open-loop ingest instead of the interval: reports per second, one step per
    /// comma-separated value (e.g. 500,1000,2000), --duration seconds each
    #[arg(long, value_delimiter = ',', value_name = "R")]
    rate: Vec<f64>,
    /// Image id the hosts run (its baseline must be stored)
    #[arg(long)]
    image_id: String,
    /// Percent of the hosts that drifted
    #[arg(long, default_value_t = 1.0)]
    drift_percent: f64,
    /// Anomalies in a drifted host's report
    #[arg(long, default_value_t = 20)]
    anomalies: usize,
    /// Drift scenarios the drifted hosts follow in turn (each its own anomalies, so
    /// about scenarios × anomalies drift groups: 5 give 96, 27 give 514)
    #[arg(long, default_value_t = hosts::DEFAULT_SCENARIOS)]
    scenarios: usize,
    /// Seed of the host ids and of which hosts drift
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write every figure here as JSON
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
    /// Pid of the service, for its RSS (sampled every second)
    #[arg(long)]
    service_pid: Option<u32>,
    /// Requests in flight at most (connections kept alive); the service's default
    /// per-client cap is 64
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Timed runs of GET /fleet and GET /drift
    #[arg(long, default_value_t = 10)]
    read_runs: usize,
    /// Seconds before a request counts as failed
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Skip the enrollment phase (hosts of this seed already enrolled and nothing else)
    #[arg(long)]
    no_enroll: bool,
}

/// A token file's secret: the first non-empty, non-comment line; a service-style
/// `SCOPE:NAME:SECRET` line gives its SECRET.
fn read_token(path: &Path) -> Result<String> {
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

fn bearer(secret: &str) -> Result<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {secret}"))
        .map_err(|_| anyhow::anyhow!("the token is not a valid header value"))?;
    value.set_sensitive(true);
    Ok(value)
}

struct Answer {
    status: u16,
    etag: Option<String>,
    body: Bytes,
}

struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    auth: HeaderValue,
    read_auth: HeaderValue,
    timeout: Duration,
}

impl Http {
    fn uri(&self, path: &str) -> Uri {
        format!("{}{path}", self.base)
            .parse()
            .expect("a valid URI from a valid base")
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<Answer, String> {
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

    async fn get(&self, path: &str, auth: bool) -> Result<Answer, String> {
        let mut request = Request::builder().method(Method::GET).uri(self.uri(path));
        if auth {
            request = request.header(AUTHORIZATION, self.read_auth.clone());
        }
        self.send(request.body(Full::new(Bytes::new())).expect("a request"))
            .await
    }
}

/// The shared state of a run.
struct Sim {
    http: Http,
    hosts: Vec<Host>,
    baseline: Baseline,
    etag: String,
    anomalies: usize,
    stats: Stats,
    slots: Arc<Semaphore>,
    /// Events waiting for a slot; beyond `max_queue` new events are dropped (counted).
    queued: AtomicUsize,
    max_queue: usize,
    dropped_overload: AtomicU64,
    skipped_busy: AtomicU64,
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

impl Sim {
    /// Posts the next report of `host`; true when acknowledged (201, or 200 = the same
    /// report again).
    async fn post_report(
        &self,
        host: usize,
        kind: &str,
        interval_secs: Option<u64>,
        scheduled: Instant,
    ) -> bool {
        let host = &self.hosts[host];
        let seq = {
            let mut state = host.state.lock().expect("host lock");
            state.next_seq += 1;
            state.next_seq - 1
        };
        let signed = match host.signed_report(seq, &self.baseline, interval_secs, self.anomalies) {
            Ok(signed) => signed,
            Err(error) => {
                self.stats.note(kind, format!("signing: {error}"));
                return false;
            }
        };
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.http.uri("/reports"))
            .header(AUTHORIZATION, self.http.auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("x-bulletproof-signature", signed.signature_header)
            .header("x-bulletproof-host-key", host.key_header.as_str())
            .body(Full::new(Bytes::from(signed.bytes)))
            .expect("a request");
        let sent = Instant::now();
        let answer = self.http.send(request).await;
        let (latency, sojourn) = (sent.elapsed(), scheduled.elapsed());
        let ok = matches!(&answer, Ok(answer) if answer.status == 201 || answer.status == 200);
        if ok {
            host.state.lock().expect("host lock").acked.push(seq);
        } else if let Ok(answer) = &answer {
            self.stats.note(
                kind,
                format!("{} seq {seq}: {}", answer.status, snippet(&answer.body)),
            );
        }
        self.stats
            .record(kind, latency, sojourn, answer.map(|a| a.status), ok);
        ok
    }

    /// `GET /baselines/{id}` with `If-None-Match`; true on `304`.
    async fn revalidate(&self, scheduled: Instant) -> bool {
        let request = Request::builder()
            .method(Method::GET)
            .uri(
                self.http
                    .uri(&format!("/baselines/{}", self.baseline.image_id)),
            )
            .header(IF_NONE_MATCH, self.etag.as_str())
            .body(Full::new(Bytes::new()))
            .expect("a request");
        let sent = Instant::now();
        let answer = self.http.send(request).await;
        let (latency, sojourn) = (sent.elapsed(), scheduled.elapsed());
        let ok = matches!(&answer, Ok(answer) if answer.status == 304);
        self.stats
            .record("revalidate", latency, sojourn, answer.map(|a| a.status), ok);
        ok
    }

    /// One scheduled check of a host: wait for a slot, optionally revalidate, report.
    async fn check(
        self: Arc<Self>,
        host: usize,
        kind: String,
        interval_secs: Option<u64>,
        revalidate: bool,
        scheduled: Instant,
    ) {
        {
            let mut state = self.hosts[host].state.lock().expect("host lock");
            if state.in_flight {
                self.skipped_busy.fetch_add(1, Ordering::Relaxed);
                return;
            }
            state.in_flight = true;
        }
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.max_queue {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.dropped_overload.fetch_add(1, Ordering::Relaxed);
            self.hosts[host].state.lock().expect("host lock").in_flight = false;
            return;
        }
        let permit = self.slots.acquire().await.expect("slots stay open");
        self.queued.fetch_sub(1, Ordering::Relaxed);
        if revalidate {
            self.revalidate(scheduled).await;
        }
        self.post_report(host, &kind, interval_secs, scheduled)
            .await;
        drop(permit);
        self.hosts[host].state.lock().expect("host lock").in_flight = false;
    }
}

/// Waits for the tasks of a phase; returns when the last one ended.
async fn drain(tasks: &mut JoinSet<()>) -> Instant {
    while tasks.join_next().await.is_some() {}
    Instant::now()
}

/// Phase 1: every host posts its first report (carrying its key), closed loop, as many
/// at once as there are slots.
async fn enroll(sim: &Arc<Sim>, interval_secs: Option<u64>, pid: Option<u32>) -> Value {
    let cpu = Cpu::start(pid);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for host in 0..sim.hosts.len() {
        let permit = sim.slots.clone().acquire_owned().await.expect("open");
        let sim = sim.clone();
        tasks.spawn(async move {
            sim.post_report(host, "enroll", interval_secs, Instant::now())
                .await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    let elapsed = drain(&mut tasks).await - start;
    let summary = sim.stats.summary("enroll");
    print_kind("enroll", &summary, elapsed, None);
    let mut value = phase_json("enroll", &summary, elapsed, None);
    value["cpu"] = cpu.stop("enroll");
    value
}

/// Phase 2 (interval mode): each host checks every `interval` seconds, the hosts spread
/// evenly over the interval, for `duration` seconds.
async fn steady(sim: &Arc<Sim>, interval: u64, duration: u64, pid: Option<u32>) -> Value {
    let cpu = Cpu::start(pid);
    let hosts = sim.hosts.len();
    let start = Instant::now();
    let end = start + Duration::from_secs(duration);
    let mut tasks = JoinSet::new();
    let mut scheduled = 0u64;
    for event in 0u64.. {
        let (cycle, host) = (event / hosts as u64, (event % hosts as u64) as usize);
        let offset = interval as f64 * (cycle as f64 + (host as f64 + 0.5) / hosts as f64);
        let at = start + Duration::from_secs_f64(offset);
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at).await;
        tasks.spawn(
            sim.clone()
                .check(host, "report".into(), Some(interval), true, at),
        );
        scheduled += 1;
        while tasks.try_join_next().is_some() {}
    }
    let elapsed = drain(&mut tasks).await - start;
    let (revalidate, report) = (sim.stats.summary("revalidate"), sim.stats.summary("report"));
    let target = hosts as f64 / interval as f64;
    print_kind("revalidate", &revalidate, elapsed, Some(target));
    print_kind("report", &report, elapsed, Some(target));
    let cpu = cpu.stop("steady");
    json!({"phase": "steady", "cpu": cpu, "interval_secs": interval, "duration_secs": duration,
           "scheduled_checks": scheduled, "target_rate": target,
           "elapsed_secs": elapsed.as_secs_f64(),
           "revalidate": phase_json("revalidate", &revalidate, elapsed, Some(target)),
           "report": phase_json("report", &report, elapsed, Some(target))})
}

/// Phase 2 (rate mode): open-loop steps of R reports per second, hosts in turn.
async fn ramp(
    sim: &Arc<Sim>,
    rates: &[f64],
    duration: u64,
    interval_secs: Option<u64>,
    pid: Option<u32>,
) -> (Vec<Value>, Option<f64>) {
    let hosts = sim.hosts.len();
    let mut next_host = 0usize;
    let mut steps = Vec::new();
    let mut knee = None;
    for &rate in rates {
        let kind = format!("report@{rate}");
        let (dropped0, busy0) = (
            sim.dropped_overload.load(Ordering::Relaxed),
            sim.skipped_busy.load(Ordering::Relaxed),
        );
        let cpu = Cpu::start(pid);
        let start = Instant::now();
        let end = start + Duration::from_secs(duration);
        let mut tasks = JoinSet::new();
        let mut scheduled = 0u64;
        for event in 0u64.. {
            let at = start + Duration::from_secs_f64(event as f64 / rate);
            if at >= end {
                break;
            }
            tokio::time::sleep_until(at).await;
            tasks.spawn(
                sim.clone()
                    .check(next_host, kind.clone(), interval_secs, false, at),
            );
            next_host = (next_host + 1) % hosts;
            scheduled += 1;
            while tasks.try_join_next().is_some() {}
        }
        let elapsed = drain(&mut tasks).await - start;
        let summary = sim.stats.summary(&kind);
        let dropped = sim.dropped_overload.load(Ordering::Relaxed) - dropped0;
        let busy = sim.skipped_busy.load(Ordering::Relaxed) - busy0;
        let achieved = summary.ok as f64 / elapsed.as_secs_f64();
        let good = summary.not_ok == 0
            && dropped == 0
            && busy == 0
            && summary.ok == scheduled
            && achieved >= 0.95 * rate
            && summary.sojourn.p99 <= 100.0;
        if good && knee.is_none_or(|k| rate > k) {
            knee = Some(rate);
        }
        print_kind(&kind, &summary, elapsed, Some(rate));
        if dropped + busy > 0 {
            println!("  {kind}: {dropped} dropped (client queue full), {busy} skipped (host busy)");
        }
        let mut step = phase_json(&kind, &summary, elapsed, Some(rate));
        step["cpu"] = cpu.stop(&kind);
        step["rate"] = json!(rate);
        step["scheduled"] = json!(scheduled);
        step["dropped_overload"] = json!(dropped);
        step["skipped_busy"] = json!(busy);
        step["within_goal"] = json!(good);
        steps.push(step);
    }
    (steps, knee)
}

fn print_kind(kind: &str, summary: &KindSummary, elapsed: Duration, target: Option<f64>) {
    let l = summary.latency;
    let s = summary.sojourn;
    let rate = summary.ok as f64 / elapsed.as_secs_f64();
    println!(
        "{kind:>14}: {} ok, {} not ok, {rate:.0}/s{} | latency ms p50 {:.1} p90 {:.1} p99 {:.1} max {:.1} | sojourn p99 {:.1} max {:.1} | {:?}",
        summary.ok,
        summary.not_ok,
        target.map_or(String::new(), |t| format!(" (target {t:.0}/s)")),
        l.p50,
        l.p90,
        l.p99,
        l.max,
        s.p99,
        s.max,
        summary.outcomes
    );
    for sample in &summary.samples {
        println!("{kind:>14}  ! {sample}");
    }
}

fn phase_json(kind: &str, summary: &KindSummary, elapsed: Duration, target: Option<f64>) -> Value {
    let mut value = summary.to_json();
    value["kind"] = json!(kind);
    value["elapsed_secs"] = json!(elapsed.as_secs_f64());
    value["achieved_rate"] = json!(summary.ok as f64 / elapsed.as_secs_f64());
    value["target_rate"] = json!(target);
    value
}

/// What the service stored for a host: its last seq and its gaps.
struct Stored {
    last_seq: u64,
    gaps: Vec<(u64, u64)>,
}

fn stored_of(host: &Value) -> Option<(String, Stored)> {
    let id = host.get("host_id")?.as_str()?.to_owned();
    let last_seq = host.get("last_seq").and_then(Value::as_u64).unwrap_or(0);
    let gaps = host
        .get("gaps")
        .and_then(Value::as_array)
        .map(|gaps| {
            gaps.iter()
                .filter_map(|gap| Some((gap.get(0)?.as_u64()?, gap.get(1)?.as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    Some((id, Stored { last_seq, gaps }))
}

/// Compares acknowledged reports with what the service stored. Uses the paged
/// `GET /hosts?image_id=` listing when it gives `last_seq`, else `GET /hosts/{id}` for
/// every host.
async fn verify(sim: &Arc<Sim>) -> Value {
    let start = Instant::now();
    let mut stored: HashMap<String, Stored> = HashMap::new();
    let mut method = "GET /hosts?image_id= (paged)";
    let mut after: Option<String> = None;
    let mut listing_ok = true;
    loop {
        let mut path = format!("/hosts?image_id={}&limit=1000", sim.baseline.image_id);
        if let Some(cursor) = &after {
            path.push_str(&format!("&after={cursor}"));
        }
        let page = match sim.http.get(&path, true).await {
            Ok(answer) if answer.status == 200 => {
                serde_json::from_slice::<Value>(&answer.body).ok()
            }
            _ => None,
        };
        let Some(page) = page else {
            listing_ok = false;
            break;
        };
        let hosts = page
            .get("hosts")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if hosts.first().is_some_and(|h| h.get("last_seq").is_none()) {
            listing_ok = false;
            break;
        }
        stored.extend(hosts.iter().filter_map(stored_of));
        match page.get("next").and_then(Value::as_str) {
            Some(next) if !hosts.is_empty() => after = Some(next.to_owned()),
            _ => break,
        }
    }
    if !listing_ok {
        method = "GET /hosts/{id} per host";
        stored.clear();
        let mut tasks = JoinSet::new();
        for index in 0..sim.hosts.len() {
            let permit = sim.slots.clone().acquire_owned().await.expect("open");
            let sim = sim.clone();
            tasks.spawn(async move {
                let answer = sim
                    .http
                    .get(&format!("/hosts/{}", sim.hosts[index].id), true)
                    .await;
                drop(permit);
                match answer {
                    Ok(answer) if answer.status == 200 => {
                        serde_json::from_slice::<Value>(&answer.body)
                            .ok()
                            .and_then(|host| stored_of(&host))
                    }
                    _ => None,
                }
            });
        }
        while let Some(found) = tasks.join_next().await {
            if let Ok(Some((id, host))) = found {
                stored.insert(id, host);
            }
        }
    }
    let (mut acked, mut lost, mut hosts_missing, mut lost_samples) = (0u64, 0u64, 0u64, vec![]);
    for host in &sim.hosts {
        let state = host.state.lock().expect("host lock");
        acked += state.acked.len() as u64;
        let Some(found) = stored.get(&host.id) else {
            if !state.acked.is_empty() {
                hosts_missing += 1;
                lost += state.acked.len() as u64;
            }
            continue;
        };
        for &seq in &state.acked {
            let in_gap = found
                .gaps
                .iter()
                .any(|&(from, to)| (from..=to).contains(&seq));
            if seq > found.last_seq || in_gap {
                lost += 1;
                if lost_samples.len() < 5 {
                    lost_samples.push(format!(
                        "{} seq {seq} (last_seq {})",
                        host.id, found.last_seq
                    ));
                }
            }
        }
    }
    println!(
        "        verify: {acked} acknowledged, {lost} lost ({hosts_missing} hosts unknown to the service) via {method}, {:.1} s",
        start.elapsed().as_secs_f64()
    );
    for sample in &lost_samples {
        println!("        verify  ! lost: {sample}");
    }
    json!({"method": method, "acknowledged": acked, "lost": lost,
           "hosts_missing": hosts_missing, "hosts_seen": stored.len(), "lost_samples": lost_samples})
}

/// Times a read `runs` times; the median and the last body.
async fn time_read(sim: &Arc<Sim>, path: &str, runs: usize) -> (Value, Option<Value>) {
    let mut times = Vec::new();
    let mut statuses = std::collections::BTreeMap::<String, u64>::new();
    let mut last = None;
    let mut bytes = 0;
    for _ in 0..runs.max(1) {
        let sent = Instant::now();
        let answer = sim.http.get(path, true).await;
        times.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
        let key = answer
            .as_ref()
            .map_or("error".to_owned(), |a| a.status.to_string());
        *statuses.entry(key).or_default() += 1;
        if let Ok(answer) = answer {
            bytes = answer.body.len();
            if answer.status == 200 {
                last = serde_json::from_slice::<Value>(&answer.body).ok();
            }
        }
    }
    let p = Percentiles::of(&times);
    println!(
        "{:>14}: median {:.1} ms, max {:.1} ms, {bytes} bytes, {statuses:?}",
        path.split('?').next().unwrap_or(path),
        p.p50,
        p.max
    );
    (
        json!({"path": path, "runs": p.count, "median_ms": p.p50, "max_ms": p.max,
               "bytes": bytes, "statuses": statuses}),
        last,
    )
}

/// CPU seconds (user + system) a process used so far: /proc/PID/stat fields 14 and 15,
/// in USER_HZ (100 on Linux).
fn cpu_secs(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces: count from the closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// CPU used by the service and by this simulator between two points, in cores.
struct Cpu {
    pid: Option<u32>,
    service: Option<f64>,
    sim: Option<f64>,
    at: Instant,
}

impl Cpu {
    fn start(pid: Option<u32>) -> Cpu {
        Cpu {
            pid,
            service: pid.and_then(|pid| cpu_secs(Some(pid))),
            sim: cpu_secs(None),
            at: Instant::now(),
        }
    }

    /// `{"service_cores", "sim_cores"}` since `start`, printed too.
    fn stop(self, kind: &str) -> Value {
        let secs = self.at.elapsed().as_secs_f64().max(1e-6);
        let cores = |before: Option<f64>, now: Option<f64>| {
            before.zip(now).map(|(before, now)| (now - before) / secs)
        };
        let service = cores(self.service, self.pid.and_then(|pid| cpu_secs(Some(pid))));
        let sim = cores(self.sim, cpu_secs(None));
        let show = |cores: Option<f64>| cores.map_or("?".to_owned(), |c| format!("{c:.2}"));
        println!(
            "{kind:>14}  cpu: service {} cores, simulator {} cores",
            show(service),
            show(sim)
        );
        json!({"service_cores": service, "sim_cores": sim})
    }
}

fn rss_kb(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

async fn fetch_baseline(http: &Http, image_id: &str) -> Result<(Baseline, String)> {
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

async fn run(cli: Cli) -> Result<Value> {
    if cli.hosts == 0 || cli.connections == 0 || cli.interval == 0 || cli.scenarios == 0 {
        bail!("--hosts, --connections, --interval and --scenarios must be at least 1");
    }
    if cli
        .rate
        .iter()
        .any(|&rate| !(rate > 0.0 && rate.is_finite()))
    {
        bail!("--rate values must be positive");
    }
    let secret = read_token(&cli.token_file)?;
    let read_secret = match &cli.read_token_file {
        Some(path) => read_token(path)?,
        None => secret.clone(),
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(cli.connections)
        .build(connector);
    let http = Http {
        client,
        base: cli.server.trim_end_matches('/').to_owned(),
        auth: bearer(&secret)?,
        read_auth: bearer(&read_secret)?,
        timeout: Duration::from_secs(cli.timeout),
    };
    let (baseline, etag) = fetch_baseline(&http, &cli.image_id).await?;
    println!(
        "fleet-sim: image {} ({} entries, sha256 {}…), ETag {etag}",
        baseline.image_id,
        baseline.entries,
        &baseline.sha256[..12]
    );

    let keygen = std::time::Instant::now();
    let (count, seed, drift, scenarios) = (cli.hosts, cli.seed, cli.drift_percent, cli.scenarios);
    let hosts =
        tokio::task::spawn_blocking(move || hosts::make_hosts(count, seed, drift, scenarios))
            .await
            .context("key generation")??;
    let drifted = hosts.iter().filter(|h| h.scenario.is_some()).count();
    println!(
        "fleet-sim: {} hosts ({drifted} drifted, {} anomalies each, {} scenarios), keys made in {:.1} s",
        hosts.len(),
        cli.anomalies,
        cli.scenarios,
        keygen.elapsed().as_secs_f64()
    );

    let sim = Arc::new(Sim {
        http,
        hosts,
        baseline,
        etag,
        anomalies: cli.anomalies,
        stats: Stats::default(),
        slots: Arc::new(Semaphore::new(cli.connections)),
        queued: AtomicUsize::new(0),
        max_queue: 100_000,
        dropped_overload: AtomicU64::new(0),
        skipped_busy: AtomicU64::new(0),
    });

    // RSS sampled every second while the load runs.
    let rss_max = Arc::new(AtomicU64::new(0));
    let sampler = cli.service_pid.map(|pid| {
        let rss_max = rss_max.clone();
        tokio::spawn(async move {
            loop {
                if let Some((rss, _)) = rss_kb(pid) {
                    rss_max.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    });
    let rss_before = cli.service_pid.and_then(rss_kb);

    // The interval the reports announce (the service's staleness follows it).
    let interval_secs = Some(cli.interval);
    let enrollment = if cli.no_enroll {
        Value::Null
    } else {
        enroll(&sim, interval_secs, cli.service_pid).await
    };
    let rss_after_enroll = cli.service_pid.and_then(rss_kb);
    let (load, knee) = if cli.duration == 0 {
        println!("fleet-sim: --duration 0, enrollment only");
        (Value::Null, None)
    } else if cli.rate.is_empty() {
        (
            steady(&sim, cli.interval, cli.duration, cli.service_pid).await,
            None,
        )
    } else {
        let (steps, knee) = ramp(
            &sim,
            &cli.rate,
            cli.duration,
            interval_secs,
            cli.service_pid,
        )
        .await;
        match knee {
            Some(rate) => println!("          knee: {rate} reports/s (highest step with sojourn p99 ≤ 100 ms, no errors, ≥ 95 % of the rate achieved)"),
            None => println!("          knee: none of the steps met the goal"),
        }
        (
            json!({"phase": "ramp", "step_secs": cli.duration, "steps": steps}),
            knee,
        )
    };
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    let rss_end = cli.service_pid.and_then(rss_kb);
    let verification = verify(&sim).await;
    let (fleet, fleet_body) = time_read(&sim, "/fleet", cli.read_runs).await;
    let drift_path = format!("/drift?image_id={}", sim.baseline.image_id);
    let (drift, drift_body) = time_read(&sim, &drift_path, cli.read_runs).await;
    let fleet_image = fleet_body.as_ref().and_then(|body| {
        body.get("images")?
            .as_array()?
            .iter()
            .find(|image| {
                image.get("image_id").and_then(Value::as_str) == Some(&sim.baseline.image_id)
            })
            .cloned()
    });
    let drift_groups = drift_body
        .as_ref()
        .and_then(|body| body.get("groups")?.as_array().map(Vec::len));
    if let Some(image) = &fleet_image {
        println!(
            "         fleet: {}",
            image.get("hosts").unwrap_or(&Value::Null)
        );
    }
    if let Some(groups) = drift_groups {
        println!(
            "         drift: {groups} groups (the simulation makes {})",
            hosts::expected_groups(drifted, cli.anomalies, cli.scenarios)
        );
    }
    let kb_json = |rss: Option<(u64, u64)>| {
        rss.map_or(
            Value::Null,
            |(rss, hwm)| json!({"rss_kb": rss, "hwm_kb": hwm}),
        )
    };
    if let Some((rss, hwm)) = rss_end {
        println!(
            "   service RSS: {} MB at the end, {} MB max sampled, {} MB peak (VmHWM)",
            rss / 1024,
            rss_max.load(Ordering::Relaxed).max(rss) / 1024,
            hwm / 1024
        );
    }
    Ok(json!({
        "config": {"server": cli.server, "hosts": cli.hosts, "interval_secs": cli.interval,
                   "duration_secs": cli.duration, "rates": cli.rate, "image_id": cli.image_id,
                   "drift_percent": cli.drift_percent, "drifted_hosts": drifted,
                   "anomalies": cli.anomalies, "scenarios": cli.scenarios, "seed": cli.seed, "connections": cli.connections},
        "enroll": enrollment,
        "load": load,
        "knee_rate": knee,
        "dropped_overload": sim.dropped_overload.load(Ordering::Relaxed),
        "skipped_busy": sim.skipped_busy.load(Ordering::Relaxed),
        "verify": verification,
        "reads": {"fleet": fleet, "drift": drift, "fleet_image": fleet_image,
                  "drift_groups": drift_groups,
                  "drift_groups_expected": hosts::expected_groups(drifted, cli.anomalies, cli.scenarios)},
        "service": {"pid": cli.service_pid, "before": kb_json(rss_before),
                    "after_enroll": kb_json(rss_after_enroll), "end": kb_json(rss_end),
                    "rss_max_sampled_kb": rss_max.load(Ordering::Relaxed)},
    }))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let json_path = cli.json.clone();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fleet-sim: cannot start the runtime: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(result) => {
            if let Some(path) = json_path {
                let text = serde_json::to_string_pretty(&result).expect("JSON");
                if let Err(error) = std::fs::write(&path, text + "\n") {
                    eprintln!("fleet-sim: cannot write {}: {error}", path.display());
                    return std::process::ExitCode::from(2);
                }
            }
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("fleet-sim: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_forms() {
        let dir = std::env::temp_dir().join(format!("fleet-sim-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "# comment\n\nadmin:bench:s3cr:et\n").unwrap();
        assert_eq!(read_token(&file).unwrap(), "s3cr:et");
        std::fs::write(&file, "bare-secret\n").unwrap();
        assert_eq!(read_token(&file).unwrap(), "bare-secret");
        std::fs::write(&file, "\n").unwrap();
        assert!(read_token(&file).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
