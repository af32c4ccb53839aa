//! `metadata-service` binary: configuration, logging, the store, the listener, signals.

use clap::Parser;
use metadata_service::app::{self, AppState};
use metadata_service::auth::Tokens;
use metadata_service::config::{Cli, Config, LogFormat};
use metadata_service::server::{self, ServerLimits};
use metadata_service::store::SledStore;
use std::process::ExitCode;
use std::sync::Arc;

/// sled's page cache; bodies are cached separately (`cache_bytes`), so keep it small.
const SLED_CACHE_BYTES: u64 = 32 * 1024 * 1024;

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
            tracing::error!(%error, "cannot start the runtime");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("metadata-service: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    use anyhow::Context;
    // Signals first: a SIGTERM during start-up must not kill us mid-open.
    let shutdown = server::shutdown_signal()?;
    let addrs = server::resolve(&config.listen)?;
    if config.tokens.is_empty() {
        if let Some(public) = addrs.iter().find(|addr| !addr.ip().is_loopback()) {
            anyhow::bail!(
                "no token configured, so writes would be open to anyone who can reach \
                 {public}; refusing to listen on anything but loopback (configure --token, \
                 METADATA_TOKENS or token_file, or listen on 127.0.0.1)"
            );
        }
        tracing::warn!("no token configured: writes are open to local clients (loopback only)");
    }
    let tls = match &config.tls {
        Some((cert, key)) => Some(server::tls_config(cert, key)?),
        None => None,
    };
    let started = std::time::Instant::now();
    let data = config.data.clone();
    let store =
        tokio::task::spawn_blocking(move || SledStore::open(&data, SLED_CACHE_BYTES)).await??;
    let tokens = Tokens::new(&config.tokens);
    let state = AppState::new(Arc::new(store), tokens, config.limits.clone())?;
    let listener = tokio::net::TcpListener::bind(&addrs[..])
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    tracing::info!(
        listen = %local,
        tls = tls.is_some(),
        data = %config.data.display(),
        baselines = state.baseline_count(),
        tokens = config.tokens.len(),
        startup_ms = started.elapsed().as_millis() as u64,
        "metadata-service listening"
    );
    let router = app::router(state.clone());
    let limits: ServerLimits = config.server.clone();
    server::serve(listener, router, state.clone(), tls, limits, shutdown).await;
    let flushed = tokio::task::spawn_blocking(move || state.flush_store()).await?;
    flushed?;
    tracing::info!("stopped");
    Ok(())
}
