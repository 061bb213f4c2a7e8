//! The control socket's messages, typed: the [`Request`] a client sends and the answers the
//! daemon sends back ([`StatusReport`], [`HostAnswer`], [`ErrorAnswer`]).
//!
//! A request is one text line (`status`, `host ACTION SELECTOR`); an answer is one JSON
//! document. `pxe-server status --json` and `pxe-server host --json` print these documents,
//! and scripts read them: the key names, their order, their nesting and the value types
//! (`null` for a section that is off) are part of the interface.

use pxe_ebpf::{COUNTER_COUNT, COUNTER_NAMES};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::dhcp::DhcpMode;
use crate::dhcp::metrics::DhcpSnapshot;
use crate::http::HttpSnapshot;
use crate::nextboot::HostAction;
pub use crate::nextboot::{HostAnswer, HostRow};
use crate::tftp::metrics::TftpSnapshot;

/// What a client asks the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The status document ([`StatusReport`]).
    Status,
    /// Show or set the next boot of the hosts `selector` names ([`HostAnswer`]).
    Host {
        action: HostAction,
        selector: String,
    },
    /// The hosts document of the journey table ([`crate::journey::HostsDocument`]) for a
    /// query string (`phase=kernel&stuck=1&limit=200&offset=0`, empty for all).
    Hosts { query: String },
}

/// A request line the daemon does not understand; answered with an [`ErrorAnswer`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("unknown request {0:?}")]
    Unknown(String),
    /// The reason [`HostAction`]'s parser gives.
    #[error("{0}")]
    HostAction(String),
}

impl Request {
    /// Parses one request line (without its newline).
    pub fn parse(line: &str) -> Result<Request, RequestError> {
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("status"), None, None) => Ok(Request::Status),
            (Some("hosts"), query, None) => Ok(Request::Hosts {
                query: query.unwrap_or("").to_owned(),
            }),
            (Some("host"), Some(action), Some(selector)) => Ok(Request::Host {
                action: action.parse().map_err(RequestError::HostAction)?,
                selector: selector.to_owned(),
            }),
            _ => Err(RequestError::Unknown(line.to_owned())),
        }
    }
}

/// The request line, as [`Request::parse`] reads it.
impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Status => f.write_str("status"),
            Request::Host { action, selector } => write!(f, "host {} {selector}", action.name()),
            Request::Hosts { query } if query.is_empty() => f.write_str("hosts"),
            Request::Hosts { query } => write!(f, "hosts {query}"),
        }
    }
}

/// Any answer the daemon sends.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Status(Box<StatusReport>),
    Host(HostAnswer),
    Hosts(Box<crate::journey::HostsDocument>),
    Error(ErrorAnswer),
}

/// A refused request: `{"ok": false, "error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    /// Always false.
    pub ok: bool,
    pub error: String,
}

impl ErrorAnswer {
    pub fn new(error: impl Into<String>) -> ErrorAnswer {
        ErrorAnswer {
            ok: false,
            error: error.into(),
        }
    }
}

impl From<ErrorAnswer> for HostAnswer {
    fn from(e: ErrorAnswer) -> HostAnswer {
        HostAnswer {
            ok: false,
            changed: None,
            hosts: None,
            error: Some(e.error),
        }
    }
}

/// The status document (`pxe-server status`). A section is `null` when its service is off.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub server: ServerStatus,
    pub reload: ReloadStatus,
    pub tftp: TftpStatus,
    pub dhcp: Option<DhcpStatus>,
    pub http: Option<HttpStatus>,
    pub filter: Option<FilterStatus>,
    /// The store (redb or PostgreSQL: up or down, this instance, its peers); absent when
    /// nothing needs one (and then not in the document, which keeps its earlier shape).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<crate::store::StoreView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerStatus {
    pub version: &'static str,
    pub pid: u32,
    /// The config file.
    pub config: String,
    pub uptime_secs: u64,
    /// What the process runs as: the account and filter `[server]` asked for, and what the
    /// kernel reports.
    pub process: ProcessStatus,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessStatus {
    /// The account switched to at start (`null`: started unprivileged, or `user = "root"`).
    pub user: Option<String>,
    /// `[server] seccomp` in effect.
    pub seccomp_mode: String,
    /// `/proc/self/status`: uids, gids, effective and permitted capabilities,
    /// no-new-privileges, seccomp (2 = filter).
    pub kernel: crate::privilege::ProcessIdentity,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    /// SIGHUPs handled.
    pub count: u64,
    /// The last one (`null` before the first).
    pub last: Option<LastReload>,
}

/// The outcome of one reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastReload {
    pub at_unix: u64,
    /// The new file was taken and every service got it.
    pub ok: bool,
    /// Why not: the file's error (the running config stays), or the service that did not
    /// take it.
    pub error: Option<String>,
    /// Changed settings that keep their running values until a restart.
    pub needs_restart: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TftpStatus {
    /// `uring` or `portable`.
    pub engine: String,
    pub threads: usize,
    pub listen: Vec<String>,
    pub root: String,
    pub metrics: TftpSnapshot,
}

#[derive(Debug, Clone, Serialize)]
pub struct DhcpStatus {
    pub mode: DhcpMode,
    pub interfaces: Vec<String>,
    pub metrics: DhcpSnapshot,
    /// Proxy mode: host addresses learned from their requests, and conflicting claims.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned: Option<crate::dhcp::learned::LearnedSnapshot>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpStatus {
    pub listen: Vec<String>,
    pub root: String,
    pub metrics: HttpSnapshot,
    /// The install routes' counters.
    pub install: crate::install::InstallSnapshot,
    /// The install templates in effect.
    pub templates: Vec<String>,
}

/// The DHCP discovery filter.
#[derive(Debug, Clone, Serialize)]
pub struct FilterStatus {
    pub policy: FilterPolicy,
    pub interfaces: Vec<FilterInterface>,
    /// The XDP program's counters (`null` when no program is loaded).
    pub xdp: Option<XdpCounters>,
    /// The userspace filter's counters.
    pub userspace: FilterCounters,
}

/// The `[xdp]` policy in effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilterPolicy {
    pub drop_non_pxe: bool,
    pub rate_per_sec: u32,
    pub burst: u32,
    pub allow_list: bool,
    /// How many MACs are denied.
    pub deny: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilterInterface {
    pub name: String,
    /// `driver`, `skb` or `userspace`.
    pub placement: String,
}

/// The XDP program's counters, or why they could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum XdpCounters {
    Read(FilterCounters),
    Unreadable { error: String },
}

/// Filter counters indexed by [`pxe_ebpf::Counter`]; serialized as an object keyed by
/// [`COUNTER_NAMES`], in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterCounters(pub [u64; COUNTER_COUNT as usize]);

impl Serialize for FilterCounters {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in COUNTER_NAMES.iter().zip(&self.0) {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}
