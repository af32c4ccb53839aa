//! Rendering a check's findings: text for people (grouped by kind, old → new, a summary
//! line, colour only on a terminal) and JSON lines for machines (REFERENCE §3–4).

use integrity_common::policy::Widening;
use integrity_common::{
    pathenc, Anomaly, AnomalyKind, DriftSummary, FileIntegrityEntry, ScanErrorRecord,
};
use std::io::{self, Write};

/// A change the policy let through.
pub struct Allowed<'a> {
    pub anomaly: Anomaly<'a>,
    /// The rule that let it through.
    pub rule: String,
    pub why: &'static str,
}

/// What one check found, ready to render.
pub struct Findings<'a> {
    pub image_id: &'a str,
    pub anomalies: Vec<Anomaly<'a>>,
    /// For each anomaly, the rule in force at its path (`None`: no rule, every check).
    pub rules: Vec<Option<String>>,
    /// Changes the policy let through (listed with `--verbose`).
    pub allowed: Vec<Allowed<'a>>,
    pub verbose: bool,
    pub errors: &'a [ScanErrorRecord],
    pub summary: DriftSummary,
    /// `service`, `cache` or `file`.
    pub source: &'a str,
    pub note: Option<&'a str>,
    /// What kind of check ran.
    pub check: Option<&'a crate::check::CheckInfo>,
}

/// The summary line's `check` object: `{"mode","last_full","rehashed"}` (and
/// `"why_full"` when a full check had a reason).
fn check_json(check: &crate::check::CheckInfo) -> io::Result<Vec<u8>> {
    let mut bytes = format!(
        "{{\"mode\":{},\"last_full\":{},\"rehashed\":{}",
        serde_json::to_string(check.mode.as_str())?,
        serde_json::to_string(&check.last_full)?,
        check.rehashed
    )
    .into_bytes();
    if let Some(why) = &check.why_full {
        bytes.extend_from_slice(b",\"why_full\":");
        serde_json::to_writer(&mut bytes, why)?;
    }
    bytes.push(b'}');
    Ok(bytes)
}

/// The text report's `check:` line.
fn check_line(check: &crate::check::CheckInfo) -> String {
    let mut line = format!(
        "check: {}, {} files re-hashed",
        check.mode.as_str(),
        check.rehashed
    );
    if let Some(why) = &check.why_full {
        line.push_str(&format!(" ({why})"));
    }
    if let (Some(last), false) = (
        &check.last_full,
        check.mode == integrity_common::report::ReportMode::Full,
    ) {
        line.push_str(&format!(", last full check {last}"));
    }
    line
}

/// The JSON report: one anomaly per line, then one line per scan error, then the
/// summary (with the baseline's source beside it).
///
/// An anomaly line is REFERENCE §3–4's, in its order; a change that widens who may do what
/// with the path adds `"widening":["g+w","o+w","setuid","setgid","owner","group"]`
/// (those that apply; see [`Widening`]), and `--verbose` adds `"rule"` (null: no rule).
/// Lines of other findings are unchanged.
pub fn write_json(out: &mut dyn Write, findings: &Findings<'_>) -> io::Result<()> {
    for (index, anomaly) in findings.anomalies.iter().enumerate() {
        let mut line = serde_json::to_vec(anomaly)?;
        let widening = Widening::of(anomaly);
        if !widening.is_empty() {
            line = with_field(line, "widening", serde_json::to_value(widening)?)?;
        }
        if findings.verbose {
            let rule = findings.rules.get(index).cloned().flatten();
            line = with_field(line, "rule", rule.into())?;
        }
        line.push(b'\n');
        out.write_all(&line)?;
    }
    if findings.verbose {
        for allowed in &findings.allowed {
            let line = serde_json::json!({
                "allowed": allowed.anomaly.kind.as_str(),
                "path": pathenc::encode(allowed.anomaly.path),
                "changed": allowed.anomaly.changed,
                "rule": allowed.rule,
                "why": allowed.why,
            });
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
        }
    }
    for error in findings.errors {
        serde_json::to_writer(
            &mut *out,
            &serde_json::json!({ "error": error.error, "path": pathenc::encode(&error.path) }),
        )?;
        out.write_all(b"\n")?;
    }
    let mut baseline =
        serde_json::json!({ "image_id": findings.image_id, "source": findings.source });
    if let Some(note) = findings.note {
        baseline["note"] = note.into();
    }
    // `summary` first, its counts in REFERENCE §3–4's order; the source beside it.
    out.write_all(b"{\"summary\":")?;
    if findings.verbose {
        let summary = serde_json::to_vec(&findings.summary)?;
        out.write_all(&with_field(
            summary,
            "allowed",
            findings.allowed.len().into(),
        )?)?;
    } else {
        serde_json::to_writer(&mut *out, &findings.summary)?;
    }
    out.write_all(b",\"baseline\":")?;
    serde_json::to_writer(&mut *out, &baseline)?;
    if let Some(check) = findings.check {
        out.write_all(b",\"check\":")?;
        out.write_all(&check_json(check)?)?;
    }
    out.write_all(b"}\n")
}

