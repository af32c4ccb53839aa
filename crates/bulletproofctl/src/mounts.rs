//! The seed's mount hardening, applied by `install` as root on a real root:
//!
//! * `install/releases` (every version's core and modules, so whatever `core`
//!   points at) bind-mounted read-only: even root's writes fail with EROFS;
//! * `state`, `logs`, `backups`, `archives` bind-mounted `noexec,nodev,nosuid`.
//!
//! Each is also written as a systemd `.mount` unit (enabled for `local-fs.target`), so
//! it survives a reboot. The updater writes new releases through a private mount
//! namespace in which the read-only bind is lifted ([`writable_releases`]): the
//! system's view stays read-only for the whole update, and a crash leaves nothing to
//! restore.

use crate::layout::Layout;
use anyhow::Context;
use nix::mount::{MntFlags, MsFlags};
use std::fs;
use std::path::{Path, PathBuf};

/// One hardened mount.
#[derive(Debug, Clone)]
pub struct MountSpec {
    pub path: PathBuf,
    pub read_only: bool,
    pub purpose: &'static str,
}

impl MountSpec {
    fn options(&self) -> &'static str {
        if self.read_only {
            "bind,ro"
        } else {
            "bind,nosuid,nodev,noexec"
        }
    }
}

pub fn plan(layout: &Layout) -> Vec<MountSpec> {
    let mut specs = vec![MountSpec {
        path: layout.releases(),
        read_only: true,
        purpose: "every release's core and modules, read-only",
    }];
    for dir in ["state", "logs", "backups", "archives"] {
        specs.push(MountSpec {
            path: layout.path(dir),
            read_only: false,
            purpose: "writable, but nothing in it executes",
        });
    }
    specs
}

/// Mount points of this process's namespace with their per-mount options (the last
/// mount on a path is the visible one).
fn mountinfo() -> Vec<(PathBuf, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let point = fields.nth(4)?;
            let options = fields.next()?;
            Some((PathBuf::from(unescape_mountinfo(point)), options.to_owned()))
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn visible_options(path: &Path) -> Option<String> {
    mountinfo()
        .into_iter()
        .rev()
        .find(|(point, _)| point == path)
        .map(|(_, options)| options)
}

/// True when `spec` is mounted with its options in this namespace.
pub fn is_applied(spec: &MountSpec) -> bool {
    let Ok(path) = fs::canonicalize(&spec.path) else {
        return false;
    };
    let Some(options) = visible_options(&path) else {
        return false;
    };
    let has = |flag: &str| options.split(',').any(|o| o == flag);
    if spec.read_only {
        has("ro")
    } else {
        has("noexec") && has("nosuid") && has("nodev")
    }
}

/// Bind-mounts `spec.path` onto itself (unless it is already a mount point) and
/// remounts it with the spec's flags.
pub fn apply(spec: &MountSpec) -> anyhow::Result<()> {
    let path = fs::canonicalize(&spec.path)
        .with_context(|| format!("cannot resolve {}", spec.path.display()))?;
    if visible_options(&path).is_none() {
        nix::mount::mount(
            Some(&path),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("cannot bind-mount {}", path.display()))?;
    }
    let flags = if spec.read_only {
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY
    } else {
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_NOEXEC
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
    };
    nix::mount::mount(None::<&str>, &path, None::<&str>, flags, None::<&str>)
        .with_context(|| format!("cannot remount {} {}", path.display(), spec.options()))
}

/// `systemd-escape --path`, by hand: a dozen lines, and the only thing we would need
/// from a systemd crate (checked against the real command in the tests).
pub fn systemd_escape_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let parts: Vec<&[u8]> = bytes
        .split(|b| *b == b'/')
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return "-".into();
    }
    let mut out = String::new();
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            out.push('-');
        }
        for (at, byte) in part.iter().enumerate() {
            let plain = byte.is_ascii_alphanumeric()
                || *byte == b':'
                || *byte == b'_'
                || (*byte == b'.' && !(index == 0 && at == 0));
            if plain {
                out.push(*byte as char);
            } else {
                out.push_str(&format!("\\x{byte:02x}"));
            }
        }
    }
    out
}

/// The `.mount` unit for `spec`: its file name and text.
pub fn unit(spec: &MountSpec) -> (String, String) {
    let path = spec.path.display();
    let name = format!("{}.mount", systemd_escape_path(&spec.path));
    let text = format!(
        "# Written by bulletproofctl install: {purpose}.\n\
         [Unit]\n\
         Description=Bulletproof: {path} ({options})\n\
         \n\
         [Mount]\n\
         What={path}\n\
         Where={path}\n\
         Type=none\n\
         Options={options}\n\
         \n\
         [Install]\n\
         WantedBy=local-fs.target\n",
        purpose = spec.purpose,
        options = spec.options(),
    );
    (name, text)
}

/// Makes `install/releases` writable for this process only: when it is a read-only
/// mount, the process moves into a private mount namespace and detaches the read-only
/// bind there. Must run before any thread is started (a namespace is per thread;
/// threads started later inherit it).
pub fn writable_releases(layout: &Layout) -> anyhow::Result<bool> {
    let releases = layout.releases();
    let Ok(stat) = nix::sys::statvfs::statvfs(&releases) else {
        return Ok(false);
    };
    if !stat.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
        return Ok(false);
    }
    let path = fs::canonicalize(&releases)?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("install/releases is read-only and a private mount namespace is not available (run as root)")?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("cannot make the private mount namespace private")?;
    for _ in 0..8 {
        let read_only = nix::sys::statvfs::statvfs(&path)
            .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
            .unwrap_or(false);
        if !read_only {
            return Ok(true);
        }
        nix::mount::umount2(&path, MntFlags::MNT_DETACH).with_context(|| {
            format!(
                "{} is read-only and not a bind mount we can lift",
                path.display()
            )
        })?;
    }
    anyhow::bail!("{} stays read-only", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_systemd() {
        assert_eq!(
            systemd_escape_path(Path::new("/opt/omniscient/install/releases")),
            "opt-omniscient-install-releases"
        );
        assert_eq!(
            systemd_escape_path(Path::new("/tmp/a-b/.c d/")),
            "tmp-a\\x2db-.c\\x20d"
        );
        assert_eq!(systemd_escape_path(Path::new("/")), "-");
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
    }
}
