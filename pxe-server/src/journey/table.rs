//! The bounded journey table, sans-IO: events in (each with its [`Now`]), entries out.
//!
//! Bound: at most `max_hosts` entries, each in a map reserved at that size, with an address →
//! MAC map (at most one address per entry) and two queues of eviction candidates of at most
//! `2 × max_hosts` items each, all reserved up front: no allocation per event. When the table
//! is full a new host evicts the oldest finished journey (by the time it finished), else the
//! oldest by last progress; each eviction is counted. The queues are lazy: an item whose
//! entry has moved on since is skipped, and a full queue is compacted in place.
//!
//! - A journey is *finished* when it reached `callback`, or when its initrd transfer completed
//!   and no install template was fetched (no install in progress).
//! - It is *stuck* when not finished and without progress for `stuck_after`.
//! - A DISCOVER from a host whose journey is finished or stuck starts a new boot (its boot
//!   counter goes up, its phases start again); iPXE's own DHCP after the boot file is not a
//!   new boot.
//! - A boot is counted completed once, the first time it is finished.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use pxe_proto::{ClientUuid, MacAddr};

use super::{FileClass, Now, Phase};

/// Bytes of an error's detail kept (a file name or path, truncated).
pub const DETAIL_BYTES: usize = 64;
/// Seconds of completions kept for [`JourneyTable::completed_per_sec`].
pub const COMPLETION_SECONDS: usize = 3600;

/// What kind of error the server last sent a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A TFTP ERROR packet (code, file).
    TftpError,
    /// An HTTP error status (status, path).
    HttpStatus,
    /// A DHCP NAK.
    DhcpNak,
    /// A request refused for a limit (TFTP "server busy", HTTP 503); the detail names it.
    Refused,
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::TftpError => "tftp_error",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::DhcpNak => "dhcp_nak",
            ErrorKind::Refused => "refused",
        }
    }
}

/// The last error sent to a host, in a fixed size (no allocation per event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastError {
    pub kind: ErrorKind,
    /// TFTP error code or HTTP status (0 for a NAK).
    pub code: u16,
    detail: [u8; DETAIL_BYTES],
    detail_len: u8,
    pub at_ms: u64,
}

impl LastError {
    fn new(kind: ErrorKind, code: u16, detail: &str, at_ms: u64) -> LastError {
        // Truncated at a character boundary.
        let mut end = detail.len().min(DETAIL_BYTES);
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        let mut buf = [0u8; DETAIL_BYTES];
        buf[..end].copy_from_slice(&detail.as_bytes()[..end]);
        LastError {
            kind,
            code,
            detail: buf,
            detail_len: end as u8,
            at_ms,
        }
    }

    /// The file, path or setting the error was about (at most [`DETAIL_BYTES`]).
    pub fn detail(&self) -> &str {
        std::str::from_utf8(&self.detail[..usize::from(self.detail_len)]).unwrap_or("")
    }
}

/// One host's journey in its current boot.
#[derive(Debug, Clone)]
pub struct Entry {
    pub mac: MacAddr,
    pub uuid: Option<ClientUuid>,
    pub address: Option<Ipv4Addr>,
    /// Boots seen (1 for the first).
    pub boot: u32,
    /// Unix ms each phase was first reached in this boot (0: not reached).
    pub reached_ms: [u64; Phase::COUNT],
    /// The furthest phase reached (`None` before any: a host only seen by its address).
    pub phase: Option<Phase>,
    /// Unix ms the boot started.
    pub since_ms: u64,
    pub last_progress_ms: u64,
    last_progress: Instant,
    initrd_done: bool,
    /// This boot was counted completed.
    counted: bool,
    /// Sequence number of the last progress, and of the moment it finished (eviction order).
    progress_seq: u64,
    finished_seq: u64,
    pub last_error: Option<LastError>,
}

impl Entry {
    fn new(mac: MacAddr, now: Now) -> Entry {
        Entry {
            mac,
            uuid: None,
            address: None,
            boot: 1,
            reached_ms: [0; Phase::COUNT],
            phase: None,
            since_ms: now.unix_ms,
            last_progress_ms: now.unix_ms,
            last_progress: now.mono,
            initrd_done: false,
            counted: false,
            progress_seq: 0,
            finished_seq: 0,
            last_error: None,
        }
    }

    /// Reached `callback`, or completed its initrd with no install in progress.
    pub fn finished(&self) -> bool {
        self.reached(Phase::Callback) || (self.initrd_done && !self.reached(Phase::Template))
    }

    pub fn reached(&self, p: Phase) -> bool {
        self.reached_ms[p.index()] != 0
    }

