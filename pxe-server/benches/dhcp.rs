//! Micro-benchmarks of the DHCP path: the responder's parse-and-answer for a PXE DISCOVER (proxy
//! and full mode, over the in-memory lease store), a new client's DISCOVER at a full and at a
//! nearly-full pool (where finding the free address is the work), and the discovery filter's
//! decision (the logic the XDP program and the userspace fallback share) on PXE and plain
//! frames.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use pxe_server::config::Config;
use pxe_server::dhcp::DhcpSettings;
use pxe_server::dhcp::leases::{IfName, Lease, LeaseState, LeaseStore, MemoryLeaseStore};
use pxe_server::dhcp::responder::{Action, RecvMeta, Responder};
use pxe_server::xdp::Fallback;

const PXE_CLASS: &[u8] = b"PXEClient:Arch:00000:UNDI:002001";

/// A BOOTREQUEST DISCOVER from `mac`, with the PXE options when `pxe` (60, 93, 97, 55).
fn discover(mac: [u8; 6], pxe: bool) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // Ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    p[10] = 0x80; // broadcast
    p[28..34].copy_from_slice(&mac);
    p.extend_from_slice(&[99, 130, 83, 99, 53, 1, 1]);
    p.extend_from_slice(&[55, 6, 1, 3, 43, 60, 66, 67]);
    if pxe {
        p.extend_from_slice(&[60, PXE_CLASS.len() as u8]);
        p.extend_from_slice(PXE_CLASS);
        p.extend_from_slice(&[93, 2, 0, 0, 94, 3, 1, 2, 1]);
        p.extend_from_slice(&[97, 17, 0]);
        p.extend_from_slice(&[0x42; 16]);
    }
    p.push(255);
    p
}

/// The same DISCOVER in an Ethernet/IPv4/UDP frame, as the XDP program sees it.
fn frame(mac: [u8; 6], pxe: bool) -> Vec<u8> {
    let payload = discover(mac, pxe);
    let mut f = Vec::with_capacity(42 + payload.len());
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 255, 255, 255, 255]);
    f.extend_from_slice(&68u16.to_be_bytes());
    f.extend_from_slice(&67u16.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&payload);
    f
}

fn config(extra: &str) -> Config {
    let text = format!(
        "[tftp]\nroot = \"/\"\n[dhcp]\nenabled = true\nserver_ip = \"10.0.0.1\"\n{extra}\n\
         [boot]\nbios = \"undionly.kpxe\"\nuefi_x64 = \"snponly.efi\"\n"
    );
    Config::parse(&text, Path::new("bench.toml")).expect("the bench config parses")
}

fn settings(extra: &str) -> DhcpSettings {
    let c = config(extra);
    c.dhcp_settings(&c.host_index())
}

fn meta() -> RecvMeta {
    RecvMeta {
        src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        local_addr: Ipv4Addr::new(10, 0, 0, 1),
        ifindex: 2,
        ifname: IfName::new("eth0").unwrap(),
        port: 67,
    }
}

fn responder(c: &mut Criterion) {
    let pxe = discover([0x52, 0x54, 0, 0x12, 0x34, 0x56], true);
    let plain = discover([0x52, 0x54, 0, 0x12, 0x34, 0x57], false);
    let meta = meta();
    let mut out = Vec::with_capacity(1500);

    let mut proxy = Responder::new(&settings("mode = \"proxy\""), MemoryLeaseStore::new());
    assert!(matches!(
        proxy.handle(SystemTime::now(), &pxe, &meta, &mut out),
        Action::Respond(_)
    ));
    c.bench_function("dhcp proxy: PXE DISCOVER -> OFFER", |b| {
        b.iter(|| proxy.handle(SystemTime::now(), black_box(&pxe), &meta, &mut out))
    });
    // The same with the journeys recording each DISCOVER (one lock, one table update).
    let mut recorded = Responder::new(&settings("mode = \"proxy\""), MemoryLeaseStore::new());
    recorded.set_journeys(std::sync::Arc::default());
    c.bench_function("dhcp proxy: PXE DISCOVER -> OFFER, journeys on", |b| {
        b.iter(|| recorded.handle(SystemTime::now(), black_box(&pxe), &meta, &mut out))
    });
    // A storm of new MACs into a full 16384-host table: every DISCOVER evicts one.
    let table = pxe_server::journey::Journeys::default();
    let mut n = 0u32;
    c.bench_function("journey: DISCOVER of a new MAC into a full table", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let m = n.to_be_bytes();
            let mac = pxe_proto::MacAddr([2, 0, m[0], m[1], m[2], m[3]]);
            let now = pxe_server::journey::Now::current();
            table.dhcp_request(now, mac, None, true)
        })
    });
    c.bench_function("dhcp proxy: plain DISCOVER ignored", |b| {
        b.iter(|| proxy.handle(SystemTime::now(), black_box(&plain), &meta, &mut out))
    });

    let full_cfg = "mode = \"full\"\n[[dhcp.subnets]]\nsubnet = \"10.0.0.0/16\"\n\
                    range_start = \"10.0.1.1\"\nrange_end = \"10.0.200.255\"\nrouter = \"10.0.0.1\"";
    let mut full = Responder::new(&settings(full_cfg), MemoryLeaseStore::new());
    assert!(matches!(
        full.handle(SystemTime::now(), &pxe, &meta, &mut out),
        Action::Respond(_)
    ));
    c.bench_function("dhcp full: PXE DISCOVER -> OFFER (held lease)", |b| {
        b.iter(|| full.handle(SystemTime::now(), black_box(&pxe), &meta, &mut out))
    });
}

