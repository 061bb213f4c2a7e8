//! The boot storm's report: the tally the loop keeps of finished clients, and what it becomes
//! once the loop is over (the JSON and text report; the curves behind the HTML one).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::BootParams;
use super::event_loop::Ran;
use super::sim::Sim;
use crate::boot_client::{BootClient, BootPlan, Step};
use crate::dhcp_client::ClientConfig;
use crate::dhcp_storm::{ArchCount, Arrival, Latency, write_outcomes};
use crate::server_view::ServerView;
use pxe_net::mmsg::ErrorCounts;

#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct Retransmits {
    pub dhcp: u64,
    pub tftp: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct Phases {
    pub dhcp: Latency,
    pub boot_file: Latency,
    pub kernel: Latency,
    pub initrd: Latency,
    pub total: Latency,
}

/// The HTTP side of a run (all zero without `--http-base`).
#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct HttpStats {
    /// TCP connections opened (one per client, more if a server closes them).
    pub connections: u64,
    /// GET requests started.
    pub requests: u64,
    /// Most connections open at once.
    pub max_open: usize,
}

#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct Packets {
    pub dhcp_sent: u64,
    pub dhcp_received: u64,
    pub tftp_sent: u64,
    pub tftp_received: u64,
    /// Messages the TFTP sockets received: with GRO one message may carry a whole window, so
    /// `tftp_received / tftp_receives` is the datagrams per receive.
    pub tftp_receives: u64,
}

/// Data behind the HTML report's charts (not in the JSON).
#[derive(Debug, Clone, Default)]
pub(crate) struct Curves {
    /// Seconds from the start at which each successful client finished, sorted.
    pub completions: Vec<f64>,
    /// Seconds at which each failed client failed, sorted.
    pub failures: Vec<f64>,
    /// Per phase (and "total"): (quantile, µs) points.
    pub quantiles: Vec<(&'static str, Vec<(f64, u64)>)>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct BootReport {
    pub clients: usize,
    pub ok: u64,
    /// Neither ok nor stalled on purpose.
    pub failed: u64,
    /// Clients that stopped on purpose after `stalled_after` (`--stall-after`): not failures.
    pub stalled: u64,
    pub stalled_after: Option<&'static str>,
    pub failures: BTreeMap<String, u64>,
    pub retransmits: Retransmits,
    pub phases: Phases,
    /// From the start until the last successful client finished.
    pub last_finished_s: f64,
    pub wall_s: f64,
    /// How each phase of this run is fetched ("dhcp", "tftp" or "http"), phases it skips left
    /// out.
    pub transports: BTreeMap<&'static str, &'static str>,
    /// File bytes received: TFTP payload and HTTP bodies (all clients, failed ones included).
    pub bytes: u64,
    /// `bytes` over the wall time, in Mbit/s.
    pub goodput_mbit_s: f64,
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
    /// Simulator CPU time over wall time (100 = one core busy).
    pub cpu_percent: f64,
    pub mode: &'static str,
    pub skip_dhcp: bool,
    pub arrival: String,
    pub per_arch: BTreeMap<&'static str, ArchCount>,
    pub packets: Packets,
    pub send_errors: ErrorCounts,
    pub recv_errors: ErrorCounts,
    /// DHCP NAKs the clients obeyed (each restarts the client at DISCOVER after a back-off).
    pub dhcp_naks: u64,
    /// Fresh DISCOVERs after a NAK.
    pub dhcp_restarts: u64,
    /// DHCP replies whose chaddr is no client's.
    pub dhcp_replies_unknown_client: u64,
    pub dhcp_replies_ignored: u64,
    pub dhcp_replies_malformed: u64,
    /// Datagrams on a TFTP socket from a host other than the TFTP server.
    pub tftp_stray: u64,
    /// Most TFTP sockets open at once.
    pub max_open_sockets: usize,
    pub http: HttpStats,
    pub fd_limit: u64,
    /// The TFTP sockets received with UDP GRO.
    pub gro: bool,
    /// The server's view from its metrics (`--metrics-url`), on the same time axis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerView>,
    #[serde(skip)]
    pub curves: Curves,
}

/// Finished clients, as they finish: latencies per phase, failures by cause, per architecture.
pub(super) struct Tally {
    hists: [Histogram<u64>; 5],
    ok: u64,
    stalled: u64,
    failures: BTreeMap<String, u64>,
    per_arch: BTreeMap<&'static str, ArchCount>,
    completions: Vec<f64>,
    failure_times: Vec<f64>,
    last_finished: Duration,
    dhcp_naks: u64,
    dhcp_restarts: u64,
}

impl Tally {
    pub(super) fn new(clients: usize) -> anyhow::Result<Tally> {
        let hist = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3);
        Ok(Tally {
            hists: [hist()?, hist()?, hist()?, hist()?, hist()?],
            ok: 0,
            stalled: 0,
            failures: BTreeMap::new(),
            per_arch: BTreeMap::new(),
            completions: Vec::with_capacity(clients),
            failure_times: Vec::new(),
            last_finished: Duration::ZERO,
            dhcp_naks: 0,
            dhcp_restarts: 0,
        })
    }

