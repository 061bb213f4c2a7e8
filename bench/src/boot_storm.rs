//! `pxe-bench boot`: thousands of simulated machines network-booting at once (DHCP, then TFTP
//! of the boot file, the kernel and the initrd, or the kernel and initrd over HTTP), from one
//! thread.
//!
//! I/O design: one epoll loop over every socket, one timer heap, no thread or task per client.
//! DHCP from all clients shares one socket on port 68 (plus one for ProxyDHCP's port 4011),
//! sent with `sendmmsg` and received with `recvmmsg`, demultiplexed by chaddr (a client's xid
//! changes when a NAK restarts it; the client checks the xid itself). Each TFTP transfer
//! gets a socket of its own (a real client's TID: servers key transfers by address and port),
//! bound to the client's source address, opened when the transfer starts and closed when it
//! ends; a readable one is drained with `recvmmsg`. TFTP sockets receive with UDP GRO (unless
//! `gro` is off): a window the server sent as one GSO burst stays one receive, split back into
//! its datagrams here, so a windowed transfer costs the simulator one receive per window rather
//! than one per block. With `--http-base`, each client has one non-blocking TCP connection
//! (same source address, same epoll set) for its kernel and initrd; reads from every connection
//! go into one shared buffer and are handed to the client's parser as they come. The
//! per-client logic is the sans-IO [`BootClient`]; this file only moves bytes, keeps time and
//! counts.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::io::{self, IsTerminal, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use pxe_proto::consts::PXE_PORT;
use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::boot_client::{BootClient, BootPlan, Step, Transmit};
use crate::dhcp_client::{Dest, Verdict};
use crate::dhcp_storm::{ArchCount, Arrival, DhcpParams, Latency};
use crate::http_client::HttpFailure;
use crate::mmsg::{self, ErrorCounts, RecvBatch, SendBatch};

#[derive(Debug, Clone)]
pub struct BootParams {
    /// The clients, their DHCP and the run's deadline (the DHCP server is `dhcp.server`).
    pub dhcp: DhcpParams,
    pub plan: BootPlan,
    pub verify_dir: Option<PathBuf>,
    /// TFTP source addresses, client i uses `sources[i % len]`; empty: the wildcard.
    pub sources: Vec<Ipv4Addr>,
    pub progress: bool,
    /// TFTP sockets receive with UDP GRO: a window the server sent with GSO is one receive.
    pub gro: bool,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Retransmits {
    pub dhcp: u64,
    pub tftp: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Phases {
    pub dhcp: Latency,
    pub boot_file: Latency,
    pub kernel: Latency,
    pub initrd: Latency,
    pub total: Latency,
}

/// The HTTP side of a run (all zero without `--http-base`).
#[derive(Debug, Clone, Serialize, Default)]
pub struct HttpStats {
    /// TCP connections opened (one per client, more if a server closes them).
    pub connections: u64,
    /// GET requests started.
    pub requests: u64,
    /// Most connections open at once.
    pub max_open: usize,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Packets {
    pub dhcp_sent: u64,
    pub dhcp_received: u64,
    pub tftp_sent: u64,
    pub tftp_received: u64,
    /// Messages the TFTP sockets received: with GRO one message may carry a whole window, so
    /// `tftp_received / tftp_receives` is the datagrams per receive.
    pub tftp_receives: u64,
}

/// Data behind the HTML report's charts (not in the JSON).
#[derive(Debug, Clone, Default)]
pub struct Curves {
    /// Seconds from the start at which each successful client finished, sorted.
    pub completions: Vec<f64>,
    /// Seconds at which each failed client failed, sorted.
    pub failures: Vec<f64>,
    /// Per phase (and "total"): (quantile, µs) points.
    pub quantiles: Vec<(&'static str, Vec<(f64, u64)>)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BootReport {
    pub clients: usize,
    pub ok: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub retransmits: Retransmits,
    pub phases: Phases,
    /// From the start until the last successful client finished.
    pub last_finished_s: f64,
    pub wall_s: f64,
    /// How each phase of this run is fetched ("dhcp", "tftp" or "http"), phases it skips left
    /// out.
    pub transports: BTreeMap<&'static str, &'static str>,
    /// File bytes received: TFTP payload and HTTP bodies (all clients, failed ones included).
    pub bytes: u64,
    /// `bytes` over the wall time, in Mbit/s.
    pub goodput_mbit_s: f64,
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
    /// Simulator CPU time over wall time (100 = one core busy).
    pub cpu_percent: f64,
    pub mode: &'static str,
    pub skip_dhcp: bool,
    pub arrival: String,
    pub per_arch: BTreeMap<&'static str, ArchCount>,
    pub packets: Packets,
    pub send_errors: ErrorCounts,
    pub recv_errors: ErrorCounts,
    /// DHCP NAKs the clients obeyed (each restarts the client at DISCOVER after a back-off).
    pub dhcp_naks: u64,
    /// Fresh DISCOVERs after a NAK.
    pub dhcp_restarts: u64,
    /// DHCP replies whose chaddr is no client's.
    pub dhcp_replies_unknown_client: u64,
    pub dhcp_replies_ignored: u64,
    pub dhcp_replies_malformed: u64,
    /// Datagrams on a TFTP socket from a host other than the TFTP server.
    pub tftp_stray: u64,
    /// Most TFTP sockets open at once.
    pub max_open_sockets: usize,
    pub http: HttpStats,
    pub fd_limit: u64,
    /// The TFTP sockets received with UDP GRO.
    pub gro: bool,
    #[serde(skip)]
    pub curves: Curves,
}

/// Raises the soft RLIMIT_NOFILE to the hard one; returns the new soft limit.
pub fn raise_nofile() -> io::Result<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the live struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if r.rlim_cur < r.rlim_max {
        let want = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: setrlimit reads the live struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            r.rlim_cur = r.rlim_max;
        }
    }
    Ok(r.rlim_cur)
}

/// A level-triggered epoll instance.
struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    fn new(capacity: usize) -> io::Result<Epoll> {
        // SAFETY: epoll_create1 has no memory preconditions.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            // SAFETY: `fd` is a new descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity],
        })
    }

    fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, libc::EPOLLIN as u32)
    }

    /// Adds (`EPOLL_CTL_ADD`) or changes (`EPOLL_CTL_MOD`) what `fd` is watched for.
    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: both descriptors are open; `ev` is a live epoll_event.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Waits up to `timeout` (rounded up to whole milliseconds); returns the ready tokens'
    /// count (read them with [`token`](Self::token)).
    fn wait(&mut self, timeout: Duration) -> usize {
        let ms = timeout.as_micros().div_ceil(1000).min(60_000) as libc::c_int;
        // SAFETY: `events` holds `len` writable epoll_events.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                ms,
            )
        };
        n.max(0) as usize
    }

    fn token(&self, k: usize) -> u64 {
        self.events[k].u64
    }

    fn events(&self, k: usize) -> u32 {
        self.events[k].events
    }
}

