//! Storage behind the API: a small trait that says what the service needs from a store
//! (and promises: an insert returns only once it is durable), and its default
//! implementation on an embedded sled database.
//!
//! The trait speaks in whole immutable documents and "insert if absent", which any
//! server-grade backend (PostgreSQL, an object store with conditional puts) offers, so a
//! second backend does not need sled's shape.
//!
//! * `sled.rs` — [`SledStore`]: the index in sled, each body and signature a file.
//! * `recover.rs` — what [`SledStore::open`] does with files no index entry names:
//!   rebuild the entry from a body that proves itself, or move the file aside. Nothing
//!   but temp files is ever deleted.
//! * `postgres/` — [`PgStore`]: the same trait on PostgreSQL, for replicas sharing one
//!   database (issue 20).

mod fleet;
mod lost_found;
mod postgres;
mod recover;
mod sled;
mod sled_fleet;

pub use self::fleet::{
    Accept, Changes, DailyRecord, Expect, FleetWrite, HostRecord, ReportRow, StoredReport,
};
pub use self::postgres::{
    is_postgres_url, PgOptions, PgStore, SCHEMA_VERSION as PG_SCHEMA_VERSION,
};
pub use self::sled::SledStore;

use crate::ingest::{BaselineMeta, Encoding, Prepared};
use bytes::Bytes;

/// A store failure (I/O, corruption): the request gets a 500 and nothing is
/// acknowledged.
#[derive(Debug, Clone)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

/// How an [`StoreError::unavailable`] message starts.
const UNAVAILABLE: &str = "the store is unreachable: ";

impl StoreError {
    /// The store cannot be reached now (its database is down, restarting or out of
    /// connections): the request gets a `503` with `Retry-After`, not a `500`.
    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        StoreError(format!("{UNAVAILABLE}{detail}"))
    }

    /// Whether this is [`StoreError::unavailable`]. (A prefix rather than a field: the
    /// type is a plain message built in many places, and only this one kind matters to
    /// callers.)
    pub fn is_unavailable(&self) -> bool {
        self.0.starts_with(UNAVAILABLE)
    }
}

impl From<::sled::Error> for StoreError {
    fn from(error: ::sled::Error) -> Self {
        StoreError(format!("sled: {error}"))
    }
}

impl From<std::io::Error> for StoreError {
    fn from(error: std::io::Error) -> Self {
        StoreError(format!("I/O: {error}"))
    }
}

/// Outcome of [`Store::insert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Stored and durable.
    Created,
    /// A baseline with this image id was already stored (baselines are immutable);
    /// carries the stored one's metadata.
    Exists(Box<BaselineMeta>),
}

/// Outcome of [`Store::put_signature`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignaturePut {
    /// Stored and durable.
    Created,
    /// The same bytes were already stored.
    Unchanged,
    /// A different signature is already stored; signatures are immutable like
    /// baselines.
    Conflict,
    /// No baseline with this image id.
    NoBaseline,
}

/// What opening a store found that its index did not explain, and what it did about
/// it (see `recover.rs`). All zero after a clean shutdown or an ordinary crash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Index entries rebuilt from a body that hashes to its name and validates: the
    /// baseline is served again.
    pub rebuilt: u64,
    /// Signatures put back into the index from their files (with a rebuilt entry, or
    /// beside an entry whose signature record was lost or older than its file).
    pub signatures_restored: u64,
    /// Files moved to `lost+found/` because nothing could explain them.
    pub lost_found: u64,
    /// Temporary files of interrupted writes, removed (never acknowledged).
    pub temp_removed: u64,
}

/// A login session of the pages as a store shared by replicas keeps it (see
/// `ui/session.rs`): by the SHA-256 of its id (hex), never the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub digest: String,
    /// The caller's id (`name:NAME`, …) and scope (`read`, `admin`).
    pub caller: String,
    pub scope: String,
    pub csrf: String,
    /// Unix seconds.
    pub created: u64,
    pub expires: u64,
}

fn no_sessions() -> StoreError {
    StoreError("this store keeps no login sessions (only one process uses it)".into())
}