/// The JSON object `bytes` with one more field at its end (the fields before keep
/// their order and bytes).
fn with_field(mut bytes: Vec<u8>, key: &str, extra: serde_json::Value) -> io::Result<Vec<u8>> {
    if bytes.pop() != Some(b'}') {
        return Err(io::Error::other("not a JSON object"));
    }
    bytes.push(b',');
    serde_json::to_writer(&mut bytes, key)?;
    bytes.push(b':');
    serde_json::to_writer(&mut bytes, &extra)?;
    bytes.push(b'}');
    Ok(bytes)
}

/// The order and headings of the text report.
const GROUPS: [(AnomalyKind, &str, &str); 5] = [
    (AnomalyKind::Modified, "modified", "\x1b[1;31m"),
    (AnomalyKind::TypeChanged, "type changed", "\x1b[1;31m"),
    (
        AnomalyKind::MetadataChanged,
        "metadata changed",
        "\x1b[1;33m",
    ),
    (AnomalyKind::Deleted, "deleted", "\x1b[1;35m"),
    (AnomalyKind::Added, "added", "\x1b[1;36m"),
];

fn quoted(path: &[u8]) -> String {
    // JSON quoting: a file name cannot forge a report line.
    serde_json::to_string(&pathenc::encode(path)).unwrap_or_default()
}

fn short_hash(hash: &Option<integrity_common::Sha256Digest>) -> String {
    match hash {
        Some(digest) => digest.to_hex()[..16].to_owned(),
        None => "-".into(),
    }
}

fn target(entry: &FileIntegrityEntry) -> String {
    entry
        .target
        .as_deref()
        .map(quoted)
        .unwrap_or_else(|| "-".into())
}

/// `field old → new` for every changed field.
fn changes(anomaly: &Anomaly<'_>) -> String {
    let (Some(old), Some(new)) = (anomaly.baseline, anomaly.current) else {
        return String::new();
    };
    let mut parts = Vec::new();
    for name in anomaly.changed.names() {
        let part = match name {
            "kind" => format!("kind {} → {}", old.kind, new.kind),
            "sha256" => format!(
                "sha256 {}… → {}…",
                short_hash(&old.sha256),
                short_hash(&new.sha256)
            ),
            "size" => format!(
                "size {} → {}",
                old.size.map_or("-".into(), |size| size.to_string()),
                new.size.map_or("-".into(), |size| size.to_string())
            ),
            "target" => format!("target {} → {}", target(old), target(new)),
            "rdev" => format!("rdev {:?} → {:?}", old.rdev, new.rdev),
            "mode" => format!("mode {:04o} → {:04o}", old.mode, new.mode),
            "uid" => format!("uid {} → {}", old.uid, new.uid),
            "gid" => format!("gid {} → {}", old.gid, new.gid),
            other => other.to_owned(),
        };
        parts.push(part);
    }
    parts.join(", ")
}

