//! The request-headers timeout as Envoy keeps it: from the first byte of a request head to its
//! last (`request_headers_timeout`), so a keep-alive connection waiting for its next request is
//! governed by the idle timeout alone. `HeadWatch` sits under hyper on an HTTP/1.1 connection
//! and marks when bytes arrive with no request in flight; the connection registry's sweep finds
//! heads older than the timeout (`Conns::close_slow_heads`) and wakes their reader, which
//! answers 408 and fails the read, so hyper closes the connection. One sweep for all
//! connections costs less than the timer per request hyper would arm, register and cancel.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::conns::ConnHandle;

/// HTTP/2's connection preface begins with these bytes; an HTTP/1.1 request never does.
const PREFACE: &[u8] = b"PRI ";

/// Envoy's local reply when a request's headers take too long.
const TIMED_OUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 22\r\ncontent-type: text/plain\r\n\
connection: close\r\n\r\nrequest header timeout";

/// What the connection's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Fewer bytes than the preface's start have arrived, all of them matching it.
    Undecided(usize),
    Http1,
    /// HTTP/2 has streams and no heads to time: never watched.
    Http2,
}

/// A downstream connection's I/O, watched for the start of each request head.
#[derive(Debug)]
pub struct HeadWatch<IO> {
    io: IO,
    conn: ConnHandle,
    protocol: Protocol,
    /// How much of the 408 has been written, once the head timed out.
    refused: usize,
}

impl<IO> HeadWatch<IO> {
    pub fn new(io: IO, conn: ConnHandle) -> HeadWatch<IO> {
        HeadWatch {
            io,
            conn,
            protocol: Protocol::Undecided(0),
            refused: 0,
        }
    }

    fn arrived(&mut self, bytes: &[u8]) {
        if let Protocol::Undecided(seen) = self.protocol {
            self.protocol = sniff(seen, bytes);
        }
        if self.protocol != Protocol::Http2 {
            self.conn.bytes_arrived();
        }
    }
}

/// The protocol once `bytes` follow `seen` bytes that matched the preface's start.
pub fn sniff(seen: usize, bytes: &[u8]) -> Protocol {
    let rest = &PREFACE[seen..];
    let n = rest.len().min(bytes.len());
    if rest[..n] != bytes[..n] {
        Protocol::Http1
    } else if n == rest.len() {
        Protocol::Http2
    } else {
        Protocol::Undecided(seen + n)
    }
}

impl<IO: AsyncWrite + Unpin> HeadWatch<IO> {
    /// Writes the 408, then fails the read: hyper closes the connection.
    fn refuse(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let rest = &TIMED_OUT[self.refused..];
            if rest.is_empty() {
                break;
            }
            match Pin::new(&mut self.io).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                Poll::Ready(Ok(n)) => self.refused += n,
                Poll::Pending => return Poll::Pending,
            }
        }
        let _ = Pin::new(&mut self.io).poll_flush(cx);
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request header timeout")))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for HeadWatch<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.protocol == Protocol::Http2 {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        if this.conn.head_timed_out() {
            return this.refuse(cx);
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        match read {
            Poll::Ready(Ok(())) if buf.filled().len() > before => this.arrived(&buf.filled()[before..]),
            Poll::Pending => this.conn.wait_for_head(cx.waker()),
            _ => {}
        }
        read
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for HeadWatch<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
    use tokio::net::{TcpListener, TcpStream};

    use crate::conns::{Conns, Registered};

    /// A watched server side (buffered, so a flush is what sends) and its client, on loopback.
    async fn pair(conns: &Arc<Conns>) -> (HeadWatch<BufWriter<TcpStream>>, TcpStream, Registered) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let registered = conns.register().expect("room");
        (
            HeadWatch::new(BufWriter::new(server), registered.handle()),
            client,
            registered,
        )
    }

    async fn read_some(r: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), r.read(&mut buf))
            .await
            .expect("bytes in time")
            .unwrap();
        buf[..n].to_vec()
    }

    #[tokio::test]
    async fn an_http1_head_starts_the_clock_and_a_timed_out_one_gets_408_and_a_failed_read() {
        let conns = Conns::new(4);
        let (mut watched, mut client, _registered) = pair(&conns).await;
        client.write_all(b"GET / HT").await.unwrap();
        assert_eq!(read_some(&mut watched).await, b"GET / HT");
        // The reader waits for the rest of the head; the sweep wakes it to answer.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            watched.read(&mut buf).await.expect_err("the read fails")
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(conns.close_slow_heads(Duration::from_millis(20)), 1);
        let err = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let mut answer = Vec::new();
        while answer.len() < TIMED_OUT.len() {
            answer.extend(read_some(&mut client).await);
        }
        assert_eq!(answer, TIMED_OUT);
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408 "));
    }

    #[tokio::test]
    async fn an_http2_connection_is_never_timed() {
        let conns = Conns::new(4);
        let (mut watched, mut client, _registered) = pair(&conns).await;
        client.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        assert_eq!(read_some(&mut watched).await.len(), 24);
        client.write_all(b"more frames").await.unwrap();
        assert_eq!(read_some(&mut watched).await, b"more frames");
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(conns.close_slow_heads(Duration::from_millis(20)), 0);
    }

    #[tokio::test]
    async fn the_end_of_the_stream_starts_no_head() {
        let conns = Conns::new(4);
        let (mut watched, mut client, _registered) = pair(&conns).await;
        client.shutdown().await.unwrap();
        assert!(read_some(&mut watched).await.is_empty());
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(conns.close_slow_heads(Duration::from_millis(20)), 0);
    }

    /// An I/O that writes one slice at a time (the trait's default `is_write_vectored`).
    struct OneSlice;

    impl AsyncWrite for OneSlice {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn vectored_writes_are_offered_as_the_io_under_it_offers_them() {
        let conns = Conns::new(4);
        let registered = conns.register().expect("room");
        assert!(!HeadWatch::new(OneSlice, registered.handle()).is_write_vectored());
    }

    #[tokio::test]
    async fn writes_flushes_and_the_shutdown_reach_the_connection() {
        let conns = Conns::new(4);
        let (mut watched, mut client, _registered) = pair(&conns).await;
        assert!(watched.is_write_vectored(), "as the socket under it");
        watched.write_all(b"hello").await.unwrap();
        watched.flush().await.unwrap();
        assert_eq!(read_some(&mut client).await, b"hello");
        let n = watched
            .write_vectored(&[io::IoSlice::new(b"ab"), io::IoSlice::new(b"cd")])
            .await
            .unwrap();
        assert!(n > 0);
        watched.flush().await.unwrap();
        assert_eq!(read_some(&mut client).await, &b"abcd"[..n]);
        watched.shutdown().await.unwrap();
        assert!(read_some(&mut client).await.is_empty(), "end of stream");
    }

    #[test]
    fn the_preface_is_told_from_a_request_however_its_bytes_arrive() {
        assert_eq!(sniff(0, b"PRI * HTTP/2.0\r\n"), Protocol::Http2);
        assert_eq!(sniff(0, b"GET / HTTP/1.1\r\n"), Protocol::Http1);
        assert_eq!(sniff(0, b"PR"), Protocol::Undecided(2));
        assert_eq!(sniff(2, b"I * HTTP/2.0"), Protocol::Http2);
        assert_eq!(sniff(2, b"OPFIND"), Protocol::Http1);
        assert_eq!(sniff(3, b" "), Protocol::Http2);
        // A method that starts like the preface and then differs.
        assert_eq!(sniff(0, b"PRIX"), Protocol::Http1);
    }
}
