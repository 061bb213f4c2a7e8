//! The table of packets both sides are judged against: frames for [`classify_frame`] (the XDP
//! program runs the same function) and their UDP payloads for [`classify_payload`] (the
//! daemon's fallback).
extern crate std;

use std::collections::{HashMap, HashSet};
use std::vec::Vec;

use super::*;
use crate::vectors::*;

#[derive(Default)]
struct Env {
    allow: HashSet<[u8; 6]>,
    deny: HashSet<[u8; 6]>,
    buckets: HashMap<[u8; 6], TokenBucket>,
    now_ns: u64,
}

impl PolicyEnv for Env {
    fn is_allowed(&mut self, mac: &[u8; 6]) -> bool {
        self.allow.contains(mac)
    }
    fn is_denied(&mut self, mac: &[u8; 6]) -> bool {
        self.deny.contains(mac)
    }
    fn take_token(&mut self, mac: &[u8; 6], policy: &Policy) -> bool {
        let now = self.now_ns;
        let b = *self
            .buckets
            .entry(*mac)
            .or_insert_with(|| TokenBucket::full(now, policy));
        let (ok, next) = b.take(now, policy);
        self.buckets.insert(*mac, next);
        ok
    }
}

fn proxy() -> Policy {
    Policy {
        flags: POLICY_DROP_NON_PXE,
        ..Policy::default()
    }
}

/// Both entry points on one payload: the frame in every encapsulation, and the payload.
fn check(payload: &[u8], policy: &Policy, want: Verdict) {
    for (tags, ip_opts, dport) in [
        (&[][..], 0, DHCP_SERVER_PORT),
        (&[ETH_P_8021Q][..], 0, DHCP_SERVER_PORT),
        (&[ETH_P_8021AD, ETH_P_8021Q][..], 0, PXE_PORT),
        (&[][..], 40, DHCP_SERVER_PORT),
        (&[ETH_P_8021AD, ETH_P_8021Q][..], 40, PXE_PORT),
    ] {
        let f = frame(payload, tags, ip_opts, dport);
        assert_eq!(
            classify_frame(&f[..], policy, &mut Env::default()),
            want,
            "tags {tags:?} ip options {ip_opts} port {dport}"
        );
    }
    assert_eq!(
        classify_payload(payload, payload.len(), policy, &mut Env::default()),
        want
    );
}

#[test]
fn table_pass_everything_by_default() {
    for p in [pxe_bios(), pxe_uefi(), ipxe(), http_boot(), dhclient()] {
        check(&p, &Policy::default(), Verdict::Pass);
    }
}

#[test]
fn table_proxy_mode_drops_only_non_boot_clients() {
    for p in [pxe_bios(), pxe_uefi(), ipxe(), http_boot()] {
        check(&p, &proxy(), Verdict::Pass);
    }
    check(&dhclient(), &proxy(), Verdict::DropNotPxe);
    // A vendor class that only contains "PXEClient" later is not a PXE client.
    let other = bootp(MAC, &discover_opts(Some(b"MSFT PXEClient"), None, false));
    check(&other, &proxy(), Verdict::DropNotPxe);
    // A REQUEST without option 60 but with arch and UUID is a boot client.
    let mut o = opt(opt::MESSAGE_TYPE, &[msg_type::REQUEST]);
    o.extend(opt(opt::CLIENT_ARCH, &[0, 7]));
    o.extend(opt(opt::CLIENT_UUID, &[0; 17]));
    check(&bootp(MAC, &o), &proxy(), Verdict::Pass);
}

#[test]
fn parse_extracts_fields() {
    let f = frame(&pxe_uefi(), &[ETH_P_8021Q], 8, DHCP_SERVER_PORT);
    let info = parse_frame(&f[..]).unwrap();
    assert_eq!(info.mac, MAC);
    assert_eq!(info.msg_type, msg_type::DISCOVER);
    assert_eq!(info.class, ClientClass::Pxe);
    assert_eq!(info.arch, Some(7));
    assert!(info.has_uuid);
    let info = parse_dhcp(&http_boot()[..], 0, http_boot().len()).unwrap();
    assert_eq!(info.class, ClientClass::Http);
    assert_eq!(info.arch, Some(16));
    let info = parse_dhcp(&dhclient()[..], 0, dhclient().len()).unwrap();
    assert_eq!(info.class, ClientClass::Other);
    assert_eq!((info.arch, info.has_uuid), (None, false));
}

