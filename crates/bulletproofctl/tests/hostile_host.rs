//! Root's commands against a hostile host (ARCHITECTURE.md: Scanner: "the same holds for every place
//! where a root process reads, writes, renames, chmods or chowns inside a tree that a
//! less privileged user can write (the guard's quarantine and restore, `render`,
//! `flags`, extraction)").
//!
//! * `flags` and `render` write into `state/conf.d`, which belongs to the service user
//!   (installed here with `--service-user nobody`, uid 65534). The attacker is that
//!   user: symlinks it planted (files chowned to 65534) and a racer thread running with
//!   its credentials (per-thread `setresuid`/`setresgid`/`setgroups`, what `setpriv
//!   --reuid=65534 --regid=65534 --clear-groups` gives a process) that swaps entries with
//!   `renameat2(RENAME_EXCHANGE)` in a loop, bounded by a deadline.
//! * The guard heals the core, which only root can write: there the attacker is
//!   whoever tampered with the release (a root racer thread), and the guard must still
//!   heal without hanging and without creating, moving, chmodding or chowning anything
//!   outside the release.
//!
//! Races may or may not hit; the assertions hold on every interleaving for correct
//! code. Every run of the real binary is bounded (killed and failed when it hangs).
//! As root only (service user, chown, fifos); as another user these tests fail loudly.

use rustix::fs::CWD;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
use common::racer::{exchange, run_bounded, Racer, NOBODY};
use common::{ctl, ctl_command, ok, snapshot_with, text, Root};

/// No single command on these small roots may take longer (a hang is a failure).
const RUN_DEADLINE: Duration = Duration::from_secs(30);
const VERSION: &str = "1.0.0";

