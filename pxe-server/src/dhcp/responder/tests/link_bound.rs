//! `max_leases_per_link`: what one relay or one interface may hold of a pool.

use super::*;
use crate::dhcp::leases::Link;

/// [`FULL`] with at most `n` leases per link.
fn bounded(n: u32) -> String {
    FULL.replace(
        "lease_time_secs = 3600\n",
        &format!("lease_time_secs = 3600\nmax_leases_per_link = {n}\n"),
    )
}

/// A relay in the first pool's subnet (10.0.0.0/24), so that its clients share the pool with
/// the directly attached interface `eth0` of [`meta`].
const RELAY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 250);

fn via_relay() -> RecvMeta {
    RecvMeta {
        src: SocketAddrV4::new(RELAY, 67),
        ..meta()
    }
}

fn via(ifname: &str) -> RecvMeta {
    RecvMeta {
        ifname: IfName::new(ifname).unwrap(),
        ..meta()
    }
}

fn mac(i: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0xb0, i]
}

fn discover(i: u8) -> Pkt {
    Pkt::new(MessageType::Discover, mac(i))
}

/// `p` answered at `now` through `meta`: the answer's type and address (yiaddr), or why there
/// was none.
pub(super) fn answer_at(
    r: &mut Responder<impl LeaseStore>,
    p: &Pkt,
    meta: &RecvMeta,
    now: SystemTime,
) -> Result<(MessageType, Ipv4Addr), NoResponse> {
    let mut out = Vec::new();
    match r.handle(now, &p.bytes(), meta, &mut out) {
        Action::Respond(t) => {
            let m = v4::Message::decode(&mut Decoder::new(&out)).unwrap();
            Ok((t.msg_type, m.yiaddr()))
        }
        Action::NoResponse(why) => Err(why),
    }
}

/// A DISCOVER answered at `now`: the offered address, or why there was none.
fn offer_at(
    r: &mut Responder<impl LeaseStore>,
    p: &Pkt,
    meta: &RecvMeta,
    now: SystemTime,
) -> Result<Ipv4Addr, NoResponse> {
    answer_at(r, p, meta, now).map(|(t, ip)| {
        assert_eq!(t, MessageType::Offer);
        ip
    })
}

fn offer(
    r: &mut Responder<impl LeaseStore>,
    p: &Pkt,
    meta: &RecvMeta,
) -> Result<Ipv4Addr, NoResponse> {
    offer_at(r, p, meta, t0())
}

/// A REQUEST answered at `now`: the answer's type, or why there was none.
fn request_at(
    r: &mut Responder<impl LeaseStore>,
    p: &Pkt,
    meta: &RecvMeta,
    now: SystemTime,
) -> Result<MessageType, NoResponse> {
    answer_at(r, p, meta, now).map(|(t, _)| t)
}

fn selecting(i: u8, ip: Ipv4Addr) -> Pkt {
    Pkt::new(MessageType::Request, mac(i))
        .opt(DhcpOption::ServerIdentifier(SERVER))
        .opt(DhcpOption::RequestedIpAddress(ip))
}

fn renewing(i: u8, ip: Ipv4Addr) -> Pkt {
    Pkt::new(MessageType::Request, mac(i)).ciaddr(ip)
}

fn init_reboot(i: u8, ip: Ipv4Addr) -> Pkt {
    Pkt::new(MessageType::Request, mac(i)).opt(DhcpOption::RequestedIpAddress(ip))
}

const FULL_LINK: Result<Ipv4Addr, NoResponse> = Err(NoResponse::LinkFull);

