use dhcproto::v4::{self, DhcpOption, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};

use super::*;

const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const XID: u32 = 0xdead_beef;
const SRV: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PROXY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn client(mode: Mode, arch: Arch, t0: Instant) -> DhcpClient {
    DhcpClient::new(
        ClientConfig {
            mac: MAC,
            uuid: [7; 16],
            arch,
            mode,
            xid: XID,
            timeouts: ClientConfig::pxe_timeouts(0.001),
        },
        t0,
    )
}

/// A server reply built with dhcproto.
struct Reply(Message);

impl Reply {
    fn new(kind: MessageType, yiaddr: Ipv4Addr) -> Reply {
        let u = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(XID, u, yiaddr, u, u, &MAC);
        m.set_opcode(Opcode::BootReply);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        Reply(m)
    }
    fn server(mut self, id: Ipv4Addr) -> Reply {
        self.0.opts_mut().insert(DhcpOption::ServerIdentifier(id));
        self
    }
    fn pxe(mut self) -> Reply {
        self.0
            .opts_mut()
            .insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
        self
    }
    fn file(mut self, f: &str) -> Reply {
        self.0.set_fname_str(f);
        self
    }
    fn opt67(mut self, f: &str) -> Reply {
        self.0
            .opts_mut()
            .insert(DhcpOption::BootfileName(f.as_bytes().to_vec()));
        self
    }
    fn xid(mut self, x: u32) -> Reply {
        self.0.set_xid(x);
        self
    }
    fn chaddr(mut self, c: [u8; 6]) -> Reply {
        self.0.set_chaddr(&c);
        self
    }
    fn bytes(&self) -> Vec<u8> {
        self.0.to_vec().unwrap()
    }
}

fn offer() -> Reply {
    Reply::new(MessageType::Offer, IP).server(SRV)
}

/// Sends what is pending, returns the decoded request and its destination.
fn tx(c: &mut DhcpClient, now: Instant) -> (Dest, Message, usize) {
    let mut out = Vec::new();
    let dest = c
        .poll_transmit(now, &mut out)
        .expect("a datagram is pending");
    assert!(c.poll_transmit(now, &mut out).is_none(), "one at a time");
    let m = Message::decode(&mut Decoder::new(&out)).unwrap();
    (dest, m, out.len())
}

fn opt(m: &Message, code: u8) -> Option<&DhcpOption> {
    m.opts().get(OptionCode::from(code))
}