fn describe(entry: &FileIntegrityEntry) -> String {
    format!(
        "{} mode {:04o} uid {} gid {}",
        entry.kind, entry.mode, entry.uid, entry.gid
    )
}

/// The text report.
pub fn write_text(out: &mut dyn Write, findings: &Findings<'_>, colour: bool) -> io::Result<()> {
    let (reset, bold, warn) = if colour {
        ("\x1b[0m", "\x1b[1m", "\x1b[1;31m")
    } else {
        ("", "", "")
    };
    let mut widened = 0usize;
    let source = match findings.note {
        Some(note) => format!("{} ({note})", findings.source),
        None => findings.source.to_owned(),
    };
    writeln!(
        out,
        "{bold}image {}{reset}, baseline from {source}",
        findings.image_id
    )?;
    for (kind, heading, paint) in GROUPS {
        let lines: Vec<(usize, &Anomaly<'_>)> = findings
            .anomalies
            .iter()
            .enumerate()
            .filter(|(_, a)| a.kind == kind)
            .collect();
        if lines.is_empty() {
            continue;
        }
        let paint = if colour { paint } else { "" };
        writeln!(out, "{paint}{heading} ({}){reset}", lines.len())?;
        for (index, anomaly) in lines {
            let detail = match kind {
                AnomalyKind::Added => anomaly.current.map(describe).unwrap_or_default(),
                AnomalyKind::Deleted => anomaly.baseline.map(describe).unwrap_or_default(),
                _ => changes(anomaly),
            };
            let rule = if findings.verbose {
                match findings.rules.get(index).cloned().flatten() {
                    Some(rule) => format!("  [{rule}]"),
                    None => "  [no rule: every check]".to_owned(),
                }
            } else {
                String::new()
            };
            let widening = Widening::of(anomaly);
            let widening = if widening.is_empty() {
                String::new()
            } else {
                widened += 1;
                format!("  {warn}WIDENING: {widening}{reset}")
            };
            writeln!(out, "  {}  {detail}{widening}{rule}", quoted(anomaly.path))?;
        }
    }
    if findings.verbose && !findings.allowed.is_empty() {
        writeln!(
            out,
            "{bold}allowed by the policy ({}){reset}",
            findings.allowed.len()
        )?;
        for allowed in &findings.allowed {
            let anomaly = &allowed.anomaly;
            let detail = match anomaly.kind {
                AnomalyKind::Added => anomaly.current.map(describe).unwrap_or_default(),
                AnomalyKind::Deleted => anomaly.baseline.map(describe).unwrap_or_default(),
                _ => changes(anomaly),
            };
            writeln!(
                out,
                "  {}  {}: {detail}  [{}: {}]",
                quoted(anomaly.path),
                anomaly.kind,
                allowed.rule,
                allowed.why
            )?;
        }
    }
    if !findings.errors.is_empty() {
        writeln!(out, "{bold}not checked ({}){reset}", findings.errors.len())?;
        for error in findings.errors {
            writeln!(out, "  {}  {}", quoted(&error.path), error.error)?;
        }
    }
    // Above the summary line, which keeps its place.
    if widened > 0 {
        writeln!(
            out,
            "{warn}{widened} change(s) widen access (group/other write, set-uid/set-gid, \
             owner or group): reported whatever the policy allows{reset}"
        )?;
    }
    // What kind of check ran, just above the summary line (which stays last).
    if let Some(check) = findings.check {
        writeln!(out, "{}", check_line(check))?;
    }
    let s = &findings.summary;
    writeln!(
        out,
        "summary: {} added, {} deleted, {} modified, {} metadata changed, {} type changed, {} errors, {} scanned",
        s.added, s.deleted, s.modified, s.metadata_changed, s.type_changed, s.errors, s.scanned
    )?;

    if !findings.verbose && !findings.allowed.is_empty() {
        writeln!(
            out,
            "({} change(s) allowed by the policy; --verbose lists them with their rules)",
            findings.allowed.len()
        )?;
    }
    Ok(())
}
