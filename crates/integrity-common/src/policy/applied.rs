//! What an agent does with the rules: the verdict for a path (the baseline's rules plus
//! a local policy), the judgement of each anomaly of a plain diff, and `--explain`.

use super::select::{selected, walk};
use super::widening::Widening;
use super::{name_suffix, Checks, Policy, PolicyError, Rule};
use crate::diff::{Anomaly, AnomalyKind, ChangedFields};
use crate::exclude::Exclusions;
use crate::manifest::{EntryKind, FileIntegrityEntry};
use std::fmt;

/// Where a rule in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The policy inside the (signed) baseline.
    Baseline,
    /// The agent's `--policy FILE`.
    Local,
}

/// A rule in force, for reports: origin, 1-based number within its policy, the rule.
#[derive(Debug, Clone, Copy)]
pub struct RuleRef<'a> {
    pub origin: Origin,
    pub number: usize,
    pub rule: &'a Rule,
}

impl fmt::Display for RuleRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = match self.origin {
            Origin::Baseline => "baseline",
            Origin::Local => "local",
        };
        write!(f, "{origin} rule {}", self.number)?;
        match &self.rule.name {
            Some(name) => write!(f, " {name:?}"),
            None => write!(f, " ({})", self.rule.paths.join(", ")),
        }
    }
}

/// What applies to one path.
#[derive(Debug, Clone, Copy)]
pub struct Verdict<'a> {
    /// The first matching rule in force (`None`: no rule, every check).
    pub rule: Option<RuleRef<'a>>,
    /// A local rule that added checks.
    pub added_by: Option<RuleRef<'a>>,
    pub ignore: bool,
    pub checks: Checks,
    pub added_ok: bool,
    pub growing: bool,
}

impl Verdict<'_> {
    /// The rules to name in a report: the one that decided, and a local one that
    /// added checks.
    pub fn label(&self) -> Option<String> {
        match (self.rule, self.added_by) {
            (Some(rule), Some(added)) => Some(format!("{rule}; checks added by {added}")),
            (rule, added) => rule.or(added).map(|rule| rule.to_string()),
        }
    }
}

/// Why a local policy was refused.
pub fn refuse_weaker(local: &Policy) -> Result<(), PolicyError> {
    for (index, rule) in local.rules.iter().enumerate() {
        let what = if rule.ignore {
            "ignore"
        } else if rule.added_ok {
            "added_ok"
        } else if rule.growing {
            "growing"
        } else {
            continue;
        };
        return Err(PolicyError::new(format!(
            "local rule {}{} ({}) uses `{what}`: a local policy may only add checks to the \
             baseline's signed policy, never remove them (--allow-weaker-policy overrides, and is logged)",
            index + 1,
            name_suffix(rule.name.as_deref()),
            rule.paths.join(", ")
        )));
    }
    Ok(())
}

/// The rules an agent applies: the baseline's policy, and a local policy that either
/// only adds checks (the default) or, when explicitly allowed, takes precedence.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Decides selection and first match: the baseline's rules, preceded by the local
    /// ones when they override.
    pub scan: Policy,
    /// With an override: how many leading rules of `scan` are local.
    local_first: usize,
    /// Without an override: local rules that only add checks.
    additions: Option<Policy>,
    pub exclusions: Exclusions,
}

impl Applied {
    /// `local` must pass [`refuse_weaker`] unless `allow_weaker`.
    pub fn new(
        baseline: Option<&Policy>,
        local: Option<&Policy>,
        allow_weaker: bool,
        exclusions: Exclusions,
    ) -> Result<Self, PolicyError> {
        let base = baseline.cloned().unwrap_or_else(Policy::empty);
        match local {
            Some(local) if allow_weaker => Ok(Applied {
                scan: Policy::chain(local, &base)?,
                local_first: local.len(),
                additions: None,
                exclusions,
            }),
            Some(local) => {
                refuse_weaker(local)?;
                Ok(Applied {
                    scan: base,
                    local_first: 0,
                    additions: Some(local.clone()),
                    exclusions,
                })
            }
            None => Ok(Applied {
                scan: base,
                local_first: 0,
                additions: None,
                exclusions,
            }),
        }
    }

