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
        let _ = writeln!(out, "ready");
        let _ = out.flush();
        drop(out);
        let _ = tokio::signal::ctrl_c().await;
        exit::OK
    })
}