#[test]
fn not_dhcp_is_not_judged() {
    let p = dhclient();
    // Other port, other protocol, other ethertype, three tags, a fragment.
    let f = frame(&p, &[], 0, 68);
    assert_eq!(parse_frame(&f[..]), Err(ParseError::NotDhcp));
    let mut f = frame(&p, &[], 0, 67);
    f[14 + 9] = 6;
    assert_eq!(parse_frame(&f[..]), Err(ParseError::NotDhcp));
    let mut f = frame(&p, &[], 0, 67);
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    assert_eq!(parse_frame(&f[..]), Err(ParseError::NotDhcp));
    let f = frame(&p, &[ETH_P_8021Q; 3], 0, 67);
    assert_eq!(parse_frame(&f[..]), Err(ParseError::NotDhcp));
    let mut f = frame(&p, &[], 0, 67);
    f[14 + 6] = 0x20; // more fragments
    assert_eq!(parse_frame(&f[..]), Err(ParseError::NotDhcp));
    assert_eq!(
        classify_frame(&f[..], &proxy(), &mut Env::default()),
        Verdict::NotDhcp
    );
}

#[test]
fn malformed_dhcp_passes() {
    // BOOTREPLY, bad cookie, option overrunning the payload, UDP length beyond IP length.
    let mut p = dhclient();
    p[0] = 2;
    check(&p, &proxy(), Verdict::Malformed);
    let mut p = dhclient();
    p[BOOTP_FIXED_LEN] = 0;
    check(&p, &proxy(), Verdict::Malformed);
    let mut p = bootp(MAC, &opt(opt::MESSAGE_TYPE, &[msg_type::DISCOVER]));
    p.pop();
    p.extend_from_slice(&[opt::VENDOR_CLASS, 40, b'P']);
    check(&p, &proxy(), Verdict::Malformed);
    let mut f = frame(&dhclient(), &[], 0, 67);
    f[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&2000u16.to_be_bytes());
    assert_eq!(
        classify_frame(&f[..], &proxy(), &mut Env::default()),
        Verdict::Malformed
    );
}

#[test]
fn truncated_at_every_offset_never_drops_or_panics() {
    for payload in [pxe_bios(), dhclient(), ipxe()] {
        for (tags, ip_opts) in [(&[][..], 0), (&[ETH_P_8021AD, ETH_P_8021Q][..], 12)] {
            let f = frame(&payload, tags, ip_opts, DHCP_SERVER_PORT);
            let headers = f.len() - payload.len();
            for cut in 0..f.len() {
                let v = classify_frame(&f[..cut], &proxy(), &mut Env::default());
                // The IP total length no longer fits: never judged, never dropped.
                let want_malformed = cut >= headers;
                assert!(
                    v == Verdict::NotDhcp || v == Verdict::Malformed,
                    "cut {cut}: {v:?}"
                );
                if want_malformed {
                    assert_eq!(v, Verdict::Malformed, "cut {cut}");
                }
            }
            // The payload alone, cut (the fallback gets what recvmmsg returned).
            for cut in 0..payload.len() {
                let v = classify_payload(&payload[..cut], cut, &proxy(), &mut Env::default());
                assert!(!v.is_drop(), "cut {cut}: {v:?}");
                if cut < BOOTP_OPTIONS_OFF {
                    assert_eq!(v, Verdict::Malformed, "cut {cut}");
                }
            }
        }
    }
}

#[test]
fn option_walk_stops_at_the_bound() {
    // MAX_OPTIONS - 1 pads, then the vendor class: the walk gives up before it.
    let mut o = opt(opt::MESSAGE_TYPE, &[msg_type::DISCOVER]);
    o.extend(std::iter::repeat_n(opt::PAD, MAX_OPTIONS));
    o.extend(opt(opt::VENDOR_CLASS, b"PXEClient"));
    let p = bootp(MAC, &o);
    // Not found -> not judged (fail open), even in proxy mode.
    check(&p, &proxy(), Verdict::Malformed);
    // With fewer pads it is found.
    let mut o = opt(opt::MESSAGE_TYPE, &[msg_type::DISCOVER]);
    o.extend(std::iter::repeat_n(opt::PAD, MAX_OPTIONS - 3));
    o.extend(opt(opt::VENDOR_CLASS, b"PXEClient"));
    check(&bootp(MAC, &o), &proxy(), Verdict::Pass);
    // A boot client identified before the bound is judged even if the walk does not end.
    let mut o = discover_opts(Some(b"PXEClient"), Some(0), false);
    o.extend(std::iter::repeat_n(opt::PAD, 2 * MAX_OPTIONS));
    check(&bootp(MAC, &o), &proxy(), Verdict::Pass);
    // A huge payload: the walk never reads past MAX_DHCP_LEN.
    let mut o = opt(opt::MESSAGE_TYPE, &[msg_type::DISCOVER]);
    for _ in 0..20 {
        o.extend(opt(250, &[0; 100]));
    }
    let p = bootp(MAC, &o);
    assert!(p.len() > MAX_DHCP_LEN);
    check(&p, &proxy(), Verdict::Malformed);
}

