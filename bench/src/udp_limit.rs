//! `pxe-bench udp-limit`: the raw UDP limit of a path, so every TFTP figure can be quoted as a
//! percentage of it.
//!
//! One process. Receiver threads enter `--recv-netns` and bind `--threads` sockets (SO_REUSEPORT
//! set), receiver `i` to port `PORT + i` of `--dest`, sender `i` sending to it, so every flow
//! has a receiver of its own (one shared port spreads flows by a hash of the 4-tuple, which
//! often put two flows on one receiver); each drains
//! its socket with `recvmmsg`, counting datagrams and payload bytes (no UDP_GRO on the socket:
//! the kernel hands every datagram over separately, `--size` bytes each). Sender threads enter
//! `--send-netns` and each sends from its own socket (its own ephemeral source port, so the
//! flows spread over the receivers) `--size`-byte datagrams with `sendmmsg`; with
//! `--gso-segments K > 0` the socket has UDP_SEGMENT = size and every message carries K
//! segments (fewer where K x size would not fit in one 64 KiB UDP datagram), which the kernel
//! splits into `--size`-byte datagrams, the way the TFTP server sends a window.
//!
//! CPU time is per thread (CLOCK_THREAD_CPUTIME_ID). On a veth pair the receive softirq of a
//! datagram usually runs on the sending CPU, inside the sender's system call, so it is counted
//! in the sender's CPU; the receivers' figure is their own `recvmmsg` work.

use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pxe_net::{Errno, Family, RecvBatch, enter_netns, thread_cpu_time};
use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags};
use serde::Serialize;

/// Segments per GSO message that every kernel with UDP_SEGMENT accepts (UDP_MAX_SEGMENTS was 64
/// before Linux 6.9).
const MAX_GSO_SEGMENTS: usize = 64;
/// Largest UDP payload of one GSO message: IP_MAX_MTU (0xFFF0) minus the IPv4 and UDP headers.
const MAX_GSO_BYTES: usize = 0xFFF0 - 20 - 8;
/// Largest plain UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;
/// Messages per `sendmmsg` / `recvmmsg`.
const BATCH: usize = 64;
/// Messages per `sendmmsg` with GSO (each up to 64 KiB: 16 of them is 1 MiB per call).
const GSO_BATCH: usize = 16;
/// Receivers stop this long after the last datagram once the senders are done...
const DRAIN_IDLE: Duration = Duration::from_millis(300);
/// ...and at the latest this long after the senders are done.
const DRAIN_MAX: Duration = Duration::from_secs(3);

/// `pxe-bench udp-limit` arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Network namespace of the senders (/var/run/netns/NAME); omitted: the current one.
    #[arg(long)]
    pub send_netns: Option<String>,
    /// Network namespace of the receivers; omitted: the current one.
    #[arg(long)]
    pub recv_netns: Option<String>,
    /// Receivers' address, IPv4; thread i uses port PORT + i.
    #[arg(long)]
    pub dest: SocketAddrV4,
    /// UDP payload bytes per datagram (a TFTP DATA datagram of blksize 1468 is 1472).
    #[arg(long, default_value_t = 1468, value_parser = clap::value_parser!(u16).range(1..=65507))]
    pub size: u16,
    /// Segments per message with UDP GSO (UDP_SEGMENT = size); 0 = no GSO.
    #[arg(long, default_value_t = 64)]
    pub gso_segments: u16,
    /// Sender threads, and as many receiver threads (one socket each).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
    /// Seconds of sending.
    #[arg(long, default_value_t = 5.0)]
    pub duration_s: f64,
    /// Socket receive buffer per receiver, bytes (set with SO_RCVBUFFORCE when root). A GSO
    /// message lands in the receiver's queue as K datagrams at once: with 4 MiB, 1472-byte
    /// datagrams and K = 44, half of them overflowed it on a veth here.
    #[arg(long, default_value_t = 32 << 20)]
    pub rcvbuf: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How the senders lay out their messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Payload bytes per datagram on the wire.
    pub size: usize,
    /// Datagrams per message (1 = no GSO; UDP_SEGMENT is set only when this is above 1 or GSO
    /// was asked).
    pub segments: usize,
    /// Whether UDP_SEGMENT is used.
    pub gso: bool,
    /// Messages per `sendmmsg`.
    pub batch: usize,
}

