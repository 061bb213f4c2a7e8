use super::*;
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use dhcproto::{Decodable, Decoder, Encodable};
use pxe_proto::tftp::{self as packet, AcceptedOptions, Packet};

const MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 7];
const XID: u32 = 0x1234_5678;
const SRV: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const NEXT: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 5);
const IP: Ipv4Addr = Ipv4Addr::new(10, 9, 1, 1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn plan() -> BootPlan {
    BootPlan {
        skip_dhcp: false,
        boot_file: None,
        kernel: None,
        initrd: None,
        tftp_server: None,
        tftp_port: 69,
        windowsize: None,
        tftp_retry: Some(Retry::Fixed {
            timeout: ms(100),
            retries: 3,
        }),
        http: None,
        http_timeout: ms(500),
    }
}

fn client(plan: BootPlan, arch: Arch, t0: Instant) -> BootClient {
    let cfg = ClientConfig {
        mac: MAC,
        uuid: [1; 16],
        arch,
        mode: dhcp_client::Mode::Full,
        xid: XID,
        timeouts: ClientConfig::pxe_timeouts(0.001),
    };
    BootClient::new(Arc::new(plan), arch, cfg, t0)
}

fn reply(kind: MessageType, siaddr: Ipv4Addr, file: &str) -> Vec<u8> {
    let u = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(XID, u, IP, siaddr, u, &MAC);
    m.set_opcode(Opcode::BootReply);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(SRV));
    if !file.is_empty() {
        m.set_fname_str(file);
    }
    m.to_vec().unwrap()
}

/// All datagrams pending now.
fn drain(c: &mut BootClient, now: Instant) -> Vec<(Transmit, Vec<u8>)> {
    let mut out = vec![];
    let mut buf = Vec::new();
    while let Some(t) = c.poll_transmit(now, &mut buf) {
        out.push((t, buf.clone()));
    }
    out
}

/// Runs DHCP to the ACK; the boot file (and next-server `siaddr`) come from it.
fn do_dhcp(c: &mut BootClient, t: Instant, siaddr: Ipv4Addr, file: &str) {
    let d = drain(c, t);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].0, Transmit::Dhcp(dhcp_client::Dest::Server));
    let m = Message::decode(&mut Decoder::new(&d[0].1)).unwrap();
    assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
    assert_eq!(
        c.handle_dhcp(t, &reply(MessageType::Offer, siaddr, "")),
        Verdict::Accepted
    );
    let r = drain(c, t);
    assert_eq!(r.len(), 1);
    c.handle_dhcp(t + ms(1), &reply(MessageType::Ack, siaddr, file));
    assert!(drain(c, t + ms(1)).is_empty());
}

/// Parses the single RRQ pending and returns its options.
fn rrq(c: &mut BootClient, now: Instant) -> (SocketAddrV4, String, packet::RequestOptions) {
    let d = drain(c, now);
    assert_eq!(d.len(), 1, "one RRQ");
    let Transmit::Tftp(to) = d[0].0 else {
        panic!("not TFTP: {:?}", d[0].0)
    };
    let Ok(Packet::Request(r)) = packet::parse(&d[0].1) else {
        panic!("not a request")
    };
    (
        to,
        String::from_utf8(r.filename.to_vec()).unwrap(),
        r.options,
    )
}

fn oack(o: AcceptedOptions) -> Vec<u8> {
    let mut b = vec![0u8; 600];
    let n = packet::emit_oack(&o, &mut b);
    b.truncate(n);
    b
}

fn data(block: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; payload.len() + 4];
    let n = packet::emit_data(block, payload, &mut b).unwrap();
    b.truncate(n);
    b
}