fn require_root() {
    let uid = fs::metadata("/proc/self").expect("procfs").uid();
    assert_eq!(uid, 0, "these tests need root (service user, chown, fifos)");
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn chown_nobody(path: &Path) {
    std::os::unix::fs::lchown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

// ---------------------------------------------------------------------------------
// What racers plant

/// Makes `link` a symlink to `target` (replacing a non-directory that is not one).
fn ensure_symlink(link: &Path, target: &Path) {
    match fs::symlink_metadata(link) {
        Ok(meta) if meta.file_type().is_symlink() => return,
        Ok(meta) if meta.is_dir() => return,
        Ok(_) => {
            let _ = fs::remove_file(link);
        }
        Err(_) => {}
    }
    let _ = symlink(target, link);
}

/// Makes `path` a fifo unless something is there.
fn ensure_fifo(path: &Path) {
    if fs::symlink_metadata(path).is_err() {
        let _ = rustix::fs::mknodat(
            CWD,
            path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        );
    }
}

// ---------------------------------------------------------------------------------
// The host: an installed root with a service user, one signed release active, and a
// root-owned directory outside it that nothing may touch.

struct Host(Root);

impl std::ops::Deref for Host {
    type Target = Root;
    fn deref(&self) -> &Root {
        &self.0
    }
}

impl Host {
    fn new() -> Host {
        require_root();
        let host = Host(Root::new());
        // Traversable by the service user (its racer reaches state/conf.d).
        chmod(host.dir.path(), 0o755);
        let src = host.path("src");
        let core = src.join("core");
        let modules = src.join("modules");
        for dir in ["bin", "lib/deep", "conf/sub"] {
            fs::create_dir_all(core.join(dir)).unwrap();
        }
        fs::create_dir_all(modules.join("osint")).unwrap();
        fs::write(core.join("bin/app"), format!("#!/bin/sh\necho {VERSION}\n")).unwrap();
        chmod(&core.join("bin/app"), 0o755);
        fs::write(core.join("lib/config"), format!("v={VERSION}\n")).unwrap();
        fs::write(core.join("lib/deep/data"), vec![b'x'; 100_000]).unwrap();
        fs::write(core.join("conf/x.conf.j2"), "port = {{ port }}\n").unwrap();
        fs::write(
            core.join("conf/sub/y.conf.j2"),
            "root = {{ root }}\nport = {{ port }}\n",
        )
        .unwrap();
        fs::write(modules.join("osint/tool"), "tool\n").unwrap();
        let bundle = host.path("bundle");
        host.build(VERSION, &core, &modules, &bundle);
        host.install(&["--no-venv", "--service-user", "nobody"]);
        ok(host.update(&bundle));
        let conf = host.conf();
        assert_eq!(
            fs::metadata(&conf).unwrap().uid(),
            NOBODY,
            "state/conf.d is the service user's"
        );
        // Outside everything: root's, mode 0755, with a root-only file in it.
        let outside = host.outside();
        fs::create_dir(&outside).unwrap();
        chmod(&outside, 0o755);
        fs::write(outside.join("victim"), "root-only-secret\n").unwrap();
        chmod(&outside.join("victim"), 0o600);
        fs::write(
            outside.join("victim.json"),
            "{\"stolen\": \"root-only-secret\"}\n",
        )
        .unwrap();
        chmod(&outside.join("victim.json"), 0o600);
        fs::create_dir(outside.join("outdir")).unwrap();
        chmod(&outside.join("outdir"), 0o755);
        // A look-alike of core/lib: the same names, one with the same content, all
        // with other modes (a restore or a mode fix through a symlink would show).
        let lib = outside.join("lib");
        fs::create_dir_all(lib.join("deep")).unwrap();
        fs::write(lib.join("config"), format!("v={VERSION}\n")).unwrap();
        chmod(&lib.join("config"), 0o600);
        fs::write(lib.join("deep/data"), "not the release's data\n").unwrap();
        chmod(&lib.join("deep/data"), 0o600);
        chmod(&lib.join("deep"), 0o700);
        chmod(&lib, 0o700);
        host
    }

    fn conf(&self) -> PathBuf {
        self.root().join("state/conf.d")
    }

    fn outside(&self) -> PathBuf {
        self.path("outside")
    }

    fn release(&self) -> PathBuf {
        self.root().join("install/releases").join(VERSION)
    }

    /// Runs `bulletproofctl args`; killed, and the test failed, when not done within
    /// [`RUN_DEADLINE`]. Returns the exit code and stdout+stderr.
    fn run(&self, args: &[&str]) -> (i32, String) {
        let output = run_bounded(ctl_command(args), RUN_DEADLINE);
        (output.status.code().unwrap_or(-1), text(&output))
    }

    fn guard_once(&self) -> (i32, String) {
        self.run(&["guard", "--once", "--root", &self.r()])
    }

    /// The outside directory must be exactly as the test made it.
    fn assert_outside_untouched(&self, before: &[String], what: &str) {
        let after = snapshot(&self.outside());
        assert_eq!(
            after,
            before,
            "{what}: something outside the root was created, changed, moved, chmodded or \
             chowned ({})",
            self.outside().display()
        );
    }
}

/// Every entry below `dir`: path, type and mode, owner, content (or link target).
fn snapshot(dir: &Path) -> Vec<String> {
    snapshot_with(dir, |path, meta| {
        let content = if meta.is_file() {
            let bytes = fs::read(path).unwrap();
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(48)]).into_owned();
            // Short, but any change of content shows (length and a hash of it all).
            let mut hash = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&bytes, &mut hash);
            let hash = std::hash::Hasher::finish(&hash);
            format!("{shown}... ({} bytes, {hash:016x})", bytes.len())
        } else if meta.file_type().is_symlink() {
            format!("-> {}", fs::read_link(path).unwrap().display())
        } else {
            String::new()
        };
        format!(" {content:?}")
    })
}

// ---------------------------------------------------------------------------------
// (a) flags and render in the service user's state/conf.d

