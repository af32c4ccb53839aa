//! The library behind `bulletproofctl` (the binary is `main.rs`): release bundles, the
//! bulletproof root's layout and life cycle. A library so the fuzz targets and tests
//! can reach the parsers; nothing here is a stable API.

pub mod activation;
pub mod bundle;
pub mod checksums;
pub mod conf;
pub mod extract;
pub mod frames;
pub mod fsutil;
pub mod fuzzing;
pub mod guard;
pub mod install;
pub mod layout;
pub mod mounts;
pub mod oplog;
pub mod release;
pub mod restore;
pub mod seclog;
pub mod snapshot;
pub mod status;

/// The seed's application root.
pub const DEFAULT_ROOT: &str = "/opt/omniscient";
