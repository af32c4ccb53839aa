//! `integrity-agent`: fetch the baseline of this machine's image, rescan the root with
//! the engine, report every drift (ARCHITECTURE.md: Scanner; REFERENCE §3).

mod compare;
mod explain;
mod fleet;
mod identity;
mod report;
mod source;
mod spool;
mod syslog;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use integrity_common::policy::Judged;
use integrity_common::scan::describe_io_error;
use integrity_common::{
    diff, scan, validate_image_id, Anomaly, Applied, Baseline, DriftSummary, Exclusions,
    FileIntegrityEntry, Policy, ScanOptions, ScanOutput, ScanProgress,
};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bad arguments or configuration.
const EXIT_USAGE: u8 = 14;
/// No baseline: service unreachable with nothing cached, 404, unreadable file.
const EXIT_UNAVAILABLE: u8 = 15;
/// A baseline that is not valid, or is another image's.
const EXIT_INVALID: u8 = 16;
/// A public key is pinned and the baseline's signature is missing or wrong.
const EXIT_UNTRUSTED: u8 = 17;
/// The root cannot be scanned, or the report cannot be written.
const EXIT_IO: u8 = 18;

const AFTER_HELP: &str = "\
Exit status of a one-shot check (AIDE's bitmask; add the bits, so drift is 1-7):
   0  no drift
   1  entries added         2  entries deleted
   4  entries changed: content, type, or metadata (mode, owner, group);
      which fields changed is in the report
  14  bad arguments or configuration
  15  no baseline: service unreachable and none cached, 404, unreadable --baseline
  16  baseline invalid, or the baseline of another image id
  17  --public-key given and the baseline's signature is missing, does not verify,
      was made by another key, or names another image id
  18  root unreadable, or the report could not be written
With --interval the agent runs until SIGTERM/SIGINT and then exits 0; a failed check
is logged and retried at the next interval.

Paths that cannot be read are listed (\"not checked\" / {\"error\":…}) and counted in the
summary; they set no bit. When the service cannot be reached the last fetched baseline
(cached under --cache-dir with its ETag) is used, and the report says so.

A baseline in the seed's format (only path, sha256, mode, uid, gid: no directories or
links) is compared against regular files only.

Policy: the rules inside the baseline (chosen by the image builder, covered by its
signature) decide what is checked where; the first matching rule wins. A local
--policy can only add checks unless --allow-weaker-policy is given (logged on every
check). --explain PATH shows the rule for a path; --verbose names the rule behind
each reported change and lists what the policy let through.

Reports: with --server (unless --no-report), every check, also one that could not
run, is sent to the service as a report signed with this host's key (kept in
--state-dir with the host id, the last sequence number and the spool). A report the
service cannot take now (unreachable, timeout, 5xx, 429) waits in the spool and goes
first next time; one it refuses (another 4xx) is logged with its reason and dropped.
Reporting never changes the exit status.

Environment:
  IMAGE_ID           image id when --image-id is not given
  BULLETPROOF_TOKEN  report token when --token is not given";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Colour {
    Auto,
    Always,
    Never,
}

/// Check this machine against its golden-image baseline and report every drift.
#[derive(Parser, Debug)]
#[command(version, about, after_help = AFTER_HELP)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["server", "baseline"])))]
struct Args {
    /// Root of the tree to check; paths are compared relative to it.
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,

    /// Fetch the baseline from the metadata service at URL, and send it a report after
    /// each check. Repeatable: replicas of one service, tried in order, the next on a
    /// connection error, timeout or 5xx.
    #[arg(long, value_name = "URL")]
    server: Vec<String>,

    /// Use the baseline in FILE (offline).
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,

    /// Image id of this machine (required with --server).
    #[arg(long, value_name = "ID", env = "IMAGE_ID")]
    image_id: Option<String>,

    /// Trust only baselines signed by this minisign public key (the signature comes
    /// from the service, or from FILE.minisig beside --baseline FILE).
    #[arg(long, value_name = "KEY")]
    public_key: Option<PathBuf>,

