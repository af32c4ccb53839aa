//! `--watch` (DESIGN §14): a check first, then every change the kernel reports
//! (`watch/`: fanotify, else inotify) is checked against the baseline at once — the
//! changed paths only, with the engine's own `scan_path` — and reported within a
//! second: its findings on stdout and syslog, and a report of the host's whole
//! current drift to the service. An incremental check runs every `--interval` as a
//! safety net, and at once when the kernel's queue overflowed (events lost: nothing is
//! assumed about what they said).
//!
//! Between checks the agent keeps the baseline, the rules and the host's current
//! findings; a batch replaces the findings at and below each changed path. A batch
//! that changes no finding prints and sends nothing (so the agent's own writes — its
//! state directory and cache are not watched anyway — cannot feed a loop).

use crate::check::{CheckInfo, Checked, Kept};
use crate::watch::{Backend, Watcher};
use crate::{fleet, report, warn, Agent, Fatal};
use integrity_common::report::ReportMode;
use integrity_common::{scan_path, DriftSummary, ScanErrorRecord};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a wait for events lasts before the stop flag and the interval are looked at.
const POLL: Duration = Duration::from_millis(200);
/// Events arriving this soon after the first of a batch join it.
const COALESCE: Duration = Duration::from_millis(50);

/// Whether `path` is `scope` or lies below it.
fn within(path: &[u8], scope: &[u8]) -> bool {
    scope == b"/"
        || path == scope
        || (path.starts_with(scope) && path.get(scope.len()) == Some(&b'/'))
}

/// The range of a sorted list whose paths lie at or below `scope`.
fn range_of<T>(items: &[T], path: impl Fn(&T) -> &[u8], scope: &[u8]) -> std::ops::Range<usize> {
    let start = items.partition_point(|item| path(item) < scope);
    let end = start + items[start..].partition_point(|item| within(path(item), scope));
    start..end
}

/// The changed paths without those below another changed path (re-checked with it).
fn topmost(mut paths: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    paths.sort();
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for path in paths {
        if kept.last().is_some_and(|last| within(&path, last)) {
            continue;
        }
        kept.push(path);
    }
    kept
}

/// The root-relative manifest path of `dir` when it lies below `root`.
fn below_root(root: &Path, dir: &Path) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let root = std::fs::canonicalize(root).ok()?;
    let dir = std::fs::canonicalize(dir).ok()?;
    let rest = dir.strip_prefix(&root).ok()?;
    let mut path = b"/".to_vec();
    path.extend_from_slice(rest.as_os_str().as_bytes());
    Some(path)
}

