use super::*;
use crate::dhcp::leases::{IfName, LeaseError, LeaseState, MemoryLeaseStore, RedbLeaseStore};
use dhcproto::v4::{self, DhcpOption};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use pxe_proto::ClientUuid;
use std::path::Path;
use std::time::Duration;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const BIOS_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const UUID: &str = "00112233-4455-6677-8899-aabbccddeeff";

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// The DHCP settings of a config file with the default boot files and `extra`.
fn config(extra: &str) -> DhcpSettings {
    let dir = std::env::temp_dir();
    let text = format!(
        "[tftp]\nroot = \"{}\"\n[boot]\nbios = \"undionly.kpxe\"\nuefi_x64 = \"snponly.efi\"\n\
         arm64 = \"ipxe-arm64.efi\"\nuefi_http = \"http://10.0.0.1/ipxe.efi\"\n\
         ipxe_script = \"http://10.0.0.1/boot.ipxe\"\n{extra}",
        dir.display()
    );
    let c = crate::config::Config::parse(&text, Path::new("t.toml")).unwrap();
    c.dhcp_settings(&c.host_index())
}

const FULL: &str = "[dhcp]\nenabled = true\nmode = \"full\"\nlease_time_secs = 3600\n\
    [[dhcp.subnets]]\nsubnet = \"10.0.0.0/24\"\nrange_start = \"10.0.0.100\"\nrange_end = \"10.0.0.199\"\n\
    router = \"10.0.0.1\"\ndns = [\"10.0.0.2\", \"10.0.0.3\"]\n\
    [[dhcp.subnets]]\nsubnet = \"10.1.0.0/24\"\nrange_start = \"10.1.0.10\"\nrange_end = \"10.1.0.12\"\n\
    router = \"10.1.0.1\"\n";

fn meta() -> RecvMeta {
    RecvMeta {
        src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        local_addr: SERVER,
        ifindex: 3,
        ifname: IfName::new("eth0").unwrap(),
        port: 67,
    }
}

/// A client message built with dhcproto's encoder.
struct Pkt {
    m: v4::Message,
}

impl Pkt {
    fn new(t: MessageType, mac: [u8; 6]) -> Self {
        let mut m = v4::Message::new_with_id(
            0x1234_5678,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &mac,
        );
        m.opts_mut().insert(DhcpOption::MessageType(t));
        Pkt { m }
    }
    fn opt(mut self, o: DhcpOption) -> Self {
        self.m.opts_mut().insert(o);
        self
    }
    fn broadcast(mut self) -> Self {
        self.m.set_flags(v4::Flags::default().set_broadcast());
        self
    }
    fn ciaddr(mut self, ip: Ipv4Addr) -> Self {
        self.m.set_ciaddr(ip);
        self
    }
    fn giaddr(mut self, ip: Ipv4Addr) -> Self {
        self.m.set_giaddr(ip);
        self
    }
    fn pxe(self, arch: u16, class: &str) -> Self {
        self.opt(DhcpOption::ClassIdentifier(class.as_bytes().to_vec()))
            .opt(DhcpOption::ClientSystemArchitecture(arch.into()))
            .opt(DhcpOption::ClientNetworkInterface(1, 3, 16))
    }
    fn uuid(self, u: &str) -> Self {
        let mut v = vec![0];
        v.extend_from_slice(&u.parse::<ClientUuid>().unwrap().to_wire());
        self.opt(DhcpOption::ClientMachineIdentifier(v))
    }
    fn bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.m.encode(&mut Encoder::new(&mut v)).unwrap();
        v
    }
}

fn bios_discover() -> Pkt {
    Pkt::new(MessageType::Discover, BIOS_MAC)
        .broadcast()
        .pxe(0, "PXEClient:Arch:00000:UNDI:002001")
        .uuid(UUID)
}

fn run<S: LeaseStore>(
    r: &mut Responder<S>,
    p: &[u8],
    meta: &RecvMeta,
) -> (Action, Option<v4::Message>) {
    let mut out = Vec::new();
    let a = r.handle(t0(), p, meta, &mut out);
    let m = match a {
        Action::Respond(t) => {
            assert_eq!(t.len, out.len());
            assert!(out.len() >= 300);
            let m = v4::Message::decode(&mut Decoder::new(&out)).unwrap();
            assert_eq!(m.opts().msg_type(), Some(t.msg_type));
            assert_eq!(t.ifindex, meta.ifindex);
            Some(m)
        }
        Action::NoResponse(_) => None,
    };
    (a, m)
}

