//! TLS contexts: a Gateway server's `tls` as a DownstreamTlsContext (`BuildListenerTLSContext` in
//! istio/istio `pilot/pkg/networking/core/listener.go`) and a DestinationRule's `tls` as an
//! UpstreamTlsContext (`cluster_tls.go`), with certificates read from files.

use serde_json::{json, Map, Value};

use crate::api::destination_rule::{ClientTls, ClientTlsMode};
use crate::api::gateway::{ServerTls, ServerTlsMode, TlsProtocol};

use super::{typed, EnvoyOptions};

/// ALPN a gateway's HTTPS server offers (`util.ALPNHttp`).
const ALPN_HTTP: [&str; 2] = ["h2", "http/1.1"];

fn file(path: &str) -> Value {
    json!({"filename": path})
}

fn credential_file(opts: &EnvoyOptions, name: &str, key: &str) -> String {
    let dir = opts.credentials.as_deref().unwrap_or("credentials");
    format!("{}/{name}/{key}", dir.trim_end_matches('/'))
}

fn tls_version(v: Option<TlsProtocol>, default: &'static str) -> &'static str {
    match v {
        Some(TlsProtocol::V1_0) => "TLSv1_0",
        Some(TlsProtocol::V1_1) => "TLSv1_1",
        Some(TlsProtocol::V1_2) => "TLSv1_2",
        Some(TlsProtocol::V1_3) => "TLSv1_3",
        Some(TlsProtocol::Auto) | None => default,
    }
}

/// `{tls_certificates, validation_context}` for a server: its certificate pairs (files, each
/// credential, `tlsCertificates`) and the CA that checks client certificates.
fn server_material(t: &ServerTls, opts: &EnvoyOptions) -> (Vec<Value>, Option<String>, Option<String>) {
    let mut certs = Vec::new();
    let mut ca = t.ca_certificates.clone();
    let crl = t.ca_crl.clone();
    if let (Some(c), Some(k)) = (&t.server_certificate, &t.private_key) {
        certs.push(json!({"certificate_chain": file(c), "private_key": file(k)}));
    }
    for name in t.credential_name.iter().chain(&t.credential_names) {
        certs.push(json!({
            "certificate_chain": file(&credential_file(opts, name, "tls.crt")),
            "private_key": file(&credential_file(opts, name, "tls.key")),
        }));
        if ca.is_none()
            && matches!(
                t.effective_mode(),
                ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
            )
        {
            ca = Some(credential_file(opts, name, "ca.crt"));
        }
    }
    if let Some(name) = &t.ca_cert_credential_name {
        ca = Some(credential_file(opts, name, "ca.crt"));
    }
    for c in &t.tls_certificates {
        if let (Some(cert), Some(key)) = (&c.server_certificate, &c.private_key) {
            certs.push(json!({"certificate_chain": file(cert), "private_key": file(key)}));
            ca = ca.or_else(|| c.ca_certificates.clone());
        }
    }
    (certs, ca, crl)
}

/// SAN matchers as Istio writes them (`match_typed_subject_alt_names`, DNS exact; `spiffe://` as URI).
fn san_matchers(sans: &[String]) -> Vec<Value> {
    sans.iter()
        .map(|s| {
            let kind = if s.starts_with("spiffe://") { "URI" } else { "DNS" };
            json!({"san_type": kind, "matcher": {"exact": s}})
        })
        .collect()
}

/// The DownstreamTlsContext of a terminating chain; `http` offers ALPN h2 and http/1.1.
pub fn downstream(t: &ServerTls, http: bool, opts: &EnvoyOptions) -> Value {
    let mode = t.effective_mode();
    let (certs, ca, crl) = server_material(t, opts);
    let mut params = Map::new();
    params.insert(
        "tls_minimum_protocol_version".into(),
        json!(tls_version(t.min_protocol_version, "TLSv1_2")),
    );
    params.insert(
        "tls_maximum_protocol_version".into(),
        json!(tls_version(t.max_protocol_version, "TLSv1_3")),
    );
    if !t.cipher_suites.is_empty() {
        params.insert("cipher_suites".into(), json!(t.cipher_suites));
    }
    let mut common = Map::new();
    common.insert("tls_params".into(), Value::Object(params));
    common.insert("tls_certificates".into(), json!(certs));
    if http {
        common.insert("alpn_protocols".into(), json!(ALPN_HTTP));
    }
    let mutual = matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual);
    let mut validation = Map::new();
    if mutual {
        if let Some(ca) = ca {
            validation.insert("trusted_ca".into(), file(&ca));
        }
        if let Some(crl) = crl {
            validation.insert("crl".into(), file(&crl));
        }
    }
    if !t.subject_alt_names.is_empty() {
        validation.insert(
            "match_typed_subject_alt_names".into(),
            json!(san_matchers(&t.subject_alt_names)),
        );
    }
    if !t.verify_certificate_spki.is_empty() {
        validation.insert("verify_certificate_spki".into(), json!(t.verify_certificate_spki));
    }
    if !t.verify_certificate_hash.is_empty() {
        validation.insert("verify_certificate_hash".into(), json!(t.verify_certificate_hash));
    }
    if !validation.is_empty() {
        common.insert("validation_context".into(), Value::Object(validation));
    }
    let ctx = json!({
        "common_tls_context": Value::Object(common),
        "require_client_certificate": mode == ServerTlsMode::Mutual,
    });
    typed(
        "envoy.transport_sockets.tls",
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        ctx,
    )
}

