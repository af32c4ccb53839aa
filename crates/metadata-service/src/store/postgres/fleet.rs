//! The fleet in PostgreSQL: tables `hosts`, `reports`, `accepts` and `daily`
//! (`migrations/0001_initial.sql`), with the embedded store's semantics exactly
//! (`sled_fleet.rs`).

use super::{clamp_i64, to_i64, to_u64, PgStore};
use crate::store::{
    Accept, DailyRecord, FleetWrite, HostRecord, ReportRow, StoreError, StoredReport,
};
use ::postgres::types::Json;
use bytes::Bytes;

/// Host ids are 32 hex digits, as the embedded store requires of them (its report keys
/// are their 16 bytes): the same ids are refused by both.
fn check_host(host_id: &str) -> Result<(), StoreError> {
    if host_id.len() == 32 && host_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(StoreError(format!(
            "host id {host_id:?} is not 32 hex digits"
        )))
    }
}

const PRUNE_THROUGH: &str = "DELETE FROM reports WHERE host_id = $1 AND seq <= $2";
const PUT_REPORT: &str = "INSERT INTO reports (host_id, seq, received, signature, bytes)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (host_id, seq) DO UPDATE SET received = EXCLUDED.received,
         signature = EXCLUDED.signature, bytes = EXCLUDED.bytes";
const PUT_HOST: &str = "INSERT INTO hosts (host_id, record) VALUES ($1, $2)
     ON CONFLICT (host_id) DO UPDATE SET record = EXCLUDED.record";
const PUT_ACCEPT: &str = "INSERT INTO accepts (id, record) VALUES ($1, $2)
     ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record";
const DELETE_ACCEPT: &str = "DELETE FROM accepts WHERE id = $1";
const PUT_DAILY: &str = "INSERT INTO daily (image_id, day, hosts, drifted, failing, stale)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (image_id, day) DO UPDATE SET hosts = EXCLUDED.hosts,
         drifted = EXCLUDED.drifted, failing = EXCLUDED.failing, stale = EXCLUDED.stale";

fn row_report(row: &::postgres::Row) -> Result<ReportRow, StoreError> {
    let seq: i64 = row.try_get(0)?;
    let received: i64 = row.try_get(1)?;
    let signature = String::from_utf8(row.try_get(2)?)
        .map_err(|_| StoreError("a stored report's signature is not UTF-8".into()))?;
    let bytes: Vec<u8> = row.try_get(3)?;
    Ok((
        to_u64(seq, "report seq")?,
        StoredReport {
            received: to_u64(received, "report time")?,
            signature,
            bytes: Bytes::from(bytes),
        },
    ))
}

impl PgStore {
    pub(super) fn fleet_apply(&self, writes: &[FleetWrite]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        self.pool.with(|conn| {
            let prune = conn.statement(PRUNE_THROUGH)?;
            let put_report = conn.statement(PUT_REPORT)?;
            let put_host = conn.statement(PUT_HOST)?;
            let put_accept = conn.statement(PUT_ACCEPT)?;
            let delete_accept = conn.statement(DELETE_ACCEPT)?;
            let put_daily = conn.statement(PUT_DAILY)?;
            let mut transaction = conn.client.transaction()?;
            // The per-host caps first, as the embedded store does (its removals are found
            // before the batch and applied before its inserts): a report of this batch is
            // never removed by a cap of the same batch.
            for write in writes {
                if let FleetWrite::Report {
                    host,
                    prune_through: Some(through),
                    ..
                } = write
                {
                    check_host(&host.host_id)?;
                    transaction.execute(&prune, &[&host.host_id, &clamp_i64(*through)])?;
                }
            }
            for write in writes {
                match write {
                    FleetWrite::Report {
                        host, seq, report, ..
                    } => {
                        check_host(&host.host_id)?;
                        transaction.execute(
                            &put_report,
                            &[
                                &host.host_id,
                                &to_i64(*seq, "report seq")?,
                                &to_i64(report.received, "report time")?,
                                &report.signature.as_bytes(),
                                &report.bytes.as_ref(),
                            ],
                        )?;
                        transaction.execute(&put_host, &[&host.host_id, &Json(host)])?;
                    }
                    FleetWrite::Host(host) => {
                        transaction.execute(&put_host, &[&host.host_id, &Json(host)])?;
                    }
                    FleetWrite::PutAccept(accept) => {
                        transaction.execute(&put_accept, &[&accept.id, &Json(accept)])?;
                    }
                    FleetWrite::DeleteAccept(id) => {
                        transaction.execute(&delete_accept, &[id])?;
                    }
                    FleetWrite::Daily(record) => {
                        transaction.execute(
                            &put_daily,
                            &[
                                &record.image_id,
                                &to_i64(record.day, "day")?,
                                &to_i64(record.hosts, "count")?,
                                &to_i64(record.drifted, "count")?,
                                &to_i64(record.failing, "count")?,
                                &to_i64(record.stale, "count")?,
                            ],
                        )?;
                    }
                }
            }
            transaction.commit()?;
            Ok(())
        })
    }

