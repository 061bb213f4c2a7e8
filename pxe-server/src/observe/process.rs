//! The `process_*` facts every Prometheus exporter gives, read from `/proc/self` at scrape
//! time (files the service account may read after the privilege drop, with calls the seccomp
//! allow-list has: openat, read, getdents64, close).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType::{Counter, Gauge};

use super::families::single;

/// Linux reports process times in USER_HZ ticks, 100 per second on every architecture's ABI.
const TICKS_PER_SEC: f64 = 100.0;

/// What `/proc/self` says about the process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessFacts {
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub open_fds: u64,
    /// The soft `RLIMIT_NOFILE`.
    pub max_fds: u64,
    /// Seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

impl ProcessFacts {
    /// Reads them now; a file that cannot be read or parsed leaves its facts out (`None`).
    pub fn read() -> Option<ProcessFacts> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        ProcessFacts::parse(&stat, &status, &limits, &boot, open_fds)
    }

    /// From the texts of `/proc/self/stat`, `/proc/self/status`, `/proc/self/limits` and
    /// `/proc/stat`.
    pub fn parse(
        stat: &str,
        status: &str,
        limits: &str,
        boot: &str,
        open_fds: u64,
    ) -> Option<ProcessFacts> {
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        // After it, field 3 (state) is index 0: utime (14) is 11, stime 12, starttime (22) 19.
        let fields: Vec<&str> = stat
            .get(stat.rfind(')')? + 1..)?
            .split_whitespace()
            .collect();
        let tick = |i: usize| fields.get(i)?.parse::<u64>().ok();
        let cpu_ticks = tick(11)? + tick(12)?;
        let start_ticks = tick(19)?;
        let rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()?;
        let max_fds = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))?
            .split_whitespace()
            .next()?;
        let max_fds = if max_fds == "unlimited" {
            u64::MAX
        } else {
            max_fds.parse().ok()?
        };
        let btime: u64 = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        Some(ProcessFacts {
            cpu_seconds: cpu_ticks as f64 / TICKS_PER_SEC,
            resident_bytes: rss_kib * 1024,
            open_fds,
            max_fds,
            start_time_seconds: btime as f64 + start_ticks as f64 / TICKS_PER_SEC,
        })
    }
}

/// The `process_*` families.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let Some(p) = ProcessFacts::read() else {
            tracing::warn!("/metrics: /proc/self not readable, process facts left out");
            return Ok(());
        };
        let e = &mut e;
        single(
            e,
            "process_cpu_seconds",
            "User and system CPU time spent.",
            Counter,
            p.cpu_seconds,
        )?;
        single(
            e,
            "process_resident_memory_bytes",
            "Resident memory size.",
            Gauge,
            p.resident_bytes,
        )?;
        single(
            e,
            "process_open_fds",
            "Open file descriptors.",
            Gauge,
            p.open_fds,
        )?;
        single(
            e,
            "process_max_fds",
            "Most file descriptors the process may open (soft RLIMIT_NOFILE).",
            Gauge,
            p.max_fds,
        )?;
        single(
            e,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch.",
            Gauge,
            p.start_time_seconds,
        )
    }
}
