//! Simulated hosts: identities (host id from the seed and the index, a minisign key
//! pair made in memory), which of them drift and how, and their signed reports.
//!
//! Drift is reproducible: the drifted hosts are spread evenly over the indices (exactly
//! `round(N × percent / 100)` of them), and each follows one of `--scenarios` fixed
//! scenarios (default [`DEFAULT_SCENARIOS`]) whose anomalies (paths and current values)
//! are the same on every host that follows it. That is what the service's drift groups
//! group: with the defaults, 96 groups (5 scenarios × 20 anomalies, less the deletions
//! a pair of scenarios shares) of about N / 500 hosts each; 27 scenarios make 514.

use integrity_common::diff::DriftSummary;
use integrity_common::digest::Sha256Digest;
use integrity_common::report::{
    BaselineSource, HostReport, ReportAnomaly, ReportBaseline, ReportMode, SignatureState,
};
use minisign::{KeyPair, SecretKey};
use rayon::prelude::*;
use serde_json::{json, Value};
use std::sync::Mutex;

/// Drift scenarios by default: scenarios `2k` and `2k+1` change the same paths to
/// different current values (so groups key on the values, not just the path).
pub const DEFAULT_SCENARIOS: usize = 5;

/// What the simulated check compared against.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub image_id: String,
    /// Hex SHA-256 of the baseline's bytes as served.
    pub sha256: String,
    /// Entries in the baseline (the summary's `scanned`).
    pub entries: u64,
}

/// Per-host state that changes during the run.
#[derive(Debug, Default)]
pub struct HostState {
    /// The seq of the next report.
    pub next_seq: u64,
    /// Seqs the service acknowledged (201, or 200 for a retry), with the SHA-256 of
    /// the report's bytes.
    pub acked: Vec<(u64, [u8; 32])>,
    /// A report of this host is in flight (a new one waits its turn: seqs stay ordered).
    pub in_flight: bool,
}

pub struct Host {
    pub id: String,
    pub hostname: String,
    sk: SecretKey,
    /// `X-Bulletproof-Host-Key`: base64 of the `.pub` text.
    pub key_header: String,
    /// The drift scenario this host follows, if it drifted.
    pub scenario: Option<usize>,
    pub state: Mutex<HostState>,
}

fn hex_of(text: &str) -> String {
    Sha256Digest::of(text.as_bytes()).to_hex()
}

/// 32 lowercase hex digits, from the seed and the index.
pub fn host_id(seed: u64, index: usize) -> String {
    hex_of(&format!("fleet-sim host {seed} {index}"))[..32].to_owned()
}

/// Whether host `index` drifts: exactly `floor(N × percent / 100)` hosts in `0..N`,
/// evenly spread. Returns the rank of the host among the drifted ones.
pub fn drift_rank(index: usize, percent: f64) -> Option<usize> {
    let count = |i: usize| (i as f64 * percent / 100.0 + 1e-9).floor() as usize;
    let (before, after) = (count(index), count(index + 1));
    (after > before).then_some(before)
}

/// Makes `count` hosts (key pairs in parallel); the drifted ones follow the
/// `scenarios` scenarios in turn.
pub fn make_hosts(
    count: usize,
    seed: u64,
    drift_percent: f64,
    scenarios: usize,
) -> anyhow::Result<Vec<Host>> {
    let scenarios = scenarios.max(1);
    (0..count)
        .into_par_iter()
        .map(|index| {
            let KeyPair { pk, sk } = KeyPair::generate_unencrypted_keypair()
                .map_err(|error| anyhow::anyhow!("generating a key pair: {error}"))?;
            let pub_text = pk
                .to_box()
                .map_err(|error| anyhow::anyhow!("encoding a public key: {error}"))?
                .to_string();
            Ok(Host {
                id: host_id(seed, index),
                hostname: format!("sim-{seed}-{index:06}"),
                sk,
                key_header: integrity_trust::to_header(&pub_text),
                scenario: drift_rank(index, drift_percent).map(|rank| rank % scenarios),
                state: Mutex::new(HostState {
                    next_seq: 1,
                    ..HostState::default()
                }),
            })
        })
        .collect()
}

