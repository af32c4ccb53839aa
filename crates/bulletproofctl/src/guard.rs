//! `guard`: keeps the active release equal to its signed manifest (DESIGN §8).
//!
//! A cycle: verify (the whole release every `guard_interval_secs`, or only the paths
//! inotify reported) → on drift, a security record, then under the root's lock (never
//! while an update holds it): move what changed or appeared into
//! `state/quarantine/<time>/` with an `evidence.jsonl` line each, restore the exact
//! entries from the active version's signed archive (`archives/<ver>/`, each restored
//! file checked against the manifest's SHA-256 before it is renamed into place), fix
//! modes and owners, restart the services, verify again. When the release cannot be
//! restored (archive missing or not matching), roll back to the previous version.
//!
//! One guard per root (`install/guard.lock`). The guard writes through a private mount
//! namespace when the releases are mounted read-only (see `mounts`).

use crate::layout::{Config, Layout, EMPTY_RELEASE};
use crate::release::{self, Failure};
use crate::seclog;
use anyhow::Context;
use integrity_common::{AnomalyKind, Baseline, EntryKind, FileIntegrityEntry};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one cycle found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Intact,
    /// Nothing is active yet (`none`).
    Idle,
    Healed(usize),
    RolledBack(String),
    /// An update holds the root's lock: the cycle is retried after it.
    Busy,
    Failed(String),
}

/// One difference between the release on disk and its manifest.
#[derive(Debug, Clone)]
struct Drift {
    path: Vec<u8>,
    kind: AnomalyKind,
}

pub struct Guard {
    layout: Layout,
    key: Option<PathBuf>,
}

fn guard_lock(layout: &Layout) -> anyhow::Result<nix::fcntl::Flock<fs::File>> {
    let path = layout.path("install/guard.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {} (is the root installed?)", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        anyhow::anyhow!(
            "another guard is running on {} (lock {})",
            layout.root.display(),
            path.display()
        )
    })
}

/// The manifest entries of a release, by path.
fn expected_entries(manifest: &Baseline) -> BTreeMap<Vec<u8>, FileIntegrityEntry> {
    manifest
        .entries
        .iter()
        .map(|e| (e.path.to_vec(), e.clone()))
        .collect()
}

fn as_root_or_self(mut entry: FileIntegrityEntry) -> FileIntegrityEntry {
    if !nix::unistd::geteuid().is_root() {
        entry.uid = nix::unistd::geteuid().as_raw();
        entry.gid = nix::unistd::getegid().as_raw();
    }
    entry
}

/// Scans `path` (relative to the release, manifest form `/core/...`) as the engine
/// would: a whole subtree for a directory, one entry otherwise, none when absent.
fn actual_entries(release: &Path, path: &[u8]) -> Vec<FileIntegrityEntry> {
    let disk = release.join(std::ffi::OsStr::from_bytes(&path[1..]));
    let Ok(meta) = fs::symlink_metadata(&disk) else {
        return Vec::new();
    };
    if meta.is_dir() {
        let options = integrity_common::ScanOptions {
            root: disk,
            exclusions: integrity_common::Exclusions::none(),
            cross_filesystems: false,
            policy: None,
        };
        let prefix = String::from_utf8_lossy(path).into_owned();
        return integrity_common::scan(&options, &Default::default())
            .map(|output| {
                output
                    .entries
                    .into_iter()
                    .map(|mut e| {
                        e.path = crate::bundle::reroot(&prefix, &e.path);
                        e
                    })
                    .collect()
            })
            .unwrap_or_default();
    }
    use std::os::unix::fs::FileTypeExt;
    let file_type = meta.file_type();
    let kind = if file_type.is_symlink() {
        EntryKind::Symlink
    } else if file_type.is_file() {
        EntryKind::File
    } else if file_type.is_fifo() {
        EntryKind::Fifo
    } else if file_type.is_socket() {
        EntryKind::Socket
    } else if file_type.is_char_device() {
        EntryKind::Char
    } else {
        EntryKind::Block
    };
    let (sha256, size, target) = match kind {
        EntryKind::File => {
            let digest = fs::File::open(&disk)
                .ok()
                .and_then(|f| crate::bundle::hash_reader(f).ok());
            (digest, Some(meta.len()), None)
        }
        EntryKind::Symlink => {
            let target = fs::read_link(&disk)
                .map(|t| t.as_os_str().as_bytes().to_vec())
                .unwrap_or_default();
            (
                Some(integrity_common::Sha256Digest::of(&target)),
                None,
                Some(target.into_boxed_slice()),
            )
        }
        _ => (None, None, None),
    };
    vec![FileIntegrityEntry {
        path: path.to_vec().into_boxed_slice(),
        sha256,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        kind,
        size,
        target,
        rdev: None,
    }]
}

