//! The client's messages: the requests a PXE ROM sends (built here), and the replies it reads
//! (decoded here, after a bounded walk of their options, and the fields the client looks at).

use std::net::Ipv4Addr;
use std::time::Instant;

use dhcproto::v4::{self, DhcpOption, Flags, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use super::{Arch, DhcpClient, State};

/// Firmware pads its requests to the BOOTP minimum.
const MIN_REQUEST_LEN: usize = v4::MIN_PACKET_SIZE;

/// Parameter request list (option 55) of a PXE ROM: network basics, vendor options (43), class
/// (60), TFTP server (66), boot file (67) and the PXE-reserved 128..135.
const PARAMS: [u8; 20] = [
    1, 2, 3, 5, 6, 11, 12, 13, 15, 16, 17, 18, 43, 54, 60, 66, 67, 128, 129, 130,
];

impl DhcpClient {
    /// The firmware's request, padded to 300 bytes.
    pub(super) fn encode(&self, now: Instant, kind: MessageType, out: &mut Vec<u8>) {
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
pub(crate) fn decode_reply(bytes: &[u8]) -> Option<Message> {
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
pub(crate) fn peek_chaddr(bytes: &[u8]) -> Option<[u8; 6]> {
    bytes.get(28..34)?.try_into().ok()
}

pub(super) fn server_id(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) if !ip.is_unspecified() => Some(*ip),
        _ if !msg.siaddr().is_unspecified() => Some(msg.siaddr()),
        _ => None,
    }
}

/// Where the boot file is fetched from: `siaddr`, else the server identifier.
pub(super) fn next_server(msg: &Message) -> Option<Ipv4Addr> {
    if msg.siaddr().is_unspecified() {
        server_id(msg)
    } else {
        Some(msg.siaddr())
    }
}

pub(super) fn is_pxe_offer(msg: &Message) -> bool {
    matches!(
        msg.opts().get(OptionCode::ClassIdentifier),
        Some(DhcpOption::ClassIdentifier(c)) if c.starts_with(b"PXEClient")
    )
}

/// The boot file name: option 67, else the `file` header field (non-empty).
pub(super) fn boot_file(msg: &Message) -> Option<&[u8]> {
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
