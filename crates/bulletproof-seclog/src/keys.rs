//! The key state: trusted reads and writes, the directory lock, the checks that make
//! the log fail closed (`ensure_ready`), and the initial key and first states of each
//! chain (`init_keys`).

use super::*;

/// A directory of key state (`install/`, `install/logkeys/`) is trusted only when owned
/// by root (by the running user, when that is not root) and not writable by group or
/// others (the rule of [`handles::open_trusted`], which checks the files).
pub(crate) fn check_trusted(path: &Path, meta: &fs::Metadata) -> anyhow::Result<()> {
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid {
        bail!(
            "{} is owned by uid {}, not root: untrusted",
            path.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "{} is writable by group or others (mode {:04o}): untrusted",
            path.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// Opens a key file through [`handles::open_trusted`]: no symlink followed, no FIFO
/// or device, a regular file owned by root (by the running user, when that is not
/// root) and not writable by group or others, in a directory that is the same.
pub(crate) fn open_trusted(path: &Path) -> anyhow::Result<(fs::File, handles::Meta)> {
    match handles::open_trusted(path) {
        Ok(Some(opened)) => Ok(opened),
        Ok(None) => bail!("{} is missing", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            bail!("{} is untrusted: {e}", path.display())
        }
        Err(e) => bail!("cannot open {}: {e}", path.display()),
    }
}

/// Writes a key state, key or checkpoint with [`handles::write_atomic`] (a crash
/// leaves the old or the new content, never a mix; `mode` set explicitly).
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    handles::write_atomic(path, bytes, mode)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Locks `install/logkeys/` (one writer of the key states at a time; the lock is on
/// the directory because each state file is replaced by a rename).
pub(crate) fn lock_dir(dir: &Path, exclusive: bool) -> anyhow::Result<nix::fcntl::Flock<fs::File>> {
    let file = fs::File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    let arg = if exclusive {
        nix::fcntl::FlockArg::LockExclusive
    } else {
        nix::fcntl::FlockArg::LockShared
    };
    nix::fcntl::Flock::lock(file, arg)
        .map_err(|(_, e)| anyhow::anyhow!("cannot lock {}: {e}", dir.display()))
}

/// The writer's state: the next sequence number, its key, the previous MAC.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct KeyState {
    pub(crate) next_seq: u64,
    pub(crate) key: String,
    pub(crate) prev: String,
    /// Records past `next_seq` a batch is about to write (set before the batch, cleared
    /// after): how far a crash between the batch and its state update may have left the
    /// log ahead. Absent for single appends, so a state even one record behind a plain
    /// append's log does not continue it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) pending: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

pub(crate) fn getrandom(buf: &mut [u8]) -> anyhow::Result<()> {
    use std::io::Read;
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .context("cannot read /dev/urandom")
}

pub(crate) fn last_line(path: &Path) -> anyhow::Result<Option<String>> {
    use std::io::{Seek, SeekFrom};
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(MAX_LINE_BYTES as u64 + 1);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let text = String::from_utf8_lossy(&tail);
    Ok(text.lines().rfind(|l| !l.is_empty()).map(str::to_owned))
}

/// Reads a master key file (64 hex digits).
pub fn read_master(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read the initial log key {}", path.display()))?;
    unhex(&text).with_context(|| format!("{} is not a log key (64 hex digits)", path.display()))
}

impl SecLog {
    /// `install/logkeys/` as a trusted directory.
    pub(crate) fn check_dir(&self) -> anyhow::Result<PathBuf> {
        let dir = self.logkeys_dir();
        let meta = match fs::symlink_metadata(&dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("{} is missing", dir.display())
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
        };
        if !meta.is_dir() {
            bail!("{} is not a directory", dir.display());
        }
        check_trusted(&dir, &meta)?;
        Ok(dir)
    }

    /// A component's key state, read only from a trusted file and checked field by field.
    pub(crate) fn load_state(&self, component: &str) -> anyhow::Result<KeyState> {
        let path = self.state_path(component);
        let mut bytes = Vec::new();
        open_trusted(&path)?
            .0
            .take(4096)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let state: KeyState = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{} is damaged ({e})", path.display()))?;
        if state.key.len() != 64 || unhex(&state.key).is_none() {
            bail!("{} is damaged (no 32-byte key)", path.display());
        }
        if state.prev.len() != 64 || unhex(&state.prev).is_none() {
            bail!("{} is damaged (no previous MAC)", path.display());
        }
        Ok(state)
    }

    /// The state must continue the log: its last record is the one before `next_seq` (or,
    /// after a crash between the two writes, the record at `next_seq`, made with the key).
    pub(crate) fn check_continues(&self, component: &str, state: &KeyState) -> anyhow::Result<()> {
        let log = self.jsonl_path(component);
        // An empty or missing log (rotated) continues anything; a torn last line is for
        // `log verify` to name.
        let Some(last) = last_line(&log)? else {
            return Ok(());
        };
        let Ok(record) = parse_line(&last) else {
            return Ok(());
        };
        let key = unhex(&state.key).context("log key state is corrupt")?;
        let continues = (record.seq + 1 == state.next_seq && record.mac == state.prev)
            || crate::append::key_of_written(&key, state, &record).is_some();
        if !continues {
            bail!(
                "{} does not continue {} (it expects seq {}, the log ends at seq {}): the key state was replaced, or the log's tail edited",
                self.state_path(component).display(),
                log.display(),
                state.next_seq,
                record.seq
            );
        }
        Ok(())
    }

    /// Everything the log needs to append and checkpoint, checked (no lock taken).
    pub(crate) fn check_keys_unlocked(&self) -> anyhow::Result<()> {
        for component in COMPONENTS {
            let state = self.load_state(component)?;
            self.check_continues(component, &state)?;
        }
        let host_key = self.host_key();
        let (_, meta) = open_trusted(&host_key)?;
        if meta.size == 0 {
            bail!("{} is empty", host_key.display());
        }
        Ok(())
    }

    /// Checks the security log's key state; `Err` says what is missing or damaged.
    pub fn check_keys(&self) -> anyhow::Result<()> {
        let dir = self.check_dir()?;
        let _lock = lock_dir(&dir, false)?;
        self.check_keys_unlocked()
    }

    /// Before a security-relevant command changes anything: on an installed root the
    /// security log must be able to record it, else the command is refused (fail closed).
    pub fn ensure_ready(&self) -> anyhow::Result<()> {
        if !self.required() {
            return Ok(());
        }
        self.check_keys().map_err(|error| {
            anyhow::anyhow!(
                "refused: the security log's key state is missing or damaged ({error:#}), and a security-relevant command does not run unlogged; nothing was changed. To go on, {}",
                self.reinit_hint()
            )
        })
    }

    /// Creates the master initial key (once): written to `out` (meant to leave the host)
    /// and, unless `out` is given, to `install/logkeys/initial.key`. Seeds each component's
    /// state from it. Returns the path the master key went to, or `None` when it existed.
    pub fn init_keys(
        &self,
        out: Option<&Path>,
        components: &[&str],
    ) -> anyhow::Result<Option<PathBuf>> {
        let dir = self.logkeys_dir();
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        if components.iter().all(|c| self.state_path(c).exists()) {
            return Ok(None);
        }
        if let Some(evidence) = self.previous_chain(components) {
            bail!(
                "the security log's key state is missing or incomplete, but its chain was started ({}); install does not silently start a new one: {}",
                evidence.display(),
                self.reinit_hint()
            );
        }
        let target = out
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.master_key_path());
        self.start_chains(&target, components)?;
        Ok(Some(target))
    }

    /// A fresh master initial key, written to `master_target` (0400), and each of
    /// `components`' key state seeded from it (0600): the start of their chains.
    pub(crate) fn start_chains(
        &self,
        master_target: &Path,
        components: &[&str],
    ) -> anyhow::Result<()> {
        let mut master = [0u8; 32];
        getrandom(&mut master)?;
        write_file(
            master_target,
            format!("{}\n", hex(&master)).as_bytes(),
            0o400,
        )?;
        for component in components {
            let state = KeyState {
                pending: 0,
                next_seq: 0,
                key: hex(&initial_key(&master, component)),
                prev: ZERO_MAC.into(),
            };
            write_file(
                &self.state_path(component),
                &serde_json::to_vec(&state)?,
                0o600,
            )?;
        }
        master.fill(0);
        Ok(())
    }

    /// A file showing that a chain of `components` was started (records or a checkpoint).
    pub(crate) fn previous_chain(&self, components: &[&str]) -> Option<PathBuf> {
        components.iter().find_map(|component| {
            let log = self.jsonl_path(component);
            let checkpoint = checkpoint_path(&log);
            if fs::metadata(&log).is_ok_and(|m| m.len() > 0) {
                Some(log)
            } else if fs::symlink_metadata(&checkpoint).is_ok() {
                Some(checkpoint)
            } else {
                None
            }
        })
    }
}
