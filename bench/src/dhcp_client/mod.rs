//! A PXE firmware's DHCP client as a sans-IO state machine: datagrams and the current time go
//! in, datagrams (with where to send them) and the next timer deadline come out. The storm
//! driver (`dhcp_storm`) runs thousands of these over two shared sockets.
//!
//! Flows:
//! - **full**: DISCOVER → OFFER → REQUEST (options 50 and 54) → ACK. Done when the ACK carries an
//!   address (yiaddr) and a boot file name (the `file` field or option 67).
//! - **proxy** (PXE spec, ProxyDHCP on the segment): DISCOVER → an OFFER with an address from
//!   the DHCP server *and* a ProxyDHCP offer (vendor class `PXEClient`, no yiaddr; one combined
//!   offer with an address, `PXEClient` and a boot file counts as both) → REQUEST of the address
//!   to the DHCP server → ACK → if the proxy offer named a boot file, done; otherwise a REQUEST
//!   to the proxy's port 4011 → ACK with the boot file.
//!
//! Retransmission follows the PXE spec: a phase's message is sent up to four times, waiting
//! 4, 8, 16 and 32 s (scalable, so tests run in milliseconds); after the last wait the client
//! gives up.
//!
//! A NAK (RFC 2131 3.1 and 4.4: the client "restarts the configuration process") ends the
//! transaction: after a short random back-off (an eighth to half of the first timeout, 0.5-2 s
//! at PXE scale, so clients NAKed together do not come back in lock-step) the client sends a
//! fresh DISCOVER with a new xid and starts collecting offers again, as many times as it takes.
//! Restarts do not extend the client's time: once NAKed, every wait ends at the latest at the
//! overall DHCP deadline (the first DISCOVER plus the sum of the timeouts, 60 s at PXE scale),
//! and a client still without a lease then gives up with [`Failure::TimeoutAfterNaks`].
//!
//! Replies are matched by op (BOOTREPLY), the current xid and chaddr; anything else (answers
//! to an abandoned xid included) is ignored and counted, bytes that do not decode are counted
//! as malformed. Nothing from the network can panic. The xid changes on a restart, so drivers
//! demultiplex by chaddr (see [`peek_chaddr`]), not by xid.

mod message;
#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcproto::v4::{Message, MessageType, Opcode};
use pxe_proto::consts::arch;

use message::{boot_file, is_pxe_offer, next_server, server_id};
pub(crate) use message::{decode_reply, peek_chaddr};

/// The PXE spec's DISCOVER timeouts (also used for the REQUESTs).
pub(crate) const PXE_TIMEOUTS: [Duration; 4] = [
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(32),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Arch {
    /// Legacy BIOS PXE ROM (option 93 = 0).
    Bios,
    /// UEFI x64 (option 93 = 7).
    UefiX64,
    /// iPXE chain-loaded on BIOS: arch 0 plus user class (77) "iPXE".
    Ipxe,
}

impl Arch {
    pub(crate) fn code(self) -> u16 {
        match self {
            Arch::Bios | Arch::Ipxe => arch::X86_BIOS,
            Arch::UefiX64 => arch::X64_UEFI,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Arch::Bios => "bios",
            Arch::UefiX64 => "uefi",
            Arch::Ipxe => "ipxe",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Arch> {
        match s {
            "bios" => Some(Arch::Bios),
            "uefi" | "uefi64" | "uefi-x64" => Some(Arch::UefiX64),
            "ipxe" => Some(Arch::Ipxe),
            _ => None,
        }
    }

    /// Option 60 as the ROM sends it.
    pub(crate) fn vendor_class(self) -> String {
        format!("PXEClient:Arch:{:05}:UNDI:002001", self.code())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Full,
    Proxy,
}

impl Mode {
    /// Its name in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Proxy => "proxy",
        }
    }
}

/// One simulated machine.
#[derive(Debug, Clone)]
pub(crate) struct ClientConfig {
    pub mac: [u8; 6],
    pub uuid: [u8; 16],
    pub arch: Arch,
    pub mode: Mode,
    /// Transaction id of the first DISCOVER (a restart after a NAK draws a new one). Also seeds
    /// the client's back-off and xid generator.
    pub xid: u32,
    /// Wait after the 1st, 2nd, ... transmission of a phase's message; the client gives up after
    /// the last one.
    pub timeouts: Vec<Duration>,
}

impl ClientConfig {
    /// [`PXE_TIMEOUTS`] multiplied by `scale` (e.g. 0.001 for milliseconds).
    pub(crate) fn pxe_timeouts(scale: f64) -> Vec<Duration> {
        PXE_TIMEOUTS
            .iter()
            .map(|t| t.mul_f64(scale.max(0.0)).max(Duration::from_micros(100)))
            .collect()
    }
}

/// Where a produced datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dest {
    /// The DHCP server port 67 at the configured server address (broadcast by default).
    Server,
    /// A PXE boot server (ProxyDHCP) on port 4011, unicast.
    Proxy(Ipv4Addr),
}

/// The phase a client is in (or failed in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// DISCOVER sent, collecting offers.
    Discover,
    /// REQUEST sent to the DHCP server (port 67).
    Request,
    /// REQUEST sent to the ProxyDHCP server's port 4011.
    ProxyRequest,
}

