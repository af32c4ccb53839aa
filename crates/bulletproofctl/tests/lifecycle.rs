//! The root's life cycle, end to end with the real binary: `install` (idempotent,
//! permissions, `--dry-run`, the pinned key), `update` / `rollback` / `recover --to` /
//! `status`, retention and recovery from `archives/`, a failing service restart, a crash
//! at every step (and at random instants) of each operation, and the mount hardening
//! inside a private mount namespace. Runs as root (CI does).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::{ctl, ctl_env, ok, p, snapshot_with, text, Root, CTL};

// This file's fixture: the shared one, with methods of its own.
impl Root {
    /// A release tree and its bundle; `files` extra files (count) make it bigger.
    fn bundle(&self, version: &str, files: usize) -> PathBuf {
        let src = self.path(&format!("src-{version}"));
        let core = src.join("core");
        let modules = src.join("modules");
        fs::create_dir_all(core.join("bin")).unwrap();
        fs::create_dir_all(core.join("conf")).unwrap();
        fs::create_dir_all(modules.join("osint")).unwrap();
        fs::write(core.join("VERSION"), format!("{version}\n")).unwrap();
        fs::write(core.join("bin/app"), format!("#!/bin/sh\necho {version}\n")).unwrap();
        fs::set_permissions(core.join("bin/app"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(core.join("conf/app.conf"), format!("version = {version}\n")).unwrap();
        let _ = std::os::unix::fs::symlink("bin/app", core.join("run"));
        fs::write(modules.join("osint/tool"), format!("tool {version}\n")).unwrap();
        for i in 0..files {
            fs::write(
                core.join(format!("conf/extra-{i}")),
                format!("{version} {i}\n"),
            )
            .unwrap();
        }
        let out = self.path(&format!("bundle-{version}"));
        self.build(version, &core, &modules, &out);
        out
    }

    fn active(&self) -> String {
        let target = fs::read_link(self.root().join("install/active")).unwrap();
        target
            .strip_prefix("releases")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    }

    fn core_version(&self) -> String {
        fs::read_to_string(self.root().join("core/VERSION"))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn status(&self) -> serde_json::Value {
        let output = ok(ctl(&["status", "--root", &self.r(), "--json"]));
        serde_json::from_slice(&output.stdout).unwrap()
    }

    fn set_config(&self, key: &str, value: &str) {
        let path = self.root().join("install/bulletproof.toml");
        let config = fs::read_to_string(&path).unwrap();
        let mut replaced = false;
        let lines: Vec<String> = config
            .lines()
            .map(|line| {
                if line.starts_with(&format!("{key} =")) {
                    replaced = true;
                    format!("{key} = {value}")
                } else {
                    line.to_owned()
                }
            })
            .collect();
        assert!(replaced, "{key} is not in the config template");
        fs::write(&path, lines.join("\n") + "\n").unwrap();
    }

    fn stage_is_empty(&self) -> bool {
        fs::read_dir(self.root().join("install/stage"))
            .unwrap()
            .next()
            .is_none()
    }
}

/// Everything under `dir` with kind, mode and owner, for before/after comparisons.
fn tree(dir: &Path) -> Vec<String> {
    snapshot_with(dir, |_, _| String::new())
}

#[test]
fn install_is_idempotent_sets_permissions_and_dry_run_changes_nothing() {
    let f = Root::new();
    let dry = ok(ctl(&[
        "install",
        "--root",
        &f.r(),
        "--mounts",
        "no",
        "--dry-run",
    ]));
    assert!(text(&dry).contains("would create"), "{}", text(&dry));
    assert!(!f.root().exists(), "--dry-run created the root");

    let first = ok(ctl(&[
        "install",
        "--root",
        &f.r(),
        "--mounts",
        "no",
        "--service-user",
        "nobody",
        "--public-key",
        p(&f.path("k.pub")),
    ]));
    assert!(text(&first).contains("create"), "{}", text(&first));
    for dir in [
        "core",
        "modules",
        "venv",
        "state/conf.d",
        "state/data",
        "state/cache",
        "state/run",
        "logs/system",
        "logs/security",
        "logs/ops",
        "backups",
        "archives",
        "install",
        "tools",
    ] {
        assert!(f.root().join(dir).is_dir(), "{dir} missing");
    }
    let nobody = nix_uid("nobody");
    let meta = |rel: &str| fs::metadata(f.root().join(rel)).unwrap();
    assert_eq!(
        meta("state/data").uid(),
        nobody,
        "state is the service user's"
    );
    assert_eq!(meta("logs/system").uid(), nobody);
    assert_eq!(meta("install").uid(), 0, "install/ is root's");
    assert_eq!(
        meta("install").mode() & 0o022,
        0,
        "install/ writable by others"
    );
    assert_eq!(meta("logs/security").uid(), 0);
    assert_eq!(meta("core").uid(), 0);
    assert!(f.root().join("install/bulletproof.toml").is_file());
    assert!(f.root().join("install/release.pub").is_file());

    let before = tree(&f.root());
    let second = ok(ctl(&[
        "install",
        "--root",
        &f.r(),
        "--mounts",
        "no",
        "--service-user",
        "nobody",
        "--public-key",
        p(&f.path("k.pub")),
    ]));
    assert!(
        text(&second).contains("nothing to change"),
        "{}",
        text(&second)
    );
    // The ops log records decisions, not no-ops: the rest of the tree is unchanged.
    let unchanged = |t: &Vec<String>| {
        t.iter()
            .filter(|l| !l.starts_with("logs/ops/"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(unchanged(&tree(&f.root())), unchanged(&before));

    // Drift is repaired, and a dry run only reports it.
    fs::set_permissions(
        f.root().join("state/data"),
        fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let dry = ok(ctl(&[
        "install",
        "--root",
        &f.r(),
        "--mounts",
        "no",
        "--service-user",
        "nobody",
        "--dry-run",
    ]));
    assert!(text(&dry).contains("would set mode 0750"), "{}", text(&dry));
    assert_eq!(meta("state/data").mode() & 0o7777, 0o777);
    ok(ctl(&[
        "install",
        "--root",
        &f.r(),
        "--mounts",
        "no",
        "--service-user",
        "nobody",
    ]));
    assert_eq!(meta("state/data").mode() & 0o7777, 0o750);

    // Another release key is not pinned over the first without --replace-key.
    ok(ctl(&[
        "keygen",
        "--secret-key",
        p(&f.path("o.key")),
        "--public-key",
        p(&f.path("o.pub")),
    ]));
    let other = ctl(&[
        "install",
        "--root",
        &f.r(),
        "--mounts",
        "no",
        "--public-key",
        p(&f.path("o.pub")),
    ]);
    assert_eq!(other.status.code(), Some(2), "{}", text(&other));
    assert!(text(&other).contains("--replace-key"), "{}", text(&other));
    ok(ctl(&[
        "install",
        "--root",
        &f.r(),
        "--mounts",
        "no",
        "--public-key",
        p(&f.path("o.pub")),
        "--replace-key",
    ]));
    let log = fs::read_to_string(f.root().join("logs/ops/bulletproofctl.log")).unwrap();
    assert!(log.contains("replaced"), "{log}");
}

fn nix_uid(name: &str) -> u32 {
    let output = Command::new("id").args(["-u", name]).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn update_rollback_recover_and_status() {
    let f = Root::new();
    let b1 = f.bundle("1.0.0", 0);
    let b2 = f.bundle("1.1.0", 0);
    let b3 = f.bundle("2.0.0", 0);
    f.install(&[]);
    assert_eq!(f.status()["active"], "none");
    ok(f.update(&b1));
    assert_eq!(f.core_version(), "1.0.0");
    let app = f.root().join("core/bin/app");
    assert_eq!(fs::metadata(&app).unwrap().mode() & 0o777, 0o755);
    assert_eq!(fs::metadata(&app).unwrap().uid(), 0);
    assert_eq!(
        fs::read_link(f.root().join("core/run")).unwrap(),
        Path::new("bin/app")
    );
    assert_eq!(
        fs::read_to_string(f.root().join("modules/osint/tool")).unwrap(),
        "tool 1.0.0\n"
    );
    ok(f.update(&b2));
    assert_eq!(f.core_version(), "1.1.0");
    let status = f.status();
    assert_eq!(status["active"], "1.1.0");
    assert_eq!(status["previous"], "1.0.0");
    assert_eq!(status["highest"], "1.1.0");
    assert_eq!(status["kept"], serde_json::json!(["1.1.0", "1.0.0"]));
    assert_eq!(status["last_update"]["result"], "ok");
    assert_eq!(status["last_verification"]["result"], "ok");
    let human = text(&ok(ctl(&["status", "--root", &f.r()])));
    assert!(human.contains("active:            1.1.0"), "{human}");

    // Replays and no-ops are refused, nothing changes.
    let replay = f.update(&b1);
    assert_eq!(replay.status.code(), Some(1), "{}", text(&replay));
    assert!(text(&replay).contains("highest ever installed"));
    let same = f.update(&b2);
    assert_eq!(same.status.code(), Some(1), "{}", text(&same));
    assert_eq!(f.core_version(), "1.1.0");

    ok(ctl(&["rollback", "--root", &f.r()]));
    assert_eq!(f.core_version(), "1.0.0");
    assert_eq!(f.status()["highest"], "1.1.0", "rollback keeps the floor");
    // After going back explicitly, update may bring the floor version back…
    ok(f.update(&b2));
    assert_eq!(f.core_version(), "1.1.0");
    // …and recover may go anywhere kept.
    ok(ctl(&["recover", "--to", "1.0.0", "--root", &f.r()]));
    assert_eq!(f.core_version(), "1.0.0");
    ok(f.update(&b3));
    assert_eq!(f.core_version(), "2.0.0");
    let unknown = ctl(&["recover", "--to", "9.9.9", "--root", &f.r()]);
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown));
    let bad = ctl(&["recover", "--to", "../../etc", "--root", &f.r()]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(f.stage_is_empty());
}

#[test]
fn old_versions_leave_releases_but_recover_from_archives() {
    let f = Root::new();
    f.install(&[]);
    f.set_config("keep_versions", "2");
    for version in ["1.0.0", "1.1.0", "1.2.0"] {
        ok(f.update(&f.bundle(version, 3)));
    }
    let status = f.status();
    assert_eq!(status["kept"], serde_json::json!(["1.2.0", "1.1.0"]));
    assert_eq!(
        status["archived"],
        serde_json::json!(["1.2.0", "1.1.0", "1.0.0"])
    );
    ok(ctl(&["recover", "--to", "1.0.0", "--root", &f.r()]));
    assert_eq!(f.core_version(), "1.0.0");
    assert_eq!(
        fs::read_to_string(f.root().join("core/conf/extra-2")).unwrap(),
        "1.0.0 2\n"
    );
    // A damaged archive is verified before use and refused.
    ok(ctl(&["recover", "--to", "1.2.0", "--root", &f.r()]));
    let archive = f.root().join("archives/1.1.0/core-1.1.0.tar.zst");
    let mut bytes = fs::read(&archive).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&archive, bytes).unwrap();
    // 1.1.0 left install/releases when 1.0.0 and 1.2.0 became active and previous.
    assert!(!f.root().join("install/releases/1.1.0").exists());
    let refused = ctl(&["recover", "--to", "1.1.0", "--root", &f.r()]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert_eq!(f.core_version(), "1.2.0");
}

#[test]
fn a_failing_service_restart_puts_the_previous_version_back() {
    let f = Root::new();
    f.install(&[]);
    ok(f.update(&f.bundle("1.0.0", 0)));
    let marker = f.path("restarts");
    let script = f.path("restart.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$BULLETPROOF_VERSION\" >> {}\n[ \"$BULLETPROOF_VERSION\" != 2.0.0 ]\n",
            marker.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    f.set_config("restart_command", &format!("[\"{}\"]", script.display()));
    ok(f.update(&f.bundle("1.1.0", 0)));
    let failed = f.update(&f.bundle("2.0.0", 0));
    assert_eq!(failed.status.code(), Some(3), "{}", text(&failed));
    assert!(
        text(&failed).contains("1.1.0 is active again"),
        "{}",
        text(&failed)
    );
    assert_eq!(f.core_version(), "1.1.0");
    assert!(!f.root().join("install/releases/2.0.0").exists());
    assert_eq!(
        fs::read_to_string(&marker).unwrap(),
        "1.1.0\n2.0.0\n1.1.0\n",
        "the services were restarted on the new and again on the old version"
    );
    let status = f.status();
    assert_eq!(status["last_update"]["result"], "rolled back");
    assert_eq!(
        status["highest"], "1.1.0",
        "a failed update does not raise the floor"
    );
}

#[test]
fn a_tampered_kept_release_is_not_rolled_back_to() {
    let f = Root::new();
    f.install(&[]);
    ok(f.update(&f.bundle("1.0.0", 0)));
    ok(f.update(&f.bundle("1.1.0", 0)));
    // rollback checks kind, mode, owner, size and target of every entry and that none
    // was added (stat calls, not hashing: it must take milliseconds whatever the tree's
    // size); same-size content edits are the guard's to find.
    let victim = f.root().join("install/releases/1.0.0/core/bin/app");
    for tamper in ["size", "mode", "added"] {
        match tamper {
            "size" => fs::write(&victim, "#!/bin/sh\necho owned; rm -rf /\n").unwrap(),
            "mode" => fs::set_permissions(&victim, fs::Permissions::from_mode(0o4755)).unwrap(),
            _ => fs::write(victim.with_file_name("implant"), "x").unwrap(),
        }
        let refused = ctl(&["rollback", "--root", &f.r()]);
        assert_eq!(
            refused.status.code(),
            Some(1),
            "{tamper}: {}",
            text(&refused)
        );
        assert_eq!(f.core_version(), "1.1.0", "{tamper}");
        // Put it back for the next case.
        let _ = fs::remove_file(victim.with_file_name("implant"));
        fs::write(&victim, "#!/bin/sh\necho 1.0.0\n").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o755)).unwrap();
    }
    ok(ctl(&["rollback", "--root", &f.r()]));
    assert_eq!(f.core_version(), "1.0.0");
}

/// Each named step of each operation, killed there (abort: no clean-up at all, as kill -9
/// or a power cut), leaves exactly the old or the new version active, complete; the next
/// run puts the root in order and completes.
#[test]
fn a_crash_at_any_step_leaves_the_old_or_the_new_version() {
    let f = Root::new();
    f.install(&[]);
    let b1 = f.bundle("1.0.0", 5);
    let b2 = f.bundle("1.1.0", 5);
    ok(f.update(&b1));
    for point in [
        "extracted",
        "preflight-done",
        "update-moved",
        "update-journal",
        "update-activated",
        "update-verified",
        "update-done",
    ] {
        let crashed = ctl_env(
            &["update", p(&b2), "--root", &f.r()],
            &[("BULLETPROOF_CRASH_AT", point)],
        );
        assert!(
            !crashed.status.success(),
            "{point}: the crash point was not reached"
        );
        let active = f.active();
        assert!(
            active == "1.0.0" || active == "1.1.0",
            "{point}: {active} active"
        );
        assert_eq!(f.core_version(), active, "{point}: a mixed core");
        let rerun = f.update(&b2);
        if point == "update-done" {
            assert_eq!(rerun.status.code(), Some(1), "{point}: {}", text(&rerun));
        } else {
            ok(rerun);
        }
        assert_eq!(f.core_version(), "1.1.0", "{point}");
        assert!(f.stage_is_empty(), "{point}: stage left behind");
        assert!(!f.root().join("install/txn.json").exists(), "{point}");
        ok(ctl(&["recover", "--to", "1.0.0", "--root", &f.r()]));
    }
    for op in ["rollback", "recover"] {
        for step in ["journal", "activated", "verified", "done"] {
            ok(f.update(&b2)); // 1.1.0 active, previous 1.0.0
            let point = format!("{op}-{step}");
            let root = f.r();
            let args: Vec<&str> = if op == "rollback" {
                vec!["rollback", "--root", &root]
            } else {
                vec!["recover", "--to", "1.0.0", "--root", &root]
            };
            let crashed = ctl_env(&args, &[("BULLETPROOF_CRASH_AT", &point)]);
            assert!(!crashed.status.success(), "{point} not reached");
            let active = f.active();
            assert!(active == "1.0.0" || active == "1.1.0", "{point}: {active}");
            assert_eq!(f.core_version(), active, "{point}");
            // The next command puts things in order first.
            let status = f.status();
            if step != "done" {
                assert_eq!(status["interrupted"]["op"], op, "{point}");
            }
            let again = ctl(&["recover", "--to", "1.0.0", "--root", &f.r()]);
            assert!(
                again.status.success() || text(&again).contains("already active"),
                "{point}: {}",
                text(&again)
            );
            assert_eq!(f.core_version(), "1.0.0", "{point}");
            assert!(f.status()["interrupted"].is_null(), "{point}");
        }
    }
}

/// Kills `update` with SIGKILL at random instants (a bigger tree, so the instants fall
/// inside extraction, syncing and verification), then checks the invariant and that a
/// re-run completes.
#[test]
fn kill_9_at_random_instants_of_update() {
    let f = Root::new();
    f.install(&[]);
    let b1 = f.bundle("1.0.0", 400);
    let b2 = f.bundle("1.1.0", 400);
    ok(f.update(&b1));
    // Calibrate on the very operation the kills interrupt (1.0.0 → 1.1.0).
    let started = std::time::Instant::now();
    ok(f.update(&b2));
    let full = started.elapsed();
    ok(ctl(&["recover", "--to", "1.0.0", "--root", &f.r()]));
    let mut seen_new = 0;
    let mut seen_old = 0;
    // 16 instants over twice the calibrated duration; more (further out) only if the
    // machine is so loaded that none of them fell after the switch.
    for round in 0..48u64 {
        if round >= 16 && seen_new > 0 && seen_old > 0 {
            break;
        }
        let mut child = Command::new(CTL)
            .args(["update", p(&b2), "--root", &f.r()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Instants spread over the whole run and as long again past its end.
        std::thread::sleep(full.mul_f64(0.125 * round as f64));
        let _ = child.kill();
        let _ = child.wait();
        let active = f.active();
        assert!(
            active == "1.0.0" || active == "1.1.0",
            "round {round}: {active}"
        );
        assert_eq!(f.core_version(), active, "round {round}");
        if active == "1.1.0" {
            seen_new += 1;
        } else {
            seen_old += 1;
        }
        let rerun = f.update(&b2);
        assert!(
            rerun.status.success() || rerun.status.code() == Some(1),
            "round {round}: {}",
            text(&rerun)
        );
        assert_eq!(f.core_version(), "1.1.0", "round {round}");
        assert!(f.stage_is_empty(), "round {round}");
        ok(ctl(&["recover", "--to", "1.0.0", "--root", &f.r()]));
    }
    assert!(seen_old > 0, "no kill landed before the switch");
    assert!(seen_new > 0, "no kill landed after the switch");
    eprintln!("kills: {seen_old} before the switch, {seen_new} after");
}

#[test]
fn snapshot_is_signed_by_the_host_key() {
    let f = Root::new();
    f.install(&[]);
    ok(f.update(&f.bundle("1.0.0", 0)));
    let out = ok(ctl(&["snapshot", "--root", &f.r()]));
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        path.starts_with(f.root().join("archives")),
        "{}",
        path.display()
    );
    let verified = Command::new("minisign")
        .args(["-Vm", p(&path), "-p", p(&f.root().join("install/host.pub"))])
        .output()
        .expect("minisign (scripts/test installs it)");
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(text(&verified).contains("snapshot:1.0.0"));
    let listing = Command::new("tar")
        .args(["--zstd", "-tf", p(&path)])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("core/bin/app"), "{listing}");
    assert!(listing.contains("manifest.json"), "{listing}");
}

/// The seed's mount hardening, for real, in a private mount namespace: the active core
/// refuses writes (even root's), writable directories do not execute, the units are
/// written and valid, updates and rollbacks still work, and a second install is a no-op.
#[test]
fn mount_hardening_in_a_private_namespace() {
    let f = Root::new();
    let b1 = f.bundle("1.0.0", 0);
    let b2 = f.bundle("1.1.0", 0);
    let units = f.path("units");
    let script = format!(
        r#"set -u
R={root}; CTL={ctl}
$CTL install --root $R --public-key {key} --mounts yes --unit-dir {units} || exit 10
$CTL update {b1} --root $R || exit 11
if echo x > $R/core/evil 2>/dev/null; then exit 12; fi
if echo x >> $R/core/bin/app 2>/dev/null; then exit 13; fi
if touch $R/install/releases/1.0.0/core/evil 2>/dev/null; then exit 14; fi
cp /bin/true $R/state/data/t && chmod 755 $R/state/data/t || exit 15
if $R/state/data/t 2>/dev/null; then exit 16; fi
findmnt -no OPTIONS $R/install/releases | grep -qw ro || exit 17
findmnt -no OPTIONS $R/state | grep -qw noexec || exit 18
$CTL update {b2} --root $R || exit 19
[ "$(cat $R/core/VERSION)" = 1.1.0 ] || exit 20
if echo x > $R/core/evil 2>/dev/null; then exit 21; fi
$CTL rollback --root $R || exit 22
[ "$(cat $R/core/VERSION)" = 1.0.0 ] || exit 23
$CTL install --root $R --public-key {key} --mounts yes --unit-dir {units} | grep -q 'nothing to change' || exit 24
exit 0
"#,
        root = f.r(),
        ctl = CTL,
        key = p(&f.path("k.pub")),
        units = p(&units),
        b1 = p(&b1),
        b2 = p(&b2),
    );
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux)");
    assert!(
        output.status.success(),
        "step {:?} failed: {}",
        output.status.code(),
        text(&output)
    );
    // Outside the namespace nothing was mounted.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&f.r()),
        "mounts leaked out of the namespace"
    );
    // The units are valid systemd units with the right options.
    let escaped = Command::new("systemd-escape")
        .args(["--path", p(&f.root().join("install/releases"))])
        .output()
        .expect("systemd-escape (systemd)");
    let name = format!("{}.mount", String::from_utf8_lossy(&escaped.stdout).trim());
    let unit = fs::read_to_string(units.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(unit.contains("Options=bind,ro"), "{unit}");
    assert!(units.join("local-fs.target.wants").join(&name).exists());
    let mut verify = Command::new("systemd-analyze");
    verify.arg("verify");
    for entry in fs::read_dir(&units).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "mount") {
            verify.arg(path);
        }
    }
    let verified = verify.output().expect("systemd-analyze (systemd)");
    assert!(verified.status.success(), "{}", text(&verified));
}

/// One mutating command per root: a second one while the lock is held is refused with
/// a clear message and changes nothing.
#[test]
fn a_second_updater_on_one_root_is_turned_away() {
    let f = Root::new();
    f.install(&[]);
    ok(f.update(&f.bundle("1.0.0", 0)));
    let b2 = f.bundle("1.1.0", 0);
    f.set_config("lock_wait_secs", "1");
    // `--close`: the lock stays with flock itself, so killing it releases the lock.
    let mut holder = Command::new("flock")
        .arg("--close")
        .arg(f.root().join("install/lock"))
        .args(["sleep", "30"])
        .spawn()
        .expect("flock (util-linux)");
    // Wait until the holder has the lock.
    for _ in 0..100 {
        let probe = Command::new("flock")
            .args(["--nonblock"])
            .arg(f.root().join("install/lock"))
            .arg("true")
            .status()
            .unwrap();
        if !probe.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let turned_away = f.update(&b2);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(turned_away.status.code(), Some(2), "{}", text(&turned_away));
    assert!(
        text(&turned_away).contains("another bulletproofctl"),
        "{}",
        text(&turned_away)
    );
    assert_eq!(f.core_version(), "1.0.0");
    ok(f.update(&b2));
    assert_eq!(f.core_version(), "1.1.0");
}
