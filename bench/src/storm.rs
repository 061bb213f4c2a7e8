//! `pxe-bench tftp-storm`: many simultaneous TFTP clients against one server, all started at
//! once (a power-restore storm), each verifying what it receives.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::net::UdpSocket;

use crate::tftp_client::{ClientOptions, Dest, Failure, TftpClient};

#[derive(Debug, Clone)]
pub(crate) struct StormParams {
    pub server: IpAddr,
    pub port: u16,
    pub file: String,
    pub expected: Option<Arc<[u8]>>,
    pub clients: usize,
    pub options: ClientOptions,
    /// Every client is abandoned after this long.
    pub deadline: Duration,
    /// Local addresses the clients bind to, round-robin (like a cluster: one address per
    /// machine). Empty: the wildcard address.
    pub sources: Vec<IpAddr>,
}

#[derive(Debug, Serialize)]
pub(crate) struct StormReport {
    pub clients: usize,
    pub completed: usize,
    pub failed: usize,
    pub failures: BTreeMap<String, usize>,
    pub wall_seconds: f64,
    pub total_bytes: u64,
    pub goodput_mbit_s: f64,
    pub completion_ms_p50: u64,
    pub completion_ms_p90: u64,
    pub completion_ms_p99: u64,
    pub completion_ms_max: u64,
    pub client_retransmits: u64,
}

struct Shared {
    hist: Histogram<u64>,
    failures: BTreeMap<String, usize>,
    bytes: u64,
    completed: usize,
    retransmits: u64,
}

pub(crate) async fn run(p: StormParams) -> anyhow::Result<StormReport> {
    let shared = Arc::new(Mutex::new(Shared {
        hist: Histogram::new_with_bounds(1, 3_600_000, 3)?,
        failures: BTreeMap::new(),
        bytes: 0,
        completed: 0,
        retransmits: 0,
    }));
    let p = Arc::new(p);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(p.clients);
    for i in 0..p.clients {
        let p = Arc::clone(&p);
        let shared = Arc::clone(&shared);
        tasks.push(tokio::spawn(async move {
            let result = one_client(&p, i, start).await;
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok((bytes, retransmits)) => {
                    let ms = start.elapsed().as_millis().max(1) as u64;
                    let _ = s.hist.record(ms);
                    s.bytes += bytes;
                    s.completed += 1;
                    s.retransmits += retransmits;
                }
                Err((cause, bytes, retransmits)) => {
                    *s.failures.entry(cause).or_default() += 1;
                    s.bytes += bytes;
                    s.retransmits += retransmits;
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let wall = start.elapsed().as_secs_f64();
    let s = shared.lock().unwrap_or_else(|e| e.into_inner());
    Ok(StormReport {
        clients: p.clients,
        completed: s.completed,
        failed: p.clients - s.completed,
        failures: s.failures.clone(),
        wall_seconds: wall,
        total_bytes: s.bytes,
        goodput_mbit_s: s.bytes as f64 * 8.0 / wall / 1e6,
        completion_ms_p50: s.hist.value_at_quantile(0.5),
        completion_ms_p90: s.hist.value_at_quantile(0.9),
        completion_ms_p99: s.hist.value_at_quantile(0.99),
        completion_ms_max: s.hist.max(),
        client_retransmits: s.retransmits,
    })
}

type ClientResult = Result<(u64, u64), (String, u64, u64)>;

async fn one_client(p: &StormParams, index: usize, start: Instant) -> ClientResult {
    let bind: SocketAddr = match (p.sources.is_empty(), p.server) {
        (false, _) => SocketAddr::new(p.sources[index % p.sources.len()], 0),
        (true, IpAddr::V4(_)) => "0.0.0.0:0".parse().expect("literal address"),
        (true, IpAddr::V6(_)) => "[::]:0".parse().expect("literal address"),
    };
    let sock = UdpSocket::bind(bind)
        .await
        .map_err(|e| (format!("socket: {}", e.kind()), 0, 0))?;
    let mut client = TftpClient::new(
        p.file.as_bytes(),
        p.expected.clone(),
        p.options.clone(),
        start,
    );
    let mut out = vec![0u8; 1024];
    let mut inb = vec![0u8; 65536];
    let give_up = tokio::time::Instant::from_std(start + p.deadline);
    loop {
        while let Some((dest, len)) = client.poll_transmit(&mut out) {
            let to = match dest {
                Dest::Listener => SocketAddr::new(p.server, p.port),
                Dest::Transfer(port) => SocketAddr::new(p.server, port),
            };
            if let Err(e) = sock.send_to(&out[..len], to).await {
                return Err((
                    format!("send: {}", e.kind()),
                    client.received_bytes(),
                    client.retransmits,
                ));
            }
        }
        if client.finished() {
            break;
        }
        let Some(deadline) = client.deadline() else {
            break;
        };
        let wake = tokio::time::Instant::from_std(deadline).min(give_up);
        tokio::select! {
            r = sock.recv_from(&mut inb) => match r {
                Ok((n, from)) if from.ip() == p.server => {
                    client.handle_datagram(Instant::now(), from.port(), &inb[..n]);
                }
                Ok(_) => {}
                // ICMP errors (port unreachable) surface here; the client's timer retries.
                Err(_) => {}
            },
            _ = tokio::time::sleep_until(wake) => {
                if tokio::time::Instant::now() >= give_up {
                    return Err(("deadline".into(), client.received_bytes(), client.retransmits));
                }
                client.handle_timeout(Instant::now());
            }
        }
    }
    let (bytes, rt) = (client.received_bytes(), client.retransmits);
    match client.failure() {
        None if client.is_done() => Ok((bytes, rt)),
        None => Err(("unfinished".into(), bytes, rt)),
        Some(Failure::ServerError(code, _)) => Err((format!("server error {code}"), bytes, rt)),
        Some(Failure::TimedOut) => Err(("timed out".into(), bytes, rt)),
        Some(Failure::Corrupt(_)) => Err(("corrupt".into(), bytes, rt)),
        Some(Failure::ShortFile(_)) => Err(("short file".into(), bytes, rt)),
        Some(Failure::Protocol(_)) => Err(("protocol".into(), bytes, rt)),
    }
}

impl std::fmt::Display for StormReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "clients {}  completed {}  failed {}",
            self.clients, self.completed, self.failed
        )?;
        for (cause, n) in &self.failures {
            writeln!(f, "  failure {cause}: {n}")?;
        }
        writeln!(
            f,
            "wall {:.2} s  bytes {}  goodput {:.1} Mbit/s  client retransmits {}",
            self.wall_seconds, self.total_bytes, self.goodput_mbit_s, self.client_retransmits
        )?;
        write!(
            f,
            "completion ms  p50 {}  p90 {}  p99 {}  max {}",
            self.completion_ms_p50,
            self.completion_ms_p90,
            self.completion_ms_p99,
            self.completion_ms_max
        )
    }
}
