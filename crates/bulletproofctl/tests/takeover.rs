//! Root trusts nothing it did not make (issue 15, item 7), end to end with the real
//! binary, as root:
//!
//! * `install` over a tree an unprivileged user (uid 65534) planted refuses, naming
//!   every planted path, and adopts none of it (no chown of content);
//! * under `umask 000`, `bundle build`, `install`, `update` and `snapshot` create
//!   nothing group- or world-writable;
//! * `bundle build` refuses an output directory someone else can write (a setpriv'd
//!   racer swapping files there), and signs the bytes it wrote;
//! * `bundle build` never blocks on a FIFO swapped into its source tree;
//! * `update` archives the bytes it verified, whatever happens to the bundle directory
//!   afterwards (files swapped for a FIFO or garbage, or changed in place), and never
//!   hangs on a FIFO there;
//! * `snapshot` refuses to host-sign a core that does not match its signed manifest.
//!
//! Every run of the binary is bounded: a hang is killed and fails the test.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::racer::{run_bounded, NOBODY};
use common::{ok, p, text, CTL};

/// No single command on these small roots may take longer.
const DEADLINE: Duration = Duration::from_secs(30);
/// Fixed build time: the same inputs give the same bundle bytes.
const EPOCH: (&str, &str) = ("SOURCE_DATE_EPOCH", "1700000000");

fn require_root() {
    let uid = fs::metadata("/proc/self").expect("procfs").uid();
    assert_eq!(uid, 0, "these tests need root (chown, setpriv, fifos)");
}

/// Runs `program args` with no stdin and without the caller's bulletproof variables;
/// killed, and the test failed, when not done within [`DEADLINE`].
fn bounded(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(program);
    command
        .args(args)
        .env_remove("BULLETPROOF_ROOT")
        .env_remove("BULLETPROOF_CRASH_AT")
        .envs(env.iter().copied());
    run_bounded(command, DEADLINE)
}

fn ctl(args: &[&str]) -> Output {
    bounded(CTL, args, &[EPOCH])
}

/// `bulletproofctl args` under `umask 000`.
fn ctl_umask000(args: &[&str]) -> Output {
    let mut all = vec!["-c", "umask 000 && exec \"$0\" \"$@\"", CTL];
    all.extend_from_slice(args);
    bounded("sh", &all, &[EPOCH])
}

/// A key pair and source trees in a directory others can traverse (setpriv'd racers).
struct Fixture {
    dir: tempfile::TempDir,
    key: String,
    root: String,
    public: String,
}

