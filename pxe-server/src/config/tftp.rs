//! `[tftp]`: the TFTP service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use pxe_proto::consts::TFTP_PORT;
use pxe_proto::tftp::{MAX_BLKSIZE, MIN_BLKSIZE};
use serde::{Deserialize, Serialize};

use super::{Check, Invalid, directory};
use crate::engine::{EngineChoice, EngineParams};
use crate::tftp::TftpSettings;
use crate::tftp::session::SessionConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TftpConfig {
    /// Directory served; every request is resolved beneath it.
    pub root: PathBuf,
    /// Addresses the TFTP listener binds (port 69 by default). `0.0.0.0:69` answers from the
    /// address each request arrived on.
    pub listen: Vec<SocketAddr>,
    pub engine: EngineChoice,
    /// Engine threads; 0 = one per CPU.
    pub threads: usize,
    /// Largest blksize granted (8..=65464).
    pub max_blksize: u16,
    /// Largest windowsize granted (1..=65535).
    pub max_windowsize: u16,
    /// Retransmit timeout in milliseconds when the client asks for none.
    pub timeout_ms: u64,
    /// Longest retransmit timeout granted when the client asks for one (RFC 2349 `timeout`, in
    /// whole seconds up to 255), in milliseconds (1000..=255000, rounded down to a second); the
    /// OACK names the value granted. A silent transfer holds its slot for `max_retries` + 1
    /// times this, so without a cap 32 requests from one spoofed address would lock that
    /// address out for 25 minutes. Default 5000: iPXE, OVMF and the tftp-hpa client never ask
    /// for a timeout, atftp asks only when told to (`--option`), curl asks for its retry time
    /// (6 s by default, less with `--connect-timeout` or `--max-time`) and ignores the OACK's
    /// value.
    pub max_client_timeout_ms: u64,
    /// Retransmissions without progress before a transfer is abandoned.
    pub max_retries: u8,
    /// Retransmissions of the first packet (OACK or DATA 1) to a client that has acknowledged
    /// nothing yet (0..=max_retries). Until its first ACK a request may come from a spoofed
    /// address, so each retransmission is traffic sent to a stranger: with the default 1, an
    /// RRQ gets at most two 516-byte packets back.
    pub unverified_retries: u8,
    /// Longest life of a transfer whose client has acknowledged nothing, in milliseconds
    /// (100..=60000), whatever its retransmit timeout; after its retransmissions it waits
    /// silently for a late ACK until then.
    pub unverified_lifetime_ms: u64,
    /// The share of `max_sessions` (1..=100 %, rounded up) that unacknowledged transfers may
    /// hold. A request that finds it taken, or the table full, ends the oldest unacknowledged
    /// transfer rather than being refused. 100 by default: in a real boot storm every machine
    /// asks at once and all their transfers are unacknowledged for a moment, so a smaller
    /// share would evict real clients of a storm larger than the share.
    pub unverified_share_percent: u8,
    /// The same share of `max_sessions_per_client` (1..=100 %, rounded up): one address (a
    /// spoofed one) holds at most this many unacknowledged transfers; a further request from
    /// it ends its own oldest one.
    pub unverified_share_per_client_percent: u8,
    /// Block number after 65535: 0 or 1.
    pub rollover: u16,
    /// Simultaneous transfers in all.
    pub max_sessions: usize,
    /// Simultaneous transfers per client IP address.
    pub max_sessions_per_client: usize,
    /// Use UDP GSO for windows when the kernel supports it.
    pub gso: bool,
}

impl Default for TftpConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/srv/tftp"),
            listen: vec![SocketAddr::from(([0, 0, 0, 0], TFTP_PORT))],
            engine: EngineChoice::Auto,
            threads: 0,
            max_blksize: 1468,
            max_windowsize: 64,
            timeout_ms: 1000,
            max_client_timeout_ms: 5000,
            max_retries: 5,
            unverified_retries: 1,
            unverified_lifetime_ms: 4000,
            unverified_share_percent: 100,
            unverified_share_per_client_percent: 50,
            rollover: 0,
            max_sessions: 10_000,
            max_sessions_per_client: 32,
            gso: true,
        }
    }
}

impl TftpConfig {
    /// The runtime settings of the TFTP service.
    pub fn settings(&self) -> TftpSettings {
        TftpSettings {
            root: self.root.clone(),
            session: SessionConfig {
                max_blksize: self.max_blksize,
                max_windowsize: self.max_windowsize,
                default_timeout: Duration::from_millis(self.timeout_ms),
                max_client_timeout: Duration::from_millis(self.max_client_timeout_ms),
                max_retries: self.max_retries,
                unverified_retries: self.unverified_retries,
                unverified_lifetime: Duration::from_millis(self.unverified_lifetime_ms),
                rollover_to: self.rollover,
            },
            max_sessions: self.max_sessions,
            max_sessions_per_client: self.max_sessions_per_client,
            unverified_share_percent: self.unverified_share_percent,
            unverified_share_per_client_percent: self.unverified_share_per_client_percent,
        }
    }

    /// The engine's sockets and threads (`threads = 0`: one per CPU).
    pub fn engine_params(&self) -> EngineParams {
        EngineParams {
            listen: self.listen.clone(),
            threads: match self.threads {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            },
            gso: self.gso,
        }
    }

    pub(super) fn validate(&self) -> Check {
        let fail = |key: &str, reason: String| Err(Invalid::at(&["tftp", key], reason));
        directory(&self.root).or_else(|reason| fail("root", reason))?;
        if self.listen.is_empty() {
            return fail("listen", "must name at least one address".into());
        }
        if !(MIN_BLKSIZE..=MAX_BLKSIZE).contains(&self.max_blksize) {
            return fail(
                "max_blksize",
                format!(
                    "{} is not in {MIN_BLKSIZE}..={MAX_BLKSIZE}",
                    self.max_blksize
                ),
            );
        }
        if self.max_windowsize < 1 {
            return fail("max_windowsize", "must be at least 1".into());
        }
        if !(1..=255_000).contains(&self.timeout_ms) {
            return fail(
                "timeout_ms",
                format!("{} is not in 1..=255000", self.timeout_ms),
            );
        }
        if !(1000..=255_000).contains(&self.max_client_timeout_ms) {
            return fail(
                "max_client_timeout_ms",
                format!(
                    "{} is not in 1000..=255000 (the option counts whole seconds, 1 to 255)",
                    self.max_client_timeout_ms
                ),
            );
        }
        if self.max_retries < 1 {
            return fail("max_retries", "must be at least 1".into());
        }
        if self.unverified_retries > self.max_retries {
            return fail(
                "unverified_retries",
                format!(
                    "{} is more than max_retries ({})",
                    self.unverified_retries, self.max_retries
                ),
            );
        }
        if !(100..=60_000).contains(&self.unverified_lifetime_ms) {
            return fail(
                "unverified_lifetime_ms",
                format!("{} is not in 100..=60000", self.unverified_lifetime_ms),
            );
        }
        for (key, value) in [
            ("unverified_share_percent", self.unverified_share_percent),
            (
                "unverified_share_per_client_percent",
                self.unverified_share_per_client_percent,
            ),
        ] {
            if !(1..=100).contains(&value) {
                return fail(key, format!("{value} is not in 1..=100"));
            }
        }
        if self.rollover > 1 {
            return fail("rollover", format!("{} is neither 0 nor 1", self.rollover));
        }
        if self.max_sessions < 1 {
            return fail("max_sessions", "must be at least 1".into());
        }
        if self.max_sessions_per_client < 1 {
            return fail("max_sessions_per_client", "must be at least 1".into());
        }
        Ok(())
    }
}
