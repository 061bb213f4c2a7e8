//! The server's own view of a boot storm (`pxe-bench boot --metrics-url`): its Prometheus
//! endpoint is scraped once per interval from a thread of its own while the storm runs, and
//! the report puts what it said (CPU, memory, active sessions, refusals, bytes sent) beside
//! what the clients saw, on the same time axis.
//!
//! - [`text`]: the text exposition format, line by line;
//! - [`Snapshot`]: the metrics this report reads, out of one scrape;
//! - [`Scraper`]: the thread; one scrape before the storm (the baseline), one per interval,
//!   one after it. A scrape that fails (refused, timed out, not 200, unreadable) is counted
//!   by cause and the run goes on;
//! - [`ServerView`]: the scrapes turned into totals over the run and a time series.
//!
//! The metric names are those pxe-server exports (README, "Metrics").

#[cfg(test)]
mod tests;
mod text;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::http_client::{Event, HttpBase, ResponseParser};

/// A scrape's body longer than this is refused (a server exports a few hundred lines).
const MAX_BODY: usize = 16 << 20;

/// Families summed by their `cause` label into the refusals: (family, service).
const REFUSALS: [(&str, &str); 3] = [
    ("pxe_tftp_refused_total", "tftp"),
    ("pxe_http_refused_total", "http"),
    ("pxe_dhcp_dropped_total", "dhcp"),
];

/// What one scrape said, of the metrics this report reads (None: not in the scrape). Every
/// sample of a family is summed (over labels this report does not split by).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Snapshot {
    pub cpu_seconds: Option<f64>,
    pub rss_bytes: Option<f64>,
    pub open_fds: Option<f64>,
    pub tftp_sessions: Option<f64>,
    pub http_connections: Option<f64>,
    pub tftp_sent_bytes: Option<f64>,
    pub http_sent_bytes: Option<f64>,
    /// (service, cause) → refusals so far.
    pub refused: BTreeMap<(&'static str, String), f64>,
    /// Lines that were neither a sample nor a comment (skipped).
    pub bad_lines: u64,
}

impl Snapshot {
    pub(crate) fn parse(body: &str) -> Snapshot {
        let mut s = Snapshot::default();
        for line in body.lines() {
            let sample = match text::parse_line(line) {
                Ok(Some(sample)) => sample,
                Ok(None) => continue,
                Err(_) => {
                    s.bad_lines += 1;
                    continue;
                }
            };
            let slot = match sample.name {
                "process_cpu_seconds_total" => &mut s.cpu_seconds,
                "process_resident_memory_bytes" => &mut s.rss_bytes,
                "process_open_fds" => &mut s.open_fds,
                "pxe_tftp_sessions" => &mut s.tftp_sessions,
                "pxe_http_connections" => &mut s.http_connections,
                "pxe_tftp_sent_bytes_total" => &mut s.tftp_sent_bytes,
                "pxe_http_sent_bytes_total" => &mut s.http_sent_bytes,
                name => {
                    if let Some(&(_, service)) = REFUSALS.iter().find(|(f, _)| *f == name) {
                        let cause = sample.label("cause").unwrap_or("").to_owned();
                        *s.refused.entry((service, cause)).or_default() += sample.value;
                    }
                    continue;
                }
            };
            *slot = Some(slot.unwrap_or(0.0) + sample.value);
        }
        s
    }
}

/// Where to scrape: `http://A.B.C.D[:PORT]/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub server: SocketAddrV4,
    host: String,
    path: String,
    /// As given, for the report.
    pub url: String,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, String> {
        let base = HttpBase::parse(url)?;
        let rest = &url["http://".len()..];
        let path = rest.find('/').map_or("/", |k| &rest[k..]);
        Ok(Target {
            server: base.server,
            host: base.host(),
            path: path.to_owned(),
            url: url.to_owned(),
        })
    }
}

