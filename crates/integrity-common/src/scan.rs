//! The scanner: walk a root in parallel, hash every regular file once, and return the
//! sorted entries and per-path errors (ARCHITECTURE.md: Scanner). This is the only module of the
//! engine that touches the filesystem.
//!
//! Shape: one rayon task per directory; small files are hashed inline by the task that
//! lists them, large files get their own task so one big file does not serialize a
//! directory. Each directory's entries are appended to the shared list once, in a
//! batch. Nothing is followed, even under a race: the walk descends through directory
//! handles ([`crate::handles`]): each directory is opened from its parent's handle with
//! `O_NOFOLLOW | O_DIRECTORY` and checked to be the inode that was listed, entries come
//! from `fstatat(AT_SYMLINK_NOFOLLOW)`, files are opened `O_NOFOLLOW | O_NONBLOCK`
//! relative to their directory and checked (`fstat`) to be the very file that was
//! listed. A directory swapped for a symlink (or another directory) mid-scan, a file
//! swapped for a fifo: an error entry, never a read outside the tree, never a hang.

use crate::digest::Sha256Digest;
use crate::exclude::Exclusions;
use crate::handles::{self, Meta};
pub use crate::hashing::{hash_prefix, hash_reader};
use crate::manifest::{EntryKind, FileIntegrityEntry, ScanErrorRecord, MAX_PATH_BYTES};
use crate::policy::{self, Policy, NO_BOUND};
use crate::verified::{nanos, KernelState, VerifiedEntry, VerifiedState, SETTLE};
use rayon::prelude::*;
use rustix::fs::{Dir, FileType};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Files at least this large are hashed in a task of their own.
const OWN_TASK_BYTES: u64 = 4 << 20;

/// What to scan and how.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// The tree to scan; entries are recorded relative to it.
    pub root: PathBuf,
    pub exclusions: Exclusions,
    /// Descend into directories on other filesystems than the root's. When false, a
    /// mount point is recorded as a directory but not entered.
    pub cross_filesystems: bool,
    /// Per-path rules: paths whose first matching rule is `ignore` are not scanned
    /// (see [`crate::policy`] for how rules and exclusions combine).
    pub policy: Option<Arc<Policy>>,
}

impl ScanOptions {
    /// Scans `root` with the default exclusions, on one filesystem.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            exclusions: Exclusions::defaults(),
            cross_filesystems: false,
            policy: None,
        }
    }
}

/// Live counters, readable from another thread while a scan runs (progress bars).
#[derive(Debug, Default)]
pub struct ScanProgress {
    pub entries: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
}

/// A finished scan.
#[derive(Debug, Default)]
pub struct ScanOutput {
    /// Sorted by path bytes, unique; the root itself is `/`.
    pub entries: Vec<FileIntegrityEntry>,
    /// Paths that could not be recorded, sorted by path.
    pub errors: Vec<ScanErrorRecord>,
    /// Bytes of file content hashed.
    pub bytes_hashed: u64,
    /// Regular files whose content was read (the others' digests came from the
    /// verified state, [`Verify::known`]).
    pub rehashed: u64,
    /// With [`Verify::record_before`]: every regular file's kernel state and digest,
    /// sorted by path (the next verified state).
    pub verified: Vec<VerifiedEntry>,
}

/// How a scan uses the verified state ([`crate::verified`]) and records the next one.
#[derive(Debug, Default, Clone, Copy)]
pub struct Verify<'a> {
    /// Digests verified before: a regular file still in the kernel state recorded
    /// with its digest is not read again.
    pub known: Option<&'a VerifiedState>,
    /// Record every regular file's kernel state and digest, except those whose ctime
    /// is less than [`SETTLE`] before this time (the check's start, `(seconds,
    /// nanoseconds)` since the epoch), which the next check reads again.
    pub record_before: Option<(i64, u32)>,
}

/// The root itself could not be scanned; nothing was.
#[derive(Debug, thiserror::Error)]
pub enum ScanRootError {
    #[error("cannot scan root {}: {}", .path.display(), describe_io_error(.error))]
    Unreadable { path: PathBuf, error: io::Error },
    #[error("cannot scan root {}: not a directory", .0.display())]
    NotADirectory(PathBuf),
}

