//! The manifest: the seed's `Baseline` / `FileIntegrityEntry`, its JSON form and the
//! one strict validator every component uses (REFERENCE §1).
//!
//! Parsing and validation are one step: entries are validated as they are read, so a
//! hostile document is rejected at its first bad entry, with that entry's index, path
//! and the reason, and no unvalidated value ever leaves this module.

use crate::digest::Sha256Digest;
use crate::pathenc;
use crate::policy::{Policy, RawPolicy};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};
use std::marker::PhantomData;

/// Longest accepted path or symlink target, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest accepted image id, in bytes.
pub const MAX_IMAGE_ID_BYTES: usize = 128;
/// Highest accepted `mode` (permission bits with setuid, setgid and sticky).
pub const MAX_MODE: u32 = 0o7777;

/// What kind of filesystem object an entry records. An entry without `kind` in JSON is
/// a regular file (the seed's format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    Char,
    Block,
}

impl EntryKind {
    pub const ALL: [EntryKind; 7] = [
        EntryKind::File,
        EntryKind::Dir,
        EntryKind::Symlink,
        EntryKind::Fifo,
        EntryKind::Socket,
        EntryKind::Char,
        EntryKind::Block,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::Fifo => "fifo",
            EntryKind::Socket => "socket",
            EntryKind::Char => "char",
            EntryKind::Block => "block",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// Whether the entry's `sha256` covers content (a file's bytes, a symlink's target).
    pub fn has_content(self) -> bool {
        matches!(self, EntryKind::File | EntryKind::Symlink)
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One filesystem object of a manifest.
///
/// `path` and `target` hold raw bytes; JSON carries them in the encoding of
/// [`crate::pathenc`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIntegrityEntry {
    /// Path relative to the scanned root, with a leading `/`.
    pub path: Box<[u8]>,
    /// Content hash for files and symlinks (hash of the target bytes); `None` for the
    /// kinds without content, written as `""`.
    pub sha256: Option<Sha256Digest>,
    /// `st_mode & 0o7777`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub kind: EntryKind,
    /// Content length in bytes for files (the bytes the hash covers).
    pub size: Option<u64>,
    /// Symlink target, never followed.
    pub target: Option<Box<[u8]>>,
    /// Device number of character and block devices.
    pub rdev: Option<u64>,
}

impl FileIntegrityEntry {
    /// The path in its JSON text form.
    pub fn path_text(&self) -> Cow<'_, str> {
        pathenc::encode(&self.path)
    }
}

/// A path the scanner could not record, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanErrorRecord {
    pub path: Box<[u8]>,
    pub error: String,
}

/// A manifest: a golden baseline, a release's per-file manifest or the guard's reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Baseline {
    pub image_id: String,
    /// ISO 8601 UTC, e.g. `2026-11-23T07:31:43Z`.
    pub timestamp: String,
    /// Sorted by path bytes, unique.
    pub entries: Vec<FileIntegrityEntry>,
    /// Paths the scan could not record (additive field `errors`, absent when empty).
    pub errors: Vec<ScanErrorRecord>,
    /// The rules the image builder chose (additive field `policy`, absent when none):
    /// the agent applies them, and they are covered by the baseline's signature.
    pub policy: Option<Policy>,
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, not the manifest's shape, or an entry that failed validation while
    /// being read (the message names the entry index, its path and the reason).
    #[error("invalid manifest: {0}")]
    Parse(#[from] serde_json::Error),
    /// A well-formed document whose values break a rule.
    #[error("invalid manifest: {what}: {reason}")]
    Invalid { what: String, reason: String },
}