/// A RELEASE of `ip` by `mac` to the server 10.0.0.1.
fn release(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut p = discover(mac, false);
    p[12..16].copy_from_slice(&ip.octets()); // ciaddr
    p[242] = 7; // option 53 = RELEASE
    p.pop(); // END
    p.extend_from_slice(&[54, 4, 10, 0, 0, 1, 255]);
    p
}

/// A pool of 4094 addresses with every one bound but `free`, and a new client's DISCOVER:
/// answered "exhausted" (full), or offered the last free address, which the client then
/// releases so that the next iteration finds the pool as it was (nearly full).
fn pool(c: &mut Criterion) {
    let cfg = "mode = \"full\"\n[[dhcp.subnets]]\nsubnet = \"10.0.16.0/20\"\n\
               range_start = \"10.0.16.1\"\nrange_end = \"10.0.31.254\"";
    let meta = RecvMeta {
        local_addr: Ipv4Addr::new(10, 0, 16, 1),
        ..meta()
    };
    let now = SystemTime::now();
    let expires = now.duration_since(UNIX_EPOCH).unwrap().as_secs() + 86_400;
    let mut out = Vec::with_capacity(1500);
    for free in [0u32, 1] {
        let mut r = Responder::new(&settings(cfg), MemoryLeaseStore::new());
        let (first, last) = (
            u32::from(Ipv4Addr::new(10, 0, 16, 1)),
            u32::from(Ipv4Addr::new(10, 0, 31, 254)),
        );
        for n in first..=last - free {
            let lease = Lease {
                ip: Ipv4Addr::from(n),
                mac: pxe_proto::MacAddr([2, 1, 0, 0, (n >> 8) as u8, n as u8]),
                uuid: None,
                expires,
                state: LeaseState::Bound,
                link: None,
            };
            r.store_mut().put(&lease).unwrap();
        }
        let client = [2, 2, 0, 0, 0, 1];
        let ask = discover(client, false);
        if free == 0 {
            assert!(matches!(
                r.handle(now, &ask, &meta, &mut out),
                Action::NoResponse(_)
            ));
            c.bench_function(
                "dhcp full: new client's DISCOVER at a full pool (4094)",
                |b| b.iter(|| r.handle(SystemTime::now(), black_box(&ask), &meta, &mut out)),
            );
        } else {
            // A new client every iteration (a returning one would get its last address back
            // without a look at the pool).
            let mut ask = ask;
            let mut give_back = release(client, Ipv4Addr::from(last));
            let mut n = 0u32;
            c.bench_function(
                "dhcp full: new client's DISCOVER + RELEASE at a nearly full pool (4094, 1 free)",
                |b| {
                    b.iter(|| {
                        n = n.wrapping_add(1);
                        ask[30..34].copy_from_slice(&n.to_be_bytes());
                        give_back[30..34].copy_from_slice(&n.to_be_bytes());
                        let now = SystemTime::now();
                        let a = r.handle(now, black_box(&ask), &meta, &mut out);
                        assert!(matches!(a, Action::Respond(_)), "{a:?}");
                        let a = r.handle(now, black_box(&give_back), &meta, &mut out);
                        assert!(matches!(a, Action::NoResponse(_)), "{a:?}");
                    })
                },
            );
        }
    }
}

fn filter(c: &mut Criterion) {
    let file = config("");
    let mut set = file.xdp.policy_set(&file.host_index());
    set.policy.flags = pxe_ebpf::POLICY_DROP_NON_PXE | pxe_ebpf::POLICY_RATE_LIMIT;
    set.policy.rate_per_sec = 1_000_000;
    set.policy.burst = 1_000;
    let mut f = Fallback::new(set, vec![]);
    let pxe = frame([2, 0, 0, 0, 0, 1], true);
    let plain = frame([2, 0, 0, 0, 0, 2], false);
    assert!(!f.classify_frame(&pxe).is_drop());
    assert!(f.classify_frame(&plain).is_drop());
    c.bench_function("filter: PXE frame (parse, options, bucket) -> pass", |b| {
        b.iter(|| f.classify_frame(black_box(&pxe)))
    });
    c.bench_function("filter: plain frame -> drop not PXE", |b| {
        b.iter(|| f.classify_frame(black_box(&plain)))
    });
}

criterion_group!(benches, responder, pool, filter);
criterion_main!(benches);