const TOKEN_DHCP: u64 = u64::MAX;
const TOKEN_PROXY: u64 = u64::MAX - 1;
/// Marks client i's HTTP connection (token `TOKEN_HTTP | i`; TFTP sockets are token i).
const TOKEN_HTTP: u64 = 1 << 40;
/// Bytes of one read from an HTTP connection (the buffer all connections share).
const HTTP_READ: usize = 256 * 1024;

/// What a failed socket call means for an HTTP fetch.
fn http_io_failure(e: &io::Error) -> HttpFailure {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => HttpFailure::Refused,
        Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED) => HttpFailure::Reset,
        Some(libc::ETIMEDOUT) => HttpFailure::Timeout,
        Some(n) => HttpFailure::Io(mmsg::errno_name(n)),
        None => HttpFailure::Io(e.kind().to_string()),
    }
}

/// Where a client stands, for the progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Waiting,
    In(Step),
    Done,
    Failed,
}

impl Stage {
    fn index(self) -> usize {
        match self {
            Stage::Waiting => 0,
            Stage::In(s) => 1 + s.index(),
            Stage::Done => 5,
            Stage::Failed => 6,
        }
    }

    fn of(c: &BootClient) -> Stage {
        if c.is_done() {
            Stage::Done
        } else if c.is_finished() {
            Stage::Failed
        } else {
            Stage::In(c.step())
        }
    }
}

/// Expected file contents by name, read once from the verify directory.
struct Files {
    dir: Option<PathBuf>,
    cache: HashMap<String, Option<Arc<[u8]>>>,
}

impl Files {
    /// `Ok(None)`: not verifying. `Err`: the file is not in the verify directory.
    fn get(&mut self, name: &str) -> Result<Option<Arc<[u8]>>, ()> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        if let Some(v) = self.cache.get(name) {
            return v.clone().map(Some).ok_or(());
        }
        let rel = Path::new(name.trim_start_matches('/'));
        let safe = rel.components().all(|c| matches!(c, Component::Normal(_)));
        let v = safe
            .then(|| std::fs::read(dir.join(rel)).ok())
            .flatten()
            .map(Arc::<[u8]>::from);
        self.cache.insert(name.to_owned(), v.clone());
        v.map(Some).ok_or(())
    }
}

struct Tally {
    hists: [Histogram<u64>; 5],
    ok: u64,
    failures: BTreeMap<String, u64>,
    per_arch: BTreeMap<&'static str, ArchCount>,
    completions: Vec<f64>,
    failure_times: Vec<f64>,
    last_finished: Duration,
    dhcp_naks: u64,
    dhcp_restarts: u64,
}

/// The loop's state (everything but the receive buffers).
struct Sim {
    start: Instant,
    clients: Vec<Option<BootClient>>,
    stage: Vec<Stage>,
    stage_counts: [usize; 7],
    socks: Vec<Option<Socket>>,
    open_socks: usize,
    max_open: usize,
    /// Per client: its HTTP connection, and whether epoll watches it for writability.
    tcp: Vec<Option<(Socket, bool)>>,
    open_tcp: usize,
    http: HttpStats,
    /// Where every HTTP read lands.
    http_buf: Box<[u8]>,
    armed: Vec<Option<Instant>>,
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    dhcp_fd: RawFd,
    proxy_fd: Option<RawFd>,
    dhcp_server: SocketAddrV4,
    out: SendBatch,
    out_proxy: SendBatch,
    buf: Vec<u8>,
    files: Files,
    sources: Vec<Ipv4Addr>,
    interface: Option<String>,
    epoll: Epoll,
    finished: usize,
    recorded: Vec<bool>,
    tally: Tally,
    packets: Packets,
    send_errors: ErrorCounts,
    recv_errors: ErrorCounts,
    bytes: u64,
    retransmits: Retransmits,
    /// Per client: (bytes, DHCP retransmits, TFTP retransmits) already added to the totals.
    counted: Vec<(u64, u64, u64)>,
    unknown_client: u64,
    stray: u64,
    gro: bool,
}

