//! Small pieces of raw socket plumbing the io_uring engine needs: `sockaddr` conversion, the
//! control-message walk for `IP_PKTINFO`, the UDP GSO probe and the receive buffer layout.

use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// `UDP_SEGMENT` from `linux/udp.h` (the `libc` crate only exports it for some targets).
pub(super) const UDP_SEGMENT: libc::c_int = 103;

/// Bytes of a datagram a receive buffer holds. TFTP requests and ACK/ERROR packets fit easily;
/// anything longer is reported truncated (`MSG_TRUNC`) and dropped as malformed.
pub(super) const RECV_LEN: usize = 2048;

/// Room for the control messages we ask for (one `IP_PKTINFO`, with margin).
const CMSG_WORDS: usize = 16;

/// A `recvmsg` target whose address never changes while an operation uses it: a `msghdr`
/// pointing at the sockaddr, one iovec over `buf`, and a control buffer.
///
/// Every field is plain data (integers and raw pointers), so the all-zero value is valid.
#[repr(C)]
pub(super) struct RecvBuf {
    pub msg: libc::msghdr,
    pub iov: libc::iovec,
    pub addr: libc::sockaddr_storage,
    pub cmsg: [u64; CMSG_WORDS],
    pub buf: [u8; RECV_LEN],
}

impl RecvBuf {
    /// A zeroed buffer on the heap (its address is stable for its whole life).
    pub fn boxed() -> Box<RecvBuf> {
        // SAFETY: RecvBuf is made only of integers, arrays of integers and raw pointers, for
        // which the all-zero bit pattern is a valid value.
        unsafe { Box::<RecvBuf>::new_zeroed().assume_init() }
    }

    /// Points the `msghdr` at this buffer's own fields (they may have been overwritten by the
    /// previous receive) and returns it for a `RecvMsg` SQE.
    pub fn prepare(&mut self) -> *mut libc::msghdr {
        self.iov.iov_base = self.buf.as_mut_ptr().cast();
        self.iov.iov_len = RECV_LEN;
        self.msg.msg_name = (&raw mut self.addr).cast();
        self.msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        self.msg.msg_iov = &raw mut self.iov;
        self.msg.msg_iovlen = 1;
        self.msg.msg_control = self.cmsg.as_mut_ptr().cast();
        self.msg.msg_controllen = size_of::<[u64; CMSG_WORDS]>() as _;
        self.msg.msg_flags = 0;
        &raw mut self.msg
    }

    /// The source of the datagram just received.
    pub fn source(&self) -> Option<SocketAddr> {
        read_sockaddr(&self.addr, self.msg.msg_namelen)
    }

    /// Whether the kernel cut the datagram to fit `buf`.
    pub fn truncated(&self) -> bool {
        self.msg.msg_flags & libc::MSG_TRUNC != 0
    }

    /// The local address the datagram was sent to (`IP_PKTINFO`'s `ipi_spec_dst`), if the
    /// kernel attached one.
    pub fn pktinfo_local(&self) -> Option<IpAddr> {
        // `as _`: msg_controllen is usize with glibc but u32 with musl.
        let controllen: usize = self.msg.msg_controllen as _;
        let len = controllen.min(size_of::<[u64; CMSG_WORDS]>());
        // SAFETY: `cmsg` is a plain array of u64; viewing its first `len` bytes (bounded by its
        // size) as bytes is valid for reads.
        let bytes: &[u8] = unsafe { std::slice::from_raw_parts(self.cmsg.as_ptr().cast(), len) };
        walk_pktinfo(bytes)
    }
}

