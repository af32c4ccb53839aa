//! What `incremental.rs` and `watch.rs` share (DESIGN §14): a tree with its baseline
//! and state directory, the agent run once (its JSON report parsed), a private mount
//! namespace, and the clock games an attacker plays with a file's times.
#![allow(dead_code)]

use serde_json::Value;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub const AGENT: &str = env!("CARGO_BIN_EXE_integrity-agent");

/// Every file of a tree gets this mtime before its baseline is made, so any two files
/// of one size can stand in for each other as far as size and mtime go.
pub const FIXED_MTIME: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

pub fn require_root() {
    let uid = std::os::unix::fs::MetadataExt::uid(&fs::metadata("/proc/self").unwrap());
    assert_eq!(uid, 0, "these tests need root (chown, mounts, setpriv)");
}

/// Polls `f` until it gives a value; fails after `timeout`.
pub fn poll<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out ({timeout:?}) waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// (anomaly kind, path, changed fields sorted).
pub type Found = (String, String, Vec<String>);

pub fn found(kind: &str, path: &str, changed: &[&str]) -> Found {
    let mut changed: Vec<String> = changed.iter().map(|field| field.to_string()).collect();
    changed.sort();
    (kind.into(), path.into(), changed)
}

pub fn parse_found(line: &Value) -> Option<Found> {
    let kind = line.get("anomaly")?.as_str()?;
    let path = line.get("path")?.as_str()?;
    let mut changed: Vec<String> = line["changed"]
        .as_array()
        .map(|fields| {
            fields
                .iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    changed.sort();
    Some((kind.into(), path.into(), changed))
}

/// The exit status a one-shot check owes for `expected`.
pub fn bits(expected: &[Found]) -> i32 {
    expected.iter().fold(0, |bits, (kind, _, _)| {
        bits | match kind.as_str() {
            "added" => 1,
            "deleted" => 2,
            _ => 4,
        }
    })
}

/// An RFC 3339 UTC timestamp (`Z` or `+00:00`).
pub fn rfc3339(text: &str) -> SystemTime {
    let normal = match text.strip_suffix("+00:00") {
        Some(head) => format!("{head}Z"),
        None => text.to_owned(),
    };
    humantime::parse_rfc3339(&normal)
        .unwrap_or_else(|e| panic!("{text:?} is not an RFC 3339 UTC timestamp: {e}"))
}

pub fn content(i: usize) -> Vec<u8> {
    format!("file {i} {}\n", "x".repeat(i % 97)).into_bytes()
}

/// `count` regular files of varied sizes in 48 directories under `root`, each with
/// mtime [`FIXED_MTIME`]; their paths (with a leading `/`) in creation order.
pub fn populate(root: &Path, count: usize) -> Vec<String> {
    fs::create_dir_all(root).unwrap();
    let fixed = SystemTime::UNIX_EPOCH + Duration::from_secs(FIXED_MTIME);
    let mut names = Vec::with_capacity(count);
    for i in 0..count {
        let rel = format!("/d{:02}/s{}/f{i:05}", i % 16, i % 3);
        let path = root.join(&rel[1..]);
        if i < 48 {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
        }
        fs::write(&path, content(i)).unwrap();
        set_times(&path, fixed, fixed);
        names.push(rel);
    }
    names
}

/// (atime, mtime) of `path` (not following a symlink).
pub fn times(path: &Path) -> (SystemTime, SystemTime) {
    let meta = fs::symlink_metadata(path).unwrap();
    (meta.accessed().unwrap(), meta.modified().unwrap())
}

pub fn set_times(path: &Path, atime: SystemTime, mtime: SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_times(fs::FileTimes::new().set_accessed(atime).set_modified(mtime))
        .unwrap();
}

/// Writes `bytes` over the start of `path` (same size, same inode), then puts its
/// atime and mtime back (`touch -r`): only the ctime tells.
pub fn rewrite_keeping_times(path: &Path, bytes: &[u8]) {
    let (atime, mtime) = times(path);
    let size = fs::metadata(path).unwrap().len();
    assert!(
        bytes.len() as u64 <= size,
        "{} keeps its size",
        path.display()
    );
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
    set_times(path, atime, mtime);
}

/// Flips the first byte's case (same size, times kept); returns the old content.
pub fn tamper(path: &Path) -> Vec<u8> {
    let old = fs::read(path).unwrap();
    let mut new = old.clone();
    new[0] ^= 0x20;
    rewrite_keeping_times(path, &new);
    old
}

/// Writes at `at` a new inode standing in for `like`: same size and times, first byte
/// `first`.
pub fn impostor(like: &Path, at: &Path, first: u8) {
    let mut bytes = fs::read(like).unwrap();
    bytes[0] = first;
    fs::write(at, &bytes).unwrap();
    let (atime, mtime) = times(like);
    set_times(at, atime, mtime);
}

/// A tree of regular files, its baseline (image `img`) and a state directory (not made:
/// the agent makes it).
pub struct Tree {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub baseline: PathBuf,
    pub state: PathBuf,
    /// The regular files (`/d00/s0/f00000`…), in creation order.
    pub files: Vec<String>,
}

impl Tree {
    pub fn new(files: usize) -> Tree {
        Tree::with(files, |_| {})
    }

    /// A tree with `files` files, `extra` applied to the root before the baseline.
    pub fn with(files: usize, extra: impl FnOnce(&Path)) -> Tree {
        let dir = tempfile::tempdir().unwrap();
        // Other users may pass (the unprivileged attack runs as uid 1000).
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("root");
        let files = populate(&root, files);
        extra(&root);
        let baseline = dir.path().join("baseline.json");
        fs::write(&baseline, crate::support::baseline(&root, "img")).unwrap();
        // A file changed in the same clock second as the check that read it cannot be
        // told from one changed just after: an agent may read it again next time
        // (git's "racily clean" rule). Let the tree's ctimes age past that, so exact
        // counts of files re-hashed can be asserted.
        let settled = SystemTime::now() + Duration::from_millis(2100);
        poll(Duration::from_secs(5), "the tree to settle", || {
            (SystemTime::now() >= settled).then_some(())
        });
        Tree {
            state: dir.path().join("state"),
            root,
            baseline,
            files,
            dir,
        }
    }

    /// `rel` (with its leading `/`) under the root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    pub fn verified(&self) -> PathBuf {
        self.state.join("verified")
    }

    /// The agent, offline, on this tree and state, with `--format format` and `extra`.
    pub fn agent_as(&self, format: &str, extra: &[&str]) -> Command {
        agent_on(&self.baseline, &self.root, &self.state, format, extra)
    }

    pub fn agent(&self, extra: &[&str]) -> Command {
        self.agent_as("json", extra)
    }

    /// One JSON check.
    pub fn check(&self, extra: &[&str]) -> Check {
        Check::run(&mut self.agent(extra))
    }

    /// The agent started in the background, its output discarded.
    pub fn spawn(&self, extra: &[&str]) -> KillOnDrop {
        let mut command = self.agent(extra);
        command.stdout(Stdio::null()).stderr(Stdio::null());
        KillOnDrop(command.spawn().unwrap())
    }

    /// Asserts the state file is 0600 or stricter, its directory writable by its owner
    /// only.
    pub fn assert_private(&self) {
        let mode = fs::metadata(self.verified()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o177, 0, "{} is {mode:o}", self.verified().display());
        let dir = fs::metadata(&self.state).unwrap().permissions().mode();
        assert_eq!(dir & 0o022, 0, "state directory is {dir:o}");
    }
}

/// The agent, offline: `--baseline baseline --root root --state-dir state`.
pub fn agent_on(
    baseline: &Path,
    root: &Path,
    state: &Path,
    format: &str,
    extra: &[&str],
) -> Command {
    let mut command = Command::new(AGENT);
    command
        .arg("--baseline")
        .arg(baseline)
        .arg("--root")
        .arg(root)
        .arg("--state-dir")
        .arg(state)
        .args(["--format", format])
        .args(extra)
        .stdin(Stdio::null())
        .env_remove("IMAGE_ID")
        .env_remove("BULLETPROOF_TOKEN")
        .env("NO_COLOR", "1");
    command
}

/// One JSON check of `root` against `baseline` with the state in `state`.
pub fn check_on(baseline: &Path, root: &Path, state: &Path) -> Check {
    Check::run(&mut agent_on(baseline, root, state, "json", &[]))
}

/// `command` run by `sh` under umask 000.
pub fn with_umask_000(command: &Command) -> Command {
    let mut sh = Command::new("sh");
    sh.args(["-c", "umask 000; exec \"$0\" \"$@\""])
        .arg(command.get_program())
        .args(command.get_args())
        .stdin(Stdio::null());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => sh.env(key, value),
            None => sh.env_remove(key),
        };
    }
    sh
}

