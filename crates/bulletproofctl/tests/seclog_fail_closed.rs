//! The security log fails closed (REFERENCE §6): with its key state missing, damaged or
//! untrusted, security-relevant commands (`flags set`, `render`, `update`, `install`
//! again) refuse before changing anything, the guard reports drift, and only an explicit
//! `log reinit` (itself the first record of a new epoch) brings the log back; `log
//! verify` never calls a checkpoint intact when it could not check its signature.
//! Runs as root, with the real binary.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{ctl, ctl_env, ok, p, text, Root};

// This file's fixture: the shared one, with methods of its own.
impl Root {
    /// An installed root with release 1.0.0 active (a template in core/conf), one flag
    /// set, and a signed bundle of 2.0.0 ready for `update`.
    fn with_beta_flag() -> Root {
        let f = Root::new();
        let modules = f.path("modules");
        fs::create_dir_all(&modules).unwrap();
        for version in ["1.0.0", "2.0.0"] {
            let core = f.path(&format!("core-{version}"));
            fs::create_dir_all(core.join("conf")).unwrap();
            fs::write(
                core.join("conf/app.conf.j2"),
                "beta={% if flags.beta %}on{% else %}off{% endif %}\n",
            )
            .unwrap();
            fs::write(core.join("app.py"), format!("VERSION = '{version}'\n")).unwrap();
            f.build(version, &core, &modules, &f.path(&format!("b-{version}")));
        }
        f.install(&["--no-venv"]);
        ok(f.update(&f.path("b-1.0.0")));
        ok(ctl(&["flags", "set", "beta", "true", "--root", &f.r()]));
        f
    }

    fn at(&self, relative: &str) -> PathBuf {
        self.root().join(relative)
    }

    fn run(&self, args: &[&str]) -> Output {
        let root = self.r();
        let mut all = args.to_vec();
        all.extend(["--root", &root]);
        ctl(&all)
    }

    fn flags(&self) -> Vec<u8> {
        fs::read(self.at("state/conf.d/flags.json")).unwrap()
    }

    fn active(&self) -> PathBuf {
        fs::read_link(self.at("install/active")).unwrap()
    }

    /// Everything under `logs/security/`, by name (what was logged).
    fn security_logs(&self) -> Vec<(String, Vec<u8>)> {
        let mut all: Vec<(String, Vec<u8>)> = fs::read_dir(self.at("logs/security"))
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        all.sort();
        all
    }

    fn delete_key_state(&self) {
        for entry in fs::read_dir(self.at("install/logkeys")).unwrap() {
            fs::remove_file(entry.unwrap().path()).unwrap();
        }
    }

    /// `flags set` must be refused, with the way out named, and change nothing.
    fn flags_set_refused(&self, why: &str) {
        let flags = self.flags();
        let logs = self.security_logs();
        let out = self.run(&["flags", "set", "beta", "false"]);
        refused(&out, why);
        assert_eq!(self.flags(), flags, "{why}: flags.json changed");
        assert_eq!(self.security_logs(), logs, "{why}: the logs changed");
    }
}

/// A refusal: non-zero, and the message says what and how to re-initialise.
fn refused(out: &Output, why: &str) {
    let all = text(out);
    assert!(!out.status.success(), "{why}: not refused: {all}");
    assert!(
        all.contains("key state is missing or damaged") && all.contains("log reinit --root"),
        "{why}: unclear refusal: {all}"
    );
    assert!(all.contains("nothing was changed"), "{why}: {all}");
}

fn files_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(prefix)
        })
        .collect();
    found.sort();
    found
}

