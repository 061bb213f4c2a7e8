//! Connection slots: at most `max_connections` open connections in all, and at most
//! `max_connections_per_client` from one client address.
//!
//! The accept loop takes a [`Slot`] for each accepted connection before it serves it; the
//! connection's task holds the slot, and dropping it (the connection ended, its task was
//! dropped, the runtime shut down) gives both counts back. A connection that gets no slot is
//! refused (the accept loop writes a best-effort 503 and closes it), counted, and logged through
//! a [`LogLimiter`]: one warning per [`REFUSAL_LOG_INTERVAL`] and kind of refusal, naming the
//! client, the limit and the setting to raise, with the count of warnings held back.
//!
//! An IPv4-mapped IPv6 address (`::ffff:10.0.0.5`) is the same client as the plain IPv4
//! address (the IPv6 listeners are IPv6-only today, so only a dual-stack socket would report
//! one; the count does not rely on that). The per-address counts are a map with one entry per
//! address that has a connection open, taken and given back once per connection, never per
//! request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use super::HttpMetrics;
use crate::metrics::{self, LogLimiter};
use crate::tftp::service::REFUSAL_LOG_INTERVAL;

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` connections are open.
    ServerFull,
    /// The client's address has `max_connections_per_client` connections open.
    ClientFull,
}

/// The connection counts, shared by every listener's accept loop and every connection.
/// `connections_open` in the metrics is the global count (a gauge that is also the limit's
/// counter).
#[derive(Debug)]
pub struct Slots {
    max_connections: u64,
    max_per_client: u32,
    metrics: Arc<HttpMetrics>,
    per_client: Mutex<HashMap<IpAddr, u32>>,
    server_full_log: LogLimiter,
    client_full_log: LogLimiter,
}

/// One open connection's share of both limits; dropping it gives it back.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release(self.client);
    }
}

impl Slots {
    /// `max_connections` in all (at least 1), `max_per_client` per client address (at least 1;
    /// beyond `u32::MAX` it is `u32::MAX`).
    pub fn new(max_connections: u64, max_per_client: usize, metrics: Arc<HttpMetrics>) -> Slots {
        Slots {
            max_connections: max_connections.max(1),
            max_per_client: u32::try_from(max_per_client).unwrap_or(u32::MAX).max(1),
            metrics,
            per_client: Mutex::new(HashMap::new()),
            server_full_log: LogLimiter::new(REFUSAL_LOG_INTERVAL),
            client_full_log: LogLimiter::new(REFUSAL_LOG_INTERVAL),
        }
    }

    pub fn max_connections(&self) -> u64 {
        self.max_connections
    }

    pub fn max_per_client(&self) -> u32 {
        self.max_per_client
    }

    /// A slot for a connection from `client`, or why there is none. Takes nothing when it
    /// refuses.
    pub fn take(self: &Arc<Self>, client: IpAddr) -> Result<Slot, Refusal> {
        let client = client.to_canonical();
        let open = &self.metrics.connections_open;
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < self.max_connections).then_some(n + 1)
        })
        .map_err(|_| Refusal::ServerFull)?;
        let mut per_client = self.lock();
        let count = per_client.entry(client).or_insert(0);
        if *count >= self.max_per_client {
            drop(per_client);
            open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::ClientFull);
        }
        *count += 1;
        Ok(Slot {
            slots: Arc::clone(self),
            client,
        })
    }

    fn release(&self, client: IpAddr) {
        let mut per_client = self.lock();
        if let Some(count) = per_client.get_mut(&client) {
            *count -= 1;
            if *count == 0 {
                per_client.remove(&client);
            }
        }
        drop(per_client);
        self.metrics.connections_open.fetch_sub(1, Ordering::AcqRel);
    }

    /// Connections open from `client` now.
    pub fn open_from(&self, client: IpAddr) -> u32 {
        self.lock()
            .get(&client.to_canonical())
            .copied()
            .unwrap_or(0)
    }

    /// Client addresses with a connection open now.
    pub fn clients(&self) -> usize {
        self.lock().len()
    }

    /// Counts a refused connection and logs it (rate-limited): who, which limit, and the
    /// setting to raise.
    pub fn refused(&self, refusal: Refusal, client: IpAddr) {
        let client = client.to_canonical();
        match refusal {
            Refusal::ServerFull => {
                metrics::inc(&self.metrics.connections_refused);
                let Some(held_back) = self.server_full_log.allow() else {
                    return;
                };
                tracing::warn!(
                    %client,
                    max_connections = self.max_connections,
                    refusals_not_logged = held_back,
                    "HTTP connection refused (503): max_connections connections are open; \
                     raise [http] max_connections (and the open-file limit it is fitted to)"
                );
            }
            Refusal::ClientFull => {
                metrics::inc(&self.metrics.connections_refused_per_client);
                let Some(held_back) = self.client_full_log.allow() else {
                    return;
                };
                tracing::warn!(
                    %client,
                    max_connections_per_client = self.max_per_client,
                    refusals_not_logged = held_back,
                    "HTTP connection refused (503): this client address already has \
                     max_connections_per_client connections open; raise \
                     [http] max_connections_per_client if many machines share one address \
                     (NAT, a load tester)"
                );
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, u32>> {
        // Every update under this lock is one step of one count: a poisoned map is consistent.
        self.per_client.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_client_cap_refuses_the_extra_connection_and_takes_nothing() {
        let m = Arc::new(HttpMetrics::default());
        let slots = Arc::new(Slots::new(100, 2, Arc::clone(&m)));
        let a1 = slots.take(ip("10.0.0.1")).unwrap();
        let a2 = slots.take(ip("10.0.0.1")).unwrap();
        assert_eq!(slots.take(ip("10.0.0.1")).unwrap_err(), Refusal::ClientFull);
        // Another address is not affected.
        let b1 = slots.take(ip("10.0.0.2")).unwrap();
        assert_eq!(slots.open_from(ip("10.0.0.1")), 2);
        assert_eq!(slots.open_from(ip("10.0.0.2")), 1);
        assert_eq!(m.snapshot().connections_open, 3);
        // One ends: its address may connect again.
        drop(a1);
        assert_eq!(slots.open_from(ip("10.0.0.1")), 1);
        assert_eq!(m.snapshot().connections_open, 2);
        let a3 = slots.take(ip("10.0.0.1")).unwrap();
        assert_eq!(slots.take(ip("10.0.0.1")).unwrap_err(), Refusal::ClientFull);
        drop((a2, a3, b1));
        // Every entry is gone once its last connection ends.
        assert_eq!(slots.clients(), 0);
        assert_eq!(m.snapshot().connections_open, 0);
    }

    #[test]
    fn global_cap_is_checked_first_and_takes_nothing() {
        let m = Arc::new(HttpMetrics::default());
        let slots = Arc::new(Slots::new(2, 32, Arc::clone(&m)));
        let a = slots.take(ip("10.0.0.1")).unwrap();
        let b = slots.take(ip("10.0.0.2")).unwrap();
        assert_eq!(slots.take(ip("10.0.0.3")).unwrap_err(), Refusal::ServerFull);
        assert_eq!(slots.open_from(ip("10.0.0.3")), 0);
        assert_eq!(slots.clients(), 2);
        assert_eq!(m.snapshot().connections_open, 2);
        drop(a);
        let c = slots.take(ip("10.0.0.3")).unwrap();
        drop((b, c));
        assert_eq!((slots.clients(), m.snapshot().connections_open), (0, 0));
    }

    #[test]
    fn ipv4_mapped_ipv6_is_the_same_client() {
        let slots = Arc::new(Slots::new(100, 2, Arc::default()));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        let _a = slots.take(ip("192.0.2.7")).unwrap();
        let _b = slots.take(mapped).unwrap();
        assert_eq!(slots.take(mapped).unwrap_err(), Refusal::ClientFull);
        assert_eq!(
            slots.take(ip("192.0.2.7")).unwrap_err(),
            Refusal::ClientFull
        );
        assert_eq!(slots.open_from(mapped), 2);
        assert_eq!(slots.clients(), 1);
        // A real IPv6 address is another client.
        let _c = slots.take(IpAddr::V6(Ipv6Addr::LOCALHOST)).unwrap();
        assert_eq!(slots.clients(), 2);
    }

    #[test]
    fn refusals_are_counted_by_kind() {
        let m = Arc::new(HttpMetrics::default());
        let slots = Slots::new(1, 1, Arc::clone(&m));
        slots.refused(Refusal::ClientFull, ip("10.0.0.1"));
        slots.refused(Refusal::ClientFull, ip("10.0.0.1"));
        slots.refused(Refusal::ServerFull, ip("10.0.0.2"));
        let s = m.snapshot();
        assert_eq!(
            (s.connections_refused_per_client, s.connections_refused),
            (2, 1)
        );
    }

    #[test]
    fn limits_are_at_least_one() {
        let slots = Slots::new(0, 0, Arc::default());
        assert_eq!((slots.max_connections(), slots.max_per_client()), (1, 1));
        let slots = Slots::new(5, usize::MAX, Arc::default());
        assert_eq!(slots.max_per_client(), u32::MAX);
    }

    #[test]
    fn slots_are_given_back_from_other_threads() {
        let m = Arc::new(HttpMetrics::default());
        let slots = Arc::new(Slots::new(10_000, 10_000, Arc::clone(&m)));
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let slots = &slots;
                s.spawn(move || {
                    for i in 0..500u32 {
                        let client = IpAddr::V4(Ipv4Addr::new(10, t, 0, (i % 7) as u8));
                        let held: Vec<Slot> = (0..3).map(|_| slots.take(client).unwrap()).collect();
                        drop(held);
                    }
                });
            }
        });
        assert_eq!((slots.clients(), m.snapshot().connections_open), (0, 0));
    }
}
