//! `integrity-agent --watch` (DESIGN §14, issue 21): it stays running, says on stderr
//! that it is watching (and with which backend), reports each change within 1 s in
//! the one-shot report's line formats (`"check":{"mode":"watch",…}`), follows new
//! directories, loses nothing when the kernel's queue overflows, keeps an incremental
//! check every `--interval` as a safety net, and exits 0 within 2 s of SIGTERM.
//! Latencies are printed (`--nocapture`).

#[path = "support/incremental.rs"]
mod inc;
mod support;

use inc::{found, parse_found, poll, require_root, tamper, Found, KillOnDrop, Tree};
use serde_json::Value;
use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The 20,000-file burst runs alone: the latencies of the others are measured on a
/// quiet machine.
static SERIAL: RwLock<()> = RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    SERIAL
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits for a watch report made after `since` that has `want`; asserts it came
/// within 1 s in a `watch` report, prints the latency.
fn detected(watch: &mut Watch, since: Instant, want: &Found) -> Duration {
    let what = format!("{want:?}");
    let i = watch.wait(since, Duration::from_secs(10), &what, |b| {
        b.anomalies.contains(want)
    });
    let block = &watch.blocks[i];
    let latency = block.at - since;
    eprintln!(
        "latency {:>7.1} ms  {} {} ({} report)",
        latency.as_secs_f64() * 1e3,
        want.0,
        want.1,
        block.mode()
    );
    assert_eq!(block.mode(), "watch", "{what}: {}", block.summary);
    assert!(
        latency <= Duration::from_secs(1),
        "{what} reported after {latency:?}"
    );
    latency
}

fn stop(watch: &mut Watch) {
    let (status, took) = watch.stop();
    eprintln!("SIGTERM: exited {status:?} after {took:?}");
    let status =
        status.unwrap_or_else(|| panic!("still running 10 s after SIGTERM\n{}", watch.stderr()));
    assert_eq!(status.code(), Some(0), "{}", watch.stderr());
    assert!(took <= Duration::from_secs(2), "SIGTERM took {took:?}");
    assert!(!watch.stderr().contains("panicked"), "{}", watch.stderr());
}

#[test]
fn each_change_is_reported_within_a_second_and_sigterm_stops_it() {
    require_root();
    let _serial = shared();
    let tree = Tree::new(300);
    let mut watch = Watch::start(&tree, &[]);
    eprintln!("ready: {}", watch.ready);
    assert!(
        watch.ready.contains("fanotify") || watch.ready.contains("inotify"),
        "name the backend: {}",
        watch.ready
    );
    let f = |i: usize| tree.files[i].clone();
    let path = |i: usize| tree.path(&tree.files[i]);

    let t = Instant::now();
    tamper(&path(10));
    detected(&mut watch, t, &found("modified", &f(10), &["sha256"]));

    let t = Instant::now();
    fs::set_permissions(path(11), fs::Permissions::from_mode(0o4755)).unwrap();
    detected(&mut watch, t, &found("metadata_changed", &f(11), &["mode"]));

    let t = Instant::now();
    std::os::unix::fs::chown(path(12), Some(1000), Some(1000)).unwrap();
    detected(
        &mut watch,
        t,
        &found("metadata_changed", &f(12), &["uid", "gid"]),
    );

    let t = Instant::now();
    fs::write(tree.path("/d03/s0/dropped"), "#!/bin/sh\n").unwrap();
    detected(&mut watch, t, &found("added", "/d03/s0/dropped", &[]));

    let t = Instant::now();
    fs::remove_file(path(13)).unwrap();
    detected(&mut watch, t, &found("deleted", &f(13), &[]));

    // Renamed over from outside the tree: same size, same mtime.
    let evil = tree.dir.path().join("evil");
    let mut bytes = fs::read(path(14)).unwrap();
    bytes[0] = b'E';
    fs::write(&evil, &bytes).unwrap();
    let (atime, mtime) = inc::times(&path(14));
    inc::set_times(&evil, atime, mtime);
    let t = Instant::now();
    fs::rename(&evil, path(14)).unwrap();
    detected(&mut watch, t, &found("modified", &f(14), &["sha256"]));

    // Made a hard link to another inode of the same size and mtime.
    let other = tree.dir.path().join("other");
    let mut bytes = fs::read(path(15)).unwrap();
    bytes[0] = b'H';
    fs::write(&other, &bytes).unwrap();
    inc::set_times(&other, atime, mtime);
    let t = Instant::now();
    fs::remove_file(path(15)).unwrap();
    fs::hard_link(&other, path(15)).unwrap();
    detected(&mut watch, t, &found("modified", &f(15), &["sha256"]));

    let t = Instant::now();
    fs::remove_file(path(16)).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", path(16)).unwrap();
    detected(&mut watch, t, &found("type_changed", &f(16), &["kind"]));

    stop(&mut watch);
}