    /// Counts a finished client (`cause`: why it failed, if the client itself does not say).
    pub(super) fn record(&mut self, c: &BootClient, start: Instant, cause: Option<String>) {
        let t = self;
        let (naks, restarts) = c.dhcp_naks_restarts();
        t.dhcp_naks += naks;
        t.dhcp_restarts += restarts;
        let arch = t.per_arch.entry(c.arch().name()).or_default();
        arch.clients += 1;
        let at = Instant::now().saturating_duration_since(start);
        if cause.is_none() && c.is_stalled() {
            // The phases it did count; it is neither booted nor failed.
            t.stalled += 1;
            t.record_steps(c);
            return;
        }
        let cause = match (cause, c.failure()) {
            (Some(cause), _) => cause,
            (None, Some(f)) => f.cause(),
            (None, None) => {
                arch.ok += 1;
                t.ok += 1;
                if let Some(f) = c.boot_file() {
                    *arch.boot_files.entry(f.to_owned()).or_default() += 1;
                }
                t.record_steps(c);
                if let Some(d) = c.total() {
                    let _ = t.hists[4].record((d.as_micros() as u64).max(1));
                }
                let end = c
                    .finished_at()
                    .map_or(at, |f| f.saturating_duration_since(start));
                t.last_finished = t.last_finished.max(end);
                t.completions.push(end.as_secs_f64());
                return;
            }
        };
        t.failure_times.push(at.as_secs_f64());
        *t.failures.entry(cause).or_default() += 1;
    }

    /// The durations of the phases `c` finished.
    fn record_steps(&mut self, c: &BootClient) {
        for step in Step::ALL {
            if let Some(d) = c.duration(step) {
                let _ = self.hists[step.index()].record((d.as_micros() as u64).max(1));
            }
        }
    }
}

