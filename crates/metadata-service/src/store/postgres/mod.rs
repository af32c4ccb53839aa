//! [`PgStore`]: the whole [`Store`] trait on PostgreSQL (issue 20), for service
//! replicas that share one database (`--store postgres://…`).
//!
//! * `pool.rs` — a few synchronous connections, each with its prepared statements.
//! * `schema.rs` — the migrations (`migrations/*.sql`), run at open under an advisory
//!   lock; a database newer than this binary is refused.
//! * `fleet.rs` — hosts, reports, accepts and daily counts.
//!
//! # The client: the synchronous `postgres` crate, and a pool of our own
//!
//! [`Store`] is synchronous and called from blocking threads, so a synchronous client
//! fits it directly: `postgres` is `tokio-postgres` (the same protocol code, the same
//! maintainers) with a `block_on` per call on a small current-thread runtime of its
//! own. It adds five small crates to the tree (tokio is already in it), no OpenSSL:
//! TLS is rustls through `tokio-postgres-rustls` (`tls.rs`).
//! The alternatives cost more for nothing this store needs: `sqlx` brings its macros,
//! its runtime glue and a large tree; `tokio-postgres` + `deadpool-postgres` would need
//! a runtime handle threaded into every call and a second crate for the pool, and
//! `refinery` a third for what `schema.rs` does in 70 lines (numbered SQL files, one
//! transaction each, an advisory lock). The pool (`pool.rs`) is small: borrow, give
//! back, drop a broken connection.
//!
//! The one catch: tokio refuses a `block_on` inside a runtime's context, and the
//! service does call its store from async code (the fleet is loaded and the store
//! dropped there). `pool::outside_runtime` runs such a call on a scoped thread of its
//! own; calls from the fleet writer's thread, the hot path, run where they are.
//!
//! # What it guarantees
//! Every write is one transaction committed before the method returns (durable as
//! the server's `synchronous_commit` makes it, on by default); [`Store::apply`] is one
//! transaction for the whole batch. Baselines are inserted if absent (`ON CONFLICT DO
//! NOTHING`: of two replicas racing, one wins and the other gets `Exists`), and every
//! body read is checked against the size and digest of its metadata, as from disk.

mod fleet;
mod follow;
mod password;
mod pool;
mod schema;
mod sessions;
mod tls;

pub use self::schema::SCHEMA_VERSION;

use self::pool::Pool;
use super::{Inserted, SignaturePut, Store, StoreError};
use crate::ingest::{BaselineMeta, Encoding, Prepared};
use ::postgres::types::Json;
use bytes::Bytes;
use std::time::Duration;

impl From<::postgres::Error> for StoreError {
    fn from(error: ::postgres::Error) -> Self {
        let text = format!("PostgreSQL: {}", describe(&error));
        if unreachable(&error) {
            StoreError::unavailable(text)
        } else {
            StoreError(text)
        }
    }
}

/// Whether `error` says the server cannot be reached or cannot serve now (a lost
/// connection, a server shutting down or starting, no connection slot, a statement
/// cancelled by its timeout), rather than that this request is wrong.
fn unreachable(error: &::postgres::Error) -> bool {
    if let Some(db) = error.as_db_error() {
        let code = db.code().code();
        return code.starts_with("08") // connection exception
            || code.starts_with("53") // insufficient resources (too many connections)
            || code == "57P01" // admin shutdown
            || code == "57P02" // crash shutdown
            || code == "57P03" // cannot connect now (starting up)
            || code == "57014"; // query cancelled (statement timeout)
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    // The client's own kinds without a cause: a closed connection, a timeout.
    error.is_closed() || error.to_string().contains("timeout")
}

/// The error with its causes: the client's own message is only its kind ("db error"),
/// the server's message and the I/O error are its sources.
pub(super) fn describe(error: &::postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How the store connects.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections at most (each blocking thread in a store call holds one).
    pub pool_size: usize,
    /// Limit of one connection attempt.
    pub connect_timeout: Duration,
    /// How long a call waits for a free connection when all are in use.
    pub pool_wait: Duration,
    /// The server cancels a statement that runs longer (`statement_timeout`), unless
    /// the URL sets `options`; `None`: the server's setting.
    pub statement_timeout: Option<Duration>,
    /// A file holding the password (its first line).
    pub password_file: Option<std::path::PathBuf>,
    /// The CA certificates (PEM) the database's TLS certificate must chain to; given,
    /// TLS is required.
    pub ca_cert: Option<std::path::PathBuf>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            pool_wait: Duration::from_secs(10),
            statement_timeout: Some(Duration::from_secs(30)),
            password_file: None,
            ca_cert: None,
        }
    }
}