fn transmit(a: Action) -> Transmit {
    match a {
        Action::Respond(t) => t,
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn opt(m: &v4::Message, c: v4::OptionCode) -> Option<&DhcpOption> {
    m.opts().get(c)
}

/// dhcproto's decoder keeps the NUL that ends the file field.
fn trim_nul(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

fn bcast68() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
}

#[test]
fn proxy_bios_pxe_discover_gets_an_offer_without_address() {
    let mut r = Responder::new(&config(""), MemoryLeaseStore::new());
    let (a, m) = run(&mut r, &bios_discover().bytes(), &meta());
    let t = transmit(a);
    assert_eq!(
        (t.dst, t.broadcast, t.msg_type),
        (bcast68(), true, MessageType::Offer)
    );
    let m = m.unwrap();
    assert_eq!(m.opcode(), v4::Opcode::BootReply);
    assert_eq!(m.xid(), 0x1234_5678);
    assert_eq!(m.chaddr(), &BIOS_MAC);
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(m.siaddr(), SERVER);
    assert!(m.flags().broadcast());
    assert_eq!(m.fname().map(trim_nul), Some(&b"undionly.kpxe"[..]));
    assert_eq!(
        opt(&m, v4::OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        opt(&m, v4::OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    assert_eq!(
        opt(&m, v4::OptionCode::VendorExtensions),
        Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
    );
    // The UUID comes back as sent.
    let mut uuid = vec![0];
    uuid.extend_from_slice(&UUID.parse::<ClientUuid>().unwrap().to_wire());
    assert_eq!(
        opt(&m, v4::OptionCode::ClientMachineIdentifier),
        Some(&DhcpOption::ClientMachineIdentifier(uuid))
    );
    for c in [
        v4::OptionCode::AddressLeaseTime,
        v4::OptionCode::SubnetMask,
        v4::OptionCode::Router,
    ] {
        assert!(opt(&m, c).is_none(), "{c:?}");
    }
    assert!(r.store().is_empty(), "proxy mode never leases");
    assert_eq!(r.metrics().snapshot().offers, 1);
}

#[test]
fn proxy_hand_written_raw_discover() {
    let mut r = Responder::new(&config(""), MemoryLeaseStore::new());
    let raw = pxe_proto::vectors::raw_bios_discover();
    let (a, m) = run(&mut r, &raw, &meta());
    assert_eq!(transmit(a).dst, bcast68());
    let m = m.unwrap();
    assert_eq!(m.xid(), 0xdeadbeef);
    assert_eq!(m.fname().map(trim_nul), Some(&b"undionly.kpxe"[..]));
    // The raw bytes of the header we emit.
    let mut out = Vec::new();
    r.handle(t0(), &raw, &meta(), &mut out);
    assert_eq!(&out[..4], &[2, 1, 6, 0]);
    assert_eq!(&out[4..8], &[0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(&out[16..20], &[0, 0, 0, 0]); // yiaddr
    assert_eq!(&out[20..24], &[10, 0, 0, 1]); // siaddr
    assert_eq!(&out[236..240], &v4::MAGIC);
}

#[test]
fn proxy_ovmf_offer_then_boot_server_ack_on_4011() {
    let mut r = Responder::new(&config(""), MemoryLeaseStore::new());
    let d = Pkt::new(MessageType::Discover, [2, 0, 0, 0, 0, 7])
        .pxe(7, "PXEClient:Arch:00007:UNDI:003016");
    let (a, m) = run(&mut r, &d.bytes(), &meta());
    // No broadcast flag and no ciaddr: still broadcast (no address yet).
    assert_eq!(transmit(a).dst, bcast68());
    assert_eq!(m.unwrap().fname().map(trim_nul), Some(&b"snponly.efi"[..]));
    let client = Ipv4Addr::new(10, 0, 0, 150);
    let q = Pkt::new(MessageType::Request, [2, 0, 0, 0, 0, 7])
        .pxe(7, "PXEClient:Arch:00007:UNDI:003016")
        .ciaddr(client);
    let m4011 = RecvMeta {
        src: SocketAddrV4::new(client, 4011),
        port: 4011,
        ..meta()
    };
    let (a, m) = run(&mut r, &q.bytes(), &m4011);
    let t = transmit(a);
    assert_eq!(
        (t.dst, t.broadcast, t.msg_type),
        (SocketAddrV4::new(client, 4011), false, MessageType::Ack)
    );
    let m = m.unwrap();
    assert_eq!(
        (m.ciaddr(), m.yiaddr(), m.siaddr()),
        (client, Ipv4Addr::UNSPECIFIED, SERVER)
    );
    assert_eq!(m.fname().map(trim_nul), Some(&b"snponly.efi"[..]));
    assert_eq!(r.metrics().snapshot().pxe_boot_acks, 1);
    // A DISCOVER on 4011 is not a boot server request.
    let (a, _) = run(&mut r, &d.bytes(), &m4011);
    assert_eq!(
        a,
        Action::NoResponse(NoResponse::UnexpectedType(MessageType::Discover))
    );
}

#[test]
fn proxy_ipxe_gets_the_script_and_never_loops() {
    let mut r = Responder::new(&config(""), MemoryLeaseStore::new());
    let d = Pkt::new(MessageType::Discover, BIOS_MAC)
        .pxe(0, "PXEClient:Arch:00000:UNDI:002001")
        .opt(DhcpOption::UserClass(b"iPXE".to_vec()))
        .opt(DhcpOption::Unknown(v4::UnknownOption::new(
            175.into(),
            vec![19, 1, 1],
        )));
    let (_, m) = run(&mut r, &d.bytes(), &meta());
    let m = m.unwrap();
    assert_eq!(
        m.fname().map(trim_nul),
        Some(&b"http://10.0.0.1/boot.ipxe"[..])
    );
    assert!(opt(&m, v4::OptionCode::VendorExtensions).is_none());
    // Option 175 alone is enough.
    let d = Pkt::new(MessageType::Discover, BIOS_MAC)
        .pxe(7, "PXEClient:Arch:00007:UNDI:003016")
        .opt(DhcpOption::Unknown(v4::UnknownOption::new(
            175.into(),
            vec![19, 1, 1],
        )));
    let (_, m) = run(&mut r, &d.bytes(), &meta());
    assert_eq!(
        m.unwrap().fname().map(trim_nul),
        Some(&b"http://10.0.0.1/boot.ipxe"[..])
    );
}

#[test]
fn proxy_http_boot_and_arm64_and_unknown_arch() {
    let mut r = Responder::new(&config(""), MemoryLeaseStore::new());
    let d = Pkt::new(MessageType::Discover, BIOS_MAC).pxe(16, "HTTPClient:Arch:00016:UNDI:003001");
    let (_, m) = run(&mut r, &d.bytes(), &meta());
    let m = m.unwrap();
    assert_eq!(
        opt(&m, v4::OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
    );
    assert_eq!(
        m.fname().map(trim_nul),
        Some(&b"http://10.0.0.1/ipxe.efi"[..])
    );
    assert_eq!(
        opt(&m, v4::OptionCode::BootfileName),
        Some(&DhcpOption::BootfileName(
            b"http://10.0.0.1/ipxe.efi".to_vec()
        ))
    );
    assert!(opt(&m, v4::OptionCode::VendorExtensions).is_none());
    let d = Pkt::new(MessageType::Discover, BIOS_MAC).pxe(11, "PXEClient:Arch:00011:UNDI:003001");
    assert_eq!(
        run(&mut r, &d.bytes(), &meta())
            .1
            .unwrap()
            .fname()
            .map(trim_nul),
        Some(&b"ipxe-arm64.efi"[..])
    );
    // IA32 has no file configured: no answer, counted.
    let d = Pkt::new(MessageType::Discover, BIOS_MAC).pxe(6, "PXEClient:Arch:00006:UNDI:003001");
    assert_eq!(
        run(&mut r, &d.bytes(), &meta()).0,
        Action::NoResponse(NoResponse::NoBootFile)
    );
    assert_eq!(r.metrics().snapshot().drop_no_boot_file, 1);
}

#[test]
fn proxy_ignores_plain_clients_and_requests_for_others() {
    let mut r = Responder::new(&config(""), MemoryLeaseStore::new());
    let plain = Pkt::new(MessageType::Discover, [2, 0, 0, 0, 0, 9])
        .opt(DhcpOption::ParameterRequestList(vec![
            v4::OptionCode::SubnetMask,
        ]))
        .opt(DhcpOption::Hostname("dhclient-box".into()));
    assert_eq!(
        run(&mut r, &plain.bytes(), &meta()).0,
        Action::NoResponse(NoResponse::NotPxe)
    );
    let other = Pkt::new(MessageType::Request, BIOS_MAC)
        .pxe(0, "PXEClient:Arch:00000:UNDI:002001")
        .opt(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 254)))
        .opt(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 50)));
    assert_eq!(
        run(&mut r, &other.bytes(), &meta()).0,
        Action::NoResponse(NoResponse::NotForUs)
    );
    let ours = Pkt::new(MessageType::Request, BIOS_MAC)
        .broadcast()
        .pxe(0, "PXEClient:Arch:00000:UNDI:002001")
        .opt(DhcpOption::ServerIdentifier(SERVER));
    let (a, m) = run(&mut r, &ours.bytes(), &meta());
    assert_eq!(transmit(a).msg_type, MessageType::Ack);
    assert_eq!(m.unwrap().yiaddr(), Ipv4Addr::UNSPECIFIED);
    let s = r.metrics().snapshot();
    assert_eq!(
        (s.drop_not_pxe, s.drop_not_for_us, s.acks, s.received),
        (1, 1, 1, 3)
    );
    // No local address and no server_ip: nothing to put in option 54.
    let m0 = RecvMeta {
        local_addr: Ipv4Addr::UNSPECIFIED,
        ..meta()
    };
    assert_eq!(
        run(&mut r, &bios_discover().bytes(), &m0).0,
        Action::NoResponse(NoResponse::NoServerAddress)
    );
}

#[test]
fn hosts_by_mac_and_uuid_and_unknown_policy() {
    let extra = format!(
        "[dhcp]\nunknown_hosts = \"ignore\"\nserver_ip = \"10.0.0.5\"\nnext_server = \"10.0.0.6\"\n\
         [[hosts]]\nmac = \"52:54:00:12:34:56\"\nhostname = \"n1\"\nboot = {{ bios = \"special.kpxe\" }}\n\
         [[hosts]]\nuuid = \"{UUID}\"\nboot = {{ uefi_x64 = \"by-uuid.efi\" }}\n"
    );
    let mut r = Responder::new(&config(&extra), MemoryLeaseStore::new());
    let (_, m) = run(&mut r, &bios_discover().bytes(), &meta());
    let m = m.unwrap();
    assert_eq!(m.fname().map(trim_nul), Some(&b"special.kpxe"[..]));
    assert_eq!(m.siaddr(), Ipv4Addr::new(10, 0, 0, 6));
    assert_eq!(
        opt(&m, v4::OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 5)))
    );
    // Another MAC, matched by UUID; fields it does not override come from [boot].
    let d = Pkt::new(MessageType::Discover, [2, 0, 0, 0, 0, 1])
        .pxe(7, "PXEClient")
        .uuid(UUID);
    assert_eq!(
        run(&mut r, &d.bytes(), &meta())
            .1
            .unwrap()
            .fname()
            .map(trim_nul),
        Some(&b"by-uuid.efi"[..])
    );
    let d = Pkt::new(MessageType::Discover, [2, 0, 0, 0, 0, 1])
        .pxe(0, "PXEClient")
        .uuid(UUID);
    assert_eq!(
        run(&mut r, &d.bytes(), &meta())
            .1
            .unwrap()
            .fname()
            .map(trim_nul),
        Some(&b"undionly.kpxe"[..])
    );
    // Unknown: ignored.
    let d = Pkt::new(MessageType::Discover, [2, 0, 0, 0, 0, 2]).pxe(0, "PXEClient");
    assert_eq!(
        run(&mut r, &d.bytes(), &meta()).0,
        Action::NoResponse(NoResponse::UnknownHost)
    );
    assert_eq!(r.metrics().snapshot().drop_unknown_host, 1);
}

#[test]
fn reconfigure_takes_new_hosts_and_boot_files() {
    let fname = |r: &mut Responder<MemoryLeaseStore>| {
        run(r, &bios_discover().bytes(), &meta())
            .1
            .and_then(|m| m.fname().map(|f| trim_nul(f).to_vec()))
    };
    let mut r = Responder::new(&config(""), MemoryLeaseStore::new());
    assert_eq!(fname(&mut r).as_deref(), Some(&b"undionly.kpxe"[..]));
    // Reload: the host gets its own file, then becomes unknown and is ignored.
    let host = "[[hosts]]\nmac = \"52:54:00:12:34:56\"\nboot = { bios = \"special.kpxe\" }\n";
    r.reconfigure(&config(host));
    assert_eq!(fname(&mut r).as_deref(), Some(&b"special.kpxe"[..]));
    r.reconfigure(&config("[dhcp]\nunknown_hosts = \"ignore\"\n"));
    assert_eq!(fname(&mut r), None);
    assert_eq!(r.metrics().snapshot().drop_unknown_host, 1);
}

fn dora<S: LeaseStore>(r: &mut Responder<S>, mac: [u8; 6], meta: &RecvMeta) -> Ipv4Addr {
    let (a, m) = run(r, &Pkt::new(MessageType::Discover, mac).bytes(), meta);
    transmit(a);
    let ip = m.unwrap().yiaddr();
    let q = Pkt::new(MessageType::Request, mac)
        .opt(DhcpOption::ServerIdentifier(SERVER))
        .opt(DhcpOption::RequestedIpAddress(ip));
    let (a, m) = run(r, &q.bytes(), meta);
    assert_eq!(transmit(a).msg_type, MessageType::Ack);
    assert_eq!(m.unwrap().yiaddr(), ip);
    ip
}

#[test]
fn full_mode_dora_with_every_option() {
    let mut r = Responder::new(&config(FULL), MemoryLeaseStore::new());
    let mac = [2, 0, 0, 0, 0, 0x42];
    let d = Pkt::new(MessageType::Discover, mac)
        .broadcast()
        .opt(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 150)));
    let (a, m) = run(&mut r, &d.bytes(), &meta());
    let t = transmit(a);
    assert_eq!(
        (t.dst, t.broadcast, t.msg_type),
        (bcast68(), true, MessageType::Offer)
    );
    let m = m.unwrap();
    let ip = Ipv4Addr::new(10, 0, 0, 150);
    assert_eq!(m.yiaddr(), ip, "the requested address is free: offered");
    let check = |m: &v4::Message| {
        assert_eq!(m.opcode(), v4::Opcode::BootReply);
        assert_eq!(
            opt(m, v4::OptionCode::SubnetMask),
            Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
        );
        assert_eq!(
            opt(m, v4::OptionCode::Router),
            Some(&DhcpOption::Router(vec![SERVER]))
        );
        assert_eq!(
            opt(m, v4::OptionCode::DomainNameServer),
            Some(&DhcpOption::DomainNameServer(vec![
                Ipv4Addr::new(10, 0, 0, 2),
                Ipv4Addr::new(10, 0, 0, 3)
            ]))
        );
        assert_eq!(
            opt(m, v4::OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(3600))
        );
        assert_eq!(
            opt(m, v4::OptionCode::Renewal),
            Some(&DhcpOption::Renewal(1800))
        );
        assert_eq!(
            opt(m, v4::OptionCode::Rebinding),
            Some(&DhcpOption::Rebinding(3150))
        );
        assert_eq!(
            opt(m, v4::OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER))
        );
        // A plain client gets no boot information.
        assert!(opt(m, v4::OptionCode::ClassIdentifier).is_none());
        assert!(m.fname().map(trim_nul).is_none());
    };
    check(&m);
    assert_eq!(r.store().get(ip).unwrap().state, LeaseState::Offered);
    let q = Pkt::new(MessageType::Request, mac)
        .broadcast()
        .opt(DhcpOption::ServerIdentifier(SERVER))
        .opt(DhcpOption::RequestedIpAddress(ip));
    let (a, m) = run(&mut r, &q.bytes(), &meta());
    assert_eq!(transmit(a).dst, bcast68());
    let m = m.unwrap();
    assert_eq!(m.yiaddr(), ip);
    check(&m);
    let l = r.store().get(ip).unwrap();
    assert_eq!(
        (l.state, l.mac.0, l.expires),
        (LeaseState::Bound, mac, unix_secs(t0()) + 3600)
    );
    // Renewing: unicast to ciaddr; a longer lease asked for is capped at max_lease_time.
    let renew = Pkt::new(MessageType::Request, mac)
        .ciaddr(ip)
        .opt(DhcpOption::AddressLeaseTime(10_000_000));
    let (a, m) = run(&mut r, &renew.bytes(), &meta());
    let t = transmit(a);
    assert_eq!((t.dst, t.broadcast), (SocketAddrV4::new(ip, 68), false));
    let m = m.unwrap();
    assert_eq!((m.ciaddr(), m.yiaddr()), (ip, ip));
    assert_eq!(
        opt(&m, v4::OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(86_400))
    );
    // The same client DISCOVERs again: its lease is reused.
    let (_, m) = run(
        &mut r,
        &Pkt::new(MessageType::Discover, mac).bytes(),
        &meta(),
    );
    assert_eq!(m.unwrap().yiaddr(), ip);
    assert_eq!(
        r.store().get(ip).unwrap().state,
        LeaseState::Bound,
        "an offer does not downgrade a bound lease"
    );
    // SELECTING another server: silent.
    let other = Pkt::new(MessageType::Request, mac)
        .opt(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 9)))
        .opt(DhcpOption::RequestedIpAddress(ip));
    assert_eq!(
        run(&mut r, &other.bytes(), &meta()).0,
        Action::NoResponse(NoResponse::NotForUs)
    );
}

