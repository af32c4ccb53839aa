//! Kernel file-change events below the scanned root: which manifest paths changed
//! since the last call, so the agent can check those instead of rescanning the tree.
//!
//! Two sources, chosen by what the kernel allows:
//!
//! * **fanotify** ([`fanotify`]): one `FAN_MARK_FILESYSTEM` mark per filesystem and
//!   file-handle events (`FAN_REPORT_DFID_NAME`, plus the target's own handle where
//!   the kernel has `FAN_REPORT_TARGET_FID`). Needs `CAP_SYS_ADMIN` and Linux ≥ 5.9.
//!   A filesystem below the root that cannot be marked, or whose handles cannot be
//!   opened again, is watched with inotify instead (its subtree only).
//! * **inotify** ([`inotify`]): one watch per directory, added as directories appear.
//!
//! Whatever cannot be told path by path is reported as `overflow`: the caller then
//! runs a complete check, so nothing is lost silently.

mod fanotify;
mod inotify;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Which manifest paths to ignore (`Watcher::new`'s `excluded`).
pub type Excluded = Box<dyn Fn(&[u8]) -> bool + Send>;

/// Which kernel interface a [`Watcher`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Fanotify,
    Inotify,
}

/// One batch of changes, as [`Watcher::wait`] returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Changed entries as manifest paths relative to the root: "/etc/passwd" (bytes,
    /// no trailing slash; the root itself is "/"), sorted, deduplicated.
    ///
    /// A directory that was moved away or deleted is reported by its own path only:
    /// the entries of the manifest below it are gone with it.
    pub paths: Vec<Vec<u8>>,
    /// The kernel's queue overflowed (or the backend could not keep up): events were
    /// lost; the caller runs a complete check.
    pub overflow: bool,
}

/// Watches a tree for changes; see [`Watcher::new`].
pub struct Watcher {
    scope: Scope,
    fanotify: Option<fanotify::FanotifyBackend>,
    inotify: Option<inotify::InotifyBackend>,
}

impl Watcher {
    /// Watches everything below `root` on root's filesystem (and, when
    /// `cross_filesystems`, on the filesystems mounted below it too): fanotify with
    /// filesystem marks and file handles where the kernel allows it, else inotify
    /// with a watch per directory. `excluded(path)` says which manifest paths to
    /// ignore; it is asked about a path and about each of its ancestors (but not
    /// "/"), so an exact-match predicate excludes whole subtrees.
    pub fn new(root: &Path, cross_filesystems: bool, excluded: Excluded) -> io::Result<Watcher> {
        Self::with_backend(root, cross_filesystems, excluded, None)
    }

    /// [`new`](Self::new), with the backend forced when `backend` is given: an error
    /// instead of a fallback when fanotify is asked for and refused.
    pub(crate) fn with_backend(
        root: &Path,
        cross_filesystems: bool,
        excluded: Excluded,
        backend: Option<Backend>,
    ) -> io::Result<Watcher> {
        let scope = Scope::new(root, cross_filesystems, excluded)?;
        if backend != Some(Backend::Inotify) {
            match fanotify::FanotifyBackend::new(&scope) {
                Ok((fanotify, unmarked)) => {
                    let inotify = if unmarked.is_empty() {
                        None
                    } else {
                        let subtrees = unmarked
                            .into_iter()
                            .map(|(path, dev)| (path, Some(dev)))
                            .collect();
                        Some(inotify::InotifyBackend::new(&scope, subtrees)?)
                    };
                    return Ok(Watcher {
                        scope,
                        fanotify: Some(fanotify),
                        inotify,
                    });
                }
                Err(error) if backend == Some(Backend::Fanotify) => return Err(error),
                Err(error) => log(&format!(
                    "fanotify is not available ({error}): watching with inotify"
                )),
            }
        }
        let dev = (!scope.cross).then_some(scope.root_dev);
        let subtrees = vec![(scope.root.clone(), dev)];
        let inotify = inotify::InotifyBackend::new(&scope, subtrees)?;
        Ok(Watcher {
            scope,
            fanotify: None,
            inotify: Some(inotify),
        })
    }

    pub fn backend(&self) -> Backend {
        if self.fanotify.is_some() {
            Backend::Fanotify
        } else {
            Backend::Inotify
        }
    }