/// Compares `scope` (manifest paths; `None` = the whole release) with the manifest.
fn find_drift(
    release: &Path,
    manifest: &Baseline,
    scope: Option<&BTreeSet<Vec<u8>>>,
) -> Vec<Drift> {
    let roots: Vec<Vec<u8>> = match scope {
        None => vec![b"/core".to_vec(), b"/modules".to_vec()],
        Some(paths) => {
            // Drop paths below another path of the set: the subtree scan covers them.
            let mut roots: Vec<Vec<u8>> = Vec::new();
            for path in paths {
                if !roots
                    .iter()
                    .any(|r| path.starts_with(r) && path.get(r.len()) == Some(&b'/'))
                {
                    roots.push(path.clone());
                }
            }
            roots
        }
    };
    let mut drift = Vec::new();
    for root in roots {
        let expected: Vec<FileIntegrityEntry> = manifest
            .entries
            .iter()
            .filter(|e| {
                *e.path == *root
                    || (e.path.starts_with(&root) && e.path.get(root.len()) == Some(&b'/'))
            })
            .cloned()
            .map(as_root_or_self)
            .collect();
        let actual = actual_entries(release, &root);
        for anomaly in integrity_common::diff(&expected, &actual) {
            drift.push(Drift {
                path: anomaly.path.to_vec(),
                kind: anomaly.kind,
            });
        }
    }
    drift
}

impl Guard {
    pub fn new(layout: Layout, key: Option<PathBuf>) -> Self {
        Self { layout, key }
    }

