//! Batched UDP over IPv4: `recvmmsg` into [`RecvBatch`] and `sendmmsg` from [`SendBatch`], one
//! implementation for the DHCP server (large batches, `IP_PKTINFO` both ways) and the simulators
//! (64-datagram batches, UDP GRO receives that hold a whole TFTP window).
//!
//! A batch allocates all its buffers once, when it is made (datagrams, addresses, iovecs,
//! control areas, headers): receiving or sending allocates nothing. Headers are rewired before
//! every call to point into the batch's own buffers.
//!
//! `recvmmsg` is not wrapped by rustix; `sendmmsg` is, but its ancillary buffer cannot carry
//! `IP_PKTINFO`, so both calls are libc's. The batches take the descriptor as a `RawFd`, the
//! form their callers hold it in: a wrong one fails the call (EBADF, ENOTSOCK), and nothing the
//! kernel writes goes anywhere but this batch's buffers.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;
use std::time::Duration;

use rustix::io::Errno;

use crate::cmsg::{CONTROL_LEN, CmsgBuf, PktInfo, parse_gro_segment, parse_pktinfo, write_pktinfo};
use crate::sockaddr::{v4_from_c, v4_to_c, zeroed_v4};

/// Datagrams per call of the simulators' batches ([`RecvBatch::new`], [`SendBatch::new`]).
pub const BATCH: usize = 64;
/// Receive buffer per datagram of [`RecvBatch::new`] (DHCP replies are at most a few hundred
/// bytes; jumbo-safe).
pub const RECV_BUF: usize = 2048;
/// Largest datagram a GRO receive can hand over (an IPv4 packet's payload at most).
pub const GRO_BUF: usize = 65536;
/// Messages per `recvmmsg` of [`RecvBatch::gro`] (each may hold a whole TFTP window).
pub const GRO_BATCH: usize = 8;
/// Initial capacity of each [`SendBatch::new`] buffer (a DHCP request).
const SEND_BUF: usize = 600;

/// Errors of sends, by errno name (ENOBUFS, EAGAIN, ...).
pub type ErrorCounts = BTreeMap<String, u64>;

/// The name of errno `e` for the error tables (`errno N` for the rare ones).
pub fn errno_name(e: i32) -> String {
    match Errno::from_raw_os_error(e) {
        Errno::NOBUFS => "ENOBUFS".into(),
        Errno::AGAIN => "EAGAIN".into(),
        Errno::NETUNREACH => "ENETUNREACH".into(),
        Errno::HOSTUNREACH => "EHOSTUNREACH".into(),
        Errno::CONNREFUSED => "ECONNREFUSED".into(),
        Errno::PERM => "EPERM".into(),
        Errno::ACCESS => "EACCES".into(),
        Errno::MSGSIZE => "EMSGSIZE".into(),
        Errno::INVAL => "EINVAL".into(),
        _ => format!("errno {e}"),
    }
}

/// The per-message arrays of a `recvmmsg`/`sendmmsg` batch, allocated once: header `i` points
/// at name `i`, iovec `i` and control area `i`.
struct MsgVecs {
    names: Vec<libc::sockaddr_in>,
    control: Vec<CmsgBuf<CONTROL_LEN>>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in the headers and iovecs are scratch: they are rewritten before
// every recvmmsg/sendmmsg to point into buffers the same batch owns, and are never dereferenced
// otherwise, so moving the struct to another thread is sound.
unsafe impl Send for MsgVecs {}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct (null pointers, zero lengths) for which all-zero
    // bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

impl MsgVecs {
    /// `n` messages, each with a control area when `control`.
    fn new(n: usize, control: bool) -> Self {
        MsgVecs {
            names: vec![zeroed_v4(); n],
            control: vec![CmsgBuf::new(); if control { n } else { 0 }],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                n
            ],
            hdrs: (0..n).map(|_| zeroed_mmsghdr()).collect(),
        }
    }

