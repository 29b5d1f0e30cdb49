//! One worker: a thread with a current-thread tokio runtime that owns its connections and its
//! measurements, and hands the aggregator one interval of measurements per second.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

use super::client::{h1, h2};
use super::schedule::{time_request, Schedule};
use super::spec::{LoadSpec, Proto};
use super::stats::{ErrorClass, IntervalStats};

/// State every worker reads.
#[derive(Debug)]
pub struct Shared {
    pub spec: LoadSpec,
    pub addr: SocketAddr,
    /// When the first requests are intended.
    pub start: Instant,
    /// Measurements start here (start + warm-up).
    pub record_from: Instant,
    /// No request is started at or after this instant.
    pub end: Option<Instant>,
    /// Set by Ctrl-C.
    pub stop: AtomicBool,
    /// Requests left to start, in request-count mode.
    pub remaining: Option<AtomicI64>,
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

/// Worker -> aggregator.
#[derive(Debug)]
pub enum Msg {
    /// Interval `seq` (the `seq`-th second after the warm-up) of one worker.
    Interval {
        worker: u32,
        seq: u64,
        stats: Box<IntervalStats>,
    },
    /// The worker finished: its thread's CPU time and wall time.
    Done { worker: u32, cpu: Duration, wall: Duration },
}

type Stats = Rc<RefCell<IntervalStats>>;

/// Runs one worker on the current thread until its connections are done.
pub fn run(shared: Arc<Shared>, worker: u32, conns: Vec<u32>, tx: Sender<Msg>) {
    let wall0 = Instant::now();
    let cpu0 = thread_cpu();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start a worker runtime: {e}");
            let _ = tx.send(Msg::Done {
                worker,
                cpu: Duration::ZERO,
                wall: Duration::ZERO,
            });
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    let stats: Stats = Rc::new(RefCell::new(IntervalStats::default()));
    let next_seq = Rc::new(Cell::new(0));
    local.block_on(&rt, async {
        let flusher = tokio::task::spawn_local(flush_every_second(
            shared.clone(),
            worker,
            stats.clone(),
            next_seq.clone(),
            tx.clone(),
        ));
        let mut set = JoinSet::new();
        for c in conns {
            set.spawn_local(connection(shared.clone(), c, stats.clone()));
        }
        while set.join_next().await.is_some() {}
        flusher.abort();
    });
    // The last, partial interval.
    let last = stats.borrow_mut().take();
    let _ = tx.send(Msg::Interval {
        worker,
        seq: next_seq.get(),
        stats: Box::new(last),
    });
    let _ = tx.send(Msg::Done {
        worker,
        cpu: thread_cpu().saturating_sub(cpu0),
        wall: wall0.elapsed(),
    });
}

/// Sends the measurements of each second; what was recorded before the warm-up ended is dropped.
async fn flush_every_second(shared: Arc<Shared>, worker: u32, stats: Stats, next: Rc<Cell<u64>>, tx: Sender<Msg>) {
    tokio::time::sleep_until(shared.record_from.into()).await;
    stats.borrow_mut().take();
    loop {
        let seq = next.get();
        tokio::time::sleep_until((shared.record_from + Duration::from_secs(seq + 1)).into()).await;
        let s = stats.borrow_mut().take();
        if tx
            .send(Msg::Interval {
                worker,
                seq,
                stats: Box::new(s),
            })
            .is_err()
        {
            return;
        }
        next.set(seq + 1);
    }
}

pub fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
}

pub fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// A request slot: a connection, or one stream of an HTTP/2 connection.
#[derive(Debug)]
struct Slot {
    schedule: Option<Schedule>,
}

/// When to send the next request: its intended time and when the slot was free.
struct Ticket {
    intended: Instant,
    free: Instant,
}

impl Slot {
    fn new(shared: &Shared, index: u32) -> Self {
        let schedule = shared
            .spec
            .rate
            .map(|r| Schedule::new(shared.start, r, index, shared.spec.slots()));
        Slot { schedule }
    }