impl ManifestError {
    fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        ManifestError::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// Checks an image id: 1 to 128 bytes of ASCII letters, digits and `._-+:@~`, not
/// starting with `.` (it becomes a URL segment and a file name: no `/`, no NUL, no
/// `..`, no spaces or control characters).
pub fn validate_image_id(image_id: &str) -> Result<(), String> {
    if image_id.is_empty() {
        return Err("image id is empty".into());
    }
    if image_id.len() > MAX_IMAGE_ID_BYTES {
        return Err(format!(
            "image id is longer than {MAX_IMAGE_ID_BYTES} bytes"
        ));
    }
    if image_id.starts_with('.') {
        return Err("image id must not start with '.'".into());
    }
    if let Some(bad) = image_id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-+:@~".contains(*c)))
    {
        return Err(format!(
            "image id contains {bad:?}; allowed are ASCII letters, digits and ._-+:@~"
        ));
    }
    Ok(())
}

/// Checks an ISO 8601 UTC timestamp: `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, a real date.
pub fn validate_timestamp(timestamp: &str) -> Result<(), String> {
    let well_formed = timestamp.is_ascii()
        && timestamp.len() <= 40
        && timestamp.ends_with('Z')
        && humantime::parse_rfc3339(timestamp).is_ok();
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "timestamp {timestamp:?} is not ISO 8601 UTC like 2026-11-23T07:31:43Z"
        ))
    }
}

