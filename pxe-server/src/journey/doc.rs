//! The versioned JSON documents read from the journey table: the hosts document
//! (`pxe-server status --hosts --json`, `GET /api/v1/hosts`), one host, and the summary.
//! Key names, their order and value types are the interface; `version` changes when they do.

use serde::Serialize;

use super::table::{Entry, JourneyTable};
use super::{Now, Phase};
use crate::hosts::HostIndex;
use pxe_proto::MacAddr;

/// The document version.
pub const VERSION: u32 = 1;
/// Hosts per document when the query names no `limit`.
pub const DEFAULT_LIMIT: usize = 1000;
/// The largest `limit` a query may ask.
pub const MAX_LIMIT: usize = 10_000;
/// Seconds of completions in the summary.
pub const SUMMARY_SECONDS: usize = 600;

/// Which hosts a document lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFilter {
    /// Only hosts whose current phase is this one.
    pub phase: Option<Phase>,
    /// Only stuck hosts.
    pub stuck: bool,
    pub limit: usize,
    pub offset: usize,
}

impl Default for HostFilter {
    fn default() -> Self {
        HostFilter {
            phase: None,
            stuck: false,
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

/// A query string that cannot be used: the key and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct QueryError {
    pub key: String,
    pub reason: String,
}

impl HostFilter {
    /// Parses `phase=kernel&stuck=1&limit=200&offset=0` (every key optional; an empty
    /// string is the default filter). Unknown keys, repeated keys and bad values are refused.
    pub fn parse(query: &str) -> Result<HostFilter, QueryError> {
        let mut f = HostFilter::default();
        let mut seen = [false; 4];
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = |reason: String| QueryError {
                key: key.to_owned(),
                reason,
            };
            let number = |v: &str| {
                v.parse::<usize>()
                    .map_err(|_| bad(format!("{v:?} is not a whole number")))
            };
            let i = match key {
                "phase" => 0,
                "stuck" => 1,
                "limit" => 2,
                "offset" => 3,
                _ => {
                    return Err(bad(
                        "unknown key (phase, stuck, limit and offset are known)".into(),
                    ));
                }
            };
            if std::mem::replace(&mut seen[i], true) {
                return Err(bad("given twice".into()));
            }
            match i {
                0 => f.phase = Some(value.parse().map_err(bad)?),
                1 => {
                    f.stuck = match value {
                        "1" | "true" | "" => true,
                        "0" | "false" => false,
                        v => return Err(bad(format!("{v:?}: 1, true, 0 or false"))),
                    }
                }
                2 => {
                    f.limit = number(value)?;
                    if f.limit == 0 || f.limit > MAX_LIMIT {
                        return Err(bad(format!("{} is not in 1..={MAX_LIMIT}", f.limit)));
                    }
                }
                _ => f.offset = number(value)?,
            }
        }
        Ok(f)
    }

    fn admits(&self, e: &Entry, stuck: bool) -> bool {
        (!self.stuck || stuck) && self.phase.is_none_or(|p| e.phase == Some(p))
    }
}

/// The hosts document.
#[derive(Debug, Clone, Serialize)]
pub struct HostsDocument {
    pub version: u32,
    pub now_ms: u64,
    /// Hosts in the table.
    pub total: usize,
    /// Hosts the filter admits (before `limit` and `offset`).
    pub matched: usize,
    pub hosts: Vec<HostDoc>,
}

impl HostsDocument {
    pub(super) fn empty(now: Now) -> HostsDocument {
        HostsDocument {
            version: VERSION,
            now_ms: now.unix_ms,
            total: 0,
            matched: 0,
            hosts: Vec::new(),
        }
    }
}

/// One host in the hosts document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostDoc {
    pub mac: String,
    pub uuid: Option<String>,
    pub address: Option<String>,
    /// Its `[[hosts]]` hostname, when it has an entry with one.
    pub hostname: Option<String>,
    pub boot: u32,
    /// The furthest phase reached (`null` for a host known only by its address so far).
    pub phase: Option<Phase>,
    pub since_ms: u64,
    pub last_progress_ms: u64,
    pub stuck: bool,
    pub finished: bool,
    pub last_error: Option<ErrorDoc>,
    pub timeline: Vec<StepDoc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorDoc {
    pub kind: &'static str,
    /// `tftp_error 1 pxelinux.0`, `http_status 404 /vmlinuz`, ...: the code then the detail.
    pub detail: String,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepDoc {
    pub phase: Phase,
    pub at_ms: u64,
}

/// The summary document.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryDocument {
    pub version: u32,
    pub now_ms: u64,
    pub hosts: usize,
    /// Hosts by current phase, every phase named (in order).
    pub phases: PhaseCounts,
    pub stuck: usize,
    pub completed: u64,
    pub evicted: u64,
    /// Boots completed in each of the last 600 seconds, oldest first.
    pub completed_per_sec: Vec<u32>,
}

impl SummaryDocument {
    pub(super) fn empty(now: Now) -> SummaryDocument {
        SummaryDocument {
            version: VERSION,
            now_ms: now.unix_ms,
            hosts: 0,
            phases: PhaseCounts::default(),
            stuck: 0,
            completed: 0,
            evicted: 0,
            completed_per_sec: vec![0; SUMMARY_SECONDS],
        }
    }
}

/// Hosts per phase; serialized as `{"discover": n, ...}` in phase order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseCounts(pub [usize; Phase::COUNT]);

impl Serialize for PhaseCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(Phase::COUNT))?;
        for p in Phase::ALL {
            m.serialize_entry(p.name(), &self.0[p.index()])?;
        }
        m.end()
    }
}

