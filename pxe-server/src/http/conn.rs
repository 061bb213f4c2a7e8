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
//! - **send rate**: a client that reads its response, but slowly (one byte a second keeps the
//!   idle deadline from ever firing), must take at least `min_send_rate` bytes per second of
//!   the time the server waits for it: for every `send_rate_window` of time spent with a
//!   write waiting for room in the socket, at least `min_send_rate × send_rate_window` bytes
//!   must have been written, else the connection is cut ([`SendPace`]). Only waiting time
//!   counts: an idle keep-alive connection, a request being read, or the server opening a
//!   file do not run this clock, and a fast client's writes hardly ever wait. The bytes counted
//!   are those the socket accepted, so a window may be passed on the kernel's buffers; a client
//!   that slows down is cut at the latest two windows of waiting later. No total deadline: a
//!   large image over a slow but healthy link takes as long as it takes.
//!
//! An expired deadline makes the pending read or write fail with `TimedOut`; hyper then closes
//! the connection, and [`ConnShared::expired`] says which deadline it was, for the counters.
//! When a write was waiting, the close is a reset (`SO_LINGER` 0): the bytes the client did not
//! take are dropped at once rather than kept by the kernel behind a FIN it would never read.

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
pub const EXPIRED_SEND_RATE: u8 = 3;

/// State shared by a connection's socket wrapper and its request service.
#[derive(Debug, Default)]
pub struct ConnShared {
    /// Set by the service when hyper hands it a request: the head being read is complete.
    pub head_done: AtomicBool,
    /// Which deadline closed the connection, if one did.
    pub expired: AtomicU8,
}

/// The minimum send rate of one connection, kept over windows of waiting time (sans-IO: the
/// caller says when bytes went out and when a write is waiting, with the time).
///
/// A window is `window` of time during which a write was waiting for the client to make room.
/// When a window is complete, the bytes written since it began (waiting or not) must be at
/// least `min_rate × window`: then the next window begins, else the client is too slow.
#[derive(Debug, Clone)]
pub struct SendPace {
    /// Bytes due per window; 0: no minimum.
    due: u64,
    window: Duration,
    /// Waiting time of the current window before `waiting_since`.
    waited: Duration,
    /// When the write waiting now began to wait (None: no write is waiting).
    waiting_since: Option<Instant>,
    /// Bytes written since the current window began.
    sent: u64,
}

/// What [`SendPace::waiting`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// No minimum rate.
    Unchecked,
    /// Fine until this instant, when the current window is complete.
    Until(Instant),
    /// A window is complete with fewer bytes than due: cut the connection.
    TooSlow,
}

impl SendPace {
    /// `min_rate` bytes per second (0: none) over windows of `window` of waiting.
    pub fn new(min_rate: u64, window: Duration) -> SendPace {
        let due = u128::from(min_rate) * window.as_millis() / 1000;
        SendPace {
            due: u64::try_from(due).unwrap_or(u64::MAX),
            window,
            waited: Duration::ZERO,
            waiting_since: None,
            sent: 0,
        }
    }

    /// Bytes a window must carry (0: no minimum).
    pub fn due(&self) -> u64 {
        self.due
    }

    /// The socket took `n` bytes at `now`: a waiting write is no longer waiting.
    pub fn sent(&mut self, now: Instant, n: usize) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += now.saturating_duration_since(since);
        }
        self.sent = self.sent.saturating_add(n as u64);
    }

    /// A write is waiting for the client at `now` (called again each time it is polled, and
    /// when the deadline it was given passes).
    pub fn waiting(&mut self, now: Instant) -> Pace {
        if self.due == 0 {
            return Pace::Unchecked;
        }
        let since = *self.waiting_since.get_or_insert(now);
        let waited = self.waited + now.saturating_duration_since(since);
        if waited < self.window {
            return Pace::Until(since + (self.window - self.waited));
        }
        if self.sent < self.due {
            return Pace::TooSlow;
        }
        // A new window, from now (still waiting).
        self.waited = Duration::ZERO;
        self.waiting_since = Some(now);
        self.sent = 0;
        Pace::Until(now + self.window)
    }
}