/// Serves `file` to the client as a server would (OACK with what was asked, then the
/// blocks, window by window); returns the ACK block numbers seen. `corrupt`: block whose
/// first byte is flipped.
fn serve(
    c: &mut BootClient,
    now: Instant,
    server: Ipv4Addr,
    file: &[u8],
    opts: packet::RequestOptions,
    corrupt: Option<u16>,
) -> Vec<u16> {
    let from = SocketAddrV4::new(server, 40000);
    let blk = usize::from(opts.blksize.unwrap_or(512));
    let win = usize::from(opts.windowsize.unwrap_or(1));
    let accepted = AcceptedOptions {
        blksize: opts.blksize,
        tsize: opts.tsize.map(|_| file.len() as u64),
        timeout: None,
        windowsize: opts.windowsize,
    };
    assert!(c.handle_tftp(now, from, &oack(accepted)));
    let mut acks = vec![];
    let ack = |c: &mut BootClient, acks: &mut Vec<u16>| {
        for (t, b) in drain(c, now) {
            assert_eq!(t, Transmit::Tftp(from), "ACKs go to the transfer port");
            if let Ok(Packet::Ack { block }) = packet::parse(&b) {
                acks.push(block);
            }
        }
    };
    ack(c, &mut acks);
    let blocks = file.len() / blk + 1;
    for (k, chunk) in (0..blocks).map(|k| (k, &file[k * blk..((k + 1) * blk).min(file.len())])) {
        let block = (k + 1) as u16;
        let mut payload = chunk.to_vec();
        if corrupt == Some(block) {
            payload[0] ^= 0xff;
        }
        c.handle_tftp(now, from, &data(block, &payload));
        if (k + 1) % win == 0 || k + 1 == blocks {
            ack(c, &mut acks);
        }
        if c.is_finished() {
            break;
        }
    }
    ack(c, &mut acks);
    acks
}

fn file(n: usize, seed: u8) -> Arc<[u8]> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn firmware_options_per_arch_and_phase() {
    let bios = firmware_options(Arch::Bios, Step::BootFile, None);
    assert_eq!(
        bios,
        TftpAsk {
            blksize: Some(1432),
            windowsize: None,
            tsize: true,
            retry: Retry::IPXE,
        }
    );
    assert_eq!(firmware_options(Arch::Ipxe, Step::BootFile, None), bios);
    let uefi = firmware_options(Arch::UefiX64, Step::BootFile, None);
    assert_eq!(
        uefi,
        TftpAsk {
            blksize: Some(1468),
            windowsize: Some(4),
            tsize: true,
            retry: Retry::UEFI_PXE,
        }
    );
    // The kernel and initrd are fetched by iPXE, whatever the firmware.
    for arch in [Arch::Bios, Arch::UefiX64, Arch::Ipxe] {
        for step in [Step::Kernel, Step::Initrd] {
            assert_eq!(firmware_options(arch, step, None), bios);
        }
    }
    // --windowsize overrides every phase; 0 asks none.
    assert_eq!(
        firmware_options(Arch::Bios, Step::Kernel, Some(16)).windowsize,
        Some(16)
    );
    assert_eq!(
        firmware_options(Arch::UefiX64, Step::BootFile, Some(0)).windowsize,
        None
    );
}

#[test]
fn full_boot_uefi_dhcp_then_three_files_byte_exact() {
    let t0 = Instant::now();
    let mut p = plan();
    p.kernel = Some("vmlinuz".into());
    p.initrd = Some("initrd.img".into());
    let mut c = client(p, Arch::UefiX64, t0);
    assert_eq!(c.step(), Step::Dhcp);
    do_dhcp(&mut c, t0, NEXT, "snponly.efi");
    assert_eq!(c.tftp_server(), Some(NEXT), "siaddr is the TFTP server");
    assert_eq!(c.duration(Step::Dhcp), Some(ms(1)));

    let files = [
        (Step::BootFile, "snponly.efi", file(5000, 1), Some(4)),
        (Step::Kernel, "vmlinuz", file(20_000, 2), None),
        (Step::Initrd, "initrd.img", file(1432 * 3, 3), None),
    ];
    let mut now = t0 + ms(1);
    for (step, name, contents, window) in files {
        assert_eq!(c.awaiting_transfer(), Some((step, name)));
        assert!(
            drain(&mut c, now).is_empty(),
            "nothing before the driver starts it"
        );
        now += ms(2);
        c.start_transfer(now, Some(contents.clone()));
        assert!(c.in_transfer());
        let (to, got, opts) = rrq(&mut c, now);
        assert_eq!(to, SocketAddrV4::new(NEXT, 69));
        assert_eq!(got, name);
        let blk = if step == Step::BootFile { 1468 } else { 1432 };
        assert_eq!(opts.blksize, Some(blk), "{step:?}");
        assert_eq!(opts.windowsize, window, "{step:?}");
        assert_eq!(opts.tsize, Some(0));
        now += ms(3);
        let acks = serve(&mut c, now, NEXT, &contents, opts, None);
        assert_eq!(acks[0], 0, "ACK 0 answers the OACK");
        let blocks = (contents.len() / usize::from(blk) + 1) as u16;
        assert_eq!(*acks.last().unwrap(), blocks, "the last block is ACKed");
        if let Some(w) = window {
            // One ACK per window.
            assert_eq!(acks.len(), 1 + usize::from(blocks).div_ceil(usize::from(w)));
        }
        assert_eq!(c.duration(step), Some(ms(3)), "{step:?}");
        assert!(!c.in_transfer());
    }
    assert!(c.is_done(), "{:?}", c.failure());
    assert_eq!(c.total(), Some(now - t0));
    assert_eq!(c.bytes(), 5000 + 20_000 + 1432 * 3);
    assert_eq!(c.tftp_retransmits(), 0);
    assert!(c.deadline().is_none());
}