#[test]
fn flags_set_does_not_follow_a_symlink_the_service_user_planted() {
    let host = Host::new();
    let before = snapshot(&host.outside());
    // The service user points flags.json at a root-only JSON file.
    let flags = host.conf().join("flags.json");
    symlink(host.outside().join("victim.json"), &flags).unwrap();
    chown_nobody(&flags);

    let (code, out) = host.run(&["flags", "set", "beta", "true", "--root", &host.r()]);
    host.assert_outside_untouched(&before, "flags set through a planted flags.json symlink");
    assert!(
        !out.contains("root-only-secret"),
        "flags set printed the root-only file: {out}"
    );
    // Refused, or written inside conf.d as a regular file that carries nothing of the
    // root-only file (conf.d is readable by the service user).
    let meta = fs::symlink_metadata(&flags).unwrap();
    if code == 0 || meta.is_file() {
        assert!(
            meta.is_file(),
            "exit {code} but flags.json is not a file: {out}"
        );
        let written = fs::read_to_string(&flags).unwrap();
        assert!(
            !written.contains("root-only-secret"),
            "root copied a root-only file (through the service user's symlink) into \
             state/conf.d/flags.json, readable by the service user (exit {code}: {out}):\n\
             {written}"
        );
    }
}

#[test]
fn flags_set_under_a_racing_symlink_swap_touches_nothing_outside() {
    let host = Host::new();
    ok(ctl(&["flags", "set", "seed", "0", "--root", &host.r()]));
    let before = snapshot(&host.outside());
    let conf = host.conf();
    let racer = {
        let (flags, evil) = (conf.join("flags.json"), conf.join("evil"));
        // A JSON object: every run loads it and goes on to write (and chown).
        let victim = host.outside().join("victim.json");
        Racer::spawn(true, Duration::from_secs(20), move || {
            ensure_symlink(&evil, &victim);
            exchange(&flags, &evil)
        })
    };
    let started = Instant::now();
    let mut runs = 0;
    while runs < 300 && started.elapsed() < Duration::from_secs(10) {
        let value = runs.to_string();
        let _ = host.run(&["flags", "set", "n", &value, "--root", &host.r()]);
        runs += 1;
    }
    let swaps = racer.finish();
    assert!(swaps > 0, "the racer never swapped (test setup broken)");
    host.assert_outside_untouched(
        &before,
        &format!("{runs} runs of flags set racing {swaps} flags.json/symlink swaps"),
    );
}

#[test]
fn render_does_not_write_through_symlinks_the_service_user_planted() {
    let host = Host::new();
    let before = snapshot(&host.outside());
    // x.conf -> a root-only file; the subdirectory `sub` -> a root-owned directory.
    let x = host.conf().join("x.conf");
    symlink(host.outside().join("victim"), &x).unwrap();
    chown_nobody(&x);
    let sub = host.conf().join("sub");
    symlink(host.outside().join("outdir"), &sub).unwrap();
    chown_nobody(&sub);

    let (code, out) = host.run(&["render", "--root", &host.r(), "--var", "port=8080"]);
    host.assert_outside_untouched(
        &before,
        &format!(
            "render with conf.d/x.conf and conf.d/sub planted as symlinks (exit {code}: {out})"
        ),
    );
    if code == 0 {
        let meta = fs::symlink_metadata(&x).unwrap();
        assert!(meta.is_file(), "rendered, but x.conf is not a file: {out}");
        assert_eq!(fs::read_to_string(&x).unwrap(), "port = 8080\n");
    }
}

#[test]
fn render_under_racing_symlink_swaps_touches_nothing_outside() {
    let host = Host::new();
    // The service user's own subdirectory, then a first render fills it.
    let conf = host.conf();
    fs::create_dir(conf.join("sub")).unwrap();
    chown_nobody(&conf.join("sub"));
    chmod(&conf.join("sub"), 0o755);
    ok(ctl(&["render", "--root", &host.r(), "--var", "port=1"]));
    let before = snapshot(&host.outside());
    let racer = {
        let conf = conf.clone();
        let outside = host.outside();
        let mut flip = false;
        Racer::spawn(true, Duration::from_secs(20), move || {
            flip = !flip;
            if flip {
                ensure_symlink(&conf.join("evil-dir"), &outside.join("outdir"));
                exchange(&conf.join("sub"), &conf.join("evil-dir"))
            } else {
                ensure_symlink(&conf.join("evil"), &outside.join("victim"));
                exchange(&conf.join("x.conf"), &conf.join("evil"))
            }
        })
    };
    let started = Instant::now();
    let mut runs = 0;
    while runs < 300 && started.elapsed() < Duration::from_secs(10) {
        let var = format!("port={}", 1000 + runs);
        let _ = host.run(&["render", "--root", &host.r(), "--var", &var]);
        runs += 1;
    }
    let swaps = racer.finish();
    assert!(swaps > 0, "the racer never swapped (test setup broken)");
    host.assert_outside_untouched(
        &before,
        &format!("{runs} renders racing {swaps} swaps of conf.d entries with symlinks"),
    );
}

