//! A TFTP read client as a sans-IO state machine, the way PXE firmware behaves: RRQ with
//! options, ACK 0 after an OACK, an ACK at the end of each window, a re-ACK of the last
//! in-order block on a gap or a timeout, and the RRQ again while nothing has been heard.
//!
//! The simulator drives many of these over real sockets; time is passed in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pxe_server::tftp::packet::{self, Mode, Packet, RequestKind, RequestOptions};

/// What the client asks for.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub blksize: Option<u16>,
    pub windowsize: Option<u16>,
    pub tsize: bool,
    /// Retransmit timeout of the client.
    pub timeout: Duration,
    /// Retransmissions without progress before the client gives up.
    pub max_retries: u32,
}

/// Why a transfer failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server sent ERROR (code, message).
    ServerError(u16, String),
    /// No progress after `max_retries` retransmissions.
    TimedOut,
    /// A block differs from the expected file (or runs past its end).
    Corrupt(String),
    /// The transfer ended with fewer (or more) bytes than the expected file or the announced
    /// tsize.
    ShortFile(String),
    /// A packet the protocol does not allow at this point.
    Protocol(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// RRQ sent, nothing heard yet.
    Requesting,
    /// Receiving DATA from the server's transfer port.
    Receiving,
    Done,
    Failed,
}

pub struct TftpClient {
    filename: Box<[u8]>,
    expected: Option<Arc<[u8]>>,
    opts: ClientOptions,
    state: State,
    /// Negotiated values (512 / 1 without an OACK).
    blksize: usize,
    windowsize: u64,
    /// Blocks received in order so far (block numbers are 1-based; u64 across rollover).
    received_blocks: u64,
    received_bytes: u64,
    /// Blocks received since the last ACK we sent.
    since_ack: u64,
    /// Server transfer port, learnt from the first answer.
    server_tid: Option<u16>,
    deadline: Instant,
    retries: u32,
    pending: Pending,
    failure: Option<Failure>,
    tsize: Option<u64>,
    pub retransmits: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    Rrq,
    /// ACK of this wire block number.
    Ack(u16),
}

/// Where to send a datagram the client produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// The server's well-known port (the RRQ).
    Listener,
    /// The transfer port the server answered from.
    Transfer(u16),
}

impl TftpClient {
    pub fn new(
        filename: &[u8],
        expected: Option<Arc<[u8]>>,
        opts: ClientOptions,
        now: Instant,
    ) -> Self {
        Self {
            filename: filename.into(),
            expected,
            deadline: now + opts.timeout,
            opts,
            state: State::Requesting,
            blksize: 512,
            windowsize: 1,
            received_blocks: 0,
            received_bytes: 0,
            since_ack: 0,
            server_tid: None,
            retries: 0,
            pending: Pending::Rrq,
            failure: None,
            tsize: None,
            retransmits: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    pub fn finished(&self) -> bool {
        matches!(self.state, State::Done | State::Failed)
    }

    pub fn received_bytes(&self) -> u64 {
        self.received_bytes
    }

    pub fn deadline(&self) -> Option<Instant> {
        (!self.finished()).then_some(self.deadline)
    }

    /// The next datagram to send, written into `buf`.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<(Dest, usize)> {
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::None => None,
            Pending::Rrq => {
                let options = RequestOptions {
                    blksize: self.opts.blksize,
                    tsize: self.opts.tsize.then_some(0),
                    timeout: None,
                    windowsize: self.opts.windowsize,
                };
                let len = packet::emit_request(
                    RequestKind::Read,
                    &self.filename,
                    Mode::Octet,
                    &options,
                    buf,
                )?;
                Some((Dest::Listener, len))
            }
            Pending::Ack(block) => {
                let len = packet::emit_ack(block, buf);
                Some((Dest::Transfer(self.server_tid?), len))
            }
        }
    }

