//! Helpers shared by the `bulletproofctl` integration tests: run the real binary and
//! read what it said, a scratch directory with a release key and a root ([`Root`]),
//! snapshots of a tree, and (from `tests-support/racer.rs`) racers and bounded runs.
//! (Each test file uses a subset.)
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

#[path = "../../../../tests-support/racer.rs"]
pub mod racer;

pub const CTL: &str = env!("CARGO_BIN_EXE_bulletproofctl");

/// `bulletproofctl args` without the caller's `BULLETPROOF_ROOT` or
/// `BULLETPROOF_CRASH_AT` (a test sets what it needs), not yet run.
pub fn ctl_command(args: &[&str]) -> Command {
    let mut command = Command::new(CTL);
    command
        .args(args)
        .env_remove("BULLETPROOF_ROOT")
        .env_remove("BULLETPROOF_CRASH_AT");
    command
}

/// Runs `bulletproofctl` with no stdin and without the caller's `BULLETPROOF_ROOT` or
/// `BULLETPROOF_CRASH_AT` (a test sets what it needs through [`ctl_env`]).
pub fn ctl(args: &[&str]) -> Output {
    ctl_env(args, &[])
}

pub fn ctl_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = ctl_command(args);
    command.stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

/// stdout then stderr, as text.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The output of a command that must have succeeded.
pub fn ok(output: Output) -> Output {
    assert!(output.status.success(), "failed: {}", text(&output));
    output
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A scratch directory with a release key pair (`k.key`, `k.pub`) and, at `root/`, the
/// root under test (not installed yet: see [`Root::install`]).
pub struct Root {
    pub dir: tempfile::TempDir,
}

impl Root {
    pub fn new() -> Root {
        let root = Root {
            dir: tempfile::tempdir().unwrap(),
        };
        ok(ctl(&[
            "keygen",
            "--secret-key",
            p(&root.path("k.key")),
            "--public-key",
            p(&root.path("k.pub")),
        ]));
        root
    }

    /// `name` in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn root(&self) -> PathBuf {
        self.path("root")
    }

    pub fn r(&self) -> String {
        p(&self.root()).to_owned()
    }

    pub fn core(&self, rel: &str) -> PathBuf {
        self.root().join("core").join(rel)
    }

    /// `install` with the release key and without mounts, then `extra`; must succeed.
    pub fn install(&self, extra: &[&str]) {
        let (root, key) = (self.r(), self.path("k.pub"));
        let mut args = vec!["install", "--root", &root, "--public-key", p(&key)];
        args.extend(["--mounts", "no"]);
        args.extend_from_slice(extra);
        ok(ctl(&args));
    }

    /// `bundle build` of `version` from `core` and `modules` into `out`, signed with the
    /// release key; must succeed.
    pub fn build(&self, version: &str, core: &Path, modules: &Path, out: &Path) {
        ok(ctl(&[
            "bundle",
            "build",
            "--version",
            version,
            "--core",
            p(core),
            "--modules",
            p(modules),
            "--secret-key",
            p(&self.path("k.key")),
            "--out",
            p(out),
        ]));
    }

    pub fn update(&self, bundle: &Path) -> Output {
        ctl(&["update", p(bundle), "--root", &self.r()])
    }

    pub fn guard_once(&self) -> Output {
        ctl(&["guard", "--once", "--root", &self.r()])
    }
}

/// Every entry below `dir` (itself included), one line each, sorted: its path relative
/// to `dir`, mode, owner, then what `content` says of it.
pub fn snapshot_with(dir: &Path, content: impl Fn(&Path, &fs::Metadata) -> String) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        out.push(format!(
            "{} {:o} {}:{}{}",
            path.strip_prefix(dir).unwrap().display(),
            meta.mode(),
            meta.uid(),
            meta.gid(),
            content(&path, &meta)
        ));
        if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    out.sort();
    out
}