    /// Not finished, and no progress for `stuck_after` at `now`.
    pub fn stuck(&self, now: Instant, stuck_after: Duration) -> bool {
        !self.finished() && now.saturating_duration_since(self.last_progress) >= stuck_after
    }

    /// The phases reached, in the order of their times.
    pub fn timeline(&self) -> impl Iterator<Item = (Phase, u64)> + '_ {
        let mut order = Phase::ALL;
        order.sort_by_key(|p| (self.reached_ms[p.index()], p.index()));
        order
            .into_iter()
            .filter(|p| self.reached(*p))
            .map(|p| (p, self.reached_ms[p.index()]))
    }
}

/// The answers DHCP records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpAnswer {
    Offer,
    /// An ACK (full mode) or a ProxyDHCP answer (port 67 ACK, port 4011 ACK).
    Ack,
    /// A ProxyDHCP OFFER: the answer to a DISCOVER that carries the boot file.
    ProxyOffer,
    Nak,
}

/// Counts of the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableStats {
    pub hosts: usize,
    pub completed: u64,
    pub evicted: u64,
    /// Transfers from an address no journey holds (proxy mode without a port-4011 request or
    /// a `/boot.ipxe?mac=` from that address, or an evicted host).
    pub unattributed: u64,
}

#[derive(Debug)]
pub struct JourneyTable {
    max_hosts: usize,
    stuck_after: Duration,
    entries: HashMap<MacAddr, Entry>,
    by_address: HashMap<Ipv4Addr, MacAddr>,
    /// (progress_seq, mac) in progress order; (finished_seq, mac) in finishing order.
    progress: VecDeque<(u64, MacAddr)>,
    finished: VecDeque<(u64, MacAddr)>,
    seq: u64,
    completed: u64,
    evicted: u64,
    unattributed: u64,
    /// Completions per Unix second: (second, count), indexed by second modulo the length.
    per_sec: Box<[(u64, u32)]>,
}

impl JourneyTable {
    pub fn new(max_hosts: usize, stuck_after: Duration) -> JourneyTable {
        let max_hosts = max_hosts.max(1);
        JourneyTable {
            max_hosts,
            stuck_after,
            entries: HashMap::with_capacity(max_hosts),
            by_address: HashMap::with_capacity(max_hosts),
            progress: VecDeque::with_capacity(2 * max_hosts),
            finished: VecDeque::with_capacity(2 * max_hosts),
            seq: 0,
            completed: 0,
            evicted: 0,
            unattributed: 0,
            per_sec: vec![(0, 0); COMPLETION_SECONDS].into_boxed_slice(),
        }
    }

    pub fn set_stuck_after(&mut self, d: Duration) {
        self.stuck_after = d;
    }

    pub fn stuck_after(&self) -> Duration {
        self.stuck_after
    }

    pub fn max_hosts(&self) -> usize {
        self.max_hosts
    }

    pub fn stats(&self) -> TableStats {
        TableStats {
            hosts: self.entries.len(),
            completed: self.completed,
            evicted: self.evicted,
            unattributed: self.unattributed,
        }
    }

