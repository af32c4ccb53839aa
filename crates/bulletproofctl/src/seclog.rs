//! The security log (REFERENCE §6) as `bulletproofctl` uses it: the `bulletproof-seclog`
//! crate (the forward-secure chain, checkpoints, verify, fail closed), re-exported,
//! and wrappers that take the root's [`Layout`] ([`Layout::seclog`] builds the log of a
//! root; the on-disk layout is the crate's, the same paths below the root).

use crate::layout::Layout;
use std::path::{Path, PathBuf};

pub use bulletproof_seclog::*;

impl Layout {
    /// The security log of this root.
    pub fn seclog(&self) -> SecLog {
        SecLog::new(&self.root)
    }
}

/// `logs/security/<component>.jsonl`.
pub fn jsonl_path(layout: &Layout, component: &str) -> PathBuf {
    layout.seclog().jsonl_path(component)
}

/// `install/logkeys/initial.key`.
pub fn master_key_path(layout: &Layout) -> PathBuf {
    layout.seclog().master_key_path()
}

/// What the operator does about a missing or damaged key state.
pub fn reinit_hint(layout: &Layout) -> String {
    layout.seclog().reinit_hint()
}

/// See [`SecLog::check_keys`].
pub fn check_keys(layout: &Layout) -> anyhow::Result<()> {
    layout.seclog().check_keys()
}

/// See [`SecLog::ensure_ready`].
pub fn ensure_ready(layout: &Layout) -> anyhow::Result<()> {
    layout.seclog().ensure_ready()
}

/// See [`SecLog::init_keys`].
pub fn init_keys(
    layout: &Layout,
    out: Option<&Path>,
    components: &[&str],
) -> anyhow::Result<Option<PathBuf>> {
    layout.seclog().init_keys(out, components)
}

/// See [`SecLog::append`].
pub fn append(
    layout: &Layout,
    component: &str,
    event: &str,
    msg: &str,
    data: serde_json::Value,
) -> anyhow::Result<u64> {
    layout.seclog().append(component, event, msg, data)
}

/// See [`SecLog::event_as`].
pub fn event_as(layout: &Layout, component: &str, event: &str, msg: &str, data: serde_json::Value) {
    layout.seclog().event_as(component, event, msg, data)
}

/// See [`SecLog::event`].
pub fn event(layout: &Layout, event: &str, msg: &str, data: serde_json::Value) {
    layout.seclog().event(event, msg, data)
}

/// See [`SecLog::reinit`].
pub fn reinit(layout: &Layout, out: Option<&Path>) -> anyhow::Result<Reinit> {
    layout.seclog().reinit(out)
}