impl Phase {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Discover => "discover",
            Phase::Request => "request",
            Phase::ProxyRequest => "proxy-request",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No usable answer after the last retransmission.
    Timeout(Phase),
    /// Like `Timeout`, but the server did answer with replies that did not decode.
    Malformed(Phase),
    /// Proxy mode: offers came, but never both an address and a ProxyDHCP offer.
    NoProxyOffer,
    NoAddressOffer,
    /// NAKed (and restarted) `naks` times, and still no lease at the overall DHCP deadline.
    TimeoutAfterNaks {
        naks: u64,
    },
    /// The final ACK carries no boot file name.
    NoBootFile,
}

impl Failure {
    /// A short stable name, used as the key of the report's failure table.
    pub(crate) fn cause(&self) -> String {
        match self {
            Failure::Timeout(p) => format!("timeout-{}", p.name()),
            Failure::Malformed(p) => format!("malformed-reply-{}", p.name()),
            Failure::NoProxyOffer => "no-proxy-offer".into(),
            Failure::NoAddressOffer => "no-address-offer".into(),
            Failure::TimeoutAfterNaks { .. } => "timeout-after-naks".into(),
            Failure::NoBootFile => "no-boot-file".into(),
        }
    }
}

/// What became of one datagram handed to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It moved the client on.
    Accepted,
    /// A valid DHCP message not meant for this client or this state (wrong xid/chaddr, a second
    /// offer, a late duplicate, ...).
    Ignored,
    /// Bytes that are not a DHCP reply.
    Malformed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// NAKed: waiting out the back-off before a fresh DISCOVER.
    BackOff,
    Selecting,
    Requesting,
    ProxyRequesting,
    Done,
    Failed,
}

#[derive(Debug, Clone, Copy)]
struct AddrOffer {
    yiaddr: Ipv4Addr,
    server_id: Ipv4Addr,
}

#[derive(Debug, Clone, Copy)]
struct ProxyOffer {
    server: Ipv4Addr,
    has_boot_file: bool,
}

/// Timestamps of the phases (the first DISCOVER, the offer(s) that were taken, the first REQUEST
/// of the successful cycle, the final ACK).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Timestamps {
    pub started: Option<Instant>,
    pub discover_sent: Option<Instant>,
    pub offer_got: Option<Instant>,
    pub request_sent: Option<Instant>,
    pub ack_got: Option<Instant>,
}