/// A client told to stall after a phase ends that phase well (the boot file's last block is
/// ACKed), then is finished without being done or failed: it asks for no next file and sends
/// nothing, not even after its timers would have fired.
#[test]
fn stalled_clients_stop_after_their_phase_and_send_nothing_more() {
    let t0 = Instant::now();
    let mut p = plan();
    p.kernel = Some("vmlinuz".into());
    p.initrd = Some("initrd.img".into());
    let files = [
        (Step::BootFile, "undionly.kpxe", file(3000, 1)),
        (Step::Kernel, "vmlinuz", file(5000, 2)),
    ];
    for stall in [Step::Dhcp, Step::BootFile, Step::Kernel] {
        let mut c = client(p.clone(), Arch::Bios, t0);
        c.stall_after(stall);
        do_dhcp(&mut c, t0, NEXT, "undionly.kpxe");
        let mut now = t0 + ms(1);
        for (step, name, contents) in files.iter().take_while(|f| f.0 <= stall) {
            assert_eq!(c.awaiting_transfer(), Some((*step, *name)), "{stall:?}");
            c.start_transfer(now, None);
            let (_, _, opts) = rrq(&mut c, now);
            let acks = serve(&mut c, now, NEXT, contents, opts, None);
            let blocks = (contents.len() / 1432 + 1) as u16;
            assert_eq!(
                acks.last(),
                Some(&blocks),
                "{stall:?}: the last block is ACKed"
            );
            assert!(c.duration(*step).is_some());
            now += ms(5);
        }
        assert!(c.is_stalled(), "{stall:?}: {:?}", c.failure());
        assert!(c.is_finished() && !c.is_done() && c.failure().is_none());
        assert_eq!(c.step(), stall);
        assert_eq!(c.awaiting_transfer(), None, "{stall:?}: no next file");
        assert_eq!(c.deadline(), None);
        c.handle_timeout(now + Duration::from_secs(60));
        assert!(drain(&mut c, now + Duration::from_secs(60)).is_empty());
        assert!(c.total().is_none());
    }
}

#[test]
fn bios_without_kernel_is_done_after_the_boot_file_and_tftp_server_override() {
    let t0 = Instant::now();
    let mut p = plan();
    p.tftp_server = Some(Ipv4Addr::new(10, 9, 0, 9));
    p.windowsize = Some(8);
    let mut c = client(p, Arch::Bios, t0);
    do_dhcp(&mut c, t0, NEXT, "undionly.kpxe");
    assert_eq!(c.tftp_server(), Some(Ipv4Addr::new(10, 9, 0, 9)));
    c.start_transfer(t0, None);
    let (to, name, opts) = rrq(&mut c, t0);
    assert_eq!(*to.ip(), Ipv4Addr::new(10, 9, 0, 9));
    assert_eq!(name, "undionly.kpxe");
    assert_eq!((opts.blksize, opts.windowsize), (Some(1432), Some(8)));
    // A datagram from another host is not the server's.
    let stray = SocketAddrV4::new(NEXT, 40000);
    assert!(!c.handle_tftp(t0, stray, &data(1, b"x")));
    serve(
        &mut c,
        t0,
        Ipv4Addr::new(10, 9, 0, 9),
        &file(3000, 0),
        opts,
        None,
    );
    assert!(c.is_done());
    assert_eq!(c.duration(Step::Kernel), None);
}

