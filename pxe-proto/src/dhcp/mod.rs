//! Checked decoding of a client's BOOTREQUEST into a [`ClientRequest`] (borrowing the datagram,
//! no allocation).
//!
//! The fixed header is read through `dhcproto`'s zero-copy `v4::borrowed::Message`, after the
//! checks below made every access in bounds; the option walk is our own so that an option that
//! runs past its area is *refused* (dhcproto's walk silently stops there), and option overload
//! (option 52) is followed into the `file`/`sname` fields.
//!
//! What is refused ([`DecodeError`]): fewer than 240 bytes, `op` other than BOOTREQUEST,
//! `htype` other than 1 (Ethernet), `hlen` other than 6 (and never more than 16), a wrong magic
//! cookie, an option overrunning its area, a bad overload value, a missing or unknown message
//! type (53), and fixed-size options (50, 51, 54, 57, 93, 97) of the wrong length.
//! A requested lease time (51) above [`MAX_REQUESTED_LEASE_SECS`] is clamped, not refused.
//!
//! When an option occurs more than once the first occurrence is used (RFC 3396 concatenation
//! is not needed for any option read here: all of them are far below 255 bytes).

use std::net::Ipv4Addr;

use dhcproto::v4::{self, MessageType};

use crate::consts::{
    BOOTP_FILE, BOOTP_OPTIONS_OFF, BOOTP_SNAME, DHCP_MAGIC, HTTP_CLIENT, IPXE_USER_CLASS,
    MAX_REQUESTED_LEASE_SECS, PXE_CLIENT, arch, opt,
};
use crate::{ClientUuid, MacAddr};

/// Why a datagram is not a usable BOOTREQUEST. Every variant is a peer that misbehaves or is
/// incompatible; the responder counts each and stays silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("datagram of {0} bytes is shorter than a BOOTP header")]
    Truncated(usize),
    #[error("op {0} is not BOOTREQUEST")]
    NotBootRequest(u8),
    #[error("hardware type {0} is not Ethernet")]
    UnsupportedHtype(u8),
    #[error("hardware address length {0} is invalid")]
    BadHlen(u8),
    #[error("magic cookie missing")]
    BadMagic,
    #[error("option {code} at offset {offset} overruns the packet")]
    OptionOverrun { code: u8, offset: usize },
    #[error("option overload value {0} is invalid")]
    BadOverload(u8),
    #[error("message type option (53) missing")]
    MissingMessageType,
    #[error("message type {0} is unknown")]
    UnknownMessageType(u8),
    #[error("option {code} has invalid length {len}")]
    BadOptionLength { code: u8, len: usize },
}

/// A decoded BOOTREQUEST; variable-length fields borrow the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest<'a> {
    pub msg_type: MessageType,
    pub xid: u32,
    pub secs: u16,
    /// Raw BOOTP flags; see [`ClientRequest::broadcast`].
    pub flags: u16,
    pub hops: u8,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: MacAddr,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 51, clamped to [`MAX_REQUESTED_LEASE_SECS`].
    pub lease_time: Option<u32>,
    /// The request asked for more than [`MAX_REQUESTED_LEASE_SECS`].
    pub lease_time_clamped: bool,
    /// Option 57.
    pub max_message_size: Option<u16>,
    /// Option 60.
    pub vendor_class: Option<&'a [u8]>,
    /// Option 93, the first architecture listed.
    pub client_arch: Option<u16>,
    /// Option 97 with type 0 (other types are ignored).
    pub client_uuid: Option<ClientUuid>,
    /// Option 77, raw.
    pub user_class: Option<&'a [u8]>,
    /// Option 175 (iPXE's encapsulated options) is present.
    pub ipxe_encap: bool,
    /// Option 55, raw option codes (empty when absent).
    pub parameter_list: &'a [u8],
    /// Option 12.
    pub hostname: Option<&'a [u8]>,
    /// Option 61 (client identifier), raw: its type octet and identifier.
    pub client_id: Option<&'a [u8]>,
    /// Option 52 (0 = no overload).
    pub overload: u8,
}

