//! The guard's hands: quarantine what changed, put back what the signed manifest says
//! (ARCHITECTURE.md: Scanner, the root). Everything here runs as root inside a release (and `state/`) that a
//! less privileged user may be able to write, so every operation goes through a
//! directory handle ([`integrity_common::handles`]): the release is opened once, each
//! path is resolved below it with no symlink allowed on the way, files are created
//! `O_EXCL` next to their final name and renamed into place, owners and modes are set
//! on the opened inode after its type is checked. A directory swapped for a symlink
//! mid-heal makes the heal fail (and the guard try again or roll back); it never leads
//! a write, chmod or chown outside the release. FIFOs and devices are never opened for
//! reading.

use crate::frames;
use crate::layout::Layout;
use anyhow::Context;
use integrity_common::handles;
use integrity_common::{EntryKind, FileIntegrityEntry};
use rustix::fs::FileType;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

/// The manifest's entry kind as a file type.
pub fn file_type(kind: EntryKind) -> FileType {
    match kind {
        EntryKind::File => FileType::RegularFile,
        EntryKind::Dir => FileType::Directory,
        EntryKind::Symlink => FileType::Symlink,
        EntryKind::Fifo => FileType::Fifo,
        EntryKind::Socket => FileType::Socket,
        EntryKind::Char => FileType::CharacterDevice,
        EntryKind::Block => FileType::BlockDevice,
    }
}

/// The owner to give restored entries: the manifest's, when we are root (as another
/// user we cannot chown, and the manifest is compared as ours then).
fn owner(want: &FileIntegrityEntry) -> Option<(u32, u32)> {
    nix::unistd::geteuid()
        .is_root()
        .then_some((want.uid, want.gid))
}