impl Layout {
    /// The layout for `size`-byte datagrams and `asked` segments per message (0 = no GSO), with
    /// a note when the ask had to be reduced.
    pub(crate) fn new(size: usize, asked: usize) -> (Layout, Option<String>) {
        if asked == 0 {
            return (
                Layout {
                    size,
                    segments: 1,
                    gso: false,
                    batch: BATCH,
                },
                None,
            );
        }
        let fit = (MAX_GSO_BYTES / size.max(1)).clamp(1, MAX_GSO_SEGMENTS);
        let segments = asked.min(fit);
        let note = (segments < asked).then(|| {
            format!(
                "GSO: {asked} segments of {size} bytes do not fit one UDP message \
                 (at most {MAX_GSO_SEGMENTS} segments and {MAX_GSO_BYTES} bytes): {segments} per message"
            )
        });
        (
            Layout {
                size,
                segments,
                gso: true,
                batch: GSO_BATCH,
            },
            note,
        )
    }

    /// Without GSO (the fallback when the kernel refuses UDP_SEGMENT).
    pub(crate) fn without_gso(self) -> Layout {
        Layout::new(self.size, 0).0
    }

    /// Bytes of one message.
    pub(crate) fn message_bytes(&self) -> usize {
        self.size * self.segments
    }

    /// Datagrams on the wire when `bytes` of messages were accepted by the kernel: GSO splits a
    /// message into ceil(bytes / size) datagrams.
    pub(crate) fn datagrams_of(&self, message_bytes: usize) -> u64 {
        message_bytes.div_ceil(self.size.max(1)) as u64
    }
}

/// Counters of one thread.
#[derive(Debug, Default, Clone, Copy)]
struct ThreadCount {
    datagrams: u64,
    bytes: u64,
    cpu: Duration,
    /// When this thread saw its last datagram (receivers) or stopped sending (senders).
    last: Option<Instant>,
}

#[derive(Debug, Serialize, Clone, PartialEq)]
pub(crate) struct Report {
    pub size: usize,
    /// Segments per message actually used (0 = no GSO).
    pub gso_segments: usize,
    pub gso_segments_asked: usize,
    pub threads: usize,
    /// Seconds from the start until the last datagram was received (the senders' time if none).
    pub seconds: f64,
    pub send_seconds: f64,
    pub sent_datagrams: u64,
    pub received_datagrams: u64,
    pub loss_percent: f64,
    /// UDP payload bits received per second, in millions.
    pub received_mbit_s: f64,
    pub received_pps: f64,
    pub sent_mbit_s: f64,
    /// CPU of all sender (receiver) threads in percent of one core.
    pub sender_cpu_percent: f64,
    pub receiver_cpu_percent: f64,
    /// Datagrams each receiver got (how SO_REUSEPORT spread the flows).
    pub received_per_thread: Vec<u64>,
    pub send_errors: u64,
    pub notes: Vec<String>,
}

/// Rates from the counts. `seconds` is the receive window, `send_seconds` the send window.
#[allow(clippy::too_many_arguments)]
pub(crate) fn report(
    layout: Layout,
    asked: usize,
    threads: usize,
    sent: u64,
    received_per_thread: Vec<u64>,
    received_bytes: u64,
    send_seconds: f64,
    seconds: f64,
    sender_cpu: Duration,
    receiver_cpu: Duration,
    send_errors: u64,
    notes: Vec<String>,
) -> Report {
    let received: u64 = received_per_thread.iter().sum();
    let secs = seconds.max(1e-9);
    let ssecs = send_seconds.max(1e-9);
    Report {
        size: layout.size,
        gso_segments: if layout.gso { layout.segments } else { 0 },
        gso_segments_asked: asked,
        threads,
        seconds,
        send_seconds,
        sent_datagrams: sent,
        received_datagrams: received,
        loss_percent: if sent == 0 {
            0.0
        } else {
            100.0 * sent.saturating_sub(received) as f64 / sent as f64
        },
        received_mbit_s: received_bytes as f64 * 8.0 / secs / 1e6,
        received_pps: received as f64 / secs,
        sent_mbit_s: sent as f64 * layout.size as f64 * 8.0 / ssecs / 1e6,
        sender_cpu_percent: 100.0 * sender_cpu.as_secs_f64() / ssecs,
        receiver_cpu_percent: 100.0 * receiver_cpu.as_secs_f64() / secs,
        received_per_thread,
        send_errors,
        notes,
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gso = if self.gso_segments > 0 {
            format!("GSO {} segments/message", self.gso_segments)
        } else {
            "no GSO".to_string()
        };
        writeln!(
            f,
            "udp-limit: {}-byte datagrams, {gso}, {} sender + {} receiver threads",
            self.size, self.threads, self.threads
        )?;
        writeln!(
            f,
            "sent {} datagrams in {:.2} s ({:.0} Mbit/s), received {} in {:.2} s (per receiver {:?}), \
             loss {:.2}%",
            self.sent_datagrams,
            self.send_seconds,
            self.sent_mbit_s,
            self.received_datagrams,
            self.seconds,
            self.received_per_thread,
            self.loss_percent
        )?;
        writeln!(
            f,
            "received: {:.0} Mbit/s of UDP payload, {:.0} datagrams/s",
            self.received_mbit_s, self.received_pps
        )?;
        write!(
            f,
            "CPU (percent of one core): senders {:.0}%, receivers {:.0}%  send errors {}",
            self.sender_cpu_percent, self.receiver_cpu_percent, self.send_errors
        )?;
        for n in &self.notes {
            write!(f, "\nnote: {n}")?;
        }
        Ok(())
    }
}

