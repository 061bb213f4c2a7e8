//! The DHCP discovery policy shared by the XDP program and the userspace fallback.
//!
//! Everything here is `no_std`, allocation-free and written so that the same code compiles for
//! the host (the loader, the daemon's fallback, the tests) and for `bpfel-unknown-none` (the XDP
//! program in `src/main.rs`):
//! - every packet read goes through [`PacketBytes::byte`], which the XDP side implements with an
//!   explicit `data + off + 1 <= data_end` check (what the verifier wants), and the host with
//!   `slice::get`;
//! - every offset is bounded by a constant ([`MAX_FRAME_OFF`]) before it is used, so the
//!   verifier knows the range of every variable offset;
//! - the DHCP option walk stops after [`MAX_OPTIONS`] options; a walk that hits that bound
//!   before the END option, or that meets a repeated option of interest (53, 60, 93, 97), one
//!   of them with a length the responder's decoder refuses, or an option overload (52), which
//!   the responder reads differently (first occurrence, overloaded `file`/`sname`), does not
//!   judge the request: [`Verdict::Malformed`], passed by the XDP program to the daemon, whose
//!   userspace filter judges it with the responder's own decoder;
//! - [`PacketBytes::forget_path`] marks the points (the walk's offset, its end, what the walk
//!   found) where the XDP side makes the verifier forget how a value was computed, so that the
//!   walk is verified once per step rather than once per path through the packet.
//!
//! The decision ([`decide`]) takes the map look-ups as a [`PolicyEnv`] so that the XDP program
//! answers them from BPF maps and the daemon from its own tables; the token bucket
//! ([`TokenBucket::take`]) is a pure function of (bucket, now, policy).
#![no_std]

use pxe_proto::consts::{
    BOOTP_FIXED_LEN, BOOTP_OPTIONS_OFF, BOOTREQUEST, DHCP_MAGIC, DHCP_SERVER_PORT, ETH_HLEN,
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, HTTP_CLIENT, IPPROTO_UDP, PXE_CLIENT, PXE_PORT,
    msg_type, opt,
};

/// At most this many VLAN tags are skipped (802.1ad outer + 802.1Q inner).
pub const MAX_VLAN_TAGS: usize = 2;
/// Options looked at before the walk gives up (a PAD counts as one). PXE firmware and iPXE
/// send 7 to 12 options. The verifier (Linux 6.18) accepts 16 steps within its budget of one
/// million instructions; 32 exceed it.
pub const MAX_OPTIONS: usize = 16;
/// Bytes of DHCP payload the walk may look at (options beyond are never read).
pub const MAX_DHCP_LEN: usize = 1500;
/// Largest offset ever read in a frame: 2 tags + the longest IPv4 header + UDP + DHCP.
pub const MAX_FRAME_OFF: usize = ETH_HLEN + 4 * MAX_VLAN_TAGS + 60 + 8 + MAX_DHCP_LEN;
const _: () = assert!(
    MAX_FRAME_OFF < 0x800,
    "the XDP side masks offsets with 0x7ff"
);

/// Random access to a packet's bytes: `None` past its end.
pub trait PacketBytes {
    fn byte(&self, off: usize) -> Option<u8>;

    /// Called on the option walk's offset at the top of every step, with `off <=`
    /// [`MAX_FRAME_OFF`]; must return `off` unchanged. The XDP side masks it in a way LLVM
    /// cannot see through, so the verifier forgets how the offset was reached and the states
    /// of different paths through the walk compare equal (without this, every sequence of PAD
    /// and non-PAD options is a distinct state and the walk exceeds the verifier's budget).
    #[inline(always)]
    fn forget_path(&self, off: usize) -> usize {
        off
    }
}

impl PacketBytes for [u8] {
    #[inline(always)]
    fn byte(&self, off: usize) -> Option<u8> {
        self.get(off).copied()
    }
}

#[inline(always)]
fn be16<P: PacketBytes + ?Sized>(p: &P, off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([p.byte(off)?, p.byte(off + 1)?]))
}