#[test]
fn full_mode_naks() {
    let mut r = Responder::new(&config(FULL), MemoryLeaseStore::new());
    let a_ip = dora(&mut r, [2, 0, 0, 0, 0, 1], &meta());
    // INIT-REBOOT on a wrong subnet: NAK, broadcast, no address.
    let q = Pkt::new(MessageType::Request, [2, 0, 0, 0, 0, 2]).opt(DhcpOption::RequestedIpAddress(
        Ipv4Addr::new(192, 168, 1, 10),
    ));
    let (a, m) = run(&mut r, &q.bytes(), &meta());
    let t = transmit(a);
    assert_eq!(
        (t.dst, t.broadcast, t.msg_type),
        (bcast68(), true, MessageType::Nak)
    );
    let m = m.unwrap();
    assert_eq!(
        (m.yiaddr(), m.siaddr()),
        (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED)
    );
    assert_eq!(
        opt(&m, v4::OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert!(opt(&m, v4::OptionCode::AddressLeaseTime).is_none());
    // A client the server knows (it holds a lease) in INIT-REBOOT, asking for another client's
    // address: NAK.
    let b_ip = dora(&mut r, [2, 0, 0, 0, 0, 2], &meta());
    let q = Pkt::new(MessageType::Request, [2, 0, 0, 0, 0, 2])
        .opt(DhcpOption::RequestedIpAddress(a_ip));
    assert_eq!(
        transmit(run(&mut r, &q.bytes(), &meta()).0).msg_type,
        MessageType::Nak
    );
    assert_eq!(r.store().get(b_ip).unwrap().mac.0, [2, 0, 0, 0, 0, 2]);
    // Renewing somebody else's address (ciaddr set) is NAKed, still broadcast.
    let q = Pkt::new(MessageType::Request, [2, 0, 0, 0, 0, 2]).ciaddr(a_ip);
    let t = transmit(run(&mut r, &q.bytes(), &meta()).0);
    assert_eq!((t.msg_type, t.dst), (MessageType::Nak, bcast68()));
    assert_eq!(r.metrics().snapshot().naks, 3);
}

/// RFC 2131 §4.3.2: an INIT-REBOOT REQUEST from a client the server has no record of gets no
/// answer, whatever it asks for (a free address, another client's, our own); a client that
/// is known (a lease, even an expired one, or a reservation) is answered; one on the wrong
/// network is NAKed either way.
#[test]
fn init_reboot_from_an_unknown_client_is_not_answered() {
    let mut r = Responder::new(&config(FULL), MemoryLeaseStore::new());
    let a_ip = dora(&mut r, [2, 0, 0, 0, 0, 1], &meta());
    let stranger = [2, 0, 0, 0, 0, 0x99];
    for ip in [Ipv4Addr::new(10, 0, 0, 120), a_ip, SERVER] {
        let q = Pkt::new(MessageType::Request, stranger).opt(DhcpOption::RequestedIpAddress(ip));
        assert_eq!(
            run(&mut r, &q.bytes(), &meta()).0,
            Action::NoResponse(NoResponse::UnknownClient),
            "{ip}"
        );
    }
    let snap = r.metrics().snapshot();
    assert_eq!(
        (snap.drop_init_reboot_unknown, snap.acks, snap.naks),
        (3, 1, 0)
    );
    assert!(r.store().ip_of(&pxe_proto::MacAddr(stranger)).is_none());
    // Another network: NAK even for a stranger (the first check of §4.3.2).
    let q = Pkt::new(MessageType::Request, stranger).opt(DhcpOption::RequestedIpAddress(
        Ipv4Addr::new(192, 168, 1, 10),
    ));
    assert_eq!(
        transmit(run(&mut r, &q.bytes(), &meta()).0).msg_type,
        MessageType::Nak
    );
    // The known client, after its lease ran out, still gets its address back.
    let later = t0() + Duration::from_secs(2 * 86_400);
    let q = Pkt::new(MessageType::Request, [2, 0, 0, 0, 0, 1])
        .opt(DhcpOption::RequestedIpAddress(a_ip));
    let mut out = Vec::new();
    let a = r.handle(later, &q.bytes(), &meta(), &mut out);
    assert!(
        matches!(a, Action::Respond(t) if t.msg_type == MessageType::Ack),
        "{a:?}"
    );
}

/// A host with a reserved address is known before it ever had a lease: its INIT-REBOOT for
/// that address is ACKed, for another one NAKed.
#[test]
fn init_reboot_from_a_reserved_host_is_answered() {
    let text =
        format!("{FULL}\n[[hosts]]\nmac = \"02:00:00:00:00:77\"\naddress = \"10.0.0.177\"\n");
    let mut r = Responder::new(&config(&text), MemoryLeaseStore::new());
    let mac = [2, 0, 0, 0, 0, 0x77];
    let ask = |ip| Pkt::new(MessageType::Request, mac).opt(DhcpOption::RequestedIpAddress(ip));
    let t = transmit(run(&mut r, &ask(Ipv4Addr::new(10, 0, 0, 130)).bytes(), &meta()).0);
    assert_eq!(t.msg_type, MessageType::Nak);
    let (a, m) = run(&mut r, &ask(Ipv4Addr::new(10, 0, 0, 177)).bytes(), &meta());
    assert_eq!(transmit(a).msg_type, MessageType::Ack);
    assert_eq!(m.unwrap().yiaddr(), Ipv4Addr::new(10, 0, 0, 177));
}

#[test]
fn full_mode_relayed() {
    let mut r = Responder::new(&config(FULL), MemoryLeaseStore::new());
    let relay = Ipv4Addr::new(10, 1, 0, 1);
    let from_relay = RecvMeta {
        src: SocketAddrV4::new(relay, 67),
        ..meta()
    };
    let d = Pkt::new(MessageType::Discover, [2, 0, 0, 0, 1, 1])
        .giaddr(relay)
        .pxe(7, "PXEClient:Arch:00007:UNDI:003016");
    let (a, m) = run(&mut r, &d.bytes(), &from_relay);
    let t = transmit(a);
    assert_eq!((t.dst, t.broadcast), (SocketAddrV4::new(relay, 67), false));
    let m = m.unwrap();
    assert_eq!(
        m.yiaddr(),
        Ipv4Addr::new(10, 1, 0, 10),
        "from the relay's subnet"
    );
    assert_eq!(m.giaddr(), relay);
    assert_eq!(
        opt(&m, v4::OptionCode::Router),
        Some(&DhcpOption::Router(vec![relay]))
    );
    // A PXE client in full mode gets its boot file along with the address.
    assert_eq!(m.fname().map(trim_nul), Some(&b"snponly.efi"[..]));
    assert_eq!(m.siaddr(), SERVER);
    assert_eq!(
        opt(&m, v4::OptionCode::VendorExtensions),
        Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
    );
    // A relayed NAK goes to the relay with the broadcast bit set.
    let q = Pkt::new(MessageType::Request, [2, 0, 0, 0, 1, 1])
        .giaddr(relay)
        .opt(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 150)));
    let (a, m) = run(&mut r, &q.bytes(), &from_relay);
    let t = transmit(a);
    assert_eq!(
        (t.dst, t.broadcast, t.msg_type),
        (SocketAddrV4::new(relay, 67), false, MessageType::Nak)
    );
    assert!(m.unwrap().flags().broadcast());
    // A relay for a subnet we do not serve.
    let d = Pkt::new(MessageType::Discover, [2, 0, 0, 0, 1, 1]).giaddr(Ipv4Addr::new(10, 9, 0, 1));
    assert_eq!(
        run(&mut r, &d.bytes(), &from_relay).0,
        Action::NoResponse(NoResponse::NoSubnet)
    );
}

