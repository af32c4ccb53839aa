//! Handle-based file operations (ARCHITECTURE.md: Scanner): the one module through which a root
//! process reads, writes, renames, chmods or chowns inside a tree that a less
//! privileged user may be able to write.
//!
//! Everything starts from a directory handle (an `O_DIRECTORY` file descriptor) and
//! names below it. Paths below a handle are resolved by the kernel with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` where the
//! kernel has it (Linux ≥ 5.6), else one component at a time with
//! `O_NOFOLLOW | O_DIRECTORY`; either way a symlink anywhere on the way, or a `..`,
//! is an error (`ELOOP`/`EXDEV`/`EINVAL`), never a way out. Files are opened
//! `O_NOFOLLOW | O_NONBLOCK` and checked with `fstat` before they are read, so a FIFO
//! or a device swapped in for a file cannot hang the caller. Metadata changes go
//! through the opened file (`fchmod`, `fchown`), new files are created `O_EXCL` with
//! an explicit mode (the umask plays no part) and renamed into place with `renameat`.
//!
//! Built on `rustix` (safe wrappers over the system calls; the workspace forbids
//! `unsafe`). `cap-std` would do the same job but brings its own `Dir` world on top of
//! `std::fs`; the operations we need are few and map one-to-one to system calls.

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once `openat2` answered `ENOSYS` (an old kernel, or a seccomp filter): every
/// later lookup goes straight to the component walk.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// The metadata of one inode, from `fstat`/`fstatat` (what a manifest entry records,
/// plus what identifies the inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub dev: u64,
    pub ino: u64,
    /// The full `st_mode`: file type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    /// Last content change (`st_mtime`): seconds and nanoseconds.
    pub mtime: (i64, u32),
    /// Last inode change (`st_ctime`), which only the kernel sets.
    pub ctime: (i64, u32),
}

impl Meta {
    // The field types of `struct stat` differ between architectures; on some of them
    // these casts are no-ops.
    #[allow(clippy::unnecessary_cast)]
    pub fn from_stat(stat: &Stat) -> Self {
        Self {
            dev: stat.st_dev as u64,
            ino: stat.st_ino as u64,
            mode: stat.st_mode as u32,
            uid: stat.st_uid as u32,
            gid: stat.st_gid as u32,
            rdev: stat.st_rdev as u64,
            size: stat.st_size.max(0) as u64,
            mtime: (stat.st_mtime as i64, stat.st_mtime_nsec as u32),
            ctime: (stat.st_ctime as i64, stat.st_ctime_nsec as u32),
        }
    }
    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode as _)
    }
    pub fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }
    pub fn is_file(&self) -> bool {
        self.file_type() == FileType::RegularFile
    }
    pub fn is_symlink(&self) -> bool {
        self.file_type() == FileType::Symlink
    }
    /// Permission bits with set-uid, set-gid and sticky.
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
    /// The same inode (device and inode number).
    pub fn same_inode(&self, other: &Meta) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

fn errno(err: Errno) -> io::Error {
    io::Error::from_raw_os_error(err.raw_os_error())
}

/// Opens a directory given by the operator (the root of a scan or of a layout). The
/// path itself may go through symlinks — it is the operator's, not the tree's.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)
}

