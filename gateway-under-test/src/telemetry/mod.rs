//! Telemetry: Istio's standard metrics (`istio_requests_total`, `istio_request_duration_milliseconds`,
//! `istio_request_bytes`, `istio_response_bytes`, `istio_tcp_*`) with Istio's labels, and the
//! Envoy stats that dashboards read (`envoy_cluster_upstream_rq*`, `envoy_http_downstream_rq*`,
//! `envoy_server_live`), encoded by prometheus-client in the Prometheus text format (0.0.4),
//! as Envoy's `/stats/prometheus` serves them.
//!
//! A request costs one map lookup under a read lock and a few atomic and histogram updates:
//! series are keyed by what varies per request (cluster, response code, flags, gRPC status,
//! protocol); the labels that follow from the cluster's name (destination service, its name,
//! namespace and version) are written when scraped.
//!
//! Envoy names some counters without `_total` (`envoy_cluster_upstream_rq`), and
//! prometheus-client appends `_total` to every counter it encodes, so those few are written by
//! `envoy_counters` in the same format, each with its HELP and TYPE lines.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

mod encode;
mod labels;

pub use labels::{destination, Destination, Identity};

/// Envoy's default histogram buckets (milliseconds for times, bytes for sizes); Istio's
/// histograms are Envoy histograms and use them too.
pub const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

/// What one HTTP request contributes to the metrics.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub cluster: &'a str,
    pub code: u16,
    pub flags: &'a str,
    pub grpc: bool,
    /// `grpc-status` of the response (headers or trailers).
    pub grpc_status: Option<u16>,
    pub duration_ms: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// The Plan listener's port, for the `envoy_http_*` stats (stat prefix
    /// `outbound_0.0.0.0_<port>`, as Istio names a gateway's).
    pub listener: u32,
}

/// What varies between a cluster's request series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RequestKey {
    code: u16,
    grpc_status: Option<u16>,
    flags: String,
    grpc: bool,
}

#[derive(Debug)]
struct RequestSeries {
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

impl RequestSeries {
    fn new() -> RequestSeries {
        RequestSeries {
            requests: Counter::default(),
            duration: Histogram::new(BUCKETS),
            request_bytes: Histogram::new(BUCKETS),
            response_bytes: Histogram::new(BUCKETS),
        }
    }
}

/// A TCP session's series: opened is counted when a session starts (flags `-`), the rest
/// when it ends, with its flags.
#[derive(Debug, Default)]
struct TcpSeries {
    opened: Counter,
    closed: Counter,
    sent: Counter,
    received: Counter,
}

/// Envoy's per-cluster upstream stats, counted per attempt (a retried request is two).
#[derive(Debug)]
struct ClusterSeries {
    rq_total: Counter,
    rq_time: Histogram,
    codes: Mutex<BTreeMap<u16, u64>>,
    retry: AtomicU64,
    timeout: AtomicU64,
    pending_overflow: AtomicU64,
    connect_fail: AtomicU64,
    connections: Connections,
    ejections: Ejections,
}

/// A cluster's upstream connections (Envoy's `upstream_cx_total` and `upstream_cx_active`),
/// shared with the cluster's connectors: clones count into the same series.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    total: Counter,
    active: Gauge,
}

impl Connections {
    /// A connection is made: counted, and active until the returned guard is dropped.
    pub fn opened(&self) -> Open {
        self.total.inc();
        self.active.inc();
        Open(self.active.clone())
    }

    /// Connections made so far.
    pub fn total(&self) -> u64 {
        self.total.get()
    }

    /// Connections open now.
    pub fn active(&self) -> i64 {
        self.active.get()
    }
}

/// A cluster's outlier ejections (Envoy's `outlier_detection.ejections_*`), shared with the
/// cluster's outlier detector: clones count into the same series.
#[derive(Debug, Clone, Default)]
pub struct Ejections {
    /// `ejections_enforced_total`.
    pub enforced: Counter,
    /// `ejections_active`: endpoints ejected now.
    pub active: Gauge,
    /// `ejections_enforced_consecutive_5xx`.
    pub consecutive_5xx: Counter,
    /// `ejections_enforced_consecutive_gateway_failure`.
    pub consecutive_gateway: Counter,
    /// `ejections_overflow`: ejections `maxEjectionPercent` did not allow.
    pub overflow: Counter,
}

/// An open upstream connection; dropping it (the connection closed) makes it inactive.
#[derive(Debug)]
pub struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl ClusterSeries {
    fn new() -> ClusterSeries {
        ClusterSeries {
            rq_total: Counter::default(),
            rq_time: Histogram::new(BUCKETS),
            codes: Mutex::new(BTreeMap::new()),
            retry: AtomicU64::new(0),
            timeout: AtomicU64::new(0),
            pending_overflow: AtomicU64::new(0),
            connect_fail: AtomicU64::new(0),
            connections: Connections::default(),
            ejections: Ejections::default(),
        }
    }
}

/// Envoy's per-listener HTTP connection manager stats.
#[derive(Debug)]
struct ListenerSeries {
    rq_total: Counter,
    rq_time: Histogram,
    /// Requests by response class, 1xx to 5xx.
    classes: [AtomicU64; 5],
}

impl ListenerSeries {
    fn new() -> ListenerSeries {
        ListenerSeries {
            rq_total: Counter::default(),
            rq_time: Histogram::new(BUCKETS),
            classes: Default::default(),
        }
    }
}

/// A fast hash for the series maps: their keys come from the config and a bounded set of
/// codes and flags, so they need no protection from collisions chosen by a client.
type Fast = foldhash::fast::RandomState;

