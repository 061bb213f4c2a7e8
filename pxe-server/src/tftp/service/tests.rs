use super::*;
use crate::tftp::metrics::TftpSnapshot;
use std::net::Ipv4Addr;

struct Fixture {
    dir: tempfile::TempDir,
    service: TftpService,
}

fn fixture(max_sessions: usize, per_client: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("pxelinux.0"), vec![7u8; 5000]).unwrap();
    std::fs::write(root.join("tiny"), vec![7u8; 100]).unwrap();
    std::fs::write(dir.path().join("secret"), b"secret").unwrap();
    let service = TftpService::from_parts(
        SessionConfig::default(),
        ImageStore::new(root).unwrap(),
        Arc::new(TftpMetrics::default()),
        Limits {
            max_sessions,
            max_sessions_per_client: per_client,
            unverified_share_percent: 50,
            unverified_share_per_client_percent: 50,
        },
    );
    Fixture { dir, service }
}

fn request(opcode: u8, name: &[u8], mode: &[u8]) -> Vec<u8> {
    let mut v = vec![0, opcode];
    v.extend_from_slice(name);
    v.push(0);
    v.extend_from_slice(mode);
    v.push(0);
    v
}

fn rrq(name: &[u8]) -> Vec<u8> {
    request(1, name, b"octet")
}

fn error_packet(code: u16, msg: &str) -> Vec<u8> {
    let mut v = vec![0, 5];
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(msg.as_bytes());
    v.push(0);
    v
}

fn peer(last: u8, port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 0, 0, last), port))
}

/// The reply bytes for `bytes` from `from`, or None when the outcome is not a reply.
fn reply(svc: &TftpService, from: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut buf = [0u8; 600];
    match svc.handle_request(Instant::now(), from, bytes, &mut buf) {
        RequestOutcome::Reply { len } => Some(buf[..len].to_vec()),
        RequestOutcome::Drop => None,
        RequestOutcome::Start { .. } => panic!("unexpected transfer start"),
    }
}

fn metrics(svc: &TftpService) -> TftpSnapshot {
    svc.metrics.snapshot()
}

#[test]
fn write_requests_are_refused() {
    let f = fixture(10, 10);
    let got = reply(
        &f.service,
        peer(1, 1000),
        &request(2, b"upload.bin", b"octet"),
    );
    assert_eq!(got.unwrap(), error_packet(2, "read-only server"));
    let m = metrics(&f.service);
    assert_eq!(
        (m.requests_received, m.refused_write, m.sessions_started),
        (1, 1, 0)
    );
    assert!(!f.dir.path().join("root/upload.bin").exists());
    assert_eq!(f.service.active_sessions(), 0);
}

#[test]
fn traversal_gets_an_access_violation() {
    let f = fixture(10, 10);
    for name in [
        &b"../secret"[..],
        b"a/../../secret",
        b"/etc/passwd",
        b"a\\..\\..\\secret",
    ] {
        let got = reply(&f.service, peer(1, 1000), &rrq(name)).unwrap();
        assert_eq!(&got[..4], &[0, 5, 0, 2], "{name:?}");
        assert_eq!(*got.last().unwrap(), 0);
    }
    assert_eq!(
        reply(&f.service, peer(1, 1000), &rrq(b"../secret")).unwrap(),
        error_packet(2, "\"..\" in file name")
    );
    assert_eq!(
        reply(&f.service, peer(1, 1000), &rrq(b"/etc/passwd")).unwrap(),
        error_packet(2, "absolute file name")
    );
    let m = metrics(&f.service);
    assert_eq!((m.refused_access, m.sessions_started), (6, 0));
    // The refused requests held no permit afterwards.
    assert_eq!(f.service.active_sessions(), 0);
}

#[test]
fn missing_file_is_not_found() {
    let f = fixture(10, 10);
    let got = reply(&f.service, peer(1, 1000), &rrq(b"nope.efi")).unwrap();
    assert_eq!(got, error_packet(1, "file not found"));
    assert_eq!(metrics(&f.service).refused_not_found, 1);
    assert_eq!(f.service.active_sessions(), 0);
}

