//! The README's command synopses checked against the binaries' own `--help`, shared by
//! one test per binary crate (`#[path]`-included: `CARGO_BIN_EXE_*` exists only in
//! the binary's own crate). Standard library only.
//!
//! A synopsis is a line of an unlabelled fenced block of README.md that starts with the
//! binary's name; lines indented below it continue it. For `bulletproofctl` the
//! (sub)commands a line names are found by their words (`bundle build`, `flags
//! list|get N|set N V`, `rollback | status [--json]`).
//!
//! Checked, per (sub)command: every `--flag` of a synopsis exists in the `--help` of one
//! of the commands its line names (all of them for a trailer set off by three spaces,
//! `…   [--root ROOT]`); every flag of `--help` appears in a synopsis naming that
//! command; every flag and argument in `--help` has a help text.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// What one (sub)command's `--help` lists.
#[derive(Debug, Default)]
pub struct Help {
    /// Long flags (`--root`), without `--help` and `--version`.
    pub flags: BTreeSet<String>,
    /// Options and arguments shown without any help text.
    pub undocumented: Vec<String>,
    /// Names of its subcommands (without `help`).
    pub subcommands: Vec<String>,
}

/// Runs `BIN PATH… --help` and parses it.
pub fn help(bin: &str, path: &[&str]) -> Help {
    let output = Command::new(bin)
        .args(path)
        .arg("--help")
        .env("COLUMNS", "100")
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("run {bin} {path:?} --help: {e}"));
    assert!(
        output.status.success(),
        "{bin} {path:?} --help failed: {output:?}"
    );
    parse_help(&String::from_utf8_lossy(&output.stdout))
}

/// Parses clap's help text (short or long form).
pub fn parse_help(text: &str) -> Help {
    let mut help = Help::default();
    let lines: Vec<&str> = text.lines().collect();
    let mut section = "";
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with(' ') && line.ends_with(':') {
            section = line;
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            section = "";
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let body = line.trim_start();
        let item = match section {
            "Options:" if indent <= 6 && body.starts_with('-') => true,
            "Arguments:" if indent <= 2 && body.starts_with('<') => true,
            "Commands:" if indent == 2 => {
                let name = body.split_whitespace().next().unwrap_or_default();
                if name != "help" {
                    help.subcommands.push(name.to_owned());
                }
                false
            }
            _ => false,
        };
        if !item {
            continue;
        }
        let (spec, inline) = body.split_once("  ").unwrap_or((body, ""));
        let spec = spec.trim();
        if spec == "-h, --help" || spec == "-V, --version" || spec == "--help" {
            continue;
        }
        if let Some(long) = spec.split([' ', ',']).find(|t| t.starts_with("--")) {
            help.flags.insert(long.to_owned());
        }
        // The help text is on the line, or (long form) on the next, further indented one.
        let text = if inline.trim().is_empty() {
            lines
                .get(i + 1)
                .filter(|next| {
                    let next_indent = next.len() - next.trim_start().len();
                    next_indent > indent + 2 && !next.trim_start().starts_with('-')
                })
                .map_or("", |next| next.trim())
        } else {
            inline.trim()
        };
        if text.is_empty() || text.starts_with('[') {
            help.undocumented.push(spec.to_owned());
        }
    }
    help
}

/// The synopsis lines of `bin` in the README (continuations joined to their command).
pub fn synopses(readme: &str, bin: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let (mut in_fence, mut in_block) = (false, false);
    let mut continuing = false;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            // Only unlabelled blocks hold synopses (```toml, ```json do not).
            in_fence = !in_fence;
            in_block = in_fence && line.trim() == "```";
            continuing = false;
            continue;
        }
        if !in_block {
            continue;
        }
        if line.starts_with(&format!("{bin} ")) {
            out.push(line.to_owned());
            continuing = true;
        } else if continuing && line.starts_with(' ') {
            let last = out
                .last_mut()
                .expect("a command line before its continuation");
            last.push(' ');
            last.push_str(line.trim());
        } else {
            continuing = false;
        }
    }
    out
}

