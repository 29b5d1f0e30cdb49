//! DestinationRule rules (`ValidateDestinationRule`, `validateTrafficPolicy`, `validateConnectionPool`,
//! `validateLoadBalancer`, `validateOutlierDetection`, `ValidateTLS`).

use std::collections::HashSet;

use super::common;
use super::Sink;
use crate::api::destination_rule::{
    ClientTls, ClientTlsMode, ConnectionPoolSettings, DestinationRule, H2UpgradePolicy, LoadBalancerSettings,
    OutlierDetection, TrafficPolicy,
};
use crate::diag::Code;
use crate::host;

pub fn validate(s: &mut Sink, dr: &DestinationRule) {
    if dr.host.is_empty() {
        s.error(
            Code::Required,
            "spec.host",
            "a DestinationRule needs a host",
            "name the service, e.g. `reviews` or `api.example.com`",
        );
    } else if let Err(why) = host::check_wildcard_domain(&dr.host) {
        s.error(
            Code::InvalidHost,
            "spec.host",
            format!("invalid host: {why}"),
            "use a service name, FQDN or `*.example.com`",
        );
    }
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy(s, "spec.trafficPolicy", tp);
    }
    let mut names = HashSet::new();
    for (i, sub) in dr.subsets.iter().enumerate() {
        let path = format!("spec.subsets[{i}]");
        if sub.name.is_empty() {
            s.error(
                Code::Required,
                &format!("{path}.name"),
                "a subset needs a name",
                "name it, e.g. `v1`",
            );
        } else {
            common::dns_label(s, &format!("{path}.name"), &sub.name, "subset name");
            if !names.insert(sub.name.as_str()) {
                s.error(
                    Code::Duplicate,
                    &format!("{path}.name"),
                    format!("subset `{}` is defined twice", sub.name),
                    "give every subset a unique name",
                );
            }
        }
        common::labels(s, &format!("{path}.labels"), &sub.labels);
        if let Some(tp) = &sub.traffic_policy {
            traffic_policy(s, &format!("{path}.trafficPolicy"), tp);
        }
    }
    common::export_to(s, "spec.exportTo", &dr.export_to, false);
    if let Some(sel) = &dr.workload_selector {
        // Without exportTo the rule stays in its namespace; with it, the namespace must be the only entry.
        let own = s.res.namespace().to_string();
        let mut targets: Vec<&str> = dr
            .export_to
            .iter()
            .map(|e| if e == "." { own.as_str() } else { e.as_str() })
            .collect();
        targets.sort_unstable();
        targets.dedup();
        if !targets.is_empty() && targets != [own.as_str()] {
            s.error(
                Code::InvalidExportTo,
                "spec.exportTo",
                "a DestinationRule with workloadSelector can only be exported to its own namespace",
                "set `exportTo: [\".\"]`",
            );
        }
        for (k, v) in &sel.match_labels {
            if k.is_empty() || k.contains('*') || v.contains('*') {
                s.error(
                    Code::InvalidLabel,
                    "spec.workloadSelector.matchLabels",
                    format!("selector `{k}={v}` has an empty key or a wildcard"),
                    "use exact label keys and values",
                );
            }
        }
        if sel.match_labels.is_empty() {
            s.warn(
                Code::InvalidLabel,
                "spec.workloadSelector",
                "workloadSelector without labels selects every workload of the namespace",
                "add `matchLabels`, or drop the selector",
            );
        }
    }
}

