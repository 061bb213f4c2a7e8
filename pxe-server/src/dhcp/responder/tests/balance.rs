//! Several instances on one segment and one shared lease database: RFC 3074 load balancing
//! ([`Responder::set_balance`]) and addresses another instance took first
//! ([`LeaseError::Conflict`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::link_bound::answer_at;
use super::*;
use crate::dhcp::balance::Balance;

/// The shared database: one table for every instance, and which instance wrote each row. A
/// write of an address that another client holds (active) is refused, as the PostgreSQL
/// store's conditional upsert is.
#[derive(Clone, Default)]
struct Db(Rc<RefCell<Table>>);

#[derive(Clone, Default)]
struct Table {
    leases: MemoryLeaseStore,
    by: HashMap<Ipv4Addr, String>,
}

impl Db {
    fn holder(&self, ip: Ipv4Addr) -> Option<Lease> {
        self.0.borrow().leases.get(ip)
    }

    /// Records a bound lease directly in the database (another instance's write).
    fn bind(&self, ip: Ipv4Addr, mac: [u8; 6]) {
        let mut t = self.0.borrow_mut();
        t.leases.put(&bound(ip, mac)).unwrap();
        t.by.insert(ip, "other".into());
    }
}

fn bound(ip: Ipv4Addr, mac: [u8; 6]) -> Lease {
    Lease {
        ip,
        mac: pxe_proto::MacAddr(mac),
        uuid: None,
        expires: secs(t0()) + 3600,
        state: LeaseState::Bound,
        link: None,
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// One instance's store: reads come from its mirror of the database, which learns the other
/// instances' writes only at [`Instance::sync`] (the store's polling) or, for one address,
/// when a write of it is refused.
struct Instance {
    name: String,
    db: Db,
    mirror: Table,
}

impl Instance {
    fn new(db: &Db, name: &str) -> Self {
        Instance {
            name: name.into(),
            db: db.clone(),
            mirror: Table::default(),
        }
    }

    fn sync(&mut self) {
        self.mirror = self.db.0.borrow().clone();
    }
}

impl LeaseStore for Instance {
    fn get(&self, ip: Ipv4Addr) -> Option<Lease> {
        self.mirror.leases.get(ip)
    }
    fn ip_of(&self, mac: &pxe_proto::MacAddr) -> Option<Ipv4Addr> {
        self.mirror.leases.ip_of(mac)
    }
    fn put(&mut self, lease: &Lease) -> Result<(), LeaseError> {
        let held = self.db.holder(lease.ip);
        if let Some(h) = held.filter(|h| h.mac != lease.mac && h.is_active(secs(t0()))) {
            self.mirror.leases.put(&h)?;
            let by = self.db.0.borrow().by.get(&lease.ip).cloned();
            self.mirror.by.extend(by.map(|b| (lease.ip, b)));
            return Err(LeaseError::Conflict { ip: lease.ip });
        }
        let mut t = self.db.0.borrow_mut();
        t.leases.put(lease)?;
        t.by.insert(lease.ip, self.name.clone());
        self.mirror.by.insert(lease.ip, self.name.clone());
        self.mirror.leases.put(lease)
    }
    fn len(&self) -> usize {
        self.mirror.leases.len()
    }
    fn for_each(&self, f: &mut dyn FnMut(&Lease)) {
        self.mirror.leases.for_each(f);
    }
    fn written_by(&self, ip: Ipv4Addr) -> Option<&str> {
        self.mirror.by.get(&ip).map(String::as_str)
    }
}

/// 612 addresses (10.0.0.100 - 10.0.2.199) in one /22; the instances are at 10.0.3.x.
const SITE: &str = "[dhcp]\nenabled = true\nmode = \"full\"\nlease_time_secs = 3600\n\
    [[dhcp.subnets]]\nsubnet = \"10.0.0.0/22\"\nrange_start = \"10.0.0.100\"\n\
    range_end = \"10.0.2.199\"\n";

const NAMES: [&str; 3] = ["pxe1", "pxe2", "pxe3"];

/// Three balanced instances over one database, each with its own address (its server
/// identifier).
struct Site {
    db: Db,
    rs: Vec<Responder<Instance>>,
    balances: Vec<Arc<Balance>>,
    metas: Vec<RecvMeta>,
}

impl Site {
    fn new() -> Site {
        Site::with_pool(SITE)
    }

    /// Three instances over the pool of `cfg` (a config like [`SITE`]).
    fn with_pool(cfg: &str) -> Site {
        let db = Db::default();
        let live: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
        let mut site = Site {
            db: db.clone(),
            rs: Vec::new(),
            balances: Vec::new(),
            metas: Vec::new(),
        };
        for (k, name) in NAMES.iter().enumerate() {
            let b = Arc::new(Balance::new(name));
            b.update(&live);
            let mut r = Responder::new(&config(cfg), Instance::new(&db, name));
            r.set_balance(Arc::clone(&b));
            site.rs.push(r);
            site.balances.push(b);
            site.metas.push(RecvMeta {
                local_addr: Ipv4Addr::new(10, 0, 3, k as u8 + 1),
                ..meta()
            });
        }
        site
    }

    /// `k` is dead: the others' heartbeats no longer list it (it answers nothing more).
    fn kill(&mut self, k: usize) {
        let live: Vec<String> = (0..NAMES.len())
            .filter(|&i| i != k)
            .map(|i| NAMES[i].to_string())
            .collect();
        self.balances.iter().for_each(|b| b.update(&live));
        self.balances[k].update(&[]);
        self.sync();
    }

    /// Every instance is live again (a killed one restarted).
    fn revive(&mut self) {
        let live = NAMES.map(String::from);
        self.balances.iter().for_each(|b| b.update(&live));
        self.sync();
    }

    /// `p` sent to instance `k` alone: its answer, decoded.
    fn ask(&mut self, k: usize, p: &Pkt) -> (Action, Option<v4::Message>) {
        run(&mut self.rs[k], &p.bytes(), &self.metas[k])
    }

    /// The instance that owns `mac`'s bucket (exactly one).
    fn owner(&self, mac: &[u8; 6]) -> usize {
        let owners: Vec<usize> = (0..NAMES.len())
            .filter(|&k| self.balances[k].serves(mac))
            .collect();
        assert_eq!(owners.len(), 1, "{mac:02x?}: {owners:?}");
        owners[0]
    }

    /// `mac`'s DISCOVER through the site: the instance that offered and the address.
    fn offer(&mut self, mac: [u8; 6]) -> (usize, Ipv4Addr) {
        let answers = self.broadcast(&Pkt::new(MessageType::Discover, mac));
        let offers: Vec<(usize, Ipv4Addr)> = answers
            .iter()
            .enumerate()
            .filter_map(|(k, a)| match a {
                Ok((MessageType::Offer, ip)) => Some((k, *ip)),
                _ => None,
            })
            .collect();
        assert_eq!(offers.len(), 1, "{mac:02x?}: {answers:?}");
        offers[0]
    }

    fn sync(&mut self) {
        self.rs.iter_mut().for_each(|r| r.store_mut().sync());
    }

    /// `p` broadcast to every instance: each one's answer (type, yiaddr) or reason.
    fn broadcast(&mut self, p: &Pkt) -> Vec<Result<(MessageType, Ipv4Addr), NoResponse>> {
        let metas = self.metas.clone();
        self.rs
            .iter_mut()
            .zip(&metas)
            .map(|(r, m)| answer_at(r, p, m, t0()))
            .collect()
    }

    /// DISCOVER then REQUEST of `mac` through the site, up to three attempts (a client
    /// retries when its DISCOVER lost every address it was offered to another instance).
    /// Asserts that one instance answered each step; returns it and the address.
    fn dora(&mut self, mac: [u8; 6]) -> (usize, Ipv4Addr) {
        for _ in 0..3 {
            let answers = self.broadcast(&Pkt::new(MessageType::Discover, mac));
            let offered: Vec<(usize, Ipv4Addr)> = answers
                .iter()
                .enumerate()
                .filter_map(|(k, a)| a.ok().map(|(t, ip)| (k, t, ip)))
                .map(|(k, t, ip)| {
                    assert_eq!(t, MessageType::Offer);
                    (k, ip)
                })
                .collect();
            let silent = answers.iter().filter(|a| a.is_err()).count();
            let not_ours = answers
                .iter()
                .filter(|a| **a == Err(NoResponse::NotOurBucket))
                .count();
            assert_eq!(not_ours, NAMES.len() - 1, "{mac:02x?}: {answers:?}");
            assert_eq!(offered.len() + silent, NAMES.len());
            let (k, ip) = match offered.as_slice() {
                [one] => *one,
                [] => {
                    let lost = Err(NoResponse::LeaseConflict);
                    assert_eq!(answers.iter().filter(|a| **a == lost).count(), 1);
                    continue;
                }
                many => panic!("{mac:02x?} offered by {many:?}"),
            };
            let q = Pkt::new(MessageType::Request, mac)
                .opt(DhcpOption::ServerIdentifier(self.metas[k].local_addr))
                .opt(DhcpOption::RequestedIpAddress(ip));
            let answers = self.broadcast(&q);
            for (j, a) in answers.iter().enumerate() {
                if j == k {
                    assert_eq!(*a, Ok((MessageType::Ack, ip)), "{mac:02x?}");
                } else {
                    assert_eq!(*a, Err(NoResponse::NotForUs));
                }
            }
            return (k, ip);
        }
        panic!("{mac:02x?} got no lease in three attempts");
    }
}

fn client(i: u16) -> [u8; 6] {
    let [hi, lo] = i.to_be_bytes();
    [2, 0, 0, 0xc0, hi, lo]
}

/// A storm of 500 clients through three balanced instances whose views of the database lag,
/// over the pool of `cfg`: every client is answered by exactly one instance (its bucket's
/// owner), and no address goes to two MACs although the instances allocate from one pool.
/// Returns the lease conflicts the instances met.
fn storm_through_three(cfg: &str) -> u64 {
    let mut site = Site::with_pool(cfg);
    let n = 500u16;
    let mut acked: HashMap<Ipv4Addr, [u8; 6]> = HashMap::new();
    let mut per_instance = [0u32; 3];
    for i in 0..n {
        let mac = client(i);
        let owners: Vec<usize> = (0..3).filter(|&k| site.balances[k].serves(&mac)).collect();
        let (k, ip) = site.dora(mac);
        assert_eq!(owners, [k]);
        per_instance[k] += 1;
        assert!(acked.insert(ip, mac).is_none(), "{ip} given twice");
        // The mirrors learn the others' writes now and then, not at once.
        if i % 50 == 49 {
            site.sync();
        }
    }
    assert_eq!(acked.len(), usize::from(n));
    for (ip, mac) in &acked {
        let l = site.db.holder(*ip).unwrap();
        assert_eq!((l.mac.0, l.state), (*mac, LeaseState::Bound));
    }
    assert!(per_instance.iter().all(|&c| c > 100), "{per_instance:?}");
    let dropped: u64 = site
        .rs
        .iter()
        .map(|r| r.metrics().snapshot().drop_not_our_bucket)
        .sum();
    assert!(dropped >= 2 * u64::from(n));
    site.rs
        .iter()
        .map(|r| r.metrics().snapshot().lease_conflicts)
        .sum()
}

/// With room to spare (612 addresses for 500 clients) the instances' evenly spaced starts keep
/// them apart: not one write meets another instance's lease.
#[test]
fn a_storm_through_three_instances_gives_each_client_one_server_and_one_address() {
    assert_eq!(storm_through_three(SITE), 0);
}

/// In a nearly full pool (504 addresses for 500 clients) an instance whose share outgrows its
/// third runs into its neighbour's addresses: the instances do race (conflicts), and still
/// every client gets one address of its own.
#[test]
fn a_storm_in_a_nearly_full_pool_races_and_still_gives_each_address_once() {
    let full = SITE.replace("10.0.2.199", "10.0.2.91");
    assert!(storm_through_three(&full) > 0);
}

/// After an instance stops heart-beating its buckets belong to the others: its clients that
/// reboot are confirmed their address by the new owner, its new clients are answered by
/// exactly one survivor, and a rebinding client (ciaddr, no server identifier) is answered
/// by every survivor with the same address.
#[test]
fn the_buckets_of_a_dead_instance_are_taken_over() {
    let mut site = Site::new();
    let leases: Vec<([u8; 6], usize, Ipv4Addr)> = (0..60)
        .map(|i| {
            let mac = client(i);
            let (k, ip) = site.dora(mac);
            (mac, k, ip)
        })
        .collect();
    let before = Balance::new("pxe2");
    before.update(&NAMES.map(String::from));
    site.kill(1);
    let orphans: Vec<_> = leases.iter().filter(|l| l.1 == 1).collect();
    assert!(!orphans.is_empty());
    for &&(mac, _, ip) in &orphans {
        let reboot = Pkt::new(MessageType::Request, mac).opt(DhcpOption::RequestedIpAddress(ip));
        let answers = site.broadcast(&reboot);
        let acks = [0, 2]
            .iter()
            .filter(|&&k| answers[k] == Ok((MessageType::Ack, ip)))
            .count();
        assert_eq!(acks, 1, "{mac:02x?}: {answers:?}");
        let rebind = Pkt::new(MessageType::Request, mac).ciaddr(ip).broadcast();
        let answers = site.broadcast(&rebind);
        assert_eq!(answers[0], Ok((MessageType::Ack, ip)));
        assert_eq!(answers[2], Ok((MessageType::Ack, ip)));
    }
    // New clients, those of the dead instance's buckets among them: one survivor answers
    // each.
    let mut taken_over = 0;
    for i in 1000..1100 {
        let mac = client(i);
        let answers = site.broadcast(&Pkt::new(MessageType::Discover, mac));
        assert_eq!(answers[1], Err(NoResponse::NotOurBucket));
        let offers = answers.iter().filter(|a| a.is_ok()).count();
        assert_eq!(offers, 1, "{answers:?}");
        taken_over += u32::from(before.serves(&mac));
    }
    assert!(taken_over > 10, "{taken_over}");
    assert_eq!(site.balances[1].owned(), 0);
    assert_eq!(site.balances[0].owned() + site.balances[2].owned(), 256);
}

/// The owner of nothing answers no DISCOVER and no INIT-REBOOT REQUEST, but every message
/// that names it or its lease: SELECTING naming it, RENEWING, DECLINE, RELEASE, INFORM; and
/// the client identifier (option 61), not chaddr, picks the bucket when present. Proxy mode
/// and port 4011 are not balanced.
#[test]
fn only_discover_and_init_reboot_are_balanced() {
    let b = Arc::new(Balance::new("pxe9"));
    b.update(&["pxe1".into(), "pxe9".into()]);
    let theirs = (0..u16::MAX).map(client).find(|m| !b.serves(m)).unwrap();
    let mut r = Responder::new(&config(FULL), MemoryLeaseStore::new());
    r.set_balance(Arc::clone(&b));
    let ip = Ipv4Addr::new(10, 0, 0, 150);
    r.store_mut().put(&bound(ip, theirs)).unwrap();
    let ask = |r: &mut Responder<MemoryLeaseStore>, p: Pkt| answer_at(r, &p, &meta(), t0());
    let req = || Pkt::new(MessageType::Request, theirs);
    let not_ours = Err(NoResponse::NotOurBucket);
    assert_eq!(
        ask(&mut r, Pkt::new(MessageType::Discover, theirs)),
        not_ours
    );
    let reboot = req().opt(DhcpOption::RequestedIpAddress(ip));
    assert_eq!(ask(&mut r, reboot), not_ours);
    let ack = Ok((MessageType::Ack, ip));
    let selecting = req()
        .opt(DhcpOption::ServerIdentifier(SERVER))
        .opt(DhcpOption::RequestedIpAddress(ip));
    assert_eq!(ask(&mut r, selecting), ack);
    assert_eq!(ask(&mut r, req().ciaddr(ip)), ack);
    let inform = Pkt::new(MessageType::Inform, theirs).ciaddr(ip);
    assert_eq!(
        ask(&mut r, inform),
        Ok((MessageType::Ack, Ipv4Addr::UNSPECIFIED))
    );
    let release = Pkt::new(MessageType::Release, theirs)
        .ciaddr(ip)
        .opt(DhcpOption::ServerIdentifier(SERVER));
    let decline = Pkt::new(MessageType::Decline, theirs)
        .opt(DhcpOption::ServerIdentifier(SERVER))
        .opt(DhcpOption::RequestedIpAddress(ip));
    assert_eq!(ask(&mut r, decline), Err(NoResponse::Declined));
    assert_eq!(ask(&mut r, release), Err(NoResponse::Released));
    let s = r.metrics().snapshot();
    assert_eq!((s.drop_not_our_bucket, s.received_discover), (2, 1));
    // Option 61 decides: the same chaddr with an identifier in one of our buckets is ours.
    let id = (0..=u8::MAX)
        .map(|k| vec![0, k, 7])
        .find(|id| b.serves(id))
        .unwrap();
    let with_id =
        Pkt::new(MessageType::Discover, theirs).opt(DhcpOption::ClientIdentifier(id.clone()));
    assert!(matches!(ask(&mut r, with_id), Ok((MessageType::Offer, _))));
    // Proxy mode: every PXE client, whatever its bucket.
    let mut proxy = Responder::new(&config(""), MemoryLeaseStore::new());
    proxy.set_balance(Arc::new(Balance::new("pxe9")));
    let (a, _) = run(&mut proxy, &bios_discover().bytes(), &meta());
    assert_eq!(transmit(a).msg_type, MessageType::Offer);
    // Port 4011 in full mode.
    let boot = Pkt::new(MessageType::Request, BIOS_MAC)
        .pxe(0, "PXEClient:Arch:00000:UNDI:002001")
        .opt(DhcpOption::RequestedIpAddress(ip));
    let m4011 = RecvMeta {
        src: SocketAddrV4::new(ip, 68),
        port: PXE_PORT,
        ..meta()
    };
    let mut none = Responder::new(&config(FULL), MemoryLeaseStore::new());
    none.set_balance(Arc::new(Balance::new("pxe9")));
    assert!(matches!(
        answer_at(&mut none, &boot, &m4011, t0()),
        Ok((MessageType::Ack, _))
    ));
}

/// A DISCOVER skips addresses another instance holds (at most `MAX_CONFLICTS` of them per
/// DISCOVER, then no answer); a REQUEST for one is NAKed.
#[test]
fn addresses_another_instance_holds_are_skipped_or_naked() {
    let db = Db::default();
    let other = |i: u8| [2, 0, 0, 0xd0, 0, i];
    // Another instance bound the first nine addresses; this one has not seen them yet.
    for i in 0..9 {
        db.bind(Ipv4Addr::new(10, 0, 0, 100 + i), other(i));
    }
    let mut r = Responder::new(&config(FULL), Instance::new(&db, "pxe1"));
    let mac = [2, 0, 0, 0xd1, 0, 1];
    let discover = || Pkt::new(MessageType::Discover, mac);
    assert_eq!(
        answer_at(&mut r, &discover(), &meta(), t0()),
        Err(NoResponse::LeaseConflict)
    );
    let s = r.metrics().snapshot();
    assert_eq!((s.lease_conflicts, s.drop_lease_conflict), (9, 1));
    let next = Ipv4Addr::new(10, 0, 0, 109);
    assert_eq!(
        answer_at(&mut r, &discover(), &meta(), t0()),
        Ok((MessageType::Offer, next))
    );
    // Its client's REQUEST for an address the other instance took meanwhile is NAKed.
    let taken = Ipv4Addr::new(10, 0, 0, 150);
    db.bind(taken, other(50));
    let selecting = Pkt::new(MessageType::Request, mac)
        .opt(DhcpOption::ServerIdentifier(SERVER))
        .opt(DhcpOption::RequestedIpAddress(taken));
    assert_eq!(
        answer_at(&mut r, &selecting, &meta(), t0()),
        Ok((MessageType::Nak, Ipv4Addr::UNSPECIFIED))
    );
    assert_eq!(r.metrics().snapshot().lease_conflicts, 10);
    assert_eq!(db.holder(taken).unwrap().mac.0, other(50));
    // A DISCOVER with one conflict goes on to the next address at once.
    db.bind(Ipv4Addr::new(10, 0, 0, 110), other(60));
    let (_, o) = run(
        &mut r,
        &Pkt::new(MessageType::Discover, [2, 0, 0, 0xd1, 0, 2]).bytes(),
        &meta(),
    );
    assert_eq!(o.unwrap().yiaddr(), Ipv4Addr::new(10, 0, 0, 111));
    assert_eq!(r.metrics().snapshot().lease_conflicts, 11);
}

/// Instances spread over a shared pool: each starts its round-robin at its rank among the
/// live instances over their count (pxe1 at the start of 100 addresses, pxe2 half-way), and
/// moves when the live set changes; a lone server starts at the range's start.
#[test]
fn instances_start_their_pools_evenly_spaced_by_rank() {
    let hundred = TINY.replace("10.0.0.102", "10.0.0.199");
    let live = vec!["pxe1".to_string(), "pxe2".to_string()];
    let responder = |b: &Arc<Balance>| {
        let mut r = Responder::new(&config(&hundred), MemoryLeaseStore::new());
        r.set_balance(Arc::clone(b));
        r
    };
    let offer = |r: &mut Responder<MemoryLeaseStore>, last: u8| {
        let p = Pkt::new(MessageType::Discover, [2, 0, 0, 0xe0, 0, last]);
        run(r, &p.bytes(), &meta()).1.map(|m| m.yiaddr())
    };
    let all = Arc::new(Balance::all());
    assert_eq!(
        offer(&mut responder(&all), 0),
        Some(Ipv4Addr::new(10, 0, 0, 100))
    );
    // Both live: every client's bucket goes to one of them; each offers from its own half.
    let one = Arc::new(Balance::new("pxe1"));
    let two = Arc::new(Balance::new("pxe2"));
    one.update(&live);
    two.update(&live);
    let (mut r1, mut r2) = (responder(&one), responder(&two));
    let (mut first1, mut first2) = (None, None);
    for last in 0..=255u8 {
        first1 = first1.or_else(|| offer(&mut r1, last));
        first2 = first2.or_else(|| offer(&mut r2, last));
    }
    assert_eq!(first1, Some(Ipv4Addr::new(10, 0, 0, 100)));
    assert_eq!(first2, Some(Ipv4Addr::new(10, 0, 0, 150)));
    // pxe1 is gone: pxe2 is alone, rank 0 of 1, and starts over at the range's start.
    two.update(&live[1..]);
    assert_eq!(offer(&mut r2, 0xfe), Some(Ipv4Addr::new(10, 0, 0, 100)));
}

/// `mac`'s SELECTING REQUEST for `ip`, naming `server`.
fn selecting(mac: [u8; 6], server: Ipv4Addr, ip: Ipv4Addr) -> Pkt {
    Pkt::new(MessageType::Request, mac)
        .opt(DhcpOption::ServerIdentifier(server))
        .opt(DhcpOption::RequestedIpAddress(ip))
}

/// A client between a dead instance's OFFER and its ACK: its REQUEST still names the dead
/// instance. The new owner of its bucket, and only it, binds the offered address and ACKs in
/// the dead instance's name (option 54, which the firmware checks), with itself as
/// next-server. Not taken over: while the instance that made the offer is live, a request for
/// an offer made to another client, by an instance whose bucket it is not.
#[test]
fn a_request_naming_a_dead_instance_is_acked_by_its_buckets_new_owner_in_its_name() {
    let mut site = Site::new();
    let mut pxe2s = (0..u16::MAX)
        .map(client)
        .filter(|m| site.balances[1].serves(m));
    let (mac, other_mac) = (pxe2s.next().unwrap(), pxe2s.next().unwrap());
    let dead = site.metas[1].local_addr;
    let (k, ip) = site.offer(mac);
    let (j, other_ip) = site.offer(other_mac);
    assert_eq!((k, j), (1, 1));
    site.sync();
    // pxe2 is live: its client is its own.
    for k in [0, 2] {
        let (a, _) = site.ask(k, &selecting(mac, dead, ip));
        assert_eq!(a, Action::NoResponse(NoResponse::NotForUs));
    }
    site.kill(1);
    let owner = site.owner(&mac);
    let bystander = 2 - owner;
    // The survivor whose bucket it is not leaves it to the owner.
    let (a, _) = site.ask(bystander, &selecting(mac, dead, ip));
    assert_eq!(a, Action::NoResponse(NoResponse::NotForUs));
    // A client of the owner's buckets asking for the address pxe2 offered to another client.
    let stranger = (0..u16::MAX)
        .map(|i| client(i ^ 0x8000))
        .find(|m| site.balances[owner].serves(m))
        .unwrap();
    let (a, _) = site.ask(owner, &selecting(stranger, dead, other_ip));
    assert_eq!(a, Action::NoResponse(NoResponse::NotForUs));
    assert_eq!(site.db.holder(other_ip).unwrap().mac.0, other_mac);
    // The owner takes it over.
    let (a, m) = site.ask(owner, &selecting(mac, dead, ip));
    let m = m.unwrap_or_else(|| panic!("{a:?}"));
    assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(m.yiaddr(), ip);
    assert_eq!(
        m.opts().get(v4::OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(dead))
    );
    assert_eq!(m.siaddr(), site.metas[owner].local_addr);
    let l = site.db.holder(ip).unwrap();
    assert_eq!((l.mac.0, l.state), (mac, LeaseState::Bound));
    let taken: Vec<u64> = site
        .rs
        .iter()
        .map(|r| r.metrics().snapshot().takeovers)
        .collect();
    assert_eq!(taken.iter().sum::<u64>(), 1, "{taken:?}");
    assert_eq!(taken[owner], 1);
}

/// An offer made by an instance that is live is that instance's to complete, even when the
/// client's bucket is another's: pxe2 dies, a survivor offers to one of pxe2's clients, pxe2
/// comes back and owns the bucket again, and the client's REQUEST naming the survivor is not
/// pxe2's to answer.
#[test]
fn an_offer_of_a_live_instance_is_not_taken_over() {
    let mut site = Site::new();
    let mac = (0..u16::MAX)
        .map(client)
        .find(|m| site.balances[1].serves(m))
        .unwrap();
    site.kill(1);
    let (k, ip) = site.offer(mac);
    assert_ne!(k, 1);
    site.revive();
    assert_eq!(site.owner(&mac), 1);
    let (a, _) = site.ask(1, &selecting(mac, site.metas[k].local_addr, ip));
    assert_eq!(a, Action::NoResponse(NoResponse::NotForUs));
    assert_eq!(site.db.holder(ip).unwrap().state, LeaseState::Offered);
    // The instance that offered completes it.
    let (a, m) = site.ask(k, &selecting(mac, site.metas[k].local_addr, ip));
    assert_eq!(m.map(|m| m.yiaddr()), Some(ip), "{a:?}");
    assert_eq!(site.rs[1].metrics().snapshot().takeovers, 0);
}
