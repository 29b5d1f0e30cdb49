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

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;

/// Envoy's default histogram buckets (milliseconds for times, bytes for sizes); Istio's
/// histograms are Envoy histograms and use them too.
pub const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

/// Who this gateway is, in Istio's `source_*` labels, from its workload labels (`--labels`)
/// and namespace, as Istio reads them from the pod: the workload and app from `app`, the
/// version from `version`, the canonical service and revision from Istio's own labels first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub workload: String,
    pub namespace: String,
    pub app: String,
    pub version: String,
    pub canonical_service: String,
    pub canonical_revision: String,
}

impl Identity {
    pub fn from_labels(labels: &BTreeMap<String, String>, namespace: Option<&str>) -> Identity {
        let label = |k: &str| labels.get(k).cloned();
        let workload = label("app").unwrap_or_else(|| "meshgate".into());
        Identity {
            namespace: namespace.unwrap_or("unknown").to_string(),
            app: label("app").unwrap_or_else(|| "unknown".into()),
            version: label("version").unwrap_or_else(|| "unknown".into()),
            canonical_service: label("service.istio.io/canonical-name").unwrap_or_else(|| workload.clone()),
            canonical_revision: label("service.istio.io/canonical-revision")
                .or_else(|| label("version"))
                .unwrap_or_else(|| "latest".into()),
            workload,
        }
    }
}

/// The destination labels Istio derives for a cluster: `outbound|9080|v1|reviews.default.svc.cluster.local`
/// is service `reviews.default.svc.cluster.local`, name `reviews`, namespace `default`, version
/// `v1` (the subset: meshgate sees no pods, and a subset is what selects a version). A host
/// outside Kubernetes is its own name, in namespace `unknown`; Istio's special clusters
/// (`BlackHoleCluster`, `PassthroughCluster`) name themselves; no cluster is `unknown`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination<'a> {
    pub service: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
    pub version: &'a str,
}