#[test]
fn malformed_datagrams() {
    let f = fixture(10, 10);
    let svc = &f.service;
    // Not a request at all: dropped, counted.
    assert_eq!(reply(svc, peer(1, 1000), b""), None);
    assert_eq!(reply(svc, peer(1, 1000), b"\x00"), None);
    assert_eq!(reply(svc, peer(1, 1000), b"\x00\x09abc"), None);
    assert_eq!(reply(svc, peer(1, 1000), b"\x00\x04\x00\x01"), None);
    // A request that does not parse: ERROR 4 from the listener.
    let got = reply(svc, peer(1, 1000), b"\x00\x01file-without-nul").unwrap();
    assert_eq!(&got[..4], &[0, 5, 0, 4]);
    let got = reply(svc, peer(1, 1000), &request(1, b"f", b"mail")).unwrap();
    assert_eq!(got, error_packet(4, "unsupported transfer mode"));
    let m = metrics(svc);
    assert_eq!(
        (m.requests_received, m.malformed, m.sessions_started),
        (6, 6, 0)
    );
}

#[test]
fn malformed_option_errors_are_code_8() {
    assert_eq!(
        malformed_request_error(ParseError::BadOptionValue).0,
        ErrorCode::OptionNegotiation
    );
    assert_eq!(
        malformed_request_error(ParseError::DuplicateOption).0,
        ErrorCode::OptionNegotiation
    );
    assert_eq!(
        malformed_request_error(ParseError::Truncated).0,
        ErrorCode::IllegalOperation
    );
}

