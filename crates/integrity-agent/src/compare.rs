//! Which scanned entries are compared with the baseline, and which differences are
//! reported as such rather than as scan errors.

use integrity_common::{Anomaly, AnomalyKind, Baseline, EntryKind, ScanOutput};

/// The scanned entries to compare. A seed-format baseline records regular files only
/// (no directory, not even the root), so directories, links and special files are
/// compared only where the baseline has the path; otherwise every directory of the
/// machine would be "added".
pub fn comparable<'a>(
    baseline: &Baseline,
    scanned: &'a [integrity_common::FileIntegrityEntry],
) -> std::borrow::Cow<'a, [integrity_common::FileIntegrityEntry]> {
    let files_only = baseline
        .entries
        .iter()
        .all(|entry| entry.kind == EntryKind::File);
    if !files_only {
        return std::borrow::Cow::Borrowed(scanned);
    }
    let in_baseline = |path: &[u8]| {
        baseline
            .entries
            .binary_search_by(|entry| (*entry.path).cmp(path))
            .is_ok()
    };
    std::borrow::Cow::Owned(
        scanned
            .iter()
            .filter(|entry| entry.kind == EntryKind::File || in_baseline(&entry.path))
            .cloned()
            .collect(),
    )
}

/// A path that could not be read (or lies under a directory that could not be) is
/// reported as an error, not also as deleted.
pub fn hidden_by_error(anomaly: &Anomaly<'_>, scanned: &ScanOutput) -> bool {
    if anomaly.kind != AnomalyKind::Deleted || scanned.errors.is_empty() {
        return false;
    }
    let mut path = anomaly.path;
    loop {
        if scanned
            .errors
            .binary_search_by(|error| (*error.path).cmp(path))
            .is_ok()
        {
            return true;
        }
        match path.iter().rposition(|&b| b == b'/') {
            Some(0) | None => {
                return scanned
                    .errors
                    .binary_search_by(|error| (*error.path).cmp(b"/"))
                    .is_ok()
            }
            Some(slash) => path = &path[..slash],
        }
    }
}