#[test]
fn deny_and_allow_lists() {
    let policy = Policy {
        flags: POLICY_DENY_LIST | POLICY_ALLOW_LIST,
        ..Policy::default()
    };
    let f = frame(&pxe_bios(), &[], 0, 67);
    let mut env = Env::default();
    // Allow-list mode, not listed.
    assert_eq!(
        classify_frame(&f[..], &policy, &mut env),
        Verdict::DropDenied
    );
    env.allow.insert(MAC);
    assert_eq!(classify_frame(&f[..], &policy, &mut env), Verdict::Pass);
    // Deny wins over allow.
    env.deny.insert(MAC);
    assert_eq!(
        classify_frame(&f[..], &policy, &mut env),
        Verdict::DropDenied
    );
    // Deny-list only: other MACs pass.
    let deny_only = Policy {
        flags: POLICY_DENY_LIST,
        ..Policy::default()
    };
    let other = frame(
        &bootp([2; 6], &discover_opts(None, None, false)),
        &[],
        0,
        67,
    );
    assert_eq!(
        classify_frame(&other[..], &deny_only, &mut env),
        Verdict::Pass
    );
    assert_eq!(
        classify_frame(&f[..], &deny_only, &mut env),
        Verdict::DropDenied
    );
}

#[test]
fn token_bucket_rate_and_burst() {
    let policy = Policy {
        flags: POLICY_RATE_LIMIT,
        rate_per_sec: 2,
        burst: 3,
        _pad: 0,
    };
    let t0 = 5_000_000_000;
    let mut b = TokenBucket::full(t0, &policy);
    // Burst of 3, then dry.
    for i in 0..3 {
        let (ok, n) = b.take(t0, &policy);
        assert!(ok, "token {i}");
        b = n;
    }
    let (ok, n) = b.take(t0, &policy);
    assert!(!ok);
    b = n;
    // 2 per second: one token after 500 ms, not after 499 ms.
    let (ok, n) = b.take(t0 + 499_000_000, &policy);
    assert!(!ok);
    b = n;
    let (ok, n) = b.take(t0 + 500_000_000, &policy);
    assert!(ok);
    b = n;
    // A long pause refills to the burst, not beyond.
    let mut passed = 0;
    let t1 = t0 + 3600 * 1_000_000_000;
    for _ in 0..10 {
        let (ok, n) = b.take(t1, &policy);
        passed += ok as u32;
        b = n;
    }
    assert_eq!(passed, 3);
    // A clock going backwards refills nothing and does not move last_ns back.
    let (ok, n) = b.take(t0, &policy);
    assert!(!ok);
    assert_eq!(n.last_ns, t1);
    // Rate 0 / burst 0: nothing metered passes.
    let zero = Policy { burst: 0, ..policy };
    assert!(!TokenBucket::full(0, &zero).take(10, &zero).0);
    // Huge values are clamped, no overflow.
    let huge = Policy {
        rate_per_sec: u32::MAX,
        burst: u32::MAX,
        ..policy
    };
    let (ok, n) = TokenBucket::default().take(u64::MAX, &huge);
    assert!(ok);
    assert!(n.nano_tokens < u64::from(MAX_BURST) * 1_000_000_000);
}