/// Whether `location` names a PostgreSQL database (`postgres://…`, `postgresql://…`).
pub fn is_postgres_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// The store on PostgreSQL (see the module documentation).
pub struct PgStore {
    pool: Pool,
    /// This process among the replicas (random): the host rows it writes name it, so
    /// that following the others skips its own writes.
    replica: String,
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`, or a unix socket directory as
    /// `postgresql:///db?host=/run/postgresql`; that directory when the URL names no
    /// host), brings the schema up to date and checks that it can be used. The password
    /// comes from `--store-password-file`, `PGPASSWORD`, `~/.pgpass` or the URL (see
    /// `password.rs`).
    pub fn open(url: &str, options: &PgOptions) -> Result<Self, StoreError> {
        let mut config = parse_url(url, options)?;
        let tls = tls::configure(&mut config, options.ca_cert.as_deref())?;
        let pool = Pool::new(config, tls, options.pool_size, options.pool_wait);
        let mut replica = crate::ui::session::random_hex()
            .map_err(|error| StoreError(format!("no randomness for the replica id: {error}")))?;
        replica.truncate(16);
        let store = PgStore { pool, replica };
        let found = store.pool.with(schema::migrate)?;
        tracing::info!(schema = SCHEMA_VERSION, found, "PostgreSQL store open");
        Ok(store)
    }

    fn meta_of(conn: &mut pool::Conn, image_id: &str) -> Result<Option<BaselineMeta>, StoreError> {
        let statement = conn.statement("SELECT meta FROM baselines WHERE image_id = $1")?;
        let row = conn.client.query_opt(&statement, &[&image_id])?;
        row.map(|row| read_meta(&row, 0)).transpose()
    }
}

/// The connection settings of `url`, with the password found as `password.rs` says.
fn parse_url(url: &str, options: &PgOptions) -> Result<::postgres::Config, StoreError> {
    if !is_postgres_url(url) {
        return Err(StoreError(format!(
            "not a PostgreSQL URL (postgres://… or postgresql://…): {url:?}"
        )));
    }
    let mut config: ::postgres::Config = url
        .parse()
        .map_err(|error| StoreError(format!("PostgreSQL URL: {error}")))?;
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        config.host_path("/run/postgresql");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.connect_timeout);
    }
    if let (None, Some(limit)) = (config.get_options(), options.statement_timeout) {
        config.options(&format!("-c statement_timeout={}", limit.as_millis()));
    }
    if config.get_application_name().is_none() {
        config.application_name("metadata-service");
    }
    password::resolve(&mut config, options.password_file.as_deref())?;
    Ok(config)
}

fn read_meta(row: &::postgres::Row, index: usize) -> Result<BaselineMeta, StoreError> {
    let Json(meta) = row
        .try_get::<_, Json<BaselineMeta>>(index)
        .map_err(|error| StoreError(format!("stored metadata unreadable: {error}")))?;
    Ok(meta)
}

/// A u64 the schema keeps as `bigint`.
fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError(format!("{what} {value} is out of range")))
}

/// A bound of a query: past `bigint` it means "all".
fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError(format!("a stored {what} is negative")))
}

impl Store for PgStore {
    fn insert(&self, baseline: &Prepared) -> Result<Inserted, StoreError> {
        let image_id = baseline.meta.image_id.as_str();
        self.pool.with(|conn| {
            // Checked first: a duplicate is answered without sending its bodies.
            if let Some(existing) = Self::meta_of(conn, image_id)? {
                return Ok(Inserted::Exists(Box::new(existing)));
            }
            let insert = conn.statement(
                "INSERT INTO baselines (image_id, meta, identity, gzip, zstd)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (image_id) DO NOTHING",
            )?;
            let sign =
                conn.statement("INSERT INTO signatures (image_id, signature) VALUES ($1, $2)")?;
            let mut transaction = conn.client.transaction()?;
            let inserted = transaction.execute(
                &insert,
                &[
                    &image_id,
                    &Json(&baseline.meta),
                    &baseline.raw.as_ref(),
                    &baseline.gzip.as_deref(),
                    &baseline.zstd.as_deref(),
                ],
            )?;
            if inserted == 0 {
                // Another writer won the race (the insert waited for its commit).
                drop(transaction);
                let existing = Self::meta_of(conn, image_id)?.ok_or_else(|| {
                    StoreError(format!("baseline {image_id} conflicted but is not stored"))
                })?;
                return Ok(Inserted::Exists(Box::new(existing)));
            }
            if let Some(signature) = &baseline.signature {
                transaction.execute(&sign, &[&image_id, &signature.as_slice()])?;
            }
            transaction.commit()?;
            Ok(Inserted::Created)
        })
    }