impl Sim {
    fn set_stage(&mut self, i: usize, s: Stage) {
        let old = self.stage[i];
        if old != s {
            self.stage_counts[old.index()] -= 1;
            self.stage_counts[s.index()] += 1;
            self.stage[i] = s;
        }
    }

    /// A fresh socket for client `i`'s next transfer, watched by epoll.
    fn open_socket(&mut self, i: usize) -> io::Result<()> {
        let s = Socket::new(
            Domain::IPV4,
            Type::DGRAM.nonblocking().cloexec(),
            Some(Protocol::UDP),
        )?;
        if let Some(dev) = &self.interface {
            s.bind_device(Some(dev.as_bytes()))?;
        }
        let src = match self.sources.len() {
            0 => Ipv4Addr::UNSPECIFIED,
            n => self.sources[i % n],
        };
        s.bind(&SocketAddrV4::new(src, 0).into())?;
        if self.gro {
            mmsg::enable_gro(s.as_raw_fd())?;
        }
        self.epoll.add(s.as_raw_fd(), i as u64)?;
        if self.socks[i].replace(s).is_none() {
            self.open_socks += 1;
            self.max_open = self.max_open.max(self.open_socks);
        }
        Ok(())
    }

    fn close_socket(&mut self, i: usize) {
        // Closing the only descriptor also removes it from the epoll set.
        if self.socks[i].take().is_some() {
            self.open_socks -= 1;
        }
    }

