//! TLS origination (DestinationRule `tls` SIMPLE and MUTUAL): the client config of a cluster (CA
//! file or the system's roots, client certificate, `credentialName`, `insecureSkipVerify`, SAN
//! checks against `subjectAltNames`), and a connector that dials one endpoint and speaks TLS with
//! the request's host (or `sni`) as the server name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use mesh_model::api::destination_rule::{ClientTls, ClientTlsMode};
use mesh_model::plan::Cluster;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;

/// The TLS a cluster originates, or None for plaintext.
#[derive(Debug, Clone)]
pub struct Origination {
    pub config: Arc<ClientConfig>,
    /// `tls.sni`; None: the request's host.
    pub sni: Option<String>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the cluster's origination; Err explains a setting that cannot work (it fails as UF).
pub fn for_cluster(c: &Cluster, credentials: Option<&Path>) -> Result<Option<Origination>, String> {
    let tls = &c.policy.tls;
    match tls.effective_mode() {
        ClientTlsMode::Disable => return Ok(None),
        ClientTlsMode::IstioMutual => {
            return Err("ISTIO_MUTUAL needs the mesh's workload identity; use MUTUAL with files".into())
        }
        ClientTlsMode::Simple | ClientTlsMode::Mutual => {}
    }
    let cred = |f: &str| {
        credentials
            .zip(tls.credential_name.as_ref())
            .map(|(d, n)| d.join(n).join(f))
            .filter(|p| p.exists())
    };
    let sans: Vec<String> = if tls.subject_alt_names.is_empty() {
        c.subject_alt_names.clone()
    } else {
        tls.subject_alt_names.clone()
    };
    let alpn: Vec<Vec<u8>> = if c.protocol.is_http2() {
        vec![b"h2".to_vec()]
    } else if c.protocol.is_http() {
        vec![b"http/1.1".to_vec()]
    } else {
        Vec::new()
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = if tls.insecure_skip_verify == Some(true) {
        Arc::new(Verifier {
            inner: None,
            sans: Vec::new(),
        })
    } else {
        let mut roots = RootCertStore::empty();
        match tls
            .ca_certificates
            .as_ref()
            .map(PathBuf::from)
            .or_else(|| cred("ca.crt"))
        {
            Some(ca) => {
                for cert in CertificateDer::pem_file_iter(&ca).map_err(|e| format!("{}: {e}", ca.display()))? {
                    roots
                        .add(cert.map_err(|e| format!("{}: {e}", ca.display()))?)
                        .map_err(|e| e.to_string())?;
                }
            }
            // No caCertificates: the system's trust store, as Istio does.
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| e.to_string())?;
        Arc::new(Verifier {
            inner: Some(inner),
            sans,
        })
    };
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
    let mut config = if tls.effective_mode() == ClientTlsMode::Mutual {
        let cert = tls
            .client_certificate
            .as_ref()
            .map(PathBuf::from)
            .or_else(|| cred("tls.crt"))
            .ok_or("MUTUAL needs clientCertificate")?;
        let key = tls
            .private_key
            .as_ref()
            .map(PathBuf::from)
            .or_else(|| cred("tls.key"))
            .ok_or("MUTUAL needs privateKey")?;
        let chain = CertificateDer::pem_file_iter(&cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {e}", cert.display()))?;
        let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| format!("{}: {e}", key.display()))?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("client certificate: {e}"))?
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = alpn;
    Ok(Some(Origination {
        config: Arc::new(config),
        sni: tls.sni.clone(),
    }))
}

/// Verifies the chain with webpki; then the server name, or, when SANs are configured, that the
/// certificate carries one of them. `inner: None` is `insecureSkipVerify`.
#[derive(Debug)]
struct Verifier {
    inner: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    sans: Vec<String>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else {
            return Ok(ServerCertVerified::assertion());
        };
        if self.sans.is_empty() {
            return inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        }
        // Chain and validity through webpki with the first SAN as the name, then any SAN matches.
        let mut last = None;
        for san in &self.sans {
            let Ok(name) = ServerName::try_from(san.clone()) else {
                continue;
            };
            match inner.verify_server_cert(end_entity, intermediates, &name, ocsp, now) {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| rustls::Error::General("no usable subjectAltNames".into())))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

/// Opens TCP as `to` says and TLS with `name`.
pub async fn connect(
    o: &Origination,
    to: &crate::upstream::Dial,
    name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = to.connect().await?;
    let sni = o.sni.clone().unwrap_or_else(|| name.to_string());
    let server_name = ServerName::try_from(sni.clone())
        .map_err(|_| std::io::Error::other(format!("`{sni}` is not a valid TLS server name")))?;
    tokio_rustls::TlsConnector::from(o.config.clone())
        .connect(server_name, tcp)
        .await
        .map_err(|e| std::io::Error::other(format!("TLS error: {e}")))
}

/// A TLS connection as the pooled client uses it.
#[derive(Debug)]
pub struct TlsConn(pub TokioIo<tokio_rustls::client::TlsStream<TcpStream>>);

impl Connection for TlsConn {
    fn connected(&self) -> Connected {
        let h2 = self.0.inner().get_ref().1.alpn_protocol() == Some(b"h2");
        let c = Connected::new();
        if h2 {
            c.negotiated_h2()
        } else {
            c
        }
    }
}

impl hyper::rt::Read for TlsConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TlsConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A connector that dials one endpoint and originates TLS, the server name taken from the URI.
#[derive(Debug, Clone)]
pub struct TlsConnector {
    pub to: crate::upstream::Dial,
    pub origination: Origination,
}

type ConnectFuture = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<TlsConn>> + Send>>;

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TlsConn;
    type Error = std::io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Box::pin(async move {
            connect(&this.origination, &this.to, &host)
                .await
                .map(|s| TlsConn(TokioIo::new(s)))
        })
    }
}

/// Whether a cluster originates TLS (for callers that only need to know).
pub fn originates(tls: &ClientTls) -> bool {
    matches!(
        tls.effective_mode(),
        ClientTlsMode::Simple | ClientTlsMode::Mutual | ClientTlsMode::IstioMutual
    )
}
