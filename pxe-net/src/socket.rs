//! Creating sockets and setting their options.
//!
//! Sockets come back as the standard library's types ([`UdpSocket`], [`TcpListener`],
//! [`TcpStream`]), made close-on-exec; every option function takes any descriptor
//! (`impl AsFd`). Options rustix wraps are set through it; `SO_BINDTODEVICE`, `IP_PKTINFO`,
//! `UDP_SEGMENT`, `UDP_GRO` and `SO_NO_CHECK` (which it does not wrap) through one `setsockopt`
//! here.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType, ipproto, sockopt};

/// `SOL_UDP` option and control message of UDP generic segmentation offload (linux/udp.h; the
/// `libc` crate exports it only for some targets).
pub const UDP_SEGMENT: libc::c_int = 103;
/// `SOL_UDP` option and control message of UDP generic receive offload (linux/udp.h).
pub const UDP_GRO: libc::c_int = 104;

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of `addr`.
    pub fn of(addr: &SocketAddr) -> Family {
        match addr {
            SocketAddr::V4(_) => Family::V4,
            SocketAddr::V6(_) => Family::V6,
        }
    }

    fn raw(self) -> AddressFamily {
        match self {
            Family::V4 => AddressFamily::INET,
            Family::V6 => AddressFamily::INET6,
        }
    }
}

fn new_socket(
    family: Family,
    kind: SocketType,
    nonblocking: bool,
    protocol: rustix::net::Protocol,
) -> io::Result<OwnedFd> {
    let mut flags = SocketFlags::CLOEXEC;
    if nonblocking {
        flags |= SocketFlags::NONBLOCK;
    }
    Ok(rustix::net::socket_with(
        family.raw(),
        kind,
        flags,
        Some(protocol),
    )?)
}

/// A blocking UDP socket, not bound yet.
pub fn udp(family: Family) -> io::Result<UdpSocket> {
    new_socket(family, SocketType::DGRAM, false, ipproto::UDP).map(UdpSocket::from)
}

/// A non-blocking UDP socket, not bound yet.
pub fn udp_nonblocking(family: Family) -> io::Result<UdpSocket> {
    new_socket(family, SocketType::DGRAM, true, ipproto::UDP).map(UdpSocket::from)
}

/// `bind(2)`.
pub fn bind(fd: impl AsFd, addr: impl Into<SocketAddr>) -> io::Result<()> {
    Ok(rustix::net::bind(fd, &addr.into())?)
}

/// SO_REUSEADDR.
pub fn set_reuse_address(fd: impl AsFd, on: bool) -> io::Result<()> {
    Ok(sockopt::set_socket_reuseaddr(fd, on)?)
}

/// SO_REUSEPORT.
pub fn set_reuse_port(fd: impl AsFd, on: bool) -> io::Result<()> {
    Ok(sockopt::set_socket_reuseport(fd, on)?)
}

/// SO_BROADCAST.
pub fn set_broadcast(fd: impl AsFd, on: bool) -> io::Result<()> {
    Ok(sockopt::set_socket_broadcast(fd, on)?)
}

