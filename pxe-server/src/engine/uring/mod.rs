//! io_uring engine: one ring per worker thread, sessions sharded by `SO_REUSEPORT`.
//!
//! Each worker owns a ring, one listening socket per listen address (the kernel spreads read
//! requests over the workers' sockets), and every session it starts. The loop is:
//!
//! 1. step every session that became ready: drain `poll_transmit` into `sendmsg` SQEs (a DATA
//!    packet is an iovec of its 4-byte header plus a slice of the shared image: no copy; a window
//!    to one peer goes out as one UDP GSO send when the kernel supports it);
//! 2. one `io_uring_enter` submits the whole batch and waits for a completion, at most until the
//!    earliest session deadline (and never more than 100 ms, so shutdown is seen promptly);
//! 3. handle the completions (requests on listeners, ACKs on session sockets, finished sends),
//!    then the expired timers, then (every [`REVOKED_SCAN`] while the service reports some)
//!    the sessions whose slot the service gave to a newer request.
//!
//! Memory the kernel reads or writes for an operation lives in places that never move and are
//! only reused after that operation's completion: the listener receive buffers (a boxed slice),
//! one boxed receive buffer per session (freed only after its receive completed), and the send
//! slot pool ([`slots`]). Completions name their target in `user_data`: an op kind, a slab index
//! and the slab entry's generation, so a completion can never be applied to a reused entry.
//!
//! Timers: a binary heap of `(deadline, index, generation)` with lazy deletion. A session has at
//! most one live heap entry in the common case: a new deadline is pushed only when it is earlier
//! than the one already queued; when a queued deadline pops and the session's real deadline has
//! moved later (an ACK came in), it is pushed again with the real deadline.
//!
//! The types are defined here; their code is split by concern: [`worker`] (set-up, the loop,
//! the listeners, quiesce), [`sessions`] (a session's receives, sends, timers and end),
//! [`ring`] (the ring and the `user_data` encoding), [`slab`] (sessions by index with
//! generations), [`slots`] (the send slot pool) and [`sys`] (receive buffers).

mod ring;
mod sessions;
mod slab;
mod slots;
mod sys;
#[cfg(test)]
mod tests;
mod worker;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use io_uring::{IoUring, Probe, opcode, types};

use self::slots::{CTRL_LEN, Owner, SendSlots};
use self::sys::{RECV_LEN, RecvBuf};
use super::{EngineError, EngineParams, Listeners, bind_transfer_socket};
use crate::metrics;
use crate::tftp::metrics::TftpMetrics;
use crate::tftp::service::{RequestOutcome, SessionPermit, TftpService};
use crate::tftp::session::{Outcome, Received, Session, SessionStats, Transmit};
use pxe_proto::tftp::{self as packet, ErrorCode};

/// Submission queue entries per ring.
const SQ_ENTRIES: u32 = 4096;
/// Completion queue entries: room for every send slot plus one receive per session (the kernel
/// also buffers overflowing completions, `IORING_FEAT_NODROP`).
const CQ_ENTRIES: u32 = 32768;
/// Send slots per worker (each is one `sendmsg`, up to 64 DATA packets with GSO).
const SEND_SLOTS: usize = 4096;
/// Receives kept in flight on each listening socket.
const LISTENER_DEPTH: usize = 8;
/// Longest wait in the kernel, so `shutdown` is noticed within this time.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// How long shutdown waits for in-flight operations before giving up on them.
const QUIESCE_LIMIT: Duration = Duration::from_secs(2);
/// Consecutive failed receives on a session socket before we stop re-arming it (the session
/// then ends by its own timeout).
const MAX_RECV_ERRORS: u8 = 16;
/// Consecutive failed receives on a listener before that receive slot is abandoned.
const MAX_LISTENER_ERRORS: u32 = 1000;
/// Receive buffers kept for reuse by later sessions.
const RECV_POOL_KEEP: usize = 1024;
/// How often a worker looks for sessions the service evicted while some are pending (and so
/// the longest an evicted session's socket stays open).
const REVOKED_SCAN: Duration = Duration::from_millis(20);