    fn list(&self) -> Result<Vec<BaselineMeta>, StoreError> {
        self.pool.with(|conn| {
            let statement = conn.statement("SELECT meta FROM baselines ORDER BY image_id")?;
            let rows = conn.client.query(&statement, &[])?;
            rows.iter().map(|row| read_meta(row, 0)).collect()
        })
    }

    fn body(&self, image_id: &str, encoding: Encoding) -> Result<Option<Bytes>, StoreError> {
        self.pool.with(|conn| {
            let statement = conn.statement(match encoding {
                Encoding::Identity => "SELECT meta, identity FROM baselines WHERE image_id = $1",
                Encoding::Gzip => "SELECT meta, gzip FROM baselines WHERE image_id = $1",
                Encoding::Zstd => "SELECT meta, zstd FROM baselines WHERE image_id = $1",
            })?;
            let Some(row) = conn.client.query_opt(&statement, &[&image_id])? else {
                return Ok(None);
            };
            let meta = read_meta(&row, 0)?;
            let Some(bytes) = row.try_get::<_, Option<Vec<u8>>>(1)? else {
                return Ok(None);
            };
            if !meta.has(encoding) {
                return Ok(None);
            }
            let expected = match encoding {
                Encoding::Identity => Some(meta.size),
                Encoding::Gzip => meta.gzip_size,
                Encoding::Zstd => meta.zstd_size,
            };
            if expected != Some(bytes.len() as u64) {
                return Err(StoreError(format!(
                "body of {image_id} ({encoding:?}) has {} bytes, its metadata says {expected:?}",
                bytes.len()
            )));
            }
            if let Some(digest) = meta.digest_of(encoding) {
                let actual = integrity_common::Sha256Digest::of(&bytes).to_hex();
                if actual != digest {
                    return Err(StoreError(format!(
                        "body of {image_id} ({encoding:?}) does not hash to the digest of its \
                     metadata (sha256 {actual}, expected {digest}): not served"
                    )));
                }
            }
            Ok(Some(Bytes::from(bytes)))
        })
    }

    fn put_signature(&self, image_id: &str, signature: &[u8]) -> Result<SignaturePut, StoreError> {
        self.pool.with(|conn| {
            if Self::meta_of(conn, image_id)?.is_none() {
                return Ok(SignaturePut::NoBaseline);
            }
            let insert = conn.statement(
                "INSERT INTO signatures (image_id, signature) VALUES ($1, $2)
                 ON CONFLICT (image_id) DO NOTHING",
            )?;
            if conn.client.execute(&insert, &[&image_id, &signature])? == 1 {
                return Ok(SignaturePut::Created);
            }
            let select = conn.statement("SELECT signature FROM signatures WHERE image_id = $1")?;
            let current: Vec<u8> = conn.client.query_one(&select, &[&image_id])?.try_get(0)?;
            Ok(if current == signature {
                SignaturePut::Unchanged
            } else {
                SignaturePut::Conflict
            })
        })
    }

    fn replace_signature(
        &self,
        image_id: &str,
        signature: &[u8],
    ) -> Result<SignaturePut, StoreError> {
        self.pool.with(|conn| {
            if Self::meta_of(conn, image_id)?.is_none() {
                return Ok(SignaturePut::NoBaseline);
            }
            let upsert = conn.statement(
                "INSERT INTO signatures (image_id, signature) VALUES ($1, $2)
                 ON CONFLICT (image_id) DO UPDATE SET signature = EXCLUDED.signature
                 WHERE signatures.signature IS DISTINCT FROM EXCLUDED.signature",
            )?;
            Ok(
                match conn.client.execute(&upsert, &[&image_id, &signature])? {
                    0 => SignaturePut::Unchanged,
                    _ => SignaturePut::Created,
                },
            )
        })
    }