/// What the vendor class (option 60) says about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientClass {
    /// No option 60, or one that is neither of the two below.
    Other,
    /// `PXEClient…`
    Pxe,
    /// `HTTPClient…` (UEFI HTTP boot)
    Http,
}

/// What the policy needs from a BOOTREQUEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpInfo {
    /// `chaddr` (the first 6 bytes; `htype`/`hlen` are not checked here, the responder does).
    pub mac: [u8; 6],
    /// Option 53, 0 when absent (plain BOOTP).
    pub msg_type: u8,
    pub class: ClientClass,
    /// Option 93 (first architecture), when present with a length of at least 2.
    pub arch: Option<u16>,
    /// Option 97 present with type byte 0 (a UUID, as the responder reads it).
    pub has_uuid: bool,
}

impl DhcpInfo {
    /// A PXE or HTTP-boot client: vendor class prefix, or (some firmware omit option 60 in a
    /// REQUEST) both an architecture and a UUID.
    pub fn is_boot_client(&self) -> bool {
        self.class != ClientClass::Other || (self.arch.is_some() && self.has_uuid)
    }

    /// What the policy ([`decide`]) reads of a request: its MAC, its message type and whether
    /// it is a boot client. Where the bounded walk judges a request, the responder's decoder
    /// reads the same (the vendor class itself may differ: see [`parse_dhcp`]).
    pub fn policy_reading(&self) -> ([u8; 6], u8, bool) {
        (self.mac, self.msg_type, self.is_boot_client())
    }

    /// DISCOVER or REQUEST: what a storm is made of, and what the rate limit meters.
    pub fn is_metered(&self) -> bool {
        self.msg_type == msg_type::DISCOVER || self.msg_type == msg_type::REQUEST
    }
}

/// Why a payload or frame was not classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not IPv4/UDP to port 67 or 4011: not ours to judge (passed, not counted as seen).
    NotDhcp,
    /// Claims to be DHCP to us but is truncated or inconsistent, or the option walk did not
    /// judge it (its bound, a repeated option of interest, an overload): passed, counted.
    Malformed,
}

/// The outcome for one packet. Only the three `Drop*` variants drop; everything else passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not DHCP to our ports (passed, not counted as seen).
    NotDhcp,
    Pass,
    DropNotPxe,
    DropRateLimited,
    DropDenied,
    /// Not judged here (truncated, or beyond what the bounded walk reads the way the
    /// responder does): passed and counted. The XDP program passes it to the daemon, whose
    /// userspace filter judges it with the responder's decoder ([`parse_dhcp`] doc).
    Malformed,
}

impl Verdict {
    pub fn is_drop(self) -> bool {
        matches!(
            self,
            Verdict::DropNotPxe | Verdict::DropRateLimited | Verdict::DropDenied
        )
    }

    /// The counter this verdict increments, `None` for [`Verdict::NotDhcp`]. [`Counter::Seen`]
    /// is incremented for every DHCP packet in addition to this one.
    pub fn counter(self) -> Option<Counter> {
        match self {
            Verdict::NotDhcp => None,
            Verdict::Pass => Some(Counter::Passed),
            Verdict::DropNotPxe => Some(Counter::DroppedNotPxe),
            Verdict::DropRateLimited => Some(Counter::DroppedRate),
            Verdict::DropDenied => Some(Counter::DroppedDenied),
            Verdict::Malformed => Some(Counter::Malformed),
        }
    }
}

/// Index of each per-CPU counter in the `COUNTERS` map (and in the fallback's array).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    Seen = 0,
    Passed = 1,
    DroppedNotPxe = 2,
    DroppedRate = 3,
    DroppedDenied = 4,
    Malformed = 5,
}

pub const COUNTER_COUNT: u32 = 6;
pub const COUNTER_NAMES: [&str; COUNTER_COUNT as usize] = [
    "seen",
    "passed",
    "dropped_not_pxe",
    "dropped_rate",
    "dropped_denied",
    "malformed",
];

