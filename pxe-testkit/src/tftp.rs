//! A minimal blocking TFTP client (RFC 1350 + 2347/2348/7440) with its own codec, written
//! independently of the workspace's TFTP code (`pxe_proto::tftp`, the server's sessions), so
//! that it checks the server's bytes from the outside. Keep it that way: it must not use them.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// How [`fetch`] asks.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub blksize: Option<u16>,
    pub windowsize: Option<u16>,
    pub tsize: bool,
    /// After the first DATA, send an ACK to the server's TID from a second socket and record
    /// what comes back to that socket.
    pub intruder: bool,
    /// Silence after which the last packet (request or ACK) is sent again.
    pub retry: Duration,
    pub overall: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            blksize: None,
            windowsize: None,
            tsize: false,
            intruder: false,
            retry: Duration::from_millis(500),
            overall: Duration::from_secs(60),
        }
    }
}

/// What [`fetch`] received.
#[derive(Debug)]
pub struct Fetched {
    pub data: Vec<u8>,
    /// The address the transfer came from (the server's TID).
    pub tid: SocketAddr,
    /// Options in the server's OACK, if it sent one.
    pub oack: Option<Vec<(String, String)>>,
    /// What the intruder socket received: an ERROR (code, message).
    pub intruder_got: Option<(u16, String)>,
    pub blocks: u64,
}

/// Why [`fetch`] failed.
#[derive(Debug)]
pub enum FetchError {
    Server { code: u16, message: String },
    TimedOut,
    Protocol(String),
    Io(io::Error),
}

impl From<io::Error> for FetchError {
    fn from(e: io::Error) -> Self {
        FetchError::Io(e)
    }
}

/// A read request for `name` in `mode` with `options` (name, value).
pub fn encode_rrq(name: &[u8], mode: &str, options: &[(&str, String)]) -> Vec<u8> {
    let mut p = vec![0, 1];
    p.extend_from_slice(name);
    p.push(0);
    p.extend_from_slice(mode.as_bytes());
    p.push(0);
    for (k, v) in options {
        p.extend_from_slice(k.as_bytes());
        p.push(0);
        p.extend_from_slice(v.as_bytes());
        p.push(0);
    }
    p
}

fn ack(block: u16) -> [u8; 4] {
    let b = block.to_be_bytes();
    [0, 4, b[0], b[1]]
}

fn parse_error(p: &[u8]) -> (u16, String) {
    let code = if p.len() >= 4 {
        u16::from_be_bytes([p[2], p[3]])
    } else {
        u16::MAX
    };
    let msg = p.get(4..).unwrap_or(&[]);
    let msg = msg.split(|&b| b == 0).next().unwrap_or(&[]);
    (code, String::from_utf8_lossy(msg).into_owned())
}

fn parse_oack(p: &[u8]) -> Result<Vec<(String, String)>, FetchError> {
    let body = &p[2..];
    if body.last() != Some(&0) {
        return Err(FetchError::Protocol("OACK not NUL-terminated".into()));
    }
    let fields: Vec<&[u8]> = body[..body.len() - 1].split(|&b| b == 0).collect();
    if !fields.len().is_multiple_of(2) {
        return Err(FetchError::Protocol(format!(
            "OACK with odd field count: {p:?}"
        )));
    }
    Ok(fields
        .chunks(2)
        .map(|kv| {
            (
                String::from_utf8_lossy(kv[0]).to_ascii_lowercase(),
                String::from_utf8_lossy(kv[1]).into_owned(),
            )
        })
        .collect())
}

