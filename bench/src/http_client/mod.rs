//! HTTP/1.1 fetches as iPXE does them after its script (`kernel http://…`, `initrd http://…`),
//! sans-IO: one keep-alive connection per simulated machine, one `GET` at a time, the response
//! parsed as it streams in and its body compared at its offset with the expected file.
//!
//! Two layers, both without sockets:
//! - [`ResponseParser`]: bytes in, events out (the final head's status, body slices borrowed
//!   from the input, the end of the response). Status line, headers matched case-insensitively,
//!   `Content-Length`, `Transfer-Encoding: chunked` (decoded; any other coding is refused), 1xx
//!   heads skipped, `Connection: close` / HTTP/1.0 noted, a body delimited by the close. The
//!   head (and a chunked body's trailers) is bounded by [`MAX_HEAD`](parser::MAX_HEAD).
//! - [`HttpConn`]: one connection's life: when to connect, the request bytes to write, the
//!   response's verification, the idle timeout, and each request's outcome. The driver
//!   (`boot_storm`) owns the TCP socket and feeds it what the socket says.

mod parser;
#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) use parser::{Event, ResponseParser};

/// Where the files are: `http://A.B.C.D[:PORT][/PREFIX/]` (an IPv4 literal, no name lookup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpBase {
    pub server: SocketAddrV4,
    /// The path every file name is appended to; starts and ends with `/`.
    pub prefix: String,
}

impl HttpBase {
    pub(crate) fn parse(url: &str) -> Result<HttpBase, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: not an http:// URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(k) => rest.split_at(k),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| format!("{url}: bad port {p:?}"))?,
            ),
            None => (authority, 80),
        };
        let ip: Ipv4Addr = host
            .parse()
            .map_err(|_| format!("{url}: the host must be an IPv4 address, not {host:?}"))?;
        if path.contains(['?', '#']) || path.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return Err(format!("{url}: the path must be a plain path"));
        }
        let mut prefix = path.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(HttpBase {
            server: SocketAddrV4::new(ip, port),
            prefix,
        })
    }

    /// The request target of `name` (percent-encoded where a URL path needs it).
    pub(crate) fn target(&self, name: &str) -> String {
        let mut t = self.prefix.clone();
        for &b in name.trim_start_matches('/').as_bytes() {
            if b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&b) {
                t.push(b as char);
            } else {
                t.push_str(&format!("%{b:02X}"));
            }
        }
        t
    }

    /// The `Host` header's value.
    pub(crate) fn host(&self) -> String {
        match self.server.port() {
            80 => self.server.ip().to_string(),
            _ => self.server.to_string(),
        }
    }
}

impl std::fmt::Display for HttpBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.server, self.prefix)
    }
}

/// Why a response (or the connection it needed) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HttpFailure {
    /// The server refused the connection (RST to the SYN).
    Refused,
    /// No connection within the timeout.
    ConnectTimeout,
    /// The connection was reset (or broke) while in use.
    Reset,
    /// Nothing came or went for the timeout while a request was outstanding.
    Timeout,
    /// The server closed the connection before a complete response head.
    Closed,
    /// The final status was not 200.
    Status(u16),
    /// The connection ended before the end of the body the head announced.
    ShortBody,
    /// The body ended complete, but its length is not the expected file's.
    Length { got: u64, want: u64 },
    /// The body differs from the expected file at this offset.
    Mismatch(u64),
    /// Something HTTP does not allow (bad status line or header, head too large, bad chunk).
    BadResponse(&'static str),
    /// A transfer coding other than chunked.
    Unsupported,
    /// Another socket error (its name).
    Io(String),
}