    /// Waits for the next request's time; None when the run is over.
    async fn next(&mut self, shared: &Shared) -> Option<Ticket> {
        if shared.stop.load(Ordering::Relaxed) {
            return None;
        }
        if Instant::now() < shared.start {
            tokio::time::sleep_until(shared.start.into()).await;
        }
        let free = Instant::now();
        let intended = match &mut self.schedule {
            None => {
                if shared.end.is_some_and(|e| free >= e) {
                    return None;
                }
                free
            }
            Some(s) => {
                let intended = s.intended();
                if shared.end.is_some_and(|e| intended >= e) {
                    return None;
                }
                s.advance();
                intended
            }
        };
        if let Some(left) = &shared.remaining {
            if left.fetch_sub(1, Ordering::Relaxed) <= 0 {
                return None;
            }
        }
        if free < intended {
            tokio::time::sleep_until(intended.into()).await;
            if shared.stop.load(Ordering::Relaxed) {
                return None;
            }
        }
        Some(Ticket { intended, free })
    }
}

/// The per-request timeout of one connection or stream: one timer, moved on for each request.
/// tokio moves a registered timer to a later deadline with one atomic update, where
/// `tokio::time::timeout` would add a timer to its wheel and take it out again for every request.
struct Timeout {
    after: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

/// A request that took longer than its timeout.
#[derive(Debug)]
struct Elapsed;

impl Timeout {
    fn new(after: Duration) -> Self {
        Timeout {
            after,
            sleep: Box::pin(tokio::time::sleep(after)),
        }
    }

    /// `request`'s output, or `Elapsed` when it takes longer than the timeout.
    async fn within<F: Future>(&mut self, request: F) -> Result<F::Output, Elapsed> {
        let mut sleep = self.sleep.as_mut();
        sleep.as_mut().reset(tokio::time::Instant::now() + self.after);
        let mut request = std::pin::pin!(request);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = request.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            sleep.as_mut().poll(cx).map(|()| Err(Elapsed))
        })
        .await
    }
}

/// Records one finished request (unless it started during the warm-up).
fn record(
    shared: &Shared,
    stats: &Stats,
    t: &Ticket,
    sent: Instant,
    result: Result<(String, Option<ErrorClass>), ErrorClass>,
) {
    if sent < shared.record_from {
        return;
    }
    let done = Instant::now();
    let timing = time_request(t.intended, t.free, sent, done);
    let mut s = stats.borrow_mut();
    match result {
        Ok((status, err)) => s.response(
            &status,
            timing.corrected.as_micros() as u64,
            timing.uncorrected.as_micros() as u64,
            timing.late,
            err,
        ),
        Err(class) => s.failure(class, timing.late),
    }
}

fn http_status(code: u16) -> (String, Option<ErrorClass>) {
    (code.to_string(), (code >= 500).then_some(ErrorClass::Http5xx))
}

/// A pause after a failed connect in closed loop, so a dead target is not hammered in a spin.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

async fn connection(shared: Arc<Shared>, index: u32, stats: Stats) {
    match shared.spec.protocol {
        Proto::H1 => h1_connection(&shared, index, &stats).await,
        Proto::H2 | Proto::Grpc => h2_connection(shared, index, stats).await,
        Proto::Tcp => tcp_connection(shared, index, stats).await,
        Proto::TlsHandshake => handshake_slot(shared, index, stats).await,
    }
}

