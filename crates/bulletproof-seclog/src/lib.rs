//! Tamper-evident security logs (DESIGN §9): the log of a bulletproof root, a crate of
//! its own so that every component that audits into it (`bulletproofctl` and its
//! guard today, the metadata-service next) shares one implementation, without
//! depending on `bulletproofctl`.
//!
//! [`SecLog::new`] takes the root directory; the paths below it are fixed (DESIGN §8):
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

fn checkpoint_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".checkpoint");
    PathBuf::from(name)
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

/// A directory of key state (`install/`, `install/logkeys/`) is trusted only when owned
/// by root (by the running user, when that is not root) and not writable by group or
/// others (the rule of [`handles::open_trusted`], which checks the files).
fn check_trusted(path: &Path, meta: &fs::Metadata) -> anyhow::Result<()> {
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
fn open_trusted(path: &Path) -> anyhow::Result<(fs::File, handles::Meta)> {
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
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    handles::write_atomic(path, bytes, mode)
        .with_context(|| format!("cannot write {}", path.display()))
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

/// Locks `install/logkeys/` (one writer of the key states at a time; the lock is on
/// the directory because each state file is replaced by a rename).
fn lock_dir(dir: &Path, exclusive: bool) -> anyhow::Result<nix::fcntl::Flock<fs::File>> {
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
struct KeyState {
    next_seq: u64,
    key: String,
    prev: String,
}

/// The security log of one bulletproof root: every path it uses, relative to the root
/// (the on-disk layout of DESIGN §8), and the operations on it.
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

    /// `install/logkeys/` as a trusted directory.
    fn check_dir(&self) -> anyhow::Result<PathBuf> {
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
    fn load_state(&self, component: &str) -> anyhow::Result<KeyState> {
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
    fn check_continues(&self, component: &str, state: &KeyState) -> anyhow::Result<()> {
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
            || (record.seq == state.next_seq && mac_of(&key, record.body.as_bytes()) == record.mac);
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
    fn check_keys_unlocked(&self) -> anyhow::Result<()> {
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
    fn start_chains(&self, master_target: &Path, components: &[&str]) -> anyhow::Result<()> {
        let mut master = [0u8; 32];
        getrandom(&mut master)?;
        write_file(
            master_target,
            format!("{}\n", hex(&master)).as_bytes(),
            0o400,
        )?;
        for component in components {
            let state = KeyState {
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
    fn previous_chain(&self, components: &[&str]) -> Option<PathBuf> {
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

    /// Appends one security record to `component`'s chain (and a human line), signs the
    /// new head as a checkpoint with the host key. Serialised by a lock on
    /// `install/logkeys/`. Fails when the key state is missing, untrusted or damaged, and
    /// when the checkpoint cannot be signed.
    pub fn append(
        &self,
        component: &str,
        event: &str,
        msg: &str,
        data: serde_json::Value,
    ) -> anyhow::Result<u64> {
        let dir = self.check_dir()?;
        let _lock = lock_dir(&dir, true)?;
        self.append_locked(component, event, msg, data)
    }

    /// [`Self::append`] for a caller holding the lock of `install/logkeys/`.
    fn append_locked(
        &self,
        component: &str,
        event: &str,
        msg: &str,
        data: serde_json::Value,
    ) -> anyhow::Result<u64> {
        let state_file = self.state_path(component);
        let mut state = self.load_state(component)?;
        let mut key = unhex(&state.key).context("log key state is corrupt")?;
        let log = self.jsonl_path(component);

        // A record written whose state update did not land (a crash in between): the log's
        // last line carries `next_seq` and verifies with the current key; move past it.
        if let Some(last) = last_line(&log)? {
            if let Ok(record) = parse_line(&last) {
                if record.seq == state.next_seq
                    && mac_of(&key, record.body.as_bytes()) == record.mac
                {
                    key = evolve(&key);
                    state = KeyState {
                        next_seq: record.seq + 1,
                        key: hex(&key),
                        prev: record.mac,
                    };
                }
            }
        }

        let ts = integrity_common::manifest::now_timestamp();
        let body = format!(
            "{{\"seq\":{},\"ts\":{},\"component\":{},\"event\":{},\"msg\":{},\"data\":{},\"prev\":\"{}\"",
            state.next_seq,
            serde_json::to_string(&ts)?,
            serde_json::to_string(component)?,
            serde_json::to_string(event)?,
            serde_json::to_string(msg)?,
            serde_json::to_string(&data)?,
            state.prev
        );
        if body.len() + 80 > MAX_LINE_BYTES {
            bail!("security record too large");
        }
        let mac = mac_of(&key, body.as_bytes());
        let line = format!("{body}{MAC_MARK}{mac}\"}}\n");
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        file.write_all(line.as_bytes())?;
        file.sync_data()?;
        crash_point("log-appended");
        let seq = state.next_seq;
        let next = KeyState {
            next_seq: seq + 1,
            key: hex(&evolve(&key)),
            prev: mac.clone(),
        };
        key.fill(0);
        write_file(&state_file, &serde_json::to_vec(&next)?, 0o600)?;

        let human = self.human_log_path(component);
        if let Ok(mut file) = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&human)
        {
            let _ = writeln!(file, "[{ts}] {event}: {}", msg.replace('\n', " "));
        }
        self.checkpoint(&log, seq, &mac, &ts).with_context(|| {
            format!("record {seq} of {component} was written, but its checkpoint was not signed")
        })?;
        Ok(seq)
    }

    /// Signs `seq:N<TAB>mac:HEX<TAB>ts:TS` with the host key and sends the same line to
    /// syslog (best effort).
    fn checkpoint(&self, log: &Path, seq: u64, mac: &str, ts: &str) -> anyhow::Result<()> {
        let text = format!(
            "seq:{seq}\tmac:{mac}\tts:{ts}\tfile:{}\n",
            log.file_name().unwrap_or_default().to_string_lossy()
        );
        open_trusted(&self.host_key())?;
        let sk = integrity_trust::load_secret_key(
            &self.host_key(),
            integrity_trust::Password::PromptIfTerminal,
        )?;
        let signature = integrity_trust::sign(&sk, text.as_bytes(), &format!("checkpoint:{seq}"))?;
        let path = checkpoint_path(log);
        let mut sig_path = path.as_os_str().to_owned();
        sig_path.push(".minisig");
        // Signature first: a crash between the two leaves a checkpoint whose signature
        // does not verify, which the verifier reports, never a forged-looking one.
        write_file(Path::new(&sig_path), signature.as_bytes(), 0o644)?;
        write_file(&path, text.as_bytes(), 0o644)?;
        if let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() {
            let message = format!(
                "<86>1 {ts} - bulletproof - checkpoint - {}",
                text.trim_end()
            );
            let _ = socket.send_to(message.as_bytes(), "/dev/log");
        }
        Ok(())
    }

    /// Logs a security event of `component`. On an installed root a record that cannot be
    /// appended is an error: said on stderr at once, and [`append_failed`] turns the
    /// command's exit status into a failure (the command ran [`Self::ensure_ready`] first, so
    /// this is a key state lost meanwhile, a full disk, …). A root not installed has no log.
    pub fn event_as(&self, component: &str, event: &str, msg: &str, data: serde_json::Value) {
        if !self.required() {
            return;
        }
        if let Err(error) = self.append(component, event, msg, data) {
            APPEND_FAILED.store(true, Ordering::SeqCst);
            eprintln!(
                "bulletproofctl: error: the security log did not record {event} ({component}): {error:#}; {}",
                self.reinit_hint()
            );
        }
    }

    /// A security event of `bulletproofctl` itself (install, update, rollback, …).
    pub fn event(&self, event: &str, msg: &str, data: serde_json::Value) {
        self.event_as("bulletproofctl", event, msg, data)
    }

    /// `log reinit`: the explicit way back after the key state was lost or damaged. Closes
    /// every component's chain (its log, checkpoint, human log, the default initial key and
    /// an unusable host key renamed `*.closed-<epoch>`, kept as evidence and still
    /// verifiable with the old initial key), makes a new initial key (to `out`, else
    /// `install/logkeys/initial.key`) and key states, and starts each chain with a
    /// `log-reinit` record naming the reason and the closed chain's last record. Run by the
    /// owner of `install/` (root), which must not be writable by group or others.
    pub fn reinit(&self, out: Option<&Path>) -> anyhow::Result<Reinit> {
        let install = self.install_dir();
        let meta = fs::symlink_metadata(&install).with_context(|| {
            format!(
                "{} is not installed ({} is missing)",
                self.root.display(),
                install.display()
            )
        })?;
        let euid = nix::unistd::geteuid();
        if !meta.is_dir() || meta.uid() != euid.as_raw() {
            bail!(
                "{} is not a directory owned by uid {} (run log reinit as root, the owner of the root's state)",
                install.display(),
                euid
            );
        }
        check_trusted(&install, &meta)?;
        let reason = self.check_keys().err().map(|e| format!("{e:#}"));
        let default_master = self.master_key_path();
        let master_target = out.map(Path::to_path_buf).unwrap_or(default_master.clone());
        if out.is_some() && fs::symlink_metadata(&master_target).is_ok() {
            bail!(
                "{} exists: give --log-key-out a new file (the old initial key verifies the closed chain)",
                master_target.display()
            );
        }
        // The epoch's name, unique among what is there.
        let base = integrity_common::manifest::now_timestamp().replace([':', '-'], "");
        let mut epoch = base.clone();
        for n in 1.. {
            let taken = COMPONENTS
                .iter()
                .any(|c| fs::symlink_metadata(closed(&self.jsonl_path(c), &epoch)).is_ok())
                || fs::symlink_metadata(closed(&self.logkeys_dir(), &epoch)).is_ok();
            if !taken {
                break;
            }
            epoch = format!("{base}-{n}");
        }
        let mut closed_files = Vec::new();

        // A trusted directory for the keys (whatever stands in its place is moved aside).
        let dir = self.logkeys_dir();
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => close(&dir, &closed(&dir, &epoch), &mut closed_files)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
        }
        if let Err(e) = fs::create_dir(&dir) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(e).with_context(|| format!("cannot create {}", dir.display()));
            }
        }
        std::os::unix::fs::chown(
            &dir,
            Some(euid.as_raw()),
            Some(nix::unistd::getegid().as_raw()),
        )?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        self.check_dir()?;
        let _lock = lock_dir(&dir, true)?;

        // Close the old chains, remembering where each ended.
        let mut previous = serde_json::Map::new();
        for component in COMPONENTS {
            let log = self.jsonl_path(component);
            let last = last_line(&log)
                .ok()
                .flatten()
                .and_then(|l| parse_line(&l).ok());
            let checkpoint = checkpoint_path(&log);
            let mut sig = checkpoint.as_os_str().to_owned();
            sig.push(".minisig");
            let closed_log = closed(&log, &epoch);
            let had_log = fs::symlink_metadata(&log).is_ok();
            close_at(&log, &epoch, &mut closed_files)?;
            // The checkpoint keeps its place beside the closed log (`log verify` finds it).
            for (from, to) in [
                (checkpoint.clone(), checkpoint_path(&closed_log)),
                (PathBuf::from(&sig), {
                    let mut to = checkpoint_path(&closed_log).into_os_string();
                    to.push(".minisig");
                    PathBuf::from(to)
                }),
            ] {
                close(&from, &to, &mut closed_files)?;
            }
            close_at(&self.human_log_path(component), &epoch, &mut closed_files)?;
            previous.insert(
                (*component).to_owned(),
                serde_json::json!({
                    "file": had_log.then(|| closed_log.display().to_string()),
                    "last_seq": last.as_ref().map(|r| r.seq),
                    "last_mac": last.as_ref().map(|r| r.mac.clone()),
                }),
            );
            // The old writer's key is erased (forward security), never reused.
            let state = self.state_path(component);
            if fs::symlink_metadata(&state).is_ok() && fs::remove_file(&state).is_err() {
                close_at(&state, &epoch, &mut closed_files)?;
            }
        }
        if out.is_none() {
            close_at(&default_master, &epoch, &mut closed_files)?;
        }
        // The host key that signs checkpoints: kept when usable, else replaced.
        let mut new_host_key = None;
        let host_key_usable = open_trusted(&self.host_key())
            .map(|(_, meta)| meta.size > 0)
            .unwrap_or(false);
        if !host_key_usable {
            close_at(&self.host_key(), &epoch, &mut closed_files)?;
            close_at(&self.host_public_key(), &epoch, &mut closed_files)?;
            new_host_key = Some(integrity_trust::keygen(
                &self.host_key(),
                &self.host_public_key(),
                None,
            )?);
        }

        // The new epoch: initial key, states, and a first record in each chain.
        self.start_chains(&master_target, COMPONENTS)?;
        let why = reason
            .clone()
            .unwrap_or_else(|| "on request (the key state was usable)".into());
        for component in COMPONENTS {
            let ended = match &previous[*component]["last_seq"] {
                serde_json::Value::Number(seq) => format!("ended at seq {seq}"),
                _ => "had no readable record".into(),
            };
            self.append_locked(
                component,
                "log-reinit",
                &format!(
                    "security log re-initialised, epoch {epoch}: {why}; the previous chain {ended} (files kept as *.closed-{epoch})"
                ),
                serde_json::json!({
                    "epoch": epoch,
                    "reason": reason,
                    "previous": previous[*component],
                    "initial_key": master_target,
                    "new_host_key": new_host_key,
                    "uid": euid.as_raw(),
                }),
            )?;
        }
        Ok(Reinit {
            epoch,
            master: master_target,
            reason,
            closed: closed_files,
            new_host_key,
        })
    }
}

fn getrandom(buf: &mut [u8]) -> anyhow::Result<()> {
    use std::io::Read;
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .context("cannot read /dev/urandom")
}

fn last_line(path: &Path) -> anyhow::Result<Option<String>> {
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

/// One parsed record line.
#[derive(Debug, Clone)]
pub struct Record {
    pub seq: u64,
    pub ts: String,
    pub prev: String,
    pub mac: String,
    pub component: String,
    pub event: String,
    /// The MACed bytes: the line up to `,"mac":`.
    body: String,
}

/// Parses a record line strictly: JSON object, MAC last.
pub fn parse_line(line: &str) -> Result<Record, String> {
    if line.len() > MAX_LINE_BYTES {
        return Err("line too long".into());
    }
    let at = line.rfind(MAC_MARK).ok_or("no mac")?;
    let (body, rest) = line.split_at(at);
    let mac = rest
        .strip_prefix(MAC_MARK)
        .and_then(|r| r.strip_suffix("\"}"))
        .ok_or("malformed mac")?;
    if unhex(mac).is_none() || mac.len() != 64 {
        return Err("malformed mac".into());
    }
    #[derive(serde::Deserialize)]
    struct Fields {
        seq: u64,
        ts: String,
        component: String,
        event: String,
        prev: String,
        mac: String,
    }
    let fields: Fields = serde_json::from_str(line).map_err(|e| format!("not a record: {e}"))?;
    if fields.mac != mac {
        return Err("malformed mac".into());
    }
    Ok(Record {
        seq: fields.seq,
        ts: fields.ts,
        prev: fields.prev,
        mac: mac.to_owned(),
        component: fields.component,
        event: fields.event,
        body: body.to_owned(),
    })
}

/// What `log verify` found.
#[derive(Debug)]
pub struct Verdict {
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub last_ts: Option<String>,
    pub component: Option<String>,
    /// `(file, line number, what is wrong)` of the first problem.
    pub problem: Option<(PathBuf, usize, String)>,
    pub notes: Vec<String>,
}

pub struct VerifyOptions {
    pub master: [u8; 32],
    /// The host public key that signs checkpoints, or why there is none: a checkpoint
    /// is then not checked, and the log is not called intact.
    pub host_key: Result<integrity_trust::PublicKey, String>,
    pub max_age_secs: Option<u64>,
    pub require_checkpoint: bool,
}

/// Verifies one chain spread over `files` (oldest first, e.g. `log.1 log`).
pub fn verify(files: &[PathBuf], options: &VerifyOptions) -> anyhow::Result<Verdict> {
    let mut verdict = Verdict {
        records: 0,
        first_seq: None,
        last_seq: None,
        last_ts: None,
        component: None,
        problem: None,
        notes: Vec::new(),
    };
    let last_file = files.last().cloned().unwrap_or_default();
    // The signed checkpoint (chain head) beside the newest file; it also names the
    // component whose chain this is.
    let checkpoint = read_checkpoint(&checkpoint_path(&last_file), options.host_key.as_ref());
    if let Ok(Some(point)) = &checkpoint {
        verdict.component = point.component.clone();
    }
    // Every record's position and seq, read loosely first: a gap whose records appear
    // further on is a reordering, not a deletion.
    let mut positions: Vec<(usize, usize, u64)> = Vec::new();
    for (file_index, file) in files.iter().enumerate() {
        let reader = std::io::BufReader::new(
            fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?,
        );
        for (index, line) in reader.split(b'\n').enumerate() {
            if let Some(record) = line
                .ok()
                .and_then(|l| String::from_utf8(l).ok())
                .and_then(|l| parse_line(&l).ok())
            {
                positions.push((file_index, index + 1, record.seq));
            }
        }
    }
    // Key for the next expected seq, and that seq.
    let mut key: Option<([u8; 32], u64)> = None;
    let mut prev_mac: Option<String> = None;
    let mut prev_line = String::new();
    'files: for (file_index, file) in files.iter().enumerate() {
        let reader = std::io::BufReader::new(
            fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?,
        );
        for (index, line) in reader.split(b'\n').enumerate() {
            let line_no = index + 1;
            let line = line?;
            let fail = |why: String| Some((file.clone(), line_no, why));
            let Ok(line) = String::from_utf8(line) else {
                verdict.problem = fail("not UTF-8: edited".into());
                break 'files;
            };
            if line.is_empty() {
                verdict.problem = fail("empty line: edited".into());
                break 'files;
            }
            let record = match parse_line(&line) {
                Ok(record) => record,
                Err(why) => {
                    verdict.problem =
                        fail(format!("malformed record ({why}): edited or truncated"));
                    break 'files;
                }
            };
            let component = verdict
                .component
                .get_or_insert_with(|| record.component.clone())
                .clone();
            if record.component != component {
                verdict.problem = fail(format!(
                    "record of component {} in {component}'s chain: inserted",
                    record.component
                ));
                break 'files;
            }
            let (mut k, mut at) = match key {
                Some(state) => state,
                None => (initial_key(&options.master, &component), 0),
            };
            if let Some(last) = verdict.last_seq {
                if record.seq <= last {
                    let why = if record.seq == last && line == prev_line {
                        format!("seq {} appears twice: duplicated", record.seq)
                    } else if record.seq == last {
                        format!("a second record with seq {}: inserted", record.seq)
                    } else {
                        format!("seq {} after seq {last}: reordered", record.seq)
                    };
                    verdict.problem = fail(why);
                    break 'files;
                }
                if record.seq > last + 1 {
                    let gap = (last + 1)..record.seq;
                    let reordered = positions
                        .iter()
                        .filter(|(f, l, _)| (*f, *l) > (file_index, line_no))
                        .any(|(_, _, seq)| gap.contains(seq));
                    if reordered {
                        verdict.problem = fail(format!(
                            "seq {} comes before seq {}..{}: reordered",
                            record.seq,
                            last + 1,
                            record.seq - 1
                        ));
                        break 'files;
                    }
                    verdict.problem = fail(format!(
                        "seq {} follows seq {last}: records {}..{} are missing (deleted)",
                        record.seq,
                        last + 1,
                        record.seq - 1
                    ));
                    break 'files;
                }
            }
            if record.seq < at {
                verdict.problem =
                    fail(format!("seq {} is behind the chain: reordered", record.seq));
                break 'files;
            }
            if record.seq - at > 100_000_000 {
                verdict.problem = fail("implausible sequence number: edited".into());
                break 'files;
            }
            while at < record.seq {
                k = evolve(&k);
                at += 1;
            }
            if mac_of(&k, record.body.as_bytes()) != record.mac {
                verdict.problem = fail(format!(
                    "seq {}: the MAC does not verify under its key (edited, or forged without the key of that time)",
                    record.seq
                ));
                break 'files;
            }
            match &prev_mac {
                Some(prev) if *prev != record.prev => {
                    verdict.problem = fail(format!(
                        "seq {}: does not chain to the record before it (inserted or reordered)",
                        record.seq
                    ));
                    break 'files;
                }
                None if record.seq == 0 && record.prev != ZERO_MAC => {
                    verdict.problem = fail("seq 0 does not start a chain: edited".into());
                    break 'files;
                }
                _ => {}
            }
            if verdict.first_seq.is_none() {
                verdict.first_seq = Some(record.seq);
                if record.seq > 0 {
                    verdict.notes.push(format!(
                        "starts at seq {} (the records before it are in a rotated file; give it first to check continuity)",
                        record.seq
                    ));
                }
            }
            if let Ok(Some(point)) = &checkpoint {
                if point.seq == record.seq && point.mac != record.mac {
                    verdict.problem = fail(format!(
                        "seq {} differs from the signed checkpoint: edited (rewritten after the checkpoint was signed)",
                        record.seq
                    ));
                    break 'files;
                }
            }
            verdict.records += 1;
            verdict.last_seq = Some(record.seq);
            prev_line = line.clone();
            verdict.last_ts = Some(record.ts.clone());
            prev_mac = Some(record.mac.clone());
            key = Some((evolve(&k), record.seq + 1));
        }
    }
    if verdict.problem.is_some() {
        return Ok(verdict);
    }
    let lines_in_last = count_lines(&last_file);
    // The checkpoint: the signed head must be in the chain.
    match checkpoint {
        Ok(Some(point)) => {
            let seq = point.seq;
            match verdict.last_seq {
                None => {
                    verdict.problem = Some((last_file.clone(), 0, format!(
                        "no records, but the signed checkpoint names seq {seq}: emptied (or rotated with nothing written since)"
                    )));
                }
                Some(last) if last < seq => {
                    verdict.problem = Some((last_file.clone(), lines_in_last + 1, format!(
                        "the log ends at seq {last} but the signed checkpoint names seq {seq}: truncated tail"
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(None) if options.require_checkpoint && verdict.records > 0 => {
            verdict.problem = Some((
                last_file.clone(),
                0,
                "the signed checkpoint is missing (deleted?); the tail cannot be vouched for"
                    .into(),
            ));
        }
        Ok(None) => {}
        Err(why) => {
            verdict.problem = Some((last_file.clone(), 0, format!("checkpoint: {why}")));
        }
    }
    if verdict.records == 0 && verdict.problem.is_none() {
        verdict.problem = Some((last_file.clone(), 0, "no records: emptied".into()));
    }
    if let (None, Some(max_age), Some(ts)) =
        (&verdict.problem, options.max_age_secs, &verdict.last_ts)
    {
        let age = humantime::parse_rfc3339(ts)
            .ok()
            .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
            .map(|d| d.as_secs())
            .unwrap_or(u64::MAX);
        if age > max_age {
            verdict.problem = Some((last_file, lines_in_last + 1, format!(
                "the last record is {age} s old (more than {max_age} s): the tail was cut off or its writer stopped"
            )));
        }
    }
    Ok(verdict)
}

fn count_lines(path: &Path) -> usize {
    fs::File::open(path)
        .map(|f| std::io::BufReader::new(f).split(b'\n').count())
        .unwrap_or(0)
}

/// A signed chain head.
struct Checkpoint {
    seq: u64,
    mac: String,
    /// The chain's component, from the checkpoint's `file:<component>.jsonl`.
    component: Option<String>,
}

/// `Ok(None)`: no checkpoint file. A checkpoint whose signature cannot be checked (no
/// host key) is an error, never taken on trust.
fn read_checkpoint(
    path: &Path,
    host_key: Result<&integrity_trust::PublicKey, &String>,
) -> Result<Option<Checkpoint>, String> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let key = host_key.map_err(|why| {
        format!(
            "{}: its signature cannot be checked, no host public key ({why}; give --host-key): not vouched for",
            path.display()
        )
    })?;
    let mut sig_path = path.as_os_str().to_owned();
    sig_path.push(".minisig");
    let signature = fs::read_to_string(&sig_path)
        .map_err(|e| format!("{}: signature missing: {e}", path.display()))?;
    integrity_trust::verify(key, &text, &signature, false)
        .map_err(|e| format!("{}: signature: {e}", path.display()))?;
    let text = String::from_utf8(text).map_err(|_| "not text".to_string())?;
    let mut seq = None;
    let mut mac = None;
    let mut component = None;
    for token in text.trim_end().split('\t') {
        if let Some(value) = token.strip_prefix("seq:") {
            seq = value.parse().ok();
        } else if let Some(value) = token.strip_prefix("mac:") {
            mac = Some(value.to_owned());
        } else if let Some(value) = token.strip_prefix("file:") {
            component = value.strip_suffix(".jsonl").map(str::to_owned);
        }
    }
    match (seq, mac) {
        (Some(seq), Some(mac)) => Ok(Some(Checkpoint {
            seq,
            mac,
            component,
        })),
        _ => Err("malformed".into()),
    }
}

/// Reads a master key file (64 hex digits).
pub fn read_master(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read the initial log key {}", path.display()))?;
    unhex(&text).with_context(|| format!("{} is not a log key (64 hex digits)", path.display()))
}

/// What [`SecLog::reinit`] did.
#[derive(Debug)]
pub struct Reinit {
    /// The time that names the closed chain's files (`*.closed-<epoch>`).
    pub epoch: String,
    /// Where the new initial key went.
    pub master: PathBuf,
    /// Why the old key state could not be used (`None`: it could; a key rotation).
    pub reason: Option<String>,
    /// The closed chain's files, under their new names.
    pub closed: Vec<PathBuf>,
    /// The id of a host key made because the old one was missing or untrusted.
    pub new_host_key: Option<String>,
}

/// Renames `from` to `to` when it is there, noting it in `list`.
fn close(from: &Path, to: &Path, list: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if fs::symlink_metadata(from).is_ok() {
        fs::rename(from, to)
            .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
        list.push(to.to_path_buf());
    }
    Ok(())
}

/// Renames `path` to `<path>.closed-<epoch>` when it is there.
fn close_at(path: &Path, epoch: &str, list: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    close(path, &closed(path, epoch), list)
}

/// `path` with `.closed-<epoch>` appended.
fn closed(path: &Path, epoch: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".closed-{epoch}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evolution_is_one_way_and_deterministic() {
        let k0 = initial_key(&[7; 32], "guard");
        assert_ne!(k0, initial_key(&[7; 32], "bulletproofctl"));
        assert_eq!(evolve(&k0), evolve(&k0));
        assert_ne!(evolve(&k0), k0);
    }

    #[test]
    fn parse_refuses_garbage() {
        assert!(parse_line("{}").is_err());
        assert!(parse_line("x,\"mac\":\"zz\"}").is_err());
    }

    #[test]
    fn paths_are_those_of_the_root() {
        let log = SecLog::new(Path::new("/opt/x"));
        assert_eq!(log.root(), Path::new("/opt/x"));
        assert_eq!(log.install_dir(), Path::new("/opt/x/install"));
        assert_eq!(log.logkeys_dir(), Path::new("/opt/x/install/logkeys"));
        assert_eq!(
            log.state_path("guard"),
            Path::new("/opt/x/install/logkeys/guard.state")
        );
        assert_eq!(
            log.master_key_path(),
            Path::new("/opt/x/install/logkeys/initial.key")
        );
        assert_eq!(log.host_key(), Path::new("/opt/x/install/host.key"));
        assert_eq!(log.host_public_key(), Path::new("/opt/x/install/host.pub"));
        assert_eq!(
            log.jsonl_path("guard"),
            Path::new("/opt/x/logs/security/guard.jsonl")
        );
        assert_eq!(
            log.human_log_path("guard"),
            Path::new("/opt/x/logs/security/guard.log")
        );
    }

    /// An installed root in a temporary directory: key states, host key, log dir.
    fn installed() -> (tempfile::TempDir, SecLog) {
        let dir = tempfile::tempdir().unwrap();
        let log = SecLog::new(dir.path());
        fs::create_dir(log.install_dir()).unwrap();
        fs::set_permissions(log.install_dir(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(dir.path().join("logs/security")).unwrap();
        assert!(log.init_keys(None, COMPONENTS).unwrap().is_some());
        integrity_trust::keygen(&log.host_key(), &log.host_public_key(), None).unwrap();
        (dir, log)
    }

    fn verify_chain(log: &SecLog, component: &str) -> Verdict {
        verify(
            &[log.jsonl_path(component)],
            &VerifyOptions {
                master: read_master(&log.master_key_path()).unwrap(),
                host_key: integrity_trust::load_public_key(&log.host_public_key())
                    .map_err(|e| e.to_string()),
                max_age_secs: None,
                require_checkpoint: true,
            },
        )
        .unwrap()
    }

    #[test]
    fn a_root_not_installed_keeps_no_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = SecLog::new(dir.path());
        log.ensure_ready().unwrap();
        log.event("nothing", "not installed", serde_json::json!({}));
        assert!(!append_failed());
        assert!(!log.jsonl_path("bulletproofctl").exists());
    }

    #[test]
    fn appends_verify_and_the_state_fails_closed() {
        let (_dir, log) = installed();
        log.ensure_ready().unwrap();
        for n in 0..3u64 {
            let seq = log
                .append("guard", "heartbeat", "ok", serde_json::json!({ "n": n }))
                .unwrap();
            assert_eq!(seq, n);
        }
        let verdict = verify_chain(&log, "guard");
        assert!(verdict.problem.is_none(), "{verdict:?}");
        assert_eq!((verdict.first_seq, verdict.last_seq), (Some(0), Some(2)));
        assert_eq!(verdict.component.as_deref(), Some("guard"));
        assert_eq!(
            fs::metadata(log.state_path("guard")).unwrap().mode() & 0o7777,
            0o600
        );
        // A second installation does not start a new chain.
        assert!(log.init_keys(None, COMPONENTS).unwrap().is_none());

        let state = log.state_path("guard");
        fs::set_permissions(&state, fs::Permissions::from_mode(0o666)).unwrap();
        let error = format!("{:#}", log.ensure_ready().unwrap_err());
        assert!(error.contains("key state is missing or damaged"), "{error}");
        assert!(error.contains("untrusted"), "{error}");
        assert!(log
            .append("guard", "x", "x", serde_json::json!({}))
            .is_err());
        fs::set_permissions(&state, fs::Permissions::from_mode(0o600)).unwrap();
        log.check_keys().unwrap();

        // A stale state (one record behind is a crash; two is not) does not continue.
        let old = fs::read(&state).unwrap();
        log.append("guard", "heartbeat", "ok", serde_json::json!({}))
            .unwrap();
        log.append("guard", "heartbeat", "ok", serde_json::json!({}))
            .unwrap();
        write_file(&state, &old, 0o600).unwrap();
        let error = format!("{:#}", log.check_keys().unwrap_err());
        assert!(error.contains("does not continue"), "{error}");

        fs::remove_file(&state).unwrap();
        let error = format!("{:#}", log.check_keys().unwrap_err());
        assert!(error.contains("guard.state is missing"), "{error}");
    }

    #[test]
    fn reinit_starts_a_new_verifiable_epoch() {
        let (_dir, log) = installed();
        log.append("bulletproofctl", "install", "done", serde_json::json!({}))
            .unwrap();
        fs::remove_file(log.state_path("bulletproofctl")).unwrap();
        let done = log.reinit(None).unwrap();
        assert!(
            done.reason.as_deref().unwrap().contains("missing"),
            "{done:?}"
        );
        assert!(done
            .closed
            .iter()
            .any(|c| c.ends_with(format!("bulletproofctl.jsonl.closed-{}", done.epoch))));
        for component in COMPONENTS {
            let verdict = verify_chain(&log, component);
            assert!(verdict.problem.is_none(), "{component}: {verdict:?}");
            assert_eq!(verdict.records, 1);
            let first = fs::read_to_string(log.jsonl_path(component)).unwrap();
            assert_eq!(parse_line(first.trim_end()).unwrap().event, "log-reinit");
        }
        log.ensure_ready().unwrap();
    }
}
