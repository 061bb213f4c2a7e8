//! Control messages (`cmsg`): one walker over a raw control buffer as the kernel wrote it, the
//! parsers built on it (`IP_PKTINFO`, `UDP_GRO`), and the builders for the messages we send
//! (`IP_PKTINFO`, `UDP_SEGMENT`).
//!
//! Every receive path uses the same walker: the batches of [`crate::mmsg`], the single
//! `recvmsg` of [`crate::msg`], and the io_uring engine, which hands over the control area of a
//! `RecvMsg` completion as bytes.

use std::mem::size_of;
use std::net::Ipv4Addr;

use crate::socket::{UDP_GRO, UDP_SEGMENT};

/// Bytes of control buffer the receive paths give the kernel: room for one `IP_PKTINFO`
/// (`CMSG_SPACE(12)` = 32 on 64-bit Linux) or one `UDP_GRO` (24), with margin.
pub const CONTROL_LEN: usize = 64;

/// A control-message buffer, aligned for `cmsghdr` as the kernel and `CMSG_*` expect. All-zero
/// is a valid value, so it can live inside zeroed kernel-facing structs.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct CmsgBuf<const N: usize>(pub [u8; N]);

impl<const N: usize> CmsgBuf<N> {
    pub const fn new() -> Self {
        CmsgBuf([0; N])
    }

    /// The start of the buffer, for `msg_control`.
    pub fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        self.0.as_mut_ptr().cast()
    }

    /// The first `len` bytes (as much as the kernel wrote, `msg_controllen`), at most the whole
    /// buffer.
    pub fn filled(&self, len: usize) -> &[u8] {
        &self.0[..len.min(N)]
    }
}

impl<const N: usize> Default for CmsgBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// `CMSG_ALIGN`: control messages are aligned to the size of a `size_t` on Linux.
const fn align(n: usize) -> usize {
    (n + size_of::<usize>() - 1) & !(size_of::<usize>() - 1)
}

/// `CMSG_LEN(data)`: the `cmsg_len` of a message with `data` payload bytes.
pub const fn cmsg_len(data: usize) -> usize {
    align(size_of::<libc::cmsghdr>()) + data
}

/// `CMSG_SPACE(data)`: the room a message with `data` payload bytes takes in the buffer.
pub const fn cmsg_space(data: usize) -> usize {
    align(size_of::<libc::cmsghdr>()) + align(data)
}

/// Size of `struct in_pktinfo` (ifindex, spec_dst, addr).
const PKTINFO_LEN: usize = size_of::<libc::in_pktinfo>();

/// The `IP_PKTINFO` of a datagram (`struct in_pktinfo`).
///
/// On receive: the interface it came in on and our address there. On send: the interface a
/// datagram must leave through (0: routed normally) and the source address to give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PktInfo {
    /// `ipi_ifindex`.
    pub ifindex: u32,
    /// `ipi_spec_dst`: the local address. On receive, the address to answer from (for a
    /// broadcast request, the interface's address, not the broadcast address); on send, the
    /// source address.
    pub local: Ipv4Addr,
    /// `ipi_addr`: the destination address in the IP header (receive only; ignored on send).
    pub header_dst: Ipv4Addr,
}

impl PktInfo {
    /// What to attach to a datagram sent from `local` out of `ifindex` (0: routed normally).
    pub fn from_local(local: Ipv4Addr, ifindex: u32) -> PktInfo {
        PktInfo {
            ifindex,
            local,
            header_dst: Ipv4Addr::UNSPECIFIED,
        }
    }

    /// Reads a `struct in_pktinfo` payload (the ABI's field order: int ifindex, then the two
    /// addresses in network byte order).
    fn parse(data: &[u8]) -> Option<PktInfo> {
        let d: &[u8; PKTINFO_LEN] = data.get(..PKTINFO_LEN)?.try_into().ok()?;
        let ifindex = i32::from_ne_bytes([d[0], d[1], d[2], d[3]]);
        Some(PktInfo {
            ifindex: u32::try_from(ifindex).unwrap_or(0),
            local: Ipv4Addr::new(d[4], d[5], d[6], d[7]),
            header_dst: Ipv4Addr::new(d[8], d[9], d[10], d[11]),
        })
    }

