//! A test network of two namespaces (server, client) on one veth pair, pxe-server serving a
//! temporary root in the server namespace, and the real TFTP clients (atftp, curl, tftp-hpa)
//! that fetch from it in the client namespace.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::data::sha256;
use crate::netns::{Netns, pair};
use crate::peers::pxe_server::{PxeServer, ServeOptions};
use crate::process::Run;

static NET_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Two network namespaces (server, client) joined by a veth pair `eth0`, `10.77.N.1/24` on the
/// server side and `10.77.N.2/24` on the client side. Dropping it kills every process left
/// inside the namespaces and deletes them (which deletes the veth pair).
pub struct TestNet {
    pub server: Netns,
    pub client: Netns,
    pub server_ip: std::net::Ipv4Addr,
    pub client_ip: std::net::Ipv4Addr,
}

impl TestNet {
    /// Fails the test (see [`crate::cannot_run`]) without root or network namespaces.
    #[expect(
        clippy::new_without_default,
        reason = "it creates namespaces: no default value"
    )]
    pub fn new() -> TestNet {
        let pid = std::process::id();
        let count = NET_COUNTER.fetch_add(1, Ordering::Relaxed);
        let n = ((pid.wrapping_mul(31).wrapping_add(count)) % 250 + 1) as u8;
        let server_ip = std::net::Ipv4Addr::new(10, 77, n, 1);
        let client_ip = std::net::Ipv4Addr::new(10, 77, n, 2);
        let (server, client) = pair(
            ("s", "eth0", Some(&format!("{server_ip}/24"))),
            ("c", "eth0", Some(&format!("{client_ip}/24"))),
        );
        TestNet {
            server,
            client,
            server_ip,
            client_ip,
        }
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
        for ns in [&self.server, &self.client] {
            let run = ns.run(&["nft", "-f", file], Duration::from_secs(20));
            assert!(
                run.success(),
                "cannot add packet loss with nft (is the nftables package installed?): {run}"
            );
        }
    }

    /// Packets the loss rules dropped so far, summed over both namespaces.
    pub fn dropped(&self) -> u64 {
        let mut total = 0;
        for ns in [&self.server, &self.client] {
            let run = ns.run(
                &["nft", "list", "table", "netdev", "pxe_loss"],
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

    /// Runs `argv` inside the client namespace, killed after `limit`.
    pub fn in_client(&self, argv: &[&str], limit: Duration) -> Run {
        self.client.run(argv, limit)
    }
}

/// Generates, for each `name => body;`, `mod name { fn uring(); fn portable(); }`: two
/// `#[ignore]`d tests (they need root and network namespaces; scripts/test.sh runs them) that
/// call `body(Engine::Uring)` and `body(Engine::Portable)`. The modules `use super::*`.
#[macro_export]
macro_rules! both_engines {
    ($($name:ident => $body:path;)*) => {$(
        mod $name {
            use super::*;
            #[test]
            #[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
            fn uring() {
                $body($crate::testnet::Engine::Uring)
            }
            #[test]
            #[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
            fn portable() {
                $body($crate::testnet::Engine::Portable)
            }
        }
    )*};
}

/// The TFTP engine the server runs.
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

/// `pxe-server serve` running in the server namespace of a [`TestNet`] with a temporary root
/// directory. Dropping it kills the process (and prints its log if the test is failing).
pub struct Server {
    server: PxeServer,
    dir: tempfile::TempDir,
    pub root: PathBuf,
    pub engine: Engine,
    pub ip: std::net::Ipv4Addr,
}

impl Server {
    /// Starts the server and waits (bounded) until a client in the client namespace can fetch
    /// a small file from it. `extra` is appended to the `[tftp]` section.
    pub fn start(net: &TestNet, engine: Engine, extra: &str) -> Server {
        Self::start_under(net, engine, extra, Vec::new(), None)
    }

    /// [`Server::start`], the server run under `prefix` (a command and its arguments, e.g.
    /// `setpriv ...` to an account), with the test directory given to `dir_owner`.
    pub fn start_under(
        net: &TestNet,
        engine: Engine,
        extra: &str,
        prefix: Vec<String>,
        dir_owner: Option<(u32, u32)>,
    ) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("root dir");
        std::fs::write(root.join("ready.txt"), b"ready\n").expect("ready file");
        let text = format!(
            "[tftp]\nroot = {root:?}\nlisten = [\"{ip}:69\"]\nengine = \"{engine}\"\nthreads = 2\n{extra}\n",
            ip = net.server_ip,
            engine = engine.name(),
        );
        let opts = ServeOptions {
            args: vec!["--engine".into(), engine.name().into()],
            ready: vec![],
            prefix,
            dir_owner,
            ..ServeOptions::default()
        };
        let server = PxeServer::start_with(&net.server, dir.path(), &text, opts);
        let mut server = Server {
            server,
            dir,
            root,
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
            if let Some(status) = self.server.proc().try_status() {
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
        self.server.log()
    }

    /// `pxe-server status --json` against this server's control socket.
    pub fn status(&self) -> serde_json::Value {
        self.server.status()
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
        self.server.is_running()
    }

    /// The running daemon (its process, config file, reloads).
    pub fn daemon(&mut self) -> &mut PxeServer {
        &mut self.server
    }
}

/// A real TFTP client.
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