/// The report of a run the loop is done with: whatever has not finished is counted as failed
/// at the deadline, then the counters and histograms become the report.
pub(super) fn build(p: &BootParams, mut sim: Sim, ran: Ran) -> BootReport {
    record_unfinished(&mut sim, &ran.configs);
    let (mut ignored, mut malformed) = (0, 0);
    for c in sim.clients.iter().flatten() {
        let (i, m) = c.dhcp_ignored_malformed();
        ignored += i;
        malformed += m;
    }

    let t = &mut sim.tally;
    t.completions.sort_by(f64::total_cmp);
    t.failure_times.sort_by(f64::total_cmp);
    let names = ["dhcp", "boot_file", "kernel", "initrd", "total"];
    let quantiles = names
        .iter()
        .zip(&t.hists)
        .filter(|(_, h)| !h.is_empty())
        .map(|(&name, h)| (name, quantile_points(h)))
        .collect();
    if ran.gro_truncated > 0 {
        sim.recv_errors
            .insert("gro-truncated".into(), ran.gro_truncated);
    }
    let user = ran.cpu_user.as_secs_f64();
    let system = ran.cpu_system.as_secs_f64();
    let wall_s = ran.wall.as_secs_f64();
    BootReport {
        clients: p.dhcp.clients,
        ok: t.ok,
        failed: p.dhcp.clients as u64 - t.ok - t.stalled,
        stalled: t.stalled,
        stalled_after: p.stall.map(|(step, _)| step.key()),
        failures: std::mem::take(&mut t.failures),
        retransmits: sim.retransmits,
        phases: Phases {
            dhcp: Latency::of(&t.hists[0]),
            boot_file: Latency::of(&t.hists[1]),
            kernel: Latency::of(&t.hists[2]),
            initrd: Latency::of(&t.hists[3]),
            total: Latency::of(&t.hists[4]),
        },
        last_finished_s: t.last_finished.as_secs_f64(),
        wall_s,
        transports: transports(&p.plan),
        bytes: sim.bytes,
        goodput_mbit_s: sim.bytes as f64 * 8.0 / wall_s.max(1e-9) / 1e6,
        cpu_user_s: user,
        cpu_system_s: system,
        cpu_percent: 100.0 * (user + system) / wall_s.max(1e-9),
        mode: p.dhcp.mode.name(),
        skip_dhcp: p.plan.skip_dhcp,
        arrival: match p.dhcp.arrival {
            Arrival::Storm => "storm".into(),
            Arrival::Ramp(n) => format!("ramp:{n}/s"),
            Arrival::Rate(n) => format!("rate:{n}/s"),
        },
        per_arch: std::mem::take(&mut t.per_arch),
        packets: sim.packets,
        send_errors: sim.send_errors,
        recv_errors: sim.recv_errors,
        dhcp_naks: t.dhcp_naks,
        dhcp_restarts: t.dhcp_restarts,
        dhcp_replies_unknown_client: sim.unknown_client,
        dhcp_replies_ignored: ignored,
        dhcp_replies_malformed: malformed,
        tftp_stray: sim.stray,
        max_open_sockets: sim.max_open,
        http: sim.http,
        fd_limit: sim.fd_limit,
        gro: p.gro,
        server: None,
        curves: Curves {
            completions: std::mem::take(&mut t.completions),
            failures: std::mem::take(&mut t.failure_times),
            quantiles,
        },
    }
}

/// Whatever has not finished by the deadline: a client that started fails in its phase, one
/// that never started (`configs` still holds its identity) as not started.
fn record_unfinished(sim: &mut Sim, configs: &[Option<ClientConfig>]) {
    for (i, cfg) in configs.iter().enumerate() {
        if sim.recorded[i] {
            continue;
        }
        match &sim.clients[i] {
            Some(c) => {
                let cause = format!("deadline-{}", c.step().key());
                sim.tally.record(c, sim.start, Some(cause));
            }
            None => {
                *sim.tally
                    .failures
                    .entry("deadline-not-started".into())
                    .or_default() += 1;
                if let Some(cfg) = cfg {
                    sim.tally
                        .per_arch
                        .entry(cfg.arch.name())
                        .or_default()
                        .clients += 1;
                }
            }
        }
    }
}

/// How each phase the plan runs is fetched ("dhcp", "tftp" or "http").
fn transports(plan: &BootPlan) -> BTreeMap<&'static str, &'static str> {
    let mut transports = BTreeMap::new();
    for step in Step::ALL {
        let runs = match step {
            Step::Dhcp => !plan.skip_dhcp,
            Step::BootFile => !plan.skip_dhcp || plan.boot_file.is_some(),
            Step::Kernel => plan.kernel.is_some(),
            Step::Initrd => plan.initrd.is_some(),
        };
        if runs {
            transports.insert(step.key(), plan.transport(step));
        }
    }
    transports
}

/// (quantile, µs) points from p0 to p99.99 and the max, denser in the tail.
fn quantile_points(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    let mut pts = Vec::new();
    // x = -log10(1 - q): 0 (p0) .. 4 (p99.99), 10 points per decade of nines.
    for k in 0..=40 {
        let q = 1.0 - 10f64.powf(-f64::from(k) / 10.0);
        pts.push((q, h.value_at_quantile(q)));
    }
    pts
}