    /// Client `i`'s HTTP connection to `to`: a non-blocking connect from its source address,
    /// watched for writability (the connect's end) and readability.
    fn open_tcp(&mut self, i: usize, to: SocketAddrV4) -> io::Result<()> {
        let s = Socket::new(
            Domain::IPV4,
            Type::STREAM.nonblocking().cloexec(),
            Some(Protocol::TCP),
        )?;
        if let Some(dev) = &self.interface {
            s.bind_device(Some(dev.as_bytes()))?;
        }
        if !self.sources.is_empty() {
            let src = self.sources[i % self.sources.len()];
            s.bind(&SocketAddrV4::new(src, 0).into())?;
        }
        s.set_nodelay(true)?;
        match s.connect(&SockAddr::from(to)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let events = (libc::EPOLLIN | libc::EPOLLOUT) as u32;
        self.epoll.ctl(
            libc::EPOLL_CTL_ADD,
            s.as_raw_fd(),
            TOKEN_HTTP | i as u64,
            events,
        )?;
        if self.tcp[i].replace((s, true)).is_none() {
            self.open_tcp += 1;
            self.http.max_open = self.http.max_open.max(self.open_tcp);
        }
        self.http.connections += 1;
        Ok(())
    }

    fn close_tcp(&mut self, i: usize) {
        if self.tcp[i].take().is_some() {
            self.open_tcp -= 1;
        }
    }

    /// Client `i`'s HTTP side after any event: close the connection it no longer wants, open
    /// the one it asks for, write its pending request, watch for writability only while
    /// something waits to be written.
    fn drive_http(&mut self, i: usize, c: &mut BootClient, now: Instant) {
        if !c.http_wants_socket() {
            self.close_tcp(i);
        }
        if let Some(to) = c.poll_http_connect() {
            self.close_tcp(i);
            if let Err(e) = self.open_tcp(i, to) {
                c.handle_http_error(now, http_io_failure(&e));
                self.close_tcp(i);
                return;
            }
        }
        if c.http_connecting() {
            return;
        }
        let Some((s, out_armed)) = &mut self.tcp[i] else {
            return;
        };
        while !c.http_output().is_empty() {
            match s.send_with_flags(c.http_output(), libc::MSG_NOSIGNAL) {
                Ok(n) => c.http_wrote(now, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    c.handle_http_error(now, http_io_failure(&e));
                    self.close_tcp(i);
                    return;
                }
            }
        }
        let want_out = !c.http_output().is_empty();
        if *out_armed != want_out {
            let mut events = libc::EPOLLIN as u32;
            if want_out {
                events |= libc::EPOLLOUT as u32;
            }
            let fd = s.as_raw_fd();
            *out_armed = want_out;
            if let Err(e) = self
                .epoll
                .ctl(libc::EPOLL_CTL_MOD, fd, TOKEN_HTTP | i as u64, events)
            {
                c.handle_http_error(now, http_io_failure(&e));
                self.close_tcp(i);
            }
        }
    }

    /// epoll reported client `i`'s HTTP connection (`ev`: its event bits): the connect's end,
    /// or bytes (or the end, or an error) to read.
    fn http_event(&mut self, i: usize, ev: u32) {
        let Some(mut c) = self.clients[i].take() else {
            return;
        };
        let now = Instant::now();
        if let Some((s, _)) = &self.tcp[i] {
            let err_hup = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
            if c.http_connecting() {
                if ev & (libc::EPOLLOUT as u32 | err_hup) != 0 {
                    match s.take_error() {
                        Ok(Some(e)) | Err(e) => c.handle_http_error(now, http_io_failure(&e)),
                        // An event left over from an earlier socket of this client cannot
                        // pass for this one's connect.
                        Ok(None) if s.peer_addr().is_ok() => c.handle_http_connected(now),
                        Ok(None) => {}
                    }
                }
            } else if ev & (libc::EPOLLIN as u32 | err_hup) != 0 {
                // Bounded per event: epoll is level-triggered and reports the rest later.
                for _ in 0..16 {
                    match (&*s).read(&mut self.http_buf) {
                        Ok(0) => {
                            c.handle_http_eof(now);
                            break;
                        }
                        Ok(n) => {
                            c.handle_http_data(now, &self.http_buf[..n]);
                            if n < self.http_buf.len() || !c.http_wants_socket() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            c.handle_http_error(now, http_io_failure(&e));
                            break;
                        }
                    }
                }
            }
        }
        self.clients[i] = Some(c);
        self.drive(i, now);
    }

    fn flush_dhcp(&mut self) {
        self.packets.dhcp_sent += self.out.flush(self.dhcp_fd, &mut self.send_errors);
        if let Some(pfd) = self.proxy_fd {
            self.packets.dhcp_sent += self.out_proxy.flush(pfd, &mut self.send_errors);
        }
    }

    /// After any event of client `i`: send what it has, start its next transfer, re-arm its
    /// timer, count it if it finished.
    fn drive(&mut self, i: usize, now: Instant) {
        let Some(mut c) = self.clients[i].take() else {
            return;
        };
        loop {
            while let Some(t) = c.poll_transmit(now, &mut self.buf) {
                match t {
                    Transmit::Dhcp(Dest::Server) => {
                        if self.out.is_full() {
                            self.flush_dhcp();
                        }
                        std::mem::swap(self.out.slot(), &mut self.buf);
                        self.out.commit(self.dhcp_server);
                    }
                    Transmit::Dhcp(Dest::Proxy(ip)) => {
                        if self.out_proxy.is_full() {
                            self.flush_dhcp();
                        }
                        std::mem::swap(self.out_proxy.slot(), &mut self.buf);
                        self.out_proxy.commit(SocketAddrV4::new(ip, PXE_PORT));
                    }
                    Transmit::Tftp(to) => match &self.socks[i] {
                        Some(s) => match s.send_to(&self.buf, &SockAddr::from(to)) {
                            Ok(_) => self.packets.tftp_sent += 1,
                            Err(e) => {
                                let name = mmsg::errno_name(e.raw_os_error().unwrap_or(0));
                                *self.send_errors.entry(name).or_default() += 1;
                            }
                        },
                        None => *self.send_errors.entry("no-socket".into()).or_default() += 1,
                    },
                }
            }
            if !c.in_transfer() {
                self.close_socket(i);
            }
            self.drive_http(i, &mut c, now);
            let Some((_, name)) = c.awaiting_transfer() else {
                break;
            };
            let expected = match self.files.get(name) {
                Ok(e) => e,
                Err(()) => {
                    c.fail_local("verify-file-missing");
                    continue;
                }
            };
            if c.uses_http() {
                self.http.requests += 1;
                c.start_transfer(now, expected);
                continue;
            }
            match self.open_socket(i) {
                Ok(()) => c.start_transfer(now, expected),
                Err(e) => {
                    let what =
                        format!("socket-{}", mmsg::errno_name(e.raw_os_error().unwrap_or(0)));
                    c.fail_local(&what);
                }
            }
        }
        let now_counts = (c.bytes(), c.dhcp_retransmits(), c.tftp_retransmits());
        let before = std::mem::replace(&mut self.counted[i], now_counts);
        self.bytes += now_counts.0.saturating_sub(before.0);
        self.retransmits.dhcp += now_counts.1.saturating_sub(before.1);
        self.retransmits.tftp += now_counts.2.saturating_sub(before.2);
        self.set_stage(i, Stage::of(&c));
        if c.is_finished() {
            if !self.recorded[i] {
                self.recorded[i] = true;
                self.finished += 1;
                self.record(&c, None);
            }
        } else if let Some(dl) = c.deadline()
            && self.armed[i].is_none_or(|at| dl < at)
        {
            // One live heap entry per client, never later than its deadline: a deadline that
            // moves later (every TFTP block moves it) keeps the earlier entry, which re-arms
            // itself when it fires early, instead of one push per block.
            self.armed[i] = Some(dl);
            self.timers.push(Reverse((dl, i as u32)));
        }
        self.clients[i] = Some(c);
    }

    fn record(&mut self, c: &BootClient, cause: Option<String>) {
        let t = &mut self.tally;
        let (naks, restarts) = c.dhcp_naks_restarts();
        t.dhcp_naks += naks;
        t.dhcp_restarts += restarts;
        let arch = t.per_arch.entry(c.arch().name()).or_default();
        arch.clients += 1;
        let at = Instant::now().saturating_duration_since(self.start);
        let cause = match (cause, c.failure()) {
            (Some(cause), _) => cause,
            (None, Some(f)) => f.cause(),
            (None, None) => {
                arch.ok += 1;
                t.ok += 1;
                if let Some(f) = c.boot_file() {
                    *arch.boot_files.entry(f.to_owned()).or_default() += 1;
                }
                for step in Step::ALL {
                    if let Some(d) = c.duration(step) {
                        let _ = t.hists[step.index()].record((d.as_micros() as u64).max(1));
                    }
                }
                if let Some(d) = c.total() {
                    let _ = t.hists[4].record((d.as_micros() as u64).max(1));
                }
                let end = c
                    .finished_at()
                    .map_or(at, |f| f.saturating_duration_since(self.start));
                t.last_finished = t.last_finished.max(end);
                t.completions.push(end.as_secs_f64());
                return;
            }
        };
        t.failure_times.push(at.as_secs_f64());
        *t.failures.entry(cause).or_default() += 1;
    }
}

fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.0} kB", b / 1e3)
    }
}

