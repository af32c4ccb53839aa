//! `POST /reports`, decided in this order (REFERENCE §7): the report parses and
//! validates (400, naming the field), is not from the future (400), is of a known
//! image (422); its host has no other report in flight and is within its rate (429);
//! it is signed by the host's pinned key, or, for a host not enrolled, by the key it
//! offers, which is then pinned (403); its seq is above the host's last (else the very
//! same bytes are a retry, 200, and anything else a replay, 409, also after a
//! re-enrollment: a host's seqs rise for its whole life). Then it is committed
//! (group commit: durable before 201) and only then changes the state in memory.
//! Every 403 and 409 and every enrollment is audited.

use super::host::{gaps_after, Host};
use super::{now_ms, now_secs, Fleet};
use crate::audit::AuditRecord;
use crate::store::{FleetWrite, HostRecord, StoreError, StoredReport};
use bytes::Bytes;
use integrity_common::report::{timestamp_secs, HostReport};

/// How far above a host's last seq a report may jump (a spool drops at most its
/// bound at a time; this leaves room for many such losses).
pub const MAX_SEQ_JUMP: u64 = 1 << 20;

/// A report taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// Stored and durable (201); with the reports its agent's spool dropped and the
    /// seqs it showed missing (for the metrics).
    Stored {
        host_id: String,
        seq: u64,
        spool_dropped: u64,
        missing: u64,
    },
    /// The very same report again: a retry (200).
    Duplicate { host_id: String, seq: u64 },
}

/// A report refused.
#[derive(Debug, Clone)]
pub enum Refusal {
    Invalid(String),
    BadSignature(String),
    KeyMismatch,
    NoHostKey,
    Replay {
        last_seq: u64,
    },
    UnknownImage(String),
    RateLimited,
    Store(StoreError),
    /// Another replica wrote the host since this one looked (internal: the report is
    /// decided again).
    Conflict(String),
}

impl Refusal {
    /// The error code (and the metrics' outcome label).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Invalid(_) => "invalid_report",
            Refusal::BadSignature(_) => "bad_signature",
            Refusal::KeyMismatch => "key_mismatch",
            Refusal::NoHostKey => "no_host_key",
            Refusal::Replay { .. } => "replay",
            Refusal::UnknownImage(_) => "unknown_image",
            Refusal::RateLimited => "rate_limited",
            Refusal::Store(_) => "store_error",
            Refusal::Conflict(_) => "rate_limited",
        }
    }
}

/// Clears a host's in-flight mark however the request ends.
struct InFlight<'a> {
    fleet: &'a Fleet,
    host_id: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut state = self.fleet.state();
        state.enrolling.remove(&self.host_id);
        if let Some(host) = state.hosts.get_mut(&self.host_id) {
            host.in_flight = false;
        }
    }
}

fn header_text(value: &str, what: &str) -> Result<String, Refusal> {
    integrity_trust::from_header(value)
        .map_err(|_| Refusal::Invalid(format!("{what}: not base64 text")))
}

/// Times a report is decided again when another replica wrote its host meanwhile.
const CONFLICT_RETRIES: usize = 3;

impl Fleet {
    /// Admits a report (see the module doc). `image_known` says whether an image id has
    /// a stored baseline. When the store finds that another replica wrote the host
    /// since this one looked, the host is read again and the report decided again
    /// (a few times, then `429`).
    pub async fn admit(
        &self,
        body: Bytes,
        signature: Option<&str>,
        host_key: Option<&str>,
        image_known: impl Fn(&str) -> bool,
    ) -> Result<Admitted, Refusal> {
        for _ in 0..CONFLICT_RETRIES {
            match self
                .admit_once(body.clone(), signature, host_key, &image_known)
                .await
            {
                Err(Refusal::Conflict(host_id)) => {
                    self.refresh_host(&host_id).await.map_err(Refusal::Store)?
                }
                outcome => return outcome,
            }
        }
        Err(Refusal::RateLimited)
    }

