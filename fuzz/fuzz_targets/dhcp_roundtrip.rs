//! Arbitrary bytes through the DHCP decoder and the responder (proxy and full mode, in-memory
//! leases), on port 67 and 4011, and every answer back through an independent decoder
//! (`dhcproto`'s `Message`): decode, respond, encode, decode.
//!
//! Checks: no panic; every answer fills exactly the bytes it claims, is at least the BOOTP
//! minimum size, and decodes as a BOOTREPLY with the request's `xid` and `chaddr` and the
//! message type the responder reports; its `yiaddr` is 0.0.0.0 in proxy mode, and in full
//! mode 0.0.0.0 or an address inside the configured subnet that the configuration gives out
//! (the pool's range or the host's reservation).
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use dhcproto::v4::{Message, Opcode};
use dhcproto::{Decodable, Decoder};
use libfuzzer_sys::fuzz_target;
use pxe_proto::consts::BOOTP_MIN_REPLY_LEN as MIN_REPLY_LEN;
use pxe_proto::dhcp as wire;
use pxe_server::config::Config;
use pxe_server::dhcp::DhcpSettings;
use pxe_server::dhcp::leases::{IfName, MemoryLeaseStore};
use pxe_server::dhcp::responder::{Action, RecvMeta, Responder};

const RESERVED: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);
const RANGE: (Ipv4Addr, Ipv4Addr) = (Ipv4Addr::new(10, 0, 0, 100), Ipv4Addr::new(10, 0, 0, 103));
const SUBNET: (Ipv4Addr, u32) = (Ipv4Addr::new(10, 0, 0, 0), 24);

/// Proxy mode, then full mode.
fn configs() -> &'static [DhcpSettings; 2] {
    static C: OnceLock<[DhcpSettings; 2]> = OnceLock::new();
    C.get_or_init(|| {
        let root = std::env::temp_dir();
        let base = format!(
            "[tftp]\nroot = \"{}\"\n[boot]\nbios = \"undionly.kpxe\"\nuefi_x64 = \"snponly.efi\"\n\
             uefi_http = \"http://10.0.0.1/ipxe.efi\"\nipxe_script = \"boot.ipxe\"\n\
             [[hosts]]\nmac = \"52:54:00:12:34:56\"\naddress = \"{RESERVED}\"\n",
            root.display()
        );
        let full = format!(
            "{base}[dhcp]\nenabled = true\nmode = \"full\"\n[[dhcp.subnets]]\n\
             subnet = \"{}/{}\"\nrange_start = \"{}\"\nrange_end = \"{}\"\nrouter = \"10.0.0.1\"\n",
            SUBNET.0, SUBNET.1, RANGE.0, RANGE.1
        );
        [base, full].map(|text| {
            let c = Config::parse(&text, Path::new("fuzz.toml")).unwrap();
            c.dhcp_settings(&c.host_index())
        })
    })
}

fn in_subnet(a: Ipv4Addr) -> bool {
    u32::from(a) >> (32 - SUBNET.1) == u32::from(SUBNET.0) >> (32 - SUBNET.1)
}

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode(data);
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut out = Vec::new();
    for (mode, cfg) in ["proxy", "full"].into_iter().zip(configs()) {
        let mut r = Responder::new(cfg, MemoryLeaseStore::new());
        for port in [67, 4011] {
            let meta = RecvMeta {
                src: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 77), 68),
                local_addr: Ipv4Addr::new(10, 0, 0, 1),
                ifindex: 2,
                ifname: IfName::new("eth0").unwrap(),
                port,
            };
            // Twice: the second pass sees the leases the first one made.
            for _ in 0..2 {
                let Action::Respond(t) = r.handle(now, data, &meta, &mut out) else {
                    continue;
                };
                assert_eq!(t.len, out.len());
                assert!(out.len() >= MIN_REPLY_LEN);
                // Whatever is answered was a BOOTREQUEST of at least the fixed header.
                let (xid, chaddr) = (&data[4..8], &data[28..34]);
                let msg = Message::decode(&mut Decoder::new(&out))
                    .unwrap_or_else(|e| panic!("{mode}/{port}: the answer does not decode: {e}"));
                assert_eq!(msg.opcode(), Opcode::BootReply, "{mode}/{port}");
                assert_eq!(msg.xid().to_be_bytes(), xid, "{mode}/{port}: xid");
                assert_eq!(msg.chaddr().get(..6), Some(chaddr), "{mode}/{port}: chaddr");
                assert_eq!(msg.opts().msg_type(), Some(t.msg_type), "{mode}/{port}");
                let yiaddr = msg.yiaddr();
                if yiaddr.is_unspecified() {
                    continue;
                }
                assert_eq!(mode, "full", "proxy DHCP gave the address {yiaddr}");
                assert!(in_subnet(yiaddr), "{port}: {yiaddr} outside the subnet");
                assert!(
                    yiaddr == RESERVED || (RANGE.0..=RANGE.1).contains(&yiaddr),
                    "{port}: {yiaddr} is neither the reservation nor in the range"
                );
            }
        }
    }
});
