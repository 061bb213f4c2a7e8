//! TFTP wire format (RFC 1350, options from RFC 2347/2348/2349/7440).
//!
//! Parsing never panics and never allocates; emitting writes into a
//! caller buffer and returns the length.

/// Largest file name accepted in a request, in bytes.
pub const MAX_FILENAME_LEN: usize = 255;

/// TFTP error codes (RFC 1350 §5, RFC 2347 code 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    DiskFull = 3,
    IllegalOperation = 4,
    UnknownTid = 5,
    FileExists = 6,
    NoSuchUser = 7,
    OptionNegotiation = 8,
}

/// Transfer mode of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Octet,
    Netascii,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Read,
    Write,
}

/// Options as the client asked for them (already range-checked by the parser).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestOptions {
    pub blksize: Option<u16>,
    pub tsize: Option<u64>,
    pub timeout: Option<u8>,
    pub windowsize: Option<u16>,
}

/// A read or write request. `filename` is raw bytes as sent (no NUL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub kind: RequestKind,
    pub filename: &'a [u8],
    pub mode: Mode,
    pub options: RequestOptions,
}

/// Options the server accepted, as they go into an OACK.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcceptedOptions {
    pub blksize: Option<u16>,
    pub tsize: Option<u64>,
    pub timeout: Option<u8>,
    pub windowsize: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    Request(Request<'a>),
    Data { block: u16, payload: &'a [u8] },
    Ack { block: u16 },
    Error { code: u16, message: &'a [u8] },
    Oack(AcceptedOptions),
}

/// Why a datagram could not be parsed. Each maps to a counter, and for requests to an ERROR reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("packet truncated")]
    Truncated,
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    #[error("string field not terminated by NUL")]
    MissingNul,
    #[error("file name too long")]
    FilenameTooLong,
    #[error("empty file name")]
    EmptyFilename,
    #[error("unsupported transfer mode")]
    BadMode,
    #[error("malformed value for option")]
    BadOptionValue,
    #[error("option given twice")]
    DuplicateOption,
}

/// Smallest `blksize` a client may ask for (RFC 2348).
pub const MIN_BLKSIZE: u16 = 8;
/// Largest `blksize` (RFC 2348); larger requests are clamped to it by the parser.
pub const MAX_BLKSIZE: u16 = 65464;
/// Block size when no `blksize` option was negotiated (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;
/// Longest OACK [`emit_oack`] can produce (all four options with their largest values).
pub const MAX_OACK_LEN: usize = 2 + (8 + 6) + (6 + 21) + (8 + 4) + (11 + 6);

/// TFTP opcodes (RFC 1350 §5, RFC 2347).
pub mod opcode {
    pub const RRQ: u16 = 1;
    pub const WRQ: u16 = 2;
    pub const DATA: u16 = 3;
    pub const ACK: u16 = 4;
    pub const ERROR: u16 = 5;
    pub const OACK: u16 = 6;
}

impl ErrorCode {
    /// The code for a wire value, if it is one RFC 1350/2347 defines.
    pub fn from_u16(code: u16) -> Option<ErrorCode> {
        Some(match code {
            0 => ErrorCode::NotDefined,
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTid,
            6 => ErrorCode::FileExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionNegotiation,
            _ => return None,
        })
    }

    /// A short human-readable message for an ERROR packet with this code.
    pub fn default_message(self) -> &'static str {
        match self {
            ErrorCode::NotDefined => "Error",
            ErrorCode::FileNotFound => "File not found",
            ErrorCode::AccessViolation => "Access violation",
            ErrorCode::DiskFull => "Disk full or allocation exceeded",
            ErrorCode::IllegalOperation => "Illegal TFTP operation",
            ErrorCode::UnknownTid => "Unknown transfer ID",
            ErrorCode::FileExists => "File already exists",
            ErrorCode::NoSuchUser => "No such user",
            ErrorCode::OptionNegotiation => "Option negotiation failed",
        }
    }
}

