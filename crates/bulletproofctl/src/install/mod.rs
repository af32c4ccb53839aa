//! `install`: the seed's layout under a root, idempotently. Every step compares what
//! is there with what should be and changes only the difference; each change is one
//! printed line (or, with `--dry-run`, one line saying what would change), and a second
//! run says there is nothing to do.
//!
//! Ownership: the core side (`install/`, releases, `tools/`, `venv/`) is root's and not
//! writable by anyone else; `state/*` and `logs/system` belong to the service user
//! (`--service-user`), who can write there and nowhere in the core; `logs/security`,
//! `logs/ops`, `backups/`, `archives/` are root's alone.

use crate::layout::{Config, Layout, State, EMPTY_RELEASE};
use crate::mounts;
use anyhow::{bail, Context};
use integrity_common::handles;
use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

mod takeover;

use takeover::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MountMode {
    /// Only as root on the default root /opt/omniscient
    Auto,
    Yes,
    No,
    /// Write the mount units only (systemd mounts them; what the .deb's postinst uses)
    Units,
}

pub struct InstallOptions {
    pub service_user: Option<String>,
    pub public_key: Option<PathBuf>,
    pub replace_key: bool,
    pub mounts: MountMode,
    pub unit_dir: PathBuf,
    pub dry_run: bool,
    pub log_key_out: Option<PathBuf>,
    pub no_venv: bool,
}

#[derive(Clone, Copy)]
enum Owner {
    Root,
    Service,
}

/// (path relative to the root, mode, owner)
const DIRS: &[(&str, u32, Owner)] = &[
    ("", 0o755, Owner::Root),
    ("install", 0o755, Owner::Root),
    ("install/releases", 0o755, Owner::Root),
    ("install/releases/none", 0o755, Owner::Root),
    ("install/releases/none/core", 0o755, Owner::Root),
    ("install/releases/none/modules", 0o755, Owner::Root),
    ("install/stage", 0o700, Owner::Root),
    ("install/logkeys", 0o700, Owner::Root),
    ("venv", 0o755, Owner::Root),
    ("state", 0o755, Owner::Root),
    ("state/conf.d", 0o750, Owner::Service),
    ("state/data", 0o750, Owner::Service),
    ("state/cache", 0o750, Owner::Service),
    ("state/run", 0o750, Owner::Service),
    ("logs", 0o755, Owner::Root),
    ("logs/system", 0o750, Owner::Service),
    ("logs/security", 0o750, Owner::Root),
    ("logs/ops", 0o750, Owner::Root),
    ("backups", 0o750, Owner::Root),
    ("archives", 0o750, Owner::Root),
    ("tools", 0o755, Owner::Root),
];

struct Installer<'a> {
    layout: &'a Layout,
    dry_run: bool,
    root_user: bool,
    service: (u32, u32),
    changes: Vec<String>,
}

