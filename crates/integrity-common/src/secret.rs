//! Secrets read from files the operator names: bearer tokens, passwords, private keys.
//! The one reader every binary uses ([`read_secret`]), so that a file someone else
//! can write is never taken for the operator's secret.
//!
//! The rules (a secret file is only as trustworthy as whoever can replace it):
//!
//! * **Refused**: a file writable by group or others; a file, directory or symlink on
//!   the way owned by anyone but root or the effective user; a directory on the way
//!   writable by group or others without the sticky bit (in a sticky directory such as
//!   `/tmp` only an entry's owner may replace it, and the entry must be root's or ours);
//!   anything but a regular file (a FIFO is never opened, so it cannot block us; a
//!   device never opened, so it has no side effect); more than
//!   [`MAX_SECRET_BYTES`].
//! * **Warned about** (returned with the secret, for the caller to print its own way:
//!   the CLIs on stderr, the service as a tracing WARN): a file readable by group or
//!   others. The warning names the file and its mode, never its content.
//!
//! Errors name the file, its mode or owner, and what to do (`chmod 600 FILE`); no error
//! or warning ever contains a byte of the secret, and the bytes read are zeroed when
//! the [`Secret`] is dropped.

use crate::handles::{self, Meta};
use rustix::fs::{FileType, Mode, OFlags};
use std::ffi::{CString, OsStr};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The largest secret file read (a token, a password, a PEM or minisign key are all
/// far smaller): a bigger file is refused, not read.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Symlinks followed while resolving one path (the kernel's own limit).
const MAX_SYMLINKS: u32 = 40;

/// The content of a secret file, zeroed on drop, and the warning about it if any.
/// Its `Debug` shows the file, never the content.
pub struct Secret {
    what: String,
    path: PathBuf,
    bytes: Zeroizing<Vec<u8>>,
    warning: Option<SecretWarning>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("what", &self.what)
            .field("path", &self.path)
            .field(
                "bytes",
                &format_args!("<{} bytes redacted>", self.bytes.len()),
            )
            .field("warning", &self.warning)
            .finish()
    }
}

impl Secret {
    /// The file's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The warning to print (the file is readable by group or others), if any.
    pub fn warning(&self) -> Option<&SecretWarning> {
        self.warning.as_ref()
    }

    /// The file as UTF-8 text.
    pub fn text(&self) -> Result<&str, SecretError> {
        std::str::from_utf8(&self.bytes).map_err(|_| self.error(SecretProblem::NotText))
    }

    /// The first line, without its line ending; an error when it is empty (a password
    /// file: the first line is the password, as minisign reads it).
    pub fn first_line(&self) -> Result<&str, SecretError> {
        match self.text()?.lines().next() {
            Some(line) if !line.is_empty() => Ok(line),
            _ => Err(self.error(SecretProblem::Empty)),
        }
    }

    /// The whole text without leading and trailing white space; an error when nothing
    /// is left (a token file).
    pub fn trimmed(&self) -> Result<&str, SecretError> {
        match self.text()?.trim() {
            "" => Err(self.error(SecretProblem::Empty)),
            text => Ok(text),
        }
    }

    fn error(&self, problem: SecretProblem) -> SecretError {
        SecretError {
            what: self.what.clone(),
            path: self.path.clone(),
            problem,
        }
    }
}

/// A secret file readable by group or others: used, but worth a line on stderr or a
/// WARN in the log. Names the file and its mode, never its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretWarning {
    /// What the file is ("--token-file", "password file", …), as the caller named it.
    pub what: String,
    /// The path as given.
    pub path: PathBuf,
    /// The file it resolved to, when the path went through symlinks.
    pub resolved: Option<PathBuf>,
    /// The file's permission bits.
    pub mode: u32,
}

impl fmt::Display for SecretWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.what, self.path.display())?;
        if let Some(resolved) = &self.resolved {
            write!(f, " (-> {})", resolved.display())?;
        }
        write!(
            f,
            " is readable by group or others (mode {:04o}); make it private: chmod 600 {}",
            self.mode,
            self.path.display()
        )
    }
}