#[test]
fn without_siaddr_the_server_identifier_is_the_tftp_server() {
    let t0 = Instant::now();
    let mut c = client(plan(), Arch::Ipxe, t0);
    do_dhcp(&mut c, t0, Ipv4Addr::UNSPECIFIED, "boot.ipxe");
    assert_eq!(c.tftp_server(), Some(SRV));
    assert_eq!(c.awaiting_transfer(), Some((Step::BootFile, "boot.ipxe")));
}

#[test]
fn skip_dhcp_starts_with_the_boot_file() {
    let t0 = Instant::now();
    let mut p = plan();
    p.skip_dhcp = true;
    p.boot_file = Some("pxelinux.0".into());
    p.tftp_server = Some(SRV);
    let mut c = client(p, Arch::Bios, t0);
    assert_eq!(c.awaiting_transfer(), Some((Step::BootFile, "pxelinux.0")));
    assert_eq!(c.duration(Step::Dhcp), None);
    c.start_transfer(t0, None);
    let (to, _, _) = rrq(&mut c, t0);
    assert_eq!(to, SocketAddrV4::new(SRV, 69));
}

#[test]
fn corrupted_block_is_a_verify_mismatch() {
    let t0 = Instant::now();
    let mut c = client(plan(), Arch::Bios, t0);
    do_dhcp(&mut c, t0, NEXT, "undionly.kpxe");
    let f = file(10_000, 9);
    c.start_transfer(t0, Some(f.clone()));
    let (_, _, opts) = rrq(&mut c, t0);
    serve(&mut c, t0, NEXT, &f, opts, Some(3));
    assert!(c.is_finished() && !c.is_done());
    assert_eq!(
        c.failure().map(BootFailure::cause).as_deref(),
        Some("verify-mismatch-boot_file")
    );
    assert!(!c.in_transfer(), "the driver closes the socket");
}

#[test]
fn short_file_and_server_error_and_timeout() {
    let t0 = Instant::now();
    // The server sends fewer bytes than the verify copy has.
    let mut c = client(plan(), Arch::Bios, t0);
    do_dhcp(&mut c, t0, NEXT, "a");
    let f = file(4000, 0);
    c.start_transfer(t0, Some(f.clone()));
    let (_, _, mut opts) = rrq(&mut c, t0);
    opts.tsize = None;
    serve(&mut c, t0, NEXT, &f[..2000], opts, None);
    assert_eq!(
        c.failure().map(BootFailure::cause).as_deref(),
        Some("short-file-boot_file")
    );

    // ERROR 1 (file not found) on the kernel.
    let mut p = plan();
    p.kernel = Some("vmlinuz".into());
    let mut c = client(p, Arch::Bios, t0);
    do_dhcp(&mut c, t0, NEXT, "a");
    c.start_transfer(t0, None);
    let (_, _, opts) = rrq(&mut c, t0);
    serve(&mut c, t0, NEXT, b"tiny", opts, None);
    assert_eq!(c.awaiting_transfer(), Some((Step::Kernel, "vmlinuz")));
    c.start_transfer(t0, None);
    rrq(&mut c, t0);
    let mut err = vec![0u8; 64];
    let n = packet::emit_error_bytes(1, b"not found", &mut err);
    c.handle_tftp(t0, SocketAddrV4::new(NEXT, 40001), &err[..n]);
    assert!(drain(&mut c, t0).is_empty());
    assert_eq!(
        c.failure().map(BootFailure::cause).as_deref(),
        Some("tftp-error-1-kernel")
    );
    assert_eq!(c.bytes(), 4);

    // A silent server: the RRQ is retransmitted, then the client gives up.
    let mut c = client(plan(), Arch::UefiX64, t0);
    do_dhcp(&mut c, t0, NEXT, "a");
    c.start_transfer(t0, None);
    rrq(&mut c, t0);
    let mut rrqs = 1;
    while let Some(dl) = c.deadline() {
        c.handle_timeout(dl);
        rrqs += drain(&mut c, dl).len();
    }
    assert_eq!(rrqs, 4, "the RRQ and 3 retransmissions");
    assert_eq!(c.tftp_retransmits(), 3);
    assert_eq!(
        c.failure().map(BootFailure::cause).as_deref(),
        Some("tftp-timeout-boot_file")
    );
}