    pub fn get(&self, mac: &MacAddr) -> Option<&Entry> {
        self.entries.get(mac)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// The MAC an address belongs to.
    pub fn mac_at(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.by_address.get(&ip).copied()
    }

    /// Completions in each of the `n` seconds up to `now` (oldest first), `n` at most
    /// [`COMPLETION_SECONDS`].
    pub fn completed_per_sec(&self, now: Now, n: usize) -> Vec<u32> {
        let end = now.unix_ms / 1000;
        let n = n.min(COMPLETION_SECONDS) as u64;
        (end.saturating_sub(n - 1)..=end)
            .map(|s| {
                let (sec, count) = self.per_sec[(s % COMPLETION_SECONDS as u64) as usize];
                if sec == s { count } else { 0 }
            })
            .collect()
    }

    /// The entry of `mac`, made (evicting if the table is full) if it has none.
    fn entry(&mut self, mac: MacAddr, now: Now) -> &mut Entry {
        if !self.entries.contains_key(&mac) {
            if self.entries.len() >= self.max_hosts {
                self.evict_one();
            }
            self.entries.insert(mac, Entry::new(mac, now));
        }
        self.entries
            .get_mut(&mac)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// Removes the oldest finished journey, else the oldest by last progress.
    fn evict_one(&mut self) {
        let entries = &self.entries;
        let victim = pop_valid(&mut self.finished, |s, m| {
            Queue::Finished.holds(entries, s, m)
        })
        .or_else(|| {
            pop_valid(&mut self.progress, |s, m| {
                Queue::Progress.holds(entries, s, m)
            })
        });
        // The queues hold every entry's latest sequence number; this fallback is for safety.
        let victim = victim.or_else(|| self.entries.keys().next().copied());
        if let Some(mac) = victim {
            self.remove(&mac);
            self.evicted += 1;
        }
    }

    fn remove(&mut self, mac: &MacAddr) {
        if let Some(e) = self.entries.remove(mac)
            && let Some(ip) = e.address
            && self.by_address.get(&ip) == Some(mac)
        {
            self.by_address.remove(&ip);
        }
    }

    /// Marks progress on `mac` (and `phase` reached, if any) at `now`.
    fn progress(&mut self, mac: MacAddr, now: Now, phase: Option<Phase>) {
        self.advance(mac, now, phase, false);
    }

    /// [`JourneyTable::progress`], and with `initrd_done` the initrd transfer completed.
    fn advance(&mut self, mac: MacAddr, now: Now, phase: Option<Phase>, initrd_done: bool) {
        self.seq += 1;
        let seq = self.seq;
        let e = self.entry(mac, now);
        let was_finished = e.finished();
        e.initrd_done |= initrd_done;
        if let Some(p) = phase
            && !e.reached(p)
        {
            e.reached_ms[p.index()] = now.unix_ms.max(1);
        }
        if let Some(p) = phase {
            e.phase = Some(e.phase.map_or(p, |q| q.max(p)));
        }
        e.last_progress = now.mono;
        e.last_progress_ms = now.unix_ms;
        e.progress_seq = seq;
        self.push(Queue::Progress, seq, mac);
        self.settle(mac, now, was_finished);
    }

    /// After an event on `mac`: counts a newly finished boot and queues it for eviction.
    fn settle(&mut self, mac: MacAddr, now: Now, was_finished: bool) {
        let seq = self.seq;
        let Some(e) = self.entries.get_mut(&mac) else {
            return;
        };
        if !e.finished() || was_finished {
            return;
        }
        e.finished_seq = seq;
        if !e.counted {
            e.counted = true;
            self.completed += 1;
            let sec = now.unix_ms / 1000;
            let slot = &mut self.per_sec[(sec % COMPLETION_SECONDS as u64) as usize];
            *slot = if slot.0 == sec {
                (sec, slot.1 + 1)
            } else {
                (sec, 1)
            };
        }
        self.push(Queue::Finished, seq, mac);
    }

    fn push(&mut self, q: Queue, seq: u64, mac: MacAddr) {
        let entries = &self.entries;
        let queue = match q {
            Queue::Progress => &mut self.progress,
            Queue::Finished => &mut self.finished,
        };
        if queue.len() >= 2 * self.max_hosts {
            // At most one valid item per entry: this leaves at least half the room.
            queue.retain(|&(s, m)| q.holds(entries, s, &m));
        }
        queue.push_back((seq, mac));
    }

    /// Records that `mac` is at `ip` (an answer's address, a learned one).
    pub fn set_address(&mut self, mac: MacAddr, ip: Ipv4Addr, now: Now) {
        if ip.is_unspecified() || ip.is_broadcast() {
            return;
        }
        let e = self.entry(mac, now);
        let old = e.address.replace(ip);
        if let Some(old) = old
            && old != ip
            && self.by_address.get(&old) == Some(&mac)
        {
            self.by_address.remove(&old);
        }
        // Another host that had this address loses it.
        if let Some(prev) = self.by_address.insert(ip, mac)
            && prev != mac
            && let Some(p) = self.entries.get_mut(&prev)
            && p.address == Some(ip)
        {
            p.address = None;
        }
    }

    /// A DISCOVER (`discover`) or REQUEST from `mac`. A DISCOVER after a finished or stuck
    /// journey starts a new boot.
    pub fn dhcp_request(
        &mut self,
        now: Now,
        mac: MacAddr,
        uuid: Option<ClientUuid>,
        discover: bool,
    ) {
        let stuck_after = self.stuck_after;
        let known = self.entries.contains_key(&mac);
        if !known && !discover {
            // A REQUEST alone (a renewal) starts no journey.
            return;
        }
        let e = self.entry(mac, now);
        if uuid.is_some() {
            e.uuid = uuid;
        }
        if discover && known && (e.finished() || e.stuck(now.mono, stuck_after)) {
            e.boot += 1;
            e.reached_ms = [0; Phase::COUNT];
            e.phase = None;
            e.since_ms = now.unix_ms;
            e.initrd_done = false;
            e.counted = false;
            e.last_error = None;
        }
        if discover {
            self.progress(mac, now, Some(Phase::Discover));
        }
    }

    /// An answer sent to `mac`, with the address it names (full mode's leased or reserved
    /// address, the client's own on port 4011).
    pub fn dhcp_answer(
        &mut self,
        now: Now,
        mac: MacAddr,
        answer: DhcpAnswer,
        address: Option<Ipv4Addr>,
    ) {
        if let Some(ip) = address {
            self.set_address(mac, ip, now);
        }
        match answer {
            DhcpAnswer::Offer => self.progress(mac, now, Some(Phase::Offer)),
            // The proxy's OFFER is its whole answer to a DISCOVER (PXE ROMs boot from it).
            DhcpAnswer::ProxyOffer => {
                self.progress(mac, now, Some(Phase::Offer));
                self.progress(mac, now, Some(Phase::Ack));
            }
            DhcpAnswer::Ack => self.progress(mac, now, Some(Phase::Ack)),
            DhcpAnswer::Nak => {
                let e = self.entry(mac, now);
                e.last_error = Some(LastError::new(ErrorKind::DhcpNak, 0, "", now.unix_ms));
            }
        }
    }

    /// The MAC at `ip`, or counted as unattributed.
    fn attribute(&mut self, ip: Ipv4Addr) -> Option<MacAddr> {
        let mac = self.by_address.get(&ip).copied();
        if mac.is_none() {
            self.unattributed += 1;
        }
        mac
    }

    /// A transfer of a `class` file to `ip` started.
    pub fn transfer_started(&mut self, now: Now, ip: Ipv4Addr, class: FileClass) {
        if let Some(mac) = self.attribute(ip) {
            self.progress(mac, now, class.phase());
        }
    }

    /// A transfer of a `class` file to `ip` completed.
    pub fn transfer_done(&mut self, now: Now, ip: Ipv4Addr, class: FileClass) {
        let Some(mac) = self.by_address.get(&ip).copied() else {
            return;
        };
        self.advance(mac, now, None, class == FileClass::Initrd);
    }

    /// `mac` reached `phase` (a route that names the host).
    pub fn reach(&mut self, now: Now, mac: MacAddr, phase: Phase) {
        self.progress(mac, now, Some(phase));
    }

    /// The installer's callback for `mac` arrived.
    pub fn callback(&mut self, now: Now, mac: MacAddr) {
        self.progress(mac, now, Some(Phase::Callback));
    }

    /// A phase reached by the host at `ip` outside a transfer (an install route).
    pub fn reached_at_address(&mut self, now: Now, ip: Ipv4Addr, phase: Phase) {
        if let Some(mac) = self.attribute(ip) {
            self.progress(mac, now, Some(phase));
        }
    }

    /// The server sent the host at `ip` an error.
    pub fn error_at_address(
        &mut self,
        now: Now,
        ip: Ipv4Addr,
        kind: ErrorKind,
        code: u16,
        detail: &str,
    ) {
        if let Some(mac) = self.by_address.get(&ip).copied()
            && let Some(e) = self.entries.get_mut(&mac)
        {
            e.last_error = Some(LastError::new(kind, code, detail, now.unix_ms));
        }
    }

    /// The server refused `mac` a DHCP answer for a limit (`setting`).
    pub fn refused(&mut self, now: Now, mac: MacAddr, setting: &str) {
        if let Some(e) = self.entries.get_mut(&mac) {
            e.last_error = Some(LastError::new(ErrorKind::Refused, 0, setting, now.unix_ms));
        }
    }

    /// Whether the journey of `e` is stuck now.
    pub fn is_stuck(&self, e: &Entry, now: Now) -> bool {
        e.stuck(now.mono, self.stuck_after)
    }
}

/// The two eviction queues: by last progress, by the time a journey finished.
#[derive(Debug, Clone, Copy)]
enum Queue {
    Progress,
    Finished,
}

impl Queue {
    /// Whether the item `(seq, mac)` of this queue still stands for its entry (entries move
    /// on; their old items are skipped).
    fn holds(self, entries: &HashMap<MacAddr, Entry>, seq: u64, mac: &MacAddr) -> bool {
        entries.get(mac).is_some_and(|e| match self {
            Queue::Progress => e.progress_seq == seq,
            Queue::Finished => e.finished() && e.finished_seq == seq,
        })
    }
}

/// Pops items until one is `valid`; that one's MAC.
fn pop_valid(
    q: &mut VecDeque<(u64, MacAddr)>,
    valid: impl Fn(u64, &MacAddr) -> bool,
) -> Option<MacAddr> {
    while let Some((seq, mac)) = q.pop_front() {
        if valid(seq, &mac) {
            return Some(mac);
        }
    }
    None
}