#[test]
fn full_mode_never_gives_one_address_to_two_clients() {
    let mut r = Responder::new(&config(FULL), MemoryLeaseStore::new());
    let relay = Ipv4Addr::new(10, 1, 0, 1);
    let m = RecvMeta {
        src: SocketAddrV4::new(relay, 67),
        ..meta()
    };
    // Interleaved DISCOVERs first (all offers outstanding), then the REQUESTs.
    let macs: Vec<[u8; 6]> = (0..3).map(|i| [2, 0, 0, 0, 2, i]).collect();
    let mut offered = Vec::new();
    for mac in &macs {
        let (_, o) = run(
            &mut r,
            &Pkt::new(MessageType::Discover, *mac).giaddr(relay).bytes(),
            &m,
        );
        offered.push(o.unwrap().yiaddr());
    }
    let mut sorted = offered.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 3, "{offered:?}");
    // The pool (3 addresses) is exhausted for a fourth client, while offers are held.
    let d = Pkt::new(MessageType::Discover, [2, 0, 0, 0, 2, 9]).giaddr(relay);
    assert_eq!(
        run(&mut r, &d.bytes(), &m).0,
        Action::NoResponse(NoResponse::PoolExhausted)
    );
    // A fourth client asking for an offered address by REQUEST is refused.
    let q = Pkt::new(MessageType::Request, [2, 0, 0, 0, 2, 9])
        .giaddr(relay)
        .opt(DhcpOption::ServerIdentifier(SERVER))
        .opt(DhcpOption::RequestedIpAddress(offered[0]));
    assert_eq!(
        transmit(run(&mut r, &q.bytes(), &m).0).msg_type,
        MessageType::Nak
    );
    // Larger storm on the /24 pool: 100 clients, 100 distinct addresses.
    let mut seen = std::collections::HashSet::new();
    for i in 0..100u8 {
        assert!(seen.insert(dora(&mut r, [2, 0, 0, 3, 0, i], &meta())));
    }
    assert!(seen.iter().all(|ip| (100..=199).contains(&ip.octets()[3])));
    let d = Pkt::new(MessageType::Discover, [2, 0, 0, 3, 1, 0]);
    assert_eq!(
        run(&mut r, &d.bytes(), &meta()).0,
        Action::NoResponse(NoResponse::PoolExhausted)
    );
}

