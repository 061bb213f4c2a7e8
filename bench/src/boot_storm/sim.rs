//! What happens to one client after any event: its datagrams go out, its next transfer gets
//! a socket (or its HTTP connection is opened, written and read), its timer is re-armed, and it
//! is counted once finished. The loop's state lives here.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::RawFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use pxe_net::mmsg::{self, ErrorCounts, SendBatch};
use pxe_net::{Epoll, Errno, EventFlags};
use pxe_proto::consts::PXE_PORT;
use rustix::net::SendFlags;

use super::TOKEN_HTTP;
use super::report::{HttpStats, Packets, Retransmits, Tally};
use crate::boot_client::{BootClient, Step, Transmit};
use crate::dhcp_client::Dest;
use crate::http_client::HttpFailure;

/// What a failed socket call means for an HTTP fetch.
fn http_io_failure(e: &io::Error) -> HttpFailure {
    match e.raw_os_error().map(Errno::from_raw_os_error) {
        Some(Errno::CONNREFUSED) => HttpFailure::Refused,
        Some(Errno::CONNRESET | Errno::PIPE | Errno::CONNABORTED) => HttpFailure::Reset,
        Some(Errno::TIMEDOUT) => HttpFailure::Timeout,
        Some(n) => HttpFailure::Io(mmsg::errno_name(n.raw_os_error())),
        None => HttpFailure::Io(e.kind().to_string()),
    }
}

/// Where a client stands, for the progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    Waiting,
    In(Step),
    Done,
    Failed,
    /// Stopped on purpose after a phase.
    Stalled,
}

impl Stage {
    pub(super) fn index(self) -> usize {
        match self {
            Stage::Waiting => 0,
            Stage::In(s) => 1 + s.index(),
            Stage::Done => 5,
            Stage::Failed => 6,
            Stage::Stalled => 7,
        }
    }

    fn of(c: &BootClient) -> Stage {
        if c.is_done() {
            Stage::Done
        } else if c.is_stalled() {
            Stage::Stalled
        } else if c.is_finished() {
            Stage::Failed
        } else {
            Stage::In(c.step())
        }
    }
}

/// Expected file contents by name, read once from the verify directory.
pub(super) struct Files {
    dir: Option<PathBuf>,
    cache: HashMap<String, Option<Arc<[u8]>>>,
}

impl Files {
    pub(super) fn new(dir: Option<PathBuf>) -> Files {
        Files {
            dir,
            cache: HashMap::new(),
        }
    }

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

/// The loop's state (everything but the receive buffers and the arrivals).
pub(super) struct Sim {
    pub(super) start: Instant,
    pub(super) clients: Vec<Option<BootClient>>,
    pub(super) stage: Vec<Stage>,
    pub(super) stage_counts: [usize; 8],
    pub(super) socks: Vec<Option<UdpSocket>>,
    pub(super) open_socks: usize,
    pub(super) max_open: usize,
    /// Per client: its HTTP connection, and whether epoll watches it for writability.
    pub(super) tcp: Vec<Option<(TcpStream, bool)>>,
    pub(super) open_tcp: usize,
    pub(super) http: HttpStats,
    /// Where every HTTP read lands.
    pub(super) http_buf: Box<[u8]>,
    pub(super) armed: Vec<Option<Instant>>,
    pub(super) timers: BinaryHeap<Reverse<(Instant, u32)>>,
    pub(super) dhcp_fd: RawFd,
    pub(super) proxy_fd: Option<RawFd>,
    pub(super) dhcp_server: SocketAddrV4,
    pub(super) out: SendBatch,
    pub(super) out_proxy: SendBatch,
    pub(super) buf: Vec<u8>,
    pub(super) files: Files,
    pub(super) sources: Vec<Ipv4Addr>,
    /// Transfers from the client's leased address (`--source-from-lease`).
    pub(super) source_from_lease: bool,
    pub(super) interface: Option<String>,
    pub(super) epoll: Epoll,
    pub(super) finished: usize,
    pub(super) recorded: Vec<bool>,
    pub(super) tally: Tally,
    pub(super) packets: Packets,
    pub(super) send_errors: ErrorCounts,
    pub(super) recv_errors: ErrorCounts,
    pub(super) bytes: u64,
    pub(super) retransmits: Retransmits,
    /// Per client: (bytes, DHCP retransmits, TFTP retransmits) already added to the totals.
    pub(super) counted: Vec<(u64, u64, u64)>,
    pub(super) unknown_client: u64,
    pub(super) stray: u64,
    pub(super) gro: bool,
    /// RLIMIT_NOFILE (for the report).
    pub(super) fd_limit: u64,
    /// The shared DHCP sockets, open while the loop runs (it uses `dhcp_fd` and `proxy_fd`).
    pub(super) _dhcp_socks: (Option<UdpSocket>, Option<UdpSocket>),
}

impl Sim {
    pub(super) fn set_stage(&mut self, i: usize, s: Stage) {
        let old = self.stage[i];
        if old != s {
            self.stage_counts[old.index()] -= 1;
            self.stage_counts[s.index()] += 1;
            self.stage[i] = s;
        }
    }

