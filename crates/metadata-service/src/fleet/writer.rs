//! Group commit: one thread owns the fleet's writes. Handlers hand it their writes and
//! wait; it takes every job that arrived while the previous commit ran, makes them
//! durable with one [`Store::apply`] (one disk flush), appends their audit records
//! with one `append_many` (one more), and answers them all. Under load a flush is
//! shared by hundreds of reports; alone, a report waits for one flush, as before.

use crate::audit::{Audit, AuditRecord};
use crate::store::{FleetWrite, Store, StoreError};
use std::sync::mpsc;
use std::sync::Arc;

/// Most jobs committed together.
const MAX_JOBS: usize = 2048;

struct Job {
    writes: Vec<FleetWrite>,
    audit: Vec<AuditRecord>,
    done: Option<tokio::sync::oneshot::Sender<Result<bool, StoreError>>>,
}

/// The handle handlers hold.
pub struct Writer {
    jobs: mpsc::SyncSender<Job>,
}

impl Writer {
    /// Starts the writer thread. It ends when the last handle is dropped.
    /// `shared`: the store is shared with other replicas, which list this one's audit
    /// records too.
    pub fn start(
        store: Arc<dyn Store>,
        audit: Option<Arc<Audit>>,
        shared: bool,
    ) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(MAX_JOBS * 4);
        std::thread::Builder::new()
            .name("fleet-writer".into())
            .spawn(move || run(&*store, audit.as_deref(), shared, &queue))?;
        Ok(Writer { jobs })
    }

    /// Makes `writes` durable and appends `audit`; returns once both are done.
    /// `Ok(false)`: a write's expectation of its host did not hold (another replica
    /// wrote it since): nothing of this job was written, its audit neither.
    pub async fn commit(
        &self,
        writes: Vec<FleetWrite>,
        audit: Vec<AuditRecord>,
    ) -> Result<bool, StoreError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            writes,
            audit,
            done: Some(done),
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(job)) => {
                // The queue is bounded: wait for room off the runtime.
                let sender = self.jobs.clone();
                tokio::task::spawn_blocking(move || sender.send(job))
                    .await
                    .map_err(|_| StoreError("the fleet writer is gone".into()))?
                    .map_err(|_| StoreError("the fleet writer stopped".into()))?;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => {
                return Err(StoreError("the fleet writer stopped".into()))
            }
        }
        answer
            .await
            .map_err(|_| StoreError("the fleet writer stopped".into()))?
    }

    /// Appends audit records without waiting (refused reports: nothing to commit).
    pub fn audit(&self, audit: Vec<AuditRecord>) {
        let job = Job {
            writes: Vec::new(),
            audit,
            done: None,
        };
        if self.jobs.try_send(job).is_err() {
            tracing::error!("audit record dropped: the fleet writer's queue is full");
        }
    }
}

fn run(store: &dyn Store, audit: Option<&Audit>, shared: bool, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_JOBS {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let counts: Vec<usize> = jobs.iter().map(|job| job.writes.len()).collect();
        let writes: Vec<FleetWrite> = jobs
            .iter_mut()
            .flat_map(|job| std::mem::take(&mut job.writes))
            .collect();
        let committed = if writes.is_empty() {
            Ok(Vec::new())
        } else {
            store.apply(&writes)
        };
        // Each job's outcome: all its writes applied (a job is one report, or one
        // admin action), or not; or the commit's error.
        let mut outcomes: Vec<Result<bool, StoreError>> = Vec::with_capacity(jobs.len());
        let mut at = 0;
        for count in &counts {
            outcomes.push(match &committed {
                Ok(applied) => Ok(applied
                    .get(at..at + count)
                    .is_some_and(|applied| applied.iter().all(|done| *done))),
                Err(error) => Err(error.clone()),
            });
            at += count;
        }
        if let Some(audit) = audit {
            // Records of jobs whose writes were not written are not either: nothing
            // happened. Refusals (no writes) are always recorded.
            let records: Vec<&AuditRecord> = jobs
                .iter()
                .zip(counts.iter().zip(&outcomes))
                .filter(|(_, (count, outcome))| **count == 0 || matches!(outcome, Ok(true)))
                .flat_map(|(job, _)| job.audit.iter())
                .collect();
            let written = audit.append(&records);
            if shared && !written.is_empty() {
                if let Err(error) = store.append_audit(&written) {
                    // The records are in this replica's own chain; only the listing
                    // other replicas show lacks them.
                    tracing::error!(
                        "{} audit record(s) not added to the replicas' listing: {error}",
                        written.len()
                    );
                }
            }
        }
        for (job, outcome) in jobs.into_iter().zip(outcomes) {
            if let Some(done) = job.done {
                let _ = done.send(outcome);
            }
        }
    }
}
