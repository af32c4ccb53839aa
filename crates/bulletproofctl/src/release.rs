//! `update`, `rollback`, `recover`: the seed's update protocol (DESIGN §7, §8).
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

/// A bundle whose signature and hashes verified.
pub struct VerifiedBundle {
    pub dir: PathBuf,
    pub claim: ReleaseClaim,
    pub version: String,
    pub checksums: Vec<u8>,
    pub signature: String,
    pub files: BTreeMap<String, (Sha256Digest, fs::File)>,
}

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, Failure> {
    let (file, _) = integrity_common::handles::open_file(path)
        .map_err(|e| refused(format!("{}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refused(format!("{}: {e}", path.display())))?;
    if bytes.len() as u64 > limit {
        return Err(refused(format!("{} is too large", path.display())));
    }
    Ok(bytes)
}

/// Signature first, then hashes; nothing is decompressed or parsed before both pass.
/// The files stay open: extraction reads the very files that were hashed.
pub fn verify_bundle(
    dir: &Path,
    key: &integrity_trust::PublicKey,
) -> Result<VerifiedBundle, Failure> {
    let checksums_bytes = read_bounded(&dir.join("checksums.txt"), checksums::MAX_CHECKSUMS_BYTES)?;
    let signature_bytes = read_bounded(&dir.join("sig.minisig"), 4096)?;
    let signature = String::from_utf8(signature_bytes)
        .map_err(|_| refused("sig.minisig is not a minisign signature"))?;
    let trusted = integrity_trust::verify(key, &checksums_bytes, &signature, false)
        .map_err(|e| refused(format!("sig.minisig: {e}")))?;
    let claim = checksums::parse_release_comment(&trusted).map_err(refused)?;
    if let Some(expires) = &claim.expires {
        let now = integrity_common::manifest::now_timestamp();
        if checksums::is_expired(expires, &now) {
            return Err(refused(format!(
                "the bundle's signature expired at {expires} (now {now})"
            )));
        }
    }
    let version = claim.version.to_string();
    let listed = checksums::parse(&checksums_bytes).map_err(refused)?;
    let expected = checksums::bundle_files(&version);
    for (name, _) in &listed {
        if !expected.contains(name) {
            return Err(refused(format!(
                "checksums.txt lists {name}, which is not part of release {version}"
            )));
        }
    }
    let mut files = BTreeMap::new();
    for name in &expected {
        let Some((_, digest)) = listed.iter().find(|(listed, _)| listed == name) else {
            return Err(refused(format!("checksums.txt does not list {name}")));
        };
        let path = dir.join(name);
        // Opened once, not followed, not blocked on (a FIFO swapped in is refused), and
        // kept open: staging and the archive read this very inode.
        let (mut file, _) = integrity_common::handles::open_file(&path)
            .map_err(|e| refused(format!("{}: {e}", path.display())))?;
        let (actual, _) = integrity_common::scan::hash_reader(&mut file, u64::MAX)
            .map_err(|e| refused(format!("{}: {e}", path.display())))?;
        if actual != *digest {
            return Err(refused(format!(
                "{name}: SHA-256 {actual} does not match checksums.txt ({digest})"
            )));
        }
        file.rewind().map_err(|e| Failure::Error(e.into()))?;
        files.insert(name.clone(), (*digest, file));
    }
    Ok(VerifiedBundle {
        dir: dir.to_path_buf(),
        claim,
        version,
        checksums: checksums_bytes,
        signature,
        files,
    })
}

/// The public key for this command: `--public-key` if given (pinned when nothing is
/// pinned yet), else the pinned one.
pub fn release_key(
    layout: &Layout,
    given: Option<&Path>,
) -> anyhow::Result<integrity_trust::PublicKey> {
    let pinned = layout.pinned_key();
    match given {
        Some(path) => {
            let key = integrity_trust::load_public_key(path)?;
            if !pinned.exists() {
                let text = fs::read(path)?;
                crate::layout::write_atomically(&pinned, &text, 0o644)?;
                crate::oplog::record(
                    layout,
                    "pin-key",
                    &format!("release key {} pinned", integrity_trust::key_id(&key)),
                );
            } else {
                let current = integrity_trust::load_public_key(&pinned)?;
                if integrity_trust::key_id(&current) != integrity_trust::key_id(&key) {
                    crate::oplog::record(
                        layout,
                        "key-override",
                        &format!(
                            "this command uses key {} instead of the pinned {}",
                            integrity_trust::key_id(&key),
                            integrity_trust::key_id(&current)
                        ),
                    );
                }
            }
            Ok(key)
        }
        None => integrity_trust::load_public_key(&pinned).with_context(|| {
            format!(
                "no release key pinned at {} (give --public-key, or pin one with install --public-key)",
                pinned.display()
            )
        }),
    }
}

/// The one trust chain of a kept release: signature over `checksums.txt` → trusted
/// comment (which must name `expected_version`, the version the release is kept and
/// activated as: an older signed release copied over a newer one's directory is
/// refused) → the manifest's checksum → the manifest.
pub fn verify_release(
    release: &Path,
    key: &integrity_trust::PublicKey,
    expected_version: &str,
) -> anyhow::Result<(Baseline, ReleaseClaim)> {
    let (manifest, claim) = load_release_manifest(release, key)?;
    if claim.version.to_string() != expected_version {
        bail!(
            "{} is kept as version {expected_version} but signed as version {}",
            release.display(),
            claim.version
        );
    }
    Ok((manifest, claim))
}

/// A file of a kept release or archive: root's, regular (a FIFO or symlink there is an
/// error, never a hang), present.
pub fn read_release_file(dir: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let path = dir.join(name);
    crate::layout::read_trusted(&path)?.with_context(|| format!("{} is missing", path.display()))
}

/// The manifest of a release, read from its directory and checked against the signed
/// checksums kept beside it (see [`verify_release`], which every caller uses).
fn load_release_manifest(
    release: &Path,
    key: &integrity_trust::PublicKey,
) -> anyhow::Result<(Baseline, ReleaseClaim)> {
    let checksums_bytes = read_release_file(release, RELEASE_CHECKSUMS)?;
    let signature = String::from_utf8(read_release_file(release, RELEASE_SIGNATURE)?)
        .context("the signature is not text")?;
    let trusted = integrity_trust::verify(key, &checksums_bytes, &signature, false)
        .map_err(|e| anyhow::anyhow!("{}: {e}", release.display()))?;
    let claim = checksums::parse_release_comment(&trusted).map_err(anyhow::Error::msg)?;
    let listed = checksums::parse(&checksums_bytes).map_err(anyhow::Error::msg)?;
    let name = format!("manifest-{}.json", claim.version);
    let digest = listed
        .iter()
        .find(|(listed, _)| *listed == name)
        .map(|(_, digest)| *digest)
        .with_context(|| format!("{}: checksums.txt does not list {name}", release.display()))?;
    let bytes = read_release_file(release, RELEASE_MANIFEST)?;
    if Sha256Digest::of(&bytes) != digest {
        bail!(
            "{}: manifest.json does not match its signed checksum",
            release.display()
        );
    }
    Ok((Baseline::from_json_slice(&bytes)?, claim))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Compares what was extracted with the signed manifest's entries under `prefix`.
fn compare_with_manifest(
    manifest: &Baseline,
    prefix: &str,
    items: &BTreeMap<Vec<u8>, Item>,
) -> Result<(), Failure> {
    let mut expected = 0usize;
    for entry in &manifest.entries {
        let Some(within) = entry.path.strip_prefix(prefix.as_bytes()) else {
            continue;
        };
        if !within.is_empty() && within[0] != b'/' {
            continue; // `/coreX` is not under `/core`
        }
        let shown = entry.path_text();
        if within.is_empty() {
            if entry.kind != EntryKind::Dir {
                return Err(refused(format!("manifest: {shown} is not a directory")));
            }
            continue;
        }
        expected += 1;
        let Some(item) = items.get(within) else {
            return Err(refused(format!(
                "{shown} is in the signed manifest but not in the archive"
            )));
        };
        let matches = match (entry.kind, item) {
            (EntryKind::Dir, Item::Dir) => true,
            (EntryKind::File, Item::File { size, sha256 }) => {
                entry.size == Some(*size) && entry.sha256 == Some(*sha256)
            }
            (EntryKind::Symlink, Item::Symlink { target }) => {
                entry.target.as_deref() == Some(target.as_slice())
            }
            _ => false,
        };
        if !matches {
            return Err(refused(format!(
                "{shown} in the archive differs from the signed manifest"
            )));
        }
    }
    if expected != items.len() {
        let extra = items
            .keys()
            .find(|key| {
                let mut full = prefix.as_bytes().to_vec();
                full.extend_from_slice(key);
                manifest
                    .entries
                    .binary_search_by(|e| (*e.path).cmp(&full))
                    .is_err()
            })
            .map(|key| String::from_utf8_lossy(key).into_owned())
            .unwrap_or_default();
        return Err(refused(format!(
            "{prefix}{extra} is in the archive but not in the signed manifest"
        )));
    }
    Ok(())
}

/// Applies owners (as root) and modes from the manifest: children before parents, so a
/// read-only directory never blocks its own contents.
fn apply_metadata(release: &Path, manifest: &Baseline) -> anyhow::Result<()> {
    let root = is_root();
    for entry in manifest.entries.iter().rev() {
        let path = release.join(std::ffi::OsStr::from_bytes(&entry.path[1..]));
        if root {
            std::os::unix::fs::lchown(&path, Some(entry.uid), Some(entry.gid))
                .with_context(|| format!("cannot chown {}", path.display()))?;
        }
        if entry.kind != EntryKind::Symlink {
            fs::set_permissions(&path, fs::Permissions::from_mode(entry.mode))
                .with_context(|| format!("cannot chmod {}", path.display()))?;
        }
    }
    Ok(())
}

use std::os::unix::ffi::OsStrExt;

/// The entries of a release's core and modules as the engine records them (manifest
/// paths `/core/...`, `/modules/...`), hashed or stat-only; the first per-path error
/// fails the check.
fn scan_release(
    release: &Path,
    hash: bool,
) -> Result<Vec<integrity_common::FileIntegrityEntry>, String> {
    let mut current = Vec::new();
    for prefix in ["/core", "/modules"] {
        let options = integrity_common::ScanOptions {
            root: release.join(&prefix[1..]),
            exclusions: integrity_common::Exclusions::none(),
            cross_filesystems: false,
            policy: None,
        };
        let walk = if hash {
            integrity_common::scan
        } else {
            integrity_common::scan_metadata
        };
        let output = walk(&options, &Default::default()).map_err(|e| e.to_string())?;
        if let Some(error) = output.errors.first() {
            return Err(format!(
                "{prefix}{}: {}",
                String::from_utf8_lossy(&error.path),
                error.error
            ));
        }
        for mut entry in output.entries {
            entry.path = integrity_common::manifest::reroot(prefix, &entry.path);
            current.push(entry);
        }
    }
    Ok(current)
}

/// Verifies `release` against its manifest with the engine (content, mode, owner, added
/// and removed entries). Owners are compared only when running as root.
pub fn full_verify(release: &Path, manifest: &Baseline) -> Result<(), String> {
    let current = scan_release(release, true)?;
    let root = is_root();
    let expected: Vec<_> = manifest
        .entries
        .iter()
        .map(|entry| {
            let mut entry = entry.clone();
            if !root {
                entry.uid = nix::unistd::geteuid().as_raw();
                entry.gid = nix::unistd::getegid().as_raw();
            }
            entry
        })
        .collect();
    let mut anomalies = integrity_common::diff(&expected, &current);
    match anomalies.next() {
        None => Ok(()),
        Some(anomaly) => Err(format!(
            "{} {} (and {} more)",
            String::from_utf8_lossy(anomaly.path),
            anomaly.kind.as_str(),
            anomalies.count()
        )),
    }
}

/// A cheap check for `rollback`/`recover` of a kept version: every manifest entry
/// exists with its kind, mode, owner, size and target, and nothing was added; content is
/// not re-hashed (the guard does that), so this costs stat calls, not bytes.
pub fn quick_verify(release: &Path, manifest: &Baseline) -> Result<(), String> {
    let root = is_root();
    // The engine's stat-only walk of both trees (through handles, in parallel).
    let current: BTreeMap<Vec<u8>, integrity_common::FileIntegrityEntry> =
        scan_release(release, false)?
            .into_iter()
            .map(|entry| (entry.path.to_vec(), entry))
            .collect();
    if current.len() != manifest.entries.len() {
        return Err("entries were added or removed since the release was installed".into());
    }
    for entry in &manifest.entries {
        let shown = || entry.path_text().into_owned();
        let Some(found) = current.get(&*entry.path) else {
            return Err(format!("{} is missing", shown()));
        };
        let same = found.kind == entry.kind
            && (entry.kind != EntryKind::File || found.size == entry.size)
            && (entry.kind != EntryKind::Symlink || found.target == entry.target)
            && (entry.kind == EntryKind::Symlink || found.mode == entry.mode)
            && (!root || (found.uid == entry.uid && found.gid == entry.gid));
        if !same {
            return Err(format!("{} differs from the signed manifest", shown()));
        }
    }
    Ok(())
}

/// Stages a verified bundle: extraction of both archives (in parallel, one shared
/// budget), comparison with the signed manifest, modes and owners, the bundle's own
/// preflight. Returns the staged release directory (under `install/stage`).
fn stage_bundle(
    layout: &Layout,
    bundle: &mut VerifiedBundle,
    config: &Config,
) -> Result<(PathBuf, Baseline), Failure> {
    let version = bundle.version.clone();
    let [core_name, modules_name, manifest_name, _] = checksums::bundle_files(&version);
    let mut manifest_bytes = Vec::new();
    bundle
        .files
        .get_mut(&manifest_name)
        .expect("verified")
        .1
        .read_to_end(&mut manifest_bytes)
        .map_err(|e| Failure::Error(e.into()))?;
    if Sha256Digest::of(&manifest_bytes) != bundle.files[&manifest_name].0 {
        return Err(refused(format!(
            "{manifest_name} changed after it was verified"
        )));
    }
    let manifest = Baseline::from_json_slice(&manifest_bytes)
        .map_err(|e| refused(format!("{manifest_name}: {e}")))?;
    if manifest.image_id != format!("release-{version}") {
        return Err(refused(format!(
            "{manifest_name} is the manifest of {}, not of release-{version}",
            manifest.image_id
        )));
    }
    for entry in &manifest.entries {
        let under = |p: &str| {
            entry.path.starts_with(p.as_bytes())
                && (entry.path.len() == p.len() || entry.path[p.len()] == b'/')
        };
        if !(under("/core") || under("/modules")) {
            return Err(refused(format!(
                "{manifest_name}: {} is outside /core and /modules",
                entry.path_text()
            )));
        }
        if !matches!(
            entry.kind,
            EntryKind::Dir | EntryKind::File | EntryKind::Symlink
        ) {
            return Err(refused(format!(
                "{manifest_name}: {} is a {}",
                entry.path_text(),
                entry.kind.as_str()
            )));
        }
    }

    let stage_root = layout.stage();
    fs::create_dir_all(&stage_root).map_err(|e| Failure::Error(e.into()))?;
    let stage = tempfile::Builder::new()
        .prefix(&format!("{version}."))
        .tempdir_in(&stage_root)
        .map_err(|e| Failure::Error(e.into()))?;
    let budget = Budget::new(config.max_release_bytes, config.max_entries);
    let core_file = bundle.files.remove(&core_name).expect("verified").1;
    let modules_file = bundle.files.remove(&modules_name).expect("verified").1;
    // Extraction also notes where each frame and entry is: the restore index.
    let run = |file: fs::File,
               dir: &Path,
               name: &str|
     -> Result<(BTreeMap<Vec<u8>, Item>, frames::ArchiveIndex), Failure> {
        fs::create_dir(dir).map_err(|e| Failure::Error(e.into()))?;
        let (decoder, seen) =
            frames::FrameReader::new(file).map_err(|e| refused(format!("{name}: {e}")))?;
        let mut headers = BTreeMap::new();
        let items = extract::extract_indexed(decoder, dir, &budget, &mut headers)
            .map_err(|e| refused(format!("{name}: {e}")))?;
        let index = frames::ArchiveIndex {
            frames: seen.borrow().clone(),
            entries: headers
                .into_iter()
                .map(|(key, at)| (integrity_common::pathenc::encode(&key).into_owned(), at))
                .collect(),
        };
        Ok((items, index))
    };
    let core_dir = stage.path().join("core");
    let modules_dir = stage.path().join("modules");
    let (core_items, modules_items) = rayon::join(
        || run(core_file, &core_dir, &core_name),
        || run(modules_file, &modules_dir, &modules_name),
    );
    let ((core_items, core_index), (modules_items, modules_index)) = (core_items?, modules_items?);
    let restore_index: frames::ReleaseIndex = [
        ("core".to_string(), core_index),
        ("modules".to_string(), modules_index),
    ]
    .into();
    crash_point("extracted");
    compare_with_manifest(&manifest, "/core", &core_items)?;
    compare_with_manifest(&manifest, "/modules", &modules_items)?;
    match core_items.get(&b"/VERSION"[..]) {
        Some(Item::File { .. }) => {
            let text = fs::read_to_string(core_dir.join("VERSION")).unwrap_or_default();
            if text.trim() != version {
                return Err(refused(format!(
                    "core/VERSION says {:?}, the signature {version}",
                    text.trim()
                )));
            }
        }
        _ => return Err(refused("the core has no VERSION file")),
    }
    apply_metadata(stage.path(), &manifest)?;
    for (name, bytes) in [
        (RELEASE_MANIFEST, manifest_bytes.as_slice()),
        (RELEASE_CHECKSUMS, bundle.checksums.as_slice()),
        (RELEASE_SIGNATURE, bundle.signature.as_bytes()),
    ] {
        crate::layout::write_atomically(&stage.path().join(name), bytes, 0o644)?;
    }
    let index_bytes = serde_json::to_vec(&restore_index).map_err(|e| Failure::Error(e.into()))?;
    crate::layout::write_atomically(&stage.path().join(frames::INDEX_FILE), &index_bytes, 0o644)?;
    fs::set_permissions(stage.path(), fs::Permissions::from_mode(0o755))
        .map_err(|e| Failure::Error(e.into()))?;
    preflight(layout, stage.path(), &version, config)?;
    crash_point("preflight-done");
    Ok((stage.keep(), manifest))
}

/// Runs `core/preflight` of a staged release when the bundle ships one: cwd the staged
/// release, `BULLETPROOF_ROOT`, `BULLETPROOF_STAGE`, `BULLETPROOF_VERSION` set; a
/// non-zero exit or a timeout refuses the bundle.
fn preflight(
    layout: &Layout,
    staged: &Path,
    version: &str,
    config: &Config,
) -> Result<(), Failure> {
    let program = staged.join("core/preflight");
    match fs::symlink_metadata(&program) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(refused("core/preflight is not a regular file")),
        Err(_) => return Ok(()),
    }
    let mut child = std::process::Command::new(&program)
        .current_dir(staged)
        .env("BULLETPROOF_ROOT", &layout.root)
        .env("BULLETPROOF_STAGE", staged)
        .env("BULLETPROOF_VERSION", version)
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| refused(format!("cannot run the bundle's preflight: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(config.preflight_timeout_secs);
    loop {
        match child.try_wait().map_err(|e| Failure::Error(e.into()))? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => {
                return Err(refused(format!("the bundle's preflight failed ({status})")))
            }
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(refused(format!(
                    "the bundle's preflight ran longer than {} s",
                    config.preflight_timeout_secs
                )));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Points `install/active` at `version` with one rename, then makes it durable.
pub fn activate(layout: &Layout, version: &str) -> anyhow::Result<()> {
    let temp = layout
        .install()
        .join(format!(".active.{}", std::process::id()));
    let _ = fs::remove_file(&temp);
    std::os::unix::fs::symlink(Path::new("releases").join(version), &temp)
        .with_context(|| format!("cannot create {}", temp.display()))?;
    fs::rename(&temp, layout.active_link())
        .with_context(|| format!("cannot activate {version}"))?;
    fsync_dir(&layout.install())
}

/// Reloads or restarts the configured services: systemd when it runs, the configured
/// command otherwise.
pub fn restart_services(layout: &Layout, config: &Config, version: &str) -> Result<(), String> {
    let systemd = Path::new("/run/systemd/system").is_dir();
    let mut command = if systemd && !config.services.is_empty() {
        let mut command = std::process::Command::new("systemctl");
        command.arg("reload-or-restart").args(&config.services);
        command
    } else if let Some((program, args)) = config.restart_command.split_first() {
        let mut command = std::process::Command::new(program);
        command.args(args);
        command
    } else {
        return Ok(());
    };
    command
        .env("BULLETPROOF_ROOT", &layout.root)
        .env("BULLETPROOF_VERSION", version)
        .stdin(std::process::Stdio::null());
    match command.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("restarting the services failed ({status})")),
        Err(error) => Err(format!("cannot restart the services: {error}")),
    }
}

fn remove_tree(path: &Path) {
    if fs::symlink_metadata(path).is_err() {
        return;
    }
    // Read-only directories (modes from the manifest) must be opened up first when we
    // are not root.
    if !is_root() {
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
            if let Ok(entries) = fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        stack.push(entry.path());
                    }
                }
            }
        }
    }
    let _ = fs::remove_dir_all(path);
}

/// Puts a root back in order after a run that died: an unfinished activation is
/// undone (the journal's `from` is active again), staged leftovers are removed.
pub fn recover_interrupted(layout: &Layout, config: &Config) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    if let Some(txn) = Txn::load(layout)? {
        let active = layout.active_version()?;
        if active.as_deref() != Some(txn.from.as_str()) {
            activate(layout, &txn.from)?;
            let _ = restart_services(layout, config, &txn.from);
        }
        crate::activation::record(layout, &txn.from, "recover-interrupted")?;
        if txn.created_release && txn.to != txn.from {
            remove_tree(&layout.release(&txn.to));
        }
        Txn::clear(layout)?;
        let message = format!(
            "an interrupted {} ({} → {}) was undone; {} is active",
            txn.op, txn.from, txn.to, txn.from
        );
        let mut state = State::load(layout)?;
        state.record(Event::new(
            &txn.op,
            Some(&txn.from),
            Some(&txn.to),
            "undone",
            &message,
        ));
        state.save(layout)?;
        crate::oplog::record(layout, "recover-interrupted", &message);
        done.push(message);
    }
    if let Ok(entries) = fs::read_dir(layout.stage()) {
        for entry in entries.flatten() {
            remove_tree(&entry.path());
            done.push(format!(
                "removed the leftover stage {}",
                entry.path().display()
            ));
        }
    }
    if let Ok(entries) = fs::read_dir(layout.archives()) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                remove_tree(&entry.path());
            }
        }
    }
    if let Ok(entries) = fs::read_dir(layout.install()) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".active.") || name.starts_with(".tmp.") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    Ok(done)
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