/// Fetches `name` from `server` in octet mode. Bounded by `opts.overall`.
pub fn fetch(server: SocketAddr, name: &[u8], opts: &FetchOptions) -> Result<Fetched, FetchError> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.set_read_timeout(Some(opts.retry))?;
    let mut options = Vec::new();
    if let Some(b) = opts.blksize {
        options.push(("blksize", b.to_string()));
    }
    if let Some(w) = opts.windowsize {
        options.push(("windowsize", w.to_string()));
    }
    if opts.tsize {
        options.push(("tsize", "0".to_string()));
    }
    let rrq = encode_rrq(name, "octet", &options);
    sock.send_to(&rrq, server)?;

    let deadline = Instant::now() + opts.overall;
    let mut buf = vec![0u8; 70_000];
    let mut tid: Option<SocketAddr> = None;
    let mut blksize = 512usize;
    let mut windowsize = 1u16;
    let mut oack = None;
    let mut data = Vec::new();
    let mut last_block: u16 = 0; // last in-order block received
    let mut in_window = 0u16;
    let mut blocks = 0u64;
    let mut intruder_got = None;
    let mut gap_acked = false;
    loop {
        if Instant::now() > deadline {
            return Err(FetchError::TimedOut);
        }
        let (n, src) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // Silence: our request or ACK, or the end of a window, was lost. Ask again, or
                // acknowledge the last block received in order (RFC 7440 §4).
                match tid {
                    None => sock.send_to(&rrq, server)?,
                    Some(t) => sock.send_to(&ack(last_block), t)?,
                };
                gap_acked = false;
                in_window = 0;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let p = &buf[..n];
        match tid {
            None => tid = Some(src),
            Some(t) if t != src => continue, // not our server's TID
            Some(_) => {}
        }
        let tid_addr = src;
        if n < 2 {
            return Err(FetchError::Protocol(format!("runt datagram {p:?}")));
        }
        match u16::from_be_bytes([p[0], p[1]]) {
            5 => {
                let (code, message) = parse_error(p);
                return Err(FetchError::Server { code, message });
            }
            6 => {
                if blocks > 0 || oack.is_some() {
                    continue; // a retransmitted OACK
                }
                let fields = parse_oack(p)?;
                for (k, v) in &fields {
                    let v: u64 = v
                        .parse()
                        .map_err(|_| FetchError::Protocol(format!("OACK {k}={v}")))?;
                    match k.as_str() {
                        "blksize" => {
                            let asked = opts.blksize.ok_or_else(|| {
                                FetchError::Protocol("unrequested blksize".into())
                            })?;
                            if v == 0 || v > u64::from(asked) {
                                return Err(FetchError::Protocol(format!("blksize {v} > {asked}")));
                            }
                            blksize = v as usize;
                        }
                        "windowsize" => {
                            let asked = opts.windowsize.ok_or_else(|| {
                                FetchError::Protocol("unrequested windowsize".into())
                            })?;
                            if v == 0 || v > u64::from(asked) {
                                return Err(FetchError::Protocol(format!(
                                    "windowsize {v} > {asked}"
                                )));
                            }
                            windowsize = v as u16;
                        }
                        "tsize" => {}
                        other => {
                            return Err(FetchError::Protocol(format!(
                                "unrequested option {other}"
                            )));
                        }
                    }
                }
                oack = Some(fields);
                sock.send_to(&ack(0), tid_addr)?;
            }
            3 => {
                if n < 4 {
                    return Err(FetchError::Protocol("short DATA".into()));
                }
                let block = u16::from_be_bytes([p[2], p[3]]);
                let payload = &p[4..];
                if payload.len() > blksize {
                    return Err(FetchError::Protocol(format!(
                        "DATA of {} bytes > blksize {blksize}",
                        payload.len()
                    )));
                }
                if opts.intruder && intruder_got.is_none() && blocks == 0 {
                    intruder_got = Some(intrude(tid_addr)?);
                }
                if block != last_block.wrapping_add(1) {
                    // Out of order or a duplicate: ack the last in-order block once (RFC 7440);
                    // the silence timer covers the case where that ACK is lost.
                    if !gap_acked {
                        sock.send_to(&ack(last_block), tid_addr)?;
                        in_window = 0;
                        gap_acked = true;
                    }
                    continue;
                }
                gap_acked = false;
                data.extend_from_slice(payload);
                last_block = block;
                blocks += 1;
                in_window += 1;
                let last = payload.len() < blksize;
                if last || in_window >= windowsize {
                    sock.send_to(&ack(block), tid_addr)?;
                    in_window = 0;
                }
                if last {
                    return Ok(Fetched {
                        data,
                        tid: tid_addr,
                        oack,
                        intruder_got,
                        blocks,
                    });
                }
            }
            op => return Err(FetchError::Protocol(format!("unexpected opcode {op}"))),
        }
    }
}

/// Sends an ACK to `tid` from a fresh socket and returns the ERROR it gets back.
fn intrude(tid: SocketAddr) -> Result<(u16, String), FetchError> {
    let other = UdpSocket::bind("0.0.0.0:0")?;
    other.set_read_timeout(Some(Duration::from_secs(3)))?;
    other.send_to(&ack(1), tid)?;
    let mut buf = [0u8; 600];
    let (n, src) = other
        .recv_from(&mut buf)
        .map_err(|e| FetchError::Protocol(format!("no answer to a foreign-TID datagram: {e}")))?;
    if src != tid {
        return Err(FetchError::Protocol(format!(
            "answer from {src}, not {tid}"
        )));
    }
    if n < 4 || buf[..2] != [0, 5] {
        return Err(FetchError::Protocol(format!(
            "not an ERROR: {:?}",
            &buf[..n]
        )));
    }
    Ok(parse_error(&buf[..n]))
}