pub fn destination(cluster: &str) -> Destination<'_> {
    const UNKNOWN: &str = "unknown";
    let unknown = |service| Destination {
        service,
        name: service,
        namespace: UNKNOWN,
        version: UNKNOWN,
    };
    if cluster.is_empty() {
        return unknown(UNKNOWN);
    }
    let mut parts = cluster.splitn(4, '|');
    let (Some(_direction), Some(_port), Some(subset), Some(host)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return unknown(cluster);
    };
    let version = if subset.is_empty() { UNKNOWN } else { subset };
    match host.split_once(".svc.") {
        Some((name_ns, _)) if name_ns.contains('.') => {
            let (name, namespace) = name_ns.split_once('.').unwrap_or((name_ns, UNKNOWN));
            Destination {
                service: host,
                name,
                namespace,
                version,
            }
        }
        _ => Destination {
            service: host,
            name: host,
            namespace: UNKNOWN,
            version,
        },
    }
}

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

    /// Istio's labels for a series to `cluster`, in Istio's order.
    fn labels<'a>(&self, cluster: &'a str, reply: Option<&'a RequestKey>, flags: &'a str) -> Labels<'a> {
        let id = &self.identity;
        let d = destination(cluster);
        let unknown = Cow::Borrowed("unknown");
        let mut l = vec![
            ("reporter", Cow::Borrowed("source")),
            ("source_workload", Cow::Owned(id.workload.clone())),
            ("source_canonical_service", Cow::Owned(id.canonical_service.clone())),
            ("source_canonical_revision", Cow::Owned(id.canonical_revision.clone())),
            ("source_workload_namespace", Cow::Owned(id.namespace.clone())),
            ("source_principal", unknown.clone()),
            ("source_app", Cow::Owned(id.app.clone())),
            ("source_version", Cow::Owned(id.version.clone())),
            ("source_cluster", unknown.clone()),
            ("destination_workload", unknown.clone()),
            ("destination_workload_namespace", Cow::Borrowed(d.namespace)),
            ("destination_principal", unknown.clone()),
            ("destination_app", unknown.clone()),
            ("destination_version", Cow::Borrowed(d.version)),
            ("destination_service", Cow::Borrowed(d.service)),
            ("destination_canonical_service", Cow::Borrowed(d.name)),
            (
                "destination_canonical_revision",
                Cow::Borrowed(if d.version == "unknown" { "latest" } else { d.version }),
            ),
            ("destination_service_name", Cow::Borrowed(d.name)),
            ("destination_service_namespace", Cow::Borrowed(d.namespace)),
            ("destination_cluster", unknown.clone()),
        ];
        match reply {
            Some(k) => {
                l.push(("request_protocol", Cow::Borrowed(if k.grpc { "grpc" } else { "http" })));
                l.push(("response_code", Cow::Owned(k.code.to_string())));
                l.push((
                    "grpc_response_status",
                    k.grpc_status.map_or(Cow::Borrowed(""), |s| Cow::Owned(s.to_string())),
                ));
                l.push((
                    "response_flags",
                    Cow::Borrowed(if k.flags.is_empty() { "-" } else { &k.flags }),
                ));
            }
            None => {
                l.push(("request_protocol", Cow::Borrowed("tcp")));
                l.push(("response_flags", Cow::Borrowed(flags)));
            }
        }
        // A gateway reports as the source: it does not know the client's mTLS (Istio: unknown).
        l.push(("connection_security_policy", unknown));
        Labels(l)
    }

    /// Envoy's counters whose names have no `_total`, in the same text format, with the tags
    /// Istio's bootstrap extracts (`cluster_name`, `response_code`, `response_code_class` as
    /// `2xx`, `http_conn_manager_prefix`): Envoy's `upstream_rq_200` and `upstream_rq_2xx`
    /// are both `envoy_cluster_upstream_rq`, told apart by their tag.
    pub fn envoy_counters(&self, o: &mut String) {
        let mut rq = String::new();
        let mut simple: [(&str, &str, String); 4] = [
            ("envoy_cluster_upstream_rq_retry", "Requests retried", String::new()),
            (
                "envoy_cluster_upstream_rq_timeout",
                "Requests timed out waiting for a response",
                String::new(),
            ),
            (
                "envoy_cluster_upstream_rq_pending_overflow",
                "Requests refused by a circuit breaker",
                String::new(),
            ),
            (
                "envoy_cluster_upstream_cx_connect_fail",
                "Connection failures",
                String::new(),
            ),
        ];
        self.clusters.each(|cluster, (), s| {
            let cluster = escape(cluster);
            let codes = s.codes.lock().map(|c| c.clone()).unwrap_or_default();
            let mut classes: BTreeMap<u16, u64> = BTreeMap::new();
            for (code, n) in &codes {
                *classes.entry(code / 100).or_insert(0) += n;
                let _ = writeln!(
                    rq,
                    "envoy_cluster_upstream_rq{{response_code=\"{code}\",cluster_name=\"{cluster}\"}} {n}"
                );
            }
            for (class, n) in classes {
                let _ = writeln!(
                    rq,
                    "envoy_cluster_upstream_rq{{response_code_class=\"{class}xx\",cluster_name=\"{cluster}\"}} {n}"
                );
            }
            for (i, v) in [&s.retry, &s.timeout, &s.pending_overflow, &s.connect_fail]
                .iter()
                .enumerate()
            {
                let (name, n) = (simple[i].0, v.load(Ordering::Relaxed));
                let _ = writeln!(simple[i].2, "{name}{{cluster_name=\"{cluster}\"}} {n}");
            }
        });
        header(
            o,
            "envoy_cluster_upstream_rq",
            "Upstream responses by status code and class",
        );
        o.push_str(&rq);
        for (name, help, rows) in simple {
            header(o, name, help);
            o.push_str(&rows);
        }
        header(o, "envoy_http_downstream_rq", "Downstream responses by status class");
        self.listeners.each(|_, port, s| {
            for (i, n) in s.classes.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "envoy_http_downstream_rq{{response_code_class=\"{}xx\",http_conn_manager_prefix=\"{}\"}} {}",
                    i + 1,
                    stat_prefix(*port),
                    n.load(Ordering::Relaxed)
                );
            }
        });
    }
}

/// The stat prefix of a gateway's HTTP listener, as Istio names it.
fn stat_prefix(port: u32) -> String {
    format!("outbound_0.0.0.0_{port}")
}

fn header(o: &mut String, name: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
}

/// A label value in the text format: backslash, quote and newline escaped.
fn escape(v: &str) -> Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        Cow::Owned(v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
    } else {
        Cow::Borrowed(v)
    }
}

/// A label set made when scraped.
#[derive(Debug)]
struct Labels<'a>(Vec<(&'static str, Cow<'a, str>)>);