impl ClientRequest<'_> {
    /// The client asked for broadcast replies (BOOTP flags bit 15).
    pub fn broadcast(&self) -> bool {
        self.flags & 0x8000 != 0
    }

    /// Option 60 starts with `PXEClient`.
    pub fn is_pxe(&self) -> bool {
        self.vendor_class.is_some_and(|v| v.starts_with(PXE_CLIENT))
    }

    /// Option 60 starts with `HTTPClient` (UEFI HTTP boot).
    pub fn is_http(&self) -> bool {
        self.vendor_class
            .is_some_and(|v| v.starts_with(HTTP_CLIENT))
    }

    /// The client is iPXE: user class (77) `iPXE`, raw or RFC 3004 encoded, or option 175.
    pub fn is_ipxe(&self) -> bool {
        self.ipxe_encap || self.user_class.is_some_and(user_class_has_ipxe)
    }

    /// The architecture to boot: option 93, else the `Arch:NNNNN` field of a PXE vendor class,
    /// else 0 (BIOS; PXE 2.0 clients predate option 93).
    pub fn arch(&self) -> u16 {
        if let Some(a) = self.client_arch {
            return a;
        }
        self.vendor_class
            .and_then(|v| {
                let v = std::str::from_utf8(v).ok()?;
                let rest = v.split("Arch:").nth(1)?;
                rest.get(..5)?.parse().ok()
            })
            .unwrap_or(arch::X86_BIOS)
    }
}

/// iPXE sends option 77 as the bare string `iPXE`; RFC 3004 clients send `len, data` items.
fn user_class_has_ipxe(data: &[u8]) -> bool {
    if data == IPXE_USER_CLASS {
        return true;
    }
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let Some(item) = tail.get(..len as usize) else {
            return false;
        };
        if item == IPXE_USER_CLASS {
            return true;
        }
        rest = &tail[len as usize..];
    }
    false
}

/// The options of interest, first occurrence of each.
#[derive(Default)]
struct RawOptions<'a> {
    message_type: Option<&'a [u8]>,
    requested_ip: Option<&'a [u8]>,
    server_id: Option<&'a [u8]>,
    lease_time: Option<&'a [u8]>,
    overload: Option<&'a [u8]>,
    max_message_size: Option<&'a [u8]>,
    vendor_class: Option<&'a [u8]>,
    client_arch: Option<&'a [u8]>,
    client_uuid: Option<&'a [u8]>,
    user_class: Option<&'a [u8]>,
    parameter_list: Option<&'a [u8]>,
    hostname: Option<&'a [u8]>,
    client_id: Option<&'a [u8]>,
    ipxe_encap: bool,
}

impl<'a> RawOptions<'a> {
    fn take(&mut self, code: u8, data: &'a [u8]) {
        let slot = match code {
            opt::MESSAGE_TYPE => &mut self.message_type,
            opt::REQUESTED_IP => &mut self.requested_ip,
            opt::SERVER_ID => &mut self.server_id,
            opt::LEASE_TIME => &mut self.lease_time,
            opt::OVERLOAD => &mut self.overload,
            opt::MAX_MESSAGE_SIZE => &mut self.max_message_size,
            opt::VENDOR_CLASS => &mut self.vendor_class,
            opt::CLIENT_ARCH => &mut self.client_arch,
            opt::CLIENT_UUID => &mut self.client_uuid,
            opt::USER_CLASS => &mut self.user_class,
            opt::PARAMETER_LIST => &mut self.parameter_list,
            opt::HOSTNAME => &mut self.hostname,
            opt::CLIENT_ID => &mut self.client_id,
            opt::IPXE_ENCAP => {
                self.ipxe_encap = true;
                return;
            }
            _ => return,
        };
        if slot.is_none() {
            *slot = Some(data);
        }
    }

    /// Walks one option area (`base` = its offset in the datagram, for errors). Pads are
    /// skipped, End stops; an area that ends without End is accepted. Bounded by the area.
    fn walk(&mut self, area: &'a [u8], base: usize) -> Result<(), DecodeError> {
        let mut i = 0;
        while let Some(&code) = area.get(i) {
            match code {
                opt::PAD => i += 1,
                opt::END => return Ok(()),
                _ => {
                    let overrun = DecodeError::OptionOverrun {
                        code,
                        offset: base + i,
                    };
                    let len = *area.get(i + 1).ok_or(overrun)? as usize;
                    let data = area.get(i + 2..i + 2 + len).ok_or(overrun)?;
                    self.take(code, data);
                    i += 2 + len;
                }
            }
        }
        Ok(())
    }
}

fn fixed<const N: usize>(code: u8, data: Option<&[u8]>) -> Result<Option<[u8; N]>, DecodeError> {
    match data {
        None => Ok(None),
        Some(d) => d
            .try_into()
            .map(Some)
            .map_err(|_| DecodeError::BadOptionLength { code, len: d.len() }),
    }
}