#[test]
fn dhcp_failure_and_url_boot_file() {
    let t0 = Instant::now();
    let mut c = client(plan(), Arch::Bios, t0);
    drain(&mut c, t0);
    while let Some(dl) = c.deadline() {
        c.handle_timeout(dl);
        drain(&mut c, dl);
    }
    assert_eq!(
        c.failure().map(BootFailure::cause).as_deref(),
        Some("dhcp-timeout-discover")
    );
    assert_eq!(c.dhcp_retransmits(), 3);
    assert_eq!(c.step(), Step::Dhcp);

    let mut c = client(plan(), Arch::Ipxe, t0);
    do_dhcp(&mut c, t0, NEXT, "http://10.9.0.1/boot.ipxe");
    assert_eq!(
        c.failure().map(BootFailure::cause).as_deref(),
        Some("not-tftp-boot_file")
    );

    // A local failure (the driver could not open a socket) names the phase.
    let mut c = client(plan(), Arch::Ipxe, t0);
    do_dhcp(&mut c, t0, NEXT, "x");
    c.fail_local("socket-EMFILE");
    assert_eq!(
        c.failure().map(BootFailure::cause).as_deref(),
        Some("socket-EMFILE-boot_file")
    );
}

#[test]
fn a_nak_restarts_dhcp_and_the_boot_goes_on() {
    let t0 = Instant::now();
    let mut c = client(plan(), Arch::Bios, t0);
    drain(&mut c, t0);
    c.handle_dhcp(t0, &reply(MessageType::Offer, NEXT, ""));
    drain(&mut c, t0);
    c.handle_dhcp(t0 + ms(1), &reply(MessageType::Nak, NEXT, ""));
    assert!(drain(&mut c, t0 + ms(1)).is_empty(), "back-off first");
    assert_eq!(c.step(), Step::Dhcp);
    let dl = c.deadline().unwrap();
    c.handle_timeout(dl);
    let d = drain(&mut c, dl);
    assert_eq!(d.len(), 1);
    let m = Message::decode(&mut Decoder::new(&d[0].1)).unwrap();
    assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
    let xid = m.xid();
    assert_ne!(xid, XID);
    let with_xid = |kind, file| {
        let mut m = Message::decode(&mut Decoder::new(&reply(kind, NEXT, file))).unwrap();
        m.set_xid(xid);
        m.to_vec().unwrap()
    };
    // The old transaction's answers are ignored.
    assert_eq!(
        c.handle_dhcp(dl, &reply(MessageType::Offer, NEXT, "")),
        Verdict::Ignored
    );
    c.handle_dhcp(dl, &with_xid(MessageType::Offer, ""));
    assert_eq!(drain(&mut c, dl).len(), 1, "the REQUEST");
    c.handle_dhcp(dl + ms(1), &with_xid(MessageType::Ack, "undionly.kpxe"));
    assert!(drain(&mut c, dl + ms(1)).is_empty());
    assert_eq!(
        c.awaiting_transfer(),
        Some((Step::BootFile, "undionly.kpxe"))
    );
    assert_eq!(c.dhcp_naks_restarts(), (1, 1));
    // DHCP time runs from the first DISCOVER to the final ACK.
    assert_eq!(c.duration(Step::Dhcp), Some(dl + ms(1) - t0));
}

