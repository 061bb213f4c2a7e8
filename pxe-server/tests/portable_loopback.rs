//! The portable engine on loopback: real sockets, the real service and sessions, and a small
//! blocking client with its own codec. No root needed.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pxe_server::config::TftpConfig;
use pxe_server::engine::{EngineError, EngineParams, portable};
use pxe_server::tftp::metrics::{TftpMetrics, TftpSnapshot};
use pxe_server::tftp::service::TftpService;
use pxe_testkit::tftp::{FetchError, FetchOptions, encode_rrq, fetch};
use pxe_testkit::{sha256, test_bytes};

struct Running {
    addr: SocketAddr,
    metrics: Arc<TftpMetrics>,
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), EngineError>>>,
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
}

impl Running {
    fn start(threads: usize) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(dir.path().join("secret.txt"), b"not for you\n").unwrap();
        // A free port: bind, read it, release it (the engine binds it again at once).
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let config = TftpConfig {
            root: root.clone(),
            listen: vec![addr],
            timeout_ms: 200,
            ..TftpConfig::default()
        };
        let metrics = Arc::new(TftpMetrics::default());
        let service = Arc::new(TftpService::new(&config.settings(), Arc::clone(&metrics)).unwrap());
        let params = EngineParams {
            listen: vec![addr],
            threads,
            gso: false,
        };
        let shutdown = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&shutdown);
        let thread = std::thread::spawn(move || portable::run(service, &params, stop));
        let running = Running {
            addr,
            metrics,
            shutdown,
            thread: Some(thread),
            _dir: dir,
            root,
        };
        running.wait_ready();
        running
    }

    fn wait_ready(&self) {
        std::fs::write(self.root.join("ready"), b"ok").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let opts = FetchOptions {
            overall: Duration::from_secs(2),
            ..FetchOptions::default()
        };
        loop {
            match fetch(self.addr, b"ready", &opts) {
                Ok(f) if f.data == b"ok" => return,
                other => assert!(
                    Instant::now() < deadline,
                    "engine never answered: {other:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn put(&self, name: &str, len: usize, seed: u64) -> Vec<u8> {
        let bytes = test_bytes(len, seed);
        std::fs::write(self.root.join(name), &bytes).unwrap();
        bytes
    }

    /// Waits (bounded) until the metrics satisfy `ok`: a session counts its outcome when it
    /// has seen the client's final ACK, which can be just after the client returned.
    fn wait_for(&self, what: &str, ok: impl Fn(&TftpSnapshot) -> bool) -> TftpSnapshot {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let m = self.metrics.snapshot();
            if ok(&m) {
                return m;
            }
            assert!(Instant::now() < deadline, "{what}: metrics are {m}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sets the shutdown flag and checks the engine returns promptly and cleanly.
    fn stop(mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        let thread = self.thread.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        while !thread.is_finished() {
            assert!(
                Instant::now() < deadline,
                "engine did not stop within 3 s of shutdown"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        thread.join().unwrap().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
    }
}

fn opts(blksize: Option<u16>, windowsize: Option<u16>) -> FetchOptions {
    FetchOptions {
        blksize,
        windowsize,
        ..FetchOptions::default()
    }
}

#[test]
fn fetches_exact_bytes_at_several_sizes_and_windows() {
    let server = Running::start(2);
    let sizes = [
        0usize,
        1,
        511,
        512,
        513,
        1468,
        1468 * 3,
        1468 * 3 + 1,
        200_000,
    ];
    for (i, &len) in sizes.iter().enumerate() {
        let name = format!("f{len}");
        let bytes = server.put(&name, len, i as u64 + 1);
        for (blksize, windowsize) in [
            (None, None),
            (Some(1468), None),
            (Some(1468), Some(4)),
            (Some(512), Some(64)),
        ] {
            let got = fetch(server.addr, name.as_bytes(), &opts(blksize, windowsize))
                .unwrap_or_else(|e| {
                    panic!("{name} blksize={blksize:?} window={windowsize:?}: {e:?}")
                });
            assert_eq!(
                sha256(&got.data),
                sha256(&bytes),
                "{name} blksize={blksize:?} window={windowsize:?}: {} bytes received, {len} expected",
                got.data.len()
            );
            // Each transfer comes from a new port on the address the request was sent to.
            assert_eq!(got.tid.ip(), server.addr.ip());
            assert_ne!(got.tid.port(), server.addr.port());
            let want_blocks = len / usize::from(blksize.unwrap_or(512)) + 1;
            assert_eq!(got.blocks, want_blocks as u64, "{name}: block count");
            match (blksize, windowsize) {
                (None, None) => assert!(got.oack.is_none(), "OACK without options: {:?}", got.oack),
                _ => {
                    let oack = got.oack.expect("options were asked for, so an OACK");
                    if let Some(b) = blksize {
                        assert!(
                            oack.contains(&("blksize".into(), b.to_string())),
                            "{oack:?}"
                        );
                    }
                    if let Some(w) = windowsize {
                        assert!(
                            oack.contains(&("windowsize".into(), w.to_string())),
                            "{oack:?}"
                        );
                    }
                }
            }
        }
    }
    let transfers = (sizes.len() * 4) as u64;
    // + the readiness probe
    let m = server.wait_for("all completed", |m| m.sessions_completed == transfers + 1);
    assert_eq!(m.sessions_started, transfers + 1, "{m}");
    assert!(m.packets_sent >= transfers, "{m}");
    server.stop();
}

#[test]
fn many_concurrent_transfers_across_threads() {
    let server = Running::start(2);
    let bytes = server.put("shared", 300_000, 77);
    let want = sha256(&bytes);
    let addr = server.addr;
    let clients: Vec<_> = (0..16)
        .map(|i| {
            std::thread::spawn(move || {
                let w = [1u16, 4, 16, 64][i % 4];
                fetch(addr, b"shared", &opts(Some(1468), Some(w))).map(|f| sha256(&f.data))
            })
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap().unwrap(), want);
    }
    server.wait_for("17 completed", |m| m.sessions_completed == 17);
    server.stop();
}

#[test]
fn rollover_past_65535_blocks() {
    let server = Running::start(1);
    // 70,000 blocks of 512 bytes plus a short one: past 65535, so block numbers wrap.
    let len = 512 * 70_000 + 100;
    let bytes = server.put("big", len, 9);
    let got = fetch(
        server.addr,
        b"big",
        &FetchOptions {
            windowsize: Some(16),
            overall: Duration::from_secs(120),
            ..FetchOptions::default()
        },
    )
    .unwrap();
    assert_eq!(got.blocks, 70_001);
    assert_eq!(sha256(&got.data), sha256(&bytes));
    server.stop();
}

#[test]
fn errors_for_missing_files_and_paths_outside_the_root() {
    let server = Running::start(1);
    match fetch(server.addr, b"no-such-file", &opts(None, None)) {
        Err(FetchError::Server { code, .. }) => assert_eq!(code, 1),
        other => panic!("missing file: {other:?}"),
    }
    for name in [&b"../secret.txt"[..], b"/etc/passwd", b"..\\secret.txt"] {
        match fetch(server.addr, name, &opts(Some(1468), None)) {
            Err(FetchError::Server { code, .. }) => {
                assert_eq!(code, 2, "{}", String::from_utf8_lossy(name))
            }
            other => panic!("{}: {other:?}", String::from_utf8_lossy(name)),
        }
    }
    // A write request is refused from the listening socket.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut wrq = encode_rrq(b"upload", "octet", &[]);
    wrq[1] = 2;
    sock.send_to(&wrq, server.addr).unwrap();
    let mut buf = [0u8; 600];
    let (n, src) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(src, server.addr, "refusals come from the listening socket");
    assert_eq!(&buf[..4], &[0, 5, 0, 2], "{:?}", &buf[..n]);
    let m = server.metrics.snapshot();
    assert_eq!(
        (m.refused_not_found, m.refused_access, m.refused_write),
        (1, 3, 1),
        "{m}"
    );
    server.stop();
}

#[test]
fn foreign_tid_gets_error_5_and_the_transfer_goes_on() {
    let server = Running::start(1);
    let bytes = server.put("victim", 50_000, 5);
    let got = fetch(
        server.addr,
        b"victim",
        &FetchOptions {
            intruder: true,
            ..FetchOptions::default()
        },
    )
    .unwrap();
    let (code, message) = got.intruder_got.expect("the intruder got an answer");
    assert_eq!(code, 5);
    assert!(
        message.to_ascii_lowercase().contains("transfer id"),
        "{message}"
    );
    assert_eq!(sha256(&got.data), sha256(&bytes));
    let m = server.wait_for("2 completed", |m| m.sessions_completed == 2);
    assert_eq!(m.unknown_tid, 1, "{m}");
    server.stop();
}

#[test]
fn silent_client_times_out_and_frees_its_permit() {
    let server = Running::start(1);
    server.put("lonely", 10_000, 3);
    // Request, then never acknowledge: the session retransmits and gives up.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(&encode_rrq(b"lonely", "octet", &[]), server.addr)
        .unwrap();
    // timeout_ms = 200, max_retries = 5: gone well within 5 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.metrics.snapshot().sessions_timed_out == 0 {
        assert!(
            Instant::now() < deadline,
            "session never timed out: {}",
            server.metrics.snapshot()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = server.metrics.snapshot();
    assert!(m.retransmitted >= 1, "{m}");
    server.stop();
}

/// A client that sends its RRQ twice from the same port (its retransmission timer fired before
/// the answer came) gets one transfer: the second request is counted as a duplicate, no second
/// transfer answers from another port, and the first one runs to the end.
#[test]
fn retransmitted_request_starts_no_second_transfer() {
    let server = Running::start(1);
    let bytes = server.put("twice", 3000, 9);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let rrq = encode_rrq(b"twice", "octet", &[]);
    sock.send_to(&rrq, server.addr).unwrap();
    sock.send_to(&rrq, server.addr).unwrap();
    server.wait_for("the duplicate", |m| m.duplicate_requests == 1);
    // Receive blocks 1..=6 (512 bytes each, the last short), ACK each; every datagram must
    // come from one transfer port.
    let mut tids = std::collections::BTreeSet::new();
    let mut data = Vec::new();
    let mut buf = [0u8; 600];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            if data.len() == bytes.len() {
                break; // nothing more: no second transfer retransmitting either
            }
            continue;
        };
        tids.insert(from);
        assert_eq!(&buf[..2], &[0, 3], "DATA expected: {:?}", &buf[..n]);
        let block = u16::from_be_bytes([buf[2], buf[3]]);
        if usize::from(block) * 512 > data.len() {
            data.extend_from_slice(&buf[4..n]);
        }
        sock.send_to(&[0, 4, buf[2], buf[3]], from).unwrap();
    }
    assert_eq!(tids.len(), 1, "answers from {tids:?}");
    assert_eq!(sha256(&data), sha256(&bytes));
    let m = server.wait_for("1 completed", |m| m.sessions_completed == 2);
    assert_eq!(
        m.sessions_started, 2,
        "the readiness probe and this one: {m}"
    );
    assert_eq!(m.duplicate_requests, 1, "{m}");
    server.stop();
}