fn shown(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// The file name of a quarantined path: lossless and unique. Bytes other than ASCII
/// letters, digits, `-` and `_` (and `.` after the first byte) become `%XX`, so `/a/b`
/// is `a%2Fb` and `/a%2Fb` is `a%252Fb`, and non-UTF-8 names keep their bytes. A name
/// that would pass 200 bytes keeps its first 130 and the SHA-256 of the whole path.
pub fn quarantine_name(path: &[u8]) -> CString {
    let path = path.strip_prefix(b"/").unwrap_or(path);
    let mut name = String::with_capacity(path.len());
    for (i, &b) in path.iter().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0) {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    if name.len() > 200 {
        let digest = integrity_common::Sha256Digest::of(path).to_hex();
        name.truncate(130);
        name.push('~');
        name.push_str(&digest);
    }
    CString::new(name).expect("no NUL: every byte outside [A-Za-z0-9._-] is escaped")
}

/// One heal's quarantine directory, `state/quarantine/<stamp>-<pid>-<n>/` (mode 0700,
/// root's), opened as a handle: evidence is never overwritten, and a `state/` swapped
/// for a symlink by its owner is refused, not followed.
pub struct Quarantine {
    pub path: PathBuf,
    dir: OwnedFd,
}

impl Quarantine {
    pub fn create(layout: &Layout) -> anyhow::Result<Self> {
        let root = handles::open_dir(&layout.root)
            .with_context(|| format!("cannot open {}", layout.root.display()))?;
        let base = handles::create_dir_all_beneath(root.as_fd(), b"state/quarantine", 0o700, None)
            .with_context(|| {
                format!(
                    "cannot open {}/state/quarantine without following a symlink",
                    layout.root.display()
                )
            })?;
        let stamp = integrity_common::manifest::now_timestamp().replace(':', "");
        for attempt in 0..10_000u32 {
            let name = format!("{stamp}-{}-{attempt}", std::process::id());
            let c_name = CString::new(name.as_str()).expect("no NUL");
            match rustix::fs::mkdirat(
                &base,
                c_name.as_c_str(),
                rustix::fs::Mode::from_raw_mode(0o700),
            ) {
                Ok(()) => {
                    let dir = handles::open_subdir(base.as_fd(), &c_name)?;
                    handles::set_owner_mode(dir.as_fd(), None, 0o700)?;
                    return Ok(Self {
                        path: layout.path("state/quarantine").join(name),
                        dir,
                    });
                }
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => {
                    return Err(std::io::Error::from(e)).context("cannot create a quarantine")
                }
            }
        }
        anyhow::bail!("no free quarantine directory name")
    }

    /// The evidence file of this quarantine, created exclusively (mode 0600).
    pub fn evidence(&self) -> anyhow::Result<std::fs::File> {
        let fd = rustix::fs::openat(
            &self.dir,
            c"evidence.jsonl",
            rustix::fs::OFlags::WRONLY
                | rustix::fs::OFlags::CREATE
                | rustix::fs::OFlags::EXCL
                | rustix::fs::OFlags::NOFOLLOW
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .map_err(std::io::Error::from)
        .context("cannot create the evidence file")?;
        Ok(std::fs::File::from(fd))
    }

    /// Moves `path` (a file, symlink or whole directory of the release) into the
    /// quarantine: a rename when both are on one mount, else a copy and a removal.
    /// Regular files lose their execute and set-id bits (evidence must not run).
    /// Returns where it went.
    pub fn take(&self, release: BorrowedFd<'_>, path: &[u8]) -> anyhow::Result<PathBuf> {
        let (parent, name) = handles::open_parent(release, path)
            .with_context(|| format!("cannot reach {} without a symlink", shown(path)))?;
        let target = quarantine_name(path);
        match handles::rename_at(parent.as_fd(), &name, self.dir.as_fd(), &target) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {
                handles::copy_tree_at(parent.as_fd(), &name, self.dir.as_fd(), &target)
                    .with_context(|| format!("cannot copy {} to the quarantine", shown(path)))?;
                handles::remove_all_at(parent.as_fd(), &name)
                    .with_context(|| format!("cannot remove {}", shown(path)))?;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot quarantine {}", shown(path))),
        }
        defuse(self.dir.as_fd(), &target);
        let target = target.to_str().expect("ASCII").to_owned();
        Ok(self.path.join(target))
    }
}

/// Evidence must not run: regular files lose execute and set-id bits (best effort:
/// the evidence line records what was found either way).
fn defuse(dir: BorrowedFd<'_>, name: &CString) {
    let Ok(meta) = handles::stat_at(dir, name) else {
        return;
    };
    if meta.is_dir() {
        if let Ok(sub) = handles::open_subdir(dir, name) {
            for child in handles::child_names(sub.as_fd()).unwrap_or_default() {
                defuse(sub.as_fd(), &child);
            }
        }
    } else if meta.is_file() {
        let _ = handles::set_meta_at(dir, name, FileType::RegularFile, None, meta.perm() & 0o644);
    }
}

/// Gives the entry at `want.path` the manifest's owner and mode, through handles.
pub fn apply_entry_metadata(
    release: BorrowedFd<'_>,
    want: &FileIntegrityEntry,
) -> anyhow::Result<()> {
    let (parent, name) = handles::open_parent(release, &want.path)
        .with_context(|| format!("cannot reach {} without a symlink", shown(&want.path)))?;
    handles::set_meta_at(
        parent.as_fd(),
        &name,
        file_type(want.kind),
        owner(want),
        want.mode,
    )
    .with_context(|| format!("cannot restore the owner and mode of {}", shown(&want.path)))
}

/// Recreates a missing directory and, below it, everything the manifest lists
/// (directories here, files and symlinks queued for the archive).
pub fn restore_dir_tree(
    release: BorrowedFd<'_>,
    expected: &BTreeMap<Vec<u8>, FileIntegrityEntry>,
    root: &[u8],
    from_archive: &mut BTreeSet<Vec<u8>>,
) -> anyhow::Result<()> {
    for (path, want) in expected.range(root.to_vec()..) {
        if !(path.as_slice() == root
            || (path.starts_with(root) && path.get(root.len()) == Some(&b'/')))
        {
            break;
        }
        let (parent, name) = handles::open_parent(release, path)
            .with_context(|| format!("cannot reach {} without a symlink", shown(path)))?;
        let found = match handles::stat_at(parent.as_fd(), &name) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", shown(path))),
        };
        if want.kind == EntryKind::Dir {
            if !found.is_some_and(|m| m.is_dir()) {
                rustix::fs::mkdirat(
                    &parent,
                    name.as_c_str(),
                    rustix::fs::Mode::from_raw_mode(0o700),
                )
                .map_err(std::io::Error::from)
                .with_context(|| format!("cannot recreate {}", shown(path)))?;
            }
            handles::set_meta_at(
                parent.as_fd(),
                &name,
                FileType::Directory,
                owner(want),
                want.mode,
            )
            .with_context(|| format!("cannot restore {}", shown(path)))?;
        } else if found.is_none() {
            from_archive.insert(path.clone());
        }
    }
    Ok(())
}

/// Writes back exactly the `wanted` entries from the active version's signed archives,
/// each checked against the manifest before it replaces anything: a fresh `O_EXCL`
/// temporary file in the entry's own directory (reached through handles), hashed as
/// it is written, owner and mode set on it, renamed into place. An entry the release's
/// restore index places is read from its own frame (time proportional to the file,
/// see `frames`); the others, or all of them without an index, by streaming the archive.
pub fn restore_from_archives(
    layout: &Layout,
    version: &str,
    release: BorrowedFd<'_>,
    expected: &BTreeMap<Vec<u8>, FileIntegrityEntry>,
    wanted: &BTreeSet<Vec<u8>>,
) -> anyhow::Result<()> {
    let mut left: BTreeSet<Vec<u8>> = wanted.clone();
    let index = frames::load_index(&layout.release(version));
    for part in ["core", "modules"] {
        let prefix = format!("/{part}/");
        if !left.iter().any(|p| p.starts_with(prefix.as_bytes())) {
            continue;
        }
        let archive = layout
            .archive(version)
            .join(format!("{part}-{version}.tar.zst"));
        let open = || {
            handles::open_file(&archive)
                .map(|(file, _)| file)
                .with_context(|| format!("the signed archive {} is missing", archive.display()))
        };
        if let Some(part_index) = index.as_ref().and_then(|index| index.get(part)) {
            let here: Vec<Vec<u8>> = left
                .iter()
                .filter(|p| p.starts_with(prefix.as_bytes()))
                .cloned()
                .collect();
            for path in here {
                let within = &path[prefix.len() - 1..];
                let key = integrity_common::pathenc::encode(within);
                let Some(&header) = part_index.entries.get(key.as_ref()) else {
                    continue;
                };
                let reader = frames::open_at(open()?, part_index, header)?;
                let mut tar = tar::Archive::new(reader);
                let mut entries = tar.entries()?;
                let Some(Ok(mut entry)) = entries.next() else {
                    continue; // not where the index says: stream below
                };
                if archive_path(&prefix, &entry) != path {
                    continue;
                }
                restore_entry(&mut entry, &path, &expected[&path], release)
                    .with_context(|| format!("{}: {}", archive.display(), shown(&path)))?;
                left.remove(&path);
            }
            if !left.iter().any(|p| p.starts_with(prefix.as_bytes())) {
                continue;
            }
        }
        let decoder = zstd::Decoder::new(open()?)?;
        let mut tar = tar::Archive::new(decoder);
        for entry in tar.entries()? {
            let mut entry = entry.with_context(|| format!("{} is damaged", archive.display()))?;
            let path = archive_path(&prefix, &entry);
            if !left.contains(&path) {
                continue;
            }
            restore_entry(&mut entry, &path, &expected[&path], release)
                .with_context(|| format!("{}: {}", archive.display(), shown(&path)))?;
            left.remove(&path);
            if left.is_empty() {
                break;
            }
        }
    }
    if let Some(missing) = left.iter().next() {
        anyhow::bail!("{} is not in the archive of {version}", shown(missing));
    }
    Ok(())
}

/// The manifest path of an archive entry (`./bin/app` in `core-*.tar.zst` is
/// `/core/bin/app`).
fn archive_path<R: Read>(prefix: &str, entry: &tar::Entry<'_, R>) -> Vec<u8> {
    let raw = entry.path_bytes();
    let raw = raw.strip_prefix(b"./").unwrap_or(&raw);
    let mut path = prefix.as_bytes().to_vec();
    path.extend_from_slice(raw.strip_suffix(b"/").unwrap_or(raw));
    path
}

/// Puts one archive entry (a file or symlink the manifest lists as `want`) in place.
fn restore_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    path: &[u8],
    want: &FileIntegrityEntry,
    release: BorrowedFd<'_>,
) -> anyhow::Result<()> {
    let (parent, name) = handles::open_parent(release, path)
        .with_context(|| format!("cannot reach {} without a symlink", shown(path)))?;
    let parent = parent.as_fd();
    let temp = match want.kind {
        EntryKind::File => write_checked(parent, &name, entry, want)?,
        EntryKind::Symlink => {
            let target = entry
                .link_name_bytes()
                .map(|t| t.into_owned())
                .unwrap_or_default();
            if Some(target.as_slice()) != want.target.as_deref() {
                anyhow::bail!("points elsewhere than the manifest says");
            }
            let (file, temp) = handles::create_temp_at(parent, b"bulletproof-restore")?;
            drop(file);
            // The temporary name is ours (O_EXCL): replace it by the symlink.
            rustix::fs::unlinkat(parent, temp.as_c_str(), rustix::fs::AtFlags::empty())
                .map_err(std::io::Error::from)?;
            handles::symlink_at(&target, parent, &temp)?;
            handles::set_meta_at(parent, &temp, FileType::Symlink, owner(want), 0)?;
            temp
        }
        _ => return Ok(()),
    };
    if let Err(e) = handles::rename_at(parent, &temp, parent, &name) {
        let _ = rustix::fs::unlinkat(parent, temp.as_c_str(), rustix::fs::AtFlags::empty());
        return Err(e).with_context(|| format!("cannot restore {}", shown(path)));
    }
    rustix::fs::fsync(parent).map_err(std::io::Error::from)?;
    Ok(())
}

