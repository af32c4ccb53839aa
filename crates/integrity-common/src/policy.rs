//! Policy: per-path rules that decide what is checked, so a fleet sees only real drift.
//!
//! A policy is an ordered list of rules. Each rule matches paths by glob and says what
//! is checked there: `ignore` (the path is not scanned at all), or a subset of
//! `content`, `mode`, `owner` and `type`, plus `added_ok` (the path may appear where the
//! baseline has nothing, e.g. `/home/**`) and `growing` (an append-only file: it may
//! grow, but the bytes the baseline hashed must still be its first bytes).
//!
//! **Semantics** (also in docs/ARCHITECTURE.md):
//!
//! * The first rule that matches a path decides, as in a firewall: write specific rules
//!   before general ones. A path no rule matches gets every check.
//! * Globs match the whole path (relative to the scanned root, with a leading `/`):
//!   `*`, `?` and `[…]` never cross a `/`; `**` crosses any number of components;
//!   `{a,b}` alternates; `\` escapes. `/var/lib/cloud/**` matches everything below
//!   `/var/lib/cloud` but not the directory itself.
//! * An ignored directory is not descended into, except where a rule placed *before*
//!   the one that ignored it can match something below it: the walk then goes in, and
//!   records only the paths such an earlier rule lets through.
//! * The exclusions (ARCHITECTURE.md: Scanner's default list and `--exclude`) act as `ignore` rules
//!   placed after all of the policy's rules, covering the excluded path and all below
//!   it. So a policy can reach into `/var/log` for one file (`/var/log/dpkg.log` as
//!   `growing`) while the rest of `/var/log` stays unscanned.
//!
//! People write policies in TOML (`[[rule]]` tables; unknown keys are errors, a typo in a
//! security policy must not pass silently); inside a manifest the same rules travel as
//! JSON (field `policy`), covered by the baseline's signature.
//!
//! **Widening is always reported** (issue 16): a change that gives someone more power
//! over a path (a new group/other write bit, a new set-uid/set-gid bit, a new owner or
//! group; an added set-uid/set-gid or world-writable entry) is reported under every rule
//! that does not `ignore` the path, whatever its `check`, `added_ok` or `growing` say.
//! See [`Widening`].
//!
//! The module by job: this file holds the rules, their parsing, validation and
//! matching; `select` decides what a walk records; `applied` is what an agent does with
//! the rules (verdicts, judging anomalies, `--explain`); `widening` says which changes
//! give power away.

mod applied;
mod select;
mod widening;

pub use applied::{
    refuse_weaker, Applied, Explanation, Judged, NotScanned, Origin, RuleRef, Verdict,
};
pub use select::{select, selected, Select, NO_BOUND};
pub use widening::Widening;

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;

/// Most rules in one policy.
pub const MAX_RULES: usize = 1000;
/// Most globs in one rule.
pub const MAX_PATTERNS_PER_RULE: usize = 256;
/// Most globs in one policy.
pub const MAX_PATTERNS: usize = 4096;
/// Longest glob, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1024;
/// Most glob bytes in one policy (bounds the compiled matcher of a hostile manifest).
pub const MAX_PATTERN_TOTAL_BYTES: usize = 256 << 10;
/// Longest `name` or `reason`, in bytes.
pub const MAX_TEXT_BYTES: usize = 1024;

/// The built-in policy for cloud VMs, in TOML with a comment on every rule
/// (`integrity-collector --print-default-policy`).
pub const CLOUD_DEFAULT_TOML: &str = include_str!("cloud-default-policy.toml");

/// What a rule checks, as a small bit set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Checks(u8);

impl Checks {
    /// A file's bytes, a symlink's target, a device's number.
    pub const CONTENT: Self = Self(1);
    /// Permission bits, setuid/setgid/sticky included.
    pub const MODE: Self = Self(1 << 1);
    /// uid and gid.
    pub const OWNER: Self = Self(1 << 2);
    /// The kind of object (a file that became a symlink, …).
    pub const TYPE: Self = Self(1 << 3);
    pub const NONE: Self = Self(0);
    pub const ALL: Self = Self(0b1111);

