//! One `recvmsg` with its control messages: what a listening socket needs to learn where a
//! request came in (`IP_PKTINFO`), for the portable engine (a `recvmsg` call) and the io_uring
//! engine (a `RecvMsg` operation on the same layout).
//!
//! rustix's `recvmsg` hands back only the control messages it knows (file descriptors,
//! credentials), so this one call is libc's.

use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};

use crate::cmsg::{CONTROL_LEN, CmsgBuf, PktInfo, parse_pktinfo};
use crate::sockaddr::from_storage;

/// A `recvmsg` target whose address never changes while an operation uses it: a `msghdr`
/// pointing at the sockaddr, one iovec over `buf` (`N` bytes), and a control area.
///
/// Every field is plain data (integers, arrays of integers and raw pointers), so the all-zero
/// value is valid: it is only ever made zeroed, on the heap ([`boxed`](Self::boxed),
/// [`boxed_slice`](Self::boxed_slice)).
#[repr(C)]
pub struct RecvMsgBuf<const N: usize> {
    msg: libc::msghdr,
    iov: libc::iovec,
    addr: libc::sockaddr_storage,
    cmsg: CmsgBuf<CONTROL_LEN>,
    /// The datagram (its first `len` bytes, `len` as returned by the receive).
    pub buf: [u8; N],
}

impl<const N: usize> RecvMsgBuf<N> {
    /// A zeroed buffer on the heap (its address is stable for its whole life).
    pub fn boxed() -> Box<Self> {
        // SAFETY: RecvMsgBuf is made only of integers, arrays of integers and raw pointers, for
        // which the all-zero bit pattern is a valid value.
        unsafe { Box::<Self>::new_zeroed().assume_init() }
    }

    /// `n` zeroed buffers in one heap allocation (never resized, so their addresses are
    /// stable).
    pub fn boxed_slice(n: usize) -> Box<[Self]> {
        // SAFETY: as for `boxed`: all-zero is a valid value of every element.
        unsafe { Box::<[Self]>::new_zeroed_slice(n).assume_init() }
    }

    /// Points the `msghdr` at this buffer's own fields (the previous receive may have
    /// overwritten them) and returns it, for `recvmsg` or an io_uring `RecvMsg`. It stays valid
    /// as long as the buffer is neither moved nor dropped.
    pub fn prepare(&mut self) -> *mut libc::msghdr {
        self.iov.iov_base = self.buf.as_mut_ptr().cast();
        self.iov.iov_len = N;
        self.msg.msg_name = (&raw mut self.addr).cast();
        self.msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        self.msg.msg_iov = &raw mut self.iov;
        self.msg.msg_iovlen = 1;
        self.msg.msg_control = self.cmsg.as_mut_ptr();
        self.msg.msg_controllen = CONTROL_LEN as _;
        self.msg.msg_flags = 0;
        &raw mut self.msg
    }

    /// One `recvmsg(2)` on `fd` into this buffer: the bytes received (at most `N`). A
    /// non-blocking socket with nothing queued gives `WouldBlock`.
    pub fn recv(&mut self, fd: impl AsFd) -> io::Result<usize> {
        let msg = self.prepare();
        // SAFETY: `msg` points at this buffer's msghdr, which `prepare` just pointed at its own
        // sockaddr, iovec (over `buf`, N bytes) and control area, all live and unmoved for the
        // call (`self` is borrowed mutably); the kernel writes only inside them.
        let r = unsafe { libc::recvmsg(fd.as_fd().as_raw_fd(), msg, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((r as usize).min(N))
    }

    /// The source of the datagram just received; `None` if it is not an IPv4 or IPv6 address.
    pub fn source(&self) -> Option<SocketAddr> {
        from_storage(&self.addr, self.msg.msg_namelen)
    }

    /// Whether the kernel cut the datagram to fit `buf` (`MSG_TRUNC`).
    pub fn truncated(&self) -> bool {
        self.msg.msg_flags & libc::MSG_TRUNC != 0
    }

    /// The datagram's `IP_PKTINFO`, when the socket has it on ([`crate::set_pktinfo`]) and the
    /// kernel attached one.
    pub fn pktinfo(&self) -> Option<PktInfo> {
        // `as _`: msg_controllen is usize with glibc but u32 with musl.
        let controllen: usize = self.msg.msg_controllen as _;
        parse_pktinfo(self.cmsg.filled(controllen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::{Family, bind, set_pktinfo, udp};
    use std::net::Ipv4Addr;
    use std::time::Duration;

    /// A socket bound to the wildcard learns the local address of a datagram sent to it. (From
    /// the portable engine's listener.)
    #[test]
    fn pktinfo_reports_the_local_address() {
        let sock = udp(Family::V4).unwrap();
        set_pktinfo(&sock, true).unwrap();
        bind(&sock, "0.0.0.0:0".parse::<SocketAddr>().unwrap()).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let port = sock.local_addr().unwrap().port();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"hello", ("127.0.0.1", port)).unwrap();
        let mut rb = RecvMsgBuf::<64>::boxed();
        let len = rb.recv(&sock).expect("datagram within 5 s");
        assert_eq!(len, 5);
        assert_eq!(rb.source(), Some(client.local_addr().unwrap()));
        let info = rb.pktinfo().expect("IP_PKTINFO");
        assert_eq!(info.local, Ipv4Addr::LOCALHOST);
        assert_eq!(info.ifindex, 1, "loopback");
        assert!(!rb.truncated());
        assert_eq!(&rb.buf[..5], b"hello");
        // Longer than the buffer: cut, and said so.
        client.send_to(&[7u8; 100], ("127.0.0.1", port)).unwrap();
        assert_eq!(rb.recv(&sock).unwrap(), 64);
        assert!(rb.truncated());
        // Several buffers in one allocation, each its own.
        let mut many = RecvMsgBuf::<16>::boxed_slice(2);
        let (a, b) = many.split_at_mut(1);
        assert_ne!(a[0].prepare(), b[0].prepare());
        assert_eq!(a[0].source(), None, "nothing received yet");
    }
}
