use super::*;

#[test]
fn arrivals() {
    assert_eq!(Arrival::parse("storm").unwrap(), Arrival::Storm);
    assert_eq!(Arrival::parse("rate:100/s").unwrap(), Arrival::Rate(100.0));
    assert_eq!(Arrival::parse("ramp:50").unwrap(), Arrival::Ramp(50.0));
    assert!(Arrival::parse("rate:0/s").is_err());
    assert!(Arrival::parse("burst").is_err());
    assert_eq!(
        Arrival::Rate(100.0).offset(250),
        Duration::from_millis(2500)
    );
    assert_eq!(Arrival::Storm.offset(9999), Duration::ZERO);
    // Ramp 2/s²: 100 clients by t = 10 s (N t² / 2).
    assert_eq!(Arrival::Ramp(2.0).offset(100), Duration::from_secs(10));
}

#[test]
fn arch_mix_is_proportional_and_interleaved() {
    let mix = parse_arch_mix("bios=50,uefi=40,ipxe=10").unwrap();
    let a = assign_archs(&mix, 1000);
    let count = |x| a.iter().filter(|&&y| y == x).count();
    assert_eq!(
        (count(Arch::Bios), count(Arch::UefiX64), count(Arch::Ipxe)),
        (500, 400, 100)
    );
    // Every stretch of 10 arrivals has the mix.
    for w in a.chunks(10) {
        assert_eq!(w.iter().filter(|&&y| y == Arch::Ipxe).count(), 1);
    }
    assert!(parse_arch_mix("arm=3").is_err());
    assert!(parse_arch_mix("bios=0").is_err());
    assert_eq!(parse_arch_mix("uefi").unwrap(), vec![(Arch::UefiX64, 1)]);
}

#[test]
fn macs() {
    let base = parse_mac("52:54:00:00:ff:ff").unwrap();
    assert_eq!(mac_add(base, 1), [0x52, 0x54, 0, 1, 0, 0]);
    assert_eq!(mac_add(base, 0), base);
    assert!(parse_mac("52:54:00").is_err());
    for k in [0u64, 1, 2, 999] {
        assert_eq!(mac_index(base, mac_add(base, k), 1000), Some(k as usize));
    }
    assert_eq!(mac_index(base, mac_add(base, 1000), 1000), None);
    assert_eq!(
        mac_index(base, mac_add(base, u64::MAX), 1000),
        None,
        "below the base"
    );
    // Across the 48-bit wrap.
    let top = parse_mac("ff:ff:ff:ff:ff:fe").unwrap();
    assert_eq!(mac_index(top, mac_add(top, 3), 10), Some(3));
    assert!(parse_mac("52:54:00:00:00:zz").is_err());
}

#[test]
fn client_identities_are_distinct_and_follow_the_seed() {
    let p = DhcpParams {
        clients: 500,
        mode: Mode::Proxy,
        arch_mix: parse_arch_mix("bios=1,uefi=1").unwrap(),
        mac_base: parse_mac("02:42:00:00:00:00").unwrap(),
        arrival: Arrival::Storm,
        interface: None,
        server: Ipv4Addr::BROADCAST,
        timeout_scale: 0.5,
        deadline: Duration::from_secs(1),
        seed: 42,
        client_port: 0,
    };
    let configs: Vec<ClientConfig> = p.client_configs().into_iter().flatten().collect();
    assert_eq!(configs.len(), 500);
    let xids: HashSet<u32> = configs.iter().map(|c| c.xid).collect();
    assert_eq!(xids.len(), 500);
    assert!(!xids.contains(&0));
    for (i, c) in configs.iter().enumerate() {
        assert_eq!(c.mac, mac_add(p.mac_base, i as u64));
        assert_eq!(p.client_of(&reply_to(c.mac)), Some(i));
        assert_eq!(c.uuid[10..], c.mac);
        assert_eq!(c.mode, Mode::Proxy);
        assert_eq!(c.timeouts, ClientConfig::pxe_timeouts(0.5));
    }
    assert_eq!(configs[0].arch, Arch::Bios);
    assert_eq!(configs[1].arch, Arch::UefiX64);
    let again: Vec<u32> = p
        .client_configs()
        .into_iter()
        .flatten()
        .map(|c| c.xid)
        .collect();
    assert_eq!(again, configs.iter().map(|c| c.xid).collect::<Vec<_>>());
    let other = DhcpParams {
        seed: 44,
        ..p.clone()
    };
    assert_ne!(
        other.client_configs()[0].as_ref().unwrap().xid,
        configs[0].xid
    );
    assert_eq!(p.client_of(&reply_to(mac_add(p.mac_base, 500))), None);
}

/// A datagram with `mac` where a DHCP reply has its chaddr.
fn reply_to(mac: [u8; 6]) -> Vec<u8> {
    let mut b = vec![0u8; 300];
    b[28..34].copy_from_slice(&mac);
    b
}
