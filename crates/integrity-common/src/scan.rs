//! The scanner: walk a root in parallel, hash every regular file once, and return the
//! sorted entries and per-path errors (DESIGN §4). This is the only module of the
//! engine that touches the filesystem.
//!
//! Shape: one rayon task per directory; small files are hashed inline by the task that
//! lists them, large files get their own task so one big file does not serialize a
//! directory. Each directory's entries are appended to the shared list once, in a
//! batch. Nothing is followed: entries come from `lstat`, files are opened with
//! `O_NOFOLLOW | O_NONBLOCK` and checked (`fstat`) to be the very file that was listed,
//! so a file swapped for a symlink or a fifo mid-scan is an error, never a hang or a
//! read of the wrong thing.

use crate::digest::{Sha256Digest, Sha256Hasher};
use crate::exclude::Exclusions;
use crate::manifest::{EntryKind, FileIntegrityEntry, ScanErrorRecord, MAX_PATH_BYTES};
use crate::policy::{self, Policy, NO_BOUND};
use rayon::prelude::*;
use std::cell::RefCell;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Files at least this large are hashed in a task of their own.
const OWN_TASK_BYTES: u64 = 4 << 20;
/// Read buffer per worker thread. Small on purpose: the profile on /usr showed the
/// kernel's copy into user space costing as much as SHA-256 itself with a 256 KiB
/// buffer; at 32–64 KiB the buffer stays in cache between the copy and the hash and
/// that copy's cost halves (docs/BENCHMARKS.md).
const READ_BUFFER_BYTES: usize = 32 << 10;

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
    let root = &options.root;
    let root_meta = fs::metadata(root).map_err(|error| ScanRootError::Unreadable {
        path: root.clone(),
        error,
    })?;
    if !root_meta.is_dir() {
        return Err(ScanRootError::NotADirectory(root.clone()));
    }
    let walk = Walk {
        options,
        progress,
        root_dev: root_meta.dev(),
        entries: Mutex::new(vec![plain_entry(b"/".to_vec(), EntryKind::Dir, &root_meta)]),
        errors: Mutex::new(Vec::new()),
    };
    progress.entries.fetch_add(1, Ordering::Relaxed);
    rayon::scope(|scope| walk.visit_dir(scope, root.clone(), Vec::new(), NO_BOUND));

    let mut entries = walk.entries.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut errors = walk.errors.into_inner().unwrap_or_else(|e| e.into_inner());
    entries.par_sort_unstable_by(|a, b| a.path.cmp(&b.path));
    errors.sort_by(|a, b| a.path.cmp(&b.path));
    let bytes_hashed = entries.iter().filter_map(|entry| entry.size).sum();
    Ok(ScanOutput {
        entries,
        errors,
        bytes_hashed,
    })
}

struct Walk<'a> {
    options: &'a ScanOptions,
    progress: &'a ScanProgress,
    root_dev: u64,
    entries: Mutex<Vec<FileIntegrityEntry>>,
    errors: Mutex<Vec<ScanErrorRecord>>,
}

