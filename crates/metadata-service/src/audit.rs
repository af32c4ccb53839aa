//! The audit trail (REFERENCE §7): every admin action, every enrollment and every
//! refused report is a record in a tamper-evident log, the same format and code as a
//! bulletproof root's security log (`bulletproof-seclog`), kept under the data
//! directory: `DATA/audit/` is laid out as such a root, so
//! `bulletproofctl log verify --root DATA/audit DATA/audit/logs/security/metadata-service.jsonl`
//! checks it with the initial key in `DATA/audit/install/logkeys/initial.key` (copy it
//! off the host: whoever holds it can forge the chain from the start).

use anyhow::Context;
use bulletproof_seclog::SecLog;
use std::path::{Path, PathBuf};

/// The log's component name.
pub const COMPONENT: &str = "metadata-service";

/// One record to append.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub event: &'static str,
    pub msg: String,
    pub data: serde_json::Value,
}

impl AuditRecord {
    pub fn new(event: &'static str, msg: impl Into<String>, data: serde_json::Value) -> Self {
        AuditRecord {
            event,
            msg: msg.into(),
            data,
        }
    }
}

pub struct Audit {
    log: SecLog,
    metrics_failed: std::sync::atomic::AtomicU64,
}

impl Audit {
    /// Opens the audit log under `data/audit`, creating its keys on first use.
    pub fn open(data: &Path) -> anyhow::Result<Audit> {
        use std::os::unix::fs::PermissionsExt;
        let root = data.join("audit");
        let log = SecLog::new(&root);
        for dir in [log.install_dir(), root.join("logs/security")] {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::set_permissions(log.install_dir(), std::fs::Permissions::from_mode(0o700))?;
        if !log.host_key().exists() {
            integrity_trust::keygen(&log.host_key(), &log.host_public_key(), None)
                .map_err(|error| anyhow::anyhow!("audit log checkpoint key: {error}"))?;
        }
        log.init_keys(None, &[COMPONENT])
            .context("the audit log's keys")?;
        Ok(Audit {
            log,
            metrics_failed: Default::default(),
        })
    }

    /// The log file.
    pub fn path(&self) -> PathBuf {
        self.log.jsonl_path(COMPONENT)
    }

    /// Appends records (in batches of the log's maximum). A failure is logged and
    /// counted, never hidden. Returns the records written, each with its seq in the
    /// chain (for the listing replicas share, `Store::append_audit`).
    pub fn append(&self, records: &[&AuditRecord]) -> Vec<(u64, serde_json::Value)> {
        let mut written = Vec::new();
        for chunk in records.chunks(bulletproof_seclog::MAX_BATCH) {
            let batch: Vec<(&str, &str, serde_json::Value)> = chunk
                .iter()
                .map(|record| (record.event, record.msg.as_str(), record.data.clone()))
                .collect();
            match self.log.append_many(COMPONENT, &batch) {
                Ok(Some(last)) => {
                    let ts = integrity_common::manifest::now_timestamp();
                    let first = last + 1 - chunk.len() as u64;
                    for (seq, record) in (first..).zip(chunk) {
                        written.push((
                            seq,
                            serde_json::json!({
                                "seq": seq,
                                "ts": ts,
                                "component": COMPONENT,
                                "event": record.event,
                                "msg": record.msg,
                                "data": record.data,
                            }),
                        ));
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    self.metrics_failed
                        .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    tracing::error!("{} audit record(s) not written: {error:#}", chunk.len());
                }
            }
        }
        written
    }

    /// Records that could not be written since start.
    pub fn failed(&self) -> u64 {
        self.metrics_failed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The newest `limit` records (parsed JSON), newest first.
    pub fn tail(&self, limit: usize) -> anyhow::Result<Vec<serde_json::Value>> {
        use std::io::BufRead;
        let file = match std::fs::File::open(self.path()) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(error.into()),
        };
        let mut ring = std::collections::VecDeque::with_capacity(limit.min(4096));
        for line in std::io::BufReader::new(file).lines() {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line?) else {
                continue;
            };
            if ring.len() == limit {
                ring.pop_front();
            }
            if limit > 0 {
                ring.push_back(value);
            }
        }
        Ok(ring.into_iter().rev().collect())
    }

    /// Checks the whole log as `bulletproofctl log verify` does, with the initial key
    /// kept on this host (the pages show the result; a copy kept elsewhere proves more).
    pub fn verify(&self) -> anyhow::Result<bulletproof_seclog::Verdict> {
        let path = self.path();
        if !path.exists() {
            anyhow::bail!("no record yet");
        }
        bulletproof_seclog::verify(
            &[path],
            &bulletproof_seclog::VerifyOptions {
                master: bulletproof_seclog::read_master(&self.log.master_key_path())?,
                host_key: integrity_trust::load_public_key(&self.log.host_public_key())
                    .map_err(|error| error.to_string()),
                max_age_secs: None,
                require_checkpoint: false,
            },
        )
    }
}
