//! The DHCP service on real sockets: the I/O around the sans-IO [`Responder`].
//!
//! Sockets: UDP `0.0.0.0:67`, and `0.0.0.0:4011` when `dhcp.pxe_port_4011`, each with
//! SO_REUSEADDR, SO_BROADCAST and IP_PKTINFO. With `dhcp.interfaces` set there is one socket per
//! interface and port, bound to its device (SO_BINDTODEVICE), so the server hears nothing from
//! other links; otherwise one socket per port hears every interface.
//!
//! IP_PKTINFO tells, for each request, the interface it came in on (`ipi_ifindex`, whose name
//! the server looks up once per interface and hands to the responder as the request's link
//! when it is not relayed) and our address there (`ipi_spec_dst`: the responder's server identifier and next-server when they
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
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use pxe_net::{PktInfo, RecvBatch, Retry, SendBatch};
use rustix::event::{PollFd, PollFlags, Timespec};

use super::leases::{IfName, Lease, LeaseError, LeaseStore, MemoryLeaseStore, RedbLeaseStore};
use super::metrics::DhcpMetrics;
use super::responder::{Action, RecvMeta, Responder};
use super::{DhcpMode, DhcpReload, DhcpSettings};
use crate::journey::{DhcpAnswer, Journeys, LatencyMode, Now};
use crate::metrics;
use crate::store::{PgLeaseStore, Store};
use crate::xdp::Fallback;
use pxe_proto::MacAddr;
use pxe_proto::consts::{DHCP_SERVER_PORT as SERVER_PORT, PXE_PORT};

/// Datagrams taken per `recvmmsg` (and answers per `sendmmsg`), all committed by one fsync.
/// At most UIO_MAXIOV (1024), the kernel's limit for one call.
pub const BATCH: usize = 512;
/// Receive buffer per datagram. DHCP messages are at most an Ethernet MTU in practice (clients
/// announce 576..1500 in option 57); a longer datagram is dropped and counted.
const RECV_BUF: usize = 2048;
/// Room for one answer before its buffer grows (DHCP answers are at most an Ethernet MTU).
const ANSWER_BUF: usize = 1500;
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
/// Answers refused with EINTR/EAGAIN are retried this often, 1 ms apart, before they are dropped.
const SEND_RETRY: Retry = Retry {
    attempts: 8,
    would_block: true,
    pause: Duration::from_millis(1),
};

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

/// The lease table the service runs with: redb or PostgreSQL in full mode, memory in proxy
/// mode (proxy mode leases nothing).
#[derive(Debug)]
pub enum ServiceStore {
    Memory(MemoryLeaseStore),
    Redb(Box<RedbLeaseStore>),
    Postgres(Box<PgLeaseStore>),
}

impl LeaseStore for ServiceStore {
    fn get(&self, ip: Ipv4Addr) -> Option<Lease> {
        match self {
            ServiceStore::Memory(s) => s.get(ip),
            ServiceStore::Redb(s) => s.get(ip),
            ServiceStore::Postgres(s) => s.get(ip),
        }
    }
    fn ip_of(&self, mac: &MacAddr) -> Option<Ipv4Addr> {
        match self {
            ServiceStore::Memory(s) => s.ip_of(mac),
            ServiceStore::Redb(s) => s.ip_of(mac),
            ServiceStore::Postgres(s) => s.ip_of(mac),
        }
    }
    fn put(&mut self, lease: &Lease) -> Result<(), LeaseError> {
        match self {
            ServiceStore::Memory(s) => s.put(lease),
            ServiceStore::Redb(s) => s.put(lease),
            ServiceStore::Postgres(s) => s.put(lease),
        }
    }
    fn len(&self) -> usize {
        match self {
            ServiceStore::Memory(s) => s.len(),
            ServiceStore::Redb(s) => s.len(),
            ServiceStore::Postgres(s) => s.len(),
        }
    }
    fn for_each(&self, f: &mut dyn FnMut(&Lease)) {
        match self {
            ServiceStore::Memory(s) => s.for_each(f),
            ServiceStore::Redb(s) => s.for_each(f),
            ServiceStore::Postgres(s) => s.for_each(f),
        }
    }
    fn written_by(&self, ip: Ipv4Addr) -> Option<&str> {
        match self {
            ServiceStore::Memory(s) => s.written_by(ip),
            ServiceStore::Redb(s) => s.written_by(ip),
            ServiceStore::Postgres(s) => s.written_by(ip),
        }
    }
    fn begin_batch(&mut self) {
        match self {
            ServiceStore::Memory(s) => s.begin_batch(),
            ServiceStore::Redb(s) => s.begin_batch(),
            ServiceStore::Postgres(s) => s.begin_batch(),
        }
    }
    fn commit_batch(&mut self) -> Result<(), LeaseError> {
        match self {
            ServiceStore::Memory(s) => s.commit_batch(),
            ServiceStore::Redb(s) => s.commit_batch(),
            ServiceStore::Postgres(s) => s.commit_batch(),
        }
    }
}

