//! Batched UDP I/O for the DHCP simulators: `sendmmsg`/`recvmmsg` over IPv4 sockets, the
//! sockets themselves (broadcast, address reuse, big buffers, bound to a device), and
//! `getrusage` for the reports.

use std::collections::BTreeMap;
use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// Datagrams per system call.
pub const BATCH: usize = 64;
/// Receive buffer per datagram (DHCP replies are at most a few hundred bytes; jumbo-safe).
const RECV_BUF: usize = 2048;

/// Options of [`udp_socket`].
#[derive(Debug, Clone)]
pub struct SocketOptions {
    pub bind: SocketAddrV4,
    pub interface: Option<String>,
    /// SO_RCVBUF / SO_SNDBUF wanted (root may exceed the sysctl caps with *BUFFORCE).
    pub rcvbuf: usize,
    pub sndbuf: usize,
}

/// An IPv4 UDP socket with SO_BROADCAST and SO_REUSEADDR, optional SO_BINDTODEVICE, the buffer
/// sizes asked for (forced past `net.core.*mem_max` when allowed), bound to `opts.bind`. Blocking
/// (receives use MSG_DONTWAIT).
pub fn udp_socket(opts: &SocketOptions) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    if let Some(dev) = &opts.interface {
        s.bind_device(Some(dev.as_bytes()))
            .map_err(|e| io::Error::new(e.kind(), format!("SO_BINDTODEVICE {dev}: {e}")))?;
    }
    set_buf(&s, libc::SO_RCVBUFFORCE, opts.rcvbuf, |s, n| {
        s.set_recv_buffer_size(n)
    })?;
    set_buf(&s, libc::SO_SNDBUFFORCE, opts.sndbuf, |s, n| {
        s.set_send_buffer_size(n)
    })?;
    s.bind(&opts.bind.into())
        .map_err(|e| io::Error::new(e.kind(), format!("bind {}: {e}", opts.bind)))?;
    Ok(s)
}

fn set_buf(
    s: &Socket,
    force: libc::c_int,
    size: usize,
    fallback: impl Fn(&Socket, usize) -> io::Result<()>,
) -> io::Result<()> {
    if size == 0 {
        return Ok(());
    }
    let v: libc::c_int = size.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: setsockopt on an open socket with a pointer to a live c_int and its exact size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            force,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 { Ok(()) } else { fallback(s, size) }
}

/// Errors of sends, by errno name (ENOBUFS, EAGAIN, ...).
pub type ErrorCounts = BTreeMap<String, u64>;

pub fn errno_name(e: i32) -> String {
    match e {
        libc::ENOBUFS => "ENOBUFS".into(),
        libc::EAGAIN => "EAGAIN".into(),
        libc::ENETUNREACH => "ENETUNREACH".into(),
        libc::EHOSTUNREACH => "EHOSTUNREACH".into(),
        libc::ECONNREFUSED => "ECONNREFUSED".into(),
        libc::EPERM => "EPERM".into(),
        libc::EACCES => "EACCES".into(),
        libc::EMSGSIZE => "EMSGSIZE".into(),
        libc::EINVAL => "EINVAL".into(),
        _ => format!("errno {e}"),
    }
}

/// Up to [`BATCH`] datagrams waiting for one `sendmmsg`.
pub struct SendBatch {
    bufs: Vec<Vec<u8>>,
    dests: Vec<SocketAddrV4>,
    len: usize,
}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl SendBatch {
    pub fn new() -> Self {
        Self {
            bufs: (0..BATCH).map(|_| Vec::with_capacity(600)).collect(),
            dests: vec![SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0); BATCH],
            len: 0,
        }
    }

    pub fn is_full(&self) -> bool {
        self.len == BATCH
    }

    /// The buffer of the next datagram; [`commit`](Self::commit) queues it.
    pub fn slot(&mut self) -> &mut Vec<u8> {
        assert!(!self.is_full(), "flush a full batch first");
        &mut self.bufs[self.len]
    }

    pub fn commit(&mut self, dest: SocketAddrV4) {
        self.dests[self.len] = dest;
        self.len += 1;
    }

    /// Direct access to buffer `i` (the flood patches prebuilt datagrams in place).
    pub fn buf_mut(&mut self, i: usize) -> &mut Vec<u8> {
        &mut self.bufs[i]
    }

    /// Marks the first `n` buffers as queued to `dest`, keeping their contents.
    pub fn fill(&mut self, n: usize, dest: SocketAddrV4) {
        let n = n.min(BATCH);
        for d in &mut self.dests[..n] {
            *d = dest;
        }
        self.len = n;
    }

    /// Sends everything queued. A datagram the kernel refuses (ENOBUFS, ...) is counted in
    /// `errors` and dropped; the rest of the batch is still sent. Returns datagrams sent.
    pub fn flush(&mut self, fd: RawFd, errors: &mut ErrorCounts) -> u64 {
        let n = self.len;
        self.len = 0;
        if n == 0 {
            return 0;
        }
        let mut addrs: [MaybeUninit<libc::sockaddr_in>; BATCH] = [MaybeUninit::uninit(); BATCH];
        let mut iovs: [MaybeUninit<libc::iovec>; BATCH] = [MaybeUninit::uninit(); BATCH];
        // SAFETY: mmsghdr is plain data; all-zero is a valid value (null pointers, zero lengths).
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            let d = self.dests[i];
            addrs[i].write(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: d.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*d.ip()).to_be(),
                },
                sin_zero: [0; 8],
            });
            iovs[i].write(libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.bufs[i].len(),
            });
            hdrs[i].msg_hdr.msg_name = addrs[i].as_mut_ptr().cast();
            hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdrs[i].msg_hdr.msg_iov = iovs[i].as_mut_ptr();
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        let mut off = 0;
        let mut sent = 0u64;
        let mut interrupted = 0;
        while off < n {
            // SAFETY: hdrs[off..n] are initialised above and point into `addrs`, `iovs` and
            // `self.bufs`, all alive and unmoved for the duration of the call.
            let r = unsafe {
                libc::sendmmsg(fd, hdrs[off..].as_mut_ptr(), (n - off) as libc::c_uint, 0)
            };
            if r > 0 {
                off += r as usize;
                sent += r as u64;
                continue;
            }
            let e = io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if e == libc::EINTR && interrupted < 16 {
                interrupted += 1;
                continue;
            }
            // The first datagram of the rest failed: count it, drop it, go on.
            *errors.entry(errno_name(e)).or_default() += 1;
            off += 1;
        }
        sent
    }
}

