//! Safe extraction of a release archive (ARCHITECTURE.md: trust chain). We walk the tar entries ourselves
//! instead of `tar::Archive::unpack`, because the rules are ours, not tar's:
//!
//! * only regular files, directories and symlinks; no hardlinks, devices, fifos, global
//!   headers or anything else;
//! * relative paths of plain components only (no `..`, no absolute path, no NUL);
//! * nothing is ever written through a symlink: symlinks are created last, after every
//!   file and directory, and files are created with `O_EXCL` (a duplicate entry fails);
//! * a symlink's target must stay inside the tree, lexically and once resolved;
//! * total bytes and entry count are bounded across the whole release (a zstd bomb is
//!   stopped at the bound, not unpacked);
//! * files are created `0600`, directories `0700`, owned by us: modes and owners are
//!   applied later from the signed manifest, never from the tar headers.
//!
//! Every file's SHA-256 is computed as it is written, so the tree can be compared with
//! the signed manifest without reading it again.

use integrity_common::digest::Sha256Hasher;
use integrity_common::Sha256Digest;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What an archive held, by path relative to its tree (`/bin/app`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Dir,
    File { size: u64, sha256: Sha256Digest },
    Symlink { target: Vec<u8> },
}

/// Budget shared by all archives of one release.
#[derive(Debug)]
pub struct Budget {
    pub bytes_left: AtomicU64,
    pub entries_left: AtomicU64,
}

impl Budget {
    pub fn new(max_bytes: u64, max_entries: u64) -> Self {
        Self {
            bytes_left: AtomicU64::new(max_bytes),
            entries_left: AtomicU64::new(max_entries),
        }
    }

    fn take(counter: &AtomicU64, amount: u64) -> bool {
        counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(amount)
            })
            .is_ok()
    }
}

/// Why an archive was refused. The message names the entry.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

fn refuse(path: &str, why: impl std::fmt::Display) -> Refused {
    Refused(format!("entry {path:?}: {why}"))
}

const MAX_PATH_BYTES: usize = 4096;
const COPY_BUFFER: usize = 128 << 10;
/// Decompressed bytes the tar reader may consume outside file contents between two
/// entries (a header, a long name or link ≤ 4 KiB, PAX records, padding).
const HEADER_ALLOWANCE: u64 = 64 << 10;

/// The decompressed stream, metered: each read is charged to an allowance that the
/// extractor sets per entry; past it, reads fail. This bounds what the tar crate reads
/// on its own (long names and PAX headers are read whole into memory, and skipped data
/// is still decompressed).
struct Metered<R> {
    inner: R,
    allowance: Rc<Cell<u64>>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.allowance.get();
        if left == 0 {
            return Err(io::Error::other(
                "the archive holds more data than its entries account for (bound exceeded)",
            ));
        }
        let cap = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..cap])?;
        self.allowance.set(left - n as u64);
        Ok(n)
    }
}

/// Extracts the tar stream `reader` into the empty directory `dest`.
pub fn extract(
    reader: impl Read,
    dest: &Path,
    budget: &Budget,
) -> Result<BTreeMap<Vec<u8>, Item>, Refused> {
    extract_indexed(reader, dest, budget, &mut BTreeMap::new())
}