    fn signature(&self, image_id: &str) -> Result<Option<Bytes>, StoreError> {
        self.pool.with(|conn| {
            let select = conn.statement("SELECT signature FROM signatures WHERE image_id = $1")?;
            let row = conn.client.query_opt(&select, &[&image_id])?;
            Ok(row
                .map(|row| row.try_get::<_, Vec<u8>>(0))
                .transpose()?
                .map(Bytes::from))
        })
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.pool.with(|conn| {
            let size: i64 = conn
                .client
                .query_one("SELECT pg_database_size(current_database())", &[])?
                .try_get(0)?;
            to_u64(size, "database size")
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Every write was committed before it returned.
        Ok(())
    }

    fn apply(&self, writes: &[super::FleetWrite]) -> Result<Vec<bool>, StoreError> {
        self.fleet_apply(writes)
    }

    fn hosts(&self) -> Result<Vec<super::HostRecord>, StoreError> {
        self.fleet_hosts()
    }

    fn report(&self, host_id: &str, seq: u64) -> Result<Option<super::StoredReport>, StoreError> {
        self.fleet_report(host_id, seq)
    }

    fn reports(
        &self,
        host_id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<super::ReportRow>, StoreError> {
        self.fleet_reports(host_id, before, limit)
    }

    fn prune_reports(
        &self,
        host_id: &str,
        received_before: u64,
        keep: u64,
    ) -> Result<u64, StoreError> {
        self.fleet_prune(host_id, received_before, keep)
    }

    fn accepts(&self) -> Result<Vec<super::Accept>, StoreError> {
        self.fleet_accepts()
    }

    fn daily(&self, since_day: u64) -> Result<Vec<super::DailyRecord>, StoreError> {
        self.fleet_daily(since_day)
    }

    fn host(&self, host_id: &str) -> Result<Option<super::HostRecord>, StoreError> {
        self.fleet_host(host_id)
    }

    fn hosts_with_latest(
        &self,
    ) -> Result<Vec<(super::HostRecord, Option<super::StoredReport>)>, StoreError> {
        self.fleet_hosts_with_latest()
    }

    fn meta(&self, image_id: &str) -> Result<Option<BaselineMeta>, StoreError> {
        self.pool.with(|conn| Self::meta_of(conn, image_id))
    }

    fn change_cursor(&self) -> Result<Option<u64>, StoreError> {
        self.cursor_now().map(Some)
    }

    fn changes(&self, cursor: u64) -> Result<super::Changes, StoreError> {
        self.changes_since(cursor)
    }

    fn health(&self) -> Result<(), StoreError> {
        self.ping()
    }

    fn put_session(
        &self,
        session: &super::SessionRecord,
        per_caller: usize,
        now: u64,
    ) -> Result<(), StoreError> {
        self.session_put(session, per_caller, now)
    }

    fn session(&self, digest: &str, now: u64) -> Result<Option<super::SessionRecord>, StoreError> {
        self.session_get(digest, now)
    }

    fn end_session(&self, digest: &str) -> Result<(), StoreError> {
        self.session_end(digest)
    }

    fn append_audit(&self, records: &[(u64, serde_json::Value)]) -> Result<(), StoreError> {
        self.audit_put(records)
    }

    fn audit_tail(&self, limit: usize) -> Result<Vec<serde_json::Value>, StoreError> {
        self.audit_newest(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_recognised_and_parsed() {
        let defaults = PgOptions::default();
        assert!(is_postgres_url("postgres://u@h/db"));
        assert!(is_postgres_url("postgresql:///db?host=/tmp"));
        assert!(!is_postgres_url("/var/lib/bulletproof"));
        assert!(parse_url("/var/lib/x", &defaults).is_err());
        let config = parse_url("postgresql:///fleet?host=/tmp/sock&port=5433", &defaults).unwrap();
        assert_eq!(config.get_dbname(), Some("fleet"));
        assert_eq!(config.get_ports(), &[5433]);
        let config = parse_url("postgres://bp@db.example:6000/fleet", &defaults).unwrap();
        assert_eq!(config.get_user(), Some("bp"));
        assert_eq!(
            config.get_connect_timeout(),
            Some(&defaults.connect_timeout)
        );
        assert_eq!(config.get_options(), Some("-c statement_timeout=30000"));
        // No host at all: the local socket directory.
        assert_eq!(
            parse_url("postgres:///fleet", &defaults)
                .unwrap()
                .get_hosts()
                .len(),
            1
        );
    }

    #[test]
    fn bounds_convert() {
        assert_eq!(clamp_i64(u64::MAX), i64::MAX);
        assert_eq!(clamp_i64(7), 7);
        assert!(to_i64(u64::MAX, "seq").is_err());
        assert!(to_u64(-1, "size").is_err());
    }
}