/// Up to [`BATCH`] datagrams from one `recvmmsg`.
pub struct RecvBatch {
    bufs: Vec<[u8; RECV_BUF]>,
    lens: [usize; BATCH],
    from: [SocketAddrV4; BATCH],
    n: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> Self {
        Self {
            bufs: vec![[0u8; RECV_BUF]; BATCH],
            lens: [0; BATCH],
            from: [SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0); BATCH],
            n: 0,
        }
    }

    /// Receives what is queued without blocking; `Ok(0)` when nothing is.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.recv_up_to(fd, BATCH)
    }

    /// Like [`recv`](Self::recv), at most `max` (1..=[`BATCH`]) datagrams: a socket that holds
    /// a few datagrams at a time costs less to set up for.
    pub fn recv_up_to(&mut self, fd: RawFd, max: usize) -> io::Result<usize> {
        let max = max.clamp(1, BATCH);
        self.n = 0;
        let mut addrs: [MaybeUninit<libc::sockaddr_in>; BATCH] = [MaybeUninit::zeroed(); BATCH];
        let mut iovs: [MaybeUninit<libc::iovec>; BATCH] = [MaybeUninit::uninit(); BATCH];
        // SAFETY: mmsghdr is plain data; all-zero is a valid value.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..max {
            iovs[i].write(libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: RECV_BUF,
            });
            hdrs[i].msg_hdr.msg_name = addrs[i].as_mut_ptr().cast();
            hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdrs[i].msg_hdr.msg_iov = iovs[i].as_mut_ptr();
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the first `max` headers point at live buffers of RECV_BUF bytes and
        // sockaddr_ins of the stated length; all outlive the call.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                max as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let n = r as usize;
        for i in 0..n {
            self.lens[i] = (hdrs[i].msg_len as usize).min(RECV_BUF);
            // SAFETY: zero-initialised above and possibly filled by the kernel: always valid.
            let a = unsafe { addrs[i].assume_init() };
            self.from[i] = SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            );
        }
        self.n = n;
        Ok(n)
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn datagram(&self, i: usize) -> (&[u8], SocketAddrV4) {
        (&self.bufs[i][..self.lens[i]], self.from[i])
    }
}

/// Waits until one of `fds` is readable or `timeout` passes.
pub fn wait_readable(fds: &[RawFd], timeout: Duration) {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(3600) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `p` holds p.len() initialised pollfds; `ts` is a valid timespec; no signal mask.
    unsafe {
        libc::ppoll(
            p.as_mut_ptr(),
            p.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
}

/// (user, system) CPU time of this process so far.
pub fn cpu_time() -> (Duration, Duration) {
    let mut u = MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into the pointer we give it.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) };
    if r != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    // SAFETY: zero-initialised and filled by a successful getrusage.
    let u = unsafe { u.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    (tv(u.ru_utime), tv(u.ru_stime))
}

/// The socket's effective buffer size (the kernel reports twice what was set).
pub fn buffer_sizes(s: &Socket) -> (usize, usize) {
    (
        s.recv_buffer_size().unwrap_or(0),
        s.send_buffer_size().unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trip_on_loopback() {
        let opts = SocketOptions {
            bind: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            interface: None,
            rcvbuf: 1 << 20,
            sndbuf: 1 << 20,
        };
        let rx = udp_socket(&opts).unwrap();
        let tx = udp_socket(&opts).unwrap();
        let to = rx.local_addr().unwrap().as_socket_ipv4().unwrap();
        let mut b = SendBatch::new();
        for i in 0..100u8 {
            if b.is_full() {
                assert_eq!(b.flush(tx.as_raw_fd(), &mut ErrorCounts::new()), 64);
            }
            let s = b.slot();
            s.clear();
            s.extend_from_slice(&[i; 10]);
            b.commit(to);
        }
        let mut errors = ErrorCounts::new();
        assert_eq!(b.flush(tx.as_raw_fd(), &mut errors), 36);
        assert!(errors.is_empty());
        let mut r = RecvBatch::new();
        let mut got = vec![];
        for _ in 0..100 {
            wait_readable(&[rx.as_raw_fd()], Duration::from_millis(100));
            r.recv(rx.as_raw_fd()).unwrap();
            for i in 0..r.len() {
                let (d, from) = r.datagram(i);
                assert_eq!(d.len(), 10);
                assert_eq!(from.ip(), &Ipv4Addr::LOCALHOST);
                got.push(d[0]);
            }
            if got.len() == 100 {
                break;
            }
        }
        assert_eq!(got, (0..100).collect::<Vec<u8>>());
        assert_eq!(r.recv(rx.as_raw_fd()).unwrap(), 0);
        let (u, s) = cpu_time();
        assert!(u + s > Duration::ZERO);
    }
}