/// `Policy::flags`: in proxy mode, drop DHCP that is not from a PXE/HTTP-boot client.
pub const POLICY_DROP_NON_PXE: u32 = 1;
/// `Policy::flags`: only MACs in the allow-list pass.
pub const POLICY_ALLOW_LIST: u32 = 1 << 1;
/// `Policy::flags`: MACs in the deny-list are dropped.
pub const POLICY_DENY_LIST: u32 = 1 << 2;
/// `Policy::flags`: the per-MAC token bucket meters DISCOVER/REQUEST.
pub const POLICY_RATE_LIMIT: u32 = 1 << 3;
/// Largest accepted `rate_per_sec` (keeps the bucket arithmetic in 64 bits).
pub const MAX_RATE_PER_SEC: u32 = 1_000_000;
/// Largest accepted `burst`.
pub const MAX_BURST: u32 = 1_000_000;

/// The policy, element 0 of the `CONFIG` array map. The default passes everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Policy {
    pub flags: u32,
    /// Tokens added per second per MAC (clamped to [`MAX_RATE_PER_SEC`]).
    pub rate_per_sec: u32,
    /// Bucket size (clamped to [`MAX_BURST`]).
    pub burst: u32,
    pub _pad: u32,
}

impl Policy {
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

const NS_PER_TOKEN_UNIT: u64 = 1_000_000_000;
/// Elapsed time is clamped to this before multiplying by the rate (2^40 ns, about 18 minutes;
/// times `MAX_RATE_PER_SEC` < 2^60).
const MAX_ELAPSED_NS: u64 = 1 << 40;

/// One MAC's token bucket, the value of the `BUCKETS` LRU map. Tokens are kept in units of
/// 1e-9 token so the refill is exact integer arithmetic: `elapsed_ns * rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct TokenBucket {
    pub nano_tokens: u64,
    pub last_ns: u64,
}

impl TokenBucket {
    /// A full bucket, as for a MAC seen for the first time.
    pub fn full(now_ns: u64, policy: &Policy) -> Self {
        TokenBucket {
            nano_tokens: capacity(policy),
            last_ns: now_ns,
        }
    }

    /// Refills for the time since `last_ns` and takes one token if there is one. Returns
    /// whether the packet may pass and the new state. A clock that went backwards refills
    /// nothing. A rate or burst of 0 means every metered packet is over the limit.
    pub fn take(self, now_ns: u64, policy: &Policy) -> (bool, TokenBucket) {
        let cap = capacity(policy);
        let rate = clamp(policy.rate_per_sec, MAX_RATE_PER_SEC) as u64;
        let elapsed = now_ns.saturating_sub(self.last_ns).min(MAX_ELAPSED_NS);
        let tokens = (self.nano_tokens.min(cap) + elapsed * rate).min(cap);
        let last_ns = now_ns.max(self.last_ns);
        if tokens >= NS_PER_TOKEN_UNIT {
            (
                true,
                TokenBucket {
                    nano_tokens: tokens - NS_PER_TOKEN_UNIT,
                    last_ns,
                },
            )
        } else {
            (
                false,
                TokenBucket {
                    nano_tokens: tokens,
                    last_ns,
                },
            )
        }
    }
}

#[inline(always)]
fn clamp(v: u32, max: u32) -> u32 {
    v.min(max)
}

#[inline(always)]
fn capacity(policy: &Policy) -> u64 {
    clamp(policy.burst, MAX_BURST) as u64 * NS_PER_TOKEN_UNIT
}

/// The look-ups the decision needs: answered from BPF maps in XDP, from the daemon's tables in
/// the fallback.
pub trait PolicyEnv {
    fn is_allowed(&mut self, mac: &[u8; 6]) -> bool;
    fn is_denied(&mut self, mac: &[u8; 6]) -> bool;
    /// Meters one DISCOVER/REQUEST from `mac` (creating its bucket full when it has none):
    /// normally [`TokenBucket::take`] on the stored bucket.
    fn take_token(&mut self, mac: &[u8; 6], policy: &Policy) -> bool;
}

