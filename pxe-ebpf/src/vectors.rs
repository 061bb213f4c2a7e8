//! Packets to judge both sides against: builders for DHCP payloads and frames, and
//! [`table`], the frames the XDP program (through `BPF_PROG_TEST_RUN`, in pxe-server's
//! `tests/netns_xdp.rs`) and [`crate::classify_frame`] on the host must agree on. Compiled for
//! the crate's own tests and with the `vectors` feature (std).
extern crate std;

use std::format;
use std::string::String;
use std::vec::Vec;

use crate::*;

pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// A BOOTREQUEST payload: fixed header, cookie, `options` (raw), END.
pub fn bootp(mac: [u8; 6], options: &[u8]) -> Vec<u8> {
    let mut p = std::vec![0u8; BOOTP_FIXED_LEN];
    p[0] = BOOTREQUEST;
    p[1] = 1;
    p[2] = 6;
    p[4..8].copy_from_slice(&[1, 2, 3, 4]);
    p[28..34].copy_from_slice(&mac);
    p.extend_from_slice(&DHCP_MAGIC);
    p.extend_from_slice(options);
    p.push(opt::END);
    p
}

pub fn opt(code: u8, data: &[u8]) -> Vec<u8> {
    let mut v = std::vec![code, data.len() as u8];
    v.extend_from_slice(data);
    v
}

pub fn discover_opts(vendor: Option<&[u8]>, arch: Option<u16>, uuid: bool) -> Vec<u8> {
    let mut o = opt(opt::MESSAGE_TYPE, &[msg_type::DISCOVER]);
    o.extend(opt(55, &[1, 3, 6, 66, 67]));
    if let Some(v) = vendor {
        o.extend(opt(opt::VENDOR_CLASS, v));
    }
    if let Some(a) = arch {
        o.extend(opt(opt::CLIENT_ARCH, &a.to_be_bytes()));
    }
    if uuid {
        let mut u = std::vec![0u8];
        u.extend_from_slice(&[7; 16]);
        o.extend(opt(opt::CLIENT_UUID, &u));
    }
    o
}

pub fn pxe_bios() -> Vec<u8> {
    bootp(
        MAC,
        &discover_opts(Some(b"PXEClient:Arch:00000:UNDI:002001"), Some(0), true),
    )
}
pub fn pxe_uefi() -> Vec<u8> {
    bootp(
        MAC,
        &discover_opts(Some(b"PXEClient:Arch:00007:UNDI:003016"), Some(7), true),
    )
}
pub fn ipxe() -> Vec<u8> {
    let mut o = discover_opts(Some(b"PXEClient:Arch:00000:UNDI:002001"), Some(0), true);
    o.extend(opt(77, b"iPXE"));
    o.extend(opt(175, &[1, 1, 1]));
    bootp(MAC, &o)
}
pub fn http_boot() -> Vec<u8> {
    bootp(
        MAC,
        &discover_opts(Some(b"HTTPClient:Arch:00016:UNDI:003001"), Some(16), true),
    )
}
pub fn dhclient() -> Vec<u8> {
    let mut o = discover_opts(None, None, false);
    o.extend(opt(12, b"debian"));
    bootp(MAC, &o)
}

