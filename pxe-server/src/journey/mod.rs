//! Each host's boot journey: which phase of a network boot every machine has reached, when,
//! and the last error the server sent it (issue #13).
//!
//! - [`JourneyTable`] (`table`): the sans-IO core, a bounded table keyed by MAC with an
//!   address → MAC map, fed events with the time passed in ([`Now`]).
//! - [`FileClasses`] (`classes`): which phase a requested file name stands for.
//! - [`Timings`]: the DHCP answer-latency and transfer-duration histograms.
//! - [`Journeys`]: what the services share: the table behind one mutex (events are per DHCP
//!   message and per transfer start or end, never per packet), the classes in effect (a reload
//!   replaces them) and the timings.
//! - `doc`: the versioned JSON documents (`status --hosts`, `GET /api/v1/hosts`, the summary).

mod classes;
mod doc;
mod table;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::hosts::{BootProfile, HostIndex};
use crate::metrics::{DURATION_BOUNDS, Histogram, HistogramSnapshot, LATENCY_BOUNDS};
pub use classes::{ClassesBuilder, FileClasses, glob};
pub use doc::{
    DEFAULT_LIMIT, ErrorDoc, HostDoc, HostFilter, HostsDocument, MAX_LIMIT, PhaseCounts,
    QueryError, SUMMARY_SECONDS, StepDoc, SummaryDocument, VERSION,
};
use pxe_proto::{ClientUuid, MacAddr};
pub use table::{
    COMPLETION_SECONDS, DETAIL_BYTES, DhcpAnswer, Entry, ErrorKind, JourneyTable, LastError,
    TableStats,
};

/// The phases of a network boot, in order. Their lower-case names are the JSON values and
/// metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Discover,
    Offer,
    /// A full-mode ACK, or the ProxyDHCP answer (port 67 or 4011).
    Ack,
    BootFile,
    Script,
    Kernel,
    Initrd,
    Template,
    Callback,
}

impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::Discover,
        Phase::Offer,
        Phase::Ack,
        Phase::BootFile,
        Phase::Script,
        Phase::Kernel,
        Phase::Initrd,
        Phase::Template,
        Phase::Callback,
    ];
    pub const COUNT: usize = Phase::ALL.len();

    pub fn name(self) -> &'static str {
        match self {
            Phase::Discover => "discover",
            Phase::Offer => "offer",
            Phase::Ack => "ack",
            Phase::BootFile => "boot_file",
            Phase::Script => "script",
            Phase::Kernel => "kernel",
            Phase::Initrd => "initrd",
            Phase::Template => "template",
            Phase::Callback => "callback",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::str::FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Phase, String> {
        Phase::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Phase::ALL.iter().map(|p| p.name()).collect();
                format!("unknown phase {s:?} (one of {})", names.join(", "))
            })
    }
}

/// What a requested file is, for the journeys and the transfer-duration histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileClass {
    BootFile,
    Script,
    Kernel,
    Initrd,
    Template,
    Other,
}

impl FileClass {
    pub const ALL: [FileClass; 6] = [
        FileClass::BootFile,
        FileClass::Script,
        FileClass::Kernel,
        FileClass::Initrd,
        FileClass::Template,
        FileClass::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FileClass::BootFile => "boot_file",
            FileClass::Script => "script",
            FileClass::Kernel => "kernel",
            FileClass::Initrd => "initrd",
            FileClass::Template => "template",
            FileClass::Other => "other",
        }
    }

    /// The phase a transfer of this class stands for (`None` for other files).
    pub fn phase(self) -> Option<Phase> {
        match self {
            FileClass::BootFile => Some(Phase::BootFile),
            FileClass::Script => Some(Phase::Script),
            FileClass::Kernel => Some(Phase::Kernel),
            FileClass::Initrd => Some(Phase::Initrd),
            FileClass::Template => Some(Phase::Template),
            FileClass::Other => None,
        }
    }
}

/// The time of an event on both clocks: monotonic for stuck detection and durations, the wall
/// clock (Unix milliseconds) for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub mono: Instant,
    pub unix_ms: u64,
}

impl Now {
    pub fn current() -> Now {
        Now {
            mono: Instant::now(),
            unix_ms: unix_ms(SystemTime::now()),
        }
    }

