//! Helpers shared by the `bulletproofctl` integration tests: run the real binary and
//! read what it said. (Each test file uses a subset.)
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

pub const CTL: &str = env!("CARGO_BIN_EXE_bulletproofctl");

/// Runs `bulletproofctl` with no stdin and without the caller's `BULLETPROOF_ROOT` or
/// `BULLETPROOF_CRASH_AT` (a test sets what it needs through [`ctl_env`]).
pub fn ctl(args: &[&str]) -> Output {
    ctl_env(args, &[])
}

pub fn ctl_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(CTL);
    command
        .args(args)
        .env_remove("BULLETPROOF_ROOT")
        .env_remove("BULLETPROOF_CRASH_AT")
        .stdin(Stdio::null());
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
