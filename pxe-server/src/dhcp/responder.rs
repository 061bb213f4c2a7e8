//! The sans-IO DHCP responder: one datagram in, at most one datagram out.
//!
//! [`Responder::handle`] decodes a request ([`pxe_proto::dhcp::decode`]), decides per the config
//! (proxy or full mode, `[[hosts]]`, `[boot]`), commits any lease change to its
//! [`LeaseStore`] *before* it encodes the answer, and says where the answer goes
//! ([`Transmit`], RFC 2131 §4.1): relayed (giaddr) → the relay, port 67; a NAK → broadcast;
//! ciaddr set → unicast to it, port 68; otherwise → broadcast 255.255.255.255:68. Answers on the
//! PXE boot server port 4011 go back to the request's source address and port.
//!
//! Proxy mode (PXE 2.1 ProxyDHCP): only clients whose option 60 starts with `PXEClient` or
//! `HTTPClient` are answered; the OFFER carries no address (yiaddr 0.0.0.0), option 60, the
//! server identifier, siaddr (next-server) and the boot file, and for PXE clients option 43 with
//! sub-option 6 (PXE_DISCOVERY_CONTROL) = 8: "boot the file named in this offer", as dnsmasq
//! does, so firmware goes straight to TFTP. A REQUEST on port 67 is answered only when its
//! server identifier is ours; REQUEST/INFORM on 4011 → ACK with the boot file.
//!
//! Full mode: pools per `[[dhcp.subnets]]` (the pool is the one containing giaddr when relayed,
//! else the local address the request arrived on), leases via the store, reservations from
//! `[[hosts]].address`. The server is authoritative for its subnets: an INIT-REBOOT REQUEST for
//! an address it cannot give is NAKed. Leases are keyed by the client hardware address
//! (chaddr); option 61 is not used.
//!
//! Allocation: replies are built with `dhcproto`'s `Message` (a few small allocations per
//! answer) into the caller's reusable buffer; decoding and dropping allocate nothing.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use dhcproto::v4::{self, DhcpOption, MessageType};
use dhcproto::{Encodable, Encoder};

use super::leases::{Lease, LeaseState, LeaseStore};
use super::metrics::DhcpMetrics;
use super::{DhcpMode, DhcpSettings, Subnet, UnknownHosts};
use crate::hosts::BootProfile;
use pxe_proto::consts::{
    BOOTP_FLAG_BROADCAST, BOOTP_MIN_REPLY_LEN, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, HTTP_CLIENT,
    PXE_CLIENT, PXE_PORT, PXE_VENDOR_OPTIONS, arch,
};
use pxe_proto::dhcp::{self as wire, ClientRequest, DecodeError};

/// Where and how a request arrived (the engine fills this from IP_PKTINFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Source address and port of the datagram.
    pub src: SocketAddrV4,
    /// Our address on the interface it arrived on (`ipi_spec_dst`); 0.0.0.0 if unknown.
    pub local_addr: Ipv4Addr,
    pub ifindex: u32,
    /// The local port: 67, or 4011 (PXE boot server).
    pub port: u16,
}

/// An answer to send; its bytes are in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub dst: SocketAddrV4,
    /// Send to the limited broadcast address (SO_BROADCAST) out of `ifindex`.
    pub broadcast: bool,
    /// The interface the request came in on; the answer leaves through it.
    pub ifindex: u32,
    pub msg_type: MessageType,
    /// Bytes of the answer at the start of the buffer.
    pub len: usize,
}

/// Why no answer was sent. Every value is counted in [`DhcpMetrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoResponse {
    Malformed(DecodeError),
    NotPxe,
    UnknownHost,
    NoBootFile,
    NotForUs,
    UnexpectedType(MessageType),
    NoServerAddress,
    NoSubnet,
    PoolExhausted,
    ReservationConflict,
    StoreError,
    EncodeError,
    /// A DECLINE was recorded (no answer is due).
    Declined,
    /// A RELEASE was recorded (no answer is due).
    Released,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Respond(Transmit),
    NoResponse(NoResponse),
}

/// The boot answer for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BootChoice<'a> {
    file: &'a str,
    /// Option 60 in the answer.
    class: &'static [u8],
    /// Send option 43 (PXE firmware that is not iPXE).
    pxe_options: bool,
}

struct Pool {
    cfg: Subnet,
    /// Offset in the range where the next free-address scan starts.
    next: u32,
}

impl Pool {
    fn size(&self) -> u32 {
        u32::from(self.cfg.range_end) - u32::from(self.cfg.range_start) + 1
    }
    fn in_range(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.cfg.range_start)..=u32::from(self.cfg.range_end)).contains(&u32::from(ip))
    }
}

/// A lease-related answer in full mode.
enum Grant {
    Address { ip: Ipv4Addr, lease_secs: u32 },
    Nak,
}

pub struct Responder<S: LeaseStore> {
    cfg: DhcpSettings,
    pools: Vec<Pool>,
    store: S,
    metrics: Arc<DhcpMetrics>,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn usable(ip: Ipv4Addr) -> bool {
    !ip.is_unspecified() && !ip.is_broadcast()
}

impl<S: LeaseStore> Responder<S> {
    /// A responder for `config` (validated by `Config::parse`) over `store`.
    pub fn new(settings: &DhcpSettings, store: S) -> Self {
        let mut r = Responder {
            cfg: settings.clone(),
            pools: Vec::new(),
            store,
            metrics: Arc::default(),
        };
        r.reconfigure(settings);
        r
    }

    /// Takes a new configuration (a reload): hosts, boot profiles, subnets and answer
    /// settings. Leases stay in the store; a pool whose subnet is unchanged keeps its scan
    /// position. Sockets are not the responder's: `dhcp.mode` is taken as given, so the
    /// caller keeps it as the sockets were opened (see `Config::reload_plan`).
    pub fn reconfigure(&mut self, settings: &DhcpSettings) {
        let pools = settings
            .subnets
            .iter()
            .map(|s| Pool {
                cfg: s.clone(),
                next: self
                    .pools
                    .iter()
                    .find(|p| p.cfg == *s)
                    .map_or(0, |p| p.next),
            })
            .collect();
        self.cfg = settings.clone();
        self.pools = pools;
    }

