//! Shared helpers of the integration tests: a minimal blocking TFTP client (its own codec, so it
//! checks the server's bytes independently of `tftp::packet`), test files and digests, and a
//! RAII test network of two network namespaces joined by a veth pair with the real server binary
//! running in one of them.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Test data
// ---------------------------------------------------------------------------------------------

/// `len` pseudo-random bytes (xorshift64*, seeded), so a block served at the wrong offset or
/// twice can never go unnoticed the way it could with a periodic pattern.
pub fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// A minimal blocking TFTP client (RFC 1350 + 2347/2348/7440), codec written independently
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub blksize: Option<u16>,
    pub windowsize: Option<u16>,
    pub tsize: bool,
    /// After the first DATA, send an ACK to the server's TID from a second socket and record
    /// what comes back to that socket.
    pub intruder: bool,
    /// Silence after which the last packet (request or ACK) is sent again.
    pub retry: Duration,
    pub overall: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            blksize: None,
            windowsize: None,
            tsize: false,
            intruder: false,
            retry: Duration::from_millis(500),
            overall: Duration::from_secs(60),
        }
    }
}

#[derive(Debug)]
pub struct Fetched {
    pub data: Vec<u8>,
    /// The address the transfer came from (the server's TID).
    pub tid: SocketAddr,
    /// Options in the server's OACK, if it sent one.
    pub oack: Option<Vec<(String, String)>>,
    /// What the intruder socket received: an ERROR (code, message).
    pub intruder_got: Option<(u16, String)>,
    pub blocks: u64,
}

#[derive(Debug)]
pub enum FetchError {
    Server { code: u16, message: String },
    TimedOut,
    Protocol(String),
    Io(io::Error),
}

impl From<io::Error> for FetchError {
    fn from(e: io::Error) -> Self {
        FetchError::Io(e)
    }
}

pub fn encode_rrq(name: &[u8], mode: &str, options: &[(&str, String)]) -> Vec<u8> {
    let mut p = vec![0, 1];
    p.extend_from_slice(name);
    p.push(0);
    p.extend_from_slice(mode.as_bytes());
    p.push(0);
    for (k, v) in options {
        p.extend_from_slice(k.as_bytes());
        p.push(0);
        p.extend_from_slice(v.as_bytes());
        p.push(0);
    }
    p
}

fn ack(block: u16) -> [u8; 4] {
    let b = block.to_be_bytes();
    [0, 4, b[0], b[1]]
}

fn parse_error(p: &[u8]) -> (u16, String) {
    let code = if p.len() >= 4 {
        u16::from_be_bytes([p[2], p[3]])
    } else {
        u16::MAX
    };
    let msg = p.get(4..).unwrap_or(&[]);
    let msg = msg.split(|&b| b == 0).next().unwrap_or(&[]);
    (code, String::from_utf8_lossy(msg).into_owned())
}

fn parse_oack(p: &[u8]) -> Result<Vec<(String, String)>, FetchError> {
    let body = &p[2..];
    if body.last() != Some(&0) {
        return Err(FetchError::Protocol("OACK not NUL-terminated".into()));
    }
    let fields: Vec<&[u8]> = body[..body.len() - 1].split(|&b| b == 0).collect();
    if !fields.len().is_multiple_of(2) {
        return Err(FetchError::Protocol(format!(
            "OACK with odd field count: {p:?}"
        )));
    }
    Ok(fields
        .chunks(2)
        .map(|kv| {
            (
                String::from_utf8_lossy(kv[0]).to_ascii_lowercase(),
                String::from_utf8_lossy(kv[1]).into_owned(),
            )
        })
        .collect())
}

