//! The file helpers of `bulletproofctl`, one copy each: reading a file root acts on
//! (only when only root could have written it), the atomic write, directory fsync, and
//! the non-blocking `flock` of the root's lock files. Handle-based operations inside
//! trees others can write live in the engine (`integrity_common::handles`).

use anyhow::Context;
use std::fs;
use std::path::Path;

/// Opens (creating it 0600, never through a symlink, never blocking) and tries to
/// lock `path` exclusively: `Ok(None)` when another process holds it.
pub fn try_flock(path: &Path) -> anyhow::Result<Option<nix::fcntl::Flock<fs::File>>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("cannot open {} (is the root installed?)", path.display()))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(anyhow::anyhow!("cannot lock {}: {errno}", path.display())),
    }
}

/// Reads a file that root acts on (configuration, updater state, journal, keys):
/// `None` when it does not exist. Run as root, the file and its directory must be
/// root's and not writable by group or others (a file someone else could have
/// written is not ours to trust: a planted `restart_command` would run as root); a
/// symlink, FIFO or device there is refused, never followed or blocked on.
pub fn read_trusted(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let opened = integrity_common::handles::open_trusted(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::PermissionDenied {
            anyhow::anyhow!(
                "refusing {}: {error} (chown root and chmod go-w it after checking its content)",
                path.display()
            )
        } else {
            anyhow::Error::new(error).context(format!("cannot read {}", path.display()))
        }
    })?;
    let Some((mut file, _)) = opened else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(bytes))
}

/// Writes `bytes` to `path` so that a crash leaves the old or the new content, with
/// exactly `mode` whatever the umask (the engine's one atomic write: `O_EXCL`
/// temporary file beside it, fsync, rename, fsync of the directory).
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    integrity_common::handles::write_atomic(path, bytes, mode)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Makes a directory's entries (renames, creations) durable.
pub fn fsync_dir(dir: &Path) -> anyhow::Result<()> {
    fs::File::open(dir)
        .and_then(|file| file.sync_all())
        .with_context(|| format!("cannot fsync {}", dir.display()))
}