/// The current time as the manifest writes it (whole seconds, UTC).
pub fn now_timestamp() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Checks a raw entry path: absolute, normalized (no empty, `.` or `..` components, no
/// trailing `/` except the root itself), no NUL, at most [`MAX_PATH_BYTES`].
pub fn validate_path(path: &[u8]) -> Result<(), &'static str> {
    if path.first() != Some(&b'/') {
        return Err("path must start with '/'");
    }
    if path.len() > MAX_PATH_BYTES {
        return Err("path is longer than 4096 bytes");
    }
    if path.contains(&0) {
        return Err("path contains a NUL byte");
    }
    if path == b"/" {
        return Ok(());
    }
    for component in path[1..].split(|&b| b == b'/') {
        match component {
            b"" => return Err("path has an empty component ('//' or a trailing '/')"),
            b"." | b".." => return Err("path has a '.' or '..' component"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks one entry's fields against each other (the path is checked by
/// [`validate_path`]).
pub fn validate_entry(entry: &FileIntegrityEntry) -> Result<(), String> {
    validate_path(&entry.path)?;
    if entry.mode > MAX_MODE {
        return Err(format!("mode {:#o} is above 0o7777", entry.mode));
    }
    match (entry.kind.has_content(), entry.sha256) {
        (true, None) => {
            return Err(format!(
                "a {} entry needs a sha256 of 64 lowercase hex digits",
                entry.kind
            ))
        }
        (false, Some(_)) => return Err(format!("a {} entry must have sha256 \"\"", entry.kind)),
        _ => {}
    }
    if let Some(target) = &entry.target {
        if entry.kind != EntryKind::Symlink {
            return Err(format!("a {} entry cannot have a target", entry.kind));
        }
        if target.is_empty() || target.len() > MAX_PATH_BYTES || target.contains(&0) {
            return Err("symlink target is empty, too long or holds a NUL byte".into());
        }
        if entry.sha256 != Some(Sha256Digest::of(target)) {
            return Err("sha256 of a symlink must be the hash of its target".into());
        }
    }
    if entry.rdev.is_some() && !matches!(entry.kind, EntryKind::Char | EntryKind::Block) {
        return Err(format!("a {} entry cannot have rdev", entry.kind));
    }
    if entry.size.is_some() && entry.kind != EntryKind::File {
        return Err(format!("a {} entry cannot have size", entry.kind));
    }
    Ok(())
}

impl Baseline {
    /// Parses and validates a manifest. Unknown fields are ignored; a document with only
    /// the seed's five entry fields is accepted.
    pub fn from_json_slice(bytes: &[u8]) -> Result<Self, ManifestError> {
        let ObjectOnly(raw) = serde_json::from_slice::<ObjectOnly<RawBaseline>>(bytes)?;
        let baseline = Baseline {
            image_id: raw.image_id,
            timestamp: raw.timestamp,
            entries: raw.entries.0,
            errors: raw.errors.0,
            policy: raw
                .policy
                .map(RawPolicy::into_policy)
                .transpose()
                .map_err(|error| ManifestError::invalid("policy", error.to_string()))?,
        };
        baseline.validate_header()?;
        Ok(baseline)
    }

    /// Checks every rule of REFERENCE §1 on a value built in memory (a parsed document has
    /// already passed them).
    pub fn validate(&self) -> Result<(), ManifestError> {
        self.validate_header()?;
        let mut previous: Option<&[u8]> = None;
        for (idx, entry) in self.entries.iter().enumerate() {
            let what = || format!("entries[{idx}] {}", entry.path_text());
            validate_entry(entry).map_err(|reason| ManifestError::invalid(what(), reason))?;
            check_order(previous, &entry.path)
                .map_err(|reason| ManifestError::invalid(what(), reason))?;
            previous = Some(&entry.path);
        }
        for (idx, record) in self.errors.iter().enumerate() {
            validate_path(&record.path).map_err(|reason| {
                ManifestError::invalid(
                    format!("errors[{idx}] {}", pathenc::encode(&record.path)),
                    reason,
                )
            })?;
        }
        Ok(())
    }

    fn validate_header(&self) -> Result<(), ManifestError> {
        validate_image_id(&self.image_id)
            .map_err(|reason| ManifestError::invalid("image_id", reason))?;
        validate_timestamp(&self.timestamp)
            .map_err(|reason| ManifestError::invalid("timestamp", reason))
    }

    /// Writes the manifest as JSON: one entry per line, so the document is deterministic,
    /// streams without building a string, and diffs well with line tools.
    pub fn write_json<W: Write>(&self, mut out: W) -> io::Result<()> {
        out.write_all(b"{\"image_id\":")?;
        serde_json::to_writer(&mut out, &self.image_id)?;
        out.write_all(b",\"timestamp\":")?;
        serde_json::to_writer(&mut out, &self.timestamp)?;
        if let Some(policy) = &self.policy {
            out.write_all(b",\"policy\":")?;
            serde_json::to_writer(&mut out, policy)?;
        }
        if !self.errors.is_empty() {
            out.write_all(b",\"errors\":[")?;
            write_lines(&mut out, &self.errors)?;
            out.write_all(b"]")?;
        }
        out.write_all(b",\"entries\":[")?;
        write_lines(&mut out, &self.entries)?;
        out.write_all(b"]}\n")?;
        Ok(())
    }

    /// The JSON form as bytes (see [`Baseline::write_json`]).
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.entries.len() * 160);
        self.write_json(&mut out)
            .expect("writing to a Vec cannot fail");
        out
    }
}

fn write_lines<W: Write, T: Serialize>(out: &mut W, items: &[T]) -> io::Result<()> {
    for (idx, item) in items.iter().enumerate() {
        out.write_all(if idx == 0 { b"\n" } else { b",\n" })?;
        serde_json::to_writer(&mut *out, item)?;
    }
    if !items.is_empty() {
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn check_order(previous: Option<&[u8]>, path: &[u8]) -> Result<(), &'static str> {
    match previous {
        Some(prev) if prev == path => Err("duplicate path"),
        Some(prev) if prev > path => Err("entries are not sorted by path bytes"),
        _ => Ok(()),
    }
}

impl Serialize for FileIntegrityEntry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("FileIntegrityEntry", 9)?;
        out.serialize_field("path", &self.path_text())?;
        match &self.sha256 {
            Some(digest) => out.serialize_field("sha256", &digest.to_hex())?,
            None => out.serialize_field("sha256", "")?,
        }
        out.serialize_field("mode", &self.mode)?;
        out.serialize_field("uid", &self.uid)?;
        out.serialize_field("gid", &self.gid)?;
        out.serialize_field("kind", self.kind.as_str())?;
        if let Some(size) = self.size {
            out.serialize_field("size", &size)?;
        }
        if let Some(target) = &self.target {
            out.serialize_field("target", &pathenc::encode(target))?;
        }
        if let Some(rdev) = self.rdev {
            out.serialize_field("rdev", &rdev)?;
        }
        out.end()
    }
}

impl Serialize for ScanErrorRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("ScanErrorRecord", 2)?;
        out.serialize_field("path", &pathenc::encode(&self.path))?;
        out.serialize_field("error", &self.error)?;
        out.end()
    }
}