impl Fixture {
    fn new() -> Self {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| p(&dir.path().join(name)).to_owned();
        let (key, root, public) = (path("k.key"), path("root"), path("k.pub"));
        let fixture = Self {
            dir,
            key,
            root,
            public,
        };
        fs::set_permissions(fixture.path(), fs::Permissions::from_mode(0o755)).unwrap();
        ok(ctl(&[
            "keygen",
            "--secret-key",
            &fixture.key,
            "--public-key",
            &fixture.public,
        ]));
        fixture
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn root(&self) -> PathBuf {
        self.path().join("root")
    }

    /// Source trees of `version` (`preflight`, when given, is the core's preflight).
    fn sources(&self, version: &str, preflight: Option<&str>) -> (PathBuf, PathBuf) {
        let src = self.path().join(format!("src-{version}"));
        let (core, modules) = (src.join("core"), src.join("modules"));
        fs::create_dir_all(core.join("bin")).unwrap();
        fs::create_dir_all(core.join("lib")).unwrap();
        fs::create_dir_all(modules.join("osint")).unwrap();
        fs::write(core.join("bin/app"), format!("#!/bin/sh\necho {version}\n")).unwrap();
        fs::set_permissions(core.join("bin/app"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(core.join("lib/data"), vec![b'x'; 200_000]).unwrap();
        fs::write(modules.join("osint/tool"), format!("tool {version}\n")).unwrap();
        if let Some(script) = preflight {
            fs::write(core.join("preflight"), script).unwrap();
            fs::set_permissions(core.join("preflight"), fs::Permissions::from_mode(0o755)).unwrap();
        }
        (core, modules)
    }

    fn build_args<'a>(
        &'a self,
        version: &'a str,
        src: &'a (PathBuf, PathBuf),
        out: &'a Path,
    ) -> Vec<&'a str> {
        vec![
            "bundle",
            "build",
            "--version",
            version,
            "--core",
            p(&src.0),
            "--modules",
            p(&src.1),
            "--secret-key",
            &self.key,
            "--out",
            p(out),
        ]
    }

    fn bundle(&self, version: &str, preflight: Option<&str>) -> PathBuf {
        let src = self.sources(version, preflight);
        let out = self.path().join(format!("bundle-{version}"));
        ok(ctl(&self.build_args(version, &src, &out)));
        out
    }

    /// `install` of the root with the release key, without mounts.
    fn install_args(&self) -> Vec<&str> {
        let root = &self.root;
        vec![
            "install",
            "--root",
            root,
            "--public-key",
            &self.public,
            "--mounts",
            "no",
        ]
    }

    fn install(&self) {
        let mut args = self.install_args();
        args.push("--no-venv");
        ok(ctl(&args));
    }
}

fn chown_nobody(path: &Path) {
    std::os::unix::fs::lchown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Every path below `dir` (itself included), parents first.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut at = 0;
    while at < out.len() {
        let path = out[at].clone();
        at += 1;
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            let mut children: Vec<_> = fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            children.sort();
            out.extend(children);
        }
    }
    out
}

/// The paths below `dirs` (symlinks aside: they have no mode) that group or others can
/// write.
fn group_or_world_writable(dirs: &[PathBuf]) -> Vec<String> {
    let mut found = Vec::new();
    for dir in dirs {
        for path in tree(dir) {
            let meta = fs::symlink_metadata(&path).unwrap();
            if !meta.file_type().is_symlink() && meta.mode() & 0o022 != 0 {
                found.push(format!("{} {:04o}", path.display(), meta.mode() & 0o7777));
            }
        }
    }
    found
}