/// Ethernet (with `tags` VLAN tags) / IPv4 (with `ip_opts` bytes of options) / UDP to `dport`.
pub fn frame(payload: &[u8], tags: &[u16], ip_opts: usize, dport: u16) -> Vec<u8> {
    let mut f = std::vec![0xff; 6];
    f.extend_from_slice(&MAC);
    for &t in tags {
        f.extend_from_slice(&t.to_be_bytes());
        f.extend_from_slice(&[0x00, 0x64]);
    }
    f.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
    let ihl = 20 + ip_opts;
    let total = ihl + 8 + payload.len();
    f.push(0x40 | (ihl / 4) as u8);
    f.push(0);
    f.extend_from_slice(&(total as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 64, IPPROTO_UDP, 0, 0]);
    f.extend_from_slice(&[0, 0, 0, 0, 255, 255, 255, 255]);
    // Options: router alert (4 bytes) then NOPs.
    let mut o = std::vec![148, 4, 0, 0];
    o.resize(ip_opts, 1);
    f.extend_from_slice(&o[..ip_opts]);
    f.extend_from_slice(&68u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Named frames: every client kind in every encapsulation, malformed and foreign ones, an
/// option walk past its bound, and a PXE and a plain DISCOVER truncated at every offset.
pub fn table() -> Vec<(String, Vec<u8>)> {
    let mut t = Vec::new();
    let clients: [(&str, Vec<u8>); 6] = [
        ("pxe_bios", pxe_bios()),
        ("pxe_uefi", pxe_uefi()),
        ("ipxe", ipxe()),
        ("http_boot", http_boot()),
        ("dhclient", dhclient()),
        (
            "deny_me",
            bootp(DENIED_MAC, &discover_opts(Some(b"PXEClient"), None, false)),
        ),
    ];
    let encaps: [(&str, &[u16], usize, u16); 5] = [
        ("plain", &[], 0, DHCP_SERVER_PORT),
        ("vlan", &[ETH_P_8021Q], 0, DHCP_SERVER_PORT),
        ("qinq", &[ETH_P_8021AD, ETH_P_8021Q], 0, PXE_PORT),
        ("ipopts", &[], 40, DHCP_SERVER_PORT),
        ("qinq_ipopts", &[ETH_P_8021AD, ETH_P_8021Q], 40, PXE_PORT),
    ];
    for (c, payload) in &clients {
        for (e, tags, ip_opts, port) in encaps {
            t.push((format!("{c}/{e}"), frame(payload, tags, ip_opts, port)));
        }
    }
    let mut bootreply = dhclient();
    bootreply[0] = 2;
    t.push((
        "bootreply".into(),
        frame(&bootreply, &[], 0, DHCP_SERVER_PORT),
    ));
    t.push(("to_port_68".into(), frame(&dhclient(), &[], 0, 68)));
    let mut o = opt(opt::MESSAGE_TYPE, &[msg_type::DISCOVER]);
    o.extend(std::iter::repeat_n(opt::PAD, MAX_OPTIONS));
    o.extend(opt(opt::VENDOR_CLASS, b"PXEClient"));
    t.push((
        "past_bound".into(),
        frame(&bootp(MAC, &o), &[], 0, DHCP_SERVER_PORT),
    ));
    // Option 97 with type byte 1: the responder reads no UUID, so an architecture alone does
    // not make a boot client.
    let mut o = discover_opts(None, Some(7), false);
    let mut u = std::vec![1u8];
    u.extend_from_slice(&[7; 16]);
    o.extend(opt(opt::CLIENT_UUID, &u));
    t.push((
        "uuid_type1".into(),
        frame(&bootp(MAC, &o), &[], 0, DHCP_SERVER_PORT),
    ));
    // Lengths the responder's decoder refuses: not judged by the walk either.
    let mut o = discover_opts(Some(b"PXEClient"), Some(7), false);
    o.extend(opt(opt::CLIENT_UUID, &[0; 16]));
    t.push((
        "bad_len97".into(),
        frame(&bootp(MAC, &o), &[], 0, DHCP_SERVER_PORT),
    ));
    let mut o = discover_opts(Some(b"PXEClient"), None, true);
    o.extend(opt(opt::CLIENT_ARCH, &[0, 7, 0]));
    t.push((
        "bad_len93".into(),
        frame(&bootp(MAC, &o), &[], 0, DHCP_SERVER_PORT),
    ));
    // A boot client by its architecture and UUID before the walk's bound, its vendor class
    // (which the policy does not need) after it: judged on what the walk found.
    let mut o = discover_opts(None, Some(7), true);
    o.extend((0..MAX_OPTIONS as u8).flat_map(|i| opt(224 + i, &[i])));
    o.extend(opt(opt::VENDOR_CLASS, b"PXEClient"));
    t.push((
        "late60_pxe".into(),
        frame(&bootp(MAC, &o), &[], 0, DHCP_SERVER_PORT),
    ));
    for (name, payload) in crafted() {
        t.push((name.into(), frame(&payload, &[], 0, DHCP_SERVER_PORT)));
    }
    for (c, payload) in [("pxe_bios", pxe_bios()), ("dhclient", dhclient())] {
        let f = frame(&payload, &[ETH_P_8021Q], 8, DHCP_SERVER_PORT);
        for cut in 0..f.len() {
            t.push((format!("{c}/cut{cut}"), f[..cut].to_vec()));
        }
    }
    t
}

/// Requests built to make a bounded or naive option walk read them otherwise than the
/// responder does (first occurrence of an option, overload followed, every option read): the
/// XDP program must not judge them, the daemon's filter judges them as the responder reads
/// them ([`expected_in_userspace`]).
pub fn crafted() -> Vec<(&'static str, Vec<u8>)> {
    let pxe_class = opt(opt::VENDOR_CLASS, b"PXEClient:Arch:00000:UNDI:002001");
    let with = |parts: &[&[u8]]| -> Vec<u8> { parts.concat() };
    let discover = opt(opt::MESSAGE_TYPE, &[msg_type::DISCOVER]);
    let pads = std::vec![opt::PAD; MAX_OPTIONS + 4];
    let many: Vec<u8> = (0..MAX_OPTIONS as u8 + 4)
        .flat_map(|i| opt(224 + (i % 30), &[i]))
        .collect();
    // Option 52 = 1: the options continue in the 128-byte `file` field.
    let overloaded = |file_opts: &[u8]| {
        let mut p = bootp(MAC, &with(&[&discover, &opt(opt::OVERLOAD, &[1])]));
        let mut file = file_opts.to_vec();
        file.push(opt::END);
        let at = pxe_proto::consts::BOOTP_FILE.start;
        p[at..at + file.len()].copy_from_slice(&file);
        p
    };
    std::vec![
        // A plain client padded past the walk's bound: not PXE for the responder.
        ("pad_run_plain", bootp(MAC, &with(&[&pads, &discover]))),
        (
            "pad_run_pxe",
            bootp(MAC, &with(&[&pads, &discover, &pxe_class]))
        ),
        ("long_list_plain", bootp(MAC, &with(&[&many, &discover]))),
        (
            "long_list_pxe",
            bootp(MAC, &with(&[&many, &discover, &pxe_class]))
        ),
        // Two message types: the responder takes the first (a DISCOVER).
        (
            "dup53_pxe",
            bootp(
                MAC,
                &with(&[
                    &discover,
                    &pxe_class,
                    &opt(opt::MESSAGE_TYPE, &[msg_type::REQUEST])
                ]),
            ),
        ),
        // Two vendor classes: the responder takes the first.
        (
            "dup60_plain_first",
            bootp(
                MAC,
                &with(&[&discover, &opt(opt::VENDOR_CLASS, b"MSFT 5.0"), &pxe_class])
            ),
        ),
        ("overload_pxe", overloaded(&pxe_class)),
        ("overload_plain", overloaded(&opt(12, b"host"))),
    ]
}

/// What the daemon's userspace filter decides for each [`crafted`] request under
/// [`TABLE_POLICY_FLAGS`]: the responder's reading of it.
pub fn expected_in_userspace(name: &str) -> Verdict {
    match name {
        "pad_run_pxe" | "long_list_pxe" | "dup53_pxe" | "overload_pxe" => Verdict::Pass,
        "pad_run_plain" | "long_list_plain" | "dup60_plain_first" | "overload_plain" => {
            Verdict::DropNotPxe
        }
        other => panic!("unknown crafted request {other}"),
    }
}

/// The MAC of the `deny_me` frames.
pub const DENIED_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x66];

/// The policy the table's expectations are for.
pub const TABLE_POLICY_FLAGS: u32 = POLICY_DROP_NON_PXE | POLICY_DENY_LIST;

/// What every frame of the shared table must get under [`TABLE_POLICY_FLAGS`] with [`DENIED_MAC`] denied: the XDP program is
/// checked against the same expectations in pxe-server's `tests/netns_xdp.rs`.
pub fn expected_for_table(name: &str) -> Option<Verdict> {
    let client = name.split('/').next().unwrap_or("");
    if name.contains("/cut") {
        return None; // only: never a drop
    }
    Some(match client {
        "pxe_bios" | "pxe_uefi" | "ipxe" | "http_boot" | "late60_pxe" => Verdict::Pass,
        "dhclient" | "uuid_type1" => Verdict::DropNotPxe,
        "deny_me" => Verdict::DropDenied,
        "bootreply" | "past_bound" | "bad_len97" | "bad_len93" => Verdict::Malformed,
        c if c.starts_with("pad_run")
            || c.starts_with("long_list")
            || c.starts_with("dup")
            || c.starts_with("overload") =>
        {
            Verdict::Malformed
        }
        "to_port_68" => Verdict::NotDhcp,
        other => panic!("unknown table entry {other}"),
    })
}