    /// Blocks up to `timeout` for the first event; once one arrived, keeps reading
    /// for `coalesce` more (a burst of writes is one batch) and returns. Empty
    /// `paths` and `overflow == false` on timeout. Events that are all dropped
    /// (excluded, outside the root) do not end the wait early.
    pub fn wait(&mut self, timeout: Duration, coalesce: Duration) -> io::Result<Changes> {
        let mut collector = Collector::default();
        let give_up = Instant::now() + timeout;
        // Anything the backends already know (a watch that could not be added).
        self.drain(&mut collector, Instant::now())?;
        while collector.is_empty() && !self.has_pending() {
            let now = Instant::now();
            if now >= give_up {
                return Ok(Changes::default());
            }
            if self.poll(give_up - now)? {
                self.drain(&mut collector, Instant::now() + coalesce)?;
            }
        }
        let deadline = Instant::now() + coalesce;
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if self.poll(deadline - now)? {
                self.drain(&mut collector, deadline)?;
            }
        }
        if let Some(fanotify) = &mut self.fanotify {
            fanotify.finish(&self.scope, &mut collector)?;
        }
        Ok(collector.into_changes())
    }

    /// Whether events were read that are placed only at the end of a batch.
    fn has_pending(&self) -> bool {
        self.fanotify
            .as_ref()
            .is_some_and(fanotify::FanotifyBackend::has_pending)
    }

    /// Reads what is queued, without blocking (but for as long as events keep
    /// arriving, until `deadline`).
    fn drain(&mut self, collector: &mut Collector, deadline: Instant) -> io::Result<()> {
        if let Some(fanotify) = &mut self.fanotify {
            fanotify.drain(&self.scope, collector, deadline)?;
        }
        if let Some(inotify) = &mut self.inotify {
            inotify.drain(&self.scope, collector, deadline)?;
        }
        Ok(())
    }

    /// Whether a backend has something to read within `timeout`.
    fn poll(&self, timeout: Duration) -> io::Result<bool> {
        let mut fds: Vec<BorrowedFd<'_>> = Vec::with_capacity(2);
        if let Some(fanotify) = &self.fanotify {
            fds.push(fanotify.as_fd());
        }
        if let Some(inotify) = &self.inotify {
            fds.push(inotify.as_fd());
        }
        poll_readable(&fds, timeout)
    }
}

/// Whether one of `fds` becomes readable within `timeout`. An interrupted poll
/// answers false: the callers loop on their own deadlines.
pub(crate) fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<bool> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut poll_fds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(fd, PollFlags::IN))
        .collect();
    let timeout = Timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    match poll(&mut poll_fds, Some(&timeout)) {
        Ok(ready) => Ok(ready > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// The agent's log line for something the watcher cannot do.
pub(crate) fn log(message: &str) {
    eprintln!("integrity-agent: warning: watch: {message}");
}

/// What is watched: the root, how far, and what to drop.
pub(crate) struct Scope {
    /// The canonical absolute path of the root, as bytes ("/" or no trailing slash).
    root: Vec<u8>,
    root_dev: u64,
    cross: bool,
    excluded: Excluded,
}

impl Scope {
    fn new(root: &Path, cross: bool, excluded: Excluded) -> io::Result<Scope> {
        let root = std::fs::canonicalize(root)?;
        let metadata = std::fs::metadata(&root)?;
        if !metadata.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a directory", root.display()),
            ));
        }
        Ok(Scope {
            root: root.into_os_string().into_vec(),
            root_dev: metadata.dev(),
            cross,
            excluded,
        })
    }

    /// The manifest path of an absolute path below (or at) the root.
    pub(crate) fn manifest_path<'a>(&self, absolute: &'a [u8]) -> Option<&'a [u8]> {
        if self.root == b"/" {
            return absolute.starts_with(b"/").then_some(absolute);
        }
        let rest = absolute.strip_prefix(self.root.as_slice())?;
        if rest.is_empty() {
            Some(b"/")
        } else if rest.starts_with(b"/") {
            Some(rest)
        } else {
            None
        }
    }

    /// Whether the manifest path or one of its ancestors (but "/") is excluded.
    pub(crate) fn is_excluded(&self, manifest: &[u8]) -> bool {
        let mut end = manifest.len();
        loop {
            let path = &manifest[..end];
            if path.len() > 1 && (self.excluded)(path) {
                return true;
            }
            match path.iter().rposition(|&b| b == b'/') {
                Some(0) | None => return false,
                Some(slash) => end = slash,
            }
        }
    }

    /// The manifest path of `absolute` when it is watched: below the root and not
    /// excluded.
    pub(crate) fn wanted<'a>(&self, absolute: &'a [u8]) -> Option<&'a [u8]> {
        self.manifest_path(absolute)
            .filter(|manifest| !self.is_excluded(manifest))
    }
}