fn at(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// An admission with the same share of both limits.
fn admission(max_sessions: usize, per_client: usize, share: u8) -> Arc<Admission> {
    Arc::new(Admission::new(Limits {
        max_sessions,
        max_sessions_per_client: per_client,
        unverified_share_percent: share,
        unverified_share_per_client_percent: share,
    }))
}

/// Takes a permit for `peer`, or the refusal.
fn take(adm: &Arc<Admission>, peer: SocketAddr) -> Result<SessionPermit, Refusal> {
    adm.acquire(peer).map(|(p, _)| p)
}

/// Reports `phase` for `permit` as an engine would after a step.
fn reach(permit: &mut SessionPermit, phase: Phase) {
    permit.phase = phase;
    permit.admission.set_phase(permit.seq, phase);
}

fn verified(adm: &Arc<Admission>, peer: SocketAddr) -> SessionPermit {
    let mut p = take(adm, peer).unwrap();
    reach(&mut p, Phase::Verified);
    p
}

fn active(adm: &Admission) -> usize {
    adm.active.load(Ordering::Acquire)
}

/// The table is empty and every index agrees.
fn assert_empty(adm: &Admission) {
    assert_eq!(active(adm), 0);
    let t = adm.lock();
    assert!(t.entries.is_empty() && t.by_peer.is_empty() && t.clients.is_empty());
    assert!(t.order.is_empty() && t.client_order.is_empty());
    assert_eq!(t.unverified, 0);
}

#[test]
fn shares_are_rounded_up_and_at_least_one() {
    assert_eq!(share(10_000, 50), 5000);
    assert_eq!(share(32, 50), 16);
    assert_eq!(share(3, 50), 2);
    assert_eq!(share(1, 50), 1);
    assert_eq!(share(7, 100), 7);
    assert_eq!(share(7, 1), 1);
    assert_eq!(share(usize::MAX, 100), usize::MAX);
}

/// Verified transfers: the per-client and global limits refuse, and dropping a permit frees
/// its slot.
#[test]
fn admission_limits_and_release_on_drop() {
    let adm = admission(3, 2, 50);
    let a = IpAddr::from([10, 0, 0, 1]);
    let b = IpAddr::from([10, 0, 0, 2]);
    let c = IpAddr::from([10, 0, 0, 3]);
    let a1 = verified(&adm, at(a, 1));
    let a2 = verified(&adm, at(a, 2));
    assert_eq!(
        take(&adm, at(a, 3)).err(),
        Some(Refusal::ClientFull),
        "per-client limit"
    );
    // The per-client refusal did not leak a global slot.
    assert_eq!(active(&adm), 2);
    let b1 = verified(&adm, at(b, 1));
    assert_eq!(
        take(&adm, at(c, 1)).err(),
        Some(Refusal::ServerFull),
        "global limit"
    );
    drop(a1);
    assert_eq!(active(&adm), 2);
    let c1 = verified(&adm, at(c, 1));
    assert_eq!(
        take(&adm, at(a, 4)).err(),
        Some(Refusal::ServerFull),
        "global limit again"
    );
    drop((a2, b1, c1));
    assert_empty(&adm);
    // IPv4-mapped IPv6 counts as the same client.
    let v6 = IpAddr::from(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
    let p1 = verified(&adm, at(a, 1));
    let p2 = verified(&adm, at(v6, 2));
    assert_eq!(take(&adm, at(v6, 3)).err(), Some(Refusal::ClientFull));
    drop((p1, p2));
    assert_empty(&adm);
}

/// A second request from the address and port of a running transfer is a duplicate (the
/// same client retransmitting its RRQ), whatever the limits; the port is free again once
/// that transfer ends. Another port of the same client is another transfer.
#[test]
fn admission_knows_a_retransmitted_request() {
    let adm = admission(10, 10, 50);
    let a = IpAddr::from([10, 0, 0, 1]);
    let v6 = IpAddr::from(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
    let mut first = take(&adm, at(a, 2000)).unwrap();
    assert_eq!(take(&adm, at(a, 2000)).err(), Some(Refusal::Duplicate));
    assert_eq!(take(&adm, at(v6, 2000)).err(), Some(Refusal::Duplicate));
    reach(&mut first, Phase::Verified);
    assert_eq!(take(&adm, at(a, 2000)).err(), Some(Refusal::Duplicate));
    assert_eq!(active(&adm), 1, "a duplicate takes no slot");
    let other = take(&adm, at(a, 2001)).unwrap();
    drop(first);
    let again = take(&adm, at(a, 2000)).unwrap();
    drop((other, again));
    assert_empty(&adm);
}

/// The unverified share of `max_sessions` is full: the oldest unverified transfer gives way,
/// whichever client it belongs to; verified ones are never touched.
#[test]
fn the_oldest_unverified_transfer_gives_way_to_a_new_request() {
    let adm = admission(10, 10, 50);
    let ip = |n: u8| IpAddr::from([10, 0, 1, n]);
    let kept = verified(&adm, at(ip(100), 1));
    let mut held: Vec<SessionPermit> = (0..5).map(|n| take(&adm, at(ip(n), 1)).unwrap()).collect();
    assert_eq!((active(&adm), adm.lock().unverified), (6, 5));
    let (newest, ev) = adm.acquire(at(ip(5), 1)).unwrap();
    assert_eq!(ev.unverified, 1);
    assert_eq!(ev.last_unverified, Some((at(ip(0), 1), Pressure::Share)));
    assert!(held[0].is_revoked(), "the oldest was evicted");
    assert!(held[1..].iter().all(|p| !p.is_revoked()) && !newest.is_revoked());
    assert!(!kept.is_revoked());
    assert_eq!((active(&adm), adm.lock().unverified), (6, 5));
    assert_eq!(adm.revoked_pending.load(Ordering::Acquire), 1);
    // Once verified, a transfer no longer counts against the share.
    reach(&mut held[1], Phase::Verified);
    let (_fresh, ev) = adm.acquire(at(ip(6), 1)).unwrap();
    assert_eq!(ev, Evictions::default());
    // The evicted permit's drop only clears its revocation.
    drop(held.remove(0));
    assert_eq!(adm.revoked_pending.load(Ordering::Acquire), 0);
    assert_eq!(active(&adm), 7);
}

/// A full table evicts an unverified transfer before it refuses anyone, and refuses only when
/// every slot holds a verified transfer still sending; a refused request ends nothing.
#[test]
fn a_full_table_evicts_unverified_before_refusing() {
    let adm = admission(4, 10, 100);
    let ip = |n: u8| IpAddr::from([10, 0, 2, n]);
    let mut v: Vec<SessionPermit> = (0..3).map(|n| verified(&adm, at(ip(n), 1))).collect();
    let pending = take(&adm, at(ip(3), 1)).unwrap();
    let (mut late, ev) = adm.acquire(at(ip(4), 1)).unwrap();
    assert_eq!(
        ev.last_unverified,
        Some((at(ip(3), 1), Pressure::ServerFull))
    );
    assert!(pending.is_revoked());
    reach(&mut late, Phase::Verified);
    v.push(late);
    assert_eq!(take(&adm, at(ip(5), 1)).err(), Some(Refusal::ServerFull));
    assert!(v.iter().all(|p| !p.is_revoked()));
    assert_eq!(active(&adm), 4);
    drop((v, pending));
    assert_empty(&adm);
}

/// One client address may hold its unverified share (half of `max_sessions_per_client`); a
/// further request ends that client's own oldest unverified transfer, no one else's. At the
/// per-client limit its oldest unverified transfer gives way, and with only verified ones
/// the request is refused.
#[test]
fn a_client_share_evicts_only_that_clients_transfers() {
    let adm = admission(100, 4, 50);
    let a = IpAddr::from([10, 0, 3, 1]);
    let b = IpAddr::from([10, 0, 3, 2]);
    let other = take(&adm, at(b, 1)).unwrap();
    let a1 = take(&adm, at(a, 1)).unwrap();
    let a2 = take(&adm, at(a, 2)).unwrap();
    let (mut a3, ev) = adm.acquire(at(a, 3)).unwrap();
    assert_eq!(ev.last_unverified, Some((at(a, 1), Pressure::ClientShare)));
    assert!(a1.is_revoked() && !a2.is_revoked() && !other.is_revoked());
    // At the per-client limit (2 verified + 2 unverified): the oldest unverified gives way.
    reach(&mut a3, Phase::Verified);
    let a4 = verified(&adm, at(a, 4));
    let a5 = take(&adm, at(a, 5)).unwrap();
    assert_eq!(adm.lock().client(a).total, 4);
    let (mut a6, ev) = adm.acquire(at(a, 6)).unwrap();
    assert_eq!(ev.last_unverified, Some((at(a, 2), Pressure::ClientFull)));
    assert!(a2.is_revoked() && !a5.is_revoked());
    reach(&mut a6, Phase::Verified);
    let (mut a7, _) = adm.acquire(at(a, 7)).unwrap();
    assert!(a5.is_revoked());
    reach(&mut a7, Phase::Verified);
    // Four verified transfers: refused, and nothing was ended for it.
    assert_eq!(take(&adm, at(a, 8)).err(), Some(Refusal::ClientFull));
    assert!(![&a3, &a4, &a6, &a7].iter().any(|p| p.is_revoked()));
    assert!(!other.is_revoked());
    drop((other, a1, a2, a3, a4, a5, a6, a7));
    assert_empty(&adm);
}

/// The storm failure of issue #12: every slot taken, and a client whose transfer has sent its
/// last block (its final ACK not seen yet) asks for its next file. Its finishing transfer gives
/// way, from a new port or the same one; with no finishing transfer of its own, the oldest
/// finishing one of anyone is retired before the request would be refused.
#[test]
fn a_finishing_transfer_gives_way_to_its_clients_next_request() {
    let adm = admission(3, 10, 50);
    let ip = |n: u8| IpAddr::from([10, 0, 4, n]);
    let mut a = verified(&adm, at(ip(1), 1000));
    let mut b = verified(&adm, at(ip(2), 1000));
    let c = verified(&adm, at(ip(3), 1000));
    assert_eq!(take(&adm, at(ip(1), 1001)).err(), Some(Refusal::ServerFull));
    reach(&mut a, Phase::Finishing);
    let (mut a2, ev) = adm.acquire(at(ip(1), 1001)).unwrap();
    assert_eq!((ev.finishing, ev.unverified), (1, 0));
    assert!(a.is_revoked() && !b.is_revoked() && !c.is_revoked());
    reach(&mut a2, Phase::Verified);
    // The same port after the last block: a new request, not a duplicate.
    reach(&mut b, Phase::Finishing);
    let (mut b2, ev) = adm.acquire(at(ip(2), 1000)).unwrap();
    assert_eq!(ev.finishing, 1);
    assert!(b.is_revoked());
    reach(&mut b2, Phase::Verified);
    // Another client, the table full of verified transfers one of which is finishing.
    reach(&mut a2, Phase::Finishing);
    let (d, ev) = adm.acquire(at(ip(4), 1000)).unwrap();
    assert_eq!(ev.finishing, 1);
    assert!(a2.is_revoked() && !b2.is_revoked() && !c.is_revoked());
    drop((a, a2, b, b2, c, d));
    assert_empty(&adm);
}

#[test]
fn admission_is_consistent_across_threads() {
    let adm = admission(50, 1000, 50);
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let adm = Arc::clone(&adm);
            s.spawn(move || {
                let mut held = Vec::new();
                for i in 0..2000u32 {
                    let peer = at(IpAddr::from([10, 0, t, (i % 7) as u8]), i as u16);
                    if let Ok(mut p) = take(&adm, peer) {
                        match i % 5 {
                            0 => reach(&mut p, Phase::Verified),
                            1 => reach(&mut p, Phase::Finishing),
                            _ => {}
                        }
                        held.push(p);
                    }
                    assert!(active(&adm) <= 50);
                    if i % 3 == 0 {
                        held.pop();
                    }
                    held.retain(|p| !p.is_revoked());
                }
            });
        }
    });
    assert_empty(&adm);
    assert_eq!(adm.revoked_pending.load(Ordering::Acquire), 0);
}