    fn encode(&self) -> [u8; PKTINFO_LEN] {
        let mut d = [0u8; PKTINFO_LEN];
        let ifindex = i32::try_from(self.ifindex).unwrap_or(0);
        d[..4].copy_from_slice(&ifindex.to_ne_bytes());
        d[4..8].copy_from_slice(&self.local.octets());
        d[8..].copy_from_slice(&self.header_dst.octets());
        d
    }
}

/// One control message of a buffer: its level, type and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cmsg<'a> {
    pub level: libc::c_int,
    pub kind: libc::c_int,
    pub data: &'a [u8],
}

/// The control messages in `bytes` (a control buffer's first `msg_controllen` bytes), in order.
/// The walk stops at the first header whose length is impossible (shorter than a header, or
/// running past the buffer): nothing outside `bytes` is ever read.
pub fn walk(bytes: &[u8]) -> impl Iterator<Item = Cmsg<'_>> {
    let hdr = size_of::<libc::cmsghdr>();
    let mut off = 0usize;
    std::iter::from_fn(move || {
        let rest = bytes.get(off..)?;
        if rest.len() < hdr {
            return None;
        }
        // SAFETY: `rest` holds at least size_of::<cmsghdr>() bytes (checked above), and
        // read_unaligned has no alignment requirement; cmsghdr is plain integers, valid for any
        // bit pattern.
        let c: libc::cmsghdr = unsafe { std::ptr::read_unaligned(rest.as_ptr().cast()) };
        let clen = c.cmsg_len as usize;
        if clen < hdr || clen > rest.len() {
            off = bytes.len();
            return None;
        }
        let data = rest.get(align(hdr)..clen).unwrap_or(&[]);
        off += align(clen);
        Some(Cmsg {
            level: c.cmsg_level,
            kind: c.cmsg_type,
            data,
        })
    })
}

/// The `IPPROTO_IP / IP_PKTINFO` message of a received datagram's control buffer.
pub fn parse_pktinfo(bytes: &[u8]) -> Option<PktInfo> {
    walk(bytes)
        .filter(|c| c.level == libc::IPPROTO_IP && c.kind == libc::IP_PKTINFO)
        .find_map(|c| PktInfo::parse(c.data))
}

/// The segment size of a `UDP_GRO` receive (`SOL_UDP / UDP_GRO`, an int): the datagrams glued
/// into it are this long, the last one possibly shorter. `None` without one (or for 0).
pub fn parse_gro_segment(bytes: &[u8]) -> Option<usize> {
    walk(bytes)
        .filter(|c| c.level == libc::SOL_UDP && c.kind == UDP_GRO)
        .find_map(|c| {
            let v = i32::from_ne_bytes(c.data.get(..4)?.try_into().ok()?);
            usize::try_from(v).ok().filter(|&v| v > 0)
        })
}

/// Writes one control message (`level`, `kind`, `data`) at the start of `buf` and zeroes its
/// padding; returns the `msg_controllen` to send it with (`CMSG_SPACE(data.len())`).
///
/// # Panics
/// If `buf` is shorter than that (a fixed buffer too small for a fixed message: a bug).
pub fn write(buf: &mut [u8], level: libc::c_int, kind: libc::c_int, data: &[u8]) -> usize {
    let space = cmsg_space(data.len());
    let Some(area) = buf.get_mut(..space) else {
        panic!("control buffer of {} bytes, {space} needed", buf.len());
    };
    area.fill(0);
    let hdr = libc::cmsghdr {
        cmsg_len: cmsg_len(data.len()) as _,
        cmsg_level: level,
        cmsg_type: kind,
    };
    // SAFETY: `area` holds `space` >= size_of::<cmsghdr>() bytes; write_unaligned has no
    // alignment requirement.
    unsafe { std::ptr::write_unaligned(area.as_mut_ptr().cast::<libc::cmsghdr>(), hdr) };
    let at = align(size_of::<libc::cmsghdr>());
    area[at..at + data.len()].copy_from_slice(data);
    space
}

