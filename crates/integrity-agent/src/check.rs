//! One check: load the baseline, scan (incrementally when the verified state allows,
//! `verified_state.rs`), diff, judge by the policy, render, and report to the service.

use crate::args::{Format, EXIT_INVALID, EXIT_IO, EXIT_UNAVAILABLE, EXIT_UNTRUSTED, EXIT_USAGE};
use crate::verified_state::Plan;
use crate::{compare, fleet, report, source, syslog, warn, Agent, Fatal};
use integrity_common::policy::Judged;
use integrity_common::report::ReportMode;
use integrity_common::scan::describe_io_error;
use integrity_common::verified::{Binding, VerifiedState};
use integrity_common::{
    diff, scan_verified, Anomaly, Applied, Baseline, DriftSummary, FileIntegrityEntry, ScanOptions,
    ScanOutput, ScanProgress, Verify,
};

/// Differences judged by the policy: reported ones (with their rule) and allowed ones.
#[derive(Default)]
pub struct Judgement<'a> {
    pub anomalies: Vec<Anomaly<'a>>,
    pub rules: Vec<Option<String>>,
    pub allowed: Vec<report::Allowed<'a>>,
}

/// A reported finding kept between checks (watch mode re-checks paths and keeps the
/// host's whole current drift for its reports).
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    pub kind: integrity_common::AnomalyKind,
    pub path: Box<[u8]>,
    pub changed: integrity_common::ChangedFields,
    pub baseline: Option<FileIntegrityEntry>,
    pub current: Option<FileIntegrityEntry>,
    pub rule: Option<String>,
}

impl Kept {
    pub fn of(anomaly: &Anomaly<'_>, rule: Option<String>) -> Kept {
        Kept {
            kind: anomaly.kind,
            path: anomaly.path.into(),
            changed: anomaly.changed,
            baseline: anomaly.baseline.cloned(),
            current: anomaly.current.cloned(),
            rule,
        }
    }

    pub fn anomaly(&self) -> Anomaly<'_> {
        Anomaly {
            kind: self.kind,
            path: &self.path,
            changed: self.changed,
            baseline: self.baseline.as_ref(),
            current: self.current.as_ref(),
        }
    }
}

/// What a completed check leaves: its counts, and for watch mode the baseline, the
/// rules, the findings and the paths that could not be read.
pub struct Checked {
    pub summary: DriftSummary,
    pub loaded: source::Loaded,
    pub applied: Applied,
    pub findings: Vec<Kept>,
    pub errors: Vec<integrity_common::ScanErrorRecord>,
    /// When the last full check ran.
    pub last_full: Option<String>,
}

/// What kind of check ran (the reports say it).
#[derive(Debug, Clone)]
pub struct CheckInfo {
    pub mode: ReportMode,
    /// When the last full check ran (this one, when full).
    pub last_full: Option<String>,
    /// Regular files whose content was read.
    pub rehashed: u64,
    /// Why this check is full.
    pub why_full: Option<String>,
}

fn timestamp(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}
use std::io::Write;
use std::sync::Arc;

impl Agent {
    pub(crate) fn load(&self) -> Result<source::Loaded, Fatal> {
        let loaded = self.load_unlogged();
        if let (Err(fatal), Some(syslog)) = (&loaded, &self.syslog) {
            if fatal.code == EXIT_UNTRUSTED {
                let image_id = self.image_id.as_deref().unwrap_or("-");
                if let Err(error) = syslog.security(image_id, &fatal.message) {
                    warn(format!("syslog: {error}"));
                }
            }
        }
        loaded
    }

    fn load_unlogged(&self) -> Result<source::Loaded, Fatal> {
        let map = |error: source::SourceError| match error {
            source::SourceError::Unavailable(text) => Fatal::new(EXIT_UNAVAILABLE, text),
            source::SourceError::Invalid(text) => Fatal::new(EXIT_INVALID, text),
            source::SourceError::Untrusted(text) => Fatal::new(
                EXIT_UNTRUSTED,
                format!("SECURITY: baseline refused: {text}"),
            ),
        };
        let verifier = self.verifier.as_ref();
        match (&self.client, &self.args.baseline, &self.image_id) {
            (Some(client), _, Some(image_id)) => {
                let cache = source::Cache::new(self.args.cache_dir.clone());
                source::from_server(client, &cache, image_id, verifier, &mut warn).map_err(map)
            }
            (None, Some(path), image_id) => match image_id {
                Some(image_id) => source::from_file(path, image_id, verifier).map_err(map),
                None => {
                    // Offline without an image id: the file's own.
                    let bytes = std::fs::read(path).map_err(|error| {
                        Fatal::new(
                            EXIT_UNAVAILABLE,
                            format!("cannot read --baseline {}: {error}", path.display()),
                        )
                    })?;
                    let id = Baseline::from_json_slice(&bytes)
                        .map(|baseline| baseline.image_id)
                        .map_err(|error| {
                            Fatal::new(
                                EXIT_INVALID,
                                format!("--baseline {}: {error}", path.display()),
                            )
                        })?;
                    source::from_file(path, &id, verifier).map_err(map)
                }
            },
            _ => Err(Fatal::new(
                EXIT_USAGE,
                "give --server URL or --baseline FILE",
            )),
        }
    }