impl std::fmt::Display for BootReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "boot storm ({}{}, arrival {}): clients {}  ok {}  failed {}",
            self.mode,
            if self.skip_dhcp { ", no DHCP" } else { "" },
            self.arrival,
            self.clients,
            self.ok,
            self.failed
        )?;
        write_outcomes(f, &self.failures, &self.per_arch)?;
        if let Some(phase) = self.stalled_after {
            writeln!(
                f,
                "  stalled on purpose after {phase}: {} (not failures)",
                self.stalled
            )?;
        }
        let via: Vec<String> = self
            .transports
            .iter()
            .map(|(phase, how)| format!("{phase} over {how}"))
            .collect();
        writeln!(f, "  phases: {}", via.join(", "))?;
        writeln!(f, "latency (ms):")?;
        let ms = |us: u64| us as f64 / 1000.0;
        for (name, l) in [
            ("dhcp", &self.phases.dhcp),
            ("boot_file", &self.phases.boot_file),
            ("kernel", &self.phases.kernel),
            ("initrd", &self.phases.initrd),
            ("total", &self.phases.total),
        ] {
            if l.count == 0 {
                continue;
            }
            writeln!(
                f,
                "  {name:<10} n {:>6}  p50 {:>9.1}  p90 {:>9.1}  p99 {:>9.1}  p99.9 {:>9.1}  max {:>9.1}",
                l.count,
                ms(l.p50_us),
                ms(l.p90_us),
                ms(l.p99_us),
                ms(l.p999_us),
                ms(l.max_us)
            )?;
        }
        writeln!(
            f,
            "last client booted at {:.3} s  wall {:.3} s  received {} ({} bytes)  goodput {:.1} Mbit/s",
            self.last_finished_s,
            self.wall_s,
            human_bytes(self.bytes),
            self.bytes,
            self.goodput_mbit_s
        )?;
        writeln!(
            f,
            "retransmits: dhcp {}  tftp {}   packets: dhcp {}/{} tftp {}/{} (sent/received, {:.1} per receive{})  max open sockets {}",
            self.retransmits.dhcp,
            self.retransmits.tftp,
            self.packets.dhcp_sent,
            self.packets.dhcp_received,
            self.packets.tftp_sent,
            self.packets.tftp_received,
            self.packets.tftp_received as f64 / self.packets.tftp_receives.max(1) as f64,
            if self.gro { ", GRO" } else { "" },
            self.max_open_sockets
        )?;
        if self.http.connections > 0 {
            writeln!(
                f,
                "http: {} connections, {} requests, {} open at most",
                self.http.connections, self.http.requests, self.http.max_open
            )?;
        }
        if !self.send_errors.is_empty() || !self.recv_errors.is_empty() {
            writeln!(
                f,
                "send errors {:?}  receive errors {:?}",
                self.send_errors, self.recv_errors
            )?;
        }
        if !self.skip_dhcp {
            writeln!(
                f,
                "dhcp NAKs {}  restarts after a NAK {}",
                self.dhcp_naks, self.dhcp_restarts
            )?;
        }
        if self.dhcp_replies_unknown_client + self.dhcp_replies_malformed + self.tftp_stray > 0 {
            writeln!(
                f,
                "dhcp replies: for no client {}  ignored {}  malformed {}; stray tftp {}",
                self.dhcp_replies_unknown_client,
                self.dhcp_replies_ignored,
                self.dhcp_replies_malformed,
                self.tftp_stray
            )?;
        }
        write!(
            f,
            "simulator CPU: user {:.3} s  system {:.3} s  ({:.1}% of one core over the run)",
            self.cpu_user_s, self.cpu_system_s, self.cpu_percent
        )?;
        if let Some(server) = &self.server {
            write!(f, "\n{server}")?;
        }
        Ok(())
    }
}

pub(crate) fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.0} kB", b / 1e3)
    }
}
