//! The service's (replicas'), PostgreSQL's and our own CPU time and memory, from /proc.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use tokio::time::Instant;

/// The fields after the command name of /proc/PID/stat (the name may hold spaces:
/// count from the closing parenthesis). `fields[0]` is field 3 (state).
fn stat_fields(pid: Option<u32>) -> Option<Vec<u64>> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // Field 3 (state) is a letter: keep its place with a 0.
    Some(
        rest.split_whitespace()
            .map(|field| field.parse::<u64>().unwrap_or(0))
            .collect(),
    )
}

/// CPU seconds (user + system) a process used so far: /proc/PID/stat fields 14 and 15,
/// in USER_HZ (100 on Linux).
pub(crate) fn cpu_secs(pid: Option<u32>) -> Option<f64> {
    let fields = stat_fields(pid)?;
    let ticks = fields.get(11)? + fields.get(12)?;
    Some(ticks as f64 / 100.0)
}

/// The last CPU seconds read of each pid: a process killed meanwhile (a replica's
/// kill -9) counts with what it had used when last seen.
fn last_seen() -> &'static Mutex<HashMap<u32, f64>> {
    static LAST: OnceLock<Mutex<HashMap<u32, f64>>> = OnceLock::new();
    LAST.get_or_init(Default::default)
}

/// CPU seconds of `pid`, or the last ones read if it is gone.
pub(crate) fn cpu_secs_remembered(pid: u32) -> Option<f64> {
    let mut last = last_seen().lock().expect("cpu lock");
    match cpu_secs(Some(pid)) {
        Some(secs) => {
            let secs = secs.max(last.get(&pid).copied().unwrap_or(0.0));
            last.insert(pid, secs);
            Some(secs)
        }
        None => last.get(&pid).copied(),
    }
}

/// CPU seconds of a PostgreSQL cluster: its postmaster `pid`, with what its ended
/// children used (fields 16 and 17: the postmaster waits for each of them), and its
/// live children (backends, the WAL writer, the checkpointer, …).
pub(crate) fn cluster_cpu_secs(pid: u32) -> Option<f64> {
    let fields = stat_fields(Some(pid))?;
    let mut ticks = fields.get(11)? + fields.get(12)? + fields.get(13)? + fields.get(14)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(fields) = stat_fields(Some(child)) {
            // Field 4 is the parent.
            if fields.get(1) == Some(&u64::from(pid)) {
                ticks += fields.get(11).unwrap_or(&0) + fields.get(12).unwrap_or(&0);
            }
        }
    }
    Some(ticks as f64 / 100.0)
}

/// CPU seconds the whole machine was busy so far (all cores, /proc/stat: user, nice,
/// system, irq, softirq, steal), so that what other processes took is known.
pub(crate) fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .map(|field| field.parse().unwrap_or(0))
        .collect();
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| fields.get(i).copied().unwrap_or(0))
        .sum::<u64>();
    Some(busy as f64 / 100.0)
}

/// The processes whose CPU is measured: the service (its replicas) and PostgreSQL;
/// and a command run at each phase's start and end (`--probe`: e.g. a `psql` giving
/// the WAL position and the table sizes), its output kept with the phase's figures.
#[derive(Debug, Clone, Default)]
pub(crate) struct Watched {
    pub(crate) services: Vec<u32>,
    pub(crate) postgres: Option<u32>,
    pub(crate) probe: Option<String>,
}

impl Watched {
    /// The probe's output (trimmed), or `null`; a failed probe gives its error text.
    pub(crate) fn probe(&self) -> Value {
        let Some(command) = &self.probe else {
            return Value::Null;
        };
        match std::process::Command::new("sh")
            .args(["-c", command])
            .stdin(std::process::Stdio::null())
            .output()
        {
            Ok(output) if output.status.success() => {
                json!(String::from_utf8_lossy(&output.stdout).trim())
            }
            Ok(output) => json!({"error": String::from_utf8_lossy(&output.stderr).trim()}),
            Err(error) => json!({"error": error.to_string()}),
        }
    }

    /// The replicas' CPU seconds together (None when no pid or none ever read).
    pub(crate) fn services_secs(&self) -> Option<f64> {
        let mut total = None;
        for &pid in &self.services {
            if let Some(secs) = cpu_secs_remembered(pid) {
                *total.get_or_insert(0.0) += secs;
            }
        }
        total
    }

    pub(crate) fn postgres_secs(&self) -> Option<f64> {
        self.postgres.and_then(cluster_cpu_secs)
    }
}

/// CPU used by the service, PostgreSQL and this simulator between two points.
pub(crate) struct Cpu {
    pub(crate) watched: Watched,
    pub(crate) service: Option<f64>,
    /// Each replica's, in the order of `watched.services`.
    pub(crate) each: Vec<Option<f64>>,
    pub(crate) postgres: Option<f64>,
    pub(crate) sim: Option<f64>,
    pub(crate) machine: Option<f64>,
    pub(crate) probe: Value,
    pub(crate) at: Instant,
}

impl Cpu {
    pub(crate) fn start(watched: &Watched) -> Cpu {
        Cpu {
            probe: watched.probe(),
            watched: watched.clone(),
            service: watched.services_secs(),
            each: watched
                .services
                .iter()
                .map(|&pid| cpu_secs_remembered(pid))
                .collect(),
            postgres: watched.postgres_secs(),
            sim: cpu_secs(None),
            machine: machine_busy_secs(),
            at: Instant::now(),
        }
    }

    /// `{"service_cores", "pg_cores", "sim_cores"}` and the CPU seconds since
    /// `start`, printed too.
    pub(crate) fn stop(self, kind: &str) -> Value {
        let wall = self.at.elapsed().as_secs_f64().max(1e-6);
        let used = |before: Option<f64>, now: Option<f64>| {
            before.zip(now).map(|(before, now)| (now - before).max(0.0))
        };
        let service = used(self.service, self.watched.services_secs());
        let each: Vec<Option<f64>> = self
            .watched
            .services
            .iter()
            .zip(&self.each)
            .map(|(&pid, &before)| used(before, cpu_secs_remembered(pid)))
            .collect();
        let postgres = used(self.postgres, self.watched.postgres_secs());
        let sim = used(self.sim, cpu_secs(None));
        let machine = used(self.machine, machine_busy_secs());
        // What other processes (builds, tests) took meanwhile.
        let others = machine.map(|m| {
            (m - service.unwrap_or(0.0) - postgres.unwrap_or(0.0) - sim.unwrap_or(0.0)).max(0.0)
        });
        let probe = self.watched.probe();
        let cores = |secs: Option<f64>| secs.map(|secs| secs / wall);
        let show = |secs: Option<f64>| cores(secs).map_or("?".to_owned(), |c| format!("{c:.2}"));
        println!(
            "{kind:>14}  cpu: service {} cores, postgres {} cores, simulator {} cores, other processes {} cores",
            show(service),
            show(postgres),
            show(sim),
            show(others)
        );
        json!({"service_cores": cores(service), "pg_cores": cores(postgres),
               "sim_cores": cores(sim), "service_secs": service, "service_secs_each": each, "pg_secs": postgres,
               "sim_secs": sim, "machine_cores": cores(machine),
               "others_cores": cores(others), "wall_secs": wall, "probe_before": self.probe,
               "probe_after": probe})
    }
}

pub(crate) fn rss_kb(pid: u32) -> Option<(u64, u64)> {
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