/// A waker that counts its wakes.
struct CountWakes(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountWakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// `SessionPermit::revoked` is pending until an eviction, which wakes the task awaiting it.
#[test]
fn revocation_wakes_the_waiting_task() {
    let adm = admission(1, 1, 100);
    let a = IpAddr::from([10, 0, 5, 1]);
    let old = take(&adm, at(a, 1)).unwrap();
    let count = Arc::new(CountWakes(AtomicUsize::new(0)));
    let waker = Waker::from(Arc::clone(&count));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(old.revoked());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    let new = take(&adm, at(a, 2)).unwrap();
    assert_eq!(count.0.load(Ordering::Acquire), 1);
    assert!(fut.as_mut().poll(&mut cx).is_ready());
    drop((old, new));
    assert_empty(&adm);
}

#[test]
fn busy_server_refuses_with_error_0() {
    let f = fixture(2, 1);
    let svc = &f.service;
    let _held = verified(&svc.admission, peer(1, 1));
    // Client 10.0.0.1 is at its per-client limit.
    let got = reply(svc, peer(1, 2000), &rrq(b"pxelinux.0")).unwrap();
    assert_eq!(got, error_packet(0, "server busy"));
    let _other = verified(&svc.admission, peer(2, 1));
    // Now the global limit is reached for everyone.
    let got = reply(svc, peer(3, 2000), &rrq(b"pxelinux.0")).unwrap();
    assert_eq!(got, error_packet(0, "server busy"));
    assert_eq!(metrics(svc).refused_limit, 2);
    assert_eq!(svc.active_sessions(), 2);
}

#[test]
fn rlimit_clamp() {
    assert_eq!(clamp_to_fd_limit(10_000, None), 10_000);
    assert_eq!(clamp_to_fd_limit(10_000, Some(20_000)), 10_000);
    assert_eq!(clamp_to_fd_limit(10_000, Some(1024)), 1024 - 256);
    assert_eq!(clamp_to_fd_limit(10_000, Some(256)), 128);
    assert_eq!(clamp_to_fd_limit(10_000, Some(1)), 1);
    assert_eq!(clamp_to_fd_limit(5, Some(1024)), 5);
}

#[test]
fn new_reads_the_config_and_fits_the_fd_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::tftp::TftpSettings {
        root: dir.path().to_path_buf(),
        session: SessionConfig {
            max_blksize: 8192,
            ..SessionConfig::default()
        },
        max_sessions: usize::MAX,
        max_sessions_per_client: 3,
        unverified_share_percent: 100,
        unverified_share_per_client_percent: 50,
    };
    let svc = TftpService::new(&config, Arc::new(TftpMetrics::default())).unwrap();
    let soft = pxe_net::fd_limit().soft;
    if let Some(soft) = soft {
        assert!(svc.max_sessions() as u64 <= soft.saturating_sub(RESERVED_FDS).max(1));
    }
    assert_eq!(svc.session_config.max_blksize, 8192);
    assert_eq!(svc.admission.max_per_client, 3);
    let missing = crate::tftp::TftpSettings {
        root: dir.path().join("missing"),
        ..config
    };
    assert!(TftpService::new(&missing, Arc::new(TftpMetrics::default())).is_err());
}

