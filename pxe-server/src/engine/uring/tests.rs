//! Loopback tests of the io_uring engine with a small blocking TFTP client.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Hooks, Op, run_with};
use crate::config::TftpConfig;
use crate::engine::{EngineError, EngineParams, Listeners};
use crate::tftp::metrics::{TftpMetrics, TftpSnapshot};
use crate::tftp::service::TftpService;
use pxe_proto::tftp::{self as packet, Mode, Packet, RequestKind, RequestOptions};

/// Deterministic, non-repeating-looking content so a misplaced block is detected.
fn content(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

struct Server {
    addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<(), EngineError>>>,
    metrics: Arc<TftpMetrics>,
    hooks: Hooks,
    _root: tempfile::TempDir,
}

impl Server {
    fn start(files: &[(&str, &[u8])], threads: usize, gso: bool, hooks: Hooks) -> Server {
        Server::start_on([127, 0, 0, 1].into(), files, threads, gso, hooks)
    }

    /// Like `start`, listening on `ip` (the returned `addr` is always a 127.0.0.1 address).
    fn start_on(
        ip: std::net::IpAddr,
        files: &[(&str, &[u8])],
        threads: usize,
        gso: bool,
        hooks: Hooks,
    ) -> Server {
        let root = tempfile::tempdir().unwrap();
        for (name, bytes) in files {
            std::fs::write(root.path().join(name), bytes).unwrap();
        }
        // A free port: bind, read it back, release it (the engine rebinds it at once).
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let listen = SocketAddr::new(ip, port);
        let config = TftpConfig {
            root: root.path().to_path_buf(),
            listen: vec![listen],
            max_sessions: 2000,
            max_sessions_per_client: 1000,
            ..TftpConfig::default()
        };
        let metrics = Arc::new(TftpMetrics::default());
        let service = Arc::new(TftpService::new(&config.settings(), Arc::clone(&metrics)).unwrap());
        let params = EngineParams {
            listen: vec![listen],
            threads,
            gso,
        };
        let shutdown = Arc::new(AtomicBool::new(false));
        let sd = Arc::clone(&shutdown);
        let h = hooks.clone();
        let listeners = Listeners::bind(&params).unwrap();
        let handle = std::thread::spawn(move || run_with(service, &params, listeners, sd, h));
        Server {
            addr,
            shutdown,
            handle: Some(handle),
            metrics,
            hooks,
            _root: root,
        }
    }

    /// Waits (bounded) until `f` holds for the metrics; returns the last snapshot.
    fn wait_metrics(&self, f: impl Fn(&TftpSnapshot) -> bool) -> TftpSnapshot {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let s = self.metrics.snapshot();
            if f(&s) || Instant::now() > end {
                return s;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(mut self) -> Duration {
        self.shutdown.store(true, Ordering::Relaxed);
        let t = Instant::now();
        let r = self.handle.take().unwrap().join().unwrap();
        assert!(r.is_ok(), "engine returned {r:?}");
        t.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Want {
    blksize: Option<u16>,
    windowsize: Option<u16>,
    tsize: bool,
}

/// A blocking RFC 1350/2347/7440 read client. `on_first_data` runs once, after the first DATA
/// from the server's TID, with that TID (for the wrong-TID test).
fn fetch_with(
    server: SocketAddr,
    name: &str,
    want: Want,
    mut on_first_data: impl FnMut(SocketAddr),
) -> Result<Vec<u8>, String> {
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let opts = RequestOptions {
        blksize: want.blksize,
        tsize: want.tsize.then_some(0),
        timeout: None,
        windowsize: want.windowsize,
    };
    let mut rrq = [0u8; 600];
    let n = packet::emit_request(
        RequestKind::Read,
        name.as_bytes(),
        Mode::Octet,
        &opts,
        &mut rrq,
    )
    .ok_or("RRQ does not fit")?;
    let rrq = &rrq[..n];
    let send_ack = |to: SocketAddr, block: u16| {
        let mut b = [0u8; 4];
        let n = packet::emit_ack(block, &mut b);
        let _ = sock.send_to(&b[..n], to);
    };
    sock.send_to(rrq, server).map_err(|e| e.to_string())?;

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tid: Option<SocketAddr> = None;
    let mut blksize = 512usize;
    let mut window = 1usize;
    let mut got: Vec<u8> = Vec::new();
    let mut blocks: u64 = 0; // in-order blocks received
    let mut in_window = 0usize;
    let mut expected_tsize: Option<u64> = None;
    let mut seen_first = false;
    let mut buf = vec![0u8; 70_000];
    while Instant::now() < deadline {
        let (n, src) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                match tid {
                    None => {
                        let _ = sock.send_to(rrq, server);
                    }
                    Some(t) => send_ack(t, blocks as u16),
                }
                in_window = 0;
                continue;
            }
            Err(e) => return Err(format!("recv: {e}")),
        };
        match tid {
            // A refusal (ERROR) comes from the listening port itself; anything else must come
            // from a new TID.
            None if src == server => {
                return match packet::parse(&buf[..n]) {
                    Ok(Packet::Error { code, message }) => Err(format!(
                        "ERROR {code} {} (from the listener)",
                        String::from_utf8_lossy(message)
                    )),
                    _ => Err("a non-ERROR answer came from the listening port".into()),
                };
            }
            None => tid = Some(src),
            Some(t) if t != src => continue,
            Some(_) => {}
        }
        let t = src;
        match packet::parse(&buf[..n]).map_err(|e| format!("bad packet from server: {e}"))? {
            Packet::Oack(o) => {
                if blocks != 0 {
                    continue;
                }
                blksize = usize::from(o.blksize.unwrap_or(512));
                window = usize::from(o.windowsize.unwrap_or(1));
                if want.blksize.is_some() && o.blksize.is_none() {
                    return Err("blksize not acknowledged".into());
                }
                expected_tsize = o.tsize;
                send_ack(t, 0);
            }
            Packet::Data { block, payload } => {
                if !seen_first {
                    seen_first = true;
                    on_first_data(t);
                }
                if block == (blocks + 1) as u16 {
                    got.extend_from_slice(payload);
                    blocks += 1;
                    in_window += 1;
                    if payload.len() < blksize {
                        send_ack(t, block);
                        if let Some(ts) = expected_tsize
                            && ts != got.len() as u64
                        {
                            return Err(format!("tsize {ts} but got {} bytes", got.len()));
                        }
                        return Ok(got);
                    }
                    if in_window >= window {
                        send_ack(t, block);
                        in_window = 0;
                    }
                } else {
                    // Out of order: acknowledge what we have so the window restarts there.
                    send_ack(t, blocks as u16);
                    in_window = 0;
                }
            }
            Packet::Error { code, message } => {
                return Err(format!("ERROR {code} {}", String::from_utf8_lossy(message)));
            }
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    Err(format!("timed out after {} bytes", got.len()))
}

fn fetch(server: SocketAddr, name: &str, want: Want) -> Result<Vec<u8>, String> {
    fetch_with(server, name, want, |_| {})
}

#[test]
fn probe_succeeds_here() {
    // ENVIRONMENT.md: io_uring is enabled on this machine.
    assert_eq!(super::probe(), Ok(()));
}

#[test]
fn user_data_round_trips() {
    for op in [
        Op::ListenerRecv(7),
        Op::SessionRecv {
            idx: u32::MAX,
            generation: 0x00AB_CDEF,
        },
        Op::Send(4095),
        Op::Cancel,
    ] {
        assert_eq!(Op::decode(op.encode()), Some(op));
    }
    assert_eq!(Op::decode(0), None);
}

#[test]
fn exact_bytes_for_edge_sizes_and_rollover() {
    let k1468 = content(3 * 1468, 1);
    let b512 = content(512, 2);
    // 75 000 blocks of 8 bytes: past block 65535 (rollover to 0).
    let roll = content(8 * 75_000 + 3, 3);
    let big = content(8 << 20, 4);
    let files: [(&str, &[u8]); 5] = [
        ("empty", &[]),
        ("b512", &b512),
        ("k1468", &k1468),
        ("roll", &roll),
        ("big", &big),
    ];
    let server = Server::start(&files, 1, true, Hooks::default());
    let plain = Want::default();
    let opt = |b: u16, w: u16| Want {
        blksize: Some(b),
        windowsize: Some(w),
        tsize: true,
    };
    assert_eq!(fetch(server.addr, "empty", plain).unwrap(), b"");
    assert_eq!(fetch(server.addr, "empty", opt(1468, 4)).unwrap(), b"");
    assert_eq!(fetch(server.addr, "b512", plain).unwrap(), b512);
    assert_eq!(fetch(server.addr, "k1468", opt(1468, 1)).unwrap(), k1468);
    assert_eq!(fetch(server.addr, "k1468", opt(1468, 4)).unwrap(), k1468);
    assert_eq!(fetch(server.addr, "roll", opt(8, 64)).unwrap(), roll);
    assert_eq!(fetch(server.addr, "big", opt(1468, 64)).unwrap(), big);
    assert_eq!(fetch(server.addr, "big", opt(512, 16)).unwrap(), big);
    let err = fetch(server.addr, "missing", plain).unwrap_err();
    assert!(err.starts_with("ERROR 1"), "{err}");

    let m = server.wait_metrics(|m| m.sessions_completed == 8);
    assert_eq!(m.sessions_completed, 8, "{m}");
    assert_eq!(m.refused_not_found, 1, "{m}");
    assert_eq!(m.send_errors, 0, "{m}");
    assert!(m.payload_bytes_sent >= 2 * big.len() as u64, "{m}");
    if pxe_net::udp_gso_supported() {
        assert!(
            server.hooks.gso_sends.load(Ordering::Relaxed) > 0,
            "windows of 64 should have gone out as GSO sends"
        );
    }
    assert_eq!(server.hooks.gso_fallbacks.load(Ordering::Relaxed), 0);
    let took = server.stop();
    assert!(took < Duration::from_millis(1500), "shutdown took {took:?}");
}

#[test]
fn gso_off_sends_the_same_bytes() {
    let big = content(3 << 20, 5);
    let server = Server::start(&[("big", &big)], 1, false, Hooks::default());
    let want = Want {
        blksize: Some(1468),
        windowsize: Some(64),
        tsize: false,
    };
    assert_eq!(fetch(server.addr, "big", want).unwrap(), big);
    assert_eq!(server.hooks.gso_sends.load(Ordering::Relaxed), 0);
}

#[test]
fn gso_failure_falls_back_to_single_sends() {
    if !pxe_net::udp_gso_supported() {
        return;
    }
    let big = content(2 << 20, 6);
    // SO_NO_CHECK on the transfer sockets makes the kernel refuse every GSO send (EINVAL).
    let hooks = Hooks {
        no_check_tx: true,
        ..Hooks::default()
    };
    let server = Server::start(&[("big", &big)], 1, true, hooks);
    let want = Want {
        blksize: Some(1468),
        windowsize: Some(32),
        tsize: true,
    };
    assert_eq!(fetch(server.addr, "big", want).unwrap(), big);
    assert_eq!(fetch(server.addr, "big", want).unwrap(), big);
    let fallbacks = server.hooks.gso_fallbacks.load(Ordering::Relaxed);
    let gso_sends = server.hooks.gso_sends.load(Ordering::Relaxed);
    assert!(fallbacks >= 1, "the first GSO send should have failed");
    assert_eq!(
        fallbacks, gso_sends,
        "after the failure GSO stays off (every GSO send failed, none were sent afterwards)"
    );
    let m = server.wait_metrics(|m| m.sessions_completed == 2);
    assert_eq!(m.send_errors, 0, "a GSO fallback is not a send error: {m}");
    assert_eq!(
        m.retransmitted, 0,
        "the failed GSO send is resent at once, not left to the retransmit timer: {m}"
    );
}

#[test]
fn wrong_tid_gets_error_5_and_transfer_completes() {
    let data = content(200 * 512 + 17, 7);
    let server = Server::start(&[("f", &data)], 1, true, Hooks::default());
    let intruder = UdpSocket::bind("127.0.0.1:0").unwrap();
    intruder
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut reply = Vec::new();
    let got = fetch_with(
        server.addr,
        "f",
        Want {
            blksize: None,
            windowsize: Some(4),
            tsize: false,
        },
        |tid| {
            // An ACK from a stranger to the transfer's port.
            intruder.send_to(&[0, 4, 0, 1], tid).unwrap();
            let mut b = [0u8; 600];
            if let Ok((n, from)) = intruder.recv_from(&mut b) {
                assert_eq!(
                    from, tid,
                    "the ERROR must come from the transfer's own port"
                );
                reply = b[..n].to_vec();
            }
        },
    )
    .unwrap();
    assert_eq!(got, data);
    match packet::parse(&reply) {
        Ok(Packet::Error { code, message }) => {
            assert_eq!((code, message), (5, &b"Unknown transfer ID"[..]))
        }
        other => panic!("expected ERROR 5, got {other:?} ({reply:?})"),
    }
    let m = server.wait_metrics(|m| m.sessions_completed == 1);
    assert_eq!((m.unknown_tid, m.sessions_completed), (1, 1), "{m}");
}

#[test]
fn many_simultaneous_transfers_are_exact() {
    const CLIENTS: usize = 200;
    let files: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| {
            (
                format!("img{i}"),
                content(200_000 + i * 1468 + i, 10 + i as u32),
            )
        })
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let server = Server::start(&refs, 2, true, Hooks::default());
    let addr = server.addr;
    let barrier = Arc::new(std::sync::Barrier::new(CLIENTS));
    let failures = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            let (name, expect) = files[i % files.len()].clone();
            let failures = Arc::clone(&failures);
            std::thread::spawn(move || {
                let want = Want {
                    blksize: Some([512, 1468, 1024, 8][i % 4]),
                    windowsize: Some([1, 4, 16, 64][(i / 4) % 4]),
                    tsize: true,
                };
                barrier.wait();
                match fetch(addr, &name, want) {
                    Ok(got) if got == expect => {}
                    Ok(got) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        eprintln!(
                            "client {i}: {} bytes differ from {}",
                            got.len(),
                            expect.len()
                        );
                    }
                    Err(e) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        eprintln!("client {i}: {e}");
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    let m = server.wait_metrics(|m| m.sessions_completed == CLIENTS as u64);
    assert_eq!(m.sessions_completed, CLIENTS as u64, "{m}");
    assert_eq!(m.send_errors, 0, "{m}");
}

#[test]
fn bad_listen_address_fails_run() {
    let metrics = Arc::new(TftpMetrics::default());
    let root = tempfile::tempdir().unwrap();
    let config = TftpConfig {
        root: root.path().to_path_buf(),
        ..TftpConfig::default()
    };
    let service = Arc::new(TftpService::new(&config.settings(), metrics).unwrap());
    // 192.0.2.1 (TEST-NET-1) is not a local address: bind fails with EADDRNOTAVAIL.
    let params = EngineParams {
        listen: vec![([192, 0, 2, 1], 0).into()],
        threads: 1,
        gso: true,
    };
    let r = super::run(service, &params, Arc::new(AtomicBool::new(false)));
    assert!(matches!(r, Err(EngineError::Bind { .. })), "{r:?}");
}

#[test]
fn wildcard_listener_answers_from_the_address_the_request_arrived_on() {
    let data = content(5000, 8);
    let server = Server::start_on(
        [0, 0, 0, 0].into(),
        &[("f", &data)],
        1,
        true,
        Hooks::default(),
    );
    // All of 127/8 is local: a request sent to 127.0.0.2 must be answered from 127.0.0.2.
    let to: SocketAddr = ([127, 0, 0, 2], server.addr.port()).into();
    let mut tid = None;
    let got = fetch_with(to, "f", Want::default(), |t| tid = Some(t)).unwrap();
    assert_eq!(got, data);
    let tid = tid.unwrap();
    assert_eq!(tid.ip(), to.ip(), "transfer answered from {tid}");
    assert_ne!(tid.port(), to.port());
}

/// Not a test: aggregate loopback throughput with and without GSO. Run with
/// `cargo test --release -p pxe-server --lib uring::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    let clients: usize = std::env::var("URING_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let img = content(16 << 20, 42);
    for gso in [true, false] {
        let server = Server::start(&[("img", &img)], 1, gso, Hooks::default());
        let addr = server.addr;
        let cpu0 = thread_cpu_of_process();
        let t = Instant::now();
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let expect_len = img.len();
                std::thread::spawn(move || {
                    let want = Want {
                        blksize: Some(1468),
                        windowsize: Some(64),
                        tsize: false,
                    };
                    let got = fetch(addr, "img", want).unwrap_or_else(|e| panic!("fetch: {e}"));
                    assert_eq!(got.len(), expect_len);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        let cpu = thread_cpu_of_process() - cpu0;
        let engine_cpu = engine_thread_cpu();
        let m = server.metrics.snapshot();
        println!(
            "gso={gso} clients={clients}: {:.0} MB/s aggregate, {:.2} s, process CPU {:.2} s \
             (engine thread {:.2} s), gso_sends={} retransmitted={}",
            (clients * img.len()) as f64 / secs / 1e6,
            secs,
            cpu,
            engine_cpu,
            server.hooks.gso_sends.load(Ordering::Relaxed),
            m.retransmitted
        );
    }
}

fn thread_cpu_of_process() -> f64 {
    let (user, system) = pxe_net::cpu_time();
    (user + system).as_secs_f64()
}

/// CPU seconds of the live `tftp-uring-*` threads of this process (from /proc).
fn engine_thread_cpu() -> f64 {
    let tick = 100.0; // USER_HZ
    let mut total = 0.0;
    for t in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("tftp-uring") {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the ")" of the command: state is #3, utime #14, stime #15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let get = |i: usize| {
            f.get(i - 3)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        total += (get(14) + get(15)) / tick;
    }
    total
}
