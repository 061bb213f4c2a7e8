//! The DHCP discovery filter: the XDP program (`pxe-ebpf`, embedded at build time) and its
//! userspace fallback, both running [`pxe_ebpf`]'s decision logic.
//!
//! [`XdpFilter::start`] attaches the program to each interface `[xdp]` names, per its mode:
//! `auto` tries driver (native) mode, then SKB (generic) mode; `driver`/`skb` try only that;
//! when nothing attaches (no CAP_BPF, a NIC without XDP, ...) the log says why and that
//! interface is filtered by the [`Fallback`] in the DHCP service instead. Programs are attached
//! through BPF links, which the kernel removes when the process exits (even on a crash); a
//! program attached the old way (netlink) by an earlier run blocks a link, so one named like
//! ours is removed and the attach retried ("replaced, not stacked"). Dropping the
//! [`XdpFilter`] detaches everything.
//!
//! Counters: per-CPU in the `COUNTERS` map (summed by [`XdpFilter::counters`]) and atomics in
//! the fallback ([`FallbackCounters`]); both are indexed by [`pxe_ebpf::Counter`].

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::{Xdp, XdpMode};
use pxe_ebpf::{COUNTER_COUNT, COUNTER_NAMES, Policy, PolicyEnv, TokenBucket, Verdict};

use serde::{Deserialize, Serialize};

use crate::metrics;

/// Where the DHCP discovery filter runs on an interface (`[xdp] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpChoice {
    /// XDP in driver mode, else SKB (generic) mode, else the userspace fallback; the log says
    /// which and why.
    Auto,
    /// XDP in driver mode, else the userspace fallback.
    Driver,
    /// XDP in SKB (generic) mode, else the userspace fallback.
    Skb,
    /// No XDP program: the policy runs in the daemon only (userspace fallback).
    #[default]
    Off,
}

/// Where the filter runs and what it applies (converted from `[xdp]` and `[[hosts]]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XdpSettings {
    /// The interfaces, each with its mode (`Off` ones included, for the log).
    pub attach: Vec<(String, XdpChoice)>,
    /// A mode other than `off` was asked for every DHCP interface, but none is named.
    pub mode_without_interfaces: bool,
    pub policy: PolicySet,
}

/// The XDP object built by `build.rs`.
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pxe-ebpf"));
/// The program's function name (and the name the kernel shows, truncated to 15 bytes).
pub const PROGRAM_NAME: &str = "pxe_xdp";
/// Buckets the fallback keeps before it forgets them all (bounded memory under a flood of
/// random MACs; the XDP side has an LRU map of 65536).
const FALLBACK_BUCKETS: usize = 65536;

#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("loading the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("XDP map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("pinning the XDP program: {0}")]
    Pin(String),
    #[error("XDP object has no {0}")]
    Missing(&'static str),
}

/// The policy and lists `[xdp]` and `[[hosts]]` describe.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicySet {
    pub policy: Policy,
    pub allow: HashSet<[u8; 6]>,
    pub deny: HashSet<[u8; 6]>,
}

impl PolicySet {
    /// Nothing to filter: the fallback can be skipped entirely.
    pub fn passes_everything(&self) -> bool {
        self.policy.flags == 0
    }
}

/// How one interface is filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Driver,
    Skb,
    /// The daemon applies the policy (not attached, or `xdp = "off"`).
    Userspace,
}

/// The fallback's counters, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct FallbackCounters([metrics::Counter; COUNTER_COUNT as usize]);

impl FallbackCounters {
    pub fn get(&self) -> [u64; COUNTER_COUNT as usize] {
        std::array::from_fn(|i| self.0[i].get())
    }

    fn count(&self, v: Verdict) {
        if let Some(c) = v.counter() {
            metrics::inc(&self.0[pxe_ebpf::Counter::Seen as usize]);
            metrics::inc(&self.0[c as usize]);
        }
    }
}

