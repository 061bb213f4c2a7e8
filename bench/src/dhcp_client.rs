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

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcproto::v4::{self, DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use pxe_proto::consts::arch;

/// The PXE spec's DISCOVER timeouts (also used for the REQUESTs).
pub const PXE_TIMEOUTS: [Duration; 4] = [
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(32),
];

/// Firmware pads its requests to the BOOTP minimum.
const MIN_REQUEST_LEN: usize = v4::MIN_PACKET_SIZE;

/// Parameter request list (option 55) of a PXE ROM: network basics, vendor options (43), class
/// (60), TFTP server (66), boot file (67) and the PXE-reserved 128..135.
const PARAMS: [u8; 20] = [
    1, 2, 3, 5, 6, 11, 12, 13, 15, 16, 17, 18, 43, 54, 60, 66, 67, 128, 129, 130,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    /// Legacy BIOS PXE ROM (option 93 = 0).
    Bios,
    /// UEFI x64 (option 93 = 7).
    UefiX64,
    /// iPXE chain-loaded on BIOS: arch 0 plus user class (77) "iPXE".
    Ipxe,
}

impl Arch {
    pub fn code(self) -> u16 {
        match self {
            Arch::Bios | Arch::Ipxe => arch::X86_BIOS,
            Arch::UefiX64 => arch::X64_UEFI,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Bios => "bios",
            Arch::UefiX64 => "uefi",
            Arch::Ipxe => "ipxe",
        }
    }

    pub fn parse(s: &str) -> Option<Arch> {
        match s {
            "bios" => Some(Arch::Bios),
            "uefi" | "uefi64" | "uefi-x64" => Some(Arch::UefiX64),
            "ipxe" => Some(Arch::Ipxe),
            _ => None,
        }
    }

    /// Option 60 as the ROM sends it.
    pub fn vendor_class(self) -> String {
        format!("PXEClient:Arch:{:05}:UNDI:002001", self.code())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Full,
    Proxy,
}

impl Mode {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Proxy => "proxy",
        }
    }
}

/// One simulated machine.
#[derive(Debug, Clone)]
pub struct ClientConfig {
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
    pub fn pxe_timeouts(scale: f64) -> Vec<Duration> {
        PXE_TIMEOUTS
            .iter()
            .map(|t| t.mul_f64(scale.max(0.0)).max(Duration::from_micros(100)))
            .collect()
    }
}

/// Where a produced datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// The DHCP server port 67 at the configured server address (broadcast by default).
    Server,
    /// A PXE boot server (ProxyDHCP) on port 4011, unicast.
    Proxy(Ipv4Addr),
}

