//! The per-thread pool of send slots.
//!
//! A `sendmsg` submitted to io_uring reads its `msghdr`, iovecs, destination address and
//! control message when the kernel gets to it, which can be after the SQE was pushed and even
//! after the session that sent it has ended. So everything a send references lives in a slot of
//! this pool, allocated once when the thread starts and never moved (a boxed slice), and a slot
//! is only reused after its completion arrived. A slot also holds a clone of the image's `Arc`,
//! so the mapping a DATA iovec points into outlives the send even if the session is dropped.
//!
//! One slot is one `sendmsg`: a control packet (OACK/ERROR, copied into the slot's small
//! buffer), a single DATA packet (header iovec + payload iovec into the image), or, with UDP
//! GSO, up to [`MAX_SEGMENTS`] DATA packets to one peer with a `UDP_SEGMENT` control message.

use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;

use io_uring::{opcode, squeue, types};

use pxe_net::cmsg::{CmsgBuf, cmsg_space, write_udp_segment};
use pxe_net::sockaddr::to_storage;

use crate::images::Image;

/// Most datagrams in one GSO send (the kernel's own limit is 64 or 128 depending on version).
pub(super) const MAX_SEGMENTS: usize = 64;
/// Most bytes in one GSO send (UDP payload limit with margin for headers).
pub(super) const GSO_MAX_BYTES: usize = 65000;
/// Size of the buffer for control packets and listener replies.
pub(super) const CTRL_LEN: usize = 1024;

/// The part of a slot the kernel reads. Only integers, byte arrays and raw pointers, so the
/// all-zero value is valid and the pool can be allocated zeroed (pages are touched on use only).
#[repr(C)]
struct RawSlot {
    hdrs: [[u8; 4]; MAX_SEGMENTS],
    iov: [libc::iovec; 2 * MAX_SEGMENTS],
    msg: libc::msghdr,
    addr: libc::sockaddr_storage,
    cmsg: CmsgBuf<{ cmsg_space(size_of::<u16>()) }>,
    ctrl: [u8; CTRL_LEN],
}

/// Who is waiting for a slot's completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    /// A session's socket; `generation` guards against a reused slab entry.
    Session { idx: u32, generation: u32 },
    /// A listening socket (an ERROR reply to a request).
    Listener,
}

struct SlotMeta {
    owner: Owner,
    _image: Option<Arc<Image>>,
    fd: RawFd,
    namelen: libc::socklen_t,
    /// DATA packets in the slot (0 for a control packet).
    npkts: usize,
    /// Payload length of every packet but possibly the last (the GSO segment size - 4).
    seg_payload: usize,
    /// Bytes on the wire (headers + payloads).
    bytes: usize,
    /// A packet shorter than `seg_payload` was added: nothing can follow it in this send.
    sealed: bool,
    /// Length of the control packet in `ctrl`, for control slots.
    ctrl_len: usize,
    /// The send carried `UDP_SEGMENT`.
    gso: bool,
    /// After a GSO failure: the next packet to resend on its own.
    fallback_next: Option<usize>,
}

impl SlotMeta {
    const EMPTY: SlotMeta = SlotMeta {
        owner: Owner::Listener,
        _image: None,
        fd: -1,
        namelen: 0,
        npkts: 0,
        seg_payload: 0,
        bytes: 0,
        sealed: false,
        ctrl_len: 0,
        gso: false,
        fallback_next: None,
    };
}

pub(super) struct SendSlots {
    raw: Box<[RawSlot]>,
    meta: Vec<SlotMeta>,
    free: Vec<u32>,
}

impl SendSlots {
    pub(super) fn new(n: usize) -> SendSlots {
        // SAFETY: RawSlot holds only integers, arrays of integers and raw pointers, for which
        // all-zero bits are valid values.
        let raw = unsafe { Box::<[RawSlot]>::new_zeroed_slice(n).assume_init() };
        let meta = (0..n).map(|_| SlotMeta::EMPTY).collect();
        // Lowest index on top, so a lightly loaded thread keeps touching the same few pages.
        let free = (0..n as u32).rev().collect();
        SendSlots { raw, meta, free }
    }

    pub(super) fn available(&self) -> usize {
        self.free.len()
    }

    pub(super) fn alloc(&mut self) -> Option<u32> {
        self.free.pop()
    }