/// SO_BINDTODEVICE: the socket sends and hears only through interface `name`.
pub fn bind_device(fd: impl AsFd, name: &str) -> io::Result<()> {
    let fd = fd.as_fd();
    // SAFETY: the option value is `name`'s bytes, a live buffer of the length passed; the kernel
    // copies at most IFNAMSIZ - 1 of them and terminates the name itself.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `setsockopt(level, opt, &int)`: the form of every option rustix has no wrapper for.
fn set_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a live c_int on our stack, passed with its exact size; the
    // kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&raw const v).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// IP_PKTINFO: every datagram received carries an `IP_PKTINFO` control message (its interface
/// and our address there; see [`crate::cmsg::parse_pktinfo`]). IPv4 sockets only.
pub fn set_pktinfo(fd: impl AsFd, on: bool) -> io::Result<()> {
    set_int(
        fd.as_fd(),
        libc::IPPROTO_IP,
        libc::IP_PKTINFO,
        libc::c_int::from(on),
    )
}

/// UDP_SEGMENT: every send on the socket leaves as datagrams of `size` bytes (UDP GSO); 0 turns
/// it off. A per-send control message ([`crate::cmsg::write_udp_segment`]) does the same for
/// one send.
pub fn set_udp_segment(fd: impl AsFd, size: u16) -> io::Result<()> {
    set_int(
        fd.as_fd(),
        libc::SOL_UDP,
        UDP_SEGMENT,
        libc::c_int::from(size),
    )
}

/// Whether the kernel accepts `UDP_SEGMENT` (UDP GSO), probed on a throwaway socket the way
/// quinn-udp does. A send can still fail later (a device without checksum offload answers EIO):
/// senders fall back then.
pub fn udp_gso_supported() -> bool {
    udp(Family::V4).is_ok_and(|s| set_udp_segment(&s, 1500).is_ok())
}

/// Asks the kernel to hand this UDP socket coalesced datagrams (`UDP_GRO`): a burst the peer
/// sent with UDP GSO (a TFTP window) arrives as one receive with the segment size in a control
/// message ([`crate::cmsg::parse_gro_segment`]), instead of one receive per datagram. Fails on
/// kernels without it (before 5.0).
pub fn enable_gro(fd: impl AsFd) -> io::Result<()> {
    set_int(fd.as_fd(), libc::SOL_UDP, UDP_GRO, 1)
}

/// Turns off UDP checksums on the socket (`SO_NO_CHECK`); the kernel then refuses GSO sends on
/// it with EINVAL. For tests of the GSO fallback.
pub fn set_no_check(fd: impl AsFd) -> io::Result<()> {
    set_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_NO_CHECK, 1)
}

/// Buffer sizes go to the kernel as a C int.
fn c_int_size(bytes: usize) -> usize {
    bytes.min(i32::MAX as usize)
}

/// SO_RCVBUF (capped by `net.core.rmem_max`).
pub fn set_recv_buffer(fd: impl AsFd, bytes: usize) -> io::Result<()> {
    Ok(sockopt::set_socket_recv_buffer_size(fd, c_int_size(bytes))?)
}

/// SO_SNDBUF (capped by `net.core.wmem_max`).
pub fn set_send_buffer(fd: impl AsFd, bytes: usize) -> io::Result<()> {
    Ok(sockopt::set_socket_send_buffer_size(fd, c_int_size(bytes))?)
}

/// A receive buffer of `bytes`: with SO_RCVBUFFORCE where we may (root or CAP_NET_ADMIN), which
/// `net.core.rmem_max` does not cap; else with SO_RCVBUF, up to that cap. The error is
/// SO_RCVBUF's.
pub fn force_recv_buffer(fd: impl AsFd, bytes: usize) -> io::Result<()> {
    let fd = fd.as_fd();
    match sockopt::set_socket_recv_buffer_size_force(fd, c_int_size(bytes)) {
        Ok(()) => Ok(()),
        Err(_) => set_recv_buffer(fd, bytes),
    }
}

/// [`force_recv_buffer`] for the send buffer (SO_SNDBUFFORCE, else SO_SNDBUF).
pub fn force_send_buffer(fd: impl AsFd, bytes: usize) -> io::Result<()> {
    let fd = fd.as_fd();
    match sockopt::set_socket_send_buffer_size_force(fd, c_int_size(bytes)) {
        Ok(()) => Ok(()),
        Err(_) => set_send_buffer(fd, bytes),
    }
}

/// The receive buffer granted (Linux reports twice the size set: its bookkeeping overhead).
pub fn recv_buffer_size(fd: impl AsFd) -> io::Result<usize> {
    Ok(sockopt::socket_recv_buffer_size(fd)?)
}

/// The send buffer granted (twice the size set, as for [`recv_buffer_size`]).
pub fn send_buffer_size(fd: impl AsFd) -> io::Result<usize> {
    Ok(sockopt::socket_send_buffer_size(fd)?)
}

/// (receive, send) buffer sizes granted; 0 for one that cannot be read.
pub fn buffer_sizes(fd: impl AsFd) -> (usize, usize) {
    let fd = fd.as_fd();
    (
        recv_buffer_size(fd).unwrap_or(0),
        send_buffer_size(fd).unwrap_or(0),
    )
}

