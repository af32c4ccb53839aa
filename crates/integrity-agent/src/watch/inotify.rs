//! inotify: a watch on every directory, added as directories appear. A directory
//! that appears (created, or moved in) is walked at once: its watches are added and
//! everything already inside it is reported, since it may have been filled before
//! its watch existed.

use super::{is_at_or_below, join, log, os, walk, Collector, Scope};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

/// Read buffer: many events per `read(2)`.
const READ_BUFFER: usize = 64 * 1024;

pub(crate) struct InotifyBackend {
    inotify: Inotify,
    watches: Watches,
    dirs: HashMap<WatchDescriptor, Dir>,
    by_path: HashMap<Vec<u8>, WatchDescriptor>,
    /// A directory went unwatched (out of watches, or refused) since the last
    /// batch: report an overflow.
    unwatched: bool,
    /// Whether running out of watches was logged already.
    told_out_of_watches: bool,
    buffer: Vec<u8>,
}

struct Dir {
    /// Absolute.
    path: Vec<u8>,
    /// The device the walk below it stays on (`None`: any).
    dev: Option<u64>,
}

impl InotifyBackend {
    /// Watches every directory of each subtree (absolute path, and the device the
    /// walk stays on, or `None` for any).
    pub(crate) fn new(scope: &Scope, subtrees: Vec<(Vec<u8>, Option<u64>)>) -> io::Result<Self> {
        let inotify = Inotify::init()?;
        let watches = inotify.watches();
        let mut backend = InotifyBackend {
            inotify,
            watches,
            dirs: HashMap::new(),
            by_path: HashMap::new(),
            unwatched: false,
            told_out_of_watches: false,
            buffer: vec![0; READ_BUFFER],
        };
        for (top, dev) in subtrees {
            backend.watch_tree(scope, &top, dev, None);
        }
        Ok(backend)
    }

    /// Adds watches to `top` and every directory below it; records what is below
    /// `top` in `collector`, when given.
    fn watch_tree(
        &mut self,
        scope: &Scope,
        top: &[u8],
        dev: Option<u64>,
        collector: Option<&mut Collector>,
    ) {
        walk(scope, top, dev, collector, &mut |dir| self.watch(dir, dev));
    }

    fn watch(&mut self, path: &[u8], dev: Option<u64>) {
        let mask = WatchMask::MODIFY
            | WatchMask::CLOSE_WRITE
            | WatchMask::ATTRIB
            | WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::ONLYDIR
            | WatchMask::DONT_FOLLOW
            | WatchMask::EXCL_UNLINK;
        match self.watches.add(os(path), mask) {
            Ok(wd) => {
                let dir = Dir {
                    path: path.to_vec(),
                    dev,
                };
                if let Some(old) = self.dirs.insert(wd.clone(), dir) {
                    if old.path != path && self.by_path.get(&old.path) == Some(&wd) {
                        self.by_path.remove(&old.path);
                    }
                }
                self.by_path.insert(path.to_vec(), wd);
            }
            // Gone already, or replaced by something else: its parent says so.
            Err(error)
                if matches!(
                    rustix::io::Errno::from_io_error(&error),
                    Some(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR)
                ) => {}
            Err(error) => {
                self.unwatched = true;
                if rustix::io::Errno::from_io_error(&error) == Some(rustix::io::Errno::NOSPC) {
                    if !self.told_out_of_watches {
                        self.told_out_of_watches = true;
                        let limit =
                            std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
                                .map(|text| text.trim().to_owned())
                                .unwrap_or_else(|_| "?".to_owned());
                        log(&format!(
                            "out of inotify watches ({} watched, fs.inotify.max_user_watches = \
                             {limit}): new directories go unwatched, each batch that meets one \
                             is reported as an overflow",
                            self.dirs.len()
                        ));
                    }
                } else {
                    log(&format!(
                        "{}: cannot watch: {error}",
                        String::from_utf8_lossy(path)
                    ));
                }
            }
        }
    }

    /// Removes the watches of `path` and every directory below it.
    fn unwatch_tree(&mut self, path: &[u8]) {
        let below: Vec<Vec<u8>> = self
            .by_path
            .keys()
            .filter(|watched| is_at_or_below(watched, path))
            .cloned()
            .collect();
        for watched in below {
            if let Some(wd) = self.by_path.remove(&watched) {
                self.dirs.remove(&wd);
                // Fails for a directory that is gone: nothing to remove then.
                let _ = self.watches.remove(wd);
            }
        }
    }

    /// Reads and records what is queued, until the queue is empty or `deadline`.
    pub(crate) fn drain(
        &mut self,
        scope: &Scope,
        collector: &mut Collector,
        deadline: Instant,
    ) -> io::Result<()> {
        let mut buffer = std::mem::take(&mut self.buffer);
        let result = loop {
            let events = match self.inotify.read_events(&mut buffer) {
                Ok(events) => events,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => break Err(error),
            };
            for event in events {
                self.process(
                    scope,
                    collector,
                    &event.wd,
                    event.mask,
                    event.name.map(|name| name.as_bytes()),
                );
            }
            if Instant::now() >= deadline {
                break Ok(());
            }
        };
        self.buffer = buffer;
        if std::mem::take(&mut self.unwatched) {
            collector.set_overflow();
        }
        result
    }

    fn process(
        &mut self,
        scope: &Scope,
        collector: &mut Collector,
        wd: &WatchDescriptor,
        mask: EventMask,
        name: Option<&[u8]>,
    ) {
        // Lost events, or a filesystem unmounted under a watch (what its mount
        // point shows now was never walked).
        if mask.intersects(EventMask::Q_OVERFLOW | EventMask::UNMOUNT) {
            collector.set_overflow();
            return;
        }
        if mask.contains(EventMask::IGNORED) {
            if let Some(dir) = self.dirs.remove(wd) {
                if self.by_path.get(&dir.path) == Some(wd) {
                    self.by_path.remove(&dir.path);
                }
            }
            return;
        }
        let Some(dir) = self.dirs.get(wd) else {
            return;
        };
        let Some(name) = name else {
            // About the watched directory itself; its parent reports its
            // deletion or move, but the root has no watched parent.
            let path = dir.path.clone();
            if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
                if path == scope.root {
                    collector.set_overflow();
                }
            } else {
                collector.add(scope, &path);
            }
            return;
        };
        let path = join(&dir.path, name);
        let dev = dir.dev;
        let is_dir = mask.contains(EventMask::ISDIR);
        if is_dir && mask.contains(EventMask::MOVED_FROM) {
            // Its watches would go on reporting under the old name.
            self.unwatch_tree(&path);
        }
        if collector.add(scope, &path)
            && is_dir
            && mask.intersects(EventMask::CREATE | EventMask::MOVED_TO)
        {
            let same_device = match (dev, std::fs::symlink_metadata(os(&path))) {
                (_, Err(_)) => false,
                (None, Ok(metadata)) => metadata.is_dir(),
                (Some(dev), Ok(metadata)) => metadata.is_dir() && metadata.dev() == dev,
            };
            if same_device {
                if mask.contains(EventMask::MOVED_TO) {
                    // Watches it had under another name here (moved within the tree).
                    self.unwatch_tree(&path);
                }
                self.watch_tree(scope, &path, dev, Some(collector));
            }
        }
    }
}

impl AsFd for InotifyBackend {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }
}
