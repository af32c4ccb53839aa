//! Widening: the changes that give someone more power over a path, and so the drift an
//! intruder makes (issue 16). A policy may let a path's content, type or metadata change,
//! but it never hides widening: only an `ignore` rule (the path is not scanned at all)
//! keeps it out of the report.
//!
//! * **A change** (`metadata_changed`, `type_changed`) widens when the mode *gains*
//!   group write (`0o020`) or other write (`0o002`), set-uid (`0o4000`) or set-gid
//!   (`0o2000`), or when the uid or the gid is another one. Any owner change counts:
//!   the entry cannot say whether the new owner is more trusted, and a new group is
//!   a new set of people (a group-writable file given to a group the intruder is in,
//!   a set-gid binary given to `shadow`). Bits that are lost (`chmod 700`) are narrowing
//!   and stay the rule's business.
//! * **An added entry** widens when it is set-uid, set-gid or world-writable: a new
//!   set-uid binary in a home directory is the classic way to keep root. A new
//!   group-writable entry does not count: with user private groups Debian and Ubuntu
//!   give users `umask 002` (`USERGROUPS_ENAB`), mailboxes are `0660 user:mail`, wtmp
//!   is `0664 root:utmp`; such files appear every day. Once in the baseline, a group
//!   write bit it gains is widening like any other.
//! * A symlink's own mode means nothing (Linux always shows `0777` and ignores it), so
//!   a symlink counts as mode `0`: a file that became a symlink does not widen by its
//!   mode, and a symlink that became a group-writable file does.

use crate::diff::{Anomaly, AnomalyKind, ChangedFields};
use crate::manifest::{EntryKind, FileIntegrityEntry};
use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;
use std::fmt;

/// Group write.
const GROUP_WRITE_BIT: u32 = 0o020;
/// Other write.
const OTHER_WRITE_BIT: u32 = 0o002;
const SETUID_BIT: u32 = 0o4000;
const SETGID_BIT: u32 = 0o2000;

/// How a change widens who may do what with a path, as a small bit set. Serializes as
/// the report's `"widening"` list: `["g+w","o+w","setuid","setgid","owner","group"]`,
/// in that order, each present only when it applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Widening(u8);

impl Widening {
    /// The mode gained group write (`g+w`).
    pub const GROUP_WRITE: Self = Self(1);
    /// The mode gained other write (`o+w`), or an added entry is world-writable.
    pub const OTHER_WRITE: Self = Self(1 << 1);
    /// The mode gained set-uid, or an added entry is set-uid.
    pub const SETUID: Self = Self(1 << 2);
    /// The mode gained set-gid, or an added entry is set-gid.
    pub const SETGID: Self = Self(1 << 3);
    /// Another uid.
    pub const OWNER: Self = Self(1 << 4);
    /// Another gid.
    pub const GROUP: Self = Self(1 << 5);
    pub const NONE: Self = Self(0);

    const NAMES: [(Self, &'static str); 6] = [
        (Self::GROUP_WRITE, "g+w"),
        (Self::OTHER_WRITE, "o+w"),
        (Self::SETUID, "setuid"),
        (Self::SETGID, "setgid"),
        (Self::OWNER, "owner"),
        (Self::GROUP, "group"),
    ];

    /// What `anomaly` gives away: a `metadata_changed` or `type_changed` finding
    /// compared side by side, an `added` one by what the new entry allows. Content
    /// changes and deletions widen nothing (their metadata, if it changed too, is a
    /// finding of its own).
    pub fn of(anomaly: &Anomaly<'_>) -> Self {
        match (anomaly.kind, anomaly.baseline, anomaly.current) {
            (AnomalyKind::MetadataChanged | AnomalyKind::TypeChanged, Some(old), Some(new)) => {
                Self::between(old, new)
            }
            (AnomalyKind::Added, _, Some(new)) => Self::of_added(new),
            _ => Self::NONE,
        }
    }

    /// What changed from `old` to `new` of one path gives away.
    pub fn between(old: &FileIntegrityEntry, new: &FileIntegrityEntry) -> Self {
        let gained = effective_mode(new) & !effective_mode(old);
        let mut widening = Self::from_mode(gained, true);
        widening.set_if(Self::OWNER, old.uid != new.uid);
        widening.set_if(Self::GROUP, old.gid != new.gid);
        widening
    }

    /// What an entry that was not in the baseline gives away.
    pub fn of_added(new: &FileIntegrityEntry) -> Self {
        Self::from_mode(effective_mode(new), false)
    }

    fn from_mode(bits: u32, group_write_counts: bool) -> Self {
        let mut widening = Self::NONE;
        widening.set_if(
            Self::GROUP_WRITE,
            group_write_counts && bits & GROUP_WRITE_BIT != 0,
        );
        widening.set_if(Self::OTHER_WRITE, bits & OTHER_WRITE_BIT != 0);
        widening.set_if(Self::SETUID, bits & SETUID_BIT != 0);
        widening.set_if(Self::SETGID, bits & SETGID_BIT != 0);
        widening
    }

    fn set_if(&mut self, flag: Self, on: bool) {
        if on {
            self.0 |= flag.0;
        }
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The fields of a `metadata_changed` finding that carry the widening: they are
    /// reported even where the rule does not check them.
    pub fn fields(self) -> ChangedFields {
        let mut fields = ChangedFields::default();
        let mode = Self::GROUP_WRITE.0 | Self::OTHER_WRITE.0 | Self::SETUID.0 | Self::SETGID.0;
        if self.0 & mode != 0 {
            fields = fields.with(ChangedFields::MODE);
        }
        if self.contains(Self::OWNER) {
            fields = fields.with(ChangedFields::UID);
        }
        if self.contains(Self::GROUP) {
            fields = fields.with(ChangedFields::GID);
        }
        fields
    }

    /// The names in the set, in a fixed order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(flag, _)| self.contains(*flag))
            .map(|(_, name)| name)
    }
}

/// The permission bits that mean something: none for a symlink.
fn effective_mode(entry: &FileIntegrityEntry) -> u32 {
    match entry.kind {
        EntryKind::Symlink => 0,
        _ => entry.mode,
    }
}

impl Serialize for Widening {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        for name in self.names() {
            seq.serialize_element(name)?;
        }
        seq.end()
    }
}

