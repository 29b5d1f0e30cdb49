//! HTTP/1.1 upstream connections kept open between requests, by address (`host:port`).
//!
//! One request at a time per connection, as HTTP/1.1 allows. A connection goes back to the pool
//! when its response's body has been read to the end (Envoy's keep-alive), and is closed when
//! the body is dropped before that, when the upstream closes it, or when it stays idle longer
//! than the cluster's `idleTimeout`. Built on hyper's `client::conn`: no URI rebuilding, no
//! task per request, one short lock to take or give back a connection.

use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;

use crate::replay::{Arrived, AttemptBody};
use crate::telemetry::Connections;

/// At most this many idle connections are kept per address; more are closed.
pub const MAX_IDLE_PER_ADDRESS: usize = 256;

/// What went wrong sending one request.
#[derive(Debug)]
pub enum H1Error {
    /// No connection could be made (the string says why).
    Connect(String),
    /// The connection failed after it was made.
    Http(hyper::Error),
}

/// The pool of one cluster. Cheap to clone: clones share the connections.
#[derive(Debug, Clone)]
pub struct H1Pool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    idle: Mutex<crate::compile::Map<String, Vec<Idle>>>,
    /// None: connections stay open however long they are idle.
    idle_timeout: Option<Duration>,
    /// false: one request per connection (`maxRequestsPerConnection: 1`).
    keep_alive: bool,
    connect_timeout: Duration,
    resolver: crate::dns::Resolver,
    connections: Connections,
    /// Whether the task that closes connections idle past the timeout runs.
    reaping: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<AttemptBody>,
    since: Instant,
}

impl H1Pool {
    pub fn new(
        idle_timeout: Option<Duration>,
        keep_alive: bool,
        connect_timeout: Duration,
        resolver: &crate::dns::Resolver,
        connections: &Connections,
    ) -> H1Pool {
        H1Pool {
            shared: Arc::new(Shared {
                idle: Mutex::default(),
                idle_timeout,
                keep_alive,
                connect_timeout,
                resolver: resolver.clone(),
                connections: connections.clone(),
                reaping: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Sends `req` (origin-form URI, Host set) to `address` on an idle connection, or a new one.
    /// A request the connection closed under before writing it goes once more on a new
    /// connection, as it never reached the upstream.
    pub async fn send(
        &self,
        address: String,
        req: http::Request<AttemptBody>,
    ) -> Result<http::Response<Returning>, H1Error> {
        let arrived = req.body().arrived();
        let mut sender = match self.take(&address) {
            Some(s) => s,
            None => self.dial(&address).await?,
        };
        let req = match sender.try_send_request(req).await {
            Ok(resp) => return Ok(self.returning(address, sender, resp, arrived)),
            Err(mut e) => match e.take_message() {
                Some(req) => req,
                None => return Err(H1Error::Http(e.into_error())),
            },
        };
        let mut sender = self.dial(&address).await?;
        let resp = sender.send_request(req).await.map_err(H1Error::Http)?;
        Ok(self.returning(address, sender, resp, arrived))
    }

    /// An idle connection to `address` ready for a request, if there is one. Those idle past the
    /// timeout, closed by the upstream, or still busy with their last exchange (a request body
    /// the upstream answered before reading all of it) are let go: a busy one closes once done.
    fn take(&self, address: &str) -> Option<SendRequest<AttemptBody>> {
        let mut map = self
            .shared
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let idle = map.get_mut(address)?;
        while let Some(i) = idle.pop() {
            if !self.shared.expired(i.since) && i.sender.is_ready() {
                return Some(i.sender);
            }
        }
        None
    }

    async fn dial(&self, address: &str) -> Result<SendRequest<AttemptBody>, H1Error> {
        let s = &self.shared;
        let stream = s
            .resolver
            .connect(address, s.connect_timeout)
            .await
            .map_err(|e| H1Error::Connect(crate::forward::error_chain(&e)))?;
        let open = s.connections.opened();
        let (sender, conn) = Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| H1Error::Connect(crate::forward::error_chain(&e)))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
            drop(open);
        });
        Ok(sender)
    }

    fn returning(
        &self,
        address: String,
        sender: SendRequest<AttemptBody>,
        resp: http::Response<Incoming>,
        arrived: Arrived,
    ) -> http::Response<Returning> {
        // A 101 hands the connection to the upgrade: it never comes back.
        let back = (self.shared.keep_alive && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS).then(|| Back {
            pool: Arc::downgrade(&self.shared),
            address,
            sender,
            arrived,
        });
        let mut resp = resp.map(|body| Returning { body, back });
        if resp.body().body.is_end_stream() {
            resp.body_mut().give_back();
        }
        resp
    }

    /// Idle connections to `address` now.
    #[cfg(test)]
    pub fn idle(&self, address: &str) -> usize {
        let map = self
            .shared
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(address).map_or(0, Vec::len)
    }
}

impl Shared {
    fn expired(&self, since: Instant) -> bool {
        self.idle_timeout.is_some_and(|t| since.elapsed() >= t)
    }

    fn give_back(self: &Arc<Self>, address: String, sender: SendRequest<AttemptBody>) {
        if sender.is_closed() {
            return;
        }
        let mut map = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let idle = map.entry(address).or_default();
        if idle.len() < MAX_IDLE_PER_ADDRESS {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
        drop(map);
        self.reap();
    }

    /// Starts the task that closes connections idle past the timeout, once per pool; it ends
    /// with the pool.
    fn reap(self: &Arc<Self>) {
        if let Some(every) = self.idle_timeout {
            sweep_every(self, every, &self.reaping, Shared::sweep);
        }
    }

    fn sweep(&self) {
        let mut map = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for idle in map.values_mut() {
            idle.retain(|i| !self.expired(i.since) && !i.sender.is_closed());
        }
        map.retain(|_, idle| !idle.is_empty());
    }
}

/// Runs `sweep` on `pool` every `every` from one task, started once (`started`), which ends when
/// the pool is dropped: how the upstream pools let go of connections idle past the timeout.
pub(crate) fn sweep_every<T: Send + Sync + 'static>(
    pool: &Arc<T>,
    every: Duration,
    started: &std::sync::atomic::AtomicBool,
    sweep: fn(&T),
) {
    if started.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let pool = Arc::downgrade(pool);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(pool) = Weak::upgrade(&pool) else {
                return;
            };
            sweep(&pool);
        }
    });
}

/// A response body that gives its connection back to the pool once read to the end.
#[derive(Debug)]
pub struct Returning {
    body: Incoming,
    back: Option<Back>,
}

/// Where a connection goes back to, and what must hold first.
#[derive(Debug)]
struct Back {
    pool: Weak<Shared>,
    address: String,
    sender: SendRequest<AttemptBody>,
    /// The request's body: a connection still sending one (the upstream answered before reading
    /// it all) is not given back; it finishes that exchange and closes.
    arrived: Arrived,
}

impl Returning {
    fn give_back(&mut self) {
        if let Some(back) = self.back.take() {
            if let Some(pool) = back.pool.upgrade().filter(|_| back.arrived.all()) {
                pool.give_back(back.address, back.sender);
            }
        }
    }
}

impl Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.give_back(),
            // A failed body leaves the connection unusable: dropping the sender closes it.
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests;