// ---------------------------------------------------------------------------------
// (b) the guard's quarantine, restore and metadata fixes

/// After tampering: the guard heals (exit 1), then finds the release intact (exit 0),
/// exactly as installed.
fn assert_heals(host: &Host, pristine: &[String], what: &str) {
    let (code, out) = host.guard_once();
    assert_eq!(code, 1, "{what}: guard --once did not heal: {out}");
    assert_eq!(
        snapshot(&host.release()),
        pristine,
        "{what}: the release is not back to what was installed ({out})"
    );
    let (code, out) = host.guard_once();
    assert_eq!(code, 0, "{what}: not intact after the heal: {out}");
}

#[test]
fn guard_heals_a_core_file_turned_into_a_fifo_without_hanging() {
    let host = Host::new();
    let pristine = snapshot(&host.release());
    let config = host.core("lib/config");
    fs::write(&config, "v=tampered\n").unwrap();
    fs::remove_file(&config).unwrap();
    make_fifo(&config);
    assert_heals(&host, &pristine, "core/lib/config made a fifo");
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        format!("v={VERSION}\n")
    );
}

#[test]
fn guard_does_not_hang_on_a_release_manifest_turned_into_a_fifo() {
    // The release's signed manifest made a fifo: restored from the archived bundle.
    let host = Host::new();
    let pristine = snapshot(&host.release());
    let manifest = host.release().join("manifest.json");
    fs::remove_file(&manifest).unwrap();
    make_fifo(&manifest);
    let (code, out) = host.guard_once();
    assert_eq!(code, 1, "manifest.json made a fifo: not healed: {out}");
    assert_eq!(snapshot(&host.release()), pristine, "not healed: {out}");
}

#[test]
fn guard_does_not_hang_on_a_signed_archive_turned_into_a_fifo() {
    // A tampered core file while the signed archive it is restored from is a fifo:
    // the guard cannot heal (one version, nothing to roll back to), but it must
    // finish and say so.
    let host = Host::new();
    let archive = host
        .root()
        .join("archives")
        .join(VERSION)
        .join(format!("core-{VERSION}.tar.zst"));
    fs::remove_file(&archive).unwrap();
    make_fifo(&archive);
    fs::write(host.core("lib/config"), "v=tampered\n").unwrap();
    let (code, out) = host.guard_once();
    assert!(
        code == 2 || code == 3,
        "the archive is a fifo: the heal cannot succeed (exit {code}): {out}"
    );
}