/// Scans `options.root` on the current rayon pool.
pub fn scan(options: &ScanOptions, progress: &ScanProgress) -> Result<ScanOutput, ScanRootError> {
    walk_root(options, progress, true, Verify::default())
}

/// [`scan`] with a verified state: files whose kernel state is unchanged are not read
/// (an incremental check), and the next state is recorded (see [`Verify`]).
pub fn scan_verified(
    options: &ScanOptions,
    progress: &ScanProgress,
    verify: Verify<'_>,
) -> Result<ScanOutput, ScanRootError> {
    walk_root(options, progress, true, verify)
}

/// The stat-only walk: [`scan`] without reading file contents. Regular files carry
/// their `size` (from `fstatat`) and no `sha256`; everything else is as [`scan`]
/// records it (a quick check of kinds, modes, owners, sizes, symlink targets and the
/// set of paths).
pub fn scan_metadata(
    options: &ScanOptions,
    progress: &ScanProgress,
) -> Result<ScanOutput, ScanRootError> {
    walk_root(options, progress, false, Verify::default())
}

fn walk_root(
    options: &ScanOptions,
    progress: &ScanProgress,
    hash: bool,
    verify: Verify<'_>,
) -> Result<ScanOutput, ScanRootError> {
    let root = &options.root;
    let unreadable = |error| ScanRootError::Unreadable {
        path: root.clone(),
        error,
    };
    let root_fd = match handles::open_dir(root) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(ScanRootError::NotADirectory(root.clone()))
        }
        Err(e) => return Err(unreadable(e)),
    };
    let root_meta = handles::fstat(&root_fd).map_err(unreadable)?;
    let walk = Walk {
        options,
        progress,
        hash,
        verify,
        root_dev: root_meta.dev,
        entries: Mutex::new(vec![plain_entry(b"/".to_vec(), EntryKind::Dir, &root_meta)]),
        errors: Mutex::new(Vec::new()),
        verified: Mutex::new(Vec::new()),
        rehashed: AtomicU64::new(0),
        bytes_hashed: AtomicU64::new(0),
    };
    progress.entries.fetch_add(1, Ordering::Relaxed);
    rayon::scope(|scope| walk.visit_dir(scope, root_fd, Vec::new(), NO_BOUND));
    Ok(walk.finish())
}

/// Scans the one path `rel` below `root` (manifest form, `/core/x`) with the scanner's
/// own code: the whole subtree for a directory, its one entry otherwise, nothing when
/// it does not exist. The lookup goes through handles from `root`: a symlink or a
/// non-directory on the way is an error entry for `rel`, never followed. No exclusion
/// and no policy apply: this is for comparing a part of a tree with its manifest
/// (the guard's targeted checks). Errors opening `root` itself are returned.
pub fn scan_path(root: &Path, rel: &[u8], cross_filesystems: bool) -> io::Result<ScanOutput> {
    let rel = rel.strip_suffix(b"/").unwrap_or(rel);
    let options = ScanOptions {
        root: root.to_path_buf(),
        exclusions: Exclusions::none(),
        cross_filesystems,
        policy: None,
    };
    if rel.is_empty() || rel == b"/" {
        return scan(&options, &ScanProgress::default()).map_err(|e| match e {
            ScanRootError::Unreadable { error, .. } => error,
            ScanRootError::NotADirectory(_) => io::Error::other("not a directory"),
        });
    }
    let mut path = Vec::with_capacity(rel.len() + 1);
    if !rel.starts_with(b"/") {
        path.push(b'/');
    }
    path.extend_from_slice(rel);
    let root_fd = handles::open_dir(root)?;
    let progress = ScanProgress::default();
    let walk = Walk {
        options: &options,
        progress: &progress,
        hash: true,
        verify: Verify::default(),
        root_dev: handles::fstat(&root_fd)?.dev,
        entries: Mutex::new(Vec::new()),
        errors: Mutex::new(Vec::new()),
        verified: Mutex::new(Vec::new()),
        rehashed: AtomicU64::new(0),
        bytes_hashed: AtomicU64::new(0),
    };
    let found = handles::open_parent(root_fd.as_fd(), &path).and_then(|(parent, name)| {
        let meta = handles::stat_at(parent.as_fd(), &name)?;
        Ok((parent, name, meta))
    });
    match found {
        Ok((parent, name, meta)) => {
            let parent = Arc::new(parent);
            let everything = policy::Select {
                record: true,
                descend: true,
                bound: NO_BOUND,
            };
            rayon::scope(|scope| {
                let mut batch = Vec::new();
                walk.record(scope, &parent, &name, meta, path, everything, &mut batch);
                walk.push(batch);
            });
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => walk.record_error(&path, &swapped(err)),
    }
    Ok(walk.finish())
}

struct Walk<'a> {
    options: &'a ScanOptions,
    /// Hash regular files (false: the stat-only walk, [`scan_metadata`]).
    hash: bool,
    progress: &'a ScanProgress,
    verify: Verify<'a>,
    root_dev: u64,
    entries: Mutex<Vec<FileIntegrityEntry>>,
    errors: Mutex<Vec<ScanErrorRecord>>,
    verified: Mutex<Vec<VerifiedEntry>>,
    rehashed: AtomicU64,
    bytes_hashed: AtomicU64,
}

