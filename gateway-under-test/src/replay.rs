//! Request bodies on their way upstream. A body either arrived whole before the request was
//! sent (a Content-Length within the buffer limit), or streams: each attempt's body reads the
//! client's as it arrives, so client-streaming and bidirectional gRPC work, and keeps what a
//! retry needs to send it again, as Envoy's router does: up to the buffer limit, against the
//! gateway's buffer budget. Past that, the body goes on streaming and the request is no longer
//! retried (Envoy's retry buffer overflow).

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};

use crate::context::{Inbound, Streamed};
use crate::errors::Failure;
use crate::limits::{BodyLimits, Reservation};

pub use crate::context::BoxError;

/// The client's body and what has been kept of it.
#[derive(Debug)]
pub struct Shared {
    /// Still to be read (None: ended, or failed).
    incoming: Option<Streamed>,
    /// What is kept: every frame from the first, while the body is replayable (empty once not).
    chunks: Vec<Bytes>,
    /// Frames read from the client and not kept: an attempt that needs one of them fails.
    first: usize,
    kept: usize,
    /// Data bytes read from the client in all.
    received: u64,
    trailers: Option<HeaderMap>,
    ended: bool,
    error: Option<String>,
    /// False once a frame was not kept: the body cannot be sent again.
    replayable: bool,
    max: usize,
    /// What is kept, taken from the gateway's buffer budget (None: nothing to keep).
    reservation: Option<Reservation>,
    /// The attempt whose body reads from the client; an older one's stops.
    generation: u64,
    /// When the request timeout ends: the whole body must have arrived by then.
    deadline: tokio::time::Instant,
}

impl Shared {
    /// Keeps `data` for a retry if it fits the limit and the budget; otherwise the body is
    /// no longer replayable and what was kept is let go.
    fn keep(&mut self, data: &Bytes) {
        let total = self.kept + data.len();
        if self.replayable && total <= self.max && self.reservation.as_mut().is_some_and(|r| r.cover(total)) {
            self.chunks.push(data.clone());
            self.kept = total;
            return;
        }
        self.replayable = false;
        self.first += self.chunks.len() + 1;
        self.chunks = Vec::new();
        self.kept = 0;
        if let Some(r) = self.reservation.as_mut() {
            r.release();
        }
    }
}

/// A request's body, shared by its attempts (and mirrors).
#[derive(Debug, Clone)]
pub enum RequestBody {
    /// Arrived whole before any attempt; its reservation is held while the body is.
    Whole(Bytes, Option<Arc<Reservation>>),
    Streaming(Arc<Mutex<Shared>>),
}

