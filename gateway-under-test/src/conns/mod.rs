//! Open downstream connections and the gateway's lifecycle as each connection sees it: how many
//! are open against the connection limit, which are idle (no request in flight) and since when,
//! a way to ask one to close, and the phase of the whole gateway (serving, draining, stopping).
//! At the limit, or when `accept` runs out of file descriptors, the connection idle longest is
//! asked to close, as nginx reuses idle keep-alive connections when it runs out of them; a
//! sweeper closes connections idle past the idle timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use tokio::sync::watch;

/// The gateway's phase, as connections follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    Serving,
    /// SIGTERM: listeners still accept; HTTP/1.1 responses say `Connection: close`, HTTP/2
    /// connections get GOAWAY; `/ready` answers 503.
    Draining,
    /// After the drain period: listeners closed; every connection closes once its requests end.
    Stopping,
}

impl Phase {
    fn from_u8(n: u8) -> Phase {
        match n {
            0 => Phase::Serving,
            1 => Phase::Draining,
            _ => Phase::Stopping,
        }
    }
}

/// One open connection, as the registry and the request path see it.
#[derive(Debug, Default)]
struct Conn {
    in_flight: AtomicU32,
    /// Requests started on the connection so far.
    requests: AtomicU64,
    /// Milliseconds since the registry's epoch at the last request's start or end (or the
    /// connection's start).
    last_active_ms: AtomicU64,
    h2: AtomicBool,
    /// Asked to close (limit, idle timeout, last request): closing, so never picked again to
    /// make room.
    asked_to_close: AtomicBool,
    /// The connection's task, woken when it is asked to close or the gateway's phase moves.
    closer: AtomicWaker,
    /// Milliseconds since the registry's epoch at the first byte of a request head still being
    /// read (0: none is), for the request-headers timeout.
    head_since_ms: AtomicU64,
    /// The head took longer than the request-headers timeout: the connection answers 408 and
    /// closes.
    head_timed_out: AtomicBool,
    /// The connection's reader waiting for the rest of a head, woken when it timed out.
    head_reader: Mutex<Option<std::task::Waker>>,
}

impl Conn {
    fn idle_since(&self) -> Option<u64> {
        (self.in_flight.load(Ordering::Acquire) == 0).then(|| self.last_active_ms.load(Ordering::Relaxed))
    }

    /// Asks the connection to close gracefully (an idle HTTP/1.1 connection closes at once).
    fn close(&self) {
        self.asked_to_close.store(true, Ordering::Release);
        self.closer.wake();
    }
}

/// Every open connection, with the connection limit and the gateway's phase.
#[derive(Debug)]
pub struct Conns {
    limit: usize,
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    phase: watch::Sender<Phase>,
    /// The phase as a number: read on every request and every wake of a connection's task,
    /// without the watch's lock.
    phase_now: std::sync::atomic::AtomicU8,
    /// New connections closed at once: the limit was reached and none was idle.
    pub overflow: AtomicU64,
    /// Idle connections closed to make room for new ones.
    pub evicted: AtomicU64,
    /// `accept` failures (out of file descriptors, mostly).
    pub accept_errors: AtomicU64,
    /// Connections handed to hyper: h2, and HTTP/1.1 from the first request `h1serve` does
    /// not take.
    pub handed_to_hyper: AtomicU64,
    /// Connections each worker has taken (Envoy's `listener.worker_<n>.downstream_cx_total`).
    pub accepted: crate::workers::PerWorker<AtomicU64>,
}

/// A registered connection; it leaves the registry when dropped.
#[derive(Debug)]
pub struct Registered {
    conns: Arc<Conns>,
    id: u64,
    conn: Arc<Conn>,
}

/// What a connection's requests hold of it: its in-flight count and the gateway's phase.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    conns: Arc<Conns>,
    conn: Arc<Conn>,
}

/// One request in flight on a connection; its end is marked when dropped.
#[derive(Debug)]
pub struct InFlight<'a> {
    conn: &'a ConnHandle,
    /// Which request this is on the connection, counting from 1.
    pub nth: u64,
}