#[test]
fn a_link_at_its_bound_gets_no_offer_and_other_links_still_do() {
    let text = format!(
        "{}\n[[hosts]]\nmac = \"02:00:00:00:b0:77\"\naddress = \"10.0.0.177\"\n",
        bounded(2)
    );
    let mut r = Responder::new(&config(&text), MemoryLeaseStore::new());
    // eth0: one bound lease and one outstanding offer fill its two shares.
    let a = dora(&mut r, mac(1), &meta());
    let b = offer(&mut r, &discover(2), &meta()).unwrap();
    assert_eq!(offer(&mut r, &discover(3), &meta()), FULL_LINK);
    // Nor can a new client skip the DISCOVER and ask for a free address straight away.
    let free = Ipv4Addr::new(10, 0, 0, 150);
    assert_eq!(
        request_at(&mut r, &selecting(3, free), &meta(), t0()),
        Err(NoResponse::LinkFull)
    );
    assert!(r.store().ip_of(&pxe_proto::MacAddr(mac(3))).is_none());
    // The same pool through a relay, and through another interface: still served.
    let c = offer(&mut r, &discover(3).giaddr(RELAY), &via_relay()).unwrap();
    let d = offer(&mut r, &discover(4), &via("eth1")).unwrap();
    assert!(r.pools[0].cfg.subnet.contains(c) && r.pools[0].cfg.subnet.contains(d));
    let relay = Link::Relay(RELAY);
    let eth0 = Link::Interface(IfName::new("eth0").unwrap());
    assert_eq!((r.shares.held(&eth0), r.shares.held(&relay)), (2, 1));
    // Clients that hold a lease or an offer on the full link are served as before.
    assert_eq!(
        request_at(&mut r, &renewing(1, a), &meta(), t0()),
        Ok(MessageType::Ack)
    );
    assert_eq!(
        request_at(&mut r, &init_reboot(1, a), &meta(), t0()),
        Ok(MessageType::Ack)
    );
    assert_eq!(offer(&mut r, &discover(1), &meta()), Ok(a));
    assert_eq!(offer(&mut r, &discover(2), &meta()), Ok(b));
    assert_eq!(
        request_at(&mut r, &selecting(2, b), &meta(), t0()),
        Ok(MessageType::Ack)
    );
    // A host with a reserved address is never refused, and takes no share.
    let reserved = [2, 0, 0, 0, 0xb0, 0x77];
    assert_eq!(
        dora(&mut r, reserved, &meta()),
        Ipv4Addr::new(10, 0, 0, 177)
    );
    assert_eq!(r.shares.held(&eth0), 2);
    // A wrong address is still NAKed, not silently dropped.
    assert_eq!(
        request_at(
            &mut r,
            &init_reboot(5, Ipv4Addr::new(192, 168, 0, 9)),
            &meta(),
            t0()
        ),
        Ok(MessageType::Nak)
    );
    let s = r.metrics().snapshot();
    assert_eq!(s.drop_link_full, 2);
    // 0 turns the bound off.
    let mut r = Responder::new(&config(&bounded(0)), MemoryLeaseStore::new());
    for i in 1..=5 {
        offer(&mut r, &discover(i), &meta()).unwrap();
    }
}

#[test]
fn released_expired_and_declined_leases_and_their_links_share() {
    let mut r = Responder::new(&config(&bounded(2)), MemoryLeaseStore::new());
    let a = dora(&mut r, mac(1), &meta());
    offer(&mut r, &discover(2), &meta()).unwrap();
    assert_eq!(offer(&mut r, &discover(3), &meta()), FULL_LINK);
    // A RELEASE frees its share at once.
    let rel = Pkt::new(MessageType::Release, mac(1))
        .ciaddr(a)
        .opt(DhcpOption::ServerIdentifier(SERVER));
    assert_eq!(
        run(&mut r, &rel.bytes(), &meta()).0,
        Action::NoResponse(NoResponse::Released)
    );
    let c = offer(&mut r, &discover(3), &meta()).unwrap();
    assert_eq!(offer(&mut r, &discover(4), &meta()), FULL_LINK);
    // Offers not taken up expire after offer_hold_secs (60 s), and free their shares.
    let hold = t0() + Duration::from_secs(59);
    assert_eq!(offer_at(&mut r, &discover(4), &meta(), hold), FULL_LINK);
    let later = t0() + Duration::from_secs(60);
    let d = offer_at(&mut r, &discover(4), &meta(), later).unwrap();
    assert_eq!(
        request_at(&mut r, &selecting(4, d), &meta(), later),
        Ok(MessageType::Ack)
    );
    // A declined address stays held (decline_hold_secs), and so does its link's share.
    let e = offer_at(&mut r, &discover(5), &meta(), later).unwrap();
    let dec = Pkt::new(MessageType::Decline, mac(5))
        .opt(DhcpOption::ServerIdentifier(SERVER))
        .opt(DhcpOption::RequestedIpAddress(e));
    let mut out = Vec::new();
    assert_eq!(
        r.handle(later, &dec.bytes(), &meta(), &mut out),
        Action::NoResponse(NoResponse::Declined)
    );
    assert_eq!(offer_at(&mut r, &discover(6), &meta(), later), FULL_LINK);
    // A bound lease that runs out (an hour) frees its share; client 3's old offer is gone.
    let expired = later + Duration::from_secs(3600);
    offer_at(&mut r, &discover(6), &meta(), expired).unwrap();
    // An expired client is new again: it takes a share like any other.
    assert_eq!(
        request_at(&mut r, &init_reboot(4, d), &meta(), expired),
        Ok(MessageType::Ack)
    );
    assert_eq!(
        request_at(&mut r, &init_reboot(3, c), &meta(), expired),
        Err(NoResponse::LinkFull)
    );
}