    /// One verification (and heal when needed) of the active release.
    pub fn cycle(&self, scope: Option<&BTreeSet<Vec<u8>>>) -> anyhow::Result<Outcome> {
        let layout = &self.layout;
        let config = Config::load(layout)?;
        let Some(active) = layout.active_version()? else {
            anyhow::bail!("{} is not installed", layout.root.display());
        };
        if active == EMPTY_RELEASE {
            return Ok(Outcome::Idle);
        }
        let key = release::release_key(layout, self.key.as_deref())?;
        let release_dir = layout.release(&active);
        let mut metadata_healed = false;
        let manifest = match release::load_release_manifest(&release_dir, &key) {
            Ok((manifest, _)) => manifest,
            Err(error) => {
                // The release's own manifest, checksums or signature were touched: put
                // them back from the archived bundle (verified), else roll back.
                let why = format!("the release's signed manifest does not verify: {error:#}");
                let Some(_lock) = release::try_lock(layout)? else {
                    return Ok(Outcome::Busy);
                };
                match restore_release_metadata(layout, &active, &key)
                    .and_then(|()| release::load_release_manifest(&release_dir, &key))
                {
                    Ok((manifest, _)) => {
                        seclog::event_as(
                            layout,
                            "guard",
                            "healed",
                            &format!("release {active}: {why}; restored from archives/{active}"),
                            serde_json::json!({ "version": active, "metadata": true }),
                        );
                        drop(_lock);
                        metadata_healed = true;
                        manifest
                    }
                    Err(restore) => {
                        drop(_lock);
                        let why = format!("{why}; cannot restore it: {restore:#}");
                        return self.roll_back(&config, &active, &why);
                    }
                }
            }
        };
        let drift = find_drift(&release_dir, &manifest, scope);
        if drift.is_empty() {
            return Ok(if metadata_healed {
                Outcome::Healed(1)
            } else {
                Outcome::Intact
            });
        }
        let Some(_lock) = release::try_lock(layout)? else {
            return Ok(Outcome::Busy);
        };
        // The lock is ours: was the active version switched meanwhile?
        if layout.active_version()?.as_deref() != Some(active.as_str()) {
            return Ok(Outcome::Busy);
        }
        let list: Vec<String> = drift
            .iter()
            .map(|d| format!("{} {}", String::from_utf8_lossy(&d.path), d.kind.as_str()))
            .collect();
        seclog::event_as(
            layout,
            "guard",
            "drift",
            &format!(
                "release {active}: {} entries differ from the signed manifest",
                drift.len()
            ),
            serde_json::json!({ "version": active, "drift": list }),
        );
        eprintln!(
            "bulletproofctl guard: drift in {active}: {}",
            list.join(", ")
        );
        // Heal; what still differs afterwards (tampering that goes on while we heal) is
        // healed again, a few times. Only a failed restore (archive missing, damaged,
        // not matching the manifest) is a reason to roll back.
        let mut pending = drift.clone();
        let mut healed = 0usize;
        let mut quarantines = Vec::new();
        for _attempt in 0..3 {
            match self.heal(&config, &active, &release_dir, &manifest, &pending) {
                Ok(quarantine) => {
                    healed += pending.len();
                    quarantines.push(quarantine);
                }
                Err(error) => {
                    drop(_lock);
                    return self.roll_back_locked(
                        &config,
                        &active,
                        &format!("cannot restore: {error:#}"),
                    );
                }
            }
            pending = find_drift(&release_dir, &manifest, None);
            if pending.is_empty() {
                break;
            }
        }
        let _ = release::restart_services(layout, &config, &active);
        if !pending.is_empty() {
            let message = format!(
                "release {active}: {} entries keep changing while being healed; healing again on the next event",
                pending.len()
            );
            seclog::event_as(
                layout,
                "guard",
                "heal-incomplete",
                &message,
                serde_json::json!({ "version": active }),
            );
            return Ok(Outcome::Healed(healed));
        }
        seclog::event_as(
            layout,
            "guard",
            "healed",
            &format!(
                "release {active} restored ({healed} entries); evidence in {}",
                quarantines
                    .iter()
                    .map(|q| q.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            serde_json::json!({ "version": active, "entries": healed, "quarantine": quarantines }),
        );
        Ok(Outcome::Healed(healed))
    }

    fn roll_back(&self, config: &Config, active: &str, why: &str) -> anyhow::Result<Outcome> {
        self.roll_back_locked(config, active, why)
    }

    fn roll_back_locked(
        &self,
        config: &Config,
        active: &str,
        why: &str,
    ) -> anyhow::Result<Outcome> {
        let layout = &self.layout;
        let Some(_lock) = release::try_lock(layout)? else {
            return Ok(Outcome::Busy);
        };
        match release::rollback_held(layout, config, self.key.as_deref()) {
            Ok(report) => {
                let message = format!(
                    "release {active} could not be restored ({why}); rolled back: {}",
                    report.message
                );
                seclog::event_as(
                    layout,
                    "guard",
                    "rollback",
                    &message,
                    serde_json::json!({ "from": active, "why": why }),
                );
                Ok(Outcome::RolledBack(message))
            }
            Err(failure) => {
                let message = format!(
                    "release {active} could not be restored ({why}) and not rolled back: {}",
                    match failure {
                        Failure::Refused(m) | Failure::RolledBack(m) => m,
                        Failure::Error(e) => format!("{e:#}"),
                    }
                );
                seclog::event_as(
                    layout,
                    "guard",
                    "heal-failed",
                    &message,
                    serde_json::json!({ "version": active }),
                );
                Ok(Outcome::Failed(message))
            }
        }
    }

    /// Quarantines what differs, restores what the manifest says. Returns the
    /// quarantine directory.
    fn heal(
        &self,
        _config: &Config,
        active: &str,
        release_dir: &Path,
        manifest: &Baseline,
        drift: &[Drift],
    ) -> anyhow::Result<PathBuf> {
        let layout = &self.layout;
        let stamp = integrity_common::manifest::now_timestamp().replace(':', "");
        // A directory of its own per heal (several heals can share a second): evidence
        // is never overwritten.
        let base = layout.path("state/quarantine");
        fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
        let mut attempt = 0u32;
        let quarantine = loop {
            let candidate = base.join(format!("{stamp}-{}-{attempt}", std::process::id()));
            match fs::create_dir(&candidate) {
                Ok(()) => break candidate,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 10_000 => {
                    attempt += 1
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", candidate.display()))
                }
            }
        };
        fs::set_permissions(&quarantine, fs::Permissions::from_mode(0o700))?;
        let mut evidence = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(quarantine.join("evidence.jsonl"))?;
        let expected = expected_entries(manifest);
        let mut restore: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut paths: Vec<&Drift> = drift.iter().collect();
        paths.sort_by(|a, b| a.path.cmp(&b.path));
        paths.dedup_by(|a, b| a.path == b.path);
        for d in paths {
            let disk = release_dir.join(std::ffi::OsStr::from_bytes(&d.path[1..]));
            let want = expected.get(&d.path);
            let found = fs::symlink_metadata(&disk).ok();
            let found_record = found.as_ref().map(|m| {
                serde_json::json!({
                    "mode": format!("{:04o}", m.mode() & 0o7777), "uid": m.uid(), "gid": m.gid(),
                    "size": m.len(), "mtime": m.mtime(), "ctime": m.ctime(),
                    "type": if m.is_dir() { "dir" } else if m.file_type().is_symlink() { "symlink" } else if m.is_file() { "file" } else { "other" },
                })
            });
            if want.is_none() && found.is_none() {
                continue; // inside an added directory already quarantined
            }
            let shown = String::from_utf8_lossy(&d.path).into_owned();
            let content_differs = match (want, &found) {
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some(want), Some(meta)) => {
                    let actual = actual_entries(release_dir, &d.path);
                    let same_kind = actual.first().map(|a| a.kind) == Some(want.kind);
                    !same_kind
                        || (want.kind == EntryKind::File
                            && actual.first().and_then(|a| a.sha256) != want.sha256)
                        || (want.kind == EntryKind::Symlink
                            && actual.first().and_then(|a| a.target.clone()) != want.target)
                        || (want.kind == EntryKind::Dir && !meta.is_dir())
                }
                (None, None) => false,
            };
            let mut moved_to = None;
            if content_differs {
                let name = shown.trim_start_matches('/').replace('/', "%2F");
                let target = quarantine.join(&name);
                move_to_quarantine(&disk, &target)?;
                moved_to = Some(target);
            }
            let action = if content_differs && want.is_some() {
                "quarantined, restored"
            } else if content_differs {
                "quarantined (not in the manifest)"
            } else if want.is_some() && found.is_none() {
                "restored"
            } else {
                "metadata restored"
            };
            let line = serde_json::json!({
                "path": shown, "anomaly": d.kind.as_str(), "action": action, "release": active,
                "found": found_record, "moved_to": moved_to,
                "expected": want.map(|w| serde_json::json!({
                    "type": w.kind.as_str(), "mode": format!("{:04o}", w.mode), "uid": w.uid, "gid": w.gid,
                    "size": w.size, "sha256": w.sha256.map(|s| s.to_hex()),
                })),
            });
            writeln!(evidence, "{line}")?;
            if let Some(want) = want {
                if content_differs || found.is_none() {
                    restore.insert(want.path.to_vec());
                } else {
                    apply_entry_metadata(&disk, want)?;
                }
            }
        }
        evidence.sync_all()?;
        // Directories first (parents before children), then files and symlinks from
        // the archives.
        let mut from_archive: BTreeSet<Vec<u8>> = BTreeSet::new();
        for path in &restore {
            let want = &expected[path];
            if want.kind == EntryKind::Dir {
                restore_dir_tree(release_dir, &expected, path, &mut from_archive)?;
            } else {
                from_archive.insert(path.clone());
            }
        }
        if !from_archive.is_empty() {
            restore_from_archives(layout, active, release_dir, &expected, &from_archive)?;
        }
        Ok(quarantine)
    }
}

/// Copies the release's `manifest.json`, `checksums.txt` and `sig.minisig` back from
/// its archived bundle, after checking the bundle's signature and the manifest's hash.
fn restore_release_metadata(
    layout: &Layout,
    version: &str,
    key: &integrity_trust::PublicKey,
) -> anyhow::Result<()> {
    let archive = layout.archive(version);
    let checksums = fs::read(archive.join("checksums.txt"))
        .with_context(|| format!("{} has no checksums.txt", archive.display()))?;
    let signature = fs::read_to_string(archive.join("sig.minisig"))?;
    let trusted = integrity_trust::verify(key, &checksums, &signature, false)?;
    let claim = crate::checksums::parse_release_comment(&trusted).map_err(anyhow::Error::msg)?;
    if claim.version.to_string() != version {
        anyhow::bail!("archives/{version} is signed as {}", claim.version);
    }
    let name = format!("manifest-{version}.json");
    let listed = crate::checksums::parse(&checksums).map_err(anyhow::Error::msg)?;
    let digest = listed
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, d)| *d)
        .context("checksums.txt does not list the manifest")?;
    let manifest = fs::read(archive.join(&name))?;
    if integrity_common::Sha256Digest::of(&manifest) != digest {
        anyhow::bail!("archives/{version}/{name} does not match its signed checksum");
    }
    let release_dir = layout.release(version);
    for (file, bytes) in [
        (release::RELEASE_MANIFEST, manifest.as_slice()),
        (release::RELEASE_CHECKSUMS, checksums.as_slice()),
        (release::RELEASE_SIGNATURE, signature.as_bytes()),
    ] {
        crate::layout::write_atomically(&release_dir.join(file), bytes, 0o644)?;
    }
    Ok(())
}