#[test]
fn rate_limit_meters_discover_per_mac() {
    let policy = Policy {
        flags: POLICY_RATE_LIMIT | POLICY_DROP_NON_PXE,
        rate_per_sec: 1,
        burst: 2,
        _pad: 0,
    };
    let f = frame(&pxe_bios(), &[], 0, 67);
    let mut env = Env::default();
    let verdicts: Vec<Verdict> = (0..4)
        .map(|_| classify_frame(&f[..], &policy, &mut env))
        .collect();
    assert_eq!(
        verdicts,
        [
            Verdict::Pass,
            Verdict::Pass,
            Verdict::DropRateLimited,
            Verdict::DropRateLimited
        ]
    );
    // Another MAC has its own bucket.
    let g = frame(
        &bootp([9; 6], &discover_opts(Some(b"PXEClient"), None, false)),
        &[],
        0,
        67,
    );
    assert_eq!(classify_frame(&g[..], &policy, &mut env), Verdict::Pass);
    // After a second, one more.
    env.now_ns += 1_000_000_000;
    assert_eq!(classify_frame(&f[..], &policy, &mut env), Verdict::Pass);
    // Non-boot clients are dropped as such and cost no token; INFORM is not metered.
    assert_eq!(env.buckets.len(), 2);
    let d = frame(&dhclient(), &[], 0, 67);
    assert_eq!(
        classify_frame(&d[..], &policy, &mut env),
        Verdict::DropNotPxe
    );
    let mut o = opt(opt::MESSAGE_TYPE, &[8]);
    o.extend(opt(opt::VENDOR_CLASS, b"PXEClient"));
    let inform = frame(&bootp([3; 6], &o), &[], 0, 67);
    assert_eq!(
        classify_frame(&inform[..], &policy, &mut env),
        Verdict::Pass
    );
    assert_eq!(env.buckets.len(), 2);
}

#[test]
fn verdict_counters() {
    assert_eq!(Verdict::NotDhcp.counter(), None);
    assert_eq!(Verdict::Malformed.counter(), Some(Counter::Malformed));
    assert!(!Verdict::Malformed.is_drop());
    assert!(Verdict::DropRateLimited.is_drop());
    assert_eq!(COUNTER_NAMES[Counter::DroppedRate as usize], "dropped_rate");
}

#[test]
fn shared_table_on_the_host() {
    let policy = Policy {
        flags: POLICY_DROP_NON_PXE | POLICY_DENY_LIST,
        ..Policy::default()
    };
    let mut env = Env::default();
    env.deny.insert(DENIED_MAC);
    let table = table();
    assert!(table.len() > 600);
    for (name, f) in &table {
        let v = classify_frame(&f[..], &policy, &mut env);
        match expected_for_table(name) {
            Some(want) => assert_eq!(v, want, "{name}"),
            None => assert!(!v.is_drop(), "{name}: {v:?}"),
        }
    }
}

