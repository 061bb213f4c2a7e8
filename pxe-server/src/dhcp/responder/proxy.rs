//! ProxyDHCP (PXE 2.1) on port 67 and the PXE boot server on port 4011: boot information only,
//! no addresses.

use std::net::Ipv4Addr;

use dhcproto::v4::MessageType;

use super::boot::add_boot;
use super::reply::{destination, emit, reply};
use super::{Action, Ctx, JourneyEvent, NoResponse, Responder, usable};
use crate::dhcp::DhcpMode;
use crate::dhcp::leases::LeaseStore;
use crate::metrics;

impl<S: LeaseStore> Responder<S> {
    /// Port 4011: REQUEST or INFORM from a PXE or HTTP boot client → ACK with the boot file,
    /// back to the request's source.
    pub(super) fn pxe_boot_server(&self, ctx: &Ctx<'_, '_>, out: &mut Vec<u8>) -> Action {
        let req = ctx.req;
        if !self.cfg.pxe_port_4011 {
            return Action::NoResponse(NoResponse::UnexpectedType(req.msg_type));
        }
        if !matches!(req.msg_type, MessageType::Request | MessageType::Inform) {
            return Action::NoResponse(NoResponse::UnexpectedType(req.msg_type));
        }
        if !req.is_pxe() && !req.is_http() {
            return Action::NoResponse(NoResponse::NotPxe);
        }
        let Some(boot) = self.select_boot(ctx) else {
            return Action::NoResponse(NoResponse::NoBootFile);
        };
        let mut m = reply(
            &self.cfg,
            req,
            MessageType::Ack,
            ctx.server_ip,
            Ipv4Addr::UNSPECIFIED,
        );
        add_boot(&mut m, req, &boot);
        metrics::inc(&self.metrics.pxe_boot_acks);
        // Sent from the address it names in ciaddr: the host is there.
        let src = *ctx.meta.src.ip();
        if ctx.req.ciaddr == src {
            self.learn_address(ctx, src);
            if usable(src) {
                self.journey(ctx.req, JourneyEvent::At(src));
            }
        }
        emit(&m, out, ctx.meta.src, false, ctx.meta.ifindex)
    }

    /// Proxy mode: records that a known host is at `ip` (see [`crate::dhcp::learned`] for
    /// what that is worth).
    fn learn_address(&self, ctx: &Ctx<'_, '_>, ip: Ipv4Addr) {
        let (Some(learned), Some(i)) = (&self.learned, ctx.host) else {
            return;
        };
        if self.cfg.mode != DhcpMode::Proxy || !usable(ip) {
            return;
        }
        let host = self.cfg.hosts.get(i);
        if let Some(key) = host.key() {
            learned.learn(&key, &host.label(), ip, ctx.now);
        }
    }

    /// Port 67 in proxy mode: DISCOVER → OFFER, a REQUEST naming us → ACK, each without an
    /// address and with the boot file.
    pub(super) fn proxy(&self, ctx: &Ctx<'_, '_>, out: &mut Vec<u8>) -> Action {
        let req = ctx.req;
        if !req.is_pxe() && !req.is_http() {
            return Action::NoResponse(NoResponse::NotPxe);
        }
        let answer = match req.msg_type {
            MessageType::Discover => MessageType::Offer,
            MessageType::Request if req.server_id == Some(ctx.server_ip) => MessageType::Ack,
            MessageType::Request => {
                // Its REQUEST to the server that gives the addresses (broadcast, so we see it)
                // names the address it is taking.
                if let Some(ip) = req.requested_ip {
                    self.learn_address(ctx, ip);
                    if self.cfg.mode == DhcpMode::Proxy && usable(ip) {
                        self.journey(req, JourneyEvent::At(ip));
                    }
                }
                return Action::NoResponse(NoResponse::NotForUs);
            }
            t => return Action::NoResponse(NoResponse::UnexpectedType(t)),
        };
        let Some(boot) = self.select_boot(ctx) else {
            return Action::NoResponse(NoResponse::NoBootFile);
        };
        let mut m = reply(&self.cfg, req, answer, ctx.server_ip, Ipv4Addr::UNSPECIFIED);
        add_boot(&mut m, req, &boot);
        let (dst, bcast) = destination(req, false);
        emit(&m, out, dst, bcast, ctx.meta.ifindex)
    }
}
