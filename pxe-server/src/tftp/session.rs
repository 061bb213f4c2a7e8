//! One read transfer as a sans-IO state machine.
//!
//! Engines drive it like this:
//! ```text
//! loop {
//!     while let Some(t) = session.poll_transmit(now, &mut buf) { send t to session.peer() }
//!     wait for a datagram (-> handle_datagram) or session.poll_timeout() (-> handle_timeout)
//!     if session.outcome().is_some() { drop it }
//! }
//! ```
//! Time is always passed in; the session never reads a clock, a socket or a file.
//!
//! Rules this implements (RFC 1350, 2347-2349, 7440):
//! - Negotiation in [`Session::new`]: `blksize` = min(requested, `max_blksize`), `windowsize` =
//!   min(requested, `max_windowsize`, [`MAX_WINDOW`]), `timeout` = min(requested,
//!   `max_client_timeout` in whole seconds, at least 1) and used as the retransmit timeout,
//!   `tsize` answered with the size of [`Session::payload`]. The OACK carries the values
//!   granted, so a client that asked for a longer timeout learns the one the server uses. If
//!   any option was accepted the first transmit is the OACK and DATA starts after ACK 0;
//!   otherwise DATA 1 goes out at once with blksize 512 and window 1.
//! - Blocks are counted as u64 internally; the wire number is the low 16 bits with rollover to
//!   `rollover_to` (0 or 1; any other value is treated as 1). An ACK maps back to the one block
//!   with that wire number in (last acked, highest sent]; the window cap keeps that unique.
//! - An ACK that advances starts the next window right after the acknowledged block: after the
//!   last block of a window that is the next window, inside a window it restarts the window
//!   (RFC 7440). An ACK that does not advance is [`Received::Ignored`] and sends nothing
//!   (no Sorcerer's Apprentice).
//! - On timeout the outstanding window (or the OACK) is sent again; `max_retries`
//!   retransmissions without progress end the transfer as [`Outcome::TimedOut`].
//! - Unverified: until the peer has acknowledged something (ACK 0 of the OACK, or an ACK that
//!   advances), nothing shows that the request came from the address it names: it may be
//!   spoofed, and every byte sent is sent to a stranger. Such a session retransmits its first
//!   packet (OACK or DATA 1) at most `unverified_retries` times, then waits without sending
//!   until `unverified_lifetime` (a late ACK still verifies it: a busy segment or server
//!   delays real clients too), and then ends as [`Outcome::TimedOut`] with
//!   [`SessionStats::acknowledged`] false. So at most `1 + unverified_retries` copies of one
//!   packet go to an address that never answered: with the defaults (one retransmission) at
//!   most 2 × 516 bytes of UDP payload for an RRQ of at least 10 bytes (`tests::amplification`).
//! - The last block is shorter than blksize (empty when the size is a multiple of it, so a
//!   0-byte file is one empty DATA 1); its ACK completes the transfer.
//! - An ERROR from the peer ends the transfer ([`Outcome::ClientError`]). A datagram from another
//!   address is [`Received::ForeignTid`]; one that does not parse is [`Received::Malformed`].
//! - Policy: a well-formed RRQ/WRQ/DATA/OACK from the peer mid-transfer is also
//!   [`Received::Malformed`] (dropped and counted, the session continues). We never abort on it:
//!   a stray or duplicated request must not kill the transfer, and a session that ends with
//!   something still to send would depend on the engine draining it after the outcome is set.
//!   So this session never produces [`Outcome::Aborted`] itself.
//!
//! Size and allocation: the session is a fixed ~200-byte struct; [`Session::poll_transmit`]
//! hands out DATA as a header plus a range of the shared payload and writes control packets
//! into the caller's buffer, so nothing is allocated per packet.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::images::Image;
use pxe_proto::tftp::{
    self as packet, AcceptedOptions, DEFAULT_BLKSIZE, ErrorCode, MIN_BLKSIZE, Mode, Packet, Request,
};

/// Largest window ever granted, whatever the config says. Keeping the outstanding range of
/// blocks at most half the 16-bit number space makes ACK numbers unambiguous across rollover
/// (RFC 7440 lets the server answer a smaller windowsize than asked).
pub const MAX_WINDOW: u16 = 32768;

