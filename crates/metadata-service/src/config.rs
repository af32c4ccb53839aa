//! The service's configuration: flags > environment > TOML file > defaults
//! (REFERENCE §5).

use crate::app::Limits;
use crate::fleet::FleetConfig;
use crate::server::ServerLimits;
use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default listen address: loopback, so a service started without tokens is safe.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Longest timeout accepted (one day): deadlines are instants, and a timeout near
/// `u64::MAX` seconds would overflow them.
const MAX_TIMEOUT_SECS: u64 = 86_400;
/// Default store directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/bulletproof/metadata";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

const AFTER_HELP: &str = "\
API:
  POST /baselines                          store a manifest (bearer token)      201 400 401 409 413
  GET  /baselines/{image_id}               the stored bytes (ETag, gzip, zstd)  200 304 404
  GET  /baselines                          image ids, timestamps, entry counts, digests
  PUT  /baselines/{image_id}/signature     store its minisign signature          201 200 403 404 409
  GET  /baselines/{image_id}/signature     the stored signature                 200 404
  GET  /healthz, GET /metrics              liveness; Prometheus (OpenMetrics) text
  POST /reports                            a signed host report (report)  201 200 400 401 403 409 413 422 429
  GET  /fleet                              images with host counts by status (read)
  GET  /hosts?image_id=&status=&limit=&after=   hosts, a page at a time (read)
  GET  /hosts/{host_id}                    one host and its latest report (read)
  GET  /hosts/{host_id}/reports[/{seq}]    its history; one report's signed bytes (read)
  GET  /drift?image_id=                    drift groups: one finding on many hosts (read)
  POST /accepts, GET /accepts, DELETE /accepts/{id}   accepted drift (admin)
  DELETE /hosts/{host_id}/key              re-open a host's enrollment (admin)
  GET  /audit                              the audit trail, newest first (admin)
  /ui/                                     pages for people: log in with a read or admin token

A POST may carry the baseline's minisign signature (base64 of the .minisig text) in
X-Bulletproof-Signature; with --collector-key the signature is required and checked
(403 otherwise). A PUT of a signature must verify with a --collector-key; without
one, only the token that posted the baseline may PUT it (403 not_poster), and a
stored signature is immutable (409) except to an admin token, which replaces it.

Tokens: SCOPE:NAME:SECRET with SCOPE baseline|report|read|admin, or a bare SECRET
(scope baseline); admin may do everything.

Reports: a host's first report pins its key (X-Bulletproof-Host-Key); later ones
must be signed by it. Enrollments, refused reports (403, 409) and admin actions are
records of the tamper-evident audit log DATA/audit/logs/security/metadata-service.jsonl
(bulletproofctl log verify --root DATA/audit FILE). Token files are refused when group/world-writable. Without any
token the service refuses to listen on anything but loopback.

Connections: each client address (an IPv6 /64) holds at most
--max-connections-per-client; a new one beyond closes that client's oldest idle
connection (or is refused when all are busy). A response write that stalls for
--write-timeout, a connection silent for --idle-timeout between requests, and an
exchange longer than --request-timeout are closed; the --max-requests-per-connection'th
answer carries Connection: close.

Precedence: flags > environment > --config file > defaults.

Exit status: 0 after a clean shutdown (SIGTERM, SIGINT), 2 on a configuration or
start-up error.";