    /// Resets header `i` to point at name `i`, iovec `i` and `controllen` bytes of control
    /// area `i` (none when 0); returns it.
    fn wire(&mut self, i: usize, controllen: usize) -> &mut libc::mmsghdr {
        let h = &mut self.hdrs[i];
        *h = zeroed_mmsghdr();
        h.msg_hdr.msg_name = (&raw mut self.names[i]).cast();
        h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        h.msg_hdr.msg_iov = &raw mut self.iovs[i];
        h.msg_hdr.msg_iovlen = 1;
        if controllen > 0 {
            h.msg_hdr.msg_control = self.control[i].as_mut_ptr();
            h.msg_hdr.msg_controllen = controllen as _;
        }
        h
    }

    /// The part of control area `i` the kernel filled in the last receive.
    fn received_control(&self, i: usize) -> &[u8] {
        match self.control.get(i) {
            // `as _`: msg_controllen is usize with glibc but u32 with musl.
            Some(c) => c.filled(self.hdrs[i].msg_hdr.msg_controllen as _),
            None => &[],
        }
    }
}

/// Up to `capacity` datagrams from one `recvmmsg`, each with its sender, its flags and (when
/// made with [`with_control`](Self::with_control)) its control messages.
pub struct RecvBatch {
    buf_len: usize,
    bufs: Vec<u8>,
    m: MsgVecs,
    control: bool,
    /// Datagrams in the last batch.
    n: usize,
    truncated: u64,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    /// [`BATCH`] datagrams of up to [`RECV_BUF`] bytes, no control messages.
    pub fn new() -> Self {
        Self::with_capacity(BATCH, RECV_BUF)
    }

    /// `messages` datagrams of up to `buf_len` bytes each, no control messages.
    pub fn with_capacity(messages: usize, buf_len: usize) -> Self {
        let messages = messages.max(1);
        RecvBatch {
            buf_len,
            bufs: vec![0; messages * buf_len],
            m: MsgVecs::new(messages, false),
            control: false,
            n: 0,
            truncated: 0,
        }
    }

    /// The same batch with a control area per datagram, for `IP_PKTINFO` or `UDP_GRO`.
    pub fn with_control(mut self) -> Self {
        self.m = MsgVecs::new(self.capacity(), true);
        self.control = true;
        self
    }

    /// [`GRO_BATCH`] receives of up to [`GRO_BUF`] bytes with their control messages, for a
    /// socket with [`crate::enable_gro`]: each may be several datagrams of one sender glued
    /// together, split again by [`segments`](Self::segments).
    pub fn gro() -> Self {
        Self::with_capacity(GRO_BATCH, GRO_BUF).with_control()
    }

    pub fn capacity(&self) -> usize {
        self.m.hdrs.len()
    }