/// [`extract`], noting in `headers` where each entry's tar header starts in the
/// stream (for the restore index, see `frames`).
pub fn extract_indexed(
    reader: impl Read,
    dest: &Path,
    budget: &Budget,
    headers: &mut BTreeMap<Vec<u8>, u64>,
) -> Result<BTreeMap<Vec<u8>, Item>, Refused> {
    let mut items: BTreeMap<Vec<u8>, Item> = BTreeMap::new();
    let mut symlinks: Vec<(Vec<u8>, PathBuf, Vec<u8>)> = Vec::new();
    let allowance = Rc::new(Cell::new(HEADER_ALLOWANCE));
    let mut archive = tar::Archive::new(Metered {
        inner: reader,
        allowance: Rc::clone(&allowance),
    });
    let mut entries = archive
        .entries()
        .map_err(|e| Refused(format!("not a tar archive: {e}")))?;
    let mut buffer = vec![0u8; COPY_BUFFER];
    loop {
        // Between two entries the tar reader may consume headers, long names, PAX
        // records and the previous entry's padding: a small allowance, so a 1 GiB
        // "long name" or a data run the headers do not account for is refused
        // instead of read into memory or skipped over.
        allowance.set(HEADER_ALLOWANCE);
        let Some(entry) = entries.next() else {
            break;
        };
        let mut entry = entry.map_err(|e| Refused(format!("corrupt or truncated archive: {e}")))?;
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        if !Budget::take(&budget.entries_left, 1) {
            return Err(refuse(&shown, "too many entries for one release"));
        }
        let relative = checked_relative(&raw_path).map_err(|why| refuse(&shown, why))?;
        if relative.as_os_str().is_empty() {
            // `./` itself: the tree root, whose mode comes from the manifest.
            if entry.header().entry_type().is_dir() {
                continue;
            }
            return Err(refuse(
                &shown,
                "names the archive root but is not a directory",
            ));
        }
        let key = manifest_key(&relative);
        if items.contains_key(&key) {
            return Err(refuse(&shown, "appears twice"));
        }
        headers.insert(key.clone(), entry.raw_header_position());
        let target = dest.join(&relative);
        let kind = entry.header().entry_type();
        let item = if kind.is_dir() {
            make_parents(dest, &relative, &mut items).map_err(|why| refuse(&shown, why))?;
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&target)
                .map_err(|e| refuse(&shown, e))?;
            Item::Dir
        } else if kind.is_file() {
            // The size the entry really yields (a PAX `size` record overrides the
            // header's field), charged before a byte is written.
            let size = entry.size();
            if !Budget::take(&budget.bytes_left, size) {
                return Err(refuse(&shown, "the release is larger than the size bound"));
            }
            allowance.set(size.saturating_add(HEADER_ALLOWANCE));
            make_parents(dest, &relative, &mut items).map_err(|why| refuse(&shown, why))?;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                .open(&target)
                .map_err(|e| refuse(&shown, e))?;
            let mut hasher = Sha256Hasher::new();
            let mut written = 0u64;
            loop {
                let n = match entry.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(refuse(&shown, format!("truncated or corrupt: {e}"))),
                };
                hasher.update(&buffer[..n]);
                file.write_all(&buffer[..n])
                    .map_err(|e| refuse(&shown, format!("cannot write: {e}")))?;
                written += n as u64;
            }
            if written != size {
                return Err(refuse(&shown, "truncated"));
            }
            Item::File {
                size,
                sha256: hasher.finish(),
            }
        } else if kind == tar::EntryType::Symlink {
            let link = entry
                .link_name_bytes()
                .ok_or_else(|| refuse(&shown, "symlink without a target"))?
                .into_owned();
            check_link_lexically(&relative, &link).map_err(|why| refuse(&shown, why))?;
            make_parents(dest, &relative, &mut items).map_err(|why| refuse(&shown, why))?;
            symlinks.push((key.clone(), relative.clone(), link.clone()));
            Item::Symlink { target: link }
        } else {
            let what = match kind {
                tar::EntryType::Link => "a hardlink",
                tar::EntryType::Char | tar::EntryType::Block => "a device node",
                tar::EntryType::Fifo => "a fifo",
                _ => "not a file, directory or symlink",
            };
            return Err(refuse(&shown, format!("is {what}; refused")));
        };
        items.insert(key, item);
    }
    // Symlinks last: no file above was written through one.
    for (key, relative, link) in &symlinks {
        let shown = String::from_utf8_lossy(key);
        let path = dest.join(relative);
        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(link), &path)
            .map_err(|e| refuse(&shown, e))?;
    }
    // Once every link exists, each must also resolve inside the tree (a chain of
    // lexically harmless links can still climb out).
    let root = fs::canonicalize(dest).map_err(|e| Refused(format!("{}: {e}", dest.display())))?;
    for (key, relative, link) in &symlinks {
        let shown = String::from_utf8_lossy(key);
        match fs::canonicalize(dest.join(relative)) {
            Ok(resolved) if resolved.starts_with(&root) => {}
            Ok(_) => return Err(refuse(&shown, "symlink resolves outside the tree")),
            Err(_) if !link.split(|b| *b == b'/').any(|c| c == b"..") => {}
            Err(_) => {
                return Err(refuse(
                    &shown,
                    "dangling symlink that climbs with `..`; refused",
                ))
            }
        }
    }
    Ok(items)
}

/// `a/b` → `/a/b`: the manifest's path form (relative to the tree, leading `/`).
fn manifest_key(relative: &Path) -> Vec<u8> {
    let mut key = Vec::with_capacity(relative.as_os_str().len() + 1);
    key.push(b'/');
    key.extend_from_slice(relative.as_os_str().as_bytes());
    key
}

/// A tar path made safe: plain components only (a leading `./` is dropped).
fn checked_relative(raw: &[u8]) -> Result<PathBuf, &'static str> {
    if raw.len() > MAX_PATH_BYTES {
        return Err("path too long");
    }
    if raw.contains(&0) {
        return Err("path contains NUL");
    }
    let path = Path::new(std::ffi::OsStr::from_bytes(raw));
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains `..`; refused"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path; refused"),
        }
    }
    Ok(clean)
}

/// The parents of `relative` must be directories of this archive (created on demand,
/// never through a symlink: symlinks do not exist yet, and a path below an entry that
/// is a file or a symlink is refused).
fn make_parents(
    dest: &Path,
    relative: &Path,
    items: &mut BTreeMap<Vec<u8>, Item>,
) -> Result<(), String> {
    let mut so_far = PathBuf::new();
    let parts: Vec<_> = relative.components().collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        so_far.push(part);
        let key = manifest_key(&so_far);
        match items.get(&key) {
            Some(Item::Dir) => continue,
            Some(_) => {
                return Err(format!(
                    "lies below {:?}, which is not a directory",
                    String::from_utf8_lossy(&key)
                ))
            }
            None => {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(dest.join(&so_far))
                    .map_err(|e| e.to_string())?;
                items.insert(key, Item::Dir);
            }
        }
    }
    Ok(())
}

/// A symlink target must be relative and, read from the link's directory, stay
/// inside the tree (also what `bundle build` refuses to ship).
pub fn check_link_lexically(relative: &Path, link: &[u8]) -> Result<(), &'static str> {
    if link.is_empty() || link.len() > MAX_PATH_BYTES || link.contains(&0) {
        return Err("symlink target is empty, too long or contains NUL");
    }
    if link.starts_with(b"/") {
        return Err("symlink to an absolute path; refused");
    }
    let mut depth = relative.components().count() as i64 - 1;
    for part in link.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return Err("symlink points outside the tree; refused");
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_links() {
        assert_eq!(checked_relative(b"./a/b").unwrap(), PathBuf::from("a/b"));
        assert!(checked_relative(b"a/../b").is_err());
        assert!(checked_relative(b"/etc/x").is_err());
        assert!(check_link_lexically(Path::new("a/b"), b"../c").is_ok());
        assert!(check_link_lexically(Path::new("a/b"), b"../../c").is_err());
        assert!(check_link_lexically(Path::new("b"), b"x/../../c").is_err());
        assert!(check_link_lexically(Path::new("b"), b"/etc").is_err());
    }
}