/// `name=value` pairs for the log.
pub fn format_counters(c: &[u64; COUNTER_COUNT as usize]) -> String {
    let mut s = String::new();
    for (name, v) in COUNTER_NAMES.iter().zip(c) {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(name);
        s.push('=');
        s.push_str(&v.to_string());
    }
    s
}

/// The same policy as the XDP program, applied by the DHCP service to each datagram (the UDP
/// payload) that arrived on an interface without XDP.
#[derive(Debug)]
pub struct Fallback {
    set: PolicySet,
    buckets: HashMap<[u8; 6], TokenBucket>,
    /// Interfaces where XDP runs: their datagrams were already judged.
    xdp_ifindexes: Vec<u32>,
    epoch: Instant,
    counters: Arc<FallbackCounters>,
}

impl Fallback {
    pub fn new(set: PolicySet, xdp_ifindexes: Vec<u32>) -> Self {
        Fallback {
            set,
            buckets: HashMap::with_capacity(FALLBACK_BUCKETS),
            xdp_ifindexes,
            epoch: Instant::now(),
            counters: Arc::default(),
        }
    }

    pub fn counters(&self) -> Arc<FallbackCounters> {
        Arc::clone(&self.counters)
    }

    /// Replaces the policy (a config reload); the buckets are kept.
    pub fn set_policy(&mut self, set: PolicySet) {
        self.set = set;
    }

    /// Judges one datagram received on `ifindex` (0 = unknown); the caller drops it when the
    /// verdict is a drop. A datagram from an interface with XDP was judged by the program
    /// unless the program could not ([`Verdict::Malformed`]: a repeated option, an overload, a
    /// walk past its bound, see [`pxe_ebpf::parse_dhcp`]); the same bounded walk here tells
    /// which, and only those are judged again, so nothing passes unjudged and nothing is metered
    /// twice.
    pub fn check(&mut self, payload: &[u8], ifindex: u32) -> Verdict {
        if self.set.passes_everything() {
            return Verdict::Pass;
        }
        let behind_xdp = ifindex != 0 && self.xdp_ifindexes.contains(&ifindex);
        let now_ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.judge(payload, behind_xdp, now_ns)
    }

    /// The decision for a whole Ethernet frame, as the XDP program takes it (the rate limit
    /// uses this fallback's buckets and clock); not counted. For comparing both sides.
    pub fn classify_frame(&mut self, frame: &[u8]) -> Verdict {
        let policy = self.set.policy;
        let now_ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut env = FallbackEnv {
            set: &self.set,
            buckets: &mut self.buckets,
            now_ns,
        };
        pxe_ebpf::classify_frame(frame, &policy, &mut env)
    }

    /// [`Fallback::check`] at a given time, on an interface without XDP (tests).
    pub fn check_at(&mut self, payload: &[u8], now_ns: u64) -> Verdict {
        self.judge(payload, false, now_ns)
    }

    /// The bounded walk shared with the XDP program first; what it does not judge is read with
    /// the responder's decoder ([`request_info`]), so both sides of the daemon agree on every
    /// request. Counted, except a datagram the program already judged.
    fn judge(&mut self, payload: &[u8], behind_xdp: bool, now_ns: u64) -> Verdict {
        let info = match pxe_ebpf::parse_dhcp(payload, 0, payload.len()) {
            Ok(_) if behind_xdp => return Verdict::Pass,
            Ok(info) => Some(info),
            Err(_) => request_info(payload),
        };
        let v = match info {
            Some(info) => {
                let policy = self.set.policy;
                let mut env = FallbackEnv {
                    set: &self.set,
                    buckets: &mut self.buckets,
                    now_ns,
                };
                pxe_ebpf::decide(&info, &policy, &mut env)
            }
            // The responder refuses it too (and counts why).
            None => Verdict::Malformed,
        };
        self.counters.count(v);
        v
    }
}