/// Moves `disk` (file, symlink or whole directory) out of the release into the
/// quarantine: a rename when both are on one mount, else a copy (content kept, no
/// execute or set-id bits) and a removal.
fn move_to_quarantine(disk: &Path, target: &Path) -> anyhow::Result<()> {
    match fs::rename(disk, target) {
        Ok(()) => {
            defuse(target);
            return Ok(());
        }
        Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {}
        Err(e) => return Err(e).with_context(|| format!("cannot quarantine {}", disk.display())),
    }
    copy_tree(disk, target)?;
    defuse(target);
    let meta = fs::symlink_metadata(disk)?;
    if meta.is_dir() {
        fs::remove_dir_all(disk)?;
    } else {
        fs::remove_file(disk)?;
    }
    Ok(())
}

/// Evidence must not run: regular files lose execute and set-id bits.
fn defuse(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        if let Ok(entries) = fs::read_dir(path) {
            for entry in entries.flatten() {
                defuse(&entry.path());
            }
        }
    } else if meta.is_file() {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o644));
    }
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
    } else if meta.is_dir() {
        fs::create_dir(to)?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else if meta.is_file() {
        fs::copy(from, to)?;
    }
    // Devices, fifos, sockets: their metadata is in the evidence line; nothing to copy.
    Ok(())
}