/// `dir/name`, as bytes.
pub(crate) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(dir.len() + 1 + name.len());
    path.extend_from_slice(dir);
    if !dir.ends_with(b"/") {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

/// Whether `path` is `prefix` or lies below it.
pub(crate) fn is_at_or_below(path: &[u8], prefix: &[u8]) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with(b"/") || prefix.ends_with(b"/"),
        None => false,
    }
}

pub(crate) fn os(path: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(path))
}

/// A batch's findings, bounded: past [`Collector::MAX_PATHS`] paths the batch is an
/// overflow (the caller's complete check needs no list).
#[derive(Default)]
pub(crate) struct Collector {
    paths: HashSet<Vec<u8>>,
    overflow: bool,
}

impl Collector {
    const MAX_PATHS: usize = 100_000;

    /// Records `absolute` when it is watched; says whether it is.
    pub(crate) fn add(&mut self, scope: &Scope, absolute: &[u8]) -> bool {
        let Some(manifest) = scope.wanted(absolute) else {
            return false;
        };
        if !self.overflow && !self.paths.contains(manifest) {
            if self.paths.len() >= Self::MAX_PATHS {
                self.set_overflow();
            } else {
                self.paths.insert(manifest.to_vec());
            }
        }
        true
    }

    pub(crate) fn set_overflow(&mut self) {
        self.overflow = true;
        self.paths = HashSet::new();
    }

    fn is_empty(&self) -> bool {
        !self.overflow && self.paths.is_empty()
    }

    fn into_changes(self) -> Changes {
        let mut paths: Vec<Vec<u8>> = self.paths.into_iter().collect();
        paths.sort_unstable();
        Changes {
            paths,
            overflow: self.overflow,
        }
    }
}

/// Walks the directory `top` (absolute, watched): `on_dir` is called for `top` and
/// every directory below it before it is read (inotify adds its watch there), and
/// every entry below `top` is recorded in `collector`. Excluded entries are neither
/// recorded nor entered; with `dev`, directories of another device are recorded but
/// not entered. Entries that vanish meanwhile are skipped.
pub(crate) fn walk(
    scope: &Scope,
    top: &[u8],
    dev: Option<u64>,
    mut collector: Option<&mut Collector>,
    on_dir: &mut dyn FnMut(&[u8]),
) {
    let mut stack = vec![top.to_vec()];
    while let Some(dir) = stack.pop() {
        on_dir(&dir);
        let Ok(entries) = std::fs::read_dir(os(&dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = join(&dir, entry.file_name().as_bytes());
            if scope.wanted(&path).is_none() {
                continue;
            }
            if let Some(collector) = collector.as_deref_mut() {
                collector.add(scope, &path);
            }
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if !file_type.is_dir() {
                continue;
            }
            if let Some(dev) = dev {
                match std::fs::symlink_metadata(os(&path)) {
                    Ok(metadata) if metadata.dev() == dev => {}
                    _ => continue,
                }
            }
            stack.push(path);
        }
    }
}

/// The mount points strictly below the root that are watched (not excluded), as
/// absolute paths, shallowest first, from this thread's mount namespace.
pub(crate) fn mounts_below(scope: &Scope) -> io::Result<Vec<Vec<u8>>> {
    let text = std::fs::read("/proc/thread-self/mountinfo")?;
    let mut mounts: Vec<Vec<u8>> = text
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|path| path != &scope.root && scope.wanted(path).is_some())
        .collect();
    mounts.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    mounts.dedup();
    Ok(mounts)
}

/// A mountinfo field: space, tab, newline and backslash are written as `\ooo`.
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 3 < field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = field[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(value as u8);
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}