/// What an activation did, for the journal and the failure path.
fn switch_to(
    layout: &Layout,
    config: &Config,
    txn: Txn,
    manifest: &Baseline,
    full: bool,
) -> Result<(), Failure> {
    txn.save(layout)?;
    let Txn {
        op,
        from,
        to,
        created_release,
    } = txn;
    let (op, from, to) = (op.as_str(), from.as_str(), to.as_str());
    crash_point(&format!("{op}-journal"));
    activate(layout, to)?;
    crash_point(&format!("{op}-activated"));
    let release = layout.release(to);
    // A new release is verified again once active (the engine, content included); a
    // kept one was checked just before the switch (`quick_verify`), and the guard
    // re-hashes the active release right after.
    let check = restart_services(layout, config, to).and_then(|()| {
        if full {
            full_verify(&release, manifest).map_err(|e| format!("post-verify: {e}"))
        } else {
            Ok(())
        }
    });
    crash_point(&format!("{op}-verified"));
    if let Err(why) = check {
        activate(layout, from)?;
        let _ = restart_services(layout, config, from);
        if created_release {
            remove_tree(&release);
        }
        Txn::clear(layout)?;
        let message = format!("{op} to {to} failed ({why}); {from} is active again");
        let mut state = State::load(layout)?;
        state.record(Event::new(
            op,
            Some(from),
            Some(to),
            "rolled back",
            &message,
        ));
        state.save(layout)?;
        crate::oplog::record(layout, op, &message);
        return Err(Failure::RolledBack(message));
    }
    Ok(())
}