impl RequestBody {
    /// The request body: read whole first when its Content-Length is within the buffer limit, as
    /// before any upstream is tried (a retry or a mirror sends it again); streamed otherwise (no
    /// Content-Length, as with gRPC streams and chunked uploads, or a larger one), keeping what a
    /// retry needs up to the limit.
    ///
    /// A whole body must arrive within the request timeout (408) and its bytes count against the
    /// gateway's buffer budget until the response is done (503 overloaded when the budget is spent).
    pub async fn read<B: Inbound>(
        limits: &BodyLimits,
        headers: &HeaderMap,
        mut body: B,
    ) -> Result<RequestBody, Failure> {
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let mut reservation = limits.budget.reserve();
        if hyper::body::Body::is_end_stream(&body) {
            // No body (a GET): nothing to read, no timer to arm.
            return Ok(RequestBody::whole(Bytes::new(), reservation));
        }
        let declared = match declared {
            Some(n) if n <= limits.max as u64 => n as usize,
            _ => return Ok(RequestBody::streaming(body, limits)),
        };
        if !reservation.cover(declared) {
            return Err(Failure::Overloaded);
        }
        let read = async {
            let mut buf = bytes::BytesMut::with_capacity(declared);
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| Failure::BadRequest(format!("request body: {}", e.into())))?;
                let Ok(data) = frame.into_data() else { continue };
                buf.extend_from_slice(&data);
            }
            Ok(buf.freeze())
        };
        match tokio::time::timeout(limits.timeout, read).await {
            Ok(body) => Ok(RequestBody::whole(body?, reservation)),
            Err(_) => Err(Failure::RequestTimeout),
        }
    }

    /// A body that arrived whole (`reservation` covers it).
    pub fn whole(bytes: Bytes, reservation: Reservation) -> RequestBody {
        let held = (!bytes.is_empty()).then(|| Arc::new(reservation));
        RequestBody::Whole(bytes, held)
    }

    /// No body.
    pub fn empty() -> RequestBody {
        RequestBody::Whole(Bytes::new(), None)
    }

    /// A body read from the client as the upstream takes it, `limits.max` bytes kept for a retry.
    pub fn streaming<B: Inbound>(incoming: B, limits: &BodyLimits) -> RequestBody {
        RequestBody::Streaming(Arc::new(Mutex::new(Shared {
            incoming: Some(incoming.map_err(Into::into).boxed_unsync()),
            chunks: Vec::new(),
            first: 0,
            kept: 0,
            received: 0,
            trailers: None,
            ended: false,
            error: None,
            replayable: true,
            max: limits.max,
            reservation: Some(limits.budget.reserve()),
            generation: 0,
            deadline: tokio::time::Instant::now() + limits.timeout,
        })))
    }

    /// Resolves if a streamed body has not ended when the request timeout does (Envoy's
    /// `request_timeout`: armed when the request starts, disarmed when its body has gone
    /// upstream or, the caller's race, when the response starts). A whole body never times out
    /// here: it arrived before any attempt.
    pub async fn timed_out(&self) {
        let RequestBody::Streaming(shared) = self else {
            return std::future::pending().await;
        };
        let deadline = lock(shared).deadline;
        tokio::time::sleep_until(deadline).await;
        if lock(shared).ended {
            std::future::pending::<()>().await;
        }
    }

    /// The body of a new attempt, from the start; older attempts' bodies stop reading.
    pub fn attempt(&self) -> AttemptBody {
        match self {
            RequestBody::Whole(bytes, _) => AttemptBody::Whole((!bytes.is_empty()).then(|| bytes.clone())),
            RequestBody::Streaming(shared) => {
                let mut s = lock(shared);
                s.generation += 1;
                AttemptBody::Streaming {
                    shared: shared.clone(),
                    generation: s.generation,
                    next: 0,
                    trailers_sent: false,
                }
            }
        }
    }

    /// Whether the whole body can still be sent again.
    pub fn replayable(&self) -> bool {
        match self {
            RequestBody::Whole(..) => true,
            RequestBody::Streaming(shared) => lock(shared).replayable,
        }
    }

    /// The whole body, if it has ended and all of it is kept.
    pub fn complete(&self) -> Option<Bytes> {
        let shared = match self {
            RequestBody::Whole(bytes, _) => return Some(bytes.clone()),
            RequestBody::Streaming(shared) => shared,
        };
        let s = lock(shared);
        (s.ended && s.replayable && s.error.is_none() && s.trailers.is_none()).then(|| match s.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => Bytes::from(many.concat()),
        })
    }

    /// Data bytes read from the client so far.
    pub fn received(&self) -> u64 {
        match self {
            RequestBody::Whole(bytes, _) => bytes.len() as u64,
            RequestBody::Streaming(shared) => lock(shared).received,
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One attempt's view of the request body.
#[derive(Debug)]
pub enum AttemptBody {
    /// A whole body, until it is sent.
    Whole(Option<Bytes>),
    Streaming {
        shared: Arc<Mutex<Shared>>,
        /// This attempt's number; only the latest reads from the client.
        generation: u64,
        /// The number of the next data frame to send.
        next: usize,
        trailers_sent: bool,
    },
}

/// Whether the client's body has all arrived, asked later: an upstream connection may carry
/// another request only once its last request's body has (hyper queues a request behind one
/// whose body is still being sent, however long that takes).
#[derive(Debug, Clone)]
pub struct Arrived(Option<Arc<Mutex<Shared>>>);

impl Arrived {
    pub fn all(&self) -> bool {
        self.0.as_ref().is_none_or(|s| lock(s).ended)
    }
}

impl AttemptBody {
    /// A whole body has arrived; a streaming one has once the client's ends.
    pub fn arrived(&self) -> Arrived {
        match self {
            AttemptBody::Whole(_) => Arrived(None),
            AttemptBody::Streaming { shared, .. } => Arrived(Some(shared.clone())),
        }
    }
}

/// The next frame of a streaming attempt's body (see [`AttemptBody::Streaming`]).
fn poll_streaming(
    s: &mut Shared,
    generation: u64,
    next: &mut usize,
    trailers_sent: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    if *next < s.first {
        return Poll::Ready(Some(Err("the request body was not kept for a retry".into())));
    }
    // Past that check, `first` is 0 whenever something is kept, so kept frame n is chunks[n].
    if let Some(chunk) = s.chunks.get(*next) {
        *next += 1;
        return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
    }
    if let Some(e) = &s.error {
        return Poll::Ready(Some(Err(e.clone().into())));
    }
    if s.ended {
        return match (&s.trailers, *trailers_sent) {
            (Some(t), false) => {
                *trailers_sent = true;
                Poll::Ready(Some(Ok(Frame::trailers(t.clone()))))
            }
            _ => Poll::Ready(None),
        };
    }
    if generation != s.generation {
        // A retry does not take the client's bytes from the live attempt.
        return Poll::Ready(Some(Err("superseded by a retry".into())));
    }
    loop {
        let Some(incoming) = s.incoming.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match Pin::new(incoming).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                s.ended = true;
                s.incoming = None;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(e))) => {
                s.error = Some(format!("request body: {e}"));
                s.incoming = None;
                return Poll::Ready(Some(Err(e)));
            }
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                s.received += data.len() as u64;
                s.keep(&data);
                *next += 1;
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    s.trailers = Some(t.clone());
                    s.ended = true;
                    s.incoming = None;
                    *trailers_sent = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
        }
    }
}