/// Starts a transfer for `bytes` from `from`.
fn start(svc: &TftpService, from: SocketAddr, bytes: &[u8]) -> (Session, SessionPermit) {
    let mut buf = [0u8; 600];
    match svc.handle_request(Instant::now(), from, bytes, &mut buf) {
        RequestOutcome::Start { session, permit } => (session, permit),
        RequestOutcome::Reply { len } => panic!("refused: {:?}", &buf[..len]),
        RequestOutcome::Drop => panic!("dropped"),
    }
}

/// Plays the client and the engine: sends what the session has, acknowledges the first
/// packet (the OACK or DATA 1), sends again, and reports the phase to the admission.
fn acknowledge_first(session: &mut Session, permit: &mut SessionPermit) {
    let mut buf = [0u8; 600];
    let now = Instant::now();
    let first = match session.poll_transmit(now, &mut buf) {
        Some(crate::tftp::session::Transmit::Control { .. }) => 0,
        Some(crate::tftp::session::Transmit::Data { .. }) => 1,
        None => panic!("nothing to send"),
    };
    let mut ack = [0u8; 4];
    packet::emit_ack(first, &mut ack);
    session.handle_datagram(now, session.peer(), &ack);
    while session.poll_transmit(now, &mut buf).is_some() {}
    permit.observe(session);
}

