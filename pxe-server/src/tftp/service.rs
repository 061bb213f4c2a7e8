//! Turns a datagram on a listening socket into a new transfer, or an ERROR reply.
//!
//! Shared by all engine threads (`Arc<TftpService>`); it is the only
//! place that applies the session limits, so both engines refuse the same things.
//!
//! Order of checks for a request: parse (malformed requests get ERROR 4, or 8 for a bad
//! option; anything else unparseable is dropped), refuse writes (ERROR 2), take a session
//! permit (ending an unverified or finishing transfer to make room, see `Admission`; ERROR 0
//! "server busy" when `max_sessions` or `max_sessions_per_client` is reached and nothing can
//! give way;
//! checked before the file is opened so a flood costs no file I/O; a request from the address
//! and port of a running transfer is that client's retransmission, ignored: the transfer
//! answers it, and a second one would double the work exactly when the server is slow), then
//! open the image (ERROR 1 / 2 / 0). Nothing here allocates per datagram except what `ImageStore::open` and
//! the permit's per-client map need once per accepted request.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::images::{ImageStore, OpenError};
use crate::journey::{ErrorKind, Journeys, Now, Protocol, Transfer};
use crate::metrics::{self, LogLimiter};
use crate::tftp::metrics::TftpMetrics;
use crate::tftp::session::{Session, SessionConfig};
use pxe_proto::tftp::{self as packet, ErrorCode, Packet, ParseError, RequestKind};

/// File descriptors kept out of `max_sessions` for listeners, rings, the image store, logs.
pub const RESERVED_FDS: u64 = 256;

/// How far a transfer has got, as the admission ranks it when it must make room: an
/// unverified one is evicted first, a finishing one may be retired, a verified one is never
/// touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Phase {
    /// The peer has acknowledged nothing: the request may come from a spoofed address.
    Unverified,
    /// Acknowledged; blocks still to send.
    Verified,
    /// Acknowledged, and the last block is out: only the final ACK is awaited.
    Finishing,
}

impl Phase {
    fn of(session: &Session) -> Phase {
        if !session.acknowledged() {
            Phase::Unverified
        } else if session.last_block_sent() {
            Phase::Finishing
        } else {
            Phase::Verified
        }
    }
}

/// Shared by a permit and the admission: set when the admission takes the slot back; the
/// engine then ends the transfer.
#[derive(Debug, Default)]
struct Ticket {
    revoked: AtomicBool,
    /// The task awaiting [`SessionPermit::revoked`], if any.
    waker: Mutex<Option<Waker>>,
}

impl Ticket {
    fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
        if let Some(w) = lock(&self.waker).take() {
            w.wake();
        }
    }

    fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }
}

/// Holds one slot of `max_sessions` and of the client's `max_sessions_per_client`, and marks
/// the client's address and port as having a transfer; dropping it frees all three. The
/// admission may take the slot back for a newer request while the transfer is unverified or
/// finishing ([`SessionPermit::is_revoked`]); the engine then ends the transfer.
pub struct SessionPermit {
    admission: Arc<Admission>,
    seq: u64,
    /// The phase last reported to the admission.
    phase: Phase,
    ticket: Arc<Ticket>,
    /// The transfer as its host's journey and the duration histogram see it.
    journey: Option<Tracked>,
}

/// A transfer followed for the journeys: completed when the session completes, or, when it
/// ends otherwise, at the moment its last block went out after an ACK (a client that has
/// moved on to its next file, so that its transfer was retired, had its file).
struct Tracked {
    transfer: Transfer,
    finishing_at: Option<Instant>,
}

impl std::fmt::Debug for SessionPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPermit")
            .field("seq", &self.seq)
            .field("phase", &self.phase)
            .field("revoked", &self.is_revoked())
            .finish()
    }
}

impl SessionPermit {
    /// Tells the admission how far `session` has got (first ACK, last block out). Engines call
    /// it after every step; it takes the admission's lock only when the phase changed (at most
    /// twice per transfer).
    pub fn observe(&mut self, session: &Session) {
        let phase = Phase::of(session);
        if phase != self.phase {
            self.phase = phase;
            self.admission.set_phase(self.seq, phase);
            if let Some(t) = &mut self.journey
                && phase == Phase::Finishing
            {
                t.finishing_at.get_or_insert_with(Instant::now);
            }
        }
        if let Some(t) = &mut self.journey
            && !t.transfer.is_done()
            && session.outcome() == Some(crate::tftp::session::Outcome::Completed)
        {
            t.transfer.done(Instant::now());
        }
    }

