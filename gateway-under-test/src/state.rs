//! Gateway state shared by every connection: the compiled Plan behind an atomic pointer (a reload
//! never blocks a request), the last reload error, counters, and the access log.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::compile::Compiled;
use crate::conns::Conns;
use crate::limits::{BodyLimits, Limits};
use crate::telemetry::Telemetry;

/// The gateway's own counters (request metrics are in `telemetry`).
#[derive(Debug, Default)]
pub struct Stats {
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

/// Where access log lines go.
#[derive(Debug)]
pub enum AccessLog {
    Off,
    Stdout,
    File(Mutex<std::io::LineWriter<std::fs::File>>),
}

impl AccessLog {
    pub fn open(spec: &str) -> std::io::Result<AccessLog> {
        Ok(match spec {
            "off" | "" => AccessLog::Off,
            "stdout" | "/dev/stdout" => AccessLog::Stdout,
            path => AccessLog::File(Mutex::new(std::io::LineWriter::new(
                std::fs::OpenOptions::new().create(true).append(true).open(path)?,
            ))),
        })
    }

    pub fn enabled(&self) -> bool {
        !matches!(self, AccessLog::Off)
    }

    pub fn write(&self, line: &str) {
        match self {
            AccessLog::Off => {}
            AccessLog::Stdout => {
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            }
            AccessLog::File(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = writeln!(f, "{line}");
                }
            }
        }
    }
}

#[derive(Debug)]
pub struct State {
    pub current: ArcSwap<Compiled>,
    /// The diagnostics of the last rejected config, with when it was rejected.
    pub last_error: Mutex<Option<(SystemTime, String)>>,
    pub stats: Stats,
    /// Istio's and Envoy's request metrics.
    pub telemetry: Arc<Telemetry>,
    pub access_log: AccessLog,
    /// The access log's format (Istio's TEXT line by default).
    pub log_format: crate::logformat::Format,
    /// Plan listener port -> the address it is bound to.
    pub bound: Mutex<BTreeMap<u32, SocketAddr>>,
    pub limits: Limits,
    /// Open downstream connections and the gateway's phase.
    pub conns: Arc<Conns>,
    /// Request body limits and the bytes buffered over all connections.
    pub body: Arc<BodyLimits>,
}

impl State {
    pub fn new(
        compiled: Compiled,
        (access_log, log_format): (AccessLog, crate::logformat::Format),
        limits: Limits,
        telemetry: Arc<Telemetry>,
    ) -> Arc<State> {
        Arc::new(State {
            current: ArcSwap::from_pointee(compiled),
            last_error: Mutex::new(None),
            stats: Stats::default(),
            telemetry,
            access_log,
            log_format,
            bound: Mutex::new(BTreeMap::new()),
            conns: Conns::new(limits.connection_limit()),
            body: BodyLimits::new(&limits),
            limits,
        })
    }

    pub fn version(&self) -> u64 {
        self.current.load().version
    }
}
