//! fanotify: one `FAN_MARK_FILESYSTEM` mark per filesystem; each event names the
//! parent directory by file handle plus the entry's name. A handle becomes a path
//! through `open_by_handle_at(mount_fd, handle, O_PATH)` and
//! `readlink("/proc/self/fd/N")`, cached per directory.
//!
//! The FFI (`fanotify_init`, `fanotify_mark`, `open_by_handle_at`, `statfs`) is the
//! `fanotify-fid` crate's: the workspace forbids `unsafe`, and neither rustix nor nix
//! wraps file handles. Reading and parsing the event stream stay safe code (rustix's
//! `read`, the crate's byte parser).

use super::{is_at_or_below, join, log, mounts_below, os, poll_readable, walk, Collector, Scope};
use fanotify_fid::consts::{
    FAN_ATTRIB, FAN_CLASS_NOTIF, FAN_CLOEXEC, FAN_CLOSE_WRITE, FAN_CREATE, FAN_DELETE,
    FAN_MARK_ADD, FAN_MARK_FILESYSTEM, FAN_MODIFY, FAN_MOVED_FROM, FAN_MOVED_TO, FAN_NONBLOCK,
    FAN_ONDIR, FAN_REPORT_DFID_NAME, FAN_REPORT_DFID_NAME_TARGET,
};
use fanotify_fid::handle::{fsid_of_fd, handle_from_fd, open_by_handle_at};
use fanotify_fid::{parse_fid_events_reported, Fanotify, FanotifyError, Fsid};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

/// Content written (and the close after it), metadata, and every change of a
/// directory entry; `FAN_ONDIR` for directories too.
const MASK: u64 = FAN_MODIFY
    | FAN_CLOSE_WRITE
    | FAN_ATTRIB
    | FAN_CREATE
    | FAN_DELETE
    | FAN_MOVED_FROM
    | FAN_MOVED_TO
    | FAN_ONDIR;
const DIR_ENTRY: u64 = FAN_CREATE | FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO;
/// One `read(2)`: the kernel never splits an event across reads.
const READ_BUFFER: usize = 256 * 1024;
/// How long a batch with events in vanished directories waits for the `rmdir`s that
/// say where those directories were.
const GRACE: Duration = Duration::from_millis(50);
/// Deepest chain of vanished directories resolved through one another.
const MAX_DEPTH: usize = 4096;
/// Vanished-directory records kept per batch.
const MAX_BATCH_DIRS: usize = 100_000;

/// Mount points (absolute) that could not be marked, with their device.
pub(crate) type Unmarked = Vec<(Vec<u8>, u64)>;

pub(crate) struct FanotifyBackend {
    group: Fanotify,
    /// A descriptor on each marked filesystem (`open_by_handle_at`'s `mount_fd`).
    filesystems: HashMap<Fsid, File>,
    /// Whether events about a directory entry carry the entry's own handle too
    /// (`FAN_REPORT_TARGET_FID`, Linux ≥ 5.17).
    target_fid: bool,
    cache: DirCache,
    /// This batch's directories named by their own handle (created, moved, deleted):
    /// handle → (parent's handle, name). It places the events of directories that
    /// are gone by the time they are read (`rm -rf`).
    batch_dirs: HashMap<Key, (Vec<u8>, Vec<u8>)>,
    /// Events whose directory could not be opened, for the end of the batch.
    pending: Vec<Pending>,
    buffer: Vec<u8>,
}

struct Pending {
    fsid: Fsid,
    dir: Vec<u8>,
    name: Vec<u8>,
    mask: u64,
    child: Option<Vec<u8>>,
}

enum Resolved {
    Path(Vec<u8>),
    /// Deleted, but still open somewhere: where it was.
    Unlinked(Vec<u8>),
    /// A filesystem this group did not mark.
    Foreign,
    /// No longer exists (`ESTALE`), or cannot be opened.
    Gone,
}

impl FanotifyBackend {
    /// A group with the root's filesystem marked (an error when it cannot be: the
    /// caller falls back to inotify) and, with `cross`, every filesystem mounted
    /// below it. Those that cannot be marked are returned with their device, for
    /// inotify to watch.
    pub(crate) fn new(scope: &Scope) -> io::Result<(Self, Unmarked)> {
        let base = FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK;
        let (group, target_fid) = match Fanotify::init(base | FAN_REPORT_DFID_NAME_TARGET, 0) {
            Ok(group) => (group, true),
            Err(FanotifyError::Init(errno)) if errno == rustix::io::Errno::INVAL.raw_os_error() => {
                let group = Fanotify::init(base | FAN_REPORT_DFID_NAME, 0).map_err(io_error)?;
                (group, false)
            }
            Err(error) => return Err(io_error(error)),
        };
        let mut backend = FanotifyBackend {
            group,
            filesystems: HashMap::new(),
            target_fid,
            cache: DirCache::default(),
            batch_dirs: HashMap::new(),
            pending: Vec::new(),
            buffer: Vec::new(),
        };
        backend.mark(&scope.root)?;
        let mut unmarked = Vec::new();
        if scope.cross {
            for mount in mounts_below(scope)? {
                if let Err(error) = backend.mark(&mount) {
                    if let Ok(metadata) = std::fs::metadata(os(&mount)) {
                        log(&format!(
                            "{}: no fanotify mark ({error}): watching it with inotify",
                            String::from_utf8_lossy(&mount)
                        ));
                        unmarked.push((mount, metadata.dev()));
                    }
                }
            }
        }
        Ok((backend, unmarked))
    }

