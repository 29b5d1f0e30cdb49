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
        let now = self.now_ms();
        let idle_ms = idle.as_millis() as u64;
        let Ok(open) = self.open.lock() else { return 0 };
        let mut n = 0;
        for c in open.values() {
            if c.idle_since().is_some_and(|t| now.saturating_sub(t) >= idle_ms) {
                c.close();
                n += 1;
            }
        }
        n
    }

    /// Ends every connection whose request head has been arriving for `timeout` or longer
    /// (Envoy's `request_headers_timeout`: from the head's first byte to its last): its reader,
    /// woken, answers 408 and fails (`headwatch`); with no reader waiting, the connection is
    /// asked to close. How many.
    pub fn close_slow_heads(&self, timeout: Duration) -> usize {
        let now = self.now_ms();
        let timeout_ms = timeout.as_millis() as u64;
        let Ok(open) = self.open.lock() else { return 0 };
        let mut n = 0;
        for c in open.values() {
            let since = c.head_since_ms.load(Ordering::Relaxed);
            if since != 0 && now.saturating_sub(since) >= timeout_ms && !c.head_timed_out.load(Ordering::Relaxed) {
                c.head_timed_out.store(true, Ordering::Relaxed);
                // The reader answers 408; with none waiting, the connection closes.
                match c.head_reader.lock().ok().and_then(|mut w| w.take()) {
                    Some(reader) => reader.wake(),
                    None => c.close(),
                }
                n += 1;
            }
        }
        n
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
mod tests {
    use super::*;

    const SOON: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn at_the_limit_the_connection_idle_longest_makes_room() {
        let conns = Conns::new(2);
        let mut a = conns.register().expect("room");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b_registered = conns.register().expect("room");
        let b = b_registered.handle();
        let b_request = b.request(false);
        // Full: `a` (idle, oldest) is asked to close; the new one is let in.
        let c_registered = conns.register().expect("a makes room");
        let c = c_registered.handle();
        assert_eq!(conns.evicted.load(Ordering::Relaxed), 1);
        tokio::time::timeout(SOON, a.closing())
            .await
            .expect("a was asked to close");
        drop(a);
        // Full again with `b` busy and `c` busy: the new one is refused.
        let c_request = c.request(false);
        assert!(conns.register().is_none(), "nothing idle: the new one is refused");
        assert_eq!(conns.overflow.load(Ordering::Relaxed), 1);
        drop(b_request);
        let _d = conns.register().expect("b is idle now and makes room");
        assert_eq!(conns.evicted.load(Ordering::Relaxed), 2);
        drop(c_request);
    }

    #[tokio::test]
    async fn two_new_connections_close_two_idle_ones_oldest_first() {
        // All three opened in the same millisecond: the ids order them.
        let conns = Conns::new(3);
        let mut first = conns.register().expect("room");
        let mut second = conns.register().expect("room");
        let mut third = conns.register().expect("room");
        // Two arrive before the first one asked has closed: each closes a different one.
        let _d = conns.register().expect("first makes room");
        let _e = conns.register().expect("second makes room, not first again");
        assert_eq!(conns.evicted.load(Ordering::Relaxed), 2);
        for (name, c) in [("first", &mut first), ("second", &mut second)] {
            tokio::time::timeout(SOON, c.closing())
                .await
                .unwrap_or_else(|_| panic!("{name} was asked to close"));
        }
        assert!(
            tokio::time::timeout(SOON, third.closing()).await.is_err(),
            "third, opened last, keeps serving"
        );
    }

    #[tokio::test]
    async fn idle_past_the_timeout_is_asked_to_close_and_busy_is_not() {
        let conns = Conns::new(10);
        let mut idle = conns.register().expect("room");
        let busy = conns.register().expect("room");
        let busy_handle = busy.handle();
        let request = busy_handle.request(false);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(conns.close_idle_for(Duration::from_secs(60)), 0);
        assert_eq!(conns.close_idle_for(Duration::from_millis(20)), 1);
        tokio::time::timeout(SOON, idle.closing())
            .await
            .expect("idle asked to close");
        assert_eq!(conns.len(), 2);
        drop(idle);
        assert_eq!(conns.len(), 1);
        drop(request);
        assert_eq!(conns.close_idle_for(Duration::ZERO), 1, "idle once its request ended");
        drop(busy);
        assert!(conns.is_empty());
    }

    #[tokio::test]
    async fn a_head_slower_than_the_timeout_is_ended_and_a_waiting_connection_is_not() {
        let conns = Conns::new(10);
        let mut slow = conns.register().expect("room");
        let waiting = conns.register().expect("room");
        let (slow_handle, waiting_handle) = (slow.handle(), waiting.handle());
        // A request came and went on the waiting connection; nothing has arrived since.
        drop(waiting_handle.request(false));
        slow_handle.bytes_arrived();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(conns.close_slow_heads(Duration::from_secs(60)), 0, "not yet");
        // More bytes of the same head do not restart its clock.
        slow_handle.bytes_arrived();
        assert_eq!(conns.close_slow_heads(Duration::from_millis(20)), 1);
        assert!(slow_handle.head_timed_out());
        assert!(!waiting_handle.head_timed_out());
        // With no reader waiting for the rest of the head, the connection is asked to close.
        tokio::time::timeout(SOON, slow.closing())
            .await
            .expect("asked to close");
        assert_eq!(conns.close_slow_heads(Duration::ZERO), 0, "once");
    }

    /// Waits for `c` to be asked to close: at `from_ms` milliseconds at the earliest, before
    /// `below_ms`.
    async fn asked_to_close_within(c: &mut Registered, from_ms: u64, below_ms: u64) {
        let start = Instant::now();
        tokio::time::timeout(Duration::from_secs(3), c.closing())
            .await
            .expect("asked to close");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(from_ms) && took < Duration::from_millis(below_ms),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn the_sweep_looks_ten_times_per_timeout_and_ends_at_the_stop() {
        let conns = Conns::new(10);
        let mut slow = conns.register().expect("room");
        slow.handle().bytes_arrived();
        let sweep = tokio::spawn(
            conns
                .clone()
                .sweep(Duration::from_secs(3600), Some(Duration::from_millis(100))),
        );
        // A look every 10 ms: ended soon after 100 ms (a look a second would take a second).
        asked_to_close_within(&mut slow, 100, 700).await;
        // Idle connections, with no headers timeout: looked at every 20 ms for a 200 ms idle.
        let idle_sweep = tokio::spawn(conns.clone().sweep(Duration::from_millis(200), None));
        let mut idle = conns.register().expect("room");
        asked_to_close_within(&mut idle, 200, 800).await;
        conns.set_phase(Phase::Stopping);
        for s in [sweep, idle_sweep] {
            tokio::time::timeout(SOON, s)
                .await
                .expect("the sweep ends at the stop")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_waiting_connection_is_woken_by_its_close_and_by_the_phase() {
        let conns = Conns::new(10);
        let mut asked = conns.register().expect("room");
        let mut h1 = conns.register().expect("room");
        let asked_handle = asked.handle();
        let waiting = tokio::spawn(async move { asked.closing().await });
        let stopping = tokio::spawn(async move { h1.closing().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished() && !stopping.is_finished());
        asked_handle.close();
        tokio::time::timeout(SOON, waiting)
            .await
            .expect("woken by the close")
            .unwrap();
        conns.set_phase(Phase::Draining);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!stopping.is_finished(), "HTTP/1.1 is not closed at the drain");
        assert_eq!(conns.phase(), Phase::Draining);
        conns.set_phase(Phase::Stopping);
        tokio::time::timeout(SOON, stopping)
            .await
            .expect("woken by the stop")
            .unwrap();
        assert_eq!(conns.phase(), Phase::Stopping);
    }

    /// Counts its wakes.
    struct Count(AtomicU32);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn a_timed_out_head_wakes_its_waiting_reader_instead_of_closing() {
        let conns = Conns::new(10);
        let mut c = conns.register().expect("room");
        let h = c.handle();
        let count = Arc::new(Count(AtomicU32::new(0)));
        let waker = std::task::Waker::from(count.clone());
        // No head arriving: nothing to wait for.
        h.wait_for_head(&waker);
        assert!(c.conn.head_reader.lock().unwrap().is_none());
        h.bytes_arrived();
        // The reader's latest waker is the one woken.
        let earlier = Arc::new(Count(AtomicU32::new(0)));
        h.wait_for_head(&std::task::Waker::from(earlier.clone()));
        h.wait_for_head(&waker);
        assert_eq!(conns.close_slow_heads(Duration::ZERO), 1);
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "the reader answers the 408");
        assert_eq!(earlier.0.load(Ordering::Relaxed), 0);
        assert!(
            tokio::time::timeout(SOON, c.closing()).await.is_err(),
            "not asked to close"
        );
        // A head that arrives whole lets its reader go.
        let d = conns.register().expect("room");
        let dh = d.handle();
        dh.bytes_arrived();
        dh.wait_for_head(&waker);
        drop(dh.request(false));
        assert!(d.conn.head_reader.lock().unwrap().is_none());
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_head_that_arrives_whole_stops_its_clock_and_a_request_in_flight_starts_none() {
        let conns = Conns::new(10);
        let c = conns.register().expect("room");
        let h = c.handle();
        h.bytes_arrived();
        let request = h.request(false);
        // The body of the request in flight is no head.
        h.bytes_arrived();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(conns.close_slow_heads(Duration::from_millis(20)), 0);
        drop(request);
        // The next head's first byte, a moment ago: within the timeout.
        h.bytes_arrived();
        assert_eq!(conns.close_slow_heads(Duration::from_secs(60)), 0);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(conns.close_slow_heads(Duration::from_millis(20)), 1);
    }

    #[tokio::test]
    async fn draining_closes_h2_connections_and_stopping_closes_all() {
        let conns = Conns::new(10);
        let mut h1 = conns.register().expect("room");
        let mut h2 = conns.register().expect("room");
        drop(h1.handle().request(false));
        let h2_handle = h2.handle();
        let _h2_request = h2_handle.request(true);
        conns.set_phase(Phase::Draining);
        conns.set_phase(Phase::Serving);
        assert_eq!(conns.phase(), Phase::Draining, "the phase never goes back");
        tokio::time::timeout(SOON, h2.closing()).await.expect("GOAWAY at drain");
        assert!(tokio::time::timeout(SOON, h1.closing()).await.is_err(), "h1 waits");
        conns.set_phase(Phase::Stopping);
        tokio::time::timeout(SOON, h1.closing()).await.expect("closes at stop");
    }
}