/// One GET of the target within `timeout`: the body of a 200 answer, else the failure's
/// short cause (`connect-refused`, `timeout`, `status-503`, ...).
pub(crate) fn fetch(t: &Target, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let io_cause = |e: io::Error| match e.kind() {
        io::ErrorKind::ConnectionRefused => "connect-refused".to_owned(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timeout".to_owned(),
        io::ErrorKind::ConnectionReset => "reset".to_owned(),
        k => format!("io-{k}").replace(' ', "-"),
    };
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| "timeout".to_owned())
    };
    let mut s = TcpStream::connect_timeout(&SocketAddr::V4(t.server), left()?).map_err(io_cause)?;
    s.set_write_timeout(Some(left()?)).map_err(io_cause)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/plain;version=0.0.4\r\n\
         User-Agent: pxe-bench\r\nConnection: close\r\n\r\n",
        t.path, t.host
    );
    s.write_all(request.as_bytes()).map_err(io_cause)?;
    let mut parser = ResponseParser::new();
    let mut body = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        s.set_read_timeout(Some(left()?)).map_err(io_cause)?;
        let n = match s.read(&mut buf) {
            Ok(0) => {
                parser.eof().map_err(|f| f.cause())?;
                break;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_cause(e)),
        };
        let mut input = &buf[..n];
        let mut done = false;
        while !input.is_empty() && !done {
            let (used, event) = parser.advance(input).map_err(|f| f.cause())?;
            input = &input[used..];
            match event {
                Some(Event::Head(200)) | None => {}
                Some(Event::Head(status)) => return Err(format!("status-{status}")),
                Some(Event::Body(b)) => {
                    if body.len() + b.len() > MAX_BODY {
                        return Err("too-large".into());
                    }
                    body.extend_from_slice(b);
                }
                Some(Event::Done) => done = true,
            }
        }
        if done {
            break;
        }
    }
    String::from_utf8(body).map_err(|_| "not-utf8".into())
}

/// What the scraper thread collected.
#[derive(Debug, Default)]
pub(crate) struct Scrapes {
    /// Every successful scrape, with when it was answered.
    pub points: Vec<(Instant, Snapshot)>,
    /// Failed scrapes by cause.
    pub failures: BTreeMap<String, u64>,
}

impl Scrapes {
    fn scrape(&mut self, t: &Target, timeout: Duration) {
        match fetch(t, timeout) {
            Ok(body) => self.points.push((Instant::now(), Snapshot::parse(&body))),
            Err(cause) => *self.failures.entry(cause).or_default() += 1,
        }
    }
}

/// The thread scraping the target every interval until [`Scraper::finish`].
pub(crate) struct Scraper {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<Scrapes>,
}

impl Scraper {
    /// Scrapes once (the baseline, before it returns), then every `interval` on a thread of
    /// its own; each scrape may take at most the interval.
    pub(crate) fn start(target: Target, interval: Duration) -> io::Result<Scraper> {
        let interval = interval.max(Duration::from_millis(10));
        let mut scrapes = Scrapes::default();
        scrapes.scrape(&target, interval);
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("metrics-scrape".into())
            .spawn(move || {
                let mut next = Instant::now() + interval;
                loop {
                    let wait = next.saturating_duration_since(Instant::now());
                    match stopped.recv_timeout(wait) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                    scrapes.scrape(&target, interval);
                    // A slow scrape skips the ticks it overran rather than bunching them.
                    next = (next + interval).max(Instant::now());
                }
                // The final state, after the storm.
                scrapes.scrape(&target, interval);
                scrapes
            })?;
        Ok(Scraper { stop, thread })
    }

    /// Stops the thread after one last scrape; what it collected.
    pub(crate) fn finish(self) -> Scrapes {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or_default()
    }
}

/// One scrape on the run's time axis, beside the clients' count at that moment.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct ServerPoint {
    /// Seconds since the storm started (0 for the baseline taken just before).
    pub t_s: f64,
    /// Clients booted and failed by then (the client view).
    pub clients_ok: u64,
    pub clients_failed: u64,
    /// Server CPU since the previous scrape (100 = one core busy).
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub tftp_sessions: Option<u64>,
    pub http_connections: Option<u64>,
    /// Since the baseline.
    pub tftp_sent_bytes: Option<u64>,
    pub http_sent_bytes: Option<u64>,
    /// Refusals of every service and cause since the baseline.
    pub refusals: u64,
}