/// Checks that io_uring can be used here (not disabled by sysctl or seccomp), and why not.
pub fn probe() -> Result<(), String> {
    let mut ring = IoUring::new(8).map_err(|e| describe_setup_error(&e))?;
    let nop = opcode::Nop::new().build().user_data(1);
    // SAFETY: a NOP references no memory.
    unsafe { ring.submission().push(&nop) }
        .map_err(|_| "io_uring: submission queue full on a new ring".to_string())?;
    ring.submit_and_wait(1)
        .map_err(|e| format!("io_uring_enter failed: {e} (seccomp or a security policy?)"))?;
    let res = ring
        .completion()
        .next()
        .map(|c| c.result())
        .ok_or_else(|| "io_uring: the NOP did not complete".to_string())?;
    if res < 0 {
        return Err(format!(
            "io_uring NOP failed: {}",
            io::Error::from_raw_os_error(-res)
        ));
    }
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("io_uring opcode probe failed (kernel older than 5.6?): {e}"))?;
    let needed = [
        (opcode::Nop::CODE, "NOP"),
        (opcode::RecvMsg::CODE, "RECVMSG"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ];
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "io_uring lacks opcodes the engine needs: {}",
            missing.join(", ")
        ))
    }
}

/// Names the reason `io_uring_setup` failed, reading the sysctl for EPERM.
fn describe_setup_error(e: &io::Error) -> String {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .map(|s| s.trim().to_string());
    match e.raw_os_error() {
        Some(libc::EPERM) => match sysctl.as_deref() {
            Some("2") => "io_uring_setup: EPERM: io_uring is disabled by sysctl \
                          kernel.io_uring_disabled=2"
                .to_string(),
            Some("1") => "io_uring_setup: EPERM: kernel.io_uring_disabled=1 allows io_uring \
                          only to CAP_SYS_ADMIN and members of kernel.io_uring_group"
                .to_string(),
            other => format!(
                "io_uring_setup: EPERM (kernel.io_uring_disabled={}): blocked by a seccomp \
                 filter or a security module",
                other.unwrap_or("unreadable")
            ),
        },
        Some(libc::ENOSYS) => "io_uring_setup: ENOSYS: the kernel has no io_uring \
                               (CONFIG_IO_URING off) or a seccomp filter hides the syscall"
            .to_string(),
        _ => format!("io_uring_setup failed: {e}"),
    }
}

/// Binds the listeners ([`Listeners::bind`]) and runs `params.threads` workers on them until
/// `shutdown` is set (or one of them fails).
pub fn run(
    service: Arc<TftpService>,
    params: &EngineParams,
    shutdown: Arc<AtomicBool>,
) -> Result<(), EngineError> {
    let listeners = Listeners::bind(params)?;
    run_with(service, params, listeners, shutdown, Hooks::default())
}

/// Runs one worker per entry of `listeners` until `shutdown` is set (or one of them fails).
pub fn run_bound(
    service: Arc<TftpService>,
    params: &EngineParams,
    listeners: Listeners,
    shutdown: Arc<AtomicBool>,
) -> Result<(), EngineError> {
    run_with(service, params, listeners, shutdown, Hooks::default())
}

/// Knobs and counters for tests; production runs use the defaults.
#[derive(Debug, Clone, Default)]
struct Hooks {
    /// Set `SO_NO_CHECK` on transfer sockets: the kernel then refuses GSO sends with EINVAL,
    /// which exercises the fallback.
    no_check_tx: bool,
    /// GSO sends completed, and GSO sends that failed and were resent one by one.
    gso_sends: Arc<std::sync::atomic::AtomicU64>,
    gso_fallbacks: Arc<std::sync::atomic::AtomicU64>,
}

fn run_with(
    service: Arc<TftpService>,
    params: &EngineParams,
    listeners: Listeners,
    shutdown: Arc<AtomicBool>,
    hooks: Hooks,
) -> Result<(), EngineError> {
    let threads = listeners.per_worker.len();
    let gso = params.gso && pxe_net::udp_gso_supported();
    if params.gso && !gso {
        tracing::info!("UDP GSO not supported by the kernel: DATA packets are sent one by one");
    }
    let per_thread: Vec<Vec<Listener>> = listeners
        .per_worker
        .into_iter()
        .map(|socks| {
            socks
                .into_iter()
                .map(|(addr, sock)| Listener {
                    sock,
                    local: (!addr.ip().is_unspecified()).then_some(addr.ip()),
                    errors: 0,
                })
                .collect()
        })
        .collect();
    tracing::info!(threads, gso, listen = ?params.listen, "io_uring engine running");

    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::with_capacity(threads);
    let mut result: Result<(), EngineError> = Ok(());
    for (i, listeners) in per_thread.into_iter().enumerate() {
        let service = Arc::clone(&service);
        let shutdown = Arc::clone(&shutdown);
        let stop_all = Arc::clone(&stop);
        let hooks = hooks.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("tftp-uring-{i}"))
            .spawn(move || {
                let r = worker_main(service, listeners, gso, hooks, &shutdown, &stop_all);
                if r.is_err() {
                    stop_all.store(true, Ordering::Relaxed);
                }
                r
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                result = Err(e.into());
                break;
            }
        }
    }
    for h in handles {
        let r = match h.join() {
            Ok(r) => r,
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                Err(io::Error::other("io_uring worker thread panicked").into())
            }
        };
        if let Err(e) = r {
            tracing::error!(error = %e, "io_uring worker failed");
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}

