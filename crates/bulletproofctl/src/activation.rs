//! Which version is *supposed* to be active (ARCHITECTURE.md: the root): every signed operation that
//! activates a version (install, update, rollback, recover, and the guard when it
//! heals) records it in `install/activated.json`, signed with the host key
//! (`activated.json.minisig`, trusted comment `activated:<version>`). The guard and
//! `status` compare the record with `install/active`: a flipped symlink, or an older
//! signed release copied over the active one, is an activation no signed operation
//! made — drift, healed by re-activating the recorded version.
//!
//! The record is signed by the same host key that signs the security log's
//! checkpoints, so it is authenticated exactly as the log is, without the guard having
//! to replay the log (which rotates) on every cycle.

use crate::layout::{read_trusted, write_atomically, Layout};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The record's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    pub version: String,
    /// The operation that activated it: install, update, rollback, recover, guard.
    pub op: String,
    pub at: String,
}

fn record_path(layout: &Layout) -> PathBuf {
    layout.path("install/activated.json")
}

fn signature_path(layout: &Layout) -> PathBuf {
    layout.path("install/activated.json.minisig")
}

fn comment(version: &str) -> String {
    format!("activated:{version}")
}

/// Records `version` as activated by `op`, signed with the host key. Written after
/// the activation's rename: a crash in between leaves the old record, and the journal
/// (`txn.json`) that puts the old version back.
pub fn record(layout: &Layout, version: &str, op: &str) -> anyhow::Result<()> {
    let body = Activation {
        version: version.into(),
        op: op.into(),
        at: integrity_common::manifest::now_timestamp(),
    };
    let mut bytes = serde_json::to_vec(&body)?;
    bytes.push(b'\n');
    let key_path = layout.host_key();
    read_trusted(&key_path)?.with_context(|| format!("{} is missing", key_path.display()))?;
    let secret =
        integrity_trust::load_secret_key(&key_path, integrity_trust::Password::PromptIfTerminal)
            .with_context(|| format!("cannot load the host key {}", key_path.display()))?;
    let signature = integrity_trust::sign(&secret, &bytes, &comment(version))?;
    // Body first, then its signature: in between, the record does not verify, which
    // the guard reports (and the next signed operation rewrites); never a stale
    // signature over a new body.
    write_atomically(&record_path(layout), &bytes, 0o644)?;
    write_atomically(&signature_path(layout), signature.as_bytes(), 0o644)?;
    Ok(())
}

/// The recorded activation, verified with the host's public key. `Ok(None)` when no
/// record exists (a root installed by an older bulletproofctl); an error when it exists
/// but is not authentic.
pub fn load(layout: &Layout) -> anyhow::Result<Option<Activation>> {
    let path = record_path(layout);
    let Some(bytes) = read_trusted(&path)? else {
        return Ok(None);
    };
    let signature = read_trusted(&signature_path(layout))?
        .with_context(|| format!("{} has no signature", path.display()))?;
    let signature = String::from_utf8(signature).context("the signature is not text")?;
    let public = layout.host_public_key();
    read_trusted(&public)?.with_context(|| format!("{} is missing", public.display()))?;
    let key = integrity_trust::load_public_key(&public)?;
    let trusted = integrity_trust::verify(&key, &bytes, &signature, false).map_err(|e| {
        anyhow::anyhow!("{} does not verify with the host key: {e}", path.display())
    })?;
    let body: Activation =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display()))?;
    if trusted != comment(&body.version) {
        anyhow::bail!(
            "{}: the signed comment {trusted:?} does not name version {}",
            path.display(),
            body.version
        );
    }
    Ok(Some(body))
}

/// What `status` and the guard say about the active version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The active version is the recorded one.
    Authorized,
    /// No record (an older root); nothing to compare with.
    Unrecorded,
    /// `install/active` names another version than the last signed operation.
    Unauthorized { active: String, recorded: String },
    /// The record exists but does not verify.
    Unverifiable(String),
}

pub fn check(layout: &Layout, active: &str) -> Check {
    match load(layout) {
        Ok(Some(record)) if record.version == active => Check::Authorized,
        Ok(Some(record)) => Check::Unauthorized {
            active: active.into(),
            recorded: record.version,
        },
        Ok(None) => Check::Unrecorded,
        Err(error) => Check::Unverifiable(format!("{error:#}")),
    }
}