    pub fn metrics(&self) -> &Arc<DhcpMetrics> {
        &self.metrics
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, for batch control ([`LeaseStore::begin_batch`] / `commit_batch`).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Consumes the responder, returning its store.
    pub fn into_store(self) -> S {
        self.store
    }

    /// Handles one datagram received at wall-clock time `now`. On [`Action::Respond`] the
    /// answer is in `out[..len]` (`out` is cleared first and reused).
    pub fn handle(
        &mut self,
        now: SystemTime,
        bytes: &[u8],
        meta: &RecvMeta,
        out: &mut Vec<u8>,
    ) -> Action {
        DhcpMetrics::inc(&self.metrics.received);
        let action = match wire::decode(bytes) {
            Ok(req) => {
                if req.lease_time_clamped {
                    DhcpMetrics::inc(&self.metrics.lease_time_clamped);
                }
                self.handle_request(unix_secs(now), &req, meta, out)
            }
            Err(e) => Action::NoResponse(NoResponse::Malformed(e)),
        };
        self.count(&action);
        action
    }

    fn count(&self, action: &Action) {
        let m = &*self.metrics;
        let c = match action {
            Action::Respond(t) => match t.msg_type {
                MessageType::Offer => &m.offers,
                MessageType::Nak => &m.naks,
                _ => &m.acks,
            },
            Action::NoResponse(r) => match r {
                NoResponse::Malformed(e) => match e {
                    DecodeError::Truncated(_) => &m.drop_truncated,
                    DecodeError::NotBootRequest(_) => &m.drop_not_bootrequest,
                    DecodeError::UnsupportedHtype(_) => &m.drop_bad_htype,
                    DecodeError::BadHlen(_) => &m.drop_bad_hlen,
                    DecodeError::BadMagic => &m.drop_bad_magic,
                    DecodeError::OptionOverrun { .. } => &m.drop_option_overrun,
                    DecodeError::BadOverload(_) => &m.drop_bad_overload,
                    DecodeError::MissingMessageType => &m.drop_missing_message_type,
                    DecodeError::UnknownMessageType(_) => &m.drop_unknown_message_type,
                    DecodeError::BadOptionLength { .. } => &m.drop_bad_option_length,
                },
                NoResponse::NotPxe => &m.drop_not_pxe,
                NoResponse::UnknownHost => &m.drop_unknown_host,
                NoResponse::NoBootFile => &m.drop_no_boot_file,
                NoResponse::NotForUs => &m.drop_not_for_us,
                NoResponse::UnexpectedType(_) => &m.drop_unexpected_type,
                NoResponse::NoServerAddress => &m.drop_no_server_address,
                NoResponse::NoSubnet => &m.drop_no_subnet,
                NoResponse::PoolExhausted => &m.drop_pool_exhausted,
                NoResponse::ReservationConflict => &m.drop_reservation_conflict,
                NoResponse::StoreError => &m.drop_store_error,
                NoResponse::EncodeError => &m.drop_encode_error,
                NoResponse::Declined => &m.declines,
                NoResponse::Released => &m.releases,
            },
        };
        DhcpMetrics::inc(c);
    }

    fn handle_request(
        &mut self,
        now: u64,
        req: &ClientRequest<'_>,
        meta: &RecvMeta,
        out: &mut Vec<u8>,
    ) -> Action {
        use NoResponse as N;
        let server_ip = match self.cfg.server_ip {
            Some(ip) => ip,
            None if usable(meta.local_addr) => meta.local_addr,
            None => return Action::NoResponse(N::NoServerAddress),
        };
        let host = self.lookup_host(req);
        if host.is_none() && self.cfg.unknown_hosts == UnknownHosts::Ignore {
            return Action::NoResponse(N::UnknownHost);
        }
        if meta.port == PXE_PORT {
            return self.pxe_boot_server(req, meta, host, server_ip, out);
        }
        match self.cfg.mode {
            DhcpMode::Proxy => self.proxy(req, meta, host, server_ip, out),
            DhcpMode::Full => self.full(now, req, meta, host, server_ip, out),
        }
    }

    fn lookup_host(&self, req: &ClientRequest<'_>) -> Option<usize> {
        self.cfg
            .hosts
            .find(Some(&req.chaddr), req.client_uuid.as_ref())
    }

    /// A profile field: the host's, else the default's.
    fn profile_field(
        &self,
        host: Option<usize>,
        f: impl Fn(&BootProfile) -> &Option<String>,
    ) -> Option<&str> {
        host.and_then(|h| f(&self.cfg.hosts.get(h).boot).as_deref())
            .or_else(|| f(&self.cfg.boot).as_deref())
    }

    /// The boot file for this client, by iPXE detection and architecture (option 93).
    fn select_boot(&self, req: &ClientRequest<'_>, host: Option<usize>) -> Option<BootChoice<'_>> {
        if req.is_ipxe()
            && let Some(file) = self.profile_field(host, |p| &p.ipxe_script)
        {
            return Some(BootChoice {
                file,
                class: if req.is_http() {
                    &HTTP_CLIENT[..]
                } else {
                    &PXE_CLIENT[..]
                },
                pxe_options: false,
            });
        }
        let (file, http) = match req.arch() {
            arch::X86_BIOS => (self.profile_field(host, |p| &p.bios), false),
            arch::X86_UEFI => (self.profile_field(host, |p| &p.uefi_ia32), false),
            arch::X64_UEFI | arch::EBC => (self.profile_field(host, |p| &p.uefi_x64), false),
            arch::ARM64_UEFI => (self.profile_field(host, |p| &p.arm64), false),
            arch::X64_UEFI_HTTP => (self.profile_field(host, |p| &p.uefi_http), true),
            _ => (None, false),
        };
        if req.is_http() && !http {
            return None;
        }
        Some(BootChoice {
            file: file?,
            class: if http {
                &HTTP_CLIENT[..]
            } else {
                &PXE_CLIENT[..]
            },
            pxe_options: !http && !req.is_ipxe(),
        })
    }

    fn pxe_boot_server(
        &self,
        req: &ClientRequest<'_>,
        meta: &RecvMeta,
        host: Option<usize>,
        server_ip: Ipv4Addr,
        out: &mut Vec<u8>,
    ) -> Action {
        if !self.cfg.pxe_port_4011 {
            return Action::NoResponse(NoResponse::UnexpectedType(req.msg_type));
        }
        if !matches!(req.msg_type, MessageType::Request | MessageType::Inform) {
            return Action::NoResponse(NoResponse::UnexpectedType(req.msg_type));
        }
        if !req.is_pxe() && !req.is_http() {
            return Action::NoResponse(NoResponse::NotPxe);
        }
        let Some(boot) = self.select_boot(req, host) else {
            return Action::NoResponse(NoResponse::NoBootFile);
        };
        let mut m = self.reply(req, MessageType::Ack, server_ip, Ipv4Addr::UNSPECIFIED);
        self.add_boot(&mut m, req, &boot);
        DhcpMetrics::inc(&self.metrics.pxe_boot_acks);
        emit(&m, out, meta.src, false, meta.ifindex)
    }

    fn proxy(
        &self,
        req: &ClientRequest<'_>,
        meta: &RecvMeta,
        host: Option<usize>,
        server_ip: Ipv4Addr,
        out: &mut Vec<u8>,
    ) -> Action {
        if !req.is_pxe() && !req.is_http() {
            return Action::NoResponse(NoResponse::NotPxe);
        }
        let answer = match req.msg_type {
            MessageType::Discover => MessageType::Offer,
            MessageType::Request if req.server_id == Some(server_ip) => MessageType::Ack,
            MessageType::Request => return Action::NoResponse(NoResponse::NotForUs),
            t => return Action::NoResponse(NoResponse::UnexpectedType(t)),
        };
        let Some(boot) = self.select_boot(req, host) else {
            return Action::NoResponse(NoResponse::NoBootFile);
        };
        let mut m = self.reply(req, answer, server_ip, Ipv4Addr::UNSPECIFIED);
        self.add_boot(&mut m, req, &boot);
        let (dst, bcast) = destination(req, false);
        emit(&m, out, dst, bcast, meta.ifindex)
    }

    fn full(
        &mut self,
        now: u64,
        req: &ClientRequest<'_>,
        meta: &RecvMeta,
        host: Option<usize>,
        server_ip: Ipv4Addr,
        out: &mut Vec<u8>,
    ) -> Action {
        use NoResponse as N;
        // The link: the relay's address, else ours on the arrival interface.
        let link = if usable(req.giaddr) {
            req.giaddr
        } else if usable(meta.local_addr) {
            meta.local_addr
        } else {
            server_ip
        };
        let pool = self.pools.iter().position(|p| p.cfg.subnet.contains(link));
        match req.msg_type {
            MessageType::Discover => {
                let Some(pi) = pool else {
                    return Action::NoResponse(N::NoSubnet);
                };
                let ip = match self.allocate(pi, req, host, server_ip, now) {
                    Ok(ip) => ip,
                    Err(r) => return Action::NoResponse(r),
                };
                let held = self.store.get(ip).is_some_and(|l| {
                    l.mac == req.chaddr && l.state == LeaseState::Bound && l.is_active(now)
                });
                if !held {
                    let offer = Lease {
                        ip,
                        mac: req.chaddr,
                        uuid: req.client_uuid,
                        expires: now + u64::from(self.cfg.offer_hold_secs),
                        state: LeaseState::Offered,
                    };
                    if let Err(e) = self.store.put(&offer) {
                        tracing::warn!(%e, "lease store: offer not recorded");
                        return Action::NoResponse(N::StoreError);
                    }
                }
                let secs = self.lease_secs(pi, req);
                self.full_answer(
                    req,
                    meta,
                    host,
                    server_ip,
                    pi,
                    Grant::Address {
                        ip,
                        lease_secs: secs,
                    },
                    out,
                )
            }
            MessageType::Request => {
                let ip = match (req.server_id, req.requested_ip) {
                    (Some(sid), _) if sid != server_ip => {
                        return Action::NoResponse(N::NotForUs);
                    }
                    (Some(_), Some(ip)) => ip, // SELECTING
                    (None, Some(ip)) => ip,    // INIT-REBOOT
                    (None, None) if usable(req.ciaddr) => req.ciaddr, // RENEWING / REBINDING
                    _ => Ipv4Addr::UNSPECIFIED,
                };
                let Some(pi) = pool.or_else(|| {
                    // A unicast renewal may reach us through any interface.
                    self.pools.iter().position(|p| p.cfg.subnet.contains(ip))
                }) else {
                    return Action::NoResponse(N::NoSubnet);
                };
                if !self.valid_for(pi, ip, req, host, server_ip, now) {
                    return self.full_answer(req, meta, host, server_ip, pi, Grant::Nak, out);
                }
                let secs = self.lease_secs(pi, req);
                let bound = Lease {
                    ip,
                    mac: req.chaddr,
                    uuid: req.client_uuid,
                    expires: now + u64::from(secs),
                    state: LeaseState::Bound,
                };
                if let Err(e) = self.store.put(&bound) {
                    tracing::warn!(%e, "lease store: bind not committed, no ACK");
                    return Action::NoResponse(N::StoreError);
                }
                self.full_answer(
                    req,
                    meta,
                    host,
                    server_ip,
                    pi,
                    Grant::Address {
                        ip,
                        lease_secs: secs,
                    },
                    out,
                )
            }
            MessageType::Decline | MessageType::Release => {
                let (ip, state, expires, done) = if req.msg_type == MessageType::Decline {
                    let ip = req.requested_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
                    (
                        ip,
                        LeaseState::Declined,
                        now + u64::from(self.cfg.decline_hold_secs),
                        N::Declined,
                    )
                } else {
                    (req.ciaddr, LeaseState::Released, now, N::Released)
                };
                if req.server_id != Some(server_ip) {
                    return Action::NoResponse(N::NotForUs);
                }
                let Some(l) = self.store.get(ip).filter(|l| l.mac == req.chaddr) else {
                    return Action::NoResponse(N::NotForUs);
                };
                if let Err(e) = self.store.put(&Lease {
                    state,
                    expires,
                    ..l
                }) {
                    tracing::warn!(%e, "lease store: decline/release not recorded");
                    return Action::NoResponse(N::StoreError);
                }
                Action::NoResponse(done)
            }
            MessageType::Inform => {
                let pi = self
                    .pools
                    .iter()
                    .position(|p| p.cfg.subnet.contains(req.ciaddr))
                    .or(pool);
                let Some(pi) = pi else {
                    return Action::NoResponse(N::NoSubnet);
                };
                DhcpMetrics::inc(&self.metrics.inform_acks);
                self.full_answer(
                    req,
                    meta,
                    host,
                    server_ip,
                    pi,
                    Grant::Address {
                        ip: Ipv4Addr::UNSPECIFIED,
                        lease_secs: 0,
                    },
                    out,
                )
            }
            t => Action::NoResponse(N::UnexpectedType(t)),
        }
    }

    fn lease_secs(&self, pi: usize, req: &ClientRequest<'_>) -> u32 {
        let default = self.pools[pi]
            .cfg
            .lease_time_secs
            .unwrap_or(self.cfg.lease_time_secs);
        req.lease_time
            .unwrap_or(default)
            .clamp(60, self.cfg.max_lease_time_secs.max(default))
    }

    /// `ip` may be held by this client: in the pool's range (or its reservation), reserved for
    /// no other host, not our own address, and not leased to another client.
    fn usable_by(
        &self,
        pi: usize,
        ip: Ipv4Addr,
        req: &ClientRequest<'_>,
        host: Option<usize>,
        server_ip: Ipv4Addr,
        now: u64,
    ) -> bool {
        let pool = &self.pools[pi];
        if ip == server_ip || Some(ip) == pool.cfg.router {
            return false;
        }
        match self.cfg.hosts.reserved(ip) {
            Some(h) if Some(h) != host => return false,
            Some(_) => {}
            None if !pool.in_range(ip) => return false,
            None => {}
        }
        match self.store.get(ip) {
            None => true,
            Some(l) if !l.is_active(now) => true,
            Some(l) => l.mac == req.chaddr && l.state != LeaseState::Declined,
        }
    }

    fn valid_for(
        &self,
        pi: usize,
        ip: Ipv4Addr,
        req: &ClientRequest<'_>,
        host: Option<usize>,
        server_ip: Ipv4Addr,
        now: u64,
    ) -> bool {
        if !self.pools[pi].cfg.subnet.contains(ip) {
            return false;
        }
        // A host with a fixed address gets only that one.
        if let Some(a) = host.and_then(|h| self.cfg.hosts.get(h).address)
            && a != ip
        {
            return false;
        }
        self.usable_by(pi, ip, req, host, server_ip, now)
    }

    /// The address to offer: the reservation, else the client's last lease, else the one it
    /// asks for, else the next free one.
    fn allocate(
        &mut self,
        pi: usize,
        req: &ClientRequest<'_>,
        host: Option<usize>,
        server_ip: Ipv4Addr,
        now: u64,
    ) -> Result<Ipv4Addr, NoResponse> {
        if let Some(a) = host.and_then(|h| self.cfg.hosts.get(h).address) {
            return if self.valid_for(pi, a, req, host, server_ip, now) {
                Ok(a)
            } else {
                Err(NoResponse::ReservationConflict)
            };
        }
        let ok = |ip: Ipv4Addr| {
            self.pools[pi].in_range(ip) && self.usable_by(pi, ip, req, host, server_ip, now)
        };
        if let Some(ip) = self.store.ip_of(&req.chaddr).filter(|&ip| ok(ip)) {
            return Ok(ip);
        }
        if let Some(ip) = req.requested_ip.filter(|&ip| ok(ip)) {
            return Ok(ip);
        }
        let pool = &self.pools[pi];
        let (start, size, next) = (u32::from(pool.cfg.range_start), pool.size(), pool.next);
        for k in 0..size {
            let off = (next + k) % size;
            let ip = Ipv4Addr::from(start + off);
            if ok(ip) {
                self.pools[pi].next = (off + 1) % size;
                return Ok(ip);
            }
        }
        Err(NoResponse::PoolExhausted)
    }

    #[allow(clippy::too_many_arguments)]
    fn full_answer(
        &self,
        req: &ClientRequest<'_>,
        meta: &RecvMeta,
        host: Option<usize>,
        server_ip: Ipv4Addr,
        pi: usize,
        grant: Grant,
        out: &mut Vec<u8>,
    ) -> Action {
        let pool = &self.pools[pi].cfg;
        let (ip, secs) = match grant {
            Grant::Nak => {
                let mut m = self.reply(req, MessageType::Nak, server_ip, Ipv4Addr::UNSPECIFIED);
                m.set_siaddr(Ipv4Addr::UNSPECIFIED);
                if usable(req.giaddr) {
                    // The relay must broadcast it on the client's segment.
                    m.set_flags(v4::Flags::new(req.flags | BOOTP_FLAG_BROADCAST));
                }
                m.opts_mut().insert(DhcpOption::Message(
                    "requested address not available".into(),
                ));
                let (dst, bcast) = destination(req, true);
                return emit(&m, out, dst, bcast, meta.ifindex);
            }
            Grant::Address { ip, lease_secs } => (ip, lease_secs),
        };
        let msg_type = match req.msg_type {
            MessageType::Discover => MessageType::Offer,
            _ => MessageType::Ack,
        };
        let mut m = self.reply(req, msg_type, server_ip, ip);
        let o = m.opts_mut();
        o.insert(DhcpOption::SubnetMask(pool.subnet.netmask()));
        if let Some(r) = pool.router {
            o.insert(DhcpOption::Router(vec![r]));
        }
        if !pool.dns.is_empty() {
            o.insert(DhcpOption::DomainNameServer(pool.dns.clone()));
        }
        if let Some(d) = &pool.domain {
            o.insert(DhcpOption::DomainName(d.clone()));
        }
        if let Some(n) = host.and_then(|h| self.cfg.hosts.get(h).hostname.as_ref()) {
            o.insert(DhcpOption::Hostname(n.clone()));
        }
        if req.msg_type != MessageType::Inform {
            o.insert(DhcpOption::AddressLeaseTime(secs));
            o.insert(DhcpOption::Renewal(secs / 2));
            o.insert(DhcpOption::Rebinding((u64::from(secs) * 7 / 8) as u32));
        }
        if (req.is_pxe() || req.is_http())
            && let Some(boot) = self.select_boot(req, host)
        {
            self.add_boot(&mut m, req, &boot);
        }
        let (dst, bcast) = destination(req, false);
        emit(&m, out, dst, bcast, meta.ifindex)
    }

    /// A BOOTREPLY to `req` with option 53 and 54.
    fn reply(
        &self,
        req: &ClientRequest<'_>,
        t: MessageType,
        server_ip: Ipv4Addr,
        yiaddr: Ipv4Addr,
    ) -> v4::Message {
        let ciaddr = if matches!(t, MessageType::Ack) {
            req.ciaddr
        } else {
            Ipv4Addr::UNSPECIFIED
        };
        let mut m = v4::Message::new_with_id(
            req.xid,
            ciaddr,
            yiaddr,
            self.cfg.next_server.unwrap_or(server_ip),
            req.giaddr,
            &req.chaddr.0,
        );
        m.set_opcode(v4::Opcode::BootReply)
            .set_flags(v4::Flags::new(req.flags & BOOTP_FLAG_BROADCAST));
        m.opts_mut().insert(DhcpOption::MessageType(t));
        m.opts_mut().insert(DhcpOption::ServerIdentifier(server_ip));
        m
    }

    fn add_boot(&self, m: &mut v4::Message, req: &ClientRequest<'_>, boot: &BootChoice<'_>) {
        let file = boot.file.as_bytes();
        if file.len() < 128 {
            m.set_fname(file);
        }
        let o = m.opts_mut();
        if file.len() >= 128 || boot.class == &HTTP_CLIENT[..] {
            o.insert(DhcpOption::BootfileName(file.to_vec()));
        }
        o.insert(DhcpOption::ClassIdentifier(boot.class.to_vec()));
        if boot.pxe_options {
            o.insert(DhcpOption::VendorExtensions(PXE_VENDOR_OPTIONS.to_vec()));
        }
        // PXE: the server returns the client's UUID (option 97) unchanged.
        if let Some(u) = req.client_uuid {
            let mut v = Vec::with_capacity(17);
            v.push(0);
            v.extend_from_slice(&u.to_wire());
            o.insert(DhcpOption::ClientMachineIdentifier(v));
        }
    }
}

/// RFC 2131 §4.1: where a port-67 answer goes, and whether it is a broadcast.
fn destination(req: &ClientRequest<'_>, nak: bool) -> (SocketAddrV4, bool) {
    if usable(req.giaddr) {
        (SocketAddrV4::new(req.giaddr, DHCP_SERVER_PORT), false)
    } else if !nak && usable(req.ciaddr) {
        (SocketAddrV4::new(req.ciaddr, DHCP_CLIENT_PORT), false)
    } else {
        (
            SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_CLIENT_PORT),
            true,
        )
    }
}

fn emit(
    m: &v4::Message,
    out: &mut Vec<u8>,
    dst: SocketAddrV4,
    broadcast: bool,
    ifindex: u32,
) -> Action {
    out.clear();
    if m.encode(&mut Encoder::new(out)).is_err() {
        return Action::NoResponse(NoResponse::EncodeError);
    }
    if out.len() < BOOTP_MIN_REPLY_LEN {
        out.resize(BOOTP_MIN_REPLY_LEN, 0);
    }
    Action::Respond(Transmit {
        dst,
        broadcast,
        ifindex,
        msg_type: m.opts().msg_type().unwrap_or(MessageType::Ack),
        len: out.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::leases::{MemoryLeaseStore, RedbLeaseStore};
    use dhcproto::{Decodable, Decoder};
    use pxe_proto::ClientUuid;
    use std::path::Path;
    use std::time::Duration;

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const BIOS_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const UUID: &str = "00112233-4455-6677-8899-aabbccddeeff";

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    /// The DHCP settings of a config file with the default boot files and `extra`.
    fn config(extra: &str) -> DhcpSettings {
        let dir = std::env::temp_dir();
        let text = format!(
            "[tftp]\nroot = \"{}\"\n[boot]\nbios = \"undionly.kpxe\"\nuefi_x64 = \"snponly.efi\"\n\
             arm64 = \"ipxe-arm64.efi\"\nuefi_http = \"http://10.0.0.1/ipxe.efi\"\n\
             ipxe_script = \"http://10.0.0.1/boot.ipxe\"\n{extra}",
            dir.display()
        );
        let c = crate::config::Config::parse(&text, Path::new("t.toml")).unwrap();
        c.dhcp_settings(&c.host_index())
    }

    const FULL: &str = "[dhcp]\nenabled = true\nmode = \"full\"\nlease_time_secs = 3600\n\
        [[dhcp.subnets]]\nsubnet = \"10.0.0.0/24\"\nrange_start = \"10.0.0.100\"\nrange_end = \"10.0.0.199\"\n\
        router = \"10.0.0.1\"\ndns = [\"10.0.0.2\", \"10.0.0.3\"]\n\
        [[dhcp.subnets]]\nsubnet = \"10.1.0.0/24\"\nrange_start = \"10.1.0.10\"\nrange_end = \"10.1.0.12\"\n\
        router = \"10.1.0.1\"\n";

    fn meta() -> RecvMeta {
        RecvMeta {
            src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
            local_addr: SERVER,
            ifindex: 3,
            port: 67,
        }
    }

    /// A client message built with dhcproto's encoder.
    struct Pkt {
        m: v4::Message,
    }

    impl Pkt {
        fn new(t: MessageType, mac: [u8; 6]) -> Self {
            let mut m = v4::Message::new_with_id(
                0x1234_5678,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                &mac,
            );
            m.opts_mut().insert(DhcpOption::MessageType(t));
            Pkt { m }
        }
        fn opt(mut self, o: DhcpOption) -> Self {
            self.m.opts_mut().insert(o);
            self
        }
        fn broadcast(mut self) -> Self {
            self.m.set_flags(v4::Flags::default().set_broadcast());
            self
        }
        fn ciaddr(mut self, ip: Ipv4Addr) -> Self {
            self.m.set_ciaddr(ip);
            self
        }
        fn giaddr(mut self, ip: Ipv4Addr) -> Self {
            self.m.set_giaddr(ip);
            self
        }
        fn pxe(self, arch: u16, class: &str) -> Self {
            self.opt(DhcpOption::ClassIdentifier(class.as_bytes().to_vec()))
                .opt(DhcpOption::ClientSystemArchitecture(arch.into()))
                .opt(DhcpOption::ClientNetworkInterface(1, 3, 16))
        }
        fn uuid(self, u: &str) -> Self {
            let mut v = vec![0];
            v.extend_from_slice(&u.parse::<ClientUuid>().unwrap().to_wire());
            self.opt(DhcpOption::ClientMachineIdentifier(v))
        }
        fn bytes(&self) -> Vec<u8> {
            let mut v = Vec::new();
            self.m.encode(&mut Encoder::new(&mut v)).unwrap();
            v
        }
    }

    fn bios_discover() -> Pkt {
        Pkt::new(MessageType::Discover, BIOS_MAC)
            .broadcast()
            .pxe(0, "PXEClient:Arch:00000:UNDI:002001")
            .uuid(UUID)
    }

    fn run<S: LeaseStore>(
        r: &mut Responder<S>,
        p: &[u8],
        meta: &RecvMeta,
    ) -> (Action, Option<v4::Message>) {
        let mut out = Vec::new();
        let a = r.handle(t0(), p, meta, &mut out);
        let m = match a {
            Action::Respond(t) => {
                assert_eq!(t.len, out.len());
                assert!(out.len() >= 300);
                let m = v4::Message::decode(&mut Decoder::new(&out)).unwrap();
                assert_eq!(m.opts().msg_type(), Some(t.msg_type));
                assert_eq!(t.ifindex, meta.ifindex);
                Some(m)
            }
            Action::NoResponse(_) => None,
        };
        (a, m)
    }

    fn transmit(a: Action) -> Transmit {
        match a {
            Action::Respond(t) => t,
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn opt(m: &v4::Message, c: v4::OptionCode) -> Option<&DhcpOption> {
        m.opts().get(c)
    }

    /// dhcproto's decoder keeps the NUL that ends the file field.
    fn trim_nul(b: &[u8]) -> &[u8] {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        &b[..end]
    }

    fn bcast68() -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
    }

    #[test]
    fn proxy_bios_pxe_discover_gets_an_offer_without_address() {
        let mut r = Responder::new(&config(""), MemoryLeaseStore::new());
        let (a, m) = run(&mut r, &bios_discover().bytes(), &meta());
        let t = transmit(a);
        assert_eq!(
            (t.dst, t.broadcast, t.msg_type),
            (bcast68(), true, MessageType::Offer)
        );
        let m = m.unwrap();
        assert_eq!(m.opcode(), v4::Opcode::BootReply);
        assert_eq!(m.xid(), 0x1234_5678);
        assert_eq!(m.chaddr(), &BIOS_MAC);
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(m.siaddr(), SERVER);
        assert!(m.flags().broadcast());
        assert_eq!(m.fname().map(trim_nul), Some(&b"undionly.kpxe"[..]));
        assert_eq!(
            opt(&m, v4::OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER))
        );
        assert_eq!(
            opt(&m, v4::OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
        );
        assert_eq!(
            opt(&m, v4::OptionCode::VendorExtensions),
            Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
        );
        // The UUID comes back as sent.
        let mut uuid = vec![0];
        uuid.extend_from_slice(&UUID.parse::<ClientUuid>().unwrap().to_wire());
        assert_eq!(
            opt(&m, v4::OptionCode::ClientMachineIdentifier),
            Some(&DhcpOption::ClientMachineIdentifier(uuid))
        );
        for c in [
            v4::OptionCode::AddressLeaseTime,
            v4::OptionCode::SubnetMask,
            v4::OptionCode::Router,
        ] {
            assert!(opt(&m, c).is_none(), "{c:?}");
        }
        assert!(r.store().is_empty(), "proxy mode never leases");
        assert_eq!(r.metrics().snapshot().offers, 1);
    }

    #[test]
    fn proxy_hand_written_raw_discover() {
        let mut r = Responder::new(&config(""), MemoryLeaseStore::new());
        let raw = pxe_proto::vectors::raw_bios_discover();
        let (a, m) = run(&mut r, &raw, &meta());
        assert_eq!(transmit(a).dst, bcast68());
        let m = m.unwrap();
        assert_eq!(m.xid(), 0xdeadbeef);
        assert_eq!(m.fname().map(trim_nul), Some(&b"undionly.kpxe"[..]));
        // The raw bytes of the header we emit.
        let mut out = Vec::new();
        r.handle(t0(), &raw, &meta(), &mut out);
        assert_eq!(&out[..4], &[2, 1, 6, 0]);
        assert_eq!(&out[4..8], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&out[16..20], &[0, 0, 0, 0]); // yiaddr
        assert_eq!(&out[20..24], &[10, 0, 0, 1]); // siaddr
        assert_eq!(&out[236..240], &v4::MAGIC);
    }

    #[test]
    fn proxy_ovmf_offer_then_boot_server_ack_on_4011() {
        let mut r = Responder::new(&config(""), MemoryLeaseStore::new());
        let d = Pkt::new(MessageType::Discover, [2, 0, 0, 0, 0, 7])
            .pxe(7, "PXEClient:Arch:00007:UNDI:003016");
        let (a, m) = run(&mut r, &d.bytes(), &meta());
        // No broadcast flag and no ciaddr: still broadcast (no address yet).
        assert_eq!(transmit(a).dst, bcast68());
        assert_eq!(m.unwrap().fname().map(trim_nul), Some(&b"snponly.efi"[..]));
        let client = Ipv4Addr::new(10, 0, 0, 150);
        let q = Pkt::new(MessageType::Request, [2, 0, 0, 0, 0, 7])
            .pxe(7, "PXEClient:Arch:00007:UNDI:003016")
            .ciaddr(client);
        let m4011 = RecvMeta {
            src: SocketAddrV4::new(client, 4011),
            port: 4011,
            ..meta()
        };
        let (a, m) = run(&mut r, &q.bytes(), &m4011);
        let t = transmit(a);
        assert_eq!(
            (t.dst, t.broadcast, t.msg_type),
            (SocketAddrV4::new(client, 4011), false, MessageType::Ack)
        );
        let m = m.unwrap();
        assert_eq!(
            (m.ciaddr(), m.yiaddr(), m.siaddr()),
            (client, Ipv4Addr::UNSPECIFIED, SERVER)
        );
        assert_eq!(m.fname().map(trim_nul), Some(&b"snponly.efi"[..]));
        assert_eq!(r.metrics().snapshot().pxe_boot_acks, 1);
        // A DISCOVER on 4011 is not a boot server request.
        let (a, _) = run(&mut r, &d.bytes(), &m4011);
        assert_eq!(
            a,
            Action::NoResponse(NoResponse::UnexpectedType(MessageType::Discover))
        );
    }

    #[test]
    fn proxy_ipxe_gets_the_script_and_never_loops() {
        let mut r = Responder::new(&config(""), MemoryLeaseStore::new());
        let d = Pkt::new(MessageType::Discover, BIOS_MAC)
            .pxe(0, "PXEClient:Arch:00000:UNDI:002001")
            .opt(DhcpOption::UserClass(b"iPXE".to_vec()))
            .opt(DhcpOption::Unknown(v4::UnknownOption::new(
                175.into(),
                vec![19, 1, 1],
            )));
        let (_, m) = run(&mut r, &d.bytes(), &meta());
        let m = m.unwrap();
        assert_eq!(
            m.fname().map(trim_nul),
            Some(&b"http://10.0.0.1/boot.ipxe"[..])
        );
        assert!(opt(&m, v4::OptionCode::VendorExtensions).is_none());
        // Option 175 alone is enough.
        let d = Pkt::new(MessageType::Discover, BIOS_MAC)
            .pxe(7, "PXEClient:Arch:00007:UNDI:003016")
            .opt(DhcpOption::Unknown(v4::UnknownOption::new(
                175.into(),
                vec![19, 1, 1],
            )));
        let (_, m) = run(&mut r, &d.bytes(), &meta());
        assert_eq!(
            m.unwrap().fname().map(trim_nul),
            Some(&b"http://10.0.0.1/boot.ipxe"[..])
        );
    }

    #[test]
    fn proxy_http_boot_and_arm64_and_unknown_arch() {
        let mut r = Responder::new(&config(""), MemoryLeaseStore::new());
        let d =
            Pkt::new(MessageType::Discover, BIOS_MAC).pxe(16, "HTTPClient:Arch:00016:UNDI:003001");
        let (_, m) = run(&mut r, &d.bytes(), &meta());
        let m = m.unwrap();
        assert_eq!(
            opt(&m, v4::OptionCode::ClassIdentifier),
            Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
        );
        assert_eq!(
            m.fname().map(trim_nul),
            Some(&b"http://10.0.0.1/ipxe.efi"[..])
        );
        assert_eq!(
            opt(&m, v4::OptionCode::BootfileName),
            Some(&DhcpOption::BootfileName(
                b"http://10.0.0.1/ipxe.efi".to_vec()
            ))
        );
        assert!(opt(&m, v4::OptionCode::VendorExtensions).is_none());
        let d =
            Pkt::new(MessageType::Discover, BIOS_MAC).pxe(11, "PXEClient:Arch:00011:UNDI:003001");
        assert_eq!(
            run(&mut r, &d.bytes(), &meta())
                .1
                .unwrap()
                .fname()
                .map(trim_nul),
            Some(&b"ipxe-arm64.efi"[..])
        );
        // IA32 has no file configured: no answer, counted.
        let d =
            Pkt::new(MessageType::Discover, BIOS_MAC).pxe(6, "PXEClient:Arch:00006:UNDI:003001");
        assert_eq!(
            run(&mut r, &d.bytes(), &meta()).0,
            Action::NoResponse(NoResponse::NoBootFile)
        );
        assert_eq!(r.metrics().snapshot().drop_no_boot_file, 1);
    }

    #[test]
    fn proxy_ignores_plain_clients_and_requests_for_others() {
        let mut r = Responder::new(&config(""), MemoryLeaseStore::new());
        let plain = Pkt::new(MessageType::Discover, [2, 0, 0, 0, 0, 9])
            .opt(DhcpOption::ParameterRequestList(vec![
                v4::OptionCode::SubnetMask,
            ]))
            .opt(DhcpOption::Hostname("dhclient-box".into()));
        assert_eq!(
            run(&mut r, &plain.bytes(), &meta()).0,
            Action::NoResponse(NoResponse::NotPxe)
        );
        let other = Pkt::new(MessageType::Request, BIOS_MAC)
            .pxe(0, "PXEClient:Arch:00000:UNDI:002001")
            .opt(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 254)))
            .opt(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 50)));
        assert_eq!(
            run(&mut r, &other.bytes(), &meta()).0,
            Action::NoResponse(NoResponse::NotForUs)
        );
        let ours = Pkt::new(MessageType::Request, BIOS_MAC)
            .broadcast()
            .pxe(0, "PXEClient:Arch:00000:UNDI:002001")
            .opt(DhcpOption::ServerIdentifier(SERVER));
        let (a, m) = run(&mut r, &ours.bytes(), &meta());
        assert_eq!(transmit(a).msg_type, MessageType::Ack);
        assert_eq!(m.unwrap().yiaddr(), Ipv4Addr::UNSPECIFIED);
        let s = r.metrics().snapshot();
        assert_eq!(
            (s.drop_not_pxe, s.drop_not_for_us, s.acks, s.received),
            (1, 1, 1, 3)
        );
        // No local address and no server_ip: nothing to put in option 54.
        let m0 = RecvMeta {
            local_addr: Ipv4Addr::UNSPECIFIED,
            ..meta()
        };
        assert_eq!(
            run(&mut r, &bios_discover().bytes(), &m0).0,
            Action::NoResponse(NoResponse::NoServerAddress)
        );
    }