fn apply_entry_metadata(disk: &Path, want: &FileIntegrityEntry) -> anyhow::Result<()> {
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(disk, Some(want.uid), Some(want.gid))?;
    }
    if want.kind != EntryKind::Symlink {
        fs::set_permissions(disk, fs::Permissions::from_mode(want.mode))?;
    }
    Ok(())
}

/// Recreates a missing directory and, below it, everything the manifest lists
/// (directories here, files and symlinks queued for the archive).
fn restore_dir_tree(
    release_dir: &Path,
    expected: &BTreeMap<Vec<u8>, FileIntegrityEntry>,
    root: &[u8],
    from_archive: &mut BTreeSet<Vec<u8>>,
) -> anyhow::Result<()> {
    for (path, want) in expected.range(root.to_vec()..) {
        if !(path.as_slice() == root
            || (path.starts_with(root) && path.get(root.len()) == Some(&b'/')))
        {
            break;
        }
        let disk = release_dir.join(std::ffi::OsStr::from_bytes(&path[1..]));
        if want.kind == EntryKind::Dir {
            match fs::symlink_metadata(&disk) {
                Ok(meta) if meta.is_dir() => {}
                _ => fs::create_dir(&disk)
                    .with_context(|| format!("cannot recreate {}", disk.display()))?,
            }
            apply_entry_metadata(&disk, want)?;
        } else if fs::symlink_metadata(&disk).is_err() {
            from_archive.insert(path.clone());
        }
    }
    Ok(())
}