impl HttpFailure {
    /// A short stable name (the report prefixes `http-` and appends the phase).
    pub(crate) fn cause(&self) -> String {
        match self {
            HttpFailure::Refused => "refused".into(),
            HttpFailure::ConnectTimeout => "connect-timeout".into(),
            HttpFailure::Reset => "reset".into(),
            HttpFailure::Timeout => "timeout".into(),
            HttpFailure::Closed => "closed".into(),
            HttpFailure::Status(s) => format!("status-{s}"),
            HttpFailure::ShortBody => "short-body".into(),
            HttpFailure::Length { .. } => "length".into(),
            HttpFailure::Mismatch(_) => "mismatch".into(),
            HttpFailure::BadResponse(_) => "bad-response".into(),
            HttpFailure::Unsupported => "unsupported-encoding".into(),
            HttpFailure::Io(e) => format!("io-{e}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// No socket (none yet, or the last one is done with).
    Down,
    /// The driver was asked to connect.
    Connecting,
    Up,
}

/// The request in flight.
#[derive(Debug)]
struct Request {
    expected: Option<Arc<[u8]>>,
    /// Body bytes received.
    received: u64,
    /// When the last body byte arrived.
    done_at: Option<Instant>,
    outcome: Option<Result<(), HttpFailure>>,
}

/// One client's HTTP connection: `get` a file, let the driver connect and write
/// [`output`](Self::output), feed it what the socket reads, collect the outcome.
#[derive(Debug)]
pub(crate) struct HttpConn {
    base: Arc<HttpBase>,
    timeout: Duration,
    link: Link,
    out: Vec<u8>,
    out_sent: usize,
    parser: ResponseParser,
    req: Option<Request>,
    last_activity: Instant,
    timer: Instant,
    /// Connections opened.
    pub connects: u64,
}

impl HttpConn {
    /// `timeout`: connect timeout, and the longest silence while a request is outstanding.
    pub(crate) fn new(base: Arc<HttpBase>, timeout: Duration, now: Instant) -> Self {
        Self {
            base,
            timeout,
            link: Link::Down,
            out: Vec::with_capacity(256),
            out_sent: 0,
            parser: ResponseParser::new(),
            req: None,
            last_activity: now,
            timer: now + timeout,
            connects: 0,
        }
    }

    /// Starts `GET name` (on the open connection, or on a new one). `expected`: the file's
    /// contents, the body is compared with them as it arrives.
    pub(crate) fn get(&mut self, now: Instant, name: &str, expected: Option<Arc<[u8]>>) {
        self.out.clear();
        self.out_sent = 0;
        self.out.extend_from_slice(b"GET ");
        self.out
            .extend_from_slice(self.base.target(name).as_bytes());
        self.out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        self.out.extend_from_slice(self.base.host().as_bytes());
        self.out.extend_from_slice(
            b"\r\nUser-Agent: pxe-bench (iPXE-like)\r\nConnection: keep-alive\r\n\r\n",
        );
        self.parser.reset();
        self.req = Some(Request {
            expected,
            received: 0,
            done_at: None,
            outcome: None,
        });
        self.touch(now);
        self.timer = now + self.timeout;
    }

    fn pending(&self) -> bool {
        self.req.as_ref().is_some_and(|r| r.outcome.is_none())
    }

    /// Where to connect, once per connection the current request needs.
    pub(crate) fn poll_connect(&mut self) -> Option<SocketAddrV4> {
        if self.link == Link::Down && self.pending() {
            self.link = Link::Connecting;
            self.connects += 1;
            return Some(self.base.server);
        }
        None
    }

    /// The driver keeps (or opens) a socket while this is true, and closes it when false.
    pub(crate) fn wants_socket(&self) -> bool {
        self.link != Link::Down
    }

    pub(crate) fn is_connecting(&self) -> bool {
        self.link == Link::Connecting
    }

    /// The connect completed.
    pub(crate) fn handle_connected(&mut self, now: Instant) {
        if self.link == Link::Connecting {
            self.link = Link::Up;
            self.touch(now);
        }
    }

    /// Request bytes to write now.
    pub(crate) fn output(&self) -> &[u8] {
        if self.link == Link::Up && self.pending() {
            &self.out[self.out_sent..]
        } else {
            &[]
        }
    }

    pub(crate) fn wrote(&mut self, now: Instant, n: usize) {
        self.out_sent = (self.out_sent + n).min(self.out.len());
        if n > 0 {
            self.touch(now);
        }
    }

    /// Bytes read from the socket.
    pub(crate) fn handle_data(&mut self, now: Instant, mut data: &[u8]) {
        self.touch(now);
        if !self.pending() {
            // Nothing asked: a server that talks out of turn.
            if self.req.is_none() && !data.is_empty() {
                self.link = Link::Down;
            }
            return;
        }
        // With input left, every step consumes a byte or reports an event; with none left,
        // only a finished head or response is still reported (an empty body).
        loop {
            let (n, ev) = match self.parser.advance(data) {
                Ok(x) => x,
                Err(f) => return self.finish(now, Err(f)),
            };
            data = &data[n..];
            match ev {
                Some(Event::Head(200)) => {}
                Some(Event::Head(s)) => return self.finish(now, Err(HttpFailure::Status(s))),
                Some(Event::Body(b)) => {
                    if let Err(f) = self.check(b) {
                        return self.finish(now, Err(f));
                    }
                }
                Some(Event::Done) => {
                    let r = if data.is_empty() {
                        self.length_check()
                    } else {
                        Err(HttpFailure::BadResponse("data after the response"))
                    };
                    return self.finish(now, r);
                }
                None if data.is_empty() => return,
                None => {}
            }
        }
    }

    /// The peer closed its side (read returned 0).
    pub(crate) fn handle_eof(&mut self, now: Instant) {
        if !self.pending() {
            self.link = Link::Down;
            return;
        }
        let r = match self.parser.eof() {
            Ok(_) => self.length_check(),
            Err(f) => Err(f),
        };
        self.link = Link::Down;
        self.finish(now, r);
    }

    /// The socket failed (connect refused, reset, …).
    pub(crate) fn handle_io_error(&mut self, now: Instant, f: HttpFailure) {
        self.link = Link::Down;
        if self.pending() {
            self.finish(now, Err(f));
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.pending().then_some(self.timer)
    }

    /// Fails the request if nothing happened for the timeout; else re-arms at the last
    /// activity plus the timeout (activity does not move the timer, so it is armed once per
    /// timeout, not once per read).
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if !self.pending() {
            return;
        }
        let due = self.last_activity + self.timeout;
        if now >= due {
            let f = if self.link == Link::Up {
                HttpFailure::Timeout
            } else {
                HttpFailure::ConnectTimeout
            };
            self.link = Link::Down;
            self.finish(now, Err(f));
        } else {
            self.timer = due;
        }
    }

    /// Body bytes of the current request so far.
    pub(crate) fn received(&self) -> u64 {
        self.req.as_ref().map_or(0, |r| r.received)
    }

    /// The current request's outcome, once it has one (taken: the next call returns None),
    /// with when its last byte arrived.
    pub(crate) fn take_outcome(
        &mut self,
    ) -> Option<(Result<(), HttpFailure>, Option<Instant>, u64)> {
        let r = self.req.as_mut()?;
        let outcome = r.outcome.take()?;
        let r = self.req.take()?;
        Some((outcome, r.done_at, r.received))
    }

    fn touch(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// Compares a body slice with the expected file at its offset.
    fn check(&mut self, b: &[u8]) -> Result<(), HttpFailure> {
        let Some(r) = self.req.as_mut() else {
            return Ok(());
        };
        let off = r.received;
        r.received += b.len() as u64;
        let Some(exp) = &r.expected else {
            return Ok(());
        };
        let start = usize::try_from(off).unwrap_or(usize::MAX).min(exp.len());
        let want = &exp[start..];
        let common = want.len().min(b.len());
        // One slice comparison (memcmp) on the hot path; the offset is searched for only
        // once a difference is known.
        if want[..common] != b[..common] {
            let k = (0..common).find(|&k| want[k] != b[k]).unwrap_or(0);
            return Err(HttpFailure::Mismatch(off + k as u64));
        }
        if b.len() > want.len() {
            // Past the end of the expected file.
            return Err(HttpFailure::Mismatch(off + want.len() as u64));
        }
        Ok(())
    }

    fn length_check(&self) -> Result<(), HttpFailure> {
        let Some(r) = &self.req else { return Ok(()) };
        match &r.expected {
            Some(exp) if exp.len() as u64 != r.received => Err(HttpFailure::Length {
                got: r.received,
                want: exp.len() as u64,
            }),
            _ => Ok(()),
        }
    }

    fn finish(&mut self, now: Instant, r: Result<(), HttpFailure>) {
        // After a failure, or when the response ends the connection, it is closed.
        if r.is_err() || self.parser.closes() {
            self.link = Link::Down;
        }
        if let Some(req) = &mut self.req {
            if r.is_ok() {
                req.done_at = Some(now);
            }
            req.outcome = Some(r);
        }
    }
}
