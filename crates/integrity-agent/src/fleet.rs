//! Host reports to the metadata service (REFERENCE §7): after every check, the agent
//! builds a report (`integrity_common::report::HostReport`), numbers it, signs its
//! exact bytes with the host key, spools it, then sends the spool oldest first.
//!
//! What becomes of a spooled report depends only on the service's answer:
//! `201`/`200` acknowledged (removed); unreachable, timeout, `5xx` or `429` kept (and
//! the round stops: the rest wait for the next check); any other `4xx` refused for
//! good: one line on stderr with the service's reason, and removed. After a `401` or
//! `403`, which every later report would get too, the round stops there as well.
//! None of it changes the check's exit code.

use crate::identity::{Identity, MACHINE_ID};
use crate::spool::Spool;
use integrity_client::{Client, ClientError};
use integrity_common::manifest::{now_timestamp, MAX_PATH_BYTES};
use integrity_common::report::{
    finding_bytes, BaselineSource, HostReport, ReportAnomaly, ReportBaseline, ReportMode,
    SignatureState, AGENT_MAX_REPORT_BYTES, MAX_FINDING_BYTES, MAX_HOSTNAME, MAX_TEXT,
};
use integrity_common::{Anomaly, DriftSummary};
use std::path::PathBuf;
use std::time::Duration;

/// How the agent reports, from its flags.
pub struct Settings {
    pub state_dir: PathBuf,
    pub host_id: Option<String>,
    pub servers: Vec<String>,
    pub token: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub spool_max: usize,
    pub max_anomalies: usize,
    pub interval_secs: Option<u64>,
}

/// Sends the reports of one agent.
pub struct Reporter {
    identity: Identity,
    client: Client,
    spool_max: usize,
    max_anomalies: usize,
    interval_secs: Option<u64>,
    hostname: String,
}

/// What one check contributes to its report.
#[derive(Debug, Default)]
pub struct Draft {
    pub started: String,
    /// `None` until the baseline was loaded.
    pub baseline: Option<ReportBaseline>,
    pub summary: DriftSummary,
    pub anomalies: Vec<ReportAnomaly>,
    pub truncated: u64,
    /// Which kind of check ran (`None`: it did not get that far: full).
    pub mode: Option<ReportMode>,
    /// When the last full check ran.
    pub last_full: Option<String>,
    /// Bytes of `anomalies` as JSON.
    bytes: usize,
}

impl Draft {
    /// A check starting now.
    pub fn start() -> Draft {
        Draft {
            started: now_timestamp(),
            ..Draft::default()
        }
    }

    /// The baseline the check compares against (`verified`: with `--public-key`).
    pub fn set_baseline(&mut self, loaded: &crate::source::Loaded, verified: bool) {
        self.baseline = Some(ReportBaseline {
            sha256: loaded.sha256.to_hex(),
            source: match loaded.source {
                "cache" => BaselineSource::Cache,
                "file" => BaselineSource::File,
                _ => BaselineSource::Server,
            },
            signature: match verified {
                true => SignatureState::Verified,
                false => SignatureState::Unchecked,
            },
        });
    }

