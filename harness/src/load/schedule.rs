//! Open-loop scheduling, wrk2's rule: each request slot (a connection, or an HTTP/2 stream) has a
//! fixed rate and a phase; request k is *intended* at `start + phase + k / rate`. A request sent
//! after its intended time because the slot was still busy is late, and its latency is counted
//! from the intended time (coordinated omission correction).

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    /// Seconds between two requests of this slot (kept as f64 so that k * period does not drift).
    period: f64,
    next: u64,
}

impl Schedule {
    /// Slot `slot` of `slots` sharing `rate` requests per second: each sends every `slots / rate`
    /// seconds, the slots evenly spread over one interval.
    pub fn new(start: Instant, rate: f64, slot: u32, slots: u32) -> Self {
        let period = f64::from(slots.max(1)) / rate;
        let phase = Duration::from_secs_f64(period * f64::from(slot) / f64::from(slots.max(1)));
        Schedule {
            start: start + phase,
            period,
            next: 0,
        }
    }

    /// The intended start of the next request.
    pub fn intended(&self) -> Instant {
        self.start + Duration::from_secs_f64(self.period * self.next as f64)
    }

    /// Moves to the next request.
    pub fn advance(&mut self) {
        self.next += 1;
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.period)
    }
}

/// The latencies of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// From the intended start when the request was late, else from the actual send.
    pub corrected: Duration,
    /// From the actual send.
    pub uncorrected: Duration,
    pub late: bool,
}

/// Times a request. `slot_free` is when the slot could send (the previous response's end, or the
/// moment it woke from waiting). When the slot was free before the intended time the request was
/// on time: any gap between intended and actual is the client's timer, not the server, and the
/// request is timed from its send. When the slot was still busy at the intended time, the request
/// is late and is timed from its intended start.
pub fn time_request(intended: Instant, slot_free: Instant, sent: Instant, done: Instant) -> Timing {
    let uncorrected = done.saturating_duration_since(sent);
    if slot_free > intended {
        Timing {
            corrected: done.saturating_duration_since(intended),
            uncorrected,
            late: true,
        }
    } else {
        Timing {
            corrected: uncorrected,
            uncorrected,
            late: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_follow_rate_and_phase() {
        let t0 = Instant::now();
        // 1000 rps over 4 slots: each slot every 4ms, slots 1ms apart.
        let mut s = Schedule::new(t0, 1000.0, 1, 4);
        assert_eq!(s.interval(), Duration::from_millis(4));
        assert_eq!(s.intended() - t0, Duration::from_millis(1));
        s.advance();
        s.advance();
        assert_eq!(s.intended() - t0, Duration::from_millis(9));
    }

    #[test]
    fn schedule_does_not_drift_over_many_requests() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 3.0, 0, 1);
        for _ in 0..3_000_000 {
            s.advance();
        }
        // 3e6 requests at 3 rps: exactly 1e6 seconds, to the microsecond.
        let err = (s.intended() - t0).as_secs_f64() - 1_000_000.0;
        assert!(err.abs() < 1e-6, "{err}");
    }

    #[test]
    fn a_busy_slot_makes_the_request_late_and_corrects_it() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Intended at 10ms; the previous response ended at 500ms (a stall); sent at once, done at 501ms.
        let t = time_request(t0 + ms(10), t0 + ms(500), t0 + ms(500), t0 + ms(501));
        assert!(t.late);
        assert_eq!(t.corrected, ms(491));
        assert_eq!(t.uncorrected, ms(1));
    }

    #[test]
    fn timer_slop_is_not_charged_to_the_server() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let us = Duration::from_micros;
        // Free at 5ms, intended at 10ms, the timer woke at 10.9ms, done at 11ms.
        let t = time_request(t0 + ms(10), t0 + ms(5), t0 + us(10_900), t0 + ms(11));
        assert!(!t.late);
        assert_eq!(t.corrected, us(100));
        assert_eq!(t.uncorrected, us(100));
        // Free exactly at the intended time is on time too.
        let t = time_request(t0 + ms(10), t0 + ms(10), t0 + ms(10), t0 + ms(12));
        assert!(!t.late);
        assert_eq!(t.corrected, ms(2));
    }
}