/// Prints `warning` on stderr as the command-line tools do: `PROGRAM: warning: …`
/// (PROGRAM is the file name of `argv[0]`). For callers with no logger of their own.
pub fn warn_on_stderr(warning: &SecretWarning) {
    let program = std::env::args_os()
        .next()
        .and_then(|arg0| {
            Path::new(&arg0)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    if program.is_empty() {
        eprintln!("warning: {warning}");
    } else {
        eprintln!("{program}: warning: {warning}");
    }
}

/// A secret file that was refused or could not be read. The text names the file and
/// says what is wrong and what to do; it never contains the secret.
#[derive(Debug)]
pub struct SecretError {
    /// What the file is, as the caller named it.
    pub what: String,
    /// The path as given.
    pub path: PathBuf,
    pub problem: SecretProblem,
}

impl SecretError {
    /// Refused because someone else could have written it (mode, owner, directory,
    /// symlink), as opposed to missing, unreadable or malformed.
    pub fn is_unsafe(&self) -> bool {
        matches!(
            self.problem,
            SecretProblem::Writable { .. }
                | SecretProblem::Owner { .. }
                | SecretProblem::DirectoryWritable { .. }
        )
    }
}

/// What is wrong with a secret file.
#[derive(Debug)]
pub enum SecretProblem {
    /// It could not be opened or read (missing, permission denied, not a directory on
    /// the way, a symlink loop, …).
    Io(io::Error),
    /// Not a regular file (the kind it is instead).
    NotRegular(&'static str),
    /// The file is writable by group or others.
    Writable { mode: u32 },
    /// The file, or a directory or symlink on the way to it (`at`), is owned by `uid`:
    /// neither root nor the effective user `me`.
    Owner {
        at: PathBuf,
        kind: &'static str,
        uid: u32,
        me: u32,
    },
    /// A directory on the way is writable by group or others and not sticky.
    DirectoryWritable { dir: PathBuf, mode: u32 },
    /// Larger than [`MAX_SECRET_BYTES`].
    TooLarge,
    /// Nothing in it (or an empty first line, for a password).
    Empty,
    /// Not UTF-8 text.
    NotText,
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, path) = (&self.what, self.path.display());
        match &self.problem {
            SecretProblem::Io(error) => write!(f, "cannot read {what} {path}: {error}"),
            SecretProblem::NotRegular(kind) => write!(
                f,
                "{what} {path} is {kind}, not a regular file: refused (a secret is read from a regular file only)"
            ),
            SecretProblem::Writable { mode } => write!(
                f,
                "{what} {path} is writable by group or others (mode {mode:04o}): refused, \
                 anyone who can write it can put their own secret there; \
                 make it private (chmod 600 {path}) and check its content"
            ),
            SecretProblem::Owner { at, kind, uid, me } => {
                let who = if *me == 0 {
                    "root".to_owned()
                } else {
                    format!("root or uid {me} (who runs this)")
                };
                write!(f, "{what} {path}: ")?;
                if at.as_path() == self.path {
                    write!(f, "the {kind} is")?;
                } else {
                    write!(f, "the {kind} {} on the way is", at.display())?;
                }
                write!(
                    f,
                    " owned by uid {uid}, not by {who}: refused, its owner could replace \
                     the secret; give it to {who} (chown) or keep the secret elsewhere"
                )
            }
            SecretProblem::DirectoryWritable { dir, mode } => write!(
                f,
                "{what} {path}: the directory {} is writable by group or others without \
                 the sticky bit (mode {mode:04o}): refused, anyone who can write it can \
                 put their own file there; chmod go-w {} or keep the secret elsewhere",
                dir.display(),
                dir.display()
            ),
            SecretProblem::TooLarge => write!(
                f,
                "{what} {path} is larger than {} KiB: refused (is it the right file?)",
                MAX_SECRET_BYTES / 1024
            ),
            SecretProblem::Empty => write!(f, "{what} {path} is empty"),
            SecretProblem::NotText => write!(f, "{what} {path} is not UTF-8 text"),
        }
    }
}

impl std::error::Error for SecretError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.problem {
            SecretProblem::Io(error) => Some(error),
            _ => None,
        }
    }
}

