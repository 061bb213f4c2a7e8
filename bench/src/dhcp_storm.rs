//! `pxe-bench dhcp-storm`: thousands of simulated PXE ROMs doing DHCP at once, from one thread.
//!
//! All clients share one UDP socket bound to 0.0.0.0:68 (the DHCP client port; the server's
//! broadcast answers reach it) and, in proxy mode, one socket on an ephemeral port for the
//! REQUESTs to the boot server's port 4011. Datagrams go out and come in with
//! `sendmmsg`/`recvmmsg` in batches of 64; replies are demultiplexed by chaddr (client i has
//! MAC `mac_base + i`; its xid changes when a NAK restarts it, so the client itself checks the
//! xid); retransmission timers live in one binary heap (lazy deletion), not one task per client.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use pxe_net::UdpOptions;
use pxe_net::mmsg::{ErrorCounts, RecvBatch, SendBatch};
use pxe_proto::consts::{DHCP_SERVER_PORT, PXE_PORT};
use serde::Serialize;

use crate::dhcp_client::{self, Arch, ClientConfig, Dest, DhcpClient, Mode, Verdict};

/// When clients start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Arrival {
    /// All at t = 0 (power restored to a rack).
    Storm,
    /// The arrival rate grows by N clients/s every second (client k starts at sqrt(2k/N)).
    Ramp(f64),
    /// A constant N clients per second (client k starts at k/N).
    Rate(f64),
}

impl Arrival {
    pub(crate) fn parse(s: &str) -> anyhow::Result<Arrival> {
        let rate = |v: &str| -> anyhow::Result<f64> {
            let v = v.strip_suffix("/s").unwrap_or(v);
            let r: f64 = v.parse().with_context(|| format!("bad rate {v:?}"))?;
            if !(r > 0.0 && r.is_finite()) {
                bail!("rate must be positive: {v}");
            }
            Ok(r)
        };
        match s.split_once(':') {
            None if s == "storm" => Ok(Arrival::Storm),
            Some(("ramp", v)) => Ok(Arrival::Ramp(rate(v)?)),
            Some(("rate", v)) => Ok(Arrival::Rate(rate(v)?)),
            _ => bail!("arrival must be storm, ramp:N/s or rate:N/s, not {s:?}"),
        }
    }

    /// Start offset of client `k`.
    pub(crate) fn offset(self, k: usize) -> Duration {
        let k = k as f64;
        match self {
            Arrival::Storm => Duration::ZERO,
            Arrival::Ramp(n) => Duration::from_secs_f64((2.0 * k / n).sqrt()),
            Arrival::Rate(n) => Duration::from_secs_f64(k / n),
        }
    }
}

/// `bios=50,uefi=40,ipxe=10` → weights.
pub(crate) fn parse_arch_mix(s: &str) -> anyhow::Result<Vec<(Arch, u32)>> {
    let mut mix = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (name, w) = part.split_once('=').unwrap_or((part, "1"));
        let arch = Arch::parse(name.trim())
            .with_context(|| format!("unknown architecture {name:?} (bios, uefi, ipxe)"))?;
        let w: u32 = w
            .trim()
            .parse()
            .with_context(|| format!("bad weight in {part:?}"))?;
        if w > 0 {
            mix.push((arch, w));
        }
    }
    if mix.is_empty() {
        bail!("the architecture mix is empty");
    }
    Ok(mix)
}

/// Architectures for `n` clients, interleaved in the mix's proportions (smooth weighted round
/// robin, so every stretch of arrivals has the mix).
pub(crate) fn assign_archs(mix: &[(Arch, u32)], n: usize) -> Vec<Arch> {
    let total: i64 = mix.iter().map(|&(_, w)| i64::from(w)).sum();
    let mut current = vec![0i64; mix.len()];
    (0..n)
        .map(|_| {
            for (c, &(_, w)) in current.iter_mut().zip(mix) {
                *c += i64::from(w);
            }
            let best = (0..mix.len())
                .max_by_key(|&i| (current[i], Reverse(i)))
                .unwrap_or(0);
            current[best] -= total;
            mix[best].0
        })
        .collect()
}