#[test]
fn new_directories_are_followed() {
    require_root();
    let _serial = shared();
    let tree = Tree::new(100);
    let mut watch = Watch::start(&tree, &[]);
    // The file is made at once, before any watch on the new directories can exist.
    let t = Instant::now();
    fs::create_dir_all(tree.path("/a/b/c")).unwrap();
    fs::write(tree.path("/a/b/c/f"), "planted\n").unwrap();
    detected(&mut watch, t, &found("added", "/a/b/c/f", &[]));
    let mut dirs: HashSet<&str> = ["/a", "/a/b", "/a/b/c"].into();
    watch.wait(t, Duration::from_secs(2), "the new directories", |block| {
        for (kind, path, _) in &block.anomalies {
            if kind == "added" {
                dirs.remove(path.as_str());
            }
        }
        dirs.is_empty()
    });
    // Later, in the new directories and deeper: they are watched now.
    let t = Instant::now();
    fs::write(tree.path("/a/b/c/g"), "later\n").unwrap();
    detected(&mut watch, t, &found("added", "/a/b/c/g", &[]));
    let t = Instant::now();
    fs::create_dir_all(tree.path("/a/b/c/d/e")).unwrap();
    fs::write(tree.path("/a/b/c/d/e/h"), "deeper\n").unwrap();
    detected(&mut watch, t, &found("added", "/a/b/c/d/e/h", &[]));
    stop(&mut watch);
}

#[test]
fn a_reverted_change_is_not_left_reported_as_drift() {
    require_root();
    let _serial = shared();
    let tree = Tree::new(100);
    let mut watch = Watch::start(&tree, &[]);
    let victim = tree.files[30].clone();
    let gone = |block: &Block| !block.anomalies.iter().any(|(_, path, _)| *path == victim);
    let t = Instant::now();
    let old = tamper(&tree.path(&victim));
    detected(&mut watch, t, &found("modified", &victim, &["sha256"]));

    let t = Instant::now();
    inc::rewrite_keeping_times(&tree.path(&victim), &old);
    let i = watch.wait(t, Duration::from_secs(10), "the revert", |b| {
        gone(b) && b.drift() == 0
    });
    eprintln!("revert reported clean in {:?}", watch.blocks[i].at - t);

    // A later change: its report (the latest) still does not list the reverted file.
    let t = Instant::now();
    fs::write(tree.path("/d00/s0/marker"), "m\n").unwrap();
    let marker = found("added", "/d00/s0/marker", &[]);
    detected(&mut watch, t, &marker);
    let t = Instant::now();
    fs::remove_file(tree.path("/d00/s0/marker")).unwrap();
    watch.wait(t, Duration::from_secs(10), "the marker gone", |b| {
        !b.anomalies.contains(&marker)
    });
    watch.drain();
    let latest = watch.blocks.last().unwrap();
    assert!(
        gone(latest),
        "the reverted file is still reported: {:?}",
        latest.anomalies
    );
    assert_eq!(latest.drift(), 0, "latest summary: {}", latest.summary);
    stop(&mut watch);
}

#[test]
fn the_interval_check_catches_what_the_watcher_cannot_see() {
    require_root();
    let _serial = shared();
    // A hard link outside the watched tree: a write through it names no watched
    // directory (inotify does not see it); the ctime of the inode still moves.
    let tree = Tree::with(50, |root| {
        fs::hard_link(
            root.join("d10/s1/f00010"),
            root.parent().unwrap().join("outside"),
        )
        .unwrap();
    });
    let mut watch = Watch::start(&tree, &["--interval", "2"]);
    let t = Instant::now();
    tamper(&tree.dir.path().join("outside"));
    let want = found("modified", "/d10/s1/f00010", &["sha256"]);
    let i = watch.wait(
        t,
        Duration::from_secs(8),
        "the change through the outside link",
        |b| b.anomalies.contains(&want),
    );
    let block = &watch.blocks[i];
    eprintln!(
        "outside-link write reported after {:?} ({} report)",
        block.at - t,
        block.mode()
    );
    assert!(
        block.at - t <= Duration::from_millis(2200 + 1000),
        "an --interval 2 check is due within 2.2 s"
    );
    stop(&mut watch);
}

