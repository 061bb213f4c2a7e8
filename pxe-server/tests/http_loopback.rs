//! The HTTP service on 127.0.0.1 (no privileges needed), spoken to over raw TCP: the wire
//! format of GET/HEAD/ranges, keep-alive, oversized heads, the header, idle and send-rate
//! deadlines, `max_connections` and `max_connections_per_client`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pxe_server::config::Config;
use pxe_server::http::{HttpMetrics, HttpServer, HttpSnapshot};
use pxe_server::images::ImageStore;
use pxe_testkit::{Proc, Signal, server_bin};

struct Running {
    addr: SocketAddr,
    metrics: Arc<HttpMetrics>,
    shutdown: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(extra: &str, files: &[(&str, &[u8])]) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        for (name, data) in files {
            std::fs::write(root.join(name), data).unwrap();
        }
        let text = format!(
            "[tftp]\nroot = {root:?}\n[http]\nenabled = true\nlisten = [\"127.0.0.1:0\"]\nthreads = 1\n{extra}\n"
        );
        let config = Arc::new(Config::parse(&text, Path::new("test.toml")).unwrap());
        let images = Arc::new(ImageStore::new(root).unwrap());
        let metrics = Arc::new(HttpMetrics::default());
        let server =
            HttpServer::bind(&config.http_settings(), images, Arc::clone(&metrics), None).unwrap();
        let addr = server.local_addrs().unwrap()[0];
        let shutdown = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let shutdown = Arc::clone(&shutdown);
            move || server.run(&shutdown)
        });
        Running {
            addr,
            metrics,
            shutdown,
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// A connection from `from` (another loopback address than 127.0.0.1: another client).
    fn connect_from(&self, from: std::net::Ipv4Addr) -> TcpStream {
        let SocketAddr::V4(to) = self.addr else {
            panic!("the server listens on IPv4");
        };
        let s = pxe_net::tcp_connect_nonblocking(to, Some(from), None).unwrap();
        // Blocking from here: the first write waits for the connect to finish.
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    fn snapshot(&self) -> HttpSnapshot {
        self.metrics.snapshot()
    }

    /// Waits (bounded) until `f` holds for the counters.
    fn wait_for(&self, what: &str, f: impl Fn(&HttpSnapshot) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f(&self.snapshot()) {
            assert!(Instant::now() < deadline, "{what}: {}", self.snapshot());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let r = t.join().expect("http thread panicked");
            if !std::thread::panicking() {
                r.expect("http server failed");
            }
        }
    }
}

/// One parsed response: status, headers (lower-case names), body.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response from `s`; `head_only` for a HEAD (no body whatever Content-Length says).
fn read_response(s: &mut TcpStream, head_only: bool) -> Resp {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).expect("read head");
        assert!(n == 1, "connection closed inside a response head: {buf:?}");
        buf.push(byte[0]);
        assert!(buf.len() < 64 * 1024);
    }
    let text = String::from_utf8(buf).unwrap();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let mut resp = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    if !head_only {
        let len: usize = resp
            .header("content-length")
            .expect("content-length")
            .parse()
            .unwrap();
        resp.body = vec![0; len];
        s.read_exact(&mut resp.body).expect("read body");
    }
    resp
}

fn request(s: &mut TcpStream, text: &str) {
    s.write_all(text.as_bytes()).unwrap();
}

