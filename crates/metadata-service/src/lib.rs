//! `metadata-service`: the Bulletproof baseline store. An axum API (REFERENCE §2) over a
//! [`store::Store`], sled by default. The binary (`main.rs`) only wires configuration,
//! logging and signals around [`server::serve`].

pub mod app;
pub mod audit;
pub mod auth;
pub mod config;
pub mod conn;
pub mod fleet;
pub mod fuzzing;
pub mod ingest;
pub mod metrics;
pub mod server;
pub mod store;
pub mod ui;

use crate::app::AppState;
use crate::auth::Tokens;
use crate::config::Config;
use crate::store::SledStore;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// sled's page cache; bodies are cached separately (`cache_bytes`), so keep it small.
const SLED_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// Runs the service with `config` until `shutdown` resolves: checks the listen rule,
/// opens the store, listens (sending the bound address to `ready`), serves, and flushes
/// the store after the last request.
pub async fn run(
    config: Config,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
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
    // The store: PostgreSQL with --store, else sled under --data.
    let (store, recovery): (Arc<dyn store::Store>, store::Recovery) = match &config.store {
        Some(url) => {
            let url = url.clone();
            let options = config.store_options.clone();
            let store =
                tokio::task::spawn_blocking(move || store::PgStore::open(&url, &options)).await??;
            (Arc::new(store), store::Recovery::default())
        }
        None => {
            let data = config.data.clone();
            let store =
                tokio::task::spawn_blocking(move || SledStore::open(&data, SLED_CACHE_BYTES))
                    .await??;
            // What start-up rebuilt or moved to lost+found (each logged by the store).
            let recovery = store.recovery().clone();
            (Arc::new(store), recovery)
        }
    };
    let collector_keys = config
        .collector_keys
        .iter()
        .map(|path| {
            integrity_trust::load_public_key(path)
                .map_err(|error| anyhow::anyhow!("--collector-key: {error}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let data = config.data.clone();
    let audit = tokio::task::spawn_blocking(move || audit::Audit::open(&data)).await??;
    let state = AppState::new(
        store,
        Tokens::new(&config.tokens),
        config.limits.clone(),
        collector_keys,
        config.fleet.clone(),
        Some(Arc::new(audit)),
    )?;
    state.sessions().set_secure(tls.is_some());
    if state.fleet.follow_from.is_some() {
        // Replicas: the pages' sessions live in the shared store.
        state.sessions().share(state.fleet.store().clone());
    }
    tokio::spawn(prune_reports(state.clone()));
    tokio::spawn(fleet::daily::sampler(state.clone()));
    tokio::spawn(fleet::follow::follower(state.clone()));
    tokio::spawn(watch_store(state.clone()));
    state.metrics.record_recovery(&recovery);
    let listener = tokio::net::TcpListener::bind(&addrs[..])
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    tracing::info!(
        listen = %local,
        tls = tls.is_some(),
        data = %config.data.display(),
        store = if config.store.is_some() { "postgres" } else { "sled" },
        baselines = state.baseline_count(),
        tokens = config.tokens.len(),
        collector_keys = config.collector_keys.len(),
        startup_ms = started.elapsed().as_millis() as u64,
        "metadata-service listening"
    );
    if let Some(ready) = ready {
        let _ = ready.send(local);
    }
    let router = app::app(state.clone());
    server::serve(
        listener,
        router,
        state.clone(),
        tls,
        server::ServerLimits {
            // One deadline: the router's 408 and the connection's exchange deadline.
            request_timeout: config.limits.request_timeout,
            ..config.server.clone()
        },
        shutdown,
    )
    .await;
    tokio::task::spawn_blocking(move || state.flush_store()).await??;
    tracing::info!("stopped");
    Ok(())
}

/// Removes reports past their retention, at start and then every tenth of the
/// retention (at most hourly, at least every second).
async fn prune_reports(state: Arc<AppState>) {
    let retention = state.fleet.config.report_retention;
    let every = (retention / 10).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(3600),
    );
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let worker = state.clone();
        match tokio::task::spawn_blocking(move || worker.fleet.prune()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "reports past their retention removed"),
            Ok(Err(error)) => tracing::error!("pruning reports: {error}"),
            Err(error) => tracing::error!("pruning reports: {error}"),
        }
    }
}

/// Checks every two seconds that the store can be reached, for `/healthz`, and logs
/// when that changes.
async fn watch_store(state: Arc<AppState>) {
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(2));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let worker = state.clone();
        let Ok(changed) = tokio::task::spawn_blocking(move || worker.check_store()).await else {
            continue;
        };
        if changed {
            match state.store_unreachable() {
                Some(reason) => tracing::error!("the store cannot be reached: {reason}"),
                None => tracing::info!("the store can be reached again"),
            }
        }
    }
}

/// The service on a thread of its own, for embedding and for other crates' tests: a
/// real server on a real socket and a real store.
pub struct Background {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Background {
    /// Starts the service and returns once it listens.
    pub fn start(config: Config) -> anyhow::Result<Background> {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(run(config, Some(ready_tx), async {
                    let _ = stop_rx.await;
                }))
        });
        match ready_rx.blocking_recv() {
            Ok(addr) => Ok(Background {
                addr,
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Err(_) => Err(thread
                .join()
                .map_err(|_| anyhow::anyhow!("service thread panicked"))?
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("service stopped before listening"))),
        }
    }

    /// Stops the service gracefully and waits for it.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| anyhow::anyhow!("service thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