/// What the policy needs, read the responder's way ([`pxe_proto::dhcp::decode`]: first
/// occurrence of each option, overload followed, every option read); `None` for a request the
/// responder refuses.
pub fn request_info(payload: &[u8]) -> Option<pxe_ebpf::DhcpInfo> {
    let req = pxe_proto::dhcp::decode(payload).ok()?;
    let class = if req.is_pxe() {
        pxe_ebpf::ClientClass::Pxe
    } else if req.is_http() {
        pxe_ebpf::ClientClass::Http
    } else {
        pxe_ebpf::ClientClass::Other
    };
    Some(pxe_ebpf::DhcpInfo {
        mac: req.chaddr.0,
        msg_type: u8::from(req.msg_type),
        class,
        arch: req.client_arch,
        has_uuid: req.client_uuid.is_some(),
    })
}

struct FallbackEnv<'a> {
    set: &'a PolicySet,
    buckets: &'a mut HashMap<[u8; 6], TokenBucket>,
    now_ns: u64,
}

impl PolicyEnv for FallbackEnv<'_> {
    fn is_allowed(&mut self, mac: &[u8; 6]) -> bool {
        self.set.allow.contains(mac)
    }
    fn is_denied(&mut self, mac: &[u8; 6]) -> bool {
        self.set.deny.contains(mac)
    }
    fn take_token(&mut self, mac: &[u8; 6], policy: &Policy) -> bool {
        let bucket = match self.buckets.get(mac) {
            Some(b) => *b,
            None => {
                if self.buckets.len() >= FALLBACK_BUCKETS {
                    // Bounded memory (and no reallocation): forget every bucket.
                    self.buckets.clear();
                }
                TokenBucket::full(self.now_ns, policy)
            }
        };
        let (ok, next) = bucket.take(self.now_ns, policy);
        self.buckets.insert(*mac, next);
        ok
    }
}

/// The loaded XDP program and where it is attached. Dropping it detaches the program.
pub struct XdpFilter {
    ebpf: aya::Ebpf,
    attached: Vec<(String, u32, Placement)>,
    counters: Arc<XdpCounterMap>,
}

/// The program's `COUNTERS` map, taken out of the loaded object so that readers on other
/// threads (the `/metrics` scrape) sum it without the filter's owner.
pub struct XdpCounterMap(PerCpuArray<MapData, u64>);

impl std::fmt::Debug for XdpCounterMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("XdpCounterMap")
    }
}

impl XdpCounterMap {
    /// The counters summed over CPUs, indexed by [`pxe_ebpf::Counter`].
    pub fn get(&self) -> Result<[u64; COUNTER_COUNT as usize], XdpError> {
        let mut out = [0u64; COUNTER_COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let per_cpu = self.0.get(&(i as u32), 0).map_err(|source| XdpError::Map {
                name: "COUNTERS",
                source,
            })?;
            *slot = per_cpu.iter().sum();
        }
        Ok(out)
    }
}

impl std::fmt::Debug for XdpFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpFilter")
            .field("attached", &self.attached)
            .finish()
    }
}

impl XdpFilter {
    /// Loads the program and attaches it where `config` asks; returns the filter (`None`
    /// when nothing is attached) and each interface's placement. Every failure is logged and
    /// leaves that interface to the userspace fallback.
    pub fn start(settings: &XdpSettings) -> (Option<XdpFilter>, Vec<(String, Placement)>) {
        let list = &settings.attach;
        let mut placements: Vec<(String, Placement)> = Vec::new();
        let wanted: Vec<&(String, XdpChoice)> =
            list.iter().filter(|(_, m)| *m != XdpChoice::Off).collect();
        for (i, _) in list.iter().filter(|(_, m)| *m == XdpChoice::Off) {
            tracing::info!(interface = %i, "XDP off: DHCP filter in userspace");
            placements.push((i.clone(), Placement::Userspace));
        }
        if wanted.is_empty() {
            if settings.mode_without_interfaces {
                tracing::warn!(
                    "[xdp] mode is set but dhcp.interfaces is empty: XDP needs named \
                     interfaces; DHCP filter in userspace"
                );
            }
            return (None, placements);
        }
        let mut filter = match XdpFilter::load(&settings.policy) {
            Ok(f) => f,
            Err(e) => {
                for (i, _) in &wanted {
                    tracing::warn!(interface = %i, error = %e,
                        "XDP unavailable (no CAP_BPF/CAP_NET_ADMIN, or the kernel refused the \
                         program): DHCP filter in userspace");
                    placements.push((i.clone(), Placement::Userspace));
                }
                return (None, placements);
            }
        };
        for (i, m) in wanted {
            let p = filter.attach(i, *m);
            placements.push((i.clone(), p));
        }
        let any = filter.attached.iter().any(|a| a.2 != Placement::Userspace);
        (any.then_some(filter), placements)
    }

