//! `guard`: keeps the active release equal to its signed manifest (ARCHITECTURE.md: the root).
//!
//! A cycle: verify (the whole release every `guard_interval_secs`, or only the paths
//! inotify reported) → on drift, a security record, then under the root's lock (never
//! while an update holds it): move what changed or appeared into
//! `state/quarantine/<time>/` with an `evidence.jsonl` line each, restore the exact
//! entries from the active version's signed archive (`archives/<ver>/`, each restored
//! file checked against the manifest's SHA-256 before it is renamed into place), fix
//! modes and owners, restart the services, verify again. When the release cannot be
//! restored (archive missing or not matching), roll back to the previous version.
//!
//! One guard per root (`install/guard.lock`). The guard writes through a private mount
//! namespace when the releases are mounted read-only (see `mounts`).

mod check;
mod heal;
mod watch;

use check::{actual_entries, expected_entries, find_drift};
use heal::restore_release_metadata;
use watch::Watcher;

use crate::activation;
use crate::layout::{Config, Layout, EMPTY_RELEASE};
use crate::release::{self, Failure};
use crate::restore;
use crate::seclog;
use anyhow::Context;
use integrity_common::handles;
use integrity_common::{AnomalyKind, Baseline, EntryKind, FileIntegrityEntry};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one cycle found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Intact,
    /// Nothing is active yet (`none`).
    Idle,
    Healed(usize),
    RolledBack(String),
    /// An update holds the root's lock: the cycle is retried after it.
    Busy,
    Failed(String),
    /// Drift the guard cannot heal itself: the security log's key state is missing or
    /// damaged (`log reinit`). Reported on every cycle until then.
    Drift(String),
}

/// One difference between the release on disk and its manifest.
#[derive(Debug, Clone)]
struct Drift {
    path: Vec<u8>,
    kind: AnomalyKind,
}

pub struct Guard {
    layout: Layout,
    key: Option<PathBuf>,
}

fn guard_lock(layout: &Layout) -> anyhow::Result<nix::fcntl::Flock<fs::File>> {
    let path = layout.path("install/guard.lock");
    crate::fsutil::try_flock(&path)?.ok_or_else(|| {
        anyhow::anyhow!(
            "another guard is running on {} (lock {})",
            layout.root.display(),
            path.display()
        )
    })
}

impl Guard {
    pub fn new(layout: Layout, key: Option<PathBuf>) -> Self {
        Self { layout, key }
    }

    /// One verification (and heal when needed) of the active release, and of the
    /// security log's key state (missing or damaged: drift, reported, not healed).
    pub fn cycle(&self, scope: Option<&BTreeSet<Vec<u8>>>) -> anyhow::Result<Outcome> {
        let log = seclog::check_keys(&self.layout).map_err(|error| {
            let message = format!(
                "the security log's key state is missing or damaged: {error:#}; {}",
                seclog::reinit_hint(&self.layout)
            );
            eprintln!("bulletproofctl guard: drift: {message}");
            message
        });
        Ok(match (self.cycle_release(scope)?, log) {
            (Outcome::Intact | Outcome::Idle, Err(message)) => Outcome::Drift(message),
            (outcome, _) => outcome,
        })
    }

    fn cycle_release(&self, scope: Option<&BTreeSet<Vec<u8>>>) -> anyhow::Result<Outcome> {
        let layout = &self.layout;
        let config = Config::load(layout)?;
        let Some(active) = layout.active_version()? else {
            anyhow::bail!("{} is not installed", layout.root.display());
        };
        // Which version is active is guarded too (ARCHITECTURE.md: the root).
        let (active, reactivated) = match activation::check(layout, &active) {
            activation::Check::Authorized => (active, false),
            activation::Check::Unrecorded if active == EMPTY_RELEASE => (active, false),
            activation::Check::Unrecorded => {
                return Ok(self.activation_drift(format!(
                    "{active} is active but no signed operation recorded an activation (install/activated.json is missing); after checking the root, `bulletproofctl install --root {}` records the active version",
                    layout.root.display()
                )))
            }
            activation::Check::Unverifiable(why) => {
                return Ok(self.activation_drift(format!(
                    "the activation record cannot be trusted: {why}"
                )))
            }
            activation::Check::Unauthorized { active, recorded } => {
                match self.reactivate(&config, &active, &recorded)? {
                    Some(outcome) => return Ok(outcome),
                    None => (recorded, true),
                }
            }
        };
        let outcome = if active == EMPTY_RELEASE {
            Outcome::Idle
        } else {
            self.verify_active(&config, active, scope)?
        };
        Ok(match (reactivated, outcome) {
            (false, outcome) => outcome,
            (true, Outcome::Intact | Outcome::Idle) => Outcome::Healed(1),
            (true, Outcome::Healed(n)) => Outcome::Healed(n + 1),
            (true, outcome) => outcome,
        })
    }

