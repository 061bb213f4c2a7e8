//! The sans-IO DHCP responder: one datagram in, at most one datagram out.
//!
//! [`Responder::handle`] decodes a request ([`pxe_proto::dhcp::decode`]), decides per the
//! settings (proxy or full mode, `[[hosts]]`, `[boot]`), commits any lease change to its
//! [`LeaseStore`] *before* it encodes the answer, and says where the answer goes
//! ([`Transmit`], RFC 2131 §4.1): relayed (giaddr) → the relay, port 67; a NAK → broadcast;
//! ciaddr set → unicast to it, port 68; otherwise → broadcast 255.255.255.255:68. Answers on the
//! PXE boot server port 4011 go back to the request's source address and port.
//!
//! - [`proxy`]: ProxyDHCP (PXE 2.1) and the boot server on port 4011. Only clients whose
//!   option 60 starts with `PXEClient` or `HTTPClient` are answered; the OFFER carries no
//!   address (yiaddr 0.0.0.0), option 60, the server identifier, siaddr (next-server) and the
//!   boot file, and for PXE clients option 43 with sub-option 6 (PXE_DISCOVERY_CONTROL) = 8:
//!   "boot the file named in this offer", as dnsmasq does, so firmware goes straight to TFTP.
//!   A REQUEST on port 67 is answered only when its server identifier is ours; REQUEST/INFORM
//!   on 4011 → ACK with the boot file.
//! - [`full`]: a DHCP server, one function per message type. Pools per `[[dhcp.subnets]]` (the
//!   pool is the one containing giaddr when relayed, else the local address the request
//!   arrived on), leases via the store, reservations from `[[hosts]].address`. The server is
//!   authoritative for its subnets: an INIT-REBOOT REQUEST for an address on another network,
//!   or for one a known client may not have, is NAKed; one from a client it has no record of
//!   (no lease, no reservation) is not answered (RFC 2131 §4.3.2), as Kea does. Leases are keyed by the client hardware address (chaddr); option 61 only picks the
//!   client's load-balancing bucket ([`Responder::set_balance`]).
//! - [`pool`]: the free addresses of each pool (a free list checked against the store, not a
//!   scan of the range per request).
//! - [`shares`]: how many leases each link holds, for `max_leases_per_link`. The link of a
//!   request is its relay (giaddr) when relayed, else the interface it arrived on
//!   ([`RecvMeta::ifname`]); each lease records the link it was given through.
//! - [`boot`]: the boot file for the client's architecture (option 93) or iPXE.
//! - [`reply`]: the BOOTREPLY, its options and its destination.
//!
//! Allocation: replies are built with `dhcproto`'s `Message` (a few small allocations per
//! answer) into the caller's reusable buffer; decoding and dropping allocate nothing.

mod boot;
mod full;
mod pool;
mod proxy;
mod reply;
mod shares;
#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use dhcproto::v4::MessageType;
use pxe_proto::consts::PXE_PORT;
use pxe_proto::dhcp::{self as wire, ClientRequest, DecodeError};

use super::balance::{self, Balance};
use super::leases::{IfName, Lease, LeaseError, LeaseStore, Link};
use super::metrics::DhcpMetrics;
use super::{DhcpMode, DhcpSettings, UnknownHosts};
use crate::metrics::{self, LogLimiter};
use pool::Pool;
use shares::Shares;

