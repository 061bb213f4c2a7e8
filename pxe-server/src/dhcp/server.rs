//! The DHCP service on real sockets: the I/O around the sans-IO [`Responder`].
//!
//! Sockets: UDP `0.0.0.0:67`, and `0.0.0.0:4011` when `dhcp.pxe_port_4011`, each with
//! SO_REUSEADDR, SO_BROADCAST and IP_PKTINFO. With `dhcp.interfaces` set there is one socket per
//! interface and port, bound to its device (SO_BINDTODEVICE), so the server hears nothing from
//! other links; otherwise one socket per port hears every interface.
//!
//! IP_PKTINFO tells, for each request, the interface it came in on (`ipi_ifindex`) and our
//! address there (`ipi_spec_dst`: the responder's server identifier and next-server when they
//! are not configured). Every answer is sent from the socket the request came in on, with an
//! IP_PKTINFO control message carrying that interface and that source address: a broadcast
//! (255.255.255.255:68) thus leaves through the request's interface even on a socket bound to
//! no device; unicasts (to a relay's giaddr:67, to a client's ciaddr:68, to the source of a
//! port 4011 request) are routed normally, from our address on that link.
//!
//! Batching: one thread polls the sockets; for each readable socket it takes up to
//! [`BATCH`] datagrams with one `recvmmsg`, hands them to the responder inside one lease-store
//! batch ([`LeaseStore::begin_batch`]), commits the batch once (one fsync for all the leases it
//! bound), and only then sends every answer with one `sendmmsg`. No answer leaves before its
//! lease is durable; if the commit fails, the whole batch's answers are dropped (counted in
//! `drop_batch_commit`) and the clients retry.
//!
//! The fsync is the cost that bounds throughput (a few milliseconds on a virtual disk, during
//! which requests queue in the socket), so a batch is large: the longer a commit took, the more
//! requests the next `recvmmsg` finds waiting, and they all share the next fsync (group commit).
//! With [`BATCH`] = 512 and a 5 ms fsync that is ~100,000 requests/s; with 64 it was ~12,000.
//!
//! Buffers for a batch (datagrams, addresses, control messages, answers) are allocated once.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use socket2::{Domain, Protocol, Socket, Type};

use super::leases::{Lease, LeaseError, LeaseStore, MemoryLeaseStore, RedbLeaseStore};
use super::metrics::DhcpMetrics;
use super::responder::{Action, RecvMeta, Responder, Transmit};
use super::{DhcpMode, DhcpReload, DhcpSettings};
use crate::xdp::Fallback;
use pxe_proto::MacAddr;
use pxe_proto::consts::{DHCP_SERVER_PORT as SERVER_PORT, PXE_PORT};

/// Datagrams taken per `recvmmsg` (and answers per `sendmmsg`), all committed by one fsync.
/// At most UIO_MAXIOV (1024), the kernel's limit for one call.
pub const BATCH: usize = 512;
/// Receive buffer per datagram. DHCP messages are at most an Ethernet MTU in practice (clients
/// announce 576..1500 in option 57); a longer datagram is dropped and counted.
const RECV_BUF: usize = 2048;
/// Room for one IP_PKTINFO control message (CMSG_SPACE(12) = 32 on 64-bit Linux) and then some.
const CMSG_BUF: usize = 64;
/// Kernel receive buffer asked for each socket: a boot storm arrives in bursts. Each queued
/// datagram costs its skb's truesize (about 1-2.5 KiB for a DHCP message), and a power restore
/// sends one DISCOVER per machine within milliseconds: 32 MiB (the kernel doubles it) holds
/// 10,000 simultaneous DISCOVERs while a lease commit is in progress. Memory is used only
/// while datagrams wait.
const SOCKET_RCVBUF: usize = 32 << 20;
/// How long `poll` waits before the shutdown flag is looked at again.
const POLL_MS: i32 = 200;
/// Batches taken from one socket before the others get their turn.
const BATCHES_PER_TURN: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("DHCP socket {what}: {source}")]
    Socket {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("DHCP interface {name:?}: {source}")]
    Interface {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("lease database {path}: {source}")]
    Leases {
        path: PathBuf,
        #[source]
        source: LeaseError,
    },
    #[error("DHCP service I/O: {0}")]
    Io(#[from] io::Error),
}

