//! `integrity-collector` against a hostile tree (ARCHITECTURE.md: Scanner: "nothing is followed, even
//! under a race"; devices, fifos and sockets recorded, never opened; every problem a
//! per-path error, never a hang, a crash or a silent skip).
//!
//! The attacker is the unprivileged user (uid 65534) owning the scanned tree: a racer
//! thread that drops to that user's credentials (per-thread `setresuid`, exactly what
//! `setpriv --reuid=65534 --regid=65534 --clear-groups` gives a process) and swaps
//! entries with `renameat2(RENAME_EXCHANGE)` in a loop, bounded by a deadline, while the
//! real binary scans as root. Races may or may not hit; every assertion holds on any
//! interleaving for a correct walker.
//!
//! The fixture needs root (device nodes, ownership, setpriv); as another user these
//! tests fail loudly instead of skipping.

use integrity_common::{Baseline, EntryKind};
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Racers and bounded runs, shared with `bulletproofctl`'s hostile-host tests.
#[path = "../../../tests-support/racer.rs"]
mod racer;
use racer::{exchange, run_bounded, Racer, NOBODY};

const BIN: &str = env!("CARGO_BIN_EXE_integrity-collector");
/// No single scan of these small trees may take longer than this (a hang is a failure).
const SCAN_DEADLINE: Duration = Duration::from_secs(20);

fn require_root() {
    let uid = fs::metadata("/proc/self").expect("procfs").uid();
    assert_eq!(
        uid, 0,
        "these tests build device nodes and chown: run them as root"
    );
}

fn sh(command: &mut Command) {
    let status = command.status().expect("spawn helper command");
    assert!(status.success(), "{command:?} failed: {status}");
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn chown_nobody(path: &Path) {
    std::os::unix::fs::lchown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

/// A temporary directory traversable by the unprivileged user.
fn workdir() -> tempfile::TempDir {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    dir
}

/// Runs `command` (bounded by `limit`); its exit code and stdout+stderr.
fn run_and_say(command: Command, limit: Duration) -> (i32, String) {
    let output = run_bounded(command, limit);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

fn collector(root: &Path, output: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("--root")
        .arg(root)
        .args(["--image-id", "x", "--no-policy", "--quiet", "--output"])
        .arg(output)
        .env_remove("IMAGE_ID");
    command
}

/// Scans `root` as root (bounded); the manifest it wrote, which must validate.
fn scan(root: &Path, work: &Path) -> (i32, String, Baseline) {
    let output = work.join("manifest.json");
    let _ = fs::remove_file(&output);
    let (code, text) = run_and_say(collector(root, &output), SCAN_DEADLINE);
    assert!(
        code == 0 || code == 1,
        "the scan failed (exit {code}): {text}"
    );
    let bytes = fs::read(&output).unwrap_or_else(|e| panic!("no manifest ({e}): {text}"));
    let baseline = Baseline::from_json_slice(&bytes)
        .unwrap_or_else(|e| panic!("the manifest does not validate: {e}"));
    (code, text, baseline)
}

fn mentions(bytes: &[u8], needle: &[u8]) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle)
}

/// Everything a manifest names: entry paths, symlink targets and error paths.
fn named_paths(baseline: &Baseline) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for entry in &baseline.entries {
        out.push(entry.path.to_vec());
    }
    for record in &baseline.errors {
        out.push(record.path.to_vec());
    }
    out
}