#[test]
fn decline_release_inform() {
    let mut r = Responder::new(&config(FULL), MemoryLeaseStore::new());
    let a = [2, 0, 0, 0, 3, 1];
    let ip = dora(&mut r, a, &meta());
    let dec = Pkt::new(MessageType::Decline, a)
        .opt(DhcpOption::ServerIdentifier(SERVER))
        .opt(DhcpOption::RequestedIpAddress(ip));
    assert_eq!(
        run(&mut r, &dec.bytes(), &meta()).0,
        Action::NoResponse(NoResponse::Declined)
    );
    assert_eq!(r.store().get(ip).unwrap().state, LeaseState::Declined);
    let ip2 = dora(&mut r, a, &meta());
    assert_ne!(ip2, ip, "a declined address is not offered again");
    // Nobody else gets it during the hold either.
    let (_, o) = run(
        &mut r,
        &Pkt::new(MessageType::Discover, [2, 0, 0, 0, 3, 2])
            .opt(DhcpOption::RequestedIpAddress(ip))
            .bytes(),
        &meta(),
    );
    assert_ne!(o.unwrap().yiaddr(), ip);
    // RELEASE frees the address for another client.
    let rel = Pkt::new(MessageType::Release, a)
        .ciaddr(ip2)
        .opt(DhcpOption::ServerIdentifier(SERVER));
    assert_eq!(
        run(&mut r, &rel.bytes(), &meta()).0,
        Action::NoResponse(NoResponse::Released)
    );
    let b = [2, 0, 0, 0, 3, 3];
    let (_, o) = run(
        &mut r,
        &Pkt::new(MessageType::Discover, b)
            .opt(DhcpOption::RequestedIpAddress(ip2))
            .bytes(),
        &meta(),
    );
    assert_eq!(o.unwrap().yiaddr(), ip2);
    // A RELEASE of an address that is not the client's is ignored.
    let rel = Pkt::new(MessageType::Release, [2, 0, 0, 0, 3, 4])
        .ciaddr(ip2)
        .opt(DhcpOption::ServerIdentifier(SERVER));
    assert_eq!(
        run(&mut r, &rel.bytes(), &meta()).0,
        Action::NoResponse(NoResponse::NotForUs)
    );
    // INFORM: ACK to ciaddr, configuration only.
    let c = Ipv4Addr::new(10, 0, 0, 20);
    let inf = Pkt::new(MessageType::Inform, [2, 0, 0, 0, 3, 5]).ciaddr(c);
    let (a, m) = run(&mut r, &inf.bytes(), &meta());
    let t = transmit(a);
    assert_eq!(
        (t.dst, t.broadcast, t.msg_type),
        (SocketAddrV4::new(c, 68), false, MessageType::Ack)
    );
    let m = m.unwrap();
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(opt(&m, v4::OptionCode::AddressLeaseTime).is_none());
    assert!(opt(&m, v4::OptionCode::Renewal).is_none());
    assert!(opt(&m, v4::OptionCode::SubnetMask).is_some());
    let s = r.metrics().snapshot();
    assert_eq!((s.declines, s.releases, s.inform_acks), (1, 1, 1));
}