/// The index of interface `name` (`if_nametoindex`; ENODEV for an unknown name).
pub fn if_nametoindex(name: &str) -> io::Result<u32> {
    // The ioctl takes any socket, as glibc's if_nametoindex does.
    let s = udp(Family::V4)?;
    Ok(rustix::net::netdevice::name_to_index(&s, name)?)
}

/// The name of interface `index` (`if_indextoname`; ENODEV for an unknown index).
pub fn if_indextoname(index: u32) -> io::Result<String> {
    let s = udp(Family::V4)?;
    Ok(rustix::net::netdevice::index_to_name(&s, index)?)
}

/// Options of [`open_udp`].
#[derive(Debug, Clone)]
pub struct UdpOptions {
    pub bind: SocketAddrV4,
    pub interface: Option<String>,
    /// SO_RCVBUF / SO_SNDBUF wanted (root may exceed the sysctl caps with *BUFFORCE); 0 leaves
    /// the default.
    pub rcvbuf: usize,
    pub sndbuf: usize,
}

/// An IPv4 UDP socket with SO_BROADCAST and SO_REUSEADDR, optional SO_BINDTODEVICE, the buffer
/// sizes asked for (forced past `net.core.*mem_max` when allowed), bound to `opts.bind`.
/// Blocking (the batches receive with MSG_DONTWAIT).
pub fn open_udp(opts: &UdpOptions) -> io::Result<UdpSocket> {
    let s = udp(Family::V4)?;
    set_reuse_address(&s, true)?;
    set_broadcast(&s, true)?;
    if let Some(dev) = &opts.interface {
        bind_device(&s, dev)
            .map_err(|e| io::Error::new(e.kind(), format!("SO_BINDTODEVICE {dev}: {e}")))?;
    }
    if opts.rcvbuf > 0 {
        force_recv_buffer(&s, opts.rcvbuf)?;
    }
    if opts.sndbuf > 0 {
        force_send_buffer(&s, opts.sndbuf)?;
    }
    bind(&s, opts.bind)
        .map_err(|e| io::Error::new(e.kind(), format!("bind {}: {e}", opts.bind)))?;
    Ok(s)
}

/// A non-blocking TCP listening socket on `addr` with SO_REUSEADDR (and IPV6_V6ONLY for an
/// IPv6 address), `backlog` deep.
pub fn tcp_listener(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let fd = new_socket(Family::of(&addr), SocketType::STREAM, true, ipproto::TCP)?;
    set_reuse_address(&fd, true)?;
    if addr.is_ipv6() {
        sockopt::set_ipv6_v6only(&fd, true)?;
    }
    bind(&fd, addr)?;
    rustix::net::listen(&fd, backlog)?;
    Ok(TcpListener::from(fd))
}

/// A non-blocking IPv4 TCP connection to `to` (TCP_NODELAY), from `from` when given (else the
/// stack picks), through `device` when given. The connect is under way when this returns: the
/// socket becomes writable when it ends, and `take_error` then tells how.
pub fn tcp_connect_nonblocking(
    to: SocketAddrV4,
    from: Option<Ipv4Addr>,
    device: Option<&str>,
) -> io::Result<TcpStream> {
    let fd = new_socket(Family::V4, SocketType::STREAM, true, ipproto::TCP)?;
    if let Some(dev) = device {
        bind_device(&fd, dev)?;
    }
    if let Some(src) = from {
        bind(&fd, SocketAddrV4::new(src, 0))?;
    }
    sockopt::set_tcp_nodelay(&fd, true)?;
    match rustix::net::connect(&fd, &SocketAddr::V4(to)) {
        Ok(()) | Err(Errno::INPROGRESS) => Ok(TcpStream::from(fd)),
        Err(e) => Err(e.into()),
    }
}

/// Blocks receives on `fd` for at most `timeout` (SO_RCVTIMEO): a blocking loop then wakes up
/// to look at its flags.
pub fn set_recv_timeout(fd: impl AsFd, timeout: Duration) -> io::Result<()> {
    Ok(sockopt::set_socket_timeout(
        fd,
        sockopt::Timeout::Recv,
        Some(timeout),
    )?)
}

