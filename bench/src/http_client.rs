//! HTTP/1.1 fetches as iPXE does them after its script (`kernel http://…`, `initrd http://…`),
//! sans-IO: one keep-alive connection per simulated machine, one `GET` at a time, the response
//! parsed as it streams in and its body compared at its offset with the expected file.
//!
//! Two layers, both without sockets:
//! - [`ResponseParser`]: bytes in, events out (the final head's status, body slices borrowed
//!   from the input, the end of the response). Status line, headers matched case-insensitively,
//!   `Content-Length`, `Transfer-Encoding: chunked` (decoded; any other coding is refused), 1xx
//!   heads skipped, `Connection: close` / HTTP/1.0 noted, a body delimited by the close. The
//!   head (and a chunked body's trailers) is bounded by [`MAX_HEAD`].
//! - [`HttpConn`]: one connection's life: when to connect, the request bytes to write, the
//!   response's verification, the idle timeout, and each request's outcome. The driver
//!   (`boot_storm`) owns the TCP socket and feeds it what the socket says.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A response head (status line and headers, or a chunked body's trailers) longer than this
/// is refused.
pub const MAX_HEAD: usize = 16 * 1024;

/// Where the files are: `http://A.B.C.D[:PORT][/PREFIX/]` (an IPv4 literal, no name lookup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpBase {
    pub server: SocketAddrV4,
    /// The path every file name is appended to; starts and ends with `/`.
    pub prefix: String,
}