pub(crate) fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        bail!("a MAC address has six bytes: {s:?}");
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).with_context(|| format!("bad MAC {s:?}"))?;
    }
    Ok(mac)
}

/// `base + i` as a 48-bit number.
pub(crate) fn mac_add(base: [u8; 6], i: u64) -> [u8; 6] {
    let mut b = [0u8; 8];
    b[2..].copy_from_slice(&base);
    let v = u64::from_be_bytes(b).wrapping_add(i) & 0xffff_ffff_ffff;
    let out = v.to_be_bytes();
    [out[2], out[3], out[4], out[5], out[6], out[7]]
}

/// The `i` with `mac_add(base, i) == mac` and `i < n`: which client a reply is for.
pub(crate) fn mac_index(base: [u8; 6], mac: [u8; 6], n: usize) -> Option<usize> {
    let v = |m: [u8; 6]| m.iter().fold(0u64, |a, &b| a << 8 | u64::from(b));
    let i = v(mac).wrapping_sub(v(base)) & 0xffff_ffff_ffff;
    usize::try_from(i).ok().filter(|&i| i < n)
}

/// The DHCP half of a run, the whole of a `dhcp-storm` and the first phase of a `boot`: how many
/// machines, who they are, when they start, where their DHCP goes and how long they have.
#[derive(Debug, Clone)]
pub(crate) struct DhcpParams {
    pub clients: usize,
    pub mode: Mode,
    pub arch_mix: Vec<(Arch, u32)>,
    pub mac_base: [u8; 6],
    pub arrival: Arrival,
    /// Every socket of the run is bound to it (SO_BINDTODEVICE).
    pub interface: Option<String>,
    /// Where DISCOVERs and REQUESTs go (port 67).
    pub server: Ipv4Addr,
    /// Multiplies the PXE DHCP retransmission timeouts (4, 8, 16, 32 s).
    pub timeout_scale: f64,
    /// Unfinished clients are abandoned (and counted as failed) after this long.
    pub deadline: Duration,
    /// Seeds the xids.
    pub seed: u64,
    /// Port the shared client socket binds (68 for real servers).
    pub client_port: u16,
}

impl DhcpParams {
    /// Every client's identity, by index (each taken when its client arrives): its
    /// architecture from the mix, MAC `mac_base + i`, a UUID, and an xid no other client has,
    /// all drawn from the seed.
    pub(crate) fn client_configs(&self) -> Vec<Option<ClientConfig>> {
        let archs = assign_archs(&self.arch_mix, self.clients);
        let timeouts = ClientConfig::pxe_timeouts(self.timeout_scale);
        let mut rng = Rng(self.seed | 1);
        let mut xids: HashSet<u32> = HashSet::with_capacity(self.clients * 2);
        let mut configs: Vec<Option<ClientConfig>> = Vec::with_capacity(self.clients);
        for (i, &arch) in archs.iter().enumerate() {
            let xid = loop {
                let x = (rng.next() >> 32) as u32;
                if x != 0 && !xids.contains(&x) {
                    break x;
                }
            };
            xids.insert(xid);
            let mac = mac_add(self.mac_base, i as u64);
            let mut uuid = [0u8; 16];
            uuid[..8].copy_from_slice(&rng.next().to_le_bytes());
            uuid[8..10].copy_from_slice(&(i as u16).to_be_bytes());
            uuid[10..].copy_from_slice(&mac);
            configs.push(Some(ClientConfig {
                mac,
                uuid,
                arch,
                mode: self.mode,
                xid,
                timeouts: timeouts.clone(),
            }));
        }
        configs
    }