    /// Receives what is queued without blocking; `Ok(0)` when nothing is (or a signal came).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.recv_up_to(fd, self.capacity())
    }

    /// Like [`recv`](Self::recv), at most `max` (1..=capacity) datagrams: a socket that holds a
    /// few datagrams at a time costs less to set up for.
    pub fn recv_up_to(&mut self, fd: RawFd, max: usize) -> io::Result<usize> {
        self.recv_flags(fd, max, libc::MSG_DONTWAIT)
    }

    /// Blocks for the first datagram (up to the socket's SO_RCVTIMEO), then takes what else is
    /// queued (`MSG_WAITFORONE`); `Ok(0)` on the timeout.
    pub fn recv_wait_for_one(&mut self, fd: RawFd) -> io::Result<usize> {
        self.recv_flags(fd, self.capacity(), libc::MSG_WAITFORONE)
    }

    fn recv_flags(&mut self, fd: RawFd, max: usize, flags: libc::c_int) -> io::Result<usize> {
        let max = max.clamp(1, self.capacity());
        let controllen = if self.control { CONTROL_LEN } else { 0 };
        self.n = 0;
        let base = self.bufs.as_mut_ptr();
        for i in 0..max {
            self.m.iovs[i] = libc::iovec {
                // SAFETY: `bufs` holds capacity() slots of buf_len bytes; slot i is in bounds.
                iov_base: unsafe { base.add(i * self.buf_len) }.cast(),
                iov_len: self.buf_len,
            };
            self.m.wire(i, controllen);
        }
        // SAFETY: the first `max` headers point at a name, one iovec (to its own buf_len-byte
        // slot of `bufs`) and a control area (or none), all owned by `self` and not moved
        // during the call; the lengths given are those buffers' sizes.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.m.hdrs.as_mut_ptr(),
                max as libc::c_uint,
                flags,
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
        self.n = (r as usize).min(max);
        for h in &self.m.hdrs[..self.n] {
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.truncated += 1;
            }
        }
        Ok(self.n)
    }

    /// Datagrams in the last receive.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The bytes of datagram `i` (< [`len`](Self::len)) of the last receive.
    pub fn data(&self, i: usize) -> &[u8] {
        let len = (self.m.hdrs[i].msg_len as usize).min(self.buf_len);
        &self.bufs[i * self.buf_len..][..len]
    }

    /// The sender of datagram `i`; `None` if it is not an IPv4 address.
    pub fn source(&self, i: usize) -> Option<SocketAddrV4> {
        if i >= self.n {
            return None;
        }
        v4_from_c(&self.m.names[i], self.m.hdrs[i].msg_hdr.msg_namelen)
    }

    /// Datagram `i` did not fit its buffer and was cut (`MSG_TRUNC`).
    pub fn is_truncated(&self, i: usize) -> bool {
        self.m.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0
    }

    /// The control messages of datagram `i` (empty without a control area).
    pub fn control(&self, i: usize) -> &[u8] {
        self.m.received_control(i)
    }

    /// The `IP_PKTINFO` of datagram `i` (a batch [`with_control`](Self::with_control) on a
    /// socket with [`crate::set_pktinfo`]).
    pub fn pktinfo(&self, i: usize) -> Option<PktInfo> {
        parse_pktinfo(self.control(i))
    }

    /// Datagram `i` and its sender (0.0.0.0:0 if not IPv4).
    pub fn datagram(&self, i: usize) -> (&[u8], SocketAddrV4) {
        let from = self
            .source(i)
            .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        (self.data(i), from)
    }

    /// The datagrams of receive `i`, in the order they were sent, and their sender: with GRO
    /// one receive may hold several, cut at the segment size of its `UDP_GRO` message; without,
    /// it is one.
    pub fn segments(&self, i: usize) -> (impl Iterator<Item = &[u8]>, SocketAddrV4) {
        let (data, from) = self.datagram(i);
        let seg = parse_gro_segment(self.control(i)).unwrap_or(data.len());
        (split_segments(data, seg), from)
    }

    /// Receives cut short because they did not fit a buffer, since this batch was made.
    pub fn truncated(&self) -> u64 {
        self.truncated
    }
}

/// `data` cut into datagrams of `seg` bytes (the last may be shorter); one empty datagram if
/// `data` is empty (a zero-length UDP datagram is a datagram).
fn split_segments(data: &[u8], seg: usize) -> impl Iterator<Item = &[u8]> {
    let seg = seg.max(1);
    let empty = data.is_empty().then_some(data);
    data.chunks(seg).chain(empty)
}

/// What a [`SendBatch::flush_with`] retries before it gives a datagram up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Calls retried after EINTR (and EAGAIN when `would_block`) in one flush.
    pub attempts: u32,
    /// EAGAIN is retried too (a socket whose send buffer can fill).
    pub would_block: bool,
    /// Pause before each retry.
    pub pause: Duration,
}

impl Retry {
    /// Interrupted calls only, at once, up to 16 times (blocking sockets).
    pub const INTERRUPTED: Retry = Retry {
        attempts: 16,
        would_block: false,
        pause: Duration::ZERO,
    };
}

