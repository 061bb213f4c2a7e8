//! Arbitrary bytes through the DHCP decoder and the responder (proxy and full mode, in-memory
//! leases), on port 67 and 4011: no panic, and every answer is a BOOTREPLY of at least the
//! BOOTP minimum size that fits the buffer.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use pxe_proto::consts::BOOTP_MIN_REPLY_LEN as MIN_REPLY_LEN;
use pxe_proto::dhcp as wire;
use pxe_server::config::Config;
use pxe_server::dhcp::DhcpSettings;
use pxe_server::dhcp::leases::MemoryLeaseStore;
use pxe_server::dhcp::responder::{Action, RecvMeta, Responder};

fn configs() -> &'static [DhcpSettings; 2] {
    static C: OnceLock<[DhcpSettings; 2]> = OnceLock::new();
    C.get_or_init(|| {
        let root = std::env::temp_dir();
        let base = format!(
            "[tftp]\nroot = \"{}\"\n[boot]\nbios = \"undionly.kpxe\"\nuefi_x64 = \"snponly.efi\"\n\
             uefi_http = \"http://10.0.0.1/ipxe.efi\"\nipxe_script = \"boot.ipxe\"\n\
             [[hosts]]\nmac = \"52:54:00:12:34:56\"\naddress = \"10.0.0.50\"\n",
            root.display()
        );
        let full = format!(
            "{base}[dhcp]\nenabled = true\nmode = \"full\"\n[[dhcp.subnets]]\nsubnet = \"10.0.0.0/24\"\n\
             range_start = \"10.0.0.100\"\nrange_end = \"10.0.0.103\"\nrouter = \"10.0.0.1\"\n"
        );
        [base, full].map(|text| {
            let c = Config::parse(&text, Path::new("fuzz.toml")).unwrap();
            c.dhcp_settings(&c.host_index())
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode(data);
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut out = Vec::new();
    for cfg in configs() {
        let mut r = Responder::new(cfg, MemoryLeaseStore::new());
        for port in [67, 4011] {
            let meta = RecvMeta {
                src: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 77), 68),
                local_addr: Ipv4Addr::new(10, 0, 0, 1),
                ifindex: 2,
                port,
            };
            // Twice: the second pass sees the leases the first one made.
            for _ in 0..2 {
                if let Action::Respond(t) = r.handle(now, data, &meta, &mut out) {
                    assert_eq!(t.len, out.len());
                    assert!(out.len() >= MIN_REPLY_LEN);
                    assert_eq!(out[0], 2, "BOOTREPLY");
                }
            }
        }
    }
});
