//! One comparison of the active release (or some of its paths) with its signed
//! manifest, through the engine (`scan_path`): what differs, as drift.

use super::*;

/// The manifest entries of a release, by path.
pub(super) fn expected_entries(manifest: &Baseline) -> BTreeMap<Vec<u8>, FileIntegrityEntry> {
    manifest
        .entries
        .iter()
        .map(|e| (e.path.to_vec(), e.clone()))
        .collect()
}

/// Scans `path` (relative to the release, manifest form `/core/...`) with the
/// engine's own code, through handles: a whole subtree for a directory, one entry
/// otherwise, none when absent; what cannot be read is an error entry, never a
/// default.
pub(super) fn actual_entries(release: &Path, path: &[u8]) -> integrity_common::ScanOutput {
    integrity_common::scan_path(release, path, false).unwrap_or_else(|error| {
        integrity_common::ScanOutput {
            errors: vec![integrity_common::ScanErrorRecord {
                path: path.into(),
                error: integrity_common::scan::describe_io_error(&error),
            }],
            ..Default::default()
        }
    })
}

/// Compares `scope` (manifest paths; `None` = the whole release) with the manifest.
pub(super) fn find_drift(
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
            .map(release::as_seen)
            .collect();
        let actual = actual_entries(release, &root);
        // A path that could not be read is drift itself (healed by quarantine and
        // restore); what lies below it is unknown, not deleted.
        let below_error = |path: &[u8]| {
            actual
                .errors
                .iter()
                .any(|e| path.starts_with(&e.path) && path.get(e.path.len()) == Some(&b'/'))
        };
        for error in &actual.errors {
            eprintln!(
                "bulletproofctl guard: {}: {}",
                String::from_utf8_lossy(&error.path),
                error.error
            );
            drift.push(Drift {
                path: error.path.to_vec(),
                kind: AnomalyKind::Modified,
            });
        }
        for anomaly in integrity_common::diff(&expected, &actual.entries) {
            if anomaly.kind == AnomalyKind::Deleted && below_error(anomaly.path) {
                continue;
            }
            drift.push(Drift {
                path: anomaly.path.to_vec(),
                kind: anomaly.kind,
            });
        }
    }
    drift
}