/// Writes the binary seeds of two fuzz targets into `$FUZZ_CORPUS/TARGET/seed-NAME`
/// (`scripts/fuzz-seeds.sh` runs it, with the repository's `fuzz/corpus`): for `xdp_decision`
/// a 12-byte header (policy, list bits, repeats, clock step; see that target) before frames
/// and payloads of this table, for `dhcp_roundtrip` DHCP requests built with its builders.
#[test]
#[ignore = "writes files: run by scripts/fuzz-seeds.sh"]
fn write_fuzz_seeds() {
    use std::string::String;
    let dir = std::path::PathBuf::from(
        std::env::var_os("FUZZ_CORPUS").expect("FUZZ_CORPUS names the fuzz corpus directory"),
    );
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(std::format!("seed-{name}")), bytes).unwrap();
    };

    // xdp_decision: flags byte (policy bits 0-3, payload 0x10, denied 0x20, allowed 0x40),
    // rate, burst, repeats - 1, step in ms.
    let header = |flags: u8, rate: u32, burst: u32, repeats: u8, step_ms: i16| -> Vec<u8> {
        let mut h = std::vec![flags];
        h.extend_from_slice(&rate.to_le_bytes());
        h.extend_from_slice(&burst.to_le_bytes());
        h.push(repeats);
        h.extend_from_slice(&step_ms.to_le_bytes());
        h
    };
    let proxy = TABLE_POLICY_FLAGS as u8;
    let rate = (POLICY_RATE_LIMIT | POLICY_DROP_NON_PXE) as u8;
    let allow = POLICY_ALLOW_LIST as u8;
    let table = table();
    let framed = |name: &str| -> &Vec<u8> { &table.iter().find(|(n, _)| n == name).expect(name).1 };
    let mut xdp: Vec<(String, Vec<u8>)> = Vec::new();
    for name in [
        "pxe_bios/plain",
        "pxe_uefi/vlan",
        "ipxe/qinq_ipopts",
        "http_boot/ipopts",
        "dhclient/plain",
        "bootreply",
        "to_port_68",
        "past_bound",
        "pad_run_pxe",
        "long_list_pxe",
        "dup53_pxe",
        "dup60_plain_first",
        "overload_pxe",
    ] {
        xdp.push((
            name.replace('/', "-"),
            [header(proxy, 0, 0, 0, 0), framed(name).clone()].concat(),
        ));
    }
    xdp.push((
        "deny_me-plain-denied".into(),
        [
            header(proxy | 0x20, 0, 0, 0, 0),
            framed("deny_me/plain").clone(),
        ]
        .concat(),
    ));
    xdp.push((
        "pxe_bios-allow-list".into(),
        [
            header(allow | 0x40, 0, 0, 0, 0),
            framed("pxe_bios/qinq").clone(),
        ]
        .concat(),
    ));
    xdp.push((
        "pxe_uefi-rate-2-burst-3-x10-every-100ms".into(),
        [header(rate, 2, 3, 9, 100), framed("pxe_uefi/plain").clone()].concat(),
    ));
    xdp.push((
        "ipxe-rate-clock-backwards".into(),
        [header(rate, 1, 1, 5, -700), framed("ipxe/vlan").clone()].concat(),
    ));
    xdp.push((
        "payload-pxe_bios".into(),
        [header(proxy | 0x10, 0, 0, 0, 0), pxe_bios()].concat(),
    ));
    xdp.push((
        "payload-dhclient-rate".into(),
        [header(rate | 0x10, 5, 2, 3, 10), dhclient()].concat(),
    ));
    for (name, bytes) in &xdp {
        write("xdp_decision", name, bytes);
    }

    // dhcp_roundtrip: the clients of the table (their MAC is the fuzz configuration's host
    // with a reservation), a REQUEST for that reservation, and a stranger's exchange with the
    // pool (full mode).
    let stranger = [0x02, 0, 0, 0, 0, 0x42];
    let with = |parts: &[Vec<u8>]| -> Vec<u8> { parts.concat() };
    let pxe_class = opt(opt::VENDOR_CLASS, b"PXEClient:Arch:00007:UNDI:003016");
    let req_ip = |ip: [u8; 4]| opt(50, &ip);
    let server = opt(54, &[10, 0, 0, 1]);
    let mut inform = bootp(
        stranger,
        &with(&[
            opt(opt::MESSAGE_TYPE, &[msg_type::INFORM]),
            pxe_class.clone(),
        ]),
    );
    inform[12..16].copy_from_slice(&[10, 0, 0, 101]);
    let dhcp: [(&str, Vec<u8>); 11] = [
        ("pxe_bios", pxe_bios()),
        ("pxe_uefi", pxe_uefi()),
        ("ipxe", ipxe()),
        ("http_boot", http_boot()),
        ("dhclient", dhclient()),
        (
            "request-reserved",
            bootp(
                MAC,
                &with(&[
                    opt(opt::MESSAGE_TYPE, &[msg_type::REQUEST]),
                    req_ip([10, 0, 0, 50]),
                    server.clone(),
                    pxe_class.clone(),
                    opt(opt::CLIENT_ARCH, &[0, 7]),
                ]),
            ),
        ),
        (
            "stranger-discover",
            bootp(stranger, &discover_opts(Some(b"PXEClient"), Some(7), true)),
        ),
        (
            "stranger-request-pool",
            bootp(
                stranger,
                &with(&[
                    opt(opt::MESSAGE_TYPE, &[msg_type::REQUEST]),
                    req_ip([10, 0, 0, 100]),
                    server.clone(),
                ]),
            ),
        ),
        (
            "stranger-init-reboot-elsewhere",
            bootp(
                stranger,
                &with(&[
                    opt(opt::MESSAGE_TYPE, &[msg_type::REQUEST]),
                    req_ip([192, 168, 1, 9]),
                ]),
            ),
        ),
        ("stranger-inform", inform),
        (
            "release",
            bootp(
                MAC,
                &with(&[opt(opt::MESSAGE_TYPE, &[msg_type::RELEASE]), server.clone()]),
            ),
        ),
    ];
    for (name, bytes) in &dhcp {
        write("dhcp_roundtrip", name, bytes);
    }
}