    fn rule_ref(&self, index: usize) -> RuleRef<'_> {
        let (origin, number) = if index < self.local_first {
            (Origin::Local, index + 1)
        } else {
            (Origin::Baseline, index - self.local_first + 1)
        };
        RuleRef {
            origin,
            number,
            rule: &self.scan.rules[index],
        }
    }

    /// What applies to `path`.
    pub fn verdict(&self, path: &[u8]) -> Verdict<'_> {
        let mut verdict = match self.scan.rule_for(path) {
            Some(index) => {
                let rule = &self.scan.rules[index];
                Verdict {
                    rule: Some(self.rule_ref(index)),
                    added_by: None,
                    ignore: rule.ignore,
                    checks: rule.check,
                    added_ok: rule.added_ok,
                    growing: rule.growing,
                }
            }
            None => Verdict {
                rule: None,
                added_by: None,
                ignore: false,
                checks: Checks::ALL,
                added_ok: false,
                growing: false,
            },
        };
        if let Some(additions) = &self.additions {
            if let Some(index) = additions.rule_for(path) {
                let rule = &additions.rules[index];
                verdict.checks = verdict.checks.union(rule.check);
                if rule.check.contains(Checks::CONTENT) {
                    verdict.growing = false;
                }
                verdict.added_by = Some(RuleRef {
                    origin: Origin::Local,
                    number: index + 1,
                    rule,
                });
            }
        }
        verdict
    }

    /// What applies to `path`, and if it is not scanned, what stops it
    /// (`integrity-agent --explain`).
    pub fn explain(&self, path: &[u8]) -> Explanation<'_> {
        let walked = walk(Some(&self.scan), &self.exclusions, path);
        let blocked_at = path[..walked.blocked_len].to_vec();
        let not_scanned = if walked.scanned {
            None
        } else if walked.bound >= self.scan.len() {
            Some(NotScanned::Excluded(blocked_at))
        } else {
            Some(NotScanned::Ignored {
                by: self.rule_ref(walked.bound),
                at: blocked_at,
            })
        };
        Explanation {
            verdict: self.verdict(path),
            not_scanned,
        }
    }

    /// Whether a walk under these rules records `path`.
    pub fn selected(&self, path: &[u8]) -> bool {
        selected(Some(&self.scan), &self.exclusions, path)
    }

    /// Judges one anomaly of a plain diff. `grew` answers, for a `growing` file whose
    /// size did not shrink, whether the baseline's bytes are still its prefix.
    ///
    /// Widening ([`Widening::of`]) is reported whatever the rule checks: an added entry
    /// that is set-id or world-writable even where `added_ok`, a type change that
    /// widens even where `type` is not checked, and the mode, uid or gid fields that
    /// widen even where `mode` or `owner` is not checked. (A path an `ignore` rule
    /// matches is not scanned, so it never gets here.)
    pub fn judge<'a>(
        &'a self,
        anomaly: Anomaly<'a>,
        grew: &mut dyn FnMut(&FileIntegrityEntry, &FileIntegrityEntry) -> bool,
    ) -> Judged<'a> {
        let verdict = self.verdict(anomaly.path);
        let widening = Widening::of(&anomaly);
        let allowed = |why: &'static str| Judged::Allowed {
            anomaly,
            verdict,
            why,
        };
        match anomaly.kind {
            AnomalyKind::Deleted if !self.selected(anomaly.path) => Judged::NotScanned,
            AnomalyKind::Deleted => Judged::Report { anomaly, verdict },
            AnomalyKind::Added if verdict.added_ok && widening.is_empty() => allowed("added_ok"),
            AnomalyKind::Added => Judged::Report { anomaly, verdict },
            AnomalyKind::TypeChanged
                if !verdict.checks.contains(Checks::TYPE) && widening.is_empty() =>
            {
                allowed("type not checked")
            }
            AnomalyKind::TypeChanged => Judged::Report { anomaly, verdict },
            AnomalyKind::Modified if !verdict.checks.contains(Checks::CONTENT) => {
                allowed("content not checked")
            }
            AnomalyKind::Modified if verdict.growing => match (anomaly.baseline, anomaly.current) {
                (Some(old), Some(new))
                    if old.kind == EntryKind::File
                        && matches!((old.size, new.size), (Some(was), Some(now)) if now > was)
                        && grew(old, new) =>
                {
                    allowed("growing: grew, earlier bytes unchanged")
                }
                _ => Judged::Report { anomaly, verdict },
            },
            AnomalyKind::Modified => Judged::Report { anomaly, verdict },
            AnomalyKind::MetadataChanged => {
                let mut kept = ChangedFields::default();
                let mut masked = false;
                let widened = widening.fields();
                for (field, check) in [
                    (ChangedFields::MODE, Checks::MODE),
                    (ChangedFields::UID, Checks::OWNER),
                    (ChangedFields::GID, Checks::OWNER),
                ] {
                    if anomaly.changed.contains(field) {
                        if verdict.checks.contains(check) || widened.contains(field) {
                            kept = kept.with(field);
                        } else {
                            masked = true;
                        }
                    }
                }
                if kept.is_empty() {
                    allowed("metadata not checked")
                } else if masked {
                    Judged::Report {
                        anomaly: Anomaly {
                            changed: kept,
                            ..anomaly
                        },
                        verdict,
                    }
                } else {
                    Judged::Report { anomaly, verdict }
                }
            }
        }
    }
}

