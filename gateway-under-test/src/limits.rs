//! What a downstream peer may cost the gateway: timeouts, header sizes, buffered body bytes and
//! connections, with Envoy's defaults (and the values of Envoy's edge best practices where Envoy
//! leaves a limit off), each a command-line flag.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `--flag 10s`: Go duration syntax, as Istio writes durations.
fn duration(s: &str) -> Result<Duration, String> {
    mesh_model::api::Duration::parse(s).map(|d| d.as_std())
}

#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Time an HTTP/1.1 client has to send a request's headers, from their first byte to their
    /// last (Envoy's `request_headers_timeout`; nginx `client_header_timeout` is 60 s). Past it
    /// the connection is closed. A connection waiting for its next request is the idle
    /// timeout's. 0: no limit.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub request_headers_timeout: Duration,
    /// Time for a whole request body to arrive (Envoy's `request_timeout`, 300 s in Envoy's edge
    /// best practices). Past it: 408.
    #[arg(long, default_value = "300s", value_parser = duration)]
    pub request_timeout: Duration,
    /// Time a connection may stay open without a request (Envoy's `idle_timeout`, 1 h).
    #[arg(long, default_value = "1h", value_parser = duration)]
    pub idle_timeout: Duration,
    /// Time a TLS client has for its ClientHello and the handshake (Envoy's
    /// `listener_filters_timeout` is 15 s for the ClientHello).
    #[arg(long, default_value = "15s", value_parser = duration)]
    pub tls_handshake_timeout: Duration,
    /// Largest request header block, in KiB (Envoy's `max_request_headers_kb`, 60): 431 above.
    #[arg(long, default_value = "60")]
    pub max_request_headers_kb: usize,
    /// Most request headers (Envoy's `max_headers_count`, 100): 431 above.
    #[arg(long, default_value = "100")]
    pub max_headers_count: usize,
    /// Request body bytes kept so that a retry can send the body again, in KiB (Envoy's retry
    /// buffer). A body whose Content-Length is within it is read whole before the upstream is
    /// tried; any other body (no Content-Length, as gRPC streams and chunked uploads, or a
    /// larger one) streams to the upstream as it arrives, its first bytes kept up to this
    /// limit; a longer one is not retried.
    #[arg(long, default_value = "16384")]
    pub max_request_body_kb: usize,
    /// Bytes of request bodies buffered at once over all connections, in MiB; a body that would
    /// pass it is refused with 503 and `x-envoy-overloaded: true` (what Envoy's overload manager
    /// does at its heap limit), so a flood of uploads cannot exhaust memory.
    #[arg(long, default_value = "256")]
    pub buffer_budget_mb: usize,
    /// Downstream connections at once, over all listeners (Envoy's
    /// `global_downstream_max_connections`). Default: half the open-file limit, the other half
    /// kept for upstream connections and files. At the limit the connection idle longest is
    /// closed to make room, or, with none idle, the new one.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Requests one downstream connection may carry (Envoy's `max_requests_per_connection`, off
    /// by default). After the last one, HTTP/1.1 answers with `Connection: close` and HTTP/2 sends
    /// GOAWAY, so a client spreads its requests over new connections.
    #[arg(long)]
    pub max_requests_per_connection: Option<u64>,
    /// Concurrent HTTP/2 streams per downstream connection (Envoy's edge value, 100; Envoy's
    /// default leaves it at 2^31 - 1): a client past it waits for a stream to end.
    #[arg(long, default_value = "100")]
    pub max_concurrent_streams: u32,
    /// HTTP/2 flow-control window of one stream, in KiB (Envoy's edge value, 64): what a client
    /// may send on a stream before the gateway has read it.
    #[arg(long, default_value = "64")]
    pub initial_stream_window_kb: u32,
    /// HTTP/2 flow-control window of a whole connection, in KiB (Envoy's edge value, 1024).
    #[arg(long, default_value = "1024")]
    pub initial_connection_window_kb: u32,
}

impl Limits {
    /// The most bytes of a request head the downstream HTTP/1.1 reader holds: the header limit,
    /// and never under hyper's smallest read buffer (8 KiB). `h1serve` hands a head this long to
    /// hyper, whose buffer limit it is, and hyper answers 431.
    pub fn head_buffer_bytes(&self) -> usize {
        self.max_request_headers_kb.saturating_mul(1024).max(8192)
    }

    /// The connection limit in force: the flag, else half the soft open-file limit.
    pub fn connection_limit(&self) -> usize {
        self.max_connections
            .unwrap_or_else(|| open_file_limit().map_or(usize::MAX, |n| n / 2))
            .max(1)
    }

    /// The request-headers timeout in force (None: 0, no limit).
    pub fn headers_timeout(&self) -> Option<Duration> {
        Some(self.request_headers_timeout).filter(|t| !t.is_zero())
    }

    pub fn max_request_body(&self) -> usize {
        self.max_request_body_kb.saturating_mul(1024)
    }

    /// Whether the `nth` request (counting from 1) on a connection is its last.
    pub fn is_last_request(&self, nth: u64) -> bool {
        self.max_requests_per_connection.is_some_and(|max| nth >= max)
    }

