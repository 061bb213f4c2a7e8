use super::*;

#[test]
fn dhcp_defaults_and_full_schema() {
    let f = fixture();
    let r = &f.root;
    // Without [dhcp] the service is off, in proxy mode.
    let c = Config::parse(&format!("[tftp]\nroot = \"{r}\"\n"), Path::new("x")).unwrap();
    assert_eq!(c.dhcp, DhcpConfig::default());
    assert!(!c.dhcp.enabled);
    assert_eq!(c.dhcp.mode, DhcpMode::Proxy);
    assert!(c.hosts.is_empty());
    let text = format!(
        "[tftp]\nroot = \"{r}\"\n[dhcp]\nenabled = true\nmode = \"full\"\ninterfaces = [\"eth1\"]\n\
         server_ip = \"10.0.0.1\"\nunknown_hosts = \"ignore\"\nlease_db = \"/tmp/l.redb\"\n\
         [[dhcp.subnets]]\nsubnet = \"10.0.0.0/24\"\nrange_start = \"10.0.0.100\"\n\
         range_end = \"10.0.0.200\"\nrouter = \"10.0.0.1\"\ndns = [\"10.0.0.2\"]\nlease_time_secs = 600\n\
         [boot]\nbios = \"undionly.kpxe\"\nipxe_script = \"http://10.0.0.1/boot.ipxe\"\n\
         kernel = \"vmlinuz\"\ncmdline = \"console=ttyS0\"\n\
         [[hosts]]\nmac = \"52:54:00:AA:BB:CC\"\nhostname = \"n1\"\naddress = \"10.0.0.10\"\n\
         boot = {{ uefi_x64 = \"special.efi\" }}\n\
         [[hosts]]\nuuid = \"00112233-4455-6677-8899-AABBCCDDEEFF\"\n"
    );
    let c = Config::parse(&text, Path::new("x")).unwrap();
    assert_eq!(c.dhcp.mode, DhcpMode::Full);
    assert_eq!(c.dhcp.unknown_hosts, UnknownHosts::Ignore);
    assert_eq!(c.dhcp.server_ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(c.dhcp.subnets[0].subnet.to_string(), "10.0.0.0/24");
    assert_eq!(c.dhcp.subnets[0].lease_time_secs, Some(600));
    assert_eq!(c.hosts[0].mac.unwrap().to_string(), "52:54:00:aa:bb:cc");
    assert_eq!(
        c.hosts[1].uuid.unwrap().to_string(),
        "00112233-4455-6677-8899-aabbccddeeff"
    );
    let p = c.hosts[0].boot.or(&c.boot);
    assert_eq!(p.uefi_x64.as_deref(), Some("special.efi"));
    assert_eq!(p.bios.as_deref(), Some("undionly.kpxe"));
    assert_eq!(p.cmdline.as_deref(), Some("console=ttyS0"));
    let again = Config::parse(&c.to_toml(), Path::new("x")).unwrap();
    assert_eq!(again, c);
}

#[test]
fn dhcp_errors_name_the_line() {
    let f = fixture();
    let r = &f.root;
    let head = format!("[tftp]\nroot = \"{r}\"\n");
    let sub = "[[dhcp.subnets]]\nsubnet = \"10.0.0.0/24\"\nrange_start = \"10.0.0.10\"\nrange_end = \"10.0.0.20\"\n";
    // Type errors of the new value types.
    assert_err(
        &format!("{head}[dhcp]\nmode = \"relay\"\n"),
        4,
        "dhcp.mode",
        "unknown variant",
    );
    assert_err(
        &format!("{head}[[hosts]]\nmac = \"52:54:00\"\n"),
        4,
        "hosts[0].mac",
        "not a MAC address",
    );
    assert_err(
        &format!("{head}[[hosts]]\nmac = \"52:54:00:aa:bb:cc\"\n[[hosts]]\nuuid = \"nope\"\n"),
        6,
        "hosts[1].uuid",
        "not a UUID",
    );
    assert_err(
        &format!("{head}[[dhcp.subnets]]\nsubnet = \"10.0.0.1/24\"\n"),
        4,
        "dhcp.subnets[0].subnet",
        "host bits",
    );
    assert_err(
        &format!("{head}[[hosts]]\nmac = \"52:54:00:aa:bb:cc\"\nboot = {{ bois = \"x\" }}\n"),
        5,
        "hosts[0].boot.bois",
        "unknown field",
    );
    // Semantic errors.
    assert_err(
        &format!("{head}[dhcp]\nenabled = true\n\nmode = \"full\"\n"),
        6,
        "dhcp.mode",
        "at least one",
    );
    assert_err(
        &format!("{head}[dhcp]\nlease_time_secs = 10\n"),
        4,
        "dhcp.lease_time_secs",
        "at least 60",
    );
    assert_err(
        &format!(
            "{head}[[dhcp.subnets]]\nsubnet = \"10.0.0.0/24\"\nrange_start = \"10.0.1.1\"\nrange_end = \"10.0.0.9\"\n"
        ),
        5,
        "dhcp.subnets[0].range_start",
        "not a host address",
    );
    assert_err(
        &format!(
            "{head}[[dhcp.subnets]]\nsubnet = \"10.0.0.0/24\"\nrange_start = \"10.0.0.9\"\nrange_end = \"10.0.0.8\"\n"
        ),
        6,
        "dhcp.subnets[0].range_end",
        "before range_start",
    );
    assert_err(
        &format!("{head}{sub}max_leases_per_link = 12\n"),
        7,
        "dhcp.subnets[0].max_leases_per_link",
        "more than the 11 addresses",
    );
    assert_err(
        &format!("{head}[dhcp]\nmax_leases_per_link = -1\n"),
        4,
        "dhcp.max_leases_per_link",
        "invalid value",
    );
    assert_err(
        &format!("{head}{sub}{sub}"),
        8,
        "dhcp.subnets[1].subnet",
        "overlaps dhcp.subnets[0]",
    );
    assert_err(
        &format!("{head}\n[[hosts]]\nhostname = \"x\"\n"),
        4,
        "hosts[0]",
        "mac or a uuid",
    );
    assert_err(
        &format!(
            "{head}[[hosts]]\nmac = \"52:54:00:aa:bb:cc\"\n[[hosts]]\nmac = \"52-54-00-AA-BB-CC\"\n"
        ),
        6,
        "hosts[1].mac",
        "also in hosts[0]",
    );
    assert_err(
        &format!(
            "{head}[dhcp]\nmode = \"full\"\n{sub}[[hosts]]\nmac = \"52:54:00:aa:bb:cc\"\naddress = \"10.9.0.1\"\n"
        ),
        11,
        "hosts[0].address",
        "in no dhcp.subnets",
    );
    assert_err(
        &format!("{head}[boot]\nbios = \"\"\n"),
        4,
        "boot.bios",
        "1 to 255 bytes",
    );
    assert_err(
        &format!(
            "{head}[[hosts]]\nmac = \"52:54:00:aa:bb:cc\"\n[hosts.boot]\nuefi_x64 = \"{}\"\n",
            "a".repeat(256)
        ),
        6,
        "hosts[0].boot.uefi_x64",
        "1 to 255 bytes",
    );
}

/// `max_leases_per_link`: off by default, a subnet's own value over `[dhcp]`'s.
#[test]
fn dhcp_max_leases_per_link_per_subnet() {
    let f = fixture();
    let r = &f.root;
    let sub = |extra: &str, n: u8| {
        format!(
            "[[dhcp.subnets]]\nsubnet = \"10.0.{n}.0/24\"\nrange_start = \"10.0.{n}.10\"\n\
             range_end = \"10.0.{n}.20\"\n{extra}"
        )
    };
    let text = |dhcp: &str| {
        format!(
            "[tftp]\nroot = \"{r}\"\n[dhcp]\n{dhcp}{}{}{}",
            sub("", 0),
            sub("max_leases_per_link = 11\n", 1),
            sub("max_leases_per_link = 0\n", 2)
        )
    };
    let bounds = |dhcp: &str| -> Vec<u32> {
        let c = Config::parse(&text(dhcp), Path::new("x")).unwrap();
        let s = c.dhcp_settings(&c.host_index());
        s.subnets.iter().map(|s| s.max_leases_per_link).collect()
    };
    assert_eq!(DhcpConfig::default().max_leases_per_link, 0);
    assert_eq!(bounds(""), [0, 11, 0]);
    assert_eq!(bounds("max_leases_per_link = 4\n"), [4, 11, 0]);
    let c = Config::parse(&text("max_leases_per_link = 4\n"), Path::new("x")).unwrap();
    assert_eq!(Config::parse(&c.to_toml(), Path::new("x")).unwrap(), c);
}