    pub(super) fn fleet_hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        self.pool.with(|conn| {
            let select = conn.statement("SELECT record FROM hosts ORDER BY host_id")?;
            conn.client
                .query(&select, &[])?
                .iter()
                .map(|row| {
                    row.try_get::<_, Json<HostRecord>>(0)
                        .map(|Json(host)| host)
                        .map_err(|error| StoreError(format!("a stored host is damaged: {error}")))
                })
                .collect()
        })
    }

    pub(super) fn fleet_report(
        &self,
        host_id: &str,
        seq: u64,
    ) -> Result<Option<StoredReport>, StoreError> {
        check_host(host_id)?;
        let Ok(seq) = i64::try_from(seq) else {
            return Ok(None);
        };
        self.pool.with(|conn| {
            let select = conn.statement(
                "SELECT seq, received, signature, bytes FROM reports
                 WHERE host_id = $1 AND seq = $2",
            )?;
            match conn.client.query_opt(&select, &[&host_id, &seq])? {
                Some(row) => Ok(Some(row_report(&row)?.1)),
                None => Ok(None),
            }
        })
    }

    pub(super) fn fleet_reports(
        &self,
        host_id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ReportRow>, StoreError> {
        check_host(host_id)?;
        let before = before.map_or(i64::MAX, clamp_i64);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.pool.with(|conn| {
            let select = conn.statement(
                "SELECT seq, received, signature, bytes FROM reports
                 WHERE host_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
            )?;
            conn.client
                .query(&select, &[&host_id, &before, &limit])?
                .iter()
                .map(row_report)
                .collect()
        })
    }

    pub(super) fn fleet_prune(
        &self,
        host_id: &str,
        received_before: u64,
        keep: u64,
    ) -> Result<u64, StoreError> {
        check_host(host_id)?;
        let received_before = clamp_i64(received_before);
        // A seq past bigint is never stored: nothing to keep.
        let keep = i64::try_from(keep).unwrap_or(-1);
        self.pool.with(|conn| {
            // As the embedded store: the oldest reports in seq order up to the first one
            // received at or after the limit (reports arrive in seq order, so the rest are
            // newer), except `keep`.
            let delete = conn.statement(
                "DELETE FROM reports WHERE host_id = $1 AND received < $2 AND seq <> $3
                 AND seq < coalesce(
                     (SELECT min(seq) FROM reports WHERE host_id = $1 AND received >= $2),
                     9223372036854775807)",
            )?;
            Ok(conn
                .client
                .execute(&delete, &[&host_id, &received_before, &keep])?)
        })
    }

    pub(super) fn fleet_accepts(&self) -> Result<Vec<Accept>, StoreError> {
        self.pool.with(|conn| {
            let select = conn.statement("SELECT record FROM accepts ORDER BY id")?;
            conn.client
                .query(&select, &[])?
                .iter()
                .map(|row| {
                    row.try_get::<_, Json<Accept>>(0)
                        .map(|Json(accept)| accept)
                        .map_err(|error| StoreError(format!("a stored accept is damaged: {error}")))
                })
                .collect()
        })
    }

    pub(super) fn fleet_daily(&self, since_day: u64) -> Result<Vec<DailyRecord>, StoreError> {
        self.pool.with(|conn| {
            let select = conn.statement(
                "SELECT image_id, day, hosts, drifted, failing, stale FROM daily WHERE day >= $1",
            )?;
            let mut records = Vec::new();
            for row in conn.client.query(&select, &[&clamp_i64(since_day)])? {
                let count = |index: usize| -> Result<u64, StoreError> {
                    to_u64(row.try_get::<_, i64>(index)?, "daily count")
                };
                records.push(DailyRecord {
                    image_id: row.try_get(0)?,
                    day: count(1)?,
                    hosts: count(2)?,
                    drifted: count(3)?,
                    failing: count(4)?,
                    stale: count(5)?,
                });
            }
            Ok(records)
        })
    }
}