const DIRS: [&str; 5] = [
    "/usr/bin",
    "/usr/sbin",
    "/usr/lib/x86_64-linux-gnu",
    "/etc",
    "/usr/local/bin",
];

fn entry(path: &str, sha256: &str, mode: u32, size: u64) -> Value {
    json!({"path": path, "sha256": sha256, "mode": mode, "uid": 0, "gid": 0,
           "kind": "file", "size": size})
}

/// The anomalies of a scenario: the same on every host that follows it.
pub fn scenario_anomalies(scenario: usize, count: usize) -> Vec<ReportAnomaly> {
    (0..count)
        .map(|j| {
            let path = format!("{}/fleet-sim-{}-{j:03}", DIRS[j % DIRS.len()], scenario / 2);
            let old_sha = hex_of(&format!("baseline {path}"));
            let new_sha = hex_of(&format!("scenario {scenario} {path}"));
            let size = 1000 + 37 * j as u64;
            let old = entry(&path, &old_sha, 0o755, size);
            let (anomaly, changed, baseline, current) = match j % 10 {
                7 => {
                    let mode = if scenario.is_multiple_of(2) {
                        0o4755
                    } else {
                        0o777
                    };
                    let new = entry(&path, &old_sha, mode, size);
                    ("metadata_changed", vec!["mode"], old, new)
                }
                8 => (
                    "added",
                    vec![],
                    Value::Null,
                    entry(&path, &new_sha, 0o755, size + scenario as u64),
                ),
                9 => ("deleted", vec![], old, Value::Null),
                _ => {
                    let new = entry(&path, &new_sha, 0o755, size + 1 + scenario as u64);
                    ("modified", vec!["sha256", "size"], old, new)
                }
            };
            ReportAnomaly {
                anomaly: anomaly.into(),
                path,
                changed: changed.into_iter().map(str::to_owned).collect(),
                baseline,
                current,
            }
        })
        .collect()
}

/// Drift groups the simulation makes: distinct (path, anomaly, current values) over
/// the scenarios in use (scenarios `2k` and `2k+1` delete the same paths: one group).
pub fn expected_groups(drifted: usize, anomalies: usize, scenarios: usize) -> usize {
    let mut groups = std::collections::HashSet::new();
    for scenario in 0..scenarios.max(1).min(drifted) {
        for finding in scenario_anomalies(scenario, anomalies) {
            groups.insert((
                finding.path,
                finding.anomaly,
                integrity_common::report::canonical_current(&finding.current),
            ));
        }
    }
    groups.len()
}

/// A signed report: its bytes and the `X-Bulletproof-Signature` header value.
pub struct SignedReport {
    pub bytes: Vec<u8>,
    pub signature_header: String,
}

impl Host {
    /// The report of check number `seq` (timestamps: now).
    pub fn report(
        &self,
        seq: u64,
        baseline: &Baseline,
        interval_secs: Option<u64>,
        anomalies: usize,
    ) -> HostReport {
        let anomalies = self
            .scenario
            .map(|scenario| scenario_anomalies(scenario, anomalies))
            .unwrap_or_default();
        let mut summary = DriftSummary {
            scanned: baseline.entries,
            ..DriftSummary::default()
        };
        for anomaly in &anomalies {
            match anomaly.anomaly.as_str() {
                "added" => summary.added += 1,
                "deleted" => summary.deleted += 1,
                "metadata_changed" => summary.metadata_changed += 1,
                "type_changed" => summary.type_changed += 1,
                _ => summary.modified += 1,
            }
        }
        let now = integrity_common::manifest::now_timestamp();
        HostReport {
            host_id: self.id.clone(),
            hostname: self.hostname.clone(),
            image_id: baseline.image_id.clone(),
            seq,
            interval_secs,
            started: now.clone(),
            finished: now,
            agent_version: concat!("fleet-sim/", env!("CARGO_PKG_VERSION")).into(),
            mode: ReportMode::Full,
            baseline: Some(ReportBaseline {
                sha256: baseline.sha256.clone(),
                source: BaselineSource::Server,
                signature: SignatureState::Verified,
            }),
            summary,
            anomalies,
            truncated: 0,
            error: None,
            spool_dropped: 0,
            last_full: None,
        }
    }