/// Reads the secret file `path` (`what` names it in messages: "--token-file",
/// "password file", "secret key"): refused when someone other than root or the
/// effective user could have written it (see the module doc), at most
/// [`MAX_SECRET_BYTES`], with a warning when group or others can read it.
///
/// Symlinks: the path is the operator's, and a symlink in it is common (Kubernetes
/// mounts a secret as `token -> ..data/token`, `..data -> ..2024_01_01_…/`), so
/// symlinks are followed — but not by the kernel in one `open`, which would check
/// nothing on the way. The path is resolved here one component at a time from `/`
/// (a relative path from the current directory), through `O_PATH` directory handles:
/// every directory a name is looked up in must pass the directory rules, every entry
/// met (directory, symlink, the file) must be root's or ours, and each symlink's
/// target is read with `readlinkat` and resolved by the same walk. A symlink planted
/// by someone else, or pointing through a directory someone else can write, is
/// refused, so nobody but root and us can point the path at another file (not even at
/// a root-owned one such as `/etc/shadow`). The final file is `lstat`ed, refused
/// unless regular, then opened `O_NOFOLLOW | O_NONBLOCK` and `fstat`-checked to be
/// that same inode ([`handles::open_file_at`]): a FIFO is never opened, so it cannot
/// block us, and a swap in between is caught.
pub fn read_secret(path: &Path, what: &str) -> Result<Secret, SecretError> {
    let error = |problem| SecretError {
        what: what.to_owned(),
        path: path.to_path_buf(),
        problem,
    };
    let (mut file, meta, resolved) = resolve(path).map_err(error)?;
    if meta.perm() & 0o022 != 0 {
        return Err(error(SecretProblem::Writable { mode: meta.perm() }));
    }
    if meta.size > MAX_SECRET_BYTES {
        return Err(error(SecretProblem::TooLarge));
    }
    // One allocation, never grown: no copy of the secret is left behind in freed
    // memory by a reallocation.
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_SECRET_BYTES as usize + 64));
    (&mut file)
        .take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| error(SecretProblem::Io(e)))?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(error(SecretProblem::TooLarge));
    }
    let warning = (meta.perm() & 0o044 != 0).then(|| SecretWarning {
        what: what.to_owned(),
        path: path.to_path_buf(),
        resolved,
        mode: meta.perm(),
    });
    Ok(Secret {
        what: what.to_owned(),
        path: path.to_path_buf(),
        bytes,
        warning,
    })
}

fn absolute(path: &Path) -> io::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        // getcwd: the kernel's path of the current directory, no symlink in it.
        Ok(std::env::current_dir()?.join(path))
    }
}

fn errno(err: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(err.raw_os_error())
}

/// An `O_PATH` handle on a directory (search permission is enough, as for a path the
/// kernel resolves: `/etc/ssl/private` is 0710).
fn open_path_dir(dir: Option<&OwnedFd>, name: &std::ffi::CStr) -> io::Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match dir {
        Some(dir) => rustix::fs::openat(dir, name, flags, Mode::empty()),
        None => rustix::fs::open(name, flags, Mode::empty()),
    }
    .map_err(errno)
}

fn kind_of(meta: &Meta) -> &'static str {
    match meta.file_type() {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "of an unknown type",
    }
}

/// Root's, or the effective user's.
fn check_owner(meta: &Meta, at: &Path, me: u32) -> Result<(), SecretProblem> {
    if meta.uid == 0 || meta.uid == me {
        return Ok(());
    }
    let kind = match meta.file_type() {
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        _ => "file",
    };
    Err(SecretProblem::Owner {
        at: at.to_path_buf(),
        kind,
        uid: meta.uid,
        me,
    })
}

