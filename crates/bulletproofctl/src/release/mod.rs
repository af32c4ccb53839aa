//! `update`, `rollback`, `recover`: the seed's update protocol (ARCHITECTURE.md: trust chain, the root).
//!
//! verify signature → verify hashes → stage (safe extraction, compared with the signed
//! manifest, modes and owners from it) → preflight → journal → move into
//! `install/releases/<ver>` → syncfs → activate (rename of `install/active`) → reload
//! services → post-verify (engine scan against the manifest) → on failure the previous
//! version is active again.
//!
//! Crash safety rests on three rules: a release directory is complete (synced) before
//! anything points at it; the active version changes only by one `rename(2)` of a
//! symlink followed by an fsync of its directory; and `install/txn.json` is written
//! before that rename and removed after everything else, so a run that finds it knows
//! the last one died mid-way and puts the root back on the journal's `from` version.

mod stage;
mod trust;
mod txn;
mod verify;

use stage::*;
pub use trust::*;
pub use txn::*;
pub use verify::*;

use crate::checksums::{self, ReleaseClaim};

use crate::extract::{self, Budget, Item};

use crate::frames;

use crate::layout::{fsync_dir, Config, Event, Layout, State, Txn, EMPTY_RELEASE};

use anyhow::{bail, Context};

use integrity_common::{Baseline, EntryKind, Sha256Digest};

use std::collections::BTreeMap;

use std::fs;

use std::io::{Read, Seek};

use std::os::unix::fs::PermissionsExt;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

/// Names of the verified bundle files kept with each release.
pub const RELEASE_MANIFEST: &str = "manifest.json";

pub const RELEASE_CHECKSUMS: &str = "checksums.txt";

pub const RELEASE_SIGNATURE: &str = "sig.minisig";

/// How an operation failed; the variant decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The bundle or version was refused; nothing on the root changed. Exit 1.
    #[error("refused: {0}")]
    Refused(String),
    /// Activation failed after the switch; the previous version is active again. Exit 3.
    #[error("{0}")]
    RolledBack(String),
    /// Anything else (I/O, configuration, usage). Exit 2.
    #[error(transparent)]
    Error(#[from] anyhow::Error),
}

fn refused(message: impl Into<String>) -> Failure {
    Failure::Refused(message.into())
}

