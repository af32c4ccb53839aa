//! The fleet in PostgreSQL: tables `hosts`, `reports`, `accepts` and `daily`
//! (`migrations/0001_initial.sql`), with the embedded store's semantics exactly
//! (`sled_fleet.rs`).

use super::{clamp_i64, to_i64, to_u64, PgStore};
use crate::store::{
    Accept, DailyRecord, Expect, FleetWrite, HostRecord, ReportRow, StoreError, StoredReport,
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
/// A new host: nothing is written if another replica stored it first.
const NEW_HOST: &str = "INSERT INTO hosts (host_id, record, replica) VALUES ($1, $2, $3)
     ON CONFLICT (host_id) DO NOTHING";
/// A known host, if it is still as the writer saw it (its last seq and pinned key):
/// of two replicas taking reports of one host, one wins and the other looks again.
/// `FOR UPDATE`-free: the UPDATE's row lock makes the second writer wait for the
/// first's commit and then re-check its condition on the new row.
const UPDATE_HOST: &str = "UPDATE hosts SET record = $2, replica = $5, xid = pg_current_xact_id()
     WHERE host_id = $1 AND (record->>'last_seq')::bigint = $3
       AND (record->>'public_key') IS NOT DISTINCT FROM $4";
const PUT_ACCEPT: &str = "INSERT INTO accepts (id, record) VALUES ($1, $2)
     ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record";
const DELETE_ACCEPT: &str = "DELETE FROM accepts WHERE id = $1";
const ACCEPTS_CHANGED: &str = "UPDATE accepts_changed SET xid = pg_current_xact_id()";
const PUT_DAILY: &str = "INSERT INTO daily (image_id, day, hosts, drifted, failing, stale)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (image_id, day) DO UPDATE SET hosts = EXCLUDED.hosts,
         drifted = EXCLUDED.drifted, failing = EXCLUDED.failing, stale = EXCLUDED.stale";

pub(super) fn read_accepts(rows: &[::postgres::Row]) -> Result<Vec<Accept>, StoreError> {
    rows.iter()
        .map(|row| {
            row.try_get::<_, Json<Accept>>(0)
                .map(|Json(accept)| accept)
                .map_err(|error| StoreError(format!("a stored accept is damaged: {error}")))
        })
        .collect()
}

pub(super) fn read_host(row: &::postgres::Row) -> Result<HostRecord, StoreError> {
    row.try_get::<_, Json<HostRecord>>(0)
        .map(|Json(host)| host)
        .map_err(|error| StoreError(format!("a stored host is damaged: {error}")))
}

fn row_report(row: &::postgres::Row) -> Result<ReportRow, StoreError> {
    report_at(row, 0)
}

/// A report from the four columns (seq, received, signature, bytes) from `at` on.
fn report_at(row: &::postgres::Row, at: usize) -> Result<ReportRow, StoreError> {
    let seq: i64 = row.try_get(at)?;
    let received: i64 = row.try_get(at + 1)?;
    let signature = String::from_utf8(row.try_get(at + 2)?)
        .map_err(|_| StoreError("a stored report's signature is not UTF-8".into()))?;
    let bytes: Vec<u8> = row.try_get(at + 3)?;
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
    pub(super) fn fleet_apply(&self, writes: &[FleetWrite]) -> Result<Vec<bool>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        self.pool.with(|conn| {
            let prune = conn.statement(PRUNE_THROUGH)?;
            let put_report = conn.statement(PUT_REPORT)?;
            let new_host = conn.statement(NEW_HOST)?;
            let update_host = conn.statement(UPDATE_HOST)?;
            let put_accept = conn.statement(PUT_ACCEPT)?;
            let delete_accept = conn.statement(DELETE_ACCEPT)?;
            let accepts_changed = conn.statement(ACCEPTS_CHANGED)?;
            let put_daily = conn.statement(PUT_DAILY)?;
            let mut transaction = conn.client.transaction()?;
            let mut accepts = false;
            // The hosts first, in order (their expectations decide; a later write of
            // the batch sees an earlier one's row), then the per-host caps, then the
            // reports, as the embedded store does: a report of the batch is never
            // removed by a cap of the same batch.
            let mut applied = Vec::with_capacity(writes.len());
            for write in writes {
                applied.push(match write {
                    FleetWrite::Report { host, expect, .. } | FleetWrite::Host { host, expect } => {
                        check_host(&host.host_id)?;
                        let rows = match expect {
                            Expect::Absent => transaction
                                .execute(&new_host, &[&host.host_id, &Json(host), &self.replica])?,
                            Expect::Record {
                                last_seq,
                                public_key,
                            } => transaction.execute(
                                &update_host,
                                &[
                                    &host.host_id,
                                    &Json(host),
                                    &to_i64(*last_seq, "last seq")?,
                                    public_key,
                                    &self.replica,
                                ],
                            )?,
                        };
                        rows == 1
                    }
                    _ => true,
                });
            }
            for (write, _) in writes.iter().zip(&applied).filter(|(_, done)| **done) {
                if let FleetWrite::Report {
                    host,
                    prune_through: Some(through),
                    ..
                } = write
                {
                    transaction.execute(&prune, &[&host.host_id, &clamp_i64(*through)])?;
                }
            }
            for (write, _) in writes.iter().zip(&applied).filter(|(_, done)| **done) {
                match write {
                    FleetWrite::Report {
                        host, seq, report, ..
                    } => {
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
                    }
                    FleetWrite::Host { .. } => {}
                    FleetWrite::PutAccept(accept) => {
                        transaction.execute(&put_accept, &[&accept.id, &Json(accept)])?;
                        accepts = true;
                    }
                    FleetWrite::DeleteAccept(id) => {
                        transaction.execute(&delete_accept, &[id])?;
                        accepts = true;
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
            if accepts {
                transaction.execute(&accepts_changed, &[])?;
            }
            transaction.commit()?;
            Ok(applied)
        })
    }

    pub(super) fn fleet_hosts_with_latest(
        &self,
    ) -> Result<Vec<(HostRecord, Option<StoredReport>)>, StoreError> {
        self.pool.with(|conn| {
            // One pass instead of a query per host: a replica with 50,000 hosts started
            // in 14.7 s with one, a fraction of it with this.
            let select = conn.statement(
                "SELECT h.record, r.seq, r.received, r.signature, r.bytes FROM hosts h
                 LEFT JOIN reports r ON r.host_id = h.host_id
                     AND r.seq = (h.record->>'last_seq')::bigint
                 ORDER BY h.host_id",
            )?;
            let mut hosts = Vec::new();
            for row in conn.client.query(&select, &[])? {
                let record = read_host(&row)?;
                let latest = match row.try_get::<_, Option<i64>>(1)? {
                    Some(_) => Some(report_at(&row, 1)?.1),
                    None => None,
                };
                hosts.push((record, latest));
            }
            Ok(hosts)
        })
    }

    pub(super) fn fleet_host(&self, host_id: &str) -> Result<Option<HostRecord>, StoreError> {
        check_host(host_id)?;
        self.pool.with(|conn| {
            let select = conn.statement("SELECT record FROM hosts WHERE host_id = $1")?;
            conn.client
                .query_opt(&select, &[&host_id])?
                .map(|row| read_host(&row))
                .transpose()
        })
    }

    pub(super) fn fleet_hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        self.pool.with(|conn| {
            let select = conn.statement("SELECT record FROM hosts ORDER BY host_id")?;
            conn.client
                .query(&select, &[])?
                .iter()
                .map(read_host)
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
            read_accepts(&conn.client.query(&select, &[])?)
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
