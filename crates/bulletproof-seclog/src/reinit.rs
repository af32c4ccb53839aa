//! `log reinit`: the explicit way back after lost or damaged key state; the old
//! chains are closed (kept as `*.closed-<time>`) and a new epoch begins.

use super::*;

/// What [`SecLog::reinit`] did.
#[derive(Debug)]
pub struct Reinit {
    /// The time that names the closed chain's files (`*.closed-<epoch>`).
    pub epoch: String,
    /// Where the new initial key went.
    pub master: PathBuf,
    /// Why the old key state could not be used (`None`: it could; a key rotation).
    pub reason: Option<String>,
    /// The closed chain's files, under their new names.
    pub closed: Vec<PathBuf>,
    /// The id of a host key made because the old one was missing or untrusted.
    pub new_host_key: Option<String>,
}

/// Renames `from` to `to` when it is there, noting it in `list`.
pub(crate) fn close(from: &Path, to: &Path, list: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if fs::symlink_metadata(from).is_ok() {
        fs::rename(from, to)
            .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
        list.push(to.to_path_buf());
    }
    Ok(())
}

/// Renames `path` to `<path>.closed-<epoch>` when it is there.
pub(crate) fn close_at(path: &Path, epoch: &str, list: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    close(path, &closed(path, epoch), list)
}

/// `path` with `.closed-<epoch>` appended.
pub(crate) fn closed(path: &Path, epoch: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".closed-{epoch}"));
    PathBuf::from(name)
}

impl SecLog {
    /// `log reinit`: the explicit way back after the key state was lost or damaged. Closes
    /// every component's chain (its log, checkpoint, human log, the default initial key and
    /// an unusable host key renamed `*.closed-<epoch>`, kept as evidence and still
    /// verifiable with the old initial key), makes a new initial key (to `out`, else
    /// `install/logkeys/initial.key`) and key states, and starts each chain with a
    /// `log-reinit` record naming the reason and the closed chain's last record. Run by the
    /// owner of `install/` (root), which must not be writable by group or others.
    pub fn reinit(&self, out: Option<&Path>) -> anyhow::Result<Reinit> {
        let install = self.install_dir();
        let meta = fs::symlink_metadata(&install).with_context(|| {
            format!(
                "{} is not installed ({} is missing)",
                self.root.display(),
                install.display()
            )
        })?;
        let euid = nix::unistd::geteuid();
        if !meta.is_dir() || meta.uid() != euid.as_raw() {
            bail!(
                "{} is not a directory owned by uid {} (run log reinit as root, the owner of the root's state)",
                install.display(),
                euid
            );
        }
        check_trusted(&install, &meta)?;
        let reason = self.check_keys().err().map(|e| format!("{e:#}"));
        let default_master = self.master_key_path();
        let master_target = out.map(Path::to_path_buf).unwrap_or(default_master.clone());
        if out.is_some() && fs::symlink_metadata(&master_target).is_ok() {
            bail!(
                "{} exists: give --log-key-out a new file (the old initial key verifies the closed chain)",
                master_target.display()
            );
        }
        // The epoch's name, unique among what is there.
        let base = integrity_common::manifest::now_timestamp().replace([':', '-'], "");
        let mut epoch = base.clone();
        for n in 1.. {
            let taken = COMPONENTS
                .iter()
                .any(|c| fs::symlink_metadata(closed(&self.jsonl_path(c), &epoch)).is_ok())
                || fs::symlink_metadata(closed(&self.logkeys_dir(), &epoch)).is_ok();
            if !taken {
                break;
            }
            epoch = format!("{base}-{n}");
        }
        let mut closed_files = Vec::new();

        // A trusted directory for the keys (whatever stands in its place is moved aside).
        let dir = self.logkeys_dir();
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => close(&dir, &closed(&dir, &epoch), &mut closed_files)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
        }
        if let Err(e) = fs::create_dir(&dir) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(e).with_context(|| format!("cannot create {}", dir.display()));
            }
        }
        std::os::unix::fs::chown(
            &dir,
            Some(euid.as_raw()),
            Some(nix::unistd::getegid().as_raw()),
        )?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        self.check_dir()?;
        let _lock = lock_dir(&dir, true)?;

        // Close the old chains, remembering where each ended.
        let mut previous = serde_json::Map::new();
        for component in COMPONENTS {
            let log = self.jsonl_path(component);
            let last = last_line(&log)
                .ok()
                .flatten()
                .and_then(|l| parse_line(&l).ok());
            let checkpoint = checkpoint_path(&log);
            let mut sig = checkpoint.as_os_str().to_owned();
            sig.push(".minisig");
            let closed_log = closed(&log, &epoch);
            let had_log = fs::symlink_metadata(&log).is_ok();
            close_at(&log, &epoch, &mut closed_files)?;
            // The checkpoint keeps its place beside the closed log (`log verify` finds it).
            for (from, to) in [
                (checkpoint.clone(), checkpoint_path(&closed_log)),
                (PathBuf::from(&sig), {
                    let mut to = checkpoint_path(&closed_log).into_os_string();
                    to.push(".minisig");
                    PathBuf::from(to)
                }),
            ] {
                close(&from, &to, &mut closed_files)?;
            }
            close_at(&self.human_log_path(component), &epoch, &mut closed_files)?;
            previous.insert(
                (*component).to_owned(),
                serde_json::json!({
                    "file": had_log.then(|| closed_log.display().to_string()),
                    "last_seq": last.as_ref().map(|r| r.seq),
                    "last_mac": last.as_ref().map(|r| r.mac.clone()),
                }),
            );
            // The old writer's key is erased (forward security), never reused.
            let state = self.state_path(component);
            if fs::symlink_metadata(&state).is_ok() && fs::remove_file(&state).is_err() {
                close_at(&state, &epoch, &mut closed_files)?;
            }
        }
        if out.is_none() {
            close_at(&default_master, &epoch, &mut closed_files)?;
        }
        // The host key that signs checkpoints: kept when usable, else replaced.
        let mut new_host_key = None;
        let host_key_usable = open_trusted(&self.host_key())
            .map(|(_, meta)| meta.size > 0)
            .unwrap_or(false);
        if !host_key_usable {
            close_at(&self.host_key(), &epoch, &mut closed_files)?;
            close_at(&self.host_public_key(), &epoch, &mut closed_files)?;
            new_host_key = Some(integrity_trust::keygen(
                &self.host_key(),
                &self.host_public_key(),
                None,
            )?);
        }

        // The new epoch: initial key, states, and a first record in each chain.
        self.start_chains(&master_target, COMPONENTS)?;
        let why = reason
            .clone()
            .unwrap_or_else(|| "on request (the key state was usable)".into());
        for component in COMPONENTS {
            let ended = match &previous[*component]["last_seq"] {
                serde_json::Value::Number(seq) => format!("ended at seq {seq}"),
                _ => "had no readable record".into(),
            };
            self.append_locked(
                component,
                "log-reinit",
                &format!(
                    "security log re-initialised, epoch {epoch}: {why}; the previous chain {ended} (files kept as *.closed-{epoch})"
                ),
                serde_json::json!({
                    "epoch": epoch,
                    "reason": reason,
                    "previous": previous[*component],
                    "initial_key": master_target,
                    "new_host_key": new_host_key,
                    "uid": euid.as_raw(),
                }),
            )?;
        }
        Ok(Reinit {
            epoch,
            master: master_target,
            reason,
            closed: closed_files,
            new_host_key,
        })
    }
}
