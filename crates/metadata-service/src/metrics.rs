//! Prometheus metrics (`GET /metrics`, OpenMetrics text): requests by route, method and
//! status, a latency histogram, stored baselines, store size, open connections, and
//! what the store's start-up recovered.
//!
//! Every label comes from a closed set, so no client can grow `/metrics` (or the
//! service's memory) by sending made-up values: the route is the matched route
//! template or `unmatched`, the method one of the nine standard methods or `other`,
//! the status a code this service itself answers with.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::store::Recovery;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecoveryLabels {
    /// `rebuilt`, `signature_restored` or `lost_found`.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    /// An image with a stored baseline (reports of unknown images are refused).
    image_id: String,
    /// `clean`, `drifted`, `failing` or `stale`.
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReportLabels {
    /// `stored`, `duplicate` or a refusal's error code (a closed set).
    outcome: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~26 s
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

/// The method as a label: a standard method, or `other` for anything a client made up.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("other")
}

/// The service's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub baselines: Gauge,
    pub store_bytes: Gauge,
    pub connections: Gauge,
    connections_refused: Counter,
    connections_evicted: Counter,
    store_recovered: Family<RecoveryLabels, Counter>,
    hosts: Family<HostLabels, Gauge>,
    reports: Family<ReportLabels, Counter>,
    spool_dropped: Counter,
    report_gaps: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("metadata_service");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to response head, by route and method",
            latency.clone(),
        );
        let baselines = Gauge::default();
        registry.register("baselines", "Baselines stored", baselines.clone());
        let store_bytes = Gauge::default();
        registry.register(
            "store_bytes",
            "Bytes the store occupies on disk",
            store_bytes.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections currently open",
            connections.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections closed at once: their client address held its cap, all busy",
            connections_refused.clone(),
        );
        let connections_evicted = Counter::default();
        registry.register(
            "connections_evicted",
            "Idle connections closed to make room: for a new connection of the same client \
             address, or of any address when every slot is taken",
            connections_evicted.clone(),
        );
        let store_recovered = Family::<RecoveryLabels, Counter>::default();
        registry.register(
            "store_recovered",
            "What the store's start-up did with files its index did not explain: index \
             entries rebuilt, signatures restored into the index, files moved to lost+found",
            store_recovered.clone(),
        );
        let hosts = Family::<HostLabels, Gauge>::default();
        registry.register(
            "hosts",
            "Hosts by image and status (computed when scraped)",
            hosts.clone(),
        );
        let reports = Family::<ReportLabels, Counter>::default();
        registry.register(
            "reports",
            "Host reports by outcome: stored, duplicate (a retry), or why refused",
            reports.clone(),
        );
        let spool_dropped = Counter::default();
        registry.register(
            "spool_dropped",
            "Reports agents said their spool dropped (oldest first, when full)",
            spool_dropped.clone(),
        );
        let report_gaps = Counter::default();
        registry.register(
            "report_gaps",
            "Sequence numbers of host reports that never arrived",
            report_gaps.clone(),
        );
        Metrics {
            hosts,
            reports,
            spool_dropped,
            report_gaps,
            registry,
            requests,
            latency,
            baselines,
            store_bytes,
            connections,
            connections_refused,
            connections_evicted,
            store_recovered,
        }
    }

    /// Counts what opening the store recovered (every outcome shows, zero included, so
    /// an alert can watch `lost_found`).
    pub fn record_recovery(&self, recovery: &Recovery) {
        for (outcome, count) in [
            ("rebuilt", recovery.rebuilt),
            ("signature_restored", recovery.signatures_restored),
            ("lost_found", recovery.lost_found),
        ] {
            self.store_recovered
                .get_or_create(&RecoveryLabels { outcome })
                .inc_by(count);
        }
    }

    /// One answered request. `route` is a route template or `unmatched` (a closed set,
    /// hence `'static`: no allocation per request).
    pub fn observe(&self, route: &'static str, method: &str, status: u16, seconds: f64) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route, method })
            .observe(seconds);
    }

    /// A connection refused by the per-client cap.
    pub fn refused_connection(&self) {
        self.connections_refused.inc();
    }

    /// An idle connection closed to make room for its client.
    pub fn evicted_connection(&self) {
        self.connections_evicted.inc();
    }

    /// A report's outcome (`stored`, `duplicate` or a refusal's error code).
    pub fn report(&self, outcome: &'static str) {
        self.reports.get_or_create(&ReportLabels { outcome }).inc();
    }

    /// What an accepted report said about its agent's spool, and the gap it opened.
    pub fn report_losses(&self, spool_dropped: u64, gap: u64) {
        self.spool_dropped.inc_by(spool_dropped);
        self.report_gaps.inc_by(gap);
    }

    /// Replaces the host counts (called when scraped).
    pub fn set_hosts(&self, counts: impl IntoIterator<Item = (String, &'static str, i64)>) {
        self.hosts.clear();
        for (image_id, status, count) in counts {
            self.hosts
                .get_or_create(&HostLabels { image_id, status })
                .set(count);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