impl HttpBase {
    pub fn parse(url: &str) -> Result<HttpBase, String> {
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
    pub fn target(&self, name: &str) -> String {
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
    pub fn host(&self) -> String {
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
pub enum HttpFailure {
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
    pub fn cause(&self) -> String {
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

/// What [`ResponseParser::advance`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The final (non-1xx) head is complete.
    Head(u16),
    /// Body bytes (decoded), in order.
    Body(&'a [u8]),
    /// The response is complete.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PState {
    Status,
    Headers,
    /// The head is parsed; the next call reports it.
    HeadDone,
    Body(u64),
    UntilClose,
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    Trailers,
    Done,
}

/// An HTTP/1.1 response parser over a byte stream split anywhere.
#[derive(Debug)]
pub struct ResponseParser {
    state: PState,
    /// The line being read (without its end until it is complete).
    line: Vec<u8>,
    /// Bytes of the current head (or trailer section) so far.
    head_len: usize,
    status: u16,
    http10: bool,
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
    keep_alive: bool,
}

impl Default for ResponseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseParser {
    pub fn new() -> Self {
        Self {
            state: PState::Status,
            line: Vec::with_capacity(256),
            head_len: 0,
            status: 0,
            http10: false,
            content_length: None,
            chunked: false,
            close: false,
            keep_alive: false,
        }
    }

    /// Ready for the next response on the same connection (keeps the line buffer).
    pub fn reset(&mut self) {
        self.state = PState::Status;
        self.line.clear();
        self.head_len = 0;
        self.status = 0;
        self.http10 = false;
        self.content_length = None;
        self.chunked = false;
        self.close = false;
        self.keep_alive = false;
    }

    /// The connection cannot carry another request after this response (`Connection: close`,
    /// HTTP/1.0 without keep-alive, or a body delimited by the close).
    pub fn closes(&self) -> bool {
        self.close || (self.http10 && !self.keep_alive) || self.state == PState::UntilClose
    }

    /// Consumes a prefix of `input`; returns how many bytes and what it found. With non-empty
    /// input it always consumes a byte or returns an event. After `Done`, it consumes nothing.
    pub fn advance<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<Event<'a>>), HttpFailure> {
        match self.state {
            PState::Done => Ok((0, Some(Event::Done))),
            PState::HeadDone => Ok((0, Some(self.head_done()))),
            PState::Body(left) => {
                let n = input.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let left = left - n as u64;
                self.state = if left == 0 {
                    PState::Done
                } else {
                    PState::Body(left)
                };
                Ok((n, (n > 0).then(|| Event::Body(&input[..n]))))
            }
            PState::UntilClose => Ok((
                input.len(),
                (!input.is_empty()).then_some(Event::Body(input)),
            )),
            PState::ChunkData(left) => {
                let n = input.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let left = left - n as u64;
                self.state = if left == 0 {
                    PState::ChunkEnd
                } else {
                    PState::ChunkData(left)
                };
                Ok((n, (n > 0).then(|| Event::Body(&input[..n]))))
            }
            PState::Status
            | PState::Headers
            | PState::ChunkSize
            | PState::ChunkEnd
            | PState::Trailers => {
                let (n, complete) = self.take_line(input)?;
                if complete {
                    let line = std::mem::take(&mut self.line);
                    let r = self.on_line(trim_eol(&line));
                    self.line = line;
                    self.line.clear();
                    r?;
                    match self.state {
                        PState::Done => return Ok((n, Some(Event::Done))),
                        PState::HeadDone => return Ok((n, Some(self.head_done()))),
                        _ => {}
                    }
                }
                Ok((n, None))
            }
        }
    }

    /// Reports the final head and moves on to its body.
    fn head_done(&mut self) -> Event<'static> {
        self.state = match self.body_state() {
            PState::Body(0) => PState::Done,
            s => s,
        };
        Event::Head(self.status)
    }

    /// The connection ended: `Ok(true)` if that completes the response (a body delimited by
    /// the close), else why the response is incomplete.
    pub fn eof(&mut self) -> Result<bool, HttpFailure> {
        match self.state {
            PState::Done => Ok(true),
            PState::UntilClose => {
                self.state = PState::Done;
                Ok(true)
            }
            PState::Status | PState::Headers => Err(HttpFailure::Closed),
            _ => Err(HttpFailure::ShortBody),
        }
    }

    /// Appends input up to and including a line end to `line`; true when a line is complete.
    fn take_line(&mut self, input: &[u8]) -> Result<(usize, bool), HttpFailure> {
        let (n, complete) = match input.iter().position(|&b| b == b'\n') {
            Some(k) => (k + 1, true),
            None => (input.len(), false),
        };
        self.head_len += n;
        if self.head_len > MAX_HEAD {
            return Err(HttpFailure::BadResponse("head too large"));
        }
        self.line.extend_from_slice(&input[..n]);
        Ok((n, complete))
    }

    fn on_line(&mut self, line: &[u8]) -> Result<(), HttpFailure> {
        match self.state {
            PState::Status => self.on_status(line),
            PState::Headers if line.is_empty() => {
                if (100..200).contains(&self.status) {
                    if self.status == 101 {
                        return Err(HttpFailure::BadResponse("101 switching protocols"));
                    }
                    // An interim response: the real one follows.
                    self.reset();
                } else {
                    self.state = PState::HeadDone;
                }
                Ok(())
            }
            PState::Headers => self.on_header(line),
            PState::ChunkSize => {
                let digits = line.split(|&b| b == b';').next().unwrap_or_default();
                let digits = trim_ows(digits);
                if digits.is_empty() || digits.len() > 15 {
                    return Err(HttpFailure::BadResponse("bad chunk size"));
                }
                let mut size = 0u64;
                for &d in digits {
                    let v = (d as char)
                        .to_digit(16)
                        .ok_or(HttpFailure::BadResponse("bad chunk size"))?;
                    size = size * 16 + u64::from(v);
                }
                if size == 0 {
                    self.head_len = 0;
                    self.state = PState::Trailers;
                } else {
                    self.state = PState::ChunkData(size);
                }
                Ok(())
            }
            PState::ChunkEnd if line.is_empty() => {
                self.head_len = 0;
                self.state = PState::ChunkSize;
                Ok(())
            }
            PState::ChunkEnd => Err(HttpFailure::BadResponse("no CRLF after chunk data")),
            PState::Trailers => {
                if line.is_empty() {
                    self.state = PState::Done;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn on_status(&mut self, line: &[u8]) -> Result<(), HttpFailure> {
        let bad = HttpFailure::BadResponse("bad status line");
        let rest = line.strip_prefix(b"HTTP/1.").ok_or(bad.clone())?;
        let (&minor, rest) = rest.split_first().ok_or(bad.clone())?;
        if !minor.is_ascii_digit() {
            return Err(bad);
        }
        let rest = rest.strip_prefix(b" ").ok_or(bad.clone())?;
        let (code, reason) = rest.split_at(rest.len().min(3));
        if code.len() != 3
            || !code.iter().all(u8::is_ascii_digit)
            || !(reason.is_empty() || reason[0] == b' ')
        {
            return Err(bad);
        }
        let status = code.iter().fold(0u16, |s, &d| s * 10 + u16::from(d - b'0'));
        if status < 100 {
            return Err(bad);
        }
        self.status = status;
        self.http10 = minor == b'0';
        self.state = PState::Headers;
        Ok(())
    }

    fn on_header(&mut self, line: &[u8]) -> Result<(), HttpFailure> {
        let bad = HttpFailure::BadResponse("bad header");
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(bad); // obsolete line folding
        }
        let colon = line.iter().position(|&b| b == b':').ok_or(bad.clone())?;
        let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(bad);
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
                return Err(HttpFailure::BadResponse("bad content-length"));
            }
            let n = value
                .iter()
                .fold(0u64, |s, &d| s * 10 + u64::from(d - b'0'));
            if self.content_length.is_some_and(|c| c != n) {
                return Err(HttpFailure::BadResponse("conflicting content-length"));
            }
            self.content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            for coding in value.split(|&b| b == b',').map(trim_ows) {
                if coding.is_empty() {
                    continue;
                }
                // Only a lone `chunked` is decoded; anything layered with it is refused.
                if !coding.eq_ignore_ascii_case(b"chunked") || self.chunked {
                    return Err(HttpFailure::Unsupported);
                }
                self.chunked = true;
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim_ows) {
                if token.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                }
            }
        }
        Ok(())
    }

    /// Where the body goes once the final head is parsed.
    fn body_state(&self) -> PState {
        if self.status == 204 || self.status == 304 {
            PState::Body(0)
        } else if self.chunked {
            PState::ChunkSize
        } else if let Some(n) = self.content_length {
            PState::Body(n)
        } else {
            PState::UntilClose
        }
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
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
pub struct HttpConn {
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
    pub fn new(base: Arc<HttpBase>, timeout: Duration, now: Instant) -> Self {
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
    pub fn get(&mut self, now: Instant, name: &str, expected: Option<Arc<[u8]>>) {
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
    pub fn poll_connect(&mut self) -> Option<SocketAddrV4> {
        if self.link == Link::Down && self.pending() {
            self.link = Link::Connecting;
            self.connects += 1;
            return Some(self.base.server);
        }
        None
    }

    /// The driver keeps (or opens) a socket while this is true, and closes it when false.
    pub fn wants_socket(&self) -> bool {
        self.link != Link::Down
    }

    pub fn is_connecting(&self) -> bool {
        self.link == Link::Connecting
    }

    /// The connect completed.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.link == Link::Connecting {
            self.link = Link::Up;
            self.touch(now);
        }
    }

    /// Request bytes to write now.
    pub fn output(&self) -> &[u8] {
        if self.link == Link::Up && self.pending() {
            &self.out[self.out_sent..]
        } else {
            &[]
        }
    }

    pub fn wrote(&mut self, now: Instant, n: usize) {
        self.out_sent = (self.out_sent + n).min(self.out.len());
        if n > 0 {
            self.touch(now);
        }
    }

    /// Bytes read from the socket.
    pub fn handle_data(&mut self, now: Instant, mut data: &[u8]) {
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
    pub fn handle_eof(&mut self, now: Instant) {
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
    pub fn handle_io_error(&mut self, now: Instant, f: HttpFailure) {
        self.link = Link::Down;
        if self.pending() {
            self.finish(now, Err(f));
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.pending().then_some(self.timer)
    }

    /// Fails the request if nothing happened for the timeout; else re-arms at the last
    /// activity plus the timeout (activity does not move the timer, so it is armed once per
    /// timeout, not once per read).
    pub fn handle_timeout(&mut self, now: Instant) {
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
    pub fn received(&self) -> u64 {
        self.req.as_ref().map_or(0, |r| r.received)
    }

    /// The current request's outcome, once it has one (taken: the next call returns None),
    /// with when its last byte arrived.
    pub fn take_outcome(&mut self) -> Option<(Result<(), HttpFailure>, Option<Instant>, u64)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything a parser reports for `parts` fed one after another: the final status, the
    /// decoded body, whether it completed (and the error, if any).
    #[derive(Debug, PartialEq, Eq)]
    struct Parsed {
        status: Option<u16>,
        body: Vec<u8>,
        done: bool,
        err: Option<HttpFailure>,
        closes: bool,
    }

    fn parse_parts(parts: &[&[u8]], eof: bool) -> Parsed {
        let mut p = ResponseParser::new();
        let mut out = Parsed {
            status: None,
            body: vec![],
            done: false,
            err: None,
            closes: false,
        };
        let mut steps = 0;
        'feed: for part in parts {
            let mut data = *part;
            loop {
                steps += 1;
                assert!(steps < 100_000, "no progress");
                match p.advance(data) {
                    Err(e) => {
                        out.err = Some(e);
                        break 'feed;
                    }
                    Ok((n, ev)) => {
                        data = &data[n..];
                        match ev {
                            Some(Event::Head(s)) => out.status = Some(s),
                            Some(Event::Body(b)) => out.body.extend_from_slice(b),
                            Some(Event::Done) => {
                                out.done = true;
                                break 'feed;
                            }
                            None if data.is_empty() => break,
                            None => {}
                        }
                    }
                }
            }
        }
        if !out.done && out.err.is_none() && eof {
            match p.eof() {
                Ok(done) => out.done = done,
                Err(e) => out.err = Some(e),
            }
        }
        out.closes = p.closes();
        out
    }

    /// Parses `wire` in one piece, split in two at every byte boundary, and byte by byte; all
    /// must give the same result, which is returned.
    fn parse_every_split(wire: &[u8], eof: bool) -> Parsed {
        let whole = parse_parts(&[wire], eof);
        for k in 0..=wire.len() {
            let (a, b) = wire.split_at(k);
            assert_eq!(parse_parts(&[a, b], eof), whole, "split at {k}");
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(parse_parts(&bytes, eof), whole, "byte by byte");
        whole
    }

    #[test]
    fn content_length_response_at_every_split() {
        let wire = b"HTTP/1.1 200 OK\r\nServer: x\r\ncOnTeNt-LeNgTh:  11 \r\n\
                     Content-Type: application/octet-stream\r\n\r\nhello world";
        let p = parse_every_split(wire, false);
        assert_eq!(p.status, Some(200));
        assert_eq!(p.body, b"hello world");
        assert!(p.done && p.err.is_none() && !p.closes);
    }

    #[test]
    fn chunked_body_decoded_at_every_split() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n\
                     5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
        let p = parse_every_split(wire, false);
        assert_eq!(p.body, b"hello 0123456789");
        assert!(p.done && p.err.is_none(), "{p:?}");
        // Transfer-Encoding wins over a Content-Length.
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
                     4\r\nabcd\r\n0\r\n\r\n";
        assert_eq!(parse_every_split(wire, false).body, b"abcd");
    }

    #[test]
    fn interim_responses_are_skipped_and_lf_only_lines_accepted() {
        let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n\
                     HTTP/1.1 200 OK\nContent-Length: 2\n\nok";
        let p = parse_every_split(wire, false);
        assert_eq!(
            (p.status, p.body.as_slice(), p.done),
            (Some(200), &b"ok"[..], true)
        );
        let p = parse_parts(&[b"HTTP/1.1 101 Switching Protocols\r\n\r\n"], false);
        assert_eq!(
            p.err,
            Some(HttpFailure::BadResponse("101 switching protocols"))
        );
    }

    #[test]
    fn connection_close_and_body_until_close() {
        let wire =
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\nx";
        let p = parse_every_split(wire, false);
        assert!(p.done && p.closes);
        // No length: the body runs to the close.
        let wire = b"HTTP/1.1 200 OK\r\n\r\nuntil the end";
        let p = parse_every_split(wire, true);
        assert_eq!(p.body, b"until the end");
        assert!(p.done && p.err.is_none());
        let open = parse_parts(&[wire], false);
        assert!(!open.done && open.closes, "not done before the close");
        // HTTP/1.0 closes unless it says keep-alive.
        let p = parse_parts(&[b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"], false);
        assert!(p.done && p.closes);
        let p = parse_parts(
            &[b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"],
            false,
        );
        assert!(p.done && !p.closes);
    }

    #[test]
    fn empty_bodies_complete_at_the_head() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..],
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
        ] {
            let p = parse_every_split(wire, false);
            assert!(p.done && p.body.is_empty(), "{p:?}");
        }
    }

    #[test]
    fn bad_status_lines_and_headers() {
        for wire in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 099 x\r\n\r\n",
            b"HTTP/1.1 abc\r\n\r\n",
            b"HTTP/1.1200 OK\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n",
            b"\r\n",
        ] {
            let p = parse_every_split(wire, true);
            assert_eq!(
                p.err,
                Some(HttpFailure::BadResponse("bad status line")),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let cases: [(&[u8], HttpFailure); 7] = [
            (
                b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
                HttpFailure::BadResponse("bad header"),
            ),
            (
                b"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n",
                HttpFailure::BadResponse("bad header"),
            ),
            (
                b"HTTP/1.1 200 OK\r\nBad Name: b\r\n\r\n",
                HttpFailure::BadResponse("bad header"),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                HttpFailure::BadResponse("conflicting content-length"),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                HttpFailure::BadResponse("bad content-length"),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                HttpFailure::Unsupported,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                HttpFailure::BadResponse("bad chunk size"),
            ),
        ];
        for (wire, want) in cases {
            assert_eq!(parse_every_split(wire, true).err, Some(want));
        }
        // Equal duplicate lengths are fine.
        let p = parse_parts(
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\nx"],
            false,
        );
        assert!(p.done && p.err.is_none());
        // Chunk data must end in CRLF.
        let p = parse_parts(
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n"],
            false,
        );
        assert_eq!(
            p.err,
            Some(HttpFailure::BadResponse("no CRLF after chunk data"))
        );
    }

    #[test]
    fn short_body_and_early_close() {
        let p = parse_every_split(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true);
        assert_eq!(
            (p.body.as_slice(), p.err),
            (&b"abc"[..], Some(HttpFailure::ShortBody))
        );
        let p = parse_every_split(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            true,
        );
        assert_eq!(p.err, Some(HttpFailure::ShortBody));
        let p = parse_every_split(b"HTTP/1.1 200 OK\r\nContent-Le", true);
        assert_eq!(p.err, Some(HttpFailure::Closed));
        assert_eq!(parse_parts(&[], true).err, Some(HttpFailure::Closed));
    }

    #[test]
    fn oversized_head_is_refused_within_the_bound() {
        let mut p = ResponseParser::new();
        let mut fed = 0usize;
        let line =
            b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        let mut r = p.advance(b"HTTP/1.1 200 OK\r\n").map(|_| ());
        while r.is_ok() {
            let mut data = &line[..];
            while !data.is_empty() {
                match p.advance(data) {
                    Ok((n, _)) => {
                        fed += n;
                        data = &data[n..];
                    }
                    Err(e) => {
                        r = Err(e);
                        break;
                    }
                }
            }
            assert!(fed <= MAX_HEAD + line.len(), "unbounded head");
        }
        assert_eq!(r, Err(HttpFailure::BadResponse("head too large")));
        assert!(p.line.capacity() <= MAX_HEAD * 2);
        // One endless line, too.
        let mut p = ResponseParser::new();
        let junk = [b'a'; 1000];
        let mut err = None;
        for _ in 0..100 {
            if let Err(e) = p.advance(&junk) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(HttpFailure::BadResponse("head too large")));
    }

    #[test]
    fn base_url_parsing_and_targets() {
        let b = HttpBase::parse("http://10.1.2.3:8080/boot/x").unwrap();
        assert_eq!(b.server, "10.1.2.3:8080".parse().unwrap());
        assert_eq!(b.prefix, "/boot/x/");
        assert_eq!(b.host(), "10.1.2.3:8080");
        assert_eq!(b.target("vmlinuz"), "/boot/x/vmlinuz");
        assert_eq!(b.target("/a b%.img"), "/boot/x/a%20b%25.img");
        let b = HttpBase::parse("http://10.1.2.3").unwrap();
        assert_eq!((b.server.port(), b.prefix.as_str()), (80, "/"));
        assert_eq!(b.host(), "10.1.2.3");
        assert_eq!(b.to_string(), "http://10.1.2.3:80/");
        for bad in [
            "https://10.1.2.3/",
            "http://server/",
            "http://10.1.2.3:0/",
            "http://10.1.2.3:x/",
            "http://10.1.2.3/a?b",
            "http://10.1.2.3/a b",
        ] {
            assert!(HttpBase::parse(bad).is_err(), "{bad}");
        }
    }

    fn conn(t0: Instant) -> HttpConn {
        let base = HttpBase::parse("http://10.9.0.1:8080/").unwrap();
        HttpConn::new(Arc::new(base), Duration::from_secs(5), t0)
    }

    fn response(body: &[u8]) -> Vec<u8> {
        let mut v =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        v.extend_from_slice(body);
        v
    }

    fn file(n: usize) -> Arc<[u8]> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn two_gets_on_one_keep_alive_connection_verified() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = conn(t0);
        let kernel = file(100_000);
        c.get(t0, "vmlinuz", Some(kernel.clone()));
        assert!(c.output().is_empty(), "nothing to write before the connect");
        assert_eq!(c.poll_connect(), Some("10.9.0.1:8080".parse().unwrap()));
        assert_eq!(c.poll_connect(), None);
        assert!(c.wants_socket() && c.is_connecting());
        c.handle_connected(t0 + ms(1));
        let req = String::from_utf8(c.output().to_vec()).unwrap();
        assert!(
            req.starts_with("GET /vmlinuz HTTP/1.1\r\nHost: 10.9.0.1:8080\r\n"),
            "{req}"
        );
        assert!(req.ends_with("\r\n\r\n"));
        c.wrote(t0 + ms(1), 10);
        assert_eq!(c.output(), &req.as_bytes()[10..]);
        c.wrote(t0 + ms(1), req.len() - 10);
        assert!(c.output().is_empty());
        let wire = response(&kernel);
        for (k, chunk) in wire.chunks(4096).enumerate() {
            assert!(c.take_outcome().is_none());
            c.handle_data(t0 + ms(2 + k as u64), chunk);
        }
        let (r, at, n) = c.take_outcome().unwrap();
        assert_eq!(r, Ok(()));
        assert_eq!(n, 100_000);
        assert_eq!(at, Some(t0 + ms(2 + wire.len().div_ceil(4096) as u64 - 1)));
        assert!(c.deadline().is_none(), "idle between requests: no timer");
        // The initrd on the same connection: no new connect.
        let initrd = file(3000);
        c.get(t0 + ms(100), "initrd.img", Some(initrd.clone()));
        assert_eq!(c.poll_connect(), None);
        assert!(c.output().starts_with(b"GET /initrd.img HTTP/1.1\r\n"));
        let len = c.output().len();
        c.wrote(t0 + ms(100), len);
        c.handle_data(t0 + ms(101), &response(&initrd));
        assert_eq!(c.take_outcome().map(|o| o.0), Some(Ok(())));
        assert_eq!(c.connects, 1);
    }

    #[test]
    fn connection_close_means_a_new_connection_for_the_next_get() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        c.get(t0, "a", None);
        c.poll_connect().unwrap();
        c.handle_connected(t0);
        let n = c.output().len();
        c.wrote(t0, n);
        c.handle_data(
            t0,
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        );
        assert_eq!(c.take_outcome().map(|o| (o.0, o.2)), Some((Ok(()), 2)));
        assert!(!c.wants_socket(), "the driver closes the socket");
        c.get(t0, "b", None);
        assert!(c.poll_connect().is_some());
        assert_eq!(c.connects, 2);
        // A body delimited by the close completes at the EOF.
        c.handle_connected(t0);
        c.handle_data(t0, b"HTTP/1.1 200 OK\r\n\r\nabc");
        assert!(c.take_outcome().is_none());
        c.handle_eof(t0);
        assert_eq!(c.take_outcome().map(|o| (o.0, o.2)), Some((Ok(()), 3)));
    }

    fn fetch(wire: &[u8], expected: Option<Arc<[u8]>>, eof: bool) -> Result<(), HttpFailure> {
        let t0 = Instant::now();
        let mut c = conn(t0);
        c.get(t0, "f", expected);
        c.poll_connect().unwrap();
        c.handle_connected(t0);
        c.handle_data(t0, wire);
        if eof {
            c.handle_eof(t0);
        }
        let (r, _, _) = c.take_outcome().expect("an outcome");
        assert!(!c.wants_socket() || r.is_ok());
        r
    }

    #[test]
    fn failures_status_short_body_mismatch_length() {
        let f = file(5000);
        assert_eq!(
            fetch(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
                None,
                false
            ),
            Err(HttpFailure::Status(404))
        );
        // The announced length is longer than what comes before the close.
        let mut short = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            f.len() + 10
        )
        .into_bytes();
        short.extend_from_slice(&f);
        assert_eq!(
            fetch(&short, Some(f.clone()), true),
            Err(HttpFailure::ShortBody)
        );
        // A flipped byte, found at its offset.
        let mut bad = f.to_vec();
        bad[4321] ^= 1;
        assert_eq!(
            fetch(&response(&bad), Some(f.clone()), false),
            Err(HttpFailure::Mismatch(4321))
        );
        // More than the file: a mismatch where the file ends.
        let mut long = f.to_vec();
        long.push(0);
        assert_eq!(
            fetch(&response(&long), Some(f.clone()), false),
            Err(HttpFailure::Mismatch(5000))
        );
        // Complete but shorter than the file.
        assert_eq!(
            fetch(&response(&f[..4000]), Some(f.clone()), false),
            Err(HttpFailure::Length {
                got: 4000,
                want: 5000
            })
        );
        // Trailing bytes after a complete response (no request asked for them).
        let mut extra = response(&f);
        extra.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(
            fetch(&extra, Some(f.clone()), false),
            Err(HttpFailure::BadResponse("data after the response"))
        );
        assert_eq!(fetch(b"", None, true), Err(HttpFailure::Closed));
    }

    #[test]
    fn idle_and_connect_timeouts_fail_the_request() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = conn(t0);
        c.get(t0, "f", None);
        c.poll_connect().unwrap();
        assert_eq!(c.deadline(), Some(t0 + s(5)));
        c.handle_timeout(t0 + s(5));
        assert_eq!(
            c.take_outcome().map(|o| o.0),
            Some(Err(HttpFailure::ConnectTimeout))
        );
        assert!(!c.wants_socket());

        let mut c = conn(t0);
        c.get(t0, "f", None);
        c.poll_connect().unwrap();
        c.handle_connected(t0 + s(1));
        c.handle_data(
            t0 + s(3),
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc",
        );
        // The timer does not move with every read; when it fires early it re-arms.
        assert_eq!(c.deadline(), Some(t0 + s(5)));
        c.handle_timeout(t0 + s(5));
        assert!(c.take_outcome().is_none());
        assert_eq!(c.deadline(), Some(t0 + s(8)));
        c.handle_timeout(t0 + s(8));
        assert_eq!(
            c.take_outcome().map(|o| o.0),
            Some(Err(HttpFailure::Timeout))
        );
        assert_eq!(c.deadline(), None);
    }

    #[test]
    fn io_errors_fail_the_request_and_drop_the_socket() {
        let t0 = Instant::now();
        let mut c = conn(t0);
        c.get(t0, "f", None);
        c.poll_connect().unwrap();
        c.handle_io_error(t0, HttpFailure::Refused);
        assert_eq!(
            c.take_outcome().map(|o| o.0),
            Some(Err(HttpFailure::Refused))
        );
        assert!(!c.wants_socket());
        assert_eq!(HttpFailure::Refused.cause(), "refused");
        assert_eq!(HttpFailure::Status(404).cause(), "status-404");
        assert_eq!(HttpFailure::ShortBody.cause(), "short-body");
    }
}