    /// The admission gave this transfer's slot to a newer request: end the transfer
    /// ([`crate::tftp::session::Outcome::Evicted`]) without sending anything more.
    pub fn is_revoked(&self) -> bool {
        self.ticket.is_revoked()
    }

    /// Resolves once the permit is revoked (for engines that await their sessions).
    pub fn revoked(&self) -> Revoked<'_> {
        Revoked {
            ticket: &self.ticket,
        }
    }
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        if let Some(t) = &mut self.journey
            && let Some(at) = t.finishing_at
        {
            t.transfer.done(at);
        }
        self.admission.release(self.seq);
    }
}

/// The future of [`SessionPermit::revoked`].
#[derive(Debug)]
pub struct Revoked<'a> {
    ticket: &'a Ticket,
}

impl Future for Revoked<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.ticket.is_revoked() {
            return Poll::Ready(());
        }
        {
            let mut slot = lock(&self.ticket.waker);
            if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *slot = Some(cx.waker().clone());
            }
        }
        // `revoke` sets the flag before it takes the waker: a revocation that took no waker
        // is seen here.
        if self.ticket.is_revoked() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Why a request got no permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// `max_sessions` transfers, none of them unverified or finishing.
    ServerFull,
    /// The client's address has `max_sessions_per_client` transfers, none of them unverified
    /// or finishing.
    ClientFull,
    /// This address and port already has a transfer that is not finishing: the client's
    /// retransmitted request.
    Duplicate,
}

/// Which limit made an admission end an unverified transfer (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pressure {
    /// The client address had its share of unverified transfers.
    ClientShare,
    /// The unverified share of `max_sessions` was taken.
    Share,
    /// The client address had `max_sessions_per_client` transfers.
    ClientFull,
    /// `max_sessions` transfers were running.
    ServerFull,
}

/// The transfers one admission ended to make room.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Evictions {
    unverified: u32,
    finishing: u32,
    /// The last unverified transfer ended, and the limit that ended it.
    last_unverified: Option<(SocketAddr, Pressure)>,
}

/// One admitted transfer.
#[derive(Debug)]
struct Entry {
    peer: SocketAddr,
    phase: Phase,
    ticket: Arc<Ticket>,
}

/// Transfers per client address.
#[derive(Debug, Default, Clone, Copy)]
struct ClientCount {
    total: u32,
    unverified: u32,
}

/// Every admitted transfer, indexed by admission order, peer, client address and phase.
#[derive(Debug, Default)]
struct Table {
    next_seq: u64,
    entries: HashMap<u64, Entry>,
    by_peer: HashMap<SocketAddr, u64>,
    clients: HashMap<IpAddr, ClientCount>,
    /// (phase, admission order): the oldest transfer of a phase comes first.
    order: BTreeSet<(Phase, u64)>,
    /// The same per client address.
    client_order: BTreeSet<(IpAddr, Phase, u64)>,
    unverified: usize,
}

impl Table {
    /// The oldest transfer in `phase`.
    fn oldest(&self, phase: Phase) -> Option<u64> {
        self.order
            .range((phase, 0)..=(phase, u64::MAX))
            .next()
            .map(|&(_, seq)| seq)
    }

    /// The oldest transfer of `client` in `phase`.
    fn oldest_of(&self, client: IpAddr, phase: Phase) -> Option<u64> {
        self.client_order
            .range((client, phase, 0)..=(client, phase, u64::MAX))
            .next()
            .map(|&(_, _, seq)| seq)
    }

    fn client(&self, client: IpAddr) -> ClientCount {
        self.clients.get(&client).copied().unwrap_or_default()
    }

    fn insert(&mut self, peer: SocketAddr, ticket: Arc<Ticket>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let phase = Phase::Unverified;
        self.entries.insert(
            seq,
            Entry {
                peer,
                phase,
                ticket,
            },
        );
        self.by_peer.insert(peer, seq);
        let c = self.clients.entry(peer.ip()).or_default();
        c.total += 1;
        c.unverified += 1;
        self.unverified += 1;
        self.order.insert((phase, seq));
        self.client_order.insert((peer.ip(), phase, seq));
        seq
    }

    /// Removes `seq`; `None` if it is not (or no longer) admitted.
    fn remove(&mut self, seq: u64) -> Option<Entry> {
        let e = self.entries.remove(&seq)?;
        let ip = e.peer.ip();
        self.by_peer.remove(&e.peer);
        self.order.remove(&(e.phase, seq));
        self.client_order.remove(&(ip, e.phase, seq));
        let unverified = u32::from(e.phase == Phase::Unverified);
        self.unverified -= unverified as usize;
        if let Some(c) = self.clients.get_mut(&ip) {
            c.total -= 1;
            c.unverified -= unverified;
            if c.total == 0 {
                self.clients.remove(&ip);
            }
        }
        Some(e)
    }