pub fn run(p: &BootParams) -> anyhow::Result<BootReport> {
    if p.dhcp.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if p.dhcp.clients >= u32::MAX as usize / 2 {
        bail!("--clients is too large");
    }
    // One socket per concurrent TFTP transfer (at most one per client) plus our own.
    let fd_limit = raise_nofile().context("getrlimit(RLIMIT_NOFILE)")?;
    let need = p.dhcp.clients as u64 + 64;
    if need > fd_limit {
        bail!(
            "--clients {} needs up to {need} open files (one TFTP socket per client at once), \
             but RLIMIT_NOFILE allows {fd_limit} (soft raised to hard): use fewer clients, or \
             run several processes",
            p.dhcp.clients
        );
    }
    // The server answers every source address through its neighbour (ARP) table, whose size
    // limit is global: past gc_thresh3 entries the kernel drops its packets ("neighbor table
    // overflow"), which would show up here as TFTP timeouts that are not the server's doing.
    if let Some(max) = std::fs::read_to_string("/proc/sys/net/ipv4/neigh/default/gc_thresh3")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        && p.sources.len().min(p.dhcp.clients) > max
    {
        eprintln!(
            "warning: {} TFTP source addresses but net.ipv4.neigh.default.gc_thresh3 is {max}: \
             the server's neighbour table will overflow and drop packets; raise \
             net.ipv4.neigh.default.gc_thresh1/2/3 (global sysctls) above the address count",
            p.sources.len().min(p.dhcp.clients)
        );
    }
    let epoll = Epoll::new(512).context("epoll_create1")?;
    let (dhcp_sock, proxy_sock) = if p.plan.skip_dhcp {
        (None, None)
    } else {
        let (sock, proxy) = p.dhcp.open_sockets()?;
        epoll.add(sock.as_raw_fd(), TOKEN_DHCP)?;
        if let Some(s) = &proxy {
            epoll.add(s.as_raw_fd(), TOKEN_PROXY)?;
        }
        (Some(sock), proxy)
    };

    // Client identities now, state machines at their arrival.
    let mut configs = p.dhcp.client_configs();
    let plan = Arc::new(p.plan.clone());
    let hist = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3);
    let mut stage_counts = [0usize; 7];
    stage_counts[0] = p.dhcp.clients;
    let mut sim = Sim {
        start: Instant::now(),
        clients: (0..p.dhcp.clients).map(|_| None).collect(),
        stage: vec![Stage::Waiting; p.dhcp.clients],
        stage_counts,
        socks: (0..p.dhcp.clients).map(|_| None).collect(),
        open_socks: 0,
        max_open: 0,
        tcp: (0..p.dhcp.clients).map(|_| None).collect(),
        open_tcp: 0,
        http: HttpStats::default(),
        http_buf: vec![0u8; HTTP_READ].into_boxed_slice(),
        armed: vec![None; p.dhcp.clients],
        timers: BinaryHeap::with_capacity(p.dhcp.clients),
        dhcp_fd: dhcp_sock.as_ref().map_or(-1, |s| s.as_raw_fd()),
        proxy_fd: proxy_sock.as_ref().map(|s| s.as_raw_fd()),
        dhcp_server: p.dhcp.server_addr(),
        out: SendBatch::new(),
        out_proxy: SendBatch::new(),
        buf: Vec::with_capacity(1500),
        files: Files {
            dir: p.verify_dir.clone(),
            cache: HashMap::new(),
        },
        sources: p.sources.clone(),
        interface: p.dhcp.interface.clone(),
        epoll,
        finished: 0,
        recorded: vec![false; p.dhcp.clients],
        tally: Tally {
            hists: [hist()?, hist()?, hist()?, hist()?, hist()?],
            ok: 0,
            failures: BTreeMap::new(),
            per_arch: BTreeMap::new(),
            completions: Vec::with_capacity(p.dhcp.clients),
            failure_times: Vec::new(),
            last_finished: Duration::ZERO,
            dhcp_naks: 0,
            dhcp_restarts: 0,
        },
        packets: Packets::default(),
        send_errors: ErrorCounts::new(),
        recv_errors: ErrorCounts::new(),
        bytes: 0,
        retransmits: Retransmits::default(),
        counted: vec![(0, 0, 0); p.dhcp.clients],
        unknown_client: 0,
        stray: 0,
        gro: p.gro,
    };
    let mut inb = RecvBatch::new();
    let mut gro_in = if p.gro {
        Some(mmsg::GroBatch::new())
    } else {
        None
    };

    let progress = (p.progress && io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::with_draw_target(
            Some(p.dhcp.clients as u64),
            indicatif::ProgressDrawTarget::stderr_with_hz(5),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:24}] {pos}/{len} finished | {msg}",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb
    });
    let tick = Duration::from_millis(200);

    let cpu0 = mmsg::cpu_time();
    let start = Instant::now();
    sim.start = start;
    let give_up = start + p.dhcp.deadline;
    let mut next_arrival = 0usize;
    let mut next_tick = start;
    let mut last_bytes = (start, 0u64);

    while sim.finished < p.dhcp.clients {
        let now = Instant::now();
        if now >= give_up {
            break;
        }
        // Arrivals.
        while next_arrival < p.dhcp.clients && start + p.dhcp.arrival.offset(next_arrival) <= now {
            let i = next_arrival;
            next_arrival += 1;
            if let Some(cfg) = configs[i].take() {
                sim.clients[i] = Some(BootClient::new(Arc::clone(&plan), cfg.arch, cfg, now));
                sim.set_stage(
                    i,
                    Stage::In(if p.plan.skip_dhcp {
                        Step::BootFile
                    } else {
                        Step::Dhcp
                    }),
                );
                sim.drive(i, now);
            }
        }
        // Timers.
        while let Some(&Reverse((at, i))) = sim.timers.peek() {
            if at > now {
                break;
            }
            sim.timers.pop();
            let i = i as usize;
            if sim.armed[i] != Some(at) {
                continue; // stale
            }
            sim.armed[i] = None;
            if let Some(c) = sim.clients[i].as_mut() {
                match c.deadline() {
                    // Fired early: the deadline moved on since this entry was pushed.
                    Some(dl) if dl > now => {
                        sim.armed[i] = Some(dl);
                        sim.timers.push(Reverse((dl, i as u32)));
                        continue;
                    }
                    _ => c.handle_timeout(now),
                }
            }
            sim.drive(i, now);
        }
        sim.flush_dhcp();
        if sim.finished >= p.dhcp.clients {
            break;
        }

        // Wait for datagrams until the next timer, arrival or progress tick.
        let mut wake = give_up;
        if let Some(&Reverse((at, _))) = sim.timers.peek() {
            wake = wake.min(at);
        }
        if next_arrival < p.dhcp.clients {
            wake = wake.min(start + p.dhcp.arrival.offset(next_arrival));
        }
        if progress.is_some() {
            wake = wake.min(next_tick);
        }
        let n = sim
            .epoll
            .wait(wake.saturating_duration_since(Instant::now()));
        for k in 0..n {
            let token = sim.epoll.token(k);
            if token == TOKEN_DHCP || token == TOKEN_PROXY {
                let fd = if token == TOKEN_DHCP {
                    sim.dhcp_fd
                } else {
                    sim.proxy_fd.unwrap_or(-1)
                };
                for _round in 0..64 {
                    if let Err(e) = inb.recv(fd) {
                        let name = mmsg::errno_name(e.raw_os_error().unwrap_or(0));
                        *sim.recv_errors.entry(name).or_default() += 1;
                        break;
                    }
                    let got = inb.len();
                    let now = Instant::now();
                    for j in 0..got {
                        let (bytes, _from) = inb.datagram(j);
                        sim.packets.dhcp_received += 1;
                        let Some(i) = p.dhcp.client_of(bytes) else {
                            sim.unknown_client += 1;
                            continue;
                        };
                        let accepted = match sim.clients[i].as_mut() {
                            Some(c) => c.handle_dhcp(now, bytes) == Verdict::Accepted,
                            None => {
                                sim.unknown_client += 1;
                                false
                            }
                        };
                        if accepted {
                            sim.drive(i, now);
                        }
                    }
                    sim.flush_dhcp();
                    if got < mmsg::BATCH {
                        break;
                    }
                }
                continue;
            }
            if token & TOKEN_HTTP != 0 {
                let i = (token & !TOKEN_HTTP) as usize;
                if i < p.dhcp.clients {
                    sim.http_event(i, sim.epoll.events(k));
                }
                continue;
            }
            let i = token as usize;
            // The socket may have been closed by an earlier event of this batch.
            let Some(fd) = sim
                .socks
                .get(i)
                .and_then(|s| s.as_ref())
                .map(|s| s.as_raw_fd())
            else {
                continue;
            };
            for _round in 0..8 {
                let got = match &mut gro_in {
                    Some(g) => g.recv(fd),
                    None => inb.recv_up_to(fd, 16),
                };
                let got = match got {
                    Ok(n) => n,
                    Err(e) => {
                        let name = mmsg::errno_name(e.raw_os_error().unwrap_or(0));
                        *sim.recv_errors.entry(name).or_default() += 1;
                        break;
                    }
                };
                let now = Instant::now();
                sim.packets.tftp_receives += got as u64;
                if let Some(c) = sim.clients[i].as_mut() {
                    for j in 0..got {
                        // A GRO receive holds several datagrams, a plain one exactly one.
                        let (from, glued, single) = match &gro_in {
                            Some(g) => {
                                let (segs, from) = g.segments(j);
                                (from, Some(segs), None)
                            }
                            None => {
                                let (bytes, from) = inb.datagram(j);
                                (from, None, Some(bytes))
                            }
                        };
                        for bytes in glued.into_iter().flatten().chain(single) {
                            sim.packets.tftp_received += 1;
                            if !c.handle_tftp(now, from, bytes) {
                                sim.stray += 1;
                            }
                        }
                    }
                }
                sim.drive(i, now);
                let full = match &gro_in {
                    Some(_) => mmsg::GRO_BATCH,
                    None => 16,
                };
                // Drained, or the transfer ended and its socket is gone.
                if got < full || sim.socks[i].as_ref().map(|s| s.as_raw_fd()) != Some(fd) {
                    break;
                }
            }
        }
        sim.flush_dhcp();

        if let Some(pb) = &progress {
            let now = Instant::now();
            if now >= next_tick {
                next_tick = now + tick;
                let c = &sim.stage_counts;
                let secs = now.duration_since(last_bytes.0).as_secs_f64().max(1e-3);
                let rate = (sim.bytes - last_bytes.1) as f64 * 8.0 / secs / 1e6;
                last_bytes = (now, sim.bytes);
                pb.set_position(sim.finished as u64);
                pb.set_message(format!(
                    "wait {} dhcp {} boot {} kernel {} initrd {} | ok {} failed {} | {} {:.0} Mbit/s | rtx dhcp {} tftp {}",
                    c[0],
                    c[1],
                    c[2],
                    c[3],
                    c[4],
                    c[5],
                    c[6],
                    human_bytes(sim.bytes),
                    rate,
                    sim.retransmits.dhcp,
                    sim.retransmits.tftp,
                ));
            }
        }
    }
    let wall = start.elapsed();
    let cpu1 = mmsg::cpu_time();
    if let Some(pb) = &progress {
        pb.set_position(sim.finished as u64);
        pb.finish();
    }

    // Whatever has not finished by the deadline.
    for (i, cfg) in configs.iter().enumerate() {
        if sim.recorded[i] {
            continue;
        }
        match sim.clients[i].take() {
            Some(c) => {
                let cause = format!("deadline-{}", c.step().key());
                sim.record(&c, Some(cause));
                sim.clients[i] = Some(c);
            }
            None => {
                *sim.tally
                    .failures
                    .entry("deadline-not-started".into())
                    .or_default() += 1;
                if let Some(cfg) = cfg {
                    sim.tally
                        .per_arch
                        .entry(cfg.arch.name())
                        .or_default()
                        .clients += 1;
                }
            }
        }
    }
    let (mut ignored, mut malformed) = (0, 0);
    for c in sim.clients.iter().flatten() {
        let (i, m) = c.dhcp_ignored_malformed();
        ignored += i;
        malformed += m;
    }

    let t = &mut sim.tally;
    t.completions.sort_by(f64::total_cmp);
    t.failure_times.sort_by(f64::total_cmp);
    let names = ["dhcp", "boot_file", "kernel", "initrd", "total"];
    let quantiles = names
        .iter()
        .zip(&t.hists)
        .filter(|(_, h)| !h.is_empty())
        .map(|(&name, h)| (name, quantile_points(h)))
        .collect();
    if let Some(g) = &gro_in
        && g.truncated() > 0
    {
        sim.recv_errors
            .insert("gro-truncated".into(), g.truncated());
    }
    let mut transports = BTreeMap::new();
    for step in Step::ALL {
        let runs = match step {
            Step::Dhcp => !p.plan.skip_dhcp,
            Step::BootFile => !p.plan.skip_dhcp || p.plan.boot_file.is_some(),
            Step::Kernel => p.plan.kernel.is_some(),
            Step::Initrd => p.plan.initrd.is_some(),
        };
        if runs {
            transports.insert(step.key(), p.plan.transport(step));
        }
    }
    let user = cpu1.0.saturating_sub(cpu0.0).as_secs_f64();
    let system = cpu1.1.saturating_sub(cpu0.1).as_secs_f64();
    let wall_s = wall.as_secs_f64();
    Ok(BootReport {
        clients: p.dhcp.clients,
        ok: t.ok,
        failed: p.dhcp.clients as u64 - t.ok,
        failures: std::mem::take(&mut t.failures),
        retransmits: sim.retransmits.clone(),
        phases: Phases {
            dhcp: Latency::of(&t.hists[0]),
            boot_file: Latency::of(&t.hists[1]),
            kernel: Latency::of(&t.hists[2]),
            initrd: Latency::of(&t.hists[3]),
            total: Latency::of(&t.hists[4]),
        },
        last_finished_s: t.last_finished.as_secs_f64(),
        wall_s,
        transports,
        bytes: sim.bytes,
        goodput_mbit_s: sim.bytes as f64 * 8.0 / wall_s.max(1e-9) / 1e6,
        cpu_user_s: user,
        cpu_system_s: system,
        cpu_percent: 100.0 * (user + system) / wall_s.max(1e-9),
        mode: p.dhcp.mode.name(),
        skip_dhcp: p.plan.skip_dhcp,
        arrival: match p.dhcp.arrival {
            Arrival::Storm => "storm".into(),
            Arrival::Ramp(n) => format!("ramp:{n}/s"),
            Arrival::Rate(n) => format!("rate:{n}/s"),
        },
        per_arch: std::mem::take(&mut t.per_arch),
        packets: sim.packets.clone(),
        send_errors: sim.send_errors.clone(),
        recv_errors: sim.recv_errors.clone(),
        dhcp_naks: t.dhcp_naks,
        dhcp_restarts: t.dhcp_restarts,
        dhcp_replies_unknown_client: sim.unknown_client,
        dhcp_replies_ignored: ignored,
        dhcp_replies_malformed: malformed,
        tftp_stray: sim.stray,
        max_open_sockets: sim.max_open,
        http: sim.http.clone(),
        fd_limit,
        gro: p.gro,
        curves: Curves {
            completions: std::mem::take(&mut t.completions),
            failures: std::mem::take(&mut t.failure_times),
            quantiles,
        },
    })
}

