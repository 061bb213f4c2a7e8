//! The free addresses of one `[[dhcp.subnets]]` pool.
//!
//! The lease store is the truth; the pool keeps a free list, a queue of the addresses it
//! believes free, oldest first, so that an allocation does not scan the range. Every address
//! taken from the list is checked against the store (and the request) before it is offered,
//! so a stale entry costs one look-up, never a wrong offer. The list learns of addresses that
//! become free by events (a RELEASE, a client moving to another address: the responder calls
//! [`Pool::release`]) and by time (a lease that expires): when the list runs empty it is rebuilt
//! from the store by one pass over the range, but only if something may have freed an address
//! since the last pass (the earliest lease expiry it saw has passed, or the pool was marked
//! stale by a reload or a failed commit). A full pool thus answers "exhausted" without a scan.
//!
//! Addresses are handed out round-robin: a rebuild starts after the last address handed out.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use crate::dhcp::Subnet;
use crate::dhcp::leases::LeaseStore;
use crate::hosts::HostIndex;

#[derive(Debug)]
pub(super) struct Pool {
    pub(super) cfg: Subnet,
    /// The first address of the range, as a number.
    start: u32,
    /// Addresses in the range.
    size: u32,
    /// Offset after the last address handed out: where a rebuild starts.
    next: u32,
    /// Offsets believed free, oldest first.
    free: VecDeque<u32>,
    /// Bit `off` set: `off` is in `free` (no address is queued twice).
    queued: Vec<u64>,
    /// The free list must be rebuilt before it is trusted to be complete.
    stale: bool,
    /// The earliest expiry of a lease the last rebuild saw: an empty list is rebuilt only once
    /// it has passed (or when `stale`).
    next_expiry: u64,
}

impl Pool {
    /// A pool over `cfg`'s range whose round-robin position is `next`; its free list is built
    /// from the store at the first allocation.
    pub(super) fn new(cfg: Subnet, next: u32) -> Pool {
        let start = u32::from(cfg.range_start);
        let size = u32::from(cfg.range_end) - start + 1;
        Pool {
            cfg,
            start,
            size,
            next: next % size,
            free: VecDeque::new(),
            queued: vec![0; (size as usize).div_ceil(64)],
            stale: true,
            next_expiry: 0,
        }
    }

    /// The round-robin position (kept by a reload that leaves the subnet unchanged).
    pub(super) fn position(&self) -> u32 {
        self.next
    }

    /// Addresses in the range.
    pub(super) fn size(&self) -> u32 {
        self.size
    }

