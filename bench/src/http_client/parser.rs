//! The response parser: bytes of one connection in, in pieces split anywhere; the final head's
//! status, the body (de-chunked) and the response's end out.

use super::HttpFailure;

/// A response head (status line and headers, or a chunked body's trailers) longer than this
/// is refused.
pub(super) const MAX_HEAD: usize = 16 * 1024;

/// What [`ResponseParser::advance`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event<'a> {
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
pub(crate) struct ResponseParser {
    state: PState,
    /// The line being read (without its end until it is complete). Seen by the tests, which
    /// check that it stays bounded.
    pub(super) line: Vec<u8>,
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
    pub(crate) fn new() -> Self {
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
    pub(crate) fn reset(&mut self) {
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
    pub(crate) fn closes(&self) -> bool {
        self.close || (self.http10 && !self.keep_alive) || self.state == PState::UntilClose
    }

    /// Consumes a prefix of `input`; returns how many bytes and what it found. With non-empty
    /// input it always consumes a byte or returns an event. After `Done`, it consumes nothing.
    pub(crate) fn advance<'a>(
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
    pub(crate) fn eof(&mut self) -> Result<bool, HttpFailure> {
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
