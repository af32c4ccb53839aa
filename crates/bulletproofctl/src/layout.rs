//! The bulletproof tree under a root (ARCHITECTURE.md: the root) and the small files that describe its
//! state: where everything lives, the root's configuration, the updater's state and
//! the journal of an operation in progress.
//!
//! ```text
//! ROOT/core     -> install/active/core      (symlinks made by `install`, never moved)
//! ROOT/modules  -> install/active/modules
//! ROOT/install/active -> releases/<ver>     (the single rename that activates a version)
//! ROOT/install/releases/<ver>/{core,modules,manifest.json,checksums.txt,sig.minisig}
//! ROOT/install/stage/<ver>.<nonce>/         (extraction, preflight; never active)
//! ROOT/install/{bulletproof.toml,state.json,txn.json,release.pub,lock}
//! ROOT/archives/<ver>/                       (the signed bundle as it arrived)
//! ```

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// The pseudo-release active right after `install`: empty core and modules, so the
/// seed's `core/` and `modules/` exist before the first update. Never a rollback target.
pub const EMPTY_RELEASE: &str = "none";

/// Paths of one bulletproof root.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }
    pub fn install(&self) -> PathBuf {
        self.path("install")
    }
    pub fn releases(&self) -> PathBuf {
        self.path("install/releases")
    }
    pub fn release(&self, version: &str) -> PathBuf {
        self.releases().join(version)
    }
    pub fn stage(&self) -> PathBuf {
        self.path("install/stage")
    }
    pub fn active_link(&self) -> PathBuf {
        self.path("install/active")
    }
    pub fn config_file(&self) -> PathBuf {
        self.path("install/bulletproof.toml")
    }
    pub fn state_file(&self) -> PathBuf {
        self.path("install/state.json")
    }
    pub fn txn_file(&self) -> PathBuf {
        self.path("install/txn.json")
    }
    pub fn pinned_key(&self) -> PathBuf {
        self.path("install/release.pub")
    }
    pub fn host_key(&self) -> PathBuf {
        self.path("install/host.key")
    }
    pub fn host_public_key(&self) -> PathBuf {
        self.path("install/host.pub")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.path("install/lock")
    }
    pub fn archives(&self) -> PathBuf {
        self.path("archives")
    }
    pub fn archive(&self, version: &str) -> PathBuf {
        self.archives().join(version)
    }
    pub fn ops_log_dir(&self) -> PathBuf {
        self.path("logs/ops")
    }

    /// The version `install/active` points at (`none` before the first update), or
    /// `None` when the root has not been installed.
    pub fn active_version(&self) -> anyhow::Result<Option<String>> {
        let link = self.active_link();
        match fs::read_link(&link) {
            Ok(target) => {
                let name = target
                    .strip_prefix("releases")
                    .ok()
                    .and_then(|rest| rest.to_str())
                    .filter(|name| !name.is_empty() && !name.contains('/'))
                    .with_context(|| {
                        format!(
                            "{} points at {}, not at a release",
                            link.display(),
                            target.display()
                        )
                    })?;
                Ok(Some(name.to_owned()))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("cannot read {}", link.display())),
        }
    }

    /// Versions kept side by side under `install/releases`, highest first.
    pub fn kept_versions(&self) -> anyhow::Result<Vec<semver::Version>> {
        versions_in(&self.releases())
    }

    /// Versions whose signed bundle is kept under `archives/`, highest first.
    pub fn archived_versions(&self) -> anyhow::Result<Vec<semver::Version>> {
        versions_in(&self.archives())
    }
}

fn versions_in(dir: &Path) -> anyhow::Result<Vec<semver::Version>> {
    let mut versions = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(versions),
        Err(error) => return Err(error).with_context(|| format!("cannot list {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        if let Some(version) = entry
            .file_name()
            .to_str()
            .and_then(|name| semver::Version::parse(name).ok())
        {
            versions.push(version);
        }
    }
    versions.sort_by(|a, b| b.cmp(a));
    Ok(versions)
}

/// `install/bulletproof.toml`: root-owned, so a command run as root can trust it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Versions kept side by side (the active one included); older ones are removed
    /// from `install/releases` and stay recoverable from `archives/`.
    pub keep_versions: usize,
    /// systemd units reloaded or restarted after an activation (when systemd runs).
    pub services: Vec<String>,
    /// Command run after an activation when systemd is not running (argv, no shell).
    pub restart_command: Vec<String>,
    /// Upper bound of a release's extracted size (core + modules), in bytes.
    pub max_release_bytes: u64,
    /// Upper bound of a release's entry count (core + modules).
    pub max_entries: u64,
    /// A bundle's own preflight gets this long before it is killed and the bundle refused.
    pub preflight_timeout_secs: u64,
    /// How long update, rollback and recover wait for the root's lock (held by another
    /// command, or for a moment by the guard while it heals) before giving up.
    pub lock_wait_secs: u64,
    /// The guard's full verification interval, in seconds (events are handled at once).
    pub guard_interval_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            keep_versions: 3,
            services: Vec::new(),
            restart_command: Vec::new(),
            max_release_bytes: 16 << 30,
            max_entries: 1_000_000,
            preflight_timeout_secs: 300,
            lock_wait_secs: 10,
            guard_interval_secs: 60,
        }
    }
}