/// Accepts `T` only from a JSON object. serde's derived structs also accept an array
/// of their fields in order; a manifest has one spelling, so that one is refused.
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(ObjectOnly)
    }
}

#[derive(Deserialize)]
struct RawBaseline {
    image_id: String,
    timestamp: String,
    entries: Entries,
    #[serde(default)]
    errors: ErrorRecords,
    #[serde(default)]
    policy: Option<RawPolicy>,
}

#[derive(Deserialize)]
struct RawEntry<'a> {
    #[serde(borrow)]
    path: Cow<'a, str>,
    #[serde(borrow)]
    sha256: Cow<'a, str>,
    mode: u32,
    uid: u32,
    gid: u32,
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default, borrow)]
    target: Option<Cow<'a, str>>,
    #[serde(default)]
    rdev: Option<u64>,
}

fn decode_path(text: &str) -> Result<Box<[u8]>, String> {
    pathenc::decode(text)
        .map(|bytes| bytes.into_owned().into_boxed_slice())
        .map_err(|err| format!("bad path encoding: {err}"))
}

impl RawEntry<'_> {
    /// Converts and validates; the error is the reason, the caller adds where.
    fn into_entry(self) -> Result<FileIntegrityEntry, String> {
        let kind = match self.kind.as_deref() {
            None => EntryKind::File,
            Some(text) => EntryKind::parse(text).ok_or_else(|| {
                format!("unknown kind {text:?} (file, dir, symlink, fifo, socket, char, block)")
            })?,
        };
        let sha256 = match &*self.sha256 {
            "" => None,
            text => Some(
                Sha256Digest::from_hex(text)
                    .ok_or("sha256 is not 64 lowercase hex digits or \"\"")?,
            ),
        };
        let entry = FileIntegrityEntry {
            path: decode_path(&self.path)?,
            sha256,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            kind,
            size: self.size,
            target: self.target.as_deref().map(decode_path).transpose()?,
            rdev: self.rdev,
        };
        validate_entry(&entry)?;
        Ok(entry)
    }
}

impl<'de> Deserialize<'de> for FileIntegrityEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let ObjectOnly(raw) = ObjectOnly::<RawEntry>::deserialize(deserializer)?;
        let path = raw.path.clone().into_owned();
        raw.into_entry()
            .map_err(|reason| de::Error::custom(format!("entry {path:?}: {reason}")))
    }
}

/// The entry list, validated and order-checked while it is read (one copy in memory).
struct Entries(Vec<FileIntegrityEntry>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of entries")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Entries, A::Error> {
                let mut entries: Vec<FileIntegrityEntry> =
                    Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(ObjectOnly(raw)) = seq.next_element::<ObjectOnly<RawEntry<'de>>>()? {
                    let idx = entries.len();
                    // A borrowed path (no JSON escapes) clones without allocating.
                    let path = raw.path.clone();
                    let fail = |reason: &str| {
                        de::Error::custom(format!("entries[{idx}] {path:?}: {reason}"))
                    };
                    let entry = raw.into_entry().map_err(|reason| fail(&reason))?;
                    check_order(entries.last().map(|last| &*last.path), &entry.path)
                        .map_err(fail)?;
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_seq(EntriesVisitor)
    }
}

#[derive(Default)]
struct ErrorRecords(Vec<ScanErrorRecord>);

impl<'de> Deserialize<'de> for ErrorRecords {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct RawRecord {
            path: String,
            error: String,
        }
        let raw = Vec::<ObjectOnly<RawRecord>>::deserialize(deserializer)?;
        let mut records = Vec::with_capacity(raw.len());
        for (idx, ObjectOnly(record)) in raw.into_iter().enumerate() {
            let path = decode_path(&record.path)
                .and_then(|path| validate_path(&path).map(|()| path).map_err(String::from))
                .map_err(|reason| {
                    de::Error::custom(format!("errors[{idx}] {:?}: {reason}", record.path))
                })?;
            records.push(ScanErrorRecord {
                path,
                error: record.error,
            });
        }
        Ok(ErrorRecords(records))
    }
}

