//! h2 upstream connections with prior knowledge (HTTP2 and GRPC ports) to one endpoint.
//!
//! One connection carries every request as a stream, as Envoy's h2 pool keeps one connection
//! per host: a new one is dialled when there is none, when the upstream closed it (GOAWAY or
//! EOF), when it has carried `maxRequestsPerConnection` requests, or when it has been idle
//! longer than the cluster's `idleTimeout`. Built on the h2 crate: the caller's task opens the
//! stream and queues a whole body with its headers, so a request costs no task and no channel
//! hop to the connection's task; only a body that streams gets a task to pump it, under h2's
//! flow control.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use tokio::sync::oneshot;

use crate::replay::AttemptBody;
use crate::telemetry::Connections;
use crate::upstream::{Dial, SendError};

/// hyper's h2 client windows and buffers, which this pool replaces: 2 MiB per stream, 5 MiB per
/// connection, 1 MiB queued per stream, 16 KiB of response headers.
const STREAM_WINDOW: u32 = 2 << 20;
const CONNECTION_WINDOW: u32 = 5 << 20;
const SEND_BUFFER: usize = 1 << 20;
const MAX_HEADER_LIST: u32 = 16 << 10;

/// The connection to one endpoint. Cheap to clone: clones share it.
#[derive(Debug, Clone)]
pub struct H2Pool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    to: Dial,
    live: Mutex<Option<Live>>,
    /// Held while a connection is dialled, so requests arriving meanwhile share it.
    dialing: tokio::sync::Mutex<()>,
    /// None: a connection stays open however long it is idle.
    idle_timeout: Option<Duration>,
    /// `maxRequestsPerConnection`; None: no limit.
    max_requests: Option<u32>,
    connections: Connections,
    /// Numbers connections, so a failed one is forgotten only if it is still the live one.
    dialled: AtomicU64,
    /// Whether the task that lets go of a connection idle past the timeout runs.
    reaping: AtomicBool,
}

#[derive(Debug)]
struct Live {
    sender: SendRequest<Bytes>,
    id: u64,
    /// Requests it has carried.
    used: u32,
    last: Instant,
    /// Set when the connection has ended.
    closed: Arc<AtomicBool>,
}