#[test]
fn a_directory_swapped_for_a_symlink_mid_scan_never_leads_outside() {
    let work = workdir();
    let tree = work.path().join("tree");
    let outside = work.path().join("outside");
    // Outside the tree, root's: what a root scan must never record.
    fs::create_dir(&outside).unwrap();
    chmod(&outside, 0o755);
    fs::write(outside.join("secret-marker"), b"outside the tree").unwrap();
    fs::create_dir(outside.join("secret-marker-dir")).unwrap();
    fs::write(outside.join("secret-marker-dir/secret-marker-2"), b"x").unwrap();
    // The tree: the unprivileged user's, a big directory `a` and a symlink `b` to the
    // outside directory.
    fs::create_dir(&tree).unwrap();
    let a = tree.join("a");
    fs::create_dir(&a).unwrap();
    for i in 0..2000 {
        fs::write(a.join(format!("file-{i:04}")), format!("content {i}\n")).unwrap();
        chown_nobody(&a.join(format!("file-{i:04}")));
    }
    fs::create_dir(a.join("nested")).unwrap();
    fs::write(a.join("nested/inner"), b"inner").unwrap();
    chown_nobody(&a.join("nested/inner"));
    chown_nobody(&a.join("nested"));
    chown_nobody(&a);
    let b = tree.join("b");
    symlink(&outside, &b).unwrap();
    chown_nobody(&b);
    chown_nobody(&tree);

    let racer = {
        let (a, b) = (a.clone(), b.clone());
        Racer::spawn(true, Duration::from_secs(15), move || exchange(&a, &b))
    };
    let started = Instant::now();
    let mut scans = 0;
    let mut leaks = Vec::new();
    while scans < 30 && started.elapsed() < Duration::from_secs(10) {
        let (_, _, baseline) = scan(&tree, work.path());
        scans += 1;
        for path in named_paths(&baseline) {
            if mentions(&path, b"secret-marker") {
                leaks.push(String::from_utf8_lossy(&path).into_owned());
            }
        }
        for entry in &baseline.entries {
            // The swapped symlink may be recorded (as a symlink), never walked into.
            if &*entry.path == b"/a" || &*entry.path == b"/b" {
                assert!(
                    matches!(entry.kind, EntryKind::Dir | EntryKind::Symlink),
                    "{entry:?}"
                );
            }
        }
    }
    let swaps = racer.finish();
    assert!(swaps > 0, "the racer never swapped (test setup broken)");
    leaks.sort();
    leaks.dedup();
    assert!(
        leaks.is_empty(),
        "a root scan of {} recorded paths from outside the tree (through a directory \
         swapped for a symlink mid-scan) in {scans} scans, {swaps} swaps: {leaks:?}",
        tree.display()
    );
}

/// The static hostile tree: a fifo without a writer, a socket, a char device, a
/// directory and a file nobody but root may read.
fn hostile_tree(work: &Path) -> PathBuf {
    let tree = work.join("hostile");
    fs::create_dir(&tree).unwrap();
    chmod(&tree, 0o755);
    fs::write(tree.join("plain"), b"plain file\n").unwrap();
    chmod(&tree.join("plain"), 0o644);
    sh(Command::new("mkfifo").arg(tree.join("fifo")));
    drop(std::os::unix::net::UnixListener::bind(tree.join("socket")).unwrap());
    // /dev/zero's numbers: opened and read, it never ends.
    sh(Command::new("mknod")
        .arg(tree.join("zero"))
        .args(["c", "1", "5"]));
    fs::create_dir(tree.join("closed")).unwrap();
    fs::write(tree.join("closed/hidden"), b"x").unwrap();
    chmod(&tree.join("closed"), 0o000);
    fs::write(tree.join("private"), b"root only").unwrap();
    chmod(&tree.join("private"), 0o000);
    tree
}

fn assert_specials_recorded(baseline: &Baseline) {
    for (path, kind) in [
        (&b"/fifo"[..], EntryKind::Fifo),
        (b"/socket", EntryKind::Socket),
        (b"/zero", EntryKind::Char),
        (b"/closed", EntryKind::Dir),
        (b"/plain", EntryKind::File),
    ] {
        let entry = baseline
            .entries
            .iter()
            .find(|e| &*e.path == path)
            .unwrap_or_else(|| panic!("{} not recorded", String::from_utf8_lossy(path)));
        assert_eq!(entry.kind, kind, "{entry:?}");
        if kind != EntryKind::File {
            assert!(entry.sha256.is_none(), "{entry:?} has content");
        }
    }
}