/// Command line. Every option also has an environment variable and a config-file key.
#[derive(Debug, Parser)]
#[command(
    name = "metadata-service",
    version,
    about = "Stores Bulletproof baselines and serves them to the fleet over HTTP",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// TOML configuration file (keys as the long options, with `_` for `-`)
    #[arg(long, env = "METADATA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "METADATA_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Directory of the sled store [default: /var/lib/bulletproof/metadata]
    #[arg(long = "data", env = "METADATA_DATA_DIR", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// A bearer token accepted for writes (repeatable; the environment variable takes
    /// a comma-separated list)
    #[arg(
        long = "token",
        env = "METADATA_TOKENS",
        value_name = "T",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub tokens: Vec<String>,
    /// File with accepted tokens, one per line (keeps them out of `ps` and the
    /// environment)
    #[arg(long, env = "METADATA_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Minisign public key of a collector (repeatable; the environment variable takes
    /// a comma-separated list of files). When any is given, a baseline is stored only
    /// with a signature by one of them whose trusted comment names its image id.
    #[arg(
        long = "collector-key",
        env = "METADATA_COLLECTOR_KEYS",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub collector_keys: Vec<PathBuf>,
    /// PEM certificate chain: serve HTTPS (needs --tls-key)
    #[arg(
        long,
        env = "METADATA_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(
        long,
        env = "METADATA_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Largest accepted baseline, in bytes [default: 536870912]
    #[arg(long, env = "METADATA_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<u64>,
    /// Connections served at once [default: 1024]
    #[arg(long, env = "METADATA_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Connections one client address (an IPv6 /64) may hold at once; 0 = no cap.
    /// Behind a load balancer or NAT every agent shares its address: raise it there
    /// [default: 64]
    #[arg(long, env = "METADATA_MAX_CONNECTIONS_PER_CLIENT", value_name = "N")]
    pub max_connections_per_client: Option<usize>,
    /// Requests served on one connection before it is closed [default: 1000]
    #[arg(long, env = "METADATA_MAX_REQUESTS_PER_CONNECTION", value_name = "N")]
    pub max_requests_per_connection: Option<u64>,
    /// Seconds a whole exchange may take, from the request's arrival (body included)
    /// to the last byte of its answer [default: 120]
    #[arg(long, env = "METADATA_REQUEST_TIMEOUT", value_name = "SECS")]
    pub request_timeout: Option<u64>,
    /// Seconds a client has to send a request's headers [default: 10]
    #[arg(long, env = "METADATA_HEADER_TIMEOUT", value_name = "SECS")]
    pub header_timeout: Option<u64>,
    /// Seconds a response write may make no progress (a client not reading its
    /// answers) before the connection is closed [default: 10]
    #[arg(long, env = "METADATA_WRITE_TIMEOUT", value_name = "SECS")]
    pub write_timeout: Option<u64>,
    /// Seconds a connection with no request in flight may stay silent [default: 5]
    #[arg(long, env = "METADATA_IDLE_TIMEOUT", value_name = "SECS")]
    pub idle_timeout: Option<u64>,
    /// Bytes of upload bodies held in memory at once, over all uploads; at least
    /// --max-body-bytes [default: 1073741824]
    #[arg(long, env = "METADATA_UPLOAD_MEMORY_BYTES", value_name = "BYTES")]
    pub upload_memory_bytes: Option<u64>,
    /// Bytes of baseline bodies cached in memory [default: 134217728]
    #[arg(long, env = "METADATA_CACHE_BYTES", value_name = "BYTES")]
    pub cache_bytes: Option<u64>,
    /// Log format [default: text]
    #[arg(long, env = "METADATA_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Host reports older than this are removed, the latest of each host kept
    /// (e.g. 30d, 12h) [default: 30d]
    #[arg(long, env = "METADATA_REPORT_RETENTION", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub report_retention: Option<Duration>,
    /// Reports kept per host at most, the latest always [default: 10000]
    #[arg(long, env = "METADATA_MAX_REPORTS_PER_HOST", value_name = "N")]
    pub max_reports_per_host: Option<u64>,
    /// Seconds without a report after which a host whose reports give no interval is
    /// stale (with an interval: 3 intervals) [default: 7200]
    #[arg(long, env = "METADATA_STALE_AFTER", value_name = "SECS")]
    pub stale_after: Option<u64>,
    /// Largest accepted report, in bytes [default: 4194304]
    #[arg(long, env = "METADATA_MAX_REPORT_BYTES", value_name = "BYTES")]
    pub max_report_bytes: Option<u64>,
    /// Most anomalies one report may list (agents count the rest) [default: 1000]
    #[arg(long, env = "METADATA_REPORT_MAX_ANOMALIES", value_name = "N")]
    pub report_max_anomalies: Option<usize>,
    /// Seconds a report's `finished` may lie ahead of this service's clock [default: 300]
    #[arg(long, env = "METADATA_MAX_CLOCK_SKEW", value_name = "SECS")]
    pub max_clock_skew: Option<u64>,
    /// Reports one host may send at once, then one per second (429 beyond)
    /// [default: 1100]
    #[arg(long, env = "METADATA_HOST_BURST", value_name = "N")]
    pub host_burst: Option<u32>,
    /// The store: sled:DIR (the embedded default, as --data DIR) or a PostgreSQL URL
    /// (postgres://user@host/db, postgresql:///db?host=/run/postgresql), which then
    /// holds baselines and the fleet for any number of replicas while --data holds
    /// this replica's audit log. The password: --store-password-file, PGPASSWORD or
    /// ~/.pgpass (never in the URL: it would show in the process list)
    #[arg(long, env = "METADATA_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// File holding the PostgreSQL password (first line; not group/world-writable)
    #[arg(long, env = "METADATA_STORE_PASSWORD_FILE", value_name = "FILE")]
    pub store_password_file: Option<PathBuf>,
    /// CA certificates (PEM) the database's TLS certificate must chain to; given, TLS
    /// to the database is required (as with sslmode=require in the URL, which
    /// otherwise checks against the system's CA bundle)
    #[arg(long, env = "METADATA_STORE_CA_CERT", value_name = "PEM")]
    pub store_ca_cert: Option<PathBuf>,
    /// PostgreSQL connections this replica opens at most [default: 16]
    #[arg(long, env = "METADATA_STORE_POOL_SIZE", value_name = "N")]
    pub store_pool_size: Option<usize>,
    /// Seconds to wait for a PostgreSQL connection [default: 5]
    #[arg(long, env = "METADATA_STORE_CONNECT_TIMEOUT", value_name = "SECS")]
    pub store_connect_timeout: Option<u64>,
    /// Seconds a PostgreSQL statement may run before the server cancels it
    /// [default: 30]
    #[arg(long, env = "METADATA_STORE_STATEMENT_TIMEOUT", value_name = "SECS")]
    pub store_statement_timeout: Option<u64>,
}