    async fn admit_once(
        &self,
        body: Bytes,
        signature: Option<&str>,
        host_key: Option<&str>,
        image_known: &impl Fn(&str) -> bool,
    ) -> Result<Admitted, Refusal> {
        let report = HostReport::parse(&body, self.config.max_report_anomalies)
            .map_err(|error| Refusal::Invalid(error.to_string()))?;
        let now = now_secs();
        let skew = self.config.max_clock_skew.as_secs();
        if timestamp_secs(&report.finished) > now.saturating_add(skew) {
            return Err(Refusal::Invalid(format!(
                "finished: {} is more than {skew} s ahead of the service's clock",
                report.finished
            )));
        }
        if !image_known(&report.image_id) {
            return Err(Refusal::UnknownImage(report.image_id));
        }
        let signature = match signature {
            Some(value) => header_text(value, "X-Bulletproof-Signature")?,
            None => {
                return Err(Refusal::BadSignature(
                    "no X-Bulletproof-Signature header".into(),
                ))
            }
        };
        // The offered key is parsed only when it is needed (a host not enrolled, or a
        // signature the pinned key refuses): agents send it with every report.
        let offered = || -> Result<Option<integrity_trust::PublicKey>, Refusal> {
            match host_key {
                Some(value) => Ok(Some(
                    integrity_trust::parse_public_key(&header_text(
                        value,
                        "X-Bulletproof-Host-Key",
                    )?)
                    .map_err(|error| {
                        Refusal::Invalid(format!(
                            "X-Bulletproof-Host-Key: not a public key: {error}"
                        ))
                    })?,
                )),
                None => Ok(None),
            }
        };

        // The signature first, with the host's pinned key (or, for a host not enrolled,
        // the key it offers): nothing of the host is claimed or charged before, so
        // reports signed by anyone else cannot use up its rate or block it.
        let (pinned, pinned_text) = self
            .state()
            .hosts
            .get(&report.host_id)
            .map(|host| (host.key.clone(), host.record.public_key.clone()))
            .unwrap_or_default();
        let enrolling = pinned.is_none();
        let key = match &pinned {
            Some(pinned) => pinned.clone(),
            None => match offered()? {
                Some(offered) => offered,
                None => {
                    self.audit_refusal(&report, &Refusal::NoHostKey);
                    return Err(Refusal::NoHostKey);
                }
            },
        };
        if let Err(error) = integrity_trust::verify(&key, &body, &signature, false) {
            let by_offered = !enrolling
                && offered().ok().flatten().is_some_and(|offered| {
                    integrity_trust::verify(&offered, &body, &signature, false).is_ok()
                });
            let refusal = if by_offered {
                Refusal::KeyMismatch
            } else {
                Refusal::BadSignature(error.to_string())
            };
            self.audit_refusal(&report, &refusal);
            return Err(refusal);
        }

        // Claim the host (one report at a time), charge its rate, and read what we
        // need of it. Its key changed since (an admin re-opened enrollment, or another
        // report enrolled it): the client retries and is checked again.
        let previous = {
            let mut state = self.state();
            let burst = self.config.host_burst;
            match state.hosts.get_mut(&report.host_id) {
                Some(host) => {
                    if host.record.public_key != pinned_text
                        || host.in_flight
                        || !host.bucket.take(burst, now_ms())
                    {
                        return Err(Refusal::RateLimited);
                    }
                    host.in_flight = true;
                    Some(host.record.clone())
                }
                None => {
                    if pinned.is_some() || !state.enrolling.insert(report.host_id.clone()) {
                        return Err(Refusal::RateLimited);
                    }
                    None
                }
            }
        };
        let _claim = InFlight {
            fleet: self,
            host_id: report.host_id.clone(),
        };

        // Seqs go on rising across a re-enrollment (its key removed by an admin): the
        // history of a host is one sequence, and a stored report is never replaced. An
        // agent whose state was lost learns the last seq from the 409 and goes on
        // above it.
        let last_seq = previous.as_ref().map_or(0, |record| record.last_seq);
        if report.seq > last_seq.saturating_add(MAX_SEQ_JUMP) {
            // A jump no lost spool explains: it would make the host's number space
            // end (u64::MAX) or push its history out of the per-host cap at once.
            return Err(Refusal::Invalid(format!(
                "seq: {} is more than {MAX_SEQ_JUMP} above this host's last, {last_seq}",
                report.seq
            )));
        }
        if report.seq <= last_seq {
            let store = self.store().clone();
            let (host_id, seq) = (report.host_id.clone(), report.seq);
            let stored = tokio::task::spawn_blocking(move || store.report(&host_id, seq))
                .await
                .map_err(|error| Refusal::Store(StoreError(error.to_string())))?
                .map_err(Refusal::Store)?;
            if stored.is_some_and(|stored| stored.bytes == body) {
                return Ok(Admitted::Duplicate {
                    host_id: report.host_id,
                    seq: report.seq,
                });
            }
            let refusal = Refusal::Replay { last_seq };
            self.audit_refusal(&report, &refusal);
            return Err(refusal);
        }

        let seen = integrity_common::manifest::now_timestamp();
        let (gaps, missing) = match &previous {
            Some(record) => gaps_after(record.gaps.clone(), record.last_seq, report.seq),
            None => gaps_after(Vec::new(), 0, report.seq),
        };
        let record = HostRecord {
            host_id: report.host_id.clone(),
            hostname: report.hostname.clone(),
            image_id: report.image_id.clone(),
            public_key: Some(
                previous
                    .as_ref()
                    .and_then(|record| record.public_key.clone())
                    .filter(|_| !enrolling)
                    .unwrap_or_else(|| key.to_base64()),
            ),
            enrolled: match &previous {
                Some(record) if !enrolling => record.enrolled.clone(),
                _ => seen.clone(),
            },
            first_seen: previous
                .as_ref()
                .map_or_else(|| seen.clone(), |record| record.first_seen.clone()),
            last_seen: seen,
            last_seq: report.seq,
            gaps,
            interval_secs: report.interval_secs,
            spool_dropped: previous
                .as_ref()
                .map_or(0, |record| record.spool_dropped)
                .saturating_add(report.spool_dropped),
        };
        let cap = self.config.max_reports_per_host.max(1);
        let mut audit = Vec::new();
        if enrolling {
            audit.push(AuditRecord::new(
                "enroll",
                format!("host {} enrolled", report.host_id),
                serde_json::json!({
                    "host_id": report.host_id,
                    "hostname": report.hostname,
                    "image_id": report.image_id,
                    "key_fingerprint": integrity_trust::key_id(&key),
                    "seq": report.seq,
                    "again": previous.is_some(),
                }),
            ));
        }
        let write = FleetWrite::Report {
            host: record.clone(),
            seq: report.seq,
            report: StoredReport {
                received: now,
                signature,
                bytes: body,
            },
            expect: crate::store::Expect::of(previous.as_ref()),
            // The cap counts in seqs; after a jump it never takes more of the earlier
            // reports than the cap would have anyway.
            prune_through: Some(
                report
                    .seq
                    .saturating_sub(cap)
                    .min(last_seq.saturating_add(1).saturating_sub(cap)),
            )
            .filter(|through| *through > 0),
        };
        if !self
            .writer
            .commit(vec![write], audit)
            .await
            .map_err(Refusal::Store)?
        {
            return Err(Refusal::Conflict(report.host_id));
        }

        let mut state = self.state();
        let previous_image = previous
            .as_ref()
            .map_or_else(|| report.image_id.clone(), |record| record.image_id.clone());
        let mut host = state
            .hosts
            .remove(&report.host_id)
            .unwrap_or_else(|| Host::new(record.clone(), None, self.config.host_burst, now_ms()));
        host.key = Some(key);
        host.last_seen_secs = now;
        host.record = record;
        super::Fleet::set_latest(&mut state, &mut host, &report, &previous_image);
        state.hosts.insert(report.host_id.clone(), host);
        drop(state);
        Ok(Admitted::Stored {
            host_id: report.host_id,
            seq: report.seq,
            spool_dropped: report.spool_dropped,
            missing,
        })
    }