    /// Loads the program (verifier included) and writes the policy maps; attaches nothing.
    pub fn load(set: &PolicySet) -> Result<XdpFilter, XdpError> {
        let mut ebpf = aya::Ebpf::load(PROGRAM)?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(XdpError::Missing("program pxe_xdp"))?
            .try_into()?;
        prog.load()?;
        let map = ebpf
            .take_map("COUNTERS")
            .ok_or(XdpError::Missing("map COUNTERS"))?;
        let counters = PerCpuArray::try_from(map).map_err(|source| XdpError::Map {
            name: "COUNTERS",
            source,
        })?;
        let mut f = XdpFilter {
            ebpf,
            attached: Vec::new(),
            counters: Arc::new(XdpCounterMap(counters)),
        };
        f.set_policy(set)?;
        Ok(f)
    }

    /// Attaches to `iface` per `choice` (driver then SKB for `Auto`); logs the outcome.
    pub fn attach(&mut self, iface: &str, choice: XdpChoice) -> Placement {
        let modes: &[(XdpMode, Placement)] = match choice {
            XdpChoice::Auto => &[
                (XdpMode::Driver, Placement::Driver),
                (XdpMode::Skb, Placement::Skb),
            ],
            XdpChoice::Driver => &[(XdpMode::Driver, Placement::Driver)],
            XdpChoice::Skb => &[(XdpMode::Skb, Placement::Skb)],
            XdpChoice::Off => &[],
        };
        let ifindex = pxe_net::if_nametoindex(iface).unwrap_or(0);
        for &(mode, placement) in modes {
            match self.attach_mode(iface, mode) {
                Ok(()) => {
                    tracing::info!(interface = %iface, mode = ?placement, "XDP attached");
                    self.attached.push((iface.to_owned(), ifindex, placement));
                    return placement;
                }
                Err(e) => {
                    tracing::info!(interface = %iface, mode = ?placement, error = %e,
                        "XDP attach failed");
                }
            }
        }
        tracing::warn!(interface = %iface, "XDP not attached: DHCP filter in userspace");
        Placement::Userspace
    }

