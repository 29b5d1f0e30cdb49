//! Gateway rules (`ValidateGateway`, `validateServer`, `validateServerPort`, `validateTLSOptions`).

use std::collections::HashSet;

use super::common;
use super::Sink;
use crate::api::gateway::{Gateway, Server, ServerTls, ServerTlsMode, TlsProtocol};
use crate::api::Protocol;
use crate::diag::Code;
use crate::host;

pub fn validate(s: &mut Sink, g: &Gateway) {
    common::dns_label(s, "metadata.name", &s.res.meta.name.clone(), "Gateway name");
    if g.servers.is_empty() {
        s.error(
            Code::Required,
            "spec.servers",
            "a Gateway needs at least one server",
            "add a server with a port and hosts",
        );
    }
    common::labels(s, "spec.selector", &g.selector);
    let mut port_names = HashSet::new();
    let mut server_names = HashSet::new();
    for (i, server) in g.servers.iter().enumerate() {
        let path = format!("spec.servers[{i}]");
        validate_server(s, &path, server);
        if let Some(port) = &server.port {
            if !port.name.is_empty() && !port_names.insert(port.name.clone()) {
                let msg = format!("port name `{}` is used by another server of this Gateway", port.name);
                s.error(
                    Code::Duplicate,
                    &format!("{path}.port.name"),
                    msg,
                    "give every server port a unique name",
                );
            }
        }
        if let Some(name) = &server.name {
            if !server_names.insert(name.clone()) {
                s.error(
                    Code::Duplicate,
                    &format!("{path}.name"),
                    format!("server name `{name}` is used twice"),
                    "give every server a unique name",
                );
            }
        }
    }
}

fn validate_server(s: &mut Sink, path: &str, server: &Server) {
    if server.hosts.is_empty() {
        s.error(
            Code::Required,
            &format!("{path}.hosts"),
            "a server needs at least one host",
            "add a host, e.g. `*` or `app.example.com`",
        );
    }
    for (i, h) in server.hosts.iter().enumerate() {
        check_server_host(s, &format!("{path}.hosts[{i}]"), h);
    }
    let Some(port) = &server.port else {
        s.error(
            Code::Required,
            &format!("{path}.port"),
            "a server needs a port",
            "add `port: {number: 80, name: http, protocol: HTTP}`",
        );
        return;
    };
    let bind_uds = server.bind.as_deref().is_some_and(|b| b.starts_with("unix://"));
    if bind_uds {
        if port.number != 0 {
            s.error(
                Code::InvalidPort,
                &format!("{path}.port.number"),
                "a server bound to a unix socket must have port 0",
                "set the port number to 0",
            );
        }
    } else {
        common::port(s, &format!("{path}.port.number"), port.number);
    }
    if let Some(bind) = server.bind.as_deref().filter(|b| !b.starts_with("unix://")) {
        if bind.parse::<std::net::IpAddr>().is_err() {
            let msg = format!("bind `{bind}` is not an IP address or a unix:// path");
            s.error(
                Code::InvalidValue,
                &format!("{path}.bind"),
                msg,
                "use an IP such as `0.0.0.0`, or `unix:///path`",
            );
        }
    }
    if port.name.is_empty() {
        s.error(
            Code::Required,
            &format!("{path}.port.name"),
            "the server port needs a name",
            "add `name: http` (or any unique name)",
        );
    }
    if port.target_port.is_some() {
        s.error(
            Code::InvalidValue,
            &format!("{path}.port.targetPort"),
            "targetPort is not allowed on a Gateway port",
            "remove targetPort; the gateway listens on `number`",
        );
    }
    let protocol = Protocol::parse(&port.protocol);
    match protocol {
        None | Some(Protocol::Unsupported) => {
            let hint = match crate::diag::did_you_mean(&port.protocol, Protocol::NAMES.iter().copied()) {
                Some(best) => format!("did you mean `{best}`? Known protocols: {}", Protocol::NAMES.join(", ")),
                None => format!("use one of {}", Protocol::NAMES.join(", ")),
            };
            let msg = format!("protocol `{}` is not a known protocol", port.protocol);
            s.error(Code::UnknownProtocol, &format!("{path}.port.protocol"), msg, &hint);
        }
        Some(p) => validate_server_tls(s, &format!("{path}.tls"), p, server.tls.as_ref()),
    }
}

