//! The guard, end to end with the real binary on real roots (as root, as CI runs):
//! every kind of tampering is healed from the signed archive with its evidence kept, a
//! damaged archive falls back to rollback, one guard per root, no heal while an update
//! holds the root, the daemon heals on inotify events, and healing works under the
//! read-only mount hardening (inside a private mount namespace).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{ctl, ok, p, snapshot_with, text, Root, CTL};

// This file's fixture: the shared one, with methods of its own.
impl Root {
    /// A root with 1.0.0 then 1.1.0 installed (so there is a previous version).
    fn with_two_releases() -> Root {
        let root = Root::new();
        root.install(&[]);
        for version in ["1.0.0", "1.1.0"] {
            ok(root.update(&root.bundle(version)));
        }
        root
    }

    fn bundle(&self, version: &str) -> PathBuf {
        let src = self.path(&format!("src-{version}"));
        let core = src.join("core");
        let modules = src.join("modules");
        fs::create_dir_all(core.join("bin")).unwrap();
        fs::create_dir_all(core.join("lib/deep")).unwrap();
        fs::create_dir_all(modules.join("osint")).unwrap();
        fs::write(core.join("bin/app"), format!("#!/bin/sh\necho {version}\n")).unwrap();
        fs::set_permissions(core.join("bin/app"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(core.join("lib/deep/data"), vec![b'x'; 100_000]).unwrap();
        fs::write(core.join("lib/config"), format!("v={version}\n")).unwrap();
        std::os::unix::fs::symlink("bin/app", core.join("run")).unwrap();
        fs::write(modules.join("osint/tool"), format!("tool {version}\n")).unwrap();
        let out = self.path(&format!("bundle-{version}"));
        self.build(version, &core, &modules, &out);
        out
    }

    fn quarantine_dirs(&self) -> Vec<PathBuf> {
        match fs::read_dir(self.root().join("state/quarantine")) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn security_log(&self) -> String {
        fs::read_to_string(self.root().join("logs/security/guard.jsonl")).unwrap_or_default()
    }
}

/// Every entry below `dir` with its mode, owner and content (the first bytes).
fn snapshot(dir: &Path) -> Vec<String> {
    snapshot_with(dir, |path, meta| {
        let content = if meta.is_file() {
            fs::read(path).unwrap()
        } else if meta.file_type().is_symlink() {
            fs::read_link(path)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else {
            Vec::new()
        };
        format!(" {:x?}", &content[..content.len().min(64)])
    })
}

#[test]
fn every_kind_of_tampering_is_healed_with_evidence() {
    let root = Root::with_two_releases();
    let pristine = snapshot(&root.root().join("install/releases/1.1.0"));
    let intact = root.guard_once();
    assert_eq!(intact.status.code(), Some(0), "{}", text(&intact));

    // Content (same size), mode (setuid), owner, an added file, an added directory
    // with content, a deleted file, a symlink retargeted, a file in the modules.
    fs::write(root.core("bin/app"), "#!/bin/sh\necho pwned\n").unwrap();
    fs::set_permissions(root.core("lib/config"), fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::chown(root.core("lib/deep"), Some(65534), Some(65534)).unwrap();
    fs::write(root.core("bin/implant"), "evil").unwrap();
    fs::create_dir(root.core("lib/nest")).unwrap();
    fs::write(root.core("lib/nest/payload"), "evil").unwrap();
    fs::remove_file(root.core("lib/deep/data")).unwrap();
    let _ = fs::remove_file(root.core("run"));
    std::os::unix::fs::symlink("/etc/shadow", root.core("run")).unwrap();
    fs::write(root.root().join("modules/osint/tool"), "trojan\n").unwrap();

    let healed = root.guard_once();
    assert_eq!(healed.status.code(), Some(1), "{}", text(&healed));
    assert_eq!(
        snapshot(&root.root().join("install/releases/1.1.0")),
        pristine,
        "the release is not back to what was installed"
    );
    let again = root.guard_once();
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));

    // The evidence: tampered content kept (defused), one line per finding.
    let quarantine = root.quarantine_dirs();
    assert_eq!(quarantine.len(), 1, "{quarantine:?}");
    let q = &quarantine[0];
    assert_eq!(
        fs::read_to_string(q.join("core%2Fbin%2Fapp")).unwrap(),
        "#!/bin/sh\necho pwned\n"
    );
    assert_eq!(
        fs::metadata(q.join("core%2Fbin%2Fapp")).unwrap().mode() & 0o111,
        0,
        "evidence must not be executable"
    );
    assert_eq!(
        fs::read_to_string(q.join("core%2Fbin%2Fimplant")).unwrap(),
        "evil"
    );
    assert_eq!(
        fs::read_to_string(q.join("core%2Flib%2Fnest/payload")).unwrap(),
        "evil"
    );
    assert_eq!(
        fs::read_link(q.join("core%2Frun")).unwrap(),
        Path::new("/etc/shadow")
    );
    let evidence = fs::read_to_string(q.join("evidence.jsonl")).unwrap();
    for path in [
        "/core/bin/app",
        "/core/lib/config",
        "/core/bin/implant",
        "/core/lib/nest",
        "/core/lib/deep/data",
        "/core/lib/deep",
        "/core/run",
        "/modules/osint/tool",
    ] {
        assert!(
            evidence.contains(&format!("\"path\":\"{path}\"")),
            "{path} missing from the evidence:\n{evidence}"
        );
    }
    assert!(evidence.contains("\"mode\":\"4755\""), "{evidence}");
    assert!(evidence.contains("\"uid\":65534"), "{evidence}");
    let log = root.security_log();
    assert!(log.contains("\"event\":\"drift\""), "{log}");
    assert!(log.contains("\"event\":\"healed\""), "{log}");
    ok(ctl(&[
        "log",
        "verify",
        p(&root.root().join("logs/security/guard.jsonl")),
        "--root",
        &root.r(),
    ]));
}

#[test]
fn a_damaged_archive_falls_back_to_rollback() {
    let root = Root::with_two_releases();
    fs::write(root.core("bin/app"), "#!/bin/sh\necho pwned!!\n").unwrap();
    let archive = root.root().join("archives/1.1.0/core-1.1.0.tar.zst");
    fs::write(&archive, b"not an archive").unwrap();
    let outcome = root.guard_once();
    assert_eq!(outcome.status.code(), Some(3), "{}", text(&outcome));
    assert!(text(&outcome).contains("rolled back"), "{}", text(&outcome));
    assert_eq!(
        fs::read_to_string(root.core("bin/app")).unwrap(),
        "#!/bin/sh\necho 1.0.0\n"
    );
    assert!(root.security_log().contains("\"event\":\"rollback\""));
    let after = root.guard_once();
    assert_eq!(after.status.code(), Some(0), "{}", text(&after));
}

#[test]
fn one_guard_per_root_and_no_heal_during_an_update() {
    let root = Root::with_two_releases();
    let mut daemon = Command::new(CTL)
        .args(["guard", "--root", &root.r(), "--interval", "3600"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The daemon holds the guard lock once it logged its start.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !root.security_log().contains("\"event\":\"start\"") {
        assert!(Instant::now() < deadline, "the guard did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = root.guard_once();
    assert_eq!(second.status.code(), Some(2), "{}", text(&second));
    assert!(text(&second).contains("another guard"), "{}", text(&second));
    unsafe_kill(&daemon, "TERM");
    let status = daemon.wait().unwrap();
    assert!(
        status.success(),
        "the guard did not stop cleanly on SIGTERM"
    );

    // While an update holds the root's lock the guard does not touch the release.
    fs::write(root.core("lib/config"), "tampered\n").unwrap();
    let mut holder = Command::new("flock")
        .arg("--close")
        .arg(root.root().join("install/lock"))
        .args(["sleep", "30"])
        .spawn()
        .expect("flock (util-linux)");
    std::thread::sleep(Duration::from_millis(200));
    let busy = root.guard_once();
    assert_eq!(busy.status.code(), Some(2), "{}", text(&busy));
    assert_eq!(
        fs::read_to_string(root.core("lib/config")).unwrap(),
        "tampered\n"
    );
    let _ = holder.kill();
    let _ = holder.wait();
    let healed = root.guard_once();
    assert_eq!(healed.status.code(), Some(1), "{}", text(&healed));
    assert_eq!(
        fs::read_to_string(root.core("lib/config")).unwrap(),
        "v=1.1.0\n"
    );
}

/// Sends a signal with the `kill` command (the workspace forbids unsafe code).
fn unsafe_kill(child: &std::process::Child, signal: &str) {
    Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
}

#[test]
fn the_daemon_heals_on_filesystem_events() {
    let root = Root::with_two_releases();
    let mut daemon = Command::new(CTL)
        .args(["guard", "--root", &root.r(), "--interval", "3600"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(root.dir.path().join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !root.security_log().contains("\"state\":\"intact\"") {
        assert!(
            Instant::now() < deadline,
            "the first full check did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Without a full check due for an hour, only the events can bring these back.
    for round in 0..3 {
        fs::write(root.core("bin/app"), format!("evil {round}")).unwrap();
        fs::write(root.core(&format!("lib/new-{round}")), "x").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let app = fs::read_to_string(root.core("bin/app")).unwrap_or_default();
            if app == "#!/bin/sh\necho 1.1.0\n" && !root.core(&format!("lib/new-{round}")).exists()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: not healed within 10 s; the guard said:\n{}",
                fs::read_to_string(root.dir.path().join("daemon.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // An update while the daemon runs: it follows the new version.
    let b2 = root.bundle("1.2.0");
    ok(ctl(&["update", p(&b2), "--root", &root.r()]));
    fs::write(root.core("lib/config"), "evil").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_to_string(root.core("lib/config")).unwrap_or_default() != "v=1.2.0\n" {
        assert!(Instant::now() < deadline, "not healed after the update");
        std::thread::sleep(Duration::from_millis(10));
    }
    unsafe_kill(&daemon, "TERM");
    assert!(daemon.wait().unwrap().success());
    let log = root.security_log();
    assert!(log.contains("\"event\":\"stop\""), "{log}");
}

/// With the mount hardening, the release is read-only to everyone; an intruder who
/// remounts it writable tampers, remounts it read-only; the guard still heals (it
/// writes through its own private mount namespace).
#[test]
fn the_guard_heals_under_the_read_only_mount() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let script = format!(
        r#"set -u
CTL={ctl}; R={d}/root
$CTL keygen --secret-key {d}/k.key --public-key {d}/k.pub >/dev/null 2>&1 || exit 10
mkdir -p {d}/c/bin {d}/m && echo app > {d}/c/bin/app
$CTL bundle build --version 1.0.0 --core {d}/c --modules {d}/m --secret-key {d}/k.key --out {d}/b >/dev/null 2>&1 || exit 11
$CTL install --root $R --public-key {d}/k.pub --mounts yes --unit-dir {d}/units >/dev/null || exit 12
$CTL update {d}/b --root $R || exit 13
if echo evil > $R/core/bin/app 2>/dev/null; then exit 14; fi
mount -o remount,bind,rw $R/install/releases || exit 15
echo evil > $R/core/bin/app || exit 16
mount -o remount,bind,ro $R/install/releases || exit 17
$CTL guard --once --root $R; [ $? = 1 ] || exit 18
[ "$(cat $R/core/bin/app)" = app ] || exit 19
findmnt -no OPTIONS $R/install/releases | grep -qw ro || exit 20
$CTL guard --once --root $R || exit 21
exit 0
"#,
        ctl = CTL,
        d = d.display()
    );
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux)");
    assert!(
        output.status.success(),
        "step {:?}: {}",
        output.status.code(),
        text(&output)
    );
}

/// The release's own signed files (manifest, checksums, signature) are put back from
/// the archived bundle; without a usable archive the guard rolls back.
#[test]
fn a_tampered_release_manifest_is_restored_from_the_archive() {
    let root = Root::with_two_releases();
    let manifest = root.root().join("install/releases/1.1.0/manifest.json");
    let original = fs::read(&manifest).unwrap();
    let mut forged = original.clone();
    let at = forged.len() / 2;
    forged[at] ^= 0x20;
    fs::write(&manifest, &forged).unwrap();
    let healed = root.guard_once();
    assert_eq!(healed.status.code(), Some(1), "{}", text(&healed));
    assert_eq!(fs::read(&manifest).unwrap(), original);
    assert_eq!(root.guard_once().status.code(), Some(0));

    fs::write(&manifest, &forged).unwrap();
    fs::remove_dir_all(root.root().join("archives/1.1.0")).unwrap();
    let rolled = root.guard_once();
    assert_eq!(rolled.status.code(), Some(3), "{}", text(&rolled));
    assert_eq!(
        fs::read_to_string(root.core("bin/app")).unwrap(),
        "#!/bin/sh\necho 1.0.0\n"
    );
}

/// `install/active` flipped to an older kept release (no signed operation did it):
/// `status` says so loudly and exits 4, the guard re-activates the recorded version.
#[test]
fn a_downgrade_by_symlink_flip_is_drift_and_healed() {
    let root = Root::with_two_releases();
    let active = root.root().join("install/active");
    let temp = root.root().join("install/.flip");
    std::os::unix::fs::symlink("releases/1.0.0", &temp).unwrap();
    fs::rename(&temp, &active).unwrap();
    assert_eq!(
        fs::read_to_string(root.core("lib/config")).unwrap(),
        "v=1.0.0\n"
    );

    let status = ctl(&["status", "--root", &root.r()]);
    assert_eq!(status.status.code(), Some(4), "{}", text(&status));
    assert!(
        text(&status).contains("UNAUTHORIZED ACTIVATION: 1.0.0 is active, but the last signed operation activated 1.1.0"),
        "{}",
        text(&status)
    );
    let json = ctl(&["status", "--json", "--root", &root.r()]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["activation"]["status"], "unauthorized");
    assert_eq!(value["activation"]["recorded"], "1.1.0");

    let healed = root.guard_once();
    assert_eq!(healed.status.code(), Some(1), "{}", text(&healed));
    assert_eq!(fs::read_link(&active).unwrap(), Path::new("releases/1.1.0"));
    assert_eq!(
        fs::read_to_string(root.core("lib/config")).unwrap(),
        "v=1.1.0\n"
    );
    assert!(root.security_log().contains("unauthorized activation"));
    ok(ctl(&["status", "--root", &root.r()]));
    assert_eq!(root.guard_once().status.code(), Some(0));
}

/// An older signed release copied over the active one's directory: its signature is
/// valid, but it is signed as 1.0.0 and kept as 1.1.0 — refused, and healed from the
/// archive of 1.1.0 (manifest first, then every entry).
#[test]
fn a_downgrade_by_copied_older_release_is_healed() {
    let root = Root::with_two_releases();
    let releases = root.root().join("install/releases");
    let copied = Command::new("cp")
        .args(["-a", "--remove-destination", "-T"])
        .arg(releases.join("1.0.0"))
        .arg(releases.join("1.1.0"))
        .status()
        .unwrap();
    assert!(copied.success());
    assert_eq!(
        fs::read_to_string(root.core("lib/config")).unwrap(),
        "v=1.0.0\n"
    );

    let healed = root.guard_once();
    assert_eq!(healed.status.code(), Some(1), "{}", text(&healed));
    assert_eq!(
        fs::read_to_string(root.core("lib/config")).unwrap(),
        "v=1.1.0\n"
    );
    assert!(
        root.security_log().contains("signed as version 1.0.0"),
        "{}",
        root.security_log()
    );
    assert_eq!(root.guard_once().status.code(), Some(0));
}

/// Deleting the activation record does not make a flip invisible: the guard reports
/// drift until the operator records the active version again (`install`).
#[test]
fn a_deleted_activation_record_is_drift() {
    let root = Root::with_two_releases();
    fs::remove_file(root.root().join("install/activated.json")).unwrap();
    let out = root.guard_once();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no signed operation recorded an activation"));
    assert_eq!(ctl(&["status", "--root", &root.r()]).status.code(), Some(4));
    ok(ctl(&["install", "--root", &root.r(), "--mounts", "no"]));
    assert_eq!(root.guard_once().status.code(), Some(0));
}

/// The restore reads an entry from its own zstd frame (the restore index written at
/// update), not by decoding the archive from its start: with the archive's first
/// frame damaged, an entry placed after it is still restored (streaming from the
/// start would fail and roll back).
#[test]
fn restore_reads_the_entry_from_its_own_frame() {
    let root = Root::with_two_releases();
    let d = root.dir.path();
    let core = d.join("src-2.0.0/core");
    let modules = d.join("src-2.0.0/modules");
    fs::create_dir_all(&core).unwrap();
    fs::create_dir_all(&modules).unwrap();
    fs::write(core.join("VERSION"), "2.0.0\n").unwrap();
    // 12 MiB of tar before the last entry, which therefore starts a frame of its own.
    let filler: Vec<u8> = (0..12u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    fs::write(core.join("a-filler"), &filler).unwrap();
    fs::write(core.join("z-late"), "restored from its own frame\n").unwrap();
    let out = d.join("bundle-2.0.0");
    root.build("2.0.0", &core, &modules, &out);
    ok(root.update(&out));
    let index: serde_json::Value = serde_json::from_slice(
        &fs::read(
            root.root()
                .join("install/releases/2.0.0/restore-index.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        index["core"]["frames"].as_array().unwrap().len() >= 2,
        "{index}"
    );

    // Damage the first frame of the archive the guard restores from.
    let archive = root.root().join("archives/2.0.0/core-2.0.0.tar.zst");
    let mut bytes = fs::read(&archive).unwrap();
    for byte in &mut bytes[64..4096] {
        *byte ^= 0x5a;
    }
    fs::write(&archive, &bytes).unwrap();

    fs::write(root.core("z-late"), "tampered\n").unwrap();
    let healed = root.guard_once();
    assert_eq!(healed.status.code(), Some(1), "{}", text(&healed));
    assert_eq!(
        fs::read_to_string(root.core("z-late")).unwrap(),
        "restored from its own frame\n"
    );
}