/// Streams the active version's archived core and modules and writes back exactly the
/// `wanted` entries, each checked against the manifest before it replaces anything.
fn restore_from_archives(
    layout: &Layout,
    version: &str,
    release_dir: &Path,
    expected: &BTreeMap<Vec<u8>, FileIntegrityEntry>,
    wanted: &BTreeSet<Vec<u8>>,
) -> anyhow::Result<()> {
    let mut left: BTreeSet<Vec<u8>> = wanted.clone();
    for part in ["core", "modules"] {
        let prefix = format!("/{part}/");
        if !left.iter().any(|p| p.starts_with(prefix.as_bytes())) {
            continue;
        }
        let archive = layout
            .archive(version)
            .join(format!("{part}-{version}.tar.zst"));
        let file = fs::File::open(&archive)
            .with_context(|| format!("the signed archive {} is missing", archive.display()))?;
        let decoder = zstd::Decoder::new(file)?;
        let mut tar = tar::Archive::new(decoder);
        for entry in tar.entries()? {
            let mut entry = entry.with_context(|| format!("{} is damaged", archive.display()))?;
            let raw = entry.path_bytes().into_owned();
            let raw = raw.strip_prefix(b"./").unwrap_or(&raw);
            let mut path = prefix.as_bytes().to_vec();
            path.extend_from_slice(raw.strip_suffix(b"/").unwrap_or(raw));
            if !left.contains(&path) {
                continue;
            }
            let want = &expected[&path];
            let disk = release_dir.join(std::ffi::OsStr::from_bytes(&path[1..]));
            let parent = disk.parent().context("entry without parent")?;
            let temp = parent.join(format!(".bulletproof-restore.{}", std::process::id()));
            let _ = fs::remove_file(&temp);
            match want.kind {
                EntryKind::File => {
                    if entry.size() != want.size.unwrap_or(u64::MAX) {
                        anyhow::bail!(
                            "{}: {} has another size than the manifest says",
                            archive.display(),
                            String::from_utf8_lossy(&path)
                        );
                    }
                    let mut out = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&temp)?;
                    let mut hasher = integrity_common::digest::Sha256Hasher::new();
                    let mut buffer = vec![0u8; 128 << 10];
                    loop {
                        let n = entry.read(&mut buffer)?;
                        if n == 0 {
                            break;
                        }
                        hasher.update(&buffer[..n]);
                        out.write_all(&buffer[..n])?;
                    }
                    out.sync_all()?;
                    if Some(hasher.finish()) != want.sha256 {
                        let _ = fs::remove_file(&temp);
                        anyhow::bail!(
                            "{}: {} does not match the signed manifest",
                            archive.display(),
                            String::from_utf8_lossy(&path)
                        );
                    }
                }
                EntryKind::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    if Some(target.as_slice()) != want.target.as_deref() {
                        anyhow::bail!(
                            "{}: {} points elsewhere than the manifest says",
                            archive.display(),
                            String::from_utf8_lossy(&path)
                        );
                    }
                    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &temp)?;
                }
                _ => continue,
            }
            apply_entry_metadata(&temp, want)?;
            fs::rename(&temp, &disk)
                .with_context(|| format!("cannot restore {}", disk.display()))?;
            left.remove(&path);
            if left.is_empty() {
                break;
            }
        }
    }
    if let Some(missing) = left.iter().next() {
        anyhow::bail!(
            "{} is not in the archive of {version}",
            String::from_utf8_lossy(missing)
        );
    }
    crate::layout::fsync_dir(release_dir)?;
    Ok(())
}

/// Watches every directory of the active release (and `install/` for switches).
struct Watcher {
    inotify: inotify::Inotify,
    dirs: BTreeMap<inotify::WatchDescriptor, PathBuf>,
    release_dir: PathBuf,
}