/// Interface names remembered (more are resolved again: interfaces come and go).
const MAX_IFNAMES: usize = 64;

/// Interface names by index: each looked up once (`if_indextoname`), all forgotten at a
/// reload (an interface may have been renamed). An index that cannot be named gets the empty
/// name: its direct clients count against no link.
#[derive(Debug, Default)]
struct IfNames(Vec<(u32, IfName)>);

impl IfNames {
    fn name(&mut self, ifindex: u32) -> IfName {
        if let Some(&(_, n)) = self.0.iter().find(|(i, _)| *i == ifindex) {
            return n;
        }
        let n = pxe_net::if_indextoname(ifindex)
            .ok()
            .and_then(|s| IfName::new(&s))
            .unwrap_or_default();
        if self.0.len() >= MAX_IFNAMES {
            self.0.clear();
        }
        self.0.push((ifindex, n));
        n
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
    socket: UdpSocket,
    logical_port: u16,
    /// The bound device's index, 0 when the socket hears every interface.
    ifindex: u32,
    label: String,
}

/// The DHCP service: sockets, responder, batch buffers.
pub struct DhcpServer<S: LeaseStore> {
    responder: Responder<S>,
    listeners: Vec<Listener>,
    /// A batch of requests (with their IP_PKTINFO).
    recv: RecvBatch,
    /// The answers to the current batch (each with its IP_PKTINFO), sent once it is committed.
    send: SendBatch,
    /// The discovery policy for interfaces without XDP (`[xdp]`), before the responder.
    filter: Option<Fallback>,
    /// New configurations (SIGHUP), applied between batches.
    reloads: Option<crossbeam::channel::Receiver<DhcpReload>>,
    /// Names of the interfaces requests arrive on.
    ifnames: IfNames,
    /// Where answers are recorded once sent (journeys, answer latency).
    journeys: Option<Arc<Journeys>>,
    /// The answers of the current batch, for the journeys (reserved for [`BATCH`]).
    answered: Vec<Answered>,
}

/// An answer of the current batch, as the journeys record it once it is sent.
#[derive(Debug, Clone, Copy)]
struct Answered {
    mac: MacAddr,
    answer: DhcpAnswer,
    /// yiaddr (full mode's address), else ciaddr (the client's own, port 4011).
    address: Option<Ipv4Addr>,
}

/// `yiaddr` and `ciaddr` of a BOOTP message.
const BOOTP_YIADDR: std::ops::Range<usize> = 16..20;
const BOOTP_CIADDR: std::ops::Range<usize> = 12..16;

impl Answered {
    /// Read back from the answer's own bytes.
    fn of(bytes: &[u8], msg: dhcproto::v4::MessageType, mode: DhcpMode) -> Option<Answered> {
        use dhcproto::v4::MessageType as T;
        let addr = |r: std::ops::Range<usize>| {
            let b: [u8; 4] = bytes.get(r)?.try_into().ok()?;
            Some(Ipv4Addr::from(b)).filter(|ip| !ip.is_unspecified())
        };
        let chaddr = bytes
            .get(pxe_proto::consts::BOOTP_CHADDR.start..)?
            .get(..6)?;
        let answer = match (msg, mode) {
            (T::Offer, DhcpMode::Proxy) => DhcpAnswer::ProxyOffer,
            (T::Offer, DhcpMode::Full) => DhcpAnswer::Offer,
            (T::Nak, _) => DhcpAnswer::Nak,
            _ => DhcpAnswer::Ack,
        };
        Some(Answered {
            mac: MacAddr(chaddr.try_into().ok()?),
            answer,
            address: addr(BOOTP_YIADDR).or_else(|| addr(BOOTP_CIADDR)),
        })
    }
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
    /// Binds the sockets `settings` asks for; in full mode the leases live in `store` (the
    /// store the caller opened, see [`Store::open`]), else in the redb file
    /// `settings.lease_db`.
    pub fn bind(d: &DhcpSettings, store: Option<&Store>) -> Result<Self, ServerError> {
        let leases_err = |source| ServerError::Leases {
            path: d.lease_db.clone(),
            source,
        };
        let store = match (d.mode, store) {
            (DhcpMode::Proxy, _) => ServiceStore::Memory(MemoryLeaseStore::new()),
            (DhcpMode::Full, Some(store)) => store.lease_store().map_err(leases_err)?,
            (DhcpMode::Full, None) => {
                let db = super::leases::open_database(&d.lease_db).map_err(leases_err)?;
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
            recv: RecvBatch::with_capacity(BATCH, RECV_BUF).with_control(),
            send: SendBatch::with_capacity(BATCH, ANSWER_BUF),
            filter: None,
            reloads: None,
            ifnames: IfNames::default(),
            journeys: None,
            answered: Vec::with_capacity(BATCH),
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
        self.ifnames.0.clear();
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

    /// Where the responder records the addresses hosts' requests name (proxy mode).
    /// Shares full-mode clients with the other instances (see [`Responder::set_balance`]).
    pub fn set_balance(&mut self, balance: Arc<crate::dhcp::balance::Balance>) {
        self.responder.set_balance(balance);
    }

    pub fn set_learned(&mut self, learned: Arc<crate::dhcp::learned::LearnedAddresses>) {
        self.responder.set_learned(learned);
    }

    /// Where requests, answers and answer latencies are recorded.
    pub fn set_journeys(&mut self, journeys: Arc<Journeys>) {
        self.responder.set_journeys(Arc::clone(&journeys));
        self.journeys = Some(journeys);
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
        // Lent to the loop so that the poll set can borrow the sockets while batches are
        // served.
        let listeners = std::mem::take(&mut self.listeners);
        let result = self.serve(&listeners, shutdown);
        self.listeners = listeners;
        result
    }

    fn serve(&mut self, listeners: &[Listener], shutdown: &AtomicBool) -> Result<(), ServerError> {
        let mut fds: Vec<PollFd<'_>> = listeners
            .iter()
            .map(|l| PollFd::new(&l.socket, PollFlags::IN))
            .collect();
        let timeout = Timespec {
            tv_sec: 0,
            tv_nsec: (POLL_MS * 1_000_000).into(),
        };
        while !shutdown.load(Ordering::Relaxed) {
            while let Some(reload) = self.reloads.as_ref().and_then(|r| r.try_recv().ok()) {
                self.reconfigure(reload);
            }
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(io::Error::from(e).into()),
            }
            for (pfd, l) in fds.iter().zip(listeners) {
                if pfd.revents().is_empty() {
                    continue;
                }
                for _ in 0..BATCHES_PER_TURN {
                    if self.serve_batch(l)? < BATCH {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Receives one batch on listener `l`, answers it; returns the number of datagrams.
    fn serve_batch(&mut self, l: &Listener) -> Result<usize, ServerError> {
        let n = match self.recv.recv(l.socket.as_raw_fd()) {
            Ok(n) => n,
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
        let received = Instant::now();
        let mode = self.responder.mode();
        let m = Arc::clone(self.responder.metrics());
        self.send.clear();
        self.answered.clear();
        self.responder.begin_batch();
        for j in 0..n {
            let Some(src) = self.recv.source(j) else {
                continue;
            };
            if self.recv.is_truncated(j) {
                metrics::inc(&m.received);
                metrics::inc(&m.recv_truncated);
                continue;
            }
            let (local_addr, ifindex) = match self.recv.pktinfo(j) {
                Some(p) => (p.local, p.ifindex),
                None => (Ipv4Addr::UNSPECIFIED, 0),
            };
            let ifindex = if ifindex != 0 {
                ifindex
            } else {
                listener_ifindex
            };
            let meta = RecvMeta {
                src,
                local_addr,
                ifindex,
                ifname: self.ifnames.name(ifindex),
                port: logical_port,
            };
            let bytes = self.recv.data(j);
            if let Some(f) = &mut self.filter
                && f.check(bytes, meta.ifindex).is_drop()
            {
                continue;
            }
            if let Action::Respond(t) = self.responder.handle(now, bytes, &meta, self.send.slot()) {
                self.send.slot().truncate(t.len);
                if self.journeys.is_some()
                    && let Some(a) = Answered::of(self.send.slot(), t.msg_type, mode)
                {
                    self.answered.push(a);
                }
                // The broadcast leaves through the request's interface; unicasts are routed.
                let out = if t.broadcast { t.ifindex } else { 0 };
                self.send
                    .commit_with_pktinfo(t.dst, PktInfo::from_local(local_addr, out));
            }
        }
        if let Err(e) = self.responder.commit_batch() {
            tracing::warn!(%e, answers = self.send.len(), "lease commit failed: batch dropped");
            for _ in 0..self.send.len() {
                metrics::inc(&m.drop_batch_commit);
            }
            self.send.clear();
            return Ok(n);
        }
        if !self.send.is_empty() {
            self.send
                .flush_with(l.socket.as_raw_fd(), SEND_RETRY, |dst, e| {
                    let dst = Some(dst);
                    tracing::debug!(?dst, %e, "DHCP answer not sent");
                    metrics::inc(&m.send_errors);
                });
            self.record_answers(received);
        }
        Ok(n)
    }

    /// After a batch's answers left: their latencies (from the batch's receipt) and the
    /// journeys' OFFER/ACK/NAK phases with the addresses they name.
    fn record_answers(&self, received: Instant) {
        let Some(j) = &self.journeys else {
            return;
        };
        let now = Now::current();
        let latency = now.mono.saturating_duration_since(received);
        let h = j.timings().dhcp_latency(match self.responder.mode() {
            DhcpMode::Proxy => LatencyMode::Proxy,
            DhcpMode::Full => LatencyMode::Full,
        });
        for _ in 0..self.answered.len() {
            h.observe(latency);
        }
        let answered = &self.answered;
        j.with(|t| {
            for a in answered {
                t.dhcp_answer(now, a.mac, a.answer, a.address);
            }
        });
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
        Some(name) => pxe_net::if_nametoindex(name).map_err(|source| ServerError::Interface {
            name: name.clone(),
            source,
        })?,
        None => 0,
    };
    let socket = pxe_net::udp(pxe_net::Family::V4).map_err(err("socket"))?;
    pxe_net::set_reuse_address(&socket, true).map_err(err("SO_REUSEADDR"))?;
    pxe_net::set_broadcast(&socket, true).map_err(err("SO_BROADCAST"))?;
    pxe_net::set_pktinfo(&socket, true).map_err(err("IP_PKTINFO"))?;
    if let Some(d) = &spec.device {
        pxe_net::bind_device(&socket, d).map_err(err("SO_BINDTODEVICE"))?;
    }
    raise_recv_buffer(&socket, &label);
    pxe_net::bind(&socket, spec.bind).map_err(err("bind"))?;
    let label = match socket.local_addr().ok() {
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
fn raise_recv_buffer(socket: &UdpSocket, label: &str) {
    if let Err(e) = pxe_net::force_recv_buffer(socket, SOCKET_RCVBUF) {
        tracing::debug!(socket = %label, %e, "SO_RCVBUF not raised");
    }
}

#[cfg(test)]
mod tests;
