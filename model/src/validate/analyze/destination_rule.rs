//! Istio's CaCertificateAnalyzer: client TLS (SIMPLE or MUTUAL) that does not say which CA to
//! trust leaves the server unverified (IST0128 for the rule's policy, IST0129 per port), unless
//! the rule selects workloads and takes its certificates from a credentialName.

use crate::api::destination_rule::{ClientTls, ClientTlsMode, DestinationRule};
use crate::api::{Kind, Spec};
use crate::config::Config;
use crate::diag::{Code, Diagnostic};
use crate::validate::Sink;

pub fn analyze(config: &Config, out: &mut Vec<Diagnostic>) {
    for res in config.of_kind(Kind::DestinationRule) {
        let Spec::DestinationRule(dr) = &res.spec else { continue };
        let mut s = Sink::new(res);
        ca_certificates(&mut s, dr);
        out.extend(s.out);
    }
}

/// The mode's name when the TLS settings verify nothing, else None.
fn unverified(tls: Option<&ClientTls>, dr: &DestinationRule) -> Option<&'static str> {
    let tls = tls?;
    let mode = match tls.effective_mode() {
        ClientTlsMode::Simple => "SIMPLE",
        ClientTlsMode::Mutual => "MUTUAL",
        _ => return None,
    };
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    let from_credential = set(&tls.credential_name) && dr.workload_selector.is_some();
    (!set(&tls.ca_certificates) && !from_credential).then_some(mode)
}

fn ca_certificates(s: &mut Sink, dr: &DestinationRule) {
    let Some(tp) = &dr.traffic_policy else { return };
    let hint = "set `caCertificates` (or a credentialName with a CA) so the server's certificate is verified";
    if let Some(mode) = unverified(tp.tls.as_ref(), dr) {
        let msg = format!(
            "TLS mode {mode} for host `{}` without caCertificates: the server's identity is not verified",
            dr.host
        );
        s.warn(Code::NoCaCertificatesDestination, "spec.trafficPolicy.tls", msg, hint);
    }
    for (i, p) in tp.port_level_settings.iter().enumerate() {
        if let Some(mode) = unverified(p.tls.as_ref(), dr) {
            let port = p.port.as_ref().map_or(0, |p| p.number);
            let msg = format!(
                "TLS mode {mode} for host `{}` port {port} without caCertificates: the server's identity is not verified",
                dr.host
            );
            s.warn(
                Code::NoCaCertificatesPort,
                &format!("spec.trafficPolicy.portLevelSettings[{i}].tls"),
                msg,
                hint,
            );
        }
    }
}