#[test]
fn reservations() {
    let extra = format!(
        "{FULL}[[hosts]]\nmac = \"02:00:00:00:04:01\"\naddress = \"10.0.0.50\"\nhostname = \"fixed\"\n"
    );
    let mut r = Responder::new(&config(&extra), MemoryLeaseStore::new());
    let (_, m) = run(
        &mut r,
        &Pkt::new(MessageType::Discover, [2, 0, 0, 0, 4, 1]).bytes(),
        &meta(),
    );
    let m = m.unwrap();
    assert_eq!(m.yiaddr(), Ipv4Addr::new(10, 0, 0, 50));
    assert_eq!(
        opt(&m, v4::OptionCode::Hostname),
        Some(&DhcpOption::Hostname("fixed".into()))
    );
    assert_eq!(
        dora(&mut r, [2, 0, 0, 0, 4, 1], &meta()),
        Ipv4Addr::new(10, 0, 0, 50)
    );
    // The host may not take another address.
    let q = Pkt::new(MessageType::Request, [2, 0, 0, 0, 4, 1])
        .opt(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 101)));
    assert_eq!(
        transmit(run(&mut r, &q.bytes(), &meta()).0).msg_type,
        MessageType::Nak
    );
    // Nobody else gets the reserved address: a stranger is not answered (RFC 2131 §4.3.2),
    // a known client is NAKed.
    let q = Pkt::new(MessageType::Request, [2, 0, 0, 0, 4, 2])
        .opt(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 50)));
    assert_eq!(
        run(&mut r, &q.bytes(), &meta()).0,
        Action::NoResponse(NoResponse::UnknownClient)
    );
    assert_ne!(
        dora(&mut r, [2, 0, 0, 0, 4, 2], &meta()),
        Ipv4Addr::new(10, 0, 0, 50)
    );
    assert_eq!(
        transmit(run(&mut r, &q.bytes(), &meta()).0).msg_type,
        MessageType::Nak
    );
}

#[test]
fn redb_leases_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("leases.redb");
    let cfg = config(FULL);
    let store = RedbLeaseStore::open(&db).unwrap();
    let mut r = Responder::new(&cfg, store);
    let a = dora(&mut r, [2, 0, 0, 0, 5, 1], &meta());
    let b = dora(&mut r, [2, 0, 0, 0, 5, 2], &meta());
    drop(r);
    let mut r = Responder::new(&cfg, RedbLeaseStore::open(&db).unwrap());
    assert_eq!(r.store().get(a).unwrap().state, LeaseState::Bound);
    // The same clients get their addresses back, a new one gets neither.
    let (_, m) = run(
        &mut r,
        &Pkt::new(MessageType::Discover, [2, 0, 0, 0, 5, 2]).bytes(),
        &meta(),
    );
    assert_eq!(m.unwrap().yiaddr(), b);
    let c = dora(&mut r, [2, 0, 0, 0, 5, 3], &meta());
    assert!(c != a && c != b);
    let q =
        Pkt::new(MessageType::Request, [2, 0, 0, 0, 5, 3]).opt(DhcpOption::RequestedIpAddress(a));
    assert_eq!(
        transmit(run(&mut r, &q.bytes(), &meta()).0).msg_type,
        MessageType::Nak
    );
}

#[test]
fn malformed_input_is_dropped_and_counted() {
    for cfg in [config(""), config(FULL)] {
        let mut r = Responder::new(&cfg, MemoryLeaseStore::new());
        let good = bios_discover().bytes();
        let mut out = Vec::new();
        let mut answered = 0;
        for n in 0..good.len() {
            match r.handle(t0(), &good[..n], &meta(), &mut out) {
                Action::Respond(_) => answered += 1,
                // A cut at an option boundary may leave a valid request of a plain client.
                Action::NoResponse(NoResponse::Malformed(_) | NoResponse::NotPxe) => {}
                other => panic!("{n}: {other:?}"),
            }
        }
        // Only cuts at an option boundary after option 53, 60 and 93 can be answered.
        assert!(answered < 10, "{answered}");
        let mut bad = |i: usize, v: u8| {
            let mut p = good.clone();
            p[i] = v;
            r.handle(t0(), &p, &meta(), &mut out)
        };
        assert_eq!(
            bad(0, 2),
            Action::NoResponse(NoResponse::Malformed(DecodeError::NotBootRequest(2)))
        );
        assert_eq!(
            bad(1, 6),
            Action::NoResponse(NoResponse::Malformed(DecodeError::UnsupportedHtype(6)))
        );
        assert_eq!(
            bad(2, 17),
            Action::NoResponse(NoResponse::Malformed(DecodeError::BadHlen(17)))
        );
        let mut p = good[..240].to_vec();
        p.extend_from_slice(&[60, 3, b'P', b'X', b'E', 255]);
        assert_eq!(
            r.handle(t0(), &p, &meta(), &mut out),
            Action::NoResponse(NoResponse::Malformed(DecodeError::MissingMessageType))
        );
        let mut p = good[..240].to_vec();
        p.extend_from_slice(&[53, 1, 1, 60, 200, b'P']);
        assert!(matches!(
            r.handle(t0(), &p, &meta(), &mut out),
            Action::NoResponse(NoResponse::Malformed(DecodeError::OptionOverrun {
                code: 60,
                ..
            }))
        ));
        let s = r.metrics().snapshot();
        assert_eq!(s.drop_truncated, 240);
        assert_eq!(
            (s.drop_not_bootrequest, s.drop_bad_htype, s.drop_bad_hlen),
            (1, 1, 1)
        );
        // The cut at exactly 240 bytes leaves no options at all.
        assert_eq!(s.drop_missing_message_type, 2);
        assert!(s.drop_option_overrun >= 2);
        let total = s.drop_truncated
            + s.drop_not_bootrequest
            + s.drop_bad_htype
            + s.drop_bad_hlen
            + s.drop_option_overrun
            + s.drop_missing_message_type
            + s.drop_not_pxe
            + s.offers;
        assert_eq!(total, s.received, "{s}");
    }
}

