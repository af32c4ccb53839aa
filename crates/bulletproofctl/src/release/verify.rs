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