    /// The clients' shared DHCP socket (on `client_port`: broadcast answers reach it) and, in
    /// proxy mode, the socket of their REQUESTs to the boot server's port 4011.
    pub(crate) fn open_sockets(&self) -> anyhow::Result<(UdpSocket, Option<UdpSocket>)> {
        let sock = pxe_net::open_udp(&UdpOptions {
            bind: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, self.client_port),
            interface: self.interface.clone(),
            rcvbuf: 32 << 20,
            sndbuf: 8 << 20,
        })
        .context("the shared DHCP client socket")?;
        let proxy_sock = match self.mode {
            Mode::Proxy => Some(
                pxe_net::open_udp(&UdpOptions {
                    bind: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
                    interface: self.interface.clone(),
                    rcvbuf: 16 << 20,
                    sndbuf: 4 << 20,
                })
                .context("the port-4011 request socket")?,
            ),
            Mode::Full => None,
        };
        Ok((sock, proxy_sock))
    }

    /// Where DISCOVERs and REQUESTs go.
    pub(crate) fn server_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.server, DHCP_SERVER_PORT)
    }

    /// Which client a DHCP reply is for, by its chaddr.
    pub(crate) fn client_of(&self, reply: &[u8]) -> Option<usize> {
        dhcp_client::peek_chaddr(reply).and_then(|m| mac_index(self.mac_base, m, self.clients))
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct ArchCount {
    pub clients: u64,
    pub ok: u64,
    /// Boot file names the successful clients were given.
    pub boot_files: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct StormReport {
    pub mode: &'static str,
    pub clients: usize,
    pub ok: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub per_arch: BTreeMap<&'static str, ArchCount>,
    pub retransmits: u64,
    pub packets_sent: u64,
    pub packets_received: u64,
    pub send_errors: ErrorCounts,
    /// Replies whose chaddr is no client's.
    pub replies_unknown_client: u64,
    /// NAKs the clients obeyed (each restarts the client at DISCOVER after a back-off).
    pub naks: u64,
    /// Fresh DISCOVERs after a NAK.
    pub restarts: u64,
    /// Successful clients given an address another successful client also got.
    pub duplicate_addresses: u64,
    /// Replies a client ignored (wrong chaddr, second offer, late duplicate, ...).
    pub replies_ignored: u64,
    pub replies_malformed: u64,
    /// First DISCOVER sent → the offer(s) taken (proxy: both offers).
    pub discover_to_offer: Latency,
    /// First REQUEST of the successful round → final ACK (proxy: includes the 4011 exchange).
    pub request_to_ack: Latency,
    /// First DISCOVER → final ACK.
    pub dhcp_total: Latency,
    /// From the storm's start until the last client succeeded.
    pub last_finished_s: f64,
    pub wall_s: f64,
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
    /// Process CPU time over wall time (100 = one core busy).
    pub cpu_percent: f64,
    pub socket_rcvbuf: usize,
    pub socket_sndbuf: usize,
}

/// The text report's failures by cause and clients per architecture (with the boot files the
/// successful ones were given), a line each.
pub(crate) fn write_outcomes(
    f: &mut std::fmt::Formatter<'_>,
    failures: &BTreeMap<String, u64>,
    per_arch: &BTreeMap<&'static str, ArchCount>,
) -> std::fmt::Result {
    for (cause, n) in failures {
        writeln!(f, "  failure {cause}: {n}")?;
    }
    for (arch, c) in per_arch {
        write!(f, "  {arch}: {} clients, {} ok", c.clients, c.ok)?;
        for (file, n) in &c.boot_files {
            write!(f, "  [{file}: {n}]")?;
        }
        writeln!(f)?;
    }
    Ok(())
}

/// Per-run counters and histograms.
struct Tally {
    d2o: Histogram<u64>,
    r2a: Histogram<u64>,
    total: Histogram<u64>,
    ok: u64,
    failures: BTreeMap<String, u64>,
    per_arch: BTreeMap<&'static str, ArchCount>,
    last_finished: Duration,
    retransmits: u64,
    naks: u64,
    restarts: u64,
    ignored: u64,
    malformed: u64,
    addresses: HashSet<Ipv4Addr>,
    duplicates: u64,
}

impl Tally {
    fn record(&mut self, c: &DhcpClient, start: Instant, cause: Option<String>) {
        self.retransmits += c.retransmits;
        self.naks += c.naks;
        self.restarts += c.restarts;
        let arch = self.per_arch.entry(c.arch().name()).or_default();
        arch.clients += 1;
        let cause = match (cause, c.failure()) {
            (Some(cause), _) => cause,
            (None, Some(f)) => f.cause(),
            (None, None) if c.is_done() => {
                arch.ok += 1;
                self.ok += 1;
                let file = String::from_utf8_lossy(c.boot_file().unwrap_or_default());
                *arch.boot_files.entry(file.into_owned()).or_default() += 1;
                if let Some(ip) = c.address()
                    && !self.addresses.insert(ip)
                {
                    self.duplicates += 1;
                }
                let t = c.ts;
                let us = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
                    (Some(a), Some(b)) => Some(b.saturating_duration_since(a).as_micros() as u64),
                    _ => None,
                };
                if let Some(v) = us(t.discover_sent, t.offer_got) {
                    let _ = self.d2o.record(v.max(1));
                }
                if let Some(v) = us(t.request_sent, t.ack_got) {
                    let _ = self.r2a.record(v.max(1));
                }
                if let Some(v) = us(t.discover_sent, t.ack_got) {
                    let _ = self.total.record(v.max(1));
                }
                if let Some(a) = t.ack_got {
                    self.last_finished = self.last_finished.max(a.saturating_duration_since(start));
                }
                return;
            }
            (None, None) => format!("unfinished-{}", c.phase().name()),
        };
        *self.failures.entry(cause).or_default() += 1;
    }
}

/// xorshift64*: the xids.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

pub(crate) fn run(p: &DhcpParams) -> anyhow::Result<StormReport> {
    if p.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let (sock, proxy_sock) = p.open_sockets()?;
    let (socket_rcvbuf, socket_sndbuf) = pxe_net::buffer_sizes(&sock);
    let fd = sock.as_raw_fd();
    let proxy_fd = proxy_sock.as_ref().map(|s| s.as_raw_fd());
    let mut fds = vec![sock.as_fd()];
    fds.extend(proxy_sock.as_ref().map(|s| s.as_fd()));

    // Clients: configs now, state machines at their arrival.
    let mut configs = p.client_configs();
    let mut clients: Vec<Option<DhcpClient>> = (0..p.clients).map(|_| None).collect();
    let mut recorded = vec![false; p.clients];
    let mut armed: Vec<Option<Instant>> = vec![None; p.clients];
    let mut timers: BinaryHeap<Reverse<(Instant, u32)>> = BinaryHeap::with_capacity(p.clients);

    let server = p.server_addr();
    let mut out = SendBatch::new();
    let mut out_proxy = SendBatch::new();
    let mut inb = RecvBatch::new();
    let mut send_errors = ErrorCounts::new();
    let mut sent = 0u64;
    let mut received = 0u64;
    let mut unknown_client = 0u64;
    let hist = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3);
    let mut tally = Tally {
        d2o: hist()?,
        r2a: hist()?,
        total: hist()?,
        ok: 0,
        failures: BTreeMap::new(),
        per_arch: BTreeMap::new(),
        last_finished: Duration::ZERO,
        retransmits: 0,
        naks: 0,
        restarts: 0,
        ignored: 0,
        malformed: 0,
        addresses: HashSet::with_capacity(p.clients),
        duplicates: 0,
    };
    let mut finished = 0usize;
    let mut next_arrival = 0usize;

    let cpu0 = pxe_net::cpu_time();
    let start = Instant::now();
    let give_up = start + p.deadline;

    // After any event of client `i`: queue what it has to send, re-arm its timer, record it if
    // it finished.
    macro_rules! drive {
        ($i:expr, $now:expr) => {{
            let i: usize = $i;
            let now: Instant = $now;
            if let Some(c) = clients[i].as_mut() {
                loop {
                    if out.is_full() {
                        sent += out.flush(fd, &mut send_errors);
                    }
                    let Some(dest) = c.poll_transmit(now, out.slot()) else {
                        break;
                    };
                    match dest {
                        Dest::Server => out.commit(server),
                        Dest::Proxy(ip) => {
                            if out_proxy.is_full() {
                                sent += out_proxy.flush(proxy_fd.unwrap_or(fd), &mut send_errors);
                            }
                            std::mem::swap(out.slot(), out_proxy.slot());
                            out_proxy.commit(SocketAddrV4::new(ip, PXE_PORT));
                        }
                    }
                }
                if c.is_finished() {
                    if !recorded[i] {
                        recorded[i] = true;
                        finished += 1;
                        tally.record(c, start, None);
                    }
                } else if let Some(dl) = c.deadline()
                    && armed[i] != Some(dl)
                {
                    armed[i] = Some(dl);
                    timers.push(Reverse((dl, i as u32)));
                }
            }
        }};
    }

    while finished < p.clients {
        let now = Instant::now();
        if now >= give_up {
            break;
        }
        // Arrivals.
        while next_arrival < p.clients && start + p.arrival.offset(next_arrival) <= now {
            let i = next_arrival;
            next_arrival += 1;
            if let Some(cfg) = configs[i].take() {
                clients[i] = Some(DhcpClient::new(cfg, now));
                drive!(i, now);
            }
        }
        // Timers.
        while let Some(&Reverse((at, i))) = timers.peek() {
            if at > now {
                break;
            }
            timers.pop();
            let i = i as usize;
            if armed[i] != Some(at) {
                continue; // stale
            }
            armed[i] = None;
            if let Some(c) = clients[i].as_mut() {
                c.handle_timeout(now);
            }
            drive!(i, now);
        }
        sent += out.flush(fd, &mut send_errors);
        if let Some(pfd) = proxy_fd {
            sent += out_proxy.flush(pfd, &mut send_errors);
        }
        // Replies, from both sockets, until both are drained (bounded per round so timers and
        // arrivals are served too).
        for _round in 0..64 {
            let mut got = 0;
            for rfd in &fds {
                inb.recv(rfd.as_raw_fd()).context("recvmmsg")?;
                let n = inb.len();
                got += n;
                let now = Instant::now();
                for k in 0..n {
                    let (bytes, _from) = inb.datagram(k);
                    received += 1;
                    let Some(i) = p.client_of(bytes) else {
                        unknown_client += 1;
                        continue;
                    };
                    match clients[i].as_mut() {
                        Some(c) => {
                            if c.handle_datagram(now, bytes) == Verdict::Accepted {
                                drive!(i, now);
                            }
                        }
                        None => unknown_client += 1,
                    }
                }
            }
            sent += out.flush(fd, &mut send_errors);
            if let Some(pfd) = proxy_fd {
                sent += out_proxy.flush(pfd, &mut send_errors);
            }
            if got == 0 {
                break;
            }
        }
        if finished >= p.clients {
            break;
        }
        // Sleep until the next timer or arrival (or a datagram).
        let mut wake = give_up;
        if let Some(&Reverse((at, _))) = timers.peek() {
            wake = wake.min(at);
        }
        if next_arrival < p.clients {
            wake = wake.min(start + p.arrival.offset(next_arrival));
        }
        let now = Instant::now();
        if wake > now {
            pxe_net::wait_readable(&fds, (wake - now).min(Duration::from_millis(200)));
        }
    }
    let wall = start.elapsed();
    let cpu1 = pxe_net::cpu_time();

    // Replies ignored or malformed, including those after a client finished.
    for c in clients.iter().flatten() {
        tally.ignored += c.ignored;
        tally.malformed += c.malformed;
    }
    // Whatever has not finished by the deadline.
    for i in 0..p.clients {
        if recorded[i] {
            continue;
        }
        match &clients[i] {
            Some(c) => tally.record(c, start, Some(format!("deadline-{}", c.phase().name()))),
            None => {
                *tally
                    .failures
                    .entry("deadline-not-started".into())
                    .or_default() += 1;
                if let Some(cfg) = &configs[i] {
                    tally.per_arch.entry(cfg.arch.name()).or_default().clients += 1;
                }
            }
        }
    }

    let user = cpu1.0.saturating_sub(cpu0.0).as_secs_f64();
    let system = cpu1.1.saturating_sub(cpu0.1).as_secs_f64();
    Ok(StormReport {
        mode: p.mode.name(),
        clients: p.clients,
        ok: tally.ok,
        failed: p.clients as u64 - tally.ok,
        failures: tally.failures,
        per_arch: tally.per_arch,
        retransmits: tally.retransmits,
        packets_sent: sent,
        packets_received: received,
        send_errors,
        replies_unknown_client: unknown_client,
        naks: tally.naks,
        restarts: tally.restarts,
        duplicate_addresses: tally.duplicates,
        replies_ignored: tally.ignored,
        replies_malformed: tally.malformed,
        discover_to_offer: Latency::of(&tally.d2o),
        request_to_ack: Latency::of(&tally.r2a),
        dhcp_total: Latency::of(&tally.total),
        last_finished_s: tally.last_finished.as_secs_f64(),
        wall_s: wall.as_secs_f64(),
        cpu_user_s: user,
        cpu_system_s: system,
        cpu_percent: 100.0 * (user + system) / wall.as_secs_f64().max(1e-9),
        socket_rcvbuf,
        socket_sndbuf,
    })
}

