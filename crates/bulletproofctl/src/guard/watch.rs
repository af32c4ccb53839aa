//! inotify: a watch on every directory of the active release (and `install/`), and
//! the paths that changed since the last wait.

use super::*;

/// Watches every directory of the active release (and `install/` for switches).
pub(super) struct Watcher {
    inotify: inotify::Inotify,
    dirs: BTreeMap<inotify::WatchDescriptor, PathBuf>,
    release_dir: PathBuf,
}

impl Watcher {
    pub(super) fn new(layout: &Layout, active: &str) -> anyhow::Result<Self> {
        use inotify::WatchMask;
        let inotify = inotify::Inotify::init().context("inotify")?;
        let mut watcher = Self {
            inotify,
            dirs: BTreeMap::new(),
            release_dir: layout.release(active),
        };
        let wd = watcher
            .inotify
            .watches()
            .add(layout.install(), WatchMask::MOVED_TO | WatchMask::CREATE)?;
        watcher.dirs.insert(wd, layout.install());
        if active != EMPTY_RELEASE {
            let mut stack = vec![
                watcher.release_dir.join("core"),
                watcher.release_dir.join("modules"),
            ];
            while let Some(dir) = stack.pop() {
                watcher.watch(&dir)?;
                if let Ok(entries) = fs::read_dir(&dir) {
                    for entry in entries.flatten() {
                        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                            stack.push(entry.path());
                        }
                    }
                }
            }
        }
        Ok(watcher)
    }

    pub(super) fn watch(&mut self, dir: &Path) -> anyhow::Result<()> {
        use inotify::WatchMask;
        let mask = WatchMask::MODIFY
            | WatchMask::ATTRIB
            | WatchMask::CLOSE_WRITE
            | WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::DELETE_SELF
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::MOVE_SELF
            | WatchMask::DONT_FOLLOW;
        let wd = self.inotify.watches().add(dir, mask).with_context(|| {
            format!(
                "cannot watch {} (fs.inotify.max_user_watches?)",
                dir.display()
            )
        })?;
        self.dirs.insert(wd, dir.to_path_buf());
        Ok(())
    }

    /// Waits up to `timeout` for events; returns the manifest paths they touched,
    /// `Some(None)` for "check everything" (queue overflow, the active version changed).
    pub(super) fn wait(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<Option<Option<BTreeSet<Vec<u8>>>>> {
        use std::os::fd::AsFd;
        let mut fds = [nix::poll::PollFd::new(
            self.inotify.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(millis)) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        // Let a burst of writes settle, then take everything queued.
        std::thread::sleep(Duration::from_millis(15));
        let mut paths = BTreeSet::new();
        let mut everything = false;
        let mut buffer = vec![0u8; 64 << 10];
        loop {
            let events = match self.inotify.read_events(&mut buffer) {
                Ok(events) => events,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            };
            let mut any = false;
            for event in events {
                any = true;
                if event.mask.contains(inotify::EventMask::Q_OVERFLOW) {
                    everything = true;
                    continue;
                }
                let Some(dir) = self.dirs.get(&event.wd) else {
                    continue;
                };
                let full = match event.name {
                    Some(name) => dir.join(name),
                    None => dir.clone(),
                };
                if let Ok(rest) = full.strip_prefix(&self.release_dir) {
                    let mut path = b"/".to_vec();
                    path.extend_from_slice(rest.as_os_str().as_bytes());
                    paths.insert(path);
                } else if full.file_name().is_some_and(|n| n == "active") {
                    everything = true;
                }
            }
            if !any {
                break;
            }
        }
        Ok(Some(if everything { None } else { Some(paths) }))
    }
}