/// `fstat` of an open handle.
pub fn fstat(fd: impl AsFd) -> io::Result<Meta> {
    rustix::fs::fstat(fd)
        .map_err(errno)
        .map(|s| Meta::from_stat(&s))
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`: the entry `name` of `dir` itself.
pub fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Meta> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(errno)
        .map(|s| Meta::from_stat(&s))
}

/// The target of the symlink `name` in `dir`.
pub fn read_link_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    rustix::fs::readlinkat(dir, name, Vec::new())
        .map_err(errno)
        .map(CString::into_bytes)
}

/// Opens the subdirectory `name` of `dir` without following a symlink.
pub fn open_subdir(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)
}

/// Opens the regular file `name` of `dir` for reading: no symlink followed, no
/// blocking on a FIFO or device swapped in, and `fstat`-checked to be a regular file
/// (and, given `listed`, the very inode that was listed). Tries `O_NOATIME` first (a
/// scan should not touch every atime), which the kernel allows only to the owner.
pub fn open_file_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    listed: Option<&Meta>,
) -> io::Result<(File, Meta)> {
    let base = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir, name, base | OFlags::NOATIME, Mode::empty()) {
        Err(Errno::PERM) => rustix::fs::openat(dir, name, base, Mode::empty()),
        result => result,
    }
    .map_err(|e| match e {
        Errno::LOOP => io::Error::other("is a symlink (not followed)"),
        e => errno(e),
    })?;
    checked_file(fd, listed)
}

fn checked_file(fd: OwnedFd, listed: Option<&Meta>) -> io::Result<(File, Meta)> {
    let meta = fstat(&fd)?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if listed.is_some_and(|listed| !listed.same_inode(&meta)) {
        return Err(io::Error::other("replaced during scan"));
    }
    Ok((File::from(fd), meta))
}

/// Opens the regular file at `path` for reading: no symlink followed in its last
/// component, no blocking on a FIFO, checked with `fstat` (for files in root's own
/// directories, such as the signed archives).
pub fn open_file(path: &Path) -> io::Result<(File, Meta)> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)?;
    checked_file(fd, None)
}

/// The components of a relative path below a handle; `/a/b` and `a/b` are the same.
/// Empty components and `.` are skipped; `..` is refused.
fn components(rel: &[u8]) -> io::Result<Vec<&[u8]>> {
    let mut parts = Vec::new();
    for part in rel.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "`..` in a path below a handle",
                ))
            }
            part => parts.push(part),
        }
    }
    Ok(parts)
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
}

/// Opens `rel` below `dir` with `flags` (`O_NOFOLLOW` and `O_CLOEXEC` are always
/// added): no symlink on the way or at the end, no `..`, nothing outside `dir`.
/// An empty `rel` reopens `dir` itself.
pub fn open_beneath(dir: BorrowedFd<'_>, rel: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
    let parts = components(rel)?;
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    if parts.is_empty() {
        return rustix::fs::openat(dir, c".", flags, Mode::empty()).map_err(errno);
    }
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let joined = parts.join(&b'/');
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(
            dir,
            OsStr::from_bytes(&joined),
            flags,
            Mode::empty(),
            resolve,
        ) {
            Err(Errno::NOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
            result => return result.map_err(errno),
        }
    }
    let (last, parents) = parts.split_last().expect("not empty");
    let mut current: Option<OwnedFd> = None;
    for part in parents {
        let at = current.as_ref().map_or(dir, |fd| fd.as_fd());
        current = Some(open_subdir(at, &cstring(part)?)?);
    }
    let at = current.as_ref().map_or(dir, |fd| fd.as_fd());
    rustix::fs::openat(at, cstring(last)?.as_c_str(), flags, Mode::empty()).map_err(errno)
}

/// Opens the directory `rel` below `dir` (see [`open_beneath`]).
pub fn open_dir_beneath(dir: BorrowedFd<'_>, rel: &[u8]) -> io::Result<OwnedFd> {
    open_beneath(dir, rel, OFlags::RDONLY | OFlags::DIRECTORY)
}

/// Opens the parent directory of `rel` below `dir` and returns it with the final
/// name: the pair every `*at` operation on `rel` needs.
pub fn open_parent(dir: BorrowedFd<'_>, rel: &[u8]) -> io::Result<(OwnedFd, CString)> {
    let parts = components(rel)?;
    let Some((last, parents)) = parts.split_last() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the handle's own directory has no parent below it",
        ));
    };
    let parent = open_dir_beneath(dir, &parents.join(&b'/'))?;
    Ok((parent, cstring(last)?))
}

/// Like [`open_file_at`] for a path below `dir`.
pub fn open_file_beneath(dir: BorrowedFd<'_>, rel: &[u8]) -> io::Result<(File, Meta)> {
    let (parent, name) = open_parent(dir, rel)?;
    open_file_at(parent.as_fd(), &name, None)
}

/// `lstat` of `rel` below `dir`: `Ok(None)` when it does not exist.
pub fn stat_beneath(dir: BorrowedFd<'_>, rel: &[u8]) -> io::Result<Option<Meta>> {
    let parts = components(rel)?;
    if parts.is_empty() {
        return fstat(dir).map(Some);
    }
    let (parent, name) = match open_parent(dir, rel) {
        Ok(pair) => pair,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match stat_at(parent.as_fd(), &name) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates the directory `rel` below `dir` and its missing parents, each with `mode`
/// exactly (fchmod after mkdirat: the umask plays no part) and, given, `owner`.
/// Returns a handle on it. An existing component must be a directory (not a symlink).
pub fn create_dir_all_beneath(
    dir: BorrowedFd<'_>,
    rel: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<OwnedFd> {
    let mut current: Option<OwnedFd> = None;
    for part in components(rel)? {
        let at = current.as_ref().map_or(dir, |fd| fd.as_fd());
        let name = cstring(part)?;
        let created = match rustix::fs::mkdirat(at, name.as_c_str(), Mode::from_raw_mode(0o700)) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(errno(e)),
        };
        let sub = open_subdir(at, &name)?;
        if created {
            set_owner_mode(sub.as_fd(), owner, mode)?;
        }
        current = Some(sub);
    }
    match current {
        Some(fd) => Ok(fd),
        None => open_dir_beneath(dir, b""),
    }
}

/// `fchown` (when `owner` is given) then `fchmod` on an open handle: the mode is set
/// after the owner because a chown clears set-uid/set-gid bits.
pub fn set_owner_mode(fd: BorrowedFd<'_>, owner: Option<(u32, u32)>, mode: u32) -> io::Result<()> {
    if let Some((uid, gid)) = owner {
        rustix::fs::fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .map_err(errno)?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode as _)).map_err(errno)
}

/// A fresh, exclusively created temporary file in `dir` (`O_CREAT | O_EXCL`, mode
/// 0600 until the caller sets the final one) and its name.
pub fn create_temp_at(dir: BorrowedFd<'_>, stem: &[u8]) -> io::Result<(File, CString)> {
    let pid = std::process::id();
    for attempt in 0..100u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut name = b".".to_vec();
        name.extend_from_slice(&stem[..stem.len().min(200)]);
        name.extend_from_slice(format!(".{pid}.{nanos:x}.{attempt}.tmp").as_bytes());
        let name = cstring(&name)?;
        match rustix::fs::openat(
            dir,
            name.as_c_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => return Ok((File::from(fd), name)),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(errno(e)),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free temporary name",
    ))
}

/// Writes `bytes` to `name` in `dir` atomically: a fresh `O_EXCL` temporary file in the
/// same directory, owner and mode set on the open file, written and fsynced, renamed
/// over `name` (which, if it exists, is replaced — a symlink there is replaced, never
/// followed), then the directory fsynced. On error the temporary file is removed.
pub fn write_atomic_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let (mut file, temp) = create_temp_at(dir, name.to_bytes())?;
    let result = (|| {
        set_owner_mode(file.as_fd(), owner, mode)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        rustix::fs::renameat(dir, temp.as_c_str(), dir, name).map_err(errno)
    })();
    if let Err(e) = result {
        let _ = rustix::fs::unlinkat(dir, temp.as_c_str(), AtFlags::empty());
        return Err(e);
    }
    rustix::fs::fsync(dir).map_err(errno)
}

/// [`write_atomic_at`] for a path: the one atomic write of the workspace (fresh
/// `O_EXCL` temporary file beside `path`, explicit `mode`, fsync, rename, fsync of the
/// directory). The directory itself is the caller's (the path to it may be followed).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let (dir, name) = dir_and_name(path)?;
    write_atomic_at(dir.as_fd(), &name, bytes, mode, None)
}

fn dir_and_name(path: &Path) -> io::Result<(OwnedFd, CString)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Ok((open_dir(dir)?, cstring(name.as_bytes())?))
}

/// Opens a file that a root process will act on: `Ok(None)` when it does not exist; a
/// symlink, FIFO or device is an error (never followed, never blocked on). Run as
/// root, the file and its directory must be root's and not writable by group or
/// others (`PermissionDenied`, saying which and why): a file someone else could have
/// written is not root's to trust. Run as another user, they must be that user's or
/// root's.
pub fn open_trusted(path: &Path) -> io::Result<Option<(File, Meta)>> {
    let (dir, name) = match dir_and_name(path) {
        Ok(pair) => pair,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let (file, meta) = match open_file_at(dir.as_fd(), &name, None) {
        Ok(opened) => opened,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let me = rustix::process::geteuid().as_raw();
    let dir_meta = fstat(&dir)?;
    for (what, meta) in [("directory", dir_meta), ("file", meta)] {
        if (meta.uid != 0 && meta.uid != me) || meta.perm() & 0o022 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the {what} is owned by uid {} with mode {:04o}; only what only {} can write is trusted",
                    meta.uid,
                    meta.perm(),
                    if me == 0 { "root" } else { "root or this user" }
                ),
            ));
        }
    }
    Ok(Some((file, meta)))
}

/// `renameat`: moves `from` in `from_dir` to `to` in `to_dir` (replacing `to`).
pub fn rename_at(
    from_dir: BorrowedFd<'_>,
    from: &CStr,
    to_dir: BorrowedFd<'_>,
    to: &CStr,
) -> io::Result<()> {
    rustix::fs::renameat(from_dir, from, to_dir, to).map_err(errno)
}

/// Creates the symlink `name` in `dir` pointing at `target`.
pub fn symlink_at(target: &[u8], dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    rustix::fs::symlinkat(OsStr::from_bytes(target), dir, name).map_err(errno)
}

/// Removes `name` from `dir`, a whole directory tree included, through handles: a
/// directory swapped for a symlink mid-way is unlinked as a symlink, never entered.
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let meta = match stat_at(dir, name) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(errno);
    }
    let sub = open_subdir(dir, name)?;
    for child in child_names(sub.as_fd())? {
        remove_all_at(sub.as_fd(), &child)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(errno)
}

/// The names in the directory `dir` (without `.` and `..`).
pub fn child_names(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let listing = rustix::fs::Dir::read_from(dir).map_err(errno)?;
    let mut names = Vec::new();
    for item in listing {
        let item = item.map_err(errno)?;
        let name = item.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// Copies `name` of `from_dir` (a file, symlink or directory tree) to `to_name` in
/// `to_dir` through handles; new files and directories are the caller's, mode 0600 /
/// 0700 (evidence, not a working copy). Devices, FIFOs and sockets are not copied.
pub fn copy_tree_at(
    from_dir: BorrowedFd<'_>,
    name: &CStr,
    to_dir: BorrowedFd<'_>,
    to_name: &CStr,
) -> io::Result<()> {
    let meta = stat_at(from_dir, name)?;
    match meta.file_type() {
        FileType::Symlink => symlink_at(&read_link_at(from_dir, name)?, to_dir, to_name),
        FileType::Directory => {
            rustix::fs::mkdirat(to_dir, to_name, Mode::from_raw_mode(0o700)).map_err(errno)?;
            let from = open_subdir(from_dir, name)?;
            let to = open_subdir(to_dir, to_name)?;
            for child in child_names(from.as_fd())? {
                copy_tree_at(from.as_fd(), &child, to.as_fd(), &child)?;
            }
            Ok(())
        }
        FileType::RegularFile => {
            let (mut source, _) = open_file_at(from_dir, name, Some(&meta))?;
            let fd = rustix::fs::openat(
                to_dir,
                to_name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(errno)?;
            let mut target = File::from(fd);
            io::copy(&mut source, &mut target)?;
            target.sync_all()
        }
        _ => Ok(()),
    }
}

/// Sets owner (when given) and mode of `name` in `dir` without following a symlink,
/// after checking it is still of the `expected` type: through the opened inode
/// (`fchown`/`fchmod`; FIFOs opened non-blocking, devices and sockets as `O_PATH`
/// handles). A symlink gets its owner only (`lchown`); symlinks have no mode.
pub fn set_meta_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    expected: FileType,
    owner: Option<(u32, u32)>,
    mode: u32,
) -> io::Result<()> {
    let wrong_type = || io::Error::other("changed type (not touched)");
    if expected == FileType::Symlink {
        if stat_at(dir, name)?.file_type() != FileType::Symlink {
            return Err(wrong_type());
        }
        let Some((uid, gid)) = owner else {
            return Ok(());
        };
        return rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(errno);
    }
    let flags = match expected {
        FileType::Directory => OFlags::RDONLY | OFlags::DIRECTORY,
        FileType::RegularFile | FileType::Fifo => OFlags::RDONLY | OFlags::NONBLOCK,
        _ => OFlags::PATH,
    };
    let fd = rustix::fs::openat(
        dir,
        name,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => wrong_type(),
        e => errno(e),
    })?;
    if fstat(&fd)?.file_type() != expected {
        return Err(wrong_type());
    }
    if !flags.contains(OFlags::PATH) {
        return set_owner_mode(fd.as_fd(), owner, mode);
    }
    // An O_PATH handle takes neither fchown nor fchmod: chown it as an empty path,
    // chmod it through its /proc/self/fd link (the same inode, already checked).
    if let Some((uid, gid)) = owner {
        rustix::fs::chownat(
            &fd,
            c"",
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::EMPTY_PATH,
        )
        .map_err(errno)?;
    }
    use std::os::fd::AsRawFd;
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::fs::chmod(link.as_str(), Mode::from_raw_mode(mode as _)).map_err(errno)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};

    #[test]
    fn symlinks_and_dotdot_are_refused_anywhere_on_the_way() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        std::fs::write(tmp.path().join("d/f"), b"x").unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        symlink(outside.path(), tmp.path().join("link")).unwrap();
        symlink("f", tmp.path().join("d/flink")).unwrap();
        let root = open_dir(tmp.path()).unwrap();
        let root = root.as_fd();
        assert!(open_file_beneath(root, b"/d/f").is_ok());
        for rel in [&b"link/secret"[..], b"d/flink", b"d/../d/f", b"link"] {
            assert!(open_file_beneath(root, rel).is_err(), "{rel:?}");
        }
        assert!(open_dir_beneath(root, b"link").is_err());
        assert_eq!(stat_beneath(root, b"missing/x").unwrap(), None);
        assert!(stat_beneath(root, b"link/secret").is_err());
        assert!(stat_beneath(root, b"link").unwrap().unwrap().is_symlink());
    }

    #[test]
    fn atomic_write_replaces_a_symlink_instead_of_following_it() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        symlink(&victim, tmp.path().join("d/out")).unwrap();
        let root = open_dir(tmp.path()).unwrap();
        let dir = open_dir_beneath(root.as_fd(), b"d").unwrap();
        write_atomic_at(dir.as_fd(), c"out", b"new", 0o640, None).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let meta = std::fs::symlink_metadata(tmp.path().join("d/out")).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read_dir(tmp.path().join("d")).unwrap().count(), 1);
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            tmp.path().join("fifo").as_path(),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let root = open_dir(tmp.path()).unwrap();
        let err = open_file_beneath(root.as_fd(), b"fifo").unwrap_err();
        assert_eq!(err.to_string(), "not a regular file");
    }

    #[test]
    fn created_directories_get_their_mode_whatever_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let root = open_dir(tmp.path()).unwrap();
        create_dir_all_beneath(root.as_fd(), b"a/b", 0o750, None).unwrap();
        for rel in ["a", "a/b"] {
            let meta = std::fs::metadata(tmp.path().join(rel)).unwrap();
            assert_eq!(meta.mode() & 0o7777, 0o750, "{rel}");
        }
    }
}