fn worker_main(
    service: Arc<TftpService>,
    listeners: Vec<Listener>,
    gso: bool,
    hooks: Hooks,
    shutdown: &AtomicBool,
    stop: &AtomicBool,
) -> Result<(), EngineError> {
    let mut worker = Worker::new(service, listeners, gso, hooks)?;
    let result = worker.run(shutdown, stop);
    if worker.ring.inflight > 0 {
        // The kernel may still write into buffers the worker owns: never free them.
        tracing::error!(
            inflight = worker.ring.inflight,
            "io_uring operations still in flight at shutdown; leaking their buffers"
        );
        std::mem::forget(worker);
    }
    result
}

/// A listening socket of one worker.
struct Listener {
    sock: UdpSocket,
    /// The listen address when it is specific; `None` for a wildcard (then IP_PKTINFO tells).
    local: Option<IpAddr>,
    /// Consecutive receive errors.
    errors: u32,
}

/// One transfer owned by a worker.
struct Entry {
    session: Session,
    /// Released as soon as the session ends, even if its socket lingers for completions.
    permit: Option<SessionPermit>,
    sock: UdpSocket,
    rbuf: Box<RecvBuf>,
    recv_armed: bool,
    /// Send slots in flight from this socket.
    sends: u32,
    /// Ended: waiting for in-flight operations before the socket is closed.
    closing: bool,
    /// In the ready list.
    queued: bool,
    /// Deadline of this session's live timer-heap entry.
    timer_at: Option<Instant>,
    recv_errors: u8,
    /// GSO works for this socket (false after EMSGSIZE: segments larger than the path MTU).
    gso_ok: bool,
}

/// Generations are kept to 24 bits, the room they have in `user_data`.
const GEN_MASK: u32 = 0x00FF_FFFF;

struct SlabSlot {
    generation: u32,
    entry: Option<Entry>,
}

/// Sessions by index, with a free list; a slot's generation changes each time it is emptied.
#[derive(Default)]
struct Slab {
    slots: Vec<SlabSlot>,
    free: Vec<u32>,
}

/// What a completion belongs to, as encoded in `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    ListenerRecv(u32),
    SessionRecv { idx: u32, generation: u32 },
    Send(u32),
    Cancel,
}

const KIND_SHIFT: u32 = 56;
const K_LISTENER: u64 = 1;
const K_SESSION: u64 = 2;
const K_SEND: u64 = 3;
const K_CANCEL: u64 = 4;

/// The ring, the completions reaped but not yet handled, and the count of operations whose
/// completion has not been reaped.
struct Ring {
    ring: IoUring,
    backlog: Vec<(u64, i32)>,
    inflight: usize,
}

struct Worker {
    // Declared first so it is dropped first (it has nothing in flight by then anyway).
    ring: Ring,
    service: Arc<TftpService>,
    metrics: Arc<TftpMetrics>,
    listeners: Vec<Listener>,
    /// Listener receive buffers, `LISTENER_DEPTH` per listener. Never resized.
    lbufs: Box<[RecvBuf]>,
    larmed: Vec<bool>,
    sessions: Slab,
    /// Boxed on purpose: a buffer's address must not change while a receive uses it.
    #[allow(clippy::vec_box)]
    rbuf_pool: Vec<Box<RecvBuf>>,
    slots: SendSlots,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    ready: Vec<u32>,
    spare_cqes: Vec<(u64, i32)>,
    /// Buffer for control packets from sessions and replies from the service.
    scratch: Box<[u8; CTRL_LEN]>,
    /// ERROR 5 "Unknown transfer ID", the answer to a datagram from a wrong TID (built once).
    unknown_tid: [u8; 64],
    unknown_tid_len: usize,
    gso: bool,
    hooks: Hooks,
    quiescing: bool,
    last_bind_warning: Option<Instant>,
    /// When `end_revoked` may look again.
    next_revoked_scan: Instant,
    /// Scratch list of the sessions `end_revoked` ends.
    revoked: Vec<(u32, u32)>,
}