    /// Marks the filesystem of the directory `path` (absolute), once per
    /// filesystem, after checking that its handles open again to the right path.
    fn mark(&mut self, path: &[u8]) -> io::Result<()> {
        let dir = File::open(os(path))?;
        let fsid = fsid_of_fd(&dir)?;
        if self.filesystems.contains_key(&fsid) {
            return Ok(());
        }
        let handle = handle_from_fd(&dir)?;
        let resolved = readlink_fd(&open_by_handle_at(&dir, &handle)?)?;
        if resolved != path {
            return Err(io::Error::other(format!(
                "its handles open as {}",
                String::from_utf8_lossy(&resolved)
            )));
        }
        self.group
            .mark_fd(&dir, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, MASK)
            .map_err(io_error)?;
        self.filesystems.insert(fsid, dir);
        Ok(())
    }

    /// Reads and records what is queued, until the queue is empty or `deadline`.
    pub(crate) fn drain(
        &mut self,
        scope: &Scope,
        collector: &mut Collector,
        deadline: Instant,
    ) -> io::Result<()> {
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.resize(READ_BUFFER, 0);
        let result = loop {
            match rustix::io::read(self.group.as_fd(), &mut buffer[..]) {
                Ok(0) | Err(rustix::io::Errno::AGAIN) => break Ok(()),
                Ok(read) => self.process(scope, collector, &buffer[..read]),
                Err(rustix::io::Errno::INTR) => continue,
                Err(error) => break Err(error.into()),
            }
            if Instant::now() >= deadline {
                break Ok(());
            }
        };
        self.buffer = buffer;
        result
    }

    fn process(&mut self, scope: &Scope, collector: &mut Collector, bytes: &[u8]) {
        let (events, report) = parse_fid_events_reported(bytes);
        if !report.is_complete() {
            log(&format!("unreadable fanotify events ({:?})", report.stop));
            self.lost(collector);
        }
        for event in &events {
            if event.is_overflow() {
                self.lost(collector);
                continue;
            }
            let Some(fsid) = event.fsid() else {
                continue;
            };
            let mask = event.mask();
            let (dir, name) = match (event.dfid_name_handle(), event.self_handle()) {
                (Some(dir), _) => (dir, event.dfid_name_raw()),
                // Only the object's own handle: a directory with no parent to name
                // it by (the filesystem's root); or a file being unlinked (its link
                // count changed: `FAN_ATTRIB`), whose deletion names it.
                (None, Some(own)) => {
                    if mask & FAN_ONDIR != 0 {
                        if let Resolved::Path(path) = self.resolve(fsid, own) {
                            self.apply(scope, collector, fsid, &path, b"", mask, None);
                        }
                    }
                    continue;
                }
                (None, None) => continue,
            };
            let child = if self.target_fid && mask & FAN_ONDIR != 0 && mask & DIR_ENTRY != 0 {
                event.self_handle()
            } else {
                None
            };
            if let Some(child) = child {
                if self.batch_dirs.len() < MAX_BATCH_DIRS {
                    self.batch_dirs
                        .insert(key(fsid, child), (dir.to_vec(), name.to_vec()));
                }
            }
            match self.resolve(fsid, dir) {
                Resolved::Path(path) | Resolved::Unlinked(path) => {
                    self.apply(scope, collector, fsid, &path, name, mask, child)
                }
                Resolved::Foreign => {}
                Resolved::Gone => self.pending.push(Pending {
                    fsid,
                    dir: dir.to_vec(),
                    name: name.to_vec(),
                    mask,
                    child: child.map(<[u8]>::to_vec),
                }),
            }
        }
    }

    /// Events were lost: renames among them may have made cached paths wrong.
    fn lost(&mut self, collector: &mut Collector) {
        collector.set_overflow();
        self.cache.clear();
    }