/// `bulletproofctl log verify`: the binary and a subcommand path.
fn label(name: &str, path: &[String]) -> String {
    std::iter::once(name)
        .chain(path.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `--flag` words of a synopsis fragment (`[--token T | --token-file F]`, `--once|…`).
fn flags_of(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || "[]()|=,".contains(c))
        .filter(|t| t.starts_with("--") && t.len() > 2)
        .map(|t| t.trim_end_matches("...").to_owned())
        .collect()
}

/// Checks the README's synopses of `bin` against its `--help`; returns every mismatch.
pub fn check(bin: &str, name: &str, readme: &Path) -> Vec<String> {
    let readme = std::fs::read_to_string(readme).expect("read README.md");
    let lines = synopses(&readme, name);
    let mut problems = Vec::new();
    if lines.is_empty() {
        return vec![format!("README.md has no synopsis of {name}")];
    }
    // Every (sub)command with its help.
    let mut helps: BTreeMap<Vec<String>, Help> = BTreeMap::new();
    let mut pending = vec![Vec::<String>::new()];
    while let Some(path) = pending.pop() {
        let refs: Vec<&str> = path.iter().map(String::as_str).collect();
        let h = help(bin, &refs);
        for sub in &h.subcommands {
            let mut p = path.clone();
            p.push(sub.clone());
            pending.push(p);
        }
        helps.insert(path, h);
    }
    for (path, h) in &helps {
        for spec in &h.undocumented {
            problems.push(format!("{}: `{spec}` has no help text", label(name, path)));
        }
    }
    let leaves: Vec<&Vec<String>> = helps
        .iter()
        .filter(|(_, h)| h.subcommands.is_empty())
        .map(|(p, _)| p)
        .collect();
    let mut seen: BTreeMap<&Vec<String>, BTreeSet<String>> = BTreeMap::new();
    for line in &lines {
        let rest = &line[name.len()..];
        // The commands this line names: words that are (sub)command names, in order.
        let mut named: Vec<&Vec<String>> = Vec::new();
        let mut top: Option<String> = None;
        for word in rest.split(|c: char| c.is_whitespace() || "[]()|".contains(c)) {
            if word.is_empty() || !word.chars().all(|c| c.is_ascii_lowercase()) {
                continue;
            }
            let nested = top.as_ref().map(|t| vec![t.clone(), word.to_owned()]);
            if let Some(leaf) = nested.and_then(|p| leaves.iter().find(|l| ***l == p)) {
                named.push(leaf);
            } else if helps.contains_key(&vec![word.to_owned()]) {
                top = Some(word.to_owned());
                if let Some(leaf) = leaves.iter().find(|l| **l == &vec![word.to_owned()]) {
                    named.push(leaf);
                }
            }
        }
        if named.is_empty() {
            // A binary without subcommands.
            match leaves.iter().find(|l| l.is_empty()) {
                Some(root) => named.push(root),
                None => {
                    problems.push(format!("README synopsis names no command: {line}"));
                    continue;
                }
            }
        }
        let (body, trailer) = rest.rsplit_once("   ").unwrap_or((rest, ""));
        let (body, trailer) = if flags_of(trailer).is_empty() {
            (rest, "")
        } else {
            (body, trailer)
        };
        for flag in flags_of(body) {
            if !named.iter().any(|p| helps[*p].flags.contains(&flag)) {
                problems.push(format!("README: `{flag}` is in no --help of: {line}"));
            }
        }
        for flag in flags_of(trailer) {
            for p in &named {
                if !helps[*p].flags.contains(&flag) {
                    problems.push(format!(
                        "README: `{flag}` is not in `{}` --help",
                        label(name, p)
                    ));
                }
            }
        }
        let all = flags_of(rest);
        for p in &named {
            seen.entry(p).or_default().extend(all.iter().cloned());
        }
    }
    for leaf in leaves {
        let shown = seen.get(leaf).cloned().unwrap_or_default();
        for flag in &helps[leaf].flags {
            if !shown.contains(flag) {
                problems.push(format!(
                    "README: `{}` synopsis lacks `{flag}` (in its --help)",
                    label(name, leaf)
                ));
            }
        }
    }
    problems
}

/// Asserts that [`check`] finds nothing (the README is the workspace's).
pub fn assert_readme_matches(bin: &str, name: &str) {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let problems = check(bin, name, &readme);
    assert!(
        problems.is_empty(),
        "README.md vs {name} --help:\n  {}",
        problems.join("\n  ")
    );
}
