//! `meshbench echo --service reviews --version v2 --http ADDR --grpc ADDR --tcp ADDR`: runs an
//! echo workload (Istio's echo format) until interrupted.

use std::io::Write;
use std::net::SocketAddr;

use super::exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value = "echo")]
    pub service: String,
    #[arg(long, default_value = "v1")]
    pub version: String,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Instance name reported as `Hostname` (default `<service>-<version>-0`).
    #[arg(long)]
    pub hostname: Option<String>,
    /// HTTP/1.1 + h2c address; repeatable.
    #[arg(long)]
    pub http: Vec<SocketAddr>,
    /// gRPC (h2c) address; repeatable.
    #[arg(long)]
    pub grpc: Vec<SocketAddr>,
    /// TCP echo address; repeatable.
    #[arg(long)]
    pub tcp: Vec<SocketAddr>,
    /// TCP ports only echo (no identity lines first), as a request/response load test needs.
    #[arg(long)]
    pub tcp_plain: bool,
    /// Serve the HTTP ports over TLS with `<DIR>/<NAME>.crt` and `.key` (`--tls-cert DIR/NAME`,
    /// a suite's certificate folder and name).
    #[arg(long, value_name = "DIR/NAME")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// With --tls-cert: require client certificates signed by `<DIR>/<NAME>-ca.pem`.
    #[arg(long, value_name = "NAME", requires = "tls_cert")]
    pub client_ca: Option<String>,
    /// Answer `GET /requests` here with how many HTTP and gRPC requests were answered (what a
    /// conformance run reads from an echo in a container).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
}

pub fn run(args: &Args) -> u8 {
    if args.http.is_empty() && args.grpc.is_empty() && args.tcp.is_empty() {
        eprintln!("error: give at least one of --http, --grpc, --tcp");
        return exit::USAGE;
    }
    let mut b = mesh_echo::Echo::builder(&args.service)
        .version(&args.version)
        .namespace(&args.namespace)
        .tcp_greeting(!args.tcp_plain);
    if let Some(h) = &args.hostname {
        b = b.hostname(h);
    }
    for a in &args.http {
        b = b.http(*a);
    }
    for a in &args.grpc {
        b = b.grpc(*a);
    }
    for a in &args.tcp {
        b = b.tcp(*a);
    }
    if let Some(cert) = &args.tls_cert {
        let (dir, name) = (cert.parent().unwrap_or(std::path::Path::new(".")), cert.file_name());
        let name = name.map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match crate::conform::tls::server_config(dir, &name, args.client_ca.as_deref()) {
            Ok(config) => b = b.tls(config),
            Err(e) => {
                eprintln!("error: --tls-cert {}: {e}", cert.display());
                return exit::USAGE;
            }
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::IO;
        }
    };
    rt.block_on(async move {
        let echo = match b.start().await {
            Ok(e) => e,
            Err(e) => {
                eprintln!("error: cannot listen: {e}");
                return exit::IO;
            }
        };
        // The addresses, then `ready` (for a parent reading them); a closed stdout is no reason to stop.
        let mut out = std::io::stdout().lock();
        for (kind, addrs) in [("http", &echo.http), ("grpc", &echo.grpc), ("tcp", &echo.tcp)] {
            for a in addrs.iter() {
                let _ = writeln!(out, "{kind} {a}");
            }
        }
        if let Some(admin) = args.admin {
            match tokio::net::TcpListener::bind(admin).await {
                Ok(l) => {
                    let _ = writeln!(out, "admin {}", l.local_addr().unwrap_or(admin));
                    tokio::spawn(serve_admin(l, echo.counter()));
                }
                Err(e) => {
                    eprintln!("error: cannot listen on --admin {admin}: {e}");
                    return exit::IO;
                }
            }
        }
        let _ = writeln!(out, "ready");
        let _ = out.flush();
        drop(out);
        let _ = tokio::signal::ctrl_c().await;
        exit::OK
    })
}

/// `GET /requests` -> the count, as text; anything else 404.
async fn serve_admin(listener: tokio::net::TcpListener, requests: std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use hyper::service::service_fn;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let requests = requests.clone();
        let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let found = req.uri().path() == "/requests";
            let n = requests.load(std::sync::atomic::Ordering::SeqCst);
            let resp = hyper::Response::builder()
                .status(if found { 200 } else { 404 })
                .header("content-type", "text/plain")
                .body(http_body_util::Full::new(bytes::Bytes::from(if found {
                    format!("{n}\n")
                } else {
                    "GET /requests\n".to_string()
                })));
            async move { resp }
        });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
        );
    }
}