    /// The anomaly lines, at most `max` of them; the rest (and any line the service
    /// could not take, such as an over-long encoded path) are counted in `truncated`.
    pub fn set_anomalies(&mut self, anomalies: &[Anomaly<'_>], max: usize) {
        self.anomalies.clear();
        self.truncated = 0;
        self.bytes = 0;
        for anomaly in anomalies {
            let line = (self.anomalies.len() < max)
                .then(|| serde_json::to_value(anomaly).ok())
                .flatten()
                .and_then(|value| serde_json::from_value::<ReportAnomaly>(value).ok())
                .filter(|line| line.path.len() <= MAX_PATH_BYTES)
                .filter(|line| finding_bytes(line) <= MAX_FINDING_BYTES)
                .filter(|line| {
                    // The whole report stays under what the service takes: a tree
                    // that makes findings huge (long escaped names) cannot get every
                    // report refused and the host's drift never shown.
                    let size = finding_bytes(line);
                    self.bytes + size <= AGENT_MAX_REPORT_BYTES && {
                        self.bytes += size;
                        true
                    }
                });
            match line {
                Some(line) => self.anomalies.push(line),
                None => self.truncated += 1,
            }
        }
    }
}

impl Reporter {
    /// Opens the state directory (identity, spool) and the client of `--server`.
    pub fn new(settings: Settings) -> Result<Reporter, String> {
        let identity = Identity::open(
            &settings.state_dir,
            settings.host_id.as_deref(),
            std::path::Path::new(MACHINE_ID),
        )?;
        let (first, more) = settings
            .servers
            .split_first()
            .ok_or("reports need --server")?;
        let mut config = integrity_client::ClientConfig::new(
            first,
            concat!("integrity-agent/", env!("CARGO_PKG_VERSION")),
        );
        config.fallback_servers = more.to_vec();
        config.token = settings.token;
        config.ca_cert = settings.ca_cert;
        // A report that cannot go now waits in the spool: no long retrying.
        config.retry.attempts = 2;
        config.timeout = Duration::from_secs(60);
        let client = Client::new(&config).map_err(|error| error.to_string())?;
        if client.token_in_clear_text() {
            crate::warn(format!(
                "sending the report token over plain http to {}; use https",
                settings.servers.join(", ")
            ));
        }
        Ok(Reporter {
            identity,
            client,
            spool_max: settings.spool_max.max(1),
            max_anomalies: settings.max_anomalies,
            interval_secs: settings.interval_secs,
            hostname: hostname(),
        })
    }

    /// `--report-max-anomalies`.
    pub fn max_anomalies(&self) -> usize {
        self.max_anomalies
    }

