//! What a store keeps of the fleet (REFERENCE §7): hosts, their signed reports,
//! accepted drift and each image's daily counts, as plain values any backend can hold
//! (the sled one is in `sled_fleet.rs`). The service derives everything else (status, drift groups) from
//! these in memory (`crate::fleet`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A host as stored: its identity and the bookkeeping of its reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub host_id: String,
    pub hostname: String,
    pub image_id: String,
    /// The pinned public key (minisign base64 line); `None` once an admin re-opened
    /// enrollment: the next report's key is pinned.
    pub public_key: Option<String>,
    /// When the current key was pinned.
    pub enrolled: String,
    pub first_seen: String,
    /// When the latest report was received (the service's clock).
    pub last_seen: String,
    pub last_seq: u64,
    /// Sequence numbers never received, as inclusive ranges, oldest first.
    pub gaps: Vec<(u64, u64)>,
    /// The latest report's interval (stale after 3 of them without a report).
    pub interval_secs: Option<u64>,
    /// Reports the agent said its spool dropped, in total.
    #[serde(default)]
    pub spool_dropped: u64,
}

/// A report as stored: its exact signed bytes, their signature, when it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReport {
    /// Unix seconds at which the service received it (retention counts from here).
    pub received: u64,
    /// The `.minisig` text.
    pub signature: String,
    pub bytes: Bytes,
}

/// Accepted drift: findings equal to these are expected (REFERENCE §7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accept {
    pub id: String,
    pub image_id: String,
    /// `None`: every host of the image.
    pub host_id: Option<String>,
    pub path: String,
    pub anomaly: String,
    /// The finding's current values, exactly (a later, different change is drift).
    pub current: serde_json::Value,
    pub comment: String,
    pub created: String,
    /// The token name of the admin who accepted it.
    pub created_by: String,
}

/// One image's host counts on one day: the day's maximum of each count, as sampled
/// (the overview's "drift over the last 14 days").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyRecord {
    pub image_id: String,
    /// Days since the Unix epoch, UTC.
    pub day: u64,
    pub hosts: u64,
    pub drifted: u64,
    pub failing: u64,
    pub stale: u64,
}

/// What a write expects of the stored host: it is applied only if the host is still
/// so. A service decides on what it last saw of a host; replicas sharing one store may
/// have taken a report of the same host since, and then the write is not applied
/// ([`super::Store::apply`] says so) and the service looks again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// No record of the host.
    Absent,
    /// The host's record with this last seq and this pinned key.
    Record {
        last_seq: u64,
        public_key: Option<String>,
    },
}

impl Expect {
    /// What `record` (as last seen) expects, or `Absent` for none.
    pub fn of(record: Option<&HostRecord>) -> Expect {
        match record {
            Some(record) => Expect::Record {
                last_seq: record.last_seq,
                public_key: record.public_key.clone(),
            },
            None => Expect::Absent,
        }
    }

    /// Whether the stored record (or its absence) is as expected.
    pub fn holds(&self, stored: Option<&HostRecord>) -> bool {
        match (self, stored) {
            (Expect::Absent, None) => true,
            (
                Expect::Record {
                    last_seq,
                    public_key,
                },
                Some(stored),
            ) => stored.last_seq == *last_seq && stored.public_key == *public_key,
            _ => false,
        }
    }
}

/// What changed in a store shared with other service processes (see
/// [`super::Store::changes`]).
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// Hosts other processes wrote since the cursor.
    pub hosts: Vec<HostRecord>,
    /// Baselines stored since the cursor.
    pub baselines: Vec<crate::ingest::BaselineMeta>,
    /// Every accept, when any was added or removed since the cursor.
    pub accepts: Option<Vec<Accept>>,
    /// Where the next call goes on from.
    pub cursor: u64,
}

/// One change to the fleet's stored state; [`super::Store::apply`] makes a batch of
/// them durable at once (the service's group commit).
#[derive(Debug, Clone)]
pub enum FleetWrite {
    /// A report and its host's new record; reports of the host at or below
    /// `prune_through` are removed in the same commit (the per-host cap). Applied
    /// only if the stored host is as `expect` says.
    Report {
        host: HostRecord,
        seq: u64,
        report: StoredReport,
        prune_through: Option<u64>,
        expect: Expect,
    },
    /// A host's record alone (its key removed by an admin), if the stored host is as
    /// `expect` says.
    Host {
        host: HostRecord,
        expect: Expect,
    },
    PutAccept(Accept),
    DeleteAccept(String),
    /// An image's counts of a day, in place of any earlier record of that day.
    Daily(DailyRecord),
}

/// A report's listing entry: its seq and stored form.
pub type ReportRow = (u64, StoredReport);