    /// Frees a slot after its completion; returns whom it belonged to.
    pub(super) fn release(&mut self, s: u32) -> Owner {
        let m = &mut self.meta[s as usize];
        let owner = m.owner;
        *m = SlotMeta::EMPTY;
        self.free.push(s);
        owner
    }

    pub(super) fn owner(&self, s: u32) -> Owner {
        self.meta[s as usize].owner
    }

    pub(super) fn used_gso(&self, s: u32) -> bool {
        self.meta[s as usize].gso
    }

    /// Sets a slot up to send `bytes` (a control packet, copied) to `dst` from `fd`.
    pub(super) fn fill_ctrl(
        &mut self,
        s: u32,
        fd: RawFd,
        dst: SocketAddr,
        owner: Owner,
        bytes: &[u8],
    ) {
        let (r, m) = (&mut self.raw[s as usize], &mut self.meta[s as usize]);
        let len = bytes.len().min(CTRL_LEN);
        r.ctrl[..len].copy_from_slice(&bytes[..len]);
        let namelen = to_storage(dst, &mut r.addr);
        *m = SlotMeta {
            owner,
            fd,
            namelen,
            ctrl_len: len,
            ..SlotMeta::EMPTY
        };
    }

    /// Sets a slot up for DATA packets from `image` to `dst`; add them with [`Self::append`].
    pub(super) fn start_data(
        &mut self,
        s: u32,
        fd: RawFd,
        dst: SocketAddr,
        owner: Owner,
        image: &Arc<Image>,
    ) {
        let (r, m) = (&mut self.raw[s as usize], &mut self.meta[s as usize]);
        let namelen = to_storage(dst, &mut r.addr);
        *m = SlotMeta {
            owner,
            _image: Some(Arc::clone(image)),
            fd,
            namelen,
            ..SlotMeta::EMPTY
        };
    }

    /// Whether a DATA packet with `len` payload bytes can join this slot's GSO send.
    pub(super) fn can_append(&self, s: u32, len: usize) -> bool {
        let m = &self.meta[s as usize];
        m.npkts > 0
            && !m.sealed
            && m.npkts < MAX_SEGMENTS
            && len <= m.seg_payload
            && m.bytes + 4 + len <= GSO_MAX_BYTES
    }

    pub(super) fn is_sealed(&self, s: u32) -> bool {
        self.meta[s as usize].sealed
    }

    /// Adds one DATA packet: a header iovec (the header is copied into the slot) and an iovec
    /// over `payload`, which is NOT copied.
    ///
    /// # Safety
    /// `payload` must point into memory owned by the image given to [`Self::start_data`] for
    /// this slot (the slot's `Arc` keeps it alive until [`Self::release`]).
    pub(super) unsafe fn append(&mut self, s: u32, header: [u8; 4], payload: &[u8]) {
        let (r, m) = (&mut self.raw[s as usize], &mut self.meta[s as usize]);
        let n = m.npkts;
        debug_assert!(n < MAX_SEGMENTS);
        if n >= MAX_SEGMENTS {
            return;
        }
        r.hdrs[n] = header;
        r.iov[2 * n] = libc::iovec {
            iov_base: r.hdrs[n].as_mut_ptr().cast(),
            iov_len: 4,
        };
        r.iov[2 * n + 1] = libc::iovec {
            iov_base: payload.as_ptr().cast_mut().cast(),
            iov_len: payload.len(),
        };
        if n == 0 {
            m.seg_payload = payload.len();
        } else if payload.len() < m.seg_payload {
            m.sealed = true;
        }
        m.npkts = n + 1;
        m.bytes += 4 + payload.len();
    }