async fn connect_tcp(addr: SocketAddr) -> Result<TcpStream, ErrorClass> {
    let s = TcpStream::connect(addr).await.map_err(|_| ErrorClass::Connect)?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

async fn connect_tls(shared: &Shared) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ErrorClass> {
    let tcp = connect_tcp(shared.addr).await?;
    let Some((config, name)) = &shared.tls else {
        return Err(ErrorClass::Tls);
    };
    TlsConnector::from(config.clone())
        .connect(name.clone(), tcp)
        .await
        .map_err(|_| ErrorClass::Tls)
}

/// What a driven connection ended with.
enum End {
    /// The run is over.
    Finished,
    /// The connection broke; make a new one.
    Reconnect,
}

/// A failed connect uses up the next request as an error.
async fn connect_failed(shared: &Shared, slot: &mut Slot, stats: &Stats, class: ErrorClass) -> End {
    let Some(t) = slot.next(shared).await else {
        return End::Finished;
    };
    record(shared, stats, &t, Instant::now(), Err(class));
    if slot.schedule.is_none() {
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
    End::Reconnect
}

async fn h1_connection(shared: &Shared, index: u32, stats: &Stats) {
    let request = h1::serialize(&shared.spec.request, false);
    let head = shared.spec.request.method == "HEAD";
    let mut slot = Slot::new(shared, index);
    loop {
        let end = if shared.tls.is_some() {
            match connect_tls(shared).await {
                Ok(s) => drive_h1(shared, &mut slot, stats, h1::Conn::new(s), &request, head).await,
                Err(c) => connect_failed(shared, &mut slot, stats, c).await,
            }
        } else {
            match connect_tcp(shared.addr).await {
                Ok(s) => drive_h1(shared, &mut slot, stats, h1::Conn::new(s), &request, head).await,
                Err(c) => connect_failed(shared, &mut slot, stats, c).await,
            }
        };
        if let End::Finished = end {
            return;
        }
    }
}

async fn drive_h1<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    slot: &mut Slot,
    stats: &Stats,
    mut conn: h1::Conn<S>,
    request: &[u8],
    head: bool,
) -> End {
    let mut timeout = Timeout::new(shared.spec.timeout);
    loop {
        let Some(t) = slot.next(shared).await else {
            return End::Finished;
        };
        let sent = Instant::now();
        match timeout.within(conn.round_trip(request, head)).await {
            Ok(Ok(resp)) => {
                record(shared, stats, &t, sent, Ok(http_status(resp.status)));
                if resp.close {
                    return End::Reconnect;
                }
            }
            Ok(Err(class)) => {
                record(shared, stats, &t, sent, Err(class));
                return End::Reconnect;
            }
            Err(_) => {
                record(shared, stats, &t, sent, Err(ErrorClass::Timeout));
                return End::Reconnect;
            }
        }
    }
}

async fn h2_handshake<S>(io: S) -> Result<::h2::client::SendRequest<Bytes>, ErrorClass>
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (send, conn) = ::h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(1 << 24)
        .handshake(io)
        .await
        .map_err(|_| ErrorClass::Protocol)?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(send)
}

async fn h2_connection(shared: Arc<Shared>, conn_index: u32, stats: Stats) {
    let grpc = shared.spec.protocol == Proto::Grpc;
    let prepared = match h2::Prepared::new(&shared.spec.request, shared.tls.is_some(), grpc) {
        Ok(p) => Rc::new(p),
        Err(e) => {
            eprintln!("error: {e}");
            return;
        }
    };
    let streams = shared.spec.streams.max(1);
    let mut slots: Vec<Slot> = (0..streams)
        .map(|s| Slot::new(&shared, conn_index * streams + s))
        .collect();
    loop {
        let send = match h2_connect(&shared).await {
            Ok(s) => s,
            Err(c) => match connect_failed(&shared, &mut slots[0], &stats, c).await {
                End::Finished => return,
                End::Reconnect => continue,
            },
        };
        let mut set = JoinSet::new();
        for (i, slot) in slots.drain(..).enumerate() {
            let args = (shared.clone(), send.clone(), prepared.clone(), stats.clone());
            set.spawn_local(async move {
                let (shared, send, prepared, stats) = args;
                let (slot, end) = drive_stream(&shared, slot, send, &prepared, &stats, grpc).await;
                (i, slot, end)
            });
        }
        let mut finished = true;
        let mut back: Vec<(usize, Slot)> = Vec::new();
        while let Some(Ok((i, slot, end))) = set.join_next().await {
            finished &= matches!(end, End::Finished);
            back.push((i, slot));
        }
        back.sort_by_key(|(i, _)| *i);
        slots = back.into_iter().map(|(_, s)| s).collect();
        if finished || slots.is_empty() {
            return;
        }
    }
}

async fn h2_connect(shared: &Shared) -> Result<::h2::client::SendRequest<Bytes>, ErrorClass> {
    if shared.tls.is_some() {
        let tls = connect_tls(shared).await?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(ErrorClass::Protocol);
        }
        h2_handshake(tls).await
    } else {
        h2_handshake(connect_tcp(shared.addr).await?).await
    }
}