    fn audit_refusal(&self, report: &HostReport, refusal: &Refusal) {
        let why = match refusal {
            Refusal::KeyMismatch => "signed by another key than the host's pinned one".to_owned(),
            Refusal::BadSignature(detail) => format!("signature does not verify: {detail}"),
            Refusal::Replay { last_seq } => {
                format!(
                    "seq {} is not above the host's last, {last_seq}",
                    report.seq
                )
            }
            Refusal::NoHostKey => "the host is not enrolled and offered no key".to_owned(),
            _ => return,
        };
        // A flood of refusals is recorded one by one up to a rate, then counted: the
        // log stays bounded, and the count says what was not itemised.
        let mut records = Vec::new();
        {
            let mut window = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            let second = now_secs();
            if window.second != second {
                if window.suppressed > 0 {
                    records.push(AuditRecord::new(
                        "report_refused",
                        format!(
                            "{} more refused reports in second {} not recorded one by one (over {REFUSALS_PER_SECOND}/s)",
                            window.suppressed, window.second
                        ),
                        serde_json::json!({ "suppressed": window.suppressed, "second": window.second }),
                    ));
                }
                *window = RefusalWindow {
                    second,
                    ..RefusalWindow::default()
                };
            }
            if window.recorded >= REFUSALS_PER_SECOND {
                window.suppressed += 1;
            } else {
                window.recorded += 1;
            }
            if window.suppressed > 0 {
                if !records.is_empty() {
                    self.writer.audit(records);
                }
                return;
            }
        }
        records.push(AuditRecord::new(
            "report_refused",
            format!(
                "report {} of host {} refused: {why}",
                report.seq, report.host_id
            ),
            serde_json::json!({
                "host_id": report.host_id,
                "seq": report.seq,
                "image_id": report.image_id,
                "reason": refusal.code(),
            }),
        ));
        self.writer.audit(records);
    }
}

/// Refused reports itemised in the audit log per second, at most.
pub const REFUSALS_PER_SECOND: u64 = 100;

/// The refusals of the current second.
#[derive(Debug, Default)]
pub struct RefusalWindow {
    second: u64,
    recorded: u64,
    suppressed: u64,
}