/// The lease table the service runs with: redb in full mode, memory in proxy mode (proxy mode
/// leases nothing).
#[derive(Debug)]
pub enum ServiceStore {
    Memory(MemoryLeaseStore),
    Redb(Box<RedbLeaseStore>),
}

impl LeaseStore for ServiceStore {
    fn get(&self, ip: Ipv4Addr) -> Option<Lease> {
        match self {
            ServiceStore::Memory(s) => s.get(ip),
            ServiceStore::Redb(s) => s.get(ip),
        }
    }
    fn ip_of(&self, mac: &MacAddr) -> Option<Ipv4Addr> {
        match self {
            ServiceStore::Memory(s) => s.ip_of(mac),
            ServiceStore::Redb(s) => s.ip_of(mac),
        }
    }
    fn put(&mut self, lease: &Lease) -> Result<(), LeaseError> {
        match self {
            ServiceStore::Memory(s) => s.put(lease),
            ServiceStore::Redb(s) => s.put(lease),
        }
    }
    fn len(&self) -> usize {
        match self {
            ServiceStore::Memory(s) => s.len(),
            ServiceStore::Redb(s) => s.len(),
        }
    }
    fn begin_batch(&mut self) {
        match self {
            ServiceStore::Memory(s) => s.begin_batch(),
            ServiceStore::Redb(s) => s.begin_batch(),
        }
    }
    fn commit_batch(&mut self) -> Result<(), LeaseError> {
        match self {
            ServiceStore::Memory(s) => s.commit_batch(),
            ServiceStore::Redb(s) => s.commit_batch(),
        }
    }
}

/// What one socket listens for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListenSpec {
    /// The port the responder is told ([`SERVER_PORT`] or [`PXE_PORT`]).
    logical_port: u16,
    bind: SocketAddrV4,
    /// SO_BINDTODEVICE.
    device: Option<String>,
}

struct Listener {
    socket: Socket,
    logical_port: u16,
    /// The bound device's index, 0 when the socket hears every interface.
    ifindex: u32,
    label: String,
}

/// The DHCP service: sockets, responder, batch buffers.
pub struct DhcpServer<S: LeaseStore> {
    responder: Responder<S>,
    listeners: Vec<Listener>,
    recv: RecvBatch,
    send: SendBatch,
    /// One answer buffer per datagram of a batch.
    answers: Vec<Vec<u8>>,
    /// (index in the batch, transmit) of the answers of the current batch.
    pending: Vec<(usize, Transmit, Ipv4Addr)>,
    /// The discovery policy for interfaces without XDP (`[xdp]`), before the responder.
    filter: Option<Fallback>,
    /// New configurations (SIGHUP), applied between batches.
    reloads: Option<crossbeam::channel::Receiver<DhcpReload>>,
}

impl<S: LeaseStore> std::fmt::Debug for DhcpServer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhcpServer")
            .field(
                "listeners",
                &self.listeners.iter().map(|l| &l.label).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl DhcpServer<ServiceStore> {
    /// Binds the sockets `settings` asks for; in full mode the leases live in `db` (the lease
    /// database the caller opened, see `leases::open_database`), else in `settings.lease_db`.
    pub fn bind(d: &DhcpSettings, db: Option<Arc<redb::Database>>) -> Result<Self, ServerError> {
        let leases_err = |source| ServerError::Leases {
            path: d.lease_db.clone(),
            source,
        };
        let store = match d.mode {
            DhcpMode::Proxy => ServiceStore::Memory(MemoryLeaseStore::new()),
            DhcpMode::Full => {
                let db = match db {
                    Some(db) => db,
                    None => super::leases::open_database(&d.lease_db).map_err(leases_err)?,
                };
                ServiceStore::Redb(Box::new(
                    RedbLeaseStore::open_shared(db).map_err(leases_err)?,
                ))
            }
        };
        let mut ports = vec![SERVER_PORT];
        if d.pxe_port_4011 {
            ports.push(PXE_PORT);
        }
        let mut specs = Vec::new();
        for &p in &ports {
            let bind = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, p);
            if d.interfaces.is_empty() {
                specs.push(ListenSpec {
                    logical_port: p,
                    bind,
                    device: None,
                });
            }
            for i in &d.interfaces {
                specs.push(ListenSpec {
                    logical_port: p,
                    bind,
                    device: Some(i.clone()),
                });
            }
        }
        Self::with_listeners(Responder::new(d, store), &specs)
    }
}

