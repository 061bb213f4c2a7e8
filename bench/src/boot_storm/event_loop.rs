//! The loop: clients arrive on the arrival schedule, timers fire, and every socket epoll
//! reports ready is drained, until every client has finished or the deadline has passed.

use std::cmp::Reverse;
use std::io::{self, IsTerminal};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::report::human_bytes;
use super::sim::{Sim, Stage};
use super::{BootParams, TOKEN_DHCP, TOKEN_HTTP, TOKEN_PROXY};
use crate::boot_client::{BootClient, BootPlan, Step};
use crate::dhcp_client::{ClientConfig, Verdict};
use pxe_net::mmsg::{self, RecvBatch};

/// What the report needs from the loop besides its state.
pub(super) struct Ran {
    pub(super) wall: Duration,
    /// The simulator's CPU time over the loop.
    pub(super) cpu_user: Duration,
    pub(super) cpu_system: Duration,
    /// Identities of the clients that never arrived.
    pub(super) configs: Vec<Option<ClientConfig>>,
    /// GRO receives cut short (none without GRO).
    pub(super) gro_truncated: u64,
}

/// The loop's own state beside [`Sim`]: the arrivals and the receive buffers.
struct EventLoop<'p> {
    p: &'p BootParams,
    plan: Arc<BootPlan>,
    /// Each client's identity until it arrives.
    configs: Vec<Option<ClientConfig>>,
    next_arrival: usize,
    start: Instant,
    give_up: Instant,
    inb: RecvBatch,
    gro_in: Option<RecvBatch>,
}

/// Runs the clients of `sim` (each identity in `configs` is taken when its client arrives).
pub(super) fn run(p: &BootParams, sim: &mut Sim, configs: Vec<Option<ClientConfig>>) -> Ran {
    let plan = Arc::new(p.plan.clone());
    let inb = RecvBatch::new();
    let gro_in = if p.gro { Some(RecvBatch::gro()) } else { None };
    let bar = progress_bar(p);

    let cpu0 = pxe_net::cpu_time();
    let start = Instant::now();
    sim.start = start;
    let mut l = EventLoop {
        p,
        plan,
        configs,
        next_arrival: 0,
        start,
        give_up: start + p.dhcp.deadline,
        inb,
        gro_in,
    };
    let mut progress = bar.map(|pb| Progress {
        pb,
        next_tick: start,
        last_bytes: (start, 0),
    });

    while sim.finished < p.dhcp.clients {
        let now = Instant::now();
        if now >= l.give_up {
            break;
        }
        l.arrivals(sim, now);
        fire_timers(sim, now);
        sim.flush_dhcp();
        if sim.finished >= p.dhcp.clients {
            break;
        }

        // Wait for datagrams until the next timer, arrival or progress tick.
        let mut wake = l.next_wake(sim);
        if let Some(pr) = &progress {
            wake = wake.min(pr.next_tick);
        }
        let n = sim
            .epoll
            .wait(wake.saturating_duration_since(Instant::now()));
        for k in 0..n {
            l.ready(sim, k);
        }
        sim.flush_dhcp();

        if let Some(pr) = &mut progress {
            pr.tick(sim);
        }
    }
    let wall = start.elapsed();
    let cpu1 = pxe_net::cpu_time();
    if let Some(pr) = &progress {
        pr.pb.set_position(sim.finished as u64);
        pr.pb.finish();
    }
    Ran {
        wall,
        cpu_user: cpu1.0.saturating_sub(cpu0.0),
        cpu_system: cpu1.1.saturating_sub(cpu0.1),
        configs: l.configs,
        gro_truncated: l.gro_in.as_ref().map_or(0, RecvBatch::truncated),
    }
}