/// Needs the real `Session` (protocol helper).
#[test]
fn read_request_starts_a_session_with_a_permit() {
    let f = fixture(10, 1);
    let svc = &f.service;
    let mut buf = [0u8; 600];
    let from = peer(9, 4242);
    let (mut session, mut permit) = start(svc, from, &rrq(b"pxelinux.0"));
    assert_eq!(session.peer(), from);
    assert_eq!(session.image().len(), 5000);
    assert_eq!(svc.active_sessions(), 1);
    assert_eq!(metrics(svc).sessions_started, 1);
    acknowledge_first(&mut session, &mut permit);
    // Same client again: over its limit of 1 while the verified transfer runs.
    assert_eq!(
        reply(svc, peer(9, 4243), &rrq(b"pxelinux.0")).unwrap(),
        error_packet(0, "server busy")
    );
    // The same request again from the same port: the client's retransmission, dropped
    // without an answer (the running transfer answers it) and without a refusal.
    assert_eq!(reply(svc, from, &rrq(b"pxelinux.0")), None);
    assert_eq!(metrics(svc).duplicate_requests, 1);
    assert_eq!(metrics(svc).refused_limit, 1);
    assert_eq!(metrics(svc).sessions_started, 1);
    drop(permit);
    assert_eq!(svc.active_sessions(), 0);
    drop(session);
    // Once that transfer has ended, the port may ask again.
    let again = svc.handle_request(Instant::now(), from, &rrq(b"pxelinux.0"), &mut buf);
    assert!(matches!(again, RequestOutcome::Start { .. }));
}