/// Finds `IPPROTO_IP / IP_PKTINFO` in a control-message buffer and returns `ipi_spec_dst`.
fn walk_pktinfo(bytes: &[u8]) -> Option<IpAddr> {
    let hdr = size_of::<libc::cmsghdr>();
    let align = |n: usize| (n + size_of::<usize>() - 1) & !(size_of::<usize>() - 1);
    let mut off = 0usize;
    while off + hdr <= bytes.len() {
        // SAFETY: `off + hdr <= bytes.len()`, and read_unaligned has no alignment requirement.
        let cmsg: libc::cmsghdr =
            unsafe { std::ptr::read_unaligned(bytes.as_ptr().add(off).cast()) };
        let clen = cmsg.cmsg_len as usize;
        if clen < hdr || off + clen > bytes.len() {
            return None;
        }
        let data = off + align(hdr);
        if cmsg.cmsg_level == libc::IPPROTO_IP
            && cmsg.cmsg_type == libc::IP_PKTINFO
            && data + size_of::<libc::in_pktinfo>() <= off + clen
        {
            // SAFETY: the in_pktinfo lies within `bytes` (checked just above); unaligned read.
            let info: libc::in_pktinfo =
                unsafe { std::ptr::read_unaligned(bytes.as_ptr().add(data).cast()) };
            return Some(IpAddr::V4(Ipv4Addr::from(
                info.ipi_spec_dst.s_addr.to_ne_bytes(),
            )));
        }
        off += align(clen);
    }
    None
}

/// Writes `addr` into `storage` and returns the length to pass as `msg_namelen`.
pub(super) fn write_sockaddr(
    addr: SocketAddr,
    storage: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and aligned for it.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6 and aligned for it.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads an IPv4 or IPv6 address the kernel wrote into `storage`.
pub(super) fn read_sockaddr(
    storage: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Option<SocketAddr> {
    let len = len as usize;
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large and
            // aligned enough for.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Whether the kernel accepts `UDP_SEGMENT` (UDP GSO), probed on a throwaway socket the way
/// quinn-udp does. A send can still fail later (a device without checksum offload answers EIO);
/// the engine falls back then.
pub(super) fn gso_supported() -> bool {
    let Ok(sock) = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    ) else {
        return false;
    };
    let size: libc::c_int = 1500;
    // SAFETY: setsockopt on a valid fd with a pointer to a c_int that lives across the call and
    // its exact size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_UDP,
            UDP_SEGMENT,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// Turns off UDP checksums on `sock` (`SO_NO_CHECK`); the kernel then refuses GSO sends on it
/// with EINVAL. Only tests use it, to exercise the GSO fallback.
pub(super) fn set_no_check(sock: &socket2::Socket) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a valid fd with a pointer to a c_int that lives across the call and
    // its exact size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        for addr in [
            "10.1.2.3:69".parse::<SocketAddr>().unwrap(),
            "[fe80::1%3]:4011".parse().unwrap(),
        ] {
            // SAFETY: all-zero is a valid sockaddr_storage.
            let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let len = write_sockaddr(addr, &mut st);
            assert_eq!(read_sockaddr(&st, len), Some(addr));
            assert_eq!(read_sockaddr(&st, 2), None);
        }
    }

    #[test]
    fn pktinfo_walk_finds_spec_dst_and_rejects_garbage() {
        let hdr = size_of::<libc::cmsghdr>();
        let mut buf = vec![0u8; 64];
        let cmsg = libc::cmsghdr {
            cmsg_len: (hdr + size_of::<libc::in_pktinfo>()) as _,
            cmsg_level: libc::IPPROTO_IP,
            cmsg_type: libc::IP_PKTINFO,
        };
        let info = libc::in_pktinfo {
            ipi_ifindex: 2,
            ipi_spec_dst: libc::in_addr {
                s_addr: u32::from_ne_bytes([10, 0, 0, 1]),
            },
            ipi_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([255, 255, 255, 255]),
            },
        };
        // SAFETY: both writes are within the 64-byte buffer.
        unsafe {
            std::ptr::write_unaligned(buf.as_mut_ptr().cast(), cmsg);
            std::ptr::write_unaligned(buf.as_mut_ptr().add(hdr).cast(), info);
        }
        let len = hdr + size_of::<libc::in_pktinfo>();
        assert_eq!(
            walk_pktinfo(&buf[..len]),
            Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
        );
        // A cmsg_len running past the buffer is refused, not read.
        assert_eq!(walk_pktinfo(&buf[..len - 1]), None);
        assert_eq!(walk_pktinfo(&[]), None);
    }
}