#[test]
fn absurd_lease_request_is_clamped_and_counted() {
    let mut r = Responder::new(&config(FULL), MemoryLeaseStore::new());
    let d = Pkt::new(MessageType::Discover, [2, 0, 0, 0, 6, 1])
        .opt(DhcpOption::AddressLeaseTime(u32::MAX));
    let (_, m) = run(&mut r, &d.bytes(), &meta());
    assert_eq!(
        opt(&m.unwrap(), v4::OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(86_400))
    );
    let d =
        Pkt::new(MessageType::Discover, [2, 0, 0, 0, 6, 1]).opt(DhcpOption::AddressLeaseTime(1));
    let (_, m) = run(&mut r, &d.bytes(), &meta());
    assert_eq!(
        opt(&m.unwrap(), v4::OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(60))
    );
    assert_eq!(r.metrics().snapshot().lease_time_clamped, 1);
}

/// A [`MemoryLeaseStore`] whose batch commit can be made to fail: the batch's changes are
/// then undone, as `RedbLeaseStore` does.
#[derive(Default)]
struct FlakyStore {
    mem: MemoryLeaseStore,
    before_batch: Option<MemoryLeaseStore>,
    fail_next_commit: bool,
}

impl LeaseStore for FlakyStore {
    fn get(&self, ip: Ipv4Addr) -> Option<Lease> {
        self.mem.get(ip)
    }
    fn ip_of(&self, mac: &pxe_proto::MacAddr) -> Option<Ipv4Addr> {
        self.mem.ip_of(mac)
    }
    fn put(&mut self, lease: &Lease) -> Result<(), LeaseError> {
        self.mem.put(lease)
    }
    fn len(&self) -> usize {
        self.mem.len()
    }
    fn for_each(&self, f: &mut dyn FnMut(&Lease)) {
        self.mem.for_each(f);
    }
    fn begin_batch(&mut self) {
        self.before_batch = Some(self.mem.clone());
    }
    fn commit_batch(&mut self) -> Result<(), LeaseError> {
        let before = self.before_batch.take().expect("a batch was begun");
        if std::mem::take(&mut self.fail_next_commit) {
            self.mem = before;
            return Err(LeaseError::BatchFailed);
        }
        Ok(())
    }
}

/// The pool's free list never refuses an address that is free: one released by its client,
/// one whose lease expired, one whose offer a failed commit undid.
const TINY: &str = "[dhcp]\nenabled = true\nmode = \"full\"\n[[dhcp.subnets]]\n\
    subnet = \"10.0.0.0/24\"\nrange_start = \"10.0.0.100\"\nrange_end = \"10.0.0.102\"\n";

#[test]
fn pool_reuses_released_expired_and_rolled_back_addresses() {
    let mut r = Responder::new(&config(TINY), FlakyStore::default());
    let batch = |r: &mut Responder<FlakyStore>, mac: [u8; 6]| {
        r.begin_batch();
        let ip = dora(r, mac, &meta());
        r.commit_batch().unwrap();
        ip
    };
    let ips: Vec<Ipv4Addr> = (1..=3).map(|i| batch(&mut r, [2, 0, 0, 9, 0, i])).collect();
    assert_eq!(ips, [100, 101, 102].map(|l| Ipv4Addr::new(10, 0, 0, l)));
    let discover = |mac: u8| Pkt::new(MessageType::Discover, [2, 0, 0, 9, 1, mac]).bytes();
    assert_eq!(
        run(&mut r, &discover(1), &meta()).0,
        Action::NoResponse(NoResponse::PoolExhausted)
    );
    // A RELEASE gives the address to the next new client.
    let rel = Pkt::new(MessageType::Release, [2, 0, 0, 9, 0, 2])
        .ciaddr(ips[1])
        .opt(DhcpOption::ServerIdentifier(SERVER));
    assert_eq!(
        run(&mut r, &rel.bytes(), &meta()).0,
        Action::NoResponse(NoResponse::Released)
    );
    // ... but an offer of it that a failed commit undid leaves it free for the next one.
    r.begin_batch();
    let (_, o) = run(&mut r, &discover(1), &meta());
    assert_eq!(o.unwrap().yiaddr(), ips[1]);
    r.store_mut().fail_next_commit = true;
    assert!(r.commit_batch().is_err());
    r.begin_batch();
    let (_, o) = run(&mut r, &discover(2), &meta());
    assert_eq!(o.unwrap().yiaddr(), ips[1]);
    r.commit_batch().unwrap();
    assert_eq!(
        run(&mut r, &discover(3), &meta()).0,
        Action::NoResponse(NoResponse::PoolExhausted)
    );
    // When the leases run out (an hour), their addresses are free again.
    let later = t0() + Duration::from_secs(3601);
    let mut out = Vec::new();
    let a = r.handle(later, &discover(3), &meta(), &mut out);
    assert!(
        matches!(a, Action::Respond(t) if t.msg_type == MessageType::Offer),
        "{a:?}"
    );
}

/// A client that moves to another address (INIT-REBOOT) frees its old one at once.
#[test]
fn pool_reuses_the_address_a_client_moved_away_from() {
    let mut r = Responder::new(&config(TINY), MemoryLeaseStore::new());
    let a = [2, 0, 0, 9, 2, 1];
    assert_eq!(dora(&mut r, a, &meta()), Ipv4Addr::new(10, 0, 0, 100));
    assert_eq!(
        dora(&mut r, [2, 0, 0, 9, 2, 2], &meta()),
        Ipv4Addr::new(10, 0, 0, 101)
    );
    let moved = Ipv4Addr::new(10, 0, 0, 102);
    let q = Pkt::new(MessageType::Request, a).opt(DhcpOption::RequestedIpAddress(moved));
    let (act, m) = run(&mut r, &q.bytes(), &meta());
    assert_eq!(transmit(act).msg_type, MessageType::Ack);
    assert_eq!(m.unwrap().yiaddr(), moved);
    let (_, o) = run(
        &mut r,
        &Pkt::new(MessageType::Discover, [2, 0, 0, 9, 2, 3]).bytes(),
        &meta(),
    );
    assert_eq!(o.unwrap().yiaddr(), Ipv4Addr::new(10, 0, 0, 100));
}

mod balance;
mod link_bound;

