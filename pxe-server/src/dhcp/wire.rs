//! Checked decoding of a client's BOOTREQUEST into a [`ClientRequest`] (borrowing the datagram,
//! no allocation), and the small value types it carries ([`MacAddr`], [`ClientUuid`]).
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

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use dhcproto::v4::{self, MessageType};

/// Fixed BOOTP header (236 bytes) plus the magic cookie.
pub const MIN_LEN: usize = 240;
/// Largest lease time a request may ask for before it is clamped (one year).
pub const MAX_REQUESTED_LEASE_SECS: u32 = 366 * 24 * 3600;

pub const OPT_PAD: u8 = 0;
pub const OPT_END: u8 = 255;
pub const OPT_HOSTNAME: u8 = 12;
pub const OPT_REQUESTED_IP: u8 = 50;
pub const OPT_LEASE_TIME: u8 = 51;
pub const OPT_OVERLOAD: u8 = 52;
pub const OPT_MESSAGE_TYPE: u8 = 53;
pub const OPT_SERVER_ID: u8 = 54;
pub const OPT_PARAMETER_LIST: u8 = 55;
pub const OPT_MAX_MESSAGE_SIZE: u8 = 57;
pub const OPT_VENDOR_CLASS: u8 = 60;
pub const OPT_USER_CLASS: u8 = 77;
pub const OPT_CLIENT_ARCH: u8 = 93;
pub const OPT_CLIENT_UUID: u8 = 97;
pub const OPT_IPXE_ENCAP: u8 = 175;

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

/// An Ethernet hardware address.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = String;
    /// `52:54:00:ab:cd:ef` or `52-54-00-AB-CD-EF`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in &mut out {
            let p = parts
                .next()
                .ok_or_else(|| format!("{s:?} is not a MAC address"))?;
            if p.len() != 2 {
                return Err(format!("{s:?} is not a MAC address"));
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| format!("{s:?} is not a MAC address"))?;
        }
        if parts.next().is_some() {
            return Err(format!("{s:?} is not a MAC address"));
        }
        Ok(MacAddr(out))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

/// A client machine UUID (option 97), held in the canonical RFC 4122 byte order, the order in
/// which `dmidecode`, the firmware setup screens and config files write it.
///
/// Byte order rule: on the wire (option 97, after its type byte 0) PXE and UEFI firmware, and
/// iPXE, send the UUID in the EFI GUID layout (RFC 4578 refers to it): the first three fields
/// (`time_low` u32, `time_mid` u16, `time_hi_and_version` u16) are little-endian, the last
/// 8 bytes are in order. [`ClientUuid::from_wire`] swaps those three fields, so that
/// `wire 33 22 11 00 55 44 77 66 88 99 aa bb cc dd ee ff` reads as
/// `00112233-4455-6677-8899-aabbccddeeff`; [`ClientUuid::to_wire`] is the inverse.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct ClientUuid(pub [u8; 16]);

impl ClientUuid {
    fn swap(b: &[u8; 16]) -> [u8; 16] {
        let mut o = *b;
        o[0..4].reverse();
        o[4..6].reverse();
        o[6..8].reverse();
        o
    }

    /// From the 16 bytes that follow the type byte of option 97.
    pub fn from_wire(bytes: &[u8; 16]) -> Self {
        ClientUuid(Self::swap(bytes))
    }

    /// The 16 bytes as firmware sends them in option 97.
    pub fn to_wire(&self) -> [u8; 16] {
        Self::swap(&self.0)
    }
}

impl fmt::Display for ClientUuid {
    /// Lower-case canonical form, `00112233-4455-6677-8899-aabbccddeeff`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for ClientUuid {
    type Err = String;
    /// The canonical form, any case; the hyphens are optional (32 hex digits).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a UUID (like 00112233-4455-6677-8899-aabbccddeeff)");
        let hex: Vec<u8> = s.bytes().filter(|&c| c != b'-').collect();
        let hyphens: Vec<usize> = s.match_indices('-').map(|(i, _)| i).collect();
        if hex.len() != 32 || !(hyphens.is_empty() || hyphens == [8, 13, 18, 23]) {
            return Err(bad());
        }
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            let pair = std::str::from_utf8(&hex[2 * i..2 * i + 2]).map_err(|_| bad())?;
            *b = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(ClientUuid(out))
    }
}

impl TryFrom<String> for ClientUuid {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<ClientUuid> for String {
    fn from(u: ClientUuid) -> String {
        u.to_string()
    }
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
        self.vendor_class
            .is_some_and(|v| v.starts_with(b"PXEClient"))
    }

