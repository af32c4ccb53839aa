//! The verified state in `--state-dir` (DESIGN §14, `integrity_common::verified`) and
//! the kind of check it allows: incremental when a sound state of this host, baseline
//! and root is there and the last full check is recent enough (`--full-every`), full
//! otherwise — a missing, foreign or damaged state is a full check, never a clean
//! report. Written atomically (temporary file, fsync, rename), 0600, after each check.

use crate::identity::{Identity, MACHINE_ID};
use integrity_common::handles::write_atomic;
use integrity_common::report::ReportMode;
use integrity_common::verified::{Binding, VerifiedState};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file's name in the state directory.
pub const FILE: &str = "verified";

/// The state directory, opened, and the host id the state is bound to.
pub struct StateFile {
    dir: PathBuf,
    pub host_id: String,
}

/// What kind of check runs.
pub struct Plan {
    /// The state an incremental check takes digests from (`None`: full).
    pub known: Option<VerifiedState>,
    /// Why the check is full (for the report).
    pub why_full: Option<String>,
    /// When the last full check ran (Unix seconds), if one is on record.
    pub last_full: Option<u64>,
}

impl Plan {
    pub fn mode(&self) -> ReportMode {
        match self.known {
            Some(_) => ReportMode::Incremental,
            None => ReportMode::Full,
        }
    }
}

impl StateFile {
    /// Opens (creating on first use) the state directory, with the checks and the
    /// host id of the reporting state (`identity.rs`).
    pub fn open(dir: &Path, host_id: Option<&str>) -> Result<StateFile, String> {
        let identity = Identity::open(dir, host_id, Path::new(MACHINE_ID))?;
        Ok(StateFile {
            dir: identity.dir,
            host_id: identity.host_id,
        })
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The kind of check to run now (Unix seconds) against `binding`.
    pub fn plan(&self, binding: &Binding, full: bool, full_every: Duration, now: u64) -> Plan {
        let full_plan = |why: String, last_full| Plan {
            known: None,
            why_full: Some(why),
            last_full,
        };
        let bytes = match self.read() {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return full_plan("no verified state yet".into(), None)
            }
            Err(error) => return full_plan(format!("verified state not used: {error}"), None),
        };
        let state = match VerifiedState::decode(&bytes, binding) {
            Ok(state) => state,
            Err(refused) => return full_plan(refused.to_string(), None),
        };
        let last_full = Some(state.last_full);
        if full {
            return full_plan("--full".into(), last_full);
        }
        let age = now.saturating_sub(state.last_full);
        if full_every.is_zero() || age >= full_every.as_secs() {
            return full_plan(
                format!(
                    "the last full check is {} old (--full-every {})",
                    humantime::format_duration(Duration::from_secs(age)),
                    humantime::format_duration(full_every)
                ),
                last_full,
            );
        }
        Plan {
            known: Some(state),
            why_full: None,
            last_full,
        }
    }

    /// The stored state's bytes, if it is what this agent wrote: a regular file (not
    /// followed if a symlink, never blocked on if a FIFO), ours, and neither group nor
    /// others may write it.
    fn read(&self) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags.bits() as i32)
            .open(self.path())
            .map_err(|error| match error.raw_os_error() {
                Some(code) if code == rustix::io::Errno::LOOP.raw_os_error() => {
                    std::io::Error::other("it is a symlink")
                }
                _ => error,
            })?;
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(std::io::Error::other("it is not a regular file"));
        }
        if meta.uid() != rustix::process::geteuid().as_raw() {
            return Err(std::io::Error::other(format!(
                "it belongs to uid {}, not to this agent",
                meta.uid()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(std::io::Error::other(format!(
                "group or others may write it (mode {:04o})",
                meta.mode() & 0o7777
            )));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Replaces the stored state.
    pub fn save(&self, state: &VerifiedState) -> std::io::Result<()> {
        write_atomic(&self.path(), &state.encode(), 0o600)
    }
}
