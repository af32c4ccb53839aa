//! Drift: compare a baseline's entries with a fresh scan's (REFERENCE §3–4).
//!
//! Both lists are sorted by path bytes (a validated manifest and a scan guarantee it),
//! so the diff is one merge pass: linear time, borrowing both lists, no copies.

use crate::manifest::FileIntegrityEntry;
use crate::pathenc;
use serde::ser::{SerializeSeq, SerializeStruct, Serializer};
use serde::Serialize;
use std::cmp::Ordering;
use std::fmt;

/// The kinds of drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnomalyKind {
    /// Content hash (or symlink target, or device number) differs.
    Modified,
    /// Mode, uid or gid differs.
    MetadataChanged,
    /// Present now, absent from the baseline.
    Added,
    /// In the baseline, absent now.
    Deleted,
    /// The entry's kind differs (a file became a symlink, …).
    TypeChanged,
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 5] = [
        AnomalyKind::Modified,
        AnomalyKind::MetadataChanged,
        AnomalyKind::Added,
        AnomalyKind::Deleted,
        AnomalyKind::TypeChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::Modified => "modified",
            AnomalyKind::MetadataChanged => "metadata_changed",
            AnomalyKind::Added => "added",
            AnomalyKind::Deleted => "deleted",
            AnomalyKind::TypeChanged => "type_changed",
        }
    }

    /// The one-shot exit-code bit (AIDE's, REFERENCE §3–4): 1 added, 2 deleted, 4 changed of
    /// any kind (content, type or metadata). There is no fourth bit: drift is 1–7 and
    /// never reads as one of the error codes (14+); which fields changed is in the
    /// report, not the exit code.
    pub fn exit_bit(self) -> u8 {
        match self {
            AnomalyKind::Added => 1,
            AnomalyKind::Deleted => 2,
            AnomalyKind::Modified | AnomalyKind::TypeChanged | AnomalyKind::MetadataChanged => 4,
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which fields of an entry differ, as a small bit set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ChangedFields(u8);

impl ChangedFields {
    pub const SHA256: Self = Self(1);
    pub const SIZE: Self = Self(1 << 1);
    pub const TARGET: Self = Self(1 << 2);
    pub const RDEV: Self = Self(1 << 3);
    pub const MODE: Self = Self(1 << 4);
    pub const UID: Self = Self(1 << 5);
    pub const GID: Self = Self(1 << 6);
    pub const KIND: Self = Self(1 << 7);

    const NAMES: [(Self, &'static str); 8] = [
        (Self::KIND, "kind"),
        (Self::SHA256, "sha256"),
        (Self::SIZE, "size"),
        (Self::TARGET, "target"),
        (Self::RDEV, "rdev"),
        (Self::MODE, "mode"),
        (Self::UID, "uid"),
        (Self::GID, "gid"),
    ];

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The set with `field` added.
    pub fn with(self, field: Self) -> Self {
        Self(self.0 | field.0)
    }

    fn set_if(&mut self, field: Self, differs: bool) {
        if differs {
            self.0 |= field.0;
        }
    }

    /// The names of the fields in the set, in a fixed order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(field, _)| self.contains(*field))
            .map(|(_, name)| name)
    }
}

impl Serialize for ChangedFields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        for name in self.names() {
            seq.serialize_element(name)?;
        }
        seq.end()
    }
}

/// One drift finding. Serializes as the report line of REFERENCE §3–4:
/// `{"anomaly":…,"path":…,"changed":[…],"baseline":{…}|null,"current":{…}|null}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anomaly<'a> {
    pub kind: AnomalyKind,
    pub path: &'a [u8],
    /// Empty for `added` and `deleted`.
    pub changed: ChangedFields,
    pub baseline: Option<&'a FileIntegrityEntry>,
    pub current: Option<&'a FileIntegrityEntry>,
}

impl Serialize for Anomaly<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("Anomaly", 5)?;
        out.serialize_field("anomaly", self.kind.as_str())?;
        out.serialize_field("path", &pathenc::encode(self.path))?;
        out.serialize_field("changed", &self.changed)?;
        out.serialize_field("baseline", &self.baseline)?;
        out.serialize_field("current", &self.current)?;
        out.end()
    }
}

/// Diffs two sorted entry lists. Yields anomalies in path order; a path whose content
/// and metadata both changed yields `modified` then `metadata_changed`.
pub fn diff<'a>(baseline: &'a [FileIntegrityEntry], current: &'a [FileIntegrityEntry]) -> Diff<'a> {
    Diff {
        baseline,
        current,
        baseline_idx: 0,
        current_idx: 0,
        pending: None,
    }
}