impl Mode {
    /// The canonical (lower-case) mode string sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Octet => "octet",
            Mode::Netascii => "netascii",
        }
    }
}

impl From<RequestOptions> for AcceptedOptions {
    fn from(o: RequestOptions) -> Self {
        AcceptedOptions {
            blksize: o.blksize,
            tsize: o.tsize,
            timeout: o.timeout,
            windowsize: o.windowsize,
        }
    }
}

impl AcceptedOptions {
    /// True when no option was accepted (no OACK is sent then).
    pub fn is_empty(&self) -> bool {
        *self == AcceptedOptions::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Parses one datagram. Never panics, never allocates, and runs in time linear in its length.
///
/// Leniencies (all documented RFC grey zones):
/// - trailing bytes after the 4 bytes of an ACK are ignored;
/// - an ERROR message without its terminating NUL is accepted up to the end of the datagram
///   (the peer wants to stop; refusing its ERROR would only prolong the transfer);
/// - NUL padding after the last option of a request/OACK is ignored;
/// - a `blksize` above 65464 (including one too long for a u64) is clamped to 65464.
pub fn parse(bytes: &[u8]) -> Result<Packet<'_>, ParseError> {
    let Some((op, body)) = split_u16(bytes) else {
        return Err(ParseError::Truncated);
    };
    match op {
        opcode::RRQ | opcode::WRQ => {
            let kind = if op == opcode::RRQ {
                RequestKind::Read
            } else {
                RequestKind::Write
            };
            parse_request(kind, body).map(Packet::Request)
        }
        opcode::DATA => {
            let (block, payload) = split_u16(body).ok_or(ParseError::Truncated)?;
            Ok(Packet::Data { block, payload })
        }
        opcode::ACK => {
            let (block, _) = split_u16(body).ok_or(ParseError::Truncated)?;
            Ok(Packet::Ack { block })
        }
        opcode::ERROR => {
            let (code, rest) = split_u16(body).ok_or(ParseError::Truncated)?;
            let message = match rest.iter().position(|&b| b == 0) {
                Some(end) => &rest[..end],
                None => rest,
            };
            Ok(Packet::Error { code, message })
        }
        opcode::OACK => parse_options(body).map(|o| Packet::Oack(o.into())),
        other => Err(ParseError::UnknownOpcode(other)),
    }
}

fn parse_request(kind: RequestKind, body: &[u8]) -> Result<Request<'_>, ParseError> {
    if body.is_empty() {
        return Err(ParseError::Truncated);
    }
    let (filename, rest) = take_cstr(body)?;
    if filename.is_empty() {
        return Err(ParseError::EmptyFilename);
    }
    if filename.len() > MAX_FILENAME_LEN {
        return Err(ParseError::FilenameTooLong);
    }
    let (mode, rest) = take_cstr(rest)?;
    let mode = if mode.eq_ignore_ascii_case(b"octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case(b"netascii") {
        Mode::Netascii
    } else {
        return Err(ParseError::BadMode);
    };
    let options = parse_options(rest)?;
    Ok(Request {
        kind,
        filename,
        mode,
        options,
    })
}