    /// `d` later on both clocks.
    pub fn after(self, d: Duration) -> Now {
        Now {
            mono: self.mono + d,
            unix_ms: self.unix_ms + u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `[journeys]` as the services use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JourneySettings {
    /// Off: no table (the timings are still kept).
    pub enabled: bool,
    /// Hosts the table holds at most.
    pub max_hosts: usize,
    /// A journey without progress for this long is stuck.
    pub stuck_after: Duration,
    /// Globs, beyond the built-in ones, per class.
    pub boot_file_globs: Vec<String>,
    pub kernel_globs: Vec<String>,
    pub initrd_globs: Vec<String>,
}

impl Default for JourneySettings {
    fn default() -> Self {
        JourneySettings {
            enabled: true,
            max_hosts: 16384,
            stuck_after: Duration::from_secs(300),
            boot_file_globs: Vec::new(),
            kernel_globs: Vec::new(),
            initrd_globs: Vec::new(),
        }
    }
}

/// The DHCP mode label of [`Timings::dhcp_latency`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyMode {
    Proxy,
    Full,
}

impl LatencyMode {
    pub const ALL: [LatencyMode; 2] = [LatencyMode::Proxy, LatencyMode::Full];
    pub fn name(self) -> &'static str {
        match self {
            LatencyMode::Proxy => "proxy",
            LatencyMode::Full => "full",
        }
    }
}

/// The transfer protocol label of [`Timings::transfer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tftp,
    Http,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Tftp, Protocol::Http];
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tftp => "tftp",
            Protocol::Http => "http",
        }
    }
}

/// The histograms the exporter publishes as `pxe_dhcp_answer_latency_seconds{mode}` and
/// `pxe_transfer_duration_seconds{protocol,class}`: per thread, summed when read.
#[derive(Debug)]
pub struct Timings {
    /// From the receipt of a DHCP request (its batch's `recvmmsg`) to the send of its answer,
    /// after the lease commit; by [`LatencyMode`].
    dhcp: [Histogram; 2],
    /// From the start of a transfer (the request) to its completion; by [`Protocol`] and
    /// [`FileClass`].
    transfer: [[Histogram; 6]; 2],
}

impl Default for Timings {
    fn default() -> Self {
        let durations = || std::array::from_fn(|_| Histogram::new(DURATION_BOUNDS));
        Timings {
            dhcp: std::array::from_fn(|_| Histogram::new(LATENCY_BOUNDS)),
            transfer: [durations(), durations()],
        }
    }
}

impl Timings {
    pub fn dhcp_latency(&self, mode: LatencyMode) -> &Histogram {
        &self.dhcp[mode as usize]
    }

    pub fn transfer(&self, protocol: Protocol, class: FileClass) -> &Histogram {
        &self.transfer[protocol as usize][class as usize]
    }

    /// Every DHCP-latency histogram, read now, with its mode.
    pub fn dhcp_series(&self) -> impl Iterator<Item = (LatencyMode, HistogramSnapshot)> + '_ {
        LatencyMode::ALL
            .into_iter()
            .map(|m| (m, self.dhcp_latency(m).snapshot()))
    }

    /// Every transfer-duration histogram, read now, with its protocol and class.
    pub fn transfer_series(
        &self,
    ) -> impl Iterator<Item = (Protocol, FileClass, HistogramSnapshot)> + '_ {
        Protocol::ALL.into_iter().flat_map(move |p| {
            FileClass::ALL
                .into_iter()
                .map(move |c| (p, c, self.transfer(p, c).snapshot()))
        })
    }
}

/// The journeys as the services share them: every event goes through here.
#[derive(Debug)]
pub struct Journeys {
    /// `None` when `[journeys] enabled = false`.
    table: Option<Mutex<JourneyTable>>,
    classes: RwLock<Arc<FileClasses>>,
    /// For host names in the documents (replaced on reload).
    hosts: RwLock<Arc<HostIndex>>,
    timings: Timings,
}

impl Default for Journeys {
    fn default() -> Self {
        Journeys::new(
            &JourneySettings::default(),
            FileClasses::default(),
            Arc::default(),
        )
    }
}

/// An IPv4 address, or an IPv4-mapped IPv6 one as IPv4; `None` for other IPv6 addresses.
pub fn ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }
}

impl Journeys {
    pub fn new(s: &JourneySettings, classes: FileClasses, hosts: Arc<HostIndex>) -> Journeys {
        Journeys {
            table: s
                .enabled
                .then(|| Mutex::new(JourneyTable::new(s.max_hosts, s.stuck_after))),
            classes: RwLock::new(Arc::new(classes)),
            hosts: RwLock::new(hosts),
            timings: Timings::default(),
        }
    }