    fn set_phase(&mut self, seq: u64, phase: Phase) {
        let Some(e) = self.entries.get_mut(&seq) else {
            return;
        };
        let (ip, old) = (e.peer.ip(), e.phase);
        if old == phase {
            return;
        }
        e.phase = phase;
        self.order.remove(&(old, seq));
        self.order.insert((phase, seq));
        self.client_order.remove(&(ip, old, seq));
        self.client_order.insert((ip, phase, seq));
        if old == Phase::Unverified {
            self.unverified -= 1;
            if let Some(c) = self.clients.get_mut(&ip) {
                c.unverified -= 1;
            }
        }
    }
}

/// The session table shared by every engine thread: the limits, and which transfer gives way
/// when a request finds them reached.
///
/// A request from address A, port P, in this order:
/// 1. A transfer from A:P that is finishing (last block out) is retired: the client has
///    moved on. Any other transfer from A:P makes the request a [`Refusal::Duplicate`].
/// 2. A at `max_sessions_per_client`: A's oldest finishing transfer is retired, else A's
///    oldest unverified one is evicted, else [`Refusal::ClientFull`].
/// 3. A at its unverified share (`unverified_share_per_client_percent` of
///    `max_sessions_per_client`): A's oldest unverified transfer is evicted.
/// 4. The unverified share of `max_sessions` (`unverified_share_percent`) taken: the oldest
///    unverified transfer is evicted.
/// 5. `max_sessions` reached: A's oldest finishing transfer is retired, else the oldest
///    finishing one of anyone (its client has every block but perhaps the last), else the
///    oldest unverified one is evicted, else [`Refusal::ServerFull`].
///
/// So a verified transfer still sending is never ended for a newer request, a request is
/// refused only when every slot it could take is held by one, and a refused request ends
/// nothing. The new transfer starts unverified.
#[derive(Debug)]
struct Admission {
    max_sessions: usize,
    max_per_client: u32,
    /// Unverified transfers in all at most.
    unverified_max: usize,
    /// Unverified transfers per client address at most.
    unverified_per_client: u32,
    /// Transfers admitted now (read without the lock).
    active: AtomicUsize,
    /// Revoked permits not yet dropped by their engine.
    revoked_pending: AtomicUsize,
    table: Mutex<Table>,
}

/// `peer` with an IPv4-mapped IPv6 address written as plain IPv4 (the same client).
fn canonical(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(peer.ip().to_canonical(), peer.port())
}