impl Conns {
    pub fn new(limit: usize) -> Arc<Conns> {
        Arc::new(Conns {
            limit,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            phase: watch::channel(Phase::Serving).0,
            phase_now: std::sync::atomic::AtomicU8::new(Phase::Serving as u8),
            overflow: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            handed_to_hyper: AtomicU64::new(0),
            accepted: crate::workers::PerWorker::new(|_| AtomicU64::new(0)),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn len(&self) -> usize {
        self.open.lock().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase_now.load(Ordering::Acquire))
    }

    /// Moves the gateway to `phase` (never back), and wakes every connection to see it.
    pub fn set_phase(&self, phase: Phase) {
        let moved = self.phase.send_if_modified(|p| {
            let later = phase > *p;
            if later {
                *p = phase;
                self.phase_now.store(phase as u8, Ordering::Release);
            }
            later
        });
        if moved {
            if let Ok(open) = self.open.lock() {
                for c in open.values() {
                    c.closer.wake();
                }
            }
        }
    }

    /// Registers a new connection. At the limit the connection idle longest is asked to close
    /// to make room; with none idle the new one is refused (None).
    pub fn register(self: &Arc<Self>) -> Option<Registered> {
        let mut open = self.open.lock().ok()?;
        if open.len() >= self.limit && !self.evict_idle_locked(&open) {
            self.overflow.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::default());
        conn.last_active_ms.store(self.now_ms(), Ordering::Relaxed);
        open.insert(id, conn.clone());
        self.accepted.get().fetch_add(1, Ordering::Relaxed);
        Some(Registered {
            conns: self.clone(),
            id,
            conn,
        })
    }

    /// Asks the connection idle longest to close; false when none is idle.
    pub fn evict_idle(&self) -> bool {
        self.open.lock().is_ok_and(|open| self.evict_idle_locked(&open))
    }

    fn evict_idle_locked(&self, open: &HashMap<u64, Arc<Conn>>) -> bool {
        // Idle longest, the one opened first among equals (ids rise); never one already closing,
        // which still counts until its task ends: two new connections close two idle ones.
        let oldest = open
            .iter()
            .filter(|(_, c)| !c.asked_to_close.load(Ordering::Relaxed))
            .filter_map(|(id, c)| c.idle_since().map(|t| ((t, *id), c)))
            .min_by_key(|(key, _)| *key);
        match oldest {
            Some((_, c)) => {
                c.close();
                self.evicted.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Asks every connection idle for `idle` or longer to close; how many were asked.
    pub fn close_idle_for(&self, idle: Duration) -> usize {
        let idle_ms = idle.as_millis() as u64;
        self.each_open(|c, now| {
            let past = c.idle_since().is_some_and(|t| now.saturating_sub(t) >= idle_ms);
            if past {
                c.close();
            }
            past
        })
    }

    /// Ends every connection whose request head has been arriving for `timeout` or longer
    /// (Envoy's `request_headers_timeout`: from the head's first byte to its last): its reader,
    /// woken, answers 408 and fails (`headwatch`); with no reader waiting, the connection is
    /// asked to close. How many.
    pub fn close_slow_heads(&self, timeout: Duration) -> usize {
        let timeout_ms = timeout.as_millis() as u64;
        self.each_open(|c, now| {
            let since = c.head_since_ms.load(Ordering::Relaxed);
            let past =
                since != 0 && now.saturating_sub(since) >= timeout_ms && !c.head_timed_out.load(Ordering::Relaxed);
            if past {
                c.head_timed_out.store(true, Ordering::Relaxed);
                // The reader answers 408; with none waiting, the connection closes.
                match c.head_reader.lock().ok().and_then(|mut w| w.take()) {
                    Some(reader) => reader.wake(),
                    None => c.close(),
                }
            }
            past
        })
    }

    /// Runs `act` on every open connection with the registry's clock now; how many it acted on.
    fn each_open(&self, mut act: impl FnMut(&Conn, u64) -> bool) -> usize {
        let now = self.now_ms();
        let Ok(open) = self.open.lock() else { return 0 };
        open.values().filter(|c| act(c, now)).count()
    }

    /// Closes connections idle past `idle` and drops those whose request head is slower than
    /// `headers` (None: no such limit), looking ten times per period (at most once a second),
    /// until the gateway stops. One sweep for every connection instead of a timer per request.
    pub async fn sweep(self: Arc<Self>, idle: Duration, headers: Option<Duration>) {
        let shortest = headers.map_or(idle, |h| h.min(idle));
        let every = (shortest / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut phase = self.phase.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {
                    self.close_idle_for(idle);
                    if let Some(h) = headers {
                        self.close_slow_heads(h);
                    }
                }
                _ = phase.wait_for(|p| *p == Phase::Stopping) => return,
            }
        }
    }
}

impl ConnHandle {
    /// A request starts on this connection; it is idle again when the guard is dropped.
    pub fn request(&self, h2: bool) -> InFlight<'_> {
        self.conn.in_flight.fetch_add(1, Ordering::AcqRel);
        // The head has arrived whole: its reader no longer waits for the rest.
        if self.conn.head_since_ms.swap(0, Ordering::Relaxed) != 0 {
            if let Ok(mut w) = self.conn.head_reader.lock() {
                w.take();
            }
        }
        let nth = self.conn.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if h2 {
            self.conn.h2.store(true, Ordering::Relaxed);
            if self.phase() != Phase::Serving {
                // The connection turned out to be HTTP/2 after the drain began: GOAWAY now.
                self.conn.close();
            }
        }
        self.touch();
        InFlight { conn: self, nth }
    }

    /// Asks the connection to close once its requests end (HTTP/2: GOAWAY now).
    pub fn close(&self) {
        self.conn.close();
    }

    /// Whether the request head now arriving took longer than the request-headers timeout.
    pub fn head_timed_out(&self) -> bool {
        self.conn.head_timed_out.load(Ordering::Relaxed)
    }

    /// The reader waits for more of a head: `waker` is woken if the head times out first. Only
    /// while a head is arriving (a keep-alive connection waiting for its next request is not
    /// timed).
    pub fn wait_for_head(&self, waker: &std::task::Waker) {
        if self.conn.head_since_ms.load(Ordering::Relaxed) == 0 {
            return;
        }
        if let Ok(mut w) = self.conn.head_reader.lock() {
            *w = Some(waker.clone());
        }
    }

    /// Bytes arrived on an HTTP/1.1 connection: with no request in flight, they begin a request
    /// head, and the request-headers timeout runs from the first of them. (An upgraded
    /// connection has left the registry with hyper's connection: its frames are never timed.)
    pub fn bytes_arrived(&self) {
        let c = &self.conn;
        if c.in_flight.load(Ordering::Acquire) == 0 && c.head_since_ms.load(Ordering::Relaxed) == 0 {
            // 0 means none: a head that starts at the epoch's first millisecond counts from 1.
            c.head_since_ms.store(self.conns.now_ms().max(1), Ordering::Relaxed);
        }
    }

    fn touch(&self) {
        self.conn.last_active_ms.store(self.conns.now_ms(), Ordering::Relaxed);
    }

    pub fn phase(&self) -> Phase {
        self.conns.phase()
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.conn.touch();
        self.conn.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Registered {
    /// The handle a connection's requests share.
    pub fn handle(&self) -> ConnHandle {
        ConnHandle {
            conns: self.conns.clone(),
            conn: self.conn.clone(),
        }
    }

    /// Resolves when this connection should close gracefully: it was asked to (limit, idle
    /// timeout), the gateway is stopping, or the gateway is draining and this is HTTP/2 (GOAWAY;
    /// an HTTP/1.1 connection instead closes after its next response).
    /// Polled on every wake of the connection's task, so it reads three atomics and registers
    /// the task's waker, without a lock.
    pub fn closing(&mut self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.should_close() {
                return std::task::Poll::Ready(());
            }
            self.conn.closer.register(cx.waker());
            // Asked between the look and the registration: the wake may have gone to the old waker.
            if self.should_close() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
    }

    fn should_close(&self) -> bool {
        let phase = self.conns.phase();
        self.conn.asked_to_close.load(Ordering::Acquire)
            || phase == Phase::Stopping
            || (phase == Phase::Draining && self.conn.h2.load(Ordering::Relaxed))
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut open) = self.conns.open.lock() {
            open.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests;
