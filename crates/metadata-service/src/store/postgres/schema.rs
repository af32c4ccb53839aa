//! The schema's migrations, run when a store opens: under a session-level advisory
//! lock (replicas starting together run each migration once: the others wait, then
//! find it done), each in its own transaction with its row in
//! `bulletproof_schema_version`. A database whose schema is newer than this binary
//! knows is refused: an older service must not write into a shape it does not know.

use super::pool::Conn;
use super::StoreError;

/// The migrations, in order: version `n` is `MIGRATIONS[n - 1]`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/0001_initial.sql"),
    include_str!("../../../migrations/0002_replicas.sql"),
];

/// The schema version this binary writes and reads.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The advisory lock key of the store's migrations ("Bulletpr" in ASCII).
const LOCK_KEY: i64 = 0x4275_6c6c_6574_7072;

/// Brings the database to [`SCHEMA_VERSION`]; returns the version it found.
pub(super) fn migrate(conn: &mut Conn) -> Result<i32, StoreError> {
    conn.client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .map_err(|error| {
            StoreError(format!(
                "cannot take the migration lock: {}",
                super::describe(&error)
            ))
        })?;
    let outcome = migrate_locked(conn);
    // Released with the session too; a failed unlock is not worth hiding the outcome.
    let _ = conn
        .client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]);
    outcome
}

fn migrate_locked(conn: &mut Conn) -> Result<i32, StoreError> {
    conn.client
        .batch_execute(
            // (No NOTICE "relation already exists" on every start.)
            "SET client_min_messages TO warning;
             CREATE TABLE IF NOT EXISTS bulletproof_schema_version (
                 version integer PRIMARY KEY,
                 applied timestamptz NOT NULL DEFAULT now()
             )",
        )
        .map_err(|error| {
            StoreError(format!(
                "cannot create the schema (the role needs CREATE on the database's \
                 schema, or to own the database): {}",
                super::describe(&error)
            ))
        })?;
    let found: i32 = conn
        .client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM bulletproof_schema_version",
            &[],
        )?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError(format!(
            "the database's schema is version {found}, newer than this metadata-service \
             knows (version {SCHEMA_VERSION}): run a newer metadata-service on it"
        )));
    }
    for version in found + 1..=SCHEMA_VERSION {
        let sql = MIGRATIONS[(version - 1) as usize];
        let mut transaction = conn.client.transaction()?;
        transaction.batch_execute(sql).map_err(|error| {
            StoreError(format!(
                "schema migration {version} failed: {}",
                super::describe(&error)
            ))
        })?;
        transaction.execute(
            "INSERT INTO bulletproof_schema_version (version) VALUES ($1)",
            &[&version],
        )?;
        transaction.commit()?;
        tracing::info!(version, "PostgreSQL store: schema migrated");
    }
    Ok(found)
}
