//! Downstream TLS (rustls): server configs from a Gateway server's `tls` (files, credential
//! directories, RSA + ECDSA pairs, client certificates, versions, cipher suites), and reading the
//! ClientHello without consuming it, so a connection can be terminated or passed through by SNI.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use mesh_model::api::gateway::{ServerTls, ServerTlsMode, TlsProtocol};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The files of one certificate source.
#[derive(Debug, Clone)]
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    ca: Option<PathBuf>,
    crl: Option<PathBuf>,
}

/// Every file a server's TLS reads (watched for rotation like config files).
pub fn files(tls: &ServerTls, credentials: Option<&Path>) -> Vec<PathBuf> {
    let Ok(sources) = sources(tls, credentials) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for s in sources {
        out.extend([Some(s.cert), Some(s.key), s.ca, s.crl].into_iter().flatten());
    }
    out.extend(tls.ca_certificates.iter().map(PathBuf::from));
    out
}

fn credential(dir: Option<&Path>, name: &str) -> Result<CertFiles, String> {
    let dir = dir.ok_or_else(|| {
        format!("credentialName `{name}` needs --credentials DIR (a folder per name with tls.crt, tls.key, ca.crt)")
    })?;
    let d = dir.join(name);
    let opt = |f: &str| Some(d.join(f)).filter(|p| p.exists());
    if !d.join("tls.crt").exists() {
        return Err(format!(
            "credential `{name}`: {} does not exist",
            d.join("tls.crt").display()
        ));
    }
    Ok(CertFiles {
        cert: d.join("tls.crt"),
        key: d.join("tls.key"),
        ca: opt("ca.crt"),
        crl: opt("ca.crl"),
    })
}

fn sources(tls: &ServerTls, credentials: Option<&Path>) -> Result<Vec<CertFiles>, String> {
    let mut out = Vec::new();
    if let (Some(c), Some(k)) = (&tls.server_certificate, &tls.private_key) {
        out.push(CertFiles {
            cert: c.into(),
            key: k.into(),
            ca: tls.ca_certificates.as_ref().map(PathBuf::from),
            crl: tls.ca_crl.as_ref().map(PathBuf::from),
        });
    }
    for name in tls.credential_name.iter().chain(&tls.credential_names) {
        out.push(credential(credentials, name)?);
    }
    for c in &tls.tls_certificates {
        if let (Some(cert), Some(key)) = (&c.server_certificate, &c.private_key) {
            out.push(CertFiles {
                cert: cert.into(),
                key: key.into(),
                ca: c.ca_certificates.as_ref().map(PathBuf::from),
                crl: None,
            });
        }
    }
    Ok(out)
}

fn provider(cipher_suites: &[String]) -> CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    if !cipher_suites.is_empty() {
        // cipherSuites select TLS 1.2 suites (as in Envoy); TLS 1.3 suites stay. Unknown names are
        // dropped (validation warned).
        p.cipher_suites.retain(|s| match s {
            SupportedCipherSuite::Tls13(_) => true,
            SupportedCipherSuite::Tls12(_) => cipher_suites.iter().any(|n| istio_name(s).is_some_and(|m| m == n)),
        });
    }
    p
}

/// Istio's (BoringSSL's) names for rustls's TLS 1.2 suites.
fn istio_name(s: &SupportedCipherSuite) -> Option<&'static str> {
    use rustls::CipherSuite::*;
    Some(match s.suite() {
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => return None,
    })
}

fn versions(tls: &ServerTls) -> Vec<&'static rustls::SupportedProtocolVersion> {
    // rustls speaks TLS 1.2 and 1.3; Istio's minimum defaults to 1.2.
    let min = tls.min_protocol_version.unwrap_or(TlsProtocol::V1_2);
    let max = tls.max_protocol_version.unwrap_or(TlsProtocol::V1_3);
    let auto = |v: TlsProtocol, d: TlsProtocol| if v == TlsProtocol::Auto { d } else { v };
    let (min, max) = (auto(min, TlsProtocol::V1_2), auto(max, TlsProtocol::V1_3));
    let mut v = Vec::new();
    if min <= TlsProtocol::V1_2 && max >= TlsProtocol::V1_2 {
        v.push(&rustls::version::TLS12);
    }
    if max >= TlsProtocol::V1_3 {
        v.push(&rustls::version::TLS13);
    }
    v
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

