//! DestinationRule `connectionPool` as Envoy's circuit breakers, and `outlierDetection` as its
//! passive health checking: per cluster, built with the cluster on every (re)load.
//!
//! - `http2MaxRequests`: requests in flight to the cluster; beyond it, 503 UO at once.
//! - `maxConnections` (HTTP/1.1: one request per connection at a time) with
//!   `http1MaxPendingRequests`: requests beyond the connections wait, up to the pending limit;
//!   beyond that, 503 UO with `x-envoy-overloaded: true`.
//! - `maxRetries`: retries in flight to the cluster; beyond it a request is not retried.
//! - outlier detection: consecutive 5xx (or gateway errors: 502/503/504 and connect failures)
//!   eject an endpoint for `baseEjectionTime` x times ejected, at most `maxEjectionPercent` of
//!   the endpoints (one at least); no panic mode, as Istio configures Envoy.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_model::plan::Cluster;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::errors::Failure;
use crate::telemetry::Ejections;

/// Envoy's "unlimited" (2^32-1): no breaker is built for it.
const UNLIMITED: i32 = i32::MAX;

#[derive(Debug)]
pub struct Breakers {
    requests: Option<Arc<Semaphore>>,
    connections: Option<Arc<Semaphore>>,
    max_pending: u64,
    pending: AtomicU64,
    max_retries: Option<u64>,
    retries: AtomicU64,
}

/// Permits held for the life of one upstream exchange.
#[derive(Debug, Default)]
pub struct Admission {
    _request: Option<OwnedSemaphorePermit>,
    _connection: Option<OwnedSemaphorePermit>,
}

/// A response body that holds the exchange's permits until it has been sent.
#[derive(Debug)]
pub struct Held<B> {
    pub inner: B,
    pub admission: Admission,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn limit(v: Option<i32>) -> Option<usize> {
    v.filter(|n| *n > 0 && *n < UNLIMITED).map(|n| n as usize)
}

impl Breakers {
    pub fn new(c: &Cluster) -> Breakers {
        let pool = c.policy.connection_pool.as_ref();
        let http = pool.and_then(|p| p.http.as_ref());
        let tcp = pool.and_then(|p| p.tcp.as_ref());
        // maxConnections bounds concurrency only where a connection carries one request at a time.
        let connections = if c.protocol.is_http2() {
            None
        } else {
            limit(tcp.and_then(|t| t.max_connections))
        };
        Breakers {
            requests: limit(http.and_then(|h| h.http2_max_requests)).map(|n| Arc::new(Semaphore::new(n))),
            connections: connections.map(|n| Arc::new(Semaphore::new(n))),
            max_pending: limit(http.and_then(|h| h.http1_max_pending_requests)).map_or(u64::MAX, |n| n as u64),
            pending: AtomicU64::new(0),
            max_retries: limit(http.and_then(|h| h.max_retries)).map(|n| n as u64),
            retries: AtomicU64::new(0),
        }
    }

