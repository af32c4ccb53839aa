//! Activation and its journal: the one rename that activates, restarting services,
//! switching with `txn.json`, undoing an interrupted operation, pruning kept versions.

use super::*;

/// Points `install/active` at `version` with one rename, then makes it durable.
pub fn activate(layout: &Layout, version: &str) -> anyhow::Result<()> {
    let temp = layout
        .install()
        .join(format!(".active.{}", std::process::id()));
    let _ = fs::remove_file(&temp);
    std::os::unix::fs::symlink(Path::new("releases").join(version), &temp)
        .with_context(|| format!("cannot create {}", temp.display()))?;
    fs::rename(&temp, layout.active_link())
        .with_context(|| format!("cannot activate {version}"))?;
    fsync_dir(&layout.install())
}

/// Reloads or restarts the configured services: systemd when it runs, the configured
/// command otherwise.
pub fn restart_services(layout: &Layout, config: &Config, version: &str) -> Result<(), String> {
    let systemd = Path::new("/run/systemd/system").is_dir();
    let mut command = if systemd && !config.services.is_empty() {
        let mut command = std::process::Command::new("systemctl");
        command.arg("reload-or-restart").args(&config.services);
        command
    } else if let Some((program, args)) = config.restart_command.split_first() {
        let mut command = std::process::Command::new(program);
        command.args(args);
        command
    } else {
        return Ok(());
    };
    command
        .env("BULLETPROOF_ROOT", &layout.root)
        .env("BULLETPROOF_VERSION", version)
        .stdin(std::process::Stdio::null());
    match command.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("restarting the services failed ({status})")),
        Err(error) => Err(format!("cannot restart the services: {error}")),
    }
}

pub(crate) fn remove_tree(path: &Path) {
    if fs::symlink_metadata(path).is_err() {
        return;
    }
    // Read-only directories (modes from the manifest) must be opened up first when we
    // are not root.
    if !is_root() {
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
            if let Ok(entries) = fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        stack.push(entry.path());
                    }
                }
            }
        }
    }
    let _ = fs::remove_dir_all(path);
}

/// Puts a root back in order after a run that died: an unfinished activation is
/// undone (the journal's `from` is active again), staged leftovers are removed.
pub fn recover_interrupted(layout: &Layout, config: &Config) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    if let Some(txn) = Txn::load(layout)? {
        let active = layout.active_version()?;
        if active.as_deref() != Some(txn.from.as_str()) {
            activate(layout, &txn.from)?;
            let _ = restart_services(layout, config, &txn.from);
        }
        crate::activation::record(layout, &txn.from, "recover-interrupted")?;
        if txn.created_release && txn.to != txn.from {
            remove_tree(&layout.release(&txn.to));
        }
        Txn::clear(layout)?;
        let message = format!(
            "an interrupted {} ({} → {}) was undone; {} is active",
            txn.op, txn.from, txn.to, txn.from
        );
        let mut state = State::load(layout)?;
        state.record(Event::new(
            &txn.op,
            Some(&txn.from),
            Some(&txn.to),
            "undone",
            &message,
        ));
        state.save(layout)?;
        crate::oplog::record(layout, "recover-interrupted", &message);
        done.push(message);
    }
    if let Ok(entries) = fs::read_dir(layout.stage()) {
        for entry in entries.flatten() {
            remove_tree(&entry.path());
            done.push(format!(
                "removed the leftover stage {}",
                entry.path().display()
            ));
        }
    }
    if let Ok(entries) = fs::read_dir(layout.archives()) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                remove_tree(&entry.path());
            }
        }
    }
    if let Ok(entries) = fs::read_dir(layout.install()) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".active.") || name.starts_with(".tmp.") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    Ok(done)
}