    /// Drift in which version is active that the guard cannot heal by itself.
    fn activation_drift(&self, message: String) -> Outcome {
        eprintln!("bulletproofctl guard: drift: {message}");
        seclog::event_as(
            &self.layout,
            "guard",
            "drift",
            &message,
            serde_json::json!({ "activation": message }),
        );
        Outcome::Drift(message)
    }

    /// `active` is not the version the last signed operation activated (`recorded`):
    /// a flipped `install/active`. Re-activates `recorded` after verifying it (its
    /// signed manifest names it, its entries match by stat). `Ok(None)` when healed
    /// (the caller then verifies the release in full); an outcome otherwise.
    fn reactivate(
        &self,
        config: &Config,
        active: &str,
        recorded: &str,
    ) -> anyhow::Result<Option<Outcome>> {
        let layout = &self.layout;
        let Some(_lock) = release::try_lock(layout)? else {
            return Ok(Some(Outcome::Busy));
        };
        // Under the lock: an operation in progress (or interrupted: its journal is
        // there) is not an unauthorized activation; the next command finishes or
        // undoes it.
        if crate::layout::Txn::load(layout)?.is_some()
            || layout.active_version()?.as_deref() != Some(active)
        {
            return Ok(Some(Outcome::Busy));
        }
        let why = format!(
            "unauthorized activation: {active} is active, but the last signed operation activated {recorded}"
        );
        eprintln!("bulletproofctl guard: drift: {why}");
        if recorded != EMPTY_RELEASE {
            let key = release::release_key(layout, self.key.as_deref())?;
            let release_dir = layout.release(recorded);
            let checked = release::verify_release(&release_dir, &key, recorded)
                .map_err(|e| format!("{e:#}"))
                .and_then(|(manifest, _)| release::quick_verify(&release_dir, &manifest));
            if let Err(error) = checked {
                let message = format!("{why}; cannot re-activate {recorded}: {error}");
                seclog::event_as(
                    layout,
                    "guard",
                    "drift",
                    &message,
                    serde_json::json!({ "active": active, "recorded": recorded }),
                );
                return Ok(Some(Outcome::Failed(message)));
            }
        }
        release::activate(layout, recorded)?;
        let _ = release::restart_services(layout, config, recorded);
        seclog::event_as(
            layout,
            "guard",
            "healed",
            &format!("{why}; {recorded} re-activated"),
            serde_json::json!({ "active": active, "recorded": recorded, "activation": true }),
        );
        Ok(None)
    }