/// Whether a cluster's policy originates TLS (ISTIO_MUTUAL needs the mesh's certificates and is
/// not exported).
pub fn originates(t: &ClientTls) -> bool {
    matches!(t.effective_mode(), ClientTlsMode::Simple | ClientTlsMode::Mutual)
}

/// The UpstreamTlsContext of an originating cluster, or None when it sends plaintext.
/// `sans` are the ServiceEntry's, used when the rule names none.
pub fn upstream(t: &ClientTls, sans: &[String], host: &str, http: bool, opts: &EnvoyOptions) -> Option<Value> {
    if !originates(t) {
        return None;
    }
    let mode = t.effective_mode();
    let cred = |key: &str| t.credential_name.as_ref().map(|n| credential_file(opts, n, key));
    let mut common = Map::new();
    if mode == ClientTlsMode::Mutual {
        let cert = t.client_certificate.clone().or_else(|| cred("tls.crt"));
        let key = t.private_key.clone().or_else(|| cred("tls.key"));
        if let (Some(c), Some(k)) = (cert, key) {
            common.insert(
                "tls_certificates".into(),
                json!([{"certificate_chain": file(&c), "private_key": file(&k)}]),
            );
        }
    }
    if t.insecure_skip_verify != Some(true) {
        let ca = t
            .ca_certificates
            .clone()
            .or_else(|| cred("ca.crt"))
            .unwrap_or_else(|| opts.system_ca_file.clone());
        let mut validation = Map::new();
        validation.insert("trusted_ca".into(), file(&ca));
        let sans = if t.subject_alt_names.is_empty() {
            sans
        } else {
            &t.subject_alt_names
        };
        if !sans.is_empty() {
            validation.insert("match_typed_subject_alt_names".into(), json!(san_matchers(sans)));
        }
        if let Some(crl) = &t.ca_crl {
            validation.insert("crl".into(), file(crl));
        }
        common.insert("validation_context".into(), Value::Object(validation));
    }
    let mut ctx = Map::new();
    ctx.insert("common_tls_context".into(), Value::Object(common));
    // Without `sni`, Istio lets Envoy take it from the request's Host (auto_sni on the cluster's
    // protocol options) for HTTP; a TCP cluster has no Host, so the service host is sent.
    match (&t.sni, http) {
        (Some(sni), _) => {
            ctx.insert("sni".into(), json!(sni));
        }
        (None, false) if !host.starts_with('*') => {
            ctx.insert("sni".into(), json!(host));
        }
        (None, _) => {}
    }
    Some(typed(
        "envoy.transport_sockets.tls",
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        Value::Object(ctx),
    ))
}