    /// Check once and exit with the drift bitmask (the default).
    #[arg(long, conflicts_with = "interval")]
    once: bool,

    /// Check every SECS seconds (plus up to 10 % random delay) until SIGTERM.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    interval: Option<u64>,

    /// Report format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Also send each anomaly to the local syslog socket (the format of libc's
    /// syslog(3): tag integrity-agent[PID], facility authpriv).
    #[arg(long)]
    syslog: bool,

    /// Syslog socket for --syslog.
    #[arg(long, value_name = "PATH", default_value = "/dev/log")]
    syslog_socket: PathBuf,

    /// Also send each anomaly to a remote collector as RFC 5424 (over TCP with
    /// octet-counting framing, RFC 6587).
    #[arg(long, value_name = "udp://HOST:PORT|tcp://HOST:PORT", value_parser = syslog::parse_server)]
    syslog_server: Option<syslog::Server>,

    /// Colour in the text report.
    #[arg(long, value_enum, default_value_t = Colour::Auto)]
    color: Colour,

    /// Where the last fetched baseline is kept (with its ETag). Without this flag:
    /// /var/cache/bulletproof/agent, which the agent names on stderr the first time it
    /// writes there.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Trust this PEM CA certificate for an https --server.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,

    /// Attempts to fetch before falling back to the cache.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100))]
    fetch_attempts: u32,

    /// Refuse a baseline from the service (or the cache) larger than BYTES, counted
    /// once decompressed; the compressed answer is bounded by the same number, and
    /// the read stops as soon as it is passed. The default, 536870912 (512 MiB), is
    /// the service's default max_body_bytes.
    #[arg(long, value_name = "BYTES", default_value_t = integrity_client::DEFAULT_MAX_BASELINE_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    max_baseline_bytes: u64,

    /// Also exclude PATH (relative to --root) and everything below it. Repeatable.
    #[arg(long, value_name = "PATH")]
    exclude: Vec<PathBuf>,

    /// Do not apply the default exclusions.
    #[arg(long)]
    no_default_excludes: bool,

    /// Descend into other filesystems mounted below the root.
    #[arg(long)]
    cross_filesystems: bool,

    /// Worker threads (default: one per CPU).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,

    /// A local TOML policy on top of the baseline's signed one. It may only add checks;
    /// a rule that would remove one (`ignore`, `added_ok`, `growing`) is refused.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,

    /// Let the local --policy take precedence over the baseline's, weakening it where it
    /// says so. Every check then logs a warning (stderr, and syslog with --syslog).
    #[arg(long, requires = "policy")]
    allow_weaker_policy: bool,

    /// Say which rule applies to PATH (relative to --root, e.g. /etc/hostname) and what
    /// is checked there, then exit. Repeatable.
    #[arg(long, value_name = "PATH")]
    explain: Vec<String>,

    /// Name the rule behind every reported change, and list the changes the policy let
    /// through with the rule that did.
    #[arg(long, short)]
    verbose: bool,

    /// This host's reporting state: key pair (host.key, host.pub), host-id, last
    /// sequence number (seq) and spool/. Created 0700; refused when group or others can
    /// write it or another user owns it (exit 14). When the default cannot be used (an
    /// unprivileged run), the check still runs and says that no report was sent
    /// [default: /var/lib/bulletproof/agent]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Report as this host id (32 lowercase hex digits) instead of the one in
    /// --state-dir (made from /etc/machine-id, or at random, on first use).
    #[arg(long, value_name = "ID", value_parser = parse_host_id)]
    host_id: Option<String>,

    /// Do not send reports to --server (and do not use --state-dir).
    #[arg(long)]
    no_report: bool,

    /// Bearer token (scope report) for sending reports to --server.
    #[arg(
        long,
        value_name = "T",
        env = "BULLETPROOF_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,

    /// Read the report token from F (keeps it out of `ps`; takes precedence over
    /// --token and BULLETPROOF_TOKEN). Refused when group or others can write it (or
    /// its directory), or another user owns it; a warning when they can read it.
    #[arg(long, value_name = "F")]
    token_file: Option<PathBuf>,