fn sha256(path: &Path) -> String {
    let output = ok(bounded("sha256sum", &[p(path)], &[]));
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

// ---------------------------------------------------------------------------------

#[test]
fn install_refuses_a_tree_another_user_planted_and_adopts_none_of_it() {
    let f = Fixture::new();
    let root = f.root();
    let marker = f.path().join("planted-command-ran");
    let planted = [
        (
            "install/bulletproof.toml",
            format!(
                "restart_command = [\"/bin/sh\", \"-c\", \"touch {}\"]\n",
                marker.display()
            ),
            0o777,
        ),
        (
            "install/logkeys/bulletproofctl.state",
            "{\"next_seq\":0}".to_string(),
            0o600,
        ),
        ("install/logkeys/guard.state", "{}".to_string(), 0o600),
        ("venv/bin/python", "#!/bin/sh\n".to_string(), 0o755),
    ];
    for (rel, content, file_mode) in &planted {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(*file_mode)).unwrap();
    }
    for rel in ["install", "install/logkeys", "venv", "venv/bin"] {
        fs::set_permissions(root.join(rel), fs::Permissions::from_mode(0o777)).unwrap();
    }
    for path in tree(&root.join("install"))
        .into_iter()
        .chain(tree(&root.join("venv")))
    {
        chown_nobody(&path);
    }
    // A key root owns but others can read is not kept either.
    fs::write(root.join("install/host.key"), "not ours\n").unwrap();
    fs::set_permissions(
        root.join("install/host.key"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let output = ctl(&f.install_args());
    let said = text(&output);
    assert!(
        !output.status.success(),
        "install adopted a planted tree: {said}"
    );
    for rel in planted
        .iter()
        .map(|(rel, _, _)| *rel)
        .chain(["install/host.key"])
    {
        assert!(
            said.contains(p(&root.join(rel))),
            "the refusal does not name {rel}: {said}"
        );
    }
    // Nothing planted was adopted: the content is still the other user's (read_trusted
    // refuses it), and the planted command never ran.
    for (rel, _, _) in &planted {
        assert_eq!(
            fs::symlink_metadata(root.join(rel)).unwrap().uid(),
            NOBODY,
            "{rel}"
        );
    }
    assert!(!marker.exists());
    // The directories were taken over: nobody else can add anything there any more.
    for rel in ["install", "install/logkeys", "venv", "venv/bin"] {
        let meta = fs::symlink_metadata(root.join(rel)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{rel}");
        assert_eq!(meta.mode() & 0o022, 0, "{rel} {:04o}", meta.mode() & 0o7777);
    }

    // The operator removes what was planted; install then makes its own.
    for (rel, _, _) in &planted {
        fs::remove_file(root.join(rel)).unwrap();
    }
    fs::remove_file(root.join("install/host.key")).unwrap();
    f.install();
    let core_side: Vec<PathBuf> = [
        "install",
        "venv",
        "archives",
        "tools",
        "backups",
        "logs/security",
        "logs/ops",
    ]
    .iter()
    .map(|rel| root.join(rel))
    .collect();
    for path in core_side.iter().flat_map(|dir| tree(dir)) {
        assert_eq!(
            fs::symlink_metadata(&path).unwrap().uid(),
            0,
            "{}",
            path.display()
        );
    }
    assert_eq!(group_or_world_writable(&core_side), Vec::<String>::new());
    for key in [
        "install/logkeys/bulletproofctl.state",
        "install/logkeys/guard.state",
        "install/host.key",
    ] {
        assert_eq!(mode(&root.join(key)) & 0o077, 0, "{key}");
    }
    let config = fs::read_to_string(root.join("install/bulletproof.toml")).unwrap();
    assert!(!config.contains("touch"), "{config}");
    assert!(!marker.exists());
}

#[test]
fn under_umask_000_nothing_created_is_group_or_world_writable() {
    let f = Fixture::new();
    let src = f.sources("1.0.0", None);
    let out = f.path().join("bundle-1.0.0");
    ok(ctl_umask000(&f.build_args("1.0.0", &src, &out)));
    let root = f.root();
    ok(ctl_umask000(&f.install_args()));
    ok(ctl_umask000(&["update", p(&out), "--root", p(&root)]));
    ok(ctl_umask000(&["snapshot", "--root", p(&root)]));
    let found = group_or_world_writable(&[root.clone(), out]);
    assert_eq!(found, Vec::<String>::new(), "created group/world-writable");
    // The release's own signed files included.
    for name in ["manifest.json", "checksums.txt", "sig.minisig"] {
        assert_eq!(
            mode(&root.join("install/releases/1.0.0").join(name)),
            0o644,
            "{name}"
        );
    }
}

#[test]
fn bundle_build_refuses_an_output_directory_another_user_writes_to() {
    let f = Fixture::new();
    let src = f.sources("1.0.0", None);
    // What the build means to sign: the same inputs built into a directory of its own.
    let clean = f.path().join("clean");
    ok(ctl(&f.build_args("1.0.0", &src, &clean)));
    let intended = fs::read_to_string(clean.join("checksums.txt")).unwrap();
    for name in ["core-1.0.0.tar.zst", "manifest-1.0.0.json"] {
        assert!(intended.contains(&format!("{}  {name}", sha256(&clean.join(name)))));
    }

    // The output directory belongs to uid 65534, who swaps the files there in a loop.
    let raced = f.path().join("raced");
    fs::create_dir(&raced).unwrap();
    chown_nobody(&raced);
    let stop = f.path().join("stop-racer");
    let script = r#"
import os, sys
d, stop = sys.argv[1], sys.argv[2]
names = ["core-1.0.0.tar.zst", "modules-1.0.0.tar.zst", "manifest-1.0.0.json", "sbom-1.0.0.json"]
for i in range(300000):
    if os.path.exists(stop):
        break
    for n in names:
        t = os.path.join(d, ".g")
        with open(t, "wb") as f:
            f.write(b"garbage %d" % i)
        os.replace(t, os.path.join(d, n))
"#;
    // The system's python (a per-user one under /root is not 65534's to run).
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|python| !python.starts_with('/') || Path::new(python).exists())
        .unwrap();
    let mut racer = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            python,
            "-c",
            script,
        ])
        .args([p(&raced), p(&stop)])
        .stdin(Stdio::null())
        .spawn()
        .expect("setpriv python3");
    // The racer is running once its first swap is there.
    let started = Instant::now();
    while !raced.join("sbom-1.0.0.json").exists() {
        assert!(started.elapsed() < DEADLINE, "the racer did not start");
        std::thread::yield_now();
    }
    let output = ctl(&f.build_args("1.0.0", &src, &raced));
    fs::write(&stop, "").unwrap();
    let _ = racer.wait();
    if output.status.success() {
        // Signed: then what is signed must be what the build meant to write.
        let signed = fs::read_to_string(raced.join("checksums.txt")).unwrap();
        ok(ctl(&[
            "verify",
            p(&raced.join("checksums.txt")),
            "--public-key",
            &f.public,
            "--signature",
            p(&raced.join("sig.minisig")),
        ]));
        assert_eq!(
            signed, intended,
            "bundle build signed bytes it did not write"
        );
    } else {
        let said = text(&output);
        assert!(said.contains("refusing to write the bundle into"), "{said}");
        assert!(said.contains("owned by uid 65534"), "{said}");
    }

    // One of the caller's own, but writable by everyone: refused as well.
    let open = f.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let output = ctl(&f.build_args("1.0.0", &src, &open));
    assert!(!output.status.success());
    assert!(
        text(&output).contains("not writable by group or others"),
        "{}",
        text(&output)
    );
}