/// The config file: the same keys as the long options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data: Option<PathBuf>,
    pub tokens: Option<Vec<String>>,
    pub token_file: Option<PathBuf>,
    pub collector_keys: Option<Vec<PathBuf>>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub max_body_bytes: Option<u64>,
    pub max_connections: Option<usize>,
    pub max_connections_per_client: Option<usize>,
    pub max_requests_per_connection: Option<u64>,
    pub request_timeout: Option<u64>,
    pub header_timeout: Option<u64>,
    pub write_timeout: Option<u64>,
    pub idle_timeout: Option<u64>,
    pub upload_memory_bytes: Option<u64>,
    pub cache_bytes: Option<u64>,
    pub log_format: Option<LogFormat>,
    #[serde(default, with = "humantime_serde_opt")]
    pub report_retention: Option<Duration>,
    pub max_reports_per_host: Option<u64>,
    pub stale_after: Option<u64>,
    pub max_report_bytes: Option<u64>,
    pub report_max_anomalies: Option<usize>,
    pub max_clock_skew: Option<u64>,
    pub host_burst: Option<u32>,
    pub store: Option<String>,
    pub store_password_file: Option<PathBuf>,
    pub store_ca_cert: Option<PathBuf>,
    pub store_pool_size: Option<usize>,
    pub store_connect_timeout: Option<u64>,
    pub store_statement_timeout: Option<u64>,
}