impl EncodeLabelSet for Labels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        for (k, v) in &self.0 {
            (*k, v.as_ref()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// Makes a closure's labels borrow from its arguments (for every lifetime).
fn labeller<K, F: for<'a> Fn(&'a str, &'a K) -> Labels<'a>>(f: F) -> F {
    f
}

/// One metric family: its HELP and TYPE, then a sample (or a histogram's samples) per series.
fn family<K: Hash + Eq + Clone + Ord, V, M: EncodeMetric>(
    e: &mut DescriptorEncoder,
    (name, help, ty): (&str, &str, MetricType),
    series: &Series<K, V>,
    labels: impl for<'a> Fn(&'a str, &'a K) -> Labels<'a>,
    metric: impl Fn(&V) -> &M,
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, ty)?;
    let mut result = Ok(());
    series.each(|owner, key, v| {
        if result.is_ok() {
            let l = labels(owner, key);
            result = m.encode_family(&l).and_then(|f| metric(v).encode(f));
        }
    });
    result
}

impl Collector for Telemetry {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter as C, Histogram as H};
        let http = labeller(|c, k: &RequestKey| self.labels(c, Some(k), ""));
        let rq = &self.requests;
        family(
            &mut e,
            ("istio_requests", "Requests, by Istio's standard labels", C),
            rq,
            http,
            |s| &s.requests,
        )?;
        let help = "Request duration in milliseconds, to the response's last byte";
        family(
            &mut e,
            ("istio_request_duration_milliseconds", help, H),
            rq,
            http,
            |s| &s.duration,
        )?;
        family(
            &mut e,
            ("istio_request_bytes", "Request body sizes", H),
            rq,
            http,
            |s| &s.request_bytes,
        )?;
        family(
            &mut e,
            ("istio_response_bytes", "Response body sizes", H),
            rq,
            http,
            |s| &s.response_bytes,
        )?;
        let tcp = labeller(|c, flags: &String| self.labels(c, None, flags));
        let help = "TCP connections opened";
        family(&mut e, ("istio_tcp_connections_opened", help, C), &self.tcp, tcp, |s| {
            &s.opened
        })?;
        let help = "TCP connections closed";
        family(&mut e, ("istio_tcp_connections_closed", help, C), &self.tcp, tcp, |s| {
            &s.closed
        })?;
        let help = "Bytes sent to the client on TCP connections";
        family(&mut e, ("istio_tcp_sent_bytes", help, C), &self.tcp, tcp, |s| &s.sent)?;
        let help = "Bytes received from the client on TCP connections";
        family(&mut e, ("istio_tcp_received_bytes", help, C), &self.tcp, tcp, |s| {
            &s.received
        })?;
        let cluster = labeller(|c, (): &()| Labels(vec![("cluster_name", Cow::Borrowed(c))]));
        let cl = &self.clusters;
        let help = "Upstream requests (attempts)";
        family(&mut e, ("envoy_cluster_upstream_rq", help, C), cl, cluster, |s| {
            &s.rq_total
        })?;
        let help = "Upstream request time in milliseconds, to the response headers";
        family(&mut e, ("envoy_cluster_upstream_rq_time", help, H), cl, cluster, |s| {
            &s.rq_time
        })?;
        let listener =
            labeller(|_, port: &u32| Labels(vec![("http_conn_manager_prefix", Cow::Owned(stat_prefix(*port)))]));
        let ls = &self.listeners;
        let help = "Downstream requests";
        family(&mut e, ("envoy_http_downstream_rq", help, C), ls, listener, |s| {
            &s.rq_total
        })?;
        let help = "Downstream request time in milliseconds";
        family(&mut e, ("envoy_http_downstream_rq_time", help, H), ls, listener, |s| {
            &s.rq_time
        })?;
        let live = ConstGauge::new(1i64);
        live.encode(e.encode_descriptor(
            "envoy_server_live",
            "1 while the server is serving",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telemetry() -> Telemetry {
        let labels = BTreeMap::from([
            ("app".to_string(), "istio-ingressgateway".to_string()),
            ("service.istio.io/canonical-revision".to_string(), "rev-7".to_string()),
        ]);
        Telemetry::new(Identity::from_labels(&labels, Some("istio-system")))
    }

    fn scrape(t: Telemetry) -> String {
        let t = std::sync::Arc::new(t);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(t.clone()));
        let mut o = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut o, &registry).unwrap_or_else(|e| panic!("{e}"));
        t.envoy_counters(&mut o);
        o
    }