/// A finished one-shot check.
pub struct Check {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Check {
    pub fn run(command: &mut Command) -> Check {
        let output = command.output().unwrap();
        Check {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs `command` (its output in files under `dir`); None when it had not ended
    /// after `timeout` (it is killed then).
    pub fn run_within(command: &mut Command, dir: &Path, timeout: Duration) -> Option<Check> {
        let (out, err) = (dir.join("run.out"), dir.join("run.err"));
        command.stdout(fs::File::create(&out).unwrap());
        let mut child = KillOnDrop(
            command
                .stderr(fs::File::create(&err).unwrap())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.0.try_wait().unwrap() {
                Some(status) => break status,
                None if Instant::now() > deadline => return None,
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let read = |path: &Path| String::from_utf8_lossy(&fs::read(path).unwrap()).into_owned();
        Some(Check {
            code: status.code(),
            stdout: read(&out),
            stderr: read(&err),
        })
    }

    /// Exit code, mode (`-` without a summary) and number of anomalies, never failing.
    pub fn brief(&self) -> (Option<i32>, String, usize) {
        let lines: Vec<Value> = self
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let mode = lines
            .last()
            .and_then(|l| l["check"]["mode"].as_str())
            .unwrap_or("-");
        let found = lines.iter().filter(|l| l.get("anomaly").is_some()).count();
        (self.code, mode.to_owned(), found)
    }

    pub fn context(&self) -> String {
        format!(
            "exit {:?}\n--- stdout (last 3000 bytes)\n{}\n--- stderr\n{}",
            self.code,
            &self.stdout[self.stdout.len().saturating_sub(3000)..],
            self.stderr
        )
    }

    pub fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|_| panic!("not JSON: {line}\n{}", self.context()))
            })
            .collect()
    }