/// Decodes and checks a BOOTREQUEST. Never panics, never allocates.
pub fn decode(bytes: &[u8]) -> Result<ClientRequest<'_>, DecodeError> {
    if bytes.len() < BOOTP_OPTIONS_OFF {
        return Err(DecodeError::Truncated(bytes.len()));
    }
    let msg = v4::borrowed::Message::new(bytes).map_err(|_| DecodeError::Truncated(bytes.len()))?;
    if msg.opcode() != v4::Opcode::BootRequest {
        return Err(DecodeError::NotBootRequest(bytes[0]));
    }
    if msg.htype() != v4::HType::Eth {
        return Err(DecodeError::UnsupportedHtype(bytes[1]));
    }
    // Checked before `chaddr()`, which slices `28..28 + hlen`.
    if msg.hlen() != 6 {
        return Err(DecodeError::BadHlen(msg.hlen()));
    }
    if bytes[BOOTP_OPTIONS_OFF - DHCP_MAGIC.len()..BOOTP_OPTIONS_OFF] != DHCP_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let mut raw = RawOptions::default();
    raw.walk(&bytes[BOOTP_OPTIONS_OFF..], BOOTP_OPTIONS_OFF)?;
    let overload = match fixed::<1>(opt::OVERLOAD, raw.overload)? {
        None => 0,
        Some([v @ 1..=3]) => v,
        Some([v]) => return Err(DecodeError::BadOverload(v)),
    };
    // RFC 2131 §4.1: the file field is read before sname.
    if overload & 1 != 0 {
        raw.walk(&bytes[BOOTP_FILE], BOOTP_FILE.start)?;
    }
    if overload & 2 != 0 {
        raw.walk(&bytes[BOOTP_SNAME], BOOTP_SNAME.start)?;
    }

    let msg_type = match fixed::<1>(opt::MESSAGE_TYPE, raw.message_type)? {
        None => return Err(DecodeError::MissingMessageType),
        Some([t @ 1..=8]) => MessageType::from(t),
        Some([t]) => return Err(DecodeError::UnknownMessageType(t)),
    };
    let (lease_time, lease_time_clamped) = match fixed::<4>(opt::LEASE_TIME, raw.lease_time)? {
        None => (None, false),
        Some(b) => {
            let t = u32::from_be_bytes(b);
            (
                Some(t.min(MAX_REQUESTED_LEASE_SECS)),
                t > MAX_REQUESTED_LEASE_SECS,
            )
        }
    };
    let client_arch = match raw.client_arch {
        None => None,
        Some(d) if d.len() >= 2 && d.len() % 2 == 0 => Some(u16::from_be_bytes([d[0], d[1]])),
        Some(d) => {
            return Err(DecodeError::BadOptionLength {
                code: opt::CLIENT_ARCH,
                len: d.len(),
            });
        }
    };
    let client_uuid = match fixed::<17>(opt::CLIENT_UUID, raw.client_uuid)? {
        Some(b) if b[0] == 0 => {
            let mut g = [0u8; 16];
            g.copy_from_slice(&b[1..]);
            Some(ClientUuid::from_wire(&g))
        }
        _ => None,
    };
    let mut mac = [0u8; 6];
    mac.copy_from_slice(msg.chaddr());
    Ok(ClientRequest {
        msg_type,
        xid: msg.xid(),
        secs: msg.secs(),
        flags: msg.flags().into(),
        hops: msg.hops(),
        ciaddr: msg.ciaddr(),
        yiaddr: msg.yiaddr(),
        giaddr: msg.giaddr(),
        chaddr: MacAddr(mac),
        requested_ip: fixed::<4>(opt::REQUESTED_IP, raw.requested_ip)?.map(Ipv4Addr::from),
        server_id: fixed::<4>(opt::SERVER_ID, raw.server_id)?.map(Ipv4Addr::from),
        lease_time,
        lease_time_clamped,
        max_message_size: fixed::<2>(opt::MAX_MESSAGE_SIZE, raw.max_message_size)?
            .map(u16::from_be_bytes),
        vendor_class: raw.vendor_class,
        client_arch,
        client_uuid,
        user_class: raw.user_class,
        ipxe_encap: raw.ipxe_encap,
        parameter_list: raw.parameter_list.unwrap_or(&[]),
        hostname: raw.hostname,
        client_id: raw.client_id,
        overload,
    })
}

#[cfg(test)]
mod tests;