    pub(super) fn in_range(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip).wrapping_sub(self.start) < self.size
    }

    /// The list may be missing free addresses (a reload changed the reservations, a failed
    /// commit undid offers): rebuild it when it runs empty.
    pub(super) fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// `ip` became free (released, or its client moved): queued at the back.
    pub(super) fn release(&mut self, ip: Ipv4Addr) {
        if self.in_range(ip) {
            self.enqueue(u32::from(ip) - self.start);
        }
    }

    /// `ip`, popped by [`Pool::pop_free`], is being offered.
    pub(super) fn handed_out(&mut self, ip: Ipv4Addr) {
        self.next = (u32::from(ip) - self.start + 1) % self.size;
    }

    /// The next address believed free, removed from the list; `None` when there is none. An
    /// empty list is rebuilt from `store` at most once per allocation (`rebuilt` carries that
    /// across the calls of one allocation) and only when it may have changed.
    pub(super) fn pop_free(
        &mut self,
        now: u64,
        store: &impl LeaseStore,
        hosts: &HostIndex,
        rebuilt: &mut bool,
    ) -> Option<Ipv4Addr> {
        if self.free.is_empty() && !*rebuilt && (self.stale || now >= self.next_expiry) {
            self.rebuild(now, store, hosts);
            *rebuilt = true;
        }
        let off = self.free.pop_front()?;
        self.queued[off as usize / 64] &= !(1 << (off % 64));
        Some(Ipv4Addr::from(self.start + off))
    }

    fn enqueue(&mut self, off: u32) {
        let (word, bit) = (off as usize / 64, 1u64 << (off % 64));
        if self.queued[word] & bit == 0 {
            self.queued[word] |= bit;
            self.free.push_back(off);
        }
    }

    /// One pass over the range from the round-robin position: every address that is not the
    /// router, reserved for no host and holds no active lease is queued.
    fn rebuild(&mut self, now: u64, store: &impl LeaseStore, hosts: &HostIndex) {
        self.free.clear();
        self.queued.fill(0);
        let mut next_expiry = u64::MAX;
        for k in 0..self.size {
            let off = (self.next + k) % self.size;
            let ip = Ipv4Addr::from(self.start + off);
            if Some(ip) == self.cfg.router || hosts.reserved(ip).is_some() {
                continue;
            }
            match store.get(ip) {
                Some(l) if l.is_active(now) => next_expiry = next_expiry.min(l.expires),
                _ => self.enqueue(off),
            }
        }
        self.stale = false;
        self.next_expiry = next_expiry;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::leases::{Lease, LeaseState, MemoryLeaseStore};
    use pxe_proto::MacAddr;

    fn pool(first: u8, last: u8) -> Pool {
        Pool::new(
            Subnet {
                subnet: "10.0.0.0/24".parse().unwrap(),
                range_start: Ipv4Addr::new(10, 0, 0, first),
                range_end: Ipv4Addr::new(10, 0, 0, last),
                router: Some(Ipv4Addr::new(10, 0, 0, 11)),
                dns: Vec::new(),
                domain: None,
                lease_time_secs: None,
                max_leases_per_link: 0,
            },
            0,
        )
    }

    fn lease(last: u8, mac: u8, expires: u64) -> Lease {
        Lease {
            ip: Ipv4Addr::new(10, 0, 0, last),
            mac: MacAddr([2, 0, 0, 0, 0, mac]),
            uuid: None,
            expires,
            state: LeaseState::Bound,
            link: None,
        }
    }

    /// Pops everything the list holds (one allocation's worth of rebuilding).
    fn drain(p: &mut Pool, now: u64, store: &MemoryLeaseStore) -> Vec<u8> {
        let mut rebuilt = false;
        let hosts = HostIndex::default();
        std::iter::from_fn(|| p.pop_free(now, store, &hosts, &mut rebuilt))
            .map(|ip| ip.octets()[3])
            .collect()
    }

    #[test]
    fn rebuild_skips_the_router_and_active_leases_and_resumes_round_robin() {
        let mut store = MemoryLeaseStore::new();
        store.put(&lease(12, 1, 100)).unwrap();
        store.put(&lease(14, 2, 50)).unwrap(); // expired at 60
        let mut p = pool(10, 15);
        assert_eq!(drain(&mut p, 60, &store), [10, 13, 14, 15]);
        // Nothing handed out yet: the next rebuild starts at the range start again. The list
        // is empty and the earliest lease (12, until 100) has not expired: no rebuild.
        assert_eq!(drain(&mut p, 99, &store), Vec::<u8>::new());
        // After it expires the list is rebuilt, from the round-robin position.
        p.handed_out(Ipv4Addr::new(10, 0, 0, 13));
        assert_eq!(drain(&mut p, 100, &store), [14, 15, 10, 12, 13]);
    }

    #[test]
    fn released_addresses_queue_once_and_stale_forces_a_rebuild() {
        let store = MemoryLeaseStore::new();
        let mut p = pool(10, 12);
        assert_eq!(drain(&mut p, 0, &store), [10, 12]);
        p.release(Ipv4Addr::new(10, 0, 0, 12));
        p.release(Ipv4Addr::new(10, 0, 0, 12));
        p.release(Ipv4Addr::new(10, 0, 0, 99)); // not in the range
        // Queued once; no rebuild (nothing expires: next_expiry is the far future).
        assert_eq!(drain(&mut p, 0, &store), [12]);
        assert_eq!(drain(&mut p, 0, &store), Vec::<u8>::new());
        p.mark_stale();
        assert_eq!(drain(&mut p, 0, &store), [10, 12]);
        assert!(p.in_range(Ipv4Addr::new(10, 0, 0, 12)) && !p.in_range(Ipv4Addr::new(10, 0, 0, 9)));
    }
}