fn traffic_policy(s: &mut Sink, path: &str, tp: &TrafficPolicy) {
    let empty = tp.load_balancer.is_none()
        && tp.connection_pool.is_none()
        && tp.outlier_detection.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none();
    if empty {
        s.error(
            Code::TrafficPolicy,
            path,
            "the traffic policy sets nothing",
            "remove it, or set loadBalancer, connectionPool, outlierDetection, tls or portLevelSettings",
        );
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        s.error(
            Code::Conflict,
            path,
            "`tunnel` and `proxyProtocol` cannot both be set",
            "keep one of them",
        );
    }
    if let Some(t) = &tp.tunnel {
        let proto = t.protocol.as_deref().unwrap_or("CONNECT");
        if proto != "CONNECT" && proto != "POST" {
            s.error(
                Code::TrafficPolicy,
                &format!("{path}.tunnel.protocol"),
                format!("tunnel protocol `{proto}` is not CONNECT or POST"),
                "use CONNECT or POST",
            );
        }
        if t.target_host.is_empty()
            || (t.target_host.parse::<std::net::IpAddr>().is_err()
                && host::check_wildcard_domain(&t.target_host).is_err())
        {
            s.error(
                Code::TrafficPolicy,
                &format!("{path}.tunnel.targetHost"),
                "tunnel targetHost must be an IP or a host name",
                "set the proxy's host",
            );
        }
        common::port(s, &format!("{path}.tunnel.targetPort"), t.target_port);
    }
    policy_parts(
        s,
        path,
        tp.load_balancer.as_ref(),
        tp.connection_pool.as_ref(),
        tp.outlier_detection.as_ref(),
        tp.tls.as_ref(),
    );
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let p = format!("{path}.portLevelSettings[{i}]");
        match pl.port {
            None => s.error(
                Code::Required,
                &format!("{p}.port"),
                "a port-level setting needs a port",
                "add `port: {number: 443}`",
            ),
            Some(port) => common::port(s, &format!("{p}.port.number"), port.number),
        }
        if pl.load_balancer.is_none()
            && pl.connection_pool.is_none()
            && pl.outlier_detection.is_none()
            && pl.tls.is_none()
        {
            s.error(
                Code::TrafficPolicy,
                &p,
                "the port-level setting sets nothing",
                "set loadBalancer, connectionPool, outlierDetection or tls",
            );
        }
        policy_parts(
            s,
            &p,
            pl.load_balancer.as_ref(),
            pl.connection_pool.as_ref(),
            pl.outlier_detection.as_ref(),
            pl.tls.as_ref(),
        );
    }
}

fn policy_parts(
    s: &mut Sink,
    path: &str,
    lb: Option<&LoadBalancerSettings>,
    cp: Option<&ConnectionPoolSettings>,
    od: Option<&OutlierDetection>,
    tls: Option<&ClientTls>,
) {
    if let Some(lb) = lb {
        load_balancer(s, &format!("{path}.loadBalancer"), lb);
    }
    if let Some(cp) = cp {
        connection_pool(s, &format!("{path}.connectionPool"), cp);
    }
    if let Some(od) = od {
        outlier_detection(s, &format!("{path}.outlierDetection"), od);
    }
    if let Some(tls) = tls {
        client_tls(s, &format!("{path}.tls"), tls);
    }
}

