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
}

impl Outlier {
    /// None when the cluster has no outlier detection.
    pub fn new(c: &Cluster) -> Option<Outlier> {
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
        let trip = self.consecutive_5xx.is_some_and(|t| n5 >= t) || self.consecutive_gateway.is_some_and(|t| ng >= t);
        if trip {
            self.eject(i);
        }
    }

    fn eject(&self, i: usize) {
        let ejected = self.ejected_count();
        let allowed = ejected == 0 || (ejected + 1) * 100 <= self.hosts.len() * self.max_ejection_percent as usize;
        if !allowed || self.is_ejected(i) {
            return;
        }
        let h = &self.hosts[i];
        let times = h.times_ejected.fetch_add(1, Ordering::AcqRel) + 1;
        if let Ok(mut until) = h.ejected_until.lock() {
            *until = Some(Instant::now() + self.base_ejection * times);
        }
        h.consecutive_5xx.store(0, Ordering::Release);
        h.consecutive_gateway.store(0, Ordering::Release);
    }
}