/// The phase a client is in (or failed in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// DISCOVER sent, collecting offers.
    Discover,
    /// REQUEST sent to the DHCP server (port 67).
    Request,
    /// REQUEST sent to the ProxyDHCP server's port 4011.
    ProxyRequest,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Discover => "discover",
            Phase::Request => "request",
            Phase::ProxyRequest => "proxy-request",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
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
    pub fn cause(&self) -> String {
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
pub enum Verdict {
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
pub struct Timestamps {
    pub started: Option<Instant>,
    pub discover_sent: Option<Instant>,
    pub offer_got: Option<Instant>,
    pub request_sent: Option<Instant>,
    pub ack_got: Option<Instant>,
}

pub struct DhcpClient {
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
    pub fn new(cfg: ClientConfig, now: Instant) -> Self {
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
    pub fn xid(&self) -> u32 {
        self.xid
    }

    pub fn arch(&self) -> Arch {
        self.cfg.arch
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Done | State::Failed)
    }

    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// The address the client was given (once done).
    pub fn address(&self) -> Option<Ipv4Addr> {
        self.addr.map(|a| a.yiaddr)
    }

    /// The boot file name of the final ACK / proxy offer (once done).
    pub fn boot_file(&self) -> Option<&[u8]> {
        self.boot_file.as_deref()
    }

    /// The TFTP server of the answer that named the boot file (its `siaddr`, else its server
    /// identifier), once done.
    pub fn next_server(&self) -> Option<Ipv4Addr> {
        self.next_server
    }

    /// The phase the client is in (meaningful while it runs).
    pub fn phase(&self) -> Phase {
        match self.state {
            State::BackOff | State::Selecting | State::Done | State::Failed => Phase::Discover,
            State::Requesting => Phase::Request,
            State::ProxyRequesting => Phase::ProxyRequest,
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next; `None` when finished.
    /// While a datagram is pending, call [`poll_transmit`](Self::poll_transmit) first.
    pub fn deadline(&self) -> Option<Instant> {
        if self.is_finished() {
            None
        } else {
            self.deadline
        }
    }

    /// Encodes the next datagram to send into `out` (cleared first) and says where it goes.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<Dest> {
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
    pub fn handle_timeout(&mut self, now: Instant) {
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
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) -> Verdict {
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

    /// The firmware's request, padded to 300 bytes.
    fn encode(&self, now: Instant, kind: MessageType, out: &mut Vec<u8>) {
        let ciaddr = match self.state {
            State::ProxyRequesting => self.addr.map_or(Ipv4Addr::UNSPECIFIED, |a| a.yiaddr),
            _ => Ipv4Addr::UNSPECIFIED,
        };
        let u = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(self.xid, ciaddr, u, u, u, &self.cfg.mac);
        let secs = self
            .ts
            .started
            .map_or(0, |s| now.saturating_duration_since(s).as_secs());
        m.set_secs(secs.min(u64::from(u16::MAX)) as u16);
        m.set_flags(Flags::default().set_broadcast());
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::MaxMessageSize(1260));
        o.insert(DhcpOption::ParameterRequestList(
            PARAMS.iter().map(|&c| OptionCode::from(c)).collect(),
        ));
        o.insert(DhcpOption::ClientSystemArchitecture(
            v4::Architecture::from(self.cfg.arch.code()),
        ));
        o.insert(DhcpOption::ClientNetworkInterface(1, 2, 1));
        let mut uuid = Vec::with_capacity(17);
        uuid.push(0);
        uuid.extend_from_slice(&self.cfg.uuid);
        o.insert(DhcpOption::ClientMachineIdentifier(uuid));
        o.insert(DhcpOption::ClassIdentifier(
            self.cfg.arch.vendor_class().into_bytes(),
        ));
        if self.cfg.arch == Arch::Ipxe {
            o.insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        }
        if self.state == State::Requesting
            && let Some(a) = self.addr
        {
            o.insert(DhcpOption::RequestedIpAddress(a.yiaddr));
            o.insert(DhcpOption::ServerIdentifier(a.server_id));
        }
        out.clear();
        // Encoding into a Vec cannot fail for these options (all lengths fit in a byte).
        let _ = m.encode(&mut Encoder::new(out));
        if out.len() < MIN_REQUEST_LEN {
            out.resize(MIN_REQUEST_LEN, 0);
        }
    }
}

/// Options the client reads; only these reach dhcproto's decoder.
const KEPT_OPTIONS: [(u8, Option<u8>); 4] = [
    (53, Some(1)), // message type
    (54, Some(4)), // server identifier
    (60, None),    // vendor class
    (67, None),    // boot file name
];

/// Decodes a reply: the fixed header, the magic cookie, the options. `None` for anything that is
/// not a DHCP message.
///
/// dhcproto's option decoder is not hardened against hostile input (it asserts on some option
/// lengths and unwraps others), so the option area is first walked here, with bounds, and only
/// the options the client reads, with valid lengths, are handed to it.
pub fn decode_reply(bytes: &[u8]) -> Option<Message> {
    // 236-byte header + 4-byte cookie + at least one option byte.
    if bytes.len() < 241 || bytes[236..240] != v4::MAGIC {
        return None;
    }
    let mut clean = Vec::with_capacity(bytes.len().min(600) + 1);
    clean.extend_from_slice(&bytes[..240]);
    let mut i = 240;
    let mut ended = false;
    while i < bytes.len() {
        let code = bytes[i];
        match code {
            0 => {
                i += 1;
                continue;
            }
            255 => {
                ended = true;
                break;
            }
            _ => {}
        }
        let len = usize::from(*bytes.get(i + 1)?);
        let value = bytes.get(i + 2..i + 2 + len)?;
        if let Some((_, want)) = KEPT_OPTIONS.iter().find(|(c, _)| *c == code) {
            if want.is_some_and(|w| usize::from(w) != len) {
                return None;
            }
            clean.push(code);
            clean.push(len as u8);
            clean.extend_from_slice(value);
        }
        i += 2 + len;
    }
    if !ended {
        // Options running off the end: truncated.
        return None;
    }
    clean.push(255);
    Message::decode(&mut Decoder::new(&clean)).ok()
}

/// The client hardware address (the first six bytes of `chaddr`) of a datagram, for
/// demultiplexing before decoding: unlike the xid it stays the same for a client's lifetime.
pub fn peek_chaddr(bytes: &[u8]) -> Option<[u8; 6]> {
    bytes.get(28..34)?.try_into().ok()
}

fn server_id(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) if !ip.is_unspecified() => Some(*ip),
        _ if !msg.siaddr().is_unspecified() => Some(msg.siaddr()),
        _ => None,
    }
}

/// Where the boot file is fetched from: `siaddr`, else the server identifier.
fn next_server(msg: &Message) -> Option<Ipv4Addr> {
    if msg.siaddr().is_unspecified() {
        server_id(msg)
    } else {
        Some(msg.siaddr())
    }
}

fn is_pxe_offer(msg: &Message) -> bool {
    matches!(
        msg.opts().get(OptionCode::ClassIdentifier),
        Some(DhcpOption::ClassIdentifier(c)) if c.starts_with(b"PXEClient")
    )
}

/// The boot file name: option 67, else the `file` header field (non-empty).
fn boot_file(msg: &Message) -> Option<&[u8]> {
    if let Some(DhcpOption::BootfileName(f)) = msg.opts().get(OptionCode::BootfileName) {
        let f = trim_nul(f);
        if !f.is_empty() {
            return Some(f);
        }
    }
    msg.fname().map(trim_nul).filter(|f| !f.is_empty())
}

fn trim_nul(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const XID: u32 = 0xdead_beef;
    const SRV: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const PROXY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn client(mode: Mode, arch: Arch, t0: Instant) -> DhcpClient {
        DhcpClient::new(
            ClientConfig {
                mac: MAC,
                uuid: [7; 16],
                arch,
                mode,
                xid: XID,
                timeouts: ClientConfig::pxe_timeouts(0.001),
            },
            t0,
        )
    }

    /// A server reply built with dhcproto.
    struct Reply(Message);

    impl Reply {
        fn new(kind: MessageType, yiaddr: Ipv4Addr) -> Reply {
            let u = Ipv4Addr::UNSPECIFIED;
            let mut m = Message::new_with_id(XID, u, yiaddr, u, u, &MAC);
            m.set_opcode(Opcode::BootReply);
            m.opts_mut().insert(DhcpOption::MessageType(kind));
            Reply(m)
        }
        fn server(mut self, id: Ipv4Addr) -> Reply {
            self.0.opts_mut().insert(DhcpOption::ServerIdentifier(id));
            self
        }
        fn pxe(mut self) -> Reply {
            self.0
                .opts_mut()
                .insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
            self
        }
        fn file(mut self, f: &str) -> Reply {
            self.0.set_fname_str(f);
            self
        }
        fn opt67(mut self, f: &str) -> Reply {
            self.0
                .opts_mut()
                .insert(DhcpOption::BootfileName(f.as_bytes().to_vec()));
            self
        }
        fn xid(mut self, x: u32) -> Reply {
            self.0.set_xid(x);
            self
        }
        fn chaddr(mut self, c: [u8; 6]) -> Reply {
            self.0.set_chaddr(&c);
            self
        }
        fn bytes(&self) -> Vec<u8> {
            self.0.to_vec().unwrap()
        }
    }

    fn offer() -> Reply {
        Reply::new(MessageType::Offer, IP).server(SRV)
    }

    /// Sends what is pending, returns the decoded request and its destination.
    fn tx(c: &mut DhcpClient, now: Instant) -> (Dest, Message, usize) {
        let mut out = Vec::new();
        let dest = c
            .poll_transmit(now, &mut out)
            .expect("a datagram is pending");
        assert!(c.poll_transmit(now, &mut out).is_none(), "one at a time");
        let m = Message::decode(&mut Decoder::new(&out)).unwrap();
        (dest, m, out.len())
    }

    fn opt(m: &Message, code: u8) -> Option<&DhcpOption> {
        m.opts().get(OptionCode::from(code))
    }

    #[test]
    fn full_flow_with_pxe_options() {
        let t0 = Instant::now();
        let mut c = client(Mode::Full, Arch::UefiX64, t0);
        let (dest, d, len) = tx(&mut c, t0);
        assert_eq!(dest, Dest::Server);
        assert!(len >= 300);
        assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!((d.xid(), &d.chaddr()[..6]), (XID, &MAC[..]));
        assert!(d.flags().broadcast());
        assert_eq!(d.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            opt(&d, 60),
            Some(&DhcpOption::ClassIdentifier(
                b"PXEClient:Arch:00007:UNDI:002001".to_vec()
            ))
        );
        assert_eq!(
            opt(&d, 93),
            Some(&DhcpOption::ClientSystemArchitecture(7.into()))
        );
        assert_eq!(
            opt(&d, 94),
            Some(&DhcpOption::ClientNetworkInterface(1, 2, 1))
        );
        let mut uuid = vec![0];
        uuid.extend_from_slice(&[7; 16]);
        assert_eq!(
            opt(&d, 97),
            Some(&DhcpOption::ClientMachineIdentifier(uuid))
        );
        assert!(opt(&d, 77).is_none());
        let Some(DhcpOption::ParameterRequestList(prl)) = opt(&d, 55) else {
            panic!("no option 55");
        };
        for code in [43u8, 60, 66, 67] {
            assert!(prl.contains(&OptionCode::from(code)), "55 lacks {code}");
        }
        assert_eq!(c.deadline(), Some(t0 + ms(4)));

        let t1 = t0 + ms(1);
        assert_eq!(c.handle_datagram(t1, &offer().bytes()), Verdict::Accepted);
        let (dest, r, _) = tx(&mut c, t1);
        assert_eq!(dest, Dest::Server);
        assert_eq!(r.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(opt(&r, 50), Some(&DhcpOption::RequestedIpAddress(IP)));
        assert_eq!(opt(&r, 54), Some(&DhcpOption::ServerIdentifier(SRV)));
        assert!(r.flags().broadcast());
        assert_eq!(r.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(!c.is_finished());

        let t2 = t0 + ms(3);
        let ack = Reply::new(MessageType::Ack, IP)
            .server(SRV)
            .file("snponly.efi");
        assert_eq!(c.handle_datagram(t2, &ack.bytes()), Verdict::Accepted);
        assert!(c.is_done());
        assert_eq!(c.boot_file(), Some(&b"snponly.efi"[..]));
        assert_eq!(c.address(), Some(IP));
        assert_eq!(c.deadline(), None);
        assert_eq!(c.ts.discover_sent, Some(t0));
        assert_eq!(c.ts.offer_got, Some(t1));
        assert_eq!(c.ts.request_sent, Some(t1));
        assert_eq!(c.ts.ack_got, Some(t2));
        assert_eq!(c.retransmits, 0);
        // Finished: nothing more to send, later packets are ignored.
        assert!(c.poll_transmit(t2, &mut Vec::new()).is_none());
        assert_eq!(c.handle_datagram(t2, &ack.bytes()), Verdict::Ignored);
    }

    #[test]
    fn ipxe_sends_user_class_and_bios_arch() {
        let t0 = Instant::now();
        let mut c = client(Mode::Full, Arch::Ipxe, t0);
        let (_, d, _) = tx(&mut c, t0);
        assert_eq!(opt(&d, 77), Some(&DhcpOption::UserClass(b"iPXE".to_vec())));
        assert_eq!(
            opt(&d, 93),
            Some(&DhcpOption::ClientSystemArchitecture(0.into()))
        );
        assert_eq!(
            opt(&d, 60),
            Some(&DhcpOption::ClassIdentifier(
                b"PXEClient:Arch:00000:UNDI:002001".to_vec()
            ))
        );
    }

    #[test]
    fn full_ack_without_boot_file_fails_and_option_67_counts() {
        let t0 = Instant::now();
        let mut c = client(Mode::Full, Arch::Bios, t0);
        tx(&mut c, t0);
        c.handle_datagram(t0, &offer().bytes());
        tx(&mut c, t0);
        let ack = Reply::new(MessageType::Ack, IP).server(SRV);
        assert_eq!(c.handle_datagram(t0, &ack.bytes()), Verdict::Accepted);
        assert_eq!(c.failure(), Some(&Failure::NoBootFile));

        let mut c = client(Mode::Full, Arch::Bios, t0);
        tx(&mut c, t0);
        c.handle_datagram(t0, &offer().bytes());
        tx(&mut c, t0);
        let ack = Reply::new(MessageType::Ack, IP)
            .server(SRV)
            .opt67("undionly.kpxe");
        c.handle_datagram(t0, &ack.bytes());
        assert!(c.is_done());
        assert_eq!(c.boot_file(), Some(&b"undionly.kpxe"[..]));
    }

    #[test]
    fn discover_schedule_is_4_8_16_32_then_gives_up() {
        let t0 = Instant::now();
        let mut c = client(Mode::Full, Arch::Bios, t0);
        let mut now = t0;
        let mut sent = vec![];
        loop {
            if let Some(_d) = c.poll_transmit(now, &mut Vec::new()) {
                sent.push(now - t0);
            }
            let Some(dl) = c.deadline() else { break };
            // A timeout call before the deadline changes nothing.
            c.handle_timeout(dl - ms(1) / 2);
            assert!(c.poll_transmit(now, &mut Vec::new()).is_none());
            now = dl;
            c.handle_timeout(now);
        }
        assert_eq!(sent, vec![ms(0), ms(4), ms(12), ms(28)]);
        assert_eq!(now - t0, ms(60));
        assert_eq!(c.retransmits, 3);
        assert_eq!(c.failure(), Some(&Failure::Timeout(Phase::Discover)));
        assert_eq!(c.failure().unwrap().cause(), "timeout-discover");
    }

    #[test]
    fn request_is_retransmitted_then_times_out() {
        let t0 = Instant::now();
        let mut c = client(Mode::Full, Arch::Bios, t0);
        tx(&mut c, t0);
        c.handle_timeout(t0 + ms(4)); // one DISCOVER retransmission
        tx(&mut c, t0 + ms(4));
        c.handle_datagram(t0 + ms(5), &offer().bytes());
        let (_, r, _) = tx(&mut c, t0 + ms(5));
        assert_eq!(r.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(c.deadline(), Some(t0 + ms(9)));
        c.handle_timeout(t0 + ms(9));
        let (_, r2, _) = tx(&mut c, t0 + ms(9));
        assert_eq!(r2.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(c.deadline(), Some(t0 + ms(17)));
        assert_eq!(c.ts.request_sent, Some(t0 + ms(5)));
        for _ in 0..3 {
            let dl = c.deadline().unwrap();
            c.handle_timeout(dl);
            c.poll_transmit(dl, &mut Vec::new());
        }
        assert_eq!(c.failure(), Some(&Failure::Timeout(Phase::Request)));
        assert_eq!(c.retransmits, 1 + 3);
    }

    fn nak() -> Reply {
        Reply::new(MessageType::Nak, Ipv4Addr::UNSPECIFIED).server(SRV)
    }

    /// DISCOVER → OFFER → REQUEST → NAK at `now`, all with the client's current xid; returns
    /// the xid that was NAKed.
    fn offer_request_nak(c: &mut DhcpClient, now: Instant) -> u32 {
        let xid = c.xid();
        let (_, d, _) = tx(c, now);
        assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(d.xid(), xid);
        assert_eq!(
            c.handle_datagram(now, &offer().xid(xid).bytes()),
            Verdict::Accepted
        );
        let (_, r, _) = tx(c, now);
        assert_eq!(r.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(r.xid(), xid);
        assert_eq!(
            c.handle_datagram(now, &nak().xid(xid).bytes()),
            Verdict::Accepted
        );
        xid
    }

    #[test]
    fn nak_restarts_at_discover_with_a_new_xid_after_a_back_off() {
        let t0 = Instant::now();
        let mut c = client(Mode::Full, Arch::Bios, t0);
        tx(&mut c, t0);
        c.handle_datagram(t0, &offer().bytes());
        tx(&mut c, t0);
        // A NAK from another server is not ours to obey.
        let other = Reply::new(MessageType::Nak, Ipv4Addr::UNSPECIFIED).server(PROXY);
        assert_eq!(c.handle_datagram(t0, &other.bytes()), Verdict::Ignored);
        assert_eq!(c.naks, 0);
        let t1 = t0 + ms(1);
        assert_eq!(c.handle_datagram(t1, &nak().bytes()), Verdict::Accepted);
        assert_eq!((c.naks, c.restarts), (1, 0));
        assert!(!c.is_finished());
        // Not at once: the back-off (an eighth to half of the first 4 ms timeout) runs first.
        assert!(c.poll_transmit(t1, &mut Vec::new()).is_none());
        let dl = c.deadline().expect("the back-off timer");
        assert!(
            dl >= t1 + Duration::from_micros(500) && dl <= t1 + ms(2),
            "back-off {:?}",
            dl - t1
        );
        c.handle_timeout(dl - Duration::from_micros(1));
        assert!(c.poll_transmit(dl, &mut Vec::new()).is_none());
        // Replies to the abandoned transaction, even a fitting ACK, change nothing.
        let late_ack = Reply::new(MessageType::Ack, IP).server(SRV).file("x");
        assert_eq!(c.handle_datagram(t1, &late_ack.bytes()), Verdict::Ignored);
        assert_eq!(c.handle_datagram(t1, &offer().bytes()), Verdict::Ignored);
        c.handle_timeout(dl);
        assert_eq!(c.restarts, 1);
        let new_xid = c.xid();
        assert_ne!(new_xid, XID);
        assert_ne!(new_xid, 0);
        let (dest, d, _) = tx(&mut c, dl);
        assert_eq!(dest, Dest::Server);
        assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
        assert_eq!(d.xid(), new_xid);
        assert!(opt(&d, 50).is_none() && opt(&d, 54).is_none());
        // A fresh retransmission schedule for the new DISCOVER.
        assert_eq!(c.deadline(), Some(dl + ms(4)));
        // Stale answers to the old xid are ignored in the new transaction too.
        assert_eq!(c.handle_datagram(dl, &offer().bytes()), Verdict::Ignored);
        assert_eq!(c.handle_datagram(dl, &late_ack.bytes()), Verdict::Ignored);
        assert!(c.poll_transmit(dl, &mut Vec::new()).is_none());
        assert_eq!(c.ignored, 5);
        // An offer to the new xid leads to a REQUEST and a bound lease.
        let t2 = dl + ms(1);
        let other_ip = Ipv4Addr::new(10, 0, 0, 101);
        let offer2 = Reply::new(MessageType::Offer, other_ip)
            .server(SRV)
            .xid(new_xid);
        assert_eq!(c.handle_datagram(t2, &offer2.bytes()), Verdict::Accepted);
        let (_, r, _) = tx(&mut c, t2);
        assert_eq!(r.xid(), new_xid);
        assert_eq!(opt(&r, 50), Some(&DhcpOption::RequestedIpAddress(other_ip)));
        let ack = Reply::new(MessageType::Ack, other_ip)
            .server(SRV)
            .file("pxelinux.0")
            .xid(new_xid);
        assert_eq!(
            c.handle_datagram(t2 + ms(1), &ack.bytes()),
            Verdict::Accepted
        );
        assert!(c.is_done());
        assert_eq!(c.address(), Some(other_ip));
        assert_eq!(c.boot_file(), Some(&b"pxelinux.0"[..]));
        assert_eq!((c.naks, c.restarts, c.retransmits), (1, 1, 0));
        // The whole-DHCP time runs from the first DISCOVER.
        assert_eq!(c.ts.discover_sent, Some(t0));
        assert_eq!(c.ts.request_sent, Some(t2));
        assert_eq!(c.ts.ack_got, Some(t2 + ms(1)));
    }

    #[test]
    fn nak_after_nak_until_the_overall_deadline() {
        let t0 = Instant::now();
        let mut c = client(Mode::Full, Arch::Bios, t0);
        let mut now = t0;
        let mut xids = std::collections::HashSet::new();
        let mut backoffs = vec![];
        for _ in 0..1000 {
            assert!(xids.insert(offer_request_nak(&mut c, now)), "xid reused");
            let dl = c.deadline().expect("a timer while running");
            backoffs.push(dl - now);
            now = dl;
            c.handle_timeout(now);
            if c.is_finished() {
                break;
            }
        }
        // 4 + 8 + 16 + 32 ms after the first DISCOVER, not a NAK count, ends it.
        assert_eq!(now - t0, ms(60));
        let naks = c.naks;
        assert_eq!(c.failure(), Some(&Failure::TimeoutAfterNaks { naks }));
        assert_eq!(c.failure().unwrap().cause(), "timeout-after-naks");
        assert!(naks > 20, "{naks} NAKs in 60 ms of 0.5..2 ms back-offs");
        assert_eq!(c.restarts, naks - 1, "the last NAK left no time");
        assert_eq!(xids.len() as u64, naks);
        assert_eq!(c.retransmits, 0);
        assert_eq!(c.deadline(), None);
        assert!(c.poll_transmit(now, &mut Vec::new()).is_none());
        // Randomized: within bounds (the last one cut short by the deadline), not all equal.
        let (last, full) = backoffs.split_last().unwrap();
        assert!(*last <= ms(2));
        for b in full {
            assert!(*b >= Duration::from_micros(500) && *b <= ms(2), "{b:?}");
        }
        assert!(full.iter().any(|b| b != &full[0]), "{full:?}");
    }

    #[test]
    fn clients_nak_ed_together_do_not_restart_in_lock_step() {
        let t0 = Instant::now();
        let deadlines: Vec<Instant> = (0..8u8)
            .map(|k| {
                let mut c = DhcpClient::new(
                    ClientConfig {
                        mac: [2, 0, 0, 0, 0, k],
                        uuid: [k; 16],
                        arch: Arch::Bios,
                        mode: Mode::Full,
                        xid: 0x1000 + u32::from(k),
                        timeouts: ClientConfig::pxe_timeouts(1.0),
                    },
                    t0,
                );
                let xid = c.xid();
                let mut u = Vec::new();
                c.poll_transmit(t0, &mut u);
                let mac = [2, 0, 0, 0, 0, k];
                c.handle_datagram(t0, &offer().xid(xid).chaddr(mac).bytes());
                c.poll_transmit(t0, &mut u);
                let n = nak().xid(xid).chaddr(mac);
                assert_eq!(c.handle_datagram(t0, &n.bytes()), Verdict::Accepted);
                c.deadline().unwrap()
            })
            .collect();
        for d in &deadlines {
            // 0.5 .. 2 s at PXE scale.
            assert!(*d >= t0 + ms(500) && *d <= t0 + ms(2000), "{:?}", *d - t0);
        }
        let distinct: std::collections::HashSet<_> = deadlines.iter().collect();
        assert!(distinct.len() >= 6, "back-offs {deadlines:?}");
    }

    #[test]
    fn silent_server_after_a_nak_times_out_at_the_overall_deadline() {
        let t0 = Instant::now();
        let mut c = client(Mode::Full, Arch::Bios, t0);
        offer_request_nak(&mut c, t0);
        let mut discovers = 0;
        while let Some(dl) = c.deadline() {
            c.handle_timeout(dl);
            let mut out = Vec::new();
            if c.poll_transmit(dl, &mut out).is_some() {
                discovers += 1;
            }
            assert!(dl <= t0 + ms(60), "no wait past the overall deadline");
            if c.is_finished() {
                assert_eq!(dl, t0 + ms(60));
            }
        }
        // Restarted after 0.5..2 ms: DISCOVERs 4, 8 and 16 ms apart, then the 32 ms wait is
        // cut short at 60 ms.
        assert_eq!(discovers, 4);
        assert_eq!(c.retransmits, 3);
        assert_eq!(c.failure(), Some(&Failure::TimeoutAfterNaks { naks: 1 }));
        assert_eq!(c.restarts, 1);
    }

    #[test]
    fn proxy_nak_from_the_boot_server_restarts_too() {
        let t0 = Instant::now();
        let mut c = client(Mode::Proxy, Arch::Bios, t0);
        tx(&mut c, t0);
        c.handle_datagram(t0, &offer().bytes());
        let proxy_offer = Reply::new(MessageType::Offer, Ipv4Addr::UNSPECIFIED)
            .server(PROXY)
            .pxe();
        c.handle_datagram(t0, &proxy_offer.bytes());
        tx(&mut c, t0);
        c.handle_datagram(t0, &Reply::new(MessageType::Ack, IP).server(SRV).bytes());
        let (dest, _, _) = tx(&mut c, t0);
        assert_eq!(dest, Dest::Proxy(PROXY));
        let pnak = Reply::new(MessageType::Nak, Ipv4Addr::UNSPECIFIED).server(PROXY);
        assert_eq!(c.handle_datagram(t0, &pnak.bytes()), Verdict::Accepted);
        let dl = c.deadline().unwrap();
        c.handle_timeout(dl);
        let (dest, d, _) = tx(&mut c, dl);
        assert_eq!(dest, Dest::Server);
        assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
        assert_ne!(d.xid(), XID);
        // Both offers are needed again.
        c.handle_datagram(dl, &offer().xid(d.xid()).bytes());
        assert!(c.poll_transmit(dl, &mut Vec::new()).is_none());
        c.handle_datagram(dl, &proxy_offer.xid(d.xid()).bytes());
        let (dest, r, _) = tx(&mut c, dl);
        assert_eq!(dest, Dest::Server);
        assert_eq!(r.opts().msg_type(), Some(MessageType::Request));
        assert_eq!((c.naks, c.restarts), (1, 1));
    }

    #[test]
    fn mismatched_replies_are_ignored_and_counted() {
        let t0 = Instant::now();
        let mut c = client(Mode::Full, Arch::Bios, t0);
        tx(&mut c, t0);
        assert_eq!(
            c.handle_datagram(t0, &offer().xid(XID + 1).bytes()),
            Verdict::Ignored
        );
        assert_eq!(
            c.handle_datagram(t0, &offer().chaddr([1, 2, 3, 4, 5, 6]).bytes()),
            Verdict::Ignored
        );
        // Our own request echoed back (BOOTREQUEST) is not a reply.
        let mut echo = offer();
        echo.0.set_opcode(Opcode::BootRequest);
        assert_eq!(c.handle_datagram(t0, &echo.bytes()), Verdict::Ignored);
        // An ACK while selecting.
        let ack = Reply::new(MessageType::Ack, IP).server(SRV).file("x");
        assert_eq!(c.handle_datagram(t0, &ack.bytes()), Verdict::Ignored);
        assert_eq!(c.ignored, 4);
        assert!(c.poll_transmit(t0, &mut Vec::new()).is_none());
        // Then the right offer still works.
        assert_eq!(c.handle_datagram(t0, &offer().bytes()), Verdict::Accepted);
        // A second offer is ignored.
        assert_eq!(c.handle_datagram(t0, &offer().bytes()), Verdict::Ignored);
        assert_eq!(c.ignored, 5);
    }

    #[test]
    fn garbage_and_truncated_replies_are_counted_not_fatal() {
        let t0 = Instant::now();
        let mut c = client(Mode::Full, Arch::Bios, t0);
        tx(&mut c, t0);
        let good = offer().bytes();
        let mut n = 0;
        for len in 0..good.len() {
            // Truncated anywhere: either malformed, or (cut inside the options) still a valid
            // header; never a panic.
            let v = c.handle_datagram(t0, &good[..len]);
            if v == Verdict::Malformed {
                n += 1;
            }
            if v == Verdict::Accepted {
                break;
            }
        }
        assert!(n >= 241, "every cut inside the header is malformed ({n})");
        let mut c = client(Mode::Full, Arch::Bios, t0);
        tx(&mut c, t0);
        let mut seed = 0x1234_5678_u64;
        for i in 0..2000usize {
            let len = i % 700;
            let mut junk = vec![0u8; len];
            for b in &mut junk {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            if len > 240 {
                junk[236..240].copy_from_slice(&v4::MAGIC);
            }
            assert_ne!(c.handle_datagram(t0, &junk), Verdict::Accepted);
        }
        assert!(c.malformed > 0);
        assert!(!c.is_finished());
        // A reply without a server identifier cannot be requested from: malformed.
        let no_id = Reply::new(MessageType::Offer, IP);
        assert_eq!(c.handle_datagram(t0, &no_id.bytes()), Verdict::Malformed);
        // Running out of time after malformed replies is reported as such.
        let mut c = client(Mode::Full, Arch::Bios, t0);
        tx(&mut c, t0);
        assert_eq!(c.handle_datagram(t0, &good[..245]), Verdict::Malformed);
        c.handle_datagram(t0, &[0u8; 3]);
        while let Some(dl) = c.deadline() {
            c.handle_timeout(dl);
            c.poll_transmit(dl, &mut Vec::new());
        }
        assert_eq!(c.failure(), Some(&Failure::Malformed(Phase::Discover)));
    }

    #[test]
    fn proxy_flow_with_4011() {
        let t0 = Instant::now();
        let mut c = client(Mode::Proxy, Arch::Bios, t0);
        tx(&mut c, t0);
        // The proxy offer alone is not enough.
        let proxy_offer = Reply::new(MessageType::Offer, Ipv4Addr::UNSPECIFIED)
            .server(PROXY)
            .pxe();
        assert_eq!(
            c.handle_datagram(t0 + ms(1), &proxy_offer.bytes()),
            Verdict::Accepted
        );
        assert!(c.poll_transmit(t0, &mut Vec::new()).is_none());
        assert_eq!(
            c.handle_datagram(t0 + ms(2), &offer().bytes()),
            Verdict::Accepted
        );
        assert_eq!(c.ts.offer_got, Some(t0 + ms(2)));
        let (dest, r, _) = tx(&mut c, t0 + ms(2));
        assert_eq!(dest, Dest::Server);
        assert_eq!(opt(&r, 54), Some(&DhcpOption::ServerIdentifier(SRV)));
        let ack = Reply::new(MessageType::Ack, IP).server(SRV);
        assert_eq!(
            c.handle_datagram(t0 + ms(3), &ack.bytes()),
            Verdict::Accepted
        );
        let (dest, r, _) = tx(&mut c, t0 + ms(3));
        assert_eq!(dest, Dest::Proxy(PROXY));
        assert_eq!(r.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(r.ciaddr(), IP);
        assert!(opt(&r, 50).is_none());
        assert!(r.flags().broadcast());
        // A duplicate address ACK (answer to a retransmission) is not the boot server's ACK.
        assert_eq!(
            c.handle_datagram(t0 + ms(4), &ack.bytes()),
            Verdict::Ignored
        );
        let pack = Reply::new(MessageType::Ack, Ipv4Addr::UNSPECIFIED)
            .server(PROXY)
            .pxe()
            .file("undionly.kpxe");
        assert_eq!(
            c.handle_datagram(t0 + ms(5), &pack.bytes()),
            Verdict::Accepted
        );
        assert!(c.is_done());
        assert_eq!(c.boot_file(), Some(&b"undionly.kpxe"[..]));
        assert_eq!(c.ts.request_sent, Some(t0 + ms(2)));
        assert_eq!(c.ts.ack_got, Some(t0 + ms(5)));
    }

    #[test]
    fn proxy_offer_with_boot_file_skips_4011() {
        let t0 = Instant::now();
        let mut c = client(Mode::Proxy, Arch::UefiX64, t0);
        tx(&mut c, t0);
        c.handle_datagram(t0, &offer().bytes());
        let proxy_offer = Reply::new(MessageType::Offer, Ipv4Addr::UNSPECIFIED)
            .server(PROXY)
            .pxe()
            .file("snponly.efi");
        c.handle_datagram(t0, &proxy_offer.bytes());
        tx(&mut c, t0);
        c.handle_datagram(t0, &Reply::new(MessageType::Ack, IP).server(SRV).bytes());
        assert!(c.is_done());
        assert_eq!(c.boot_file(), Some(&b"snponly.efi"[..]));
        assert!(c.poll_transmit(t0, &mut Vec::new()).is_none());
    }

    #[test]
    fn proxy_without_proxy_offer_reports_it() {
        let t0 = Instant::now();
        let mut c = client(Mode::Proxy, Arch::Bios, t0);
        tx(&mut c, t0);
        c.handle_datagram(t0, &offer().bytes());
        while let Some(dl) = c.deadline() {
            c.handle_timeout(dl);
            c.poll_transmit(dl, &mut Vec::new());
        }
        assert_eq!(c.failure(), Some(&Failure::NoProxyOffer));
        assert_eq!(c.retransmits, 3);
    }

    #[test]
    fn vendor_classes() {
        assert_eq!(
            Arch::Bios.vendor_class(),
            "PXEClient:Arch:00000:UNDI:002001"
        );
        assert_eq!(Arch::parse("uefi"), Some(Arch::UefiX64));
        assert_eq!(Arch::parse("arm"), None);
        assert_eq!(peek_chaddr(&offer().bytes()), Some(MAC));
        assert_eq!(peek_chaddr(&offer().bytes()[..33]), None);
    }
}