/// A subdirectory to visit: its parent's handle (shared by the parent's pending
/// children, so a queued directory costs no descriptor of its own until its task
/// runs), its name and the metadata it was listed with.
struct Pending {
    parent: Arc<OwnedFd>,
    name: CString,
    listed: Meta,
}

impl Pending {
    /// Opens the directory without following a symlink and checks it is the one that
    /// was listed (not a directory swapped in since).
    fn open(&self) -> io::Result<OwnedFd> {
        let fd = handles::open_subdir(self.parent.as_fd(), &self.name).map_err(swapped)?;
        if !handles::fstat(&fd)?.same_inode(&self.listed) {
            return Err(io::Error::other("replaced during scan"));
        }
        Ok(fd)
    }
}

/// `ELOOP`/`ENOTDIR` on a name listed as a directory: it was swapped mid-scan.
fn swapped(err: io::Error) -> io::Error {
    match err.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => io::Error::other("replaced during scan"),
        _ => err,
    }
}

impl<'a> Walk<'a> {
    /// The entries and errors, sorted by path.
    fn finish(self) -> ScanOutput {
        let mut entries = self.entries.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut errors = self.errors.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut verified = self
            .verified
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        entries.par_sort_unstable_by(|a, b| a.path.cmp(&b.path));
        errors.sort_by(|a, b| a.path.cmp(&b.path));
        verified.par_sort_unstable_by(|a, b| a.path.cmp(&b.path));
        ScanOutput {
            entries,
            errors,
            bytes_hashed: self.bytes_hashed.into_inner(),
            rehashed: self.rehashed.into_inner(),
            verified,
        }
    }

