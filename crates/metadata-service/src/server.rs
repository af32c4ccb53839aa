//! The accept loop: a bounded number of connections (in all, and per client address),
//! a deadline for request headers, the write, idle and exchange deadlines of
//! `conn.rs` (so idle, slow or non-reading clients cannot hold the connection slots),
//! TLS when configured, and a graceful shutdown that lets in-flight requests finish.

use crate::app::AppState;
use crate::conn::{ClientSlots, ConnLimits, Exchange, Guarded};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Knobs of the connection layer.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections one client address (an IPv6 /64) may hold at once; 0 = no cap.
    pub max_connections_per_client: usize,
    /// Time a client has to send a request's headers, counted from when the server is
    /// ready to read them.
    pub header_timeout: Duration,
    /// A response write that makes no progress for this long closes the connection.
    pub write_timeout: Duration,
    /// A connection with no request in flight that sends nothing for this long is
    /// closed.
    pub idle_timeout: Duration,
    /// Deadline of one exchange, from the request reaching the router to the last
    /// byte of its answer (the same value as `Limits::request_timeout`).
    pub request_timeout: Duration,
    /// Requests served on one connection; the last answer carries `Connection: close`.
    pub max_requests_per_connection: u64,
    /// Time a TLS handshake may take.
    pub tls_handshake_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 1024,
            max_connections_per_client: 64,
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(120),
            max_requests_per_connection: 1000,
            tls_handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Loads a PEM certificate chain and private key into a rustls server config
/// (HTTP/1.1 over TLS 1.2 or 1.3).
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    use anyhow::Context;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing TLS certificate {}", cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "no certificate in {} (expected PEM)",
        cert.display()
    );
    // The key is a secret file: refused when others can write it, warned about when
    // they can read it.
    let secret = integrity_common::secret::read_secret(key, "TLS private key")?;
    if let Some(warning) = secret.warning() {
        tracing::warn!("{warning}");
    }
    let key = PrivateKeyDer::from_pem_slice(secret.as_bytes())
        .with_context(|| format!("reading TLS private key {} (expected PEM)", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, lets
/// open requests finish (up to `limits.shutdown_grace`) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    state: Arc<AppState>,
    tls: Option<rustls::ServerConfig>,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let tls = tls.map(|config| tokio_rustls::TlsAcceptor::from(Arc::new(config)));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let clients = ClientSlots::new(limits.max_connections_per_client);
    let conn_limits = ConnLimits {
        write_timeout: limits.write_timeout,
        idle_timeout: limits.idle_timeout,
        request_timeout: limits.request_timeout,
        max_requests: limits.max_requests_per_connection.max(1),
    };
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        // Every slot taken: one idle connection of the address holding the most is
        // told to close, so that a few addresses keeping connections open cannot keep
        // everyone else in the backlog. Retried while waiting (a connection becomes
        // evictable after a second of idleness); at most one more is evicted before
        // a new connection is accepted, as the freed slot is then held by `accept`.
        let permit = loop {
            if slots.available_permits() == 0 && clients.evict_from_heaviest() {
                state.metrics.evicted_connection();
            }
            tokio::select! {
                permit = slots.clone().acquire_owned() => break permit.ok(),
                () = tokio::time::sleep(Duration::from_millis(250)) => continue,
                () = &mut shutdown => break None,
            }
        };
        let Some(permit) = permit else { break };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let exchange = Exchange::new();
        let evictions = clients.evictions();
        let Some(client_slot) = clients.take(peer.ip(), &exchange) else {
            // Over the per-client cap with every connection busy: closed at once, the
            // global slot given back.
            tracing::debug!(%peer, "connection refused: per-client cap");
            state.metrics.refused_connection();
            drop(tcp);
            continue;
        };
        if clients.evictions() > evictions {
            state.metrics.evicted_connection();
        }
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let requests = exchange.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let (number, in_flight) = requests.begin(conn_limits.request_timeout);
            let answer = router.clone().oneshot(request);
            async move {
                let mut response = answer.await?;
                if number >= conn_limits.max_requests {
                    response.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                drop(in_flight);
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let http = http.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let handshake_timeout = limits.tls_handshake_timeout;
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _client_slot = client_slot;
            state.metrics.connections.inc();
            let evict_watch = exchange.clone();
            let serve = async move {
                match tls {
                    None => {
                        watcher
                            .watch(http.serve_connection(
                                TokioIo::new(Guarded::new(tcp, exchange, conn_limits)),
                                service,
                            ))
                            .await
                    }
                    Some(acceptor) => {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                watcher
                                    .watch(http.serve_connection(
                                        TokioIo::new(Guarded::new(stream, exchange, conn_limits)),
                                        service,
                                    ))
                                    .await
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                                Ok(())
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                Ok(())
                            }
                        }
                    }
                }
            };
            let result = tokio::select! {
                result = serve => result,
                () = evict_watch.evicted() => {
                    tracing::debug!(%peer, "idle connection closed to make room");
                    Ok(())
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            state.metrics.connections.dec();
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, waiting for open requests");
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still open after {} s; closing them",
            limits.shutdown_grace.as_secs()
        );
    }
}

/// Installs the SIGTERM and SIGINT handlers now and returns a future that resolves on
/// either.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// The address the service listens on, as given (`127.0.0.1:8080`, `[::1]:8080`,
/// `localhost:8080`), with every address it resolves to.
pub fn resolve(listen: &str) -> anyhow::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = listen
        .to_socket_addrs()
        .map_err(|error| anyhow::anyhow!("cannot use listen address {listen:?}: {error}"))?
        .collect();
    anyhow::ensure!(
        !addrs.is_empty(),
        "listen address {listen:?} resolves to nothing"
    );
    Ok(addrs)
}