#[test]
fn lost_block_in_a_window_is_re_acked_and_refetched() {
    let t0 = Instant::now();
    let mut c = client(plan(), Arch::UefiX64, t0);
    do_dhcp(&mut c, t0, NEXT, "snponly.efi");
    let f = file(1468 * 6 + 10, 4);
    c.start_transfer(t0, Some(f.clone()));
    let (_, _, opts) = rrq(&mut c, t0);
    let from = SocketAddrV4::new(NEXT, 40000);
    let accepted = AcceptedOptions {
        blksize: opts.blksize,
        tsize: Some(f.len() as u64),
        timeout: None,
        windowsize: opts.windowsize,
    };
    c.handle_tftp(t0, from, &oack(accepted));
    drain(&mut c, t0);
    let blk = |k: usize| data(k as u16, &f[(k - 1) * 1468..(k * 1468).min(f.len())]);
    // Window 1..4 with block 2 lost.
    c.handle_tftp(t0, from, &blk(1));
    c.handle_tftp(t0, from, &blk(3));
    let d = drain(&mut c, t0);
    assert_eq!(d.len(), 1);
    assert_eq!(packet::parse(&d[0].1), Ok(Packet::Ack { block: 1 }));
    c.handle_tftp(t0, from, &blk(4));
    // The server restarts from 2.
    for k in 2..=7 {
        c.handle_tftp(t0 + ms(1), from, &blk(k));
    }
    drain(&mut c, t0 + ms(1));
    assert!(c.is_done(), "{:?}", c.failure());
    assert_eq!(c.bytes(), f.len() as u64);
}

fn http_plan() -> BootPlan {
    let mut p = plan();
    p.kernel = Some("vmlinuz".into());
    p.initrd = Some("initrd.img".into());
    p.http = Some(Arc::new(
        crate::http_client::HttpBase::parse("http://10.9.0.5:8080/boot/").unwrap(),
    ));
    p
}

fn http_response(body: &[u8]) -> Vec<u8> {
    let mut v = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    v.extend_from_slice(body);
    v
}

/// Starts the awaited HTTP phase and plays a server: connect, read the request, answer
/// `wire` in pieces. Returns the request line.
fn serve_http(c: &mut BootClient, now: Instant, expected: Arc<[u8]>, wire: &[u8]) -> String {
    assert!(c.uses_http());
    c.start_transfer(now, Some(expected));
    assert!(!c.in_transfer(), "no TFTP socket for an HTTP phase");
    assert!(drain(c, now).is_empty(), "no datagrams");
    if let Some(to) = c.poll_http_connect() {
        assert_eq!(to, "10.9.0.5:8080".parse().unwrap());
        assert!(c.http_connecting());
        c.handle_http_connected(now);
    }
    assert!(c.http_wants_socket());
    let req = String::from_utf8(c.http_output().to_vec()).unwrap();
    let n = req.len();
    c.http_wrote(now, n);
    assert!(c.http_output().is_empty());
    for piece in wire.chunks(1000) {
        c.handle_http_data(now + ms(5), piece);
    }
    req.lines().next().unwrap().to_owned()
}

#[test]
fn dhcp_tftp_boot_file_then_kernel_and_initrd_over_one_http_connection() {
    let t0 = Instant::now();
    let mut c = client(http_plan(), Arch::Bios, t0);
    do_dhcp(&mut c, t0, NEXT, "undionly.kpxe");
    let boot = file(3000, 1);
    c.start_transfer(t0, Some(boot.clone()));
    let (_, name, opts) = rrq(&mut c, t0);
    assert_eq!(name, "undionly.kpxe");
    serve(&mut c, t0, NEXT, &boot, opts, None);
    assert_eq!(c.awaiting_transfer(), Some((Step::Kernel, "vmlinuz")));
    assert!(!c.http_wants_socket());

    let kernel = file(50_000, 2);
    let line = serve_http(&mut c, t0 + ms(1), kernel.clone(), &http_response(&kernel));
    assert_eq!(line, "GET /boot/vmlinuz HTTP/1.1");
    assert_eq!(c.duration(Step::Kernel), Some(ms(5)));
    assert_eq!(c.awaiting_transfer(), Some((Step::Initrd, "initrd.img")));
    assert!(c.http_wants_socket(), "kept open for the initrd");
    let initrd = file(7000, 3);
    let line = serve_http(&mut c, t0 + ms(10), initrd.clone(), &http_response(&initrd));
    assert_eq!(line, "GET /boot/initrd.img HTTP/1.1");
    assert!(c.is_done(), "{:?}", c.failure());
    assert_eq!(c.duration(Step::Initrd), Some(ms(5)));
    assert_eq!(c.total(), Some(ms(15)));
    assert_eq!(c.bytes(), 3000 + 50_000 + 7000);
    assert!(!c.http_wants_socket(), "closed when done");
    assert!(c.deadline().is_none());
}

