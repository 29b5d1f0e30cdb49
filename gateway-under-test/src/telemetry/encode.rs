//! The scrape: Istio's and Envoy's families through prometheus-client's Collector, and Envoy's
//! counters that prometheus-client cannot name (it appends `_total` to every counter).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hash::Hash;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::labels::{escape, labeller, stat_prefix, Labels};
use super::{RequestKey, Series, Telemetry};

impl Telemetry {
    /// Envoy's counters whose names have no `_total`, in the same text format, with the tags
    /// Istio's bootstrap extracts (`cluster_name`, `response_code`, `response_code_class` as
    /// `2xx`, `http_conn_manager_prefix`): Envoy's `upstream_rq_200` and `upstream_rq_2xx`
    /// are both `envoy_cluster_upstream_rq`, told apart by their tag.
    pub fn envoy_counters(&self, o: &mut String) {
        let mut rq = String::new();
        let mut simple: [(&str, &str, String); 7] = [
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
            (
                "envoy_cluster_outlier_detection_ejections_enforced_consecutive_5xx",
                "Ejections for consecutive 5xx",
                String::new(),
            ),
            (
                "envoy_cluster_outlier_detection_ejections_enforced_consecutive_gateway_failure",
                "Ejections for consecutive gateway failures",
                String::new(),
            ),
            (
                "envoy_cluster_outlier_detection_ejections_overflow",
                "Ejections that maxEjectionPercent did not allow",
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
            let ej = &s.ejections;
            let counts = [
                s.retry.load(Ordering::Relaxed),
                s.timeout.load(Ordering::Relaxed),
                s.pending_overflow.load(Ordering::Relaxed),
                s.connect_fail.load(Ordering::Relaxed),
                ej.consecutive_5xx.get(),
                ej.consecutive_gateway.get(),
                ej.overflow.get(),
            ];
            for (i, n) in counts.into_iter().enumerate() {
                let name = simple[i].0;
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

fn header(o: &mut String, name: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
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
        use MetricType::{Counter as C, Gauge as G, Histogram as H};
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
        let help = "Upstream connections made";
        family(&mut e, ("envoy_cluster_upstream_cx", help, C), cl, cluster, |s| {
            &s.connections.total
        })?;
        let help = "Upstream connections open";
        family(
            &mut e,
            ("envoy_cluster_upstream_cx_active", help, G),
            cl,
            cluster,
            |s| &s.connections.active,
        )?;
        let help = "Endpoints ejected by outlier detection";
        let name = "envoy_cluster_outlier_detection_ejections_enforced";
        family(&mut e, (name, help, C), cl, cluster, |s| &s.ejections.enforced)?;
        let help = "Endpoints ejected now";
        let name = "envoy_cluster_outlier_detection_ejections_active";
        family(&mut e, (name, help, G), cl, cluster, |s| &s.ejections.active)?;
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
        if let Some(bytes) = crate::memory::allocated() {
            let allocated = ConstGauge::new(i64::try_from(bytes).unwrap_or(i64::MAX));
            allocated.encode(e.encode_descriptor(
                "envoy_server_memory_allocated",
                "Bytes allocated and not yet freed",
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}