/// Per-transfer limits, derived from the `[tftp]` config section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Largest blksize granted (RFC 2348); default 1468 = 1500-byte MTU - IP - UDP - TFTP headers.
    pub max_blksize: u16,
    /// Largest windowsize granted (RFC 7440); default 64.
    pub max_windowsize: u16,
    /// Retransmit timeout when the client did not ask for one (RFC 2349 `timeout`).
    pub default_timeout: Duration,
    /// Longest retransmit timeout granted when the client asks for one. The option counts whole
    /// seconds, so this is rounded down to a second, and at least 1 s is granted. It bounds how
    /// long a silent transfer holds its slot: `max_retries` + 1 sends of this timeout.
    pub max_client_timeout: Duration,
    /// Retransmissions of the same window before the transfer is abandoned.
    pub max_retries: u8,
    /// Retransmissions of the first packet (OACK or DATA 1) while the peer has acknowledged
    /// nothing (at most `max_retries`).
    pub unverified_retries: u8,
    /// Longest life of a session whose peer has acknowledged nothing, whatever its timeout.
    pub unverified_lifetime: Duration,
    /// Block number after 65535: 0 (tftp-hpa, atftp, curl, iPXE) or 1.
    pub rollover_to: u16,
}

impl SessionConfig {
    /// The largest `timeout` option value granted, in seconds (1..=255).
    fn max_client_timeout_secs(&self) -> u8 {
        u8::try_from(self.max_client_timeout.as_secs())
            .unwrap_or(u8::MAX)
            .max(1)
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_blksize: 1468,
            max_windowsize: 64,
            default_timeout: Duration::from_secs(1),
            max_client_timeout: Duration::from_secs(5),
            max_retries: 5,
            unverified_retries: 1,
            unverified_lifetime: Duration::from_secs(4),
            rollover_to: 0,
        }
    }
}

/// One datagram the session wants sent to [`Session::peer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// A DATA packet: the 4-byte header, then `payload` bytes of [`Session::payload`].
    Data {
        header: [u8; 4],
        payload: Range<usize>,
    },
    /// An OACK or ERROR packet written into the caller's buffer (`len` bytes).
    Control { len: usize },
}

/// What a received datagram did to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Accepted and applied (an ACK that advanced, the ACK of the OACK, ...).
    Progress,
    /// A valid packet that changed nothing (duplicate or stale ACK).
    Ignored,
    /// From an address other than the peer: the engine answers it with
    /// ERROR 5 "Unknown transfer ID"; the session is untouched.
    ForeignTid,
    /// Could not be parsed, or not a packet a server's transfer expects; dropped and counted.
    Malformed,
}

/// How a transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The last block was acknowledged.
    Completed,
    /// `max_retries` retransmissions without progress.
    TimedOut,
    /// The client sent an ERROR packet (its code).
    ClientError(u16),
    /// We sent an ERROR and ended (e.g. the client sent something illegal mid-transfer).
    Aborted(ErrorCode),
    /// The service gave the session's slot to a newer request (it was unverified, or its last
    /// block was out): the engine ends it without sending anything more. Never produced by the
    /// session itself.
    Evicted,
}

/// Counters a session keeps for the engine's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub packets_sent: u64,
    pub retransmitted: u64,
    pub payload_bytes_sent: u64,
    /// The peer acknowledged something (the session was verified).
    pub acknowledged: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The OACK is out (or about to be); waiting for ACK 0.
    OackSent,
    /// DATA flowing.
    Transfer,
    /// Finished; nothing more is sent.
    Done(Outcome),
}

pub struct Session {
    peer: SocketAddr,
    image: Arc<Image>,
    netascii: bool,
    state: State,
    /// What the OACK says (empty when no OACK is sent).
    oack: AcceptedOptions,
    /// The OACK is due at the next `poll_transmit`.
    oack_due: bool,
    /// The OACK went out at least once (for the retransmission count).
    oack_sent: bool,
    blksize: u16,
    windowsize: u16,
    rollover_to: u16,
    max_retries: u8,
    /// `max_retries` while the peer has acknowledged nothing.
    unverified_retries: u8,
    /// When a session whose peer has acknowledged nothing ends.
    unverified_until: Instant,
    /// Retransmissions since the last progress.
    retries: u8,
    timeout: Duration,
    /// The client asked for a longer timeout than `max_client_timeout` and got the cap.
    timeout_capped: bool,
    payload_len: u64,
    /// Number of the final (short or empty) block; blocks count from 1.
    last_block: u64,
    /// Highest block acknowledged (0: none; ACK 0 of the OACK also leaves 0).
    last_acked: u64,
    /// Next block `poll_transmit` sends.
    next_send: u64,
    /// Last block of the current window.
    window_end: u64,
    /// Highest block ever sent.
    highest_sent: u64,
    deadline: Option<Instant>,
    stats: SessionStats,
}