/// Series by an owner's name (a cluster, a listener), then by key; created on first use.
#[derive(Debug)]
struct Series<K, V>(RwLock<HashMap<String, HashMap<K, V, Fast>, Fast>>);

impl<K, V> Default for Series<K, V> {
    fn default() -> Self {
        Series(RwLock::new(HashMap::default()))
    }
}

impl<K: Hash + Eq + Clone, V> Series<K, V> {
    /// Runs `f` on the series of (`owner`, `key`), made by `new` if it does not exist yet. The
    /// owner's name is copied once, when its first series is made.
    fn with(&self, owner: &str, key: &K, new: impl FnOnce() -> V, f: impl FnOnce(&V)) {
        if let Ok(m) = self.0.read() {
            if let Some(v) = m.get(owner).and_then(|s| s.get(key)) {
                f(v);
                return;
            }
        }
        if let Ok(mut m) = self.0.write() {
            let owned = match m.get_mut(owner) {
                Some(s) => s,
                None => m.entry(owner.to_string()).or_default(),
            };
            f(owned.entry(key.clone()).or_insert_with(new));
        }
    }

    /// Runs `f` on every series, sorted by owner then key, for a stable scrape.
    fn each(&self, mut f: impl FnMut(&str, &K, &V))
    where
        K: Ord,
    {
        if let Ok(m) = self.0.read() {
            let mut owners: Vec<&String> = m.keys().collect();
            owners.sort();
            for owner in owners {
                let mut keys: Vec<(&K, &V)> = m[owner].iter().collect();
                keys.sort_by(|a, b| a.0.cmp(b.0));
                for (k, v) in keys {
                    f(owner, k, v);
                }
            }
        }
    }
}

/// What happened to one upstream attempt, for Envoy's cluster stats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Upstream {
    /// A response came, with its status, after this long (ms).
    Response(u16, f64),
    /// The per-try or route timeout fired (`upstream_rq_timeout`).
    Timeout,
    /// The connection failed before the request was sent (`upstream_cx_connect_fail`).
    ConnectFail,
    /// A circuit breaker refused the request (`upstream_rq_pending_overflow`).
    Overflow,
    /// The request is retried (`upstream_rq_retry`).
    Retry,
}

/// Every series this gateway keeps, and who it is.
#[derive(Debug)]
pub struct Telemetry {
    identity: Identity,
    requests: Series<RequestKey, RequestSeries>,
    /// By cluster, then by response flags.
    tcp: Series<String, TcpSeries>,
    clusters: Series<(), ClusterSeries>,
    /// By port (the owner's name is empty).
    listeners: Series<u32, ListenerSeries>,
}

impl Telemetry {
    pub fn new(identity: Identity) -> Telemetry {
        Telemetry {
            identity,
            requests: Series::default(),
            tcp: Series::default(),
            clusters: Series::default(),
            listeners: Series::default(),
        }
    }

    /// A finished HTTP request (or gRPC call).
    pub fn request(&self, r: &Request<'_>) {
        let key = RequestKey {
            code: r.code,
            // grpc-status is 0 to 16; anything else is UNKNOWN (2), so a peer cannot make
            // series without bound.
            grpc_status: r.grpc_status.map(|s| if s <= 16 { s } else { 2 }),
            flags: r.flags.to_string(),
            grpc: r.grpc,
        };
        self.requests.with(r.cluster, &key, RequestSeries::new, |s| {
            s.requests.inc();
            s.duration.observe(r.duration_ms);
            s.request_bytes.observe(r.request_bytes as f64);
            s.response_bytes.observe(r.response_bytes as f64);
        });
        self.listeners.with("", &r.listener, ListenerSeries::new, |s| {
            s.rq_total.inc();
            s.rq_time.observe(r.duration_ms);
            if let Some(c) = s.classes.get(usize::from(r.code / 100).wrapping_sub(1)) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    /// One upstream attempt to `cluster`.
    pub fn upstream(&self, cluster: &str, event: Upstream) {
        self.clusters.with(cluster, &(), ClusterSeries::new, |s| {
            let counter = match event {
                Upstream::Response(code, ms) => {
                    s.rq_total.inc();
                    s.rq_time.observe(ms);
                    if let Ok(mut codes) = s.codes.lock() {
                        *codes.entry(code).or_insert(0) += 1;
                    }
                    return;
                }
                Upstream::Timeout => {
                    s.rq_total.inc();
                    &s.timeout
                }
                Upstream::ConnectFail => &s.connect_fail,
                Upstream::Overflow => &s.pending_overflow,
                Upstream::Retry => &s.retry,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        });
    }

    /// The counters `cluster` hands its connectors and its outlier detector. Its series exist
    /// from then on, zero until used, as Envoy lists every cluster's stats.
    pub fn cluster(&self, cluster: &str) -> (Connections, Ejections) {
        let mut found = (Connections::default(), Ejections::default());
        self.clusters.with(cluster, &(), ClusterSeries::new, |s| {
            found = (s.connections.clone(), s.ejections.clone());
        });
        found
    }

    /// A TCP session to `cluster` starts.
    pub fn tcp_opened(&self, cluster: &str) {
        self.tcp.with(cluster, &"-".to_string(), TcpSeries::default, |s| {
            s.opened.inc();
        });
    }

    /// A TCP session to `cluster` ends: bytes sent to the client and received from it.
    pub fn tcp_closed(&self, cluster: &str, flags: &str, sent: u64, received: u64) {
        let flags = if flags.is_empty() { "-" } else { flags };
        self.tcp.with(cluster, &flags.to_string(), TcpSeries::default, |s| {
            s.closed.inc();
            s.sent.inc_by(sent);
            s.received.inc_by(received);
        });
    }
}

#[cfg(test)]
pub(crate) mod tests;