impl Agent {
    /// `--watch`: runs until SIGTERM or SIGINT (exit 0).
    pub(crate) fn run_watch(&self, interval: Duration) -> ExitCode {
        let stop = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            if let Err(error) = signal_hook::flag::register(signal, stop.clone()) {
                eprintln!("integrity-agent: error: cannot handle signals: {error}");
                return ExitCode::from(crate::args::EXIT_USAGE);
            }
        }
        // Watching starts before the first check: a change made while it runs is
        // seen by one or the other.
        let mut watcher = match self.watcher() {
            Ok(watcher) => watcher,
            Err(error) => {
                eprintln!(
                    "integrity-agent: error: cannot watch {}: {error}",
                    self.args.root.display()
                );
                return ExitCode::from(crate::args::EXIT_IO);
            }
        };
        let backend = match watcher.backend() {
            Backend::Fanotify => "fanotify",
            Backend::Inotify => "inotify",
        };
        eprintln!(
            "integrity-agent: watching {} ({backend}); a check every {} s",
            self.args.root.display(),
            interval.as_secs()
        );
        let mut current: Option<Checked> = None;
        let mut next_check = Instant::now();
        let mut checks = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next_check || current.is_none() {
                checks += 1;
                current = self.logged_check(checks);
                // Up to 10 % more, so a fleet started together does not stampede.
                next_check = Instant::now() + interval + interval.mul_f64(fastrand::f64() * 0.1);
                if current.is_none() {
                    // Not even a baseline: wait for the next check.
                    while !stop.load(Ordering::Relaxed) && Instant::now() < next_check {
                        std::thread::sleep(POLL.min(next_check - Instant::now()));
                    }
                    continue;
                }
            }
            let changes = match watcher.wait(POLL, COALESCE) {
                Ok(changes) => changes,
                Err(error) => {
                    warn(format!("watching: {error}; checking everything"));
                    next_check = Instant::now();
                    continue;
                }
            };
            if changes.overflow {
                warn("the kernel's event queue overflowed: checking everything now".into());
                next_check = Instant::now();
                continue;
            }
            if changes.paths.is_empty() {
                continue;
            }
            if let Some(checked) = current.as_mut() {
                if let Err(fatal) = self.recheck(checked, changes.paths) {
                    warn(format!(
                        "re-checking changed paths: {}; checking everything",
                        fatal.message
                    ));
                    next_check = Instant::now();
                }
            }
        }
        eprintln!("integrity-agent: stopping after {checks} check(s)");
        ExitCode::SUCCESS
    }

    fn logged_check(&self, run: u64) -> Option<Checked> {
        let started = Instant::now();
        match self.check_and_report() {
            Ok(checked) => {
                let s = checked.summary;
                eprintln!(
                    "integrity-agent: check {run}: {} added, {} deleted, {} modified, {} metadata changed, {} type changed, {} errors, {} scanned in {:.2} s",
                    s.added, s.deleted, s.modified, s.metadata_changed, s.type_changed, s.errors, s.scanned,
                    started.elapsed().as_secs_f64()
                );
                Some(checked)
            }
            Err(fatal) => {
                eprintln!("integrity-agent: check {run} failed: {}", fatal.message);
                None
            }
        }
    }

    /// The watcher: the root, without the exclusions, the state directory and the
    /// cache (the agent's own writes).
    fn watcher(&self) -> std::io::Result<Watcher> {
        let mut own = Vec::new();
        let state_dir = self
            .args
            .state_dir
            .clone()
            .unwrap_or_else(|| crate::identity::DEFAULT_STATE_DIR.into());
        let cache_dir = self
            .args
            .cache_dir
            .clone()
            .unwrap_or_else(|| crate::source::DEFAULT_CACHE_DIR.into());
        for dir in [state_dir, cache_dir] {
            own.extend(below_root(&self.args.root, &dir));
        }
        let exclusions = self.exclusions.clone();
        Watcher::new(
            &self.args.root,
            self.args.cross_filesystems,
            Box::new(move |path| exclusions.is_excluded(path) || own.iter().any(|dir| dir == path)),
        )
    }

    /// Checks `paths` (and what lies below them) against the baseline, and reports
    /// what that changed in the host's findings.
    fn recheck(&self, checked: &mut Checked, paths: Vec<Vec<u8>>) -> Result<(), Fatal> {
        let baseline = &checked.loaded.baseline;
        let mut batch: Vec<Kept> = Vec::new();
        let mut batch_errors: Vec<ScanErrorRecord> = Vec::new();
        let mut changed = false;
        let mut rechecked = 0u64;
        for scope in topmost(paths) {
            let scanned = scan_path(&self.args.root, &scope, self.args.cross_filesystems)
                .map_err(|error| Fatal::new(crate::args::EXIT_IO, error.to_string()))?;
            rechecked += scanned.entries.len() as u64;
            let mut scanned = scanned;
            scanned
                .entries
                .retain(|entry| !self.exclusions.covers(&entry.path));
            let base = range_of(&baseline.entries, |entry| &entry.path, &scope);
            let current = crate::compare::comparable(baseline, &scanned.entries);
            let judged = self.judge(
                &checked.applied,
                &baseline.entries[base],
                &current,
                &scanned,
            );
            let found: Vec<Kept> = judged
                .anomalies
                .iter()
                .zip(&judged.rules)
                .map(|(anomaly, rule)| Kept::of(anomaly, rule.clone()))
                .collect();
            let old = range_of(&checked.findings, |kept| &kept.path, &scope);
            if checked.findings[old.clone()] != found[..] {
                changed = true;
                checked.findings.splice(old, found.iter().cloned());
            }
            let errors = range_of(&checked.errors, |error| &error.path, &scope);
            if checked.errors[errors.clone()] != scanned.errors[..] {
                changed = true;
                checked
                    .errors
                    .splice(errors, scanned.errors.iter().cloned());
            }
            batch.extend(found);
            batch_errors.extend(scanned.errors);
        }
        if !changed {
            return Ok(());
        }
        let mut summary = DriftSummary::default();
        for kept in &checked.findings {
            summary.record(kept.kind);
        }
        summary.errors = checked.errors.len() as u64;
        summary.scanned = checked.summary.scanned;
        checked.summary = summary;
        let info = CheckInfo {
            mode: ReportMode::Watch,
            last_full: checked.last_full.clone(),
            rehashed: rechecked,
            why_full: None,
        };
        self.render(&report::Findings {
            image_id: &baseline.image_id,
            anomalies: batch.iter().map(Kept::anomaly).collect(),
            rules: batch.iter().map(|kept| kept.rule.clone()).collect(),
            allowed: Vec::new(),
            verbose: self.args.verbose,
            errors: &batch_errors,
            summary,
            source: checked.loaded.source,
            note: checked.loaded.note.as_deref(),
            check: Some(&info),
        })?;
        if let (Some(reporter), Some(image_id)) = (&self.reporter, &self.image_id) {
            let mut draft = fleet::Draft::start();
            draft.set_baseline(&checked.loaded, self.verifier.is_some());
            let all: Vec<_> = checked.findings.iter().map(Kept::anomaly).collect();
            draft.set_anomalies(&all, reporter.max_anomalies());
            draft.summary = summary;
            draft.mode = Some(ReportMode::Watch);
            draft.last_full = checked.last_full.clone();
            reporter.report(image_id, draft, None);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_cover_their_subtrees_only() {
        assert!(within(b"/etc/x", b"/etc"));
        assert!(within(b"/etc", b"/etc"));
        assert!(!within(b"/etcetera", b"/etc"));
        assert!(within(b"/anything", b"/"));
        let paths: Vec<&[u8]> = vec![b"/a", b"/a/b", b"/a/c", b"/ab", b"/b"];
        assert_eq!(range_of(&paths, |p| p, b"/a"), 0..3);
        assert_eq!(range_of(&paths, |p| p, b"/ab"), 3..4);
        assert_eq!(range_of(&paths, |p| p, b"/c"), 5..5);
        let top = topmost(vec![
            b"/a/b".to_vec(),
            b"/a".to_vec(),
            b"/ab".to_vec(),
            b"/a/b/c".to_vec(),
        ]);
        assert_eq!(top, vec![b"/a".to_vec(), b"/ab".to_vec()]);
    }
}
