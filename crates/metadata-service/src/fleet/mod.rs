//! The fleet (REFERENCE §7): hosts, their signed reports, drift groups and accepted
//! drift. The store holds the records ([`crate::store::Store`]); this module keeps the
//! fleet's state in memory, loaded at start-up and changed only after a write is
//! durable, so views never scan reports:
//!
//! * `host.rs` — one host: record, pinned key, latest report's summary, status.
//! * `drift.rs` — drift groups (incremental) and the accepts index.
//! * `writer.rs` — the group commit all fleet writes go through.
//! * `views.rs` — the JSON of `/fleet`, `/hosts`, `/drift`.
//! * `admit.rs` — what `POST /reports` decides, in order.
//! * `daily.rs` — each image's daily counts over the last 14 days, and their sampler.
//! * `follow.rs` — replicas sharing one store follow each other's writes.

mod admit;
pub mod daily;
pub mod drift;
pub mod follow;
pub mod host;
pub mod views;
pub mod writer;

pub use admit::{Admitted, Refusal, MAX_SEQ_JUMP, REFUSALS_PER_SECOND};

use crate::audit::Audit;
use crate::store::{Accept, Store, StoreError};
use drift::{Accepts, DriftIndex};
use host::{Host, Latest};
use integrity_common::report::HostReport;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use writer::Writer;

/// The fleet's knobs (REFERENCE §5).
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Stale after this long without a report, when the report gave no interval.
    pub stale_after: Duration,
    /// Reports older than this are removed (the latest of each host is kept).
    pub report_retention: Duration,
    /// Reports kept per host at most (the latest always).
    pub max_reports_per_host: u64,
    /// Largest report body.
    pub max_report_bytes: u64,
    /// Most anomalies in one report.
    pub max_report_anomalies: usize,
    /// How far in the future a report's `finished` may be.
    pub max_clock_skew: Duration,
    /// Reports a host may send at once (then one per second).
    pub host_burst: u32,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            stale_after: Duration::from_secs(7200),
            report_retention: Duration::from_secs(30 * 86400),
            // 30 days at a 5-minute interval.
            max_reports_per_host: 10_000,
            max_report_bytes: 4 * 1024 * 1024,
            max_report_anomalies: 1000,
            max_clock_skew: Duration::from_secs(300),
            // A full agent spool (1000) drains in one go.
            host_burst: 1100,
        }
    }
}

/// The fleet's state in memory.
#[derive(Default)]
pub struct FleetState {
    pub hosts: BTreeMap<String, Host>,
    pub drift: DriftIndex,
    pub accepts: Accepts,
    /// Hosts whose first report is being committed (one at a time, as for known hosts).
    pub enrolling: std::collections::HashSet<String>,
    /// Each image's counts per day, the last 14 days.
    pub daily: daily::Daily,
}

pub struct Fleet {
    pub config: FleetConfig,
    state: Mutex<FleetState>,
    pub writer: Writer,
    pub audit: Option<Arc<Audit>>,
    store: Arc<dyn Store>,
    /// Refusals audited in the current second (a flood is counted, not itemised).
    refusals: Mutex<admit::RefusalWindow>,
    /// Where following the other replicas' writes starts (`None`: the store is this
    /// process's alone).
    pub follow_from: Option<u64>,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |duration| duration.as_secs())
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |duration| duration.as_millis() as u64)
}

impl Fleet {
    /// Loads every host (and its latest report), every accept and the last 14 days of
    /// daily counts from the store.
    pub fn load(
        store: Arc<dyn Store>,
        audit: Option<Arc<Audit>>,
        config: FleetConfig,
    ) -> Result<Fleet, StoreError> {
        // Taken before anything is read: what is written meanwhile is followed.
        let follow_from = store.change_cursor()?;
        let mut state = FleetState::default();
        for accept in store.accepts()? {
            state.accepts.insert(accept);
        }
        let today = daily::day_of(now_secs());
        state.daily = daily::Daily::new(store.daily(daily::first_day(today))?, today);
        let now = now_ms();
        for (record, stored) in store.hosts_with_latest()? {
            let latest = match stored {
                Some(stored) => match HostReport::parse(&stored.bytes, usize::MAX) {
                    Ok(report) => {
                        let keys = state.drift.keys_of(&record.image_id, &report.anomalies);
                        state.drift.add(&record.image_id, &record.host_id, &keys);
                        Some(Latest::of(&report, keys))
                    }
                    Err(error) => {
                        tracing::warn!(host_id = %record.host_id, "latest report unreadable: {error}");
                        None
                    }
                },
                None => None,
            };
            let host = Host::new(record, latest, config.host_burst, now);
            state.hosts.insert(host.record.host_id.clone(), host);
        }
        let writer = Writer::start(store.clone(), audit.clone(), follow_from.is_some())
            .map_err(|error| StoreError(format!("cannot start the fleet writer: {error}")))?;
        Ok(Fleet {
            config,
            state: Mutex::new(state),
            writer,
            audit,
            store,
            refusals: Mutex::new(admit::RefusalWindow::default()),
            follow_from,
        })
    }

    pub fn state(&self) -> MutexGuard<'_, FleetState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The newest `limit` audit records, newest first: every replica's from the shared
    /// store, else this service's own log. Blocking.
    pub fn audit_records(&self, limit: usize) -> anyhow::Result<Vec<serde_json::Value>> {
        if self.follow_from.is_some() {
            return Ok(self.store.audit_tail(limit)?);
        }
        match &self.audit {
            Some(audit) => audit.tail(limit),
            None => Ok(Vec::new()),
        }
    }

    /// Sets a host's new latest report in memory (after its commit).
    pub fn set_latest(
        state: &mut FleetState,
        host: &mut Host,
        report: &HostReport,
        previous_image: &str,
    ) {
        if let Some(latest) = host.latest.take() {
            state
                .drift
                .remove(previous_image, &host.record.host_id, &latest.findings);
        }
        let keys = state.drift.keys_of(&report.image_id, &report.anomalies);
        state.drift.add(&report.image_id, &report.host_id, &keys);
        host.latest = Some(Latest::of(report, keys));
    }

    /// Adds an accept in memory (after its commit).
    pub fn accepted(&self, accept: Accept) {
        self.state().accepts.insert(accept);
    }

    /// Removes reports past the retention, host by host (never a host's latest).
    pub fn prune(&self) -> Result<u64, StoreError> {
        let cutoff = now_secs().saturating_sub(self.config.report_retention.as_secs());
        let hosts: Vec<(String, u64)> = self
            .state()
            .hosts
            .values()
            .map(|host| (host.record.host_id.clone(), host.record.last_seq))
            .collect();
        let mut removed = 0;
        for (host_id, last_seq) in hosts {
            removed += self.store.prune_reports(&host_id, cutoff, last_seq)?;
        }
        Ok(removed)
    }
}
