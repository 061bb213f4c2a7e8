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
//!    then the expired timers.
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

mod slots;
mod sys;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use io_uring::{IoUring, Probe, opcode, squeue, types};

use self::slots::{CTRL_LEN, Owner, SendSlots};
use self::sys::{RECV_LEN, RecvBuf};
use super::{EngineError, EngineParams, bind_listener, bind_transfer_socket};
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

/// Runs `params.threads` workers until `shutdown` is set (or one of them fails).
pub fn run(
    service: Arc<TftpService>,
    params: &EngineParams,
    shutdown: Arc<AtomicBool>,
) -> Result<(), EngineError> {
    run_with(service, params, shutdown, Hooks::default())
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
    shutdown: Arc<AtomicBool>,
    hooks: Hooks,
) -> Result<(), EngineError> {
    let threads = params.threads.max(1);
    let gso = params.gso && pxe_net::udp_gso_supported();
    if params.gso && !gso {
        tracing::info!("UDP GSO not supported by the kernel: DATA packets are sent one by one");
    }

    // Bind every listener before starting threads, so a bad address fails `run` directly. With
    // port 0 the first socket picks the port and the other threads share it.
    let mut per_thread: Vec<Vec<Listener>> = (0..threads).map(|_| Vec::new()).collect();
    for &configured in &params.listen {
        let mut addr = configured;
        for listeners in per_thread.iter_mut() {
            let sock = bind_listener(addr)?;
            if addr.port() == 0
                && let Ok(bound) = sock.local_addr()
            {
                addr.set_port(bound.port());
            }
            let local = (!addr.ip().is_unspecified()).then_some(addr.ip());
            listeners.push(Listener {
                sock,
                local,
                errors: 0,
            });
        }
    }
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

impl Slab {
    fn insert(&mut self, entry: Entry) -> (u32, u32) {
        if let Some(idx) = self.free.pop() {
            let slot = &mut self.slots[idx as usize];
            slot.entry = Some(entry);
            (idx, slot.generation)
        } else {
            self.slots.push(SlabSlot {
                generation: 0,
                entry: Some(entry),
            });
            ((self.slots.len() - 1) as u32, 0)
        }
    }

    fn get(&mut self, idx: u32, generation: u32) -> Option<&mut Entry> {
        let slot = self.slots.get_mut(idx as usize)?;
        if slot.generation != generation & GEN_MASK {
            return None;
        }
        slot.entry.as_mut()
    }

    fn get_any(&mut self, idx: u32) -> Option<(u32, &mut Entry)> {
        let slot = self.slots.get_mut(idx as usize)?;
        let generation = slot.generation;
        slot.entry.as_mut().map(|e| (generation, e))
    }

    fn remove(&mut self, idx: u32) -> Option<Entry> {
        let slot = self.slots.get_mut(idx as usize)?;
        let entry = slot.entry.take()?;
        slot.generation = slot.generation.wrapping_add(1) & GEN_MASK;
        self.free.push(idx);
        Some(entry)
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (u32, u32, &mut Entry)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.entry.as_mut().map(|e| (i as u32, s.generation, e)))
    }
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

impl Op {
    fn encode(self) -> u64 {
        match self {
            Op::ListenerRecv(i) => (K_LISTENER << KIND_SHIFT) | u64::from(i),
            Op::SessionRecv { idx, generation } => {
                (K_SESSION << KIND_SHIFT)
                    | (u64::from(generation & GEN_MASK) << 32)
                    | u64::from(idx)
            }
            Op::Send(s) => (K_SEND << KIND_SHIFT) | u64::from(s),
            Op::Cancel => K_CANCEL << KIND_SHIFT,
        }
    }

    fn decode(ud: u64) -> Option<Op> {
        let low = ud as u32;
        match ud >> KIND_SHIFT {
            K_LISTENER => Some(Op::ListenerRecv(low)),
            K_SESSION => Some(Op::SessionRecv {
                idx: low,
                generation: ((ud >> 32) as u32) & GEN_MASK,
            }),
            K_SEND => Some(Op::Send(low)),
            K_CANCEL => Some(Op::Cancel),
            _ => None,
        }
    }
}

/// The ring, the completions reaped but not yet handled, and the count of operations whose
/// completion has not been reaped.
struct Ring {
    ring: IoUring,
    backlog: Vec<(u64, i32)>,
    inflight: usize,
}

impl Ring {
    fn new() -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_coop_taskrun()
            .setup_single_issuer()
            .build(SQ_ENTRIES)
            .or_else(|_| {
                IoUring::builder()
                    .setup_cqsize(CQ_ENTRIES)
                    .build(SQ_ENTRIES)
            })?;
        Ok(Ring {
            ring,
            backlog: Vec::with_capacity(CQ_ENTRIES as usize),
            inflight: 0,
        })
    }

    /// Queues an SQE; when the submission queue is full, submits what is queued and retries.
    /// Returns false if the kernel keeps refusing (the caller then undoes its bookkeeping).
    ///
    /// # Safety
    /// Every buffer `entry` references must stay valid and unmoved until its completion has
    /// been reaped.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> bool {
        for _ in 0..64 {
            // SAFETY: forwarded from this function's contract.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                self.inflight += 1;
                return true;
            }
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // CQ overflow: take completions off the ring (handled later) so the kernel
                    // accepts submissions again.
                    self.reap();
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "io_uring submit failed");
                    self.reap();
                }
            }
        }
        false
    }

    /// Moves the completions on the ring into `backlog`.
    fn reap(&mut self) {
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in cq {
            self.backlog.push((cqe.user_data(), cqe.result()));
        }
    }

    /// Submits everything queued and waits up to `wait` for one completion.
    fn submit_and_wait(&mut self, wait: Duration) -> io::Result<()> {
        let r = if wait.is_zero() {
            self.ring.submit()
        } else {
            let ts = types::Timespec::from(wait);
            let args = types::SubmitArgs::new().timespec(&ts);
            self.ring.submitter().submit_with_args(1, &args)
        };
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
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
}

