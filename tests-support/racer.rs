//! Racers and bounded runs, shared by the hostile-host tests of several crates
//! (`#[path]`-included: `bulletproofctl`'s through `tests/common`, and
//! `integrity-collector/tests/hostile_walk.rs`). Uses `rustix` (features `fs`,
//! `thread`) and `tempfile`, which both crates have as dev-dependencies.

use rustix::fs::{renameat_with, RenameFlags, CWD};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The unprivileged attacker (`nobody`).
pub const NOBODY: u32 = 65534;

/// A thread running `step` in a loop until stopped or until its deadline, with the
/// unprivileged user's credentials when `as_nobody`. Dropping it stops and joins it (no
/// racer outlives its test, even a failing one).
pub struct Racer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<u64>>,
}

impl Racer {
    pub fn spawn(
        as_nobody: bool,
        run_for: Duration,
        mut step: impl FnMut() -> bool + Send + 'static,
    ) -> Racer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            if as_nobody {
                drop_to_nobody();
            }
            let deadline = Instant::now() + run_for;
            let mut swaps = 0u64;
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                if step() {
                    swaps += 1;
                }
            }
            swaps
        });
        Racer {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the racer; returns how many swaps it made.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .unwrap()
            .join()
            .expect("the racer panicked")
    }
}

impl Drop for Racer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// This thread only (raw syscalls, not glibc's process-wide setxid) becomes uid/gid
/// 65534 with no supplementary groups, for good.
pub fn drop_to_nobody() {
    use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid, Gid, Uid};
    set_thread_groups(&[]).expect("setgroups");
    let gid = Gid::from_raw(NOBODY);
    set_thread_res_gid(gid, gid, gid).expect("setresgid");
    let uid = Uid::from_raw(NOBODY);
    set_thread_res_uid(uid, uid, uid).expect("setresuid");
}

/// One `renameat2(RENAME_EXCHANGE)` of two paths; true when it happened.
pub fn exchange(a: &Path, b: &Path) -> bool {
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).is_ok()
}

/// Runs `command` with no stdin and its stdout and stderr in (anonymous) files; killed,
/// and the test failed, when it is not done within `limit`.
pub fn run_bounded(mut command: Command, limit: Duration) -> Output {
    let mut out = tempfile::tempfile().unwrap();
    let mut err = tempfile::tempfile().unwrap();
    command
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Output {
                status,
                stdout: read(&mut out),
                stderr: read(&mut err),
            };
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} hung: still running after {limit:?} (killed); output so far: {}{}",
                String::from_utf8_lossy(&read(&mut out)),
                String::from_utf8_lossy(&read(&mut err))
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// All that was written to `file`.
fn read(file: &mut std::fs::File) -> Vec<u8> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_to_end(&mut bytes).unwrap();
    bytes
}
