//! Batched UDP I/O for the simulators: `sendmmsg`/`recvmmsg` over IPv4 sockets (and UDP GRO
//! receives for TFTP windows), the
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

/// One non-blocking `recvmmsg` into `hdrs`; `Ok(0)` when nothing is queued.
///
/// # Safety
/// Every header must point at live buffers (iovecs, name, control) of the lengths it states,
/// valid for writes for the duration of the call.
unsafe fn recvmmsg_nowait(fd: RawFd, hdrs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    // SAFETY: the caller vouches for the headers; `hdrs` holds `len` of them.
    let r = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr(),
            hdrs.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if r >= 0 {
        return Ok(r as usize);
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
        _ => Err(e),
    }
}

fn v4(a: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
        u16::from_be(a.sin_port),
    )
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
        let n = unsafe { recvmmsg_nowait(fd, &mut hdrs[..max]) }?;
        for i in 0..n {
            self.lens[i] = (hdrs[i].msg_len as usize).min(RECV_BUF);
            // SAFETY: zero-initialised above and possibly filled by the kernel: always valid.
            self.from[i] = v4(&unsafe { addrs[i].assume_init() });
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

/// `SOL_UDP` option and control message of UDP generic receive offload (linux/udp.h).
const UDP_GRO: libc::c_int = 104;
/// Largest datagram a GRO receive can hand over (an IPv4 packet's payload at most).
const GRO_BUF: usize = 65536;
/// Messages per `recvmmsg` on a GRO socket (each may hold a whole TFTP window).
pub const GRO_BATCH: usize = 8;
/// Room for one `UDP_GRO` control message (an int) with its header, 8-byte aligned.
const GRO_CMSG: usize = 32;

/// Asks the kernel to hand this UDP socket coalesced datagrams (`UDP_GRO`): a burst the peer
/// sent with UDP GSO (a TFTP window) arrives as one receive with the segment size in a control
/// message, instead of one receive per datagram. Fails on kernels without it (before 5.0).
pub fn enable_gro(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a descriptor with a pointer to a live c_int and its exact size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            UDP_GRO,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Up to [`GRO_BATCH`] receives from one `recvmmsg` on a socket with [`enable_gro`]: each may be
/// several datagrams of one sender glued together, split again by [`GroBatch::segments`]. The
/// buffers are allocated once and reused for every receive.
pub struct GroBatch {
    bufs: Vec<u8>,
    ctrl: Vec<u64>,
    lens: [usize; GRO_BATCH],
    seg: [usize; GRO_BATCH],
    from: [SocketAddrV4; GRO_BATCH],
    truncated: u64,
    n: usize,
}

impl Default for GroBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl GroBatch {
    pub fn new() -> Self {
        Self {
            bufs: vec![0u8; GRO_BUF * GRO_BATCH],
            ctrl: vec![0u64; GRO_CMSG / 8 * GRO_BATCH],
            lens: [0; GRO_BATCH],
            seg: [0; GRO_BATCH],
            from: [SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0); GRO_BATCH],
            truncated: 0,
            n: 0,
        }
    }

    /// Receives what is queued without blocking; `Ok(0)` when nothing is.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.n = 0;
        let mut addrs: [MaybeUninit<libc::sockaddr_in>; GRO_BATCH] =
            [MaybeUninit::zeroed(); GRO_BATCH];
        let mut iovs: [MaybeUninit<libc::iovec>; GRO_BATCH] = [MaybeUninit::uninit(); GRO_BATCH];
        // SAFETY: mmsghdr is plain data; all-zero is a valid value.
        let mut hdrs: [libc::mmsghdr; GRO_BATCH] = unsafe { std::mem::zeroed() };
        let base = self.bufs.as_mut_ptr();
        let ctrl = self.ctrl.as_mut_ptr();
        for i in 0..GRO_BATCH {
            iovs[i].write(libc::iovec {
                // SAFETY: `bufs` holds GRO_BATCH slots of GRO_BUF bytes; slot i is in bounds.
                iov_base: unsafe { base.add(i * GRO_BUF) }.cast(),
                iov_len: GRO_BUF,
            });
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = addrs[i].as_mut_ptr().cast();
            h.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = iovs[i].as_mut_ptr();
            h.msg_iovlen = 1;
            // SAFETY: `ctrl` holds GRO_BATCH areas of GRO_CMSG bytes (u64-aligned).
            h.msg_control = unsafe { ctrl.add(i * GRO_CMSG / 8) }.cast();
            h.msg_controllen = GRO_CMSG as _;
        }
        // SAFETY: every header points at a live buffer of GRO_BUF bytes, a control area of
        // GRO_CMSG bytes and a sockaddr_in of the stated length; all outlive the call.
        let n = unsafe { recvmmsg_nowait(fd, &mut hdrs) }?;
        for i in 0..n {
            let h = &hdrs[i].msg_hdr;
            if h.msg_flags & libc::MSG_TRUNC != 0 {
                self.truncated += 1;
            }
            self.lens[i] = (hdrs[i].msg_len as usize).min(GRO_BUF);
            self.seg[i] = self.lens[i];
            // SAFETY: the kernel filled `msg_controllen` bytes of this header's control area;
            // the CMSG_* walkers stay inside it.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(h);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
                        let v = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
                        if v > 0 {
                            self.seg[i] = v as usize;
                        }
                    }
                    c = libc::CMSG_NXTHDR(h, c);
                }
            }
            // SAFETY: zero-initialised above and possibly filled by the kernel: always valid.
            self.from[i] = v4(&unsafe { addrs[i].assume_init() });
        }
        self.n = n;
        Ok(n)
    }

    /// Receives cut short because they did not fit a buffer, since this batch was made.
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// The datagrams of receive `i`, in the order they were sent, and their sender.
    pub fn segments(&self, i: usize) -> (impl Iterator<Item = &[u8]>, SocketAddrV4) {
        let data = &self.bufs[i * GRO_BUF..i * GRO_BUF + self.lens[i]];
        (split_segments(data, self.seg[i]), self.from[i])
    }
}

