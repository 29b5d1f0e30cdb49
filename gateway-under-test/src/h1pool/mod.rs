//! HTTP/1.1 upstream connections kept open between requests, by address (`host:port`).
//!
//! One request at a time per connection, as HTTP/1.1 allows. A connection goes back to the pool
//! when its response's body has been read to the end (Envoy's keep-alive), and is closed when
//! the body is dropped before that, when the upstream closes it, or when it stays idle longer
//! than the cluster's `idleTimeout`. A request whose body is whole (most are) is exchanged in
//! its own task by `wire`, with no connection task; one whose body is still arriving, or an
//! upgrade, goes through hyper's `client::conn`, which writes a body while it reads the answer.
//! Each kind keeps its own idle connections; one short lock takes or gives back either.

mod wire;

pub(crate) use wire::Outgoing;

use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;

use crate::context::BoxError;
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
    /// The exchange failed after the connection was made (the string says why).
    Wire(String),
}

/// The pool of one cluster. Cheap to clone: clones share the connections.
#[derive(Debug, Clone)]
pub struct H1Pool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    idle: Mutex<Parked>,
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

/// Idle connections by address, hyper's and `wire`'s apart.
#[derive(Debug, Default)]
struct Parked {
    hyper: crate::compile::Map<String, Vec<Idle<SendRequest<AttemptBody>>>>,
    wire: crate::compile::Map<String, Vec<Idle<wire::Conn>>>,
}

#[derive(Debug)]
struct Idle<C> {
    conn: C,
    since: Instant,
}

/// A connection of either kind, as the pool keeps and checks it.
trait Pooled {
    /// Whether it can carry a request now.
    fn ready(&self) -> bool;
    /// Whether it is closed (or unusable) for good.
    fn closed(&self) -> bool;
}

impl Pooled for SendRequest<AttemptBody> {
    fn ready(&self) -> bool {
        self.is_ready()
    }
    fn closed(&self) -> bool {
        self.is_closed()
    }
}

impl Pooled for wire::Conn {
    fn ready(&self) -> bool {
        self.usable()
    }
    fn closed(&self) -> bool {
        !self.usable()
    }
}

/// Takes the newest connection of `idle` that is ready, letting go of the expired and the
/// unusable ones on the way.
fn take_from<C: Pooled>(idle: Option<&mut Vec<Idle<C>>>, shared: &Shared) -> Option<C> {
    let idle = idle?;
    while let Some(i) = idle.pop() {
        if !shared.expired(i.since) && i.conn.ready() {
            return Some(i.conn);
        }
    }
    None
}

/// Parks `conn` as idle for `address`, unless `MAX_IDLE_PER_ADDRESS` are already.
fn park<C>(map: &mut crate::compile::Map<String, Vec<Idle<C>>>, address: String, conn: C) {
    let idle = map.entry(address).or_default();
    if idle.len() < MAX_IDLE_PER_ADDRESS {
        idle.push(Idle {
            conn,
            since: Instant::now(),
        });
    }
}

/// Lets go of the connections idle past the timeout or closed.
fn sweep_map<C: Pooled>(map: &mut crate::compile::Map<String, Vec<Idle<C>>>, shared: &Shared) {
    for idle in map.values_mut() {
        idle.retain(|i| !shared.expired(i.since) && !i.conn.closed());
    }
    map.retain(|_, idle| !idle.is_empty());
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
        // The rarer path and the dials are boxed, so the future of a request in flight is the
        // common path's size (1.1 KiB, not 2 KiB).
        let Some(out) = wire::Outgoing::whole(&req) else {
            return Box::pin(self.send_hyper(address, req)).await;
        };
        drop(req);
        self.send_wire(address, &out).await
    }

    /// Sends `out` on an idle connection to `address`, or a new one; once more on a new one when
    /// a reused connection had closed before one byte of it was written.
    pub(crate) async fn send_wire(
        &self,
        address: String,
        out: &Outgoing,
    ) -> Result<http::Response<Returning>, H1Error> {
        let taken = self.take_wire(&address);
        let reused = taken.is_some();
        let mut conn = match taken {
            Some(c) => c,
            None => Box::pin(self.dial_wire(&address)).await?,
        };
        let head = match conn.exchange(out).await {
            Err(wire::Failed::Unsent(_)) if reused => {
                conn = Box::pin(self.dial_wire(&address)).await?;
                conn.exchange(out).await
            }
            head => head,
        };
        let wire::Head {
            response,
            reader,
            keep_alive,
        } = head.map_err(|e| H1Error::Wire(e.to_string()))?;
        let back = (self.shared.keep_alive && keep_alive).then(|| Arc::downgrade(&self.shared));
        let mut resp = response.map(|()| Returning {
            inner: Inner::Wire {
                reader,
                conn: Some(conn),
                back: back.map(|pool| (pool, address)),
            },
        });
        resp.body_mut().settle(false);
        Ok(resp)
    }

    async fn send_hyper(
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
        let mut parked = self.shared.parked();
        take_from(parked.hyper.get_mut(address), &self.shared)
    }

    /// An idle `wire` connection to `address` that nothing has arrived on since its last
    /// response (see `take`).
    fn take_wire(&self, address: &str) -> Option<wire::Conn> {
        let mut parked = self.shared.parked();
        take_from(parked.wire.get_mut(address), &self.shared)
    }

    async fn connect(&self, address: &str) -> Result<tokio::net::TcpStream, H1Error> {
        let s = &self.shared;
        s.resolver
            .connect(address, s.connect_timeout)
            .await
            .map_err(|e| H1Error::Connect(crate::forward::error_chain(&e)))
    }

    async fn dial_wire(&self, address: &str) -> Result<wire::Conn, H1Error> {
        let stream = self.connect(address).await?;
        Ok(wire::Conn::new(stream, self.shared.connections.opened()))
    }

    async fn dial(&self, address: &str) -> Result<SendRequest<AttemptBody>, H1Error> {
        let stream = self.connect(address).await?;
        let open = self.shared.connections.opened();
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
        let mut resp = resp.map(|body| Returning {
            inner: Inner::Hyper { body, back },
        });
        resp.body_mut().settle(false);
        resp
    }

    /// Idle connections to `address` now, of both kinds.
    #[cfg(test)]
    pub fn idle(&self, address: &str) -> usize {
        let parked = self.shared.parked();
        parked.hyper.get(address).map_or(0, Vec::len) + parked.wire.get(address).map_or(0, Vec::len)
    }
}