fn load_balancer(s: &mut Sink, path: &str, lb: &LoadBalancerSettings) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        s.error(
            Code::Conflict,
            path,
            "`simple` and `consistentHash` cannot both be set",
            "keep one load balancer",
        );
    }
    if let Some(ch) = &lb.consistent_hash {
        let cp = format!("{path}.consistentHash");
        if ch.key_count() > 1 {
            s.error(
                Code::Conflict,
                &cp,
                "more than one hash key is set",
                "use one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName",
            );
        }
        if let Some(cookie) = &ch.http_cookie {
            if cookie.name.is_empty() {
                s.error(
                    Code::Required,
                    &format!("{cp}.httpCookie.name"),
                    "a hash cookie needs a name",
                    "name the cookie",
                );
            }
            let mut seen = HashSet::new();
            for (i, a) in cookie.attributes.iter().enumerate() {
                if a.name.is_empty() || !seen.insert(a.name.as_str()) {
                    s.error(
                        Code::Duplicate,
                        &format!("{cp}.httpCookie.attributes[{i}]"),
                        "cookie attribute names must be unique and non-empty",
                        "name each attribute once",
                    );
                }
            }
        }
        if ch.minimum_ring_size.is_some() && (ch.ring_hash.is_some() || ch.maglev.is_some()) {
            s.error(
                Code::Conflict,
                &cp,
                "minimumRingSize cannot be combined with ringHash or maglev",
                "use `ringHash.minimumRingSize`",
            );
        }
        if let Some(m) = &ch.maglev {
            match m.table_size {
                None | Some(0) => s.error(
                    Code::Required,
                    &format!("{cp}.maglev.tableSize"),
                    "maglev needs a tableSize",
                    "use a prime such as 65537",
                ),
                Some(n) if n >= 5_000_011 || !is_prime(n) => s.error(
                    Code::TrafficPolicy,
                    &format!("{cp}.maglev.tableSize"),
                    format!("tableSize {n} must be a prime below 5000011"),
                    "use a prime such as 65537",
                ),
                Some(_) => {}
            }
        }
    }
    if lb.locality_lb_setting.is_some() && lb.zone_aware_lb_setting.is_some() {
        s.error(
            Code::Conflict,
            path,
            "localityLbSetting and zoneAwareLbSetting cannot both be set",
            "keep one of them",
        );
    }
    if let Some(l) = &lb.locality_lb_setting {
        let set = [
            !l.distribute.is_empty(),
            !l.failover.is_empty(),
            !l.failover_priority.is_empty(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set > 1 {
            s.error(
                Code::Conflict,
                &format!("{path}.localityLbSetting"),
                "only one of distribute, failover and failoverPriority may be set",
                "keep one of them",
            );
        }
    }
    if lb.warmup.is_some() && lb.warmup_duration_secs.is_some() {
        s.error(
            Code::Conflict,
            path,
            "`warmup` and the deprecated `warmupDurationSecs` cannot both be set",
            "use `warmup`",
        );
    }
    if let Some(w) = &lb.warmup {
        let wp = format!("{path}.warmup");
        match w.duration {
            None => s.error(
                Code::Required,
                &format!("{wp}.duration"),
                "warmup needs a duration",
                "add `duration: 60s`",
            ),
            Some(d) => common::duration(s, &format!("{wp}.duration"), d),
        }
        if w.minimum_percent.is_some_and(|p| !(0.0..=100.0).contains(&p)) {
            s.error(
                Code::InvalidPercent,
                &format!("{wp}.minimumPercent"),
                "minimumPercent must be in 0..100",
                "use a value up to 100",
            );
        }
        if w.aggression.is_some_and(|a| a <= 0.0) {
            s.error(
                Code::TrafficPolicy,
                &format!("{wp}.aggression"),
                "aggression must be greater than 0",
                "use 1.0 for linear warmup",
            );
        }
    }
}

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

fn connection_pool(s: &mut Sink, path: &str, cp: &ConnectionPoolSettings) {
    if cp.tcp.is_none() && cp.http.is_none() {
        s.error(
            Code::TrafficPolicy,
            path,
            "the connection pool sets neither `tcp` nor `http`",
            "set tcp or http limits, or remove connectionPool",
        );
    }
    let negative = |s: &mut Sink, p: String, v: Option<i32>| {
        if let Some(v) = v.filter(|v| *v < 0) {
            s.error(Code::TrafficPolicy, &p, format!("{v} is negative"), "use 0 or more");
        }
    };
    if let Some(t) = &cp.tcp {
        negative(s, format!("{path}.tcp.maxConnections"), t.max_connections);
        for (name, d) in [
            ("connectTimeout", t.connect_timeout),
            ("maxConnectionDuration", t.max_connection_duration),
        ] {
            if let Some(d) = d {
                common::duration(s, &format!("{path}.tcp.{name}"), d);
            }
        }
    }
    if let Some(h) = &cp.http {
        let hp = format!("{path}.http");
        negative(s, format!("{hp}.http1MaxPendingRequests"), h.http1_max_pending_requests);
        negative(s, format!("{hp}.http2MaxRequests"), h.http2_max_requests);
        negative(
            s,
            format!("{hp}.maxRequestsPerConnection"),
            h.max_requests_per_connection,
        );
        negative(s, format!("{hp}.maxRetries"), h.max_retries);
        negative(s, format!("{hp}.maxConcurrentStreams"), h.max_concurrent_streams);
        if h.use_client_protocol && h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) {
            s.error(
                Code::Conflict,
                &hp,
                "useClientProtocol cannot be combined with h2UpgradePolicy UPGRADE",
                "keep one of them",
            );
        }
        if let Some(ka) = &h.http2_keep_alive {
            if ka.interval.is_none() || ka.timeout.is_none() {
                s.error(
                    Code::Required,
                    &format!("{hp}.http2KeepAlive"),
                    "http2KeepAlive needs both interval and timeout",
                    "set both",
                );
            }
        }
    }
}