    fn attach_mode(&mut self, iface: &str, mode: XdpMode) -> Result<(), XdpError> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(XdpError::Missing("program pxe_xdp"))?
            .try_into()?;
        match prog.attach(iface, mode) {
            Ok(_) => Ok(()),
            Err(e) if remove_leftover(iface) => {
                tracing::info!(interface = %iface, first_error = %e,
                    "replaced a leftover pxe_xdp program from an earlier run");
                prog.attach(iface, mode)?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Pins the loaded program on a bpffs at `path`, so that other tools (`ip link set ...
    /// xdp pinned PATH`, bpftool) can attach or inspect this very program.
    pub fn pin(&mut self, path: &std::path::Path) -> Result<(), XdpError> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(XdpError::Missing("program pxe_xdp"))?
            .try_into()?;
        prog.pin(path).map_err(|e| XdpError::Pin(e.to_string()))
    }

    /// Interfaces where the program runs, with their ifindex.
    pub fn attached(&self) -> Vec<(String, u32, Placement)> {
        self.attached.clone()
    }

    /// Writes the policy and the lists into the maps (at run time, without detaching). The
    /// lists change first (new entries before stale ones go) and the flags last, so a client
    /// in both the old and the new allow-list is never dropped during the update.
    pub fn set_policy(&mut self, set: &PolicySet) -> Result<(), XdpError> {
        let map_err = |name| move |source| XdpError::Map { name, source };
        for (name, list) in [("ALLOW", &set.allow), ("DENY", &set.deny)] {
            let mut map: BpfHashMap<&mut MapData, [u8; 6], u8> = BpfHashMap::try_from(
                self.ebpf
                    .map_mut(name)
                    .ok_or(XdpError::Missing("map ALLOW/DENY"))?,
            )
            .map_err(map_err("ALLOW/DENY"))?;
            for k in list {
                map.insert(k, 1, 0).map_err(map_err("ALLOW/DENY"))?;
            }
            let stale: Vec<[u8; 6]> = map
                .keys()
                .filter_map(Result::ok)
                .filter(|k| !list.contains(k))
                .collect();
            for k in stale {
                map.remove(&k).map_err(map_err("ALLOW/DENY"))?;
            }
        }
        let mut config: Array<&mut MapData, Policy> = Array::try_from(
            self.ebpf
                .map_mut("CONFIG")
                .ok_or(XdpError::Missing("map CONFIG"))?,
        )
        .map_err(map_err("CONFIG"))?;
        config.set(0, set.policy, 0).map_err(map_err("CONFIG"))?;
        Ok(())
    }

    /// Runs the loaded program on `frame` in the kernel (`BPF_PROG_TEST_RUN`, no interface
    /// needed) and returns its XDP action (1 = XDP_DROP, 2 = XDP_PASS). The maps are the live
    /// ones: the counters count these runs too.
    pub fn test_run(&self, frame: &[u8]) -> std::io::Result<u32> {
        use aya::programs::ProgramError;
        use aya::{TestRun, TestRunOptions};
        let prog: &Xdp = self
            .ebpf
            .program(PROGRAM_NAME)
            .ok_or_else(|| std::io::Error::other("no program pxe_xdp"))?
            .try_into()
            .map_err(std::io::Error::other)?;
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..TestRunOptions::default()
        };
        match prog.test_run(opts) {
            Ok(r) => Ok(r.return_value),
            Err(ProgramError::SyscallError(e)) => Err(e.io_error),
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    /// The counters summed over CPUs, indexed by [`pxe_ebpf::Counter`].
    pub fn counters(&self) -> Result<[u64; COUNTER_COUNT as usize], XdpError> {
        self.counters.get()
    }

    /// A handle on the counters for another thread.
    pub fn counter_map(&self) -> Arc<XdpCounterMap> {
        Arc::clone(&self.counters)
    }
}

/// Removes an XDP program named like ours that an earlier run attached through netlink (a BPF
/// link would have died with that run). Returns whether one was removed. Another project's
/// program is left alone.
fn remove_leftover(iface: &str) -> bool {
    let Ok(out) = Command::new("ip")
        .args(["-d", "link", "show", "dev", iface])
        .output()
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains(&format!("name {PROGRAM_NAME} ")) {
        return false;
    }
    let mut removed = false;
    for kind in ["xdpgeneric", "xdpdrv"] {
        removed |= Command::new("ip")
            .args(["link", "set", "dev", iface, kind, "off"])
            .status()
            .is_ok_and(|s| s.success());
    }
    removed
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A DISCOVER from `mac` with option 60 `vendor` (the shared test vectors).
    pub(crate) fn discover(mac: [u8; 6], vendor: Option<&[u8]>) -> Vec<u8> {
        use pxe_ebpf::vectors::{bootp, discover_opts};
        bootp(mac, &discover_opts(vendor, None, false))
    }

    fn set(flags: u32) -> PolicySet {
        PolicySet {
            policy: Policy {
                flags,
                rate_per_sec: 1,
                burst: 2,
                _pad: 0,
            },
            ..PolicySet::default()
        }
    }

    #[test]
    fn fallback_applies_the_shared_policy_and_counts() {
        let mut f = Fallback::new(
            set(pxe_ebpf::POLICY_DROP_NON_PXE | pxe_ebpf::POLICY_RATE_LIMIT),
            vec![7],
        );
        let pxe = discover([1; 6], Some(b"PXEClient:Arch:00000"));
        let plain = discover([2; 6], None);
        assert_eq!(f.check_at(&pxe, 0), Verdict::Pass);
        assert_eq!(f.check_at(&pxe, 0), Verdict::Pass);
        assert_eq!(f.check_at(&pxe, 0), Verdict::DropRateLimited);
        assert_eq!(f.check_at(&pxe, 1_000_000_000), Verdict::Pass);
        assert_eq!(f.check_at(&plain, 0), Verdict::DropNotPxe);
        assert_eq!(f.check_at(&pxe[..100], 0), Verdict::Malformed);
        // Interface 7 runs XDP: not judged twice (and not counted).
        assert_eq!(f.check(&plain, 7), Verdict::Pass);
        let c = f.counters().get();
        assert_eq!(c, [6, 3, 1, 1, 0, 1]);
        assert_eq!(
            format_counters(&c),
            "seen=6 passed=3 dropped_not_pxe=1 dropped_rate=1 dropped_denied=0 malformed=1"
        );
    }

    /// The crafted requests the XDP program does not judge are judged here the responder's
    /// way, on an interface with XDP as without, and counted; a request the program judged is
    /// not judged (or metered) again.
    #[test]
    fn fallback_judges_what_the_program_could_not() {
        use pxe_ebpf::vectors::{DENIED_MAC, TABLE_POLICY_FLAGS, crafted, expected_in_userspace};
        let mut s = set(TABLE_POLICY_FLAGS);
        s.deny.insert(DENIED_MAC);
        let mut f = Fallback::new(s, vec![7]);
        let list = crafted();
        for (name, payload) in &list {
            assert_eq!(
                pxe_ebpf::parse_dhcp(payload.as_slice(), 0, payload.len()),
                Err(pxe_ebpf::ParseError::Malformed),
                "{name}: the bounded walk must not judge it"
            );
            let want = expected_in_userspace(name);
            assert_eq!(f.check_at(payload, 0), want, "{name}");
            assert_eq!(f.check(payload, 7), want, "{name} behind XDP");
        }
        let c = f.counters().get();
        assert_eq!(c[pxe_ebpf::Counter::Seen as usize], 2 * list.len() as u64);
        assert_eq!(c[pxe_ebpf::Counter::Malformed as usize], 0);
        let judged = discover([2; 6], None);
        assert_eq!(f.check(&judged, 7), Verdict::Pass);
        assert_eq!(
            f.counters().get(),
            c,
            "judged by the program: not counted again"
        );
        assert_eq!(f.check(&judged, 3), Verdict::DropNotPxe);
    }

    /// Where the bounded walk judges a request, it reads what the responder's decoder reads.
    #[test]
    fn the_bounded_walk_and_the_decoder_agree() {
        let mut judged = 0;
        for (name, frame) in pxe_ebpf::vectors::table() {
            let Ok(info) = pxe_ebpf::parse_frame(frame.as_slice()) else {
                continue;
            };
            // The payload: after Ethernet, the tags, IPv4 (its IHL) and UDP.
            let start = frame.len() - payload_len(&frame);
            let payload = &frame[start..];
            let decoded = request_info(payload).expect(name.as_str());
            assert_eq!(decoded.policy_reading(), info.policy_reading(), "{name}");
            if name != "late60_pxe" {
                assert_eq!(decoded, info, "{name}");
            }
            judged += 1;
        }
        assert!(judged > 20, "{judged}");
    }

    /// The UDP payload length of a table frame (its UDP header's length field, minus 8).
    fn payload_len(frame: &[u8]) -> usize {
        let mut off = 12;
        while matches!(
            u16::from_be_bytes([frame[off], frame[off + 1]]),
            pxe_proto::consts::ETH_P_8021Q | pxe_proto::consts::ETH_P_8021AD
        ) {
            off += 4;
        }
        let ip = off + 2;
        let udp = ip + usize::from(frame[ip] & 0x0f) * 4;
        usize::from(u16::from_be_bytes([frame[udp + 4], frame[udp + 5]])) - 8
    }
}
