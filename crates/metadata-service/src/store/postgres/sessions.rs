//! What replicas share besides the fleet (schema 2): the pages' login sessions (table
//! `sessions`), so that a browser behind a load balancer is logged in on every replica
//! and logged out of every one at once; and the listing of every replica's audit
//! records (table `audit`), so that `GET /audit` answers alike everywhere.

use super::{clamp_i64, to_i64, to_u64, PgStore};
use crate::store::{SessionRecord, StoreError};
use ::postgres::types::Json;

impl PgStore {
    pub(super) fn session_put(
        &self,
        session: &SessionRecord,
        per_caller: usize,
        now: u64,
    ) -> Result<(), StoreError> {
        self.pool.with(|conn| {
            let insert = conn.statement(
                "INSERT INTO sessions (digest, caller, scope, csrf, created, expires)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )?;
            let beyond = conn.statement(
                "DELETE FROM sessions WHERE digest IN (SELECT digest FROM sessions
                 WHERE caller = $1 ORDER BY created DESC, digest OFFSET $2)",
            )?;
            let expired = conn.statement("DELETE FROM sessions WHERE expires <= $1")?;
            let mut transaction = conn.client.transaction()?;
            transaction.execute(
                &insert,
                &[
                    &session.digest,
                    &session.caller,
                    &session.scope,
                    &session.csrf,
                    &to_i64(session.created, "session time")?,
                    &to_i64(session.expires, "session time")?,
                ],
            )?;
            let keep = i64::try_from(per_caller).unwrap_or(i64::MAX);
            transaction.execute(&beyond, &[&session.caller, &keep])?;
            transaction.execute(&expired, &[&clamp_i64(now)])?;
            transaction.commit()?;
            Ok(())
        })
    }

    pub(super) fn session_get(
        &self,
        digest: &str,
        now: u64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.pool.with(|conn| {
            let select = conn.statement(
                "SELECT digest, caller, scope, csrf, created, expires FROM sessions
                 WHERE digest = $1 AND expires > $2",
            )?;
            let Some(row) = conn
                .client
                .query_opt(&select, &[&digest, &clamp_i64(now)])?
            else {
                return Ok(None);
            };
            Ok(Some(SessionRecord {
                digest: row.try_get(0)?,
                caller: row.try_get(1)?,
                scope: row.try_get(2)?,
                csrf: row.try_get(3)?,
                created: to_u64(row.try_get(4)?, "session time")?,
                expires: to_u64(row.try_get(5)?, "session time")?,
            }))
        })
    }

    pub(super) fn session_end(&self, digest: &str) -> Result<(), StoreError> {
        self.pool.with(|conn| {
            let delete = conn.statement("DELETE FROM sessions WHERE digest = $1")?;
            conn.client.execute(&delete, &[&digest])?;
            Ok(())
        })
    }

    pub(super) fn audit_put(&self, records: &[(u64, serde_json::Value)]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.pool.with(|conn| {
            let insert = conn.statement(
                "INSERT INTO audit (replica, seq, record) VALUES ($1, $2, $3)
                 ON CONFLICT (replica, seq) DO NOTHING",
            )?;
            let mut transaction = conn.client.transaction()?;
            for (seq, record) in records {
                transaction.execute(
                    &insert,
                    &[&self.replica, &to_i64(*seq, "audit seq")?, &Json(record)],
                )?;
            }
            transaction.commit()?;
            Ok(())
        })
    }

    pub(super) fn audit_newest(&self, limit: usize) -> Result<Vec<serde_json::Value>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.pool.with(|conn| {
            let select =
                conn.statement("SELECT replica, record FROM audit ORDER BY id DESC LIMIT $1")?;
            conn.client
                .query(&select, &[&limit])?
                .iter()
                .map(|row| {
                    let replica: String = row.try_get(0)?;
                    let Json(mut record) = row.try_get::<_, Json<serde_json::Value>>(1)?;
                    if let Some(fields) = record.as_object_mut() {
                        fields.insert("replica".into(), replica.into());
                    }
                    Ok(record)
                })
                .collect()
        })
    }
}