#[test]
fn skip_dhcp_without_boot_file_is_http_only() {
    let t0 = Instant::now();
    let mut p = http_plan();
    p.skip_dhcp = true;
    p.kernel = None;
    let mut c = client(p, Arch::Bios, t0);
    assert_eq!(c.awaiting_transfer(), Some((Step::Initrd, "initrd.img")));
    let initrd = file(2000, 4);
    serve_http(&mut c, t0, initrd.clone(), &http_response(&initrd));
    assert!(c.is_done(), "{:?}", c.failure());
    assert_eq!(c.duration(Step::BootFile), None);
    assert_eq!(c.bytes(), 2000);

    // TFTP-only kernel + initrd without a boot file needs a TFTP server.
    let mut p = plan();
    p.skip_dhcp = true;
    p.kernel = Some("vmlinuz".into());
    p.tftp_server = Some(SRV);
    let mut c = client(p.clone(), Arch::Bios, t0);
    assert_eq!(c.awaiting_transfer(), Some((Step::Kernel, "vmlinuz")));
    assert!(!c.uses_http());
    c.start_transfer(t0, None);
    let (to, name, _) = rrq(&mut c, t0);
    assert_eq!((to, name.as_str()), (SocketAddrV4::new(SRV, 69), "vmlinuz"));
    p.tftp_server = None;
    let c = client(p, Arch::Bios, t0);
    assert_eq!(
        c.failure().map(BootFailure::cause).as_deref(),
        Some("no-tftp-server")
    );
}

#[test]
fn http_failures_are_named_by_cause_and_phase() {
    let t0 = Instant::now();
    let mut p = http_plan();
    p.skip_dhcp = true;
    let k = file(4000, 5);
    let cases: Vec<(Vec<u8>, bool, &str)> = vec![
        (
            b"HTTP/1.1 404 Not Found\r\n\r\n".to_vec(),
            false,
            "http-status-404-kernel",
        ),
        (
            {
                let mut w = http_response(&k);
                w.truncate(w.len() - 100);
                w
            },
            true,
            "http-short-body-kernel",
        ),
        (
            {
                let mut w = http_response(&k);
                let n = w.len();
                w[n - 10] ^= 0x55;
                w
            },
            false,
            "verify-mismatch-kernel",
        ),
        (http_response(&k[..3000]), false, "short-file-kernel"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: br\r\n\r\n".to_vec(),
            false,
            "http-unsupported-encoding-kernel",
        ),
    ];
    for (wire, eof, cause) in cases {
        let mut c = client(p.clone(), Arch::Bios, t0);
        serve_http(&mut c, t0, k.clone(), &wire);
        if eof {
            c.handle_http_eof(t0 + ms(6));
        }
        assert_eq!(c.failure().map(BootFailure::cause).as_deref(), Some(cause));
        assert!(!c.http_wants_socket(), "{cause}: the socket is closed");
    }
    // Refused connect; silent server (idle timeout, from the client's own timer).
    let mut c = client(p.clone(), Arch::Bios, t0);
    c.start_transfer(t0, None);
    c.poll_http_connect().unwrap();
    c.handle_http_error(t0, HttpFailure::Refused);
    assert_eq!(
        c.failure().map(BootFailure::cause).as_deref(),
        Some("http-refused-kernel")
    );
    let mut c = client(p, Arch::Bios, t0);
    c.start_transfer(t0, None);
    c.poll_http_connect().unwrap();
    c.handle_http_connected(t0);
    let mut timers = 0;
    while let Some(dl) = c.deadline() {
        timers += 1;
        assert!(timers < 10);
        c.handle_timeout(dl);
    }
    assert_eq!(
        c.failure().map(BootFailure::cause).as_deref(),
        Some("http-timeout-kernel")
    );
}
