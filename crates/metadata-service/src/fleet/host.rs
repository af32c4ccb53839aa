//! One host in memory: its stored record, its pinned key parsed, what its latest
//! report said (enough to derive its status and its drift without reading the report
//! again), and the rate limit of its reports.

use super::drift::{Accepts, GroupKey};
use crate::store::HostRecord;
use integrity_common::report::{timestamp_secs, HostReport, ReportMode};
use integrity_common::DriftSummary;
use std::sync::Arc;

/// A host's status (REFERENCE §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Clean,
    Drifted,
    Failing,
    Stale,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Clean,
        Status::Drifted,
        Status::Failing,
        Status::Stale,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Clean => "clean",
            Status::Drifted => "drifted",
            Status::Failing => "failing",
            Status::Stale => "stale",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// What the latest report said.
#[derive(Debug, Clone)]
pub struct Latest {
    pub summary: DriftSummary,
    pub error: Option<String>,
    pub agent_version: String,
    pub mode: ReportMode,
    pub finished: String,
    /// When the host's last full check ran (the agent's word).
    pub last_full: Option<String>,
    pub truncated: u64,
    /// The report's findings as drift group keys.
    pub findings: Vec<Arc<GroupKey>>,
}

impl Latest {
    pub fn of(report: &HostReport, findings: Vec<Arc<GroupKey>>) -> Latest {
        Latest {
            summary: report.summary,
            error: report.error.clone(),
            agent_version: report.agent_version.clone(),
            mode: report.mode,
            finished: report.finished.clone(),
            last_full: report.last_full.clone(),
            truncated: report.truncated,
            findings,
        }
    }
}

/// A token bucket: `burst` reports at once, then one per second.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    at: u64,
}

impl Bucket {
    pub fn full(burst: u32, now_ms: u64) -> Bucket {
        Bucket {
            tokens: f64::from(burst),
            at: now_ms,
        }
    }

    /// Takes one token; `false` when none is left.
    pub fn take(&mut self, burst: u32, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.at) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed).min(f64::from(burst));
        self.at = now_ms;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub struct Host {
    pub record: HostRecord,
    pub key: Option<integrity_trust::PublicKey>,
    pub latest: Option<Latest>,
    /// `record.last_seen` in Unix seconds.
    pub last_seen_secs: u64,
    pub bucket: Bucket,
    /// A report of this host is being committed: another one at the same time is
    /// answered 429 (an agent sends one at a time; this keeps seqs in order).
    pub in_flight: bool,
}

impl Host {
    pub fn new(record: HostRecord, latest: Option<Latest>, burst: u32, now_ms: u64) -> Host {
        let key = record
            .public_key
            .as_deref()
            .and_then(|key| integrity_trust::parse_public_key(key).ok());
        Host {
            last_seen_secs: timestamp_secs(&record.last_seen),
            record,
            key,
            latest,
            bucket: Bucket::full(burst, now_ms),
            in_flight: false,
        }
    }

    /// Seconds without a report after which the host is stale.
    pub fn stale_after(&self, default_secs: u64) -> u64 {
        match self.record.interval_secs {
            Some(interval) => interval.saturating_mul(3),
            None => default_secs,
        }
    }

    pub fn status(&self, now: u64, stale_after: u64, accepts: &Accepts) -> Status {
        if now.saturating_sub(self.last_seen_secs) > self.stale_after(stale_after) {
            return Status::Stale;
        }
        let Some(latest) = &self.latest else {
            return Status::Failing;
        };
        if latest.error.is_some() {
            return Status::Failing;
        }
        if latest.truncated > 0 || self.unaccepted(accepts).next().is_some() {
            return Status::Drifted;
        }
        Status::Clean
    }

    /// The latest report's findings no accept covers.
    pub fn unaccepted<'a>(&'a self, accepts: &'a Accepts) -> impl Iterator<Item = &'a GroupKey> {
        self.latest
            .iter()
            .flat_map(|latest| latest.findings.iter())
            .filter(move |key| {
                accepts
                    .covering(&self.record.image_id, &self.record.host_id, key)
                    .is_none()
            })
            .map(|key| &**key)
    }

    /// The latest summary without the accepted findings, and how many were accepted.
    pub fn summary(&self, accepts: &Accepts) -> (DriftSummary, u64) {
        let Some(latest) = &self.latest else {
            return (DriftSummary::default(), 0);
        };
        let mut summary = latest.summary;
        let mut accepted = 0;
        for key in &latest.findings {
            if accepts
                .covering(&self.record.image_id, &self.record.host_id, key)
                .is_some()
            {
                accepted += 1;
                let counter = match key.anomaly.as_str() {
                    "added" => &mut summary.added,
                    "deleted" => &mut summary.deleted,
                    "modified" => &mut summary.modified,
                    "metadata_changed" => &mut summary.metadata_changed,
                    _ => &mut summary.type_changed,
                };
                *counter = counter.saturating_sub(1);
            }
        }
        (summary, accepted)
    }
}

/// Gap ranges kept per host (the oldest go first): a host skipping seqs on purpose
/// cannot grow its record without bound.
pub const MAX_GAPS: usize = 1000;

/// The gaps after a report with `seq` arrives at a host whose last was `last_seq`,
/// and how many seqs the new gap holds.
pub fn gaps_after(mut gaps: Vec<(u64, u64)>, last_seq: u64, seq: u64) -> (Vec<(u64, u64)>, u64) {
    if seq > last_seq.saturating_add(1) {
        gaps.push((last_seq + 1, seq - 1));
        if gaps.len() > MAX_GAPS {
            gaps.drain(..gaps.len() - MAX_GAPS);
        }
        (gaps, seq - 1 - last_seq)
    } else {
        (gaps, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refills_one_per_second() {
        let mut bucket = Bucket::full(2, 0);
        assert!(bucket.take(2, 0));
        assert!(bucket.take(2, 0));
        assert!(!bucket.take(2, 10));
        assert!(bucket.take(2, 1100));
        assert!(!bucket.take(2, 1100));
    }

    #[test]
    fn gaps_count_missing_seqs() {
        assert_eq!(gaps_after(vec![], 3, 4), (vec![], 0));
        assert_eq!(gaps_after(vec![], 3, 7), (vec![(4, 6)], 3));
        assert_eq!(gaps_after(vec![], 0, 2), (vec![(1, 1)], 1));
        assert_eq!(gaps_after(vec![], u64::MAX, 3), (vec![], 0));
        let many = (0..MAX_GAPS as u64).map(|n| (n * 10, n * 10 + 1)).collect();
        let (kept, _) = gaps_after(many, 100_000, 100_005);
        assert_eq!(kept.len(), MAX_GAPS);
        assert_eq!(kept.last(), Some(&(100_001, 100_004)));
    }
}
