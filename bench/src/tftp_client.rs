//! A TFTP read client as a sans-IO state machine, the way PXE firmware behaves: RRQ with
//! options, ACK 0 after an OACK, an ACK at the end of each window, a re-ACK of the last
//! in-order block on a gap or a timeout, and the RRQ again while nothing has been heard.
//!
//! The simulator drives many of these over real sockets; time is passed in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pxe_proto::tftp::{self as packet, Mode, Packet, RequestKind, RequestOptions};

/// What the client asks for.
#[derive(Debug, Clone)]
pub(crate) struct ClientOptions {
    pub blksize: Option<u16>,
    pub windowsize: Option<u16>,
    pub tsize: bool,
    /// When the client retransmits, and when it gives up.
    pub retry: Retry,
}

/// A client's retransmission schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// The same timeout every time; the transfer fails after `retries` retransmissions without
    /// progress (UEFI PXE firmware: 4 s, 6 retries).
    Fixed { timeout: Duration, retries: u32 },
    /// iPXE's retry timer: the first timeout is `min`; every expiry doubles it and the transfer
    /// fails once the doubled value would exceed `max` (0.25 s and 10 s: 15.75 s of silence, 5
    /// retransmissions); progress without a retransmission moves it towards the round trip
    /// (`t - t/8 + rtt/2`, never below `min`).
    Backoff { min: Duration, max: Duration },
}

impl Retry {
    /// iPXE's defaults.
    pub(crate) const IPXE: Retry = Retry::Backoff {
        min: Duration::from_millis(250),
        max: Duration::from_secs(10),
    };
    /// EDK2's PXE base code (the UEFI firmware's own TFTP for the boot file).
    pub(crate) const UEFI_PXE: Retry = Retry::Fixed {
        timeout: Duration::from_secs(4),
        retries: 6,
    };

    fn initial(self) -> Duration {
        match self {
            Retry::Fixed { timeout, .. } => timeout,
            Retry::Backoff { min, .. } => min,
        }
    }
}

/// Why a transfer failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The server sent ERROR (code, message).
    ServerError(u16, String),
    /// No progress until the retry schedule gave up.
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