/// At most one warning per interval about links at their lease bound.
const REFUSAL_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Where and how a request arrived (the engine fills this from IP_PKTINFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Source address and port of the datagram.
    pub src: SocketAddrV4,
    /// Our address on the interface it arrived on (`ipi_spec_dst`); 0.0.0.0 if unknown.
    pub local_addr: Ipv4Addr,
    pub ifindex: u32,
    /// The name of that interface (empty if unknown): the link of a request that is not
    /// relayed. The engine resolves it (names are stable across restarts, indexes are not).
    pub ifname: IfName,
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
    /// Full mode: an INIT-REBOOT REQUEST from a client with no lease and no reservation
    /// (RFC 2131 §4.3.2: the server stays silent).
    UnknownClient,
    /// Full mode: a new client from a link that holds `max_leases_per_link` leases of its pool.
    LinkFull,
    /// Full mode, balanced: a DISCOVER or INIT-REBOOT REQUEST whose RFC 3074 bucket another
    /// instance owns.
    NotOurBucket,
    /// Full mode, shared store: every address tried for a DISCOVER was taken by another
    /// instance first.
    LeaseConflict,
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

/// What the responder records in the journeys.
#[derive(Debug, Clone, Copy)]
enum JourneyEvent {
    /// A DISCOVER or REQUEST.
    Request,
    /// The client is at this address (proxy mode, from its own requests).
    At(Ipv4Addr),
    /// No answer, for this setting's limit.
    Refused(&'static str),
}

/// One request being answered: what every step of the answer reads.
struct Ctx<'r, 'p> {
    req: &'r ClientRequest<'p>,
    meta: &'r RecvMeta,
    /// The `[[hosts]]` entry the client matched (an index into the settings' hosts).
    host: Option<usize>,
    /// Our address towards the client (siaddr, and option 54 but in a takeover).
    server_ip: Ipv4Addr,
    /// Option 54 of the answer: `server_ip`, or in a takeover the server identifier the
    /// client named (a dead instance's: see `Responder::takes_over`).
    identity: Ipv4Addr,
    /// The link the request came through: its relay, else its interface (if named).
    link: Option<Link>,
    /// Wall-clock time, seconds since the Unix epoch.
    now: u64,
}

pub struct Responder<S: LeaseStore> {
    cfg: DhcpSettings,
    pools: Vec<Pool>,
    store: S,
    metrics: Arc<DhcpMetrics>,
    /// Leases held per link (full mode).
    shares: Shares,
    /// Warnings about links at their bound.
    link_full_log: LogLimiter,
    /// Warnings about DISCOVERs that lost every address to other instances.
    conflict_log: LogLimiter,
    /// Proxy mode: where `[[hosts]]` entries are, from their requests (for the install routes).
    learned: Option<Arc<crate::dhcp::learned::LearnedAddresses>>,
    /// Where the requests of booting clients are recorded (the answers are recorded by the
    /// server once sent).
    journeys: Option<Arc<crate::journey::Journeys>>,
    /// The RFC 3074 buckets this instance answers (full mode); `None`: every client.
    balance: Option<Arc<Balance>>,
    /// Where each pool's round-robin starts, from the instance name (see
    /// [`Responder::set_balance`]); 0 for a lone server.
    pool_slot: Option<(u16, u16)>,
}

/// Where the round-robin of a new pool over `cfg`'s range starts for an instance of seed
/// `seed`.
/// Where a pool's round-robin starts for an instance at `slot` (its rank among `count` live
/// instances, see [`Balance::slot`]): `rank / count` of the way into the range; the start of
/// the range for a lone server.
fn start_offset(slot: Option<(u16, u16)>, cfg: &super::Subnet) -> u32 {
    let size = u64::from(u32::from(cfg.range_end) - u32::from(cfg.range_start) + 1);
    match slot {
        Some((rank, count)) if count > 0 => (size * u64::from(rank) / u64::from(count)) as u32,
        _ => 0,
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Neither 0.0.0.0 nor the limited broadcast address.
fn usable(ip: Ipv4Addr) -> bool {
    !ip.is_unspecified() && !ip.is_broadcast()
}

impl<S: LeaseStore> Responder<S> {
    /// A responder for `settings` (validated by `Config::parse`) over `store`.
    pub fn new(settings: &DhcpSettings, store: S) -> Self {
        let mut r = Responder {
            cfg: settings.clone(),
            pools: Vec::new(),
            store,
            metrics: Arc::default(),
            shares: Shares::off(),
            link_full_log: LogLimiter::new(REFUSAL_LOG_INTERVAL),
            conflict_log: LogLimiter::new(REFUSAL_LOG_INTERVAL),
            learned: None,
            journeys: None,
            balance: None,
            pool_slot: None,
        };
        r.reconfigure(settings);
        r
    }

    /// Where to record the addresses hosts' requests name in proxy mode (see
    /// [`crate::dhcp::learned`]).
    pub fn set_learned(&mut self, learned: Arc<crate::dhcp::learned::LearnedAddresses>) {
        self.learned = Some(learned);
    }

    /// Where to record the DISCOVERs and REQUESTs of booting clients, the addresses proxy
    /// mode learns and the refusals (see [`crate::journey`]).
    pub fn set_journeys(&mut self, journeys: Arc<crate::journey::Journeys>) {
        self.journeys = Some(journeys);
    }

    /// Shares the full-mode clients with other instances (RFC 3074, see [`balance`]): from
    /// now on a DISCOVER or an INIT-REBOOT REQUEST (no server identifier, a requested address)
    /// is answered only if `balance` owns the client's bucket; every other message is answered
    /// as before. Proxy mode and port 4011 are not balanced.
    ///
    /// Also spreads the instances over each shared pool: an instance starts its round-robin
    /// at `rank / count` of the range ([`Balance::slot`]: its place among the live instances,
    /// followed as they come and go), so that instances allocating from one pool start far
    /// apart and rarely race for the same free address (a lone server starts at the range's
    /// start).
    pub fn set_balance(&mut self, balance: Arc<Balance>) {
        self.balance = Some(balance);
        self.follow_slot();
    }

    /// Moves the pools' round-robin starts when this instance's place among the live ones
    /// changed (one atomic load per full-mode request otherwise).
    fn follow_slot(&mut self) {
        let Some(slot) = self.balance.as_ref().map(|b| b.slot()) else {
            return;
        };
        if slot == self.pool_slot {
            return;
        }
        self.pool_slot = slot;
        for p in &mut self.pools {
            *p = Pool::new(p.cfg.clone(), start_offset(slot, &p.cfg));
        }
    }

    /// The balance shared with the heartbeat, if any.
    pub fn balance(&self) -> Option<&Arc<Balance>> {
        self.balance.as_ref()
    }

    /// A balanced message (full mode, port 67: DISCOVER, INIT-REBOOT REQUEST) from a client
    /// whose bucket another instance owns.
    fn not_our_bucket(&self, req: &ClientRequest<'_>, meta: &RecvMeta) -> bool {
        let Some(b) = &self.balance else {
            return false;
        };
        let balanced = match req.msg_type {
            MessageType::Discover => true,
            MessageType::Request => req.server_id.is_none() && req.requested_ip.is_some(),
            _ => false,
        };
        balanced
            && self.cfg.mode == DhcpMode::Full
            && meta.port != PXE_PORT
            && !b.serves(balance::hash_input(req))
    }

    /// The mode the responder answers in.
    pub fn mode(&self) -> DhcpMode {
        self.cfg.mode
    }

    /// Records, for the journeys, that the client of `req` is at `ip` (proxy mode: its own
    /// requests say so) or was refused for `setting`, at wall-clock `now` seconds.
    fn journey(&self, req: &ClientRequest<'_>, event: JourneyEvent) {
        let Some(j) = &self.journeys else {
            return;
        };
        let now = crate::journey::Now::current();
        j.with(|t| match event {
            JourneyEvent::Request => t.dhcp_request(
                now,
                req.chaddr,
                req.client_uuid,
                req.msg_type == MessageType::Discover,
            ),
            JourneyEvent::At(ip) => {
                if t.get(&req.chaddr).is_some() {
                    t.set_address(req.chaddr, ip, now);
                }
            }
            JourneyEvent::Refused(setting) => t.refused(now, req.chaddr, setting),
        });
    }

    /// Takes new settings (a reload): hosts, boot profiles, subnets and answer settings.
    /// Leases stay in the store; a pool whose subnet is unchanged keeps its round-robin
    /// position. Every pool's free list is rebuilt from the store at its next allocation
    /// (reservations may have changed). Sockets are not the responder's: `mode` is taken as
    /// given, so the caller keeps it as the sockets were opened (see `Config::reload_plan`).
    pub fn reconfigure(&mut self, settings: &DhcpSettings) {
        let pools = settings
            .subnets
            .iter()
            .map(|s| {
                let next = self
                    .pools
                    .iter()
                    .find(|p| p.cfg == *s)
                    .map_or_else(|| start_offset(self.pool_slot, s), Pool::position);
                Pool::new(s.clone(), next)
            })
            .collect();
        self.cfg = settings.clone();
        self.pools = pools;
        // Counted only where a pool has a bound, with room for a lease per pool address;
        // rebuilt from the store at the next request (reservations may have changed).
        self.shares = if self.pools.iter().any(|p| p.cfg.max_leases_per_link > 0) {
            let addresses: usize = self.pools.iter().map(|p| p.size() as usize).sum();
            Shares::with_capacity(addresses.min(1 << 20))
        } else {
            Shares::off()
        };
    }

    pub fn metrics(&self) -> &Arc<DhcpMetrics> {
        &self.metrics
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, for inspection and set-up in tests.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Consumes the responder, returning its store.
    pub fn into_store(self) -> S {
        self.store
    }

    /// Starts a batch of lease changes (see [`LeaseStore::begin_batch`]).
    pub fn begin_batch(&mut self) {
        self.store.begin_batch();
    }

    /// Commits the batch begun by [`Responder::begin_batch`]. On `Err` the batch's lease
    /// changes are gone, and so are the addresses it took from the pools' free lists and the
    /// shares it counted: the pools are rebuilt from the store at their next allocation, the
    /// per-link counts at the next request.
    pub fn commit_batch(&mut self) -> Result<(), LeaseError> {
        let result = self.store.commit_batch();
        if result.is_err() {
            self.pools.iter_mut().for_each(Pool::mark_stale);
            self.shares.mark_stale();
        }
        result
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
        metrics::inc(&self.metrics.received);
        let action = match wire::decode(bytes) {
            Ok(req) => {
                let m = &self.metrics;
                metrics::inc(match req.msg_type {
                    MessageType::Discover => &m.received_discover,
                    MessageType::Request => &m.received_request,
                    MessageType::Decline => &m.received_decline,
                    MessageType::Release => &m.received_release,
                    MessageType::Inform => &m.received_inform,
                    _ => &m.received_other,
                });
                if req.lease_time_clamped {
                    metrics::inc(&self.metrics.lease_time_clamped);
                }
                // Another instance answers this client: not a request of ours to record.
                if self.not_our_bucket(&req, meta) {
                    let action = Action::NoResponse(NoResponse::NotOurBucket);
                    self.count(&action);
                    return action;
                }
                // A booting client (any client in full mode) asking for an address or its
                // boot file.
                if matches!(req.msg_type, MessageType::Discover | MessageType::Request)
                    && (self.cfg.mode == DhcpMode::Full || req.is_pxe() || req.is_http())
                {
                    self.journey(&req, JourneyEvent::Request);
                }
                let action = self.handle_request(unix_secs(now), &req, meta, out);
                match action {
                    Action::NoResponse(NoResponse::LinkFull) => {
                        self.journey(&req, JourneyEvent::Refused("dhcp.max_leases_per_link"));
                    }
                    Action::NoResponse(NoResponse::PoolExhausted) => {
                        self.journey(&req, JourneyEvent::Refused("dhcp.subnets (pool exhausted)"));
                    }
                    _ => {}
                }
                action
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
                NoResponse::UnknownClient => &m.drop_init_reboot_unknown,
                NoResponse::LinkFull => &m.drop_link_full,
                NoResponse::NotOurBucket => &m.drop_not_our_bucket,
                NoResponse::LeaseConflict => &m.drop_lease_conflict,
                NoResponse::StoreError => &m.drop_store_error,
                NoResponse::EncodeError => &m.drop_encode_error,
                NoResponse::Declined => &m.declines,
                NoResponse::Released => &m.releases,
            },
        };
        metrics::inc(c);
    }

    /// The server address, the client's host entry, then the port and mode.
    fn handle_request(
        &mut self,
        now: u64,
        req: &ClientRequest<'_>,
        meta: &RecvMeta,
        out: &mut Vec<u8>,
    ) -> Action {
        let server_ip = match self.cfg.server_ip {
            Some(ip) => ip,
            None if usable(meta.local_addr) => meta.local_addr,
            None => return Action::NoResponse(NoResponse::NoServerAddress),
        };
        let host = self
            .cfg
            .hosts
            .find(Some(&req.chaddr), req.client_uuid.as_ref());
        if host.is_none() && self.cfg.unknown_hosts == UnknownHosts::Ignore {
            return Action::NoResponse(NoResponse::UnknownHost);
        }
        let link = if usable(req.giaddr) {
            Some(Link::Relay(req.giaddr))
        } else {
            (!meta.ifname.is_empty()).then_some(Link::Interface(meta.ifname))
        };
        let ctx = Ctx {
            req,
            meta,
            host,
            server_ip,
            identity: server_ip,
            link,
            now,
        };
        if meta.port == PXE_PORT {
            return self.pxe_boot_server(&ctx, out);
        }
        match self.cfg.mode {
            DhcpMode::Proxy => self.proxy(&ctx, out),
            DhcpMode::Full => self.full(&ctx, out),
        }
    }

    /// Stores `lease` at `now` (committed before it returns) and counts its link's share.
    /// The client's record at another address, which the store releases in the same commit,
    /// goes back to its pool's free list and no longer counts.
    fn put(&mut self, lease: &Lease, now: u64) -> Result<(), LeaseError> {
        let previous = self.store.ip_of(&lease.mac).filter(|&ip| ip != lease.ip);
        self.store.put(lease)?;
        if let Some(ip) = previous {
            self.release_to_pool(ip);
            self.shares.forget(ip);
        }
        self.shares.record(lease, now, &self.cfg.hosts);
        Ok(())
    }

    /// `ip` is free again: queued in the pool whose range holds it.
    fn release_to_pool(&mut self, ip: Ipv4Addr) {
        if let Some(p) = self.pools.iter_mut().find(|p| p.in_range(ip)) {
            p.release(ip);
        }
    }
}