    /// The report of `seq`, serialised and signed with the host key as the agent does.
    pub fn signed_report(
        &self,
        seq: u64,
        baseline: &Baseline,
        interval_secs: Option<u64>,
        anomalies: usize,
    ) -> anyhow::Result<SignedReport> {
        let bytes = self
            .report(seq, baseline, interval_secs, anomalies)
            .to_bytes();
        let comment = format!("bulletproof-report host_id:{} seq:{seq}", self.id);
        let signature = integrity_trust::sign(&self.sk, &bytes, &comment)?;
        Ok(SignedReport {
            bytes,
            signature_header: integrity_trust::to_header(&signature),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline() -> Baseline {
        Baseline {
            image_id: "img-1".into(),
            sha256: "ab".repeat(32),
            entries: 1234,
        }
    }

    #[test]
    fn reports_parse_and_verify() {
        let hosts = make_hosts(200, 7, 1.0, DEFAULT_SCENARIOS).unwrap();
        let drifted: Vec<&Host> = hosts.iter().filter(|h| h.scenario.is_some()).collect();
        assert_eq!(drifted.len(), 2);
        for host in [&hosts[0], drifted[0]] {
            assert_eq!(host.id.len(), 32);
            integrity_common::report::validate_host_id(&host.id).unwrap();
            let signed = host.signed_report(3, &baseline(), Some(300), 20).unwrap();
            let report = HostReport::parse(&signed.bytes, 1000).unwrap();
            assert_eq!(
                (report.seq, report.anomalies.len()),
                (3, host.scenario.map_or(0, |_| 20))
            );
            assert_eq!(report.has_drift(), host.scenario.is_some());
            let pk_text = integrity_trust::from_header(&host.key_header).unwrap();
            let pk = integrity_trust::parse_public_key(&pk_text).unwrap();
            let signature = integrity_trust::from_header(&signed.signature_header).unwrap();
            let trusted = integrity_trust::verify(&pk, &signed.bytes, &signature, false).unwrap();
            assert_eq!(
                trusted,
                format!("bulletproof-report host_id:{} seq:3", host.id)
            );
        }
        // Host ids are unique and reproducible.
        let ids: std::collections::HashSet<_> = hosts.iter().map(|h| h.id.clone()).collect();
        assert_eq!(ids.len(), 200);
        assert_eq!(host_id(7, 5), hosts[5].id);
    }

    #[test]
    fn scenarios_are_followed_in_turn() {
        let hosts = make_hosts(3000, 7, 1.0, 27).unwrap();
        let scenarios: Vec<usize> = hosts.iter().filter_map(|h| h.scenario).collect();
        assert_eq!(scenarios.len(), 30);
        assert_eq!(scenarios, (0..30).map(|rank| rank % 27).collect::<Vec<_>>());
    }

    #[test]
    fn drift_is_exact_and_repeats_across_hosts() {
        let drifted = (0..50_000)
            .filter(|&i| drift_rank(i, 1.0).is_some())
            .count();
        assert_eq!(drifted, 500);
        assert_eq!(
            (0..100).filter(|&i| drift_rank(i, 0.0).is_some()).count(),
            0
        );
        assert_eq!(
            (0..100).filter(|&i| drift_rank(i, 100.0).is_some()).count(),
            100
        );
        assert_eq!(scenario_anomalies(1, 20), scenario_anomalies(1, 20));
        // Scenarios 0 and 1 share paths but not current values.
        let (a, b) = (scenario_anomalies(0, 20), scenario_anomalies(1, 20));
        assert_eq!(a[0].path, b[0].path);
        assert_ne!(a[0].current, b[0].current);
        assert_ne!(a[0].path, scenario_anomalies(2, 20)[0].path);
        assert_eq!(expected_groups(3, 20, DEFAULT_SCENARIOS), 58);
        assert_eq!(expected_groups(500, 20, DEFAULT_SCENARIOS), 96);
        assert_eq!(expected_groups(0, 20, DEFAULT_SCENARIOS), 0);
        // More scenarios: 38 groups a pair, 20 for a last odd one.
        assert_eq!(expected_groups(500, 20, 26), 494);
        assert_eq!(expected_groups(500, 20, 27), 514);
        assert_eq!(expected_groups(10, 20, 27), 190);
        assert_eq!(expected_groups(500, 20, 0), expected_groups(500, 20, 1));
    }
}
