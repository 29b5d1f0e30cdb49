//! Gateway state shared by every connection: the compiled Plan behind an atomic pointer (a reload
//! never blocks a request), the last reload error, counters, and the access log.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::compile::Compiled;
use crate::conns::Conns;
use crate::limits::{BodyLimits, Limits};

/// Upper bounds (ms) of the upstream time histogram buckets.
pub const BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000];

#[derive(Debug, Default)]
pub struct Stats {
    /// cluster -> response code -> requests.
    pub requests: Mutex<HashMap<String, HashMap<u16, u64>>>,
    pub upstream_buckets: [AtomicU64; 12],
    pub upstream_count: AtomicU64,
    pub upstream_sum_ms: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

impl Stats {
    pub fn record(&self, code: u16, cluster: &str, upstream_ms: Option<u128>) {
        if let Ok(mut m) = self.requests.lock() {
            // The cluster's name is copied once, on its first request.
            match m.get_mut(cluster) {
                Some(codes) => *codes.entry(code).or_insert(0) += 1,
                None => {
                    m.insert(cluster.to_string(), HashMap::from([(code, 1)]));
                }
            }
        }
        if let Some(ms) = upstream_ms {
            let ms = ms.min(u128::from(u64::MAX)) as u64;
            self.upstream_count.fetch_add(1, Ordering::Relaxed);
            self.upstream_sum_ms.fetch_add(ms, Ordering::Relaxed);
            for (i, le) in BUCKETS_MS.iter().enumerate() {
                if ms <= *le {
                    self.upstream_buckets[i].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
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
    pub access_log: AccessLog,
    /// Plan listener port -> the address it is bound to.
    pub bound: Mutex<BTreeMap<u32, SocketAddr>>,
    pub limits: Limits,
    /// Open downstream connections and the gateway's phase.
    pub conns: Arc<Conns>,
    /// Request body limits and the bytes buffered over all connections.
    pub body: Arc<BodyLimits>,
}

impl State {
    pub fn new(compiled: Compiled, access_log: AccessLog, limits: Limits) -> Arc<State> {
        Arc::new(State {
            current: ArcSwap::from_pointee(compiled),
            last_error: Mutex::new(None),
            stats: Stats::default(),
            access_log,
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