impl H2Pool {
    pub fn new(
        to: Dial,
        idle_timeout: Option<Duration>,
        max_requests: Option<u32>,
        connections: &Connections,
    ) -> H2Pool {
        H2Pool {
            shared: Arc::new(Shared {
                to,
                live: Mutex::default(),
                dialing: tokio::sync::Mutex::default(),
                idle_timeout,
                max_requests: max_requests.filter(|m| *m > 0),
                connections: connections.clone(),
                dialled: AtomicU64::new(0),
                reaping: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `req` (absolute URI: its scheme and authority are the pseudo-headers) as a stream.
    /// A request the live connection could not take (the upstream had closed it) goes on a new
    /// connection, as it never reached the upstream.
    pub async fn send(&self, req: http::Request<AttemptBody>) -> Result<http::Response<H2Body>, SendError> {
        let (mut parts, body) = req.into_parts();
        strip_connection_headers(&mut parts.headers);
        let (sender, id) = self.connection().await?;
        let sender = match sender.ready().await {
            Ok(s) => s,
            Err(_) => {
                self.shared.forget(id);
                let (sender, _) = self.connection().await?;
                sender.ready().await.map_err(reset)?
            }
        };
        self.send_on(sender, http::Request::from_parts(parts, ()), body).await
    }

    async fn send_on(
        &self,
        mut sender: SendRequest<Bytes>,
        head: http::Request<()>,
        mut body: AttemptBody,
    ) -> Result<http::Response<H2Body>, SendError> {
        let end = body.is_end_stream();
        let (response, mut stream) = sender.send_request(head, end).map_err(reset)?;
        // Dropped with the response's body (or with this future): the pump stops and the stream
        // is reset, as Envoy resets an upstream stream whose downstream has gone.
        let (cancel, cancelled) = oneshot::channel();
        if !end {
            match &mut body {
                AttemptBody::Whole(whole) => {
                    // Already in memory and within the buffer limit: h2 queues it as the window allows.
                    let data = whole.take().unwrap_or_default();
                    stream.send_data(data, true).map_err(reset)?;
                }
                AttemptBody::Streaming { .. } => {
                    tokio::spawn(pump(body, stream, cancelled));
                }
            }
        }
        let resp = response.await.map_err(reset)?;
        Ok(resp.map(|recv| H2Body {
            recv,
            data_done: false,
            _cancel: cancel,
        }))
    }

    /// The live connection, or a new one; and its number.
    async fn connection(&self) -> Result<(SendRequest<Bytes>, u64), SendError> {
        if let Some(taken) = self.shared.take() {
            return Ok(taken);
        }
        if self.shared.max_requests == Some(1) {
            // Never shared: nothing to wait for.
            return self.dial().await;
        }
        let _dialing = self.shared.dialing.lock().await;
        if let Some(taken) = self.shared.take() {
            return Ok(taken);
        }
        self.dial().await
    }

    async fn dial(&self) -> Result<(SendRequest<Bytes>, u64), SendError> {
        let s = &self.shared;
        let connect_error = |e: &dyn std::error::Error| SendError::Connect(crate::forward::error_chain(e));
        let stream = s.to.connect().await.map_err(|e| connect_error(&e))?;
        let open = s.connections.opened();
        let (sender, conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_send_buffer_size(SEND_BUFFER)
            .max_header_list_size(MAX_HEADER_LIST)
            .enable_push(false)
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(|e| connect_error(&e))?;
        let closed = Arc::new(AtomicBool::new(false));
        let ended = closed.clone();
        tokio::spawn(async move {
            let _ = conn.await;
            ended.store(true, Ordering::Relaxed);
            drop(open);
        });
        let id = s.dialled.fetch_add(1, Ordering::Relaxed);
        if s.max_requests != Some(1) {
            *lock(&s.live) = Some(Live {
                sender: sender.clone(),
                id,
                used: 1,
                last: Instant::now(),
                closed,
            });
            s.reap();
        }
        Ok((sender, id))
    }

    /// Whether a connection is kept for the next request.
    #[cfg(test)]
    pub fn has_live(&self) -> bool {
        lock(&self.shared.live).is_some()
    }
}

impl Shared {
    /// The live connection for one more request, unless it has ended or idled past the
    /// timeout; one that reaches `maxRequestsPerConnection` with this request is let go (it
    /// closes once its streams end).
    fn take(&self) -> Option<(SendRequest<Bytes>, u64)> {
        let mut live = lock(&self.live);
        let l = live.as_mut()?;
        if l.closed.load(Ordering::Relaxed) || self.expired(l.last) {
            *live = None;
            return None;
        }
        l.used += 1;
        l.last = Instant::now();
        let taken = (l.sender.clone(), l.id);
        if self.max_requests.is_some_and(|m| l.used >= m) {
            *live = None;
        }
        Some(taken)
    }

    /// Lets go of connection `id` if it is still the live one.
    fn forget(&self, id: u64) {
        let mut live = lock(&self.live);
        if live.as_ref().is_some_and(|l| l.id == id) {
            *live = None;
        }
    }

    fn expired(&self, since: Instant) -> bool {
        self.idle_timeout.is_some_and(|t| since.elapsed() >= t)
    }

    /// Starts the task that lets go of a connection idle past the timeout, once per pool; it
    /// ends with the pool.
    fn reap(self: &Arc<Self>) {
        if let Some(every) = self.idle_timeout {
            crate::h1pool::sweep_every(self, every, &self.reaping, Shared::sweep);
        }
    }

    fn sweep(&self) {
        let mut live = lock(&self.live);
        if live.as_ref().is_some_and(|l| self.expired(l.last)) {
            *live = None;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn reset(e: h2::Error) -> SendError {
    SendError::Reset(crate::forward::error_chain(&e))
}

/// HTTP/2 forbids connection-specific headers (RFC 9113 §8.2.2); `te` may only say `trailers`.
fn strip_connection_headers(headers: &mut http::HeaderMap) {
    for hop in &crate::names::HOP_BY_HOP {
        headers.remove(hop);
    }
    if headers.get(http::header::TE).is_some_and(|v| v != "trailers") {
        headers.remove(http::header::TE);
    }
}

/// Sends a streaming body's frames as the upstream's window allows, its trailers last; resets
/// the stream when the body fails, when the response is dropped, or gives up when the upstream
/// resets it.
async fn pump(mut body: AttemptBody, mut stream: SendStream<Bytes>, mut cancelled: oneshot::Receiver<()>) {
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _ = &mut cancelled => return stream.send_reset(h2::Reason::CANCEL),
            _ = poll_fn(|cx| stream.poll_reset(cx)) => return,
        };
        let frame = match frame {
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(_)) => return stream.send_reset(h2::Reason::CANCEL),
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                let end = body.is_end_stream();
                let sent = tokio::select! {
                    sent = send_within_window(&mut stream, data, end) => sent,
                    _ = &mut cancelled => return stream.send_reset(h2::Reason::CANCEL),
                };
                if sent.is_err() || end {
                    return;
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = stream.send_trailers(trailers);
                    return;
                }
            }
        }
    }
}

/// Queues `data` no faster than the stream's window opens, so a fast client and a slow
/// upstream do not pile the body up in memory.
async fn send_within_window(stream: &mut SendStream<Bytes>, mut data: Bytes, end: bool) -> Result<(), h2::Error> {
    if data.is_empty() {
        return if end { stream.send_data(data, true) } else { Ok(()) };
    }
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(granted) => granted?,
            None => return Err(h2::Error::from(h2::Reason::CANCEL)),
        };
        let chunk = data.split_to(granted.min(data.len()));
        stream.send_data(chunk, end && data.is_empty())?;
    }
    Ok(())
}

/// A response's body from an h2 stream: its data, then its trailers. Data read is given back to
/// the upstream's window at once, as the gateway passes it on.
#[derive(Debug)]
pub struct H2Body {
    recv: RecvStream,
    data_done: bool,
    _cancel: oneshot::Sender<()>,
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match this.recv.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(data))) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => this.data_done = true,
            }
        }
        match this.recv.poll_trailers(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

#[cfg(test)]
mod tests;