    /// The anomaly lines, sorted.
    pub fn anomalies(&self) -> Vec<Found> {
        let mut found: Vec<Found> = self.lines().iter().filter_map(parse_found).collect();
        found.sort();
        found
    }

    /// The summary line's `check` object.
    pub fn check(&self) -> Value {
        let last = self
            .lines()
            .pop()
            .unwrap_or_else(|| panic!("{}", self.context()));
        assert!(
            last.get("summary").is_some(),
            "last line is the summary\n{}",
            self.context()
        );
        assert!(
            last.get("check").is_some_and(Value::is_object),
            "no check object\n{}",
            self.context()
        );
        last["check"].clone()
    }

    pub fn mode(&self) -> String {
        self.check()["mode"].as_str().unwrap_or("?").to_owned()
    }

    pub fn rehashed(&self) -> u64 {
        self.check()["rehashed"]
            .as_u64()
            .unwrap_or_else(|| panic!("rehashed is a count\n{}", self.context()))
    }

    pub fn last_full(&self) -> SystemTime {
        rfc3339(self.check()["last_full"].as_str().unwrap_or("missing"))
    }

    /// Asserts no panic, the `mode`, exactly `expected` (any order) and the exit bits.
    pub fn assert(&self, mode: &str, expected: &[Found]) {
        self.assert_in("", mode, expected);
    }

    /// [`Check::assert`], the failure messages starting with `case`.
    pub fn assert_in(&self, case: &str, mode: &str, expected: &[Found]) {
        let context = format!("{case}\n{}", self.context());
        assert!(!self.stderr.contains("panicked"), "{context}");
        assert_eq!(self.mode(), mode, "kind of check: {context}");
        let mut expected = expected.to_vec();
        expected.sort();
        assert_eq!(self.anomalies(), expected, "{context}");
        assert_eq!(self.code, Some(bits(&expected)), "exit bits: {context}");
    }

