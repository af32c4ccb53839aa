//! A release against its signed manifest with the engine: `full_verify` (content
//! hashed) after an update, `quick_verify` (the stat-only walk) before a switch.

use super::*;

/// The entries of a release's core and modules as the engine records them (manifest
/// paths `/core/...`, `/modules/...`), hashed or stat-only; the first per-path error
/// fails the check.
pub(crate) fn scan_release(
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

/// A manifest entry as this process can see it on disk: the manifest's owner when we
/// are root, ours otherwise (an unprivileged run cannot chown, and is compared as
/// itself). The guard's checks use the same mapping.
pub fn as_seen(
    mut entry: integrity_common::FileIntegrityEntry,
) -> integrity_common::FileIntegrityEntry {
    if !is_root() {
        entry.uid = nix::unistd::geteuid().as_raw();
        entry.gid = nix::unistd::getegid().as_raw();
    }
    entry
}

/// The one check of a release against its signed manifest: the engine's walk of core
/// and modules (hashing content when `content`, else stat-only) and the engine's diff
/// (kind, mode, owner, size, symlink target, added and removed entries; the SHA-256
/// only when `content`). The first difference is the error.
pub fn check_release(release: &Path, manifest: &Baseline, content: bool) -> Result<(), String> {
    let current = scan_release(release, content)?;
    let expected: Vec<_> = manifest
        .entries
        .iter()
        .cloned()
        .map(as_seen)
        .map(|mut entry| {
            if !content {
                entry.sha256 = entry.sha256.filter(|_| entry.kind != EntryKind::File);
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

/// After an update: [`check_release`] with content hashed.
pub fn full_verify(release: &Path, manifest: &Baseline) -> Result<(), String> {
    check_release(release, manifest, true)
}

/// Before `rollback`/`recover` switch to a kept version: [`check_release`] without
/// hashing (stat calls, not bytes; the guard re-hashes the active release right after).
pub fn quick_verify(release: &Path, manifest: &Baseline) -> Result<(), String> {
    check_release(release, manifest, false)
}