impl Worker {
    fn new(
        service: Arc<TftpService>,
        listeners: Vec<Listener>,
        gso: bool,
        hooks: Hooks,
    ) -> Result<Worker, EngineError> {
        let ring = Ring::new()?;
        let n = listeners.len() * LISTENER_DEPTH;
        let lbufs = RecvBuf::boxed_slice(n);
        let mut unknown_tid = [0u8; 64];
        let unknown_tid_len = packet::emit_error(
            ErrorCode::UnknownTid,
            ErrorCode::UnknownTid.default_message(),
            &mut unknown_tid,
        );
        Ok(Worker {
            ring,
            metrics: Arc::clone(&service.metrics),
            service,
            listeners,
            lbufs,
            larmed: vec![false; n],
            sessions: Slab::default(),
            rbuf_pool: Vec::new(),
            slots: SendSlots::new(SEND_SLOTS),
            timers: BinaryHeap::new(),
            ready: Vec::new(),
            spare_cqes: Vec::with_capacity(CQ_ENTRIES as usize),
            scratch: Box::new([0; CTRL_LEN]),
            unknown_tid,
            unknown_tid_len,
            gso,
            hooks,
            quiescing: false,
            last_bind_warning: None,
        })
    }

    fn run(&mut self, shutdown: &AtomicBool, stop: &AtomicBool) -> Result<(), EngineError> {
        for i in 0..self.lbufs.len() {
            self.arm_listener(i);
        }
        let mut now = Instant::now();
        let mut result = Ok(());
        while !shutdown.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
            self.process_ready(now);
            let wait = self.wait_time(now);
            if let Err(e) = self.ring.submit_and_wait(wait) {
                result = Err(e.into());
                break;
            }
            now = Instant::now();
            self.handle_completions(now);
            self.fire_timers(now);
        }
        self.quiesce();
        result
    }

    /// How long the ring may sleep: not at all when work is pending, else until the earliest
    /// timer, capped so shutdown is noticed.
    fn wait_time(&self, now: Instant) -> Duration {
        if !self.ring.backlog.is_empty() || (!self.ready.is_empty() && self.slots.available() > 0) {
            return Duration::ZERO;
        }
        match self.timers.peek() {
            Some(Reverse((t, _, _))) => MAX_WAIT.min(t.saturating_duration_since(now)),
            None => MAX_WAIT,
        }
    }

    fn handle_completions(&mut self, now: Instant) {
        self.ring.reap();
        let mut batch = std::mem::take(&mut self.spare_cqes);
        std::mem::swap(&mut batch, &mut self.ring.backlog);
        for &(ud, res) in &batch {
            self.ring.inflight = self.ring.inflight.saturating_sub(1);
            match Op::decode(ud) {
                Some(Op::ListenerRecv(i)) => self.on_listener_recv(i as usize, res, now),
                Some(Op::SessionRecv { idx, generation }) => {
                    self.on_session_recv(idx, generation, res, now)
                }
                Some(Op::Send(s)) => self.on_send(s, res),
                Some(Op::Cancel) | None => {}
            }
        }
        batch.clear();
        self.spare_cqes = batch;
    }

    // ----- listeners -----

    fn arm_listener(&mut self, i: usize) {
        let fd = self.listeners[i / LISTENER_DEPTH].sock.as_raw_fd();
        let msg = self.lbufs[i].prepare();
        let sqe = opcode::RecvMsg::new(types::Fd(fd), msg)
            .build()
            .user_data(Op::ListenerRecv(i as u32).encode());
        // SAFETY: `lbufs` is a boxed slice allocated when the worker starts, never resized, and
        // freed only when no operation is in flight (quiesce, or leaked by worker_main); this
        // buffer is not touched again until its completion. The socket lives as long.
        self.larmed[i] = unsafe { self.ring.push(&sqe) };
        if !self.larmed[i] {
            tracing::error!("could not queue a receive on a TFTP listener");
        }
    }

    fn on_listener_recv(&mut self, i: usize, res: i32, now: Instant) {
        let Some(armed) = self.larmed.get_mut(i) else {
            return;
        };
        *armed = false;
        if self.quiescing {
            return;
        }
        let li = i / LISTENER_DEPTH;
        if res == -libc::EAGAIN || res == -libc::EINTR {
            // Several receives are armed per listener: when one datagram wakes them all, the
            // ones that lose the race find the queue empty. Nothing failed: arm again.
            self.arm_listener(i);
            return;
        }
        if res < 0 {
            let l = &mut self.listeners[li];
            l.errors += 1;
            if l.errors.is_power_of_two() {
                tracing::warn!(
                    error = %io::Error::from_raw_os_error(-res),
                    consecutive = l.errors,
                    "receive on a TFTP listener failed"
                );
            }
            if l.errors < MAX_LISTENER_ERRORS {
                self.arm_listener(i);
            }
            return;
        }
        self.listeners[li].errors = 0;
        let n = (res as usize).min(RECV_LEN);
        let rb = &self.lbufs[i];
        if let Some(peer) = rb.source() {
            if rb.truncated() {
                TftpMetrics::add(&self.metrics.requests_received, 1);
                TftpMetrics::add(&self.metrics.malformed, 1);
            } else {
                let local = self.listeners[li]
                    .local
                    .or_else(|| rb.pktinfo().map(|p| IpAddr::V4(p.local)))
                    .unwrap_or(match peer {
                        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    });
                let outcome =
                    self.service
                        .handle_request(now, peer, &rb.buf[..n], &mut self.scratch[..]);
                match outcome {
                    RequestOutcome::Start { session, permit } => {
                        self.start_session(session, permit, local)
                    }
                    RequestOutcome::Reply { len } => {
                        let fd = self.listeners[li].sock.as_raw_fd();
                        let bytes = &self.scratch[..len.min(CTRL_LEN)];
                        send_ctrl(
                            &mut self.ring,
                            &mut self.slots,
                            fd,
                            peer,
                            Owner::Listener,
                            bytes,
                        );
                    }
                    RequestOutcome::Drop => {}
                }
            }
        }
        self.arm_listener(i);
    }

    fn start_session(&mut self, session: Session, permit: SessionPermit, local: IpAddr) {
        let sock = match bind_transfer_socket(local) {
            Ok(s) => s,
            Err(e) => {
                TftpMetrics::add(&self.metrics.sessions_aborted, 1);
                let now = Instant::now();
                if self
                    .last_bind_warning
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
                {
                    self.last_bind_warning = Some(now);
                    tracing::warn!(error = %e, %local, "cannot open a transfer socket; request dropped");
                }
                return;
            }
        };
        if self.hooks.no_check_tx {
            let _ = pxe_net::set_no_check(&sock);
        }
        let rbuf = self.rbuf_pool.pop().unwrap_or_else(RecvBuf::boxed);
        let (idx, generation) = self.sessions.insert(Entry {
            session,
            permit: Some(permit),
            sock,
            rbuf,
            recv_armed: false,
            sends: 0,
            closing: false,
            queued: false,
            timer_at: None,
            recv_errors: 0,
            gso_ok: true,
        });
        self.arm_session_recv(idx, generation);
        self.mark_ready(idx);
    }

    // ----- sessions -----

    fn arm_session_recv(&mut self, idx: u32, generation: u32) {
        let Some(e) = self.sessions.get(idx, generation) else {
            return;
        };
        let msg = e.rbuf.prepare();
        let sqe = opcode::RecvMsg::new(types::Fd(e.sock.as_raw_fd()), msg)
            .build()
            .user_data(Op::SessionRecv { idx, generation }.encode());
        // SAFETY: `rbuf` is boxed (its address never changes) and owned by the entry together
        // with the socket; an entry leaves the slab only when `recv_armed` is false, i.e. after
        // this receive's completion was reaped (or, at shutdown, after quiesce saw no operation
        // in flight).
        e.recv_armed = unsafe { self.ring.push(&sqe) };
    }

    fn on_session_recv(&mut self, idx: u32, generation: u32, res: i32, now: Instant) {
        let Some(e) = self.sessions.get(idx, generation) else {
            return;
        };
        e.recv_armed = false;
        if e.closing || self.quiescing {
            self.maybe_remove(idx);
            return;
        }
        if res < 0 {
            e.recv_errors = e.recv_errors.saturating_add(1);
            if e.recv_errors < MAX_RECV_ERRORS {
                self.arm_session_recv(idx, generation);
            } else {
                tracing::warn!(
                    error = %io::Error::from_raw_os_error(-res),
                    peer = %e.session.peer(),
                    "receive on a transfer socket keeps failing; leaving the session to its timeout"
                );
            }
            return;
        }
        e.recv_errors = 0;
        let n = (res as usize).min(RECV_LEN);
        match e.rbuf.source() {
            Some(src) if !e.rbuf.truncated() => {
                match e.session.handle_datagram(now, src, &e.rbuf.buf[..n]) {
                    Received::ForeignTid => {
                        TftpMetrics::add(&self.metrics.unknown_tid, 1);
                        let fd = e.sock.as_raw_fd();
                        let owner = Owner::Session { idx, generation };
                        if send_ctrl(
                            &mut self.ring,
                            &mut self.slots,
                            fd,
                            src,
                            owner,
                            &self.unknown_tid[..self.unknown_tid_len],
                        ) {
                            e.sends += 1;
                        }
                    }
                    Received::Malformed => TftpMetrics::add(&self.metrics.malformed, 1),
                    Received::Progress | Received::Ignored => {}
                }
            }
            _ => TftpMetrics::add(&self.metrics.malformed, 1),
        }
        self.arm_session_recv(idx, generation);
        self.mark_ready(idx);
    }

    fn mark_ready(&mut self, idx: u32) {
        if let Some((_, e)) = self.sessions.get_any(idx)
            && !e.queued
            && !e.closing
        {
            e.queued = true;
            self.ready.push(idx);
        }
    }

    /// Steps every ready session; the ones that found no free send slot stay ready.
    fn process_ready(&mut self, now: Instant) {
        let mut list = std::mem::take(&mut self.ready);
        let mut done = 0;
        for &idx in &list {
            if !self.step_session(idx, now) {
                break;
            }
            done += 1;
        }
        list.drain(..done);
        list.append(&mut self.ready);
        self.ready = list;
    }

    /// Sends what the session has to send and re-arms its timer or ends it. False when the
    /// send slots ran out (the session keeps the rest for later).
    fn step_session(&mut self, idx: u32, now: Instant) -> bool {
        let Some((generation, e)) = self.sessions.get_any(idx) else {
            return true;
        };
        if e.closing {
            e.queued = false;
            return true;
        }
        let starved = drain_transmits(
            &mut self.ring,
            &mut self.slots,
            &mut self.scratch,
            self.gso && e.gso_ok,
            Owner::Session { idx, generation },
            e,
            now,
        );
        if starved {
            return false;
        }
        e.queued = false;
        if let Some(outcome) = e.session.outcome() {
            self.finish(idx, generation, outcome);
            return true;
        }
        if let Some(t) = e.session.poll_timeout()
            && e.timer_at.is_none_or(|queued| t < queued)
        {
            e.timer_at = Some(t);
            self.timers.push(Reverse((t, idx, generation)));
        }
        true
    }

    /// Counts a finished session, releases its permit, and closes its socket once nothing is
    /// in flight on it.
    fn finish(&mut self, idx: u32, generation: u32, outcome: Outcome) {
        let m = &self.metrics;
        let Some(e) = self.sessions.get(idx, generation) else {
            m.record_end(outcome, SessionStats::default());
            return;
        };
        m.record_end(outcome, e.session.stats());
        e.closing = true;
        e.permit = None;
        if e.recv_armed {
            let sqe = opcode::AsyncCancel::new(Op::SessionRecv { idx, generation }.encode())
                .build()
                .user_data(Op::Cancel.encode());
            // SAFETY: a cancel request references no memory.
            if !unsafe { self.ring.push(&sqe) } {
                tracing::warn!("could not queue the cancel of a finished session's receive");
            }
        }
        self.maybe_remove(idx);
    }

    fn maybe_remove(&mut self, idx: u32) {
        let Some((_, e)) = self.sessions.get_any(idx) else {
            return;
        };
        if !(e.closing && !e.recv_armed && e.sends == 0) {
            return;
        }
        if let Some(entry) = self.sessions.remove(idx)
            && self.rbuf_pool.len() < RECV_POOL_KEEP
        {
            self.rbuf_pool.push(entry.rbuf);
            // The socket closes here; nothing of the ring refers to it any more.
        }
    }

    fn on_send(&mut self, s: u32, res: i32) {
        let gso_failed = res < 0
            && self.slots.used_gso(s)
            && matches!(-res, libc::EIO | libc::EINVAL | libc::EMSGSIZE);
        if self.slots.used_gso(s) {
            self.hooks.gso_sends.fetch_add(1, Ordering::Relaxed);
        }
        if gso_failed {
            self.hooks.gso_fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        if gso_failed && -res == libc::EMSGSIZE {
            // Segments larger than this path's MTU: GSO cannot work for this session only.
            if let Owner::Session { idx, generation } = self.slots.owner(s)
                && let Some(e) = self.sessions.get(idx, generation)
            {
                e.gso_ok = false;
            }
        } else if gso_failed {
            if self.gso {
                self.gso = false;
                tracing::warn!(
                    error = %io::Error::from_raw_os_error(-res),
                    "UDP GSO send failed: GSO disabled for the rest of the run, resending \
                     the packets one by one"
                );
            }
        } else if res < 0 {
            TftpMetrics::add(&self.metrics.send_errors, 1);
        }
        if (gso_failed || self.slots.in_fallback(s))
            && !self.quiescing
            && let Some(sqe) = self.slots.next_fallback(s)
        {
            let sqe = sqe.user_data(Op::Send(s).encode());
            // SAFETY: the same slot and buffers as the original send (see `submit_slot`); the
            // slot stays allocated until this completion.
            if unsafe { self.ring.push(&sqe) } {
                return;
            }
        }
        if let Owner::Session { idx, generation } = self.slots.release(s) {
            if let Some(e) = self.sessions.get(idx, generation) {
                e.sends = e.sends.saturating_sub(1);
            }
            self.maybe_remove(idx);
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((t, idx, generation))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(e) = self.sessions.get(idx, generation) else {
                continue;
            };
            if e.closing || e.timer_at != Some(t) {
                continue;
            }
            e.timer_at = None;
            match e.session.poll_timeout() {
                Some(d) if d <= now => {
                    e.session.handle_timeout(now);
                    self.mark_ready(idx);
                }
                Some(d) => {
                    e.timer_at = Some(d);
                    self.timers.push(Reverse((d, idx, generation)));
                }
                None => {}
            }
        }
    }

    /// Stops accepting, cancels every receive and waits (bounded) until the kernel has nothing
    /// of ours in flight.
    fn quiesce(&mut self) {
        self.quiescing = true;
        for i in 0..self.larmed.len() {
            if self.larmed[i] {
                let sqe = opcode::AsyncCancel::new(Op::ListenerRecv(i as u32).encode())
                    .build()
                    .user_data(Op::Cancel.encode());
                // SAFETY: a cancel request references no memory.
                unsafe { self.ring.push(&sqe) };
            }
        }
        let mut cancels = Vec::new();
        for (idx, generation, e) in self.sessions.iter_mut() {
            if e.recv_armed {
                cancels.push(Op::SessionRecv { idx, generation }.encode());
            }
        }
        for target in cancels {
            let sqe = opcode::AsyncCancel::new(target)
                .build()
                .user_data(Op::Cancel.encode());
            // SAFETY: a cancel request references no memory.
            unsafe { self.ring.push(&sqe) };
        }
        let deadline = Instant::now() + QUIESCE_LIMIT;
        while self.ring.inflight > 0 && Instant::now() < deadline {
            let _ = self.ring.submit_and_wait(Duration::from_millis(20));
            self.handle_completions(Instant::now());
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Normal exits quiesce in `run` (and `worker_main` leaks a worker that still has
        // operations in flight), so this only acts when a worker unwinds from a panic.
        if self.ring.inflight > 0 {
            self.quiesce();
            if self.ring.inflight > 0 {
                tracing::error!(
                    inflight = self.ring.inflight,
                    "io_uring worker dropped with operations in flight; aborting rather than \
                     freeing buffers the kernel may still write"
                );
                std::process::abort();
            }
        }
    }
}

/// Queues a control packet (copied into a slot). True if it was queued.
fn send_ctrl(
    ring: &mut Ring,
    slots: &mut SendSlots,
    fd: RawFd,
    dst: SocketAddr,
    owner: Owner,
    bytes: &[u8],
) -> bool {
    let Some(s) = slots.alloc() else {
        return false;
    };
    slots.fill_ctrl(s, fd, dst, owner, bytes);
    submit_slot(ring, slots, s, false)
}

/// Builds a slot's `sendmsg` and queues it; frees the slot if it could not be queued.
fn submit_slot(ring: &mut Ring, slots: &mut SendSlots, s: u32, gso: bool) -> bool {
    let sqe = slots.build(s, gso).user_data(Op::Send(s).encode());
    // SAFETY: the msghdr, iovecs, address, control message and header bytes live in the slot
    // pool's boxed slice, which never moves and outlives every operation in flight (quiesce);
    // the slot is released only by the completion of this send. Payload iovecs point into the
    // image whose `Arc` the slot holds. The fd belongs to a listener (lives as long as the
    // worker) or to a session entry, which is not removed while `sends` counts this slot.
    if unsafe { ring.push(&sqe) } {
        true
    } else {
        slots.release(s);
        false
    }
}

/// Turns a session's pending transmits into sends. Returns true when it stopped because no
/// send slot was free (the session keeps its remaining transmits).
fn drain_transmits(
    ring: &mut Ring,
    slots: &mut SendSlots,
    scratch: &mut [u8; CTRL_LEN],
    gso: bool,
    owner: Owner,
    e: &mut Entry,
    now: Instant,
) -> bool {
    let fd = e.sock.as_raw_fd();
    let peer = e.session.peer();
    let mut open: Option<u32> = None;
    let flush = |ring: &mut Ring, slots: &mut SendSlots, e: &mut Entry, s: u32| {
        if submit_slot(ring, slots, s, gso) {
            e.sends += 1;
        }
    };
    let starved = loop {
        // One free slot must remain for whatever the next transmit turns out to be.
        if slots.available() == 0 {
            break true;
        }
        let Some(t) = e.session.poll_transmit(now, &mut scratch[..]) else {
            break false;
        };
        match t {
            Transmit::Control { len } => {
                if let Some(s) = open.take() {
                    flush(ring, slots, e, s);
                }
                if send_ctrl(ring, slots, fd, peer, owner, &scratch[..len.min(CTRL_LEN)]) {
                    e.sends += 1;
                }
            }
            Transmit::Data { header, payload } => {
                if e.session.payload().get(payload.clone()).is_none() {
                    tracing::error!("session produced a DATA range outside its payload");
                    continue;
                }
                let plen = payload.len();
                if let Some(s) = open {
                    if gso && slots.can_append(s, plen) {
                        if let Some(bytes) = e.session.payload().get(payload) {
                            // SAFETY: `bytes` is a slice of `session.payload()`, memory owned
                            // by `session.image()`, whose Arc this slot holds since
                            // `start_data`.
                            unsafe { slots.append(s, header, bytes) };
                        }
                        if slots.is_sealed(s) {
                            open = None;
                            flush(ring, slots, e, s);
                        }
                        continue;
                    }
                    open = None;
                    flush(ring, slots, e, s);
                }
                let Some(s) = slots.alloc() else {
                    // Not reachable (checked above); the session's retransmit would recover.
                    break true;
                };
                slots.start_data(s, fd, peer, owner, e.session.image());
                if let Some(bytes) = e.session.payload().get(payload) {
                    // SAFETY: as above, `bytes` lies in the image just given to `start_data`.
                    unsafe { slots.append(s, header, bytes) };
                }
                if gso && !slots.is_sealed(s) {
                    open = Some(s);
                } else {
                    flush(ring, slots, e, s);
                }
            }
        }
    };
    if let Some(s) = open {
        flush(ring, slots, e, s);
    }
    starved
}