/// `percent`% of `n`, rounded up, in 1..=n (for n >= 1).
fn share(n: usize, percent: u8) -> usize {
    let percent = u128::from(percent.clamp(1, 100));
    let share = (n as u128 * percent).div_ceil(100);
    usize::try_from(share)
        .unwrap_or(usize::MAX)
        .clamp(1, n.max(1))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks leaves the value consistent before anything that could
    // panic: a poisoned value is usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Admission {
    fn new(limits: Limits) -> Admission {
        let max_sessions = limits.max_sessions.max(1);
        let max_per_client = limits.max_sessions_per_client.max(1);
        let per_client_share = share(max_per_client, limits.unverified_share_per_client_percent);
        Admission {
            max_sessions,
            max_per_client: u32::try_from(max_per_client).unwrap_or(u32::MAX),
            unverified_max: share(max_sessions, limits.unverified_share_percent),
            unverified_per_client: u32::try_from(per_client_share).unwrap_or(u32::MAX),
            active: AtomicUsize::new(0),
            revoked_pending: AtomicUsize::new(0),
            table: Mutex::new(Table::default()),
        }
    }

    fn acquire(self: &Arc<Self>, peer: SocketAddr) -> Result<(SessionPermit, Evictions), Refusal> {
        let peer = canonical(peer);
        let ip = peer.ip();
        let mut t = self.lock();
        let mut ev = Evictions::default();
        if let Some(&seq) = t.by_peer.get(&peer) {
            if t.entries.get(&seq).map(|e| e.phase) != Some(Phase::Finishing) {
                return Err(Refusal::Duplicate);
            }
            self.evict(&mut t, seq, &mut ev, Pressure::ClientFull);
        }
        if t.client(ip).total >= self.max_per_client {
            let victim = t
                .oldest_of(ip, Phase::Finishing)
                .or_else(|| t.oldest_of(ip, Phase::Unverified))
                .ok_or(Refusal::ClientFull)?;
            self.evict(&mut t, victim, &mut ev, Pressure::ClientFull);
        }
        if t.client(ip).unverified >= self.unverified_per_client
            && let Some(victim) = t.oldest_of(ip, Phase::Unverified)
        {
            self.evict(&mut t, victim, &mut ev, Pressure::ClientShare);
        }
        if t.unverified >= self.unverified_max
            && let Some(victim) = t.oldest(Phase::Unverified)
        {
            self.evict(&mut t, victim, &mut ev, Pressure::Share);
        }
        if t.entries.len() >= self.max_sessions {
            let victim = t
                .oldest_of(ip, Phase::Finishing)
                .or_else(|| t.oldest(Phase::Finishing))
                .or_else(|| t.oldest(Phase::Unverified))
                .ok_or(Refusal::ServerFull)?;
            self.evict(&mut t, victim, &mut ev, Pressure::ServerFull);
        }
        let ticket = Arc::new(Ticket::default());
        let seq = t.insert(peer, Arc::clone(&ticket));
        self.active.store(t.entries.len(), Ordering::Release);
        drop(t);
        let permit = SessionPermit {
            admission: Arc::clone(self),
            seq,
            phase: Phase::Unverified,
            ticket,
            journey: None,
        };
        Ok((permit, ev))
    }

    /// Ends `seq` to make room: its slot is free now, its engine ends it at its next look.
    fn evict(&self, t: &mut Table, seq: u64, ev: &mut Evictions, why: Pressure) {
        let Some(e) = t.remove(seq) else {
            return;
        };
        self.active.store(t.entries.len(), Ordering::Release);
        self.revoked_pending.fetch_add(1, Ordering::AcqRel);
        e.ticket.revoke();
        if e.phase == Phase::Unverified {
            ev.unverified += 1;
            ev.last_unverified = Some((e.peer, why));
        } else {
            ev.finishing += 1;
        }
    }

    fn set_phase(&self, seq: u64, phase: Phase) {
        self.lock().set_phase(seq, phase);
    }

    /// A permit was dropped: frees its slot, or, if it was evicted, its revocation.
    fn release(&self, seq: u64) {
        let mut t = self.lock();
        if t.remove(seq).is_some() {
            self.active.store(t.entries.len(), Ordering::Release);
        } else {
            self.revoked_pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
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
    /// One "unverified transfer evicted" warning per [`REFUSAL_LOG_INTERVAL`].
    eviction_log: LogLimiter,
    /// Where transfers and the errors sent are recorded.
    journeys: Option<Arc<Journeys>>,
}

/// How often a refusal under load may be logged (every refusal is counted).
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The admission limits of a [`TftpService`] (from `[tftp]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Transfers in all.
    pub max_sessions: usize,
    /// Transfers per client address.
    pub max_sessions_per_client: usize,
    /// The share (1..=100 %) of `max_sessions` that unverified transfers may hold.
    pub unverified_share_percent: u8,
    /// The share (1..=100 %) of `max_sessions_per_client` that they may hold.
    pub unverified_share_per_client_percent: u8,
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
        let limits = Limits {
            max_sessions: clamp_to_fd_limit(settings.max_sessions, raise_nofile_limit()),
            max_sessions_per_client: settings.max_sessions_per_client,
            unverified_share_percent: settings.unverified_share_percent,
            unverified_share_per_client_percent: settings.unverified_share_per_client_percent,
        };
        Ok(TftpService::from_parts(
            settings.session,
            images,
            metrics,
            limits,
        ))
    }

    /// A service with exactly these limits (no rlimit check): for tests and simulators.
    pub fn from_parts(
        session_config: SessionConfig,
        images: ImageStore,
        metrics: Arc<TftpMetrics>,
        limits: Limits,
    ) -> TftpService {
        TftpService {
            session_config,
            images,
            metrics,
            admission: Arc::new(Admission::new(limits)),
            refusal_log: LogLimiter::new(REFUSAL_LOG_INTERVAL),
            eviction_log: LogLimiter::new(REFUSAL_LOG_INTERVAL),
            journeys: None,
        }
    }

    /// Records every transfer (start, completion, duration) and every ERROR sent in
    /// `journeys`.
    pub fn with_journeys(mut self, journeys: Arc<Journeys>) -> TftpService {
        self.journeys = Some(journeys);
        self
    }

    /// The journeys this service records in, if any.
    pub fn journeys(&self) -> Option<&Arc<Journeys>> {
        self.journeys.as_ref()
    }

    /// An ERROR (or a refusal) sent to `peer` about `file`, for its journey.
    fn journey_error(&self, peer: SocketAddr, kind: ErrorKind, code: ErrorCode, file: &[u8]) {
        if let Some(j) = &self.journeys {
            let file = std::str::from_utf8(file).unwrap_or("(not UTF-8)");
            j.error_to(Now::current(), peer.ip(), kind, code as u16, file);
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

    /// The rate-limited warning for an unverified transfer ended to admit a newer request:
    /// whose, for whom, which limit, and the setting to raise.
    fn warn_evicted(&self, victim: SocketAddr, why: Pressure, peer: SocketAddr) {
        let Some(held_back) = self.eviction_log.allow() else {
            return;
        };
        let a = &self.admission;
        let (limit, value, setting) = match why {
            Pressure::ClientShare => (
                "the client's unverified share",
                a.unverified_per_client as usize,
                "[tftp] max_sessions_per_client or unverified_share_per_client_percent",
            ),
            Pressure::ClientFull => (
                "max_sessions_per_client",
                a.max_per_client as usize,
                "[tftp] max_sessions_per_client",
            ),
            Pressure::Share => (
                "the unverified share of max_sessions",
                a.unverified_max,
                "[tftp] max_sessions or unverified_share_percent",
            ),
            Pressure::ServerFull => ("max_sessions", a.max_sessions, "[tftp] max_sessions"),
        };
        tracing::warn!(
            evicted = %victim,
            client = %peer.ip(),
            limit,
            value,
            evictions_not_logged = held_back,
            "TFTP transfer evicted before its first ACK to admit a newer request: many \
             unacknowledged requests (a flood from spoofed addresses looks like this); if \
             real clients are evicted, raise {setting}"
        );
    }

    /// The effective global session limit (after the rlimit clamp).
    pub fn max_sessions(&self) -> usize {
        self.admission.max_sessions
    }

    /// Transfers holding a permit right now.
    pub fn active_sessions(&self) -> usize {
        self.admission.active.load(Ordering::Acquire)
    }

    /// Permits revoked (evicted transfers) whose engine has not dropped them yet. While this
    /// is not 0, engines look for revoked permits among their sessions.
    pub fn revoked_pending(&self) -> usize {
        self.admission.revoked_pending.load(Ordering::Acquire)
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
            Ok((permit, evictions)) => {
                self.count_evictions(evictions, peer);
                permit
            }
            Err(refusal @ (Refusal::ServerFull | Refusal::ClientFull)) => {
                metrics::inc(&m.refused_limit);
                self.warn_refused(refusal, peer);
                let setting: &[u8] = match refusal {
                    Refusal::ClientFull => b"tftp.max_sessions_per_client",
                    _ => b"tftp.max_sessions",
                };
                self.journey_error(peer, ErrorKind::Refused, ErrorCode::NotDefined, setting);
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
                let code = match e {
                    OpenError::NotFound => ErrorCode::FileNotFound,
                    OpenError::AccessViolation(_) | OpenError::LeavesRoot => {
                        ErrorCode::AccessViolation
                    }
                    OpenError::Io(_) => ErrorCode::NotDefined,
                };
                self.journey_error(peer, ErrorKind::TftpError, code, request.filename);
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
                        tracing::warn!(%peer, file = %name, error = %e, setting = "tftp.root", "cannot read image");
                        reply(ErrorCode::NotDefined, "I/O error")
                    }
                };
            }
        };
        let session = Session::new(peer, &request, image, &self.session_config, now);
        let mut permit = permit;
        if let Some(j) = &self.journeys {
            let name = std::str::from_utf8(request.filename).unwrap_or("");
            let at = Now {
                mono: now,
                unix_ms: crate::journey::unix_ms(std::time::SystemTime::now()),
            };
            permit.journey = Some(Tracked {
                transfer: Transfer::start(j, at, Protocol::Tftp, peer.ip(), name),
                finishing_at: None,
            });
        }
        metrics::inc(&m.sessions_started);
        if session.timeout_capped() {
            metrics::inc(&m.timeout_capped);
        }
        RequestOutcome::Start { session, permit }
    }
}

impl TftpService {
    fn count_evictions(&self, ev: Evictions, peer: SocketAddr) {
        let m = &self.metrics;
        metrics::add(&m.evicted_unverified, u64::from(ev.unverified));
        metrics::add(&m.evicted_finished, u64::from(ev.finishing));
        if let Some((victim, why)) = ev.last_unverified {
            self.warn_evicted(victim, why, peer);
        }
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