/// A directory names are looked up in: root's or ours (checked by the caller), and
/// not writable by group or others unless sticky.
fn check_dir(meta: &Meta, dir: &Path) -> Result<(), SecretProblem> {
    if meta.perm() & 0o022 != 0 && meta.perm() & 0o1000 == 0 {
        return Err(SecretProblem::DirectoryWritable {
            dir: dir.to_path_buf(),
            mode: meta.perm(),
        });
    }
    Ok(())
}

/// Pushes the components of `path` onto `pending` (a stack: the first component
/// last), skipping empty ones and `.`.
fn push_components(pending: &mut Vec<Vec<u8>>, path: &[u8]) {
    for part in path.rsplit(|&b| b == b'/') {
        if !part.is_empty() && part != b"." {
            pending.push(part.to_vec());
        }
    }
}

/// The walk of [`read_secret`]: the opened file, its `fstat`, and the path it
/// resolved to (absolute, without symlinks) when a symlink was followed.
fn resolve(path: &Path) -> Result<(File, Meta, Option<PathBuf>), SecretProblem> {
    let io = SecretProblem::Io;
    if path.as_os_str().is_empty() {
        return Err(io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty path",
        )));
    }
    let me = rustix::process::geteuid().as_raw();
    let mut pending = Vec::new();
    push_components(
        &mut pending,
        absolute(path).map_err(io)?.as_os_str().as_bytes(),
    );
    let root = open_path_dir(None, c"/").map_err(io)?;
    let root_meta = handles::fstat(&root).map_err(io)?;
    check_owner(&root_meta, Path::new("/"), me)?;
    check_dir(&root_meta, Path::new("/"))?;
    // The directories from `/` down to where the walk is: `..` goes back one.
    let mut dirs: Vec<(OwnedFd, PathBuf)> = vec![(root, PathBuf::from("/"))];
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == b".." {
            if dirs.len() > 1 {
                dirs.pop();
            }
            continue;
        }
        let (dir, dir_path) = dirs.last().expect("never empty");
        let here = dir_path.join(OsStr::from_bytes(&part));
        let name = CString::new(part).map_err(|_| {
            io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NUL in the path",
            ))
        })?;
        let meta = handles::stat_at(dir.as_fd(), &name).map_err(io)?;
        // In a sticky directory anyone may add entries: only root's or ours are
        // trusted; elsewhere the directory's rules already say only root or we could
        // have made it, and a subdirectory must be ours or root's anyway.
        check_owner(&meta, &here, me)?;
        match meta.file_type() {
            FileType::Symlink => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io(io::Error::from_raw_os_error(libc::ELOOP)));
                }
                let target = handles::read_link_at(dir.as_fd(), &name).map_err(io)?;
                if target.starts_with(b"/") {
                    dirs.truncate(1);
                }
                push_components(&mut pending, &target);
            }
            FileType::Directory => {
                let sub = open_path_dir(Some(dir), &name).map_err(io)?;
                let opened = handles::fstat(&sub).map_err(io)?;
                if !opened.same_inode(&meta) {
                    return Err(io(io::Error::other(format!(
                        "{} was replaced while being resolved",
                        here.display()
                    ))));
                }
                check_dir(&opened, &here)?;
                dirs.push((sub, here));
            }
            _ if !pending.is_empty() => {
                return Err(io(io::Error::from_raw_os_error(libc::ENOTDIR)));
            }
            FileType::RegularFile => {
                let (file, opened) =
                    handles::open_file_at(dir.as_fd(), &name, Some(&meta)).map_err(io)?;
                return Ok((file, opened, (links > 0).then_some(here)));
            }
            _ => return Err(SecretProblem::NotRegular(kind_of(&meta))),
        }
    }
    Err(SecretProblem::NotRegular("a directory"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::time::Duration;

    const CONTENT: &str = "s3cr3t-token-do-not-print\n";

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A private scratch directory (0700) with `token` of `mode` in it.
    fn scratch(mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o700);
        let file = dir.path().join("token");
        std::fs::write(&file, CONTENT).unwrap();
        chmod(&file, mode);
        (dir, file)
    }

    fn refused(path: &Path) -> String {
        let error = read_secret(path, "--token-file").unwrap_err();
        let text = error.to_string();
        assert!(!text.contains("s3cr3t"), "secret in {text}");
        assert!(text.contains(path.to_str().unwrap()), "{text}");
        text
    }

    #[test]
    fn a_private_file_is_read_silently() {
        let (_dir, file) = scratch(0o600);
        let secret = read_secret(&file, "--token-file").unwrap();
        assert_eq!(secret.as_bytes(), CONTENT.as_bytes());
        assert_eq!(secret.trimmed().unwrap(), CONTENT.trim());
        assert_eq!(secret.first_line().unwrap(), CONTENT.trim());
        assert!(secret.warning().is_none());
        assert!(!format!("{secret:?}").contains("s3cr3t"));
        let ro = scratch(0o400);
        assert!(read_secret(&ro.1, "x").unwrap().warning().is_none());
    }

    #[test]
    fn a_readable_file_is_read_with_a_warning_naming_file_and_mode() {
        for mode in [0o644, 0o640, 0o604] {
            let (_dir, file) = scratch(mode);
            let secret = read_secret(&file, "password file").unwrap();
            assert_eq!(secret.as_bytes(), CONTENT.as_bytes());
            let warning = secret.warning().unwrap().to_string();
            assert!(warning.contains(&format!("mode {mode:04o}")), "{warning}");
            assert!(warning.contains(file.to_str().unwrap()), "{warning}");
            assert!(warning.contains("chmod 600"), "{warning}");
            assert!(!warning.contains("s3cr3t"), "{warning}");
        }
    }

    #[test]
    fn a_file_group_or_others_can_write_is_refused() {
        for mode in [0o666, 0o620, 0o602, 0o660, 0o622] {
            let (_dir, file) = scratch(mode);
            let text = refused(&file);
            assert!(text.contains(&format!("mode {mode:04o}")), "{text}");
            assert!(text.contains("chmod 600"), "{text}");
            assert!(text.contains("refused"), "{text}");
        }
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            fifo.as_path(),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let (send, receive) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let _ = send.send(read_secret(&path, "--token-file").map(drop));
        });
        let result = receive
            .recv_timeout(Duration::from_secs(10))
            .expect("read_secret blocked on a FIFO");
        let text = result.unwrap_err().to_string();
        assert!(text.contains("a FIFO, not a regular file"), "{text}");
        let (_d, _f) = (dir, fifo);
    }

    #[test]
    fn directories_and_other_kinds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(refused(dir.path()).contains("a directory"));
        let missing = dir.path().join("missing");
        assert!(refused(&missing).contains("cannot read"));
        let (_d, file) = scratch(0o600);
        assert!(refused(&file.join("below")).contains("cannot read"));
        assert!(read_secret(Path::new(""), "x").is_err());
    }

    #[test]
    fn a_directory_others_can_write_is_refused_unless_sticky() {
        let (dir, file) = scratch(0o600);
        chmod(dir.path(), 0o777);
        let text = refused(&file);
        assert!(text.contains("mode 0777"), "{text}");
        assert!(text.contains("chmod go-w"), "{text}");
        chmod(dir.path(), 0o770);
        refused(&file);
        // Sticky (like /tmp): only an entry's owner may replace it, and it is ours.
        chmod(dir.path(), 0o1777);
        read_secret(&file, "x").unwrap();
        // A directory further up counts as much as the file's own.
        let (outer, _) = scratch(0o600);
        let inner = outer.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        std::fs::write(inner.join("token"), CONTENT).unwrap();
        chmod(&inner.join("token"), 0o600);
        read_secret(&inner.join("token"), "x").unwrap();
        chmod(outer.path(), 0o757);
        assert!(refused(&inner.join("token")).contains(outer.path().to_str().unwrap()));
    }

    #[test]
    fn files_and_directories_of_another_user_are_refused() {
        if !is_root() {
            return;
        }
        let (dir, file) = scratch(0o600);
        std::os::unix::fs::chown(&file, Some(65534), Some(65534)).unwrap();
        let text = refused(&file);
        assert!(text.contains("uid 65534"), "{text}");
        std::os::unix::fs::chown(&file, Some(0), Some(0)).unwrap();
        read_secret(&file, "x").unwrap();
        // Its owner could rename the file away and put another there.
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
        let text = refused(&file);
        assert!(text.contains("directory"), "{text}");
        assert!(text.contains("uid 65534"), "{text}");
        // Sticky and world-writable: others may add entries, not replace ours.
        std::os::unix::fs::chown(dir.path(), Some(0), Some(0)).unwrap();
        chmod(dir.path(), 0o1777);
        read_secret(&file, "x").unwrap();
        let planted = dir.path().join("planted");
        std::fs::write(&planted, CONTENT).unwrap();
        chmod(&planted, 0o600);
        std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
        refused(&planted);
    }

    #[test]
    fn operator_symlinks_are_followed_and_checked_on_the_way() {
        // The Kubernetes layout: token -> ..data/token, ..data -> ..2026_01_01/.
        let (dir, _) = scratch(0o600);
        let version = dir.path().join("..2026_01_01");
        std::fs::create_dir(&version).unwrap();
        chmod(&version, 0o755);
        std::fs::write(version.join("token"), CONTENT).unwrap();
        chmod(&version.join("token"), 0o644);
        symlink("..2026_01_01", dir.path().join("..data")).unwrap();
        let link = dir.path().join("link");
        symlink("..data/token", &link).unwrap();
        let secret = read_secret(&link, "--token-file").unwrap();
        assert_eq!(secret.as_bytes(), CONTENT.as_bytes());
        let warning = secret.warning().unwrap();
        assert_eq!(warning.path, link);
        assert_eq!(warning.resolved.as_deref(), Some(&*version.join("token")));
        // `..` after a symlink is the target's parent, as the kernel resolves it.
        let dotdot = dir.path().join("..data/../..data/token");
        read_secret(&dotdot, "x").unwrap();

        // A symlink into a directory others can write: refused.
        let open = tempfile::tempdir().unwrap();
        chmod(open.path(), 0o777);
        std::fs::write(open.path().join("token"), CONTENT).unwrap();
        chmod(&open.path().join("token"), 0o600);
        let into_open = dir.path().join("into-open");
        symlink(open.path().join("token"), &into_open).unwrap();
        assert!(refused(&into_open).contains("without the sticky bit"));

        // A loop: an error, not a hang.
        symlink("loop-b", dir.path().join("loop-a")).unwrap();
        symlink("loop-a", dir.path().join("loop-b")).unwrap();
        refused(&dir.path().join("loop-a"));

        if is_root() {
            // A symlink someone else planted (or owns) is not the operator's.
            let theirs = dir.path().join("theirs");
            symlink(version.join("token"), &theirs).unwrap();
            std::os::unix::fs::lchown(&theirs, Some(65534), Some(65534)).unwrap();
            let text = refused(&theirs);
            assert!(text.contains("symlink"), "{text}");
        }
    }

    #[test]
    fn size_is_bounded_and_content_checked() {
        let (_dir, file) = scratch(0o600);
        std::fs::write(&file, vec![b'a'; MAX_SECRET_BYTES as usize + 1]).unwrap();
        assert!(refused(&file).contains("larger than 64 KiB"));
        std::fs::write(&file, vec![b'a'; MAX_SECRET_BYTES as usize]).unwrap();
        read_secret(&file, "x").unwrap();
        for empty in ["", "\n", "  \n\t"] {
            std::fs::write(&file, empty).unwrap();
            let secret = read_secret(&file, "x").unwrap();
            assert!(secret
                .trimmed()
                .unwrap_err()
                .to_string()
                .contains("is empty"));
        }
        std::fs::write(&file, "\nsecond line").unwrap();
        let secret = read_secret(&file, "x").unwrap();
        assert!(secret.first_line().is_err());
        std::fs::write(&file, [0xff, 0xfe, b's']).unwrap();
        let secret = read_secret(&file, "x").unwrap();
        assert!(secret.text().unwrap_err().to_string().contains("not UTF-8"));
    }
}
