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