/// Thread `i` (sender and receiver alike) uses port `dest + i`: each flow has its own
/// receiver. (SO_REUSEPORT on one port spreads flows by a hash of the 4-tuple, which put both
/// flows of a 2-thread run on one receiver about half the time.)
fn thread_dest(dest: SocketAddrV4, i: usize) -> SocketAddrV4 {
    SocketAddrV4::new(*dest.ip(), dest.port().wrapping_add(i as u16))
}

fn receiver_socket(dest: SocketAddrV4, rcvbuf: usize) -> io::Result<UdpSocket> {
    let s = pxe_net::udp(Family::V4)?;
    pxe_net::set_reuse_port(&s, true)?;
    pxe_net::force_recv_buffer(&s, rcvbuf)?;
    // Wake up now and then to see the stop flag.
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    pxe_net::bind(&s, dest).map_err(|e| io::Error::new(e.kind(), format!("bind {dest}: {e}")))?;
    Ok(s)
}

fn sender_socket(dest: SocketAddrV4) -> io::Result<UdpSocket> {
    let s = pxe_net::udp(Family::V4)?;
    pxe_net::force_send_buffer(&s, 4 << 20)?;
    // Its own ephemeral port; connected, so sendmmsg needs no address and the route is cached.
    pxe_net::bind(&s, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
    s.connect(dest)
        .map_err(|e| io::Error::new(e.kind(), format!("connect {dest}: {e}")))?;
    Ok(s)
}

/// The receive loop: until `stop` is set and the socket has been idle for [`DRAIN_IDLE`], or
/// [`DRAIN_MAX`] after `stop`.
fn receive(fd: RawFd, size: usize, stop: &AtomicBool) -> ThreadCount {
    // One buffer per message, a little larger than the datagrams (a longer one would show as
    // truncated rather than overflow).
    let slot = (size + 64).min(MAX_DATAGRAM + 1);
    let mut batch = RecvBatch::with_capacity(BATCH, slot);
    let mut c = ThreadCount::default();
    let cpu0 = thread_cpu_time();
    let mut stopped_at: Option<Instant> = None;
    let mut last_seen = Instant::now();
    loop {
        // MSG_WAITFORONE: block (SO_RCVTIMEO) for the first datagram only.
        let n = batch.recv_wait_for_one(fd).unwrap_or(0);
        let now = Instant::now();
        if n > 0 {
            c.datagrams += n as u64;
            c.bytes += (0..n).map(|i| batch.data(i).len() as u64).sum::<u64>();
            c.last = Some(now);
            last_seen = now;
        }
        if stop.load(Ordering::Relaxed) {
            let at = *stopped_at.get_or_insert(now);
            if now.duration_since(last_seen) >= DRAIN_IDLE || now.duration_since(at) >= DRAIN_MAX {
                break;
            }
        }
    }
    c.cpu = thread_cpu_time().saturating_sub(cpu0);
    c
}

/// The send loop, until `end`. Returns the counts and the errors (EIO/EINVAL on the first
/// GSO send mean the kernel refuses UDP_SEGMENT on this path: `Err` then, nothing counted).
fn send(sock: &UdpSocket, layout: Layout, end: Instant) -> Result<(ThreadCount, u64), io::Error> {
    let msg = layout.message_bytes();
    // A TFTP DATA look-alike: opcode 3, block 1, then filler; every segment the same.
    let mut buf = vec![0x5au8; msg];
    for seg in buf.chunks_mut(layout.size) {
        let n = seg.len().min(4);
        seg[..n].copy_from_slice(&[0, 3, 0, 1][..n]);
    }
    // Every message sends the same buffer; the socket is connected, so no address.
    let iov = [IoSlice::new(&buf)];
    let mut no_control: Vec<SendAncillaryBuffer<'_, '_, '_>> = (0..layout.batch)
        .map(|_| SendAncillaryBuffer::default())
        .collect();
    let mut msgs: Vec<MMsgHdr<'_>> = no_control
        .iter_mut()
        .map(|control| MMsgHdr::new(&iov, control))
        .collect();
    let mut c = ThreadCount::default();
    let mut errors = 0u64;
    let cpu0 = thread_cpu_time();
    let mut first = true;
    while Instant::now() < end {
        let e = match rustix::net::sendmmsg(sock, &mut msgs, SendFlags::empty()) {
            Ok(n) if n > 0 => {
                let sent = &msgs[..n];
                c.bytes += sent.iter().map(|m| m.bytes_sent() as u64).sum::<u64>();
                c.datagrams += sent
                    .iter()
                    .map(|m| layout.datagrams_of(m.bytes_sent()))
                    .sum::<u64>();
                first = false;
                continue;
            }
            // Nothing taken (not seen on Linux): as if the send buffer were full.
            Ok(_) => Errno::AGAIN,
            Err(e) => e,
        };
        match e {
            Errno::IO | Errno::INVAL | Errno::MSGSIZE if first && layout.gso => {
                return Err(e.into());
            }
            Errno::INTR => {}
            Errno::NOBUFS | Errno::AGAIN => {
                errors += 1;
                std::thread::yield_now();
            }
            _ => {
                // Anything else (ECONNREFUSED from an ICMP error, ...): count and go on; the
                // loop is bounded by `end`.
                errors += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    c.last = Some(Instant::now());
    c.cpu = thread_cpu_time().saturating_sub(cpu0);
    Ok((c, errors))
}

/// Runs the measurement.
pub(crate) fn run(a: &Args) -> anyhow::Result<Report> {
    let threads = usize::from(a.threads.max(1));
    let size = usize::from(a.size);
    if size == 0 || size > MAX_DATAGRAM {
        bail!("--size must be 1..={MAX_DATAGRAM}");
    }
    if !(a.duration_s > 0.0 && a.duration_s <= 3600.0) {
        bail!("--duration-s must be in (0, 3600]");
    }
    if usize::from(a.dest.port()) + threads > 65_536 || a.dest.port() == 0 {
        bail!("--dest port: PORT..PORT+threads-1 must be valid ports");
    }
    let asked = usize::from(a.gso_segments);
    let (mut layout, note) = Layout::new(size, asked);
    let mut notes: Vec<String> = note.into_iter().collect();
    let duration = Duration::from_secs_f64(a.duration_s);

    // Receivers first: bound (in their namespace) before anything is sent.
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(Barrier::new(threads + 1));
    let setup_failed = Arc::new(std::sync::Mutex::new(None::<String>));
    let mut receivers = Vec::with_capacity(threads);
    for i in 0..threads {
        let (ns, dest, rcvbuf) = (a.recv_netns.clone(), thread_dest(a.dest, i), a.rcvbuf);
        let (stop, ready, failed) = (stop.clone(), ready.clone(), setup_failed.clone());
        receivers.push(std::thread::spawn(move || -> io::Result<ThreadCount> {
            let sock = ns
                .as_deref()
                .map_or(Ok(()), enter_netns)
                .and_then(|()| receiver_socket(dest, rcvbuf));
            if let Err(e) = &sock
                && let Ok(mut f) = failed.lock()
            {
                f.get_or_insert_with(|| e.to_string());
            }
            ready.wait();
            let sock = sock?;
            Ok(receive(sock.as_raw_fd(), size, &stop))
        }));
    }
    ready.wait();
    let stop_receivers = |stop: &AtomicBool, receivers: Vec<std::thread::JoinHandle<_>>| {
        stop.store(true, Ordering::Relaxed);
        receivers
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("panicked")))
            })
            .collect::<Vec<io::Result<ThreadCount>>>()
    };

    let failed = setup_failed.lock().ok().and_then(|f| f.clone());
    if let Some(e) = failed {
        let _ = stop_receivers(&stop, receivers);
        bail!("receiver sockets: {e}");
    }

    // Senders: sockets made in their namespace; UDP_SEGMENT tried on the first one.
    let sockets: Vec<UdpSocket>;
    {
        let (ns, dest) = (a.send_netns.clone(), a.dest);
        let want_gso = layout.gso;
        let made =
            std::thread::spawn(move || -> io::Result<(Vec<UdpSocket>, Option<io::Error>)> {
                if let Some(ns) = &ns {
                    enter_netns(ns)?;
                }
                let mut v = Vec::with_capacity(threads);
                let mut gso_err = None;
                for i in 0..threads {
                    let s = sender_socket(thread_dest(dest, i))?;
                    if want_gso
                        && gso_err.is_none()
                        && let Err(e) = pxe_net::set_udp_segment(&s, size as u16)
                    {
                        gso_err = Some(e);
                    }
                    v.push(s);
                }
                Ok((v, gso_err))
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("panicked")));
        match made {
            Ok((v, gso_err)) => {
                if let Some(e) = gso_err {
                    notes.push(format!(
                        "the kernel refused UDP_SEGMENT ({e}): measured without GSO"
                    ));
                    layout = layout.without_gso();
                }
                sockets = v;
            }
            Err(e) => {
                let _ = stop_receivers(&stop, receivers);
                return Err(e).context("sender sockets");
            }
        }
    }
    // Sockets keep the namespace they were created in, whichever thread uses them.
    let mut start = Instant::now();
    let mut sent_results = run_senders(&sockets, layout, start + duration);
    if layout.gso && sent_results.iter().any(|r| r.is_err()) {
        // EIO/EINVAL at the first GSO send: the device path cannot segment. Again without.
        let e = sent_results
            .iter()
            .find_map(|r| r.as_ref().err())
            .map(|e| e.to_string());
        notes.push(format!(
            "GSO sends failed ({}): measured without GSO",
            e.unwrap_or_default()
        ));
        layout = layout.without_gso();
        for s in &sockets {
            let _ = pxe_net::set_udp_segment(s, 0);
        }
        // A sender fails only on its first send, so (almost) nothing was sent: restart the
        // clock.
        start = Instant::now();
        sent_results = run_senders(&sockets, layout, start + duration);
    }
    let mut sent = 0u64;
    let mut send_errors = 0u64;
    let mut sender_cpu = Duration::ZERO;
    let mut send_end = start;
    let mut send_error = None;
    for r in sent_results {
        match r {
            Ok((c, e)) => {
                sent += c.datagrams;
                send_errors += e;
                sender_cpu += c.cpu;
                send_end = send_end.max(c.last.unwrap_or(start));
            }
            Err(e) => send_error = Some(e),
        }
    }
    let results = stop_receivers(&stop, receivers);
    if let Some(e) = send_error {
        return Err(e).context("sending");
    }
    let mut per_thread = Vec::with_capacity(threads);
    let mut bytes = 0u64;
    let mut receiver_cpu = Duration::ZERO;
    let mut last = None::<Instant>;
    for r in results {
        let c = r.context("receiver")?;
        per_thread.push(c.datagrams);
        bytes += c.bytes;
        receiver_cpu += c.cpu;
        last = last.max(c.last);
    }
    let send_seconds = send_end.duration_since(start).as_secs_f64();
    let seconds = last
        .map(|l| l.duration_since(start).as_secs_f64())
        .unwrap_or(send_seconds)
        .max(send_seconds.min(1e-3));
    Ok(report(
        layout,
        asked,
        threads,
        sent,
        per_thread,
        bytes,
        send_seconds,
        seconds,
        sender_cpu,
        receiver_cpu,
        send_errors,
        notes,
    ))
}

fn run_senders(
    sockets: &[UdpSocket],
    layout: Layout,
    end: Instant,
) -> Vec<io::Result<(ThreadCount, u64)>> {
    std::thread::scope(|s| {
        let hs: Vec<_> = sockets
            .iter()
            .map(|sock| s.spawn(move || send(sock, layout, end)))
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("panicked")))
            })
            .collect()
    })
}

/// The subcommand: runs and prints.
pub(crate) fn main(a: &Args) -> anyhow::Result<()> {
    let r = run(a)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("{r}");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