/// `[namespace/]dnsName`: namespace `*`, `.` or a DNS label; the name `*` or a wildcard domain
/// (no short names).
fn check_server_host(s: &mut Sink, path: &str, h: &str) {
    let (ns, name) = h.split_once('/').unwrap_or(("*", h));
    if ns != "*" && ns != "." && !host::is_dns_label(ns) {
        let msg = format!("`{ns}` in host `{h}` is not a namespace");
        s.error(
            Code::InvalidHost,
            path,
            msg,
            "write `namespace/host`, with `*` (any) or `.` (the Gateway's own) as the namespace",
        );
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return;
    }
    if let Err(why) = host::check_wildcard_domain(name) {
        s.error(
            Code::InvalidHost,
            path,
            format!("invalid server host: {why}"),
            "use `*`, `*.example.com` or `app.example.com`",
        );
    } else if name != "*" && !name.contains('.') {
        let msg = format!("server host `{name}` is a short name");
        s.error(
            Code::InvalidHost,
            path,
            msg,
            "Gateway hosts must be fully qualified (e.g. `app.example.com`) or `*`",
        );
    }
}

fn validate_server_tls(s: &mut Sink, path: &str, protocol: Protocol, tls: Option<&ServerTls>) {
    let Some(tls) = tls else {
        if protocol.is_tls() {
            let msg = format!("a server with protocol {} needs a `tls` block", protocol.name());
            s.error(
                Code::GatewayTls,
                path,
                msg,
                "add `tls: {mode: SIMPLE, serverCertificate: …, privateKey: …}` or `mode: PASSTHROUGH`",
            );
        }
        return;
    };
    if tls.https_redirect && protocol != Protocol::Http {
        s.warn(
            Code::GatewayTls,
            &format!("{path}.httpsRedirect"),
            "httpsRedirect has effect only on an HTTP server",
            "move it to the HTTP (port 80) server",
        );
    }
    if protocol == Protocol::Http {
        if has_any_cert_field(tls) || tls.mode.is_some() {
            s.error(
                Code::GatewayTls,
                path,
                "an HTTP server may only carry `httpsRedirect` in `tls`",
                "remove the other TLS fields, or make the server HTTPS",
            );
        }
        return;
    }
    if !protocol.is_tls() {
        s.error(
            Code::GatewayTls,
            path,
            format!("a {} server cannot have `tls`", protocol.name()),
            "remove `tls`, or use protocol HTTPS or TLS",
        );
        return;
    }
    let mode = tls.effective_mode();
    let sources = cert_sources(tls);
    if sources > 1 {
        s.error(
            Code::GatewayTls,
            path,
            "more than one certificate source is set",
            "set only one of serverCertificate+privateKey, credentialName, credentialNames, tlsCertificates",
        );
    }
    if tls.credential_names.len() > 2 || tls.tls_certificates.len() > 2 {
        s.error(
            Code::GatewayTls,
            path,
            "at most two certificates (one RSA, one ECDSA) may be given",
            "keep at most two entries",
        );
    }
    let uses_credential = tls.credential_name.is_some() || !tls.credential_names.is_empty();
    match mode {
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {
            if has_any_cert_field(tls) {
                let msg = format!("certificates are ignored in {} mode", mode_name(mode));
                s.warn(
                    Code::GatewayTls,
                    path,
                    msg,
                    "remove them, or set `mode: SIMPLE` to terminate TLS (a `tls` block without `mode` is PASSTHROUGH)",
                );
            }
        }
        ServerTlsMode::IstioMutual => {
            if has_any_cert_field(tls) {
                s.error(
                    Code::GatewayTls,
                    path,
                    "ISTIO_MUTUAL takes its certificates from the mesh; no certificate field may be set",
                    "remove the certificate fields",
                );
            }
        }
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            let has_files = tls.server_certificate.is_some() && tls.private_key.is_some();
            let has_pairs = !tls.tls_certificates.is_empty();
            if !uses_credential && !has_pairs && !has_files {
                if tls.server_certificate.is_none() {
                    s.error(
                        Code::GatewayTls,
                        &format!("{path}.serverCertificate"),
                        format!("{} mode needs a server certificate", mode_name(mode)),
                        "set serverCertificate and privateKey (file paths) or credentialName",
                    );
                }
                if tls.private_key.is_none() {
                    s.error(
                        Code::GatewayTls,
                        &format!("{path}.privateKey"),
                        format!("{} mode needs a private key", mode_name(mode)),
                        "set privateKey (a file path) or credentialName",
                    );
                }
            }
            let needs_ca = matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual);
            let has_ca =
                tls.ca_certificates.is_some() || tls.tls_certificates.iter().any(|c| c.ca_certificates.is_some());
            if needs_ca && !uses_credential && !has_ca && tls.ca_cert_credential_name.is_none() {
                let msg = format!(
                    "{} mode needs caCertificates to verify client certificates",
                    mode_name(mode)
                );
                s.error(
                    Code::GatewayTls,
                    &format!("{path}.caCertificates"),
                    msg,
                    "set caCertificates to the CA bundle that signs client certificates",
                );
            }
            for (i, c) in tls.tls_certificates.iter().enumerate() {
                if c.server_certificate.is_none() || c.private_key.is_none() {
                    s.error(
                        Code::GatewayTls,
                        &format!("{path}.tlsCertificates[{i}]"),
                        "each tlsCertificates entry needs serverCertificate and privateKey",
                        "set both file paths",
                    );
                }
            }
        }
    }
    if tls.ca_crl.is_some() && (uses_credential || mode == ServerTlsMode::Simple) {
        s.error(
            Code::GatewayTls,
            &format!("{path}.caCrl"),
            "caCrl cannot be used with credentialName or in SIMPLE mode",
            "remove caCrl, or use MUTUAL with file certificates",
        );
    }
    if !tls.subject_alt_names.is_empty() && !matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual) {
        s.warn(
            Code::GatewayTls,
            &format!("{path}.subjectAltNames"),
            "subjectAltNames verify client certificates and have no effect without MUTUAL",
            "set `mode: MUTUAL` or remove subjectAltNames",
        );
    }
    check_versions(s, path, tls);
    check_cipher_suites(s, path, &tls.cipher_suites);
}

