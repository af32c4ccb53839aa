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
//!
//! `client.rs` the HTTP side, `hosts.rs` the simulated hosts and their reports,
//! `sim.rs` the phases, `verify.rs` the check of what was stored and the timed reads,
//! `stats.rs` latencies, `procfs.rs` CPU and memory from /proc; `main.rs` the flags.

mod client;
mod hosts;
mod procfs;
mod sim;
mod stats;
mod verify;

use anyhow::{bail, Context, Result};
use clap::Parser;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use stats::Stats;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::Semaphore;

use crate::client::*;
use crate::procfs::*;
use crate::sim::*;
use crate::verify::*;
#[derive(Debug, Parser)]
#[command(
    name = "fleet-sim",
    about = "Simulates a fleet of agents against a metadata-service (issue 18's benchmark)"
)]
struct Cli {
    /// Base URL of the service, e.g. http://127.0.0.1:8080; repeatable (or
    /// comma-separated) for replicas: host i tries them in order from URL i mod N,
    /// failing over to the next on a connection error, a timeout or a 5xx
    #[arg(long, required = true, value_delimiter = ',', value_name = "URL")]
    server: Vec<String>,
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
    /// Pid of the service, for its RSS (sampled every second) and CPU; repeatable
    /// (replicas: their CPU is summed, a killed one's as last seen)
    #[arg(long, value_delimiter = ',')]
    service_pid: Vec<u32>,
    /// Pid of the PostgreSQL postmaster: the CPU of the cluster (it and its children)
    /// per phase
    #[arg(long)]
    pg_pid: Option<u32>,
    /// Shell command run at the start and end of each phase (and ramp step); its
    /// output is kept with the phase's CPU figures (e.g. a psql query of the WAL
    /// position and the reports table's size)
    #[arg(long, value_name = "CMD")]
    probe: Option<String>,
    /// Kill this pid (kill -KILL: a replica) during the steady state
    #[arg(long, value_name = "PID")]
    kill_pid: Option<u32>,
    /// Seconds into the steady state at which --kill-pid is killed [default: half
    /// of --duration]
    #[arg(long, value_name = "SECS")]
    kill_after: Option<f64>,
    /// The checks scheduled this many seconds after the kill are also summarised apart
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    kill_window: f64,
    /// Write every acknowledged report here, one `host_id<TAB>seq<TAB>sha256` line
    /// each (hex SHA-256 of the bytes sent), to check against the database
    #[arg(long, value_name = "FILE")]
    acked_out: Option<PathBuf>,
    /// Requests in flight at most (connections kept alive); the service's default
    /// per-client cap is 64
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Timed runs of GET /fleet and GET /drift
    #[arg(long, default_value_t = 10)]
    read_runs: usize,
    /// Seconds before an attempt counts as failed (with several --server, the next URL
    /// is tried; a request gives up after twice this)
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Skip the enrollment phase (hosts of this seed already enrolled and nothing else)
    #[arg(long)]
    no_enroll: bool,
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
        bases: cli
            .server
            .iter()
            .map(|url| url.trim_end_matches('/').to_owned())
            .collect(),
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

    if cli.server.len() > 1 {
        println!(
            "fleet-sim: {} servers, host i tries them from URL i mod {} on: {}",
            cli.server.len(),
            cli.server.len(),
            cli.server.join(", ")
        );
    }
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
        kill_window: OnceLock::new(),
    });

    // RSS (and CPU, so a killed replica counts as last seen) sampled every second.
    let watched = Watched {
        services: cli.service_pid.clone(),
        postgres: cli.pg_pid,
        probe: cli.probe.clone(),
    };
    let rss_max: Arc<Vec<AtomicU64>> =
        Arc::new(cli.service_pid.iter().map(|_| AtomicU64::new(0)).collect());
    let sampler = (!cli.service_pid.is_empty()).then(|| {
        let (rss_max, pids) = (rss_max.clone(), cli.service_pid.clone());
        tokio::spawn(async move {
            loop {
                for (max, &pid) in rss_max.iter().zip(&pids) {
                    if let Some((rss, _)) = rss_kb(pid) {
                        max.fetch_max(rss, Ordering::Relaxed);
                    }
                    cpu_secs_remembered(pid);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    });
    let rss_all =
        |pids: &[u32]| -> Vec<Option<(u64, u64)>> { pids.iter().map(|&pid| rss_kb(pid)).collect() };
    let rss_before = rss_all(&cli.service_pid);

    // The interval the reports announce (the service's staleness follows it).
    let interval_secs = Some(cli.interval);
    let enrollment = if cli.no_enroll {
        Value::Null
    } else {
        enroll(&sim, interval_secs, &watched).await
    };
    let rss_after_enroll = rss_all(&cli.service_pid);
    let kill = cli.kill_pid.map(|pid| Kill {
        pid,
        after_secs: cli.kill_after.unwrap_or(cli.duration as f64 / 2.0),
        window_secs: cli.kill_window,
    });
    let (load, knee) = if cli.duration == 0 {
        println!("fleet-sim: --duration 0, enrollment only");
        (Value::Null, None)
    } else if cli.rate.is_empty() {
        (
            steady(&sim, cli.interval, cli.duration, &watched, kill).await,
            None,
        )
    } else {
        let (steps, knee) = ramp(&sim, &cli.rate, cli.duration, interval_secs, &watched).await;
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
    let rss_end = rss_all(&cli.service_pid);
    let verification = verify(&sim).await;
    if let Some(path) = &cli.acked_out {
        write_acked(&sim, path)?;
    }
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
    let mut services = Vec::new();
    for (n, &pid) in cli.service_pid.iter().enumerate() {
        let max = rss_max[n].load(Ordering::Relaxed);
        match rss_end[n] {
            Some((rss, hwm)) => println!(
                "   service RSS: pid {pid}: {} MB at the end, {} MB max sampled, {} MB peak (VmHWM)",
                rss / 1024,
                max.max(rss) / 1024,
                hwm / 1024
            ),
            None => println!(
                "   service RSS: pid {pid}: gone at the end, {} MB max sampled",
                max / 1024
            ),
        }
        services.push(json!({"pid": pid, "before": kb_json(rss_before[n]),
                             "after_enroll": kb_json(rss_after_enroll[n]),
                             "end": kb_json(rss_end[n]), "rss_max_sampled_kb": max}));
    }
    // The one summarised: the first replica alive at the end.
    let service = services
        .iter()
        .find(|s| !s["end"].is_null())
        .or(services.first())
        .cloned()
        .unwrap_or_else(|| {
            json!({"pid": null, "before": null, "after_enroll": null,
                                  "end": null, "rss_max_sampled_kb": 0})
        });
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
        "service": service,
        "services": services,
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