    /// Records the event `name` in the directory at `dir` (absolute), and what a
    /// directory event means for the cache.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        scope: &Scope,
        collector: &mut Collector,
        fsid: Fsid,
        dir: &[u8],
        name: &[u8],
        mask: u64,
        child: Option<&[u8]>,
    ) {
        let path = if name.is_empty() || name == b"." {
            dir.to_vec()
        } else {
            join(dir, name)
        };
        if mask & FAN_ONDIR != 0 {
            if mask & FAN_MOVED_FROM != 0 {
                // Whatever was cached below the old name is somewhere else now.
                self.cache.forget_below(&path);
            }
            if let Some(child) = child.filter(|_| mask & (FAN_CREATE | FAN_MOVED_TO) != 0) {
                self.cache.insert(key(fsid, child), path.clone());
            }
        }
        if collector.add(scope, &path) && mask & FAN_ONDIR != 0 && mask & FAN_MOVED_TO != 0 {
            // A directory moved in brings its contents along: new manifest paths.
            if let Ok(metadata) = std::fs::symlink_metadata(os(&path)) {
                if metadata.is_dir() {
                    walk(
                        scope,
                        &path,
                        Some(metadata.dev()),
                        Some(collector),
                        &mut |_| {},
                    );
                }
            }
        }
    }

    /// The absolute path of the directory (or file) `handle` names.
    fn resolve(&mut self, fsid: Fsid, handle: &[u8]) -> Resolved {
        let Some(mount) = self.filesystems.get(&fsid) else {
            return Resolved::Foreign;
        };
        let key = key(fsid, handle);
        if let Some(path) = self.cache.get(&key) {
            return Resolved::Path(path);
        }
        let Ok(fd) = open_by_handle_at(mount, handle) else {
            return Resolved::Gone;
        };
        let Ok(path) = readlink_fd(&fd) else {
            return Resolved::Gone;
        };
        match rustix::fs::fstat(&fd) {
            // Deleted, but still open somewhere: where it was (`/proc` appends a
            // marker to the path of an unlinked object).
            Ok(stat) if stat.st_nlink == 0 => Resolved::Unlinked(
                path.strip_suffix(b" (deleted)")
                    .map_or_else(|| path.clone(), <[u8]>::to_vec),
            ),
            _ => {
                self.cache.insert(key, path.clone());
                Resolved::Path(path)
            }
        }
    }

    /// Where a vanished directory was: through the cache, or through the parent
    /// and name this batch's events gave it.
    fn resolve_gone(&mut self, fsid: Fsid, handle: &[u8], depth: usize) -> Option<Vec<u8>> {
        match self.resolve(fsid, handle) {
            Resolved::Path(path) | Resolved::Unlinked(path) => return Some(path),
            Resolved::Foreign => return None,
            Resolved::Gone if depth >= MAX_DEPTH => return None,
            Resolved::Gone => {}
        }
        let (parent, name) = self.batch_dirs.get(&key(fsid, handle))?.clone();
        let parent = self.resolve_gone(fsid, &parent, depth + 1)?;
        Some(join(&parent, &name))
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Ends a batch: places the events of vanished directories, or reports an
    /// overflow for those that cannot be placed.
    pub(crate) fn finish(&mut self, scope: &Scope, collector: &mut Collector) -> io::Result<()> {
        if !self.pending.is_empty() && poll_readable(&[self.group.as_fd()], GRACE)? {
            self.drain(scope, collector, Instant::now() + GRACE)?;
        }
        let mut lost = 0usize;
        for pending in std::mem::take(&mut self.pending) {
            match self.resolve_gone(pending.fsid, &pending.dir, 0) {
                Some(dir) => self.apply(
                    scope,
                    collector,
                    pending.fsid,
                    &dir,
                    &pending.name,
                    pending.mask,
                    pending.child.as_deref(),
                ),
                None => lost += 1,
            }
        }
        if lost > 0 {
            log(&format!(
                "{lost} event(s) in directories that no longer exist could not be placed: \
                 reporting an overflow"
            ));
            collector.set_overflow();
        }
        self.batch_dirs.clear();
        Ok(())
    }
}

impl AsFd for FanotifyBackend {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.group.as_fd()
    }
}

fn io_error(error: FanotifyError) -> io::Error {
    match error.errno() {
        Some(errno) => io::Error::from_raw_os_error(errno),
        None => io::Error::other(error.to_string()),
    }
}

/// The path `/proc` shows for a descriptor (relative to this thread's root).
fn readlink_fd(fd: &OwnedFd) -> io::Result<Vec<u8>> {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(std::fs::read_link(link)?.into_os_string().into_vec())
}

/// A handle's cache key: the filesystem id, then the handle's bytes.
type Key = Vec<u8>;

fn key(fsid: Fsid, handle: &[u8]) -> Key {
    let mut key = Vec::with_capacity(8 + handle.len());
    key.extend_from_slice(&fsid.0.to_ne_bytes());
    key.extend_from_slice(&fsid.1.to_ne_bytes());
    key.extend_from_slice(handle);
    key
}

/// Directory handle → absolute path, bounded: two generations of
/// [`DirCache::GENERATION`] entries, the older dropped whole when the younger is
/// full (what is used again is moved to the younger).
#[derive(Default)]
struct DirCache {
    young: HashMap<Key, Vec<u8>>,
    old: HashMap<Key, Vec<u8>>,
}

impl DirCache {
    const GENERATION: usize = 8192;

    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(path) = self.young.get(key) {
            return Some(path.clone());
        }
        let (key, path) = self.old.remove_entry(key)?;
        self.insert(key, path.clone());
        Some(path)
    }

    fn insert(&mut self, key: Key, path: Vec<u8>) {
        if self.young.len() >= Self::GENERATION {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, path);
    }

    fn forget_below(&mut self, path: &[u8]) {
        self.young.retain(|_, cached| !is_at_or_below(cached, path));
        self.old.retain(|_, cached| !is_at_or_below(cached, path));
    }

    fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
    }
}