#[test]
fn bundle_build_never_blocks_on_a_fifo_swapped_into_its_source_tree() {
    let f = Fixture::new();
    let src = f.sources("1.0.0", None);
    let swapped = src.0.join("lib/swapped");
    fs::write(&swapped, "small\n").unwrap();
    // A racer turning lib/swapped into a FIFO and back, until stopped (or a bound);
    // what it renames in is made outside the tree.
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let stop = Arc::clone(&stop);
        let spare = f.path().to_path_buf();
        std::thread::spawn(move || {
            let (fifo, file) = (spare.join(".fifo"), spare.join(".file"));
            for _ in 0..5_000_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let _ = rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &fifo,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o644),
                    0,
                );
                let _ = fs::rename(&fifo, &swapped);
                let _ = fs::write(&file, "small\n");
                let _ = fs::rename(&file, &swapped);
            }
        })
    };
    let out = f.path().join("out");
    let (mut built, mut failed) = (0, 0);
    for _ in 0..100 {
        // Bounded: a build that blocks on the FIFO is killed and fails the test.
        let output = ctl(&f.build_args("1.0.0", &src, &out));
        if output.status.success() {
            built += 1;
        } else {
            failed += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();
    eprintln!("{built} builds, {failed} refused (a FIFO or a changed file)");
}

#[test]
fn update_archives_the_bytes_it_verified_whatever_happens_to_the_bundle_afterwards() {
    let f = Fixture::new();
    f.install();
    let root = f.root();
    // The bundle's own preflight (run after verification, as root) stands for whoever
    // owns the bundle directory: the core archive becomes a FIFO, the modules archive
    // and the signature garbage, checksums.txt is emptied in place.
    let bundle = f.path().join("bundle-1.0.0");
    let swap = format!(
        "#!/bin/sh\nset -e\nb='{}'\nmv \"$b/core-1.0.0.tar.zst\" \"$b/moved\"\nmkfifo \"$b/core-1.0.0.tar.zst\"\n\
         printf garbage > \"$b/new\"; mv \"$b/new\" \"$b/modules-1.0.0.tar.zst\"\n\
         printf garbage > \"$b/new\"; mv \"$b/new\" \"$b/sig.minisig\"\n: > \"$b/checksums.txt\"\n",
        bundle.display()
    );
    assert_eq!(f.bundle("1.0.0", Some(&swap)), bundle);
    let verified = f.path().join("verified-1.0.0");
    fs::create_dir(&verified).unwrap();
    let names = [
        "core-1.0.0.tar.zst",
        "modules-1.0.0.tar.zst",
        "manifest-1.0.0.json",
        "sbom-1.0.0.json",
        "checksums.txt",
        "sig.minisig",
    ];
    for name in names {
        fs::copy(bundle.join(name), verified.join(name)).unwrap();
    }
    ok(ctl(&["update", p(&bundle), "--root", p(&root)]));
    assert!(bundle.join("moved").exists(), "the preflight did not run");
    for name in names {
        assert_eq!(
            fs::read(root.join("archives/1.0.0").join(name)).unwrap(),
            fs::read(verified.join(name)).unwrap(),
            "archives/1.0.0/{name} is not what was verified"
        );
    }
    // The guard restores from that archive.
    fs::write(root.join("core/bin/app"), "tampered\n").unwrap();
    let output = ctl(&["guard", "--once", "--root", p(&root)]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_eq!(
        fs::read_to_string(root.join("core/bin/app")).unwrap(),
        "#!/bin/sh\necho 1.0.0\n"
    );

    // A verified file changed in place (the same inode) after verification: not archived.
    let bundle = f.path().join("bundle-1.1.0");
    let append = format!(
        "#!/bin/sh\nprintf x >> '{}/sbom-1.1.0.json'\n",
        bundle.display()
    );
    assert_eq!(f.bundle("1.1.0", Some(&append)), bundle);
    let output = ctl(&["update", p(&bundle), "--root", p(&root)]);
    match output.status.code() {
        Some(1) => {
            assert!(
                text(&output).contains("changed after it was verified"),
                "{}",
                text(&output)
            );
            assert!(!root.join("archives/1.1.0").exists());
            assert_eq!(
                fs::read_link(root.join("install/active")).unwrap(),
                Path::new("releases/1.0.0")
            );
        }
        _ => panic!(
            "update archived a bundle file changed after its verification: {}",
            text(&output)
        ),
    }
}

#[test]
fn update_refuses_a_fifo_in_the_bundle_without_hanging() {
    let f = Fixture::new();
    f.install();
    let bundle = f.bundle("1.0.0", None);
    for name in ["sig.minisig", "core-1.0.0.tar.zst"] {
        let held = f.path().join("held");
        fs::rename(bundle.join(name), &held).unwrap();
        ok(bounded("mkfifo", &[p(&bundle.join(name))], &[]));
        let output = ctl(&["update", p(&bundle), "--root", p(&f.root())]);
        assert_eq!(output.status.code(), Some(1), "{name}: {}", text(&output));
        assert!(
            text(&output).contains("not a regular file"),
            "{}",
            text(&output)
        );
        fs::remove_file(bundle.join(name)).unwrap();
        fs::rename(&held, bundle.join(name)).unwrap();
    }
    ok(ctl(&["update", p(&bundle), "--root", p(&f.root())]));
}

#[test]
fn snapshot_refuses_to_sign_a_core_that_does_not_match_its_manifest() {
    let f = Fixture::new();
    f.install();
    let root = f.root();
    let bundle = f.bundle("1.0.0", None);
    ok(ctl(&["update", p(&bundle), "--root", p(&root)]));
    let snapshots = || -> usize {
        fs::read_dir(root.join("archives"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("snapshot-")
            })
            .count()
    };
    ok(ctl(&["snapshot", "--root", p(&root)]));
    let before = snapshots();
    assert_eq!(before, 2, "a snapshot and its signature");
    fs::write(root.join("core/lib/data"), vec![b'y'; 200_000]).unwrap();
    let output = ctl(&["snapshot", "--root", p(&root)]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("does not match its signed manifest"),
        "{}",
        text(&output)
    );
    assert_eq!(snapshots(), before, "a tampered core was signed");
}