/// `report_retention = "30d"` in the config file.
mod humantime_serde_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(de)? {
            Some(text) => humantime::parse_duration(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// The resolved configuration.
#[derive(Debug)]
pub struct Config {
    pub listen: String,
    pub data: PathBuf,
    pub tokens: Vec<String>,
    /// Collector public keys; empty = signatures are stored, not required.
    pub collector_keys: Vec<PathBuf>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub limits: Limits,
    pub server: ServerLimits,
    pub fleet: FleetConfig,
    pub log_format: LogFormat,
    /// A PostgreSQL URL: the store is there, not under `data` (see
    /// [`crate::store::PgStore`]).
    pub store: Option<String>,
    /// How the PostgreSQL store connects.
    pub store_options: crate::store::PgOptions,
    /// Warnings found while resolving (a secret file others may read), logged at start.
    pub warnings: Vec<String>,
}

/// Reads a token file (one token per line, `#` comments): a secret file, refused
/// when group/world-writable or not root's or ours (anyone who can write it adds a
/// token), with a warning (returned, logged once logging is up) when others may read it.
fn read_token_file(path: &Path, warnings: &mut Vec<String>) -> anyhow::Result<Vec<String>> {
    let secret = integrity_common::secret::read_secret(path, "token file")?;
    if let Some(warning) = secret.warning() {
        warnings.push(warning.to_string());
    }
    Ok(secret
        .text()?
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

impl Config {
    /// Defaults everywhere but the address and the store directory.
    pub fn new(listen: impl Into<String>, data: impl Into<PathBuf>) -> Config {
        Config {
            listen: listen.into(),
            data: data.into(),
            tokens: Vec::new(),
            collector_keys: Vec::new(),
            tls: None,
            limits: Limits::default(),
            server: ServerLimits::default(),
            fleet: FleetConfig::default(),
            log_format: LogFormat::Text,
            store: None,
            store_options: Default::default(),
            warnings: Vec::new(),
        }
    }

    /// Merges flags and environment (already in `cli`) over the file over defaults.
    pub fn resolve(cli: Cli) -> anyhow::Result<Config> {
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let mut tokens = if cli.tokens.is_empty() {
            file.tokens.unwrap_or_default()
        } else {
            cli.tokens
        };
        let mut warnings = Vec::new();
        if let Some(path) = cli.token_file.or(file.token_file) {
            tokens.extend(read_token_file(&path, &mut warnings)?);
        }
        tokens.retain(|token| !token.trim().is_empty());
        for token in &mut tokens {
            *token = token.trim().to_owned();
            if token.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
                bail!("a configured token has characters a bearer token cannot carry");
            }
        }
        // The same token twice (a file and a flag) is one token; one secret under two
        // scopes or names is a mistake a request could not resolve.
        tokens.sort_unstable();
        tokens.dedup();
        let mut secrets: Vec<&str> = tokens.iter().map(|t| crate::auth::secret_of(t)).collect();
        secrets.sort_unstable();
        if secrets.windows(2).any(|pair| pair[0] == pair[1]) {
            bail!(
                "one token secret is configured with two scopes or names: a request could \
                 not tell which it presents"
            );
        }
        let tls = match (cli.tls_cert.or(file.tls_cert), cli.tls_key.or(file.tls_key)) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => bail!("TLS needs both a certificate (--tls-cert) and a key (--tls-key)"),
        };
        let limit_defaults = Limits::default();
        let server_defaults = ServerLimits::default();
        let secs = |value: Option<u64>, default: Duration| -> anyhow::Result<Duration> {
            match value {
                Some(0) => bail!("timeouts must be at least 1 second"),
                Some(secs) if secs > MAX_TIMEOUT_SECS => {
                    bail!("timeouts must be at most {MAX_TIMEOUT_SECS} seconds (one day)")
                }
                Some(secs) => Ok(Duration::from_secs(secs)),
                None => Ok(default),
            }
        };
        let max_connections = cli
            .max_connections
            .or(file.max_connections)
            .unwrap_or(server_defaults.max_connections);
        if max_connections == 0 {
            bail!("max_connections must be at least 1");
        }
        let max_requests_per_connection = cli
            .max_requests_per_connection
            .or(file.max_requests_per_connection)
            .unwrap_or(server_defaults.max_requests_per_connection);
        if max_requests_per_connection == 0 {
            bail!("max_requests_per_connection must be at least 1");
        }
        let max_body_bytes = cli
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(limit_defaults.max_body_bytes);
        let upload_memory_bytes = match cli.upload_memory_bytes.or(file.upload_memory_bytes) {
            Some(bytes) if bytes < max_body_bytes => bail!(
                "upload_memory_bytes ({bytes}) must be at least max_body_bytes ({max_body_bytes}): \
                 a body of the largest accepted size must fit"
            ),
            Some(bytes) => bytes,
            None => limit_defaults.upload_memory_bytes.max(max_body_bytes),
        };
        let request_timeout = secs(
            cli.request_timeout.or(file.request_timeout),
            limit_defaults.request_timeout,
        )?;
        let fleet_defaults = FleetConfig::default();
        let report_retention = cli
            .report_retention
            .or(file.report_retention)
            .unwrap_or(fleet_defaults.report_retention);
        if report_retention < Duration::from_secs(1) {
            bail!("report_retention must be at least 1s");
        }
        let positive = |name: &str, value: Option<u64>, default: u64| -> anyhow::Result<u64> {
            match value {
                Some(0) => bail!("{name} must be at least 1"),
                Some(value) => Ok(value),
                None => Ok(default),
            }
        };
        let fleet = FleetConfig {
            report_retention,
            max_reports_per_host: positive(
                "max_reports_per_host",
                cli.max_reports_per_host.or(file.max_reports_per_host),
                fleet_defaults.max_reports_per_host,
            )?,
            stale_after: Duration::from_secs(positive(
                "stale_after",
                cli.stale_after.or(file.stale_after),
                fleet_defaults.stale_after.as_secs(),
            )?),
            max_report_bytes: positive(
                "max_report_bytes",
                cli.max_report_bytes.or(file.max_report_bytes),
                fleet_defaults.max_report_bytes,
            )?,
            max_report_anomalies: positive(
                "report_max_anomalies",
                cli.report_max_anomalies
                    .or(file.report_max_anomalies)
                    .map(|n| n as u64),
                fleet_defaults.max_report_anomalies as u64,
            )? as usize,
            max_clock_skew: Duration::from_secs(
                cli.max_clock_skew
                    .or(file.max_clock_skew)
                    .unwrap_or(fleet_defaults.max_clock_skew.as_secs()),
            ),
            host_burst: positive(
                "host_burst",
                cli.host_burst.or(file.host_burst).map(u64::from),
                u64::from(fleet_defaults.host_burst),
            )?
            .min(u64::from(u32::MAX)) as u32,
        };
        let mut store = cli.store.or(file.store);
        // `sled:DIR` is the embedded store in DIR: `--data DIR`, spelled as a URL.
        let mut sled_dir = None;
        if let Some(url) = &store {
            if let Some(dir) = url.strip_prefix("sled:") {
                if dir.is_empty() {
                    anyhow::bail!("--store sled:DIR needs a directory");
                }
                sled_dir = Some(PathBuf::from(dir));
            } else if !crate::store::is_postgres_url(url) {
                anyhow::bail!(
                    "--store takes sled:DIR or a PostgreSQL URL (postgres://… or \
                     postgresql://…); without it the store is sled under --data"
                );
            }
        }
        if sled_dir.is_some() {
            store = None;
        }
        let pg_defaults = crate::store::PgOptions::default();
        let pool_size = cli
            .store_pool_size
            .or(file.store_pool_size)
            .unwrap_or(pg_defaults.pool_size);
        if pool_size == 0 {
            bail!("store_pool_size must be at least 1");
        }
        let store_options = crate::store::PgOptions {
            pool_size,
            connect_timeout: secs(
                cli.store_connect_timeout.or(file.store_connect_timeout),
                pg_defaults.connect_timeout,
            )?,
            statement_timeout: Some(secs(
                cli.store_statement_timeout.or(file.store_statement_timeout),
                pg_defaults
                    .statement_timeout
                    .unwrap_or(Duration::from_secs(30)),
            )?),
            password_file: cli.store_password_file.or(file.store_password_file),
            ca_cert: cli.store_ca_cert.or(file.store_ca_cert),
            ..pg_defaults
        };
        Ok(Config {
            fleet,
            listen: cli
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.to_owned()),
            data: sled_dir
                .or(cli.data)
                .or(file.data)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            tokens,
            collector_keys: if cli.collector_keys.is_empty() {
                file.collector_keys.unwrap_or_default()
            } else {
                cli.collector_keys
            },
            tls,
            limits: Limits {
                max_body_bytes,
                upload_memory_bytes,
                request_timeout,
                cache_bytes: cli
                    .cache_bytes
                    .or(file.cache_bytes)
                    .unwrap_or(limit_defaults.cache_bytes),
                ..limit_defaults
            },
            server: ServerLimits {
                max_connections,
                max_connections_per_client: cli
                    .max_connections_per_client
                    .or(file.max_connections_per_client)
                    .unwrap_or(server_defaults.max_connections_per_client),
                header_timeout: secs(
                    cli.header_timeout.or(file.header_timeout),
                    server_defaults.header_timeout,
                )?,
                write_timeout: secs(
                    cli.write_timeout.or(file.write_timeout),
                    server_defaults.write_timeout,
                )?,
                idle_timeout: secs(
                    cli.idle_timeout.or(file.idle_timeout),
                    server_defaults.idle_timeout,
                )?,
                max_requests_per_connection,
                ..server_defaults
            },
            log_format: cli
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            store,
            store_options,
            warnings,
        })
    }
}