/// The policy applied to a parsed BOOTREQUEST, in this order: deny-list, allow-list, not a
/// boot client (proxy mode), then the rate limit (DISCOVER/REQUEST only, so a denied or
/// foreign client never costs a bucket).
#[inline(always)]
pub fn decide<E: PolicyEnv>(info: &DhcpInfo, policy: &Policy, env: &mut E) -> Verdict {
    if policy.has(POLICY_DENY_LIST) && env.is_denied(&info.mac) {
        return Verdict::DropDenied;
    }
    if policy.has(POLICY_ALLOW_LIST) && !env.is_allowed(&info.mac) {
        return Verdict::DropDenied;
    }
    if policy.has(POLICY_DROP_NON_PXE) && !info.is_boot_client() {
        return Verdict::DropNotPxe;
    }
    if policy.has(POLICY_RATE_LIMIT) && info.is_metered() && !env.take_token(&info.mac, policy) {
        return Verdict::DropRateLimited;
    }
    Verdict::Pass
}

/// Classifies a whole Ethernet frame (the XDP program's input).
#[inline(always)]
pub fn classify_frame<P: PacketBytes + ?Sized, E: PolicyEnv>(
    frame: &P,
    policy: &Policy,
    env: &mut E,
) -> Verdict {
    match parse_frame(frame) {
        Ok(info) => decide(&info, policy, env),
        Err(ParseError::NotDhcp) => Verdict::NotDhcp,
        Err(ParseError::Malformed) => Verdict::Malformed,
    }
}

/// Classifies a UDP payload (the userspace fallback's input: the socket already checked the
/// IP and UDP headers and the port).
#[inline(always)]
pub fn classify_payload<P: PacketBytes + ?Sized, E: PolicyEnv>(
    payload: &P,
    len: usize,
    policy: &Policy,
    env: &mut E,
) -> Verdict {
    match parse_dhcp(payload, 0, len) {
        Ok(info) => decide(&info, policy, env),
        Err(_) => Verdict::Malformed,
    }
}

/// Ethernet (0..=2 VLAN tags) / IPv4 (with options) / UDP to port 67 or 4011 / BOOTREQUEST.
#[inline(always)]
pub fn parse_frame<P: PacketBytes + ?Sized>(p: &P) -> Result<DhcpInfo, ParseError> {
    let mut off = 12;
    let mut ethertype = be16(p, off).ok_or(ParseError::NotDhcp)?;
    off += 2;
    let mut tags = 0;
    while tags < MAX_VLAN_TAGS && (ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD) {
        ethertype = be16(p, off + 2).ok_or(ParseError::NotDhcp)?;
        off += 4;
        tags += 1;
    }
    if ethertype != ETH_P_IPV4 {
        return Err(ParseError::NotDhcp);
    }
    let ip = off;
    // From here on the frame claims to be IPv4: a short header is not ours to judge until the
    // protocol and port say it is DHCP.
    let vihl = p.byte(ip).ok_or(ParseError::NotDhcp)?;
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return Err(ParseError::NotDhcp);
    }
    let total_len = be16(p, ip + 2).ok_or(ParseError::NotDhcp)? as usize;
    let frag = be16(p, ip + 6).ok_or(ParseError::NotDhcp)?;
    let proto = p.byte(ip + 9).ok_or(ParseError::NotDhcp)?;
    // A fragment (more fragments set, or an offset): reassembly is the kernel's business.
    if proto != IPPROTO_UDP || frag & 0x3fff != 0 {
        return Err(ParseError::NotDhcp);
    }
    let udp = ip + ihl;
    let dport = be16(p, udp + 2).ok_or(ParseError::NotDhcp)?;
    if dport != DHCP_SERVER_PORT && dport != PXE_PORT {
        return Err(ParseError::NotDhcp);
    }
    // DHCP to one of our ports from here on: anything wrong is Malformed.
    if total_len < ihl + 8 {
        return Err(ParseError::Malformed);
    }
    let udp_len = be16(p, udp + 4).ok_or(ParseError::Malformed)? as usize;
    if udp_len < 8 || udp_len > total_len - ihl {
        return Err(ParseError::Malformed);
    }
    let payload = udp + 8;
    // The last byte the IP header claims must be in the frame.
    p.byte(ip + total_len - 1).ok_or(ParseError::Malformed)?;
    parse_dhcp(p, payload, udp_len - 8)
}