    /// Lists the directory `dir` (whose manifest path is `rel`, empty for the root)
    /// through its handle and records its children; subdirectories and large files
    /// become tasks of their own. `bound` is the policy's bound for the children
    /// ([`policy::select`]).
    fn visit_dir<'s>(&'s self, scope: &rayon::Scope<'s>, dir: OwnedFd, rel: Vec<u8>, bound: usize) {
        let listing = match dir
            .try_clone()
            .and_then(|fd| Dir::new(fd).map_err(io::Error::from))
        {
            Ok(listing) => listing,
            Err(err) => return self.record_error(&rel, &err),
        };
        let dir = Arc::new(dir);
        let mut batch = Vec::new();
        let mut too_long_reported = false;
        for item in listing {
            let dirent = match item {
                Ok(dirent) => dirent,
                Err(err) => {
                    self.record_error(&rel, &err.into());
                    break;
                }
            };
            let name = dirent.file_name();
            let name_bytes = name.to_bytes();
            if name_bytes == b"." || name_bytes == b".." {
                continue;
            }
            let mut child_rel = Vec::with_capacity(rel.len() + 1 + name_bytes.len());
            child_rel.extend_from_slice(&rel);
            child_rel.push(b'/');
            child_rel.extend_from_slice(name_bytes);
            if child_rel.len() > MAX_PATH_BYTES {
                // A manifest path is at most PATH_MAX bytes; deeper names (made with
                // relative operations) are reported on their directory, once.
                if !too_long_reported {
                    too_long_reported = true;
                    let err = io::Error::other("holds paths longer than 4096 bytes");
                    self.record_error(&rel, &err);
                }
                continue;
            }
            let select = policy::select(
                self.options.policy.as_deref(),
                &self.options.exclusions,
                &child_rel,
                bound,
            );
            // `d_type` spares a stat of what is neither recorded nor descended into
            // (some filesystems leave it unknown: then stat).
            let maybe_dir = matches!(dirent.file_type(), FileType::Directory | FileType::Unknown);
            if !(select.record || select.descend && maybe_dir) {
                continue;
            }
            let meta = match handles::stat_at(dir.as_fd(), name) {
                Ok(meta) => meta,
                Err(err) => {
                    self.record_error(&child_rel, &err);
                    continue;
                }
            };
            self.record(scope, &dir, name, meta, child_rel, select, &mut batch);
        }
        self.push(batch);
    }

    /// Records the child `name` of `dir` (listed as `meta`, manifest path `rel`) into
    /// `batch`, or queues it: a subdirectory is visited (when on the root's filesystem
    /// or crossing is allowed), a large file hashed in a task of its own.
    #[allow(clippy::too_many_arguments)]
    fn record<'s>(
        &'s self,
        scope: &rayon::Scope<'s>,
        dir: &Arc<OwnedFd>,
        name: &CStr,
        meta: Meta,
        child_rel: Vec<u8>,
        select: policy::Select,
        batch: &mut Vec<FileIntegrityEntry>,
    ) {
        let same_fs = self.options.cross_filesystems || meta.dev == self.root_dev;
        if !select.record {
            // Not recorded; listed only because an earlier rule can reach below it.
            if meta.is_dir() && same_fs {
                self.spawn_dir(scope, dir, name, meta, child_rel, select.bound);
            }
            return;
        }
        match meta.file_type() {
            FileType::Directory => {
                batch.push(plain_entry(child_rel.clone(), EntryKind::Dir, &meta));
                if same_fs {
                    self.spawn_dir(scope, dir, name, meta, child_rel, select.bound);
                }
            }
            FileType::RegularFile if !self.hash => {
                let mut entry = plain_entry(child_rel, EntryKind::File, &meta);
                entry.size = Some(meta.size);
                batch.push(entry);
            }
            FileType::RegularFile => {
                let known = self
                    .verify
                    .known
                    .and_then(|known| known.lookup(&child_rel, &KernelState::of(&meta)));
                if let Some(digest) = known {
                    // Verified before in this very kernel state: not read again.
                    let mut entry = plain_entry(child_rel, EntryKind::File, &meta);
                    entry.sha256 = Some(digest);
                    entry.size = Some(meta.size);
                    self.note_verified(&entry, &meta);
                    batch.push(entry);
                } else if meta.size >= OWN_TASK_BYTES {
                    let parent = Arc::clone(dir);
                    let name = name.to_owned();
                    scope.spawn(move |_| {
                        if let Some(entry) = self.file_entry(&parent, &name, child_rel, &meta) {
                            self.push(vec![entry]);
                        }
                    });
                } else if let Some(entry) = self.file_entry(dir, name, child_rel, &meta) {
                    batch.push(entry);
                }
            }
            FileType::Symlink => match handles::read_link_at(dir.as_fd(), name) {
                Ok(target) => {
                    let target = target.into_boxed_slice();
                    let mut entry = plain_entry(child_rel, EntryKind::Symlink, &meta);
                    entry.sha256 = Some(Sha256Digest::of(&target));
                    entry.target = Some(target);
                    batch.push(entry);
                }
                Err(err) => self.record_error(&child_rel, &swapped(err)),
            },
            other => {
                let kind = match other {
                    FileType::Fifo => EntryKind::Fifo,
                    FileType::Socket => EntryKind::Socket,
                    FileType::CharacterDevice => EntryKind::Char,
                    FileType::BlockDevice => EntryKind::Block,
                    _ => {
                        let err = io::Error::other("unknown file type");
                        return self.record_error(&child_rel, &err);
                    }
                };
                let mut entry = plain_entry(child_rel, kind, &meta);
                if matches!(kind, EntryKind::Char | EntryKind::Block) {
                    entry.rdev = Some(meta.rdev);
                }
                batch.push(entry);
            }
        }
    }

    /// Queues the subdirectory `name` of `parent` (listed as `listed`) for a task of
    /// its own, which opens it through the parent's handle when it runs.
    fn spawn_dir<'s>(
        &'s self,
        scope: &rayon::Scope<'s>,
        parent: &Arc<OwnedFd>,
        name: &CStr,
        listed: Meta,
        rel: Vec<u8>,
        bound: usize,
    ) {
        let pending = Pending {
            parent: Arc::clone(parent),
            name: name.to_owned(),
            listed,
        };
        scope.spawn(move |scope| match pending.open() {
            Ok(fd) => {
                drop(pending);
                self.visit_dir(scope, fd, rel, bound)
            }
            Err(err) => self.record_error(&rel, &err),
        });
    }

    /// Hashes one regular file; on failure records the error and returns `None`.
    fn file_entry(
        &self,
        dir: &OwnedFd,
        name: &CStr,
        rel: Vec<u8>,
        listed: &Meta,
    ) -> Option<FileIntegrityEntry> {
        match hash_file(dir, name, listed) {
            Ok((digest, size, opened)) => {
                self.progress.bytes.fetch_add(size, Ordering::Relaxed);
                self.bytes_hashed.fetch_add(size, Ordering::Relaxed);
                self.rehashed.fetch_add(1, Ordering::Relaxed);
                let mut entry = plain_entry(rel, EntryKind::File, &opened);
                entry.sha256 = Some(digest);
                entry.size = Some(size);
                // The state from before the read: a write during it changes ctime
                // after, and the next check reads the file again.
                self.note_verified(&entry, &opened);
                Some(entry)
            }
            Err(err) => {
                self.record_error(&rel, &err);
                None
            }
        }
    }

    /// Records a regular file's kernel state and digest for the next verified state
    /// (unless its last change is too recent to tell apart from a later one).
    fn note_verified(&self, entry: &FileIntegrityEntry, meta: &Meta) {
        let (Some(start), Some(sha256)) = (self.verify.record_before, entry.sha256) else {
            return;
        };
        if nanos(meta.ctime) + SETTLE.as_nanos() as i128 > nanos(start) {
            return;
        }
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(VerifiedEntry {
                path: entry.path.clone(),
                state: KernelState::of(meta),
                sha256,
            });
    }

    fn push(&self, batch: Vec<FileIntegrityEntry>) {
        if batch.is_empty() {
            return;
        }
        self.progress
            .entries
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.is_empty() {
            *entries = batch;
        } else {
            entries.extend(batch);
        }
    }

    fn record_error(&self, rel: &[u8], err: &io::Error) {
        self.progress.errors.fetch_add(1, Ordering::Relaxed);
        let path: Box<[u8]> = if rel.is_empty() {
            b"/".as_slice().into()
        } else {
            rel.into()
        };
        let mut error = describe_io_error(err);
        if err.kind() == io::ErrorKind::NotFound {
            error.push_str(" (vanished during scan)");
        }
        let record = ScanErrorRecord { path, error };
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record);
    }
}

