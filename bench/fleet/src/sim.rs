//! The simulated fleet: its shared state, a host's report and revalidation, and the
//! phases (enrollment, steady state, open-loop ramp) with their summaries.

use crate::hosts::{Baseline, Host};
use crate::stats::{KindSummary, Stats};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, IF_NONE_MATCH};
use hyper::{Method, Request};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::*;
use crate::procfs::*;

/// The shared state of a run.
pub(crate) struct Sim {
    pub(crate) http: Http,
    pub(crate) hosts: Vec<Host>,
    pub(crate) baseline: Baseline,
    pub(crate) etag: String,
    pub(crate) anomalies: usize,
    pub(crate) stats: Stats,
    pub(crate) slots: Arc<Semaphore>,
    /// Events waiting for a slot; beyond `max_queue` new events are dropped (counted).
    pub(crate) queued: AtomicUsize,
    pub(crate) max_queue: usize,
    pub(crate) dropped_overload: AtomicU64,
    pub(crate) skipped_busy: AtomicU64,
    /// A replica is killed at the first instant (`--kill-pid`); the checks scheduled
    /// until the second are also counted apart (`report-after-kill`, …).
    pub(crate) kill_window: OnceLock<(Instant, Instant)>,
}

impl Sim {
    /// Posts the next report of `host`; true when acknowledged (201, or 200 = the same
    /// report again).
    pub(crate) async fn post_report(
        &self,
        index: usize,
        kind: &str,
        interval_secs: Option<u64>,
        scheduled: Instant,
    ) -> bool {
        let host = &self.hosts[index];
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
        let digest = integrity_common::digest::Sha256Digest::of(&signed.bytes).0;
        let body = Bytes::from(signed.bytes);
        let sent = Instant::now();
        // The same bytes to every URL tried: a replica that stored them before it
        // died makes the next one answer 200 (the same report again).
        let exchange = self
            .http
            .exchange(index, "/reports", |uri| {
                Request::builder()
                    .method(Method::POST)
                    .uri(uri)
                    .header(AUTHORIZATION, self.http.auth.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .header("x-bulletproof-signature", signed.signature_header.as_str())
                    .header("x-bulletproof-host-key", host.key_header.as_str())
                    .body(Full::new(body.clone()))
                    .expect("a request")
            })
            .await;
        let (latency, sojourn) = (sent.elapsed(), scheduled.elapsed());
        let answer = exchange.answer;
        let ok = matches!(&answer, Ok(answer) if answer.status == 201 || answer.status == 200);
        if ok {
            host.state
                .lock()
                .expect("host lock")
                .acked
                .push((seq, digest));
        } else if let Ok(answer) = &answer {
            self.stats.note(
                kind,
                format!("{} seq {seq}: {}", answer.status, snippet(&answer.body)),
            );
        }
        let status = answer.map(|a| a.status);
        self.stats.retried(kind, exchange.failovers, exchange.waits);
        if let Some(window) = self.in_kill_window(kind, scheduled) {
            self.stats
                .record(&window, latency, sojourn, status.clone(), ok);
        }
        self.stats.record(kind, latency, sojourn, status, ok);
        ok
    }

    /// The kind under which a check of `kind` scheduled at `scheduled` is also
    /// counted, when it falls in the window after the kill.
    fn in_kill_window(&self, kind: &str, scheduled: Instant) -> Option<String> {
        let (from, to) = self.kill_window.get()?;
        (scheduled >= *from && scheduled < *to && !kind.contains('@'))
            .then(|| format!("{kind}-after-kill"))
    }

    /// `GET /baselines/{id}` with `If-None-Match` by host `index`; true on `304`.
    pub(crate) async fn revalidate(&self, index: usize, scheduled: Instant) -> bool {
        let path = format!("/baselines/{}", self.baseline.image_id);
        let sent = Instant::now();
        let exchange = self
            .http
            .exchange(index, &path, |uri| {
                Request::builder()
                    .method(Method::GET)
                    .uri(uri)
                    .header(IF_NONE_MATCH, self.etag.as_str())
                    .body(Full::new(Bytes::new()))
                    .expect("a request")
            })
            .await;
        let (latency, sojourn) = (sent.elapsed(), scheduled.elapsed());
        let ok = matches!(&exchange.answer, Ok(answer) if answer.status == 304);
        let status = exchange.answer.map(|a| a.status);
        self.stats
            .retried("revalidate", exchange.failovers, exchange.waits);
        if let Some(window) = self.in_kill_window("revalidate", scheduled) {
            self.stats
                .record(&window, latency, sojourn, status.clone(), ok);
        }
        self.stats
            .record("revalidate", latency, sojourn, status, ok);
        ok
    }

    /// One scheduled check of a host: wait for a slot, optionally revalidate, report.
    pub(crate) async fn check(
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
            self.revalidate(host, scheduled).await;
        }
        self.post_report(host, &kind, interval_secs, scheduled)
            .await;
        drop(permit);
        self.hosts[host].state.lock().expect("host lock").in_flight = false;
    }
}