    const NAMES: [(Self, &'static str); 4] = [
        (Self::CONTENT, "content"),
        (Self::MODE, "mode"),
        (Self::OWNER, "owner"),
        (Self::TYPE, "type"),
    ];

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Parses one check name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::NAMES
            .into_iter()
            .find(|(_, text)| *text == name)
            .map(|(check, _)| check)
    }

    /// The names in the set, in a fixed order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(check, _)| self.contains(*check))
            .map(|(_, name)| name)
    }

    /// The names not in the set.
    pub fn missing(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(check, _)| !self.contains(*check))
            .map(|(_, name)| name)
    }
}

impl fmt::Display for Checks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.names().collect();
        if names.is_empty() {
            f.write_str("nothing but presence")
        } else {
            f.write_str(&names.join(", "))
        }
    }
}

/// One rule of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// A short label for reports (`--verbose`, `--explain`).
    pub name: Option<String>,
    /// Globs; the rule matches a path when any of them does.
    pub paths: Vec<String>,
    /// The path is not scanned at all.
    pub ignore: bool,
    /// What is compared (empty for `ignore`).
    pub check: Checks,
    /// The path may exist where the baseline has nothing.
    pub added_ok: bool,
    /// An append-only file: it may grow; the baseline's bytes must remain its prefix.
    pub growing: bool,
    /// Why the rule is there (shown by `--explain`).
    pub reason: Option<String>,
}

/// Why a policy was refused. The message names the rule (1-based, as people count) and
/// the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(String);

impl PolicyError {
    fn new(message: impl Into<String>) -> Self {
        PolicyError(message.into())
    }
}

/// A validated, compiled policy.
#[derive(Clone)]
pub struct Policy {
    rules: Vec<Rule>,
    set: GlobSet,
    /// For each glob of `set`, the index of its rule.
    owner: Vec<u32>,
    /// For each glob of a non-ignore rule: (rule index, its literal prefix, whether the
    /// glob is all literal). Answers "could this rule match something below dir D?".
    reach: Vec<(usize, Box<[u8]>, bool)>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("rules", &self.rules)
            .finish()
    }
}

impl PartialEq for Policy {
    fn eq(&self, other: &Self) -> bool {
        self.rules == other.rules
    }
}

impl Eq for Policy {}

