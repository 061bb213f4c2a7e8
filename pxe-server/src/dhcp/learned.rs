//! Proxy mode: the addresses `[[hosts]]` entries boot from, as learned from their own DHCP
//! requests. In proxy mode another DHCP server hands out the addresses, so this is the only
//! place the install routes can learn where a host is (its `[[hosts]] address`, when set,
//! comes first; in full mode its lease does).
//!
//! What is learned, and how far it can be trusted:
//! - A PXE ROM or iPXE takes its address with a REQUEST to the server that offered it; in the
//!   SELECTING state that REQUEST is broadcast, so we see it on port 67: its option 50 names
//!   the address it is taking. (iPXE does this for its own DHCP after the chain, just before
//!   it fetches its script; it sends no port-4011 request when our proxy offer already names
//!   the boot file, as ours do.)
//! - A client that asks the boot server on port 4011 does so from its new address and names
//!   it in `ciaddr`: a REQUEST or INFORM answered there whose source equals its `ciaddr`.
//! - Only requests the responder judges PXE or HTTP boot clients, naming a `[[hosts]]` entry
//!   (by MAC, else UUID), in proxy mode (full mode has leases).
//! - A claim lives [`LEARNED_TTL_SECS`]: the ROM's DHCP, the chained iPXE's own DHCP a few
//!   seconds later and its script fetch all fall inside; an address learned last week says
//!   nothing about today.
//! - Nobody checks a DHCP request's sender: a machine on the segment can send one naming
//!   another host's MAC and its own address. If the host itself boots inside the same window
//!   its own request contradicts the claim: two addresses for one host within
//!   [`LEARNED_TTL_SECS`] is a conflict, the host has no learned address until the window has
//!   passed since the last claim, it is counted and logged (rate-limited). What is left is the
//!   window where the real host is not booting: a forger then gets what the host would get.
//!   That is the limit of what a proxy can know; `[[hosts]] address` (the real DHCP server's
//!   reservation) closes it, and SECURITY.md says so.
//!
//! The table holds only `[[hosts]]` entries (keys as [`crate::hosts::HostConfig::key`]), so
//! it is bounded by the configuration; expired entries are dropped as new ones arrive.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

use crate::metrics::{self, LogLimiter};

/// How long a learned address holds (and how long a conflict withholds it).
pub const LEARNED_TTL_SECS: u64 = 300;
/// At most one conflict warning per this interval (each conflict is counted).
const CONFLICT_LOG_INTERVAL: Duration = Duration::from_secs(10);

metrics::counters! {
    LearnedMetrics, LearnedSnapshot, "learned addresses";
    /// Requests an address was learned (or refreshed) from.
    learned,
    /// Claims of a second address for a host inside the window: its address is withheld.
    conflicts,
}

#[derive(Debug, Clone, Copy)]
struct Claim {
    ip: Ipv4Addr,
    seen: u64,
    /// Before this time the host has no learned address (two addresses claimed it).
    conflict_until: u64,
}

/// The learned addresses, shared by the DHCP thread (writer) and the HTTP threads (readers).
#[derive(Debug)]
pub struct LearnedAddresses {
    claims: Mutex<HashMap<String, Claim>>,
    metrics: LearnedMetrics,
    conflict_log: LogLimiter,
}

impl Default for LearnedAddresses {
    fn default() -> Self {
        LearnedAddresses {
            claims: Mutex::default(),
            metrics: LearnedMetrics::default(),
            conflict_log: LogLimiter::new(CONFLICT_LOG_INTERVAL),
        }
    }
}

impl LearnedAddresses {
    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<String, Claim>> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that the host `key` (`label` for the log) asked from `ip` at `now_unix`.
    pub fn learn(&self, key: &str, label: &str, ip: Ipv4Addr, now_unix: u64) {
        metrics::inc(&self.metrics.learned);
        let mut claims = self.claims();
        let fresh = |c: &Claim| now_unix < c.seen.saturating_add(LEARNED_TTL_SECS);
        let Some(claim) = claims.get_mut(key) else {
            claims.retain(|_, c| fresh(c) || now_unix < c.conflict_until);
            claims.insert(
                key.to_owned(),
                Claim {
                    ip,
                    seen: now_unix,
                    conflict_until: 0,
                },
            );
            return;
        };
        if claim.ip != ip && fresh(claim) {
            claim.conflict_until = now_unix.saturating_add(LEARNED_TTL_SECS);
            metrics::inc(&self.metrics.conflicts);
            if let Some(held) = self.conflict_log.allow() {
                tracing::warn!(
                    host = %label,
                    first = %claim.ip,
                    then = %ip,
                    held_back = held,
                    "two addresses claimed for one host in its DHCP requests (a forged \
                     request?): its install token is withheld for {LEARNED_TTL_SECS} s; give \
                     it `address` in its [[hosts]] entry to stop relying on what it claims"
                );
            }
        }
        claim.ip = ip;
        claim.seen = now_unix;
    }

    /// The address the host `key` asked from, if it did within the window and nothing
    /// contradicted it.
    pub fn get(&self, key: &str, now_unix: u64) -> Option<Ipv4Addr> {
        let claims = self.claims();
        let c = claims.get(key)?;
        (now_unix < c.seen.saturating_add(LEARNED_TTL_SECS) && now_unix >= c.conflict_until)
            .then_some(c.ip)
    }

    pub fn snapshot(&self) -> LearnedSnapshot {
        self.metrics.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_expire_and_conflicts_withhold() {
        let l = LearnedAddresses::default();
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 66));
        assert_eq!(l.get("mac:1", 100), None);
        l.learn("mac:1", "n1", a, 100);
        // The chained iPXE asks again from the same address: still it.
        l.learn("mac:1", "n1", a, 110);
        assert_eq!(l.get("mac:1", 120), Some(a));
        assert_eq!(l.get("mac:1", 110 + LEARNED_TTL_SECS), None);
        // Another address inside the window: nobody, for a window after the last claim.
        l.learn("mac:1", "n1", b, 200);
        assert_eq!(l.get("mac:1", 201), None);
        l.learn("mac:1", "n1", a, 210);
        assert_eq!(l.get("mac:1", 211), None);
        assert_eq!(l.get("mac:1", 210 + LEARNED_TTL_SECS - 1), None);
        // A new claim after everything expired is believed again.
        l.learn("mac:1", "n1", b, 1000);
        assert_eq!(l.get("mac:1", 1001), Some(b));
        // Expired entries go when another host arrives.
        l.learn("mac:2", "n2", a, 5000);
        assert_eq!(l.claims().len(), 1);
        let m = l.snapshot();
        assert_eq!((m.learned, m.conflicts), (6, 2));
    }
}