    /// Whether the table is kept.
    pub fn enabled(&self) -> bool {
        self.table.is_some()
    }

    /// A reload: the new classes, hosts and stuck time (the table and its bound stay).
    pub fn reconfigure(&self, s: &JourneySettings, classes: FileClasses, hosts: Arc<HostIndex>) {
        *self.classes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(classes);
        *self.hosts.write().unwrap_or_else(|e| e.into_inner()) = hosts;
        self.with(|t| t.set_stuck_after(s.stuck_after));
    }

    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// The class of a requested name under the classes in effect.
    pub fn classify(&self, name: &str) -> FileClass {
        self.classes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .classify(name)
    }

    fn lock(m: &Mutex<JourneyTable>) -> MutexGuard<'_, JourneyTable> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the table, if it is kept.
    pub fn with<R>(&self, f: impl FnOnce(&mut JourneyTable) -> R) -> Option<R> {
        self.table.as_ref().map(|m| f(&mut Self::lock(m)))
    }

    /// A transfer of `name` to `peer` started: its class, for [`Journeys::transfer_done`].
    pub fn transfer_started(&self, now: Now, peer: IpAddr, name: &str) -> FileClass {
        let class = self.classify(name);
        if let Some(ip) = ipv4(peer) {
            self.with(|t| t.transfer_started(now, ip, class));
        }
        class
    }

    /// A transfer of class `class` to `peer`, started at `started`, completed at `now`.
    pub fn transfer_done(
        &self,
        now: Now,
        peer: IpAddr,
        protocol: Protocol,
        class: FileClass,
        started: Instant,
    ) {
        self.timings
            .transfer(protocol, class)
            .observe(now.mono.saturating_duration_since(started));
        if let Some(ip) = ipv4(peer) {
            self.with(|t| t.transfer_done(now, ip, class));
        }
    }

    /// The server sent `peer` an error (TFTP ERROR, HTTP error status, a refusal).
    pub fn error_to(&self, now: Now, peer: IpAddr, kind: ErrorKind, code: u16, detail: &str) {
        if let Some(ip) = ipv4(peer) {
            self.with(|t| t.error_at_address(now, ip, kind, code, detail));
        }
    }

    /// The hosts document for a query string (`phase=kernel&stuck=1&limit=200&offset=0`).
    pub fn hosts_document(&self, query: &str, now: Now) -> Result<HostsDocument, QueryError> {
        let filter = HostFilter::parse(query)?;
        Ok(self.hosts_filtered(&filter, now))
    }

    /// The hosts document for `filter`.
    pub fn hosts_filtered(&self, filter: &HostFilter, now: Now) -> HostsDocument {
        let hosts = Arc::clone(&self.hosts.read().unwrap_or_else(|e| e.into_inner()));
        self.with(|t| doc::hosts(t, filter, &hosts, now))
            .unwrap_or_else(|| HostsDocument::empty(now))
    }

    /// One host's entry, as in the hosts document.
    pub fn host_document(&self, mac: &MacAddr, now: Now) -> Option<HostDoc> {
        let hosts = Arc::clone(&self.hosts.read().unwrap_or_else(|e| e.into_inner()));
        self.with(|t| doc::host(t, mac, &hosts, now)).flatten()
    }

    /// The summary document (hosts per phase, stuck, completed over time).
    pub fn summary(&self, now: Now) -> SummaryDocument {
        self.with(|t| doc::summary(t, now))
            .unwrap_or_else(|| SummaryDocument::empty(now))
    }

    /// DHCP saw a DISCOVER or REQUEST from `mac`.
    pub fn dhcp_request(&self, now: Now, mac: MacAddr, uuid: Option<ClientUuid>, discover: bool) {
        self.with(|t| t.dhcp_request(now, mac, uuid, discover));
    }
}