    /// Admits a request, waiting for a connection when allowed to; Err: overflow (UO).
    pub async fn admit(&self) -> Result<Admission, Failure> {
        let request = match &self.requests {
            Some(s) => Some(s.clone().try_acquire_owned().map_err(|_| Failure::Overflow)?),
            None => None,
        };
        let connection = match &self.connections {
            None => None,
            Some(s) => match s.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending {
                        self.pending.fetch_sub(1, Ordering::AcqRel);
                        return Err(Failure::Overflow);
                    }
                    let p = s.clone().acquire_owned().await;
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                    Some(p.map_err(|_| Failure::Overflow)?)
                }
            },
        };
        Ok(Admission {
            _request: request,
            _connection: connection,
        })
    }

    /// Admits a TCP session: `maxConnections` without a pending queue; Err: overflow (UO).
    pub fn admit_now(&self) -> Result<Admission, Failure> {
        let connection = match &self.connections {
            Some(s) => Some(s.clone().try_acquire_owned().map_err(|_| Failure::Overflow)?),
            None => None,
        };
        Ok(Admission {
            _request: None,
            _connection: connection,
        })
    }

    /// Takes a retry slot; false when `maxRetries` retries are already in flight.
    pub fn start_retry(&self) -> bool {
        match self.max_retries {
            None => true,
            Some(max) if self.retries.fetch_add(1, Ordering::AcqRel) >= max => {
                self.retries.fetch_sub(1, Ordering::AcqRel);
                false
            }
            Some(_) => true,
        }
    }

    pub fn end_retry(&self) {
        if self.max_retries.is_some() {
            self.retries.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[derive(Debug, Default)]
struct Health {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    times_ejected: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
}

#[derive(Debug)]
pub struct Outlier {
    consecutive_5xx: Option<u32>,
    consecutive_gateway: Option<u32>,
    base_ejection: Duration,
    max_ejection_percent: u32,
    hosts: Vec<Health>,
    /// Where ejections are counted (Envoy's outlier detection stats).
    ejections: Ejections,
}

/// What tripped an ejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Consecutive5xx,
    ConsecutiveGateway,
}

impl Outlier {
    /// None when the cluster has no outlier detection. Ejections are counted in `ejections`.
    pub fn new(c: &Cluster, ejections: Ejections) -> Option<Outlier> {
        let od = c.policy.outlier_detection.as_ref()?;
        let c5 = od
            .consecutive_5xx_errors
            .or(od.consecutive_errors.map(|n| n.max(0) as u32))
            .unwrap_or(5);
        Some(Outlier {
            consecutive_5xx: (c5 > 0).then_some(c5),
            consecutive_gateway: od.consecutive_gateway_errors.filter(|n| *n > 0),
            base_ejection: od.base_ejection_time.map_or(Duration::from_secs(30), |d| d.as_std()),
            max_ejection_percent: od.max_ejection_percent.map_or(10, |p| p.clamp(0, 100) as u32),
            hosts: c.endpoints.iter().map(|_| Health::default()).collect(),
            ejections,
        })
    }

    /// Whether endpoint `i` is ejected now (an ejection that has run out ends here).
    pub fn is_ejected(&self, i: usize) -> bool {
        let Some(h) = self.hosts.get(i) else { return false };
        let Ok(mut until) = h.ejected_until.lock() else {
            return false;
        };
        match *until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                *until = None;
                self.ejections.active.dec();
                false
            }
            None => false,
        }
    }

    pub fn ejected_count(&self) -> usize {
        (0..self.hosts.len()).filter(|i| self.is_ejected(*i)).count()
    }

    pub fn times_ejected(&self, i: usize) -> u32 {
        self.hosts.get(i).map_or(0, |h| h.times_ejected.load(Ordering::Relaxed))
    }

    /// Counts one result of endpoint `i`: an HTTP status, or a failure with no response.
    pub fn report(&self, i: usize, status: Option<u16>, failure: Option<&Failure>) {
        let Some(h) = self.hosts.get(i) else { return };
        let local = matches!(
            failure,
            Some(Failure::ConnectFailure(_) | Failure::Reset(_) | Failure::Timeout)
        );
        let is_5xx = local || status.is_some_and(|s| s >= 500);
        let is_gateway = local || status.is_some_and(|s| (502..=504).contains(&s));
        let bump = |counter: &AtomicU32, hit: bool| {
            if hit {
                counter.fetch_add(1, Ordering::AcqRel) + 1
            } else {
                counter.store(0, Ordering::Release);
                0
            }
        };
        let n5 = bump(&h.consecutive_5xx, is_5xx);
        let ng = bump(&h.consecutive_gateway, is_gateway);
        if self.consecutive_5xx.is_some_and(|t| n5 >= t) {
            self.eject(i, Cause::Consecutive5xx);
        } else if self.consecutive_gateway.is_some_and(|t| ng >= t) {
            self.eject(i, Cause::ConsecutiveGateway);
        }
    }

    /// Ends the ejections that have run out, so that `ejections_active` is exact when scraped
    /// (Envoy ends them on its interval timer; here they end when next looked at).
    pub fn expire(&self) {
        self.ejected_count();
    }

    fn eject(&self, i: usize, cause: Cause) {
        if self.is_ejected(i) {
            return;
        }
        let ejected = self.ejected_count();
        let allowed = ejected == 0 || (ejected + 1) * 100 <= self.hosts.len() * self.max_ejection_percent as usize;
        if !allowed {
            self.ejections.overflow.inc();
            return;
        }
        self.ejections.enforced.inc();
        self.ejections.active.inc();
        match cause {
            Cause::Consecutive5xx => self.ejections.consecutive_5xx.inc(),
            Cause::ConsecutiveGateway => self.ejections.consecutive_gateway.inc(),
        };
        let h = &self.hosts[i];
        let times = h.times_ejected.fetch_add(1, Ordering::AcqRel) + 1;
        if let Ok(mut until) = h.ejected_until.lock() {
            *until = Some(Instant::now() + self.base_ejection * times);
        }
        h.consecutive_5xx.store(0, Ordering::Release);
        h.consecutive_gateway.store(0, Ordering::Release);
    }
}