#[test]
fn full_flow_with_pxe_options() {
    let t0 = Instant::now();
    let mut c = client(Mode::Full, Arch::UefiX64, t0);
    let (dest, d, len) = tx(&mut c, t0);
    assert_eq!(dest, Dest::Server);
    assert!(len >= 300);
    assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
    assert_eq!((d.xid(), &d.chaddr()[..6]), (XID, &MAC[..]));
    assert!(d.flags().broadcast());
    assert_eq!(d.ciaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(
        opt(&d, 60),
        Some(&DhcpOption::ClassIdentifier(
            b"PXEClient:Arch:00007:UNDI:002001".to_vec()
        ))
    );
    assert_eq!(
        opt(&d, 93),
        Some(&DhcpOption::ClientSystemArchitecture(7.into()))
    );
    assert_eq!(
        opt(&d, 94),
        Some(&DhcpOption::ClientNetworkInterface(1, 2, 1))
    );
    let mut uuid = vec![0];
    uuid.extend_from_slice(&[7; 16]);
    assert_eq!(
        opt(&d, 97),
        Some(&DhcpOption::ClientMachineIdentifier(uuid))
    );
    assert!(opt(&d, 77).is_none());
    let Some(DhcpOption::ParameterRequestList(prl)) = opt(&d, 55) else {
        panic!("no option 55");
    };
    for code in [43u8, 60, 66, 67] {
        assert!(prl.contains(&OptionCode::from(code)), "55 lacks {code}");
    }
    assert_eq!(c.deadline(), Some(t0 + ms(4)));

    let t1 = t0 + ms(1);
    assert_eq!(c.handle_datagram(t1, &offer().bytes()), Verdict::Accepted);
    let (dest, r, _) = tx(&mut c, t1);
    assert_eq!(dest, Dest::Server);
    assert_eq!(r.opts().msg_type(), Some(MessageType::Request));
    assert_eq!(opt(&r, 50), Some(&DhcpOption::RequestedIpAddress(IP)));
    assert_eq!(opt(&r, 54), Some(&DhcpOption::ServerIdentifier(SRV)));
    assert!(r.flags().broadcast());
    assert_eq!(r.ciaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(!c.is_finished());

    let t2 = t0 + ms(3);
    let ack = Reply::new(MessageType::Ack, IP)
        .server(SRV)
        .file("snponly.efi");
    assert_eq!(c.handle_datagram(t2, &ack.bytes()), Verdict::Accepted);
    assert!(c.is_done());
    assert_eq!(c.boot_file(), Some(&b"snponly.efi"[..]));
    assert_eq!(c.address(), Some(IP));
    assert_eq!(c.deadline(), None);
    assert_eq!(c.ts.discover_sent, Some(t0));
    assert_eq!(c.ts.offer_got, Some(t1));
    assert_eq!(c.ts.request_sent, Some(t1));
    assert_eq!(c.ts.ack_got, Some(t2));
    assert_eq!(c.retransmits, 0);
    // Finished: nothing more to send, later packets are ignored.
    assert!(c.poll_transmit(t2, &mut Vec::new()).is_none());
    assert_eq!(c.handle_datagram(t2, &ack.bytes()), Verdict::Ignored);
}

#[test]
fn ipxe_sends_user_class_and_bios_arch() {
    let t0 = Instant::now();
    let mut c = client(Mode::Full, Arch::Ipxe, t0);
    let (_, d, _) = tx(&mut c, t0);
    assert_eq!(opt(&d, 77), Some(&DhcpOption::UserClass(b"iPXE".to_vec())));
    assert_eq!(
        opt(&d, 93),
        Some(&DhcpOption::ClientSystemArchitecture(0.into()))
    );
    assert_eq!(
        opt(&d, 60),
        Some(&DhcpOption::ClassIdentifier(
            b"PXEClient:Arch:00000:UNDI:002001".to_vec()
        ))
    );
}

#[test]
fn full_ack_without_boot_file_fails_and_option_67_counts() {
    let t0 = Instant::now();
    let mut c = client(Mode::Full, Arch::Bios, t0);
    tx(&mut c, t0);
    c.handle_datagram(t0, &offer().bytes());
    tx(&mut c, t0);
    let ack = Reply::new(MessageType::Ack, IP).server(SRV);
    assert_eq!(c.handle_datagram(t0, &ack.bytes()), Verdict::Accepted);
    assert_eq!(c.failure(), Some(&Failure::NoBootFile));

    let mut c = client(Mode::Full, Arch::Bios, t0);
    tx(&mut c, t0);
    c.handle_datagram(t0, &offer().bytes());
    tx(&mut c, t0);
    let ack = Reply::new(MessageType::Ack, IP)
        .server(SRV)
        .opt67("undionly.kpxe");
    c.handle_datagram(t0, &ack.bytes());
    assert!(c.is_done());
    assert_eq!(c.boot_file(), Some(&b"undionly.kpxe"[..]));
}

#[test]
fn discover_schedule_is_4_8_16_32_then_gives_up() {
    let t0 = Instant::now();
    let mut c = client(Mode::Full, Arch::Bios, t0);
    let mut now = t0;
    let mut sent = vec![];
    loop {
        if let Some(_d) = c.poll_transmit(now, &mut Vec::new()) {
            sent.push(now - t0);
        }
        let Some(dl) = c.deadline() else { break };
        // A timeout call before the deadline changes nothing.
        c.handle_timeout(dl - ms(1) / 2);
        assert!(c.poll_transmit(now, &mut Vec::new()).is_none());
        now = dl;
        c.handle_timeout(now);
    }
    assert_eq!(sent, vec![ms(0), ms(4), ms(12), ms(28)]);
    assert_eq!(now - t0, ms(60));
    assert_eq!(c.retransmits, 3);
    assert_eq!(c.failure(), Some(&Failure::Timeout(Phase::Discover)));
    assert_eq!(c.failure().unwrap().cause(), "timeout-discover");
}

#[test]
fn request_is_retransmitted_then_times_out() {
    let t0 = Instant::now();
    let mut c = client(Mode::Full, Arch::Bios, t0);
    tx(&mut c, t0);
    c.handle_timeout(t0 + ms(4)); // one DISCOVER retransmission
    tx(&mut c, t0 + ms(4));
    c.handle_datagram(t0 + ms(5), &offer().bytes());
    let (_, r, _) = tx(&mut c, t0 + ms(5));
    assert_eq!(r.opts().msg_type(), Some(MessageType::Request));
    assert_eq!(c.deadline(), Some(t0 + ms(9)));
    c.handle_timeout(t0 + ms(9));
    let (_, r2, _) = tx(&mut c, t0 + ms(9));
    assert_eq!(r2.opts().msg_type(), Some(MessageType::Request));
    assert_eq!(c.deadline(), Some(t0 + ms(17)));
    assert_eq!(c.ts.request_sent, Some(t0 + ms(5)));
    for _ in 0..3 {
        let dl = c.deadline().unwrap();
        c.handle_timeout(dl);
        c.poll_transmit(dl, &mut Vec::new());
    }
    assert_eq!(c.failure(), Some(&Failure::Timeout(Phase::Request)));
    assert_eq!(c.retransmits, 1 + 3);
}

fn nak() -> Reply {
    Reply::new(MessageType::Nak, Ipv4Addr::UNSPECIFIED).server(SRV)
}

/// DISCOVER → OFFER → REQUEST → NAK at `now`, all with the client's current xid; returns
/// the xid that was NAKed.
fn offer_request_nak(c: &mut DhcpClient, now: Instant) -> u32 {
    let xid = c.xid();
    let (_, d, _) = tx(c, now);
    assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
    assert_eq!(d.xid(), xid);
    assert_eq!(
        c.handle_datagram(now, &offer().xid(xid).bytes()),
        Verdict::Accepted
    );
    let (_, r, _) = tx(c, now);
    assert_eq!(r.opts().msg_type(), Some(MessageType::Request));
    assert_eq!(r.xid(), xid);
    assert_eq!(
        c.handle_datagram(now, &nak().xid(xid).bytes()),
        Verdict::Accepted
    );
    xid
}

#[test]
fn nak_restarts_at_discover_with_a_new_xid_after_a_back_off() {
    let t0 = Instant::now();
    let mut c = client(Mode::Full, Arch::Bios, t0);
    tx(&mut c, t0);
    c.handle_datagram(t0, &offer().bytes());
    tx(&mut c, t0);
    // A NAK from another server is not ours to obey.
    let other = Reply::new(MessageType::Nak, Ipv4Addr::UNSPECIFIED).server(PROXY);
    assert_eq!(c.handle_datagram(t0, &other.bytes()), Verdict::Ignored);
    assert_eq!(c.naks, 0);
    let t1 = t0 + ms(1);
    assert_eq!(c.handle_datagram(t1, &nak().bytes()), Verdict::Accepted);
    assert_eq!((c.naks, c.restarts), (1, 0));
    assert!(!c.is_finished());
    // Not at once: the back-off (an eighth to half of the first 4 ms timeout) runs first.
    assert!(c.poll_transmit(t1, &mut Vec::new()).is_none());
    let dl = c.deadline().expect("the back-off timer");
    assert!(
        dl >= t1 + Duration::from_micros(500) && dl <= t1 + ms(2),
        "back-off {:?}",
        dl - t1
    );
    c.handle_timeout(dl - Duration::from_micros(1));
    assert!(c.poll_transmit(dl, &mut Vec::new()).is_none());
    // Replies to the abandoned transaction, even a fitting ACK, change nothing.
    let late_ack = Reply::new(MessageType::Ack, IP).server(SRV).file("x");
    assert_eq!(c.handle_datagram(t1, &late_ack.bytes()), Verdict::Ignored);
    assert_eq!(c.handle_datagram(t1, &offer().bytes()), Verdict::Ignored);
    c.handle_timeout(dl);
    assert_eq!(c.restarts, 1);
    let new_xid = c.xid();
    assert_ne!(new_xid, XID);
    assert_ne!(new_xid, 0);
    let (dest, d, _) = tx(&mut c, dl);
    assert_eq!(dest, Dest::Server);
    assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
    assert_eq!(d.xid(), new_xid);
    assert!(opt(&d, 50).is_none() && opt(&d, 54).is_none());
    // A fresh retransmission schedule for the new DISCOVER.
    assert_eq!(c.deadline(), Some(dl + ms(4)));
    // Stale answers to the old xid are ignored in the new transaction too.
    assert_eq!(c.handle_datagram(dl, &offer().bytes()), Verdict::Ignored);
    assert_eq!(c.handle_datagram(dl, &late_ack.bytes()), Verdict::Ignored);
    assert!(c.poll_transmit(dl, &mut Vec::new()).is_none());
    assert_eq!(c.ignored, 5);
    // An offer to the new xid leads to a REQUEST and a bound lease.
    let t2 = dl + ms(1);
    let other_ip = Ipv4Addr::new(10, 0, 0, 101);
    let offer2 = Reply::new(MessageType::Offer, other_ip)
        .server(SRV)
        .xid(new_xid);
    assert_eq!(c.handle_datagram(t2, &offer2.bytes()), Verdict::Accepted);
    let (_, r, _) = tx(&mut c, t2);
    assert_eq!(r.xid(), new_xid);
    assert_eq!(opt(&r, 50), Some(&DhcpOption::RequestedIpAddress(other_ip)));
    let ack = Reply::new(MessageType::Ack, other_ip)
        .server(SRV)
        .file("pxelinux.0")
        .xid(new_xid);
    assert_eq!(
        c.handle_datagram(t2 + ms(1), &ack.bytes()),
        Verdict::Accepted
    );
    assert!(c.is_done());
    assert_eq!(c.address(), Some(other_ip));
    assert_eq!(c.boot_file(), Some(&b"pxelinux.0"[..]));
    assert_eq!((c.naks, c.restarts, c.retransmits), (1, 1, 0));
    // The whole-DHCP time runs from the first DISCOVER.
    assert_eq!(c.ts.discover_sent, Some(t0));
    assert_eq!(c.ts.request_sent, Some(t2));
    assert_eq!(c.ts.ack_got, Some(t2 + ms(1)));
}

#[test]
fn nak_after_nak_until_the_overall_deadline() {
    let t0 = Instant::now();
    let mut c = client(Mode::Full, Arch::Bios, t0);
    let mut now = t0;
    let mut xids = std::collections::HashSet::new();
    let mut backoffs = vec![];
    for _ in 0..1000 {
        assert!(xids.insert(offer_request_nak(&mut c, now)), "xid reused");
        let dl = c.deadline().expect("a timer while running");
        backoffs.push(dl - now);
        now = dl;
        c.handle_timeout(now);
        if c.is_finished() {
            break;
        }
    }
    // 4 + 8 + 16 + 32 ms after the first DISCOVER, not a NAK count, ends it.
    assert_eq!(now - t0, ms(60));
    let naks = c.naks;
    assert_eq!(c.failure(), Some(&Failure::TimeoutAfterNaks { naks }));
    assert_eq!(c.failure().unwrap().cause(), "timeout-after-naks");
    assert!(naks > 20, "{naks} NAKs in 60 ms of 0.5..2 ms back-offs");
    assert_eq!(c.restarts, naks - 1, "the last NAK left no time");
    assert_eq!(xids.len() as u64, naks);
    assert_eq!(c.retransmits, 0);
    assert_eq!(c.deadline(), None);
    assert!(c.poll_transmit(now, &mut Vec::new()).is_none());
    // Randomized: within bounds (the last one cut short by the deadline), not all equal.
    let (last, full) = backoffs.split_last().unwrap();
    assert!(*last <= ms(2));
    for b in full {
        assert!(*b >= Duration::from_micros(500) && *b <= ms(2), "{b:?}");
    }
    assert!(full.iter().any(|b| b != &full[0]), "{full:?}");
}

#[test]
fn clients_nak_ed_together_do_not_restart_in_lock_step() {
    let t0 = Instant::now();
    let deadlines: Vec<Instant> = (0..8u8)
        .map(|k| {
            let mut c = DhcpClient::new(
                ClientConfig {
                    mac: [2, 0, 0, 0, 0, k],
                    uuid: [k; 16],
                    arch: Arch::Bios,
                    mode: Mode::Full,
                    xid: 0x1000 + u32::from(k),
                    timeouts: ClientConfig::pxe_timeouts(1.0),
                },
                t0,
            );
            let xid = c.xid();
            let mut u = Vec::new();
            c.poll_transmit(t0, &mut u);
            let mac = [2, 0, 0, 0, 0, k];
            c.handle_datagram(t0, &offer().xid(xid).chaddr(mac).bytes());
            c.poll_transmit(t0, &mut u);
            let n = nak().xid(xid).chaddr(mac);
            assert_eq!(c.handle_datagram(t0, &n.bytes()), Verdict::Accepted);
            c.deadline().unwrap()
        })
        .collect();
    for d in &deadlines {
        // 0.5 .. 2 s at PXE scale.
        assert!(*d >= t0 + ms(500) && *d <= t0 + ms(2000), "{:?}", *d - t0);
    }
    let distinct: std::collections::HashSet<_> = deadlines.iter().collect();
    assert!(distinct.len() >= 6, "back-offs {deadlines:?}");
}

#[test]
fn silent_server_after_a_nak_times_out_at_the_overall_deadline() {
    let t0 = Instant::now();
    let mut c = client(Mode::Full, Arch::Bios, t0);
    offer_request_nak(&mut c, t0);
    let mut discovers = 0;
    while let Some(dl) = c.deadline() {
        c.handle_timeout(dl);
        let mut out = Vec::new();
        if c.poll_transmit(dl, &mut out).is_some() {
            discovers += 1;
        }
        assert!(dl <= t0 + ms(60), "no wait past the overall deadline");
        if c.is_finished() {
            assert_eq!(dl, t0 + ms(60));
        }
    }
    // Restarted after 0.5..2 ms: DISCOVERs 4, 8 and 16 ms apart, then the 32 ms wait is
    // cut short at 60 ms.
    assert_eq!(discovers, 4);
    assert_eq!(c.retransmits, 3);
    assert_eq!(c.failure(), Some(&Failure::TimeoutAfterNaks { naks: 1 }));
    assert_eq!(c.restarts, 1);
}

#[test]
fn proxy_nak_from_the_boot_server_restarts_too() {
    let t0 = Instant::now();
    let mut c = client(Mode::Proxy, Arch::Bios, t0);
    tx(&mut c, t0);
    c.handle_datagram(t0, &offer().bytes());
    let proxy_offer = Reply::new(MessageType::Offer, Ipv4Addr::UNSPECIFIED)
        .server(PROXY)
        .pxe();
    c.handle_datagram(t0, &proxy_offer.bytes());
    tx(&mut c, t0);
    c.handle_datagram(t0, &Reply::new(MessageType::Ack, IP).server(SRV).bytes());
    let (dest, _, _) = tx(&mut c, t0);
    assert_eq!(dest, Dest::Proxy(PROXY));
    let pnak = Reply::new(MessageType::Nak, Ipv4Addr::UNSPECIFIED).server(PROXY);
    assert_eq!(c.handle_datagram(t0, &pnak.bytes()), Verdict::Accepted);
    let dl = c.deadline().unwrap();
    c.handle_timeout(dl);
    let (dest, d, _) = tx(&mut c, dl);
    assert_eq!(dest, Dest::Server);
    assert_eq!(d.opts().msg_type(), Some(MessageType::Discover));
    assert_ne!(d.xid(), XID);
    // Both offers are needed again.
    c.handle_datagram(dl, &offer().xid(d.xid()).bytes());
    assert!(c.poll_transmit(dl, &mut Vec::new()).is_none());
    c.handle_datagram(dl, &proxy_offer.xid(d.xid()).bytes());
    let (dest, r, _) = tx(&mut c, dl);
    assert_eq!(dest, Dest::Server);
    assert_eq!(r.opts().msg_type(), Some(MessageType::Request));
    assert_eq!((c.naks, c.restarts), (1, 1));
}

#[test]
fn mismatched_replies_are_ignored_and_counted() {
    let t0 = Instant::now();
    let mut c = client(Mode::Full, Arch::Bios, t0);
    tx(&mut c, t0);
    assert_eq!(
        c.handle_datagram(t0, &offer().xid(XID + 1).bytes()),
        Verdict::Ignored
    );
    assert_eq!(
        c.handle_datagram(t0, &offer().chaddr([1, 2, 3, 4, 5, 6]).bytes()),
        Verdict::Ignored
    );
    // Our own request echoed back (BOOTREQUEST) is not a reply.
    let mut echo = offer();
    echo.0.set_opcode(Opcode::BootRequest);
    assert_eq!(c.handle_datagram(t0, &echo.bytes()), Verdict::Ignored);
    // An ACK while selecting.
    let ack = Reply::new(MessageType::Ack, IP).server(SRV).file("x");
    assert_eq!(c.handle_datagram(t0, &ack.bytes()), Verdict::Ignored);
    assert_eq!(c.ignored, 4);
    assert!(c.poll_transmit(t0, &mut Vec::new()).is_none());
    // Then the right offer still works.
    assert_eq!(c.handle_datagram(t0, &offer().bytes()), Verdict::Accepted);
    // A second offer is ignored.
    assert_eq!(c.handle_datagram(t0, &offer().bytes()), Verdict::Ignored);
    assert_eq!(c.ignored, 5);
}

#[test]
fn garbage_and_truncated_replies_are_counted_not_fatal() {
    let t0 = Instant::now();
    let mut c = client(Mode::Full, Arch::Bios, t0);
    tx(&mut c, t0);
    let good = offer().bytes();
    let mut n = 0;
    for len in 0..good.len() {
        // Truncated anywhere: either malformed, or (cut inside the options) still a valid
        // header; never a panic.
        let v = c.handle_datagram(t0, &good[..len]);
        if v == Verdict::Malformed {
            n += 1;
        }
        if v == Verdict::Accepted {
            break;
        }
    }
    assert!(n >= 241, "every cut inside the header is malformed ({n})");
    let mut c = client(Mode::Full, Arch::Bios, t0);
    tx(&mut c, t0);
    let mut seed = 0x1234_5678_u64;
    for i in 0..2000usize {
        let len = i % 700;
        let mut junk = vec![0u8; len];
        for b in &mut junk {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        if len > 240 {
            junk[236..240].copy_from_slice(&v4::MAGIC);
        }
        assert_ne!(c.handle_datagram(t0, &junk), Verdict::Accepted);
    }
    assert!(c.malformed > 0);
    assert!(!c.is_finished());
    // A reply without a server identifier cannot be requested from: malformed.
    let no_id = Reply::new(MessageType::Offer, IP);
    assert_eq!(c.handle_datagram(t0, &no_id.bytes()), Verdict::Malformed);
    // Running out of time after malformed replies is reported as such.
    let mut c = client(Mode::Full, Arch::Bios, t0);
    tx(&mut c, t0);
    assert_eq!(c.handle_datagram(t0, &good[..245]), Verdict::Malformed);
    c.handle_datagram(t0, &[0u8; 3]);
    while let Some(dl) = c.deadline() {
        c.handle_timeout(dl);
        c.poll_transmit(dl, &mut Vec::new());
    }
    assert_eq!(c.failure(), Some(&Failure::Malformed(Phase::Discover)));
}

#[test]
fn proxy_flow_with_4011() {
    let t0 = Instant::now();
    let mut c = client(Mode::Proxy, Arch::Bios, t0);
    tx(&mut c, t0);
    // The proxy offer alone is not enough.
    let proxy_offer = Reply::new(MessageType::Offer, Ipv4Addr::UNSPECIFIED)
        .server(PROXY)
        .pxe();
    assert_eq!(
        c.handle_datagram(t0 + ms(1), &proxy_offer.bytes()),
        Verdict::Accepted
    );
    assert!(c.poll_transmit(t0, &mut Vec::new()).is_none());
    assert_eq!(
        c.handle_datagram(t0 + ms(2), &offer().bytes()),
        Verdict::Accepted
    );
    assert_eq!(c.ts.offer_got, Some(t0 + ms(2)));
    let (dest, r, _) = tx(&mut c, t0 + ms(2));
    assert_eq!(dest, Dest::Server);
    assert_eq!(opt(&r, 54), Some(&DhcpOption::ServerIdentifier(SRV)));
    let ack = Reply::new(MessageType::Ack, IP).server(SRV);
    assert_eq!(
        c.handle_datagram(t0 + ms(3), &ack.bytes()),
        Verdict::Accepted
    );
    let (dest, r, _) = tx(&mut c, t0 + ms(3));
    assert_eq!(dest, Dest::Proxy(PROXY));
    assert_eq!(r.opts().msg_type(), Some(MessageType::Request));
    assert_eq!(r.ciaddr(), IP);
    assert!(opt(&r, 50).is_none());
    assert!(r.flags().broadcast());
    // A duplicate address ACK (answer to a retransmission) is not the boot server's ACK.
    assert_eq!(
        c.handle_datagram(t0 + ms(4), &ack.bytes()),
        Verdict::Ignored
    );
    let pack = Reply::new(MessageType::Ack, Ipv4Addr::UNSPECIFIED)
        .server(PROXY)
        .pxe()
        .file("undionly.kpxe");
    assert_eq!(
        c.handle_datagram(t0 + ms(5), &pack.bytes()),
        Verdict::Accepted
    );
    assert!(c.is_done());
    assert_eq!(c.boot_file(), Some(&b"undionly.kpxe"[..]));
    assert_eq!(c.ts.request_sent, Some(t0 + ms(2)));
    assert_eq!(c.ts.ack_got, Some(t0 + ms(5)));
}

#[test]
fn proxy_offer_with_boot_file_skips_4011() {
    let t0 = Instant::now();
    let mut c = client(Mode::Proxy, Arch::UefiX64, t0);
    tx(&mut c, t0);
    c.handle_datagram(t0, &offer().bytes());
    let proxy_offer = Reply::new(MessageType::Offer, Ipv4Addr::UNSPECIFIED)
        .server(PROXY)
        .pxe()
        .file("snponly.efi");
    c.handle_datagram(t0, &proxy_offer.bytes());
    tx(&mut c, t0);
    c.handle_datagram(t0, &Reply::new(MessageType::Ack, IP).server(SRV).bytes());
    assert!(c.is_done());
    assert_eq!(c.boot_file(), Some(&b"snponly.efi"[..]));
    assert!(c.poll_transmit(t0, &mut Vec::new()).is_none());
}

#[test]
fn proxy_without_proxy_offer_reports_it() {
    let t0 = Instant::now();
    let mut c = client(Mode::Proxy, Arch::Bios, t0);
    tx(&mut c, t0);
    c.handle_datagram(t0, &offer().bytes());
    while let Some(dl) = c.deadline() {
        c.handle_timeout(dl);
        c.poll_transmit(dl, &mut Vec::new());
    }
    assert_eq!(c.failure(), Some(&Failure::NoProxyOffer));
    assert_eq!(c.retransmits, 3);
}

#[test]
fn vendor_classes() {
    assert_eq!(
        Arch::Bios.vendor_class(),
        "PXEClient:Arch:00000:UNDI:002001"
    );
    assert_eq!(Arch::parse("uefi"), Some(Arch::UefiX64));
    assert_eq!(Arch::parse("arm"), None);
    assert_eq!(peek_chaddr(&offer().bytes()), Some(MAC));
    assert_eq!(peek_chaddr(&offer().bytes()[..33]), None);
}