fn host_doc(t: &JourneyTable, e: &Entry, hosts: &HostIndex, now: Now) -> HostDoc {
    let hostname = hosts
        .find(Some(&e.mac), e.uuid.as_ref())
        .and_then(|i| hosts.get(i).hostname.clone());
    HostDoc {
        mac: e.mac.to_string(),
        uuid: e.uuid.map(|u| u.to_string()),
        address: e.address.map(|a| a.to_string()),
        hostname,
        boot: e.boot,
        phase: e.phase,
        since_ms: e.since_ms,
        last_progress_ms: e.last_progress_ms,
        stuck: t.is_stuck(e, now),
        finished: e.finished(),
        last_error: e.last_error.map(|le| ErrorDoc {
            kind: le.kind.name(),
            detail: match (le.code, le.detail()) {
                (0, d) => d.to_owned(),
                (c, "") => c.to_string(),
                (c, d) => format!("{c} {d}"),
            },
            at_ms: le.at_ms,
        }),
        timeline: e
            .timeline()
            .map(|(phase, at_ms)| StepDoc { phase, at_ms })
            .collect(),
    }
}

pub(super) fn hosts(
    t: &JourneyTable,
    f: &HostFilter,
    hosts: &HostIndex,
    now: Now,
) -> HostsDocument {
    let mut matched: Vec<(bool, &Entry)> = t
        .entries()
        .map(|e| (t.is_stuck(e, now), e))
        .filter(|(stuck, e)| f.admits(e, *stuck))
        .collect();
    // Stuck first, then the newest progress first (the MAC breaks ties: a stable order).
    matched.sort_by(|(sa, a), (sb, b)| {
        sb.cmp(sa)
            .then(b.last_progress_ms.cmp(&a.last_progress_ms))
            .then(a.mac.0.cmp(&b.mac.0))
    });
    HostsDocument {
        version: VERSION,
        now_ms: now.unix_ms,
        total: t.stats().hosts,
        matched: matched.len(),
        hosts: matched
            .iter()
            .skip(f.offset)
            .take(f.limit)
            .map(|(_, e)| host_doc(t, e, hosts, now))
            .collect(),
    }
}

pub(super) fn host(
    t: &JourneyTable,
    mac: &MacAddr,
    hosts: &HostIndex,
    now: Now,
) -> Option<HostDoc> {
    t.get(mac).map(|e| host_doc(t, e, hosts, now))
}

pub(super) fn summary(t: &JourneyTable, now: Now) -> SummaryDocument {
    let mut phases = PhaseCounts::default();
    let mut stuck = 0;
    for e in t.entries() {
        if let Some(p) = e.phase {
            phases.0[p.index()] += 1;
        }
        stuck += usize::from(t.is_stuck(e, now));
    }
    let s = t.stats();
    SummaryDocument {
        version: VERSION,
        now_ms: now.unix_ms,
        hosts: s.hosts,
        phases,
        stuck,
        completed: s.completed,
        evicted: s.evicted,
        completed_per_sec: t.completed_per_sec(now, SUMMARY_SECONDS),
    }
}
