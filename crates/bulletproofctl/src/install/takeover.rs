//! Root trusts nothing it did not make: before `install` changes anything, the core
//! side of an existing tree is walked through handles and taken over (directories) or
//! refused (content someone else could have written).

use super::*;

/// The core side: root's alone, walked recursively by [`Installer::take_over`].
pub(super) const CORE_TREES: &[&str] = &[
    "install",
    "venv",
    "archives",
    "tools",
    "backups",
    "logs/security",
    "logs/ops",
];

/// The empty release's directory, the one kept release that install itself makes.
pub(super) const RELEASES_NONE: &str = "install/releases/none";

/// Files only locked, never read: a root-owned one is given mode 0600, not refused.
pub(super) const LOCK_FILES: &[&str] = &["install/lock", "install/guard.lock"];

impl Installer<'_> {
    /// Root trusts nothing it did not make. Walks the core side ([`CORE_TREES`]) below
    /// handles, parents before children: a directory someone else owns, or that group or
    /// others can write, is taken over first (owner root, group/other write and set-id
    /// bits dropped: from then on nobody else can change its entries), then its entries
    /// are judged. A file or symlink that is not root's, a file writable by group or
    /// others, a key file (`install/logkeys/*`, `install/host.key`) with any group or
    /// other permission, a FIFO, socket or device: listed, and install refuses. Install
    /// never adopts such content by chowning it (a planted `bulletproof.toml` would run
    /// its `restart_command` as root, planted log keys forge the security log, a planted
    /// `release.pub` pins the attacker's release key); the operator checks and removes
    /// them. Kept releases are checked at their top only (their content is the signed
    /// manifest's, owners included), `install/stage` is not entered (leftovers are
    /// removed, never used), and the root-owned lock files, whose content is never read,
    /// are given mode 0600.
    pub(super) fn take_over(&mut self) -> anyhow::Result<()> {
        let root = match self.root_fd() {
            Err(_) if self.dry_run => return Ok(()),
            root => root?,
        };
        let mut offenders = Vec::new();
        for tree in CORE_TREES {
            match handles::open_dir_beneath(root.as_fd(), tree.as_bytes()) {
                Ok(dir) => self.walk(dir.as_fd(), tree, &mut offenders)?,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound && self.dry_run => {}
                Err(error) => {
                    return Err(error).with_context(|| {
                        format!("cannot open {}", self.layout.path(tree).display())
                    })
                }
            }
        }
        if offenders.is_empty() {
            return Ok(());
        }
        bail!(
            "refusing to install over what root did not make: {} path(s) of the layout could \
             have been written by another user, and install does not adopt their content:\n  \
             {}\ncheck them, then remove them (or, if they are root's own, chown root and chmod \
             go-w them; key files 0600) and run install again (key states that are gone: \
             `bulletproofctl log reinit`)",
            offenders.len(),
            offenders.join("\n  ")
        )
    }

    fn walk(
        &mut self,
        dir: BorrowedFd<'_>,
        relative: &str,
        offenders: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        if relative == "install/stage" {
            return Ok(());
        }
        let (uid, gid) = self.core_owner();
        let mut names = handles::child_names(dir)
            .with_context(|| format!("cannot list {}", self.layout.path(relative).display()))?;
        names.sort();
        for name in names {
            let child = format!("{relative}/{}", name.to_string_lossy());
            let shown = self.layout.path(&child).display().to_string();
            let meta = match handles::stat_at(dir, &name) {
                Ok(meta) => meta,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error).with_context(|| format!("cannot inspect {shown}")),
            };
            let perm = meta.perm();
            let foreign = (meta.uid, meta.gid) != (uid, gid);
            if meta.is_dir() && relative == "install/releases" && child != RELEASES_NONE {
                if meta.uid != uid || perm & 0o022 != 0 {
                    offenders.push(format!(
                        "{shown}: a release directory owned by uid {} with mode {perm:04o} (releases are made only by update, from a signed bundle)",
                        meta.uid
                    ));
                }
                continue;
            }
            if meta.is_dir() {
                let sub = handles::open_subdir(dir, &name)
                    .with_context(|| format!("cannot open {shown}"))?;
                if is_read_only(sub.as_fd()) {
                    continue;
                }
                let mode = if foreign { perm & 0o755 } else { perm & !0o022 };
                if foreign || mode != perm {
                    if foreign && !self.root_user {
                        offenders.push(format!("{shown}: owned by uid {}", meta.uid));
                        continue;
                    }
                    self.change(format!(
                        "take over {shown}: owner {uid}:{gid}, mode {mode:04o} (was {}:{}, {perm:04o})",
                        meta.uid, meta.gid
                    ));
                    if !self.dry_run {
                        handles::set_owner_mode(
                            sub.as_fd(),
                            Some((uid, gid)).filter(|_| foreign),
                            mode,
                        )
                        .with_context(|| format!("cannot take over {shown}"))?;
                    }
                }
                self.walk(sub.as_fd(), &child, offenders)?;
                continue;
            }
            if LOCK_FILES.contains(&child.as_str()) && meta.is_file() && meta.uid == uid {
                if perm != 0o600 {
                    self.change(format!("set mode 0600 on {shown} (was {perm:04o})"));
                    if !self.dry_run {
                        handles::set_meta_at(
                            dir,
                            &name,
                            rustix::fs::FileType::RegularFile,
                            None,
                            0o600,
                        )
                        .with_context(|| format!("cannot chmod {shown}"))?;
                    }
                }
                continue;
            }
            let secret = child.starts_with("install/logkeys/") || child == "install/host.key";
            let problem = if meta.uid != uid {
                format!("owned by uid {} (mode {perm:04o})", meta.uid)
            } else if !(meta.is_file() || meta.is_symlink()) {
                "not a regular file, directory or symlink".to_string()
            } else if meta.is_file() && perm & 0o022 != 0 {
                format!("writable by group or others (mode {perm:04o})")
            } else if secret && meta.is_file() && perm & 0o077 != 0 {
                format!(
                    "a key readable by group or others (mode {perm:04o}); install keeps a key only when it is root's with mode 0600 or 0400"
                )
            } else {
                continue;
            };
            offenders.push(format!("{shown}: {problem}"));
        }
        Ok(())
    }
}

pub(super) fn is_read_only(dir: BorrowedFd<'_>) -> bool {
    nix::sys::statvfs::fstatvfs(dir)
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
}
