//! Turns a datagram on a listening socket into a new transfer, or an ERROR reply.
//!
//! Shared by all engine threads (`Arc<TftpService>`); it is the only
//! place that applies the session limits, so both engines refuse the same things.
//!
//! Order of checks for a request: parse (malformed requests get ERROR 4, or 8 for a bad
//! option; anything else unparseable is dropped), refuse writes (ERROR 2), take a session
//! permit (ERROR 0 "server busy" when `max_sessions` or `max_sessions_per_client` is reached;
//! checked before the file is opened so a flood costs no file I/O; a request from the address
//! and port of a running transfer is that client's retransmission, ignored: the transfer
//! answers it, and a second one would double the work exactly when the server is slow), then
//! open the image (ERROR 1 / 2 / 0). Nothing here allocates per datagram except what `ImageStore::open` and
//! the permit's per-client map need once per accepted request.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::images::{ImageStore, OpenError};
use crate::tftp::metrics::TftpMetrics;
use crate::tftp::session::{Session, SessionConfig};
use pxe_proto::tftp::{self as packet, ErrorCode, Packet, ParseError, RequestKind};

/// File descriptors kept out of `max_sessions` for listeners, rings, the image store, logs.
pub const RESERVED_FDS: u64 = 256;

/// Holds one slot of `max_sessions` and of the client's `max_sessions_per_client`, and marks
/// the client's address and port as having a transfer; dropping it frees all three.
pub struct SessionPermit {
    admission: Arc<Admission>,
    peer: SocketAddr,
}

impl std::fmt::Debug for SessionPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPermit")
            .field("peer", &self.peer)
            .finish()
    }
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        self.admission.release(self.peer);
    }
}

/// Why a request got no permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// `max_sessions` or `max_sessions_per_client` reached.
    Busy,
    /// This address and port already has a transfer.
    Duplicate,
}

/// Transfers per client address, and the client addresses and ports with a transfer.
#[derive(Debug, Default)]
struct Peers {
    per_client: HashMap<IpAddr, u32>,
    transfers: HashSet<SocketAddr>,
}

/// The session counters shared by every engine thread.
#[derive(Debug)]
struct Admission {
    max_sessions: usize,
    max_per_client: u32,
    active: AtomicUsize,
    peers: Mutex<Peers>,
}

/// `peer` with an IPv4-mapped IPv6 address written as plain IPv4 (the same client).
fn canonical(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(peer.ip().to_canonical(), peer.port())
}

impl Admission {
    fn new(max_sessions: usize, max_per_client: usize) -> Admission {
        Admission {
            max_sessions: max_sessions.max(1),
            max_per_client: u32::try_from(max_per_client).unwrap_or(u32::MAX).max(1),
            active: AtomicUsize::new(0),
            peers: Mutex::new(Peers::default()),
        }
    }