    /// Option 60 starts with `HTTPClient` (UEFI HTTP boot).
    pub fn is_http(&self) -> bool {
        self.vendor_class
            .is_some_and(|v| v.starts_with(b"HTTPClient"))
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
            .unwrap_or(0)
    }
}

/// iPXE sends option 77 as the bare string `iPXE`; RFC 3004 clients send `len, data` items.
fn user_class_has_ipxe(data: &[u8]) -> bool {
    if data == b"iPXE" {
        return true;
    }
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let Some(item) = tail.get(..len as usize) else {
            return false;
        };
        if item == b"iPXE" {
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
    ipxe_encap: bool,
}

impl<'a> RawOptions<'a> {
    fn take(&mut self, code: u8, data: &'a [u8]) {
        let slot = match code {
            OPT_MESSAGE_TYPE => &mut self.message_type,
            OPT_REQUESTED_IP => &mut self.requested_ip,
            OPT_SERVER_ID => &mut self.server_id,
            OPT_LEASE_TIME => &mut self.lease_time,
            OPT_OVERLOAD => &mut self.overload,
            OPT_MAX_MESSAGE_SIZE => &mut self.max_message_size,
            OPT_VENDOR_CLASS => &mut self.vendor_class,
            OPT_CLIENT_ARCH => &mut self.client_arch,
            OPT_CLIENT_UUID => &mut self.client_uuid,
            OPT_USER_CLASS => &mut self.user_class,
            OPT_PARAMETER_LIST => &mut self.parameter_list,
            OPT_HOSTNAME => &mut self.hostname,
            OPT_IPXE_ENCAP => {
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
                OPT_PAD => i += 1,
                OPT_END => return Ok(()),
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
    if bytes.len() < MIN_LEN {
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
    if bytes[236..240] != v4::MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let mut raw = RawOptions::default();
    raw.walk(&bytes[MIN_LEN..], MIN_LEN)?;
    let overload = match fixed::<1>(OPT_OVERLOAD, raw.overload)? {
        None => 0,
        Some([v @ 1..=3]) => v,
        Some([v]) => return Err(DecodeError::BadOverload(v)),
    };
    // RFC 2131 §4.1: the file field is read before sname.
    if overload & 1 != 0 {
        raw.walk(&bytes[108..236], 108)?;
    }
    if overload & 2 != 0 {
        raw.walk(&bytes[44..108], 44)?;
    }

    let msg_type = match fixed::<1>(OPT_MESSAGE_TYPE, raw.message_type)? {
        None => return Err(DecodeError::MissingMessageType),
        Some([t @ 1..=8]) => MessageType::from(t),
        Some([t]) => return Err(DecodeError::UnknownMessageType(t)),
    };
    let (lease_time, lease_time_clamped) = match fixed::<4>(OPT_LEASE_TIME, raw.lease_time)? {
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
                code: OPT_CLIENT_ARCH,
                len: d.len(),
            });
        }
    };
    let client_uuid = match fixed::<17>(OPT_CLIENT_UUID, raw.client_uuid)? {
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
        requested_ip: fixed::<4>(OPT_REQUESTED_IP, raw.requested_ip)?.map(Ipv4Addr::from),
        server_id: fixed::<4>(OPT_SERVER_ID, raw.server_id)?.map(Ipv4Addr::from),
        lease_time,
        lease_time_clamped,
        max_message_size: fixed::<2>(OPT_MAX_MESSAGE_SIZE, raw.max_message_size)?
            .map(u16::from_be_bytes),
        vendor_class: raw.vendor_class,
        client_arch,
        client_uuid,
        user_class: raw.user_class,
        ipxe_encap: raw.ipxe_encap,
        parameter_list: raw.parameter_list.unwrap_or(&[]),
        hostname: raw.hostname,
        overload,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A hand-written BIOS PXE DISCOVER, byte by byte (no encoder involved).
    pub(crate) fn raw_bios_discover() -> Vec<u8> {
        let mut p = vec![0u8; 240];
        p[0] = 1; // op BOOTREQUEST
        p[1] = 1; // htype Ethernet
        p[2] = 6; // hlen
        p[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // xid
        p[10] = 0x80; // broadcast flag
        p[28..34].copy_from_slice(&[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        p[236..240].copy_from_slice(&[99, 130, 83, 99]);
        p.extend_from_slice(&[53, 1, 1]); // DISCOVER
        p.extend_from_slice(&[57, 2, 0x04, 0xec]); // max size 1260
        p.extend_from_slice(&[93, 2, 0, 0]); // arch 0 BIOS
        p.extend_from_slice(&[94, 3, 1, 2, 1]); // UNDI 2.1
        p.extend_from_slice(&[97, 17, 0]);
        p.extend_from_slice(&[
            0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ]);
        p.extend_from_slice(&[60, 32]);
        p.extend_from_slice(b"PXEClient:Arch:00000:UNDI:002001");
        p.extend_from_slice(&[55, 4, 1, 3, 43, 60]);
        p.push(255);
        p
    }

    #[test]
    fn decodes_a_hand_written_bios_discover() {
        let p = raw_bios_discover();
        let r = decode(&p).unwrap();
        assert_eq!(r.msg_type, MessageType::Discover);
        assert_eq!(r.xid, 0xdeadbeef);
        assert!(r.broadcast());
        assert_eq!(r.chaddr.to_string(), "52:54:00:12:34:56");
        assert_eq!(r.client_arch, Some(0));
        assert_eq!(r.arch(), 0);
        assert_eq!(r.max_message_size, Some(1260));
        assert!(r.is_pxe() && !r.is_http() && !r.is_ipxe());
        assert_eq!(
            r.client_uuid.unwrap().to_string(),
            "00112233-4455-6677-8899-aabbccddeeff"
        );
        assert_eq!(r.parameter_list, &[1, 3, 43, 60]);
        assert_eq!(
            (r.requested_ip, r.server_id, r.lease_time),
            (None, None, None)
        );
        assert_eq!(r.ciaddr, Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn uuid_byte_order_and_parsing() {
        let u: ClientUuid = "00112233-4455-6677-8899-AABBCCDDEEFF".parse().unwrap();
        assert_eq!(u, "00112233445566778899aabbccddeeff".parse().unwrap());
        assert_eq!(
            u.to_wire(),
            [
                0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ]
        );
        assert_eq!(ClientUuid::from_wire(&u.to_wire()), u);
        for bad in [
            "",
            "0011223344556677",
            "00112233-4455-6677-8899-aabbccddeefg",
            "0011-2233-4455-6677-8899aabbccddeeff",
        ] {
            assert!(bad.parse::<ClientUuid>().is_err(), "{bad}");
        }
        assert_eq!(
            "52-54-00-AB-cd-EF".parse::<MacAddr>().unwrap().to_string(),
            "52:54:00:ab:cd:ef"
        );
        for bad in [
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:ef:01",
            "5:54:00:ab:cd:ef",
            "zz:54:00:ab:cd:ef",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn truncation_at_every_offset_is_refused_without_panic() {
        let p = raw_bios_discover();
        for n in 0..p.len() {
            let r = decode(&p[..n]);
            if n < MIN_LEN {
                assert_eq!(r, Err(DecodeError::Truncated(n)));
            } else {
                // Cut inside an option: refused; cut at an option boundary before 53: missing.
                assert!(
                    matches!(
                        r,
                        Err(DecodeError::OptionOverrun { .. } | DecodeError::MissingMessageType)
                    ) || r.is_ok(),
                    "{n}: {r:?}"
                );
            }
        }
        // A cut inside the first option is an overrun.
        assert_eq!(
            decode(&p[..242]),
            Err(DecodeError::OptionOverrun {
                code: 53,
                offset: 240
            })
        );
        // Without the End option, ending at a boundary is accepted.
        assert!(decode(&p[..p.len() - 1]).is_ok());
    }

    #[test]
    fn header_checks() {
        let good = raw_bios_discover();
        let with = |i: usize, v: u8| {
            let mut p = good.clone();
            p[i] = v;
            decode(&p).map(|_| ())
        };
        assert_eq!(with(0, 2), Err(DecodeError::NotBootRequest(2)));
        assert_eq!(with(1, 6), Err(DecodeError::UnsupportedHtype(6)));
        assert_eq!(with(2, 17), Err(DecodeError::BadHlen(17)));
        assert_eq!(with(2, 255), Err(DecodeError::BadHlen(255)));
        assert_eq!(with(2, 16), Err(DecodeError::BadHlen(16)));
        assert_eq!(with(236, 0), Err(DecodeError::BadMagic));
        assert_eq!(with(242, 9), Err(DecodeError::UnknownMessageType(9)));
        // 53 -> 56 (message, ignored): no message type left.
        assert_eq!(with(240, 56), Err(DecodeError::MissingMessageType));
    }

    fn with_options(opts: &[u8]) -> Result<ClientRequest<'static>, DecodeError> {
        let mut p = raw_bios_discover();
        p.truncate(240);
        p.extend_from_slice(opts);
        decode(Box::leak(p.into_boxed_slice()))
    }

    #[test]
    fn option_checks() {
        assert_eq!(
            with_options(&[53, 1, 1, 60, 40, b'P']),
            Err(DecodeError::OptionOverrun {
                code: 60,
                offset: 243
            })
        );
        assert_eq!(
            with_options(&[53, 1, 1, 12]),
            Err(DecodeError::OptionOverrun {
                code: 12,
                offset: 243
            })
        );
        assert_eq!(
            with_options(&[53, 2, 1, 1, 255]),
            Err(DecodeError::BadOptionLength { code: 53, len: 2 })
        );
        assert_eq!(
            with_options(&[53, 1, 3, 50, 3, 1, 2, 3, 255]),
            Err(DecodeError::BadOptionLength { code: 50, len: 3 })
        );
        assert_eq!(
            with_options(&[53, 1, 1, 93, 1, 0, 255]),
            Err(DecodeError::BadOptionLength { code: 93, len: 1 })
        );
        assert_eq!(
            with_options(&[53, 1, 1, 52, 1, 4, 255]),
            Err(DecodeError::BadOverload(4))
        );
        // Absurd lease time: clamped and flagged.
        let r = with_options(&[53, 1, 3, 51, 4, 0xff, 0xff, 0xff, 0xff, 255]).unwrap();
        assert_eq!(r.lease_time, Some(MAX_REQUESTED_LEASE_SECS));
        assert!(r.lease_time_clamped);
        let r = with_options(&[53, 1, 3, 51, 4, 0, 0, 0x0e, 0x10, 255]).unwrap();
        assert_eq!((r.lease_time, r.lease_time_clamped), (Some(3600), false));
        // Pads, duplicates (first wins), options after End are ignored.
        let r = with_options(&[0, 0, 53, 1, 3, 53, 1, 1, 255, 60, 200]).unwrap();
        assert_eq!(r.msg_type, MessageType::Request);
        // A UUID of another type is ignored.
        let mut o = vec![53, 1, 1, 97, 17, 1];
        o.extend_from_slice(&[7; 16]);
        assert_eq!(with_options(&o).unwrap().client_uuid, None);
        // iPXE detection: raw, RFC 3004, option 175.
        assert!(
            with_options(&[53, 1, 1, 77, 4, b'i', b'P', b'X', b'E'])
                .unwrap()
                .is_ipxe()
        );
        assert!(
            with_options(&[53, 1, 1, 77, 8, 2, b'x', b'y', 4, b'i', b'P', b'X', b'E'])
                .unwrap()
                .is_ipxe()
        );
        assert!(
            !with_options(&[53, 1, 1, 77, 3, 9, b'i', b'P'])
                .unwrap()
                .is_ipxe()
        );
        assert!(
            with_options(&[53, 1, 1, 175, 3, 1, 1, 1])
                .unwrap()
                .is_ipxe()
        );
        // Arch from the vendor class when option 93 is missing.
        let mut o = vec![53, 1, 1, 60, 32];
        o.extend_from_slice(b"PXEClient:Arch:00007:UNDI:003016");
        assert_eq!(with_options(&o).unwrap().arch(), 7);
    }

    #[test]
    fn option_overload_is_followed() {
        let mut p = raw_bios_discover();
        p.truncate(240);
        // Main area: overload = 3 (file and sname), the message type lives in sname,
        // the vendor class in file.
        p.extend_from_slice(&[52, 1, 3, 255]);
        p[108..113].copy_from_slice(&[60, 3, b'P', b'X', b'E']);
        p[113] = 255;
        p[44..47].copy_from_slice(&[53, 1, 1]);
        p[47] = 255;
        let r = decode(&p).unwrap();
        assert_eq!(r.overload, 3);
        assert_eq!(r.msg_type, MessageType::Discover);
        assert_eq!(r.vendor_class, Some(&b"PXE"[..]));
        // An overrun inside the file area is refused with its offset.
        p[109] = 200;
        assert_eq!(
            decode(&p),
            Err(DecodeError::OptionOverrun {
                code: 60,
                offset: 108
            })
        );
    }
}