/// Test hook: `BULLETPROOF_CRASH_AT=<point>` aborts the process there, with no clean-up
/// at all (as `kill -9` or a power cut would), so the crash tests can stop an operation
/// at every step. Harmless in production: it only ever kills its own process.
pub fn crash_point(point: &str) {
    if std::env::var_os("BULLETPROOF_CRASH_AT").is_some_and(|value| value == point) {
        std::process::abort();
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Takes the root's lock: one mutating command at a time. Waits up to `wait` (a guard
/// healing the core holds it for a moment), then gives up with a clear message.
pub fn lock(layout: &Layout, wait: Duration) -> anyhow::Result<nix::fcntl::Flock<fs::File>> {
    let deadline = Instant::now() + wait;
    loop {
        match try_lock(layout)? {
            Some(lock) => return Ok(lock),
            None if Instant::now() >= deadline => anyhow::bail!(
                "another bulletproofctl is changing {} (lock {})",
                layout.root.display(),
                layout.lock_file().display()
            ),
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The root's lock if it is free now.
pub fn try_lock(layout: &Layout) -> anyhow::Result<Option<nix::fcntl::Flock<fs::File>>> {
    crate::fsutil::try_flock(&layout.lock_file())
}

pub struct Report {
    pub message: String,
}

fn ensure_installed(layout: &Layout) -> anyhow::Result<String> {
    layout.active_version()?.with_context(|| {
        format!(
            "{} is not installed (run bulletproofctl install --root {})",
            layout.root.display(),
            layout.root.display()
        )
    })
}

/// What `update`, `rollback` and `recover` do first: the root must be installed (its
/// active version, returned) with its security log ready; then the config, the root's
/// lock (held until the returned guard drops) and an interrupted operation put right.
fn begin(layout: &Layout) -> Result<(String, Config, nix::fcntl::Flock<fs::File>), Failure> {
    let active = ensure_installed(layout)?;
    crate::seclog::ensure_ready(layout)?;
    let config = Config::load(layout)?;
    let held = lock(layout, Duration::from_secs(config.lock_wait_secs))?;
    for line in recover_interrupted(layout, &config)? {
        eprintln!("bulletproofctl: {line}");
    }
    Ok((active, config, held))
}

/// `update BUNDLE_DIR`.
pub fn update(layout: &Layout, bundle_dir: &Path, key: Option<&Path>) -> Result<Report, Failure> {
    let (from, config, _lock) = begin(layout)?;
    let from = layout.active_version()?.unwrap_or(from);
    let key = release_key(layout, key)?;
    let mut bundle = match verify_bundle(bundle_dir, &key) {
        Ok(bundle) => bundle,
        Err(failure) => {
            crate::oplog::record(
                layout,
                "update",
                &format!("{} {failure}", bundle_dir.display()),
            );
            return Err(failure);
        }
    };
    let version = bundle.version.clone();
    let mut state = State::load(layout)?;
    if let Some(highest) = state.highest_version() {
        if bundle.claim.version < highest {
            let message = format!(
                "version {version} is older than {highest}, the highest ever installed here (a replayed bundle?); going back is `recover --to`"
            );
            crate::oplog::record(layout, "update", &format!("refused: {message}"));
            return Err(refused(message));
        }
    }
    if from != EMPTY_RELEASE
        && semver::Version::parse(&from).ok().as_ref() == Some(&bundle.claim.version)
    {
        return Err(refused(format!("version {version} is already active")));
    }
    // Second handles on the verified files, for the archive (staging consumes the
    // archives' handles; positional reads do not share an offset).
    let verified: Vec<(String, Sha256Digest, fs::File)> = bundle
        .files
        .iter()
        .map(|(name, (digest, file))| Ok((name.clone(), *digest, file.try_clone()?)))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Failure::Error(e.into()))?;
    let (staged, manifest) = match stage_bundle(layout, &mut bundle, &config)
        .and_then(|staged| archive_bundle(layout, &bundle, &verified, &version).map(|()| staged))
    {
        Ok(staged) => staged,
        Err(failure) => {
            let _ = recover_interrupted(layout, &config);
            crate::oplog::record(layout, "update", &format!("{version}: {failure}"));
            return Err(failure);
        }
    };
    let release = layout.release(&version);
    let txn = begin_creating(layout, "update", &from, &version)?;
    if release.exists() {
        // A kept copy of this version (recovered away from earlier): replaced by the
        // freshly verified one.
        remove_tree(&release);
    }
    fs::rename(&staged, &release).context("cannot move the staged release into place")?;
    crash_point("update-moved");
    nix::unistd::syncfs(fs::File::open(&release).map_err(|e| Failure::Error(e.into()))?)
        .context("syncfs")?;
    fsync_dir(&layout.releases())?;
    switch_to(layout, &config, txn, &manifest, true)?;
    let mut state_new = State::load(layout)?;
    if state_new
        .highest_version()
        .is_none_or(|h| bundle.claim.version > h)
    {
        state_new.highest = Some(version.clone());
    }
    if from != EMPTY_RELEASE {
        state_new.previous = Some(from.clone());
    }
    let message = format!("{version} is active (was {from})");
    state_new.record(Event::new(
        "update",
        Some(&from),
        Some(&version),
        "ok",
        &message,
    ));
    state_new.record(Event::new(
        "verify",
        None,
        Some(&version),
        "ok",
        "post-update verification: the release matches its signed manifest",
    ));
    state_new.save(layout)?;
    state = state_new;
    crate::activation::record(layout, &version, "update")?;
    Txn::clear(layout)?;
    crash_point("update-done");
    prune(layout, &config, &state)?;
    crate::oplog::record(layout, "update", &message);
    Ok(Report { message })
}

/// Keeps the signed bundle of `version` under `archives/<version>/` (what `recover`
/// uses once the version is no longer kept in `install/releases`, and what the guard
/// restores from), before anything is activated. Made from `verified`, second handles
/// on the very files [`verify_bundle`] hashed, never from the bundle directory's paths
/// (whose owner could by now have swapped a file for garbage or a FIFO): each is copied
/// with positional reads into a fresh `archives/.<ver>.tmp/` (mode 0750, files 0644
/// whatever the umask), hashed while it is copied and compared with its signed checksum
/// before the directory is renamed into place; `checksums.txt` and `sig.minisig` are
/// the verified bytes themselves.
fn archive_bundle(
    layout: &Layout,
    bundle: &VerifiedBundle,
    verified: &[(String, Sha256Digest, fs::File)],
    version: &str,
) -> Result<(), Failure> {
    use integrity_common::handles;
    use std::ffi::CString;
    use std::os::fd::AsFd;
    let root = handles::open_dir(&layout.root).context("cannot open the root")?;
    let archives = handles::create_dir_all_beneath(root.as_fd(), b"archives", 0o750, None)
        .context("cannot open archives/")?;
    let done = format!("{version}/{RELEASE_CHECKSUMS}");
    if handles::stat_beneath(archives.as_fd(), done.as_bytes())
        .context("cannot inspect archives/")?
        .is_some()
    {
        return Ok(());
    }
    let temp_name = CString::new(format!(".{version}.tmp")).context("version")?;
    handles::remove_all_at(archives.as_fd(), &temp_name).context("cannot clear archives/")?;
    let temp = handles::create_dir_all_beneath(archives.as_fd(), temp_name.as_bytes(), 0o750, None)
        .context("cannot create the archive")?;
    let copied = (|| -> Result<(), Failure> {
        for (name, digest, source) in verified {
            let (mut out, out_temp) = handles::create_temp_at(temp.as_fd(), name.as_bytes())
                .with_context(|| format!("cannot archive {name}"))?;
            handles::set_owner_mode(out.as_fd(), None, 0o644)
                .with_context(|| format!("cannot archive {name}"))?;
            let actual = copy_hashed(source, &mut out)
                .and_then(|actual| out.sync_all().map(|()| actual))
                .with_context(|| format!("cannot archive {name}"))?;
            if actual != *digest {
                return Err(refused(format!(
                    "{name} changed after it was verified (SHA-256 {actual}, signed {digest}); not archived"
                )));
            }
            let name = CString::new(name.as_str()).context("name")?;
            handles::rename_at(temp.as_fd(), &out_temp, temp.as_fd(), &name)
                .context("cannot archive")?;
        }
        for (name, bytes) in [
            (c"checksums.txt", bundle.checksums.as_slice()),
            (c"sig.minisig", bundle.signature.as_bytes()),
        ] {
            handles::write_atomic_at(temp.as_fd(), name, bytes, 0o644, None)
                .context("cannot archive the signature")?;
        }
        nix::unistd::syncfs(&temp).context("syncfs")?;
        let target = CString::new(version).context("version")?;
        handles::remove_all_at(archives.as_fd(), &target).context("cannot replace the archive")?;
        handles::rename_at(archives.as_fd(), &temp_name, archives.as_fd(), &target)
            .context("cannot archive")?;
        fs::File::from(archives.try_clone().context("dup")?)
            .sync_all()
            .context("cannot fsync archives/")?;
        Ok(())
    })();
    if copied.is_err() {
        let _ = handles::remove_all_at(archives.as_fd(), &temp_name);
    }
    copied
}

/// Copies all of `source` (positional reads from its start: its offset is left alone)
/// to `out` and returns the SHA-256 of what was copied.
fn copy_hashed(source: &fs::File, out: &mut fs::File) -> std::io::Result<Sha256Digest> {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let mut hasher = integrity_common::digest::Sha256Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = match source.read_at(&mut buffer, at) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        out.write_all(&buffer[..n])?;
        at += n as u64;
    }
    Ok(hasher.finish())
}

/// `rollback`: back to the version active before the current one.
pub fn rollback(layout: &Layout, key: Option<&Path>) -> Result<Report, Failure> {
    let (_, config, _lock) = begin(layout)?;
    rollback_held(layout, &config, key)
}

/// `rollback` for a caller that already holds the root's lock (the guard).
pub fn rollback_held(
    layout: &Layout,
    config: &Config,
    key: Option<&Path>,
) -> Result<Report, Failure> {
    let state = State::load(layout)?;
    let target = state
        .previous
        .clone()
        .ok_or_else(|| refused("there is no previous version to roll back to"))?;
    drop(state);
    switch_kept(layout, config, "rollback", &target, key)
}

/// `recover --to VER`: any kept version, or one from `archives/`.
pub fn recover(layout: &Layout, version: &str, key: Option<&Path>) -> Result<Report, Failure> {
    let (_, config, _lock) = begin(layout)?;
    let parsed = checksums::parse_version(version).map_err(refused)?;
    let version = parsed.to_string();
    if layout.release(&version).is_dir() {
        return switch_kept(layout, &config, "recover", &version, key);
    }
    let archive = layout.archive(&version);
    if !archive.is_dir() {
        return Err(refused(format!(
            "version {version} is neither kept in {} nor archived in {}",
            layout.releases().display(),
            layout.archives().display()
        )));
    }
    let from = layout
        .active_version()?
        .unwrap_or_else(|| EMPTY_RELEASE.into());
    if from == version {
        return Err(refused(format!("version {version} is already active")));
    }
    let key = release_key(layout, key)?;
    let mut bundle = verify_bundle(&archive, &key)?;
    if bundle.version != version {
        return Err(refused(format!(
            "{} holds version {}, not {version}",
            archive.display(),
            bundle.version
        )));
    }
    let (staged, manifest) = match stage_bundle(layout, &mut bundle, &config) {
        Ok(staged) => staged,
        Err(failure) => {
            let _ = recover_interrupted(layout, &config);
            return Err(failure);
        }
    };
    let txn = begin_creating(layout, "recover", &from, &version)?;
    let release = layout.release(&version);
    fs::rename(&staged, &release).context("cannot move the staged release into place")?;
    nix::unistd::syncfs(fs::File::open(&release).map_err(|e| Failure::Error(e.into()))?)
        .context("syncfs")?;
    fsync_dir(&layout.releases())?;
    switch_to(layout, &config, txn, &manifest, true)?;
    finish_switch(layout, &config, "recover", &from, &version)
}

/// Opens the transaction of an `op` (update, recover) that creates `version`'s release:
/// saved to `install/txn.json` before anything changes, and handed to [`switch_to`],
/// which ends it.
fn begin_creating(layout: &Layout, op: &str, from: &str, version: &str) -> anyhow::Result<Txn> {
    let txn = Txn {
        op: op.into(),
        from: from.into(),
        to: version.into(),
        created_release: true,
    };
    txn.save(layout)?;
    Ok(txn)
}