/// A TCP stream with the header, idle and send-rate deadlines, counting the bytes it sends.
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
    pace: SendPace,
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
        pace: SendPace,
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
            pace,
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
        let now = Instant::now();
        let mut deadline = self.last_progress + self.idle_timeout;
        let mut kind = EXPIRED_IDLE;
        if let Some(started) = self.head_started.filter(|_| !self.write_pending) {
            let header = started + self.header_timeout;
            if header <= deadline {
                deadline = header;
                kind = EXPIRED_HEADER;
            }
        }
        if self.write_pending {
            match self.pace.waiting(now) {
                Pace::Unchecked => {}
                Pace::Until(end) => {
                    if end < deadline {
                        deadline = end;
                        kind = EXPIRED_SEND_RATE;
                    }
                }
                Pace::TooSlow => {
                    deadline = now;
                    kind = EXPIRED_SEND_RATE;
                }
            }
        }
        if now < deadline {
            if self.armed_for != deadline {
                self.timer.as_mut().reset(deadline);
                self.armed_for = deadline;
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        self.shared.expired.store(kind, Ordering::Relaxed);
        if self.write_pending {
            // The client is not taking what is queued for it: close with a reset, so that
            // neither the queued bytes nor a FIN stuck behind them hold kernel memory for it.
            let _ = self.io.set_zero_linger();
        }
        let what = match kind {
            EXPIRED_HEADER => "request header timeout",
            EXPIRED_SEND_RATE => "client reads below the minimum send rate",
            _ => "idle timeout",
        };
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, what))
    }

    fn wrote(&mut self, n: usize) {
        self.write_pending = false;
        let now = Instant::now();
        self.pace.sent(now, n);
        if n > 0 {
            self.last_progress = now;
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

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(10);

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn bytes_due_per_window() {
        assert_eq!(SendPace::new(1024, W).due(), 10_240);
        assert_eq!(SendPace::new(1024, Duration::from_millis(1500)).due(), 1536);
        assert_eq!(SendPace::new(0, W).due(), 0);
        assert_eq!(
            SendPace::new(u64::MAX, Duration::from_secs(3600)).due(),
            u64::MAX
        );
    }

    #[test]
    fn no_minimum_never_decides() {
        let t0 = Instant::now();
        let mut p = SendPace::new(0, W);
        for s in 0..100 {
            assert_eq!(p.waiting(t0 + ms(s * 60_000)), Pace::Unchecked);
        }
    }

    #[test]
    fn one_byte_a_second_is_cut_at_the_end_of_the_window() {
        let t0 = Instant::now();
        let mut p = SendPace::new(1024, W);
        assert_eq!(p.waiting(t0), Pace::Until(t0 + W));
        for s in 1..10 {
            let now = t0 + ms(s * 1000);
            p.sent(now, 1);
            // The window's end does not move: waiting time adds up across writes.
            assert_eq!(p.waiting(now), Pace::Until(t0 + W));
        }
        assert_eq!(p.waiting(t0 + W - ms(1)), Pace::Until(t0 + W));
        assert_eq!(p.waiting(t0 + W), Pace::TooSlow);
        // And stays cut if asked again.
        assert_eq!(p.waiting(t0 + W + ms(1000)), Pace::TooSlow);
    }

    #[test]
    fn a_slow_but_healthy_link_is_never_cut() {
        // 2 KiB/s against a minimum of 1 KiB/s, the write waiting nearly all the time: a 32 MiB
        // initrd takes four and a half hours and finishes.
        let t0 = Instant::now();
        let mut p = SendPace::new(1024, W);
        let mut total = 0u64;
        let mut now = t0;
        while total < 32 << 20 {
            assert!(matches!(p.waiting(now), Pace::Until(end) if end > now));
            now += ms(250);
            p.sent(now, 512);
            total += 512;
        }
        assert!(now - t0 > Duration::from_secs(4 * 3600));
    }

    #[test]
    fn a_client_that_stops_reading_is_cut_within_two_windows() {
        let t0 = Instant::now();
        let mut p = SendPace::new(1024, W);
        // A fast start: megabytes into the socket buffers, then a short wait or two.
        p.sent(t0, 4 << 20);
        assert_eq!(p.waiting(t0 + ms(100)), Pace::Until(t0 + ms(10100)));
        p.sent(t0 + ms(200), 1 << 20);
        // Then the client stops reading: the write waits from 0.3 s on.
        let stop = t0 + ms(300);
        assert_eq!(p.waiting(stop), Pace::Until(stop + ms(9900)));
        // The first window is complete with plenty of bytes: a new one begins.
        let second = stop + ms(9900);
        assert_eq!(p.waiting(second), Pace::Until(second + W));
        // The second carries nothing.
        assert_eq!(p.waiting(second + W), Pace::TooSlow);
        assert!(second + W - stop <= 2 * W);
    }

    #[test]
    fn only_waiting_time_counts() {
        let t0 = Instant::now();
        let mut p = SendPace::new(1024, W);
        // A small response that waited a little ...
        assert_eq!(p.waiting(t0), Pace::Until(t0 + W));
        p.sent(t0 + ms(4000), 100);
        // ... then an hour of keep-alive idleness, or a request being read, or a file being
        // opened: no write waits, no clock runs.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(p.waiting(later), Pace::Until(later + ms(6000)));
        p.sent(later + ms(1000), 10_000);
        assert_eq!(p.waiting(later + ms(2000)), Pace::Until(later + ms(7000)));
        // 10_100 bytes in 10 s of waiting: 1010 B/s, under 1024.
        assert_eq!(p.waiting(later + ms(7000)), Pace::TooSlow);
    }

    #[test]
    fn each_window_is_judged_on_its_own_bytes() {
        let t0 = Instant::now();
        let mut p = SendPace::new(1024, W);
        assert_eq!(p.waiting(t0), Pace::Until(t0 + W));
        p.sent(t0 + ms(5000), 10_240);
        assert_eq!(p.waiting(t0 + ms(5000)), Pace::Until(t0 + W));
        // Exactly the bytes due: passed, and the count starts again.
        assert_eq!(p.waiting(t0 + W), Pace::Until(t0 + 2 * W));
        p.sent(t0 + ms(15000), 10_239);
        assert_eq!(p.waiting(t0 + ms(15000)), Pace::Until(t0 + 2 * W));
        assert_eq!(p.waiting(t0 + 2 * W), Pace::TooSlow);
    }
}