/// What the service needs from a store. Every method may block (call from a blocking
/// thread); every write returns only after it is durable.
pub trait Store: Send + Sync + 'static {
    /// Stores a baseline unless one with the same image id exists. Atomic: after a crash
    /// either all of it is readable or none of it.
    fn insert(&self, baseline: &Prepared) -> Result<Inserted, StoreError>;
    /// Metadata of every stored baseline, in image id order.
    fn list(&self) -> Result<Vec<BaselineMeta>, StoreError>;
    /// One stored form of a baseline; `None` if the baseline or that form is absent.
    fn body(&self, image_id: &str, encoding: Encoding) -> Result<Option<Bytes>, StoreError>;
    /// Stores the signature of a stored baseline.
    fn put_signature(&self, image_id: &str, signature: &[u8]) -> Result<SignaturePut, StoreError>;
    /// Stores the signature of a stored baseline in place of any earlier one (an
    /// admin's correction); `Created` or `Unchanged`, or `NoBaseline`.
    fn replace_signature(
        &self,
        image_id: &str,
        signature: &[u8],
    ) -> Result<SignaturePut, StoreError>;
    /// The stored signature of a baseline.
    fn signature(&self, image_id: &str) -> Result<Option<Bytes>, StoreError>;
    /// Bytes the store occupies on disk.
    fn size_on_disk(&self) -> Result<u64, StoreError>;
    /// Flushes anything buffered (called at shutdown; writes are already durable).
    fn flush(&self) -> Result<(), StoreError>;

    // The fleet (REFERENCE §7).

    /// Makes a batch of fleet writes durable with one commit (one disk flush for all):
    /// when it returns `Ok`, every write of the batch that was applied survives a
    /// crash; each write is atomic on its own. Says for each write whether it was
    /// applied (`false`: its [`Expect`] did not hold, nothing of it was written).
    fn apply(&self, writes: &[FleetWrite]) -> Result<Vec<bool>, StoreError>;
    /// One host's record.
    fn host(&self, host_id: &str) -> Result<Option<HostRecord>, StoreError>;
    /// Every host with its latest report (`last_seq`'s), as the service loads them at
    /// start. A store that can join does it in one pass.
    fn hosts_with_latest(&self) -> Result<Vec<(HostRecord, Option<StoredReport>)>, StoreError> {
        self.hosts()?
            .into_iter()
            .map(|record| {
                let latest = self.report(&record.host_id, record.last_seq)?;
                Ok((record, latest))
            })
            .collect()
    }
    /// Every host (loaded at start-up; the service keeps the fleet's state in memory).
    fn hosts(&self) -> Result<Vec<HostRecord>, StoreError>;
    /// One stored report of a host.
    fn report(&self, host_id: &str, seq: u64) -> Result<Option<StoredReport>, StoreError>;
    /// A host's reports below `before` (all when `None`), newest first, at most `limit`.
    fn reports(
        &self,
        host_id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ReportRow>, StoreError>;
    /// Removes a host's reports received before `received_before` (Unix seconds),
    /// never the one with seq `keep`; returns how many went.
    fn prune_reports(
        &self,
        host_id: &str,
        received_before: u64,
        keep: u64,
    ) -> Result<u64, StoreError>;
    /// Every accept.
    fn accepts(&self) -> Result<Vec<Accept>, StoreError>;
    /// The daily records of every image from `since_day` (days since the Unix epoch)
    /// on, in any order.
    fn daily(&self, since_day: u64) -> Result<Vec<DailyRecord>, StoreError>;

    // Replicas: several service processes sharing one store.

    /// The metadata of one stored baseline.
    fn meta(&self, image_id: &str) -> Result<Option<BaselineMeta>, StoreError> {
        Ok(self
            .list()?
            .into_iter()
            .find(|meta| meta.image_id == image_id))
    }
    /// Where [`Store::changes`] starts from now; `None` for a store only this process
    /// writes (the embedded one: it locks its directory), which has nothing to follow.
    /// Taken before the state is loaded, so nothing written meanwhile is missed.
    fn change_cursor(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    /// What any process sharing the store wrote since `cursor` (this one's own writes
    /// may come back too: applying them again changes nothing).
    fn changes(&self, cursor: u64) -> Result<Changes, StoreError> {
        Ok(Changes {
            cursor,
            ..Changes::default()
        })
    }
    /// Stores a session; then ends the caller's oldest beyond `per_caller` and every
    /// expired one (`now`, Unix seconds).
    fn put_session(
        &self,
        _session: &SessionRecord,
        _per_caller: usize,
        _now: u64,
    ) -> Result<(), StoreError> {
        Err(no_sessions())
    }
    /// The session of a digest, if it has not expired at `now`.
    fn session(&self, _digest: &str, _now: u64) -> Result<Option<SessionRecord>, StoreError> {
        Err(no_sessions())
    }
    /// Ends a session.
    fn end_session(&self, _digest: &str) -> Result<(), StoreError> {
        Err(no_sessions())
    }
    /// Adds audit records of this replica (its chain's seq and the record) to the
    /// listing replicas share.
    fn append_audit(&self, _records: &[(u64, serde_json::Value)]) -> Result<(), StoreError> {
        Err(StoreError(
            "this store keeps no shared audit listing".into(),
        ))
    }
    /// The newest `limit` audit records of every replica, newest first, each with
    /// the replica that wrote it.
    fn audit_tail(&self, _limit: usize) -> Result<Vec<serde_json::Value>, StoreError> {
        Err(StoreError(
            "this store keeps no shared audit listing".into(),
        ))
    }
    /// Whether the store can be reached now (`/healthz`); the error says why not.
    fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