    /// Verifies (and heals) the content of the active release `active`.
    fn verify_active(
        &self,
        config: &Config,
        active: String,
        scope: Option<&BTreeSet<Vec<u8>>>,
    ) -> anyhow::Result<Outcome> {
        let layout = &self.layout;
        let config = config.clone();
        let key = release::release_key(layout, self.key.as_deref())?;
        let release_dir = layout.release(&active);
        let mut metadata_healed = false;
        let manifest = match release::verify_release(&release_dir, &key, &active) {
            Ok((manifest, _)) => manifest,
            Err(error) => {
                // The release's own manifest, checksums or signature were touched: put
                // them back from the archived bundle (verified), else roll back.
                let why = format!("the release's signed manifest does not verify: {error:#}");
                let Some(_lock) = release::try_lock(layout)? else {
                    return Ok(Outcome::Busy);
                };
                match restore_release_metadata(layout, &active, &key)
                    .and_then(|()| release::verify_release(&release_dir, &key, &active))
                {
                    Ok((manifest, _)) => {
                        seclog::event_as(
                            layout,
                            "guard",
                            "healed",
                            &format!("release {active}: {why}; restored from archives/{active}"),
                            serde_json::json!({ "version": active, "metadata": true }),
                        );
                        drop(_lock);
                        metadata_healed = true;
                        manifest
                    }
                    Err(restore) => {
                        drop(_lock);
                        let why = format!("{why}; cannot restore it: {restore:#}");
                        return self.roll_back(&config, &active, &why);
                    }
                }
            }
        };
        let drift = find_drift(&release_dir, &manifest, scope);
        if drift.is_empty() {
            return Ok(if metadata_healed {
                Outcome::Healed(1)
            } else {
                Outcome::Intact
            });
        }
        let Some(_lock) = release::try_lock(layout)? else {
            return Ok(Outcome::Busy);
        };
        // The lock is ours: was the active version switched meanwhile?
        if layout.active_version()?.as_deref() != Some(active.as_str()) {
            return Ok(Outcome::Busy);
        }
        let list: Vec<String> = drift
            .iter()
            .map(|d| format!("{} {}", String::from_utf8_lossy(&d.path), d.kind.as_str()))
            .collect();
        seclog::event_as(
            layout,
            "guard",
            "drift",
            &format!(
                "release {active}: {} entries differ from the signed manifest",
                drift.len()
            ),
            serde_json::json!({ "version": active, "drift": list }),
        );
        eprintln!(
            "bulletproofctl guard: drift in {active}: {}",
            list.join(", ")
        );
        // Heal; what still differs afterwards (tampering that goes on while we heal) is
        // healed again, a few times. Only a failed restore (archive missing, damaged,
        // not matching the manifest) is a reason to roll back.
        let mut pending = drift.clone();
        let mut healed = 0usize;
        let mut quarantines = Vec::new();
        for _attempt in 0..3 {
            match self.heal(&config, &active, &release_dir, &manifest, &pending) {
                Ok(quarantine) => {
                    healed += pending.len();
                    quarantines.push(quarantine);
                }
                Err(error) => {
                    drop(_lock);
                    return self.roll_back_locked(
                        &config,
                        &active,
                        &format!("cannot restore: {error:#}"),
                    );
                }
            }
            // Re-check what was healed (the rest was verified moments ago, and any
            // new change to it comes as an event or meets the periodic full check):
            // the heal is logged without a second pass over the whole release.
            let healed_paths: BTreeSet<Vec<u8>> = pending.iter().map(|d| d.path.clone()).collect();
            pending = find_drift(&release_dir, &manifest, Some(&healed_paths));
            if pending.is_empty() {
                break;
            }
        }
        let _ = release::restart_services(layout, &config, &active);
        if !pending.is_empty() {
            let message = format!(
                "release {active}: {} entries keep changing while being healed; healing again on the next event",
                pending.len()
            );
            seclog::event_as(
                layout,
                "guard",
                "heal-incomplete",
                &message,
                serde_json::json!({ "version": active }),
            );
            return Ok(Outcome::Healed(healed));
        }
        seclog::event_as(
            layout,
            "guard",
            "healed",
            &format!(
                "release {active} restored ({healed} entries); evidence in {}",
                quarantines
                    .iter()
                    .map(|q| q.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            serde_json::json!({ "version": active, "entries": healed, "quarantine": quarantines }),
        );
        Ok(Outcome::Healed(healed))
    }

    fn roll_back(&self, config: &Config, active: &str, why: &str) -> anyhow::Result<Outcome> {
        self.roll_back_locked(config, active, why)
    }

    fn roll_back_locked(
        &self,
        config: &Config,
        active: &str,
        why: &str,
    ) -> anyhow::Result<Outcome> {
        let layout = &self.layout;
        let Some(_lock) = release::try_lock(layout)? else {
            return Ok(Outcome::Busy);
        };
        match release::rollback_held(layout, config, self.key.as_deref()) {
            Ok(report) => {
                let message = format!(
                    "release {active} could not be restored ({why}); rolled back: {}",
                    report.message
                );
                seclog::event_as(
                    layout,
                    "guard",
                    "rollback",
                    &message,
                    serde_json::json!({ "from": active, "why": why }),
                );
                Ok(Outcome::RolledBack(message))
            }
            Err(failure) => {
                let message = format!(
                    "release {active} could not be restored ({why}) and not rolled back: {}",
                    match failure {
                        Failure::Refused(m) | Failure::RolledBack(m) => m,
                        Failure::Error(e) => format!("{e:#}"),
                    }
                );
                seclog::event_as(
                    layout,
                    "guard",
                    "heal-failed",
                    &message,
                    serde_json::json!({ "version": active }),
                );
                Ok(Outcome::Failed(message))
            }
        }
    }
}

/// `guard --once`: one full cycle; the exit code says what happened.
pub fn once(layout: &Layout, key: Option<PathBuf>) -> anyhow::Result<Outcome> {
    let _one = guard_lock(layout)?;
    let guard = Guard::new(layout.clone(), key);
    let outcome = guard.cycle(None)?;
    heartbeat(layout, &outcome, 0);
    Ok(outcome)
}

fn heartbeat(layout: &Layout, outcome: &Outcome, interval: u64) {
    let state = match outcome {
        Outcome::Intact => "intact",
        Outcome::Idle => "idle",
        Outcome::Healed(_) => "healed",
        Outcome::RolledBack(_) => "rolled back",
        Outcome::Busy => "busy",
        Outcome::Failed(_) => "failed",
        Outcome::Drift(_) => "drift",
    };
    seclog::event_as(
        layout,
        "guard",
        "heartbeat",
        &format!("cycle: {state}"),
        serde_json::json!({ "state": state, "interval": interval, "active": layout.active_version().ok().flatten() }),
    );
}

/// The daemon: a full cycle every `interval`, a targeted one on every filesystem event,
/// until SIGTERM or SIGINT.
pub fn run(layout: &Layout, key: Option<PathBuf>, interval: Option<u64>) -> anyhow::Result<()> {
    let _one = guard_lock(layout)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let guard = Guard::new(layout.clone(), key);
    let interval = Duration::from_secs(
        interval
            .unwrap_or(Config::load(layout)?.guard_interval_secs)
            .max(1),
    );
    seclog::event_as(
        layout,
        "guard",
        "start",
        "guard started",
        serde_json::json!({ "interval": interval.as_secs() }),
    );
    eprintln!(
        "bulletproofctl guard: watching {} (full check every {} s)",
        layout.root.display(),
        interval.as_secs()
    );
    let mut active = layout
        .active_version()?
        .unwrap_or_else(|| EMPTY_RELEASE.into());
    let mut watcher = Watcher::new(layout, &active)?;
    let mut next_full = Instant::now();
    let mut pending: Option<BTreeSet<Vec<u8>>> = None;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let scope = if now >= next_full {
            next_full = now + interval;
            Some(None)
        } else if let Some(paths) = pending.take() {
            Some(Some(paths))
        } else {
            let wait = (next_full - now).min(Duration::from_millis(500));
            watcher.wait(wait)?
        };
        let Some(scope) = scope else { continue };
        let full = scope.is_none();
        let outcome = match guard.cycle(scope.as_ref()) {
            Ok(outcome) => outcome,
            Err(error) => Outcome::Failed(format!("{error:#}")),
        };
        match &outcome {
            Outcome::Healed(n) => eprintln!("bulletproofctl guard: healed {n} entries"),
            Outcome::RolledBack(m) | Outcome::Failed(m) => eprintln!("bulletproofctl guard: {m}"),
            Outcome::Drift(_) => {} // said by the cycle
            Outcome::Busy => next_full = Instant::now() + Duration::from_secs(1),
            _ => {}
        }
        if full {
            heartbeat(layout, &outcome, interval.as_secs());
        }
        let now_active = layout
            .active_version()?
            .unwrap_or_else(|| EMPTY_RELEASE.into());
        if now_active != active {
            // Another release: new watches, then a full check of it.
            active = now_active;
            watcher = Watcher::new(layout, &active)?;
            next_full = Instant::now();
        } else if !matches!(
            outcome,
            Outcome::Intact | Outcome::Idle | Outcome::Busy | Outcome::Drift(_)
        ) {
            // A heal replaced files and directories: new watches first, then whatever
            // the old ones caught meanwhile is checked next, so nothing falls between.
            let fresh = Watcher::new(layout, &active)?;
            let mut old = std::mem::replace(&mut watcher, fresh);
            match old.wait(Duration::ZERO)? {
                Some(None) => next_full = Instant::now(),
                Some(Some(paths)) if !paths.is_empty() => pending = Some(paths),
                _ => {}
            }
        }
    }
    seclog::event_as(
        layout,
        "guard",
        "stop",
        "guard stopped",
        serde_json::json!({}),
    );
    Ok(())
}