/// Waits for the tasks of a phase; returns when the last one ended.
pub(crate) async fn drain(tasks: &mut JoinSet<()>) -> Instant {
    while tasks.join_next().await.is_some() {}
    Instant::now()
}

/// Phase 1: every host posts its first report (carrying its key), closed loop, as many
/// at once as there are slots.
pub(crate) async fn enroll(sim: &Arc<Sim>, interval_secs: Option<u64>, watched: &Watched) -> Value {
    let cpu = Cpu::start(watched);
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

/// A process to kill (`kill -KILL`) some seconds into the steady state: a replica.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kill {
    pub(crate) pid: u32,
    pub(crate) after_secs: f64,
    /// The checks scheduled this long after the kill are also counted apart.
    pub(crate) window_secs: f64,
}

/// Phase 2 (interval mode): each host checks every `interval` seconds, the hosts spread
/// evenly over the interval, for `duration` seconds; `kill` kills a replica on the way.
pub(crate) async fn steady(
    sim: &Arc<Sim>,
    interval: u64,
    duration: u64,
    watched: &Watched,
    kill: Option<Kill>,
) -> Value {
    let cpu = Cpu::start(watched);
    let hosts = sim.hosts.len();
    let start = Instant::now();
    let end = start + Duration::from_secs(duration);
    let mut tasks = JoinSet::new();
    let killer = kill.map(|kill| {
        let at = start + Duration::from_secs_f64(kill.after_secs);
        let _ = sim
            .kill_window
            .set((at, at + Duration::from_secs_f64(kill.window_secs)));
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let status = std::process::Command::new("kill")
                .args(["-KILL", &kill.pid.to_string()])
                .status();
            let killed = matches!(&status, Ok(status) if status.success());
            let at_secs = start.elapsed().as_secs_f64();
            println!(
                "          kill: kill -KILL {} at {at_secs:.1} s: {}",
                kill.pid,
                if killed { "done" } else { "FAILED" }
            );
            json!({"pid": kill.pid, "at_secs": at_secs, "killed": killed,
                   "window_secs": kill.window_secs})
        })
    });
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
    let mut value = json!({"phase": "steady", "cpu": cpu, "interval_secs": interval,
           "duration_secs": duration, "scheduled_checks": scheduled, "target_rate": target,
           "elapsed_secs": elapsed.as_secs_f64(),
           "revalidate": phase_json("revalidate", &revalidate, elapsed, Some(target)),
           "report": phase_json("report", &report, elapsed, Some(target))});
    if let Some(killer) = killer {
        let mut kill = killer.await.unwrap_or(Value::Null);
        if let Some(window) = kill.get("window_secs").and_then(Value::as_f64) {
            let window = Duration::from_secs_f64(window);
            for kind in ["revalidate-after-kill", "report-after-kill"] {
                let summary = sim.stats.summary(kind);
                print_kind(kind, &summary, window, None);
                kill[kind] = phase_json(kind, &summary, window, None);
            }
        }
        value["kill"] = kill;
    }
    value
}

/// Phase 2 (rate mode): open-loop steps of R reports per second, hosts in turn.
pub(crate) async fn ramp(
    sim: &Arc<Sim>,
    rates: &[f64],
    duration: u64,
    interval_secs: Option<u64>,
    watched: &Watched,
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
        let cpu = Cpu::start(watched);
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

pub(crate) fn print_kind(
    kind: &str,
    summary: &KindSummary,
    elapsed: Duration,
    target: Option<f64>,
) {
    let l = summary.latency;
    let s = summary.sojourn;
    let rate = summary.ok as f64 / elapsed.as_secs_f64();
    println!(
        "{kind:>14}: {} ok, {} not ok, {rate:.0}/s{} | latency ms p50 {:.1} p90 {:.1} p99 {:.1} max {:.1} | sojourn p99 {:.1} max {:.1} | {:?}{}",
        summary.ok,
        summary.not_ok,
        target.map_or(String::new(), |t| format!(" (target {t:.0}/s)")),
        l.p50,
        l.p90,
        l.p99,
        l.max,
        s.p99,
        s.max,
        summary.outcomes,
        if summary.failovers + summary.waits > 0 {
            format!(" | {} fail-overs, {} waits", summary.failovers, summary.waits)
        } else {
            String::new()
        }
    );
    for sample in &summary.samples {
        println!("{kind:>14}  ! {sample}");
    }
}

pub(crate) fn phase_json(
    kind: &str,
    summary: &KindSummary,
    elapsed: Duration,
    target: Option<f64>,
) -> Value {
    let mut value = summary.to_json();
    value["kind"] = json!(kind);
    value["elapsed_secs"] = json!(elapsed.as_secs_f64());
    value["achieved_rate"] = json!(summary.ok as f64 / elapsed.as_secs_f64());
    value["target_rate"] = json!(target);
    value
}