/// (quantile, µs) points from p0 to p99.99 and the max, denser in the tail.
fn quantile_points(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    let mut pts = Vec::new();
    // x = -log10(1 - q): 0 (p0) .. 4 (p99.99), 10 points per decade of nines.
    for k in 0..=40 {
        let q = 1.0 - 10f64.powf(-f64::from(k) / 10.0);
        pts.push((q, h.value_at_quantile(q)));
    }
    pts
}

impl std::fmt::Display for BootReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "boot storm ({}{}, arrival {}): clients {}  ok {}  failed {}",
            self.mode,
            if self.skip_dhcp { ", no DHCP" } else { "" },
            self.arrival,
            self.clients,
            self.ok,
            self.failed
        )?;
        for (cause, n) in &self.failures {
            writeln!(f, "  failure {cause}: {n}")?;
        }
        for (arch, c) in &self.per_arch {
            write!(f, "  {arch}: {} clients, {} ok", c.clients, c.ok)?;
            for (file, n) in &c.boot_files {
                write!(f, "  [{file}: {n}]")?;
            }
            writeln!(f)?;
        }
        let via: Vec<String> = self
            .transports
            .iter()
            .map(|(phase, how)| format!("{phase} over {how}"))
            .collect();
        writeln!(f, "  phases: {}", via.join(", "))?;
        writeln!(f, "latency (ms):")?;
        let ms = |us: u64| us as f64 / 1000.0;
        for (name, l) in [
            ("dhcp", &self.phases.dhcp),
            ("boot_file", &self.phases.boot_file),
            ("kernel", &self.phases.kernel),
            ("initrd", &self.phases.initrd),
            ("total", &self.phases.total),
        ] {
            if l.count == 0 {
                continue;
            }
            writeln!(
                f,
                "  {name:<10} n {:>6}  p50 {:>9.1}  p90 {:>9.1}  p99 {:>9.1}  p99.9 {:>9.1}  max {:>9.1}",
                l.count,
                ms(l.p50_us),
                ms(l.p90_us),
                ms(l.p99_us),
                ms(l.p999_us),
                ms(l.max_us)
            )?;
        }
        writeln!(
            f,
            "last client booted at {:.3} s  wall {:.3} s  received {} ({} bytes)  goodput {:.1} Mbit/s",
            self.last_finished_s,
            self.wall_s,
            human_bytes(self.bytes),
            self.bytes,
            self.goodput_mbit_s
        )?;
        writeln!(
            f,
            "retransmits: dhcp {}  tftp {}   packets: dhcp {}/{} tftp {}/{} (sent/received, {:.1} per receive{})  max open sockets {}",
            self.retransmits.dhcp,
            self.retransmits.tftp,
            self.packets.dhcp_sent,
            self.packets.dhcp_received,
            self.packets.tftp_sent,
            self.packets.tftp_received,
            self.packets.tftp_received as f64 / self.packets.tftp_receives.max(1) as f64,
            if self.gro { ", GRO" } else { "" },
            self.max_open_sockets
        )?;
        if self.http.connections > 0 {
            writeln!(
                f,
                "http: {} connections, {} requests, {} open at most",
                self.http.connections, self.http.requests, self.http.max_open
            )?;
        }
        if !self.send_errors.is_empty() || !self.recv_errors.is_empty() {
            writeln!(
                f,
                "send errors {:?}  receive errors {:?}",
                self.send_errors, self.recv_errors
            )?;
        }
        if !self.skip_dhcp {
            writeln!(
                f,
                "dhcp NAKs {}  restarts after a NAK {}",
                self.dhcp_naks, self.dhcp_restarts
            )?;
        }
        if self.dhcp_replies_unknown_client + self.dhcp_replies_malformed + self.tftp_stray > 0 {
            writeln!(
                f,
                "dhcp replies: for no client {}  ignored {}  malformed {}; stray tftp {}",
                self.dhcp_replies_unknown_client,
                self.dhcp_replies_ignored,
                self.dhcp_replies_malformed,
                self.tftp_stray
            )?;
        }
        write!(
            f,
            "simulator CPU: user {:.3} s  system {:.3} s  ({:.1}% of one core over the run)",
            self.cpu_user_s, self.cpu_system_s, self.cpu_percent
        )
    }
}