thread_local! {
    static MATCHES: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

impl Policy {
    /// Validates and compiles `rules`.
    pub fn new(rules: Vec<Rule>) -> Result<Self, PolicyError> {
        if rules.len() > MAX_RULES {
            return Err(PolicyError::new(format!(
                "{} rules; at most {MAX_RULES} are allowed",
                rules.len()
            )));
        }
        let mut builder = GlobSetBuilder::new();
        let mut owner = Vec::new();
        let mut reach = Vec::new();
        let mut total_bytes = 0usize;
        for (index, rule) in rules.iter().enumerate() {
            let what = || format!("rule {}{}", index + 1, name_suffix(rule.name.as_deref()));
            validate_rule(rule)
                .map_err(|reason| PolicyError::new(format!("{}: {reason}", what())))?;
            for pattern in &rule.paths {
                total_bytes += pattern.len();
                if owner.len() >= MAX_PATTERNS || total_bytes > MAX_PATTERN_TOTAL_BYTES {
                    return Err(PolicyError::new(format!(
                        "{}: the policy holds more than {MAX_PATTERNS} globs or {MAX_PATTERN_TOTAL_BYTES} bytes of globs",
                        what()
                    )));
                }
                let glob = compile_glob(pattern).map_err(|reason| {
                    PolicyError::new(format!("{}: path {pattern:?}: {reason}", what()))
                })?;
                builder.add(glob);
                owner.push(index as u32);
                if !rule.ignore {
                    let (prefix, literal) = literal_prefix(pattern);
                    reach.push((index, prefix.into(), literal));
                }
            }
        }
        let set = builder
            .build()
            .map_err(|error| PolicyError::new(format!("cannot compile the globs: {error}")))?;
        Ok(Policy {
            rules,
            set,
            owner,
            reach,
        })
    }

    /// A policy with no rules (every path gets every check).
    pub fn empty() -> Self {
        Self::new(Vec::new()).expect("an empty policy is valid")
    }

    /// The built-in policy for cloud VMs.
    pub fn cloud_default() -> Self {
        Self::from_toml_str(CLOUD_DEFAULT_TOML).expect("the built-in policy is valid")
    }

    /// Parses a policy written by people: `[[rule]]` tables with the keys `name`,
    /// `paths`, `ignore`, `check`, `added_ok`, `growing`, `reason`. Unknown keys are
    /// errors.
    pub fn from_toml_str(text: &str) -> Result<Self, PolicyError> {
        let file: TomlPolicy =
            toml::from_str(text).map_err(|error| PolicyError::new(error.to_string()))?;
        let rules = file
            .rule
            .into_iter()
            .enumerate()
            .map(|(index, raw)| raw.into_rule(index))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(rules)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The index of the first rule matching `path`.
    pub fn rule_for(&self, path: &[u8]) -> Option<usize> {
        if self.rules.is_empty() {
            return None;
        }
        let candidate = Candidate::new(OsStr::from_bytes(path));
        MATCHES.with(|matches| {
            let mut matches = matches.borrow_mut();
            self.set.matches_candidate_into(&candidate, &mut matches);
            matches.iter().map(|&glob| self.owner[glob] as usize).min()
        })
    }

    /// Whether a non-ignore rule placed before `bound` could match a path below the
    /// directory `dir`. Conservative: it may say yes where no path will match (the walk
    /// then lists the directory and records nothing), never no where one could.
    pub fn reaches_below(&self, dir: &[u8], bound: usize) -> bool {
        let mut below = Vec::with_capacity(dir.len() + 1);
        below.extend_from_slice(dir);
        if dir != b"/" {
            below.push(b'/');
        }
        self.reach.iter().any(|(index, prefix, literal)| {
            *index < bound
                && ((prefix.starts_with(&below) && prefix.len() > below.len())
                    || (!literal && below.starts_with(prefix)))
        })
    }

    /// The rules of `first` followed by those of `then` (first match wins, so `first`
    /// takes precedence).
    pub fn chain(first: &Policy, then: &Policy) -> Result<Policy, PolicyError> {
        let mut rules = first.rules.clone();
        rules.extend(then.rules.iter().cloned());
        Policy::new(rules)
    }
}

impl Serialize for Policy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("Policy", 1)?;
        out.serialize_field("rules", &self.rules)?;
        out.end()
    }
}

impl Serialize for Rule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("Rule", 7)?;
        if let Some(name) = &self.name {
            out.serialize_field("name", name)?;
        }
        out.serialize_field("paths", &self.paths)?;
        if self.ignore {
            out.serialize_field("ignore", &true)?;
        } else {
            out.serialize_field("check", &self.check.names().collect::<Vec<_>>())?;
        }
        if self.added_ok {
            out.serialize_field("added_ok", &true)?;
        }
        if self.growing {
            out.serialize_field("growing", &true)?;
        }
        if let Some(reason) = &self.reason {
            out.serialize_field("reason", reason)?;
        }
        out.end()
    }
}

fn name_suffix(name: Option<&str>) -> String {
    match name {
        Some(name) => format!(" {name:?}"),
        None => String::new(),
    }
}

/// The policy inside a manifest (JSON). Unknown keys are ignored there, as everywhere
/// in a manifest (REFERENCE §1); unknown *values* (a check name) are errors.
#[derive(Deserialize)]
pub(crate) struct RawPolicy {
    rules: Vec<RawRule>,
}