    pub fn assert_rehashed_in(&self, counts: std::ops::RangeInclusive<u64>) {
        let rehashed = self.rehashed();
        let context = self.context();
        assert!(
            counts.contains(&rehashed),
            "{rehashed} files re-hashed: {context}"
        );
    }

    pub fn assert_rehashed(&self, count: u64) {
        assert_eq!(
            self.rehashed(),
            count,
            "files re-hashed: {}",
            self.context()
        );
    }

    /// Asserts a usage error (exit 14) naming `flag`, without a panic.
    pub fn assert_usage_error(&self, flag: &str) {
        assert_eq!(self.code, Some(14), "{}", self.context());
        assert!(
            self.stderr.contains(flag),
            "name {flag}: {}",
            self.context()
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.context());
    }
}

/// A process killed (SIGKILL) and reaped when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private mount namespace, held by a `sleep` that is killed when this is dropped
/// (with it go every mount made in there: nothing is left behind).
pub struct Namespace {
    holder: KillOnDrop,
}

impl Namespace {
    pub fn new() -> Namespace {
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let holder = KillOnDrop(child);
        let comm = format!("/proc/{}/comm", holder.0.id());
        // Once `sleep` runs, unshare has made the namespace and its mounts private.
        poll(Duration::from_secs(10), "the namespace", || {
            (fs::read_to_string(&comm).ok()? == "sleep\n").then_some(())
        });
        Namespace { holder }
    }

    pub fn pid(&self) -> u32 {
        self.holder.0.id()
    }

    /// `path` as seen from inside, reached from outside.
    pub fn path(&self, path: &Path) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid())).join(path.strip_prefix("/").unwrap())
    }

    /// `program` run inside.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg("-t")
            .arg(self.pid().to_string())
            .args(["-m", "--"])
            .arg(program)
            .stdin(Stdio::null());
        command
    }

    pub fn run(&self, program: &str, args: &[&str]) {
        must(self.command(program).args(args));
    }
}

/// `check: MODE, N files re-hashed[, last full check TS]` from a text report (an
/// explanation in parentheses may follow): the mode, N and TS.
pub fn text_check_line(stdout: &str) -> (String, u64, Option<SystemTime>) {
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("check: "))
        .collect();
    assert_eq!(lines.len(), 1, "one check line:\n{stdout}");
    let line = lines[0];
    let body = line.find(" (").map_or(line, |end| &line[..end]);
    let parts: Vec<&str> = body["check: ".len()..].split(", ").collect();
    assert!(parts.len() <= 3, "{line}");
    let (count, rest) = parts.get(1).and_then(|p| p.split_once(' ')).expect(line);
    let count: u64 = count.parse().expect(line);
    let wording = rest == "files re-hashed" || (count == 1 && rest == "file re-hashed");
    assert!(
        wording,
        "{line:?}: the contract's wording is `N files re-hashed`"
    );
    let when = parts
        .get(2)
        .map(|p| rfc3339(p.strip_prefix("last full check ").expect(line)));
    (parts[0].to_owned(), count, when)
}

/// Waits until the agent `pid` has `path` open and has read past 32 MiB of it (or has
/// exited); false when it never was seen reading.
pub fn wait_mid_read(pid: u32, path: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        for fd in fds.flatten() {
            if fs::read_link(fd.path()).is_ok_and(|target| target == path) {
                let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
                let pos = fs::read_to_string(info).ok().and_then(|text| {
                    text.lines().find_map(|l| {
                        l.strip_prefix("pos:")
                            .map(|p| p.trim().parse::<u64>().unwrap_or(0))
                    })
                });
                if pos.is_some_and(|pos| pos > 32 << 20) {
                    return true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// Runs `command` and asserts it succeeded.
pub fn must(command: &mut Command) {
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{command:?}: {stderr}");
}

/// `chattr +i` on a path, undone when dropped.
pub struct Immutable<'a>(pub &'a Path);

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(self.0).status();
    }
}