impl Watcher {
    fn new(layout: &Layout, active: &str) -> anyhow::Result<Self> {
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

    fn watch(&mut self, dir: &Path) -> anyhow::Result<()> {
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
    fn wait(&mut self, timeout: Duration) -> anyhow::Result<Option<Option<BTreeSet<Vec<u8>>>>> {
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

/// `guard --once`: one full cycle; the exit code says what happened.
pub fn once(layout: &Layout, key: Option<PathBuf>) -> anyhow::Result<Outcome> {
    let _one = guard_lock(layout)?;
    let guard = Guard::new(layout.clone(), key);
    let outcome = guard.cycle(None)?;
    heartbeat(layout, &outcome, 0);
    Ok(outcome)
}

fn heartbeat(layout: &Layout, outcome: &Outcome, interval: u64) {
    let state = match outcome {
        Outcome::Intact => "intact",
        Outcome::Idle => "idle",
        Outcome::Healed(_) => "healed",
        Outcome::RolledBack(_) => "rolled back",
        Outcome::Busy => "busy",
        Outcome::Failed(_) => "failed",
    };
    seclog::event_as(
        layout,
        "guard",
        "heartbeat",
        &format!("cycle: {state}"),
        serde_json::json!({ "state": state, "interval": interval, "active": layout.active_version().ok().flatten() }),
    );
}

/// The daemon: a full cycle every `interval`, a targeted one on every filesystem event,
/// until SIGTERM or SIGINT.
pub fn run(layout: &Layout, key: Option<PathBuf>, interval: Option<u64>) -> anyhow::Result<()> {
    let _one = guard_lock(layout)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let guard = Guard::new(layout.clone(), key);
    let interval = Duration::from_secs(
        interval
            .unwrap_or(Config::load(layout)?.guard_interval_secs)
            .max(1),
    );
    seclog::event_as(
        layout,
        "guard",
        "start",
        "guard started",
        serde_json::json!({ "interval": interval.as_secs() }),
    );
    eprintln!(
        "bulletproofctl guard: watching {} (full check every {} s)",
        layout.root.display(),
        interval.as_secs()
    );
    let mut active = layout
        .active_version()?
        .unwrap_or_else(|| EMPTY_RELEASE.into());
    let mut watcher = Watcher::new(layout, &active)?;
    let mut next_full = Instant::now();
    let mut pending: Option<BTreeSet<Vec<u8>>> = None;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let scope = if now >= next_full {
            next_full = now + interval;
            Some(None)
        } else if let Some(paths) = pending.take() {
            Some(Some(paths))
        } else {
            let wait = (next_full - now).min(Duration::from_millis(500));
            watcher.wait(wait)?
        };
        let Some(scope) = scope else { continue };
        let full = scope.is_none();
        let outcome = match guard.cycle(scope.as_ref()) {
            Ok(outcome) => outcome,
            Err(error) => Outcome::Failed(format!("{error:#}")),
        };
        match &outcome {
            Outcome::Healed(n) => eprintln!("bulletproofctl guard: healed {n} entries"),
            Outcome::RolledBack(m) | Outcome::Failed(m) => eprintln!("bulletproofctl guard: {m}"),
            Outcome::Busy => next_full = Instant::now() + Duration::from_secs(1),
            _ => {}
        }
        if full {
            heartbeat(layout, &outcome, interval.as_secs());
        }
        let now_active = layout
            .active_version()?
            .unwrap_or_else(|| EMPTY_RELEASE.into());
        if now_active != active {
            // Another release: new watches, then a full check of it.
            active = now_active;
            watcher = Watcher::new(layout, &active)?;
            next_full = Instant::now();
        } else if !matches!(outcome, Outcome::Intact | Outcome::Idle | Outcome::Busy) {
            // A heal replaced files and directories: new watches first, then whatever
            // the old ones caught meanwhile is checked next, so nothing falls between.
            let fresh = Watcher::new(layout, &active)?;
            let mut old = std::mem::replace(&mut watcher, fresh);
            match old.wait(Duration::ZERO)? {
                Some(None) => next_full = Instant::now(),
                Some(Some(paths)) if !paths.is_empty() => pending = Some(paths),
                _ => {}
            }
        }
    }
    seclog::event_as(
        layout,
        "guard",
        "stop",
        "guard stopped",
        serde_json::json!({}),
    );
    Ok(())
}
