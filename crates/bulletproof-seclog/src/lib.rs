//! Tamper-evident security logs (REFERENCE §6): the log of a bulletproof root, a crate of
//! its own so that every component that audits into it (`bulletproofctl` and its
//! guard today, the metadata-service next) shares one implementation, without
//! depending on `bulletproofctl`.
//!
//! [`SecLog::new`] takes the root directory; the paths below it are fixed (ARCHITECTURE.md: the root):
//! `install/logkeys/` (key states, the initial key), `install/host.key` and
//! `install/host.pub` (the checkpoint signer), `logs/security/` (the chains).
//!
//! Each component (`bulletproofctl`, `guard`) appends to `logs/security/<c>.jsonl`, one
//! JSON object per line, and a human line to `logs/security/<c>.log`:
//!
//! ```text
//! {"seq":7,"ts":"…","component":"guard","event":"heal","msg":"…","data":{…},"prev":"<mac 6>","mac":"<hex>"}
//! ```
//!
//! * `mac` = HMAC-SHA256 under the record's key over the line's bytes up to (not
//!   including) `,"mac":`; `prev` is the previous record's `mac` (64 zeros for seq 0), so
//!   records are chained as well as numbered.
//! * **Forward security**: record `i` is keyed with `k_i`, and `k_{i+1} =
//!   SHA-256("bulletproof-log-evolve-v1" ‖ k_i)`; the writer keeps only the current key
//!   (`install/logkeys/<c>.state`), overwriting the old one. Someone who steals the key
//!   today holds `k_n` and cannot compute `k_{n-1}`: earlier records cannot be forged.
//! * The verifier starts from the **initial key** (`k_0` of a component is
//!   HMAC-SHA256(master, "bulletproof-log-v1:" ‖ component)), made at `install` and meant
//!   to be kept off the host (`install --log-key-out`).
//! * **Checkpoints**: after each record the chain head (`seq`, `mac`) is signed with the
//!   host key into `<c>.jsonl.checkpoint` (+ `.minisig`); a log cut below it shows. The
//!   guard writes a heartbeat record every cycle, so a tail cut after the last checkpoint
//!   shows as a stale log (`log verify --max-age`).
//! * **Rotation**: a file may start at any `seq` (the records before it are in the
//!   rotated file); `logrotate … copytruncate` keeps the chain verifiable, and
//!   `log verify OLD NEW` checks continuity across files.
//!
//! * **Fail closed**: on an installed root (its `install/` exists) the key state must be
//!   there and trusted: `install/logkeys/` a directory, every `<c>.state` a regular file
//!   that parses and continues its log's last record, `install/host.key` present; all
//!   owned by root (by the running user when that is not root) and not writable by group
//!   or others. [`SecLog::ensure_ready`] checks that before a security-relevant
//!   command changes anything, and refuses otherwise; the guard reports it as drift; a
//!   failed append is an error ([`append_failed`]). The way back is explicit:
//!   [`SecLog::reinit`] (`log reinit`) closes the old chain (its files kept as
//!   `*.closed-<time>`) and starts a new epoch whose first record says why.
//! * **Crash tests**: `BULLETPROOF_CRASH_AT=log-appended` ([`CRASH_ENV`]) aborts an
//!   append between the record and its key state update.
//!
//! Limits, stated: a thief of the *current* key can append records that verify (forward
//! security protects the past), and a root intruder can also use the host key; the
//! checkpoint is also sent to syslog so a copy of the head leaves the host.

use anyhow::{bail, Context};
use hmac::{KeyInit, Mac};
use integrity_common::handles;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

mod append;
mod keys;
mod reinit;
#[cfg(test)]
mod tests;
mod verify;

pub use append::MAX_BATCH;
use append::*;
pub use keys::*;
pub use reinit::*;
pub use verify::*;

type HmacSha256 = hmac::Hmac<Sha256>;

const ZERO_MAC: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const MAC_MARK: &str = ",\"mac\":\"";