async fn drive_stream(
    shared: &Shared,
    mut slot: Slot,
    mut send: ::h2::client::SendRequest<Bytes>,
    prepared: &h2::Prepared,
    stats: &Stats,
    grpc: bool,
) -> (Slot, End) {
    let mut timeout = Timeout::new(shared.spec.timeout);
    loop {
        let Some(t) = slot.next(shared).await else {
            return (slot, End::Finished);
        };
        let sent = Instant::now();
        match timeout.within(h2::round_trip(&mut send, prepared)).await {
            Ok(Ok(out)) => {
                let result = match (grpc, out.grpc_status) {
                    (true, Some(0)) => ("grpc-0".to_string(), None),
                    (true, Some(code)) => (format!("grpc-{code}"), Some(ErrorClass::Grpc(code))),
                    (true, None) => (out.status.to_string(), Some(ErrorClass::Protocol)),
                    (false, _) => http_status(out.status),
                };
                record(shared, stats, &t, sent, Ok(result));
            }
            Ok(Err(class)) => {
                record(shared, stats, &t, sent, Err(class));
                return (slot, End::Reconnect);
            }
            Err(_) => {
                record(shared, stats, &t, sent, Err(ErrorClass::Timeout));
                return (slot, End::Reconnect);
            }
        }
    }
}

async fn tcp_connection(shared: Arc<Shared>, index: u32, stats: Stats) {
    let message = vec![b'x'; shared.spec.message_bytes];
    let mut reply = vec![0u8; shared.spec.message_bytes];
    let mut slot = Slot::new(&shared, index);
    loop {
        let mut conn = match connect_tcp(shared.addr).await {
            Ok(c) => c,
            Err(c) => match connect_failed(&shared, &mut slot, &stats, c).await {
                End::Finished => return,
                End::Reconnect => continue,
            },
        };
        let mut timeout = Timeout::new(shared.spec.timeout);
        loop {
            let Some(t) = slot.next(&shared).await else { return };
            let sent = Instant::now();
            let exchange = async {
                conn.write_all(&message).await?;
                conn.read_exact(&mut reply).await.map(|_| ())
            };
            match timeout.within(exchange).await {
                Ok(Ok(())) => record(&shared, &stats, &t, sent, Ok(("tcp-ok".into(), None))),
                Ok(Err(e)) => {
                    record(&shared, &stats, &t, sent, Err(h1::io_class(e)));
                    break;
                }
                Err(_) => {
                    record(&shared, &stats, &t, sent, Err(ErrorClass::Timeout));
                    break;
                }
            }
        }
    }
}

/// A new TLS connection per request: connect, handshake, one HTTP/1.1 request, close.
async fn handshake_slot(shared: Arc<Shared>, index: u32, stats: Stats) {
    let request = h1::serialize(&shared.spec.request, true);
    let head = shared.spec.request.method == "HEAD";
    let mut slot = Slot::new(&shared, index);
    let mut timeout = Timeout::new(shared.spec.timeout);
    while let Some(t) = slot.next(&shared).await {
        let sent = Instant::now();
        let once = async {
            let tls = connect_tls(&shared).await?;
            h1::Conn::new(tls).round_trip(&request, head).await
        };
        let result = match timeout.within(once).await {
            Ok(Ok(resp)) => Ok(http_status(resp.status)),
            Ok(Err(class)) => Err(class),
            Err(_) => Err(ErrorClass::Timeout),
        };
        record(&shared, &stats, &t, sent, result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resolves after `ms` milliseconds (of tokio's clock, paused in these tests).
    async fn after(ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_within_the_timeout_gives_its_output() {
        let mut timeout = Timeout::new(Duration::from_millis(100));
        assert_eq!(timeout.within(after(99)).await.ok(), Some(99));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_the_timeout_is_cut_off_at_it() {
        let mut timeout = Timeout::new(Duration::from_millis(100));
        let start = tokio::time::Instant::now();
        assert!(timeout.within(std::future::pending::<()>()).await.is_err());
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn each_request_gets_the_whole_timeout_from_when_it_starts() {
        let mut timeout = Timeout::new(Duration::from_millis(100));
        // Three requests of 80 ms each: 240 ms in all, each within its own 100 ms.
        for _ in 0..3 {
            assert_eq!(timeout.within(after(80)).await.ok(), Some(80));
        }
        // A pause between requests does not count against the next one.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(timeout.within(after(99)).await.ok(), Some(99));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_timeout_the_next_request_gets_a_whole_one_again() {
        let mut timeout = Timeout::new(Duration::from_millis(100));
        assert!(timeout.within(std::future::pending::<()>()).await.is_err());
        assert_eq!(timeout.within(after(99)).await.ok(), Some(99));
        let start = tokio::time::Instant::now();
        assert!(timeout.within(after(101)).await.is_err());
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }
}