#[test]
fn deleted_key_state_refuses_flags_render_and_update() {
    let f = Root::with_beta_flag();
    f.delete_key_state();
    f.flags_set_refused("key state deleted");
    let out = f.run(&["flags", "unset", "beta"]);
    refused(&out, "flags unset");
    assert!(f.flags().starts_with(b"{"));

    let out = f.run(&["render"]);
    refused(&out, "render");
    assert!(!f.at("state/conf.d/app.conf").exists(), "render wrote");

    let logs = f.security_logs();
    let bundle = f.dir.path().join("b-2.0.0");
    let out = f.run(&["update", p(&bundle)]);
    refused(&out, "update");
    assert_eq!(f.active(), Path::new("releases/1.0.0"));
    assert!(!f.at("install/releases/2.0.0").exists());
    assert_eq!(f.security_logs(), logs);

    // Reading is not refused.
    let out = ok(f.run(&["flags", "get", "beta"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "true");

    // Nor does running install again start a new chain behind the operator's back.
    let out = ctl(&["install", "--root", &f.r(), "--mounts", "no", "--no-venv"]);
    assert!(!out.status.success(), "install: {}", text(&out));
    assert!(text(&out).contains("log reinit --root"), "{}", text(&out));
    assert!(!f.at("install/logkeys/bulletproofctl.state").exists());
}

#[test]
fn damaged_key_state_refuses() {
    let f = Root::with_beta_flag();
    let state = f.at("install/logkeys/bulletproofctl.state");
    let good = fs::read(&state).unwrap();

    // Truncated.
    fs::write(&state, &good[..good.len() / 2]).unwrap();
    f.flags_set_refused("truncated state");
    // Garbage.
    fs::write(&state, b"\x00\xffnot a key state\n").unwrap();
    f.flags_set_refused("garbage state");
    // JSON, but no key in it.
    fs::write(&state, br#"{"next_seq":3,"key":"abc","prev":"def"}"#).unwrap();
    f.flags_set_refused("state without a key");
    // Emptied.
    fs::write(&state, b"").unwrap();
    f.flags_set_refused("empty state");
    // The guard's state damaged refuses the same.
    fs::write(&state, &good).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o600)).unwrap();
    let guard_state = f.at("install/logkeys/guard.state");
    let guard_good = fs::read(&guard_state).unwrap();
    fs::write(&guard_state, b"{").unwrap();
    f.flags_set_refused("guard state damaged");
    fs::write(&guard_state, &guard_good).unwrap();

    // An older copy put back (the log went on since): it does not continue the log.
    // (One record behind reads as a crash between the record and its state update.)
    ok(f.run(&["flags", "set", "beta", "false"]));
    ok(f.run(&["flags", "set", "beta", "true"]));
    fs::write(&state, &good).unwrap();
    f.flags_set_refused("stale state");
    let out = f.run(&["flags", "set", "beta", "true"]);
    assert!(
        text(&out).contains("does not continue"),
        "the reason is named: {}",
        text(&out)
    );

    // The host key that signs checkpoints, deleted.
    let f = Root::with_beta_flag();
    fs::remove_file(f.at("install/host.key")).unwrap();
    f.flags_set_refused("host key deleted");
}

#[test]
fn untrusted_key_state_is_not_loaded() {
    let f = Root::with_beta_flag();
    let state = f.at("install/logkeys/bulletproofctl.state");
    let dir = f.at("install/logkeys");

    fs::set_permissions(&state, fs::Permissions::from_mode(0o666)).unwrap();
    f.flags_set_refused("world-writable state");
    fs::set_permissions(&state, fs::Permissions::from_mode(0o620)).unwrap();
    f.flags_set_refused("group-writable state");
    fs::set_permissions(&state, fs::Permissions::from_mode(0o600)).unwrap();

    std::os::unix::fs::chown(&state, Some(4242), Some(4242)).unwrap();
    f.flags_set_refused("state not owned by root");
    let out = f.run(&["flags", "set", "beta", "false"]);
    assert!(text(&out).contains("uid 4242"), "{}", text(&out));
    std::os::unix::fs::chown(&state, Some(0), Some(0)).unwrap();

    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    f.flags_set_refused("world-writable key directory");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();

    // A symlink to a genuine state is not followed.
    let elsewhere = f.dir.path().join("state-copy");
    fs::rename(&state, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &state).unwrap();
    f.flags_set_refused("symlinked state");
    fs::remove_file(&state).unwrap();
    fs::rename(&elsewhere, &state).unwrap();

    // Back in order: works.
    ok(f.run(&["flags", "set", "beta", "false"]));
}

#[test]
fn guard_reports_missing_key_state_as_drift() {
    let f = Root::with_beta_flag();
    let out = f.run(&["guard", "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    f.delete_key_state();
    let out = f.run(&["guard", "--once"]);
    assert_eq!(out.status.code(), Some(1), "drift: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("drift: the security log's key state is missing or damaged"),
        "{}",
        text(&out)
    );
    assert!(stdout.contains("log reinit --root"), "{}", text(&out));

    // Damaged rather than missing: the same.
    let f = Root::with_beta_flag();
    fs::write(f.at("install/logkeys/guard.state"), b"garbage").unwrap();
    let out = f.run(&["guard", "--once"]);
    assert_eq!(out.status.code(), Some(1), "drift: {}", text(&out));
    assert!(
        text(&out).contains("guard.state is damaged"),
        "{}",
        text(&out)
    );
}

#[test]
fn explicit_reinit_starts_a_new_verifiable_epoch() {
    let f = Root::with_beta_flag();
    let old_master = f.dir.path().join("old-initial.key");
    fs::copy(f.at("install/logkeys/initial.key"), &old_master).unwrap();
    let old_log = fs::read(f.at("logs/security/bulletproofctl.jsonl")).unwrap();
    f.delete_key_state();
    f.flags_set_refused("before reinit");

    let out = ok(f.run(&["log", "reinit"]));
    let said = text(&out);
    assert!(
        said.contains("security log re-initialised: epoch"),
        "{said}"
    );
    assert!(said.contains("bulletproofctl.state is missing"), "{said}");
    let meta = fs::metadata(f.at("install/logkeys/bulletproofctl.state")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);

    // Commands work again, each logged in the new epoch.
    ok(f.run(&["flags", "set", "beta", "false"]));
    assert!(String::from_utf8_lossy(&f.flags()).contains("false"));
    ok(f.run(&["render"]));
    assert_eq!(
        fs::read_to_string(f.at("state/conf.d/app.conf")).unwrap(),
        "beta=off\n"
    );
    let out = f.run(&["guard", "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // The new chain verifies from seq 0; its first record is the re-initialisation.
    let log = f.at("logs/security/bulletproofctl.jsonl");
    let out = ok(f.run(&["log", "verify", p(&log)]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("intact: 3 records of bulletproofctl, seq 0..2"),
        "{}",
        text(&out)
    );
    let text_log = fs::read_to_string(&log).unwrap();
    let first: serde_json::Value = serde_json::from_str(text_log.lines().next().unwrap()).unwrap();
    assert_eq!(first["event"], "log-reinit");
    assert!(
        first["msg"].as_str().unwrap().contains("missing"),
        "{first}"
    );
    let guard_log = f.at("logs/security/guard.jsonl");
    ok(f.run(&["log", "verify", p(&guard_log)]));

    // The closed chain is kept, with its checkpoint, and verifies with the old key.
    let closed = files_named(&f.at("logs/security"), "bulletproofctl.jsonl.closed-");
    let closed_log: Vec<&PathBuf> = closed
        .iter()
        .filter(|c| !c.to_string_lossy().contains(".checkpoint"))
        .collect();
    assert_eq!(closed_log.len(), 1, "{closed:?}");
    assert_eq!(fs::read(closed_log[0]).unwrap(), old_log);
    let out = ok(f.run(&[
        "log",
        "verify",
        p(closed_log[0]),
        "--initial-key",
        p(&old_master),
    ]));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("intact:"),
        "{}",
        text(&out)
    );
}

#[test]
fn reinit_requires_root_owned_state() {
    let f = Root::with_beta_flag();
    f.delete_key_state();
    let install = f.at("install");
    fs::set_permissions(&install, fs::Permissions::from_mode(0o777)).unwrap();
    let out = f.run(&["log", "reinit"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("writable by group or others"),
        "{}",
        text(&out)
    );
    assert!(!f.at("install/logkeys/bulletproofctl.state").exists());
    fs::set_permissions(&install, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&install, Some(4242), None).unwrap();
    let out = f.run(&["log", "reinit"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("run log reinit as root"),
        "{}",
        text(&out)
    );
    std::os::unix::fs::chown(&install, Some(0), None).unwrap();
    ok(f.run(&["log", "reinit"]));
    ok(f.run(&["flags", "set", "beta", "false"]));
}

#[test]
fn verify_fails_when_the_checkpoint_cannot_be_checked() {
    let f = Root::with_beta_flag();
    let log = f.at("logs/security/bulletproofctl.jsonl");
    ok(f.run(&["log", "verify", p(&log)]));
    fs::remove_file(f.at("install/host.pub")).unwrap();
    for extra in [&[][..], &["--no-checkpoint"][..]] {
        let mut args = vec!["log", "verify", p(&log)];
        args.extend(extra);
        let out = f.run(&args);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {all}");
        assert!(!all.contains("intact"), "{all}");
        assert!(
            all.contains(&format!("{}.checkpoint", log.display()))
                && all.contains("cannot be checked"),
            "names the checkpoint and why: {all}"
        );
    }
}

/// A crash between a record and its key state update (`BULLETPROOF_CRASH_AT=
/// log-appended`, the log crate's own crash point) is not damage: the next command
/// sees the record made with the current key, carries on past it, and the chain
/// verifies.
#[test]
fn a_crash_between_record_and_key_state_is_carried_on() {
    let f = Root::with_beta_flag();
    let state = f.at("install/logkeys/bulletproofctl.state");
    let log = f.at("logs/security/bulletproofctl.jsonl");
    let before = fs::read(&state).unwrap();
    let records = fs::read_to_string(&log).unwrap().lines().count();
    let out = ctl_env(
        &["flags", "set", "beta", "false", "--root", &f.r()],
        &[("BULLETPROOF_CRASH_AT", "log-appended")],
    );
    assert!(!out.status.success(), "the crash point was not reached");
    assert_eq!(fs::read(&state).unwrap(), before, "the key state moved on");
    assert_eq!(
        fs::read_to_string(&log).unwrap().lines().count(),
        records + 1,
        "the record was not written"
    );

    ok(f.run(&["flags", "set", "beta", "false"]));
    let out = ok(f.run(&["log", "verify", p(&log)]));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("intact:"),
        "{}",
        text(&out)
    );
}
