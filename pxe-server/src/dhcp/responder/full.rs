//! Full mode: the DHCP server for `[[dhcp.subnets]]`, one function per message type. Every
//! lease change is committed to the store before the answer is encoded.
//!
//! The per-link bound (`max_leases_per_link`): a client that holds no active lease or offer
//! is new; a new client whose link (relay or interface) already holds the bound of its pool
//! gets no OFFER and no ACK ([`NoResponse::LinkFull`]), counted and logged at most once per
//! 10 s. A client that holds a lease or an offer is never refused (it renews, rebinds, reboots
//! and gets its offer again), nor is a host with a reserved address (whose lease takes no
//! share). A lease keeps the link it was given through while its client renews it; a record
//! with no link (format version 1) takes the link of its client's next relayed or broadcast
//! REQUEST (a unicast renewal shows no link: it may come through any interface).

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, MessageType};

use super::boot::add_boot;
use super::reply::{address_options, destination, emit, nak, reply};
use super::{Action, Ctx, NoResponse, Responder, balance, usable};
use crate::dhcp::leases::{Lease, LeaseError, LeaseState, LeaseStore, Link};
use crate::metrics;

use NoResponse as N;

/// Addresses a DISCOVER skips because another instance took them first (each a
/// [`LeaseError::Conflict`]) before it gives up on this attempt of the client.
pub(super) const MAX_CONFLICTS: usize = 8;

impl<S: LeaseStore> Responder<S> {
    /// Dispatches a port-67 request in full mode by message type.
    pub(super) fn full(&mut self, ctx: &Ctx<'_, '_>, out: &mut Vec<u8>) -> Action {
        self.follow_slot();
        self.shares.expire(ctx.now, &self.store, &self.cfg.hosts);
        match ctx.req.msg_type {
            MessageType::Discover => self.discover(ctx, out),
            MessageType::Request => self.request(ctx, out),
            MessageType::Decline => self.decline(ctx),
            MessageType::Release => self.release(ctx),
            MessageType::Inform => self.inform(ctx, out),
            t => Action::NoResponse(N::UnexpectedType(t)),
        }
    }

    /// The pool of the client's link: the relay's address, else ours on the arrival
    /// interface.
    fn link_pool(&self, ctx: &Ctx<'_, '_>) -> Option<usize> {
        let link = if usable(ctx.req.giaddr) {
            ctx.req.giaddr
        } else if usable(ctx.meta.local_addr) {
            ctx.meta.local_addr
        } else {
            ctx.server_ip
        };
        self.pool_holding(link)
    }

    /// The pool whose subnet holds `ip`.
    fn pool_holding(&self, ip: Ipv4Addr) -> Option<usize> {
        self.pools.iter().position(|p| p.cfg.subnet.contains(ip))
    }

