//! The socket of one HTTP connection, wrapped with its deadlines.
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive connection waits, idle, for
//! its next request, so it cannot tell a slowloris client from an idle one. This wrapper keeps
//! both deadlines itself:
//! - **header**: a request head must be complete within `header_timeout` of its first byte (of
//!   the accept, for the first request: a client that connects and says nothing is cut too).
//!   The service marks each head complete ([`ConnShared::head_done`]); the next byte read
//!   starts the next head's clock.
//! - **idle**: no byte read or written for `idle_timeout` (an idle keep-alive connection, or a
//!   client that stopped reading its download).
//!
//! An expired deadline makes the pending read or write fail with `TimedOut`; hyper then closes
//! the connection, and [`ConnShared::expired`] says which deadline it was, for the counters.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::HttpMetrics;
use crate::metrics;

/// [`ConnShared::expired`] values.
pub const EXPIRED_NONE: u8 = 0;
pub const EXPIRED_HEADER: u8 = 1;
pub const EXPIRED_IDLE: u8 = 2;

/// State shared by a connection's socket wrapper and its request service.
#[derive(Debug, Default)]
pub struct ConnShared {
    /// Set by the service when hyper hands it a request: the head being read is complete.
    pub head_done: AtomicBool,
    /// Which deadline closed the connection, if one did.
    pub expired: AtomicU8,
}

/// A TCP stream with the header and idle deadlines, counting the bytes it sends.
pub struct Guarded {
    io: TcpStream,
    shared: Arc<ConnShared>,
    metrics: Arc<HttpMetrics>,
    header_timeout: Duration,
    idle_timeout: Duration,
    last_progress: Instant,
    /// When the first byte of the head being read arrived (None between requests).
    head_started: Option<Instant>,
    /// A write is waiting for the client: the header deadline does not apply meanwhile
    /// (bytes of a pipelined next request may have arrived, but the client is busy reading).
    write_pending: bool,
    timer: Pin<Box<Sleep>>,
    armed_for: Instant,
}

impl Guarded {
    pub fn new(
        io: TcpStream,
        shared: Arc<ConnShared>,
        metrics: Arc<HttpMetrics>,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> Guarded {
        let now = Instant::now();
        let first = now + header_timeout.min(idle_timeout);
        Guarded {
            io,
            shared,
            metrics,
            header_timeout,
            idle_timeout,
            last_progress: now,
            head_started: Some(now),
            write_pending: false,
            timer: Box::pin(tokio::time::sleep_until(first)),
            armed_for: first,
        }
    }

    fn take_head_done(&mut self) {
        if self.shared.head_done.swap(false, Ordering::Relaxed) {
            self.head_started = None;
        }
    }

    /// Called when the socket is not ready: arms the timer for the nearest deadline, or fails
    /// if it has passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        self.take_head_done();
        let mut deadline = self.last_progress + self.idle_timeout;
        let mut kind = EXPIRED_IDLE;
        if let Some(started) = self.head_started.filter(|_| !self.write_pending) {
            let header = started + self.header_timeout;
            if header <= deadline {
                deadline = header;
                kind = EXPIRED_HEADER;
            }
        }
        if Instant::now() < deadline {
            if self.armed_for != deadline {
                self.timer.as_mut().reset(deadline);
                self.armed_for = deadline;
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        self.shared.expired.store(kind, Ordering::Relaxed);
        let what = if kind == EXPIRED_HEADER {
            "request header timeout"
        } else {
            "idle timeout"
        };
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, what))
    }

    fn wrote(&mut self, n: usize) {
        self.write_pending = false;
        if n > 0 {
            self.last_progress = Instant::now();
            metrics::add(&self.metrics.bytes_sent, n as u64);
        }
    }

    fn write_blocked<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        self.write_pending = true;
        self.poll_deadline(cx).map(Err)
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.take_head_done();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let now = Instant::now();
                    this.last_progress = now;
                    this.head_started.get_or_insert(now);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.poll_deadline(cx).map(Err),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.wrote(n);
                Poll::Ready(Ok(n))
            }
            Poll::Pending => this.write_blocked(cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                this.wrote(n);
                Poll::Ready(Ok(n))
            }
            Poll::Pending => this.write_blocked(cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
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