impl EventLoop<'_> {
    /// Starts every client whose arrival time has come.
    fn arrivals(&mut self, sim: &mut Sim, now: Instant) {
        let p = self.p;
        while self.next_arrival < p.dhcp.clients
            && self.start + p.dhcp.arrival.offset(self.next_arrival) <= now
        {
            let i = self.next_arrival;
            self.next_arrival += 1;
            if let Some(cfg) = self.configs[i].take() {
                let mut c = BootClient::new(Arc::clone(&self.plan), cfg.arch, cfg, now);
                if let Some((step, n)) = p.stall
                    && i < n
                {
                    c.stall_after(step);
                }
                sim.clients[i] = Some(c);
                sim.set_stage(
                    i,
                    Stage::In(if p.plan.skip_dhcp {
                        Step::BootFile
                    } else {
                        Step::Dhcp
                    }),
                );
                sim.drive(i, now);
            }
        }
    }

    /// The next timer or arrival, at the latest the deadline.
    fn next_wake(&self, sim: &Sim) -> Instant {
        let mut wake = self.give_up;
        if let Some(&Reverse((at, _))) = sim.timers.peek() {
            wake = wake.min(at);
        }
        if self.next_arrival < self.p.dhcp.clients {
            wake = wake.min(self.start + self.p.dhcp.arrival.offset(self.next_arrival));
        }
        wake
    }

    /// The `k`th ready socket of the last wait: a DHCP socket, a client's HTTP connection or a
    /// client's TFTP socket.
    fn ready(&mut self, sim: &mut Sim, k: usize) {
        let token = sim.epoll.token(k);
        if token == TOKEN_DHCP || token == TOKEN_PROXY {
            self.recv_dhcp(sim, token);
        } else if token & TOKEN_HTTP != 0 {
            let i = (token & !TOKEN_HTTP) as usize;
            if i < self.p.dhcp.clients {
                sim.http_event(i, sim.epoll.events(k));
            }
        } else {
            self.recv_tftp(sim, token as usize);
        }
    }

    /// Drains a DHCP socket (bounded), handing each reply to the client its chaddr names.
    fn recv_dhcp(&mut self, sim: &mut Sim, token: u64) {
        let fd = if token == TOKEN_DHCP {
            sim.dhcp_fd
        } else {
            sim.proxy_fd.unwrap_or(-1)
        };
        for _round in 0..64 {
            if let Err(e) = self.inb.recv(fd) {
                let name = mmsg::errno_name(e.raw_os_error().unwrap_or(0));
                *sim.recv_errors.entry(name).or_default() += 1;
                break;
            }
            let got = self.inb.len();
            let now = Instant::now();
            for j in 0..got {
                let (bytes, _from) = self.inb.datagram(j);
                sim.packets.dhcp_received += 1;
                let Some(i) = self.p.dhcp.client_of(bytes) else {
                    sim.unknown_client += 1;
                    continue;
                };
                let accepted = match sim.clients[i].as_mut() {
                    Some(c) => c.handle_dhcp(now, bytes) == Verdict::Accepted,
                    None => {
                        sim.unknown_client += 1;
                        false
                    }
                };
                if accepted {
                    sim.drive(i, now);
                }
            }
            sim.flush_dhcp();
            if got < mmsg::BATCH {
                break;
            }
        }
    }

    /// Drains client `i`'s TFTP socket (bounded), with GRO if it is on.
    fn recv_tftp(&mut self, sim: &mut Sim, i: usize) {
        // The socket may have been closed by an earlier event of this batch.
        let Some(fd) = sim
            .socks
            .get(i)
            .and_then(|s| s.as_ref())
            .map(|s| s.as_raw_fd())
        else {
            return;
        };
        for _round in 0..8 {
            let got = match &mut self.gro_in {
                Some(g) => g.recv(fd),
                None => self.inb.recv_up_to(fd, 16),
            };
            let got = match got {
                Ok(n) => n,
                Err(e) => {
                    let name = mmsg::errno_name(e.raw_os_error().unwrap_or(0));
                    *sim.recv_errors.entry(name).or_default() += 1;
                    break;
                }
            };
            let now = Instant::now();
            sim.packets.tftp_receives += got as u64;
            if let Some(c) = sim.clients[i].as_mut() {
                for j in 0..got {
                    // A GRO receive holds several datagrams, a plain one exactly one.
                    let (from, glued, single) = match &self.gro_in {
                        Some(g) => {
                            let (segs, from) = g.segments(j);
                            (from, Some(segs), None)
                        }
                        None => {
                            let (bytes, from) = self.inb.datagram(j);
                            (from, None, Some(bytes))
                        }
                    };
                    for bytes in glued.into_iter().flatten().chain(single) {
                        sim.packets.tftp_received += 1;
                        if !c.handle_tftp(now, from, bytes) {
                            sim.stray += 1;
                        }
                    }
                }
            }
            sim.drive(i, now);
            let full = match &self.gro_in {
                Some(_) => mmsg::GRO_BATCH,
                None => 16,
            };
            // Drained, or the transfer ended and its socket is gone.
            if got < full || sim.socks[i].as_ref().map(|s| s.as_raw_fd()) != Some(fd) {
                break;
            }
        }
    }
}

/// Fires the due timers: a client whose deadline has passed handles it; an entry that fired
/// early (its client's deadline moved on) re-arms at the new deadline.
fn fire_timers(sim: &mut Sim, now: Instant) {
    while let Some(&Reverse((at, i))) = sim.timers.peek() {
        if at > now {
            break;
        }
        sim.timers.pop();
        let i = i as usize;
        if sim.armed[i] != Some(at) {
            continue; // stale
        }
        sim.armed[i] = None;
        if let Some(c) = sim.clients[i].as_mut() {
            match c.deadline() {
                // Fired early: the deadline moved on since this entry was pushed.
                Some(dl) if dl > now => {
                    sim.armed[i] = Some(dl);
                    sim.timers.push(Reverse((dl, i as u32)));
                    continue;
                }
                _ => c.handle_timeout(now),
            }
        }
        sim.drive(i, now);
    }
}

/// How often the progress display is updated.
const TICK: Duration = Duration::from_millis(200);

/// The live progress display (stderr, when it is a terminal).
struct Progress {
    pb: indicatif::ProgressBar,
    next_tick: Instant,
    /// When the last tick was, and the bytes received by then.
    last_bytes: (Instant, u64),
}

fn progress_bar(p: &BootParams) -> Option<indicatif::ProgressBar> {
    (p.progress && io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::with_draw_target(
            Some(p.dhcp.clients as u64),
            indicatif::ProgressDrawTarget::stderr_with_hz(5),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:24}] {pos}/{len} finished | {msg}",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb
    })
}

impl Progress {
    /// Clients per stage, the receive rate and the retransmissions, once per tick.
    fn tick(&mut self, sim: &Sim) {
        let now = Instant::now();
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + TICK;
        let c = &sim.stage_counts;
        let secs = now
            .duration_since(self.last_bytes.0)
            .as_secs_f64()
            .max(1e-3);
        let rate = (sim.bytes - self.last_bytes.1) as f64 * 8.0 / secs / 1e6;
        self.last_bytes = (now, sim.bytes);
        self.pb.set_position(sim.finished as u64);
        self.pb.set_message(format!(
            "wait {} dhcp {} boot {} kernel {} initrd {} | ok {} failed {} stalled {} | {} {:.0} Mbit/s | rtx dhcp {} tftp {}",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            c[6],
            c[7],
            human_bytes(sim.bytes),
            rate,
            sim.retransmits.dhcp,
            sim.retransmits.tftp,
        ));
    }
}