    /// HTTP/2's window sizes in bytes, stream then connection, within HTTP/2's bounds: from
    /// the initial 65,535 bytes to 2^31 - 1 (RFC 9113 §6.9).
    pub fn h2_windows(&self) -> (u32, u32) {
        let bytes = |kb: u32| kb.saturating_mul(1024).clamp(65_535, (1 << 31) - 1);
        (
            bytes(self.initial_stream_window_kb),
            bytes(self.initial_connection_window_kb),
        )
    }
}

/// The soft limit on open files, from `/proc/self/limits` (None where unlimited or unknown).
pub fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files(&text)
}

fn parse_open_files(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// What the request path needs of the limits to buffer a body.
#[derive(Debug)]
pub struct BodyLimits {
    pub max: usize,
    pub timeout: Duration,
    pub budget: BufferBudget,
}

impl BodyLimits {
    pub fn new(limits: &Limits) -> Arc<BodyLimits> {
        Arc::new(BodyLimits {
            max: limits.max_request_body(),
            timeout: limits.request_timeout,
            budget: BufferBudget::new(limits.buffer_budget_mb.saturating_mul(1 << 20)),
        })
    }
}

/// Request body bytes buffered over all connections, against a budget.
#[derive(Debug)]
pub struct BufferBudget {
    limit: usize,
    used: Arc<AtomicUsize>,
}

/// Bytes taken from a [`BufferBudget`], given back when dropped. It may outlive the request
/// that made it: a streamed body's replay buffer lives as long as the upstream request's body.
#[derive(Debug)]
pub struct Reservation {
    limit: usize,
    used: Arc<AtomicUsize>,
    bytes: usize,
}

impl BufferBudget {
    pub fn new(limit: usize) -> BufferBudget {
        BufferBudget {
            limit,
            used: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// An empty reservation, to cover a body as it arrives.
    pub fn reserve(&self) -> Reservation {
        Reservation {
            limit: self.limit,
            used: self.used.clone(),
            bytes: 0,
        }
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

impl Reservation {
    /// Holds at least `total` bytes, taking what is missing; false (and nothing taken) when the
    /// budget has no room for it.
    pub fn cover(&mut self, total: usize) -> bool {
        let more = total.saturating_sub(self.bytes);
        if more == 0 {
            return true;
        }
        let limit = self.limit;
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(more).filter(|&n| n <= limit)
            })
            .is_ok();
        if taken {
            self.bytes += more;
        }
        taken
    }
}

impl Reservation {
    /// Gives back everything reserved so far.
    pub fn release(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::AcqRel);
        self.bytes = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_may_take_the_header_limit_and_never_less_than_8_kib() {
        let mut limits = defaults();
        assert_eq!(limits.head_buffer_bytes(), 60 * 1024);
        limits.max_request_headers_kb = 4;
        assert_eq!(limits.head_buffer_bytes(), 8192);
        limits.max_request_headers_kb = 9;
        assert_eq!(limits.head_buffer_bytes(), 9 * 1024);
    }

    #[test]
    fn the_open_file_limit_is_the_soft_value_of_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max stack size            8388608              unlimited            bytes     \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_files(text), Some(1024));
        assert_eq!(
            parse_open_files("Max open files            unlimited            unlimited            files"),
            None
        );
        assert_eq!(parse_open_files("Max processes 10 10 processes"), None);
    }

    #[test]
    fn a_reservation_takes_what_fits_and_gives_it_back_when_dropped() {
        let budget = BufferBudget::new(100);
        let mut a = budget.reserve();
        assert!(a.cover(60));
        assert!(a.cover(30), "already held");
        let mut b = budget.reserve();
        assert!(!b.cover(41), "60 + 41 is past 100");
        assert_eq!(budget.used(), 60);
        assert!(b.cover(40), "exactly the limit fits");
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn per_connection_limits_follow_envoys_edge_values() {
        let mut l = defaults();
        assert_eq!(l.max_concurrent_streams, 100);
        assert_eq!(l.h2_windows(), (64 * 1024, 1024 * 1024));
        assert!(!l.is_last_request(u64::MAX), "no request limit by default");
        l.max_requests_per_connection = Some(3);
        assert!(!l.is_last_request(2));
        assert!(l.is_last_request(3));
        l.initial_stream_window_kb = 1;
        l.initial_connection_window_kb = 1 << 30;
        assert_eq!(l.h2_windows(), (65_535, (1 << 31) - 1), "within HTTP/2's bounds");
    }

    fn defaults() -> Limits {
        <Limits as clap::FromArgMatches>::from_arg_matches(
            &<Limits as clap::Args>::augment_args(clap::Command::new("t")).get_matches_from(["t"]),
        )
        .expect("defaults parse")
    }

    #[test]
    fn the_connection_limit_is_the_flag_or_half_the_open_files() {
        let mut l = defaults();
        assert_eq!(l.request_headers_timeout, Duration::from_secs(10));
        assert_eq!(l.headers_timeout(), Some(Duration::from_secs(10)));
        l.request_headers_timeout = Duration::ZERO;
        assert_eq!(l.headers_timeout(), None, "0 is no limit");
        assert_eq!(l.max_request_body(), 16 << 20);
        l.max_connections = Some(7);
        assert_eq!(l.connection_limit(), 7);
        l.max_connections = Some(0);
        assert_eq!(l.connection_limit(), 1);
        l.max_connections = None;
        assert_eq!(
            l.connection_limit(),
            open_file_limit().map_or(usize::MAX, |n| n / 2).max(1)
        );
    }
}