fn mode_name(m: ServerTlsMode) -> &'static str {
    match m {
        ServerTlsMode::Passthrough => "PASSTHROUGH",
        ServerTlsMode::Simple => "SIMPLE",
        ServerTlsMode::Mutual => "MUTUAL",
        ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
        ServerTlsMode::IstioMutual => "ISTIO_MUTUAL",
        ServerTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
    }
}

fn has_any_cert_field(t: &ServerTls) -> bool {
    t.server_certificate.is_some()
        || t.private_key.is_some()
        || t.ca_certificates.is_some()
        || t.credential_name.is_some()
        || !t.credential_names.is_empty()
        || !t.tls_certificates.is_empty()
}

fn cert_sources(t: &ServerTls) -> usize {
    [
        t.server_certificate.is_some() || t.private_key.is_some(),
        t.credential_name.is_some(),
        !t.credential_names.is_empty(),
        !t.tls_certificates.is_empty(),
    ]
    .iter()
    .filter(|b| **b)
    .count()
}

fn check_versions(s: &mut Sink, path: &str, tls: &ServerTls) {
    let (min, max) = (tls.min_protocol_version, tls.max_protocol_version);
    if let (Some(min), Some(max)) = (min, max) {
        if min != TlsProtocol::Auto && max != TlsProtocol::Auto && min > max {
            s.error(
                Code::GatewayTls,
                &format!("{path}.minProtocolVersion"),
                "minProtocolVersion is above maxProtocolVersion",
                "lower the minimum or raise the maximum",
            );
        }
    }
    let old = |v: Option<TlsProtocol>| matches!(v, Some(TlsProtocol::V1_0 | TlsProtocol::V1_1));
    if old(min) && tls.cipher_suites.is_empty() {
        s.warn(
            Code::GatewayTls,
            &format!("{path}.minProtocolVersion"),
            "TLS below 1.2 needs explicit cipherSuites to be usable",
            "set cipherSuites, or use TLSV1_2 or later",
        );
    }
}

/// Cipher suite names Istio accepts (Envoy's BoringSSL names).
pub const KNOWN_CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

/// Invalid or duplicate suites are dropped with a warning, as Istio does.
fn check_cipher_suites(s: &mut Sink, path: &str, suites: &[String]) {
    let mut seen = HashSet::new();
    for (i, c) in suites.iter().enumerate() {
        let p = format!("{path}.cipherSuites[{i}]");
        if !KNOWN_CIPHER_SUITES.contains(&c.as_str()) {
            s.warn(
                Code::CipherSuite,
                &p,
                format!("cipher suite `{c}` is not known and will be dropped"),
                "use a suite name such as ECDHE-RSA-AES128-GCM-SHA256",
            );
        } else if !seen.insert(c) {
            s.warn(
                Code::CipherSuite,
                &p,
                format!("cipher suite `{c}` is listed twice; the duplicate is dropped"),
                "list each suite once",
            );
        }
    }
}
