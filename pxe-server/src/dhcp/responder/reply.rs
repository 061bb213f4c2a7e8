//! The BOOTREPLY: its header and server options, the options of an address grant, where it
//! goes (RFC 2131 §4.1), and its encoding into the caller's buffer.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{self, DhcpOption, MessageType};
use dhcproto::{Encodable, Encoder};
use pxe_proto::consts::{
    BOOTP_FLAG_BROADCAST, BOOTP_MIN_REPLY_LEN, DHCP_CLIENT_PORT, DHCP_SERVER_PORT,
};
use pxe_proto::dhcp::ClientRequest;

use super::{Action, NoResponse, Transmit, usable};
use crate::dhcp::{DhcpSettings, Subnet};

/// A BOOTREPLY to `req` with option 53 and 54.
pub(super) fn reply(
    cfg: &DhcpSettings,
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
        cfg.next_server.unwrap_or(server_ip),
        req.giaddr,
        &req.chaddr.0,
    );
    m.set_opcode(v4::Opcode::BootReply)
        .set_flags(v4::Flags::new(req.flags & BOOTP_FLAG_BROADCAST));
    m.opts_mut().insert(DhcpOption::MessageType(t));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(server_ip));
    m
}

/// A NAK of `req`: no next-server, a message, and for a relayed request the broadcast flag
/// (the relay must broadcast it on the client's segment).
pub(super) fn nak(cfg: &DhcpSettings, req: &ClientRequest<'_>, server_ip: Ipv4Addr) -> v4::Message {
    let mut m = reply(cfg, req, MessageType::Nak, server_ip, Ipv4Addr::UNSPECIFIED);
    m.set_siaddr(Ipv4Addr::UNSPECIFIED);
    if usable(req.giaddr) {
        m.set_flags(v4::Flags::new(req.flags | BOOTP_FLAG_BROADCAST));
    }
    m.opts_mut().insert(DhcpOption::Message(
        "requested address not available".into(),
    ));
    m
}

/// The options of an address in `pool`: mask, router, DNS, domain, the host's name, and (but
/// for an INFORM) the lease, renewal and rebinding times.
pub(super) fn address_options(
    m: &mut v4::Message,
    req: &ClientRequest<'_>,
    pool: &Subnet,
    hostname: Option<&String>,
    lease_secs: u32,
) {
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
    if let Some(n) = hostname {
        o.insert(DhcpOption::Hostname(n.clone()));
    }
    if req.msg_type != MessageType::Inform {
        o.insert(DhcpOption::AddressLeaseTime(lease_secs));
        o.insert(DhcpOption::Renewal(lease_secs / 2));
        o.insert(DhcpOption::Rebinding(
            (u64::from(lease_secs) * 7 / 8) as u32,
        ));
    }
}

/// RFC 2131 §4.1: where a port-67 answer goes, and whether it is a broadcast.
pub(super) fn destination(req: &ClientRequest<'_>, nak: bool) -> (SocketAddrV4, bool) {
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

/// Encodes `m` into `out` (padded to the BOOTP minimum) and says where it goes.
pub(super) fn emit(
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
