//! How many leases each link holds: what `max_leases_per_link` is checked against.
//!
//! A lease holds a share of its link while it is active (offered, bound or declined, and not
//! expired) and is not a reservation (a host's reserved address is not the pool's). A record
//! with no link (read from format version 1) holds none until its client's next REQUEST
//! rewrites it.
//!
//! The counts are kept in memory and rebuilt from the lease table when the responder starts,
//! after a reload (reservations may have changed), after a failed batch commit (the store
//! went back to the database) and if the clock steps back. Between rebuilds they follow every
//! lease change ([`Shares::record`], [`Shares::forget`]) and every expiry: each counted lease
//! has an entry (expiry, address) in a min-heap, and [`Shares::expire`], called before each
//! request, pops the entries whose time has come. A request thus costs a peek at the heap and
//! a hash look-up; a lease change costs a heap push. Renewals leave stale entries in the heap
//! (an entry whose expiry no longer matches the lease is skipped when popped); the heap is
//! rebuilt from the live entries when stale ones outnumber them, so its size stays within
//! twice the number of counted leases (plus a constant). The maps and the heap reserve room
//! for every pool address at the start: no allocation per request after that. With no bound
//! configured nothing is counted ([`Shares::off`]): no memory, no work.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::Ipv4Addr;

use crate::dhcp::leases::{Lease, LeaseStore, Link};
use crate::hosts::HostIndex;

/// Heap entries beyond twice the live ones before the heap is rebuilt.
const HEAP_SLACK: usize = 1024;

/// A counted lease: its link and until when it holds a share.
#[derive(Debug, Clone, Copy)]
struct Hold {
    link: Link,
    expires: u64,
}

#[derive(Debug, Default)]
pub(super) struct Shares {
    /// Counting at all (some pool has a bound).
    on: bool,
    /// Leases held per link (no entry: none).
    held: HashMap<Link, u32>,
    /// Every counted lease, by address.
    holds: HashMap<Ipv4Addr, Hold>,
    /// (expiry, address) of counted leases, earliest first; may hold stale entries.
    expiry: BinaryHeap<Reverse<(u64, u32)>>,
    /// The counts must be rebuilt from the store before they are used.
    stale: bool,
    /// The `now` of the last request: a clock that steps back forces a rebuild.
    last_now: u64,
}

impl Shares {
    /// Empty counts, stale (rebuilt at the first request), with room for `addresses` leases.
    pub(super) fn with_capacity(addresses: usize) -> Shares {
        Shares {
            on: true,
            held: HashMap::with_capacity(64),
            holds: HashMap::with_capacity(addresses),
            expiry: BinaryHeap::with_capacity(2 * addresses + HEAP_SLACK),
            stale: true,
            last_now: 0,
        }
    }

    /// Counts nothing: no pool has a bound.
    pub(super) fn off() -> Shares {
        Shares::default()
    }

    /// The counts no longer match the store (a reload, a failed commit): rebuild them before
    /// the next request.
    pub(super) fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// Brings the counts to `now`: a rebuild if they are stale or the clock stepped back, else
    /// the expiry of every lease whose time has passed.
    pub(super) fn expire(&mut self, now: u64, store: &impl LeaseStore, hosts: &HostIndex) {
        if !self.on {
            return;
        }
        if self.stale || now < self.last_now {
            self.rebuild(now, store, hosts);
        }
        self.last_now = now;
        while let Some(&Reverse((at, ip))) = self.expiry.peek()
            && at <= now
        {
            self.expiry.pop();
            let ip = Ipv4Addr::from(ip);
            if self.holds.get(&ip).is_some_and(|h| h.expires == at) {
                self.forget(ip);
            }
        }
    }

    /// Leases `link` holds.
    pub(super) fn held(&self, link: &Link) -> u32 {
        self.held.get(link).copied().unwrap_or(0)
    }

    /// `lease` was stored at `now`: it replaces whatever its address held before.
    pub(super) fn record(&mut self, lease: &Lease, now: u64, hosts: &HostIndex) {
        if !self.on {
            return;
        }
        self.forget(lease.ip);
        if let Some(link) = counted(lease, now, hosts) {
            self.hold(lease.ip, link, lease.expires);
        }
    }

