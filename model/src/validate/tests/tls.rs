//! TLS settings of Gateways and DestinationRules: which combinations Istio refuses or questions.

use super::*;

/// The findings on a DestinationRule whose traffic policy has these client `tls` settings.
fn client_tls_findings(tls: &str) -> Vec<Diagnostic> {
    check(&doc(
        "DestinationRule",
        &format!("{{host: a.example.com, trafficPolicy: {{tls: {tls}}}}}"),
    ))
}

/// How many findings a Gateway's HTTPS server with these `tls` settings draws at a field ending
/// in `field`.
fn gateway_tls_findings(tls: &str, field: &str) -> usize {
    let spec =
        format!("{{servers: [{{port: {{number: 443, name: https, protocol: HTTPS}}, hosts: ['*'], tls: {tls}}}]}}");
    check(&doc("Gateway", &spec))
        .into_iter()
        .filter(|d| d.field.as_deref().is_some_and(|f| f.ends_with(field)))
        .count()
}

#[test]
fn subject_alt_names_are_questioned_only_without_mutual() {
    let san_warnings = |tls: &str| gateway_tls_findings(tls, "subjectAltNames");
    assert_eq!(
        san_warnings("{mode: MUTUAL, credentialName: c, subjectAltNames: [client]}"),
        0
    );
    assert_eq!(san_warnings("{mode: SIMPLE, credentialName: c}"), 0);
    assert_eq!(
        san_warnings("{mode: SIMPLE, credentialName: c, subjectAltNames: [client]}"),
        1
    );
}

#[test]
fn gateway_tls_messages_name_the_mode() {
    let messages = |tls: &str| -> Vec<String> {
        let spec =
            format!("{{servers: [{{port: {{number: 443, name: https, protocol: HTTPS}}, hosts: ['*'], tls: {tls}}}]}}");
        check(&doc("Gateway", &spec))
            .into_iter()
            .filter(|d| d.code == Code::GatewayTls)
            .map(|d| d.message)
            .collect()
    };
    assert_eq!(
        messages("{mode: OPTIONAL_MUTUAL, serverCertificate: /c.pem}"),
        [
            "OPTIONAL_MUTUAL mode needs a private key",
            "OPTIONAL_MUTUAL mode needs caCertificates to verify client certificates"
        ]
    );
    assert_eq!(
        messages("{mode: SIMPLE, privateKey: /k.pem}"),
        ["SIMPLE mode needs a server certificate"]
    );
    assert_eq!(
        messages("{mode: AUTO_PASSTHROUGH, credentialName: c}"),
        ["certificates are ignored in AUTO_PASSTHROUGH mode"]
    );
    assert_eq!(
        messages("{mode: PASSTHROUGH, credentialName: c}"),
        ["certificates are ignored in PASSTHROUGH mode"]
    );
    assert_eq!(
        messages("{mode: MUTUAL, credentialName: c, caCertificates: /ca.pem, serverCertificate: /c.pem}")
            .iter()
            .filter(|m| m.contains("MUTUAL mode"))
            .count(),
        0
    );
}

#[test]
fn client_tls_settings_are_questioned_as_ignored_only_when_tls_is_off() {
    let ignored = |tls: &str| {
        client_tls_findings(tls)
            .into_iter()
            .filter(|d| d.code == Code::ClientTls && d.message.contains("ignored"))
            .count()
    };
    assert_eq!(ignored("{sni: a.example.com}"), 1);
    assert_eq!(ignored("{mode: DISABLE, credentialName: c}"), 1);
    assert_eq!(ignored("{mode: SIMPLE, sni: a.example.com}"), 0);
    assert_eq!(ignored("{mode: MUTUAL, credentialName: c, sni: a.example.com}"), 0);
}

#[test]
fn a_credential_name_is_refused_beside_any_one_of_the_file_fields() {
    // Istio: credentialName excludes clientCertificate, privateKey, caCertificates and caCrl,
    // each alone; ISTIO_MUTUAL excludes them too.
    let refused = |tls: &str| {
        client_tls_findings(tls)
            .into_iter()
            .filter(|d| d.code == Code::ClientTls && d.is_error())
            .map(|d| d.field.unwrap_or_default())
            .collect::<Vec<_>>()
    };
    for file in [
        "clientCertificate: /c",
        "privateKey: /k",
        "caCertificates: /ca",
        "caCrl: /crl",
    ] {
        assert_eq!(
            refused(&format!("{{mode: SIMPLE, credentialName: c, {file}}}")),
            ["spec.trafficPolicy.tls.credentialName"],
            "{file}"
        );
        assert_eq!(
            refused(&format!("{{mode: ISTIO_MUTUAL, {file}}}")),
            ["spec.trafficPolicy.tls"],
            "{file}"
        );
    }
    assert_eq!(refused("{mode: SIMPLE, credentialName: c}"), Vec::<String>::new());
}

#[test]
fn old_tls_versions_are_questioned_only_without_cipher_suites() {
    let version_warnings = |tls: &str| gateway_tls_findings(tls, "minProtocolVersion");
    assert_eq!(
        version_warnings("{mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_2}"),
        0
    );
    let with_ciphers =
        "{mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_0, cipherSuites: [ECDHE-RSA-AES128-SHA]}";
    assert_eq!(version_warnings(with_ciphers), 0);
    assert_eq!(
        version_warnings("{mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_0}"),
        1
    );
}

#[test]
fn a_cipher_suite_listed_twice_is_questioned_at_its_second_place() {
    let spec = "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: c, \
                cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256, ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256]}}]}";
    let fields: Vec<_> = check(&doc("Gateway", spec))
        .into_iter()
        .filter(|d| d.code == Code::CipherSuite)
        .filter_map(|d| d.field)
        .collect();
    assert_eq!(fields, ["spec.servers[0].tls.cipherSuites[2]"]);
}
