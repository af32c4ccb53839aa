//! Latencies and outcomes per kind of request. Every sample is kept (microseconds,
//! `u32`): a 10-minute run of 50,000 hosts is a few hundred thousand samples, so exact
//! percentiles cost a few MB and one sort.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
struct Kind {
    /// Request sent → whole answer read.
    latency_us: Vec<u32>,
    /// Scheduled time → whole answer read (includes waiting for a connection slot).
    sojourn_us: Vec<u32>,
    /// Status code (or "error") → count.
    outcomes: BTreeMap<String, u64>,
    ok: u64,
    /// Moves to the next URL (connection error, timeout, 5xx), waits after 429/503.
    failovers: u64,
    waits: u64,
    /// The first few transport errors and unexpected answers, for the report.
    samples: Vec<String>,
}

#[derive(Default)]
pub struct Stats {
    kinds: Mutex<BTreeMap<String, Kind>>,
}

fn micros(duration: Duration) -> u32 {
    duration.as_micros().min(u32::MAX as u128) as u32
}

/// Percentiles of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(samples: &[u32]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        // Nearest rank: the smallest sample with at least q of them at or below it.
        let at = |q: f64| {
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            f64::from(sorted[rank - 1]) / 1000.0
        };
        Percentiles {
            count: sorted.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: f64::from(sorted[sorted.len() - 1]) / 1000.0,
            mean: sorted.iter().map(|&v| f64::from(v)).sum::<f64>() / sorted.len() as f64 / 1000.0,
        }
    }

    pub fn to_json(self) -> Value {
        json!({"count": self.count, "p50_ms": self.p50, "p90_ms": self.p90, "p99_ms": self.p99,
               "p999_ms": self.p999, "max_ms": self.max, "mean_ms": self.mean})
    }
}

/// The summary of one kind.
#[derive(Debug, Clone, Default)]
pub struct KindSummary {
    pub latency: Percentiles,
    pub sojourn: Percentiles,
    pub outcomes: BTreeMap<String, u64>,
    pub ok: u64,
    pub not_ok: u64,
    pub failovers: u64,
    pub waits: u64,
    pub samples: Vec<String>,
}

impl KindSummary {
    pub fn to_json(&self) -> Value {
        json!({"latency": self.latency.to_json(), "sojourn": self.sojourn.to_json(),
               "outcomes": self.outcomes, "ok": self.ok, "not_ok": self.not_ok,
               "failovers": self.failovers, "waits": self.waits,
               "error_samples": self.samples})
    }
}

impl Stats {
    /// Records one request. `outcome` is the status code, or a transport error.
    pub fn record(
        &self,
        kind: &str,
        latency: Duration,
        sojourn: Duration,
        outcome: Result<u16, String>,
        ok: bool,
    ) {
        let mut kinds = self.kinds.lock().expect("stats lock");
        let entry = kinds.entry(kind.to_owned()).or_default();
        entry.latency_us.push(micros(latency));
        entry.sojourn_us.push(micros(sojourn));
        let key = match &outcome {
            Ok(code) => code.to_string(),
            Err(_) => "error".to_owned(),
        };
        *entry.outcomes.entry(key).or_default() += 1;
        if ok {
            entry.ok += 1;
        } else if entry.samples.len() < 5 {
            entry.samples.push(match outcome {
                Ok(code) => format!("status {code}"),
                Err(error) => error,
            });
        }
    }

    /// Counts the fail-overs and waits of one request (before its `record`).
    pub fn retried(&self, kind: &str, failovers: u32, waits: u32) {
        if failovers == 0 && waits == 0 {
            return;
        }
        let mut kinds = self.kinds.lock().expect("stats lock");
        let entry = kinds.entry(kind.to_owned()).or_default();
        entry.failovers += u64::from(failovers);
        entry.waits += u64::from(waits);
    }

    /// Adds a detail to a kind's samples (the body of an unexpected answer).
    pub fn note(&self, kind: &str, text: String) {
        let mut kinds = self.kinds.lock().expect("stats lock");
        let entry = kinds.entry(kind.to_owned()).or_default();
        if entry.samples.len() < 8 {
            entry.samples.push(text);
        }
    }

    pub fn summary(&self, kind: &str) -> KindSummary {
        let kinds = self.kinds.lock().expect("stats lock");
        let Some(entry) = kinds.get(kind) else {
            return KindSummary::default();
        };
        KindSummary {
            latency: Percentiles::of(&entry.latency_us),
            sojourn: Percentiles::of(&entry.sojourn_us),
            outcomes: entry.outcomes.clone(),
            ok: entry.ok,
            not_ok: entry.latency_us.len() as u64 - entry.ok,
            failovers: entry.failovers,
            waits: entry.waits,
            samples: entry.samples.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u32> = (1..=1000).map(|v| v * 1000).collect();
        let p = Percentiles::of(&samples);
        assert_eq!((p.count, p.p50, p.p99, p.max), (1000, 500.0, 990.0, 1000.0));
        assert_eq!(Percentiles::of(&[]).count, 0);
    }
}