impl Config {
    pub const TEMPLATE: &'static str = "\
# bulletproofctl: configuration of this root (root-owned; read by every command).

# Versions kept side by side under install/releases (the active one included). Older
# versions are removed there and stay recoverable from archives/ (recover --to).
keep_versions = 3

# systemd units reloaded or restarted after a version is activated (when systemd runs).
services = []

# Without systemd: a command (argv, no shell) run after each activation instead.
restart_command = []

# Bounds on what one release may extract to (a zstd bomb is refused, not unpacked).
max_release_bytes = 17179869184
max_entries = 1000000

# Seconds a bundle's own preflight may run before it is killed and the bundle refused.
preflight_timeout_secs = 300

# Seconds update, rollback and recover wait for the root's lock before giving up.
lock_wait_secs = 10

# The guard verifies the whole active release this often (seconds); filesystem events
# are handled as they come.
guard_interval_secs = 60
";

    /// Reads the root's configuration; defaults when the file does not exist.
    pub fn load(layout: &Layout) -> anyhow::Result<Self> {
        let path = layout.config_file();
        let Some(bytes) = read_trusted(&path)? else {
            return Ok(Self::default());
        };
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("{} is not UTF-8", path.display()))?;
        let config: Self =
            toml::from_str(&text).with_context(|| format!("{} is invalid", path.display()))?;
        if config.keep_versions < 2 {
            anyhow::bail!(
                "{}: keep_versions must be at least 2 (the active version and one to roll back to)",
                path.display()
            );
        }
        Ok(config)
    }
}

/// One operation's outcome, as `status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    pub at: String,
    pub op: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub result: String,
    pub detail: String,
}

impl Event {
    pub fn new(op: &str, from: Option<&str>, to: Option<&str>, result: &str, detail: &str) -> Self {
        Self {
            at: integrity_common::manifest::now_timestamp(),
            op: op.into(),
            from: from.map(Into::into),
            to: to.map(Into::into),
            result: result.into(),
            detail: detail.into(),
        }
    }
}

/// `install/state.json`: what the updater must remember between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// The highest version ever installed on this root: `update` refuses anything
    /// below it (a replayed older bundle, however validly signed).
    pub highest: Option<String>,
    /// The version active before the current one (`rollback`'s target).
    pub previous: Option<String>,
    pub last_update: Option<Event>,
    pub last_verification: Option<Event>,
    /// The newest operations, newest last (bounded).
    pub history: Vec<Event>,
}

const HISTORY_LIMIT: usize = 50;

impl State {
    pub fn load(layout: &Layout) -> anyhow::Result<Self> {
        let path = layout.state_file();
        match read_trusted(&path)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is corrupt", path.display())),
            None => Ok(Self::default()),
        }
    }

    pub fn save(&self, layout: &Layout) -> anyhow::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        write_atomically(&layout.state_file(), &bytes, 0o644)
    }

    pub fn highest_version(&self) -> Option<semver::Version> {
        self.highest
            .as_deref()
            .and_then(|text| semver::Version::parse(text).ok())
    }

    pub fn record(&mut self, event: Event) {
        if event.op == "verify" {
            self.last_verification = Some(event.clone());
        } else {
            self.last_update = Some(event.clone());
        }
        self.history.push(event);
        if self.history.len() > HISTORY_LIMIT {
            let excess = self.history.len() - HISTORY_LIMIT;
            self.history.drain(..excess);
        }
    }
}

/// `install/txn.json`: written before an activation changes anything, removed when it
/// is complete. Its presence at start-up means the last run died in between, and the
/// root is put back on `from`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Txn {
    pub op: String,
    pub from: String,
    pub to: String,
    /// `to`'s release directory was created by this operation (removed on clean-up).
    pub created_release: bool,
}

impl Txn {
    pub fn load(layout: &Layout) -> anyhow::Result<Option<Self>> {
        let path = layout.txn_file();
        match read_trusted(&path)? {
            Some(bytes) => {
                Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                    format!("{} is corrupt", path.display())
                })?))
            }
            None => Ok(None),
        }
    }

    pub fn save(&self, layout: &Layout) -> anyhow::Result<()> {
        write_atomically(&layout.txn_file(), &serde_json::to_vec(self)?, 0o644)
    }

    pub fn clear(layout: &Layout) -> anyhow::Result<()> {
        match fs::remove_file(layout.txn_file()) {
            Ok(()) => fsync_dir(&layout.install()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

pub use crate::fsutil::{fsync_dir, read_trusted, write_atomically};
