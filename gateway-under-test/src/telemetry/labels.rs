//! Istio's labels: who the gateway is, what a cluster's name says about the destination, and
//! the label set of a series, made when scraped.

use std::borrow::Cow;
use std::collections::BTreeMap;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};

use super::{RequestKey, Telemetry};

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

impl Telemetry {
    /// Istio's labels for a series to `cluster`, in Istio's order.
    pub(super) fn labels<'a>(&self, cluster: &'a str, reply: Option<&'a RequestKey>, flags: &'a str) -> Labels<'a> {
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
}

/// The stat prefix of a gateway's HTTP listener, as Istio names it.
pub(super) fn stat_prefix(port: u32) -> String {
    format!("outbound_0.0.0.0_{port}")
}

/// A label value in the text format: backslash, quote and newline escaped.
pub(super) fn escape(v: &str) -> Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        Cow::Owned(v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
    } else {
        Cow::Borrowed(v)
    }
}

/// A label set made when scraped.
#[derive(Debug)]
pub(super) struct Labels<'a>(pub(super) Vec<(&'static str, Cow<'a, str>)>);

impl EncodeLabelSet for Labels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        for (k, v) in &self.0 {
            (*k, v.as_ref()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// Makes a closure's labels borrow from its arguments (for every lifetime).
pub(super) fn labeller<K, F: for<'a> Fn(&'a str, &'a K) -> Labels<'a>>(f: F) -> F {
    f
}
