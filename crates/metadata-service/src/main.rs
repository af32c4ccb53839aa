//! `metadata-service` binary: configuration, logging, the store, the listener, signals.

use clap::Parser;
use metadata_service::config::{Cli, Config, LogFormat};
use metadata_service::server;
use std::process::ExitCode;

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    cli_dist::maybe_generate(<Cli as clap::CommandFactory>::command);
    let cli = Cli::parse();
    let config = match Config::resolve(cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("metadata-service: {error:#}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("metadata-service: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let run = async {
        // Signals first: a SIGTERM during start-up must not kill us mid-open.
        let shutdown = server::shutdown_signal()?;
        metadata_service::run(config, None, shutdown).await
    };
    match runtime.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Once, on stderr, whatever the log format: the operator reads this line.
            eprintln!("metadata-service: {error:#}");
            ExitCode::from(2)
        }
    }
}