/// Fetches `name` from `server` in octet mode. Bounded by `opts.overall`.
pub fn fetch(server: SocketAddr, name: &[u8], opts: &FetchOptions) -> Result<Fetched, FetchError> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.set_read_timeout(Some(opts.retry))?;
    let mut options = Vec::new();
    if let Some(b) = opts.blksize {
        options.push(("blksize", b.to_string()));
    }
    if let Some(w) = opts.windowsize {
        options.push(("windowsize", w.to_string()));
    }
    if opts.tsize {
        options.push(("tsize", "0".to_string()));
    }
    let rrq = encode_rrq(name, "octet", &options);
    sock.send_to(&rrq, server)?;

    let deadline = Instant::now() + opts.overall;
    let mut buf = vec![0u8; 70_000];
    let mut tid: Option<SocketAddr> = None;
    let mut blksize = 512usize;
    let mut windowsize = 1u16;
    let mut oack = None;
    let mut data = Vec::new();
    let mut last_block: u16 = 0; // last in-order block received
    let mut in_window = 0u16;
    let mut blocks = 0u64;
    let mut intruder_got = None;
    let mut gap_acked = false;
    loop {
        if Instant::now() > deadline {
            return Err(FetchError::TimedOut);
        }
        let (n, src) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // Silence: our request or ACK, or the end of a window, was lost. Ask again, or
                // acknowledge the last block received in order (RFC 7440 §4).
                match tid {
                    None => sock.send_to(&rrq, server)?,
                    Some(t) => sock.send_to(&ack(last_block), t)?,
                };
                gap_acked = false;
                in_window = 0;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let p = &buf[..n];
        match tid {
            None => tid = Some(src),
            Some(t) if t != src => continue, // not our server's TID
            Some(_) => {}
        }
        let tid_addr = src;
        if n < 2 {
            return Err(FetchError::Protocol(format!("runt datagram {p:?}")));
        }
        match u16::from_be_bytes([p[0], p[1]]) {
            5 => {
                let (code, message) = parse_error(p);
                return Err(FetchError::Server { code, message });
            }
            6 => {
                if blocks > 0 || oack.is_some() {
                    continue; // a retransmitted OACK
                }
                let fields = parse_oack(p)?;
                for (k, v) in &fields {
                    let v: u64 = v
                        .parse()
                        .map_err(|_| FetchError::Protocol(format!("OACK {k}={v}")))?;
                    match k.as_str() {
                        "blksize" => {
                            let asked = opts.blksize.ok_or_else(|| {
                                FetchError::Protocol("unrequested blksize".into())
                            })?;
                            if v == 0 || v > u64::from(asked) {
                                return Err(FetchError::Protocol(format!("blksize {v} > {asked}")));
                            }
                            blksize = v as usize;
                        }
                        "windowsize" => {
                            let asked = opts.windowsize.ok_or_else(|| {
                                FetchError::Protocol("unrequested windowsize".into())
                            })?;
                            if v == 0 || v > u64::from(asked) {
                                return Err(FetchError::Protocol(format!(
                                    "windowsize {v} > {asked}"
                                )));
                            }
                            windowsize = v as u16;
                        }
                        "tsize" => {}
                        other => {
                            return Err(FetchError::Protocol(format!(
                                "unrequested option {other}"
                            )));
                        }
                    }
                }
                oack = Some(fields);
                sock.send_to(&ack(0), tid_addr)?;
            }
            3 => {
                if n < 4 {
                    return Err(FetchError::Protocol("short DATA".into()));
                }
                let block = u16::from_be_bytes([p[2], p[3]]);
                let payload = &p[4..];
                if payload.len() > blksize {
                    return Err(FetchError::Protocol(format!(
                        "DATA of {} bytes > blksize {blksize}",
                        payload.len()
                    )));
                }
                if opts.intruder && intruder_got.is_none() && blocks == 0 {
                    intruder_got = Some(intrude(tid_addr)?);
                }
                if block != last_block.wrapping_add(1) {
                    // Out of order or a duplicate: ack the last in-order block once (RFC 7440);
                    // the silence timer covers the case where that ACK is lost.
                    if !gap_acked {
                        sock.send_to(&ack(last_block), tid_addr)?;
                        in_window = 0;
                        gap_acked = true;
                    }
                    continue;
                }
                gap_acked = false;
                data.extend_from_slice(payload);
                last_block = block;
                blocks += 1;
                in_window += 1;
                let last = payload.len() < blksize;
                if last || in_window >= windowsize {
                    sock.send_to(&ack(block), tid_addr)?;
                    in_window = 0;
                }
                if last {
                    return Ok(Fetched {
                        data,
                        tid: tid_addr,
                        oack,
                        intruder_got,
                        blocks,
                    });
                }
            }
            op => return Err(FetchError::Protocol(format!("unexpected opcode {op}"))),
        }
    }
}

/// Sends an ACK to `tid` from a fresh socket and returns the ERROR it gets back.
fn intrude(tid: SocketAddr) -> Result<(u16, String), FetchError> {
    let other = UdpSocket::bind("0.0.0.0:0")?;
    other.set_read_timeout(Some(Duration::from_secs(3)))?;
    other.send_to(&ack(1), tid)?;
    let mut buf = [0u8; 600];
    let (n, src) = other
        .recv_from(&mut buf)
        .map_err(|e| FetchError::Protocol(format!("no answer to a foreign-TID datagram: {e}")))?;
    if src != tid {
        return Err(FetchError::Protocol(format!(
            "answer from {src}, not {tid}"
        )));
    }
    if n < 4 || buf[..2] != [0, 5] {
        return Err(FetchError::Protocol(format!(
            "not an ERROR: {:?}",
            &buf[..n]
        )));
    }
    Ok(parse_error(&buf[..n]))
}