/// The file classes of a configuration: `[boot]` and every host's `boot` override, the
/// built-in install routes, the default globs, then `[journeys]`'s globs.
pub fn classes_for(boot: &BootProfile, hosts: &HostIndex, s: &JourneySettings) -> FileClasses {
    let mut c = FileClasses::builder();
    for p in std::iter::once(boot).chain(hosts.hosts().iter().map(|h| &h.boot)) {
        for f in [&p.bios, &p.uefi_ia32, &p.uefi_x64, &p.arm64, &p.uefi_http]
            .into_iter()
            .flatten()
        {
            c.name(f, FileClass::BootFile);
        }
        if let Some(f) = &p.ipxe_script {
            c.name(f, FileClass::Script);
        }
        if let Some(f) = &p.kernel {
            c.name(f, FileClass::Kernel);
        }
        if let Some(f) = &p.initrd {
            c.name(f, FileClass::Initrd);
        }
    }
    c.globs(&s.boot_file_globs, FileClass::BootFile);
    c.globs(&s.kernel_globs, FileClass::Kernel);
    c.globs(&s.initrd_globs, FileClass::Initrd);
    c.build()
}

/// One transfer followed from its start to its end: its duration goes to
/// [`Timings::transfer`] and its completion to the host's journey, once.
#[derive(Debug)]
pub struct Transfer {
    journeys: Arc<Journeys>,
    protocol: Protocol,
    class: FileClass,
    peer: IpAddr,
    started: Instant,
    done: bool,
}

impl Transfer {
    /// A transfer of `name` to `peer` starts at `now` (the journey reaches its class's phase).
    pub fn start(
        journeys: &Arc<Journeys>,
        now: Now,
        protocol: Protocol,
        peer: IpAddr,
        name: &str,
    ) -> Transfer {
        Transfer {
            journeys: Arc::clone(journeys),
            protocol,
            class: journeys.transfer_started(now, peer, name),
            peer,
            started: now.mono,
            done: false,
        }
    }

    pub fn class(&self) -> FileClass {
        self.class
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The transfer completed at `at` (monotonic); only the first call counts.
    pub fn done(&mut self, at: Instant) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let now = Now::current();
        let ago = now.mono.saturating_duration_since(at);
        let at = Now {
            mono: at,
            unix_ms: now
                .unix_ms
                .saturating_sub(u64::try_from(ago.as_millis()).unwrap_or(0)),
        };
        self.journeys
            .transfer_done(at, self.peer, self.protocol, self.class, self.started);
    }
}

impl Journeys {
    /// An answer of the HTTP install routes (`/boot.ipxe`, `/install/KEY/TOKEN/NAME`,
    /// `/done/KEY/TOKEN`) with `status` to `peer`. `/boot.ipxe?mac=M` ties `peer` to `M`'s
    /// journey when `peer` belongs to no other journey (proxy mode's way to learn where a host
    /// is; a display only, nothing is decided on it); the template and callback routes answer
    /// 200 only with the host's token, so their key names the host.
    pub fn install_route(
        &self,
        now: Now,
        path: &str,
        query: Option<&str>,
        peer: IpAddr,
        status: u16,
    ) {
        let Some(ip) = ipv4(peer) else {
            return;
        };
        let segments = || path.trim_start_matches('/').split('/');
        let route = segments().next().unwrap_or("");
        if status >= 400 {
            self.with(|t| t.error_at_address(now, ip, ErrorKind::HttpStatus, status, path));
            return;
        }
        let host_mac = |key: &str| {
            let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
            let decoded = pxe_proto::uri::percent_decode(key.as_bytes(), true)?;
            hosts
                .by_key(std::str::from_utf8(&decoded).ok()?)
                .and_then(|i| hosts.get(i).mac)
        };
        match route {
            "boot.ipxe" => {
                let asked = query.unwrap_or("").split('&').find_map(|p| {
                    let v = p.strip_prefix("mac=")?;
                    v.replace('-', ":").parse::<MacAddr>().ok()
                });
                self.with(|t| {
                    if let Some(mac) = asked
                        && t.get(&mac).is_some()
                        && t.mac_at(ip).is_none_or(|m| m == mac)
                    {
                        t.set_address(mac, ip, now);
                    }
                    t.reached_at_address(now, ip, Phase::Script);
                });
            }
            "install" | "done" => {
                let phase = if route == "done" {
                    Phase::Callback
                } else {
                    Phase::Template
                };
                let mac = segments().nth(1).and_then(host_mac);
                self.with(|t| match mac {
                    Some(mac) if phase == Phase::Callback => t.callback(now, mac),
                    Some(mac) => t.reach(now, mac, phase),
                    None => t.reached_at_address(now, ip, phase),
                });
            }
            _ => {}
        }
    }
}
