use super::*;
use dhcproto::v4::{self, DhcpOption, MessageType};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use std::net::UdpSocket;
use std::path::Path;

fn proxy_config() -> DhcpSettings {
    let text = format!(
        "[tftp]\nroot = \"{}\"\n[dhcp]\nenabled = true\n[boot]\nbios = \"undionly.kpxe\"\n",
        std::env::temp_dir().display()
    );
    let c = crate::config::Config::parse(&text, Path::new("t.toml")).unwrap();
    c.dhcp_settings(&c.host_index())
}

fn pxe_request(mac: [u8; 6]) -> Vec<u8> {
    let mut m = v4::Message::new_with_id(
        0x1234_5678,
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(MessageType::Request));
    o.insert(DhcpOption::ClassIdentifier(
        b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
    ));
    o.insert(DhcpOption::ClientSystemArchitecture(
        v4::Architecture::X86_Bios,
    ));
    let mut out = Vec::new();
    m.encode(&mut Encoder::new(&mut out)).unwrap();
    out
}

/// The whole socket path on loopback without root: a listener that plays the PXE boot
/// server port (on an ephemeral port) gets a batch of requests plus garbage, answers each
/// PXE request to its source with the boot file, from the address IP_PKTINFO reported, and
/// counts the garbage.
#[test]
fn loopback_batch_answers_pxe_boot_server_requests() {
    let config = proxy_config();
    let responder = Responder::new(&config, MemoryLeaseStore::new());
    let spec = ListenSpec {
        logical_port: PXE_PORT,
        bind: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
        device: None,
    };
    let mut server = DhcpServer::with_listeners(responder, &[spec]).unwrap();
    let port: u16 = server.listening()[0]
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    const N: usize = 10;
    for i in 0..N {
        client
            .send_to(&pxe_request([2, 0, 0, 0, 0, i as u8]), ("127.0.0.1", port))
            .unwrap();
    }
    client.send_to(&[1, 2, 3], ("127.0.0.1", port)).unwrap();
    let shutdown = Arc::new(AtomicBool::new(false));
    let metrics = server.metrics();
    let stop = Arc::clone(&shutdown);
    let t = std::thread::spawn(move || {
        server.run(&stop).unwrap();
        server
    });
    let mut seen = Vec::new();
    let mut buf = [0u8; 1500];
    for _ in 0..N {
        let (len, from) = client.recv_from(&mut buf).expect("an answer");
        assert_eq!(from.port(), port, "answers come from the listening socket");
        let m = v4::Message::decode(&mut Decoder::new(&buf[..len])).unwrap();
        assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(m.xid(), 0x1234_5678);
        assert_eq!(
            m.siaddr(),
            Ipv4Addr::LOCALHOST,
            "next-server from IP_PKTINFO"
        );
        assert_eq!(
            m.opts().get(v4::OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(
            std::str::from_utf8(m.fname().unwrap())
                .unwrap()
                .trim_end_matches('\0'),
            "undionly.kpxe"
        );
        seen.push(m.chaddr()[5]);
    }
    shutdown.store(true, Ordering::Relaxed);
    let server = t.join().unwrap();
    seen.sort_unstable();
    assert_eq!(seen, (0..N as u8).collect::<Vec<_>>());
    let s = metrics.snapshot();
    assert_eq!(s.received, N as u64 + 1);
    assert_eq!(s.pxe_boot_acks, N as u64);
    assert_eq!(s.drop_truncated, 1);
    assert_eq!(s.send_errors, 0);
    assert!(server.responder().store().is_empty());
}

#[test]
fn unknown_interface_is_a_clear_error() {
    let config = proxy_config();
    let responder = Responder::new(&config, MemoryLeaseStore::new());
    let spec = ListenSpec {
        logical_port: SERVER_PORT,
        bind: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
        device: Some("nosuchif0".into()),
    };
    let e = DhcpServer::with_listeners(responder, &[spec]).unwrap_err();
    assert!(
        matches!(&e, ServerError::Interface { name, .. } if name == "nosuchif0"),
        "{e}"
    );
}