/// RFC 2347 option list: `name NUL value NUL`, repeated. Known names are case-insensitive and
/// range-checked; unknown names are skipped (their values only need a terminating NUL).
fn parse_options(mut rest: &[u8]) -> Result<RequestOptions, ParseError> {
    let mut opts = RequestOptions::default();
    while !rest.is_empty() {
        if rest[0] == 0 {
            // An empty option name: accept pure NUL padding at the end, nothing else.
            // (Checked once, then we stop: keeps the whole parse linear.)
            if rest.iter().all(|&b| b == 0) {
                break;
            }
            return Err(ParseError::BadOptionValue);
        }
        let (name, r) = take_cstr(rest)?;
        let (value, r) = take_cstr(r)?;
        rest = r;
        if name.eq_ignore_ascii_case(b"blksize") {
            let v = match parse_decimal(value)? {
                Some(n) if n < u64::from(MIN_BLKSIZE) => return Err(ParseError::BadOptionValue),
                Some(n) => n.min(u64::from(MAX_BLKSIZE)) as u16,
                None => MAX_BLKSIZE,
            };
            set_once(&mut opts.blksize, v)?;
        } else if name.eq_ignore_ascii_case(b"tsize") {
            let v = parse_decimal(value)?.ok_or(ParseError::BadOptionValue)?;
            set_once(&mut opts.tsize, v)?;
        } else if name.eq_ignore_ascii_case(b"timeout") {
            let v = match parse_decimal(value)? {
                Some(n @ 1..=255) => n as u8,
                _ => return Err(ParseError::BadOptionValue),
            };
            set_once(&mut opts.timeout, v)?;
        } else if name.eq_ignore_ascii_case(b"windowsize") {
            let v = match parse_decimal(value)? {
                Some(n @ 1..=65535) => n as u16,
                _ => return Err(ParseError::BadOptionValue),
            };
            set_once(&mut opts.windowsize, v)?;
        }
    }
    Ok(opts)
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), ParseError> {
    if slot.is_some() {
        return Err(ParseError::DuplicateOption);
    }
    *slot = Some(value);
    Ok(())
}

/// An ASCII decimal number: `Err` if empty or not all digits, `Ok(None)` if it does not fit a
/// u64. Linear in the length, whatever the length.
fn parse_decimal(digits: &[u8]) -> Result<Option<u64>, ParseError> {
    if digits.is_empty() {
        return Err(ParseError::BadOptionValue);
    }
    let mut acc: Option<u64> = Some(0);
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(ParseError::BadOptionValue);
        }
        acc = acc
            .and_then(|a| a.checked_mul(10))
            .and_then(|a| a.checked_add(u64::from(b - b'0')));
    }
    Ok(acc)
}

fn split_u16(bytes: &[u8]) -> Option<(u16, &[u8])> {
    match bytes {
        [hi, lo, rest @ ..] => Some((u16::from_be_bytes([*hi, *lo]), rest)),
        _ => None,
    }
}

/// Splits off a NUL-terminated string (without its NUL).
fn take_cstr(bytes: &[u8]) -> Result<(&[u8], &[u8]), ParseError> {
    let end = bytes
        .iter()
        .position(|&b| b == 0)
        .ok_or(ParseError::MissingNul)?;
    Ok((&bytes[..end], &bytes[end + 1..]))
}

// ---------------------------------------------------------------------------------------------
// Emitting
// ---------------------------------------------------------------------------------------------

/// A bounds-checked writer over a caller buffer.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(bytes.len())?;
        self.buf.get_mut(self.pos..end)?.copy_from_slice(bytes);
        self.pos = end;
        Some(())
    }

    fn put_u16(&mut self, v: u16) -> Option<()> {
        self.put(&v.to_be_bytes())
    }

    fn put_cstr(&mut self, s: &[u8]) -> Option<()> {
        self.put(s)?;
        self.put(&[0])
    }

    fn put_decimal(&mut self, mut v: u64) -> Option<()> {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.put(&digits[i..])
    }

    fn put_option(&mut self, name: &[u8], value: u64) -> Option<()> {
        self.put_cstr(name)?;
        self.put_decimal(value)?;
        self.put(&[0])
    }

    fn put_options(&mut self, o: &RequestOptions) -> Option<()> {
        if let Some(v) = o.blksize {
            self.put_option(b"blksize", v.into())?;
        }
        if let Some(v) = o.tsize {
            self.put_option(b"tsize", v)?;
        }
        if let Some(v) = o.timeout {
            self.put_option(b"timeout", v.into())?;
        }
        if let Some(v) = o.windowsize {
            self.put_option(b"windowsize", v.into())?;
        }
        Some(())
    }
}

/// The 4-byte header of a DATA packet; the payload follows it on the wire.
pub fn data_header(block: u16) -> [u8; 4] {
    let [hi, lo] = block.to_be_bytes();
    [0, opcode::DATA as u8, hi, lo]
}

