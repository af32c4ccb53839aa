//! The service's and our own CPU time and memory, from /proc.

use serde_json::{json, Value};
use tokio::time::Instant;

/// CPU seconds (user + system) a process used so far: /proc/PID/stat fields 14 and 15,
/// in USER_HZ (100 on Linux).
pub(crate) fn cpu_secs(pid: Option<u32>) -> Option<f64> {
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
pub(crate) struct Cpu {
    pub(crate) pid: Option<u32>,
    pub(crate) service: Option<f64>,
    pub(crate) sim: Option<f64>,
    pub(crate) at: Instant,
}

impl Cpu {
    pub(crate) fn start(pid: Option<u32>) -> Cpu {
        Cpu {
            pid,
            service: pid.and_then(|pid| cpu_secs(Some(pid))),
            sim: cpu_secs(None),
            at: Instant::now(),
        }
    }

    /// `{"service_cores", "sim_cores"}` since `start`, printed too.
    pub(crate) fn stop(self, kind: &str) -> Value {
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