#[test]
fn directories_moved_in_and_renamed_are_followed() {
    require_root();
    let _serial = shared();
    let tree = Tree::new(100);
    let mut watch = Watch::start(&tree, &[]);
    // A tree made outside and moved in whole: no event names its files.
    let kit = tree.dir.path().join("kit");
    fs::create_dir_all(kit.join("x/y")).unwrap();
    fs::write(kit.join("x/y/payload"), "p\n").unwrap();
    let t = Instant::now();
    fs::rename(&kit, tree.path("/d02/kit")).unwrap();
    detected(&mut watch, t, &found("added", "/d02/kit/x/y/payload", &[]));
    let t = Instant::now();
    fs::write(tree.path("/d02/kit/x/y/later"), "l\n").unwrap();
    detected(&mut watch, t, &found("added", "/d02/kit/x/y/later", &[]));

    // A directory of the baseline renamed: its files are gone from their paths and
    // new under the other name.
    let victim = tree.files[5].clone(); // /d05/s2/f00005
    let t = Instant::now();
    fs::rename(tree.path("/d05"), tree.path("/d05x")).unwrap();
    detected(&mut watch, t, &found("deleted", &victim, &[]));
    detected(&mut watch, t, &found("added", "/d05x/s2/f00005", &[]));
    // Renamed back: nothing left of it, and a change below is reported by its path
    // (not by a stale one).
    let t = Instant::now();
    fs::rename(tree.path("/d05x"), tree.path("/d05")).unwrap();
    let gone = |b: &Block| !b.anomalies.iter().any(|(_, path, _)| path.contains("/d05"));
    watch.wait(t, Duration::from_secs(10), "/d05 back", gone);
    let t = Instant::now();
    tamper(&tree.path(&victim));
    detected(&mut watch, t, &found("modified", &victim, &["sha256"]));
    watch.drain();
    let latest = watch.blocks.last().unwrap();
    // The whole tree's drift, as in a one-shot summary: /d02/kit, kit/x, kit/x/y,
    // payload and later added; the victim modified; nothing of /d05x.
    assert_eq!(latest.drift(), 6, "latest summary: {}", latest.summary);
    stop(&mut watch);
}

#[test]
fn the_state_watch_mode_leaves_behind_is_trustworthy() {
    require_root();
    let _serial = shared();
    let tree = Tree::new(100);
    let mut watch = Watch::start(&tree, &[]);
    let (x, y) = (tree.files[40].clone(), tree.files[41].clone());
    let t = Instant::now();
    tamper(&tree.path(&x));
    detected(&mut watch, t, &found("modified", &x, &["sha256"]));
    stop(&mut watch);
    // Changed once it stopped: a one-shot check after it reports both.
    tamper(&tree.path(&y));
    let check = tree.check(&[]);
    let mode = check.mode();
    assert!(
        mode == "incremental" || mode == "full",
        "{}",
        check.context()
    );
    let expected = [&x, &y].map(|path| found("modified", path, &["sha256"]));
    check.assert_in("a one-shot check after --watch", &mode, &expected);
}

#[test]
fn a_queue_overflow_loses_no_change() {
    require_root();
    let _serial = SERIAL
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let tree = Tree::new(20);
    // The safety net an hour away: the overflow itself must lead to a check.
    let mut watch = Watch::start(&tree, &["--interval", "3600"]);
    // While it runs, then while it is stopped (SIGSTOP: the kernel's queue fills up
    // and overflows for sure).
    for (dir, stopped) in [("bulk", false), ("bulk2", true)] {
        fs::create_dir(tree.path(&format!("/{dir}"))).unwrap();
        let names: Vec<String> = (0..20_000).map(|i| format!("/{dir}/n{i:05}")).collect();
        let since = Instant::now();
        if stopped {
            watch.signal(rustix::process::Signal::STOP);
        }
        for (i, name) in names.iter().enumerate() {
            fs::write(tree.path(name), i.to_string()).unwrap();
        }
        let made = since.elapsed();
        if stopped {
            watch.signal(rustix::process::Signal::CONT);
        }
        let mut missing: HashSet<String> = names.into_iter().collect();
        let mut modes = Vec::new();
        let i = watch.wait(
            since,
            Duration::from_secs(120),
            "every file added",
            |block| {
                modes.push(block.mode().to_owned());
                for (kind, path, _) in &block.anomalies {
                    if kind == "added" {
                        missing.remove(path);
                    }
                }
                missing.is_empty()
            },
        );
        modes.dedup();
        let took = watch.blocks[i].at - since;
        let reports = watch.blocks.iter().filter(|b| b.at >= since).count();
        eprintln!(
            "/{dir} (agent stopped: {stopped}): 20000 files made in {made:?}, all reported \
             added after {took:?}, in {reports} report(s) of modes {modes:?}"
        );
    }
    // Busy or not, SIGTERM stops it.
    stop(&mut watch);
}

/// One report of a watching agent: its anomaly lines, its summary line, when it came.
pub struct Block {
    pub at: Instant,
    pub anomalies: Vec<Found>,
    pub summary: Value,
}

impl Block {
    pub fn mode(&self) -> &str {
        self.summary["check"]["mode"].as_str().unwrap_or("?")
    }