/// Up to `capacity` datagrams waiting for one `sendmmsg`, each with its destination and, if
/// given, the `IP_PKTINFO` to send it with.
pub struct SendBatch {
    bufs: Vec<Vec<u8>>,
    dests: Vec<SocketAddrV4>,
    info: Vec<Option<PktInfo>>,
    m: MsgVecs,
    len: usize,
}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl SendBatch {
    /// [`BATCH`] datagrams.
    pub fn new() -> Self {
        Self::with_capacity(BATCH, SEND_BUF)
    }

    /// `messages` datagrams, each buffer with room for `buf_capacity` bytes before it grows.
    pub fn with_capacity(messages: usize, buf_capacity: usize) -> Self {
        let messages = messages.max(1);
        SendBatch {
            bufs: (0..messages)
                .map(|_| Vec::with_capacity(buf_capacity))
                .collect(),
            dests: vec![SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0); messages],
            info: vec![None; messages],
            m: MsgVecs::new(messages, true),
            len: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == self.capacity()
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The buffer of the next datagram; [`commit`](Self::commit) queues it.
    pub fn slot(&mut self) -> &mut Vec<u8> {
        assert!(!self.is_full(), "flush a full batch first");
        &mut self.bufs[self.len]
    }

    /// Queues the [`slot`](Self::slot)'s contents for `dest`.
    pub fn commit(&mut self, dest: SocketAddrV4) {
        self.commit_inner(dest, None);
    }

    /// Queues the slot's contents for `dest`, sent with `info` as its `IP_PKTINFO` (source
    /// address, and the interface it must leave through).
    pub fn commit_with_pktinfo(&mut self, dest: SocketAddrV4, info: PktInfo) {
        self.commit_inner(dest, Some(info));
    }

    fn commit_inner(&mut self, dest: SocketAddrV4, info: Option<PktInfo>) {
        assert!(!self.is_full(), "flush a full batch first");
        self.dests[self.len] = dest;
        self.info[self.len] = info;
        self.len += 1;
    }

    /// Direct access to buffer `i` (the flood patches prebuilt datagrams in place).
    pub fn buf_mut(&mut self, i: usize) -> &mut Vec<u8> {
        &mut self.bufs[i]
    }

    /// Marks the first `n` buffers as queued to `dest`, keeping their contents.
    pub fn fill(&mut self, n: usize, dest: SocketAddrV4) {
        let n = n.min(self.capacity());
        self.dests[..n].fill(dest);
        self.info[..n].fill(None);
        self.len = n;
    }

    /// Sends everything queued ([`Retry::INTERRUPTED`]). A datagram the kernel refuses
    /// (ENOBUFS, ...) is counted in `errors` by errno name and dropped; the rest of the batch is
    /// still sent. Returns datagrams sent.
    pub fn flush(&mut self, fd: RawFd, errors: &mut ErrorCounts) -> u64 {
        self.flush_with(fd, Retry::INTERRUPTED, |_, e| {
            *errors
                .entry(errno_name(e.raw_os_error().unwrap_or(0)))
                .or_default() += 1;
        })
    }

    /// Sends everything queued with `sendmmsg`, retrying as `retry` says; each datagram the
    /// kernel still refuses is handed to `refused` (its destination and the error) and
    /// dropped, and the rest of the batch is sent. Returns datagrams sent; the batch is empty
    /// afterwards.
    pub fn flush_with(
        &mut self,
        fd: RawFd,
        retry: Retry,
        mut refused: impl FnMut(SocketAddrV4, &io::Error),
    ) -> u64 {
        let n = self.len;
        self.len = 0;
        for k in 0..n {
            self.m.names[k] = v4_to_c(self.dests[k]);
            self.m.iovs[k] = libc::iovec {
                // sendmmsg only reads through this pointer.
                iov_base: self.bufs[k].as_ptr().cast_mut().cast(),
                iov_len: self.bufs[k].len(),
            };
            let controllen = match &self.info[k] {
                Some(info) => write_pktinfo(&mut self.m.control[k].0, info),
                None => 0,
            };
            self.m.wire(k, controllen);
        }
        let mut off = 0;
        let mut sent = 0u64;
        let mut retries = 0;
        // Each round sends at least one message or skips one that failed: at most n rounds,
        // plus the retries.
        while off < n {
            // SAFETY: headers off..n were wired above to names, iovecs (into `self.bufs`) and
            // control areas that `self` owns and that stay unmoved for the call.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.m.hdrs[off..].as_mut_ptr(),
                    (n - off) as libc::c_uint,
                    0,
                )
            };
            if r > 0 {
                off += r as usize;
                sent += r as u64;
                continue;
            }
            let e = io::Error::last_os_error();
            let again = match e.kind() {
                io::ErrorKind::Interrupted => true,
                io::ErrorKind::WouldBlock => retry.would_block,
                _ => false,
            };
            if again && retries < retry.attempts {
                retries += 1;
                if !retry.pause.is_zero() {
                    std::thread::sleep(retry.pause);
                }
                continue;
            }
            // The first datagram of the rest failed: hand it over, drop it, go on.
            refused(self.dests[off], &e);
            off += 1;
        }
        sent
    }
}

#[cfg(test)]
mod tests;