/// A record line longer than this is refused by the verifier (and never written).
pub const MAX_LINE_BYTES: usize = 64 << 10;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let digest = integrity_common::Sha256Digest::from_hex(text.trim())?;
    Some(digest.0)
}

/// `k_{i+1}` from `k_i` (one-way).
pub fn evolve(key: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"bulletproof-log-evolve-v1");
    hasher.update(key);
    hasher.finalize().into()
}

/// `k_0` of `component` from the master initial key.
pub fn initial_key(master: &[u8; 32], component: &str) -> [u8; 32] {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(master).expect("any key length");
    mac.update(b"bulletproof-log-v1:");
    mac.update(component.as_bytes());
    mac.finalize().into_bytes().into()
}

fn mac_of(key: &[u8; 32], body: &[u8]) -> String {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(body);
    hex(&mac.finalize().into_bytes())
}

/// The components that keep a security chain.
pub const COMPONENTS: &[&str] = &["bulletproofctl", "guard"];

/// Set when a security record could not be appended (see [`SecLog::event_as`]).
static APPEND_FAILED: AtomicBool = AtomicBool::new(false);

/// Whether a security record of this process could not be appended: the command must
/// not report success.
pub fn append_failed() -> bool {
    APPEND_FAILED.load(Ordering::SeqCst)
}

/// The environment variable of the crash-test hook (the same one `bulletproofctl`'s
/// release steps use): `BULLETPROOF_CRASH_AT=log-appended` aborts the process right
/// after a record was written and synced, before the key state moves on.
pub const CRASH_ENV: &str = "BULLETPROOF_CRASH_AT";

/// Test hook: aborts the process at `point` when [`CRASH_ENV`] names it, with no
/// clean-up at all (as `kill -9` or a power cut would). Harmless in production: it
/// only ever kills its own process.
fn crash_point(point: &str) {
    if std::env::var_os(CRASH_ENV).is_some_and(|value| value == point) {
        std::process::abort();
    }
}

/// The security log of one bulletproof root: every path it uses, relative to the root
/// (the on-disk layout of ARCHITECTURE.md: the root), and the operations on it.
#[derive(Debug, Clone)]
pub struct SecLog {
    root: PathBuf,
}

impl SecLog {
    /// The security log of the root at `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    /// The root this log belongs to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `install/`: the root is installed (and must keep a security log) when it exists.
    pub fn install_dir(&self) -> PathBuf {
        self.root.join("install")
    }

    /// `install/logkeys/`: the key states (and, by default, the initial key).
    pub fn logkeys_dir(&self) -> PathBuf {
        self.root.join("install/logkeys")
    }

    /// `install/logkeys/<component>.state`: the writer's current key.
    pub fn state_path(&self, component: &str) -> PathBuf {
        self.root.join(format!("install/logkeys/{component}.state"))
    }

    /// `install/logkeys/initial.key`: the master initial key, unless put elsewhere.
    pub fn master_key_path(&self) -> PathBuf {
        self.root.join("install/logkeys/initial.key")
    }

    /// `install/host.key`: the host key that signs checkpoints.
    pub fn host_key(&self) -> PathBuf {
        self.root.join("install/host.key")
    }

    /// `install/host.pub`: its public half.
    pub fn host_public_key(&self) -> PathBuf {
        self.root.join("install/host.pub")
    }

    /// `logs/security/<component>.jsonl`: the chain.
    pub fn jsonl_path(&self, component: &str) -> PathBuf {
        self.root.join(format!("logs/security/{component}.jsonl"))
    }

    /// `logs/security/<component>.log`: the human log beside it.
    pub fn human_log_path(&self, component: &str) -> PathBuf {
        self.root.join(format!("logs/security/{component}.log"))
    }

    /// Whether the root must keep a security log: it is installed (`install/` exists).
    fn required(&self) -> bool {
        fs::symlink_metadata(self.install_dir()).is_ok()
    }

    /// What the operator does about a missing or damaged key state.
    pub fn reinit_hint(&self) -> String {
        format!(
            "re-initialise the security log explicitly with `bulletproofctl log reinit --root {}` (a new epoch, itself logged)",
            self.root.display()
        )
    }
}