impl Session {
    /// Start a transfer of `image` for a parsed read request from `peer`.
    ///
    /// The request is assumed to be a read (the service refuses writes before this). Option
    /// values outside the RFC ranges (only possible for a hand-built `Request`) are sanitised:
    /// blksize is raised to 8, windowsize to 1, a timeout of 0 is not accepted.
    pub fn new(
        peer: SocketAddr,
        request: &Request<'_>,
        image: Arc<Image>,
        config: &SessionConfig,
        now: Instant,
    ) -> Session {
        let netascii = request.mode == Mode::Netascii;
        let payload_len = if netascii {
            image.netascii().len()
        } else {
            image.octets().len()
        } as u64;
        let req = &request.options;
        let mut oack = AcceptedOptions::default();

        let blksize = match req.blksize {
            Some(b) => {
                let b = b.min(config.max_blksize).max(MIN_BLKSIZE);
                oack.blksize = Some(b);
                b
            }
            None => DEFAULT_BLKSIZE,
        };
        let windowsize = match req.windowsize {
            Some(w) => {
                let w = w.min(config.max_windowsize).clamp(1, MAX_WINDOW);
                oack.windowsize = Some(w);
                w
            }
            None => 1,
        };
        let (timeout, timeout_capped) = match req.timeout {
            Some(t) if t > 0 => {
                let granted = t.min(config.max_client_timeout_secs());
                oack.timeout = Some(granted);
                (Duration::from_secs(granted.into()), granted < t)
            }
            _ => (config.default_timeout, false),
        };
        if req.tsize.is_some() {
            oack.tsize = Some(payload_len);
        }
        let with_oack = !oack.is_empty();

        Session {
            peer,
            image,
            netascii,
            state: if with_oack {
                State::OackSent
            } else {
                State::Transfer
            },
            oack,
            oack_due: with_oack,
            oack_sent: false,
            blksize,
            windowsize,
            rollover_to: config.rollover_to.min(1),
            max_retries: config.max_retries,
            unverified_retries: config.unverified_retries.min(config.max_retries),
            unverified_until: now + config.unverified_lifetime,
            retries: 0,
            timeout,
            timeout_capped,
            payload_len,
            last_block: payload_len / u64::from(blksize) + 1,
            last_acked: 0,
            next_send: if with_oack { u64::MAX } else { 1 },
            window_end: if with_oack { 0 } else { 1 },
            highest_sent: 0,
            deadline: Some(now + timeout),
            stats: SessionStats::default(),
        }
    }

    // ---- getters ----------------------------------------------------------------------------

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The bytes `Transmit::Data::payload` ranges index into (octet or netascii form).
    pub fn payload(&self) -> &[u8] {
        if self.netascii {
            self.image.netascii()
        } else {
            self.image.octets()
        }
    }

    /// The image being served (engines clone it to keep in-flight sends valid).
    pub fn image(&self) -> &Arc<Image> {
        &self.image
    }

    /// The negotiated block size.
    pub fn blksize(&self) -> u16 {
        self.blksize
    }

    /// The negotiated window size.
    pub fn windowsize(&self) -> u16 {
        self.windowsize
    }

    /// The options the OACK carries (all `None` when no OACK is sent).
    pub fn accepted_options(&self) -> AcceptedOptions {
        self.oack
    }

    /// The client asked for a `timeout` above `max_client_timeout` and was granted the cap.
    pub fn timeout_capped(&self) -> bool {
        self.timeout_capped
    }

    pub fn outcome(&self) -> Option<Outcome> {
        match self.state {
            State::Done(o) => Some(o),
            _ => None,
        }
    }

    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// The peer has acknowledged something, so it received what we sent to the address it
    /// claimed: the request was not spoofed.
    pub fn acknowledged(&self) -> bool {
        self.stats.acknowledged
    }

    /// The final block has been sent at least once: the client may have the whole file and be
    /// asking for its next one.
    pub fn last_block_sent(&self) -> bool {
        self.highest_sent >= self.last_block
    }

    // ---- input ------------------------------------------------------------------------------

    pub fn handle_datagram(&mut self, now: Instant, src: SocketAddr, bytes: &[u8]) -> Received {
        if src != self.peer {
            return Received::ForeignTid;
        }
        let Ok(packet) = packet::parse(bytes) else {
            return Received::Malformed;
        };
        if matches!(self.state, State::Done(_)) {
            // Late duplicates after the end: valid but irrelevant.
            return match packet {
                Packet::Ack { .. } | Packet::Error { .. } => Received::Ignored,
                _ => Received::Malformed,
            };
        }
        match packet {
            Packet::Ack { block } => self.on_ack(now, block),
            Packet::Error { code, .. } => {
                self.finish(Outcome::ClientError(code));
                Received::Progress
            }
            // See the module docs: dropped, never fatal.
            Packet::Request(_) | Packet::Data { .. } | Packet::Oack(_) => Received::Malformed,
        }
    }