/// The server's view of the run, from its metrics.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct ServerView {
    pub url: String,
    /// Successful scrapes (the first is the baseline every delta starts from).
    pub scrapes: u64,
    /// Failed scrapes by cause.
    pub scrape_failures: BTreeMap<String, u64>,
    /// Lines of the scrapes that were not understood (skipped).
    pub skipped_lines: u64,
    /// CPU seconds the server used between the first and the last scrape.
    pub cpu_seconds: Option<f64>,
    /// That over the time between them (100 = one core busy), and the highest interval's.
    pub cpu_percent_mean: Option<f64>,
    pub cpu_percent_max: Option<f64>,
    pub rss_max_bytes: Option<u64>,
    pub open_fds_max: Option<u64>,
    pub tftp_sessions_max: Option<u64>,
    pub http_connections_max: Option<u64>,
    pub tftp_sent_bytes: Option<u64>,
    pub http_sent_bytes: Option<u64>,
    /// Service ("tftp", "http", "dhcp") → cause → refusals over the run (drops for DHCP).
    pub refusals: BTreeMap<&'static str, BTreeMap<String, u64>>,
    pub series: Vec<ServerPoint>,
}

/// Counter growth from `a` to `b` (consecutive scrapes); a counter that went down was reset
/// (the server restarted) and counts from zero.
fn grew(a: f64, b: f64) -> f64 {
    if b >= a { b - a } else { b }
}