/// Writes the archive entry into a fresh temporary file beside `name`, hashing it as
/// it goes; keeps it (owner and mode set, synced) only when size and SHA-256 are the
/// manifest's. Returns the temporary name.
fn write_checked(
    parent: BorrowedFd<'_>,
    name: &CString,
    entry: &mut impl Read,
    want: &FileIntegrityEntry,
) -> anyhow::Result<CString> {
    let (mut out, temp) = handles::create_temp_at(parent, name.to_bytes())?;
    let result = (|| -> anyhow::Result<()> {
        let mut hasher = integrity_common::digest::Sha256Hasher::new();
        let mut size = 0u64;
        let mut buffer = vec![0u8; 128 << 10];
        loop {
            let n = entry.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            if want.size.is_none_or(|want| size > want) {
                anyhow::bail!("longer than the manifest says");
            }
            hasher.update(&buffer[..n]);
            out.write_all(&buffer[..n])?;
        }
        if Some(size) != want.size || Some(hasher.finish()) != want.sha256 {
            anyhow::bail!("does not match the signed manifest");
        }
        handles::set_owner_mode(out.as_fd(), owner(want), want.mode)?;
        out.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = rustix::fs::unlinkat(parent, temp.as_c_str(), rustix::fs::AtFlags::empty());
        return Err(e);
    }
    Ok(temp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_names_are_lossless_and_unique() {
        let names: Vec<CString> = [
            &b"/a/b"[..],
            b"/a%2Fb",
            b"/a_2Fb",
            b"/caf\xff",
            b"/caf\xc3\xbf",
            b"/x\ny",
            b"/.hidden",
        ]
        .iter()
        .map(|p| quarantine_name(p))
        .collect();
        let unique: BTreeSet<&CString> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert_eq!(names[0].to_str().unwrap(), "a%2Fb");
        assert_eq!(names[1].to_str().unwrap(), "a%252Fb");
        assert_eq!(names[6].to_str().unwrap(), "%2Ehidden");
        let long = quarantine_name(&[b'x'; 400]);
        assert!(long.to_bytes().len() <= 200 + 64);
        assert_ne!(long, quarantine_name(&[b'x'; 401]));
    }
}