/// `update BUNDLE_DIR`.
pub fn update(layout: &Layout, bundle_dir: &Path, key: Option<&Path>) -> Result<Report, Failure> {
    let from = ensure_installed(layout)?;
    crate::seclog::ensure_ready(layout)?;
    let config = Config::load(layout)?;
    let _lock = lock(layout, Duration::from_secs(config.lock_wait_secs))?;
    for line in recover_interrupted(layout, &config)? {
        eprintln!("bulletproofctl: {line}");
    }
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
    Txn {
        op: "update".into(),
        from: from.clone(),
        to: version.clone(),
        created_release: true,
    }
    .save(layout)?;
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
    switch_to(
        layout,
        &config,
        Txn {
            op: "update".into(),
            from: from.clone(),
            to: version.clone(),
            created_release: true,
        },
        &manifest,
        true,
    )?;
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

/// Keeps `keep_versions` releases: the active one, `previous`, then the highest others.
fn prune(layout: &Layout, config: &Config, state: &State) -> anyhow::Result<()> {
    let active = layout.active_version()?;
    let mut keep: Vec<String> = active.into_iter().collect();
    if let Some(previous) = &state.previous {
        keep.push(previous.clone());
    }
    for version in layout.kept_versions()? {
        let version = version.to_string();
        if keep.len() >= config.keep_versions {
            if !keep.contains(&version) {
                remove_tree(&layout.release(&version));
                crate::oplog::record(layout, "prune", &format!("release {version} removed from install/releases (recoverable from archives/)"));
            }
        } else if !keep.contains(&version) {
            keep.push(version);
        }
    }
    Ok(())
}

/// `rollback`: back to the version active before the current one.
pub fn rollback(layout: &Layout, key: Option<&Path>) -> Result<Report, Failure> {
    ensure_installed(layout)?;
    crate::seclog::ensure_ready(layout)?;
    let config = Config::load(layout)?;
    let _lock = lock(layout, Duration::from_secs(config.lock_wait_secs))?;
    for line in recover_interrupted(layout, &config)? {
        eprintln!("bulletproofctl: {line}");
    }
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
    ensure_installed(layout)?;
    crate::seclog::ensure_ready(layout)?;
    let config = Config::load(layout)?;
    let _lock = lock(layout, Duration::from_secs(config.lock_wait_secs))?;
    for line in recover_interrupted(layout, &config)? {
        eprintln!("bulletproofctl: {line}");
    }
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
    Txn {
        op: "recover".into(),
        from: from.clone(),
        to: version.clone(),
        created_release: true,
    }
    .save(layout)?;
    let release = layout.release(&version);
    fs::rename(&staged, &release).context("cannot move the staged release into place")?;
    nix::unistd::syncfs(fs::File::open(&release).map_err(|e| Failure::Error(e.into()))?)
        .context("syncfs")?;
    fsync_dir(&layout.releases())?;
    switch_to(
        layout,
        &config,
        Txn {
            op: "recover".into(),
            from: from.clone(),
            to: version.clone(),
            created_release: true,
        },
        &manifest,
        true,
    )?;
    finish_switch(layout, &config, "recover", &from, &version)
}

fn switch_kept(
    layout: &Layout,
    config: &Config,
    op: &str,
    version: &str,
    key: Option<&Path>,
) -> Result<Report, Failure> {
    let from = layout
        .active_version()?
        .unwrap_or_else(|| EMPTY_RELEASE.into());
    if from == version {
        return Err(refused(format!("version {version} is already active")));
    }
    let release = layout.release(version);
    if !release.is_dir() {
        return Err(refused(format!(
            "version {version} is not kept in {}",
            layout.releases().display()
        )));
    }
    let key = release_key(layout, key)?;
    let (manifest, _) =
        verify_release(&release, &key, version).map_err(|e| refused(format!("{e:#}")))?;
    quick_verify(&release, &manifest)
        .map_err(|e| refused(format!("kept release {version}: {e}")))?;
    switch_to(
        layout,
        config,
        Txn {
            op: op.into(),
            from: from.clone(),
            to: version.into(),
            created_release: false,
        },
        &manifest,
        false,
    )?;
    finish_switch(layout, config, op, &from, version)
}

fn finish_switch(
    layout: &Layout,
    config: &Config,
    op: &str,
    from: &str,
    to: &str,
) -> Result<Report, Failure> {
    let mut state = State::load(layout)?;
    if from != EMPTY_RELEASE {
        state.previous = Some(from.into());
    }
    let message = format!("{to} is active (was {from})");
    state.record(Event::new(op, Some(from), Some(to), "ok", &message));
    state.save(layout)?;
    // Before the journal goes: until then an interruption puts `from` back (and
    // records it again, below).
    crate::activation::record(layout, to, op)?;
    Txn::clear(layout)?;
    crash_point(&format!("{op}-done"));
    prune(layout, config, &state)?;
    crate::oplog::record(layout, op, &message);
    Ok(Report { message })
}