fn certified_key(f: &CertFiles, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, String> {
    let chain = read_certs(&f.cert)?;
    let key = PrivateKeyDer::from_pem_file(&f.key).map_err(|e| format!("{}: {e}", f.key.display()))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: {e}", f.key.display()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// Serves the first certificate whose key the client can verify (an RSA and an ECDSA pair).
#[derive(Debug)]
struct Certs(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        self.0
            .iter()
            .find(|k| k.key.choose_scheme(schemes).is_some())
            .or(self.0.first())
            .cloned()
    }
}

/// The server config of one terminating filter chain.
pub fn server_config(tls: &ServerTls, alpn: &[&[u8]], credentials: Option<&Path>) -> Result<Arc<ServerConfig>, String> {
    let mode = tls.effective_mode();
    if mode == ServerTlsMode::IstioMutual {
        return Err("ISTIO_MUTUAL needs the mesh's workload identity, which a file-configured gateway does not have; use MUTUAL with caCertificates".into());
    }
    let provider = Arc::new(provider(&tls.cipher_suites));
    let sources = sources(tls, credentials)?;
    if sources.is_empty() {
        return Err("the server has no certificate".into());
    }
    let keys = sources
        .iter()
        .map(|s| certified_key(s, &provider))
        .collect::<Result<Vec<_>, _>>()?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(tls))
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match mode {
        ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            let ca = sources
                .iter()
                .find_map(|s| s.ca.clone())
                .or_else(|| tls.ca_certificates.as_ref().map(PathBuf::from));
            let ca = ca.ok_or("MUTUAL needs caCertificates (or ca.crt in the credential)")?;
            let mut roots = RootCertStore::empty();
            for c in read_certs(&ca)? {
                roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if let Some(crl) = sources.iter().find_map(|s| s.crl.clone()) {
                let crls = CertificateRevocationListDer::pem_file_iter(&crl)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("{}: {e}", crl.display()))?;
                v = v.with_crls(crls);
            }
            if mode == ServerTlsMode::OptionalMutual {
                v = v.allow_unauthenticated();
            }
            let inner = v.build().map_err(|e| format!("client verification: {e}"))?;
            let pins = Pins::new(tls);
            if pins.is_empty() {
                builder.with_client_cert_verifier(inner)
            } else {
                builder.with_client_cert_verifier(Arc::new(Pinned { inner, pins }))
            }
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(Certs(keys)));
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(Arc::new(config))
}

/// `subjectAltNames`, `verifyCertificateSpki` (base64 SHA-256 of the public key info) and
/// `verifyCertificateHash` (hex SHA-256 of the certificate) for client certificates.
#[derive(Debug, Default)]
struct Pins {
    sans: Vec<String>,
    spki: Vec<String>,
    hashes: Vec<String>,
}

impl Pins {
    fn new(tls: &ServerTls) -> Pins {
        let norm = |h: &String| h.replace(':', "").to_ascii_lowercase();
        Pins {
            sans: tls.subject_alt_names.clone(),
            spki: tls.verify_certificate_spki.clone(),
            hashes: tls.verify_certificate_hash.iter().map(norm).collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.sans.is_empty() && self.spki.is_empty() && self.hashes.is_empty()
    }

    /// Why the certificate is refused, if it is.
    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), String> {
        let parsed =
            webpki::EndEntityCert::try_from(cert).map_err(|e| format!("unparsable client certificate: {e}"))?;
        if !self.sans.is_empty() {
            let names: Vec<String> = parsed
                .valid_dns_names()
                .chain(parsed.valid_uri_names())
                .map(str::to_string)
                .collect();
            if !names.iter().any(|n| self.sans.contains(n)) {
                return Err(format!(
                    "client certificate SANs {names:?} match none of subjectAltNames"
                ));
            }
        }
        if !self.spki.is_empty() || !self.hashes.is_empty() {
            use base64::Engine;
            let spki = ring::digest::digest(&ring::digest::SHA256, parsed.subject_public_key_info().as_ref());
            let spki = base64::engine::general_purpose::STANDARD.encode(spki.as_ref());
            let hash: String = ring::digest::digest(&ring::digest::SHA256, cert.as_ref())
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if !self.spki.contains(&spki) && !self.hashes.contains(&hash) {
                return Err("client certificate matches no verifyCertificateSpki or verifyCertificateHash pin".into());
            }
        }
        Ok(())
    }
}

/// A client verifier that adds the pins to the CA verification.
#[derive(Debug)]
struct Pinned {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    pins: Pins,
}

impl rustls::server::danger::ClientCertVerifier for Pinned {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let ok = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        self.pins.check(end_entity).map_err(rustls::Error::General)?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What the ClientHello says, read without consuming the connection's bytes.
#[derive(Debug, Default, Clone)]
pub struct Hello {
    pub tls: bool,
    pub sni: Option<String>,
}

/// Reads until the ClientHello is complete (or the first byte shows it is not TLS). Returns the
/// bytes read, to be replayed.
pub async fn peek_hello<S: AsyncRead + Unpin>(io: &mut S) -> std::io::Result<(Hello, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Ok((Hello::default(), buf));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(hello) = sniff_hello(&buf) {
            return Ok((hello, buf));
        }
    }
}

/// What the first bytes of a connection say: not TLS (first byte not a handshake record), a
/// ClientHello with its SNI, TLS without a readable ClientHello within 64 KiB, or None while
/// the ClientHello is incomplete.
pub fn sniff_hello(buf: &[u8]) -> Option<Hello> {
    if buf.first() != Some(&0x16) {
        return Some(Hello::default());
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd: &[u8] = buf;
    let _ = acceptor.read_tls(&mut rd);
    match acceptor.accept() {
        Ok(Some(accepted)) => {
            let sni = accepted.client_hello().server_name().map(|s| s.to_ascii_lowercase());
            Some(Hello { tls: true, sni })
        }
        Ok(None) if buf.len() < 64 * 1024 => None,
        _ => Some(Hello { tls: true, sni: None }),
    }
}

/// A stream that first yields bytes already read from it.
#[derive(Debug)]
pub struct Rewind<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Rewind { prefix, pos: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Whether an SNI name is served by a chain's server name (`*.x.com` covers `a.x.com`, not `x.com`).
pub fn name_matches(pattern: &str, sni: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => sni.ends_with(suffix) && sni.len() > suffix.len(),
        None => pattern == sni,
    }
}

/// How specific a match is: exact beats wildcard, longer wildcard beats shorter.
pub fn specificity(pattern: &str) -> (bool, usize) {
    (!pattern.starts_with('*'), pattern.len())
}