// ---------------------------------------------------------------------------------------------
// Bounded child processes
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
pub struct Run {
    /// `None` when the process was killed at the time limit.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status={:?} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Runs `argv` to completion, killing it after `limit`. Output goes through files, so a chatty
/// child can never block on a full pipe.
pub fn run_bounded(argv: &[&str], limit: Duration) -> Run {
    let out = tempfile::tempfile().expect("temp file");
    let err = tempfile::tempfile().expect("temp file");
    let start = Instant::now();
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(err.try_clone().expect("dup"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    let status = loop {
        match child.try_wait().expect("wait") {
            Some(s) => break Some(s),
            None if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let read = |mut f: File| {
        use std::io::{Read, Seek};
        let mut s = String::new();
        let _ = f.seek(io::SeekFrom::Start(0));
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        s.push_str(&String::from_utf8_lossy(&bytes));
        s
    };
    Run {
        status,
        stdout: read(out),
        stderr: read(err),
        elapsed: start.elapsed(),
    }
}

fn must(argv: &[&str]) {
    let run = run_bounded(argv, Duration::from_secs(20));
    assert!(run.success(), "`{}` failed: {run}", argv.join(" "));
}

// ---------------------------------------------------------------------------------------------
// Test network: two namespaces and a veth pair
// ---------------------------------------------------------------------------------------------

pub const NEEDS_ROOT: &str = "needs root + network namespaces (run by scripts/test.sh)";

static NET_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Two network namespaces (server, client) joined by a veth pair, `10.77.N.1/24` on the server
/// side and `10.77.N.2/24` on the client side. Dropping it kills every process left inside the
/// namespaces and deletes them (which deletes the veth pair).
pub struct TestNet {
    pub server_ns: String,
    pub client_ns: String,
    pub server_ip: Ipv4Addr,
    pub client_ip: Ipv4Addr,
}

impl TestNet {
    pub fn new() -> TestNet {
        if !rustix::process::geteuid().is_root() {
            panic!(
                "\n\n*** THIS TEST NEEDS ROOT (network namespaces). Run it through scripts/test.sh \
                 or as root; it must never pass silently. ***\n\n"
            );
        }
        let pid = std::process::id();
        let count = NET_COUNTER.fetch_add(1, Ordering::Relaxed);
        let n = ((pid.wrapping_mul(31).wrapping_add(count)) % 250 + 1) as u8;
        let tag = format!("{pid}-{count}");
        let server_ns = format!("pxe-s-{tag}");
        let client_ns = format!("pxe-c-{tag}");
        let add = run_bounded(&["ip", "netns", "add", &server_ns], Duration::from_secs(20));
        if !add.success() {
            panic!(
                "\n\n*** `ip netns add {server_ns}` FAILED: this test needs root and network \
                 namespaces. ***\n{add}\n"
            );
        }
        // From here on, Drop cleans up whatever exists.
        let net = TestNet {
            server_ns,
            client_ns,
            server_ip: Ipv4Addr::new(10, 77, n, 1),
            client_ip: Ipv4Addr::new(10, 77, n, 2),
        };
        must(&["ip", "netns", "add", &net.client_ns]);
        must(&[
            "ip",
            "-n",
            &net.server_ns,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &net.client_ns,
        ]);
        for (ns, ip) in [
            (&net.server_ns, net.server_ip),
            (&net.client_ns, net.client_ip),
        ] {
            let cidr = format!("{ip}/24");
            must(&["ip", "-n", ns, "addr", "add", &cidr, "dev", "eth0"]);
            must(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        net
    }

    /// Drops `percent`% of the TFTP DATA packets and of the ACKs of blocks other than 0 that
    /// each side receives (so both directions lose packets).
    ///
    /// netem is not built into this kernel, so the loss comes from an nftables rule on the
    /// veth's ingress hook (`numgen random mod 100 < percent drop`). Dropping on ingress, not
    /// on output, matters: an output drop makes the sender's sendto() fail with EPERM, which is
    /// not what a lossy wire does. The request/OACK/ACK-0 handshake is exempt because atftp 0.8
    /// aborts ("unexpected OACK") when a lost ACK 0 makes the server retransmit its OACK, which
    /// would make the test flaky on a client bug.
    pub fn add_loss(&self, percent: u32) {
        let rules = format!(
            "table netdev pxe_loss {{\n  chain ingress {{\n    type filter hook ingress device \
             \"eth0\" priority 0; policy accept;\n    \
             meta protocol ip meta l4proto udp @th,64,16 3 numgen random mod 100 < {percent} \
             counter drop\n    \
             meta protocol ip meta l4proto udp @th,64,16 4 @th,80,16 != 0 \
             numgen random mod 100 < {percent} counter drop\n  }}\n}}\n"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("loss.nft");
        std::fs::write(&file, rules).expect("write nft rules");
        let file = file.to_str().expect("utf-8 path");
        for ns in [&self.server_ns, &self.client_ns] {
            let run = run_bounded(
                &["ip", "netns", "exec", ns, "nft", "-f", file],
                Duration::from_secs(20),
            );
            assert!(
                run.success(),
                "cannot add packet loss with nft (is the nftables package installed?): {run}"
            );
        }
    }

    /// Packets the loss rules dropped so far, summed over both namespaces.
    pub fn dropped(&self) -> u64 {
        let mut total = 0;
        for ns in [&self.server_ns, &self.client_ns] {
            let run = run_bounded(
                &[
                    "ip", "netns", "exec", ns, "nft", "list", "table", "netdev", "pxe_loss",
                ],
                Duration::from_secs(20),
            );
            let words: Vec<&str> = run.stdout.split_whitespace().collect();
            for w in words.windows(2) {
                if w[0] == "packets" {
                    total += w[1].parse::<u64>().unwrap_or(0);
                }
            }
        }
        total
    }

    /// Runs `f` on a thread that has entered the client namespace, so the sockets it opens
    /// live there (setns(2) changes only the calling thread's namespace).
    pub fn with_client_ns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.client_ns);
        std::thread::spawn(move || {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .join()
        .expect("client-namespace thread panicked")
    }

    /// Runs `argv` inside the client namespace, killed after `limit`.
    pub fn in_client(&self, argv: &[&str], limit: Duration) -> Run {
        let mut full = vec!["ip", "netns", "exec", self.client_ns.as_str()];
        full.extend_from_slice(argv);
        run_bounded(&full, limit)
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for ns in [&self.server_ns, &self.client_ns] {
            let pids = run_bounded(&["ip", "netns", "pids", ns], Duration::from_secs(10));
            for pid in pids.stdout.split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                }
            }
            let _ = run_bounded(&["ip", "netns", "del", ns], Duration::from_secs(10));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The real server binary inside the server namespace
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Uring,
    Portable,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Uring => "uring",
            Engine::Portable => "portable",
        }
    }
}

/// `pxe-server serve` running in the server namespace with a temporary root directory.
/// Dropping it kills the process (and prints its log if the test is failing).
pub struct Server {
    child: Child,
    dir: tempfile::TempDir,
    pub root: PathBuf,
    log: PathBuf,
    pub engine: Engine,
    pub ip: Ipv4Addr,
}

impl Server {
    /// Starts the server and waits (bounded) until a client in the client namespace can fetch
    /// a small file from it. `extra` is appended to the `[tftp]` section.
    pub fn start(net: &TestNet, engine: Engine, extra: &str) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("root dir");
        std::fs::write(root.join("ready.txt"), b"ready\n").expect("ready file");
        let config = dir.path().join("pxe.toml");
        let text = format!(
            "[tftp]\nroot = {root:?}\nlisten = [\"{ip}:69\"]\nengine = \"{engine}\"\nthreads = 2\n{extra}\n[control]\nsocket = {sock:?}\n",
            sock = dir.path().join("control.sock"),
            ip = net.server_ip,
            engine = engine.name(),
        );
        std::fs::write(&config, text).expect("config file");
        let log = dir.path().join("server.log");
        let log_file = File::create(&log).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &net.server_ns])
            .arg(env!("CARGO_BIN_EXE_pxe-server"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--engine", engine.name()])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup"))
            .stderr(log_file)
            .spawn()
            .expect("spawn pxe-server");
        let mut server = Server {
            child,
            dir,
            root,
            log,
            engine,
            ip: net.server_ip,
        };
        server.wait_ready(net);
        server
    }

    fn wait_ready(&mut self, net: &TestNet) {
        let url = format!("tftp://{}/ready.txt", self.ip);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!(
                    "pxe-server ({}) exited during start-up with {status}:\n{}",
                    self.engine.name(),
                    self.log_text()
                );
            }
            let run = net.in_client(
                &["curl", "-s", "--max-time", "2", &url, "-o", "-"],
                Duration::from_secs(5),
            );
            if run.success() && run.stdout == "ready\n" {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "pxe-server ({}) did not answer within 20 s; last probe: {run}\nserver log:\n{}",
                    self.engine.name(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Writes a file under the root and returns its sha256.
    pub fn put(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.root.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, bytes).expect("write test file");
        sha256(bytes)
    }

    /// A directory for client output files (outside the served root).
    pub fn scratch(&self) -> PathBuf {
        let p = self.dir.path().join("out");
        std::fs::create_dir_all(&p).expect("scratch dir");
        p
    }

    /// The directory that holds the root (for files that must NOT be served).
    pub fn outside_root(&self) -> &Path {
        self.dir.path()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- pxe-server ({}) log ---\n{}\n--- end of log ---",
                self.engine.name(),
                self.log_text()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Real clients
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
pub enum Client {
    /// atftp 0.8 (supports blksize, tsize, timeout and windowsize options).
    Atftp {
        blksize: Option<u16>,
        windowsize: Option<u16>,
    },
    /// curl `tftp://` (sends `tsize` and `timeout` options, plus `blksize` when given).
    Curl { blksize: Option<u16> },
    /// curl with `--tftp-no-options`: plain RFC 1350. curl 7.88 rejects an OACK with
    /// `tsize 0` ("invalid tsize -:0:- value in OACK packet", exit 71), so an empty file can
    /// only be fetched by curl this way.
    CurlNoOptions,
    /// tftp-hpa: plain RFC 1350, 512-byte blocks, no options on the command line.
    TftpHpa,
}

impl Client {
    pub fn name(&self) -> String {
        match self {
            Client::Atftp {
                blksize,
                windowsize,
            } => {
                format!("atftp(blksize={blksize:?}, windowsize={windowsize:?})")
            }
            Client::Curl { blksize } => format!("curl(blksize={blksize:?})"),
            Client::CurlNoOptions => "curl(--tftp-no-options)".into(),
            Client::TftpHpa => "tftp-hpa".into(),
        }
    }

    /// Fetches `remote` from the server into `out`, inside the client namespace.
    pub fn get(&self, net: &TestNet, remote: &str, out: &Path, limit: Duration) -> Run {
        self.get_with(net, remote, out, limit, &[])
    }

    /// Like [`Client::get`], with extra client arguments (placed before the server address or
    /// URL; ignored by tftp-hpa).
    pub fn get_with(
        &self,
        net: &TestNet,
        remote: &str,
        out: &Path,
        limit: Duration,
        extra: &[&str],
    ) -> Run {
        let ip = net.server_ip.to_string();
        let out = out.to_str().expect("utf-8 path");
        let mut argv: Vec<String> = Vec::new();
        match *self {
            Client::Atftp {
                blksize,
                windowsize,
            } => {
                argv.extend(["atftp", "--get", "-r", remote, "-l", out].map(String::from));
                if let Some(b) = blksize {
                    argv.push("--option".into());
                    argv.push(format!("blksize {b}"));
                }
                if let Some(w) = windowsize {
                    argv.push("--option".into());
                    argv.push(format!("windowsize {w}"));
                }
                argv.extend(extra.iter().map(|a| a.to_string()));
                argv.push(ip);
            }
            Client::Curl { .. } | Client::CurlNoOptions => {
                argv.extend(["curl", "-s", "-S", "--path-as-is"].map(String::from));
                argv.push("--max-time".into());
                argv.push(limit.as_secs().to_string());
                match *self {
                    Client::Curl { blksize: Some(b) } => {
                        argv.push("--tftp-blksize".into());
                        argv.push(b.to_string());
                    }
                    Client::CurlNoOptions => argv.push("--tftp-no-options".into()),
                    _ => {}
                }
                argv.extend(extra.iter().map(|a| a.to_string()));
                argv.push(format!("tftp://{ip}/{remote}"));
                argv.push("-o".into());
                argv.push(out.into());
            }
            Client::TftpHpa => {
                argv.extend(
                    ["tftp", "-m", "binary", &ip, "-c", "get", remote, out].map(String::from),
                );
            }
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        net.in_client(&argv, limit)
    }
}
