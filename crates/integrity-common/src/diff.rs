//! Drift: compare a baseline's entries with a fresh scan's (DESIGN §5).
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

    /// The one-shot exit-code bit (AIDE's habit): 1 added, 2 deleted, 4 modified or
    /// type changed, 8 metadata changed.
    pub fn exit_bit(self) -> u8 {
        match self {
            AnomalyKind::Added => 1,
            AnomalyKind::Deleted => 2,
            AnomalyKind::Modified | AnomalyKind::TypeChanged => 4,
            AnomalyKind::MetadataChanged => 8,
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

/// One drift finding. Serializes as the report line of DESIGN §5:
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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

    /// The bitmask of DESIGN §5 (0 = clean). Errors are not part of it; callers map
    /// them to their own error codes.
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
