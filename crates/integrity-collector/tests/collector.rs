//! `integrity-collector` end to end: the real binary on real trees built by the tests
//! (setuid files, devices, fifos, sockets, sparse files, odd names, mounts in a private
//! mount namespace, an unprivileged scan through `setpriv`).
//!
//! The fixture needs root (device nodes, ownership, `unshare -m`); run as another user
//! these tests fail loudly instead of skipping.

use integrity_common::{Baseline, EntryKind, FileIntegrityEntry, Sha256Digest};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_integrity-collector");
const NOBODY: &str = "65534";

fn require_root() {
    let uid = fs::metadata("/proc/self").expect("procfs").uid();
    assert_eq!(
        uid, 0,
        "these tests build device nodes and mount namespaces: run them as root"
    );
}

fn sh(command: &mut Command) {
    let status = command.status().expect("spawn helper command");
    assert!(status.success(), "{command:?} failed: {status}");
}

fn write(path: &Path, content: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A temporary tree holding every odd thing a real image holds.
struct Fixture {
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new(with_sparse: bool) -> Self {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        // Traversable by the unprivileged user of the setpriv test.
        chmod(dir.path(), 0o755);
        let root = dir.path().join("root");
        let fixture = Fixture {
            dir,
            root: root.clone(),
        };
        fs::create_dir(&root).unwrap();
        chmod(&root, 0o755);
        write(&root.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n");
        write(&root.join("usr/bin/su"), b"\x7fELF pretend");
        chmod(&root.join("usr/bin/su"), 0o4755);
        fs::create_dir(root.join("private")).unwrap();
        chmod(&root.join("private"), 0o700);
        write(&root.join("private/key"), b"secret");
        symlink("/etc/passwd", root.join("abs-link")).unwrap();
        symlink("../etc/passwd", root.join("usr/rel-link")).unwrap();
        symlink("/nowhere/at/all", root.join("dangling")).unwrap();
        write(&root.join("hard-a"), b"same inode");
        fs::hard_link(root.join("hard-a"), root.join("hard-b")).unwrap();
        write(&root.join("empty"), b"");
        if with_sparse {
            let sparse = fs::File::create(root.join("sparse")).unwrap();
            sparse.set_len(1 << 30).unwrap();
        }
        sh(Command::new("mkfifo").arg(root.join("fifo")));
        drop(std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap());
        sh(Command::new("mknod")
            .arg(root.join("null-dev"))
            .args(["c", "1", "3"]));
        for name in odd_names() {
            write(&root.join(OsStr::from_bytes(name)), name);
        }
        for excluded in ["proc", "sys", "dev", "run", "tmp", "var/tmp", "var/log"] {
            write(&root.join(excluded).join("inside"), b"volatile");
        }
        write(&root.join("procfoo/inside"), b"scanned");
        write(&root.join("var/lib/state"), b"scanned");
        write(&root.join("unreadable"), b"root only");
        chmod(&root.join("unreadable"), 0o000);
        fs::create_dir(root.join("closed")).unwrap();
        write(&root.join("closed/hidden"), b"x");
        chmod(&root.join("closed"), 0o700);
        sh(Command::new("chown")
            .arg("1000:1000")
            .arg(root.join("etc/passwd")));
        fixture
    }

    fn root(&self) -> &Path {
        &self.root
    }

    /// A place for outputs, outside the scanned root.
    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn odd_names() -> [&'static [u8]; 4] {
    [
        b"name-\xff-byte",
        b"100%-done",
        b"new\nline",
        b"back\\slash",
    ]
}

fn collector(args: &[&OsStr]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("IMAGE_ID")
        .env("SOURCE_DATE_EPOCH", "1790000000")
        .output()
        .expect("run integrity-collector")
}

fn os(text: &str) -> &OsStr {
    OsStr::new(text)
}

fn scan_to_file(fixture: &Fixture, extra: &[&OsStr]) -> (Output, Baseline) {
    let out = fixture.out("manifest.json");
    let mut args = vec![
        os("--root"),
        fixture.root().as_os_str(),
        os("--image-id"),
        os("fixture-1"),
        os("--output"),
    ];
    let out_os = out.clone().into_os_string();
    args.push(&out_os);
    args.extend_from_slice(extra);
    let output = collector(&args);
    let bytes = fs::read(&out).unwrap_or_else(|err| panic!("no manifest: {err}; {output:?}"));
    let baseline = Baseline::from_json_slice(&bytes).expect("the collector's output validates");
    (output, baseline)
}

fn find<'a>(baseline: &'a Baseline, path: &[u8]) -> &'a FileIntegrityEntry {
    baseline
        .entries
        .iter()
        .find(|entry| &*entry.path == path)
        .unwrap_or_else(|| panic!("{} missing", String::from_utf8_lossy(path)))
}

fn has(baseline: &Baseline, path: &[u8]) -> bool {
    baseline.entries.iter().any(|entry| &*entry.path == path)
}

fn sha256sum(path: &Path) -> String {
    // Through stdin: sha256sum escapes odd file names in its output.
    let output = Command::new("sha256sum")
        .stdin(fs::File::open(path).unwrap())
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()[..64].to_string()
}

#[test]
fn fixture_tree_is_recorded_exactly() {
    let fixture = Fixture::new(true);
    let (output, baseline) = scan_to_file(&fixture, &[]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(baseline.image_id, "fixture-1");
    assert_eq!(baseline.timestamp, "2026-09-21T14:13:20Z");
    assert!(baseline.errors.is_empty(), "{:?}", baseline.errors);

    let root = find(&baseline, b"/");
    assert_eq!((root.kind, root.mode), (EntryKind::Dir, 0o755));
    let su = find(&baseline, b"/usr/bin/su");
    assert_eq!((su.kind, su.mode, su.uid), (EntryKind::File, 0o4755, 0));
    assert_eq!(find(&baseline, b"/private").mode, 0o700);
    assert_eq!(find(&baseline, b"/etc/passwd").uid, 1000);
    assert_eq!(find(&baseline, b"/etc/passwd").gid, 1000);

    for (path, target) in [
        (&b"/abs-link"[..], &b"/etc/passwd"[..]),
        (b"/usr/rel-link", b"../etc/passwd"),
        (b"/dangling", b"/nowhere/at/all"),
    ] {
        let link = find(&baseline, path);
        assert_eq!(link.kind, EntryKind::Symlink);
        assert_eq!(link.target.as_deref(), Some(target));
        assert_eq!(link.sha256, Some(Sha256Digest::of(target)));
    }

    let (a, b) = (find(&baseline, b"/hard-a"), find(&baseline, b"/hard-b"));
    assert_eq!(a.sha256, b.sha256);
    assert_eq!(a.sha256, Some(Sha256Digest::of(b"same inode")));
    let empty = find(&baseline, b"/empty");
    assert_eq!(empty.sha256, Some(Sha256Digest::of(b"")));
    assert_eq!(empty.size, Some(0));
    let sparse = find(&baseline, b"/sparse");
    assert_eq!(sparse.size, Some(1 << 30));

    for (path, kind) in [
        (&b"/fifo"[..], EntryKind::Fifo),
        (b"/socket", EntryKind::Socket),
        (b"/null-dev", EntryKind::Char),
    ] {
        let entry = find(&baseline, path);
        assert_eq!(entry.kind, kind);
        assert_eq!(entry.sha256, None);
    }
    assert_eq!(
        find(&baseline, b"/null-dev").rdev,
        Some(
            fs::symlink_metadata(fixture.root().join("null-dev"))
                .unwrap()
                .rdev()
        )
    );

    for name in odd_names() {
        let path = [b"/", name].concat();
        assert_eq!(find(&baseline, &path).sha256, Some(Sha256Digest::of(name)));
    }

    // Every regular file's hash agrees with coreutils, the 1 GiB sparse file included.
    for entry in baseline
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
    {
        let on_disk = fixture.root().join(OsStr::from_bytes(&entry.path[1..]));
        assert_eq!(entry.sha256.unwrap().to_hex(), sha256sum(&on_disk));
    }

    for excluded in [
        "/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp", "/var/log",
    ] {
        assert!(
            !has(&baseline, excluded.as_bytes()),
            "{excluded} was scanned"
        );
        assert!(!has(&baseline, format!("{excluded}/inside").as_bytes()));
    }
    assert!(has(&baseline, b"/procfoo/inside"));
    assert!(has(&baseline, b"/var"));
    assert!(has(&baseline, b"/var/lib/state"));
    // As root, the 000 file and the 0700 directory are read.
    assert!(has(&baseline, b"/unreadable"));
    assert!(has(&baseline, b"/closed/hidden"));
}

#[test]
fn odd_names_are_encoded_losslessly_in_the_json() {
    let fixture = Fixture::new(false);
    let (_, _) = scan_to_file(&fixture, &[]);
    let text = fs::read_to_string(fixture.out("manifest.json")).unwrap();
    for encoded in [
        r#""path":"/name-%FF-byte""#,
        r#""path":"/100%25-done""#,
        r#""path":"/new\nline""#,
        r#""path":"/back\\slash""#,
    ] {
        assert!(text.contains(encoded), "{encoded} not in manifest");
    }
}

#[test]
fn two_scans_of_one_tree_are_identical() {
    let fixture = Fixture::new(false);
    let (_, first) = scan_to_file(&fixture, &[]);
    let first_bytes = fs::read(fixture.out("manifest.json")).unwrap();
    let (_, second) = scan_to_file(&fixture, &[]);
    let second_bytes = fs::read(fixture.out("manifest.json")).unwrap();
    assert_eq!(first, second);
    assert_eq!(first_bytes, second_bytes);
    let sorted = first.entries.windows(2).all(|w| w[0].path < w[1].path);
    assert!(sorted);
}

#[test]
fn manifest_goes_to_stdout_by_default() {
    let fixture = Fixture::new(false);
    for extra in [&[][..], &[os("--output"), os("-")][..]] {
        let mut args = vec![
            os("--root"),
            fixture.root().as_os_str(),
            os("--image-id"),
            os("x"),
        ];
        args.extend_from_slice(extra);
        let output = collector(&args);
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        let baseline = Baseline::from_json_slice(&output.stdout).unwrap();
        assert!(has(&baseline, b"/etc/passwd"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(" entries, "), "{stderr}");
        assert!(stderr.contains(" errors, "), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[test]
fn image_id_comes_from_the_environment_too() {
    let fixture = Fixture::new(false);
    let output = Command::new(BIN)
        .arg("--root")
        .arg(fixture.root())
        .env("IMAGE_ID", "from-env")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        Baseline::from_json_slice(&output.stdout).unwrap().image_id,
        "from-env"
    );
}

#[test]
fn unreadable_paths_are_reported_per_path_and_not_fatal() {
    let fixture = Fixture::new(false);
    let out = fixture.out("unprivileged.json");
    // The output directory must be writable by the unprivileged user.
    sh(Command::new("chown").arg(NOBODY).arg(fixture.dir.path()));
    let output = Command::new("setpriv")
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", BIN])
        .arg("--root")
        .arg(fixture.root())
        .args(["--image-id", "nobody-scan", "--output"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("\"/unreadable\": permission denied"),
        "{stderr}"
    );
    assert!(
        stderr.contains("\"/closed\": permission denied"),
        "{stderr}"
    );
    let baseline = Baseline::from_json_slice(&fs::read(&out).unwrap()).unwrap();
    let errors: Vec<(&[u8], &str)> = baseline
        .errors
        .iter()
        .map(|record| (&*record.path, record.error.as_str()))
        .collect();
    assert_eq!(
        errors,
        [
            (&b"/closed"[..], "permission denied"),
            (b"/private", "permission denied"),
            (b"/unreadable", "permission denied"),
        ]
    );
    // The directories themselves are recorded; what could be read is all there.
    assert!(has(&baseline, b"/closed"));
    assert!(!has(&baseline, b"/unreadable"));
    assert!(has(&baseline, b"/etc/passwd"));
    assert!(has(&baseline, b"/usr/bin/su"));
}

#[test]
fn exclude_option_skips_whole_components() {
    let fixture = Fixture::new(false);
    let (output, baseline) = scan_to_file(
        &fixture,
        &[
            os("--exclude"),
            os("/usr/bin"),
            os("--exclude"),
            os("/proc"),
        ],
    );
    assert_eq!(output.status.code(), Some(0));
    assert!(has(&baseline, b"/usr"));
    assert!(!has(&baseline, b"/usr/bin"));
    assert!(!has(&baseline, b"/usr/bin/su"));
    assert!(has(&baseline, b"/usr/rel-link"));
    assert!(has(&baseline, b"/procfoo/inside"));

    let (_, everything) = scan_to_file(&fixture, &[os("--no-default-excludes")]);
    assert!(has(&everything, b"/proc/inside"));
    assert!(has(&everything, b"/var/log/inside"));
}

#[test]
fn stays_on_one_filesystem_unless_told() {
    let fixture = Fixture::new(false);
    let mnt = fixture.root().join("mnt");
    fs::create_dir(&mnt).unwrap();
    // A private mount namespace: the tmpfs exists only for this shell and its children.
    let script = format!(
        "mount -t tmpfs none '{mnt}' && echo inside > '{mnt}/file' && \
         '{BIN}' --root '{root}' --image-id one-fs -q -o '{out1}' && \
         '{BIN}' --root '{root}' --image-id all-fs -q --cross-filesystems -o '{out2}'",
        mnt = mnt.display(),
        root = fixture.root().display(),
        out1 = fixture.out("one.json").display(),
        out2 = fixture.out("all.json").display(),
    );
    sh(Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]));
    let one = Baseline::from_json_slice(&fs::read(fixture.out("one.json")).unwrap()).unwrap();
    let all = Baseline::from_json_slice(&fs::read(fixture.out("all.json")).unwrap()).unwrap();
    assert!(has(&one, b"/mnt"), "the mount point itself is recorded");
    assert!(!has(&one, b"/mnt/file"));
    assert!(has(&all, b"/mnt/file"));
    assert!(
        !fixture.root().join("mnt/file").exists(),
        "the mount stayed private"
    );
}

fn assert_one_line_failure(output: &Output, expected: &str) {
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(expected), "{stderr} lacks {expected}");
    assert!(output.stdout.is_empty());
}

#[test]
fn bad_input_gives_one_line_and_no_output_file() {
    let fixture = Fixture::new(false);
    let root = fixture.root().as_os_str().to_owned();
    let missing = fixture.out("missing").into_os_string();
    let file_root = fixture.root().join("etc/passwd").into_os_string();

    let output = collector(&[os("--root"), &missing, os("--image-id"), os("x")]);
    assert_one_line_failure(&output, "no such file or directory");
    let output = collector(&[os("--root"), &file_root, os("--image-id"), os("x")]);
    assert_one_line_failure(&output, "not a directory");
    for bad_id in ["a/b", "", "..", "has space"] {
        let output = collector(&[os("--root"), &root, os("--image-id"), os(bad_id)]);
        assert_one_line_failure(&output, "--image-id");
    }
    let output = collector(&[
        os("--root"),
        &root,
        os("--image-id"),
        os("x"),
        os("--exclude"),
        os("rel"),
    ]);
    assert_one_line_failure(&output, "--exclude");

    // Unwritable outputs: a missing directory, a directory, a read-only directory.
    let readonly = fixture.out("ro");
    fs::create_dir(&readonly).unwrap();
    chmod(&readonly, 0o555);
    let targets = [
        fixture.out("no/such/dir/m.json"),
        fixture.out("ro"),
        readonly.join("m.json"),
    ];
    for target in &targets {
        let output = Command::new("setpriv")
            .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", BIN])
            .args([
                os("--root"),
                &root,
                os("--image-id"),
                os("x"),
                os("--output"),
            ])
            .arg(target)
            .output()
            .unwrap();
        assert_one_line_failure(&output, "cannot write --output");
    }
    assert_eq!(
        fs::read_dir(&readonly).unwrap().count(),
        0,
        "nothing left behind"
    );
}

#[test]
fn a_full_disk_keeps_the_previous_manifest_and_leaves_no_temp_file() {
    let fixture = Fixture::new(false);
    let small = fixture.out("small");
    fs::create_dir(&small).unwrap();
    // A one-page tmpfs, filled by the previous manifest in a private mount namespace: the manifest does not fit.
    let script = format!(
        "mount -t tmpfs -o size=4k none '{small}' && echo previous > '{small}/keep.json' && \
         '{BIN}' --root '{root}' --image-id x -q -o '{small}/keep.json'; echo \"rc=$?\"; \
         cat '{small}/keep.json'; ls -a '{small}'",
        small = small.display(),
        root = fixture.root().display(),
    );
    let output = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.contains("rc=2"), "{stdout} {stderr}");
    assert!(stderr.contains("no space left on device"), "{stderr}");
    assert_eq!(
        stdout.lines().skip(1).collect::<Vec<_>>(),
        ["previous", ".", "..", "keep.json"],
        "{stdout}"
    );
}

#[test]
fn help_and_version_answer() {
    for flag in ["--help", "--version"] {
        let output = collector(&[os(flag)]);
        assert_eq!(output.status.code(), Some(0), "{flag}");
    }
    let help = String::from_utf8(collector(&[os("--help")]).stdout).unwrap();
    for needle in [
        "--root",
        "--image-id",
        "--output",
        "--exclude",
        "Exit status",
        "/var/log",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn progress_bar_only_on_a_terminal() {
    let fixture = Fixture::new(false);
    // `script` runs the collector on a pseudo-terminal and copies what it draws.
    let command = format!(
        "'{BIN}' --root '{}' --image-id tty -o '{}'",
        fixture.root().display(),
        fixture.out("tty.json").display()
    );
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let drawn = String::from_utf8_lossy(&output.stdout);
    // The bar's message ("N entries, X MB, R MB/s, E errors"), not the summary's.
    assert!(
        drawn.contains(" MB, ") && drawn.contains(" errors"),
        "{drawn}"
    );
    assert!(
        drawn.contains('\u{1b}'),
        "no terminal control sequences: {drawn}"
    );
    // Without a terminal: only the summary line (manifest_goes_to_stdout_by_default).
}

#[test]
fn paths_beyond_path_max_are_errors_not_a_failed_scan() {
    let fixture = Fixture::new(false);
    // 20 levels of 250-byte names, built with relative operations (PATH_MAX is 4096).
    let name = "d".repeat(250);
    let script = format!(
        "import os\nos.chdir({root:?})\nfor _ in range(20):\n    os.mkdir({name:?})\n    os.chdir({name:?})\nopen('leaf', 'w').write('x')\n",
        root = fixture.root().display().to_string(),
    );
    sh(Command::new("python3").args(["-c", &script]));
    let (output, baseline) = scan_to_file(&fixture, &[]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(!baseline.errors.is_empty());
    assert!(baseline
        .entries
        .iter()
        .all(|entry| entry.path.len() <= 4096));
    assert!(has(&baseline, format!("/{name}").as_bytes()));
    assert!(has(&baseline, b"/etc/passwd"));
}

#[test]
fn the_baseline_carries_the_policy_and_its_ignored_paths_are_not_scanned() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    write(&root.join("etc/hostname"), b"golden\n");
    write(&root.join("var/lib/cloud/instance/boot-finished"), b"1\n");
    write(&root.join("var/log/dpkg.log"), b"install\n");
    write(&root.join("var/log/syslog"), b"boot\n");
    let out = dir.path().join("b.json");
    let run = |extra: &[&str]| {
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("--root"),
            root.as_os_str(),
            OsStr::new("--image-id"),
            OsStr::new("img"),
            OsStr::new("-o"),
            out.as_os_str(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        collector(&args)
    };

    // Default: the built-in cloud policy, embedded and applied while scanning.
    let default = run(&[]);
    assert_eq!(default.status.code(), Some(0), "{default:?}");
    let baseline = Baseline::from_json_slice(&fs::read(&out).unwrap()).unwrap();
    let policy = baseline.policy.expect("the default policy is embedded");
    assert_eq!(policy, integrity_common::Policy::cloud_default());
    let paths: Vec<&[u8]> = baseline.entries.iter().map(|e| &*e.path).collect();
    assert!(paths.contains(&&b"/var/lib/cloud"[..]));
    assert!(!paths.contains(&&b"/var/lib/cloud/instance"[..]));
    assert!(
        paths.contains(&&b"/var/log/dpkg.log"[..]),
        "a growing rule reaches into /var/log"
    );
    assert!(!paths.contains(&&b"/var/log/syslog"[..]));

    // --no-policy: none embedded, only the exclusions apply.
    assert_eq!(run(&["--no-policy"]).status.code(), Some(0));
    let bare = Baseline::from_json_slice(&fs::read(&out).unwrap()).unwrap();
    assert!(bare.policy.is_none());
    assert!(!String::from_utf8(fs::read(&out).unwrap())
        .unwrap()
        .contains("\"policy\""));
    assert!(bare
        .entries
        .iter()
        .any(|e| &*e.path == b"/var/lib/cloud/instance/boot-finished"));

    // --policy FILE, and clear errors for a bad one (nothing written).
    let policy_file = dir.path().join("p.toml");
    fs::write(
        &policy_file,
        "[[rule]]\nname = \"no etc\"\npaths = [\"/etc/**\"]\nignore = true\n",
    )
    .unwrap();
    assert_eq!(
        run(&["--policy", policy_file.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    let custom = Baseline::from_json_slice(&fs::read(&out).unwrap()).unwrap();
    assert_eq!(
        custom.policy.unwrap().rules()[0].name.as_deref(),
        Some("no etc")
    );
    assert!(!custom.entries.iter().any(|e| &*e.path == b"/etc/hostname"));
    fs::remove_file(&out).unwrap();
    fs::write(&policy_file, "[[rule]]\npaths = [\"/etc/\"]\n").unwrap();
    let bad = run(&["--policy", policy_file.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("p.toml: rule 1: path \"/etc/\""),
        "{stderr}"
    );
    assert!(!out.exists());
    let both = run(&["--policy", "x.toml", "--no-policy"]);
    assert_eq!(both.status.code(), Some(2));

    // The built-in policy, printable, is what gets embedded.
    let printed = collector(&[OsStr::new("--print-default-policy")]);
    assert_eq!(printed.status.code(), Some(0));
    let text = String::from_utf8(printed.stdout).unwrap();
    assert_eq!(
        integrity_common::Policy::from_toml_str(&text).unwrap(),
        policy
    );
    assert!(text.contains("# --- Per-instance identity"));
}