#[cfg(test)]
impl UdpOptions {
    /// For tests: 127.0.0.1, an ephemeral port, 1 MiB buffers.
    pub(crate) fn loopback() -> UdpOptions {
        UdpOptions {
            bind: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            interface: None,
            rcvbuf: 1 << 20,
            sndbuf: 1 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The receive buffer is the one asked for even above `net.core.rmem_max` when we may force
    /// it (root), and at least what SO_RCVBUF grants otherwise. (From the DHCP server, which
    /// asks for 32 MiB.)
    #[test]
    fn receive_buffer_is_raised() {
        const SOCKET_RCVBUF: usize = 32 << 20;
        let s = udp(Family::V4).unwrap();
        force_recv_buffer(&s, SOCKET_RCVBUF).unwrap();
        let got = recv_buffer_size(&s).unwrap();
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let root = rustix::process::geteuid().is_root();
        // Linux reports twice the size set (its bookkeeping overhead).
        let expected = if root {
            SOCKET_RCVBUF
        } else {
            SOCKET_RCVBUF.min(rmem_max)
        };
        assert!(got >= expected, "receive buffer {got} < {expected}");
    }

    #[test]
    fn options_read_back() {
        let s = open_udp(&UdpOptions::loopback()).unwrap();
        assert!(sockopt::socket_broadcast(&s).unwrap());
        assert!(sockopt::socket_reuseaddr(&s).unwrap());
        let (r, w) = buffer_sizes(&s);
        assert!(r > 0 && w > 0);
        assert_eq!(s.local_addr().unwrap().ip(), Ipv4Addr::LOCALHOST);
        set_reuse_port(&s, true).unwrap();
        assert!(sockopt::socket_reuseport(&s).unwrap());
        set_pktinfo(&s, true).unwrap();
        let n = udp_nonblocking(Family::V6).unwrap();
        let flags = rustix::fs::fcntl_getfl(&n).unwrap();
        assert!(flags.contains(rustix::fs::OFlags::NONBLOCK));
        assert_eq!(sockopt::socket_domain(&n).unwrap(), AddressFamily::INET6);
        let b = udp(Family::V4).unwrap();
        assert!(
            !rustix::fs::fcntl_getfl(&b)
                .unwrap()
                .contains(rustix::fs::OFlags::NONBLOCK)
        );
    }

    #[test]
    fn interfaces_by_name() {
        assert_eq!(if_nametoindex("lo").unwrap(), 1);
        assert_eq!(if_indextoname(1).unwrap(), "lo");
        let e = if_nametoindex("nosuchif0").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
        let e = open_udp(&UdpOptions {
            interface: Some("nosuchif0".into()),
            ..UdpOptions::loopback()
        })
        .unwrap_err();
        assert!(
            e.to_string().starts_with("SO_BINDTODEVICE nosuchif0: "),
            "{e}"
        );
    }

    #[test]
    fn tcp_listen_and_connect() {
        let l = tcp_listener("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let SocketAddr::V4(to) = l.local_addr().unwrap() else {
            panic!("v4 listener");
        };
        let c = tcp_connect_nonblocking(to, Some(Ipv4Addr::LOCALHOST), None).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let accepted = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "no connection");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        assert_eq!(accepted.peer_addr().unwrap(), c.local_addr().unwrap());
        assert!(c.nodelay().unwrap());
        let v6 = tcp_listener("[::1]:0".parse().unwrap(), 16);
        if let Ok(v6) = v6 {
            assert!(sockopt::ipv6_v6only(&v6).unwrap());
        }
    }

    #[test]
    fn gso_probe_agrees_with_the_option() {
        let s = udp(Family::V4).unwrap();
        assert_eq!(udp_gso_supported(), set_udp_segment(&s, 1472).is_ok());
        if udp_gso_supported() {
            set_udp_segment(&s, 0).unwrap();
            enable_gro(&s).unwrap();
            set_no_check(&s).unwrap();
        }
    }
}