/// A path of a tree scanned on its own, placed under `prefix` in a larger manifest:
/// `/x` under `/core` is `/core/x`, and the tree's root `/` is `/core`.
pub fn reroot(prefix: &str, path: &[u8]) -> Box<[u8]> {
    let mut out = prefix.as_bytes().to_vec();
    if path != b"/" {
        out.extend_from_slice(path);
    }
    out.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn doc(entries: &str) -> String {
        format!(
            r#"{{"image_id":"ubuntu-2204-hardened-v1","timestamp":"2026-11-23T07:31:43Z","entries":[{entries}]}}"#
        )
    }

    fn file(path: &str) -> String {
        format!(r#"{{"path":"{path}","sha256":"{HASH}","mode":420,"uid":0,"gid":0}}"#)
    }

    fn rejected(text: &str) -> String {
        Baseline::from_json_slice(text.as_bytes())
            .expect_err("must be rejected")
            .to_string()
    }

    #[test]
    fn seed_document_with_five_fields_is_accepted() {
        let text = doc(&format!("{},{}", file("/etc/passwd"), file("/usr/bin/su")));
        let baseline = Baseline::from_json_slice(text.as_bytes()).unwrap();
        assert_eq!(baseline.entries.len(), 2);
        assert_eq!(baseline.entries[0].kind, EntryKind::File);
        assert_eq!(&*baseline.entries[1].path, b"/usr/bin/su");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let text = r#"{"image_id":"a","timestamp":"2026-11-23T07:31:43.5Z","future":[1],"entries":[
            {"path":"/x","sha256":"","mode":493,"uid":0,"gid":0,"kind":"dir","xattrs":{"a":1}}]}"#;
        assert!(Baseline::from_json_slice(text.as_bytes()).is_ok());
    }

    #[test]
    fn round_trip_is_byte_identical() {
        let target = b"../lib/x".to_vec();
        let baseline = Baseline {
            image_id: "img".into(),
            timestamp: "2026-11-23T07:31:43Z".into(),
            entries: vec![
                FileIntegrityEntry {
                    path: b"/a\n\\%\xff".to_vec().into(),
                    sha256: Some(Sha256Digest::of(b"")),
                    mode: 0o4755,
                    uid: 0,
                    gid: 0,
                    kind: EntryKind::File,
                    size: Some(0),
                    target: None,
                    rdev: None,
                },
                FileIntegrityEntry {
                    path: b"/b".to_vec().into(),
                    sha256: Some(Sha256Digest::of(&target)),
                    mode: 0o777,
                    uid: 1,
                    gid: 2,
                    kind: EntryKind::Symlink,
                    size: None,
                    target: Some(target.into()),
                    rdev: None,
                },
                FileIntegrityEntry {
                    path: b"/c".to_vec().into(),
                    sha256: None,
                    mode: 0o600,
                    uid: 0,
                    gid: 6,
                    kind: EntryKind::Block,
                    size: None,
                    target: None,
                    rdev: Some(0x801),
                },
            ],
            errors: vec![ScanErrorRecord {
                path: b"/secret".to_vec().into(),
                error: "permission denied".into(),
            }],
            policy: Some(crate::Policy::cloud_default()),
        };
        baseline.validate().unwrap();
        let bytes = baseline.to_json_bytes();
        let parsed = Baseline::from_json_slice(&bytes).unwrap();
        assert_eq!(parsed, baseline);
        assert_eq!(parsed.to_json_bytes(), bytes);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains(r#""path":"/a\n\\%25%FF""#), "{text}");
    }

    #[test]
    fn bad_documents_name_the_entry_and_reason() {
        let cases: Vec<(String, &str)> = vec![
            (doc(&format!("{},{}", file("/b"), file("/a"))), "not sorted"),
            (
                doc(&format!("{},{}", file("/a"), file("/a"))),
                "duplicate path",
            ),
            (doc(&file("/a/../etc")), "'..'"),
            (doc(&file("/a/./b")), "'.'"),
            (doc(&file("relative")), "must start with '/'"),
            (doc(&file("/a//b")), "empty component"),
            (doc(&file("/a/")), "empty component"),
            (doc(&file("/%41")), "bad path encoding"),
            (doc(&file("/a%")), "bad path encoding"),
            (
                doc(&file("/x").replace(HASH, &HASH.to_uppercase())),
                "64 lowercase hex",
            ),
            (
                doc(&file("/x").replace(HASH, &HASH[..63])),
                "64 lowercase hex",
            ),
            (doc(&file("/x").replace(HASH, "")), "needs a sha256"),
            (doc(&file("/x").replace("420", "4096")), "above 0o7777"),
            (doc(&file("/x").replace("420", "-1")), "invalid value"),
            (
                doc(&file("/x").replace("\"gid\":0", "\"gid\":0,\"kind\":\"dir\"")),
                "must have sha256 \"\"",
            ),
            (
                doc(&file("/x").replace("\"gid\":0", "\"gid\":0,\"kind\":\"door\"")),
                "unknown kind",
            ),
            (
                doc(&file("/x").replace(
                    "\"gid\":0",
                    "\"gid\":0,\"kind\":\"symlink\",\"target\":\"/y\"",
                )),
                "hash of its target",
            ),
            (
                doc(&file("/x").replace("\"uid\":0,", "")),
                "missing field `uid`",
            ),
            (doc(&file("/x"))[..60].to_string(), "EOF"),
            (
                doc("").replace("ubuntu-2204-hardened-v1", "a/b"),
                "image_id",
            ),
            (doc("").replace("ubuntu-2204-hardened-v1", ""), "image_id"),
            (doc("").replace("ubuntu-2204-hardened-v1", ".."), "image_id"),
            (
                doc("").replace("ubuntu-2204-hardened-v1", &"a".repeat(129)),
                "image_id",
            ),
            (
                doc("").replace("2026-11-23T07:31:43Z", "2026-11-23 07:31:43"),
                "timestamp",
            ),
            (
                doc("").replace("2026-11-23T07:31:43Z", "2026-11-23T07:31:43+01:00"),
                "timestamp",
            ),
            (
                doc("").replace("2026-11-23T07:31:43Z", "2026-13-23T07:31:43Z"),
                "timestamp",
            ),
            ("[]".to_string(), "expected a JSON object"),
            (
                r#"["a","2026-11-23T07:31:43Z",[]]"#.to_string(),
                "expected a JSON object",
            ),
            (
                doc(&format!(r#"["/x","{HASH}",420,0,0]"#)),
                "expected a JSON object",
            ),
            ("".to_string(), "EOF"),
        ];
        for (text, expected) in cases {
            let message = rejected(&text);
            assert!(
                message.contains(expected),
                "{text}\n  gave: {message}\n  want: {expected}"
            );
        }
    }

    #[test]
    fn first_bad_entry_is_named_with_its_index() {
        let message = rejected(&doc(&format!("{},{}", file("/ok"), file("/bad/.."))));
        assert!(message.contains("entries[1]"), "{message}");
        assert!(message.contains("/bad/.."), "{message}");
    }

    #[test]
    fn null_bytes_in_paths_are_refused() {
        assert!(rejected(&doc(&file("/a\\u0000b"))).contains("NUL"));
    }

    #[test]
    fn image_id_rules() {
        for good in ["ubuntu-2204-hardened-v1", "gold-v1", "a", "img:1.2+b@x~y_z"] {
            assert!(validate_image_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a/b",
            "a\0b",
            ".hidden",
            "..",
            "a b",
            "é",
            "a\nb",
            &"x".repeat(129),
        ] {
            assert!(validate_image_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(Baseline::from_json_slice(text.as_bytes()).is_err());
    }
}