/// The counts are rebuilt from the lease table when a bound is set by a reload and at start: a
/// link full before a restart is full after it.
#[test]
fn link_counts_are_rebuilt_from_the_lease_table_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("leases.redb");
    let cfg = config(&bounded(2));
    // Leases record their link with no bound set; a reload that sets one counts them.
    let mut r = Responder::new(&config(&bounded(0)), RedbLeaseStore::open(&db).unwrap());
    let a = relayed_dora(&mut r, 1);
    relayed_dora(&mut r, 2);
    r.reconfigure(&cfg);
    assert_eq!(
        offer(&mut r, &discover(3).giaddr(RELAY), &via_relay()),
        FULL_LINK
    );
    drop(r);
    let mut r = Responder::new(&cfg, RedbLeaseStore::open(&db).unwrap());
    assert_eq!(r.store().get(a).unwrap().link, Some(Link::Relay(RELAY)));
    assert_eq!(
        offer(&mut r, &discover(3).giaddr(RELAY), &via_relay()),
        FULL_LINK
    );
    offer(&mut r, &discover(3), &meta()).unwrap();
}

/// DISCOVER, OFFER, REQUEST, ACK of client `i` through [`RELAY`].
fn relayed_dora(r: &mut Responder<impl LeaseStore>, i: u8) -> Ipv4Addr {
    let ip = offer(r, &discover(i).giaddr(RELAY), &via_relay()).unwrap();
    let q = selecting(i, ip).giaddr(RELAY);
    assert_eq!(request_at(r, &q, &via_relay(), t0()), Ok(MessageType::Ack));
    ip
}

/// A database written before the link was recorded (format version 1) is read and served:
/// its clients renew and get their offers, at their link's bound too; a renewal that shows
/// its link rewrites the record as version 2 with it, and from then on it counts.
#[test]
fn version_1_records_are_served_and_take_their_link_at_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.redb");
    let expires = unix_secs(t0()) + 3600;
    let v1 = |i: u8, last: u8| Lease {
        ip: Ipv4Addr::new(10, 0, 0, last),
        mac: pxe_proto::MacAddr(mac(i)),
        uuid: None,
        expires,
        state: LeaseState::Bound,
        link: None,
    };
    let (a, b) = (v1(1, 100), v1(2, 101));
    crate::dhcp::leases::write_v1_records(&path, &[a, b]);
    let store = RedbLeaseStore::open(&path).unwrap();
    assert_eq!(
        store.get(a.ip),
        Some(a),
        "a version 1 record reads with no link"
    );
    let mut r = Responder::new(&config(&bounded(1)), store);
    // Records without a link count against none: the bound of 1 is not reached.
    let eth0 = Link::Interface(IfName::new("eth0").unwrap());
    assert_eq!(offer(&mut r, &discover(2), &meta()), Ok(b.ip));
    assert_eq!(r.shares.held(&eth0), 0);
    // Client 1 reboots (INIT-REBOOT, broadcast on eth0): ACKed, its record takes eth0.
    assert_eq!(
        request_at(&mut r, &init_reboot(1, a.ip), &meta(), t0()),
        Ok(MessageType::Ack)
    );
    assert_eq!(r.store().get(a.ip).unwrap().link, Some(eth0));
    assert_eq!(r.shares.held(&eth0), 1);
    // eth0 is now at its bound: a new client is refused; client 2, holding its version 1
    // lease, still renews (a unicast renewal shows no link: its record keeps none).
    assert_eq!(offer(&mut r, &discover(3), &meta()), FULL_LINK);
    assert_eq!(
        request_at(&mut r, &renewing(2, b.ip), &meta(), t0()),
        Ok(MessageType::Ack)
    );
    assert_eq!(r.store().get(b.ip).unwrap().link, None);
    // Another client does not get either address.
    let c = offer(&mut r, &discover(3).giaddr(RELAY), &via_relay()).unwrap();
    assert!(c != a.ip && c != b.ip, "{c}");
    drop(r);
    let db = redb::Database::create(&path).unwrap();
    let version = |ip| crate::dhcp::leases::record_version(&db, ip);
    assert_eq!(
        (version(a.ip), version(b.ip), version(c)),
        (Some(2), Some(2), Some(2))
    );
    drop(db);
    let store = RedbLeaseStore::open(&path).unwrap();
    assert_eq!(store.get(a.ip).unwrap().link, Some(eth0));
}
