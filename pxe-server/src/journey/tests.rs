use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::hosts::{HostConfig, NextBoot};

fn mac(n: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0, 0, n])
}

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, n)
}

fn t0() -> Now {
    Now {
        mono: Instant::now(),
        unix_ms: 1_800_000_000_000,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A `[[hosts]]` entry for `mac(n)` named `node<n>`.
fn named_host(n: u8) -> HostConfig {
    HostConfig {
        mac: Some(mac(n)),
        uuid: None,
        hostname: Some(format!("node{n}")),
        address: None,
        boot: BootProfile::default(),
        next_boot: NextBoot::Local,
        vars: Default::default(),
    }
}

/// DISCOVER, OFFER and ACK of `m` at `ip`, at `now`.
fn dhcp(t: &mut JourneyTable, now: Now, m: MacAddr, addr: Ipv4Addr) {
    t.dhcp_request(now, m, None, true);
    t.dhcp_answer(now, m, DhcpAnswer::Offer, Some(addr));
    t.dhcp_request(now, m, None, false);
    t.dhcp_answer(now, m, DhcpAnswer::Ack, Some(addr));
}

#[test]
fn phases_are_recorded_in_order_and_a_finished_boot_is_counted_once() {
    let mut t = JourneyTable::new(16, secs(300));
    let now = t0();
    let uuid: ClientUuid = "4c4c4544-0042-3510-8052-b4c04f5a4d31".parse().unwrap();
    t.dhcp_request(now, mac(1), Some(uuid), true);
    t.dhcp_answer(now.after(secs(1)), mac(1), DhcpAnswer::Offer, Some(ip(1)));
    t.dhcp_answer(now.after(secs(2)), mac(1), DhcpAnswer::Ack, Some(ip(1)));
    t.transfer_started(now.after(secs(3)), ip(1), FileClass::BootFile);
    // iPXE's own DHCP after the boot file is the same boot.
    t.dhcp_request(now.after(secs(4)), mac(1), None, true);
    t.transfer_started(now.after(secs(5)), ip(1), FileClass::Kernel);
    t.transfer_started(now.after(secs(6)), ip(1), FileClass::Initrd);
    let e = t.get(&mac(1)).unwrap();
    assert_eq!(e.phase, Some(Phase::Initrd));
    assert_eq!(e.uuid, Some(uuid));
    assert_eq!(e.boot, 1);
    assert!(!e.finished(), "started, not completed");
    let steps: Vec<_> = e.timeline().map(|(p, at)| (p, at - now.unix_ms)).collect();
    assert_eq!(
        steps,
        [
            (Phase::Discover, 0),
            (Phase::Offer, 1000),
            (Phase::Ack, 2000),
            (Phase::BootFile, 3000),
            (Phase::Kernel, 5000),
            (Phase::Initrd, 6000),
        ]
    );
    t.transfer_done(now.after(secs(7)), ip(1), FileClass::Initrd);
    assert!(t.get(&mac(1)).unwrap().finished());
    assert_eq!(t.stats().completed, 1);
    // More progress on a finished boot counts nothing more.
    t.transfer_done(now.after(secs(8)), ip(1), FileClass::Initrd);
    assert_eq!(t.stats().completed, 1);
    assert_eq!(t.completed_per_sec(now.after(secs(9)), 4), [0, 1, 0, 0]);
    // A ProxyDHCP OFFER is the whole answer to a DISCOVER: offer and ack.
    t.dhcp_request(now, mac(2), None, true);
    t.dhcp_answer(now, mac(2), DhcpAnswer::ProxyOffer, None);
    let e = t.get(&mac(2)).unwrap();
    assert_eq!(e.phase, Some(Phase::Ack));
    assert_eq!(e.timeline().count(), 3);
}

#[test]
fn an_install_is_finished_by_its_callback() {
    let mut t = JourneyTable::new(16, secs(300));
    let now = t0();
    dhcp(&mut t, now, mac(1), ip(1));
    t.transfer_done(now, ip(1), FileClass::Initrd);
    t.reached_at_address(now, ip(1), Phase::Template);
    let e = t.get(&mac(1)).unwrap();
    assert!(!e.finished(), "an install is in progress");
    assert!(t.is_stuck(e, now.after(secs(300))));
    t.callback(now.after(secs(10)), mac(1));
    let e = t.get(&mac(1)).unwrap();
    assert!(e.finished());
    assert_eq!(e.phase, Some(Phase::Callback));
    assert_eq!(t.stats().completed, 1, "one boot, counted once");
}

#[test]
fn stuck_hosts_keep_their_last_phase_and_error_and_a_new_discover_is_a_new_boot() {
    let mut t = JourneyTable::new(16, secs(300));
    let now = t0();
    dhcp(&mut t, now, mac(1), ip(1));
    t.transfer_started(now, ip(1), FileClass::Kernel);
    t.error_at_address(now, ip(1), ErrorKind::TftpError, 1, "initrd.img");
    let e = t.get(&mac(1)).unwrap();
    assert!(!t.is_stuck(e, now.after(secs(299))));
    assert!(t.is_stuck(e, now.after(secs(300))));
    assert_eq!(e.phase, Some(Phase::Kernel));
    let err = e.last_error.unwrap();
    assert_eq!(
        (err.kind, err.code, err.detail()),
        (ErrorKind::TftpError, 1, "initrd.img")
    );
    // A DISCOVER before the stuck time is the same boot, after it a new one.
    t.dhcp_request(now.after(secs(100)), mac(1), None, true);
    assert_eq!(t.get(&mac(1)).unwrap().boot, 1);
    let later = now.after(secs(500));
    t.dhcp_request(later, mac(1), None, true);
    let e = t.get(&mac(1)).unwrap();
    assert_eq!(e.boot, 2);
    assert_eq!(e.phase, Some(Phase::Discover));
    assert_eq!(e.since_ms, later.unix_ms);
    assert!(e.last_error.is_none());
    assert_eq!(e.timeline().count(), 1);
    // A finished journey's DISCOVER also starts a new boot.
    t.dhcp_answer(later, mac(1), DhcpAnswer::Ack, Some(ip(1)));
    t.transfer_done(later, ip(1), FileClass::Initrd);
    t.dhcp_request(later.after(secs(1)), mac(1), None, true);
    assert_eq!(t.get(&mac(1)).unwrap().boot, 3);
    // A REQUEST alone starts no journey.
    t.dhcp_request(later, mac(9), None, false);
    assert!(t.get(&mac(9)).is_none());
}

#[test]
fn eviction_takes_the_oldest_finished_then_the_oldest_progress_and_stays_bounded() {
    let mut t = JourneyTable::new(4, secs(300));
    let now = t0();
    for n in 1..=4 {
        dhcp(&mut t, now.after(secs(u64::from(n))), mac(n), ip(n));
    }
    // 2 finishes after 3 does: 3 is the oldest finished.
    t.transfer_done(now.after(secs(10)), ip(3), FileClass::Initrd);
    t.transfer_done(now.after(secs(11)), ip(2), FileClass::Initrd);
    t.dhcp_request(now.after(secs(12)), mac(5), None, true);
    assert!(t.get(&mac(3)).is_none(), "oldest finished evicted");
    assert_eq!(t.mac_at(ip(3)), None, "its address went with it");
    t.dhcp_request(now.after(secs(13)), mac(6), None, true);
    assert!(t.get(&mac(2)).is_none());
    // No finished journey left: the oldest by last progress (5, since 1 and 4 moved on).
    t.transfer_started(now.after(secs(14)), ip(1), FileClass::Kernel);
    t.transfer_started(now.after(secs(15)), ip(4), FileClass::Kernel);
    t.dhcp_request(now.after(secs(16)), mac(7), None, true);
    assert!(t.get(&mac(5)).is_none());
    for n in [1, 4, 6, 7] {
        assert!(t.get(&mac(n)).is_some(), "{n}");
    }
    assert_eq!(t.stats().evicted, 3);
    assert_eq!(t.stats().hosts, 4);
    // A flood of new MACs never grows it past its bound.
    for i in 0..10_000u32 {
        let b = i.to_be_bytes();
        let m = MacAddr([2, 0, b[0], b[1], b[2], b[3]]);
        t.dhcp_request(now.after(secs(20)), m, None, true);
        t.dhcp_answer(
            now.after(secs(20)),
            m,
            DhcpAnswer::Offer,
            Some(Ipv4Addr::from(i)),
        );
    }
    assert_eq!(t.stats().hosts, 4);
    assert_eq!(t.stats().evicted, 3 + 10_000);
    assert!(t.mac_at(Ipv4Addr::from(9_999u32)).is_some());
    assert!(
        t.mac_at(Ipv4Addr::from(5u32)).is_none(),
        "bounded address map"
    );
}

#[test]
fn addresses_tie_transfers_to_hosts() {
    let mut t = JourneyTable::new(16, secs(300));
    let now = t0();
    dhcp(&mut t, now, mac(1), ip(1));
    // Unknown address: counted, no journey.
    t.transfer_started(now, ip(7), FileClass::Kernel);
    assert_eq!(t.stats().unattributed, 1);
    assert_eq!(t.stats().hosts, 1);
    // The address moves to another host: the first loses it.
    dhcp(&mut t, now, mac(2), ip(1));
    assert_eq!(t.mac_at(ip(1)), Some(mac(2)));
    assert_eq!(t.get(&mac(1)).unwrap().address, None);
    // The first gets a new one.
    t.set_address(mac(1), ip(3), now);
    t.transfer_started(now, ip(3), FileClass::Kernel);
    assert_eq!(t.get(&mac(1)).unwrap().phase, Some(Phase::Kernel));
    assert_eq!(t.get(&mac(2)).unwrap().phase, Some(Phase::Ack));
    t.set_address(mac(1), Ipv4Addr::UNSPECIFIED, now);
    assert_eq!(t.get(&mac(1)).unwrap().address, Some(ip(3)));
    // NAK and refusals land as the last error.
    t.dhcp_answer(now, mac(2), DhcpAnswer::Nak, None);
    assert_eq!(
        t.get(&mac(2)).unwrap().last_error.unwrap().kind,
        ErrorKind::DhcpNak
    );
    t.refused(now, mac(2), "dhcp.max_leases_per_link");
    let e = t.get(&mac(2)).unwrap().last_error.unwrap();
    assert_eq!(
        (e.kind, e.detail()),
        (ErrorKind::Refused, "dhcp.max_leases_per_link")
    );
}

#[test]
fn error_details_are_truncated_at_a_character() {
    let mut t = JourneyTable::new(4, secs(300));
    let now = t0();
    dhcp(&mut t, now, mac(1), ip(1));
    let long = format!("{}é", "a".repeat(63));
    t.error_at_address(now, ip(1), ErrorKind::HttpStatus, 404, &long);
    let e = t.get(&mac(1)).unwrap().last_error.unwrap();
    assert_eq!(e.detail(), "a".repeat(63));
}

#[test]
fn file_classes() {
    let boot = BootProfile {
        bios: Some("undionly.kpxe".into()),
        uefi_x64: Some("/efi/snponly.efi".into()),
        ipxe_script: Some("http://10.0.0.1/boot.ipxe".into()),
        kernel: Some("http://10.0.0.1/images/deb/linux-6.1".into()),
        initrd: Some("images/deb/root.gz".into()),
        ..Default::default()
    };
    let mut host = named_host(1);
    host.boot.kernel = Some("special/k".into());
    let s = JourneySettings {
        kernel_globs: vec!["linux*.efi".into()],
        initrd_globs: vec!["images/*/extra-*".into()],
        ..Default::default()
    };
    let c = classes_for(&boot, &HostIndex::new(vec![host]), &s);
    let cases = [
        ("undionly.kpxe", FileClass::BootFile),
        ("/undionly.kpxe", FileClass::BootFile),
        ("efi/snponly.efi", FileClass::BootFile),
        ("/boot.ipxe?mac=52-54-00-00-00-01", FileClass::Script),
        ("/images/deb/linux-6.1", FileClass::Kernel),
        ("images/deb/root.gz", FileClass::Initrd),
        ("special/k", FileClass::Kernel),
        ("/install/mac:52:54/tok/ks.cfg", FileClass::Template),
        ("menu.ipxe", FileClass::Script),
        ("pxelinux.0", FileClass::BootFile),
        ("debian/vmlinuz-6.1.0-amd64", FileClass::Kernel),
        ("bzImage", FileClass::Kernel),
        ("linux", FileClass::Kernel),
        ("debian/initrd.img-6.1", FileClass::Initrd),
        ("initramfs-linux.img", FileClass::Initrd),
        ("root.cpio.gz", FileClass::Initrd),
        // [journeys] globs come before the built-in *.efi.
        ("linux-6.1.efi", FileClass::Kernel),
        ("images/x/extra-fw", FileClass::Initrd),
        ("other/extra-fw", FileClass::Other),
        ("pxelinux.cfg/default", FileClass::Other),
        ("", FileClass::Other),
    ];
    for (name, want) in cases {
        assert_eq!(c.classify(name), want, "{name}");
    }
    assert!(glob("a*b?c", "aXXbéc"));
    assert!(glob("*", ""));
    assert!(!glob("a?", "a"));
    assert!(glob("*.cpio*", "x.cpio"));
    assert!(!glob("vmlinuz*", "xvmlinuz"));
}

#[test]
fn queries_parse_and_bad_ones_are_refused() {
    let f = HostFilter::parse("phase=kernel&stuck=1&limit=200&offset=5").unwrap();
    assert_eq!(
        f,
        HostFilter {
            phase: Some(Phase::Kernel),
            stuck: true,
            limit: 200,
            offset: 5
        }
    );
    assert_eq!(HostFilter::parse("").unwrap(), HostFilter::default());
    assert!(HostFilter::parse("stuck").unwrap().stuck);
    for (q, key) in [
        ("phase=kernal", "phase"),
        ("stuck=yes", "stuck"),
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=-1", "limit"),
        ("offset=x", "offset"),
        ("colour=red", "colour"),
        ("stuck=1&stuck=0", "stuck"),
    ] {
        let e = HostFilter::parse(q).unwrap_err();
        assert_eq!(e.key, key, "{q}: {e}");
    }
}

#[test]
fn documents_filter_sort_and_name_hosts() {
    let host = named_host(2);
    let j = Journeys::new(
        &JourneySettings {
            stuck_after: secs(60),
            ..Default::default()
        },
        FileClasses::default(),
        Arc::new(HostIndex::new(vec![host])),
    );
    let now = t0();
    for n in 1..=3 {
        j.with(|t| dhcp(t, now.after(secs(u64::from(n))), mac(n), ip(n)));
    }
    j.transfer_started(now.after(secs(5)), ip(2).into(), "vmlinuz");
    j.error_to(
        now.after(secs(5)),
        ip(2).into(),
        ErrorKind::TftpError,
        1,
        "initrd.img",
    );
    // Last progress: 1 at 1 s, 3 at 3 s, 2 at 5 s; all stuck by 66 s, only 1 at 62 s.
    let later = now.after(secs(66));
    let doc = j.hosts_document("", later).unwrap();
    assert_eq!((doc.version, doc.total, doc.matched), (1, 3, 3));
    let macs: Vec<_> = doc.hosts.iter().map(|h| h.mac.clone()).collect();
    assert_eq!(macs, [mac(2), mac(3), mac(1)].map(|m| m.to_string()));
    let doc = j.hosts_document("phase=kernel&stuck=1", later).unwrap();
    assert_eq!(doc.matched, 1);
    let h = &doc.hosts[0];
    assert_eq!(h.hostname.as_deref(), Some("node2"));
    assert_eq!(h.address.as_deref(), Some("10.0.0.2"));
    assert!(h.stuck && !h.finished);
    let err = h.last_error.as_ref().unwrap();
    assert_eq!(
        (err.kind, err.detail.as_str()),
        ("tftp_error", "1 initrd.img")
    );
    let json = serde_json::to_value(&doc).unwrap();
    assert_eq!(json["hosts"][0]["phase"], "kernel");
    assert_eq!(json["hosts"][0]["timeline"][3]["phase"], "kernel");
    let page = j.hosts_document("limit=1&offset=1", later).unwrap();
    assert_eq!((page.matched, page.hosts.len()), (3, 1));
    assert_eq!(page.hosts[0].mac, mac(3).to_string());
    assert!(j.hosts_document("phase=nope", later).is_err());
    // Not stuck before the time.
    let doc = j.hosts_document("stuck=1", now.after(secs(62))).unwrap();
    assert_eq!(doc.matched, 1);
    assert_eq!(j.host_document(&mac(2), later).unwrap().boot, 1);
    assert!(j.host_document(&mac(9), later).is_none());
    let s = j.summary(later);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["phases"]["ack"], 2);
    assert_eq!(json["phases"]["kernel"], 1);
    assert_eq!((s.hosts, s.stuck, s.completed_per_sec.len()), (3, 3, 600));
    let keys: Vec<_> = json["phases"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys.len(), Phase::COUNT);
}

#[test]
fn timings_observe_per_protocol_and_class_even_with_the_table_off() {
    let j = Journeys::new(
        &JourneySettings {
            enabled: false,
            ..Default::default()
        },
        FileClasses::default(),
        Arc::default(),
    );
    let now = t0();
    let class = j.transfer_started(now, ip(1).into(), "initrd.img");
    assert_eq!(class, FileClass::Initrd);
    j.transfer_done(
        now.after(secs(2)),
        ip(1).into(),
        Protocol::Http,
        class,
        now.mono,
    );
    let h = j
        .timings()
        .transfer(Protocol::Http, FileClass::Initrd)
        .snapshot();
    assert_eq!(h.count, 1);
    assert!((h.sum - 2.0).abs() < 1e-6);
    assert_eq!(
        j.timings()
            .transfer(Protocol::Tftp, FileClass::Initrd)
            .snapshot()
            .count,
        0
    );
    assert_eq!(j.hosts_document("", now).unwrap().total, 0);
    assert_eq!(j.summary(now).hosts, 0);
}

/// The per-host memory ARCHITECTURE.md states (about 600 bytes with the maps' spare room)
/// holds: an entry stays within 256 bytes.
#[test]
fn an_entry_stays_within_its_documented_size() {
    let entry = std::mem::size_of::<(MacAddr, Entry)>();
    let address = std::mem::size_of::<(Ipv4Addr, MacAddr)>();
    let queued = std::mem::size_of::<(u64, MacAddr)>();
    eprintln!("entry {entry} B, address slot {address} B, queue item {queued} B");
    assert!(entry <= 256, "{entry}");
    // Map slots (a power of two above 8/7 of max_hosts, one control byte each), two queues.
    let per_host = (entry + 1 + address + 1) * 2 + 2 * 2 * queued;
    assert!(per_host <= 640, "{per_host}");
}