    /// Fills the slot's `msghdr` for everything added and returns the SQE (user data not set).
    /// With `gso` and more than one packet, a `UDP_SEGMENT` control message makes it one send.
    pub(super) fn build(&mut self, s: u32, gso: bool) -> squeue::Entry {
        let (r, m) = (&mut self.raw[s as usize], &mut self.meta[s as usize]);
        r.msg.msg_name = (&raw mut r.addr).cast();
        r.msg.msg_namelen = m.namelen;
        r.msg.msg_flags = 0;
        r.msg.msg_control = std::ptr::null_mut();
        r.msg.msg_controllen = 0;
        if m.npkts == 0 {
            r.iov[0] = libc::iovec {
                iov_base: r.ctrl.as_mut_ptr().cast(),
                iov_len: m.ctrl_len,
            };
            r.msg.msg_iov = r.iov.as_mut_ptr();
            r.msg.msg_iovlen = 1;
        } else {
            r.msg.msg_iov = r.iov.as_mut_ptr();
            r.msg.msg_iovlen = 2 * m.npkts;
            m.gso = gso && m.npkts > 1;
            if m.gso {
                let seg = (m.seg_payload + 4) as u16;
                let len = write_udp_segment(&mut r.cmsg.0, seg);
                r.msg.msg_control = r.cmsg.as_mut_ptr();
                r.msg.msg_controllen = len as _;
            }
        }
        opcode::SendMsg::new(types::Fd(m.fd), &raw const r.msg).build()
    }

    /// After a GSO send failed: the SQE that sends the next packet of this slot on its own, or
    /// `None` when all have been resent.
    pub(super) fn next_fallback(&mut self, s: u32) -> Option<squeue::Entry> {
        let (r, m) = (&mut self.raw[s as usize], &mut self.meta[s as usize]);
        let i = m.fallback_next.unwrap_or(0);
        if m.npkts == 0 || i >= m.npkts {
            m.fallback_next = None;
            return None;
        }
        m.fallback_next = Some(i + 1);
        m.gso = false;
        r.msg.msg_control = std::ptr::null_mut();
        r.msg.msg_controllen = 0;
        r.msg.msg_iov = r.iov[2 * i..].as_mut_ptr();
        r.msg.msg_iovlen = 2;
        Some(opcode::SendMsg::new(types::Fd(m.fd), &raw const r.msg).build())
    }

    /// Whether the slot is resending packets one by one after a GSO failure.
    pub(super) fn in_fallback(&self, s: u32) -> bool {
        self.meta[s as usize].fallback_next.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gso_batch_rules() {
        let img = Arc::new(Image::from_bytes(vec![7u8; 10_000]));
        let dst: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut p = SendSlots::new(2);
        let s = p.alloc().unwrap();
        let owner = Owner::Session {
            idx: 3,
            generation: 1,
        };
        p.start_data(s, 5, dst, owner, &img);
        let data = img.octets();
        // SAFETY: the payloads are slices of `img`, given to start_data.
        unsafe { p.append(s, [0, 3, 0, 1], &data[..1000]) };
        assert!(p.can_append(s, 1000));
        assert!(!p.can_append(s, 1001), "a longer segment cannot follow");
        // SAFETY: as above.
        unsafe { p.append(s, [0, 3, 0, 2], &data[1000..1500]) };
        assert!(p.is_sealed(s));
        assert!(!p.can_append(s, 10), "nothing follows a short last segment");
        let _ = p.build(s, true);
        assert!(p.used_gso(s));
        // The fallback walks each packet once.
        assert!(p.next_fallback(s).is_some());
        assert!(p.next_fallback(s).is_some());
        assert!(p.next_fallback(s).is_none());
        assert_eq!(p.release(s), owner);
        assert_eq!(p.available(), 2);
    }

    #[test]
    fn gso_byte_and_segment_limits() {
        let img = Arc::new(Image::from_bytes(vec![0u8; 70_000]));
        let dst: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut p = SendSlots::new(1);
        let s = p.alloc().unwrap();
        p.start_data(s, 5, dst, Owner::Listener, &img);
        let d = img.octets();
        let mut n = 0;
        while p.can_append(s, 1468) || n == 0 {
            // SAFETY: slices of `img`.
            unsafe { p.append(s, [0, 3, 0, 0], &d[n * 1468..(n + 1) * 1468]) };
            n += 1;
        }
        assert_eq!(n, GSO_MAX_BYTES / 1472);
        let mut p = SendSlots::new(1);
        let s = p.alloc().unwrap();
        p.start_data(s, 5, dst, Owner::Listener, &img);
        let mut n = 0;
        while p.can_append(s, 8) || n == 0 {
            // SAFETY: slices of `img`.
            unsafe { p.append(s, [0, 3, 0, 0], &d[..8]) };
            n += 1;
        }
        assert_eq!(n, MAX_SEGMENTS);
    }
}