    /// The record at `ip` no longer holds a share (its client moved and it was released).
    pub(super) fn forget(&mut self, ip: Ipv4Addr) {
        let Some(h) = self.holds.remove(&ip) else {
            return;
        };
        if let Some(n) = self.held.get_mut(&h.link) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(&h.link);
            }
        }
    }

    fn hold(&mut self, ip: Ipv4Addr, link: Link, expires: u64) {
        self.holds.insert(ip, Hold { link, expires });
        *self.held.entry(link).or_insert(0) += 1;
        if self.expiry.len() >= 2 * self.holds.len() + HEAP_SLACK {
            self.compact();
        }
        self.expiry.push(Reverse((expires, u32::from(ip))));
    }

    /// The heap again with one entry per counted lease (its buffer is reused).
    fn compact(&mut self) {
        let mut v = std::mem::take(&mut self.expiry).into_vec();
        v.clear();
        v.extend(
            self.holds
                .iter()
                .map(|(ip, h)| Reverse((h.expires, u32::from(*ip)))),
        );
        self.expiry = BinaryHeap::from(v);
    }

    /// The counts again from every record of `store`.
    fn rebuild(&mut self, now: u64, store: &impl LeaseStore, hosts: &HostIndex) {
        self.held.clear();
        self.holds.clear();
        self.expiry.clear();
        store.for_each(&mut |l| {
            if let Some(link) = counted(l, now, hosts) {
                self.hold(l.ip, link, l.expires);
            }
        });
        self.stale = false;
    }
}

/// The link whose share `lease` holds at `now`, if it holds one.
fn counted(lease: &Lease, now: u64, hosts: &HostIndex) -> Option<Link> {
    let link = lease.link?;
    (lease.is_active(now) && hosts.reserved(lease.ip).is_none()).then_some(link)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::leases::{IfName, LeaseState, MemoryLeaseStore};
    use pxe_proto::MacAddr;

    fn lease(last: u8, link: Option<Link>, expires: u64, state: LeaseState) -> Lease {
        Lease {
            ip: Ipv4Addr::new(10, 0, 0, last),
            mac: MacAddr([2, 0, 0, 0, 0, last]),
            uuid: None,
            expires,
            state,
            link,
        }
    }

    #[test]
    fn counts_follow_changes_expiry_and_rebuilds() {
        let hosts = HostIndex::default();
        let a = Link::Relay(Ipv4Addr::new(10, 0, 0, 1));
        let b = Link::Interface(IfName::new("eth1").unwrap());
        let mut store = MemoryLeaseStore::new();
        let mut s = Shares::with_capacity(16);
        s.expire(0, &store, &hosts);
        let put = |s: &mut Shares, store: &mut MemoryLeaseStore, l: Lease, now| {
            store.put(&l).unwrap();
            s.record(&l, now, &hosts);
        };
        put(
            &mut s,
            &mut store,
            lease(1, Some(a), 10, LeaseState::Offered),
            0,
        );
        put(
            &mut s,
            &mut store,
            lease(2, Some(a), 20, LeaseState::Bound),
            0,
        );
        put(
            &mut s,
            &mut store,
            lease(3, Some(b), 30, LeaseState::Declined),
            0,
        );
        put(&mut s, &mut store, lease(4, None, 40, LeaseState::Bound), 0);
        put(
            &mut s,
            &mut store,
            lease(5, Some(b), 0, LeaseState::Released),
            0,
        );
        assert_eq!((s.held(&a), s.held(&b)), (2, 1));
        // Renewed: still one share, its old expiry is stale.
        put(
            &mut s,
            &mut store,
            lease(1, Some(a), 25, LeaseState::Bound),
            5,
        );
        assert_eq!(s.held(&a), 2);
        s.expire(10, &store, &hosts);
        assert_eq!(
            s.held(&a),
            2,
            "the renewed lease holds on past its old expiry"
        );
        s.expire(20, &store, &hosts);
        assert_eq!(s.held(&a), 1);
        s.expire(25, &store, &hosts);
        assert_eq!((s.held(&a), s.held(&b)), (0, 1));
        assert!(
            !s.held.contains_key(&a),
            "no entry for a link that holds nothing"
        );
        // A rebuild sees the same as the events did.
        s.mark_stale();
        s.expire(25, &store, &hosts);
        assert_eq!((s.held(&a), s.held(&b)), (0, 1));
        // The clock steps back: 1 and 2 are active again by the store.
        s.expire(15, &store, &hosts);
        assert_eq!((s.held(&a), s.held(&b)), (2, 1));
    }

    #[test]
    fn renewals_do_not_grow_the_heap_without_bound() {
        let hosts = HostIndex::default();
        let a = Link::Relay(Ipv4Addr::new(10, 0, 0, 1));
        let store = MemoryLeaseStore::new();
        let mut s = Shares::with_capacity(4);
        s.expire(0, &store, &hosts);
        for t in 0..10_000 {
            s.record(
                &lease(1, Some(a), 100_000 + t, LeaseState::Bound),
                0,
                &hosts,
            );
        }
        assert_eq!(s.held(&a), 1);
        assert!(s.expiry.len() <= 2 + HEAP_SLACK, "{}", s.expiry.len());
        s.expire(110_000, &store, &hosts);
        assert_eq!(s.held(&a), 0);
        assert!(s.expiry.is_empty());
    }
}