impl Body for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            AttemptBody::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            AttemptBody::Streaming {
                shared,
                generation,
                next,
                trailers_sent,
            } => {
                let shared = shared.clone();
                let mut s = lock(&shared);
                poll_streaming(&mut s, *generation, next, trailers_sent, cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            AttemptBody::Whole(bytes) => bytes.is_none(),
            AttemptBody::Streaming {
                shared,
                next,
                trailers_sent,
                ..
            } => {
                let s = lock(shared);
                s.ended
                    && *next == s.first + s.chunks.len()
                    && (s.trailers.is_none() || *trailers_sent)
                    && s.error.is_none()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            AttemptBody::Whole(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            AttemptBody::Streaming { shared, next, .. } => {
                let s = lock(shared);
                if s.ended && s.replayable && s.trailers.is_none() && s.error.is_none() {
                    let sent: usize = s.chunks.iter().take(*next).map(Bytes::len).sum();
                    return SizeHint::with_exact((s.kept - sent) as u64);
                }
                SizeHint::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::BufferBudget;

    /// The next frame, polled once: Some(Ok(data or trailers)), Some(Err(message)), None (ended)
    /// or Pending as `Err("pending")`.
    fn next(body: &mut AttemptBody) -> Option<Result<Frame<Bytes>, String>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(f))) => Some(Ok(f)),
            Poll::Ready(Some(Err(e))) => Some(Err(e.to_string())),
            Poll::Ready(None) => None,
            Poll::Pending => Some(Err("pending".into())),
        }
    }

    fn data(body: &mut AttemptBody) -> Bytes {
        match next(body) {
            Some(Ok(f)) => f.into_data().unwrap_or_else(|_| panic!("not data")),
            other => panic!("{other:?}"),
        }
    }

    fn shared(body: &RequestBody) -> MutexGuard<'_, Shared> {
        match body {
            RequestBody::Streaming(s) => lock(s),
            RequestBody::Whole(..) => panic!("not streaming"),
        }
    }

    /// A body whose client has sent `chunks` (kept as `keep` decides) and, if `ended`, ended;
    /// its request timeout ends 10 ms from now.
    fn streamed(budget: &BufferBudget, max: usize, chunks: &[&str], ended: bool) -> RequestBody {
        let body = RequestBody::Streaming(Arc::new(Mutex::new(Shared {
            incoming: None,
            chunks: Vec::new(),
            first: 0,
            kept: 0,
            received: 0,
            trailers: None,
            ended,
            error: None,
            replayable: true,
            max,
            reservation: Some(budget.reserve()),
            generation: 0,
            deadline: tokio::time::Instant::now() + std::time::Duration::from_millis(10),
        })));
        for c in chunks {
            let mut s = shared(&body);
            s.received += c.len() as u64;
            s.keep(&Bytes::copy_from_slice(c.as_bytes()));
        }
        body
    }

    #[tokio::test]
    async fn only_a_streamed_body_still_arriving_at_its_deadline_times_out() {
        use std::time::Duration;
        let pending = |body: RequestBody| async move {
            tokio::time::timeout(Duration::from_millis(200), body.timed_out())
                .await
                .is_err()
        };
        let budget = BufferBudget::new(100);
        // Its deadline (10 ms) passes with the body still arriving: the request timeout fires.
        let arriving = streamed(&budget, 100, &["ab"], false);
        assert!(tokio::time::timeout(Duration::from_secs(10), arriving.timed_out())
            .await
            .is_ok());
        // Ended before its deadline, or read whole before any attempt: never.
        assert!(pending(streamed(&budget, 100, &["ab"], true)).await);
        assert!(pending(RequestBody::empty()).await);
    }

    #[test]
    fn a_whole_body_is_sent_by_every_attempt_with_its_length() {
        let budget = BufferBudget::new(100);
        let mut r = budget.reserve();
        assert!(r.cover(5));
        let body = RequestBody::whole(Bytes::from_static(b"hello"), r);
        assert_eq!(budget.used(), 5, "held while the body is");
        for _ in 0..2 {
            let mut a = body.attempt();
            assert_eq!(a.size_hint().exact(), Some(5));
            assert!(!a.is_end_stream());
            assert_eq!(data(&mut a), "hello");
            assert_eq!(a.size_hint().exact(), Some(0));
            assert!(a.is_end_stream());
            assert!(next(&mut a).is_none());
        }
        assert_eq!(body.complete().as_deref(), Some(&b"hello"[..]));
        assert!(body.replayable());
        assert_eq!(body.received(), 5);
        drop(body);
        assert_eq!(budget.used(), 0, "the reservation is given back with the body");
        let empty = RequestBody::empty();
        assert!(empty.attempt().is_end_stream());
        assert_eq!(empty.complete().as_deref(), Some(&b""[..]));
    }

    #[test]
    fn what_fits_the_limit_and_the_budget_is_kept_and_the_rest_lets_all_go() {
        let budget = BufferBudget::new(100);
        let body = streamed(&budget, 10, &["abcd", "efgh"], true);
        assert_eq!(budget.used(), 8);
        assert_eq!(body.complete().as_deref(), Some(&b"abcdefgh"[..]));
        let mut a = body.attempt();
        assert_eq!(a.size_hint().exact(), Some(8));
        assert_eq!(data(&mut a), "abcd");
        assert_eq!(a.size_hint().exact(), Some(4));
        assert_eq!(data(&mut a), "efgh");
        assert!(next(&mut a).is_none());
        // Exactly the limit still fits.
        let body = streamed(&budget, 8, &["abcd", "efgh"], true);
        assert!(body.replayable());
        // Past the limit: nothing is kept, the body is not replayable, the budget comes back.
        let before = budget.used();
        let body = streamed(&budget, 10, &["abcd", "efgh", "ijk"], true);
        assert!(!body.replayable());
        assert_eq!(body.complete(), None);
        assert_eq!(budget.used(), before);
        assert_eq!(body.received(), 11);
        let mut a = body.attempt();
        assert_eq!(a.size_hint().exact(), None);
        assert_eq!(
            next(&mut a).map(|r| r.err()),
            Some(Some("the request body was not kept for a retry".into()))
        );
        // A first frame past the limit: a retry cannot start from the client's later bytes.
        let body = streamed(&budget, 3, &["abcd"], false);
        assert!(!body.replayable());
        let mut retry = body.attempt();
        assert_eq!(
            next(&mut retry).map(|r| r.err()),
            Some(Some("the request body was not kept for a retry".into()))
        );
        // Past the budget: the same.
        let small = BufferBudget::new(6);
        let body = streamed(&small, 100, &["abcd", "efgh"], true);
        assert!(!body.replayable());
        assert_eq!(small.used(), 0);
    }

    #[test]
    fn a_body_still_streaming_is_read_only_by_the_latest_attempt() {
        let budget = BufferBudget::new(100);
        let body = streamed(&budget, 100, &["ab"], false);
        let mut first = body.attempt();
        assert_eq!(data(&mut first), "ab");
        assert_eq!(first.size_hint().exact(), None);
        assert!(!first.is_end_stream());
        let mut second = body.attempt();
        assert_eq!(data(&mut second), "ab", "a retry starts with what was kept");
        // The client's next bytes belong to the latest attempt only (here: none has come).
        assert_eq!(
            next(&mut first).map(|r| r.err()),
            Some(Some("superseded by a retry".into()))
        );
        assert!(next(&mut second).is_none(), "no client body left to read");
    }

    #[test]
    fn trailers_end_the_body_and_keep_it_from_being_whole() {
        let budget = BufferBudget::new(100);
        let body = streamed(&budget, 100, &["ab"], true);
        shared(&body).trailers = Some(HeaderMap::from_iter([(
            http::header::HeaderName::from_static("x-t"),
            http::HeaderValue::from_static("1"),
        )]));
        assert_eq!(body.complete(), None);
        let mut a = body.attempt();
        assert_eq!(a.size_hint().exact(), None);
        assert_eq!(data(&mut a), "ab");
        assert!(!a.is_end_stream(), "the trailers are still to come");
        match next(&mut a) {
            Some(Ok(f)) => assert_eq!(
                f.into_trailers()
                    .ok()
                    .and_then(|t| t.get("x-t").cloned())
                    .as_ref()
                    .map(|v| v.as_bytes()),
                Some(&b"1"[..])
            ),
            other => panic!("{other:?}"),
        }
        assert!(a.is_end_stream());
        assert!(next(&mut a).is_none());
    }

    #[test]
    fn an_error_from_the_client_reaches_every_attempt() {
        let budget = BufferBudget::new(100);
        let body = streamed(&budget, 100, &["ab"], true);
        shared(&body).error = Some("request body: reset".into());
        assert_eq!(body.complete(), None);
        let mut a = body.attempt();
        assert_eq!(a.size_hint().exact(), None);
        assert_eq!(data(&mut a), "ab");
        assert_eq!(next(&mut a).map(|r| r.err()), Some(Some("request body: reset".into())));
        assert!(!a.is_end_stream());
    }
}