impl Installer<'_> {
    fn change(&mut self, what: String) {
        let line = if self.dry_run {
            format!("would {what}")
        } else {
            what
        };
        println!("{line}");
        self.changes.push(line);
    }

    /// The root's handle (every path below it is opened with no symlink followed).
    fn root_fd(&self) -> anyhow::Result<OwnedFd> {
        handles::open_dir(&self.layout.root)
            .with_context(|| format!("cannot open {}", self.layout.root.display()))
    }

    /// Who owns the core side: root, or the running user when install runs unprivileged.
    fn core_owner(&self) -> (u32, u32) {
        if self.root_user {
            (0, 0)
        } else {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        }
    }

    fn dir(&mut self, relative: &str, mode: u32, owner: Owner) -> anyhow::Result<()> {
        let path = self.layout.path(relative);
        let (uid, gid) = match owner {
            Owner::Root => (0, 0),
            Owner::Service => self.service,
        };
        let chown = self.root_user.then_some((uid, gid));
        let root = self.root_fd()?;
        match handles::stat_beneath(root.as_fd(), relative.as_bytes()) {
            Ok(None) => {
                self.change(format!("create {} (mode {mode:04o})", path.display()));
                if !self.dry_run {
                    // mkdirat then fchown/fchmod: the mode is `mode` whatever the umask.
                    handles::create_dir_all_beneath(root.as_fd(), relative.as_bytes(), mode, chown)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                }
            }
            Err(error) => {
                return Err(error).with_context(|| {
                    format!(
                        "cannot inspect {} (a symlink on the way is not followed)",
                        path.display()
                    )
                })
            }
            Ok(Some(meta)) if !meta.is_dir() => {
                bail!(
                    "{} exists and is not a directory (a symlink to elsewhere is not followed); not touching it",
                    path.display()
                )
            }
            Ok(Some(meta)) => {
                let dir = handles::open_dir_beneath(root.as_fd(), relative.as_bytes())
                    .with_context(|| format!("cannot open {}", path.display()))?;
                if is_read_only(dir.as_fd()) {
                    return Ok(());
                }
                let mode_wrong = meta.perm() != mode;
                let owner_wrong = self.root_user && (meta.uid, meta.gid) != (uid, gid);
                if mode_wrong {
                    self.change(format!(
                        "set mode {mode:04o} on {} (was {:04o})",
                        path.display(),
                        meta.perm()
                    ));
                }
                if owner_wrong {
                    self.change(format!(
                        "set owner {uid}:{gid} on {} (was {}:{})",
                        path.display(),
                        meta.uid,
                        meta.gid
                    ));
                }
                if (mode_wrong || owner_wrong) && !self.dry_run {
                    handles::set_owner_mode(dir.as_fd(), chown.filter(|_| owner_wrong), mode)
                        .with_context(|| format!("cannot take over {}", path.display()))?;
                }
            }
        }
        Ok(())
    }

    fn symlink(&mut self, relative: &str, target: &str) -> anyhow::Result<()> {
        let path = self.layout.path(relative);
        match fs::read_link(&path) {
            Ok(current) if current == Path::new(target) => {
                // The right target, maybe someone else's link: root's from now on.
                let root = self.root_fd()?;
                let (uid, gid) = self.core_owner();
                let foreign = handles::stat_beneath(root.as_fd(), relative.as_bytes())?
                    .is_some_and(|meta| (meta.uid, meta.gid) != (uid, gid));
                if foreign {
                    if !self.root_user {
                        bail!("{} is not yours; not touching it", path.display());
                    }
                    self.change(format!("set owner {uid}:{gid} on {}", path.display()));
                    if !self.dry_run {
                        let (dir, name) = handles::open_parent(root.as_fd(), relative.as_bytes())?;
                        handles::set_meta_at(
                            dir.as_fd(),
                            &name,
                            rustix::fs::FileType::Symlink,
                            Some((uid, gid)),
                            0,
                        )
                        .with_context(|| format!("cannot take over {}", path.display()))?;
                    }
                }
                Ok(())
            }
            Ok(current) => bail!(
                "{} points at {}, not {target}; not touching it",
                path.display(),
                current.display()
            ),
            Err(_) if fs::symlink_metadata(&path).is_ok() => bail!(
                "{} exists and is not bulletproof's symlink to {target}; move it away first (a release bundle is the only way into the core)",
                path.display()
            ),
            Err(_) => {
                self.change(format!("link {} -> {target}", path.display()));
                if !self.dry_run {
                    std::os::unix::fs::symlink(target, &path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                }
                Ok(())
            }
        }
    }

    /// Writes `relative` (`O_EXCL` temporary, explicit mode, rename) unless it exists;
    /// what exists was judged by [`Installer::take_over`].
    fn file(&mut self, relative: &str, bytes: &[u8], mode: u32, what: &str) -> anyhow::Result<()> {
        let path = self.layout.path(relative);
        let exists = match self.root_fd() {
            Ok(root) => handles::stat_beneath(root.as_fd(), relative.as_bytes())
                .with_context(|| format!("cannot inspect {}", path.display()))?
                .is_some(),
            Err(_) if self.dry_run => false,
            Err(error) => return Err(error),
        };
        if exists {
            return Ok(());
        }
        self.change(format!("write {} ({what})", path.display()));
        if !self.dry_run {
            let root = self.root_fd()?;
            handles::open_parent(root.as_fd(), relative.as_bytes())
                .and_then(|(dir, name)| {
                    handles::write_atomic_at(dir.as_fd(), &name, bytes, mode, None)
                })
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}

fn lookup_user(name: &str) -> anyhow::Result<(u32, u32)> {
    let user = nix::unistd::User::from_name(name)
        .with_context(|| format!("cannot look up user {name}"))?
        .with_context(|| {
            format!("no such user: {name} (create it first, e.g. useradd --system {name})")
        })?;
    Ok((user.uid.as_raw(), user.gid.as_raw()))
}

/// Runs the installation; returns the change lines (empty: nothing to do).
pub fn install(layout: &Layout, options: &InstallOptions) -> anyhow::Result<Vec<String>> {
    let root_user = nix::unistd::geteuid().is_root();
    let service = match &options.service_user {
        Some(name) => lookup_user(name)?,
        None => (0, 0),
    };
    if !layout.root.is_absolute() {
        bail!("--root must be an absolute path (it is written into mount units)");
    }
    let mut installer = Installer {
        layout,
        dry_run: options.dry_run,
        root_user,
        service,
        changes: Vec::new(),
    };
    if fs::symlink_metadata(&layout.root).is_err() {
        installer.change(format!("create {}", layout.root.display()));
        if !options.dry_run {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&layout.root)
                .with_context(|| format!("cannot create {}", layout.root.display()))?;
        }
    }
    for (relative, mode, owner) in DIRS {
        if options.dry_run && fs::symlink_metadata(layout.path(relative)).is_err() {
            installer.change(format!(
                "create {} (mode {mode:04o})",
                layout.path(relative).display()
            ));
            continue;
        }
        installer.dir(relative, *mode, *owner)?;
    }
    if fs::symlink_metadata(layout.active_link()).is_err() {
        installer.symlink("install/active", &format!("releases/{EMPTY_RELEASE}"))?;
    }
    installer.symlink("core", "install/active/core")?;
    installer.symlink("modules", "install/active/modules")?;
    // Before anything of the layout is read or kept: what root did not make is taken
    // over (directories) or refused (content).
    installer.take_over()?;
    installer.file(
        "install/bulletproof.toml",
        Config::TEMPLATE.as_bytes(),
        0o644,
        "configuration",
    )?;
    let state = serde_json::to_vec_pretty(&State::default())?;
    installer.file("install/state.json", &state, 0o644, "updater state")?;

    // The security logs' keys and the host key that signs checkpoints and snapshots.
    if fs::symlink_metadata(layout.path("install/logkeys/guard.state")).is_err() {
        installer.change("create the security log keys (forward-secure MAC chain)".into());
        if !options.dry_run {
            if let Some(master) = crate::seclog::init_keys(
                layout,
                options.log_key_out.as_deref(),
                &["bulletproofctl", "guard"],
            )? {
                println!(
                    "the initial log key is in {}: copy it off this host and delete it here (log verify --initial-key needs it; an intruder must not have it)",
                    master.display()
                );
            }
        }
    }
    if fs::symlink_metadata(layout.host_key()).is_err() {
        installer.change(format!(
            "create the host key {}",
            layout.host_key().display()
        ));
        if !options.dry_run {
            integrity_trust::keygen(&layout.host_key(), &layout.host_public_key(), None)?;
        }
    }
    if !options.dry_run {
        // A root whose log key state was lost or damaged is not changed unlogged.
        crate::seclog::ensure_ready(layout)?;
        // The first activation (the empty release) is signed like every later one; on
        // a root without a valid record (made by an older bulletproofctl, or whose
        // record was damaged), installing again records what is active: an explicit
        // act of the operator, logged.
        if crate::activation::load(layout).ok().flatten().is_none() {
            if let Some(active) = layout.active_version()? {
                crate::activation::record(layout, &active, "install")?;
                installer.change(format!("record {active} as the active version"));
            }
        }
    }

    if let Some(key_path) = &options.public_key {
        let key = integrity_trust::load_public_key(key_path)?;
        let text = fs::read(key_path)?;
        let pinned = layout.pinned_key();
        match integrity_trust::load_public_key(&pinned) {
            Ok(current) if integrity_trust::key_id(&current) == integrity_trust::key_id(&key) => {}
            Ok(current) if !options.replace_key => bail!(
                "release key {} is pinned at {}; replacing it with {} is an explicit act: add --replace-key",
                integrity_trust::key_id(&current),
                pinned.display(),
                integrity_trust::key_id(&key)
            ),
            Ok(current) => {
                installer.change(format!(
                    "replace the pinned release key {} with {}",
                    integrity_trust::key_id(&current),
                    integrity_trust::key_id(&key)
                ));
                if !options.dry_run {
                    crate::layout::write_atomically(&pinned, &text, 0o644)?;
                    crate::oplog::record(layout, "pin-key", &format!("release key {} replaced by {}", integrity_trust::key_id(&current), integrity_trust::key_id(&key)));
                }
            }
            Err(_) => {
                installer.change(format!("pin release key {} at {}", integrity_trust::key_id(&key), pinned.display()));
                if !options.dry_run {
                    crate::layout::write_atomically(&pinned, &text, 0o644)?;
                    crate::oplog::record(layout, "pin-key", &format!("release key {} pinned", integrity_trust::key_id(&key)));
                }
            }
        }
    }

    // The seed's venv (setup_bulletproof.sh). Without pip: the application's packages
    // arrive with its release (modules), not from the network at install time.
    let venv_python = layout.path("venv/bin/python");
    if !options.no_venv && fs::symlink_metadata(&venv_python).is_err() {
        let python = std::process::Command::new("python3")
            .args(["-c", "import venv"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if python {
            installer.change(format!(
                "create the Python venv {}",
                layout.path("venv").display()
            ));
            if !options.dry_run {
                // Under umask 022 whatever ours is: python picks the venv's modes.
                let status = std::process::Command::new("sh")
                    .args([
                        "-c",
                        "umask 022 && exec python3 -m venv --without-pip \"$1\"",
                        "sh",
                    ])
                    .arg(layout.path("venv"))
                    .status()
                    .context("cannot run python3 -m venv")?;
                if !status.success() {
                    bail!(
                        "python3 -m venv {} failed ({status})",
                        layout.path("venv").display()
                    );
                }
            }
        }
    }

    let mounts_wanted = match options.mounts {
        MountMode::Yes | MountMode::Units => true,
        MountMode::No => false,
        MountMode::Auto => root_user && layout.root == Path::new(crate::DEFAULT_ROOT),
    };
    if mounts_wanted {
        if !root_user {
            bail!("--mounts yes needs root");
        }
        for spec in mounts::plan(layout) {
            let (name, text) = mounts::unit(&spec);
            let unit_path = options.unit_dir.join(&name);
            if fs::read_to_string(&unit_path).ok().as_deref() != Some(text.as_str()) {
                installer.change(format!("write mount unit {}", unit_path.display()));
                if !options.dry_run {
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o755)
                        .create(&options.unit_dir)?;
                    crate::layout::write_atomically(&unit_path, text.as_bytes(), 0o644)?;
                }
            }
            let wants = options.unit_dir.join("local-fs.target.wants").join(&name);
            if fs::symlink_metadata(&wants).is_err() {
                installer.change(format!("enable {name} for local-fs.target"));
                if !options.dry_run {
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o755)
                        .create(wants.parent().expect("has a parent"))?;
                    std::os::unix::fs::symlink(&unit_path, &wants)?;
                }
            }
            if options.mounts != MountMode::Units && !mounts::is_applied(&spec) {
                installer.change(format!(
                    "mount {} {}",
                    spec.path.display(),
                    if spec.read_only {
                        "read-only"
                    } else {
                        "noexec,nodev,nosuid"
                    }
                ));
                if !options.dry_run {
                    mounts::apply(&spec)?;
                }
            }
        }
    }
    // The seed's "install service files": units shipped in the active core's
    // `services/` go to the unit directory, enabled when systemd runs.
    if mounts_wanted {
        let services = layout.path("core/services");
        let mut names = Vec::new();
        if let Ok(entries) = fs::read_dir(&services) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !(name.ends_with(".service") || name.ends_with(".timer"))
                    || !entry.path().is_file()
                {
                    continue;
                }
                let text = fs::read(entry.path())?;
                let target = options.unit_dir.join(&name);
                if fs::read(&target).ok().as_deref() != Some(text.as_slice()) {
                    installer.change(format!("install unit {} from the core", target.display()));
                    if !options.dry_run {
                        crate::layout::write_atomically(&target, &text, 0o644)?;
                    }
                }
                if !name.contains("@.") {
                    names.push(name);
                }
            }
        }
        if !names.is_empty() && Path::new("/run/systemd/system").is_dir() && !options.dry_run {
            let _ = std::process::Command::new("systemctl")
                .arg("daemon-reload")
                .status();
            let _ = std::process::Command::new("systemctl")
                .arg("enable")
                .args(&names)
                .status();
        }
    }
    if !options.dry_run && !installer.changes.is_empty() {
        crate::oplog::record(
            layout,
            "install",
            &format!("{} changes", installer.changes.len()),
        );
    }
    Ok(installer.changes)
}