impl<S: LeaseStore> DhcpServer<S> {
    fn with_listeners(responder: Responder<S>, specs: &[ListenSpec]) -> Result<Self, ServerError> {
        let listeners = specs
            .iter()
            .map(open_listener)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DhcpServer {
            responder,
            listeners,
            recv: RecvBatch::new(),
            send: SendBatch::new(),
            answers: (0..BATCH).map(|_| Vec::with_capacity(1500)).collect(),
            pending: Vec::with_capacity(BATCH),
            filter: None,
            reloads: None,
        })
    }

    /// A channel for configuration reloads: each one sent is applied between two batches
    /// (responder tables and the fallback's policy; the sockets stay as they are, so the
    /// sender converts `Config::reload_plan`'s effective config).
    pub fn reload_channel(&mut self) -> crossbeam::channel::Sender<DhcpReload> {
        let (tx, rx) = crossbeam::channel::unbounded();
        self.reloads = Some(rx);
        tx
    }

    /// Applies a reloaded configuration now.
    pub fn reconfigure(&mut self, reload: DhcpReload) {
        self.responder.reconfigure(&reload.settings);
        if let Some(f) = &mut self.filter {
            f.set_policy(reload.policy);
        }
        tracing::info!(
            hosts = reload.settings.hosts.len(),
            subnets = reload.settings.subnets.len(),
            "DHCP configuration reloaded"
        );
    }

    /// Applies `filter` to every datagram before the responder (datagrams it drops are not
    /// counted in `received`).
    pub fn set_filter(&mut self, filter: Fallback) {
        self.filter = Some(filter);
    }

    pub fn metrics(&self) -> Arc<DhcpMetrics> {
        Arc::clone(self.responder.metrics())
    }

    /// The sockets, as `address[%device]` (for the start-up log).
    pub fn listening(&self) -> Vec<String> {
        self.listeners.iter().map(|l| l.label.clone()).collect()
    }

    /// The responder (and through it the lease store).
    pub fn responder(&self) -> &Responder<S> {
        &self.responder
    }

    /// Serves until `shutdown` is set (checked at least every [`POLL_MS`] ms).
    pub fn run(&mut self, shutdown: &AtomicBool) -> Result<(), ServerError> {
        let mut fds: Vec<libc::pollfd> = self
            .listeners
            .iter()
            .map(|l| libc::pollfd {
                fd: l.socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        while !shutdown.load(Ordering::Relaxed) {
            while let Some(reload) = self.reloads.as_ref().and_then(|r| r.try_recv().ok()) {
                self.reconfigure(reload);
            }
            // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the whole call.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL_MS) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            for (i, pfd) in fds.iter().enumerate() {
                if pfd.revents == 0 {
                    continue;
                }
                for _ in 0..BATCHES_PER_TURN {
                    if self.serve_batch(i)? < BATCH {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Receives one batch on listener `li`, answers it; returns the number of datagrams.
    fn serve_batch(&mut self, li: usize) -> Result<usize, ServerError> {
        let l = &self.listeners[li];
        let n = match self.recv.recv(l.socket.as_raw_fd()) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(0);
            }
            Err(e) => {
                // A receive error on a UDP socket (e.g. a queued ICMP error) is not fatal.
                tracing::debug!(socket = %l.label, %e, "DHCP recvmmsg");
                return Ok(0);
            }
        };
        if n == 0 {
            return Ok(0);
        }
        let (logical_port, listener_ifindex) = (l.logical_port, l.ifindex);
        let now = SystemTime::now();
        let metrics = Arc::clone(self.responder.metrics());
        self.pending.clear();
        self.responder.begin_batch();
        for j in 0..n {
            let Some(d) = self.recv.datagram(j) else {
                continue;
            };
            if d.truncated {
                DhcpMetrics::inc(&metrics.received);
                DhcpMetrics::inc(&metrics.recv_truncated);
                continue;
            }
            let meta = RecvMeta {
                src: d.src,
                local_addr: d.local_addr,
                ifindex: if d.ifindex != 0 {
                    d.ifindex
                } else {
                    listener_ifindex
                },
                port: logical_port,
            };
            let bytes = &self.recv.bufs[j][..d.len];
            if let Some(f) = &mut self.filter
                && f.check(bytes, meta.ifindex).is_drop()
            {
                continue;
            }
            if let Action::Respond(t) =
                self.responder
                    .handle(now, bytes, &meta, &mut self.answers[j])
            {
                self.pending.push((j, t, d.local_addr));
            }
        }
        if let Err(e) = self.responder.commit_batch() {
            tracing::warn!(%e, answers = self.pending.len(), "lease commit failed: batch dropped");
            for _ in 0..self.pending.len() {
                DhcpMetrics::inc(&metrics.drop_batch_commit);
            }
            self.pending.clear();
            return Ok(n);
        }
        if !self.pending.is_empty() {
            let fd = self.listeners[li].socket.as_raw_fd();
            let failed = self.send.send(fd, &self.pending, &self.answers);
            for _ in 0..failed {
                DhcpMetrics::inc(&metrics.send_errors);
            }
        }
        Ok(n)
    }
}

fn open_listener(spec: &ListenSpec) -> Result<Listener, ServerError> {
    let label = match &spec.device {
        Some(d) => format!("{}%{d}", spec.bind),
        None => spec.bind.to_string(),
    };
    let err = |what: &str| {
        let label = label.clone();
        let what = what.to_owned();
        move |source| ServerError::Socket {
            what: format!("{label}: {what}"),
            source,
        }
    };
    let ifindex = match &spec.device {
        Some(name) => {
            nix::net::if_::if_nametoindex(name.as_str()).map_err(|e| ServerError::Interface {
                name: name.clone(),
                source: e.into(),
            })?
        }
        None => 0,
    };
    let socket =
        Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err("socket"))?;
    socket
        .set_reuse_address(true)
        .map_err(err("SO_REUSEADDR"))?;
    socket.set_broadcast(true).map_err(err("SO_BROADCAST"))?;
    nix::sys::socket::setsockopt(
        &socket.as_fd(),
        nix::sys::socket::sockopt::Ipv4PacketInfo,
        &true,
    )
    .map_err(|e| err("IP_PKTINFO")(e.into()))?;
    if let Some(d) = &spec.device {
        socket
            .bind_device(Some(d.as_bytes()))
            .map_err(err("SO_BINDTODEVICE"))?;
    }
    raise_recv_buffer(&socket, &label);
    socket
        .bind(&std::net::SocketAddr::V4(spec.bind).into())
        .map_err(err("bind"))?;
    let label = match socket.local_addr().ok().and_then(|a| a.as_socket()) {
        Some(a) if spec.bind.port() == 0 => match &spec.device {
            Some(d) => format!("{a}%{d}"),
            None => a.to_string(),
        },
        _ => label,
    };
    Ok(Listener {
        socket,
        logical_port: spec.logical_port,
        ifindex,
        label,
    })
}

/// Asks for a [`SOCKET_RCVBUF`] receive buffer: with SO_RCVBUFFORCE where we may (root or
/// CAP_NET_ADMIN, as a server on port 67 usually is), which `net.core.rmem_max` does not cap
/// (its default, 208 KiB, holds only a few hundred requests: one fsync of a lease batch during
/// a storm); else with SO_RCVBUF, up to that limit.
fn raise_recv_buffer(socket: &Socket, label: &str) {
    let forced = nix::sys::socket::setsockopt(
        &socket.as_fd(),
        nix::sys::socket::sockopt::RcvBufForce,
        &SOCKET_RCVBUF,
    );
    if forced.is_ok() {
        return;
    }
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_RCVBUF) {
        tracing::debug!(socket = %label, %e, "SO_RCVBUF not raised");
    }
}

/// An 8-byte aligned control-message buffer.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_BUF]);

/// One received datagram's facts.
#[derive(Debug, Clone, Copy)]
struct Datagram {
    len: usize,
    truncated: bool,
    src: SocketAddrV4,
    local_addr: Ipv4Addr,
    ifindex: u32,
}

/// The per-message arrays of a `recvmmsg`/`sendmmsg` batch, allocated once: header `i` points
/// at name `i`, iovec `i` and control buffer `i`.
struct MsgVecs {
    names: Vec<libc::sockaddr_in>,
    cmsgs: Vec<CmsgBuf>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl MsgVecs {
    fn new() -> Self {
        MsgVecs {
            names: vec![zeroed_sockaddr_in(); BATCH],
            cmsgs: vec![CmsgBuf([0; CMSG_BUF]); BATCH],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                BATCH
            ],
            hdrs: (0..BATCH).map(|_| zeroed_mmsghdr()).collect(),
        }
    }

    /// Resets header `i` to point at this batch's name `i`, iovec `i` and control buffer `i`
    /// (`controllen` bytes of it); returns it for the caller's last touches.
    fn wire(&mut self, i: usize, controllen: usize) -> &mut libc::mmsghdr {
        let h = &mut self.hdrs[i];
        *h = zeroed_mmsghdr();
        h.msg_hdr.msg_name = (&raw mut self.names[i]).cast();
        h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        h.msg_hdr.msg_iov = &raw mut self.iovs[i];
        h.msg_hdr.msg_iovlen = 1;
        h.msg_hdr.msg_control = self.cmsgs[i].0.as_mut_ptr().cast();
        h.msg_hdr.msg_controllen = controllen as _;
        h
    }
}

struct RecvBatch {
    bufs: Vec<[u8; RECV_BUF]>,
    m: MsgVecs,
    /// Datagrams in the last batch.
    n: usize,
}

// SAFETY: the raw pointers in the headers and iovecs are scratch: they are rewritten before
// every recvmmsg/sendmmsg to point into buffers the same batch owns (or borrows for the call)
// and are never dereferenced otherwise, so moving the struct to another thread is sound.
unsafe impl Send for MsgVecs {}

fn zeroed_sockaddr_in() -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is a plain C struct for which all-zero bytes are a valid value.
    unsafe { mem::zeroed() }
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct (null pointers, zero lengths) for which all-zero
    // bytes are a valid value.
    unsafe { mem::zeroed() }
}