fn outlier_detection(s: &mut Sink, path: &str, od: &OutlierDetection) {
    if od.consecutive_local_origin_failures.is_some() && !od.split_external_local_origin_errors {
        s.error(
            Code::Conflict,
            &format!("{path}.consecutiveLocalOriginFailures"),
            "consecutiveLocalOriginFailures needs splitExternalLocalOriginErrors: true",
            "set splitExternalLocalOriginErrors: true",
        );
    }
    if let Some(v) = od.consecutive_errors.filter(|v| *v < 0) {
        s.error(
            Code::TrafficPolicy,
            &format!("{path}.consecutiveErrors"),
            format!("{v} is negative"),
            "use 0 or more",
        );
    }
    for (name, v) in [
        ("maxEjectionPercent", od.max_ejection_percent),
        ("minHealthPercent", od.min_health_percent),
    ] {
        if let Some(v) = v {
            common::int_percent(s, &format!("{path}.{name}"), v);
        }
    }
    for (name, d) in [("interval", od.interval), ("baseEjectionTime", od.base_ejection_time)] {
        if let Some(d) = d {
            common::duration(s, &format!("{path}.{name}"), d);
        }
    }
}

fn client_tls(s: &mut Sink, path: &str, tls: &ClientTls) {
    let mode = tls.effective_mode();
    let has_files = tls.client_certificate.is_some()
        || tls.private_key.is_some()
        || tls.ca_certificates.is_some()
        || tls.ca_crl.is_some();
    if mode == ClientTlsMode::Mutual && tls.credential_name.is_none() {
        if tls.client_certificate.is_none() {
            s.error(
                Code::ClientTls,
                &format!("{path}.clientCertificate"),
                "MUTUAL origination needs clientCertificate",
                "set clientCertificate and privateKey, or credentialName",
            );
        }
        if tls.private_key.is_none() {
            s.error(
                Code::ClientTls,
                &format!("{path}.privateKey"),
                "MUTUAL origination needs privateKey",
                "set privateKey, or credentialName",
            );
        }
    }
    if tls.credential_name.is_some() && has_files {
        s.error(
            Code::ClientTls,
            &format!("{path}.credentialName"),
            "credentialName cannot be combined with certificate, CA or CRL files",
            "use either credentialName or the file fields",
        );
    }
    if tls.insecure_skip_verify == Some(true) {
        if tls.ca_certificates.is_some() || !tls.subject_alt_names.is_empty() {
            s.error(
                Code::ClientTls,
                &format!("{path}.insecureSkipVerify"),
                "insecureSkipVerify cannot be combined with caCertificates or subjectAltNames",
                "remove the verification settings, or turn insecureSkipVerify off",
            );
        }
        if mode == ClientTlsMode::Simple && tls.credential_name.is_some() {
            s.error(
                Code::ClientTls,
                &format!("{path}.insecureSkipVerify"),
                "insecureSkipVerify cannot be combined with credentialName in SIMPLE mode",
                "remove one of them",
            );
        }
    }
    if mode == ClientTlsMode::IstioMutual && (has_files || tls.credential_name.is_some()) {
        s.error(
            Code::ClientTls,
            path,
            "ISTIO_MUTUAL uses the mesh's certificates; file and credential fields cannot be set",
            "remove them, or use MUTUAL",
        );
    }
    if mode == ClientTlsMode::Disable && (has_files || tls.sni.is_some() || tls.credential_name.is_some()) {
        s.warn(
            Code::ClientTls,
            path,
            "TLS settings are ignored because mode is DISABLE (the default)",
            "set `mode: SIMPLE` or `MUTUAL` to originate TLS",
        );
    }
}