pub(crate) struct DhcpClient {
    cfg: ClientConfig,
    /// The transaction id in use (a new one after every NAK).
    xid: u32,
    /// xorshift64 state: back-offs and new xids.
    rng: u64,
    /// The first DISCOVER plus the sum of the timeouts: after a NAK, no wait goes past it.
    overall: Option<Instant>,
    state: State,
    /// Transmissions of the current phase's message so far.
    sends: usize,
    pending: bool,
    deadline: Option<Instant>,
    addr: Option<AddrOffer>,
    proxy: Option<ProxyOffer>,
    malformed_in_phase: u32,
    failure: Option<Failure>,
    boot_file: Option<Vec<u8>>,
    next_server: Option<Ipv4Addr>,
    pub ts: Timestamps,
    pub retransmits: u64,
    pub ignored: u64,
    pub malformed: u64,
    /// NAKs obeyed (each ends the transaction).
    pub naks: u64,
    /// Fresh DISCOVERs after a NAK's back-off (one fewer than `naks` when the last NAK left no
    /// time for another try).
    pub restarts: u64,
}

impl DhcpClient {
    /// A client that sends its first DISCOVER at the next [`poll_transmit`](Self::poll_transmit).
    pub(crate) fn new(cfg: ClientConfig, now: Instant) -> Self {
        assert!(!cfg.timeouts.is_empty(), "at least one timeout");
        let mac = cfg.mac.iter().fold(0u64, |a, &b| a << 8 | u64::from(b));
        let seed = (u64::from(cfg.xid) << 32 | u64::from(cfg.xid)) ^ mac ^ 0x9e37_79b9_7f4a_7c15;
        Self {
            xid: cfg.xid,
            rng: seed.max(1),
            overall: None,
            cfg,
            state: State::Selecting,
            sends: 0,
            pending: true,
            deadline: None,
            addr: None,
            proxy: None,
            malformed_in_phase: 0,
            failure: None,
            boot_file: None,
            next_server: None,
            ts: Timestamps {
                started: Some(now),
                ..Timestamps::default()
            },
            retransmits: 0,
            ignored: 0,
            malformed: 0,
            naks: 0,
            restarts: 0,
        }
    }

    /// The transaction id of the current exchange.
    #[cfg(test)]
    pub(crate) fn xid(&self) -> u32 {
        self.xid
    }

    pub(crate) fn arch(&self) -> Arch {
        self.cfg.arch
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub(crate) fn is_finished(&self) -> bool {
        matches!(self.state, State::Done | State::Failed)
    }

    pub(crate) fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// The address the client was given (once done).
    pub(crate) fn address(&self) -> Option<Ipv4Addr> {
        self.addr.map(|a| a.yiaddr)
    }

    /// The boot file name of the final ACK / proxy offer (once done).
    pub(crate) fn boot_file(&self) -> Option<&[u8]> {
        self.boot_file.as_deref()
    }

    /// The TFTP server of the answer that named the boot file (its `siaddr`, else its server
    /// identifier), once done.
    pub(crate) fn next_server(&self) -> Option<Ipv4Addr> {
        self.next_server
    }

    /// The phase the client is in (meaningful while it runs).
    pub(crate) fn phase(&self) -> Phase {
        match self.state {
            State::BackOff | State::Selecting | State::Done | State::Failed => Phase::Discover,
            State::Requesting => Phase::Request,
            State::ProxyRequesting => Phase::ProxyRequest,
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next; `None` when finished.
    /// While a datagram is pending, call [`poll_transmit`](Self::poll_transmit) first.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.is_finished() {
            None
        } else {
            self.deadline
        }
    }

    /// Encodes the next datagram to send into `out` (cleared first) and says where it goes.
    pub(crate) fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<Dest> {
        if !self.pending || self.is_finished() {
            return None;
        }
        self.pending = false;
        let wait = self.cfg.timeouts[self.sends.min(self.cfg.timeouts.len() - 1)];
        self.sends += 1;
        self.deadline = Some(self.cap(now + wait));
        let dest = match self.state {
            State::Selecting => {
                self.ts.discover_sent.get_or_insert(now);
                let total: Duration = self.cfg.timeouts.iter().sum();
                self.overall.get_or_insert(now + total);
                self.encode(now, MessageType::Discover, out);
                Dest::Server
            }
            State::Requesting => {
                if self.sends == 1 {
                    self.ts.request_sent = Some(now);
                }
                self.encode(now, MessageType::Request, out);
                Dest::Server
            }
            State::ProxyRequesting => {
                self.encode(now, MessageType::Request, out);
                Dest::Proxy(self.proxy.map_or(Ipv4Addr::UNSPECIFIED, |p| p.server))
            }
            State::BackOff | State::Done | State::Failed => return None,
        };
        Some(dest)
    }

    /// The deadline passed: retransmit, restart after a NAK's back-off, or give up after the
    /// last wait (after a NAK: at the overall DHCP deadline).
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.deadline else {
            return;
        };
        if self.is_finished() || self.pending || now < deadline {
            return;
        }
        if self.naks > 0 && self.overall.is_some_and(|o| now >= o) {
            self.fail(Failure::TimeoutAfterNaks { naks: self.naks });
            return;
        }
        if self.state == State::BackOff {
            self.restarts += 1;
            self.enter(State::Selecting);
            return;
        }
        if self.sends >= self.cfg.timeouts.len() {
            let phase = self.phase();
            let failure = match (self.state, self.cfg.mode, self.addr, self.proxy) {
                _ if self.malformed_in_phase > 0 => Failure::Malformed(phase),
                (State::Selecting, Mode::Proxy, Some(_), None) => Failure::NoProxyOffer,
                (State::Selecting, Mode::Proxy, None, Some(_)) => Failure::NoAddressOffer,
                _ => Failure::Timeout(phase),
            };
            self.fail(failure);
            return;
        }
        self.retransmits += 1;
        self.pending = true;
    }

