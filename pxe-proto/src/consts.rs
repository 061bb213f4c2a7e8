//! The one table of wire constants: ports, frame and BOOTP layout, DHCP option codes and
//! message types, the vendor classes of boot clients, and the client architecture codes.
//! Everything here is `core`-only, so the XDP program uses the same table as the daemon and
//! the simulator.

/// UDP port of DHCP servers (and of relays' answers).
pub const DHCP_SERVER_PORT: u16 = 67;
/// UDP port of DHCP clients.
pub const DHCP_CLIENT_PORT: u16 = 68;
/// UDP port of the PXE boot server (PXE 2.1: REQUEST/INFORM after a ProxyDHCP offer).
pub const PXE_PORT: u16 = 4011;
/// UDP port of TFTP listeners (RFC 1350).
pub const TFTP_PORT: u16 = 69;
/// TCP port of the HTTP boot service.
pub const HTTP_PORT: u16 = 80;

/// Ethernet header without VLAN tags.
pub const ETH_HLEN: usize = 14;
pub const ETH_P_IPV4: u16 = 0x0800;
/// 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// 802.1ad (QinQ) outer tag.
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const IPPROTO_UDP: u8 = 17;

/// BOOTP fixed header (op .. file), before the magic cookie.
pub const BOOTP_FIXED_LEN: usize = 236;
/// Fixed header plus the magic cookie: where the options start, and the shortest DHCP
/// message.
pub const BOOTP_OPTIONS_OFF: usize = 240;
/// The DHCP magic cookie (RFC 2131 §3).
pub const DHCP_MAGIC: [u8; 4] = [99, 130, 83, 99];
/// BOOTP `op` of a client's message.
pub const BOOTREQUEST: u8 = 1;
/// BOOTP `op` of a server's answer.
pub const BOOTREPLY: u8 = 2;
/// The `sname` field (searched for options under overload, option 52).
pub const BOOTP_SNAME: core::ops::Range<usize> = 44..108;
/// The `file` field (searched for options under overload, option 52).
pub const BOOTP_FILE: core::ops::Range<usize> = 108..236;
/// The `chaddr` field; its first 6 bytes are an Ethernet client's MAC.
pub const BOOTP_CHADDR: core::ops::Range<usize> = 28..44;
/// BOOTP flags: the client wants broadcast answers.
pub const BOOTP_FLAG_BROADCAST: u16 = 0x8000;
/// Answers are padded to the BOOTP minimum; some old PXE ROMs drop shorter ones.
pub const BOOTP_MIN_REPLY_LEN: usize = 300;

/// DHCP option codes (RFC 2132 and the PXE ones of RFC 4578).
pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    /// Vendor-specific information; PXE sub-options in a PXE answer.
    pub const VENDOR_OPTIONS: u8 = 43;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    /// Vendor class identifier: `PXEClient…` / `HTTPClient…`.
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    pub const TFTP_SERVER: u8 = 66;
    pub const BOOTFILE: u8 = 67;
    /// User class (RFC 3004); iPXE sends `iPXE`.
    pub const USER_CLASS: u8 = 77;
    /// Client system architecture (RFC 4578), see [`super::arch`].
    pub const CLIENT_ARCH: u8 = 93;
    /// Client network interface identifier (UNDI version).
    pub const CLIENT_NDI: u8 = 94;
    /// Client machine identifier (UUID/GUID, RFC 4578).
    pub const CLIENT_UUID: u8 = 97;
    /// iPXE's encapsulated options.
    pub const IPXE_ENCAP: u8 = 175;
    pub const END: u8 = 255;
}

/// DHCP message types (option 53).
pub mod msg_type {
    pub const DISCOVER: u8 = 1;
    pub const OFFER: u8 = 2;
    pub const REQUEST: u8 = 3;
    pub const DECLINE: u8 = 4;
    pub const ACK: u8 = 5;
    pub const NAK: u8 = 6;
    pub const RELEASE: u8 = 7;
    pub const INFORM: u8 = 8;
}

/// Client system architecture types (option 93; RFC 4578 §2.1 and the IANA registry of
/// processor architecture types). Only the codes a boot server tells apart are named.
pub mod arch {
    /// x86 BIOS (also what a PXE 2.0 client without option 93 is taken for).
    pub const X86_BIOS: u16 = 0;
    /// x86 (IA32) UEFI.
    pub const X86_UEFI: u16 = 6;
    /// x64 UEFI.
    pub const X64_UEFI: u16 = 7;
    /// EFI byte code; x64 UEFI firmware of several vendors sends it instead of 7.
    pub const EBC: u16 = 9;
    /// ARM 32-bit UEFI.
    pub const ARM32_UEFI: u16 = 10;
    /// ARM 64-bit UEFI.
    pub const ARM64_UEFI: u16 = 11;
    /// x86 UEFI HTTP boot.
    pub const X86_UEFI_HTTP: u16 = 15;
    /// x64 UEFI HTTP boot.
    pub const X64_UEFI_HTTP: u16 = 16;
    /// ARM 64-bit UEFI HTTP boot.
    pub const ARM64_UEFI_HTTP: u16 = 19;
}

/// Option 60 prefix of a PXE client (and of a ProxyDHCP answer to one).
pub const PXE_CLIENT: &[u8; 9] = b"PXEClient";
/// Option 60 prefix of a UEFI HTTP boot client (and of the answer to one).
pub const HTTP_CLIENT: &[u8; 10] = b"HTTPClient";
/// Option 77 of iPXE.
pub const IPXE_USER_CLASS: &[u8; 4] = b"iPXE";
/// PXE option 43 for a client that should boot the file of this offer directly:
/// sub-option 6 (PXE_DISCOVERY_CONTROL), length 1, value 8 (bit 3), then End.
pub const PXE_VENDOR_OPTIONS: [u8; 4] = [6, 1, 8, 255];

/// Largest lease time a request may ask for before the responder clamps it (one year).
pub const MAX_REQUESTED_LEASE_SECS: u32 = 366 * 24 * 3600;