    /// Reports one check (`error`: why it could not run) and sends the spool. Failures
    /// are logged, never returned: reporting does not change the check's outcome.
    pub fn report(&self, image_id: &str, draft: Draft, error: Option<&str>) {
        let mut report = HostReport {
            host_id: self.identity.host_id.clone(),
            hostname: self.hostname.clone(),
            image_id: image_id.to_owned(),
            seq: 1,
            interval_secs: self.interval_secs,
            started: draft.started,
            finished: now_timestamp(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            mode: draft.mode.unwrap_or(ReportMode::Full),
            baseline: draft.baseline,
            summary: draft.summary,
            anomalies: draft.anomalies,
            truncated: draft.truncated,
            error: error.map(one_line),
            spool_dropped: 0,
            last_full: draft.last_full,
        };
        // Checked before a number is spent on it.
        if let Err(invalid) = report.validate() {
            crate::warn(format!(
                "not reporting this check: the report is invalid: {invalid}"
            ));
            return;
        }
        let _lock = match self.identity.lock() {
            Ok(lock) => lock,
            Err(error) => {
                crate::warn(format!(
                    "not reporting this check: cannot lock the state directory: {error}"
                ));
                return;
            }
        };
        let spool = match Spool::open(&self.identity.spool_dir()) {
            Ok(spool) => spool,
            Err(error) => {
                crate::warn(format!("not reporting this check: spool: {error}"));
                return;
            }
        };
        if let Err(error) = self.spool_new(&spool, &mut report) {
            crate::warn(format!("cannot spool the report of this check: {error}"));
        }
        self.send(&spool);
    }

    /// Numbers (persisting the number first), signs and spools `report`.
    fn spool_new(&self, spool: &Spool, report: &mut HostReport) -> std::io::Result<()> {
        let spooled = spool.list()?;
        report.seq = self
            .identity
            .next_seq(spooled.last().copied().unwrap_or(0))?;
        let dropped_now = spool.make_room(self.spool_max)?;
        if dropped_now > 0 {
            crate::warn(format!(
                "the report spool holds --spool-max {} reports: dropped the {dropped_now} oldest",
                self.spool_max
            ));
        }
        report.spool_dropped = spool.dropped();
        let bytes = report.to_bytes();
        let comment = format!(
            "bulletproof-report host_id:{} seq:{}",
            report.host_id, report.seq
        );
        let signature = integrity_trust::sign(&self.identity.secret, &bytes, &comment)
            .map_err(std::io::Error::other)?;
        spool.put(report.seq, &bytes, &signature)?;
        spool.clear_dropped()
    }

    /// Sends the spooled reports, oldest first, until one cannot go now.
    fn send(&self, spool: &Spool) {
        let seqs = match spool.list() {
            Ok(seqs) => seqs,
            Err(error) => return crate::warn(format!("spool: {error}")),
        };
        for (index, &seq) in seqs.iter().enumerate() {
            let spooled = match spool.read(seq) {
                Ok(spooled) => spooled,
                Err(error) => return crate::warn(format!("spool: report {seq}: {error}")),
            };
            let Some(signature) = spooled.signature else {
                crate::warn(format!(
                    "spool: report {seq} has no readable signature; dropping it"
                ));
                let _ = spool.remove(seq);
                continue;
            };
            let mut on_retry = |attempt: u32, why: &str, delay: Duration| {
                crate::warn(format!(
                    "sending report {seq}, attempt {attempt} failed ({why}); retrying in {:.1} s",
                    delay.as_secs_f64()
                ));
            };
            let sent = self.client.post_report(
                &spooled.bytes,
                &signature,
                Some(&self.identity.public_text),
                &mut on_retry,
            );
            let kept = seqs.len() - index;
            match sent {
                Ok(_) => {
                    if let Err(error) = spool.remove(seq) {
                        return crate::warn(format!("spool: report {seq} sent, but: {error}"));
                    }
                }
                Err(ClientError::Replay { last_seq, detail }) => {
                    eprintln!(
                        "integrity-agent: error: the service refused report {seq} (HTTP 409): {detail}{}; the report is dropped, not retried",
                        self.hint(409)
                    );
                    if let Err(error) = spool.remove(seq) {
                        return crate::warn(format!("spool: report {seq}: {error}"));
                    }
                    // This host's numbers went backwards (state lost or restored):
                    // the next report goes on above the service's last.
                    if let Some(last) = last_seq {
                        if let Err(error) = self.identity.raise_seq(last) {
                            crate::warn(format!("cannot raise the sequence number to {last}: {error}"));
                        }
                    }
                }
                Err(ClientError::Rejected { status, detail }) if !matches!(status, 408 | 429) => {
                    eprintln!(
                        "integrity-agent: error: the service refused report {seq} (HTTP {status}): {detail}{}; the report is dropped, not retried",
                        self.hint(status)
                    );
                    if let Err(error) = spool.remove(seq) {
                        return crate::warn(format!("spool: report {seq}: {error}"));
                    }
                    if matches!(status, 401 | 403) {
                        return;
                    }
                }
                Err(error) => {
                    return crate::warn(format!(
                        "the service cannot take reports now ({error}); {kept} report(s) kept in the spool for the next check"
                    ))
                }
            }
        }
    }

    /// What an operator can do about a refusal.
    fn hint(&self, status: u16) -> String {
        let host_id = &self.identity.host_id;
        match status {
            401 => " (give a token of scope report: --token, --token-file or BULLETPROOF_TOKEN)".into(),
            403 => format!(
                " (the signature does not verify with the key the service pinned for host {host_id}; \
                 if this host was re-keyed, an admin can re-open enrollment with DELETE /hosts/{host_id}/key)"
            ),
            409 => " (replay: the service holds this host's report of that number with other bytes; the next report goes on above the service's last)".into(),
            413 => " (too large: lower --report-max-anomalies)".into(),
            422 => " (the service knows no baseline of this image id)".into(),
            _ => String::new(),
        }
    }
}

/// The report token: `--token-file` (a secret file: refused when someone else could
/// have written it, warned about when others can read it), else `--token` or
/// `BULLETPROOF_TOKEN`.
pub fn token(
    token: Option<&str>,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Option<String>> {
    match file {
        Some(path) => {
            let secret = integrity_common::read_secret(path, "--token-file")?;
            if let Some(warning) = secret.warning() {
                crate::warn(warning.to_string());
            }
            Ok(Some(secret.trimmed()?.to_owned()))
        }
        None => Ok(token.filter(|token| !token.is_empty()).map(str::to_owned)),
    }
}

/// The kernel's host name (uname), as a report may carry it.
fn hostname() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy();
    truncate(
        name.chars().filter(|c| !c.is_control()).collect(),
        MAX_HOSTNAME,
    )
}

/// An error message as a report field: one line, at most `MAX_TEXT` bytes.
fn one_line(text: &str) -> String {
    let line = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    truncate(line, MAX_TEXT)
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use integrity_common::{AnomalyKind, ChangedFields, EntryKind, FileIntegrityEntry};

    #[test]
    fn anomalies_are_capped_and_the_rest_counted() {
        let entry = FileIntegrityEntry {
            path: b"/etc/x".to_vec().into(),
            sha256: Some(integrity_common::Sha256Digest::of(b"x")),
            mode: 0o644,
            uid: 0,
            gid: 0,
            kind: EntryKind::File,
            size: Some(1),
            target: None,
            rdev: None,
        };
        let anomalies: Vec<Anomaly<'_>> = (0..5)
            .map(|_| Anomaly {
                kind: AnomalyKind::Added,
                path: b"/etc/x",
                changed: ChangedFields::default(),
                baseline: None,
                current: Some(&entry),
            })
            .collect();
        let mut draft = Draft::start();
        draft.set_anomalies(&anomalies, 3);
        assert_eq!((draft.anomalies.len(), draft.truncated), (3, 2));
        assert_eq!(draft.anomalies[0].anomaly, "added");
        assert_eq!(draft.anomalies[0].path, "/etc/x");
        assert!(draft.anomalies[0].current.is_object());
        draft.set_anomalies(&anomalies, 0);
        assert_eq!((draft.anomalies.len(), draft.truncated), (0, 5));
    }

    /// Findings made huge by escaped names (a user can plant them in a scanned tree)
    /// are cut at the report's byte bound and counted, so the report stays one the
    /// service takes.
    #[test]
    fn a_report_stays_under_the_services_size_limit() {
        let target: Vec<u8> = vec![1u8; 4000];
        let entries: Vec<(Vec<u8>, FileIntegrityEntry)> = (0..300)
            .map(|index| {
                let path = format!("/home/u/link{index}").into_bytes();
                let entry = FileIntegrityEntry {
                    path: path.clone().into(),
                    sha256: None,
                    mode: 0o777,
                    uid: 1000,
                    gid: 1000,
                    kind: EntryKind::Symlink,
                    size: None,
                    target: Some(target.clone().into()),
                    rdev: None,
                };
                (path, entry)
            })
            .collect();
        let anomalies: Vec<Anomaly<'_>> = entries
            .iter()
            .map(|(path, entry)| Anomaly {
                kind: AnomalyKind::Added,
                path,
                changed: ChangedFields::default(),
                baseline: None,
                current: Some(entry),
            })
            .collect();
        let mut draft = Draft::start();
        draft.set_anomalies(&anomalies, 1000);
        let total: usize = draft.anomalies.iter().map(finding_bytes).sum();
        assert!(total <= AGENT_MAX_REPORT_BYTES, "{total}");
        assert!(draft.truncated > 0 && !draft.anomalies.is_empty());
        assert_eq!(draft.anomalies.len() as u64 + draft.truncated, 300);
    }

    #[test]
    fn report_text_fields_are_one_bounded_line() {
        assert_eq!(one_line("a\nb\tc"), "a b c");
        let long = "é".repeat(MAX_TEXT);
        let cut = one_line(&long);
        assert!(cut.len() <= MAX_TEXT && cut.chars().all(|c| c == 'é'));
        let name = hostname();
        assert!(name.len() <= MAX_HOSTNAME && !name.chars().any(char::is_control));
    }
}