/// True once the peer has closed (EOF or reset), false if it is still open after `within`.
/// `GET /f` on `s`, answered 200.
fn get_f_ok(s: &mut TcpStream) {
    request(s, "GET /f HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(read_response(s, false).status, 200);
}

/// A connection refused at accept: 503, then closed by the server.
fn refused_503(c: &mut TcpStream) {
    let r = read_response(c, true);
    assert_eq!(r.status, 503);
    assert!(closed_within(c, Duration::from_secs(5)));
}

fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn get_head_ranges_and_keep_alive_on_one_connection() {
    let file = data(100_000);
    let srv = Running::start("", &[("f.bin", &file), ("empty", b"")]);
    let mut s = srv.connect();
    request(&mut s, "GET /f.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.body, file);

    request(&mut s, "HEAD /f.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = read_response(&mut s, true);
    assert_eq!(
        (r.status, r.header("content-length")),
        (200, Some("100000"))
    );

    request(
        &mut s,
        "GET /f.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=-100\r\n\r\n",
    );
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 99900-99999/100000"));
    assert_eq!(r.body, &file[99_900..]);

    request(
        &mut s,
        "GET /f.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=100000-\r\n\r\n",
    );
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */100000"));

    request(&mut s, "GET /empty HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = read_response(&mut s, false);
    assert_eq!((r.status, r.body.len()), (200, 0));

    request(&mut s, "DELETE /f.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = read_response(&mut s, false);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));

    request(
        &mut s,
        "GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\nGET /%2e%2e/x HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(read_response(&mut s, false).status, 403);
    assert_eq!(read_response(&mut s, false).status, 403);

    // Every answer above came on one connection.
    let m = srv.snapshot();
    assert_eq!((m.connections_accepted, m.requests), (1, 8), "{m}");
    assert_eq!(
        (m.responses_2xx, m.responses_206, m.responses_4xx),
        (3, 1, 4),
        "{m}"
    );
    assert_eq!(m.refused_traversal, 2, "{m}");
    assert!(m.bytes_sent > 100_100, "{m}");
    drop(s);
    srv.wait_for("connection closed", |m| m.connections_open == 0);
}

/// ETag / Last-Modified on the wire, 304 without a body (the next response on the same
/// connection parses), If-Range honoured or not, and a replaced file with a new tag.
#[test]
fn validators_and_conditional_requests_on_one_connection() {
    let file = data(20_000);
    let srv = Running::start("", &[("ipxe.efi", &file)]);
    let mut s = srv.connect();
    request(&mut s, "HEAD /ipxe.efi HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = read_response(&mut s, true);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/efi"));
    let etag = r.header("etag").expect("ETag").to_owned();
    let modified = r.header("last-modified").expect("Last-Modified").to_owned();
    assert!(etag.starts_with('"') && !etag.starts_with("W/"), "{etag}");

    let conditional = [
        format!("If-None-Match: {etag}"),
        format!("If-None-Match: \"nope\", W/{etag}"),
        format!("If-Modified-Since: {modified}"),
    ];
    for h in &conditional {
        request(
            &mut s,
            &format!("GET /ipxe.efi HTTP/1.1\r\nHost: x\r\n{h}\r\n\r\n"),
        );
        let r = read_response(&mut s, true);
        assert_eq!(r.status, 304, "{h}");
        assert_eq!(r.header("etag"), Some(etag.as_str()), "{h}");
        assert_eq!(r.header("content-length"), None, "{h}");
    }
    // A 304 to HEAD as well.
    request(
        &mut s,
        &format!("HEAD /ipxe.efi HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n"),
    );
    assert_eq!(read_response(&mut s, true).status, 304);

    // If-Range: the current tag gets the range, another one the whole file.
    request(
        &mut s,
        &format!(
            "GET /ipxe.efi HTTP/1.1\r\nHost: x\r\nRange: bytes=100-199\r\nIf-Range: {etag}\r\n\r\n"
        ),
    );
    let r = read_response(&mut s, false);
    assert_eq!((r.status, &r.body[..]), (206, &file[100..200]));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    request(
        &mut s,
        "GET /ipxe.efi HTTP/1.1\r\nHost: x\r\nRange: bytes=100-199\r\nIf-Range: \"old\"\r\n\r\n",
    );
    let r = read_response(&mut s, false);
    assert_eq!((r.status, r.body.len()), (200, file.len()));
    assert_eq!(r.body, file);

    // The file replaced by rename: the old tag now gets the new bytes, under a new tag.
    let root = srv._dir.path().join("root");
    let newer = data(7_000);
    std::fs::write(root.join("ipxe.efi.tmp"), &newer).unwrap();
    std::fs::rename(root.join("ipxe.efi.tmp"), root.join("ipxe.efi")).unwrap();
    request(
        &mut s,
        &format!("GET /ipxe.efi HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n"),
    );
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, newer);
    assert_ne!(r.header("etag"), Some(etag.as_str()));
    // ...and If-Range with the old tag the whole new file, not a piece of it.
    request(
        &mut s,
        &format!(
            "GET /ipxe.efi HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nIf-Range: {etag}\r\n\r\n"
        ),
    );
    let r = read_response(&mut s, false);
    assert_eq!((r.status, r.body.len()), (200, newer.len()));

    let m = srv.snapshot();
    assert_eq!(m.connections_accepted, 1, "{m}");
    assert_eq!(
        (m.responses_304, m.responses_206, m.responses_2xx),
        (4, 1, 4),
        "{m}"
    );
}

#[test]
fn oversized_heads_get_431_and_are_counted() {
    let srv = Running::start("", &[("f", b"x")]);
    for head in [
        format!(
            "GET /f HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(40_000)
        ),
        format!(
            "GET /f HTTP/1.1\r\nHost: x\r\n{}\r\n",
            (0..100)
                .map(|i| format!("X-H{i}: v\r\n"))
                .collect::<String>()
        ),
    ] {
        let mut s = srv.connect();
        // The server may answer and close before reading everything: ignore write errors.
        let _ = s.write_all(head.as_bytes());
        let r = read_response(&mut s, false);
        assert_eq!(r.status, 431);
        assert!(closed_within(&mut s, Duration::from_secs(5)));
    }
    srv.wait_for("two oversized heads", |m| m.headers_too_large == 2);
    assert_eq!(srv.snapshot().responses_4xx, 2);
}

#[test]
fn slow_heads_are_cut_after_the_header_timeout() {
    let srv = Running::start(
        "header_timeout_ms = 600\nidle_timeout_ms = 30000",
        &[("f", b"x")],
    );
    // Silent after connecting.
    let mut silent = srv.connect();
    // One byte every 100 ms: progress, but the head never completes in time.
    let mut slow = srv.connect();
    let start = Instant::now();
    for b in b"GET /f HTTP/1.1\r\nHost: x\r\nX-A: 1234567890".iter() {
        if slow.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if start.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    assert!(closed_within(&mut slow, Duration::from_secs(5)));
    assert!(closed_within(&mut silent, Duration::from_secs(5)));
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    srv.wait_for("two header timeouts", |m| m.header_timeouts == 2);
    // A normal client is served meanwhile and afterwards.
    let mut ok = srv.connect();
    request(&mut ok, "GET /f HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(read_response(&mut ok, false).body, b"x");
}

#[test]
fn keep_alive_connections_wait_for_the_idle_timeout_not_the_header_timeout() {
    let srv = Running::start(
        "header_timeout_ms = 300\nidle_timeout_ms = 1500",
        &[("f", b"x")],
    );
    let mut s = srv.connect();
    get_f_ok(&mut s);
    // Idle past the header timeout: still open, and a next request is served.
    std::thread::sleep(Duration::from_millis(800));
    get_f_ok(&mut s);
    let start = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(5)));
    let idle = start.elapsed();
    assert!(
        idle >= Duration::from_millis(1300) && idle < Duration::from_secs(4),
        "{idle:?}"
    );
    srv.wait_for("an idle timeout", |m| m.idle_timeouts == 1);
    assert_eq!(srv.snapshot().header_timeouts, 0);
}

#[test]
fn connections_beyond_the_limit_get_503() {
    let srv = Running::start("max_connections = 2", &[("f", b"x")]);
    let mut a = srv.connect();
    let mut b = srv.connect();
    srv.wait_for("two open", |m| m.connections_open == 2);
    let mut c = srv.connect();
    refused_503(&mut c);
    srv.wait_for("one refused", |m| m.connections_refused == 1);
    for s in [&mut a, &mut b] {
        get_f_ok(s);
    }
    drop(a);
    srv.wait_for("one open", |m| m.connections_open == 1);
    let mut d = srv.connect();
    get_f_ok(&mut d);
    assert_eq!(srv.snapshot().connections_accepted, 3);
}

#[test]
fn one_client_address_is_capped_and_another_is_served() {
    let srv = Running::start(
        "max_connections = 10\nmax_connections_per_client = 2",
        &[("f", b"x")],
    );
    let mut a = srv.connect();
    let mut b = srv.connect();
    srv.wait_for("two open", |m| m.connections_open == 2);
    // A third from 127.0.0.1: 503, closed, counted as a per-client refusal.
    let mut c = srv.connect();
    refused_503(&mut c);
    srv.wait_for("one refused", |m| m.connections_refused_per_client == 1);
    // Another address is served meanwhile.
    let other = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let mut d = srv.connect_from(other);
    get_f_ok(&mut d);
    for s in [&mut a, &mut b] {
        get_f_ok(s);
    }
    // A connection that ends gives its address's slot back.
    drop(a);
    srv.wait_for("two open again", |m| m.connections_open == 2);
    let mut e = srv.connect();
    get_f_ok(&mut e);
    let m = srv.snapshot();
    assert_eq!(
        (
            m.connections_accepted,
            m.connections_refused_per_client,
            m.connections_refused
        ),
        (4, 1, 0)
    );
}

#[test]
fn a_client_that_does_not_read_is_cut_by_the_send_rate() {
    let big = data(32 << 20);
    let srv = Running::start(
        "min_send_rate_bytes_per_sec = 65536\nsend_rate_window_ms = 500\nidle_timeout_ms = 30000",
        &[("big", &big)],
    );
    // Asks for 32 MiB and reads nothing: the socket buffers take a few MiB, then the server
    // waits.
    let mut stuck = srv.connect();
    request(&mut stuck, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    let start = Instant::now();
    // A client that reads is served the whole file meanwhile.
    let mut ok = srv.connect();
    request(&mut ok, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = read_response(&mut ok, false);
    assert!(r.status == 200 && r.body == big);
    srv.wait_for("a send-rate cut", |m| m.send_rate_cuts == 1);
    let cut_after = start.elapsed();
    // Two windows of waiting at most (the first may be passed on what the buffers took).
    assert!(cut_after < Duration::from_millis(2500), "{cut_after:?}");
    srv.wait_for("the slot given back", |m| m.connections_open == 1);
    let m = srv.snapshot();
    assert_eq!((m.idle_timeouts, m.connection_errors), (0, 0));
    drop(stuck);
}

#[test]
fn garbage_gets_400_and_is_counted() {
    let srv = Running::start("", &[("f", b"x")]);
    let mut s = srv.connect();
    request(&mut s, "\x01\x02 garbage \x00\r\n\r\n");
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 400);
    srv.wait_for("a bad request", |m| m.bad_requests == 1);
}

/// `pxe-server serve` with `[http] enabled` on loopback: files over HTTP, the `http` section
/// of the status, a clean stop on SIGTERM; and a busy HTTP port stops the start.
#[test]
fn serve_runs_http_until_sigterm() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("f.bin"), data(5000)).unwrap();
    let sock = dir.path().join("ctl.sock");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let tftp_port = udp.local_addr().unwrap().port();
    drop(udp);
    // Held while the second server tries it, released before the first one binds it.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = tcp.local_addr().unwrap().port();
    let config = |tftp: u16, ctl: &Path| {
        format!(
            "[tftp]\nroot = {root:?}\nlisten = [\"127.0.0.1:{tftp}\"]\nengine = \"portable\"\n\
             threads = 1\n[http]\nenabled = true\nlisten = [\"127.0.0.1:{http_port}\"]\n\
             threads = 1\n[control]\nsocket = {ctl:?}\n[metrics]\nlisten = [\"127.0.0.1:0\"]\n"
        )
    };
    let busy = dir.path().join("busy.toml");
    std::fs::write(&busy, config(0, &dir.path().join("busy.sock"))).unwrap();
    let out = Command::new(server_bin())
        .args(["serve", "--config", busy.to_str().unwrap()])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("HTTP listen 127.0.0.1:{http_port}")),
        "{err}"
    );
    drop(tcp);

    let file = dir.path().join("pxe.toml");
    std::fs::write(&file, config(tftp_port, &sock)).unwrap();
    let mut cmd = Command::new(server_bin());
    cmd.args(["serve", "--config", file.to_str().unwrap()])
        .env("RUST_LOG", "info");
    let mut server = Proc::spawn(cmd, dir.path(), "serve");
    let addr: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut s = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "HTTP never answered: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    request(
        &mut s,
        "GET /f.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n",
    );
    let r = read_response(&mut s, false);
    assert_eq!((r.status, &r.body[..]), (206, &data(5000)[10..20]));
    drop(s);

    let status = Command::new(server_bin())
        .args(["status", "--json", "--socket", sock.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(status.status.success());
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["http"]["metrics"]["responses_206"], 1, "{v}");
    assert_eq!(v["http"]["metrics"]["requests"], 1, "{v}");
    assert_eq!(
        v["http"]["listen"][0],
        format!("127.0.0.1:{http_port}"),
        "{v}"
    );
    assert_eq!(v["http"]["root"], root.display().to_string(), "{v}");

    server.signal(Signal::TERM);
    let start = Instant::now();
    let status = server
        .wait_timeout(Duration::from_secs(30))
        .expect("pxe-server did not stop on SIGTERM");
    let log = server.stderr();
    assert!(status.success(), "{log}");
    assert!(start.elapsed() < Duration::from_secs(5), "slow stop");
    assert!(log.contains("HTTP service ready"), "{log}");
    assert!(log.contains("HTTP service stopped"), "{log}");
    assert!(TcpStream::connect(addr).is_err(), "HTTP still listening");
}

/// `serve` under a small open-file limit (started through `prlimit --nofile=64:400`): the soft
/// limit is raised to the hard one, and `max_connections = 1000` is lowered, with a warning, to
/// what TFTP's 100 sessions and the 256 reserved descriptors leave (400 - 256 - 100 = 44): the
/// 45th open connection gets the 503 instead of a failed accept(). (All from 127.0.0.1: the
/// per-client cap is raised out of the way.)
#[test]
fn serve_fits_max_connections_to_the_open_file_limit() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("f"), b"x").unwrap();
    let sock = dir.path().join("ctl.sock");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let tftp_port = udp.local_addr().unwrap().port();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = tcp.local_addr().unwrap().port();
    drop((udp, tcp));
    let file = dir.path().join("pxe.toml");
    std::fs::write(
        &file,
        format!(
            "[tftp]\nroot = {root:?}\nlisten = [\"127.0.0.1:{tftp_port}\"]\nengine = \"portable\"\n\
             threads = 1\nmax_sessions = 100\n[http]\nenabled = true\n\
             listen = [\"127.0.0.1:{http_port}\"]\nthreads = 1\nmax_connections = 1000\n\
             max_connections_per_client = 1000\n[control]\nsocket = {sock:?}\n[metrics]\nlisten = [\"127.0.0.1:0\"]\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=64:400")
        .arg(server_bin())
        .args(["serve", "--config", file.to_str().unwrap()])
        .env("RUST_LOG", "info");
    let mut server = Proc::spawn(cmd, dir.path(), "serve");
    let status = || -> Option<serde_json::Value> {
        let out = Command::new(server_bin())
            .args(["status", "--json", "--socket", sock.to_str().unwrap()])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        if let Some(v) = status() {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the server never answered status"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(v["http"]["metrics"]["connections_limit"], 44, "{v}");
    // prlimit exec'd the server: its soft limit went from 64 to the hard 400.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>()[3..5],
        ["400", "400"],
        "{line}"
    );

    let addr: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    let mut open: Vec<TcpStream> = (0..44).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = status().expect("status");
        if v["http"]["metrics"]["connections_open"] == 44 {
            break;
        }
        assert!(Instant::now() < deadline, "44 connections not open: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut extra = TcpStream::connect(addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(read_response(&mut extra, true).status, 503);
    // The ones within the limit are served.
    let s = &mut open[43];
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    request(s, "GET /f HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(read_response(s, false).body, b"x");
    drop(open);

    // prlimit exec'd the server in place.
    server.signal(Signal::TERM);
    let status = server
        .wait_timeout(Duration::from_secs(30))
        .expect("pxe-server did not stop on SIGTERM");
    let log = server.stderr();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("max_connections lowered to fit the open-file limit")
            && log.contains("effective=44"),
        "{log}"
    );
}