    fn acquire(self: &Arc<Self>, peer: SocketAddr) -> Result<SessionPermit, Refusal> {
        let peer = canonical(peer);
        let mut peers = self.lock();
        if peers.transfers.contains(&peer) {
            return Err(Refusal::Duplicate);
        }
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_sessions).then_some(n + 1)
            })
            .map_err(|_| Refusal::Busy)?;
        let count = peers.per_client.entry(peer.ip()).or_insert(0);
        if *count >= self.max_per_client {
            drop(peers);
            self.active.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Busy);
        }
        *count += 1;
        peers.transfers.insert(peer);
        Ok(SessionPermit {
            admission: Arc::clone(self),
            peer,
        })
    }

    fn release(&self, peer: SocketAddr) {
        let mut peers = self.lock();
        peers.transfers.remove(&peer);
        if let Some(count) = peers.per_client.get_mut(&peer.ip()) {
            *count -= 1;
            if *count == 0 {
                peers.per_client.remove(&peer.ip());
            }
        }
        drop(peers);
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Peers> {
        // Every update under this lock is one counter step plus one set update, never left
        // half-done by a panic between them: a poisoned value is consistent.
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What to do with a datagram that arrived on a listening socket.
// `Start` carries the whole session by value: built once per accepted request and moved
// straight into the engine's session table, so boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum RequestOutcome {
    /// Start this transfer from a new socket (new TID) bound to the request's local address.
    Start {
        session: Session,
        permit: SessionPermit,
    },
    /// Send the `len` bytes written into the buffer (an ERROR packet) back from the listener.
    Reply { len: usize },
    /// Nothing to send (malformed beyond answering; counted).
    Drop,
}

pub struct TftpService {
    pub session_config: SessionConfig,
    pub images: ImageStore,
    pub metrics: Arc<TftpMetrics>,
    admission: Arc<Admission>,
}

impl TftpService {
    /// Opens the image root and sets the limits. `max_sessions` is clamped so that one socket
    /// per session fits in `RLIMIT_NOFILE` (the soft limit is raised to the hard one first),
    /// with a warning when that lowers it.
    pub fn new(
        settings: &super::TftpSettings,
        metrics: Arc<TftpMetrics>,
    ) -> std::io::Result<TftpService> {
        let images = ImageStore::new(settings.root.clone())?;
        let max_sessions = clamp_to_fd_limit(settings.max_sessions, raise_nofile_limit());
        Ok(TftpService::from_parts(
            settings.session,
            images,
            metrics,
            max_sessions,
            settings.max_sessions_per_client,
        ))
    }

    /// A service with exactly these limits (no rlimit check): for tests and simulators.
    pub fn from_parts(
        session_config: SessionConfig,
        images: ImageStore,
        metrics: Arc<TftpMetrics>,
        max_sessions: usize,
        max_sessions_per_client: usize,
    ) -> TftpService {
        TftpService {
            session_config,
            images,
            metrics,
            admission: Arc::new(Admission::new(max_sessions, max_sessions_per_client)),
        }
    }

    /// The effective global session limit (after the rlimit clamp).
    pub fn max_sessions(&self) -> usize {
        self.admission.max_sessions
    }

    /// Transfers holding a permit right now.
    pub fn active_sessions(&self) -> usize {
        self.admission.active.load(Ordering::Acquire)
    }

    /// Handles one datagram from `peer` on a listening socket. `buf` receives an ERROR reply
    /// for `RequestOutcome::Reply`.
    pub fn handle_request(
        &self,
        now: Instant,
        peer: SocketAddr,
        bytes: &[u8],
        buf: &mut [u8],
    ) -> RequestOutcome {
        let m = &self.metrics;
        TftpMetrics::add(&m.requests_received, 1);
        let mut reply = |code: ErrorCode, msg: &str| RequestOutcome::Reply {
            len: packet::emit_error(code, msg, buf),
        };
        let request = match packet::parse(bytes) {
            Ok(Packet::Request(r)) => r,
            Ok(_) => {
                // DATA/ACK/ERROR/OACK on a listener: not ours to answer (and answering ERRORs
                // could start an error ping-pong).
                TftpMetrics::add(&m.malformed, 1);
                return RequestOutcome::Drop;
            }
            Err(e) => {
                TftpMetrics::add(&m.malformed, 1);
                let opcode = bytes.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                if !matches!(opcode, Some(1 | 2)) {
                    return RequestOutcome::Drop;
                }
                let (code, msg) = malformed_request_error(e);
                tracing::debug!(%peer, error = %e, "malformed request");
                return reply(code, msg);
            }
        };
        if request.kind == RequestKind::Write {
            TftpMetrics::add(&m.refused_write, 1);
            return reply(ErrorCode::AccessViolation, "read-only server");
        }
        let permit = match self.admission.acquire(peer) {
            Ok(permit) => permit,
            Err(Refusal::Busy) => {
                TftpMetrics::add(&m.refused_limit, 1);
                return reply(ErrorCode::NotDefined, "server busy");
            }
            Err(Refusal::Duplicate) => {
                TftpMetrics::add(&m.duplicate_requests, 1);
                return RequestOutcome::Drop;
            }
        };
        let image = match self.images.open(request.filename) {
            Ok(image) => image,
            Err(e) => {
                let name = String::from_utf8_lossy(request.filename);
                return match e {
                    OpenError::NotFound => {
                        TftpMetrics::add(&m.refused_not_found, 1);
                        tracing::debug!(%peer, file = %name, "file not found");
                        reply(ErrorCode::FileNotFound, "file not found")
                    }
                    OpenError::AccessViolation(_) | OpenError::LeavesRoot => {
                        let why = e.refusal().unwrap_or("access violation");
                        TftpMetrics::add(&m.refused_access, 1);
                        tracing::info!(%peer, file = %name, reason = why, "access violation");
                        reply(ErrorCode::AccessViolation, why)
                    }
                    OpenError::Io(e) => {
                        tracing::warn!(%peer, file = %name, error = %e, "cannot read image");
                        reply(ErrorCode::NotDefined, "I/O error")
                    }
                };
            }
        };
        let session = Session::new(peer, &request, image, &self.session_config, now);
        TftpMetrics::add(&m.sessions_started, 1);
        RequestOutcome::Start { session, permit }
    }
}

/// The ERROR sent for a request that did not parse.
fn malformed_request_error(e: ParseError) -> (ErrorCode, &'static str) {
    match e {
        ParseError::BadOptionValue => (ErrorCode::OptionNegotiation, "malformed option value"),
        ParseError::DuplicateOption => (ErrorCode::OptionNegotiation, "option given twice"),
        ParseError::FilenameTooLong => (ErrorCode::IllegalOperation, "file name too long"),
        ParseError::EmptyFilename => (ErrorCode::IllegalOperation, "empty file name"),
        ParseError::BadMode => (ErrorCode::IllegalOperation, "unsupported transfer mode"),
        ParseError::Truncated | ParseError::MissingNul | ParseError::UnknownOpcode(_) => {
            (ErrorCode::IllegalOperation, "malformed request")
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit if it is lower; returns the soft limit
/// now in force (`None` = unlimited).
pub(crate) fn raise_nofile_limit() -> Option<u64> {
    match pxe_net::raise_fd_limit() {
        Ok(lim) => lim.soft,
        Err(e) => {
            tracing::debug!(error = %e, "could not raise RLIMIT_NOFILE");
            pxe_net::fd_limit().soft
        }
    }
}

/// `configured` limited so that one socket per session fits in `soft_limit` file descriptors
/// next to [`RESERVED_FDS`]; warns when it lowers the value.
fn clamp_to_fd_limit(configured: usize, soft_limit: Option<u64>) -> usize {
    let Some(soft) = soft_limit else {
        return configured;
    };
    let available = match soft.checked_sub(RESERVED_FDS) {
        Some(n) if n > 0 => n,
        // A tiny limit: keep half of it for everything else.
        _ => (soft / 2).max(1),
    };
    let available = usize::try_from(available).unwrap_or(usize::MAX);
    if configured > available {
        tracing::warn!(
            configured,
            effective = available,
            rlimit_nofile = soft,
            reserved = RESERVED_FDS,
            "max_sessions lowered to fit the open-file limit (one socket per transfer)"
        );
        available
    } else {
        configured
    }
}

#[cfg(test)]
mod tests {
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
            Some(Refusal::Busy),
            "per-client limit"
        );
        // The per-client refusal did not leak a global slot.
        assert_eq!(adm.active.load(Ordering::Acquire), 2);
        let b1 = adm.acquire(at(b, 1)).unwrap();
        assert_eq!(
            adm.acquire(at(c, 1)).err(),
            Some(Refusal::Busy),
            "global limit"
        );
        drop(a1);
        assert_eq!(adm.active.load(Ordering::Acquire), 2);
        let c1 = adm.acquire(at(c, 1)).unwrap();
        assert_eq!(
            adm.acquire(at(a, 4)).err(),
            Some(Refusal::Busy),
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
        assert_eq!(adm.acquire(at(v6, 3)).err(), Some(Refusal::Busy));
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
}