/// `CMSG_SPACE` of an `IP_PKTINFO` message.
pub const PKTINFO_SPACE: usize = cmsg_space(PKTINFO_LEN);

/// Writes the `IP_PKTINFO` message that sends a datagram as `info` says; returns its
/// `msg_controllen`.
pub fn write_pktinfo(buf: &mut [u8], info: &PktInfo) -> usize {
    write(buf, libc::IPPROTO_IP, libc::IP_PKTINFO, &info.encode())
}

/// Writes the `UDP_SEGMENT` message (a u16) that makes one send leave as datagrams of `size`
/// bytes (UDP GSO); returns its `msg_controllen`.
pub fn write_udp_segment(buf: &mut [u8], size: u16) -> usize {
    write(buf, libc::SOL_UDP, UDP_SEGMENT, &size.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pktinfo_message() -> (Vec<u8>, usize) {
        let mut buf = vec![0u8; 64];
        let info = PktInfo {
            ifindex: 2,
            local: Ipv4Addr::new(10, 0, 0, 1),
            header_dst: Ipv4Addr::BROADCAST,
        };
        let space = write_pktinfo(&mut buf, &info);
        assert_eq!(space, PKTINFO_SPACE);
        (buf, cmsg_len(PKTINFO_LEN))
    }

    /// (From the io_uring engine's `walk_pktinfo`.)
    #[test]
    fn pktinfo_walk_finds_spec_dst_and_rejects_garbage() {
        let (buf, len) = pktinfo_message();
        assert_eq!(
            parse_pktinfo(&buf[..len]).map(|p| p.local),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
        // A cmsg_len running past the buffer is refused, not read.
        assert_eq!(parse_pktinfo(&buf[..len - 1]), None);
        assert_eq!(parse_pktinfo(&[]), None);
    }

    #[test]
    fn pktinfo_round_trips_every_field() {
        let (buf, _) = pktinfo_message();
        assert_eq!(
            parse_pktinfo(&buf[..PKTINFO_SPACE]),
            Some(PktInfo {
                ifindex: 2,
                local: Ipv4Addr::new(10, 0, 0, 1),
                header_dst: Ipv4Addr::BROADCAST,
            })
        );
        assert_eq!(
            PKTINFO_SPACE, 32,
            "CMSG_SPACE(sizeof in_pktinfo) on 64-bit Linux"
        );
    }

    #[test]
    fn walk_skips_other_messages_and_reads_gro() {
        let mut buf = vec![0u8; 128];
        let a = write(&mut buf, libc::SOL_SOCKET, 99, &[1, 2, 3]);
        let b = write(
            &mut buf[a..],
            libc::SOL_UDP,
            UDP_GRO,
            &1000i32.to_ne_bytes(),
        );
        let all = &buf[..a + b];
        let kinds: Vec<_> = walk(all).map(|c| (c.level, c.kind, c.data.len())).collect();
        assert_eq!(
            kinds,
            vec![(libc::SOL_SOCKET, 99, 3), (libc::SOL_UDP, UDP_GRO, 4)]
        );
        assert_eq!(parse_gro_segment(all), Some(1000));
        assert_eq!(parse_pktinfo(all), None);
        let zero = write(&mut buf, libc::SOL_UDP, UDP_GRO, &0i32.to_ne_bytes());
        assert_eq!(
            parse_gro_segment(&buf[..zero]),
            None,
            "0 is no segment size"
        );
    }

    #[test]
    fn udp_segment_message_matches_the_kernel_layout() {
        let mut buf = CmsgBuf::<32>::new();
        let space = write_udp_segment(&mut buf.0, 1472);
        assert_eq!(space, cmsg_space(2));
        let c = walk(buf.filled(space)).next().unwrap();
        assert_eq!((c.level, c.kind), (libc::SOL_UDP, UDP_SEGMENT));
        assert_eq!(c.data, 1472u16.to_ne_bytes());
    }
}