/// The fate of one anomaly under a policy.
#[derive(Debug, Clone, Copy)]
pub enum Judged<'a> {
    /// Drift to report (metadata fields the rule does not check removed, unless they
    /// widen: see [`Widening`]).
    Report {
        anomaly: Anomaly<'a>,
        verdict: Verdict<'a>,
    },
    /// A change the policy lets through (shown with `--verbose`).
    Allowed {
        anomaly: Anomaly<'a>,
        verdict: Verdict<'a>,
        why: &'static str,
    },
    /// A baseline entry below something these rules do not scan: not a deletion.
    NotScanned,
}

/// The answer of [`Applied::explain`].
#[derive(Debug, Clone)]
pub struct Explanation<'a> {
    pub verdict: Verdict<'a>,
    /// `None`: the path is scanned, and `verdict` says what is checked.
    pub not_scanned: Option<NotScanned<'a>>,
}

impl Explanation<'_> {
    /// Whether widening ([`Widening`]) is reported at this path: wherever it is scanned,
    /// whatever its rule checks.
    pub fn reports_widening(&self) -> bool {
        self.not_scanned.is_none()
    }
}

/// Why a path is not scanned.
#[derive(Debug, Clone)]
pub enum NotScanned<'a> {
    /// An `ignore` rule matched it, or the directory `at` above it.
    Ignored { by: RuleRef<'a>, at: Vec<u8> },
    /// It is, or lies below, the excluded path `at` (default list or `--exclude`).
    Excluded(Vec<u8>),
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{entry, policy, SAMPLE};
    use super::*;

    fn applied(toml: &str) -> Applied {
        Applied::new(Some(&policy(toml)), None, false, Exclusions::defaults()).unwrap()
    }

    fn judge<'a>(applied: &'a Applied, anomaly: Anomaly<'a>, prefix_ok: bool) -> Judged<'a> {
        applied.judge(anomaly, &mut |_, _| prefix_ok)
    }

    #[test]
    fn judging_masks_what_a_rule_does_not_check() {
        let a = applied(SAMPLE);
        let old = entry("/etc/hostname", EntryKind::File, b"golden\n", 0o644);
        let new = entry("/etc/hostname", EntryKind::File, b"vm-1\n", 0o666);
        let mut found = crate::diff(std::slice::from_ref(&old), std::slice::from_ref(&new));
        let (modified, metadata) = (found.next().unwrap(), found.next().unwrap());
        assert!(matches!(
            judge(&a, modified, false),
            Judged::Allowed {
                why: "content not checked",
                ..
            }
        ));
        match judge(&a, metadata, false) {
            Judged::Report { anomaly, verdict } => {
                assert_eq!(anomaly.changed, ChangedFields::MODE);
                assert_eq!(verdict.rule.unwrap().number, 4);
            }
            other => panic!("{other:?}"),
        }
        // An owner change alone is checked too; a type change is not (not in `check`).
        let link = entry("/etc/hostname", EntryKind::Dir, b"", 0o644);
        let kind = crate::diff(std::slice::from_ref(&old), std::slice::from_ref(&link))
            .next()
            .unwrap();
        assert!(matches!(
            judge(&a, kind, false),
            Judged::Allowed {
                why: "type not checked",
                ..
            }
        ));
        // added_ok: a new host key is fine, a new file in /etc is not.
        let key = entry("/etc/ssh/ssh_host_rsa_key", EntryKind::File, b"k", 0o600);
        let evil = entry(
            "/etc/cron.d/evil",
            EntryKind::File,
            b"* * * * * root sh",
            0o644,
        );
        for (added, allowed) in [(&key, true), (&evil, false)] {
            let anomaly = crate::diff(&[], std::slice::from_ref(added))
                .next()
                .unwrap();
            assert_eq!(
                matches!(judge(&a, anomaly, false), Judged::Allowed { .. }),
                allowed
            );
        }
    }

    #[test]
    fn growing_files_may_only_grow() {
        let a = applied(SAMPLE);
        let old = entry("/var/log/dpkg.log", EntryKind::File, b"one\n", 0o644);
        for (now, prefix_ok, allowed) in [
            (&b"one\ntwo\n"[..], true, true),
            (b"one\ntwo\n", false, false), // earlier bytes edited
            (b"", true, false),            // truncated
            (b"two\n", true, false),       // same size, other bytes
        ] {
            let new = entry("/var/log/dpkg.log", EntryKind::File, now, 0o644);
            let anomaly = crate::diff(std::slice::from_ref(&old), std::slice::from_ref(&new))
                .next()
                .unwrap();
            let judged = judge(&a, anomaly, prefix_ok);
            assert_eq!(
                matches!(judged, Judged::Allowed { .. }),
                allowed,
                "{now:?} {prefix_ok}"
            );
        }
        // Deleted is reported; a path these rules do not scan is not a deletion.
        let gone = crate::diff(std::slice::from_ref(&old), &[]).next().unwrap();
        assert!(matches!(judge(&a, gone, true), Judged::Report { .. }));
        let syslog = entry("/var/log/syslog", EntryKind::File, b"x", 0o644);
        let gone = crate::diff(std::slice::from_ref(&syslog), &[])
            .next()
            .unwrap();
        assert!(matches!(judge(&a, gone, true), Judged::NotScanned));
    }

    #[test]
    fn a_local_policy_may_only_add_checks() {
        let base = policy(SAMPLE);
        for (weaker, path) in [
            (
                "[[rule]]\npaths = [\"/usr/bin/**\"]\nignore = true\n",
                "/usr/bin/x",
            ),
            (
                "[[rule]]\npaths = [\"/etc/**\"]\nadded_ok = true\n",
                "/etc/x",
            ),
            (
                "[[rule]]\npaths = [\"/etc/passwd\"]\ngrowing = true\n",
                "/etc/passwd",
            ),
        ] {
            let local = policy(weaker);
            let error =
                Applied::new(Some(&base), Some(&local), false, Exclusions::defaults()).unwrap_err();
            assert!(error.to_string().contains("may only add checks"), "{error}");
            // Explicitly allowed: the local rule takes precedence.
            let over =
                Applied::new(Some(&base), Some(&local), true, Exclusions::defaults()).unwrap();
            assert_eq!(
                over.verdict(path.as_bytes()).rule.unwrap().origin,
                Origin::Local
            );
        }
        // A stricter rule adds to the baseline's: content of /etc/hostname checked again.
        let local = policy("[[rule]]\npaths = [\"/etc/hostname\"]\n");
        let a = Applied::new(Some(&base), Some(&local), false, Exclusions::defaults()).unwrap();
        let verdict = a.verdict(b"/etc/hostname");
        assert_eq!(verdict.checks, Checks::ALL);
        assert!(verdict.added_ok, "added_ok stays the baseline's");
        assert_eq!(verdict.added_by.unwrap().origin, Origin::Local);
        // But a path the baseline ignores stays unscanned: there is nothing to compare.
        let local = policy("[[rule]]\npaths = [\"/var/lib/cloud/**\"]\n");
        let a = Applied::new(Some(&base), Some(&local), false, Exclusions::defaults()).unwrap();
        assert!(!a.selected(b"/var/lib/cloud/instance"));
    }

    #[test]
    fn an_allowed_override_is_first_match_over_local_then_baseline() {
        let base = policy(SAMPLE);
        let local = policy("[[rule]]\npaths = [\"/usr/bin/**\"]\nignore = true\n");
        let a = Applied::new(Some(&base), Some(&local), true, Exclusions::defaults()).unwrap();
        assert!(!a.selected(b"/usr/bin/ls"));
        assert_eq!(
            a.verdict(b"/usr/bin/ls").rule.unwrap().origin,
            Origin::Local
        );
        let host = a.verdict(b"/etc/hostname").rule.unwrap();
        assert_eq!((host.origin, host.number), (Origin::Baseline, 4));
        assert_eq!(
            host.to_string(),
            "baseline rule 4 (/etc/hostname, /etc/ssh/ssh_host_*)"
        );
    }

    #[test]
    fn explain_names_what_stops_a_path() {
        let a = applied(SAMPLE);
        match a.explain(b"/var/lib/cloud/instance/x").not_scanned {
            Some(NotScanned::Ignored { by, at }) => {
                assert_eq!(by.number, 3);
                assert_eq!(at, b"/var/lib/cloud/instance");
            }
            other => panic!("{other:?}"),
        }
        match a.explain(b"/var/log/apt/history.log").not_scanned {
            Some(NotScanned::Excluded(at)) => assert_eq!(at, b"/var/log"),
            other => panic!("{other:?}"),
        }
        assert!(a.explain(b"/var/log/dpkg.log").not_scanned.is_none());
        assert!(a.explain(b"/").not_scanned.is_none());
        assert!(a.explain(b"/usr/bin/ls").verdict.rule.is_none());
    }

    const HOMES: &str = r#"
        [[rule]]
        name = "caches"
        paths = ["/home/*/.cache/**"]
        ignore = true

        [[rule]]
        name = "homes"
        paths = ["/home/**"]
        check = ["owner"]
        added_ok = true

        [[rule]]
        name = "presence"
        paths = ["/srv/**"]
        check = []
        added_ok = true
    "#;

    fn owned(mut entry: FileIntegrityEntry, uid: u32, gid: u32) -> FileIntegrityEntry {
        entry.uid = uid;
        entry.gid = gid;
        entry
    }

    /// The one finding of `old` → `new` (either may be absent), judged by `a`.
    fn judged<'a>(
        a: &'a Applied,
        old: Option<&'a FileIntegrityEntry>,
        new: Option<&'a FileIntegrityEntry>,
    ) -> Judged<'a> {
        let mut found = crate::diff(
            old.map_or(&[][..], std::slice::from_ref),
            new.map_or(&[][..], std::slice::from_ref),
        );
        let anomaly = found.next().expect("a finding");
        assert!(found.next().is_none(), "one finding");
        judge(a, anomaly, false)
    }

    /// `Some(changed)` when reported, `None` when let through.
    fn reported(judged: Judged<'_>) -> Option<ChangedFields> {
        match judged {
            Judged::Report { anomaly, .. } => Some(anomaly.changed),
            Judged::Allowed { .. } => None,
            Judged::NotScanned => panic!("not scanned"),
        }
    }

    #[test]
    fn widening_is_reported_under_every_rule_that_does_not_ignore_the_path() {
        let a = applied(HOMES);
        let dir = |path, mode| owned(entry(path, EntryKind::Dir, b"", mode), 1000, 1000);
        let file = |path, mode| owned(entry(path, EntryKind::File, b"x", mode), 1000, 1000);
        let change = |old: &FileIntegrityEntry, new: &FileIntegrityEntry| {
            reported(judged(&a, Some(old), Some(new)))
        };
        // chmod 777 of a home directory: mode is not checked there, but it widens.
        let home = dir("/home/u", 0o755);
        assert_eq!(
            change(&home, &dir("/home/u", 0o777)),
            Some(ChangedFields::MODE)
        );
        assert_eq!(
            change(&home, &dir("/home/u", 0o775)),
            Some(ChangedFields::MODE)
        );
        // chmod 700 narrows: the rule's business, let through.
        assert_eq!(change(&home, &dir("/home/u", 0o700)), None);
        assert_eq!(change(&home, &dir("/home/u", 0o1755)), None);
        // A new set-uid or set-gid bit.
        let tool = file("/home/u/tool", 0o755);
        assert_eq!(
            change(&tool, &file("/home/u/tool", 0o4755)),
            Some(ChangedFields::MODE)
        );
        assert_eq!(
            change(&tool, &file("/home/u/tool", 0o2755)),
            Some(ChangedFields::MODE)
        );
        // A rule that checks nothing but presence still reports new owners and groups,
        // and masks the narrowing part of the same change.
        let srv = file("/srv/tool", 0o755);
        let chowned = owned(file("/srv/tool", 0o750), 0, 1000);
        assert_eq!(change(&srv, &chowned), Some(ChangedFields::UID));
        let chgrped = owned(file("/srv/tool", 0o755), 1000, 0);
        assert_eq!(change(&srv, &chgrped), Some(ChangedFields::GID));
        assert_eq!(change(&srv, &file("/srv/tool", 0o700)), None);

        // Added: set-id or world-writable is reported even where added_ok.
        for (mode, report) in [
            (0o644, false),
            (0o664, false),
            (0o4755, true),
            (0o2755, true),
            (0o666, true),
        ] {
            let new = file("/home/u/.local/bin/x", mode);
            let judged = judged(&a, None, Some(&new));
            assert_eq!(matches!(judged, Judged::Report { .. }), report, "{mode:o}");
        }
        // A type change is not checked under "homes", unless it widens.
        let link = owned(
            entry("/home/u/tool", EntryKind::Symlink, b"/bin/sh", 0o777),
            1000,
            1000,
        );
        assert_eq!(change(&tool, &link), None);
        let open_dir = dir("/home/u/tool", 0o777);
        assert_eq!(change(&tool, &open_dir), Some(ChangedFields::KIND));
        let roots = owned(entry("/home/u/tool", EntryKind::Dir, b"", 0o755), 0, 1000);
        assert_eq!(change(&tool, &roots), Some(ChangedFields::KIND));

        // An ignored path is not scanned at all: nothing of it reaches the judge, and
        // a "deletion" there is not one.
        assert!(!a.selected(b"/home/u/.cache/evil"));
        let cached = file("/home/u/.cache/x", 0o644);
        assert!(matches!(
            judged(&a, Some(&cached), None),
            Judged::NotScanned
        ));
    }

    #[test]
    fn an_overriding_local_rule_that_checks_nothing_still_reports_widening() {
        let local = policy("[[rule]]\npaths = [\"/usr/bin/**\"]\ncheck = []\nadded_ok = true\n");
        let a = Applied::new(
            Some(&policy(SAMPLE)),
            Some(&local),
            true,
            Exclusions::defaults(),
        )
        .unwrap();
        let find = entry("/usr/bin/find", EntryKind::File, b"elf", 0o755);
        let setuid = entry("/usr/bin/find", EntryKind::File, b"elf", 0o4755);
        assert_eq!(
            reported(judged(&a, Some(&find), Some(&setuid))),
            Some(ChangedFields::MODE)
        );
        let narrowed = entry("/usr/bin/find", EntryKind::File, b"elf", 0o700);
        assert_eq!(reported(judged(&a, Some(&find), Some(&narrowed))), None);
        let planted = entry("/usr/bin/sh2", EntryKind::File, b"elf", 0o4755);
        assert!(matches!(
            judged(&a, None, Some(&planted)),
            Judged::Report { .. }
        ));
    }

    #[test]
    fn the_built_in_policy_reports_widening_but_not_first_boot() {
        let a = Applied::new(
            Some(&Policy::cloud_default()),
            None,
            false,
            Exclusions::defaults(),
        )
        .unwrap();
        let home = owned(entry("/home/u", EntryKind::Dir, b"", 0o755), 1000, 1000);
        let open = owned(entry("/home/u", EntryKind::Dir, b"", 0o777), 1000, 1000);
        assert_eq!(
            reported(judged(&a, Some(&home), Some(&open))),
            Some(ChangedFields::MODE)
        );
        let private = owned(entry("/home/u", EntryKind::Dir, b"", 0o700), 1000, 1000);
        assert_eq!(reported(judged(&a, Some(&home), Some(&private))), None);
        let planted = entry("/home/u/.local/bin/sh", EntryKind::File, b"elf", 0o4755);
        assert!(matches!(
            judged(&a, None, Some(&planted)),
            Judged::Report { .. }
        ));
        // What a first boot and daily use do stays quiet: resolv.conf becoming a
        // symlink, a new mailbox (0660 user:mail), wtmp (0664 root:utmp), a new
        // group-writable file of a user with a private group and umask 002.
        let resolv = entry("/etc/resolv.conf", EntryKind::File, b"nameserver x", 0o644);
        let stub = entry("/etc/resolv.conf", EntryKind::Symlink, b"../run/x", 0o777);
        assert_eq!(reported(judged(&a, Some(&resolv), Some(&stub))), None);
        for (path, mode, uid, gid) in [
            ("/var/mail/u", 0o660, 1000, 8),
            ("/var/log/wtmp", 0o664, 0, 43),
            ("/home/u/notes.txt", 0o664, 1000, 1000),
            ("/etc/ssh/ssh_host_ed25519_key", 0o600, 0, 0),
        ] {
            let new = owned(entry(path, EntryKind::File, b"x", mode), uid, gid);
            assert!(
                matches!(judged(&a, None, Some(&new)), Judged::Allowed { .. }),
                "{path}"
            );
        }
        // Ignored paths are not scanned: widening there is not seen.
        assert!(!a.selected(b"/home/u/.cache/evil"));
        assert!(!a.explain(b"/var/cache/x").reports_widening());
        assert!(a.explain(b"/home/u").reports_widening());
    }
}
