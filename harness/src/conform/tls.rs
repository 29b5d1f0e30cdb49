//! TLS for conformance cases: certificates made for a suite (rcgen), and a client that reports
//! what the handshake gave (version, ALPN, the served certificate's names) or why it failed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::suite::{Certificate, TlsRequest};
use crate::load::client::tls::{provider, AcceptAny};

/// Writes every certificate of a suite (and its CAs) into `dir`.
/// When every file is already there (a kept `--certs` folder), they are reused as they are.
pub fn make_certificates(certs: &[Certificate], dir: &Path) -> Result<(), String> {
    let present = |name: String| dir.join(name).exists();
    if !certs.is_empty()
        && certs.iter().all(|c| {
            present(format!("{}.crt", c.name))
                && present(format!("{}.key", c.name))
                && present(format!("{}-ca.pem", c.ca.as_deref().unwrap_or("main")))
        })
    {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut cas: BTreeMap<String, rcgen::Issuer<'static, rcgen::KeyPair>> = BTreeMap::new();
    for c in certs {
        let ca = c.ca.clone().unwrap_or_else(|| "main".into());
        if !cas.contains_key(&ca) {
            let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, format!("{ca} CA"));
            let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
            std::fs::write(dir.join(format!("{ca}-ca.pem")), cert.pem()).map_err(|e| e.to_string())?;
            cas.insert(ca.clone(), rcgen::Issuer::new(params, key));
        }
        let issuer = &cas[&ca];
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params =
            rcgen::CertificateParams::new(c.hosts.clone()).map_err(|e| format!("certificate {}: {e}", c.name))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, c.hosts.first().cloned().unwrap_or_default());
        let cert = params.signed_by(&key, issuer).map_err(|e| e.to_string())?;
        std::fs::write(dir.join(format!("{}.crt", c.name)), cert.pem()).map_err(|e| e.to_string())?;
        std::fs::write(dir.join(format!("{}.key", c.name)), key.serialize_pem()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A server config for an echo workload: certificate `cert` from `dir`; with `client_ca`, client
/// certificates from that CA are required.
pub fn server_config(dir: &Path, cert: &str, client_ca: Option<&str>) -> Result<Arc<rustls::ServerConfig>, String> {
    let crt = dir.join(format!("{cert}.crt"));
    let chain = CertificateDer::pem_file_iter(&crt)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e} (is {cert} in the suite's certificates?)", crt.display()))?;
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{cert}.key"))).map_err(|e| e.to_string())?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(ca) => {
            let path = dir.join(format!("{ca}-ca.pem"));
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(&path).map_err(|e| format!("{}: {e}", path.display()))? {
                roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// TLS over `tcp` as `t` asks (`addr`: the server, for a request without SNI); Err starts with
/// `handshake:` when the handshake failed.
pub async fn connect(
    tcp: tokio::net::TcpStream,
    addr: SocketAddr,
    t: &TlsRequest,
    certs: &Path,
) -> Result<
    (
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        BTreeMap<String, String>,
    ),
    String,
> {
    let ca = certs.join(format!("{}-ca.pem", t.ca.as_deref().unwrap_or("main")));
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = match t.version.as_deref() {
        Some("1.2") => &[&rustls::version::TLS12],
        Some("1.3") => &[&rustls::version::TLS13],
        _ => rustls::DEFAULT_VERSIONS,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?;
    let builder = builder.with_root_certificates(roots);
    let mut config = match &t.client_cert {
        Some(name) => {
            let chain = CertificateDer::pem_file_iter(certs.join(format!("{name}.crt")))
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::from_pem_file(certs.join(format!("{name}.key"))).map_err(|e| e.to_string())?;
            builder.with_client_auth_cert(chain, key).map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = t.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    // Without an SNI the name is the address (rustls sends no SNI for an IP), and it is not
    // verified: the case is about which certificate the server picks.
    let name = match &t.sni {
        Some(s) => ServerName::try_from(s.clone()).map_err(|_| format!("bad SNI {s}"))?,
        None => ServerName::IpAddress(addr.ip().into()),
    };
    if t.sni.is_none() {
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(AcceptAny(provider())));
    }
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let mut facts = BTreeMap::new();
    let conn = stream.get_ref().1;
    if let Some(v) = conn.protocol_version() {
        facts.insert("version".into(), format!("{v:?}"));
    }
    if let Some(a) = conn.alpn_protocol() {
        facts.insert("alpn".into(), String::from_utf8_lossy(a).into_owned());
    }
    if let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) {
        if let Ok(parsed) = webpki::EndEntityCert::try_from(cert) {
            if let Some(n) = parsed.valid_dns_names().next() {
                facts.insert("san".into(), n.to_string());
            }
        }
    }
    Ok((stream, facts))
}