    /// A datagram from the server's address, `src_port` being the port it came from.
    pub fn handle_datagram(&mut self, now: Instant, src_port: u16, bytes: &[u8]) {
        if self.finished() {
            return;
        }
        match self.server_tid {
            None => self.server_tid = Some(src_port),
            Some(tid) if tid != src_port => return, // another transfer's packet: not ours
            Some(_) => {}
        }
        let pkt = match packet::parse(bytes) {
            Ok(p) => p,
            Err(e) => return self.fail(Failure::Protocol(format!("unparseable packet: {e}"))),
        };
        match pkt {
            Packet::Oack(o) if self.state == State::Requesting => {
                self.state = State::Receiving;
                self.blksize = usize::from(o.blksize.unwrap_or(512));
                self.windowsize = u64::from(o.windowsize.unwrap_or(1));
                self.tsize = o.tsize;
                if let (Some(t), Some(exp)) = (o.tsize, self.expected.as_deref())
                    && t != exp.len() as u64
                {
                    return self.fail(Failure::ShortFile(format!(
                        "tsize {t} but the file has {} bytes",
                        exp.len()
                    )));
                }
                self.progress(now);
                self.pending = Pending::Ack(0);
            }
            Packet::Oack(_) => {} // a retransmitted OACK: our ACK 0 will answer it on timeout
            Packet::Data { block, payload } => self.on_data(now, block, payload),
            Packet::Error { code, message } => self.fail(Failure::ServerError(
                code,
                String::from_utf8_lossy(message).into_owned(),
            )),
            other => self.fail(Failure::Protocol(format!("unexpected {other:?}"))),
        }
    }

    fn on_data(&mut self, now: Instant, block: u16, payload: &[u8]) {
        if self.state == State::Requesting {
            // No OACK: the server ignored our options (RFC 1350 defaults).
            self.state = State::Receiving;
            self.blksize = 512;
            self.windowsize = 1;
        }
        let next = self.received_blocks + 1;
        if block != (next & 0xffff) as u16 {
            // Out of order or a duplicate: re-ACK the last in-order block once per window, as
            // RFC 7440 receivers do, so the server restarts from there.
            if self.since_ack > 0 || self.windowsize > 1 {
                self.pending = Pending::Ack((self.received_blocks & 0xffff) as u16);
                self.since_ack = 0;
            }
            return;
        }
        if payload.len() > self.blksize {
            return self.fail(Failure::Protocol(format!(
                "block {next} has {} bytes, blksize is {}",
                payload.len(),
                self.blksize
            )));
        }
        if let Some(exp) = self.expected.as_deref() {
            let start = self.received_bytes as usize;
            let end = start + payload.len();
            if exp.get(start..end) != Some(payload) {
                return self.fail(Failure::Corrupt(format!("block {next} differs")));
            }
        }
        self.received_blocks = next;
        self.received_bytes += payload.len() as u64;
        self.since_ack += 1;
        self.progress(now);
        let last = payload.len() < self.blksize;
        if last || self.since_ack >= self.windowsize {
            self.pending = Pending::Ack(block);
            self.since_ack = 0;
        }
        if last {
            if let Some(exp) = self.expected.as_deref()
                && self.received_bytes != exp.len() as u64
            {
                return self.fail(Failure::ShortFile(format!(
                    "received {} bytes, expected {}",
                    self.received_bytes,
                    exp.len()
                )));
            }
            if let Some(t) = self.tsize
                && self.received_bytes != t
            {
                return self.fail(Failure::ShortFile(format!(
                    "received {} bytes, tsize was {t}",
                    self.received_bytes
                )));
            }
            self.state = State::Done;
        }
    }

    fn progress(&mut self, now: Instant) {
        self.retries = 0;
        self.deadline = now + self.opts.timeout;
    }

    fn fail(&mut self, f: Failure) {
        self.failure = Some(f);
        self.state = State::Failed;
        self.pending = Pending::None;
    }

    /// Called when `deadline()` has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.finished() || now < self.deadline {
            return;
        }
        self.retries += 1;
        if self.retries > self.opts.max_retries {
            return self.fail(Failure::TimedOut);
        }
        self.retransmits += 1;
        self.deadline = now + self.opts.timeout;
        self.pending = match self.state {
            State::Requesting => Pending::Rrq,
            _ => {
                self.since_ack = 0;
                Pending::Ack((self.received_blocks & 0xffff) as u16)
            }
        };
    }
}
