//! `pxe-bench dhcp-flood`: DHCPDISCOVERs as fast as the path takes them (or at a set rate), for
//! the XDP filter's benchmark.
//!
//! - `non-pxe`: plain DISCOVERs like dhclient's (no vendor class), from `--macs` different
//!   client MACs in a scrambled cycle;
//! - `same-mac`: one machine's PXE DISCOVERs (option 60 `PXEClient:...`), the case the per-MAC
//!   rate limit is for.
//!
//! The datagram is built once; every send patches the xid (and the chaddr) in place in a batch
//! of prebuilt buffers, sent with `sendmmsg`. No allocation per packet.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::Context;
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, OptionCode};
use pxe_net::UdpOptions;
use pxe_net::mmsg::{BATCH, ErrorCounts, SendBatch};
use serde::Serialize;

use crate::dhcp_client::{Arch, ClientConfig, DhcpClient, Mode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FloodKind {
    NonPxe,
    SameMac,
}

#[derive(Debug, Clone)]
pub(crate) struct FloodParams {
    pub kind: FloodKind,
    /// Distinct MACs cycled over (non-pxe).
    pub macs: u32,
    /// Packets per second over all threads; 0 = as fast as possible.
    pub rate: u64,
    pub duration: Duration,
    pub interface: Option<String>,
    pub dest: Ipv4Addr,
    pub dport: u16,
    pub sport: u16,
    pub threads: usize,
    /// Datagrams per sendmmsg (at most 64).
    pub batch: usize,
    /// The one MAC of `same-mac`.
    pub mac: [u8; 6],
}

#[derive(Debug, Serialize)]
pub(crate) struct FloodReport {
    pub kind: &'static str,
    pub threads: usize,
    pub packet_bytes: usize,
    pub sent: u64,
    pub send_errors: ErrorCounts,
    pub seconds: f64,
    pub pps: f64,
    pub mbit_s: f64,
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
    pub cpu_percent: f64,
}

const XID_AT: usize = 4;
const CHADDR_AT: usize = 28;

/// The datagram a flood repeats.
pub(crate) fn template(kind: FloodKind, mac: [u8; 6]) -> Vec<u8> {
    let mut out = Vec::new();
    match kind {
        FloodKind::SameMac => {
            let mut c = DhcpClient::new(
                ClientConfig {
                    mac,
                    uuid: [0x5a; 16],
                    arch: Arch::Bios,
                    mode: Mode::Full,
                    xid: 1,
                    timeouts: ClientConfig::pxe_timeouts(1.0),
                },
                Instant::now(),
            );
            let _ = c.poll_transmit(Instant::now(), &mut out);
        }
        FloodKind::NonPxe => {
            let u = Ipv4Addr::UNSPECIFIED;
            let mut m = Message::new_with_id(1, u, u, u, u, &mac);
            m.set_flags(Flags::default().set_broadcast());
            let o = m.opts_mut();
            o.insert(DhcpOption::MessageType(MessageType::Discover));
            // dhclient's default request list.
            o.insert(DhcpOption::ParameterRequestList(
                [1u8, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42]
                    .iter()
                    .map(|&c| OptionCode::from(c))
                    .collect(),
            ));
            o.insert(DhcpOption::Hostname("flood".into()));
            let _ = dhcproto::Encodable::encode(&m, &mut dhcproto::Encoder::new(&mut out));
            if out.len() < 300 {
                out.resize(300, 0);
            }
        }
    }
    out
}

/// A scrambled but cycling MAC for packet `k`: a locally administered address whose low 32 bits
/// are an odd multiple of `k mod macs` (a bijection on u32, so `macs` distinct values).
fn flood_mac(thread: u8, k: u64, macs: u32) -> [u8; 6] {
    let i = (k % u64::from(macs.max(1))) as u32;
    let v = i.wrapping_mul(0x9E37_79B1).to_be_bytes();
    [0x02, thread, v[0], v[1], v[2], v[3]]
}

pub(crate) fn run(p: &FloodParams) -> anyhow::Result<FloodReport> {
    let threads = p.threads.max(1);
    let batch = p.batch.clamp(1, BATCH);
    let tpl = template(p.kind, p.mac);
    let mut sockets = Vec::with_capacity(threads);
    for _ in 0..threads {
        sockets.push(
            pxe_net::open_udp(&UdpOptions {
                bind: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, p.sport),
                interface: p.interface.clone(),
                rcvbuf: 4096,
                sndbuf: 4 << 20,
            })
            .with_context(|| format!("flood socket on port {}", p.sport))?,
        );
    }
    let dest = SocketAddrV4::new(p.dest, p.dport);
    let cpu0 = pxe_net::cpu_time();
    let start = Instant::now();
    let results: Vec<(u64, ErrorCounts)> = std::thread::scope(|s| {
        let handles: Vec<_> = sockets
            .iter()
            .enumerate()
            .map(|(t, sock)| {
                let tpl = &tpl;
                s.spawn(move || {
                    flood_thread(
                        p,
                        t as u8,
                        threads,
                        batch,
                        tpl,
                        sock.as_raw_fd(),
                        dest,
                        start,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let cpu1 = pxe_net::cpu_time();
    let mut sent = 0;
    let mut send_errors = ErrorCounts::new();
    for (n, e) in results {
        sent += n;
        for (k, v) in e {
            *send_errors.entry(k).or_default() += v;
        }
    }
    let user = cpu1.0.saturating_sub(cpu0.0).as_secs_f64();
    let system = cpu1.1.saturating_sub(cpu0.1).as_secs_f64();
    Ok(FloodReport {
        kind: match p.kind {
            FloodKind::NonPxe => "non-pxe",
            FloodKind::SameMac => "same-mac",
        },
        threads,
        packet_bytes: tpl.len(),
        sent,
        send_errors,
        seconds: secs,
        pps: sent as f64 / secs.max(1e-9),
        mbit_s: sent as f64 * tpl.len() as f64 * 8.0 / secs.max(1e-9) / 1e6,
        cpu_user_s: user,
        cpu_system_s: system,
        cpu_percent: 100.0 * (user + system) / secs.max(1e-9),
    })
}

#[allow(clippy::too_many_arguments)]
fn flood_thread(
    p: &FloodParams,
    thread: u8,
    threads: usize,
    batch: usize,
    tpl: &[u8],
    fd: std::os::fd::RawFd,
    dest: SocketAddrV4,
    start: Instant,
) -> (u64, ErrorCounts) {
    let mut b = SendBatch::new();
    for i in 0..batch {
        let buf = b.buf_mut(i);
        buf.clear();
        buf.extend_from_slice(tpl);
    }
    let mut errors = ErrorCounts::new();
    let rate = p.rate as f64 / threads as f64;
    let end = start + p.duration;
    let mut k: u64 = 0; // packets built
    let mut sent: u64 = 0;
    let xid_base = (u32::from(thread) << 24) ^ 0x5a5a_0000;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let mut n = batch;
        if rate > 0.0 {
            let due = (rate * (now - start).as_secs_f64()) as u64 + 1;
            let behind = due.saturating_sub(k);
            if behind == 0 {
                let next = start + Duration::from_secs_f64((k as f64) / rate);
                std::thread::sleep(next.saturating_duration_since(now).min(end - now));
                continue;
            }
            n = n.min(behind as usize);
        }
        for i in 0..n {
            let buf = b.buf_mut(i);
            let xid = xid_base.wrapping_add(k as u32);
            buf[XID_AT..XID_AT + 4].copy_from_slice(&xid.to_be_bytes());
            if p.kind == FloodKind::NonPxe {
                buf[CHADDR_AT..CHADDR_AT + 6].copy_from_slice(&flood_mac(thread, k, p.macs));
            }
            k += 1;
        }
        b.fill(n, dest);
        sent += b.flush(fd, &mut errors);
    }
    (sent, errors)
}

impl std::fmt::Display for FloodReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "dhcp-flood ({}): {} threads, {}-byte datagrams",
            self.kind, self.threads, self.packet_bytes
        )?;
        writeln!(
            f,
            "sent {} in {:.2} s: {:.0} pps ({:.1} Mbit/s of UDP payload)  send errors {:?}",
            self.sent, self.seconds, self.pps, self.mbit_s, self.send_errors
        )?;
        write!(
            f,
            "CPU: user {:.2} s  system {:.2} s  ({:.0}% of one core)",
            self.cpu_user_s, self.cpu_system_s, self.cpu_percent
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp_client::decode_reply;

    fn opts(b: &[u8]) -> Message {
        // decode_reply wants a BOOTREPLY-shaped buffer; the header check is the same.
        decode_reply(b).expect("decodes")
    }

    #[test]
    fn templates() {
        let mac = [0x52, 0x54, 0, 1, 2, 3];
        let np = template(FloodKind::NonPxe, mac);
        assert!(np.len() >= 300);
        assert_eq!(&np[CHADDR_AT..CHADDR_AT + 6], &mac);
        assert_eq!(&np[XID_AT..XID_AT + 4], &1u32.to_be_bytes());
        let m = opts(&np);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
        assert!(m.opts().get(OptionCode::ClassIdentifier).is_none());
        let pxe = template(FloodKind::SameMac, mac);
        let m = opts(&pxe);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Discover));
        assert!(matches!(
            m.opts().get(OptionCode::ClassIdentifier),
            Some(DhcpOption::ClassIdentifier(c)) if c.starts_with(b"PXEClient")
        ));
        assert_eq!(&pxe[CHADDR_AT..CHADDR_AT + 6], &mac);
    }

    #[test]
    fn flood_macs_cycle_over_distinct_values() {
        let set: std::collections::HashSet<_> = (0..1000).map(|k| flood_mac(0, k, 100)).collect();
        assert_eq!(set.len(), 100);
        assert_eq!(flood_mac(0, 5, 100), flood_mac(0, 105, 100));
        assert_ne!(flood_mac(0, 5, 100), flood_mac(1, 5, 100));
        assert_eq!(flood_mac(0, 7, 1)[0], 0x02);
    }

    #[test]
    fn paced_flood_on_loopback() {
        // The receiver asks for its own buffer (forced past net.core.rmem_max as root) and
        // reads while the flood runs: nothing depends on the machine's socket-buffer sysctls.
        let rx = pxe_net::open_udp(&pxe_net::UdpOptions {
            bind: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            interface: None,
            rcvbuf: 4 << 20,
            sndbuf: 0,
        })
        .unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let port = rx.local_addr().unwrap().port();
        let sent_all = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let sent_all = sent_all.clone();
            std::thread::spawn(move || {
                let mut lens = Vec::new();
                let mut xids = std::collections::HashSet::new();
                let mut buf = [0u8; 1500];
                let give_up = Instant::now() + Duration::from_secs(10);
                loop {
                    match rx.recv(&mut buf) {
                        Ok(n) => {
                            lens.push(n);
                            xids.insert(u32::from_be_bytes(buf[4..8].try_into().unwrap()));
                        }
                        // Idle for a read timeout after the last send: all arrived.
                        Err(_) if sent_all.load(std::sync::atomic::Ordering::SeqCst) => break,
                        Err(_) if Instant::now() > give_up => break,
                        Err(_) => {}
                    }
                }
                (lens, xids)
            })
        };
        let p = FloodParams {
            kind: FloodKind::NonPxe,
            macs: 10,
            rate: 2000,
            duration: Duration::from_millis(300),
            interface: None,
            dest: Ipv4Addr::LOCALHOST,
            dport: port,
            sport: 0,
            threads: 1,
            batch: 64,
            mac: [2, 0, 0, 0, 0, 1],
        };
        let r = run(&p);
        sent_all.store(true, std::sync::atomic::Ordering::SeqCst);
        let (lens, xids) = reader.join().unwrap();
        let r = r.unwrap();
        // 2000 pps for 0.3 s: about 600 packets, never a burst far beyond the schedule.
        assert!((500..=700).contains(&r.sent), "sent {}", r.sent);
        for n in &lens {
            assert_eq!(*n, r.packet_bytes);
        }
        let got = lens.len() as u64;
        assert_eq!(got, r.sent);
        assert_eq!(xids.len() as u64, r.sent, "every packet has its own xid");
    }
}