    /// Keep at most N unsent reports; beyond, the oldest are dropped (and the next
    /// report says how many).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    spool_max: u64,

    /// Put at most N anomaly lines in a report; the rest are counted in its
    /// `truncated`.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    report_max_anomalies: u64,
}

fn parse_host_id(text: &str) -> Result<String, String> {
    integrity_common::report::validate_host_id(text).map(|()| text.to_owned())
}

/// A check that could not be completed, with its exit code.
struct Fatal {
    code: u8,
    message: String,
}

impl Fatal {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Fatal {
            code,
            message: message.into(),
        }
    }
}

fn warn(message: String) {
    eprintln!("integrity-agent: warning: {message}");
}

struct Agent {
    args: Args,
    local_policy: Option<Policy>,
    image_id: Option<String>,
    exclusions: Exclusions,
    client: Option<integrity_client::Client>,
    pool: rayon::ThreadPool,
    syslog: Option<syslog::Syslog>,
    colour: bool,
    verifier: Option<source::Verifier>,
    /// With --server, unless --no-report.
    reporter: Option<fleet::Reporter>,
}

fn main() -> ExitCode {
    cli_dist::maybe_generate(<Args as clap::CommandFactory>::command);
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) => {
            let code = if error.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    let agent = match Agent::new(args) {
        Ok(agent) => agent,
        Err(error) => {
            eprintln!("integrity-agent: error: {error:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if !agent.args.explain.is_empty() {
        return match agent.explain() {
            Ok(()) => ExitCode::SUCCESS,
            Err(fatal) => {
                eprintln!("integrity-agent: error: {}", fatal.message);
                ExitCode::from(fatal.code)
            }
        };
    }
    match agent.args.interval {
        None => match agent.check_and_report() {
            Ok(summary) => ExitCode::from(summary.exit_bits()),
            Err(fatal) => {
                eprintln!("integrity-agent: error: {}", fatal.message);
                ExitCode::from(fatal.code)
            }
        },
        Some(secs) => agent.run_every(Duration::from_secs(secs)),
    }
}

impl Agent {
    fn new(args: Args) -> anyhow::Result<Agent> {
        let image_id = args.image_id.clone().filter(|id| !id.is_empty());
        if let Some(id) = &image_id {
            validate_image_id(id).map_err(|reason| anyhow::anyhow!("--image-id: {reason}"))?;
        }
        let client = match args.server.split_first() {
            Some((server, more)) => {
                anyhow::ensure!(
                    image_id.is_some(),
                    "--server needs the image id (--image-id or IMAGE_ID)"
                );
                let mut config = integrity_client::ClientConfig::new(
                    server,
                    concat!("integrity-agent/", env!("CARGO_PKG_VERSION")),
                );
                config.fallback_servers = more.to_vec();
                config.ca_cert = args.ca_cert.clone();
                config.retry.attempts = args.fetch_attempts;
                config.max_baseline_bytes = args.max_baseline_bytes;
                config.timeout = Duration::from_secs(120);
                Some(
                    integrity_client::Client::new(&config)
                        .map_err(|error| anyhow::anyhow!("{error}"))?,
                )
            }
            None => None,
        };
        let exclusions = Exclusions::from_flags(
            !args.no_default_excludes,
            args.exclude.iter().map(PathBuf::as_path),
        )
        .map_err(|reason| anyhow::anyhow!(reason))?;
        for path in &args.exclude {
            // A local exclusion narrows what the image's policy checks: say so.
            warn(format!(
                "--exclude {}: not checked on this machine (baseline entries below it are not compared)",
                path.display()
            ));
        }
        let mut pool = rayon::ThreadPoolBuilder::new();
        if let Some(threads) = args.threads {
            pool = pool.num_threads(threads);
        }
        let pool = pool.build().context("cannot start worker threads")?;
        let syslog = if args.syslog || args.syslog_server.is_some() {
            let local = args.syslog.then_some(args.syslog_socket.as_path());
            Some(
                syslog::Syslog::connect(local, args.syslog_server.as_ref())
                    .map_err(anyhow::Error::msg)?,
            )
        } else {
            None
        };
        let colour = match args.color {
            Colour::Always => true,
            Colour::Never => false,
            Colour::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        };
        let local_policy = match &args.policy {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read --policy {}", path.display()))?;
                let policy = Policy::from_toml_str(&text)
                    .map_err(|error| anyhow::anyhow!("--policy {}: {error}", path.display()))?;
                if !args.allow_weaker_policy {
                    integrity_common::policy::refuse_weaker(&policy).map_err(|error| {
                        anyhow::anyhow!("--policy {}: refused: {error}", path.display())
                    })?;
                }
                Some(policy)
            }
            None => None,
        };
        for path in &args.explain {
            integrity_common::manifest::validate_path(path.trim_end_matches('/').as_bytes())
                .or_else(|reason| if path == "/" { Ok(()) } else { Err(reason) })
                .map_err(|reason| anyhow::anyhow!("--explain {path}: {reason}"))?;
        }
        let verifier = match &args.public_key {
            Some(path) => Some(source::Verifier {
                key: integrity_trust::load_public_key(path)
                    .map_err(|error| anyhow::anyhow!("--public-key: {error}"))?,
            }),
            None => None,
        };
        let reporting = !args.server.is_empty() && !args.no_report && args.explain.is_empty();
        let reporter = match reporting {
            true => fleet::Reporter::new(fleet::Settings {
                state_dir: args
                    .state_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(identity::DEFAULT_STATE_DIR)),
                host_id: args.host_id.clone(),
                servers: args.server.clone(),
                token: fleet::token(args.token.as_deref(), args.token_file.as_deref())?,
                ca_cert: args.ca_cert.clone(),
                spool_max: usize::try_from(args.spool_max).unwrap_or(usize::MAX),
                max_anomalies: usize::try_from(args.report_max_anomalies).unwrap_or(usize::MAX),
                interval_secs: args.interval,
            })
            .map(Some)
            .or_else(|error| match &args.state_dir {
                // Asked for: a state directory that cannot be used is an error.
                Some(_) => Err(anyhow::anyhow!("{error} (or --no-report)")),
                // The default, unusable (an unprivileged run): the check must still
                // run; say loudly that this host will not report.
                None => {
                    warn(format!(
                        "no report will be sent: {error} (give --state-dir DIR, or --no-report)"
                    ));
                    Ok(None)
                }
            })?,
            false => None,
        };
        Ok(Agent {
            reporter,
            verifier,
            local_policy,
            args,
            image_id,
            exclusions,
            client,
            pool,
            syslog,
            colour,
        })
    }

    fn load(&self) -> Result<source::Loaded, Fatal> {
        let loaded = self.load_unlogged();
        if let (Err(fatal), Some(syslog)) = (&loaded, &self.syslog) {
            if fatal.code == EXIT_UNTRUSTED {
                let image_id = self.image_id.as_deref().unwrap_or("-");
                if let Err(error) = syslog.security(image_id, &fatal.message) {
                    warn(format!("syslog: {error}"));
                }
            }
        }
        loaded
    }

    fn load_unlogged(&self) -> Result<source::Loaded, Fatal> {
        let map = |error: source::SourceError| match error {
            source::SourceError::Unavailable(text) => Fatal::new(EXIT_UNAVAILABLE, text),
            source::SourceError::Invalid(text) => Fatal::new(EXIT_INVALID, text),
            source::SourceError::Untrusted(text) => Fatal::new(
                EXIT_UNTRUSTED,
                format!("SECURITY: baseline refused: {text}"),
            ),
        };
        let verifier = self.verifier.as_ref();
        match (&self.client, &self.args.baseline, &self.image_id) {
            (Some(client), _, Some(image_id)) => {
                let cache = source::Cache::new(self.args.cache_dir.clone());
                source::from_server(client, &cache, image_id, verifier, &mut warn).map_err(map)
            }
            (None, Some(path), image_id) => match image_id {
                Some(image_id) => source::from_file(path, image_id, verifier).map_err(map),
                None => {
                    // Offline without an image id: the file's own.
                    let bytes = std::fs::read(path).map_err(|error| {
                        Fatal::new(
                            EXIT_UNAVAILABLE,
                            format!("cannot read --baseline {}: {error}", path.display()),
                        )
                    })?;
                    let id = Baseline::from_json_slice(&bytes)
                        .map(|baseline| baseline.image_id)
                        .map_err(|error| {
                            Fatal::new(
                                EXIT_INVALID,
                                format!("--baseline {}: {error}", path.display()),
                            )
                        })?;
                    source::from_file(path, &id, verifier).map_err(map)
                }
            },
            _ => Err(Fatal::new(
                EXIT_USAGE,
                "give --server URL or --baseline FILE",
            )),
        }
    }

    /// The rules in force for this baseline: its own policy and the local one.
    fn applied(&self, baseline: &Baseline) -> Result<Applied, Fatal> {
        let applied = Applied::new(
            baseline.policy.as_ref(),
            self.local_policy.as_ref(),
            self.args.allow_weaker_policy,
            self.exclusions.clone(),
        )
        .map_err(|error| Fatal::new(EXIT_USAGE, format!("--policy: {error}")))?;
        if self.args.allow_weaker_policy {
            let message = format!(
                "SECURITY: the local policy {} overrides the baseline's signed policy (--allow-weaker-policy)",
                self.args.policy.as_deref().unwrap_or(std::path::Path::new("-")).display()
            );
            warn(message.clone());
            if let Some(syslog) = &self.syslog {
                if let Err(error) = syslog.security(&baseline.image_id, &message) {
                    warn(format!("syslog: {error}"));
                }
            }
        }
        Ok(applied)
    }

    fn scan(&self, applied: &Applied) -> Result<ScanOutput, Fatal> {
        let options = ScanOptions {
            root: self.args.root.clone(),
            exclusions: self.exclusions.clone(),
            cross_filesystems: self.args.cross_filesystems,
            policy: (!applied.scan.is_empty()).then(|| Arc::new(applied.scan.clone())),
        };
        let progress = ScanProgress::default();
        self.pool
            .install(|| scan(&options, &progress))
            .map_err(|error| Fatal::new(EXIT_IO, error.to_string()))
    }

    /// One check, then its report to the service (with --server).
    fn check_and_report(&self) -> Result<DriftSummary, Fatal> {
        let mut draft = fleet::Draft::start();
        let result = self.check(&mut draft);
        if let (Some(reporter), Some(image_id)) = (&self.reporter, &self.image_id) {
            let error = result.as_ref().err().map(|fatal| fatal.message.as_str());
            reporter.report(image_id, draft, error);
        }
        result
    }

    /// One check: load, scan, diff, report. Returns the counts; fills `draft` (the
    /// service's report) as far as the check gets.
    fn check(&self, draft: &mut fleet::Draft) -> Result<DriftSummary, Fatal> {
        let loaded = self.load()?;
        draft.set_baseline(&loaded, self.verifier.is_some());
        if let Some(note) = &loaded.note {
            if loaded.source == "cache" {
                warn(note.clone());
            }
        }
        let baseline = &loaded.baseline;
        let applied = self.applied(baseline)?;
        let scanned = self.scan(&applied)?;
        let current = compare::comparable(baseline, &scanned.entries);
        let root = &self.args.root;
        let mut grew =
            |old: &FileIntegrityEntry, _new: &FileIntegrityEntry| match (old.size, old.sha256) {
                (Some(size), Some(hash)) => {
                    integrity_common::scan::hash_prefix(root, &old.path, size)
                        .is_ok_and(|now| now == hash)
                }
                _ => false,
            };
        let mut anomalies: Vec<Anomaly<'_>> = Vec::new();
        let mut rules = Vec::new();
        let mut allowed = Vec::new();
        for anomaly in diff(&baseline.entries, &current) {
            if compare::hidden_by_error(&anomaly, &scanned) {
                continue;
            }
            match applied.judge(anomaly, &mut grew) {
                Judged::Report { anomaly, verdict } => {
                    anomalies.push(anomaly);
                    rules.push(verdict.label());
                }
                Judged::Allowed {
                    anomaly,
                    verdict,
                    why,
                } => allowed.push(report::Allowed {
                    anomaly,
                    rule: verdict.label().unwrap_or_default(),
                    why,
                }),
                Judged::NotScanned => {}
            }
        }
        let mut summary = DriftSummary::default();
        for anomaly in &anomalies {
            summary.record(anomaly.kind);
        }
        summary.errors = scanned.errors.len() as u64;
        summary.scanned = scanned.entries.len() as u64;
        if let Some(reporter) = &self.reporter {
            draft.set_anomalies(&anomalies, reporter.max_anomalies());
            draft.summary = summary;
        }
        let findings = report::Findings {
            image_id: &baseline.image_id,
            anomalies,
            rules,
            allowed,
            verbose: self.args.verbose,
            errors: &scanned.errors,
            summary,
            source: loaded.source,
            note: loaded.note.as_deref(),
        };
        let mut stdout = std::io::stdout().lock();
        let written = match self.args.format {
            Format::Json => report::write_json(&mut stdout, &findings),
            Format::Text => report::write_text(&mut stdout, &findings, self.colour),
        }
        .and_then(|()| stdout.flush());
        if let Err(error) = written {
            return Err(Fatal::new(
                EXIT_IO,
                format!("cannot write the report: {}", describe_io_error(&error)),
            ));
        }
        if let Some(syslog) = &self.syslog {
            self.send_syslog(syslog, &findings);
        }
        Ok(summary)
    }

    fn send_syslog(&self, syslog: &syslog::Syslog, findings: &report::Findings<'_>) {
        let mut failed = None;
        for anomaly in &findings.anomalies {
            if let Err(error) = syslog.anomaly(findings.image_id, anomaly) {
                failed.get_or_insert(error);
            }
        }
        for error in findings.errors {
            if let Err(error) = syslog.scan_error(findings.image_id, error) {
                failed.get_or_insert(error);
            }
        }
        let summary = format!(
            "{{\"summary\":{}}}",
            serde_json::to_string(&findings.summary).unwrap_or_default()
        );
        if let Err(error) = syslog.summary(findings.image_id, &summary) {
            failed.get_or_insert(error);
        }
        if let Some(error) = failed {
            warn(format!("syslog: {error}"));
        }
    }

    /// `--interval`: a check every interval (plus jitter) until SIGTERM or SIGINT.
    fn run_every(&self, interval: Duration) -> ExitCode {
        let stop = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            if let Err(error) = signal_hook::flag::register(signal, stop.clone()) {
                eprintln!("integrity-agent: error: cannot handle signals: {error}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
        let mut run = 0u64;
        while !stop.load(Ordering::Relaxed) {
            run += 1;
            let started = Instant::now();
            match self.check_and_report() {
                Ok(s) => eprintln!(
                    "integrity-agent: check {run}: {} added, {} deleted, {} modified, {} metadata changed, {} type changed, {} errors, {} scanned in {:.2} s",
                    s.added, s.deleted, s.modified, s.metadata_changed, s.type_changed, s.errors, s.scanned,
                    started.elapsed().as_secs_f64()
                ),
                Err(fatal) => eprintln!(
                    "integrity-agent: check {run} failed (exit code {} if one-shot): {}; next check in {} s",
                    fatal.code,
                    fatal.message,
                    interval.as_secs()
                ),
            }
            // Up to 10 % more, so a fleet started together does not stampede.
            let wait = interval + interval.mul_f64(fastrand::f64() * 0.1);
            let deadline = Instant::now() + wait;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100).min(deadline - Instant::now()));
            }
        }
        eprintln!("integrity-agent: stopping after {run} check(s)");
        ExitCode::SUCCESS
    }
}
