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
    std::fs::write(dir.path().join("secret"), b"secret").unwrap();
    let service = TftpService::from_parts(
        SessionConfig::default(),
        ImageStore::new(root).unwrap(),
        Arc::new(TftpMetrics::default()),
        max_sessions,
        per_client,
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

#[test]
fn admission_limits_and_release_on_drop() {
    let adm = Arc::new(Admission::new(3, 2));
    let a = IpAddr::from([10, 0, 0, 1]);
    let b = IpAddr::from([10, 0, 0, 2]);
    let c = IpAddr::from([10, 0, 0, 3]);
    let a1 = adm.acquire(at(a, 1)).unwrap();
    let a2 = adm.acquire(at(a, 2)).unwrap();
    assert_eq!(
        adm.acquire(at(a, 3)).err(),
        Some(Refusal::ClientFull),
        "per-client limit"
    );
    // The per-client refusal did not leak a global slot.
    assert_eq!(adm.active.load(Ordering::Acquire), 2);
    let b1 = adm.acquire(at(b, 1)).unwrap();
    assert_eq!(
        adm.acquire(at(c, 1)).err(),
        Some(Refusal::ServerFull),
        "global limit"
    );
    drop(a1);
    assert_eq!(adm.active.load(Ordering::Acquire), 2);
    let c1 = adm.acquire(at(c, 1)).unwrap();
    assert_eq!(
        adm.acquire(at(a, 4)).err(),
        Some(Refusal::ServerFull),
        "global limit again"
    );
    drop((a2, b1, c1));
    assert_eq!(adm.active.load(Ordering::Acquire), 0);
    let peers = adm.lock();
    assert!(
        peers.per_client.is_empty(),
        "per-client entries removed at zero"
    );
    assert!(peers.transfers.is_empty());
    drop(peers);
    // IPv4-mapped IPv6 counts as the same client.
    let v6 = IpAddr::from(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
    let p1 = adm.acquire(at(a, 1)).unwrap();
    let p2 = adm.acquire(at(v6, 2)).unwrap();
    assert_eq!(adm.acquire(at(v6, 3)).err(), Some(Refusal::ClientFull));
    drop((p1, p2));
    assert_eq!(adm.active.load(Ordering::Acquire), 0);
}

/// A second request from the address and port of a running transfer is a duplicate (the
/// same client retransmitting its RRQ), whatever the limits; the port is free again once
/// that transfer ends. Another port of the same client is another transfer.
#[test]
fn admission_knows_a_retransmitted_request() {
    let adm = Arc::new(Admission::new(10, 10));
    let a = IpAddr::from([10, 0, 0, 1]);
    let v6 = IpAddr::from(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
    let first = adm.acquire(at(a, 2000)).unwrap();
    assert_eq!(adm.acquire(at(a, 2000)).err(), Some(Refusal::Duplicate));
    assert_eq!(adm.acquire(at(v6, 2000)).err(), Some(Refusal::Duplicate));
    assert_eq!(
        adm.active.load(Ordering::Acquire),
        1,
        "a duplicate takes no slot"
    );
    let other = adm.acquire(at(a, 2001)).unwrap();
    drop(first);
    let again = adm.acquire(at(a, 2000)).unwrap();
    drop((other, again));
    assert!(adm.lock().transfers.is_empty());
}

#[test]
fn admission_is_consistent_across_threads() {
    let adm = Arc::new(Admission::new(50, 1000));
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let adm = Arc::clone(&adm);
            s.spawn(move || {
                let mut held = Vec::new();
                for i in 0..2000u32 {
                    let peer = at(IpAddr::from([10, 0, t, (i % 7) as u8]), i as u16);
                    if let Ok(p) = adm.acquire(peer) {
                        held.push(p);
                    }
                    assert!(adm.active.load(Ordering::Acquire) <= 50);
                    if i % 3 == 0 {
                        held.pop();
                    }
                }
            });
        }
    });
    assert_eq!(adm.active.load(Ordering::Acquire), 0);
    let peers = adm.lock();
    assert!(peers.per_client.is_empty() && peers.transfers.is_empty());
}

#[test]
fn busy_server_refuses_with_error_0() {
    let f = fixture(2, 1);
    let svc = &f.service;
    let _held = svc.admission.acquire(peer(1, 1)).unwrap();
    // Client 10.0.0.1 is at its per-client limit.
    let got = reply(svc, peer(1, 2000), &rrq(b"pxelinux.0")).unwrap();
    assert_eq!(got, error_packet(0, "server busy"));
    let _other = svc.admission.acquire(peer(2, 1)).unwrap();
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

/// Needs the real `Session` (protocol helper).
#[test]
fn read_request_starts_a_session_with_a_permit() {
    let f = fixture(10, 1);
    let svc = &f.service;
    let mut buf = [0u8; 600];
    let from = peer(9, 4242);
    let outcome = svc.handle_request(Instant::now(), from, &rrq(b"pxelinux.0"), &mut buf);
    let RequestOutcome::Start { session, permit } = outcome else {
        panic!("expected a transfer start");
    };
    assert_eq!(session.peer(), from);
    assert_eq!(session.image().len(), 5000);
    assert_eq!(svc.active_sessions(), 1);
    assert_eq!(metrics(svc).sessions_started, 1);
    // Same client again: over its limit of 1 while the permit is held.
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