/// Writes a whole DATA packet (header + payload); `None` if `buf` is too small. For clients,
/// the simulator and tests: the server sends DATA as header + a slice of the image instead.
pub fn emit_data(block: u16, payload: &[u8], buf: &mut [u8]) -> Option<usize> {
    let mut w = Writer::new(buf);
    w.put(&data_header(block))?;
    w.put(payload)?;
    Some(w.pos)
}

/// Writes an ACK; returns 4.
///
/// # Panics
/// If `buf` is shorter than 4 bytes (a caller bug, never input-dependent).
pub fn emit_ack(block: u16, buf: &mut [u8]) -> usize {
    let [hi, lo] = block.to_be_bytes();
    buf[..4].copy_from_slice(&[0, opcode::ACK as u8, hi, lo]);
    4
}

/// Writes an ERROR with `msg`, truncated (at a UTF-8 character boundary, and at an embedded NUL)
/// to fit `buf`; the message is always NUL-terminated. Returns the length.
///
/// # Panics
/// If `buf` is shorter than 5 bytes (a caller bug, never input-dependent).
pub fn emit_error(code: ErrorCode, msg: &str, buf: &mut [u8]) -> usize {
    assert!(buf.len() >= 5, "ERROR buffer shorter than 5 bytes");
    let room = buf.len() - 5;
    let mut end = msg.len().min(room);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    emit_error_bytes(code as u16, &msg.as_bytes()[..end], buf)
}

/// Like [`emit_error`] with a raw code and message bytes (truncated at a byte boundary and at
/// the first NUL).
///
/// # Panics
/// If `buf` is shorter than 5 bytes.
pub fn emit_error_bytes(code: u16, msg: &[u8], buf: &mut [u8]) -> usize {
    assert!(buf.len() >= 5, "ERROR buffer shorter than 5 bytes");
    let msg = match msg.iter().position(|&b| b == 0) {
        Some(nul) => &msg[..nul],
        None => msg,
    };
    let msg = &msg[..msg.len().min(buf.len() - 5)];
    let [ohi, olo] = opcode::ERROR.to_be_bytes();
    let [chi, clo] = code.to_be_bytes();
    buf[..4].copy_from_slice(&[ohi, olo, chi, clo]);
    buf[4..4 + msg.len()].copy_from_slice(msg);
    buf[4 + msg.len()] = 0;
    5 + msg.len()
}

/// Writes an OACK listing the accepted options (blksize, tsize, timeout, windowsize, in that
/// order). Returns the length (2 when no option is set: callers send no OACK then).
///
/// # Panics
/// If `buf` is shorter than [`MAX_OACK_LEN`] (a caller bug, never input-dependent).
pub fn emit_oack(options: &AcceptedOptions, buf: &mut [u8]) -> usize {
    assert!(buf.len() >= MAX_OACK_LEN, "OACK buffer too small");
    let o = RequestOptions {
        blksize: options.blksize,
        tsize: options.tsize,
        timeout: options.timeout,
        windowsize: options.windowsize,
    };
    let mut w = Writer::new(buf);
    let written = w.put_u16(opcode::OACK).and_then(|()| w.put_options(&o));
    debug_assert!(written.is_some(), "MAX_OACK_LEN is the largest OACK");
    w.pos
}

/// Writes an RRQ or WRQ (for clients, the simulator and tests). `None` if `buf` is too small or
/// `filename` contains a NUL byte.
pub fn emit_request(
    kind: RequestKind,
    filename: &[u8],
    mode: Mode,
    options: &RequestOptions,
    buf: &mut [u8],
) -> Option<usize> {
    if filename.contains(&0) {
        return None;
    }
    let op = match kind {
        RequestKind::Read => opcode::RRQ,
        RequestKind::Write => opcode::WRQ,
    };
    let mut w = Writer::new(buf);
    w.put_u16(op)?;
    w.put_cstr(filename)?;
    w.put_cstr(mode.as_str().as_bytes())?;
    w.put_options(options)?;
    Some(w.pos)
}

#[cfg(test)]
mod tests;