/// `data` cut into datagrams of `seg` bytes (the last may be shorter); one empty datagram if
/// `data` is empty (a zero-length UDP datagram is a datagram).
fn split_segments(data: &[u8], seg: usize) -> impl Iterator<Item = &[u8]> {
    let seg = seg.max(1);
    let empty = data.is_empty().then_some(data);
    data.chunks(seg).chain(empty)
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

    #[test]
    fn segments_split_at_the_gro_size() {
        let d: Vec<u8> = (0..25u8).collect();
        let parts: Vec<&[u8]> = split_segments(&d, 10).collect();
        assert_eq!(parts, vec![&d[..10], &d[10..20], &d[20..]]);
        assert_eq!(split_segments(&d, 25).count(), 1);
        assert_eq!(
            split_segments(&[], 10).collect::<Vec<_>>(),
            vec![&[] as &[u8]]
        );
    }

    #[test]
    fn gro_receive_hands_a_gso_burst_over_whole_and_splits_it_back() {
        let opts = SocketOptions {
            bind: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            interface: None,
            rcvbuf: 1 << 20,
            sndbuf: 1 << 20,
        };
        let rx = udp_socket(&opts).unwrap();
        enable_gro(rx.as_raw_fd()).unwrap();
        let tx = udp_socket(&opts).unwrap();
        // The sender cuts every send into 1000-byte datagrams (UDP GSO, linux/udp.h 103).
        let seg: libc::c_int = 1000;
        // SAFETY: setsockopt with a pointer to a live c_int and its size.
        let r = unsafe {
            libc::setsockopt(
                tx.as_raw_fd(),
                libc::SOL_UDP,
                103,
                (&seg as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "UDP_SEGMENT: {}", io::Error::last_os_error());
        let to = rx.local_addr().unwrap();
        let burst: Vec<u8> = (0..10_300u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(tx.send_to(&burst, &to).unwrap(), burst.len());
        let mut b = GroBatch::new();
        wait_readable(&[rx.as_raw_fd()], Duration::from_secs(2));
        assert_eq!(
            b.recv(rx.as_raw_fd()).unwrap(),
            1,
            "the burst is one receive"
        );
        let (segs, from) = b.segments(0);
        let segs: Vec<&[u8]> = segs.collect();
        assert_eq!(from.ip(), &Ipv4Addr::LOCALHOST);
        assert_eq!(segs.len(), 11);
        assert!(segs[..10].iter().all(|s| s.len() == 1000));
        assert_eq!(segs[10].len(), 300);
        assert_eq!(segs.concat(), burst);
        assert_eq!(b.truncated(), 0);
        // A plain datagram is one segment of its own size.
        tx.send_to(&burst[..700], &to).unwrap();
        wait_readable(&[rx.as_raw_fd()], Duration::from_secs(2));
        assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 1);
        let (segs, _) = b.segments(0);
        assert_eq!(segs.collect::<Vec<_>>(), vec![&burst[..700]]);
        assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 0);
    }
}
