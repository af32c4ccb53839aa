//! `--explain PATH…`: which rule of the policy in force applies to each path, and what
//! is checked there (REFERENCE §3).

use crate::args::{Format, EXIT_IO};
use crate::{Agent, Fatal};
use integrity_common::policy::NotScanned;
use integrity_common::scan::describe_io_error;
use std::io::Write;

impl Agent {
    /// `--explain PATH…`: the rule in force for each path and what it checks.
    pub(crate) fn explain(&self) -> Result<(), Fatal> {
        let loaded = self.load()?;
        let applied = self.applied(&loaded.baseline)?;
        let mut out = String::new();
        for text in &self.args.explain {
            let trimmed = text.trim_end_matches('/');
            let path = if trimmed.is_empty() { "/" } else { trimmed };
            let explanation = applied.explain(path.as_bytes());
            let verdict = &explanation.verdict;
            let not_scanned = explanation.not_scanned.as_ref().map(|why| match why {
                NotScanned::Ignored { by, at } => {
                    format!(
                        "ignored by {by} at {}",
                        integrity_common::pathenc::encode(at)
                    )
                }
                NotScanned::Excluded(at) => format!(
                    "{} is excluded (the default exclusions or --exclude)",
                    integrity_common::pathenc::encode(at)
                ),
            });
            let rule = verdict.rule.map(|rule| rule.to_string());
            let added_by = verdict.added_by.map(|rule| rule.to_string());
            let reason = verdict.rule.and_then(|rule| rule.rule.reason.clone());
            match self.args.format {
                Format::Json => {
                    let line = serde_json::json!({
                        "path": path,
                        "scanned": not_scanned.is_none(),
                        "not_scanned": not_scanned,
                        "rule": rule,
                        "added_by": added_by,
                        "checks": verdict.checks.names().collect::<Vec<_>>(),
                        "added_ok": verdict.added_ok,
                        "growing": verdict.growing,
                        "widening_reported": explanation.reports_widening(),
                        "reason": reason,
                        "policy": if loaded.baseline.policy.is_some() { "baseline" } else { "none" },
                    });
                    out.push_str(&line.to_string());
                    out.push('\n');
                }
                Format::Text => {
                    out.push_str(&serde_json::to_string(path).unwrap_or_default());
                    out.push('\n');
                    if let Some(why) = &not_scanned {
                        out.push_str(&format!("  not scanned: {why}\n"));
                        out.push_str("  widening: not reported (the path is not scanned at all)\n");
                        continue;
                    }
                    match &rule {
                        Some(rule) => out.push_str(&format!("  rule: {rule}\n")),
                        None if loaded.baseline.policy.is_none() => out.push_str(
                            "  rule: none (the baseline carries no policy): every check\n",
                        ),
                        None => out.push_str("  rule: none matches: every check\n"),
                    }
                    if let Some(added_by) = &added_by {
                        out.push_str(&format!("  checks added by: {added_by}\n"));
                    }
                    let missing: Vec<_> = verdict.checks.missing().collect();
                    out.push_str(&format!("  checked: {}", verdict.checks));
                    if !missing.is_empty() {
                        out.push_str(&format!("; not checked: {}", missing.join(", ")));
                    }
                    out.push('\n');
                    out.push_str(&format!(
                        "  if added: {}\n",
                        if verdict.added_ok {
                            "allowed (added_ok), unless set-uid, set-gid or world-writable"
                        } else {
                            "reported"
                        }
                    ));
                    out.push_str(
                        "  widening: always reported here (a new group/other write, set-uid \
                         or set-gid bit, a new owner or group; an added set-id or \
                         world-writable entry), whatever the rule checks\n",
                    );
                    if verdict.growing {
                        out.push_str("  growing: may grow; a change to its earlier bytes or a shrink is reported\n");
                    }
                    if let Some(reason) = &reason {
                        out.push_str(&format!("  why: {reason}\n"));
                    }
                }
            }
        }
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|error| {
                Fatal::new(
                    EXIT_IO,
                    format!("cannot write: {}", describe_io_error(&error)),
                )
            })
    }
}