impl RawPolicy {
    pub(crate) fn into_policy(self) -> Result<Policy, PolicyError> {
        let rules = self
            .rules
            .into_iter()
            .enumerate()
            .map(|(index, raw)| raw.into_rule(index))
            .collect::<Result<Vec<_>, _>>()?;
        Policy::new(rules)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlPolicy {
    #[serde(default)]
    rule: Vec<TomlRule>,
}

/// One spelling of a rule for both sources; TOML refuses unknown keys.
macro_rules! raw_rule {
    ($name:ident $(, $attr:meta)?) => {
        #[derive(Deserialize)]
        $(#[$attr])?
        struct $name {
            #[serde(default)]
            name: Option<String>,
            paths: Vec<String>,
            #[serde(default)]
            ignore: bool,
            #[serde(default)]
            check: Option<Vec<String>>,
            #[serde(default)]
            added_ok: bool,
            #[serde(default)]
            growing: bool,
            #[serde(default)]
            reason: Option<String>,
        }

        impl $name {
            fn into_rule(self, index: usize) -> Result<Rule, PolicyError> {
                build_rule(
                    index,
                    self.name,
                    self.paths,
                    self.ignore,
                    self.check,
                    self.added_ok,
                    self.growing,
                    self.reason,
                )
            }
        }
    };
}

raw_rule!(RawRule);
raw_rule!(TomlRule, serde(deny_unknown_fields));

#[allow(clippy::too_many_arguments)]
fn build_rule(
    index: usize,
    name: Option<String>,
    paths: Vec<String>,
    ignore: bool,
    check: Option<Vec<String>>,
    added_ok: bool,
    growing: bool,
    reason: Option<String>,
) -> Result<Rule, PolicyError> {
    let what = || format!("rule {}{}", index + 1, name_suffix(name.as_deref()));
    if ignore && check.is_some() {
        return Err(PolicyError::new(format!(
            "{}: an ignore rule checks nothing; drop `check` or `ignore`",
            what()
        )));
    }
    let checks = match &check {
        None if ignore => Checks::NONE,
        None => Checks::ALL,
        Some(names) => {
            let mut checks = Checks::NONE;
            for name in names {
                let one = Checks::parse(name).ok_or_else(|| {
                    PolicyError::new(format!(
                        "{}: unknown check {name:?} (known: content, mode, owner, type)",
                        what()
                    ))
                })?;
                checks = checks.union(one);
            }
            checks
        }
    };
    Ok(Rule {
        name,
        paths,
        ignore,
        check: checks,
        added_ok,
        growing,
        reason,
    })
}

fn validate_text(field: &str, text: &Option<String>) -> Result<(), String> {
    if let Some(text) = text {
        if text.is_empty() || text.len() > MAX_TEXT_BYTES {
            return Err(format!("{field} must be 1 to {MAX_TEXT_BYTES} bytes"));
        }
        if text.chars().any(char::is_control) {
            // Names and reasons reach reports and syslog: no line breaks, no escapes.
            return Err(format!("{field} holds a control character"));
        }
    }
    Ok(())
}

fn validate_rule(rule: &Rule) -> Result<(), String> {
    validate_text("name", &rule.name)?;
    validate_text("reason", &rule.reason)?;
    if rule.paths.is_empty() {
        return Err("`paths` is empty".into());
    }
    if rule.paths.len() > MAX_PATTERNS_PER_RULE {
        return Err(format!(
            "{} paths; at most {MAX_PATTERNS_PER_RULE} per rule",
            rule.paths.len()
        ));
    }
    if rule.ignore && (rule.added_ok || rule.growing || rule.check != Checks::NONE) {
        return Err("an ignore rule cannot also have check, added_ok or growing".into());
    }
    if rule.growing && !rule.check.contains(Checks::CONTENT) {
        return Err("growing is a way to check content: it needs `content` in check".into());
    }
    Ok(())
}

/// Checks a glob's shape and compiles it.
fn compile_glob(pattern: &str) -> Result<globset::Glob, String> {
    if pattern.is_empty() || pattern.len() > MAX_PATTERN_BYTES {
        return Err(format!(
            "a path glob must be 1 to {MAX_PATTERN_BYTES} bytes"
        ));
    }
    if pattern.contains('\0') {
        return Err("holds a NUL byte".into());
    }
    if !(pattern.starts_with('/') || pattern.starts_with("**")) {
        return Err("must start with '/' (paths are relative to the root) or '**'".into());
    }
    if pattern.len() > 1 && pattern.ends_with('/') {
        return Err(
            "ends with '/': write DIR for the directory itself, DIR/** for what is below it".into(),
        );
    }
    if pattern.contains("//") {
        return Err("holds an empty component ('//')".into());
    }
    if pattern
        .split('/')
        .any(|component| component == "." || component == "..")
    {
        return Err("holds a '.' or '..' component".into());
    }
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|error| error.kind().to_string())
}

/// The bytes of `pattern` before its first special character, and whether the whole
/// pattern is literal.
fn literal_prefix(pattern: &str) -> (&[u8], bool) {
    let bytes = pattern.as_bytes();
    match bytes
        .iter()
        .position(|b| matches!(b, b'*' | b'?' | b'[' | b'{' | b'\\'))
    {
        Some(cut) => (&bytes[..cut], false),
        None => (bytes, true),
    }
}

/// Fixtures shared by the unit tests of this module and its children.
#[cfg(test)]
mod fixtures {
    use super::Policy;
    use crate::digest::Sha256Digest;
    use crate::manifest::{EntryKind, FileIntegrityEntry};

    pub(super) fn policy(toml: &str) -> Policy {
        Policy::from_toml_str(toml).unwrap()
    }

    pub(super) fn error(toml: &str) -> String {
        Policy::from_toml_str(toml).unwrap_err().to_string()
    }

    pub(super) fn entry(
        path: &str,
        kind: EntryKind,
        content: &[u8],
        mode: u32,
    ) -> FileIntegrityEntry {
        FileIntegrityEntry {
            path: path.as_bytes().into(),
            sha256: kind.has_content().then(|| Sha256Digest::of(content)),
            mode,
            uid: 0,
            gid: 0,
            kind,
            size: (kind == EntryKind::File).then_some(content.len() as u64),
            target: None,
            rdev: None,
        }
    }

    pub(super) const SAMPLE: &str = r#"
        [[rule]]
        name = "keep one log"
        paths = ["/var/log/dpkg.log"]
        growing = true

        [[rule]]
        paths = ["/var/lib/cloud/scripts/**"]

        [[rule]]
        name = "cloud"
        paths = ["/var/lib/cloud/**"]
        ignore = true

        [[rule]]
        paths = ["/etc/hostname", "/etc/ssh/ssh_host_*"]
        check = ["mode", "owner"]
        added_ok = true

        [[rule]]
        paths = ["/etc/**"]
        check = ["content", "mode", "owner", "type"]
    "#;
}

#[cfg(test)]
mod tests {
    use super::fixtures::{error, policy, SAMPLE};
    use super::*;
    use crate::exclude::Exclusions;

    #[test]
    fn first_match_wins() {
        let p = policy(SAMPLE);
        assert_eq!(p.rule_for(b"/etc/hostname"), Some(3));
        assert_eq!(p.rule_for(b"/etc/passwd"), Some(4));
        assert_eq!(p.rule_for(b"/var/lib/cloud/scripts/x"), Some(1));
        assert_eq!(p.rule_for(b"/var/lib/cloud/instance"), Some(2));
        assert_eq!(p.rule_for(b"/usr/bin/ls"), None);
        // `*` stays within one component; `DIR/**` is not DIR itself.
        assert_eq!(p.rule_for(b"/etc/ssh/ssh_host_rsa_key"), Some(3));
        assert_eq!(p.rule_for(b"/var/lib/cloud"), None);
        // Bytes that are not UTF-8 match too.
        assert_eq!(p.rule_for(b"/etc/\xff"), Some(4));
    }

    #[test]
    fn people_get_clear_errors() {
        for (toml, want) in [
            (
                "[[rule]]\npaths = [\"/a\"]\nignroe = true\n",
                "unknown field `ignroe`",
            ),
            (
                "[[rule]]\npaths = [\"/a\"]\ncheck = [\"contents\"]\n",
                "rule 1: unknown check \"contents\"",
            ),
            (
                "[[rule]]\npaths = [\"/a\"]\nignore = true\ncheck = []\n",
                "an ignore rule checks nothing",
            ),
            (
                "[[rule]]\npaths = [\"/a\"]\nignore = true\nadded_ok = true\n",
                "cannot also have",
            ),
            (
                "[[rule]]\npaths = [\"/a\"]\ngrowing = true\ncheck = [\"mode\"]\n",
                "needs `content`",
            ),
            ("[[rule]]\npaths = []\n", "`paths` is empty"),
            ("[[rule]]\npaths = [\"etc/x\"]\n", "must start with '/'"),
            (
                "[[rule]]\npaths = [\"/var/cache/\"]\n",
                "DIR/** for what is below it",
            ),
            ("[[rule]]\npaths = [\"/a/../b\"]\n", "'..'"),
            ("[[rule]]\npaths = [\"/a//b\"]\n", "'//'"),
            (
                "[[rule]]\npaths = [\"/a/[b\"]\n",
                "unclosed character class",
            ),
            (
                "[[rule]]\nname = \"x\\ny\"\npaths = [\"/a\"]\n",
                "control character",
            ),
            ("[[rules]]\npaths = [\"/a\"]\n", "unknown field `rules`"),
            (
                "[[rule]]\npaths = [\"/a\"]\n\n[[rule]]\nname = \"second\"\npaths = [\"\"]\n",
                "rule 2 \"second\"",
            ),
        ] {
            let got = error(toml);
            assert!(got.contains(want), "{toml:?}: {got}");
        }
        let many = "[[rule]]\npaths = [\"/a\"]\n".repeat(MAX_RULES + 1);
        assert!(error(&many).contains("at most 1000"));
        let long = format!(
            "[[rule]]\npaths = [\"/{}\"]\n",
            "a".repeat(MAX_PATTERN_BYTES)
        );
        assert!(error(&long).contains("1 to 1024 bytes"));
    }

    #[test]
    fn the_built_in_policy_parses_and_every_rule_says_why() {
        let p = Policy::cloud_default();
        assert!(p.len() >= 10);
        for rule in p.rules() {
            assert!(rule.name.is_some() && rule.reason.is_some(), "{rule:?}");
        }
        let ex = Exclusions::defaults();
        for path in [
            "/etc/machine-id",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/etc/ssh/ssh_host_ed25519_key",
        ] {
            let rule = &p.rules()[p.rule_for(path.as_bytes()).unwrap()];
            assert!(!rule.check.contains(Checks::CONTENT), "{path}");
        }
        for path in [
            "/etc/passwd",
            "/etc/shadow",
            "/etc/sudoers",
            "/etc/pam.d/common-auth",
            "/usr/bin/find",
            "/etc/cron.d/x",
            "/root/.ssh/authorized_keys",
            "/root/.bashrc",
            "/etc/apt/sources.list",
        ] {
            assert_eq!(
                p.rule_for(path.as_bytes()),
                None,
                "{path} must stay fully checked"
            );
            assert!(selected(Some(&p), &ex, path.as_bytes()));
        }
        assert!(!selected(
            Some(&p),
            &ex,
            b"/var/lib/cloud/instance/boot-finished"
        ));
        assert!(selected(Some(&p), &ex, b"/var/log/dpkg.log"));
        assert!(p.rules()[p.rule_for(b"/var/log/dpkg.log").unwrap()].growing);
    }

    #[test]
    fn json_round_trip_keeps_every_field() {
        let p = policy(SAMPLE);
        let json = serde_json::to_string(&p).unwrap();
        let raw: RawPolicy = serde_json::from_str(&json).unwrap();
        assert_eq!(raw.into_policy().unwrap(), p);
        // Inside a manifest unknown keys are ignored, unknown values are not.
        let lenient: RawPolicy =
            serde_json::from_str(r#"{"rules":[{"paths":["/a"],"future":1}],"version":2}"#).unwrap();
        assert_eq!(lenient.into_policy().unwrap().rules()[0].check, Checks::ALL);
        let strict: RawPolicy =
            serde_json::from_str(r#"{"rules":[{"paths":["/a"],"check":["xattrs"]}]}"#).unwrap();
        assert!(strict.into_policy().is_err());
    }
}