pub(crate) struct TftpClient {
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
    /// The current retransmission timeout, and when it was armed.
    timeout: Duration,
    armed_at: Instant,
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
pub(crate) enum Dest {
    /// The server's well-known port (the RRQ).
    Listener,
    /// The transfer port the server answered from.
    Transfer(u16),
}

impl TftpClient {
    pub(crate) fn new(
        filename: &[u8],
        expected: Option<Arc<[u8]>>,
        opts: ClientOptions,
        now: Instant,
    ) -> Self {
        Self {
            filename: filename.into(),
            expected,
            deadline: now + opts.retry.initial(),
            timeout: opts.retry.initial(),
            armed_at: now,
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

    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub(crate) fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    pub(crate) fn finished(&self) -> bool {
        matches!(self.state, State::Done | State::Failed)
    }

    pub(crate) fn received_bytes(&self) -> u64 {
        self.received_bytes
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        (!self.finished()).then_some(self.deadline)
    }

    /// The next datagram to send, written into `buf`.
    pub(crate) fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<(Dest, usize)> {
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
    pub(crate) fn handle_datagram(&mut self, now: Instant, src_port: u16, bytes: &[u8]) {
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
        if let Retry::Backoff { min, .. } = self.opts.retry
            && self.retries == 0
        {
            let rtt = now.saturating_duration_since(self.armed_at);
            self.timeout = (self.timeout - self.timeout / 8 + rtt / 2).max(min);
        }
        self.retries = 0;
        self.arm(now);
    }

    fn arm(&mut self, now: Instant) {
        self.armed_at = now;
        self.deadline = now + self.timeout;
    }

    fn fail(&mut self, f: Failure) {
        self.failure = Some(f);
        self.state = State::Failed;
        self.pending = Pending::None;
    }

    /// Called when `deadline()` has passed.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.finished() || now < self.deadline {
            return;
        }
        self.retries += 1;
        let give_up = match self.opts.retry {
            Retry::Fixed { retries, .. } => self.retries > retries,
            Retry::Backoff { max, .. } => {
                self.timeout = self.timeout.saturating_mul(2);
                self.timeout > max
            }
        };
        if give_up {
            return self.fail(Failure::TimedOut);
        }
        self.retransmits += 1;
        self.arm(now);
        self.pending = match self.state {
            State::Requesting => Pending::Rrq,
            _ => {
                self.since_ack = 0;
                Pending::Ack((self.received_blocks & 0xffff) as u16)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(retry: Retry, t0: Instant) -> TftpClient {
        let opts = ClientOptions {
            blksize: Some(512),
            windowsize: None,
            tsize: false,
            retry,
        };
        let mut c = TftpClient::new(b"f", None, opts, t0);
        let mut buf = [0u8; 600];
        assert!(matches!(
            c.poll_transmit(&mut buf),
            Some((Dest::Listener, _))
        ));
        c
    }

    /// Expires every deadline until the client gives up; returns the waits between them.
    fn silence(c: &mut TftpClient, mut now: Instant) -> (Vec<Duration>, Instant) {
        let mut waits = vec![];
        let mut buf = [0u8; 600];
        for _ in 0..20 {
            let Some(dl) = c.deadline() else { break };
            waits.push(dl - now);
            now = dl;
            c.handle_timeout(now);
            if c.finished() {
                break;
            }
            assert!(c.poll_transmit(&mut buf).is_some(), "a retransmission");
        }
        (waits, now)
    }

    fn data(block: u16, len: usize) -> Vec<u8> {
        let mut d = vec![0, 3, (block >> 8) as u8, block as u8];
        d.resize(4 + len, 7);
        d
    }

    #[test]
    fn ipxe_backoff_doubles_and_gives_up_after_15_75_s() {
        let t0 = Instant::now();
        let mut c = client(Retry::IPXE, t0);
        let (waits, end) = silence(&mut c, t0);
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [250, 500, 1000, 2000, 4000, 8000]);
        assert_eq!(end - t0, Duration::from_millis(15_750));
        assert_eq!(c.failure(), Some(&Failure::TimedOut));
        assert_eq!(c.retransmits, 5);
    }

    #[test]
    fn fixed_schedule_retries_then_gives_up() {
        let t0 = Instant::now();
        let mut c = client(Retry::UEFI_PXE, t0);
        let (waits, end) = silence(&mut c, t0);
        assert_eq!(waits, vec![Duration::from_secs(4); 7]);
        assert_eq!(end - t0, Duration::from_secs(28));
        assert_eq!(c.failure(), Some(&Failure::TimedOut));
        assert_eq!(c.retransmits, 6);
    }

    /// A backed-off timeout stays after the answer that ends the silence, then shrinks by an
    /// eighth plus half the round trip per answer, down to the minimum, as iPXE's does.
    #[test]
    fn ipxe_backoff_adapts_to_the_round_trip() {
        let t0 = Instant::now();
        let mut c = client(Retry::IPXE, t0);
        let mut buf = [0u8; 600];
        let t1 = t0 + Duration::from_millis(250);
        c.handle_timeout(t1); // timeout now 500 ms
        assert!(c.poll_transmit(&mut buf).is_some());
        let t2 = t1 + Duration::from_millis(10);
        c.handle_datagram(t2, 5000, &data(1, 512));
        assert_eq!(c.deadline(), Some(t2 + Duration::from_millis(500)));
        assert!(matches!(
            c.poll_transmit(&mut buf),
            Some((Dest::Transfer(5000), 4))
        ));
        let t3 = t2 + Duration::from_millis(10);
        c.handle_datagram(t3, 5000, &data(2, 512));
        // 500 - 500/8 + 10/2 = 442.5 ms
        assert_eq!(c.deadline(), Some(t3 + Duration::from_micros(442_500)));
        let mut now = t3;
        for block in 3..60 {
            c.poll_transmit(&mut buf);
            now += Duration::from_millis(1);
            c.handle_datagram(now, 5000, &data(block, 512));
        }
        assert_eq!(c.deadline(), Some(now + Duration::from_millis(250)));
        assert!(!c.finished());
    }
}