    fn request(cluster: &str, code: u16) -> Request<'_> {
        Request {
            cluster,
            code,
            flags: "",
            grpc: false,
            grpc_status: None,
            duration_ms: 2.0,
            request_bytes: 3,
            response_bytes: 700,
            listener: 80,
        }
    }

    #[test]
    fn a_clusters_name_gives_istios_destination_labels() {
        let d = destination("outbound|9080|v1|reviews.default.svc.cluster.local");
        assert_eq!(
            d,
            Destination {
                service: "reviews.default.svc.cluster.local",
                name: "reviews",
                namespace: "default",
                version: "v1"
            }
        );
        let d = destination("outbound|443||www.example.com");
        assert_eq!(
            (d.service, d.name, d.namespace, d.version),
            ("www.example.com", "www.example.com", "unknown", "unknown")
        );
        // A name with .svc. but no namespace before it is not a Kubernetes service.
        let d = destination("outbound|80||reviews.svc.example.com");
        assert_eq!((d.name, d.namespace), ("reviews.svc.example.com", "unknown"));
        assert_eq!(destination("BlackHoleCluster").service, "BlackHoleCluster");
        assert_eq!(destination("BlackHoleCluster").name, "BlackHoleCluster");
        assert_eq!(destination("").service, "unknown");
        assert_eq!(destination("a|b|c").service, "a|b|c");
    }

    #[test]
    fn the_gateways_identity_comes_from_its_workload_labels() {
        let id = Identity::from_labels(&BTreeMap::new(), None);
        assert_eq!(
            (
                id.workload.as_str(),
                id.namespace.as_str(),
                id.app.as_str(),
                id.version.as_str()
            ),
            ("meshgate", "unknown", "unknown", "unknown")
        );
        assert_eq!(
            (id.canonical_service.as_str(), id.canonical_revision.as_str()),
            ("meshgate", "latest")
        );
        let labels = BTreeMap::from([
            ("app".to_string(), "gw".to_string()),
            ("version".to_string(), "v3".to_string()),
            ("service.istio.io/canonical-name".to_string(), "gateway".to_string()),
        ]);
        let id = Identity::from_labels(&labels, Some("edge"));
        assert_eq!(
            (
                id.workload.as_str(),
                id.namespace.as_str(),
                id.app.as_str(),
                id.version.as_str()
            ),
            ("gw", "edge", "gw", "v3")
        );
        assert_eq!(
            (id.canonical_service.as_str(), id.canonical_revision.as_str()),
            ("gateway", "v3")
        );
    }

    #[test]
    fn requests_fill_istios_series_and_envoys_listener_stats() {
        let t = telemetry();
        let cluster = "outbound|9080|v1|reviews.default.svc.cluster.local";
        t.request(&request(cluster, 200));
        t.request(&request(cluster, 200));
        t.request(&Request {
            grpc: true,
            grpc_status: Some(99),
            flags: "UF",
            ..request(cluster, 503)
        });
        t.request(&request(cluster, 600));
        let o = scrape(t);
        let series = "reporter=\"source\",source_workload=\"istio-ingressgateway\",source_canonical_service=\"istio-ingressgateway\",\
source_canonical_revision=\"rev-7\",source_workload_namespace=\"istio-system\",source_principal=\"unknown\",\
source_app=\"istio-ingressgateway\",source_version=\"unknown\",source_cluster=\"unknown\",destination_workload=\"unknown\",\
destination_workload_namespace=\"default\",destination_principal=\"unknown\",destination_app=\"unknown\",\
destination_version=\"v1\",destination_service=\"reviews.default.svc.cluster.local\",destination_canonical_service=\"reviews\",\
destination_canonical_revision=\"v1\",destination_service_name=\"reviews\",destination_service_namespace=\"default\",\
destination_cluster=\"unknown\"";
        let ok = format!("{series},request_protocol=\"http\",response_code=\"200\",grpc_response_status=\"\",response_flags=\"-\",connection_security_policy=\"unknown\"");
        assert!(o.contains(&format!("istio_requests_total{{{ok}}} 2\n")), "{o}");
        assert!(
            o.contains(&format!("istio_request_duration_milliseconds_sum{{{ok}}} 4.0\n")),
            "{o}"
        );
        assert!(
            o.contains(&format!(
                "istio_request_duration_milliseconds_bucket{{{ok},le=\"1\"}} 0\n"
            )),
            "{o}"
        );
        assert!(
            o.contains(&format!(
                "istio_request_duration_milliseconds_bucket{{{ok},le=\"5\"}} 2\n"
            )),
            "{o}"
        );
        assert!(o.contains(&format!("istio_request_bytes_sum{{{ok}}} 6.0\n")), "{o}");
        assert!(o.contains(&format!("istio_response_bytes_sum{{{ok}}} 1400.0\n")), "{o}");
        // A gRPC status outside 0-16 is UNKNOWN (2).
        let failed = format!("{series},request_protocol=\"grpc\",response_code=\"503\",grpc_response_status=\"2\",response_flags=\"UF\",connection_security_policy=\"unknown\"");
        assert!(o.contains(&format!("istio_requests_total{{{failed}}} 1\n")), "{o}");
        assert!(o.contains("# HELP istio_requests_total Requests, by Istio's standard labels\n# TYPE istio_requests_total counter\n"), "{o}");
        let listener = "http_conn_manager_prefix=\"outbound_0.0.0.0_80\"";
        assert!(
            o.contains(&format!("envoy_http_downstream_rq_total{{{listener}}} 4\n")),
            "{o}"
        );
        assert!(
            o.contains(&format!("envoy_http_downstream_rq_time_count{{{listener}}} 4\n")),
            "{o}"
        );
        for (class, n) in [(1, 0), (2, 2), (3, 0), (4, 0), (5, 1)] {
            let line = format!("envoy_http_downstream_rq{{response_code_class=\"{class}xx\",{listener}}} {n}\n");
            assert!(o.contains(&line), "{line} in {o}");
        }
        assert!(
            o.contains("# TYPE envoy_server_live gauge\nenvoy_server_live 1\n"),
            "{o}"
        );
    }

    #[test]
    fn upstream_attempts_fill_envoys_cluster_stats() {
        let t = telemetry();
        let c = "outbound|80||a.example.com";
        for event in [
            Upstream::Response(200, 3.0),
            Upstream::Response(200, 30.0),
            Upstream::Response(503, 1.0),
            Upstream::Timeout,
            Upstream::ConnectFail,
            Upstream::ConnectFail,
            Upstream::Overflow,
            Upstream::Retry,
        ] {
            t.upstream(c, event);
        }
        t.upstream("outbound|80||b.example.com", Upstream::Retry);
        let o = scrape(t);
        let cl = "cluster_name=\"outbound|80||a.example.com\"";
        for line in [
            format!("envoy_cluster_upstream_rq_total{{{cl}}} 4\n"),
            format!("envoy_cluster_upstream_rq_time_count{{{cl}}} 3\n"),
            format!("envoy_cluster_upstream_rq_time_sum{{{cl}}} 34.0\n"),
            format!("envoy_cluster_upstream_rq{{response_code=\"200\",{cl}}} 2\n"),
            format!("envoy_cluster_upstream_rq{{response_code=\"503\",{cl}}} 1\n"),
            format!("envoy_cluster_upstream_rq{{response_code_class=\"2xx\",{cl}}} 2\n"),
            format!("envoy_cluster_upstream_rq{{response_code_class=\"5xx\",{cl}}} 1\n"),
            format!("envoy_cluster_upstream_rq_timeout{{{cl}}} 1\n"),
            format!("envoy_cluster_upstream_cx_connect_fail{{{cl}}} 2\n"),
            format!("envoy_cluster_upstream_rq_pending_overflow{{{cl}}} 1\n"),
            format!("envoy_cluster_upstream_rq_retry{{{cl}}} 1\n"),
            "envoy_cluster_upstream_rq_retry{cluster_name=\"outbound|80||b.example.com\"} 1\n".to_string(),
            "# HELP envoy_cluster_upstream_rq_retry Requests retried\n# TYPE envoy_cluster_upstream_rq_retry counter\n"
                .to_string(),
        ] {
            assert!(o.contains(&line), "{line} in {o}");
        }
    }

    #[test]
    fn tcp_sessions_are_opened_then_closed_with_their_flags() {
        let t = telemetry();
        let c = "outbound|9000||tcp.default.svc.cluster.local";
        t.tcp_opened(c);
        t.tcp_opened(c);
        t.tcp_closed(c, "-", 10, 20);
        t.tcp_closed(c, "", 1, 2);
        t.tcp_closed(c, "UF", 0, 0);
        let o = scrape(t);
        let series = |flags: &str| {
            format!("destination_cluster=\"unknown\",request_protocol=\"tcp\",response_flags=\"{flags}\",connection_security_policy=\"unknown\"}}")
        };
        for (name, flags, n) in [
            ("istio_tcp_connections_opened_total", "-", 2),
            ("istio_tcp_connections_closed_total", "-", 2),
            ("istio_tcp_sent_bytes_total", "-", 11),
            ("istio_tcp_received_bytes_total", "-", 22),
            ("istio_tcp_connections_opened_total", "UF", 0),
            ("istio_tcp_connections_closed_total", "UF", 1),
        ] {
            let line = format!("{} {n}\n", series(flags));
            assert!(
                o.lines()
                    .any(|l| l.starts_with(&format!("{name}{{")) && format!("{l}\n").ends_with(&line)),
                "{name} {flags} {n} in {o}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