impl RecvBatch {
    fn new() -> Self {
        RecvBatch {
            bufs: vec![[0; RECV_BUF]; BATCH],
            m: MsgVecs::new(),
            n: 0,
        }
    }

    /// One `recvmmsg` (non-blocking): the number of datagrams now in the batch.
    fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.n = 0;
        for i in 0..BATCH {
            self.m.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: RECV_BUF,
            };
            self.m.wire(i, CMSG_BUF);
        }
        // SAFETY: each of the BATCH headers points to a name, one iovec (to its own RECV_BUF
        // buffer) and a control buffer, all owned by `self` and not moved during the call; the
        // lengths given are those buffers' sizes.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.m.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        self.n = (r as usize).min(BATCH);
        Ok(self.n)
    }

    /// The facts of datagram `j` of the last batch; `None` if it is not from an IPv4 peer.
    fn datagram(&self, j: usize) -> Option<Datagram> {
        if j >= self.n {
            return None;
        }
        let h = &self.m.hdrs[j].msg_hdr;
        let name = &self.m.names[j];
        if (h.msg_namelen as usize) < mem::size_of::<libc::sockaddr_in>()
            || name.sin_family != libc::AF_INET as libc::sa_family_t
        {
            return None;
        }
        let src = SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr)),
            u16::from_be(name.sin_port),
        );
        let (local_addr, ifindex) = match pktinfo(h) {
            Some(p) => (
                Ipv4Addr::from(u32::from_be(p.ipi_spec_dst.s_addr)),
                u32::try_from(p.ipi_ifindex).unwrap_or(0),
            ),
            None => (Ipv4Addr::UNSPECIFIED, 0),
        };
        let len = (self.m.hdrs[j].msg_len as usize).min(RECV_BUF);
        Some(Datagram {
            len,
            truncated: h.msg_flags & libc::MSG_TRUNC != 0,
            src,
            local_addr,
            ifindex,
        })
    }
}