/// The iterator returned by [`diff`].
pub struct Diff<'a> {
    baseline: &'a [FileIntegrityEntry],
    current: &'a [FileIntegrityEntry],
    baseline_idx: usize,
    current_idx: usize,
    pending: Option<Anomaly<'a>>,
}

impl<'a> Iterator for Diff<'a> {
    type Item = Anomaly<'a>;

    fn next(&mut self) -> Option<Anomaly<'a>> {
        if let Some(pending) = self.pending.take() {
            return Some(pending);
        }
        loop {
            let old = self.baseline.get(self.baseline_idx);
            let new = self.current.get(self.current_idx);
            let order = match (old, new) {
                (None, None) => return None,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(old), Some(new)) => old.path.cmp(&new.path),
            };
            match order {
                Ordering::Less => {
                    self.baseline_idx += 1;
                    return old.map(|old| one_sided(AnomalyKind::Deleted, Some(old), None));
                }
                Ordering::Greater => {
                    self.current_idx += 1;
                    return new.map(|new| one_sided(AnomalyKind::Added, None, Some(new)));
                }
                Ordering::Equal => {
                    self.baseline_idx += 1;
                    self.current_idx += 1;
                    let (old, new) = (old?, new?);
                    let (first, second) = compare(old, new);
                    if let Some(first) = first {
                        self.pending = second;
                        return Some(first);
                    }
                    if second.is_some() {
                        return second;
                    }
                }
            }
        }
    }
}

fn one_sided<'a>(
    kind: AnomalyKind,
    baseline: Option<&'a FileIntegrityEntry>,
    current: Option<&'a FileIntegrityEntry>,
) -> Anomaly<'a> {
    let path = baseline.or(current).map_or(&b""[..], |entry| &entry.path);
    Anomaly {
        kind,
        path,
        changed: ChangedFields::default(),
        baseline,
        current,
    }
}

/// Compares two entries of one path: a kind change alone, or content then metadata.
fn compare<'a>(
    old: &'a FileIntegrityEntry,
    new: &'a FileIntegrityEntry,
) -> (Option<Anomaly<'a>>, Option<Anomaly<'a>>) {
    let anomaly = |kind, changed| Anomaly {
        kind,
        path: &old.path,
        changed,
        baseline: Some(old),
        current: Some(new),
    };
    if old.kind != new.kind {
        return (
            Some(anomaly(AnomalyKind::TypeChanged, ChangedFields::KIND)),
            None,
        );
    }
    // Optional fields are compared only when both sides carry them, so a baseline with
    // only the seed's five fields diffs cleanly against a full scan.
    let mut content = ChangedFields::default();
    content.set_if(ChangedFields::SHA256, old.sha256 != new.sha256);
    content.set_if(ChangedFields::SIZE, both_differ(old.size, new.size));
    content.set_if(
        ChangedFields::TARGET,
        both_differ(old.target.as_deref(), new.target.as_deref()),
    );
    content.set_if(ChangedFields::RDEV, both_differ(old.rdev, new.rdev));
    let mut metadata = ChangedFields::default();
    metadata.set_if(ChangedFields::MODE, old.mode != new.mode);
    metadata.set_if(ChangedFields::UID, old.uid != new.uid);
    metadata.set_if(ChangedFields::GID, old.gid != new.gid);
    let modified = (!content.is_empty()).then(|| anomaly(AnomalyKind::Modified, content));
    let metadata_changed =
        (!metadata.is_empty()).then(|| anomaly(AnomalyKind::MetadataChanged, metadata));
    match modified {
        Some(modified) => (Some(modified), metadata_changed),
        None => (metadata_changed, None),
    }
}

fn both_differ<T: PartialEq>(a: Option<T>, b: Option<T>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a != b)
}

/// Counts of a check run: the report's last line and the one-shot exit code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DriftSummary {
    pub added: u64,
    pub deleted: u64,
    pub modified: u64,
    pub metadata_changed: u64,
    pub type_changed: u64,
    pub errors: u64,
    pub scanned: u64,
}

impl DriftSummary {
    pub fn record(&mut self, kind: AnomalyKind) {
        let counter = match kind {
            AnomalyKind::Added => &mut self.added,
            AnomalyKind::Deleted => &mut self.deleted,
            AnomalyKind::Modified => &mut self.modified,
            AnomalyKind::MetadataChanged => &mut self.metadata_changed,
            AnomalyKind::TypeChanged => &mut self.type_changed,
        };
        *counter += 1;
    }