#[test]
fn devices_fifos_sockets_are_recorded_never_opened_and_unreadable_paths_are_errors() {
    let work = workdir();
    let tree = hostile_tree(work.path());

    // As root: everything recorded, nothing opened (a read of the fifo or the zero
    // device would hang: the deadline fails it), no errors.
    let (code, text, baseline) = scan(&tree, work.path());
    assert_eq!(code, 0, "{text}");
    assert_specials_recorded(&baseline);
    assert!(baseline.errors.is_empty(), "{:?}", baseline.errors);
    assert!(baseline
        .entries
        .iter()
        .any(|e| &*e.path == b"/closed/hidden"));

    // As the unprivileged user: the same, and each unreadable path one error entry.
    let out_dir = work.path().join("nobody-out");
    fs::create_dir(&out_dir).unwrap();
    chown_nobody(&out_dir);
    let output = out_dir.join("manifest.json");
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .arg("--root")
        .arg(&tree)
        .args(["--image-id", "x", "--no-policy", "--quiet", "--output"])
        .arg(&output)
        .env_remove("IMAGE_ID");
    let (code, text) = run_and_say(command, SCAN_DEADLINE);
    assert_eq!(code, 1, "errors make exit code 1: {text}");
    let baseline = Baseline::from_json_slice(&fs::read(&output).unwrap()).unwrap();
    assert_specials_recorded(&baseline);
    let errors: Vec<(String, String)> = baseline
        .errors
        .iter()
        .map(|r| {
            (
                String::from_utf8_lossy(&r.path).into_owned(),
                r.error.clone(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            ("/closed".to_owned(), "permission denied".to_owned()),
            ("/private".to_owned(), "permission denied".to_owned()),
        ],
        "{text}"
    );
    assert!(text.contains("\"/closed\": permission denied"), "{text}");
}

#[test]
fn a_fifo_or_device_swapped_in_for_a_file_mid_scan_is_an_error_not_a_hang() {
    let work = workdir();
    let tree = work.path().join("tree");
    fs::create_dir(&tree).unwrap();
    // Many files so the scan takes a while; three regular files that the racer
    // swaps, one each, with a fifo, /dev/zero's device and a directory.
    let bulk = tree.join("bulk");
    fs::create_dir(&bulk).unwrap();
    for i in 0..1500 {
        fs::write(bulk.join(format!("f{i:04}")), format!("{i}\n")).unwrap();
    }
    let big = vec![b'z'; 5 << 20]; // its own task in the scanner
    let pairs = [
        ("file-a", "fifo-a"),
        ("file-b", "zero-b"),
        ("big-c", "fifo-c"),
        ("file-d", "dir-d"),
    ];
    for (file, _) in pairs {
        let content: &[u8] = if file.starts_with("big") {
            &big
        } else {
            b"regular\n"
        };
        fs::write(tree.join(file), content).unwrap();
        chown_nobody(&tree.join(file));
    }
    sh(Command::new("mkfifo").arg(tree.join("fifo-a")));
    sh(Command::new("mknod")
        .arg(tree.join("zero-b"))
        .args(["c", "1", "5"]));
    sh(Command::new("mkfifo").arg(tree.join("fifo-c")));
    fs::create_dir(tree.join("dir-d")).unwrap();
    for (_, other) in pairs {
        chown_nobody(&tree.join(other));
    }
    chown_nobody(&tree);
    chmod(&tree, 0o755);

    let racer = {
        let tree = tree.clone();
        let mut i = 0usize;
        Racer::spawn(true, Duration::from_secs(15), move || {
            let (a, b) = pairs[i % pairs.len()];
            i += 1;
            exchange(&tree.join(a), &tree.join(b))
        })
    };
    let started = Instant::now();
    let mut scans = 0;
    while scans < 30 && started.elapsed() < Duration::from_secs(10) {
        let (code, text, baseline) = scan(&tree, work.path());
        scans += 1;
        // No silent skip, no duplicate: each swapped name is an entry or an error.
        for (a, b) in pairs {
            for name in [a, b] {
                let path = format!("/{name}");
                let entries = baseline
                    .entries
                    .iter()
                    .filter(|e| *e.path == *path.as_bytes())
                    .count();
                let errors = baseline
                    .errors
                    .iter()
                    .filter(|r| *r.path == *path.as_bytes())
                    .count();
                // (A directory can be both: recorded, then unreadable as listed.)
                assert!(
                    entries <= 1 && errors <= 1 && entries + errors >= 1,
                    "{path}: {entries} entries and {errors} errors (scan {scans}): {text}"
                );
                if errors == 1 {
                    assert_eq!(code, 1, "an error entry but exit 0: {text}");
                }
            }
        }
        // A device or fifo recorded as a regular file (opened and read) is a lie.
        for entry in &baseline.entries {
            if entry.kind == EntryKind::File {
                let size = entry.size.unwrap_or(0);
                assert!(
                    size == 8 || size == big.len() as u64 || entry.path.starts_with(b"/bulk/"),
                    "{entry:?}"
                );
            }
        }
    }
    let swaps = racer.finish();
    assert!(swaps > 0, "the racer never swapped (test setup broken)");
}