    /// DISCOVER → OFFER of an address, held for the client (`offer_hold_secs`) unless it
    /// already holds it. An address another instance took first (the shared store refuses
    /// the offer: [`LeaseError::Conflict`], after which the store shows its holder) is
    /// skipped for the next one, at most [`MAX_CONFLICTS`] times.
    fn discover(&mut self, ctx: &Ctx<'_, '_>, out: &mut Vec<u8>) -> Action {
        let Some(pi) = self.link_pool(ctx) else {
            return Action::NoResponse(N::NoSubnet);
        };
        if self.link_at_bound(pi, ctx) {
            return Action::NoResponse(N::LinkFull);
        }
        let (req, now) = (ctx.req, ctx.now);
        for _ in 0..=MAX_CONFLICTS {
            let ip = match self.allocate(pi, ctx) {
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
                    link: ctx.link,
                };
                match self.put(&offer, now) {
                    Ok(()) => {}
                    Err(LeaseError::Conflict { ip }) => {
                        self.lease_conflict(ip, ctx);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(%e, mac = %req.chaddr, %ip, setting = "dhcp.lease_db",
                            "lease store: offer not recorded, no OFFER");
                        return Action::NoResponse(N::StoreError);
                    }
                }
            }
            let secs = self.lease_secs(pi, ctx);
            return self.grant(ctx, pi, ip, secs, out);
        }
        if let Some(held_back) = self.conflict_log.allow() {
            tracing::warn!(
                client = %req.chaddr,
                pool = %self.pools[pi].cfg.subnet,
                tries = MAX_CONFLICTS + 1,
                held_back,
                "DHCP: every address tried for {} was taken by another instance first; no \
                 OFFER (the client retries). If this persists the pool is nearly full: widen \
                 [[dhcp.subnets]] range_start..range_end of {}",
                req.chaddr,
                self.pools[pi].cfg.subnet
            );
        }
        Action::NoResponse(N::LeaseConflict)
    }

    /// Another instance holds `ip` in the shared store: counted (not logged per packet).
    fn lease_conflict(&self, ip: Ipv4Addr, ctx: &Ctx<'_, '_>) {
        metrics::inc(&self.metrics.lease_conflicts);
        tracing::debug!(%ip, client = %ctx.req.chaddr, "lease held by another instance");
    }

    /// REQUEST (SELECTING, INIT-REBOOT, RENEWING, REBINDING) → ACK once the lease is bound
    /// and committed, or NAK for an address the client may not have.
    fn request(&mut self, ctx: &Ctx<'_, '_>, out: &mut Vec<u8>) -> Action {
        let req = ctx.req;
        let taken_over;
        let mut ctx = ctx;
        let ip = match (req.server_id, req.requested_ip) {
            (Some(sid), Some(ip)) if sid != ctx.server_ip && self.takes_over(ctx, ip) => {
                taken_over = Ctx {
                    identity: sid,
                    ..*ctx
                };
                ctx = &taken_over;
                ip
            }
            (Some(sid), _) if sid != ctx.server_ip => {
                return Action::NoResponse(N::NotForUs);
            }
            (Some(_), Some(ip)) => ip,                        // SELECTING
            (None, Some(ip)) => ip,                           // INIT-REBOOT
            (None, None) if usable(req.ciaddr) => req.ciaddr, // RENEWING / REBINDING
            _ => Ipv4Addr::UNSPECIFIED,
        };
        // A unicast renewal may reach us through any interface.
        let Some(pi) = self.link_pool(ctx).or_else(|| self.pool_holding(ip)) else {
            return Action::NoResponse(N::NoSubnet);
        };
        // INIT-REBOOT (RFC 2131 §4.3.2): a client on the wrong network is NAKed, but one we
        // have no record of gets no answer at all, so that a server that never saw it cannot
        // confirm an address it did not give (another server on the segment may have).
        let init_reboot = req.server_id.is_none() && req.requested_ip.is_some();
        if init_reboot && self.pools[pi].cfg.subnet.contains(ip) && !self.knows(ctx) {
            return Action::NoResponse(N::UnknownClient);
        }
        if !self.valid_for(pi, ip, ctx) {
            let m = nak(&self.cfg, req, ctx.identity);
            let (dst, bcast) = destination(req, true);
            return emit(&m, out, dst, bcast, ctx.meta.ifindex);
        }
        if self.link_at_bound(pi, ctx) {
            return Action::NoResponse(N::LinkFull);
        }
        let secs = self.lease_secs(pi, ctx);
        let bound = Lease {
            ip,
            mac: req.chaddr,
            uuid: req.client_uuid,
            expires: ctx.now + u64::from(secs),
            state: LeaseState::Bound,
            link: self.renewed_link(ip, ctx),
        };
        match self.put(&bound, ctx.now) {
            Ok(()) => {
                if ctx.identity != ctx.server_ip {
                    metrics::inc(&self.metrics.takeovers);
                    tracing::debug!(client = %req.chaddr, %ip, named = %ctx.identity,
                        "DHCP: took over a dead instance's offer; ACK in its name");
                }
                self.grant(ctx, pi, ip, secs, out)
            }
            // Another instance bound it first: the address is someone else's.
            Err(LeaseError::Conflict { ip }) => {
                self.lease_conflict(ip, ctx);
                let m = nak(&self.cfg, req, ctx.identity);
                let (dst, bcast) = destination(req, true);
                emit(&m, out, dst, bcast, ctx.meta.ifindex)
            }
            Err(e) => {
                tracing::warn!(%e, mac = %req.chaddr, %ip, setting = "dhcp.lease_db",
                    "lease store: bind not committed, no ACK");
                Action::NoResponse(N::StoreError)
            }
        }
    }

    /// A SELECTING REQUEST that names another server (`server_id`) and asks for `ip` is this
    /// instance's to answer in that server's name: the client's RFC 3074 bucket is ours now,
    /// the store's record of `ip` is an active offer to this very client, and the instance
    /// that made it is neither this one nor live (it stopped heart-beating and its buckets
    /// moved). A client caught between a dead instance's OFFER and its ACK then completes
    /// within its REQUEST retransmissions instead of starting over. A live peer's clients
    /// are its own (NotForUs), and so is any other address or client.
    fn takes_over(&self, ctx: &Ctx<'_, '_>, ip: Ipv4Addr) -> bool {
        let Some(b) = &self.balance else {
            return false;
        };
        let req = ctx.req;
        if !b.serves(balance::hash_input(req)) {
            return false;
        }
        let offered = self.store.get(ip).is_some_and(|l| {
            l.mac == req.chaddr && l.state == LeaseState::Offered && l.is_active(ctx.now)
        });
        offered
            && self
                .store
                .written_by(ip)
                .is_some_and(|by| by != b.me() && !b.is_live(by))
    }

    /// DECLINE: the client found the address in use; it stays unusable for
    /// `decline_hold_secs`. No answer is due.
    fn decline(&mut self, ctx: &Ctx<'_, '_>) -> Action {
        let ip = ctx.req.requested_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let hold = ctx.now + u64::from(self.cfg.decline_hold_secs);
        self.end_lease(ctx, ip, LeaseState::Declined, hold, N::Declined)
    }

    /// RELEASE: the client gives its address back; it is free at once. No answer is due.
    fn release(&mut self, ctx: &Ctx<'_, '_>) -> Action {
        let ip = ctx.req.ciaddr;
        let done = self.end_lease(ctx, ip, LeaseState::Released, ctx.now, N::Released);
        if done == Action::NoResponse(N::Released) {
            self.release_to_pool(ip);
        }
        done
    }

    /// Records the end of the client's own lease on `ip` (a DECLINE or RELEASE naming us).
    fn end_lease(
        &mut self,
        ctx: &Ctx<'_, '_>,
        ip: Ipv4Addr,
        state: LeaseState,
        expires: u64,
        done: NoResponse,
    ) -> Action {
        let req = ctx.req;
        if req.server_id != Some(ctx.server_ip) {
            return Action::NoResponse(N::NotForUs);
        }
        let Some(l) = self.store.get(ip).filter(|l| l.mac == req.chaddr) else {
            return Action::NoResponse(N::NotForUs);
        };
        let ended = Lease {
            state,
            expires,
            ..l
        };
        match self.put(&ended, ctx.now) {
            Ok(()) => Action::NoResponse(done),
            // Our view was stale: the address is another client's now.
            Err(LeaseError::Conflict { ip }) => {
                self.lease_conflict(ip, ctx);
                Action::NoResponse(N::NotForUs)
            }
            Err(e) => {
                tracing::warn!(%e, mac = %req.chaddr, %ip, setting = "dhcp.lease_db",
                    "lease store: decline/release not recorded");
                Action::NoResponse(N::StoreError)
            }
        }
    }

    /// INFORM: the client has an address; ACK with the options of its subnet, no lease.
    fn inform(&mut self, ctx: &Ctx<'_, '_>, out: &mut Vec<u8>) -> Action {
        let Some(pi) = self
            .pool_holding(ctx.req.ciaddr)
            .or_else(|| self.link_pool(ctx))
        else {
            return Action::NoResponse(N::NoSubnet);
        };
        metrics::inc(&self.metrics.inform_acks);
        self.grant(ctx, pi, Ipv4Addr::UNSPECIFIED, 0, out)
    }

    /// The lease time for this client in pool `pi`: what it asks, within 60 s and the
    /// longest lease (never below the pool's default).
    fn lease_secs(&self, pi: usize, ctx: &Ctx<'_, '_>) -> u32 {
        let default = self.pools[pi]
            .cfg
            .lease_time_secs
            .unwrap_or(self.cfg.lease_time_secs);
        ctx.req
            .lease_time
            .unwrap_or(default)
            .clamp(60, self.cfg.max_lease_time_secs.max(default))
    }

    /// This client is new and its link already holds the bound of pool `pi` (logged, at most
    /// once per interval). Never for a client that holds an active lease or offer, nor for a
    /// host with a reserved address.
    fn link_at_bound(&self, pi: usize, ctx: &Ctx<'_, '_>) -> bool {
        let bound = self.pools[pi].cfg.max_leases_per_link;
        let Some(link) = ctx.link.filter(|_| bound > 0) else {
            return false;
        };
        let held = self.shares.held(&link);
        if held < bound || self.reserved_host(ctx) || self.holds_lease(ctx) {
            return false;
        }
        if let Some(held_back) = self.link_full_log.allow() {
            tracing::warn!(
                %link,
                held,
                bound,
                pool = %self.pools[pi].cfg.subnet,
                client = %ctx.req.chaddr,
                held_back,
                "DHCP: {link} holds {held} leases of pool {}, its bound: new clients from it get \
                 no answer; raise [dhcp] max_leases_per_link (or this subnet's) if they are \
                 legitimate",
                self.pools[pi].cfg.subnet
            );
        }
        true
    }

    /// The client holds an active lease or offer (its own record, not expired).
    fn holds_lease(&self, ctx: &Ctx<'_, '_>) -> bool {
        let mac = &ctx.req.chaddr;
        self.store
            .ip_of(mac)
            .and_then(|ip| self.store.get(ip))
            .is_some_and(|l| l.mac == *mac && l.is_active(ctx.now))
    }

    /// The client is a `[[hosts]]` entry with a reserved address.
    fn reserved_host(&self, ctx: &Ctx<'_, '_>) -> bool {
        ctx.host
            .is_some_and(|h| self.cfg.hosts.get(h).address.is_some())
    }

    /// The link to record with the client's lease on `ip`: the one its active record already
    /// has (a renewal keeps its link), else the request's. A unicast renewal (ciaddr, not
    /// relayed) shows no link: a record without one keeps none.
    fn renewed_link(&self, ip: Ipv4Addr, ctx: &Ctx<'_, '_>) -> Option<Link> {
        let req = ctx.req;
        let unicast_renewal = usable(req.ciaddr) && !usable(req.giaddr);
        match self.store.get(ip) {
            Some(l)
                if l.mac == req.chaddr
                    && l.is_active(ctx.now)
                    && (l.link.is_some() || unicast_renewal) =>
            {
                l.link
            }
            _ => ctx.link,
        }
    }

    /// We have a record of this client: a lease (active, expired or offered) or a reserved
    /// address.
    fn knows(&self, ctx: &Ctx<'_, '_>) -> bool {
        self.store.ip_of(&ctx.req.chaddr).is_some() || self.reserved_host(ctx)
    }

    /// `ip` may be held by this client: in the pool's range (or its reservation), reserved for
    /// no other host, not our own address, and not leased to another client.
    fn usable_by(&self, pi: usize, ip: Ipv4Addr, ctx: &Ctx<'_, '_>) -> bool {
        let pool = &self.pools[pi];
        if ip == ctx.server_ip || Some(ip) == pool.cfg.router {
            return false;
        }
        match self.cfg.hosts.reserved(ip) {
            Some(h) if Some(h) != ctx.host => return false,
            Some(_) => {}
            None if !pool.in_range(ip) => return false,
            None => {}
        }
        match self.store.get(ip) {
            None => true,
            Some(l) if !l.is_active(ctx.now) => true,
            Some(l) => l.mac == ctx.req.chaddr && l.state != LeaseState::Declined,
        }
    }

    /// `ip` may be bound to this client in pool `pi`: in its subnet, its reservation if it has
    /// one, and usable by it.
    fn valid_for(&self, pi: usize, ip: Ipv4Addr, ctx: &Ctx<'_, '_>) -> bool {
        if !self.pools[pi].cfg.subnet.contains(ip) {
            return false;
        }
        // A host with a fixed address gets only that one.
        if let Some(a) = ctx.host.and_then(|h| self.cfg.hosts.get(h).address)
            && a != ip
        {
            return false;
        }
        self.usable_by(pi, ip, ctx)
    }

    /// The address to offer: the reservation, else the client's last lease, else the one it
    /// asks for, else the next free one of the pool.
    fn allocate(&mut self, pi: usize, ctx: &Ctx<'_, '_>) -> Result<Ipv4Addr, NoResponse> {
        if let Some(a) = ctx.host.and_then(|h| self.cfg.hosts.get(h).address) {
            return if self.valid_for(pi, a, ctx) {
                Ok(a)
            } else {
                Err(N::ReservationConflict)
            };
        }
        let ok = |ip: Ipv4Addr| self.pools[pi].in_range(ip) && self.usable_by(pi, ip, ctx);
        if let Some(ip) = self.store.ip_of(&ctx.req.chaddr).filter(|&ip| ok(ip)) {
            return Ok(ip);
        }
        if let Some(ip) = ctx.req.requested_ip.filter(|&ip| ok(ip)) {
            return Ok(ip);
        }
        let mut rebuilt = false;
        while let Some(ip) =
            self.pools[pi].pop_free(ctx.now, &self.store, &self.cfg.hosts, &mut rebuilt)
        {
            if self.usable_by(pi, ip, ctx) {
                self.pools[pi].handed_out(ip);
                return Ok(ip);
            }
        }
        Err(N::PoolExhausted)
    }

    /// An OFFER or ACK of `ip` (none for an INFORM) from pool `pi`, with the boot file for a
    /// PXE or HTTP boot client.
    fn grant(
        &self,
        ctx: &Ctx<'_, '_>,
        pi: usize,
        ip: Ipv4Addr,
        lease_secs: u32,
        out: &mut Vec<u8>,
    ) -> Action {
        let req = ctx.req;
        let msg_type = match req.msg_type {
            MessageType::Discover => MessageType::Offer,
            _ => MessageType::Ack,
        };
        let mut m = reply(&self.cfg, req, msg_type, ctx.server_ip, ip);
        if ctx.identity != ctx.server_ip {
            m.opts_mut()
                .insert(DhcpOption::ServerIdentifier(ctx.identity));
        }
        let hostname = ctx
            .host
            .and_then(|h| self.cfg.hosts.get(h).hostname.as_ref());
        address_options(&mut m, req, &self.pools[pi].cfg, hostname, lease_secs);
        if (req.is_pxe() || req.is_http())
            && let Some(boot) = self.select_boot(ctx)
        {
            add_boot(&mut m, req, &boot);
        }
        let (dst, bcast) = destination(req, false);
        emit(&m, out, dst, bcast, ctx.meta.ifindex)
    }
}