/// An entry without content fields, from `fstatat`/`fstat` metadata.
fn plain_entry(path: Vec<u8>, kind: EntryKind, meta: &Meta) -> FileIntegrityEntry {
    FileIntegrityEntry {
        path: path.into_boxed_slice(),
        sha256: None,
        mode: meta.perm(),
        uid: meta.uid,
        gid: meta.gid,
        kind,
        size: None,
        target: None,
        rdev: None,
    }
}

/// Opens `name` in `dir` without following links or blocking, checks it is still the
/// regular file that was listed, and hashes it in one streaming pass. Returns the
/// digest, the number of bytes hashed and the metadata of the opened file.
fn hash_file(dir: &OwnedFd, name: &CStr, listed: &Meta) -> io::Result<(Sha256Digest, u64, Meta)> {
    let (file, opened) =
        handles::open_file_at(dir.as_fd(), name, Some(listed)).map_err(|e| {
            match e.to_string().as_str() {
                "not a regular file" => io::Error::other("changed type during scan"),
                _ => e,
            }
        })?;
    let (digest, size) = hash_reader(file, u64::MAX)?;
    Ok((digest, size, opened))
}

/// A short lowercase description of an I/O error: `permission denied`, `no such file
/// or directory`, … (the OS message without its `(os error N)` tail).
pub fn describe_io_error(err: &io::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error") {
        Some(cut) => &text[..cut],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