impl fmt::Display for Widening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().collect::<Vec<_>>().join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::entry;
    use super::*;

    fn file(mode: u32, uid: u32, gid: u32) -> FileIntegrityEntry {
        FileIntegrityEntry {
            uid,
            gid,
            ..entry("/home/u/x", EntryKind::File, b"x", mode)
        }
    }

    fn names(widening: Widening) -> Vec<&'static str> {
        widening.names().collect()
    }

    #[test]
    fn gained_write_set_id_bits_and_new_owners_widen() {
        let old = file(0o755, 1000, 1000);
        for (new, want) in [
            (file(0o777, 1000, 1000), vec!["g+w", "o+w"]),
            (file(0o775, 1000, 1000), vec!["g+w"]),
            (file(0o4755, 1000, 1000), vec!["setuid"]),
            (file(0o2755, 1000, 1000), vec!["setgid"]),
            (
                file(0o6777, 1000, 1000),
                vec!["g+w", "o+w", "setuid", "setgid"],
            ),
            (file(0o755, 0, 1000), vec!["owner"]),
            (file(0o755, 1000, 42), vec!["group"]),
            (file(0o4755, 0, 0), vec!["setuid", "owner", "group"]),
        ] {
            assert_eq!(names(Widening::between(&old, &new)), want, "{new:?}");
        }
    }

    #[test]
    fn narrowing_and_bits_kept_are_not_widening() {
        for (old, new) in [
            (0o4777, 0o700),
            (0o4777, 0o4755),
            (0o4777, 0o4777),
            (0o4777, 0o1777),
            (0o6775, 0o4775),
            // Read and execute bits are not widening: the rule decides on them.
            (0o700, 0o755),
        ] {
            let (old, new) = (file(old, 0, 0), file(new, 0, 0));
            assert!(Widening::between(&old, &new).is_empty(), "{old:?} {new:?}");
        }
        let dir = |mode| entry("/home/v", EntryKind::Dir, b"", mode);
        assert!(Widening::between(&dir(0o755), &dir(0o700)).is_empty());
        assert!(Widening::between(&dir(0o755), &dir(0o1755)).is_empty());
        assert_eq!(
            names(Widening::between(&dir(0o755), &dir(0o777))),
            ["g+w", "o+w"]
        );
    }

    #[test]
    fn a_symlinks_mode_means_nothing() {
        let link = entry("/etc/resolv.conf", EntryKind::Symlink, b"../run/x", 0o777);
        let plain = entry("/etc/resolv.conf", EntryKind::File, b"x", 0o644);
        assert!(Widening::between(&plain, &link).is_empty());
        assert!(Widening::of_added(&link).is_empty());
        let open = entry("/etc/resolv.conf", EntryKind::File, b"x", 0o666);
        assert_eq!(names(Widening::between(&link, &open)), ["g+w", "o+w"]);
    }

    #[test]
    fn an_added_entry_widens_when_set_id_or_world_writable() {
        for (mode, want) in [
            (0o644, vec![]),
            (0o664, vec![]),
            (0o660, vec![]),
            (0o4755, vec!["setuid"]),
            (0o2755, vec!["setgid"]),
            (0o666, vec!["o+w"]),
            (0o1777, vec!["o+w"]),
        ] {
            let new = file(mode, 1000, 1000);
            assert_eq!(names(Widening::of_added(&new)), want, "{mode:o}");
        }
    }

    #[test]
    fn of_an_anomaly_and_its_fields() {
        let old = file(0o644, 1000, 1000);
        let new = file(0o4666, 0, 1000);
        let found: Vec<_> = crate::diff(std::slice::from_ref(&old), std::slice::from_ref(&new))
            .map(|anomaly| (anomaly.kind, Widening::of(&anomaly)))
            .collect();
        let widening = Widening::SETUID
            .union(Widening::GROUP_WRITE)
            .union(Widening::OTHER_WRITE)
            .union(Widening::OWNER);
        assert_eq!(found, [(AnomalyKind::MetadataChanged, widening)]);
        assert_eq!(
            widening.fields(),
            ChangedFields::MODE.with(ChangedFields::UID)
        );
        assert_eq!(Widening::GROUP.fields(), ChangedFields::GID);
        assert_eq!(
            serde_json::to_string(&widening).unwrap(),
            r#"["g+w","o+w","setuid","owner"]"#
        );
        assert_eq!(widening.to_string(), "g+w, o+w, setuid, owner");
        // Content changes and deletions widen nothing.
        let edited = file(0o644, 1000, 1000);
        let edited = FileIntegrityEntry {
            sha256: Some(crate::Sha256Digest::of(b"y")),
            ..edited
        };
        let modified = crate::diff(std::slice::from_ref(&old), std::slice::from_ref(&edited))
            .next()
            .unwrap();
        assert_eq!(modified.kind, AnomalyKind::Modified);
        assert!(Widening::of(&modified).is_empty());
        let gone = crate::diff(std::slice::from_ref(&new), &[]).next().unwrap();
        assert!(Widening::of(&gone).is_empty());
    }
}