fn make_fifo(path: &Path) {
    rustix::fs::mknodat(
        CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
}

#[test]
fn guard_heals_a_core_directory_replaced_by_a_symlink_to_outside() {
    let host = Host::new();
    let pristine = snapshot(&host.release());
    let before = snapshot(&host.outside());
    let lib = host.core("lib");
    fs::remove_dir_all(&lib).unwrap();
    symlink(host.outside().join("lib"), &lib).unwrap();
    let (code, out) = host.guard_once();
    host.assert_outside_untouched(
        &before,
        &format!("guard with core/lib a symlink to outside (exit {code}: {out})"),
    );
    assert_eq!(code, 1, "guard --once did not heal: {out}");
    assert_eq!(snapshot(&host.release()), pristine, "not healed: {out}");
    let (code, out) = host.guard_once();
    assert_eq!(code, 0, "not intact after the heal: {out}");
}

#[test]
fn guard_mode_fixes_do_not_chmod_or_chown_through_a_symlink() {
    let host = Host::new();
    let pristine = snapshot(&host.release());
    let before = snapshot(&host.outside());
    // A core file replaced by a symlink to a root-only 0600 file; another core file's
    // mode tampered (a metadata-only heal in the same cycle).
    let app = host.core("bin/app");
    fs::remove_file(&app).unwrap();
    symlink(host.outside().join("victim"), &app).unwrap();
    chmod(&host.core("lib/config"), 0o666);
    let (code, out) = host.guard_once();
    host.assert_outside_untouched(
        &before,
        &format!("guard with core/bin/app a symlink to a 0600 file (exit {code}: {out})"),
    );
    let victim = fs::metadata(host.outside().join("victim")).unwrap();
    assert_eq!(
        victim.mode() & 0o7777,
        0o600,
        "the outside file was chmodded"
    );
    assert_eq!((victim.uid(), victim.gid()), (0, 0));
    assert_eq!(code, 1, "guard --once did not heal: {out}");
    assert_eq!(snapshot(&host.release()), pristine, "not healed: {out}");
}

// ---------------------------------------------------------------------------------
// (c) the guard healing while a racer swaps the core under it

#[test]
fn guard_healing_under_racing_directory_and_file_symlink_swaps_stays_inside() {
    let host = Host::new();
    let pristine = snapshot(&host.release());
    let before = snapshot(&host.outside());
    let racer = {
        let core = host.core("");
        let outside = host.outside();
        let mut flip = false;
        // Root's racer: the core is root's alone.
        Racer::spawn(false, Duration::from_secs(25), move || {
            flip = !flip;
            if flip {
                // core/lib <-> a symlink to the outside look-alike of lib.
                ensure_symlink(&core.join(".evil-dir"), &outside.join("lib"));
                exchange(&core.join("lib"), &core.join(".evil-dir"))
            } else {
                // core/bin/app given a mode to fix (never through a symlink: opened
                // O_NOFOLLOW), then swapped with a symlink to a root-only file.
                let app = core.join("bin/app");
                if let Ok(fd) = rustix::fs::open(
                    &app,
                    rustix::fs::OFlags::RDONLY
                        | rustix::fs::OFlags::NOFOLLOW
                        | rustix::fs::OFlags::NONBLOCK
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                ) {
                    if rustix::fs::fstat(&fd)
                        .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_file())
                    {
                        let _ = rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(0o777));
                    }
                }
                ensure_symlink(&core.join("bin/.evil-file"), &outside.join("victim"));
                exchange(&app, &core.join("bin/.evil-file"))
            }
        })
    };
    let started = Instant::now();
    let mut runs = 0;
    let mut outcomes = Vec::new();
    while runs < 20 && started.elapsed() < Duration::from_secs(15) {
        let (code, _) = host.guard_once();
        outcomes.push(code);
        runs += 1;
    }
    let swaps = racer.finish();
    assert!(swaps > 0, "the racer never swapped (test setup broken)");
    host.assert_outside_untouched(
        &before,
        &format!("{runs} guard runs (exit codes {outcomes:?}) racing {swaps} swaps"),
    );
    // Once the racing stops, the guard brings the release back.
    let mut last = (0, String::new());
    for _ in 0..3 {
        last = host.guard_once();
        if last.0 == 0 {
            break;
        }
    }
    assert_eq!(
        last.0, 0,
        "the guard did not heal after the race: {}",
        last.1
    );
    assert_eq!(snapshot(&host.release()), pristine);
    host.assert_outside_untouched(&before, "guard runs after the race");
}

#[test]
fn guard_does_not_hang_when_a_fifo_is_swapped_in_for_a_core_file_mid_heal() {
    let host = Host::new();
    let racer = {
        let lib = host.core("lib");
        let mut flip = false;
        Racer::spawn(false, Duration::from_secs(25), move || {
            flip = !flip;
            let (file, fifo) = if flip {
                (lib.join("config"), lib.join(".fifo-a"))
            } else {
                (lib.join("deep/data"), lib.join("deep/.fifo-b"))
            };
            ensure_fifo(&fifo);
            exchange(&file, &fifo)
        })
    };
    let started = Instant::now();
    let mut runs = 0;
    while runs < 20 && started.elapsed() < Duration::from_secs(15) {
        // Panics (after killing it) when a run hangs on a fifo.
        let _ = host.guard_once();
        runs += 1;
    }
    let swaps = racer.finish();
    assert!(swaps > 0, "the racer never swapped (test setup broken)");
}