    #[test]
    fn hosts_by_mac_and_uuid_and_unknown_policy() {
        let extra = format!(
            "[dhcp]\nunknown_hosts = \"ignore\"\nserver_ip = \"10.0.0.5\"\nnext_server = \"10.0.0.6\"\n\
             [[hosts]]\nmac = \"52:54:00:12:34:56\"\nhostname = \"n1\"\nboot = {{ bios = \"special.kpxe\" }}\n\
             [[hosts]]\nuuid = \"{UUID}\"\nboot = {{ uefi_x64 = \"by-uuid.efi\" }}\n"
        );
        let mut r = Responder::new(&config(&extra), MemoryLeaseStore::new());
        let (_, m) = run(&mut r, &bios_discover().bytes(), &meta());
        let m = m.unwrap();
        assert_eq!(m.fname().map(trim_nul), Some(&b"special.kpxe"[..]));
        assert_eq!(m.siaddr(), Ipv4Addr::new(10, 0, 0, 6));
        assert_eq!(
            opt(&m, v4::OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 5)))
        );
        // Another MAC, matched by UUID; fields it does not override come from [boot].
        let d = Pkt::new(MessageType::Discover, [2, 0, 0, 0, 0, 1])
            .pxe(7, "PXEClient")
            .uuid(UUID);
        assert_eq!(
            run(&mut r, &d.bytes(), &meta())
                .1
                .unwrap()
                .fname()
                .map(trim_nul),
            Some(&b"by-uuid.efi"[..])
        );
        let d = Pkt::new(MessageType::Discover, [2, 0, 0, 0, 0, 1])
            .pxe(0, "PXEClient")
            .uuid(UUID);
        assert_eq!(
            run(&mut r, &d.bytes(), &meta())
                .1
                .unwrap()
                .fname()
                .map(trim_nul),
            Some(&b"undionly.kpxe"[..])
        );
        // Unknown: ignored.
        let d = Pkt::new(MessageType::Discover, [2, 0, 0, 0, 0, 2]).pxe(0, "PXEClient");
        assert_eq!(
            run(&mut r, &d.bytes(), &meta()).0,
            Action::NoResponse(NoResponse::UnknownHost)
        );
        assert_eq!(r.metrics().snapshot().drop_unknown_host, 1);
    }

    #[test]
    fn reconfigure_takes_new_hosts_and_boot_files() {
        let fname = |r: &mut Responder<MemoryLeaseStore>| {
            run(r, &bios_discover().bytes(), &meta())
                .1
                .and_then(|m| m.fname().map(|f| trim_nul(f).to_vec()))
        };
        let mut r = Responder::new(&config(""), MemoryLeaseStore::new());
        assert_eq!(fname(&mut r).as_deref(), Some(&b"undionly.kpxe"[..]));
        // Reload: the host gets its own file, then becomes unknown and is ignored.
        let host = "[[hosts]]\nmac = \"52:54:00:12:34:56\"\nboot = { bios = \"special.kpxe\" }\n";
        r.reconfigure(&config(host));
        assert_eq!(fname(&mut r).as_deref(), Some(&b"special.kpxe"[..]));
        r.reconfigure(&config("[dhcp]\nunknown_hosts = \"ignore\"\n"));
        assert_eq!(fname(&mut r), None);
        assert_eq!(r.metrics().snapshot().drop_unknown_host, 1);
    }

    fn dora<S: LeaseStore>(r: &mut Responder<S>, mac: [u8; 6], meta: &RecvMeta) -> Ipv4Addr {
        let (a, m) = run(r, &Pkt::new(MessageType::Discover, mac).bytes(), meta);
        transmit(a);
        let ip = m.unwrap().yiaddr();
        let q = Pkt::new(MessageType::Request, mac)
            .opt(DhcpOption::ServerIdentifier(SERVER))
            .opt(DhcpOption::RequestedIpAddress(ip));
        let (a, m) = run(r, &q.bytes(), meta);
        assert_eq!(transmit(a).msg_type, MessageType::Ack);
        assert_eq!(m.unwrap().yiaddr(), ip);
        ip
    }

    #[test]
    fn full_mode_dora_with_every_option() {
        let mut r = Responder::new(&config(FULL), MemoryLeaseStore::new());
        let mac = [2, 0, 0, 0, 0, 0x42];
        let d = Pkt::new(MessageType::Discover, mac)
            .broadcast()
            .opt(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 150)));
        let (a, m) = run(&mut r, &d.bytes(), &meta());
        let t = transmit(a);
        assert_eq!(
            (t.dst, t.broadcast, t.msg_type),
            (bcast68(), true, MessageType::Offer)
        );
        let m = m.unwrap();
        let ip = Ipv4Addr::new(10, 0, 0, 150);
        assert_eq!(m.yiaddr(), ip, "the requested address is free: offered");
        let check = |m: &v4::Message| {
            assert_eq!(m.opcode(), v4::Opcode::BootReply);
            assert_eq!(
                opt(m, v4::OptionCode::SubnetMask),
                Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
            );
            assert_eq!(
                opt(m, v4::OptionCode::Router),
                Some(&DhcpOption::Router(vec![SERVER]))
            );
            assert_eq!(
                opt(m, v4::OptionCode::DomainNameServer),
                Some(&DhcpOption::DomainNameServer(vec![
                    Ipv4Addr::new(10, 0, 0, 2),
                    Ipv4Addr::new(10, 0, 0, 3)
                ]))
            );
            assert_eq!(
                opt(m, v4::OptionCode::AddressLeaseTime),
                Some(&DhcpOption::AddressLeaseTime(3600))
            );
            assert_eq!(
                opt(m, v4::OptionCode::Renewal),
                Some(&DhcpOption::Renewal(1800))
            );
            assert_eq!(
                opt(m, v4::OptionCode::Rebinding),
                Some(&DhcpOption::Rebinding(3150))
            );
            assert_eq!(
                opt(m, v4::OptionCode::ServerIdentifier),
                Some(&DhcpOption::ServerIdentifier(SERVER))
            );
            // A plain client gets no boot information.
            assert!(opt(m, v4::OptionCode::ClassIdentifier).is_none());
            assert!(m.fname().map(trim_nul).is_none());
        };
        check(&m);
        assert_eq!(r.store().get(ip).unwrap().state, LeaseState::Offered);
        let q = Pkt::new(MessageType::Request, mac)
            .broadcast()
            .opt(DhcpOption::ServerIdentifier(SERVER))
            .opt(DhcpOption::RequestedIpAddress(ip));
        let (a, m) = run(&mut r, &q.bytes(), &meta());
        assert_eq!(transmit(a).dst, bcast68());
        let m = m.unwrap();
        assert_eq!(m.yiaddr(), ip);
        check(&m);
        let l = r.store().get(ip).unwrap();
        assert_eq!(
            (l.state, l.mac.0, l.expires),
            (LeaseState::Bound, mac, unix_secs(t0()) + 3600)
        );
        // Renewing: unicast to ciaddr; a longer lease asked for is capped at max_lease_time.
        let renew = Pkt::new(MessageType::Request, mac)
            .ciaddr(ip)
            .opt(DhcpOption::AddressLeaseTime(10_000_000));
        let (a, m) = run(&mut r, &renew.bytes(), &meta());
        let t = transmit(a);
        assert_eq!((t.dst, t.broadcast), (SocketAddrV4::new(ip, 68), false));
        let m = m.unwrap();
        assert_eq!((m.ciaddr(), m.yiaddr()), (ip, ip));
        assert_eq!(
            opt(&m, v4::OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(86_400))
        );
        // The same client DISCOVERs again: its lease is reused.
        let (_, m) = run(
            &mut r,
            &Pkt::new(MessageType::Discover, mac).bytes(),
            &meta(),
        );
        assert_eq!(m.unwrap().yiaddr(), ip);
        assert_eq!(
            r.store().get(ip).unwrap().state,
            LeaseState::Bound,
            "an offer does not downgrade a bound lease"
        );
        // SELECTING another server: silent.
        let other = Pkt::new(MessageType::Request, mac)
            .opt(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 9)))
            .opt(DhcpOption::RequestedIpAddress(ip));
        assert_eq!(
            run(&mut r, &other.bytes(), &meta()).0,
            Action::NoResponse(NoResponse::NotForUs)
        );
    }

    #[test]
    fn full_mode_naks() {
        let mut r = Responder::new(&config(FULL), MemoryLeaseStore::new());
        let a_ip = dora(&mut r, [2, 0, 0, 0, 0, 1], &meta());
        // INIT-REBOOT on a wrong subnet: NAK, broadcast, no address.
        let q = Pkt::new(MessageType::Request, [2, 0, 0, 0, 0, 2]).opt(
            DhcpOption::RequestedIpAddress(Ipv4Addr::new(192, 168, 1, 10)),
        );
        let (a, m) = run(&mut r, &q.bytes(), &meta());
        let t = transmit(a);
        assert_eq!(
            (t.dst, t.broadcast, t.msg_type),
            (bcast68(), true, MessageType::Nak)
        );
        let m = m.unwrap();
        assert_eq!(
            (m.yiaddr(), m.siaddr()),
            (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED)
        );
        assert_eq!(
            opt(&m, v4::OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER))
        );
        assert!(opt(&m, v4::OptionCode::AddressLeaseTime).is_none());
        // INIT-REBOOT asking for another client's address: NAK.
        let q = Pkt::new(MessageType::Request, [2, 0, 0, 0, 0, 2])
            .opt(DhcpOption::RequestedIpAddress(a_ip));
        assert_eq!(
            transmit(run(&mut r, &q.bytes(), &meta()).0).msg_type,
            MessageType::Nak
        );
        // Renewing somebody else's address (ciaddr set) is NAKed, still broadcast.
        let q = Pkt::new(MessageType::Request, [2, 0, 0, 0, 0, 2]).ciaddr(a_ip);
        let t = transmit(run(&mut r, &q.bytes(), &meta()).0);
        assert_eq!((t.msg_type, t.dst), (MessageType::Nak, bcast68()));
        // INIT-REBOOT for a free address of the subnet: ACK (authoritative).
        let q = Pkt::new(MessageType::Request, [2, 0, 0, 0, 0, 2])
            .opt(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 120)));
        assert_eq!(
            transmit(run(&mut r, &q.bytes(), &meta()).0).msg_type,
            MessageType::Ack
        );
        assert_eq!(r.metrics().snapshot().naks, 3);
    }

    #[test]
    fn full_mode_relayed() {
        let mut r = Responder::new(&config(FULL), MemoryLeaseStore::new());
        let relay = Ipv4Addr::new(10, 1, 0, 1);
        let from_relay = RecvMeta {
            src: SocketAddrV4::new(relay, 67),
            ..meta()
        };
        let d = Pkt::new(MessageType::Discover, [2, 0, 0, 0, 1, 1])
            .giaddr(relay)
            .pxe(7, "PXEClient:Arch:00007:UNDI:003016");
        let (a, m) = run(&mut r, &d.bytes(), &from_relay);
        let t = transmit(a);
        assert_eq!((t.dst, t.broadcast), (SocketAddrV4::new(relay, 67), false));
        let m = m.unwrap();
        assert_eq!(
            m.yiaddr(),
            Ipv4Addr::new(10, 1, 0, 10),
            "from the relay's subnet"
        );
        assert_eq!(m.giaddr(), relay);
        assert_eq!(
            opt(&m, v4::OptionCode::Router),
            Some(&DhcpOption::Router(vec![relay]))
        );
        // A PXE client in full mode gets its boot file along with the address.
        assert_eq!(m.fname().map(trim_nul), Some(&b"snponly.efi"[..]));
        assert_eq!(m.siaddr(), SERVER);
        assert_eq!(
            opt(&m, v4::OptionCode::VendorExtensions),
            Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
        );
        // A relayed NAK goes to the relay with the broadcast bit set.
        let q = Pkt::new(MessageType::Request, [2, 0, 0, 0, 1, 1])
            .giaddr(relay)
            .opt(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 150)));
        let (a, m) = run(&mut r, &q.bytes(), &from_relay);
        let t = transmit(a);
        assert_eq!(
            (t.dst, t.broadcast, t.msg_type),
            (SocketAddrV4::new(relay, 67), false, MessageType::Nak)
        );
        assert!(m.unwrap().flags().broadcast());
        // A relay for a subnet we do not serve.
        let d =
            Pkt::new(MessageType::Discover, [2, 0, 0, 0, 1, 1]).giaddr(Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(
            run(&mut r, &d.bytes(), &from_relay).0,
            Action::NoResponse(NoResponse::NoSubnet)
        );
    }

    #[test]
    fn full_mode_never_gives_one_address_to_two_clients() {
        let mut r = Responder::new(&config(FULL), MemoryLeaseStore::new());
        let relay = Ipv4Addr::new(10, 1, 0, 1);
        let m = RecvMeta {
            src: SocketAddrV4::new(relay, 67),
            ..meta()
        };
        // Interleaved DISCOVERs first (all offers outstanding), then the REQUESTs.
        let macs: Vec<[u8; 6]> = (0..3).map(|i| [2, 0, 0, 0, 2, i]).collect();
        let mut offered = Vec::new();
        for mac in &macs {
            let (_, o) = run(
                &mut r,
                &Pkt::new(MessageType::Discover, *mac).giaddr(relay).bytes(),
                &m,
            );
            offered.push(o.unwrap().yiaddr());
        }
        let mut sorted = offered.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 3, "{offered:?}");
        // The pool (3 addresses) is exhausted for a fourth client, while offers are held.
        let d = Pkt::new(MessageType::Discover, [2, 0, 0, 0, 2, 9]).giaddr(relay);
        assert_eq!(
            run(&mut r, &d.bytes(), &m).0,
            Action::NoResponse(NoResponse::PoolExhausted)
        );
        // A fourth client asking for an offered address by REQUEST is refused.
        let q = Pkt::new(MessageType::Request, [2, 0, 0, 0, 2, 9])
            .giaddr(relay)
            .opt(DhcpOption::ServerIdentifier(SERVER))
            .opt(DhcpOption::RequestedIpAddress(offered[0]));
        assert_eq!(
            transmit(run(&mut r, &q.bytes(), &m).0).msg_type,
            MessageType::Nak
        );
        // Larger storm on the /24 pool: 100 clients, 100 distinct addresses.
        let mut seen = std::collections::HashSet::new();
        for i in 0..100u8 {
            assert!(seen.insert(dora(&mut r, [2, 0, 0, 3, 0, i], &meta())));
        }
        assert!(seen.iter().all(|ip| (100..=199).contains(&ip.octets()[3])));
        let d = Pkt::new(MessageType::Discover, [2, 0, 0, 3, 1, 0]);
        assert_eq!(
            run(&mut r, &d.bytes(), &meta()).0,
            Action::NoResponse(NoResponse::PoolExhausted)
        );
    }

    #[test]
    fn decline_release_inform() {
        let mut r = Responder::new(&config(FULL), MemoryLeaseStore::new());
        let a = [2, 0, 0, 0, 3, 1];
        let ip = dora(&mut r, a, &meta());
        let dec = Pkt::new(MessageType::Decline, a)
            .opt(DhcpOption::ServerIdentifier(SERVER))
            .opt(DhcpOption::RequestedIpAddress(ip));
        assert_eq!(
            run(&mut r, &dec.bytes(), &meta()).0,
            Action::NoResponse(NoResponse::Declined)
        );
        assert_eq!(r.store().get(ip).unwrap().state, LeaseState::Declined);
        let ip2 = dora(&mut r, a, &meta());
        assert_ne!(ip2, ip, "a declined address is not offered again");
        // Nobody else gets it during the hold either.
        let (_, o) = run(
            &mut r,
            &Pkt::new(MessageType::Discover, [2, 0, 0, 0, 3, 2])
                .opt(DhcpOption::RequestedIpAddress(ip))
                .bytes(),
            &meta(),
        );
        assert_ne!(o.unwrap().yiaddr(), ip);
        // RELEASE frees the address for another client.
        let rel = Pkt::new(MessageType::Release, a)
            .ciaddr(ip2)
            .opt(DhcpOption::ServerIdentifier(SERVER));
        assert_eq!(
            run(&mut r, &rel.bytes(), &meta()).0,
            Action::NoResponse(NoResponse::Released)
        );
        let b = [2, 0, 0, 0, 3, 3];
        let (_, o) = run(
            &mut r,
            &Pkt::new(MessageType::Discover, b)
                .opt(DhcpOption::RequestedIpAddress(ip2))
                .bytes(),
            &meta(),
        );
        assert_eq!(o.unwrap().yiaddr(), ip2);
        // A RELEASE of an address that is not the client's is ignored.
        let rel = Pkt::new(MessageType::Release, [2, 0, 0, 0, 3, 4])
            .ciaddr(ip2)
            .opt(DhcpOption::ServerIdentifier(SERVER));
        assert_eq!(
            run(&mut r, &rel.bytes(), &meta()).0,
            Action::NoResponse(NoResponse::NotForUs)
        );
        // INFORM: ACK to ciaddr, configuration only.
        let c = Ipv4Addr::new(10, 0, 0, 20);
        let inf = Pkt::new(MessageType::Inform, [2, 0, 0, 0, 3, 5]).ciaddr(c);
        let (a, m) = run(&mut r, &inf.bytes(), &meta());
        let t = transmit(a);
        assert_eq!(
            (t.dst, t.broadcast, t.msg_type),
            (SocketAddrV4::new(c, 68), false, MessageType::Ack)
        );
        let m = m.unwrap();
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(opt(&m, v4::OptionCode::AddressLeaseTime).is_none());
        assert!(opt(&m, v4::OptionCode::Renewal).is_none());
        assert!(opt(&m, v4::OptionCode::SubnetMask).is_some());
        let s = r.metrics().snapshot();
        assert_eq!((s.declines, s.releases, s.inform_acks), (1, 1, 1));
    }

    #[test]
    fn reservations() {
        let extra = format!(
            "{FULL}[[hosts]]\nmac = \"02:00:00:00:04:01\"\naddress = \"10.0.0.50\"\nhostname = \"fixed\"\n"
        );
        let mut r = Responder::new(&config(&extra), MemoryLeaseStore::new());
        let (_, m) = run(
            &mut r,
            &Pkt::new(MessageType::Discover, [2, 0, 0, 0, 4, 1]).bytes(),
            &meta(),
        );
        let m = m.unwrap();
        assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 0, 0, 50));
        assert_eq!(
            opt(&m, v4::OptionCode::Hostname),
            Some(&DhcpOption::Hostname("fixed".into()))
        );
        assert_eq!(
            dora(&mut r, [2, 0, 0, 0, 4, 1], &meta()),
            Ipv4Addr::new(10, 0, 0, 50)
        );
        // The host may not take another address.
        let q = Pkt::new(MessageType::Request, [2, 0, 0, 0, 4, 1])
            .opt(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 101)));
        assert_eq!(
            transmit(run(&mut r, &q.bytes(), &meta()).0).msg_type,
            MessageType::Nak
        );
        // Nobody else gets the reserved address.
        let q = Pkt::new(MessageType::Request, [2, 0, 0, 0, 4, 2])
            .opt(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 50)));
        assert_eq!(
            transmit(run(&mut r, &q.bytes(), &meta()).0).msg_type,
            MessageType::Nak
        );
    }

    #[test]
    fn redb_leases_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("leases.redb");
        let cfg = config(FULL);
        let store = RedbLeaseStore::open(&db).unwrap();
        let mut r = Responder::new(&cfg, store);
        let a = dora(&mut r, [2, 0, 0, 0, 5, 1], &meta());
        let b = dora(&mut r, [2, 0, 0, 0, 5, 2], &meta());
        drop(r);
        let mut r = Responder::new(&cfg, RedbLeaseStore::open(&db).unwrap());
        assert_eq!(r.store().get(a).unwrap().state, LeaseState::Bound);
        // The same clients get their addresses back, a new one gets neither.
        let (_, m) = run(
            &mut r,
            &Pkt::new(MessageType::Discover, [2, 0, 0, 0, 5, 2]).bytes(),
            &meta(),
        );
        assert_eq!(m.unwrap().yiaddr(), b);
        let c = dora(&mut r, [2, 0, 0, 0, 5, 3], &meta());
        assert!(c != a && c != b);
        let q = Pkt::new(MessageType::Request, [2, 0, 0, 0, 5, 3])
            .opt(DhcpOption::RequestedIpAddress(a));
        assert_eq!(
            transmit(run(&mut r, &q.bytes(), &meta()).0).msg_type,
            MessageType::Nak
        );
    }

    #[test]
    fn malformed_input_is_dropped_and_counted() {
        for cfg in [config(""), config(FULL)] {
            let mut r = Responder::new(&cfg, MemoryLeaseStore::new());
            let good = bios_discover().bytes();
            let mut out = Vec::new();
            let mut answered = 0;
            for n in 0..good.len() {
                match r.handle(t0(), &good[..n], &meta(), &mut out) {
                    Action::Respond(_) => answered += 1,
                    // A cut at an option boundary may leave a valid request of a plain client.
                    Action::NoResponse(NoResponse::Malformed(_) | NoResponse::NotPxe) => {}
                    other => panic!("{n}: {other:?}"),
                }
            }
            // Only cuts at an option boundary after option 53, 60 and 93 can be answered.
            assert!(answered < 10, "{answered}");
            let mut bad = |i: usize, v: u8| {
                let mut p = good.clone();
                p[i] = v;
                r.handle(t0(), &p, &meta(), &mut out)
            };
            assert_eq!(
                bad(0, 2),
                Action::NoResponse(NoResponse::Malformed(DecodeError::NotBootRequest(2)))
            );
            assert_eq!(
                bad(1, 6),
                Action::NoResponse(NoResponse::Malformed(DecodeError::UnsupportedHtype(6)))
            );
            assert_eq!(
                bad(2, 17),
                Action::NoResponse(NoResponse::Malformed(DecodeError::BadHlen(17)))
            );
            let mut p = good[..240].to_vec();
            p.extend_from_slice(&[60, 3, b'P', b'X', b'E', 255]);
            assert_eq!(
                r.handle(t0(), &p, &meta(), &mut out),
                Action::NoResponse(NoResponse::Malformed(DecodeError::MissingMessageType))
            );
            let mut p = good[..240].to_vec();
            p.extend_from_slice(&[53, 1, 1, 60, 200, b'P']);
            assert!(matches!(
                r.handle(t0(), &p, &meta(), &mut out),
                Action::NoResponse(NoResponse::Malformed(DecodeError::OptionOverrun {
                    code: 60,
                    ..
                }))
            ));
            let s = r.metrics().snapshot();
            assert_eq!(s.drop_truncated, 240);
            assert_eq!(
                (s.drop_not_bootrequest, s.drop_bad_htype, s.drop_bad_hlen),
                (1, 1, 1)
            );
            // The cut at exactly 240 bytes leaves no options at all.
            assert_eq!(s.drop_missing_message_type, 2);
            assert!(s.drop_option_overrun >= 2);
            let total = s.drop_truncated
                + s.drop_not_bootrequest
                + s.drop_bad_htype
                + s.drop_bad_hlen
                + s.drop_option_overrun
                + s.drop_missing_message_type
                + s.drop_not_pxe
                + s.offers;
            assert_eq!(total, s.received, "{s}");
        }
    }

    #[test]
    fn absurd_lease_request_is_clamped_and_counted() {
        let mut r = Responder::new(&config(FULL), MemoryLeaseStore::new());
        let d = Pkt::new(MessageType::Discover, [2, 0, 0, 0, 6, 1])
            .opt(DhcpOption::AddressLeaseTime(u32::MAX));
        let (_, m) = run(&mut r, &d.bytes(), &meta());
        assert_eq!(
            opt(&m.unwrap(), v4::OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(86_400))
        );
        let d = Pkt::new(MessageType::Discover, [2, 0, 0, 0, 6, 1])
            .opt(DhcpOption::AddressLeaseTime(1));
        let (_, m) = run(&mut r, &d.bytes(), &meta());
        assert_eq!(
            opt(&m.unwrap(), v4::OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(60))
        );
        assert_eq!(r.metrics().snapshot().lease_time_clamped, 1);
    }
}