    /// The bitmask of REFERENCE §3–4: 0 clean, else 1–7 (1 added, 2 deleted, 4 changed).
    /// Errors are not part of it; callers map them to their own codes (14+), which it
    /// never reaches.
    pub fn exit_bits(&self) -> u8 {
        let mut bits = 0;
        for (count, kind) in [
            (self.added, AnomalyKind::Added),
            (self.deleted, AnomalyKind::Deleted),
            (self.modified, AnomalyKind::Modified),
            (self.type_changed, AnomalyKind::TypeChanged),
            (self.metadata_changed, AnomalyKind::MetadataChanged),
        ] {
            if count > 0 {
                bits |= kind.exit_bit();
            }
        }
        bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Sha256Digest;
    use crate::manifest::EntryKind;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn entry(path: &[u8], kind: EntryKind, seed: u32) -> FileIntegrityEntry {
        FileIntegrityEntry {
            path: path.into(),
            sha256: (kind == EntryKind::File).then(|| Sha256Digest::of(&seed.to_le_bytes())),
            mode: 0o644,
            uid: 0,
            gid: 0,
            kind,
            size: (kind == EntryKind::File).then_some(4),
            target: None,
            rdev: None,
        }
    }

    fn found(
        baseline: &[FileIntegrityEntry],
        current: &[FileIntegrityEntry],
    ) -> BTreeSet<(Vec<u8>, AnomalyKind)> {
        diff(baseline, current)
            .map(|anomaly| (anomaly.path.to_vec(), anomaly.kind))
            .collect()
    }

    #[test]
    fn content_and_metadata_change_give_two_anomalies() {
        let old = entry(b"/x", EntryKind::File, 1);
        let mut new = entry(b"/x", EntryKind::File, 2);
        new.mode = 0o4755;
        new.uid = 7;
        let anomalies: Vec<_> =
            diff(std::slice::from_ref(&old), std::slice::from_ref(&new)).collect();
        assert_eq!(anomalies.len(), 2);
        assert_eq!(anomalies[0].kind, AnomalyKind::Modified);
        assert_eq!(anomalies[0].changed.names().collect::<Vec<_>>(), ["sha256"]);
        assert_eq!(anomalies[1].kind, AnomalyKind::MetadataChanged);
        assert_eq!(
            anomalies[1].changed.names().collect::<Vec<_>>(),
            ["mode", "uid"]
        );
        let line = serde_json::to_string(&anomalies[1]).unwrap();
        assert!(line.starts_with(r#"{"anomaly":"metadata_changed","path":"/x","changed":["mode","uid"],"baseline":{"path":"/x""#), "{line}");
    }

    #[test]
    fn type_change_is_reported_alone() {
        let old = entry(b"/x", EntryKind::File, 1);
        let new = entry(b"/x", EntryKind::Dir, 1);
        let anomalies: Vec<_> =
            diff(std::slice::from_ref(&old), std::slice::from_ref(&new)).collect();
        assert_eq!(anomalies.len(), 1);
        assert_eq!(anomalies[0].kind, AnomalyKind::TypeChanged);
        let mut summary = DriftSummary::default();
        summary.record(anomalies[0].kind);
        assert_eq!(summary.exit_bits(), 4);
    }

    #[test]
    fn added_and_deleted_lines_have_null_sides() {
        let old = [entry(b"/gone", EntryKind::File, 1)];
        let new = [entry(b"/new", EntryKind::File, 1)];
        let lines: Vec<String> = diff(&old, &new)
            .map(|a| serde_json::to_string(&a).unwrap())
            .collect();
        assert!(lines[0]
            .starts_with(r#"{"anomaly":"deleted","path":"/gone","changed":[],"baseline":{"#));
        assert!(lines[0].ends_with(r#""current":null}"#));
        assert!(lines[1].starts_with(
            r#"{"anomaly":"added","path":"/new","changed":[],"baseline":null,"current":{"#
        ));
    }

    #[test]
    fn seed_baseline_without_optional_fields_matches_a_full_scan() {
        let mut seed = entry(b"/etc/passwd", EntryKind::File, 1);
        seed.size = None;
        let full = entry(b"/etc/passwd", EntryKind::File, 1);
        assert_eq!(diff(&[seed], &[full]).count(), 0);
    }

    #[test]
    fn exit_bits_follow_aide() {
        let summary = DriftSummary {
            added: 1,
            deleted: 1,
            metadata_changed: 1,
            ..Default::default()
        };
        assert_eq!(summary.exit_bits(), 1 | 2 | 4);
        assert_eq!(DriftSummary::default().exit_bits(), 0);
        assert_eq!(AnomalyKind::Added.exit_bit(), 1);
        assert_eq!(AnomalyKind::Deleted.exit_bit(), 2);
        for kind in [
            AnomalyKind::Modified,
            AnomalyKind::TypeChanged,
            AnomalyKind::MetadataChanged,
        ] {
            assert_eq!(kind.exit_bit(), 4, "{kind}");
        }
    }

    /// Every combination of counts (scanned and errors included) gives the OR of its
    /// kinds' bits, within 0–7: never 8, never an error code (14+).
    #[test]
    fn exit_bits_of_every_combination_stay_below_the_error_codes() {
        for mask in 0u32..(1 << 6) {
            let count = |bit: u32| u64::from(mask >> bit & 1);
            let summary = DriftSummary {
                added: count(0),
                deleted: count(1),
                modified: count(2),
                metadata_changed: count(3),
                type_changed: count(4),
                errors: count(5),
                scanned: 100,
            };
            let mut expected = 0;
            if summary.added > 0 {
                expected |= 1;
            }
            if summary.deleted > 0 {
                expected |= 2;
            }
            if summary.modified + summary.metadata_changed + summary.type_changed > 0 {
                expected |= 4;
            }
            assert_eq!(summary.exit_bits(), expected, "{summary:?}");
            assert!(summary.exit_bits() < 8, "{summary:?}");
        }
    }

    /// Random trees: sorted unique paths (the map sorts them), each a file or a directory.
    fn tree() -> impl Strategy<Value = Vec<FileIntegrityEntry>> {
        proptest::collection::btree_map(
            proptest::collection::vec(
                prop_oneof![Just(b'/'), Just(b'a'), Just(b'b'), Just(b'-'), Just(0xffu8)],
                1..8,
            ),
            (any::<bool>(), any::<u32>()),
            0..60,
        )
        .prop_map(|map| {
            map.into_iter()
                .map(|(mut path, (is_dir, seed))| {
                    path.insert(0, b'/');
                    let kind = if is_dir {
                        EntryKind::Dir
                    } else {
                        EntryKind::File
                    };
                    entry(&path, kind, seed)
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn diff_of_a_tree_with_itself_is_empty(entries in tree()) {
            prop_assert_eq!(diff(&entries, &entries).count(), 0);
        }

        #[test]
        fn planted_changes_are_found_exactly(
            entries in tree(),
            plan in proptest::collection::vec((0usize..6, any::<u32>()), 0..60),
            added in proptest::collection::btree_set("/[ab%]{1,4}z", 0..5),
        ) {
            let mut current = entries.clone();
            let mut expected = BTreeSet::new();
            let mut deleted = BTreeSet::new();
            for (idx, (action, seed)) in plan.into_iter().enumerate() {
                let Some(entry) = current.get_mut(idx) else { break };
                let path = entry.path.to_vec();
                match action {
                    0 => {}
                    1 if entry.kind == EntryKind::File => {
                        entry.sha256 = Some(Sha256Digest::of(&(seed as u64 | 1 << 40).to_le_bytes()));
                        expected.insert((path, AnomalyKind::Modified));
                    }
                    1 | 2 => {
                        entry.mode ^= 0o4000;
                        expected.insert((path, AnomalyKind::MetadataChanged));
                    }
                    3 => {
                        entry.gid = entry.gid.wrapping_add(1 + seed % 10);
                        expected.insert((path, AnomalyKind::MetadataChanged));
                    }
                    4 => {
                        deleted.insert(path.clone());
                        expected.insert((path, AnomalyKind::Deleted));
                    }
                    _ => {
                        let kind = if entry.kind == EntryKind::Dir { EntryKind::File } else { EntryKind::Dir };
                        *entry = super::tests::entry(&path, kind, seed);
                        expected.insert((path, AnomalyKind::TypeChanged));
                    }
                }
            }
            current.retain(|entry| !deleted.contains(&*entry.path));
            for path in added {
                if !entries.iter().any(|entry| &*entry.path == path.as_bytes()) {
                    current.push(entry(path.as_bytes(), EntryKind::File, 0));
                    expected.insert((path.into_bytes(), AnomalyKind::Added));
                }
            }
            current.sort_by(|a, b| a.path.cmp(&b.path));
            prop_assert_eq!(found(&entries, &current), expected);
        }
    }
}