/// Proxy mode: where a `[[hosts]]` entry is comes from its own requests: its broadcast REQUEST
/// to the server that gives addresses (option 50), or its port-4011 request sent from the
/// address it names in ciaddr. A port-4011 request from another address than its ciaddr, a
/// REQUEST naming no address, an unknown MAC, and full mode teach nothing.
#[test]
fn requests_teach_where_known_hosts_are() {
    let hosts = "[[hosts]]\nmac = \"02:00:00:00:00:07\"\nhostname = \"n7\"\n";
    let key = "mac:02:00:00:00:00:07";
    let now = 1_700_000_000;
    let client = Ipv4Addr::new(10, 0, 0, 150);
    let other = Ipv4Addr::new(10, 0, 0, 66);
    let dhcp_server = Ipv4Addr::new(10, 0, 0, 3);
    let at = |src: Ipv4Addr| RecvMeta {
        src: SocketAddrV4::new(src, 4011),
        port: 4011,
        ..meta()
    };
    let pxe =
        |t: MessageType, mac: [u8; 6]| Pkt::new(t, mac).pxe(7, "PXEClient:Arch:00007:UNDI:003016");
    let boot_server =
        |mac: [u8; 6], ciaddr: Ipv4Addr| pxe(MessageType::Request, mac).ciaddr(ciaddr).bytes();
    let selecting = |mac: [u8; 6], ip: Option<Ipv4Addr>| {
        let p = pxe(MessageType::Request, mac).opt(DhcpOption::ServerIdentifier(dhcp_server));
        match ip {
            Some(ip) => p.opt(DhcpOption::RequestedIpAddress(ip)),
            None => p,
        }
        .bytes()
    };
    let learned = Arc::new(crate::dhcp::learned::LearnedAddresses::default());
    let mut r = Responder::new(&config(hosts), MemoryLeaseStore::new());
    r.set_learned(Arc::clone(&learned));
    for (bytes, src) in [
        (boot_server([2, 0, 0, 0, 0, 7], client), at(other)),
        (
            boot_server([2, 0, 0, 0, 0, 7], Ipv4Addr::UNSPECIFIED),
            at(client),
        ),
        (boot_server([2, 0, 0, 0, 0, 8], other), at(other)),
        (selecting([2, 0, 0, 0, 0, 7], None), meta()),
        (selecting([2, 0, 0, 0, 0, 8], Some(other)), meta()),
    ] {
        run(&mut r, &bytes, &src);
    }
    assert_eq!(learned.get(key, now), None);
    assert_eq!(learned.snapshot().learned, 0);
    // The REQUEST to the address server, seen on port 67: not ours to answer, but it says.
    let (a, _) = run(
        &mut r,
        &selecting([2, 0, 0, 0, 0, 7], Some(client)),
        &meta(),
    );
    assert_eq!(a, Action::NoResponse(NoResponse::NotForUs));
    assert_eq!(learned.get(key, now), Some(client));
    // Then its port-4011 request from there: the same address, no conflict.
    let (a, _) = run(
        &mut r,
        &boot_server([2, 0, 0, 0, 0, 7], client),
        &at(client),
    );
    assert!(matches!(a, Action::Respond(_)), "{a:?}");
    assert_eq!(learned.get(key, now), Some(client));
    assert_eq!(learned.snapshot().learned, 2);

    // Full mode has leases for that: nothing is learned.
    let learned = Arc::new(crate::dhcp::learned::LearnedAddresses::default());
    let mut r = Responder::new(&config(&format!("{FULL}{hosts}")), MemoryLeaseStore::new());
    r.set_learned(Arc::clone(&learned));
    let (a, _) = run(
        &mut r,
        &boot_server([2, 0, 0, 0, 0, 7], client),
        &at(client),
    );
    assert!(matches!(a, Action::Respond(_)), "{a:?}");
    assert_eq!(learned.get(key, now), None);
}

/// Proxy mode's journeys: a PXE client's DISCOVER starts one (a plain client's does not), its
/// REQUEST to the address server names where it is, its port-4011 request from its `ciaddr`
/// too; a link at its lease bound is recorded as the client's last error (full mode).
#[test]
fn booting_clients_are_recorded_in_their_journeys() {
    use crate::journey::{ErrorKind, Journeys, Phase};
    use pxe_proto::MacAddr;
    let j = Arc::new(Journeys::default());
    let mut r = Responder::new(&config(""), MemoryLeaseStore::new());
    r.set_journeys(Arc::clone(&j));
    let mac = MacAddr(BIOS_MAC);
    let plain = Pkt::new(MessageType::Discover, [2, 0, 0, 0, 0, 9]);
    run(&mut r, &plain.bytes(), &meta());
    run(&mut r, &bios_discover().bytes(), &meta());
    let entry = |m: &MacAddr| j.with(|t| t.get(m).cloned()).flatten();
    assert!(
        entry(&MacAddr([2, 0, 0, 0, 0, 9])).is_none(),
        "not a PXE client"
    );
    let e = entry(&mac).unwrap();
    assert_eq!(
        e.phase,
        Some(Phase::Discover),
        "answers are the server's to record"
    );
    assert_eq!(e.uuid, Some(UUID.parse().unwrap()));
    let taken = Ipv4Addr::new(10, 0, 0, 50);
    let to_other = Pkt::new(MessageType::Request, BIOS_MAC)
        .pxe(0, "PXEClient:Arch:00000:UNDI:002001")
        .opt(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 254)))
        .opt(DhcpOption::RequestedIpAddress(taken));
    run(&mut r, &to_other.bytes(), &meta());
    assert_eq!(entry(&mac).unwrap().address, Some(taken));
    let moved = Ipv4Addr::new(10, 0, 0, 51);
    let boot_server = Pkt::new(MessageType::Request, BIOS_MAC)
        .pxe(0, "PXEClient:Arch:00000:UNDI:002001")
        .ciaddr(moved);
    let at = RecvMeta {
        src: SocketAddrV4::new(moved, 4011),
        port: 4011,
        ..meta()
    };
    run(&mut r, &boot_server.bytes(), &at);
    assert_eq!(j.with(|t| t.mac_at(moved)).flatten(), Some(mac));

    // Full mode, a link held to one lease: the second client is refused, and told so.
    let j = Arc::new(Journeys::default());
    let mut r = Responder::new(
        &config(&FULL.replace(
            "lease_time_secs = 3600\n",
            "lease_time_secs = 3600\nmax_leases_per_link = 1\n",
        )),
        MemoryLeaseStore::new(),
    );
    r.set_journeys(Arc::clone(&j));
    dora(&mut r, [2, 0, 0, 0, 0, 1], &meta());
    let second = Pkt::new(MessageType::Discover, [2, 0, 0, 0, 0, 2]).broadcast();
    let (a, _) = run(&mut r, &second.bytes(), &meta());
    assert_eq!(a, Action::NoResponse(NoResponse::LinkFull));
    let e = j
        .with(|t| t.get(&MacAddr([2, 0, 0, 0, 0, 2])).cloned())
        .flatten()
        .unwrap();
    let err = e.last_error.unwrap();
    assert_eq!(
        (err.kind, err.detail()),
        (ErrorKind::Refused, "dhcp.max_leases_per_link")
    );
}