/// With every slot taken by clients whose last block is out, each client's request for its
/// next file starts at once (from a new port) instead of getting "server busy": the storm
/// failure of issue #12, where 24 of 10,000 simulated machines got ERROR 0 because their next
/// RRQ came before the server had seen their final ACK.
#[test]
fn a_clients_next_file_is_never_refused_for_its_finished_transfer() {
    let f = fixture(3, 10);
    let svc = &f.service;
    let mut with_blksize = rrq(b"tiny");
    with_blksize.extend_from_slice(b"blksize\x00512\x00");
    let mut finished = Vec::new();
    for n in 1..=3 {
        let (mut session, mut permit) = start(svc, peer(n, 1000), &with_blksize);
        acknowledge_first(&mut session, &mut permit);
        assert!(session.last_block_sent() && session.outcome().is_none());
        finished.push((session, permit));
    }
    // Each client asks for its next file from a new port, and acknowledges its first packet
    // as a client on the same segment does before the next request comes in.
    let next: Vec<_> = (1..=3)
        .map(|n| {
            let (mut session, mut permit) = start(svc, peer(n, 2000), &rrq(b"pxelinux.0"));
            acknowledge_first(&mut session, &mut permit);
            (session, permit)
        })
        .collect();
    assert!(finished.iter().all(|(_, p)| p.is_revoked()));
    assert!(next.iter().all(|(_, p)| !p.is_revoked()));
    let m = metrics(svc);
    assert_eq!((m.evicted_finished, m.refused_limit), (3, 0), "{m}");
    assert_eq!(svc.active_sessions(), 3);
    drop(finished);
    assert_eq!(svc.revoked_pending(), 0);
}

/// A flood of requests that are never acknowledged cannot refuse a real client: each new
/// request evicts the oldest unverified transfer (counted), and a verified one is untouched.
#[test]
fn unacknowledged_requests_are_evicted_not_the_real_client() {
    let f = fixture(8, 32);
    let svc = &f.service;
    let (mut real, mut real_permit) = start(svc, peer(200, 7000), &rrq(b"pxelinux.0"));
    acknowledge_first(&mut real, &mut real_permit);
    let mut flood = Vec::new();
    for i in 0..100u16 {
        let (s, p) = start(svc, peer((i % 50) as u8, 3000 + i), &rrq(b"pxelinux.0"));
        flood.push((s, p));
    }
    // Half of 8 slots may be unverified: all but the newest 4 flood transfers were evicted.
    let alive = flood.iter().filter(|(_, p)| !p.is_revoked()).count();
    assert_eq!(alive, 4);
    assert!(!real_permit.is_revoked());
    let m = metrics(svc);
    assert_eq!((m.evicted_unverified, m.refused_limit), (96, 0), "{m}");
    // A second real client still gets in.
    let (_s, p) = start(svc, peer(201, 7000), &rrq(b"pxelinux.0"));
    assert!(!p.is_revoked());
}

#[test]
fn capped_client_timeouts_are_counted() {
    let f = fixture(10, 10);
    let svc = &f.service;
    let mut buf = [0u8; 600];
    let mut start = |port: u16, timeout: &[u8]| {
        let mut bytes = rrq(b"pxelinux.0");
        bytes.extend_from_slice(b"timeout\0");
        bytes.extend_from_slice(timeout);
        bytes.push(0);
        let outcome = svc.handle_request(Instant::now(), peer(3, port), &bytes, &mut buf);
        let RequestOutcome::Start { session, .. } = outcome else {
            panic!("expected a transfer start");
        };
        session.accepted_options().timeout
    };
    assert_eq!(start(1000, b"255"), Some(5));
    assert_eq!(start(1001, b"5"), Some(5));
    assert_eq!(start(1002, b"6"), Some(5));
    assert_eq!(start(1003, b"1"), Some(1));
    let m = metrics(svc);
    assert_eq!((m.sessions_started, m.timeout_capped), (4, 2));
}