/// What an activation did, for the journal and the failure path.
pub(crate) fn switch_to(
    layout: &Layout,
    config: &Config,
    txn: Txn,
    manifest: &Baseline,
    full: bool,
) -> Result<(), Failure> {
    txn.save(layout)?;
    let Txn {
        op,
        from,
        to,
        created_release,
    } = txn;
    let (op, from, to) = (op.as_str(), from.as_str(), to.as_str());
    crash_point(&format!("{op}-journal"));
    activate(layout, to)?;
    crash_point(&format!("{op}-activated"));
    let release = layout.release(to);
    // A new release is verified again once active (the engine, content included); a
    // kept one was checked just before the switch (`quick_verify`), and the guard
    // re-hashes the active release right after.
    let check = restart_services(layout, config, to).and_then(|()| {
        if full {
            full_verify(&release, manifest).map_err(|e| format!("post-verify: {e}"))
        } else {
            Ok(())
        }
    });
    crash_point(&format!("{op}-verified"));
    if let Err(why) = check {
        activate(layout, from)?;
        let _ = restart_services(layout, config, from);
        if created_release {
            remove_tree(&release);
        }
        Txn::clear(layout)?;
        let message = format!("{op} to {to} failed ({why}); {from} is active again");
        let mut state = State::load(layout)?;
        state.record(Event::new(
            op,
            Some(from),
            Some(to),
            "rolled back",
            &message,
        ));
        state.save(layout)?;
        crate::oplog::record(layout, op, &message);
        return Err(Failure::RolledBack(message));
    }
    Ok(())
}

/// Keeps `keep_versions` releases: the active one, `previous`, then the highest others.
pub(crate) fn prune(layout: &Layout, config: &Config, state: &State) -> anyhow::Result<()> {
    let active = layout.active_version()?;
    let mut keep: Vec<String> = active.into_iter().collect();
    if let Some(previous) = &state.previous {
        keep.push(previous.clone());
    }
    for version in layout.kept_versions()? {
        let version = version.to_string();
        if keep.len() >= config.keep_versions {
            if !keep.contains(&version) {
                remove_tree(&layout.release(&version));
                crate::oplog::record(layout, "prune", &format!("release {version} removed from install/releases (recoverable from archives/)"));
            }
        } else if !keep.contains(&version) {
            keep.push(version);
        }
    }
    Ok(())
}

pub(crate) fn switch_kept(
    layout: &Layout,
    config: &Config,
    op: &str,
    version: &str,
    key: Option<&Path>,
) -> Result<Report, Failure> {
    let from = layout
        .active_version()?
        .unwrap_or_else(|| EMPTY_RELEASE.into());
    if from == version {
        return Err(refused(format!("version {version} is already active")));
    }
    let release = layout.release(version);
    if !release.is_dir() {
        return Err(refused(format!(
            "version {version} is not kept in {}",
            layout.releases().display()
        )));
    }
    let key = release_key(layout, key)?;
    let (manifest, _) =
        verify_release(&release, &key, version).map_err(|e| refused(format!("{e:#}")))?;
    quick_verify(&release, &manifest)
        .map_err(|e| refused(format!("kept release {version}: {e}")))?;
    switch_to(
        layout,
        config,
        Txn {
            op: op.into(),
            from: from.clone(),
            to: version.into(),
            created_release: false,
        },
        &manifest,
        false,
    )?;
    finish_switch(layout, config, op, &from, version)
}

pub(crate) fn finish_switch(
    layout: &Layout,
    config: &Config,
    op: &str,
    from: &str,
    to: &str,
) -> Result<Report, Failure> {
    let mut state = State::load(layout)?;
    if from != EMPTY_RELEASE {
        state.previous = Some(from.into());
    }
    let message = format!("{to} is active (was {from})");
    state.record(Event::new(op, Some(from), Some(to), "ok", &message));
    state.save(layout)?;
    // Before the journal goes: until then an interruption puts `from` back (and
    // records it again, below).
    crate::activation::record(layout, to, op)?;
    Txn::clear(layout)?;
    crash_point(&format!("{op}-done"));
    prune(layout, config, &state)?;
    crate::oplog::record(layout, op, &message);
    Ok(Report { message })
}
