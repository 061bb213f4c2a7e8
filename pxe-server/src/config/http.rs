//! `[http]`: the HTTP/1.1 service for boot files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pxe_proto::consts::HTTP_PORT;
use serde::{Deserialize, Serialize};

use super::tftp::TftpConfig;
use super::{Check, Invalid, directory};
use crate::http::HttpSettings;

/// The highest `min_send_rate_bytes_per_sec` (1 GB/s; a minimum above it is a typo).
const MAX_MIN_SEND_RATE: u64 = 1_000_000_000;

/// `[http]`: the HTTP/1.1 service for boot files (off by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// The HTTP service runs.
    pub enabled: bool,
    /// TCP addresses it listens on (port 80 by default).
    pub listen: Vec<SocketAddr>,
    /// Directory served; unset = `tftp.root` (then both services share each file's snapshot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// Runtime worker threads (1..=64).
    pub threads: usize,
    /// Open connections at most; beyond it a new connection gets 503 and is closed. Lowered at
    /// start, with a warning, when it does not fit the open-file limit next to
    /// `tftp.max_sessions` (see `http::fit_fd_limit`).
    pub max_connections: usize,
    /// Open connections from one client address at most (an IPv4-mapped IPv6 address is the
    /// IPv4 client); beyond it a new connection from that address gets 503 and is closed. A
    /// booting machine uses one keep-alive connection; NAT or a load tester puts many behind
    /// one address. At least 1; at or above `max_connections` only that limit applies.
    pub max_connections_per_client: usize,
    /// A request head must arrive within this many milliseconds of its first byte (of the
    /// connection, for the first request).
    pub header_timeout_ms: u64,
    /// A connection with no traffic either way for this many milliseconds is closed.
    pub idle_timeout_ms: u64,
    /// The least a client must read of a response, in bytes per second of the time the server
    /// waits for it to make room (0: no minimum). Judged over windows of `send_rate_window_ms`
    /// of waiting; a client below it (a slow reader holding a connection) is cut within two
    /// windows. An idle keep-alive connection is `idle_timeout_ms`'s business, not this one's.
    pub min_send_rate_bytes_per_sec: u64,
    /// The window over which `min_send_rate_bytes_per_sec` is judged, in milliseconds of
    /// waiting for the client.
    pub send_rate_window_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: vec![SocketAddr::from(([0, 0, 0, 0], HTTP_PORT))],
            root: None,
            threads: 2,
            max_connections: 10_000,
            max_connections_per_client: 32,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            min_send_rate_bytes_per_sec: 1024,
            send_rate_window_ms: 30_000,
        }
    }
}

impl HttpConfig {
    /// The directory served: `root`, else `tftp_root`.
    pub fn root_or<'a>(&'a self, tftp_root: &'a Path) -> &'a Path {
        self.root.as_deref().unwrap_or(tftp_root)
    }

    /// The runtime settings of the HTTP service (next to `tftp`, whose root it shares by
    /// default and whose sessions share the open-file limit).
    pub fn settings(&self, tftp: &TftpConfig) -> HttpSettings {
        HttpSettings {
            listen: self.listen.clone(),
            root: self.root_or(&tftp.root).to_path_buf(),
            threads: self.threads,
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            min_send_rate: self.min_send_rate_bytes_per_sec,
            send_rate_window: Duration::from_millis(self.send_rate_window_ms),
            tftp_max_sessions: tftp.max_sessions,
        }
    }

    pub(super) fn validate(&self) -> Check {
        let fail = |key: &str, reason: String| Err(Invalid::at(&["http", key], reason));
        if let Some(root) = &self.root {
            directory(root).or_else(|reason| fail("root", reason))?;
        }
        if self.listen.is_empty() {
            return fail("listen", "must name at least one address".into());
        }
        if !(1..=64).contains(&self.threads) {
            return fail("threads", format!("{} is not in 1..=64", self.threads));
        }
        if self.max_connections < 1 {
            return fail("max_connections", "must be at least 1".into());
        }
        if self.max_connections_per_client < 1 {
            return fail("max_connections_per_client", "must be at least 1".into());
        }
        if self.min_send_rate_bytes_per_sec > MAX_MIN_SEND_RATE {
            return fail(
                "min_send_rate_bytes_per_sec",
                format!(
                    "{} is not in 0..={MAX_MIN_SEND_RATE} (0: no minimum)",
                    self.min_send_rate_bytes_per_sec
                ),
            );
        }
        for (key, ms) in [
            ("header_timeout_ms", self.header_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("send_rate_window_ms", self.send_rate_window_ms),
        ] {
            if !(1..=3_600_000).contains(&ms) {
                return fail(key, format!("{ms} is not in 1..=3600000"));
            }
        }
        Ok(())
    }
}