    /// Call when `poll_timeout()` has passed. An early call (before the deadline) does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, State::Done(_)) {
            return;
        }
        match self.poll_timeout() {
            Some(d) if now >= d => {}
            _ => return,
        }
        let unverified = !self.stats.acknowledged;
        if self.retries >= self.max_retries || (unverified && now >= self.unverified_until) {
            self.finish(Outcome::TimedOut);
            return;
        }
        if unverified && self.retries >= self.unverified_retries {
            // Nothing more to a stranger: wait for a late ACK until the lifetime ends.
            self.deadline = None;
            return;
        }
        self.retries += 1;
        match self.state {
            State::OackSent => self.oack_due = true,
            State::Transfer => self.next_send = self.last_acked + 1,
            State::Done(_) => {}
        }
        // Re-armed by poll_transmit; set here too so a deadline always exists while running.
        self.deadline = Some(now + self.timeout);
    }

    // ---- output -----------------------------------------------------------------------------

    /// The next datagram to send, if any; call until `None` to drain a whole window.
    /// `buf` must hold at least [`packet::MAX_OACK_LEN`] bytes (512 is plenty).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        match self.state {
            State::Done(_) => None,
            State::OackSent => {
                if !self.oack_due {
                    return None;
                }
                self.oack_due = false;
                let len = packet::emit_oack(&self.oack, buf);
                self.stats.packets_sent += 1;
                if self.oack_sent {
                    self.stats.retransmitted += 1;
                }
                self.oack_sent = true;
                self.deadline = Some(now + self.timeout);
                Some(Transmit::Control { len })
            }
            State::Transfer => {
                if self.next_send > self.window_end {
                    return None;
                }
                let block = self.next_send;
                self.next_send += 1;
                let bs = u64::from(self.blksize);
                let start = (block - 1) * bs;
                let end = (start + bs).min(self.payload_len);
                self.stats.packets_sent += 1;
                self.stats.payload_bytes_sent += end - start;
                if block <= self.highest_sent {
                    self.stats.retransmitted += 1;
                } else {
                    self.highest_sent = block;
                }
                self.deadline = Some(now + self.timeout);
                // start <= end <= payload_len, which is a usize.
                Some(Transmit::Data {
                    header: packet::data_header(self.wire_block(block)),
                    payload: start as usize..end as usize,
                })
            }
        }
    }

    /// When `handle_timeout` is due; `None` once the transfer has ended.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Done(_) => None,
            _ if !self.stats.acknowledged => Some(
                self.deadline
                    .map_or(self.unverified_until, |d| d.min(self.unverified_until)),
            ),
            _ => self.deadline,
        }
    }

    // ---- internals --------------------------------------------------------------------------

    fn on_ack(&mut self, now: Instant, wire: u16) -> Received {
        let block = match self.state {
            State::OackSent if wire == 0 => 0,
            State::Transfer => match self.unwrap_ack(wire) {
                Some(b) => b,
                None => return Received::Ignored,
            },
            _ => return Received::Ignored,
        };
        self.retries = 0;
        self.stats.acknowledged = true;
        if block >= self.last_block {
            self.last_acked = block;
            self.finish(Outcome::Completed);
            return Received::Progress;
        }
        self.state = State::Transfer;
        self.oack_due = false;
        self.last_acked = block;
        self.next_send = block + 1;
        self.window_end = (block + u64::from(self.windowsize)).min(self.last_block);
        self.deadline = Some(now + self.timeout);
        Received::Progress
    }

    fn finish(&mut self, outcome: Outcome) {
        self.state = State::Done(outcome);
        self.deadline = None;
        self.oack_due = false;
    }

    /// The 16-bit number block `b` (>= 1) carries on the wire.
    fn wire_block(&self, b: u64) -> u16 {
        if b <= 0xffff {
            b as u16
        } else {
            let r = u64::from(self.rollover_to);
            (r + (b - 0x1_0000) % (0x1_0000 - r)) as u16
        }
    }

    /// The block in (last_acked, highest_sent] that carries wire number `w`, if any. That range
    /// holds at most `MAX_WINDOW` blocks, fewer than the numbering period, so at most one
    /// matches.
    fn unwrap_ack(&self, w: u16) -> Option<u64> {
        let lo = self.last_acked + 1;
        let hi = self.highest_sent;
        if lo > hi {
            return None;
        }
        let w = u64::from(w);
        // Before the first rollover the block number is the wire number.
        if w >= lo && w <= hi.min(0xffff) {
            return Some(w);
        }
        if hi <= 0xffff {
            return None;
        }
        let r = u64::from(self.rollover_to);
        if w < r {
            return None;
        }
        let period = 0x1_0000 - r;
        let base = lo.max(0x1_0000);
        let offset = (base - 0x1_0000) % period;
        let b = base + (w - r + period - offset) % period;
        (b <= hi).then_some(b)
    }
}

#[cfg(test)]
mod tests;
