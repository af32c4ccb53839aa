//! `integrity-agent`: fetch the baseline of this machine's image, rescan the root with
//! the engine, report every drift (ARCHITECTURE.md: Scanner; REFERENCE §3).
//!
//! * `args.rs` — the command line; `check.rs` — one check (load, scan, diff, report);
//!   `verified_state.rs` — incremental checks; `source.rs`, `compare.rs`,
//!   `report.rs`, `syslog.rs`, `explain.rs`; `fleet.rs`, `identity.rs`, `spool.rs` —
//!   reports to the service.

mod args;
mod check;
mod compare;
mod explain;
mod fleet;
mod identity;
mod report;
mod source;
mod spool;
mod syslog;
mod verified_state;
mod watch;
mod watching;

use anyhow::Context;
use args::{Args, Colour, EXIT_USAGE};
use clap::Parser;
use integrity_common::{validate_image_id, Exclusions, Policy};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Where the verified state is kept (incremental checks): with --server or an
    /// explicit --state-dir, when the directory can be used.
    state: Option<verified_state::StateFile>,
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
    if agent.args.watch {
        return agent.run_watch(Duration::from_secs(agent.args.interval.unwrap_or(3600)));
    }
    match agent.args.interval {
        None => match agent.check_and_report() {
            Ok(checked) => ExitCode::from(checked.summary.exit_bits()),
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
        // The verified state (incremental checks) lives in the state directory: used
        // with --server (as the reports' state is) or an explicit --state-dir, never
        // with --no-report (which leaves no state: every check is full).
        let state = match (
            &args.state_dir,
            reporting || (args.state_dir.is_some() && !args.no_report),
        ) {
            (_, false) => None,
            (explicit, true) => {
                let dir = explicit
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(identity::DEFAULT_STATE_DIR));
                match verified_state::StateFile::open(&dir, args.host_id.as_deref()) {
                    Ok(state) => Some(state),
                    Err(error) if explicit.is_some() => anyhow::bail!("{error}"),
                    Err(error) => {
                        warn(format!("every check will be full: {error}"));
                        None
                    }
                }
            }
        };
        Ok(Agent {
            state,
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
            match self.check_and_report().map(|checked| checked.summary) {
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