    /// The rules in force for this baseline: its own policy and the local one.
    pub(crate) fn applied(&self, baseline: &Baseline) -> Result<Applied, Fatal> {
        let applied = Applied::new(
            baseline.policy.as_ref(),
            self.local_policy.as_ref(),
            self.args.allow_weaker_policy,
            self.exclusions.clone(),
        )
        .map_err(|error| Fatal::new(EXIT_USAGE, format!("--policy: {error}")))?;
        if self.args.allow_weaker_policy {
            let message = format!(
                "SECURITY: the local policy {} overrides the baseline's signed policy (--allow-weaker-policy)",
                self.args.policy.as_deref().unwrap_or(std::path::Path::new("-")).display()
            );
            warn(message.clone());
            if let Some(syslog) = &self.syslog {
                if let Err(error) = syslog.security(&baseline.image_id, &message) {
                    warn(format!("syslog: {error}"));
                }
            }
        }
        Ok(applied)
    }

    fn scan(&self, applied: &Applied, verify: Verify<'_>) -> Result<ScanOutput, Fatal> {
        let options = ScanOptions {
            root: self.args.root.clone(),
            exclusions: self.exclusions.clone(),
            cross_filesystems: self.args.cross_filesystems,
            policy: (!applied.scan.is_empty()).then(|| Arc::new(applied.scan.clone())),
        };
        let progress = ScanProgress::default();
        self.pool
            .install(|| scan_verified(&options, &progress, verify))
            .map_err(|error| Fatal::new(EXIT_IO, error.to_string()))
    }

    /// One check, then its report to the service (with --server).
    pub(crate) fn check_and_report(&self) -> Result<Checked, Fatal> {
        let mut draft = fleet::Draft::start();
        let result = self.check(&mut draft);
        if let (Some(reporter), Some(image_id)) = (&self.reporter, &self.image_id) {
            let error = result.as_ref().err().map(|fatal| fatal.message.as_str());
            reporter.report(image_id, draft, error);
        }
        result
    }

    /// One check: load, scan, diff, report. Fills `draft` (the service's report) as
    /// far as the check gets; returns what watch mode goes on from.
    fn check(&self, draft: &mut fleet::Draft) -> Result<Checked, Fatal> {
        let loaded = self.load()?;
        draft.set_baseline(&loaded, self.verifier.is_some());
        if let Some(note) = &loaded.note {
            if loaded.source == "cache" {
                warn(note.clone());
            }
        }
        let applied = self.applied(&loaded.baseline)?;
        let (scanned, check) = self.scan_and_record(&loaded, &applied)?;
        draft.mode = Some(check.mode);
        draft.last_full = check.last_full.clone();
        let baseline = &loaded.baseline;
        let current = compare::comparable(baseline, &scanned.entries);
        let judged = self.judge(&applied, &baseline.entries, &current, &scanned);
        let mut summary = DriftSummary::default();
        for anomaly in &judged.anomalies {
            summary.record(anomaly.kind);
        }
        summary.errors = scanned.errors.len() as u64;
        summary.scanned = scanned.entries.len() as u64;
        if let Some(reporter) = &self.reporter {
            draft.set_anomalies(&judged.anomalies, reporter.max_anomalies());
            draft.summary = summary;
        }
        let kept = judged
            .anomalies
            .iter()
            .zip(&judged.rules)
            .map(|(anomaly, rule)| Kept::of(anomaly, rule.clone()))
            .collect();
        self.render(&report::Findings {
            image_id: &baseline.image_id,
            anomalies: judged.anomalies,
            rules: judged.rules,
            allowed: judged.allowed,
            verbose: self.args.verbose,
            errors: &scanned.errors,
            summary,
            source: loaded.source,
            note: loaded.note.as_deref(),
            check: Some(&check),
        })?;
        Ok(Checked {
            summary,
            findings: kept,
            errors: scanned.errors,
            last_full: check.last_full.clone(),
            applied,
            loaded,
        })
    }