fn count(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

impl ServerView {
    /// The view of `scrapes` on the axis starting at `start`; `ok_at` and `failed_at` are the
    /// sorted seconds at which clients booted and failed.
    pub(crate) fn build(
        url: &str,
        scrapes: Scrapes,
        start: Instant,
        ok_at: &[f64],
        failed_at: &[f64],
    ) -> ServerView {
        let pts = &scrapes.points;
        // Counters summed scrape to scrape from the first one, so that a reset between two
        // scrapes loses only what the server counted before it restarted.
        let mut cpu: Option<f64> = None;
        let mut tftp_sent: Option<f64> = None;
        let mut http_sent: Option<f64> = None;
        let mut refused: BTreeMap<(&'static str, String), f64> = BTreeMap::new();
        let add = |sum: &mut Option<f64>, prev: Option<f64>, now: Option<f64>| {
            if let Some(now) = now {
                *sum = Some(sum.unwrap_or(0.0) + prev.map_or(0.0, |p| grew(p, now)));
            }
        };
        let mut series = Vec::with_capacity(pts.len());
        let mut cpu_max: Option<f64> = None;
        for (k, (at, s)) in pts.iter().enumerate() {
            let t = at.saturating_duration_since(start).as_secs_f64();
            let prev = k.checked_sub(1).map(|j| &pts[j]);
            let mut cpu_percent = None;
            if let Some((at0, s0)) = prev {
                let dt = at.saturating_duration_since(*at0).as_secs_f64();
                if let (Some(a), Some(b)) = (s0.cpu_seconds, s.cpu_seconds) {
                    let used = grew(a, b);
                    cpu = Some(cpu.unwrap_or(0.0) + used);
                    if dt > 0.0 {
                        let c = 100.0 * used / dt;
                        cpu_percent = Some(c);
                        cpu_max = Some(cpu_max.map_or(c, |m| m.max(c)));
                    }
                }
            }
            let p0 = prev.map(|(_, s0)| s0);
            add(
                &mut tftp_sent,
                p0.and_then(|s0| s0.tftp_sent_bytes),
                s.tftp_sent_bytes,
            );
            add(
                &mut http_sent,
                p0.and_then(|s0| s0.http_sent_bytes),
                s.http_sent_bytes,
            );
            for (key, &v) in &s.refused {
                let before = p0.map(|s0| s0.refused.get(key).copied().unwrap_or(0.0));
                *refused.entry(key.clone()).or_default() += before.map_or(0.0, |b| grew(b, v));
            }
            series.push(ServerPoint {
                t_s: t,
                clients_ok: ok_at.partition_point(|&x| x <= t) as u64,
                clients_failed: failed_at.partition_point(|&x| x <= t) as u64,
                cpu_percent,
                rss_bytes: s.rss_bytes.map(count),
                tftp_sessions: s.tftp_sessions.map(count),
                http_connections: s.http_connections.map(count),
                tftp_sent_bytes: s.tftp_sent_bytes.and(tftp_sent).map(count),
                http_sent_bytes: s.http_sent_bytes.and(http_sent).map(count),
                refusals: count(refused.values().sum()),
            });
        }
        let max_of =
            |f: fn(&Snapshot) -> Option<f64>| pts.iter().filter_map(|(_, s)| f(s)).map(count).max();
        let span_s = match (pts.first(), pts.last()) {
            (Some((a, _)), Some((b, _))) => b.saturating_duration_since(*a).as_secs_f64(),
            _ => 0.0,
        };
        let mut by_service: BTreeMap<&'static str, BTreeMap<String, u64>> = BTreeMap::new();
        for ((service, cause), v) in refused {
            by_service
                .entry(service)
                .or_default()
                .insert(cause, count(v));
        }
        ServerView {
            url: url.to_owned(),
            scrapes: pts.len() as u64,
            scrape_failures: scrapes.failures,
            skipped_lines: pts.iter().map(|(_, s)| s.bad_lines).sum(),
            cpu_seconds: cpu,
            cpu_percent_mean: cpu.filter(|_| span_s > 0.0).map(|c| 100.0 * c / span_s),
            cpu_percent_max: cpu_max,
            rss_max_bytes: max_of(|s| s.rss_bytes),
            open_fds_max: max_of(|s| s.open_fds),
            tftp_sessions_max: max_of(|s| s.tftp_sessions),
            http_connections_max: max_of(|s| s.http_connections),
            tftp_sent_bytes: tftp_sent.map(count),
            http_sent_bytes: http_sent.map(count),
            refusals: by_service,
            series,
        }
    }

    /// Refusals of every service and cause over the run.
    pub(crate) fn refusals_total(&self) -> u64 {
        self.refusals.values().flat_map(BTreeMap::values).sum()
    }
}

impl std::fmt::Display for ServerView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        write!(f, "server ({}): {} scrapes", self.url, self.scrapes)?;
        if !self.scrape_failures.is_empty() {
            write!(f, ", failed {:?}", self.scrape_failures)?;
        }
        if self.skipped_lines > 0 {
            write!(f, ", {} lines skipped", self.skipped_lines)?;
        }
        writeln!(f)?;
        if let (Some(cpu), Some(mean)) = (self.cpu_seconds, self.cpu_percent_mean) {
            writeln!(
                f,
                "  server CPU {cpu:.3} s ({mean:.1}% of one core, at most {:.1}% over a scrape interval)",
                self.cpu_percent_max.unwrap_or(0.0)
            )?;
        }
        writeln!(
            f,
            "  RSS at most {}  open files at most {}  TFTP sessions at most {}  HTTP connections at most {}",
            self.rss_max_bytes
                .map_or("-".to_owned(), crate::boot_storm::human_bytes),
            opt(self.open_fds_max),
            opt(self.tftp_sessions_max),
            opt(self.http_connections_max)
        )?;
        writeln!(
            f,
            "  sent: tftp {} bytes  http {} bytes",
            opt(self.tftp_sent_bytes),
            opt(self.http_sent_bytes)
        )?;
        write!(f, "  refusals: {}", self.refusals_total())?;
        for (service, causes) in &self.refusals {
            for (cause, n) in causes.iter().filter(|(_, n)| **n > 0) {
                write!(f, "  {service}/{cause} {n}")?;
            }
        }
        Ok(())
    }
}