/// The DHCP part: a BOOTREQUEST of `len` bytes starting at `base` in `p`. Shared by the frame
/// parser and the userspace fallback (`base` = 0).
#[inline(always)]
pub fn parse_dhcp<P: PacketBytes + ?Sized>(
    p: &P,
    base: usize,
    len: usize,
) -> Result<DhcpInfo, ParseError> {
    let len = len.min(MAX_DHCP_LEN);
    if base > MAX_FRAME_OFF - MAX_DHCP_LEN || len < BOOTP_OPTIONS_OFF {
        return Err(ParseError::Malformed);
    }
    let m = ParseError::Malformed;
    if p.byte(base).ok_or(m)? != BOOTREQUEST {
        return Err(ParseError::Malformed);
    }
    let mut mac = [0u8; 6];
    let mut i = 0;
    while i < 6 {
        mac[i] = p.byte(base + 28 + i).ok_or(m)?;
        i += 1;
    }
    let mut k = 0;
    while k < 4 {
        if p.byte(base + BOOTP_FIXED_LEN + k).ok_or(m)? != DHCP_MAGIC[k] {
            return Err(ParseError::Malformed);
        }
        k += 1;
    }
    // Forgotten (see `forget_path`) so that the walk is verified once, not once per path
    // through the headers before it (VLAN tags, IP header length, payload length).
    let end = p.forget_path(base + len);
    if end > MAX_FRAME_OFF {
        return Err(ParseError::Malformed);
    }
    // The walk only records where the options of interest are (0 = absent: no option's data
    // can start at offset 0); their contents are read after it. Tests on what was found, or
    // reads that may fail, inside the walk would make the verifier tell apart every
    // combination at every step. The responder reads the first occurrence of an option and
    // follows option overload (52) into `file`/`sname`; this walk does neither, so a repeated
    // option of interest or an overload makes the request one it does not judge (`odd`, a
    // bit set of what it has seen, is tested only after the walk).
    let (mut pos53, mut pos60, mut len60, mut pos93, mut pos97) = (0, 0, 0, 0, 0);
    let (mut seen, mut odd) = (0usize, 0usize);
    let mut off = base + BOOTP_OPTIONS_OFF;
    let mut ended = false;
    let mut n = 0;
    while n < MAX_OPTIONS {
        n += 1;
        off = p.forget_path(off);
        if off >= end {
            // The options area ended without END (RFC 2131 requires it): judged as if the
            // walk had reached its bound.
            break;
        }
        let code = p.byte(off).ok_or(m)?;
        if code == opt::END {
            ended = true;
            break;
        }
        if code == opt::PAD {
            off = p.forget_path(off + 1);
            continue;
        }
        let olen = p.byte(off + 1).ok_or(m)? as usize;
        let data = off + 2;
        if data + olen > end {
            return Err(ParseError::Malformed);
        }
        // A length the responder's decoder refuses (53 not 1 byte, 93 not whole 16-bit
        // words, 97 not 17 bytes) makes the request one this walk does not judge either.
        let bit = if code == opt::MESSAGE_TYPE {
            pos53 = p.forget_path(data);
            if olen == 1 { SEEN_53 } else { ODD }
        } else if code == opt::VENDOR_CLASS {
            pos60 = p.forget_path(data);
            len60 = olen;
            SEEN_60
        } else if code == opt::CLIENT_ARCH {
            pos93 = p.forget_path(data);
            if olen >= 2 && olen & 1 == 0 {
                SEEN_93
            } else {
                ODD
            }
        } else if code == opt::CLIENT_UUID {
            pos97 = p.forget_path(data);
            if olen == 17 { SEEN_97 } else { ODD }
        } else if code == opt::OVERLOAD {
            ODD
        } else {
            0
        };
        odd = p.forget_path((odd | (seen & bit) | (bit & ODD)) & SEEN_MASK);
        seen = p.forget_path((seen | bit) & SEEN_MASK);
        off = p.forget_path(data + olen);
    }
    // Every way out of the walk leaves the same kind of state for what follows (otherwise the
    // verifier checks the rest of the program once per distinct exit state).
    let (pos53, pos60, len60) = (
        p.forget_path(pos53),
        p.forget_path(pos60),
        p.forget_path(len60),
    );
    let pos93 = p.forget_path(pos93);
    let pos97 = p.forget_path(pos97);
    let ended = p.forget_path(ended as usize) != 0;
    if p.forget_path(odd) != 0 {
        return Err(ParseError::Malformed);
    }
    let info = DhcpInfo {
        mac,
        msg_type: if pos53 != 0 {
            p.byte(pos53).ok_or(m)?
        } else {
            0
        },
        class: if pos60 != 0 {
            vendor_class(p, pos60, len60).ok_or(m)?
        } else {
            ClientClass::Other
        },
        // The walk checked the lengths of 93 (whole 16-bit words) and 97 (17 bytes).
        arch: if pos93 != 0 {
            Some(be16(p, pos93).ok_or(m)?)
        } else {
            None
        },
        // As the responder reads option 97: a UUID only with type byte 0.
        has_uuid: if pos97 != 0 {
            p.byte(pos97).ok_or(m)? == 0
        } else {
            false
        },
    };
    // No END within the bound or the payload. What was found so far is enough when it
    // identifies a boot client with a message type: the responder reads the first occurrence
    // of each option, which the walk has seen, so options past the bound cannot change the
    // verdict (the vendor class alone may: a request known as a boot client by its
    // architecture and UUID may carry `PXEClient` past the bound, which the policy does not
    // need). Otherwise the packet is not judged, so a truncated or padded-out request is never
    // dropped as "not PXE".
    if ended || (info.msg_type != 0 && info.is_boot_client()) {
        Ok(info)
    } else {
        Err(ParseError::Malformed)
    }
}