    /// The total of the summary's counts of drift.
    pub fn drift(&self) -> u64 {
        [
            "added",
            "deleted",
            "modified",
            "metadata_changed",
            "type_changed",
        ]
        .iter()
        .map(|key| self.summary["summary"][key].as_u64().unwrap_or(0))
        .sum()
    }
}

/// `integrity-agent --watch` on a tree, its stdout read as it comes.
pub struct Watch {
    child: KillOnDrop,
    lines: Receiver<(Instant, String)>,
    stderr: Arc<Mutex<String>>,
    pending: Vec<Found>,
    pub blocks: Vec<Block>,
    /// The stderr line that said it was watching.
    pub ready: String,
}

impl Watch {
    /// Starts `--watch` with `extra` and waits for its "watching" line.
    pub fn start(tree: &Tree, extra: &[&str]) -> Watch {
        let args = [&["--watch"], extra].concat();
        let mut child = tree
            .agent(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr_pipe.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut watch = Watch {
            child: KillOnDrop(child),
            lines,
            stderr,
            pending: Vec::new(),
            blocks: Vec::new(),
            ready: String::new(),
        };
        watch.ready = poll(Duration::from_secs(60), "the \"watching\" line", || {
            if let Ok(Some(status)) = watch.child.0.try_wait() {
                panic!(
                    "the agent exited ({status}) before watching:\n{}",
                    watch.stderr()
                );
            }
            let text = watch.stderr();
            text.lines()
                .find(|l| l.contains("watching"))
                .map(str::to_owned)
        });
        watch.settle(&tree.root);
        watch
    }

    /// Waits until a change is reported by a watch report (an initial check may still
    /// be running when the agent says it is watching, and report a first change): a
    /// file added, reported, removed, reported gone; again if the first was reported
    /// by another kind of check.
    fn settle(&mut self, root: &std::path::Path) {
        let (path, added) = (root.join("settle"), found("added", "/settle", &[]));
        let timeout = Duration::from_secs(30);
        for _ in 0..3 {
            let t = Instant::now();
            fs::write(&path, "s\n").unwrap();
            let i = self.wait(t, timeout, "/settle", |b| b.anomalies.contains(&added));
            let watched = self.blocks[i].mode() == "watch";
            let t = Instant::now();
            fs::remove_file(&path).unwrap();
            self.wait(t, timeout, "/settle gone", |b| {
                !b.anomalies.contains(&added)
            });
            if watched {
                return;
            }
        }
        panic!("changes are not reported in watch reports");
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn take(&mut self, at: Instant, line: String) {
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("not JSON on stdout: {line}\n{}", self.stderr()));
        if let Some(found) = parse_found(&value) {
            self.pending.push(found);
        } else if value.get("summary").is_some() {
            self.blocks.push(Block {
                at,
                anomalies: std::mem::take(&mut self.pending),
                summary: value,
            });
        }
    }

    /// Waits up to `timeout` for a report that came at or after `since` and satisfies
    /// `want`; returns its index in `blocks`.
    pub fn wait(
        &mut self,
        since: Instant,
        timeout: Duration,
        what: &str,
        mut want: impl FnMut(&Block) -> bool,
    ) -> usize {
        let deadline = Instant::now() + timeout;
        let mut seen = self.blocks.len();
        if let Some(i) = (0..seen).find(|&i| self.blocks[i].at >= since && want(&self.blocks[i])) {
            return i;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => self.take(at, line),
                Err(RecvTimeoutError::Timeout) => {
                    let recent: Vec<_> = self.blocks.iter().filter(|b| b.at >= since).collect();
                    let recent: Vec<_> = recent.iter().map(|b| (b.mode(), &b.anomalies)).collect();
                    let stderr = self.stderr();
                    panic!("no report with {what} within {timeout:?}; since: {recent:?}\n{stderr}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the agent closed stdout waiting for {what}\n{}",
                        self.stderr()
                    )
                }
            }
            while seen < self.blocks.len() {
                if self.blocks[seen].at >= since && want(&self.blocks[seen]) {
                    return seen;
                }
                seen += 1;
            }
        }
    }

    /// Takes in what stdout has given so far.
    pub fn drain(&mut self) {
        while let Ok((at, line)) = self.lines.try_recv() {
            self.take(at, line);
        }
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child.0);
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// SIGTERM; the exit status (None: still running after 10 s) and how long it took.
    pub fn stop(&mut self) -> (Option<ExitStatus>, Duration) {
        let sent = Instant::now();
        self.signal(rustix::process::Signal::TERM);
        let deadline = sent + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                return (Some(status), sent.elapsed());
            }
            if Instant::now() > deadline {
                return (None, sent.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