    /// A datagram arrived (on either of the driver's sockets).
    pub(crate) fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) -> Verdict {
        let Some(msg) = decode_reply(bytes) else {
            self.malformed += 1;
            self.malformed_in_phase += 1;
            return Verdict::Malformed;
        };
        if msg.opcode() != Opcode::BootReply
            || msg.xid() != self.xid
            || msg.chaddr().get(..6) != Some(&self.cfg.mac[..])
        {
            self.ignored += 1;
            return Verdict::Ignored;
        }
        let Some(kind) = msg.opts().msg_type() else {
            self.malformed += 1;
            self.malformed_in_phase += 1;
            return Verdict::Malformed;
        };
        let verdict = match (self.state, kind) {
            (State::Selecting, MessageType::Offer) => self.on_offer(now, &msg),
            (State::Requesting, MessageType::Ack) if self.is_from_dhcp_server(&msg) => {
                self.on_address_ack(now, &msg)
            }
            (State::ProxyRequesting, MessageType::Ack) if !self.is_late_dhcp_ack(&msg) => {
                match boot_file(&msg) {
                    Some(f) => {
                        self.boot_file = Some(f.to_vec());
                        self.next_server = next_server(&msg);
                        self.finish(now);
                    }
                    None => self.fail(Failure::NoBootFile),
                }
                Verdict::Accepted
            }
            (State::Requesting, MessageType::Nak) if self.is_from_dhcp_server(&msg) => {
                self.on_nak(now)
            }
            (State::ProxyRequesting, MessageType::Nak) => self.on_nak(now),
            _ => Verdict::Ignored,
        };
        if verdict == Verdict::Ignored {
            self.ignored += 1;
        }
        verdict
    }

    fn on_offer(&mut self, now: Instant, msg: &Message) -> Verdict {
        let yiaddr = msg.yiaddr();
        let has_addr = !yiaddr.is_unspecified();
        let server_id = server_id(msg);
        let pxe = is_pxe_offer(msg);
        let file = boot_file(msg).is_some();
        let mut taken = false;
        if has_addr && self.addr.is_none() {
            let Some(server_id) = server_id else {
                // RFC 2131: an OFFER must name its server; without it no REQUEST can be made.
                self.malformed += 1;
                self.malformed_in_phase += 1;
                return Verdict::Malformed;
            };
            self.addr = Some(AddrOffer { yiaddr, server_id });
            taken = true;
        }
        if self.cfg.mode == Mode::Proxy
            && self.proxy.is_none()
            && pxe
            && (!has_addr || file)
            && let Some(server) = server_id
        {
            self.proxy = Some(ProxyOffer {
                server,
                has_boot_file: file,
            });
            self.boot_file = boot_file(msg).map(<[u8]>::to_vec);
            self.next_server = next_server(msg);
            taken = true;
        }
        if !taken {
            return Verdict::Ignored;
        }
        let ready = match self.cfg.mode {
            Mode::Full => self.addr.is_some(),
            Mode::Proxy => self.addr.is_some() && self.proxy.is_some(),
        };
        if ready {
            self.ts.offer_got.get_or_insert(now);
            self.enter(State::Requesting);
        }
        Verdict::Accepted
    }

    fn on_address_ack(&mut self, now: Instant, msg: &Message) -> Verdict {
        if msg.yiaddr().is_unspecified() {
            self.malformed += 1;
            self.malformed_in_phase += 1;
            return Verdict::Malformed;
        }
        if let Some(a) = &mut self.addr {
            a.yiaddr = msg.yiaddr();
        }
        match self.cfg.mode {
            Mode::Full => match boot_file(msg) {
                Some(f) => {
                    self.boot_file = Some(f.to_vec());
                    self.next_server = next_server(msg);
                    self.finish(now);
                }
                None => self.fail(Failure::NoBootFile),
            },
            Mode::Proxy => {
                let proxy = self
                    .proxy
                    .expect("requesting in proxy mode implies a proxy offer");
                if proxy.has_boot_file {
                    // The name came with the proxy offer (kept in `boot_file`).
                    self.finish(now);
                } else {
                    self.enter(State::ProxyRequesting);
                }
            }
        }
        Verdict::Accepted
    }

    /// The transaction is over: forget the offers, draw a new xid (answers to the old one are
    /// ignored from now on) and wait a random back-off before the fresh DISCOVER.
    fn on_nak(&mut self, now: Instant) -> Verdict {
        self.naks += 1;
        self.addr = None;
        self.proxy = None;
        self.boot_file = None;
        self.next_server = None;
        self.xid = self.new_xid();
        self.state = State::BackOff;
        self.sends = 0;
        self.pending = false;
        self.malformed_in_phase = 0;
        let first = self.cfg.timeouts[0];
        let backoff = first / 8 + (first * 3 / 8).mul_f64(self.uniform());
        self.deadline = Some(self.cap(now + backoff));
        Verdict::Accepted
    }

    /// Once NAKed, no wait goes past the overall DHCP deadline.
    fn cap(&self, at: Instant) -> Instant {
        match self.overall {
            Some(o) if self.naks > 0 => at.min(o),
            _ => at,
        }
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_random() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A random xid, never 0 and never the current one.
    fn new_xid(&mut self) -> u32 {
        let x = (self.next_random() >> 32) as u32;
        if x == 0 || x == self.xid {
            self.xid.wrapping_add(1).max(1)
        } else {
            x
        }
    }

    /// An ACK/NAK in the Requesting state must come from the server whose offer we took (no
    /// server identifier: accepted).
    fn is_from_dhcp_server(&self, msg: &Message) -> bool {
        match (server_id(msg), self.addr) {
            (Some(id), Some(a)) => id == a.server_id,
            _ => true,
        }
    }

    /// In ProxyRequesting, a duplicate ACK of the address REQUEST (the DHCP server answering a
    /// retransmission) must not be taken for the boot server's answer.
    fn is_late_dhcp_ack(&self, msg: &Message) -> bool {
        match (server_id(msg), self.addr, self.proxy) {
            (Some(id), Some(a), Some(p)) => id == a.server_id && id != p.server,
            _ => false,
        }
    }

    fn enter(&mut self, state: State) {
        self.state = state;
        self.sends = 0;
        self.pending = true;
        self.malformed_in_phase = 0;
    }

    fn finish(&mut self, now: Instant) {
        self.state = State::Done;
        self.ts.ack_got = Some(now);
        self.pending = false;
        self.deadline = None;
    }

    fn fail(&mut self, f: Failure) {
        self.failure = Some(f);
        self.state = State::Failed;
        self.pending = false;
        self.deadline = None;
    }
}
