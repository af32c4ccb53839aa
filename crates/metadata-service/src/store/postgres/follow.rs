//! Replicas follow each other: what other service processes wrote to the shared
//! database since a cursor (hosts, baselines, accepts), and whether the database can
//! be reached at all (`/healthz`).
//!
//! The cursor is a transaction id. Every host and baseline row carries the id of the
//! transaction that last wrote it (`xid8`, schema 2). One read-only transaction at
//! REPEATABLE READ takes a snapshot, notes its `xmin` (every transaction below it has
//! ended, so its writes are visible in this snapshot or were rolled back), and returns
//! the rows written by transactions at or above the cursor. The next cursor is that
//! `xmin`: a transaction that committed later, even with a lower id than rows already
//! seen, is at or above it and is returned next time. A row may come back more than
//! once (its writer was still running); applying it again changes nothing.

use super::fleet::{read_accepts, read_host};
use super::{read_meta, PgStore};
use crate::store::{Changes, StoreError};

/// `xid8` travels as text: the client has no type for it.
const XMIN: &str = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text";
const HOSTS: &str =
    "SELECT record FROM hosts WHERE xid >= $1::text::xid8 AND replica <> $2 ORDER BY host_id";
const BASELINES: &str = "SELECT meta FROM baselines WHERE xid >= $1::text::xid8";
const ACCEPTS_CHANGED: &str =
    "SELECT EXISTS (SELECT 1 FROM accepts_changed WHERE xid >= $1::text::xid8)";
const ACCEPTS: &str = "SELECT record FROM accepts ORDER BY id";

fn parse_xid(text: &str) -> Result<u64, StoreError> {
    text.parse()
        .map_err(|_| StoreError(format!("PostgreSQL returned {text:?} as a transaction id")))
}

impl PgStore {
    pub(super) fn cursor_now(&self) -> Result<u64, StoreError> {
        self.pool.with(|conn| {
            let text: String = conn.client.query_one(XMIN, &[])?.try_get(0)?;
            parse_xid(&text)
        })
    }

    pub(super) fn changes_since(&self, cursor: u64) -> Result<Changes, StoreError> {
        self.pool.with(|conn| {
            let xmin = conn.statement(XMIN)?;
            let hosts = conn.statement(HOSTS)?;
            let baselines = conn.statement(BASELINES)?;
            let accepts_changed = conn.statement(ACCEPTS_CHANGED)?;
            let accepts = conn.statement(ACCEPTS)?;
            let mut transaction = conn
                .client
                .build_transaction()
                .isolation_level(::postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let next: String = transaction.query_one(&xmin, &[])?.try_get(0)?;
            let since = cursor.to_string();
            let mut changes = Changes {
                cursor: parse_xid(&next)?,
                ..Changes::default()
            };
            for row in transaction.query(&hosts, &[&since, &self.replica])? {
                changes.hosts.push(read_host(&row)?);
            }
            for row in transaction.query(&baselines, &[&since])? {
                changes.baselines.push(read_meta(&row, 0)?);
            }
            if transaction
                .query_one(&accepts_changed, &[&since])?
                .try_get::<_, bool>(0)?
            {
                changes.accepts = Some(read_accepts(&transaction.query(&accepts, &[])?)?);
            }
            transaction.commit()?;
            Ok(changes)
        })
    }

    pub(super) fn ping(&self) -> Result<(), StoreError> {
        self.pool.with(|conn| {
            conn.client.simple_query("SELECT 1")?;
            Ok(())
        })
    }
}
