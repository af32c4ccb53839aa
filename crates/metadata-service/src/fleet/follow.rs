//! Replicas over one shared store (PostgreSQL): each service process keeps the
//! fleet's state in memory, so it follows what the others write. Every second it asks
//! the store what changed since its cursor ([`Store::changes`]) and brings its memory
//! up to date: a host another replica took a report of (its record and latest report,
//! so status and drift groups follow), a baseline stored through another replica, the
//! accepts. And when one of its own writes finds the host changed under it (the
//! write's [`crate::store::Expect`] did not hold), it looks at that host again at once
//! ([`Fleet::refresh`]) before deciding anew.
//!
//! A view of one replica is therefore at most about a second behind another's writes;
//! the decisions that must not be wrong (a report's seq against the host's last, the
//! pinned key) are checked by the store inside the write itself.

use super::drift::Accepts;
use super::host::Host;
use super::{now_ms, Fleet};
use crate::store::{Accept, HostRecord, Store, StoreError};
use integrity_common::report::{timestamp_secs, HostReport};
use std::sync::Arc;
use std::time::Duration;

/// How often a replica asks the store what the others wrote.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// A host as stored now, with its latest report.
type Fetched = (HostRecord, Option<HostReport>);

/// Reads the latest report of each of `records`.
fn fetch(store: &dyn Store, records: Vec<HostRecord>) -> Result<Vec<Fetched>, StoreError> {
    records
        .into_iter()
        .map(|record| {
            let report = store
                .report(&record.host_id, record.last_seq)?
                .and_then(|stored| HostReport::parse(&stored.bytes, usize::MAX).ok());
            Ok((record, report))
        })
        .collect()
}

impl Fleet {
    /// Brings the hosts of `records` (as stored now) into memory, each with its latest
    /// report read from the store. Blocking (store reads).
    pub fn refresh(&self, records: Vec<HostRecord>) -> Result<(), StoreError> {
        let wanted = self.wanted(records);
        if !wanted.is_empty() {
            self.install(fetch(&**self.store(), wanted)?);
        }
        Ok(())
    }

    /// Looks at one host again (a write of this process found it changed).
    pub async fn refresh_host(&self, host_id: &str) -> Result<(), StoreError> {
        let store = self.store().clone();
        let id = host_id.to_owned();
        let fetched = tokio::task::spawn_blocking(move || {
            let record = store.host(&id)?;
            fetch(&*store, record.into_iter().collect())
        })
        .await
        .map_err(|error| StoreError(error.to_string()))??;
        self.install(fetched);
        Ok(())
    }

    /// The records memory does not have yet: hosts it has as new are left alone, and
    /// so are hosts a report of this process is being written for (that write
    /// decides, and looks again if it finds the host changed).
    fn wanted(&self, records: Vec<HostRecord>) -> Vec<HostRecord> {
        let state = self.state();
        records
            .into_iter()
            .filter(|record| match state.hosts.get(&record.host_id) {
                Some(host) => {
                    !host.in_flight
                        && (host.record.last_seq < record.last_seq
                            || (host.record.last_seq == record.last_seq
                                && host.record.public_key != record.public_key))
                }
                None => true,
            })
            .collect()
    }

    fn install(&self, fetched: Vec<Fetched>) {
        let mut state = self.state();
        for (record, report) in fetched {
            let mut host = match state.hosts.remove(&record.host_id) {
                Some(host) if host.in_flight || host.record.last_seq > record.last_seq => {
                    // Changed while the report was read: what is in memory stays.
                    state.hosts.insert(record.host_id.clone(), host);
                    continue;
                }
                Some(host) => host,
                None => Host::new(record.clone(), None, self.config.host_burst, now_ms()),
            };
            let previous_image = host.record.image_id.clone();
            host.key = record
                .public_key
                .as_deref()
                .and_then(|key| integrity_trust::parse_public_key(key).ok());
            host.last_seen_secs = timestamp_secs(&record.last_seen);
            host.record = record;
            match &report {
                Some(report) => Fleet::set_latest(&mut state, &mut host, report, &previous_image),
                None => {
                    if let Some(latest) = host.latest.take() {
                        state
                            .drift
                            .remove(&previous_image, &host.record.host_id, &latest.findings);
                    }
                }
            }
            state.hosts.insert(host.record.host_id.clone(), host);
        }
    }

    /// Every accept, as stored now (another replica added or removed one).
    pub fn replace_accepts(&self, accepts: Vec<Accept>) {
        let mut index = Accepts::default();
        for accept in accepts {
            index.insert(accept);
        }
        self.state().accepts = index;
    }
}

/// Follows the other replicas' writes (see the module documentation) for as long as
/// the service runs; nothing to do on a store only this process writes.
pub async fn follower(state: Arc<crate::app::AppState>) {
    let Some(mut cursor) = state.fleet.follow_from else {
        return;
    };
    let mut ticks = tokio::time::interval(FOLLOW_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        let worker = state.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let store: &Arc<dyn Store> = worker.fleet.store();
            let changes = store.changes(cursor)?;
            worker.fleet.refresh(changes.hosts)?;
            worker.learn_baselines(changes.baselines);
            if let Some(accepts) = changes.accepts {
                worker.fleet.replace_accepts(accepts);
            }
            Ok::<u64, StoreError>(changes.cursor)
        })
        .await;
        match outcome {
            Ok(Ok(next)) => {
                if failing {
                    tracing::info!("following the other replicas again");
                    failing = false;
                }
                cursor = next;
            }
            Ok(Err(error)) => {
                if !failing {
                    tracing::warn!("cannot follow the other replicas' writes: {error}");
                    failing = true;
                }
            }
            Err(error) => tracing::error!("following the other replicas: {error}"),
        }
    }
}
