//! `integrity-common`: the one engine every Bulletproof component stands on.
//!
//! scan a tree ([`scan`]) → a manifest ([`Baseline`]) → diff two manifests
//! ([`diff`]) → anomalies. Everything here except [`scan`] works on values and
//! bytes; this crate does no network I/O and knows nothing of HTTP, storage
//! engines or async runtimes.

pub mod diff;
pub mod digest;
pub mod exclude;
pub mod fuzzing;
pub mod handles;
pub mod hashing;
pub mod manifest;
pub mod pathenc;
pub mod policy;
pub mod report;
pub mod scan;
pub mod secret;
pub mod verified;

pub use diff::{diff, Anomaly, AnomalyKind, ChangedFields, DriftSummary};
pub use digest::Sha256Digest;
pub use exclude::{Exclusions, DEFAULT_EXCLUSIONS};
pub use manifest::{
    validate_image_id, validate_timestamp, Baseline, EntryKind, FileIntegrityEntry, ManifestError,
    ScanErrorRecord,
};
pub use policy::{Applied, Checks, Policy, PolicyError, Rule};
pub use scan::{
    scan, scan_metadata, scan_path, scan_verified, ScanOptions, ScanOutput, ScanProgress,
    ScanRootError, Verify,
};
pub use secret::{read_secret, Secret, SecretError, SecretWarning};