impl Shared {
    fn expired(&self, since: Instant) -> bool {
        self.idle_timeout.is_some_and(|t| since.elapsed() >= t)
    }

    fn parked(&self) -> std::sync::MutexGuard<'_, Parked> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn give_back(self: &Arc<Self>, address: String, sender: SendRequest<AttemptBody>) {
        if sender.is_closed() {
            return;
        }
        park(&mut self.parked().hyper, address, sender);
        self.reap();
    }

    fn give_back_wire(self: &Arc<Self>, address: String, mut conn: wire::Conn) {
        conn.park();
        park(&mut self.parked().wire, address, conn);
        self.reap();
    }

    /// Starts the task that closes connections idle past the timeout or closed by the upstream,
    /// once per pool; it ends with the pool. It runs at least every `CLOSED_CHECK`: hyper's
    /// connections notice a close themselves, `wire`'s only when looked at.
    fn reap(self: &Arc<Self>) {
        let every = self.idle_timeout.map_or(CLOSED_CHECK, |t| t.min(CLOSED_CHECK));
        sweep_every(self, every, &self.reaping, Shared::sweep);
    }

    fn sweep(&self) {
        let mut parked = self.parked();
        sweep_map(&mut parked.hyper, self);
        sweep_map(&mut parked.wire, self);
    }
}

/// How long an idle connection the upstream closed may stay open on this side at most.
const CLOSED_CHECK: Duration = Duration::from_secs(1);

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
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Hyper {
        body: Incoming,
        back: Option<Back>,
    },
    /// Read from the connection itself, which goes back to `back` (pool, address) at the end
    /// unless the response closes it.
    Wire {
        reader: wire::Reader,
        /// None once given back or closed.
        conn: Option<wire::Conn>,
        back: Option<(Weak<Shared>, String)>,
    },
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
    /// Gives the connection back once the body has been read to its end (`ended`: it was just
    /// seen to end), or for `wire` closes it then if it may not carry another request.
    fn settle(&mut self, ended: bool) {
        match &mut self.inner {
            Inner::Hyper { body, back } => {
                if !ended && !body.is_end_stream() {
                    return;
                }
                if let Some(back) = back.take() {
                    if let Some(pool) = back.pool.upgrade().filter(|_| back.arrived.all()) {
                        pool.give_back(back.address, back.sender);
                    }
                }
            }
            Inner::Wire { reader, conn, back } => {
                if !reader.ended() {
                    return;
                }
                let Some(conn) = conn.take().filter(wire::Conn::drained) else {
                    return;
                };
                if let Some((pool, address)) = back.take() {
                    if let Some(pool) = pool.upgrade() {
                        pool.give_back_wire(address, conn);
                    }
                }
            }
        }
    }

    /// A failed body leaves its connection unusable: it is closed, never given back.
    fn fail(&mut self) {
        match &mut self.inner {
            Inner::Hyper { back, .. } => *back = None,
            Inner::Wire { conn, .. } => *conn = None,
        }
    }
}

impl Body for Returning {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled: Poll<Option<Result<Frame<Bytes>, BoxError>>> = match &mut self.inner {
            Inner::Hyper { body, .. } => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Inner::Wire { reader, conn, .. } => match conn {
                Some(conn) => reader.poll_frame(conn, cx).map_err(Into::into),
                None if reader.ended() => Poll::Ready(None),
                None => Poll::Ready(Some(Err("the upstream connection was closed".into()))),
            },
        };
        match &polled {
            Poll::Ready(Some(Err(_))) => self.fail(),
            Poll::Ready(polled) => {
                let ended = polled.is_none();
                self.settle(ended);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Hyper { body, .. } => body.is_end_stream(),
            Inner::Wire { reader, .. } => reader.ended(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Hyper { body, .. } => body.size_hint(),
            Inner::Wire { reader, .. } => reader.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests;