impl std::fmt::Display for StormReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "dhcp-storm ({} mode): clients {}  ok {}  failed {}",
            self.mode, self.clients, self.ok, self.failed
        )?;
        write_outcomes(f, &self.failures, &self.per_arch)?;
        if self.duplicate_addresses > 0 {
            writeln!(
                f,
                "  !! {} clients were given an address another client also got",
                self.duplicate_addresses
            )?;
        }
        writeln!(
            f,
            "packets sent {}  received {}  retransmits {}  send errors {:?}",
            self.packets_sent, self.packets_received, self.retransmits, self.send_errors
        )?;
        writeln!(
            f,
            "NAKs {}  restarts after a NAK {}",
            self.naks, self.restarts
        )?;
        writeln!(
            f,
            "replies: for no client {}  ignored {}  malformed {}",
            self.replies_unknown_client, self.replies_ignored, self.replies_malformed
        )?;
        let row = |f: &mut std::fmt::Formatter<'_>, name: &str, l: &Latency| {
            writeln!(
                f,
                "{name:<18} n {:>6}  p50 {:>9}  p90 {:>9}  p99 {:>9}  p99.9 {:>9}  max {:>9}",
                l.count, l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
            )
        };
        writeln!(f, "latency (µs):")?;
        row(f, "DISCOVER->OFFER", &self.discover_to_offer)?;
        row(f, "REQUEST->ACK", &self.request_to_ack)?;
        row(f, "whole DHCP", &self.dhcp_total)?;
        writeln!(
            f,
            "last client done at {:.3} s  wall {:.3} s",
            self.last_finished_s, self.wall_s
        )?;
        write!(
            f,
            "simulator CPU: user {:.3} s  system {:.3} s  ({:.1}% of one core over the run)",
            self.cpu_user_s, self.cpu_system_s, self.cpu_percent
        )
    }
}

#[cfg(test)]
mod tests;