    /// Diffs `current` against `baseline` (both sorted) and judges each difference by
    /// the policy in force.
    pub(crate) fn judge<'a>(
        &self,
        applied: &'a Applied,
        baseline: &'a [FileIntegrityEntry],
        current: &'a [FileIntegrityEntry],
        scanned: &ScanOutput,
    ) -> Judgement<'a> {
        let root = &self.args.root;
        let mut grew =
            |old: &FileIntegrityEntry, _new: &FileIntegrityEntry| match (old.size, old.sha256) {
                (Some(size), Some(hash)) => {
                    integrity_common::scan::hash_prefix(root, &old.path, size)
                        .is_ok_and(|now| now == hash)
                }
                _ => false,
            };
        let mut judged = Judgement::default();
        for anomaly in diff(baseline, current) {
            if compare::hidden_by_error(&anomaly, scanned) {
                continue;
            }
            match applied.judge(anomaly, &mut grew) {
                Judged::Report { anomaly, verdict } => {
                    judged.anomalies.push(anomaly);
                    judged.rules.push(verdict.label());
                }
                Judged::Allowed {
                    anomaly,
                    verdict,
                    why,
                } => judged.allowed.push(report::Allowed {
                    anomaly,
                    rule: verdict.label().unwrap_or_default(),
                    why,
                }),
                Judged::NotScanned => {}
            }
        }
        judged
    }

    /// Writes findings to stdout (text or JSON) and, with --syslog, to syslog.
    pub(crate) fn render(&self, findings: &report::Findings<'_>) -> Result<(), Fatal> {
        let mut stdout = std::io::stdout().lock();
        let written = match self.args.format {
            Format::Json => report::write_json(&mut stdout, findings),
            Format::Text => report::write_text(&mut stdout, findings, self.colour),
        }
        .and_then(|()| stdout.flush());
        if let Err(error) = written {
            return Err(Fatal::new(
                EXIT_IO,
                format!("cannot write the report: {}", describe_io_error(&error)),
            ));
        }
        if let Some(syslog) = &self.syslog {
            self.send_syslog(syslog, findings);
        }
        Ok(())
    }

    /// What the verified state is bound to: this host, this baseline, this root.
    fn binding(&self, loaded: &source::Loaded, host_id: &str) -> Binding {
        use std::os::unix::ffi::OsStrExt;
        let root =
            std::fs::canonicalize(&self.args.root).unwrap_or_else(|_| self.args.root.clone());
        Binding {
            host_id: host_id.to_owned(),
            baseline: loaded.sha256,
            root: root.as_os_str().as_bytes().to_vec(),
        }
    }

    /// The scan, incremental when the verified state allows (`verified_state.rs`),
    /// and the next verified state stored.
    fn scan_and_record(
        &self,
        loaded: &source::Loaded,
        applied: &Applied,
    ) -> Result<(ScanOutput, CheckInfo), Fatal> {
        // One clock read: whole seconds for the state's last full check, the exact
        // time for the racy-entry rule.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let started = now.as_secs();
        let started_at = (started as i64, now.subsec_nanos());
        let binding = self
            .state
            .as_ref()
            .map(|state| (state, self.binding(loaded, &state.host_id)));
        let plan = match &binding {
            Some((state, binding)) => {
                state.plan(binding, self.args.full, self.args.full_every, started)
            }
            None => Plan {
                known: None,
                why_full: Some("no state directory to keep a verified state in".into()),
                last_full: None,
            },
        };
        let mode = plan.mode();
        let mut scanned = self.scan(
            applied,
            Verify {
                known: plan.known.as_ref(),
                record_before: binding.as_ref().map(|_| started_at),
            },
        )?;
        let last_full = match mode {
            ReportMode::Incremental => plan.last_full,
            _ => Some(started),
        };
        // Nothing read and the same files: the stored state is this one (an
        // incremental check of a quiet machine writes nothing).
        let unchanged = plan.known.as_ref().is_some_and(|known| {
            scanned.rehashed == 0 && known.entries.len() == scanned.verified.len()
        });
        drop(plan.known);
        if let (Some((state, binding)), false) = (binding, unchanged) {
            let next = VerifiedState {
                binding,
                last_full: last_full.unwrap_or(started),
                entries: std::mem::take(&mut scanned.verified),
            };
            if let Err(error) = state.save(&next) {
                warn(format!(
                    "cannot store the verified state (the next check will be full): {error}"
                ));
            }
        }
        let check = CheckInfo {
            mode,
            last_full: last_full.map(timestamp),
            rehashed: scanned.rehashed,
            why_full: plan.why_full,
        };
        Ok((scanned, check))
    }

    fn send_syslog(&self, syslog: &syslog::Syslog, findings: &report::Findings<'_>) {
        let mut failed = None;
        for anomaly in &findings.anomalies {
            if let Err(error) = syslog.anomaly(findings.image_id, anomaly) {
                failed.get_or_insert(error);
            }
        }
        for error in findings.errors {
            if let Err(error) = syslog.scan_error(findings.image_id, error) {
                failed.get_or_insert(error);
            }
        }
        let summary = format!(
            "{{\"summary\":{}}}",
            serde_json::to_string(&findings.summary).unwrap_or_default()
        );
        if let Err(error) = syslog.summary(findings.image_id, &summary) {
            failed.get_or_insert(error);
        }
        if let Some(error) = failed {
            warn(format!("syslog: {error}"));
        }
    }
}