/// The IP_PKTINFO control message of a received datagram.
fn pktinfo(h: &libc::msghdr) -> Option<libc::in_pktinfo> {
    if h.msg_control.is_null() || h.msg_controllen > CMSG_BUF as _ {
        return None;
    }
    // SAFETY: `h` was filled by recvmmsg: msg_control points to our CMSG_BUF-byte buffer and
    // msg_controllen (checked above) is the part the kernel wrote; CMSG_FIRSTHDR/NXTHDR stay
    // inside it and return null at its end. The payload is read unaligned after checking that
    // cmsg_len covers an in_pktinfo.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IP
                && (*c).cmsg_type == libc::IP_PKTINFO
                && (*c).cmsg_len as usize
                    >= libc::CMSG_LEN(mem::size_of::<libc::in_pktinfo>() as u32) as usize
            {
                return Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(c).cast::<libc::in_pktinfo>(),
                ));
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

struct SendBatch {
    m: MsgVecs,
}

impl SendBatch {
    fn new() -> Self {
        SendBatch { m: MsgVecs::new() }
    }

    /// Sends `pending` (answer `j` is `answers[j][..t.len]`, from our address `src`) with
    /// `sendmmsg`; returns the number of answers the kernel refused.
    fn send(
        &mut self,
        fd: RawFd,
        pending: &[(usize, Transmit, Ipv4Addr)],
        answers: &[Vec<u8>],
    ) -> usize {
        let n = pending.len().min(BATCH);
        let info_len = mem::size_of::<libc::in_pktinfo>() as u32;
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(info_len) } as usize;
        for (k, &(j, t, src)) in pending[..n].iter().enumerate() {
            let Some(buf) = answers.get(j) else { continue };
            let len = t.len.min(buf.len());
            let mut name = zeroed_sockaddr_in();
            name.sin_family = libc::AF_INET as libc::sa_family_t;
            name.sin_port = t.dst.port().to_be();
            name.sin_addr.s_addr = u32::from(*t.dst.ip()).to_be();
            self.m.names[k] = name;
            self.m.iovs[k] = libc::iovec {
                // sendmmsg only reads through this pointer.
                iov_base: buf.as_ptr().cast_mut().cast(),
                iov_len: len,
            };
            let info = libc::in_pktinfo {
                // The broadcast leaves through the request's interface; unicasts are routed.
                ipi_ifindex: if t.broadcast {
                    t.ifindex as libc::c_int
                } else {
                    0
                },
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(src).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            self.m.cmsgs[k] = CmsgBuf([0; CMSG_BUF]);
            let h = self.m.wire(k, space);
            // SAFETY: msg_control points to our CMSG_BUF-byte, 8-aligned buffer and
            // msg_controllen = CMSG_SPACE(in_pktinfo) <= CMSG_BUF, so CMSG_FIRSTHDR is non-null
            // and the header plus its in_pktinfo payload fit in the buffer.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                if c.is_null() {
                    h.msg_hdr.msg_control = std::ptr::null_mut();
                    h.msg_hdr.msg_controllen = 0;
                } else {
                    (*c).cmsg_level = libc::IPPROTO_IP;
                    (*c).cmsg_type = libc::IP_PKTINFO;
                    (*c).cmsg_len = libc::CMSG_LEN(info_len) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>(), info);
                }
            }
        }
        let mut failed = 0;
        let mut start = 0;
        // Each round sends at least one message or skips one that failed: at most n rounds,
        // plus a few retries after EINTR/EAGAIN.
        let mut retries = 0;
        while start < n {
            // SAFETY: headers start..n were set up above and point to names, iovecs (into
            // `answers`, borrowed for this call) and control buffers that outlive the call.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.m.hdrs[start..].as_mut_ptr(),
                    (n - start) as libc::c_uint,
                    0,
                )
            };
            if r > 0 {
                start += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if matches!(
                e.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
            ) && retries < 8
            {
                retries += 1;
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let dst = pending.get(start).map(|p| p.1.dst);
            tracing::debug!(?dst, %e, "DHCP answer not sent");
            failed += 1;
            start += 1;
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{self, DhcpOption, MessageType};
    use dhcproto::{Decodable, Decoder, Encodable, Encoder};
    use std::net::UdpSocket;
    use std::path::Path;

    fn proxy_config() -> DhcpSettings {
        let text = format!(
            "[tftp]\nroot = \"{}\"\n[dhcp]\nenabled = true\n[boot]\nbios = \"undionly.kpxe\"\n",
            std::env::temp_dir().display()
        );
        let c = crate::config::Config::parse(&text, Path::new("t.toml")).unwrap();
        c.dhcp_settings(&c.host_index())
    }

    fn pxe_request(mac: [u8; 6]) -> Vec<u8> {
        let mut m = v4::Message::new_with_id(
            0x1234_5678,
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &mac,
        );
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(MessageType::Request));
        o.insert(DhcpOption::ClassIdentifier(
            b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
        ));
        o.insert(DhcpOption::ClientSystemArchitecture(
            v4::Architecture::X86_Bios,
        ));
        let mut out = Vec::new();
        m.encode(&mut Encoder::new(&mut out)).unwrap();
        out
    }

    /// The whole socket path on loopback without root: a listener that plays the PXE boot
    /// server port (on an ephemeral port) gets a batch of requests plus garbage, answers each
    /// PXE request to its source with the boot file, from the address IP_PKTINFO reported, and
    /// counts the garbage.
    #[test]
    fn loopback_batch_answers_pxe_boot_server_requests() {
        let config = proxy_config();
        let responder = Responder::new(&config, MemoryLeaseStore::new());
        let spec = ListenSpec {
            logical_port: PXE_PORT,
            bind: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            device: None,
        };
        let mut server = DhcpServer::with_listeners(responder, &[spec]).unwrap();
        let port: u16 = server.listening()[0]
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        const N: usize = 10;
        for i in 0..N {
            client
                .send_to(&pxe_request([2, 0, 0, 0, 0, i as u8]), ("127.0.0.1", port))
                .unwrap();
        }
        client.send_to(&[1, 2, 3], ("127.0.0.1", port)).unwrap();
        let shutdown = Arc::new(AtomicBool::new(false));
        let metrics = server.metrics();
        let stop = Arc::clone(&shutdown);
        let t = std::thread::spawn(move || {
            server.run(&stop).unwrap();
            server
        });
        let mut seen = Vec::new();
        let mut buf = [0u8; 1500];
        for _ in 0..N {
            let (len, from) = client.recv_from(&mut buf).expect("an answer");
            assert_eq!(from.port(), port, "answers come from the listening socket");
            let m = v4::Message::decode(&mut Decoder::new(&buf[..len])).unwrap();
            assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
            assert_eq!(m.xid(), 0x1234_5678);
            assert_eq!(
                m.siaddr(),
                Ipv4Addr::LOCALHOST,
                "next-server from IP_PKTINFO"
            );
            assert_eq!(
                m.opts().get(v4::OptionCode::ServerIdentifier),
                Some(&DhcpOption::ServerIdentifier(Ipv4Addr::LOCALHOST))
            );
            assert_eq!(
                std::str::from_utf8(m.fname().unwrap())
                    .unwrap()
                    .trim_end_matches('\0'),
                "undionly.kpxe"
            );
            seen.push(m.chaddr()[5]);
        }
        shutdown.store(true, Ordering::Relaxed);
        let server = t.join().unwrap();
        seen.sort_unstable();
        assert_eq!(seen, (0..N as u8).collect::<Vec<_>>());
        let s = metrics.snapshot();
        assert_eq!(s.received, N as u64 + 1);
        assert_eq!(s.pxe_boot_acks, N as u64);
        assert_eq!(s.drop_truncated, 1);
        assert_eq!(s.send_errors, 0);
        assert!(server.responder().store().is_empty());
    }

    /// The receive buffer is the one asked for even above `net.core.rmem_max` when we may force
    /// it (root), and at least what SO_RCVBUF grants otherwise.
    #[test]
    fn receive_buffer_is_raised() {
        let spec = ListenSpec {
            logical_port: SERVER_PORT,
            bind: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            device: None,
        };
        let l = open_listener(&spec).unwrap();
        let got = l.socket.recv_buffer_size().unwrap();
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        // Linux reports twice the size set (its bookkeeping overhead).
        let expected = if root {
            SOCKET_RCVBUF
        } else {
            SOCKET_RCVBUF.min(rmem_max)
        };
        assert!(got >= expected, "receive buffer {got} < {expected}");
    }

    #[test]
    fn unknown_interface_is_a_clear_error() {
        let config = proxy_config();
        let responder = Responder::new(&config, MemoryLeaseStore::new());
        let spec = ListenSpec {
            logical_port: SERVER_PORT,
            bind: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            device: Some("nosuchif0".into()),
        };
        let e = DhcpServer::with_listeners(responder, &[spec]).unwrap_err();
        assert!(
            matches!(&e, ServerError::Interface { name, .. } if name == "nosuchif0"),
            "{e}"
        );
    }
}