impl Drop for Outlier {
    /// A reload replaces the detector: its ejections stop counting as active (the new one starts
    /// with every endpoint healthy, as Envoy's does for a changed cluster).
    fn drop(&mut self) {
        for h in &self.hosts {
            if h.ejected_until.lock().is_ok_and(|u| u.is_some()) {
                self.ejections.active.dec();
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::future::Future;

    use super::*;

    /// Three endpoints of a `protocol` port, with `policy` as the DestinationRule's trafficPolicy.
    pub(crate) fn cluster(protocol: &str, policy: &str) -> Cluster {
        let endpoints = "[{address: 10.0.0.1}, {address: 10.0.0.2}, {address: 10.0.0.3}]";
        service_cluster(protocol, "STATIC", endpoints, policy)
    }

    /// The cluster of web.example.com:80 (a ServiceEntry with `resolution` and `endpoints`, as
    /// YAML) with `policy` as its DestinationRule's trafficPolicy.
    pub(crate) fn service_cluster(protocol: &str, resolution: &str, endpoints: &str, policy: &str) -> Cluster {
        let yaml = format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: web, namespace: default}}\nspec:\n  \
             hosts: [web.example.com]\n  resolution: {resolution}\n  ports: [{{number: 80, name: web, protocol: {protocol}}}]\n  \
             endpoints: {endpoints}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: web, namespace: default}}\nspec:\n  \
             host: web.example.com\n  trafficPolicy: {policy}\n"
        );
        plan_cluster(&yaml, "outbound|80||web.example.com")
    }

    /// The cluster `name` of the sidecar Plan built from `yaml`.
    fn plan_cluster(yaml: &str, name: &str) -> Cluster {
        let loaded = mesh_model::load_str("t.yaml", yaml);
        let opts = mesh_model::plan::PlanOptions {
            labels: None,
            namespace: None,
            sidecar: true,
        };
        let (plan, _) = mesh_model::plan::build(&loaded.config, &opts);
        plan.cluster(name)
            .unwrap_or_else(|| panic!("no {name} in {plan:?}"))
            .clone()
    }

    /// Three endpoints with `outlier` as the DestinationRule's outlierDetection.
    fn outlier(outlier: &str, ejections: &Ejections) -> Outlier {
        let c = cluster("HTTP", &format!("{{outlierDetection: {outlier}}}"));
        Outlier::new(&c, ejections.clone()).unwrap_or_else(|| panic!("no outlier detection"))
    }

    fn breakers(protocol: &str, pool: &str) -> Breakers {
        Breakers::new(&cluster(protocol, &format!("{{connectionPool: {pool}}}")))
    }

    fn now<T>(f: impl std::future::Future<Output = T>) -> Option<T> {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn a_limit_is_a_positive_count_below_envoys_unlimited() {
        assert_eq!(limit(None), None);
        assert_eq!(limit(Some(0)), None);
        assert_eq!(limit(Some(-3)), None);
        assert_eq!(limit(Some(i32::MAX)), None);
        assert_eq!(limit(Some(1)), Some(1));
        assert_eq!(limit(Some(1024)), Some(1024));
        assert_eq!(limit(Some(i32::MAX - 1)), Some(i32::MAX as usize - 1));
    }

    #[test]
    fn http2_max_requests_bounds_requests_in_flight_without_a_queue() {
        let b = breakers("HTTP2", "{http: {http2MaxRequests: 2}, tcp: {maxConnections: 1}}");
        let first = now(b.admit()).unwrap().unwrap();
        let _second = now(b.admit()).unwrap().unwrap();
        // maxConnections does not bound an h2 cluster (its connections multiplex); requests do.
        assert_eq!(now(b.admit()).unwrap().unwrap_err(), Failure::Overflow);
        drop(first);
        assert!(now(b.admit()).unwrap().is_ok());
    }

    #[test]
    fn max_connections_queues_up_to_http1_max_pending_requests() {
        let b = breakers("HTTP", "{http: {http1MaxPendingRequests: 1}, tcp: {maxConnections: 1}}");
        let first = now(b.admit()).unwrap().unwrap();
        let mut waiting = Box::pin(b.admit());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            waiting.as_mut().poll(&mut cx).is_pending(),
            "the second waits for the connection"
        );
        // The queue is full: the third overflows at once.
        assert_eq!(now(b.admit()).unwrap().unwrap_err(), Failure::Overflow);
        drop(first);
        let std::task::Poll::Ready(Ok(_second)) = waiting.as_mut().poll(&mut cx) else {
            panic!("the waiting request has the connection once it is free");
        };
        // The queue is empty again: one more may wait.
        let mut again = Box::pin(b.admit());
        assert!(again.as_mut().poll(&mut cx).is_pending());
        // A TCP session does not queue.
        assert_eq!(b.admit_now().unwrap_err(), Failure::Overflow);
    }

    #[test]
    fn no_connection_pool_admits_everything() {
        let b = breakers("HTTP", "{}");
        let held: Vec<_> = (0..100).map(|_| now(b.admit()).unwrap().unwrap()).collect();
        assert_eq!(held.len(), 100);
        assert!(b.admit_now().is_ok());
        assert!((0..100).all(|_| b.start_retry()));
    }

    #[test]
    fn max_retries_bounds_retries_in_flight() {
        let b = breakers("HTTP", "{http: {maxRetries: 2}}");
        assert!(b.start_retry() && b.start_retry());
        assert!(!b.start_retry(), "a third retry in flight");
        assert!(!b.start_retry(), "a refused retry takes no slot");
        b.end_retry();
        assert!(b.start_retry());
        assert!(!b.start_retry());
    }

    #[test]
    fn a_held_body_passes_its_length_and_end_on() {
        use http_body_util::BodyExt;
        let full = http_body_util::Full::new(bytes::Bytes::from_static(b"abc"));
        let mut held = Held {
            inner: full,
            admission: Admission::default(),
        };
        assert_eq!(hyper::body::Body::size_hint(&held).exact(), Some(3));
        assert!(!hyper::body::Body::is_end_stream(&held));
        let frame = now(held.frame()).unwrap().unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "abc");
        assert!(hyper::body::Body::is_end_stream(&held));
    }

    #[test]
    fn ejections_are_counted_by_cause_and_limited_by_max_ejection_percent() {
        let e = Ejections::default();
        let o = outlier(
            "{consecutive5xxErrors: 2, consecutiveGatewayErrors: 1, maxEjectionPercent: 34}",
            &e,
        );
        // A 500 twice: consecutive 5xx; a 502 once: a gateway failure, but 2 of 3 is over 34%.
        o.report(0, Some(500), None);
        assert_eq!(e.enforced.get(), 0, "one 5xx is not enough");
        o.report(0, Some(500), None);
        o.report(1, Some(502), None);
        assert_eq!(
            (e.enforced.get(), e.consecutive_5xx.get(), e.consecutive_gateway.get()),
            (1, 1, 0)
        );
        assert_eq!((e.active.get(), e.overflow.get()), (1, 1));
        assert!(o.is_ejected(0) && !o.is_ejected(1));
        // An ejected endpoint failing again is not ejected twice.
        o.report(0, Some(503), None);
        o.report(0, Some(503), None);
        assert_eq!(e.enforced.get(), 1);
        // Replaced by a reload: its ejections are no longer active.
        drop(o);
        assert_eq!(e.active.get(), 0);
    }

    #[test]
    fn max_ejection_percent_counts_endpoints_and_always_allows_one() {
        // 10% of three endpoints is not one endpoint, yet Envoy always ejects one.
        let e = Ejections::default();
        let o = outlier("{consecutive5xxErrors: 1, maxEjectionPercent: 10}", &e);
        o.report(0, Some(503), None);
        assert_eq!((e.enforced.get(), e.overflow.get()), (1, 0));
        // 67% of three: two ejections (200% of one endpoint <= 3 x 67), not three.
        let e = Ejections::default();
        let o = outlier("{consecutive5xxErrors: 1, maxEjectionPercent: 67}", &e);
        for i in 0..3 {
            o.report(i, Some(503), None);
        }
        assert_eq!((e.enforced.get(), e.overflow.get(), e.active.get()), (2, 1, 2));
    }

    #[test]
    fn an_ejection_ends_after_base_ejection_time_when_next_looked_at() {
        let e = Ejections::default();
        let o = outlier(
            "{consecutive5xxErrors: 1, baseEjectionTime: 20ms, maxEjectionPercent: 100}",
            &e,
        );
        o.report(1, Some(500), None);
        assert_eq!(e.active.get(), 1);
        std::thread::sleep(Duration::from_millis(40));
        o.expire();
        assert_eq!(e.active.get(), 0);
        assert!(!o.is_ejected(1));
    }

    #[test]
    fn a_gateway_failure_ejects_when_5xx_counting_is_off() {
        let e = Ejections::default();
        let o = outlier(
            "{consecutive5xxErrors: 0, consecutiveGatewayErrors: 2, maxEjectionPercent: 100}",
            &e,
        );
        let reset = Failure::Reset("reset".into());
        for _ in 0..5 {
            o.report(2, Some(500), None);
        }
        assert_eq!(e.enforced.get(), 0, "500 is not a gateway error");
        o.report(2, None, Some(&reset));
        o.report(2, Some(504), None);
        assert_eq!(
            (e.enforced.get(), e.consecutive_gateway.get(), e.active.get()),
            (1, 1, 1)
        );
        assert_eq!(o.times_ejected(2), 1);
    }

    #[test]
    fn each_ejection_lasts_base_ejection_time_times_the_ejections_so_far() {
        let e = Ejections::default();
        let o = outlier(
            "{consecutive5xxErrors: 1, baseEjectionTime: 20ms, maxEjectionPercent: 100}",
            &e,
        );
        o.report(0, Some(500), None);
        assert_eq!(o.times_ejected(0), 1);
        // Sleeping longer than the ejection only makes sure it has run out.
        std::thread::sleep(Duration::from_millis(40));
        assert!(!o.is_ejected(0));
        o.report(0, Some(500), None);
        assert_eq!(o.times_ejected(0), 2);
        // The second lasts twice the base: 40 ms from now, not 20 (or 10).
        let until = o.hosts[0].ejected_until.lock().ok().and_then(|u| *u).unwrap();
        assert!(until >= Instant::now() + Duration::from_millis(30));
        assert_eq!(e.enforced.get(), 2);
    }
}
