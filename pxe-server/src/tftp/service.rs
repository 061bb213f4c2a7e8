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
use std::time::{Duration, Instant};

use crate::images::{ImageStore, OpenError};
use crate::metrics::{self, LogLimiter};
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
    /// `max_sessions` reached.
    ServerFull,
    /// The client's address has `max_sessions_per_client` transfers.
    ClientFull,
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
            .map_err(|_| Refusal::ServerFull)?;
        let count = peers.per_client.entry(peer.ip()).or_insert(0);
        if *count >= self.max_per_client {
            drop(peers);
            self.active.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::ClientFull);
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
    /// One "server busy" warning per [`REFUSAL_LOG_INTERVAL`].
    refusal_log: LogLimiter,
}

/// How often a refusal under load may be logged (every refusal is counted).
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

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
            refusal_log: LogLimiter::new(REFUSAL_LOG_INTERVAL),
        }
    }

    /// The rate-limited warning for a request refused for lack of a slot: who, which limit,
    /// and the setting to raise.
    fn warn_refused(&self, refusal: Refusal, peer: SocketAddr) {
        let Some(held_back) = self.refusal_log.allow() else {
            return;
        };
        let a = &self.admission;
        match refusal {
            Refusal::ClientFull => tracing::warn!(
                client = %peer.ip(),
                max_sessions_per_client = a.max_per_client,
                refusals_not_logged = held_back,
                "TFTP request refused (server busy): this client address already has \
                 max_sessions_per_client transfers; raise [tftp] max_sessions_per_client \
                 if many machines share one address (NAT, a load tester)"
            ),
            _ => tracing::warn!(
                client = %peer.ip(),
                max_sessions = a.max_sessions,
                refusals_not_logged = held_back,
                "TFTP request refused (server busy): max_sessions transfers are running; \
                 raise [tftp] max_sessions (and the open-file limit it is fitted to)"
            ),
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
        metrics::inc(&m.requests_received);
        let mut reply = |code: ErrorCode, msg: &str| RequestOutcome::Reply {
            len: packet::emit_error(code, msg, buf),
        };
        let request = match packet::parse(bytes) {
            Ok(Packet::Request(r)) => r,
            Ok(_) => {
                // DATA/ACK/ERROR/OACK on a listener: not ours to answer (and answering ERRORs
                // could start an error ping-pong).
                metrics::inc(&m.malformed);
                return RequestOutcome::Drop;
            }
            Err(e) => {
                metrics::inc(&m.malformed);
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
            metrics::inc(&m.refused_write);
            return reply(ErrorCode::AccessViolation, "read-only server");
        }
        let permit = match self.admission.acquire(peer) {
            Ok(permit) => permit,
            Err(refusal @ (Refusal::ServerFull | Refusal::ClientFull)) => {
                metrics::inc(&m.refused_limit);
                self.warn_refused(refusal, peer);
                return reply(ErrorCode::NotDefined, "server busy");
            }
            Err(Refusal::Duplicate) => {
                metrics::inc(&m.duplicate_requests);
                return RequestOutcome::Drop;
            }
        };
        let image = match self.images.open(request.filename) {
            Ok(image) => image,
            Err(e) => {
                let name = String::from_utf8_lossy(request.filename);
                return match e {
                    OpenError::NotFound => {
                        metrics::inc(&m.refused_not_found);
                        tracing::debug!(%peer, file = %name, "file not found");
                        reply(ErrorCode::FileNotFound, "file not found")
                    }
                    OpenError::AccessViolation(_) | OpenError::LeavesRoot => {
                        let why = e.refusal().unwrap_or("access violation");
                        metrics::inc(&m.refused_access);
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
        metrics::inc(&m.sessions_started);
        if session.timeout_capped() {
            metrics::inc(&m.timeout_capped);
        }
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
mod tests;