impl<'a> Walk<'a> {
    /// Lists `dir` (whose manifest path is `rel`, empty for the root) and records its
    /// children; subdirectories and large files become tasks of their own. `bound` is
    /// the policy's bound for the children ([`policy::select`]).
    fn visit_dir<'s>(&'s self, scope: &rayon::Scope<'s>, dir: PathBuf, rel: Vec<u8>, bound: usize) {
        let listing = match fs::read_dir(&dir) {
            Ok(listing) => listing,
            Err(err) => return self.record_error(&rel, &err),
        };
        let mut batch = Vec::new();
        let mut too_long_reported = false;
        for item in listing {
            let dirent = match item {
                Ok(dirent) => dirent,
                Err(err) => {
                    self.record_error(&rel, &err);
                    break;
                }
            };
            let name = dirent.file_name().into_vec();
            let mut child_rel = Vec::with_capacity(rel.len() + 1 + name.len());
            child_rel.extend_from_slice(&rel);
            child_rel.push(b'/');
            child_rel.extend_from_slice(&name);
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
            if !select.record {
                // Not recorded; listed only if an earlier rule can reach below it.
                if select.descend && dirent.file_type().is_ok_and(|kind| kind.is_dir()) {
                    match dirent.metadata() {
                        Ok(meta)
                            if self.options.cross_filesystems || meta.dev() == self.root_dev =>
                        {
                            let path = dirent.path();
                            scope.spawn(move |scope| {
                                self.visit_dir(scope, path, child_rel, select.bound)
                            });
                        }
                        Ok(_) => {}
                        Err(err) => self.record_error(&child_rel, &err),
                    }
                }
                continue;
            }
            let meta = match dirent.metadata() {
                Ok(meta) => meta,
                Err(err) => {
                    self.record_error(&child_rel, &err);
                    continue;
                }
            };
            let file_type = meta.file_type();
            if file_type.is_dir() {
                batch.push(plain_entry(child_rel.clone(), EntryKind::Dir, &meta));
                if self.options.cross_filesystems || meta.dev() == self.root_dev {
                    let path = dirent.path();
                    scope.spawn(move |scope| self.visit_dir(scope, path, child_rel, select.bound));
                }
            } else if file_type.is_file() {
                let path = dirent.path();
                if meta.len() >= OWN_TASK_BYTES {
                    scope.spawn(move |_| {
                        if let Some(entry) = self.file_entry(&path, child_rel, &meta) {
                            self.push(vec![entry]);
                        }
                    });
                } else if let Some(entry) = self.file_entry(&path, child_rel, &meta) {
                    batch.push(entry);
                }
            } else if file_type.is_symlink() {
                match fs::read_link(dirent.path()) {
                    Ok(target) => {
                        let target = target.into_os_string().into_vec().into_boxed_slice();
                        let mut entry = plain_entry(child_rel, EntryKind::Symlink, &meta);
                        entry.sha256 = Some(Sha256Digest::of(&target));
                        entry.target = Some(target);
                        batch.push(entry);
                    }
                    Err(err) => self.record_error(&child_rel, &err),
                }
            } else {
                let kind = if file_type.is_fifo() {
                    EntryKind::Fifo
                } else if file_type.is_socket() {
                    EntryKind::Socket
                } else if file_type.is_char_device() {
                    EntryKind::Char
                } else if file_type.is_block_device() {
                    EntryKind::Block
                } else {
                    self.record_error(&child_rel, &io::Error::other("unknown file type"));
                    continue;
                };
                let mut entry = plain_entry(child_rel, kind, &meta);
                if matches!(kind, EntryKind::Char | EntryKind::Block) {
                    entry.rdev = Some(meta.rdev());
                }
                batch.push(entry);
            }
        }
        self.push(batch);
    }

    /// Hashes one regular file; on failure records the error and returns `None`.
    fn file_entry(
        &self,
        path: &Path,
        rel: Vec<u8>,
        listed: &Metadata,
    ) -> Option<FileIntegrityEntry> {
        match hash_file(path, listed) {
            Ok((digest, size, opened)) => {
                self.progress.bytes.fetch_add(size, Ordering::Relaxed);
                let mut entry = plain_entry(rel, EntryKind::File, &opened);
                entry.sha256 = Some(digest);
                entry.size = Some(size);
                Some(entry)
            }
            Err(err) => {
                self.record_error(&rel, &err);
                None
            }
        }
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

/// An entry without content fields, from `lstat`/`fstat` metadata.
fn plain_entry(path: Vec<u8>, kind: EntryKind, meta: &Metadata) -> FileIntegrityEntry {
    FileIntegrityEntry {
        path: path.into_boxed_slice(),
        sha256: None,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        kind,
        size: None,
        target: None,
        rdev: None,
    }
}

thread_local! {
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; READ_BUFFER_BYTES].into_boxed_slice());
}

/// Opens `path` without following links or blocking, checks it is still the regular
/// file that was listed, and hashes it in one streaming pass. Returns the digest, the
/// number of bytes hashed and the metadata of the opened file.
fn hash_file(path: &Path, listed: &Metadata) -> io::Result<(Sha256Digest, u64, Metadata)> {
    let mut file = open_no_follow(path)?;
    let opened = file.metadata()?;
    if !opened.is_file() {
        return Err(io::Error::other("changed type during scan"));
    }
    if opened.ino() != listed.ino() || opened.dev() != listed.dev() {
        return Err(io::Error::other("replaced during scan"));
    }
    READ_BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        let mut hasher = Sha256Hasher::new();
        let mut size = 0u64;
        loop {
            match file.read(&mut buffer[..]) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&buffer[..n]);
                    size += n as u64;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
        Ok((hasher.finish(), size, opened))
    })
}

/// Hashes the first `len` bytes of the regular file at `rel` below `root`, without
/// following a symlink in its last component (the `growing` check: are the bytes the
/// baseline hashed still the file's first bytes?). A file shorter than `len` is an
/// error.
pub fn hash_prefix(root: &Path, rel: &[u8], len: u64) -> io::Result<Sha256Digest> {
    use std::os::unix::ffi::OsStrExt;
    let rel = rel.strip_prefix(b"/").unwrap_or(rel);
    let file = open_no_follow(&root.join(std::ffi::OsStr::from_bytes(rel)))?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    READ_BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        let mut hasher = Sha256Hasher::new();
        let mut left = len;
        let mut reader = file.take(len);
        while left > 0 {
            match reader.read(&mut buffer[..]) {
                Ok(0) => return Err(io::Error::other("shorter than the baseline")),
                Ok(n) => {
                    hasher.update(&buffer[..n]);
                    left -= n as u64;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(hasher.finish())
    })
}

fn open_no_follow(path: &Path) -> io::Result<File> {
    let base = libc::O_NOFOLLOW | libc::O_NONBLOCK;
    // O_NOATIME keeps a scan from touching every atime, but the kernel allows it only
    // to the file's owner (or CAP_FOWNER); fall back without it.
    match OpenOptions::new()
        .read(true)
        .custom_flags(base | libc::O_NOATIME)
        .open(path)
    {
        Err(err) if err.raw_os_error() == Some(libc::EPERM) => {
            OpenOptions::new().read(true).custom_flags(base).open(path)
        }
        result => result,
    }
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