    /// Client `i`'s source address: its leased one (`--source-from-lease`), else
    /// `sources[i % len]`, else none (the wildcard).
    fn source(&self, i: usize, c: &BootClient) -> Option<Ipv4Addr> {
        if self.source_from_lease
            && let Some(a) = c.leased_address()
        {
            return Some(a);
        }
        match self.sources.len() {
            0 => None,
            n => Some(self.sources[i % n]),
        }
    }

    /// A fresh socket for client `i`'s next transfer, watched by epoll.
    fn open_socket(&mut self, i: usize, c: &BootClient) -> io::Result<()> {
        let s = pxe_net::udp_nonblocking(pxe_net::Family::V4)?;
        if let Some(dev) = &self.interface {
            pxe_net::bind_device(&s, dev)?;
        }
        let src = self.source(i, c).unwrap_or(Ipv4Addr::UNSPECIFIED);
        pxe_net::bind(&s, SocketAddrV4::new(src, 0))?;
        if self.gro {
            pxe_net::enable_gro(&s)?;
        }
        self.epoll.add(&s, i as u64, EventFlags::IN)?;
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
    fn open_tcp(&mut self, i: usize, c: &BootClient, to: SocketAddrV4) -> io::Result<()> {
        let src = self.source(i, c);
        let s = pxe_net::tcp_connect_nonblocking(to, src, self.interface.as_deref())?;
        let events = EventFlags::IN | EventFlags::OUT;
        self.epoll.add(&s, TOKEN_HTTP | i as u64, events)?;
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
            if let Err(e) = self.open_tcp(i, c, to) {
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
            let sent = rustix::net::send(&*s, c.http_output(), SendFlags::NOSIGNAL);
            match sent.map_err(io::Error::from) {
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
            let mut events = EventFlags::IN;
            if want_out {
                events |= EventFlags::OUT;
            }
            *out_armed = want_out;
            if let Err(e) = self.epoll.modify(&*s, TOKEN_HTTP | i as u64, events) {
                c.handle_http_error(now, http_io_failure(&e));
                self.close_tcp(i);
            }
        }
    }

    /// epoll reported client `i`'s HTTP connection (`ev`: its event bits): the connect's end,
    /// or bytes (or the end, or an error) to read.
    pub(super) fn http_event(&mut self, i: usize, ev: EventFlags) {
        let Some(mut c) = self.clients[i].take() else {
            return;
        };
        let now = Instant::now();
        if let Some((s, _)) = &self.tcp[i] {
            let err_hup = EventFlags::ERR | EventFlags::HUP;
            if c.http_connecting() {
                if ev.intersects(EventFlags::OUT | err_hup) {
                    match s.take_error() {
                        Ok(Some(e)) | Err(e) => c.handle_http_error(now, http_io_failure(&e)),
                        // An event left over from an earlier socket of this client cannot
                        // pass for this one's connect.
                        Ok(None) if s.peer_addr().is_ok() => c.handle_http_connected(now),
                        Ok(None) => {}
                    }
                }
            } else if ev.intersects(EventFlags::IN | err_hup) {
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

    pub(super) fn flush_dhcp(&mut self) {
        self.packets.dhcp_sent += self.out.flush(self.dhcp_fd, &mut self.send_errors);
        if let Some(pfd) = self.proxy_fd {
            self.packets.dhcp_sent += self.out_proxy.flush(pfd, &mut self.send_errors);
        }
    }

    /// After any event of client `i`: send what it has, start its next transfer, re-arm its
    /// timer, count it if it finished.
    pub(super) fn drive(&mut self, i: usize, now: Instant) {
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
                        Some(s) => match s.send_to(&self.buf, to) {
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
            match self.open_socket(i, &c) {
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
                self.tally.record(&c, self.start, None);
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
}