/// `seen`/`odd` bits of the option walk: an option of interest seen once, and the walk's
/// reason not to judge (one of them seen twice, or an option overload).
const SEEN_53: usize = 1;
const SEEN_60: usize = 1 << 1;
const SEEN_93: usize = 1 << 2;
const SEEN_97: usize = 1 << 3;
const ODD: usize = 1 << 4;
const SEEN_MASK: usize = 0x1f;

#[inline(always)]
fn vendor_class<P: PacketBytes + ?Sized>(p: &P, data: usize, len: usize) -> Option<ClientClass> {
    if len >= PXE_CLIENT.len() && has_prefix(p, data, PXE_CLIENT)? {
        return Some(ClientClass::Pxe);
    }
    if len >= HTTP_CLIENT.len() && has_prefix(p, data, HTTP_CLIENT)? {
        return Some(ClientClass::Http);
    }
    Some(ClientClass::Other)
}

#[inline(always)]
fn has_prefix<P: PacketBytes + ?Sized>(p: &P, off: usize, prefix: &[u8]) -> Option<bool> {
    let mut i = 0;
    while i < prefix.len() {
        if p.byte(off + i)? != prefix[i] {
            return Some(false);
        }
        i += 1;
    }
    Some(true)
}

#[cfg(test)]
mod tests;
#[cfg(any(test, feature = "vectors"))]
pub mod vectors;

// SAFETY: both are `repr(C)`, made of integers only, without padding: every byte pattern is a
// valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Policy {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for TokenBucket {}
