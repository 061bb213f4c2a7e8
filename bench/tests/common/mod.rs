//! What the bench crate's namespace tests share: loud refusal when they cannot run, the
//! pxe-server binary, network namespaces, veth pairs and bridged segments that clean up after
//! themselves, background processes (pxe-server, dnsmasq) killed on drop, and the bounded run
//! of a pxe-bench subcommand.
#![allow(dead_code)] // each test binary uses its own subset

use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BENCH_BIN: &str = env!("CARGO_BIN_EXE_pxe-bench");

/// Fails the test, loudly, when something it needs is missing.
pub fn cannot_run(why: &str) -> ! {
    let required = std::env::var("PXE_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
    panic!(
        "\n\n*** THIS TEST CANNOT RUN: {why}. It needs root, network namespaces, dnsmasq and a \
         built pxe-server; run it through scripts/test.sh as root. It must never pass silently \
         (PXE_REQUIRE_PRIVILEGED={}). ***\n\n",
        if required { "1" } else { "unset" }
    );
}

pub fn server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PXE_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    // Next to our own binary first (same profile), then debug.
    let own = Path::new(BENCH_BIN).with_file_name("pxe-server");
    for p in [own, target.join("debug/pxe-server")] {
        if p.is_file() {
            return p;
        }
    }
    cannot_run("no pxe-server binary (cargo build -p pxe-server, or set PXE_SERVER_BIN)");
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        cannot_run("not root");
    }
}

pub static SEQ: AtomicU32 = AtomicU32::new(0);

/// A network namespace, deleted (after killing what runs in it) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        require_root();
        let name = format!(
            "pxb{}-{}-{tag}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        match Command::new("ip").args(["netns", "add", &name]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => cannot_run(&format!(
                "ip netns add failed: {}",
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) => cannot_run(&format!("running ip: {e}")),
        }
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("running ip");
        assert!(
            out.status.success(),
            "ip -n {} {}: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Adds `n` addresses `first`, `first + 1`, ... (prefix length `prefix`) to `dev`, in one
    /// `ip -batch`.
    pub fn add_addresses(&self, dev: &str, first: Ipv4Addr, n: u32, prefix: u8) {
        let batch: String = (0..n)
            .map(|i| {
                let a = Ipv4Addr::from(u32::from(first) + i);
                format!("addr add {a}/{prefix} dev {dev}\n")
            })
            .collect();
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("ip -batch");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(batch.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "adding {n} addresses");
    }

    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: kill(2) on a pid listed in our own test namespace.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// Hosts on one Ethernet segment: a bridge in a namespace of its own, each host joined to it by
/// a veth. Everything is deleted on drop.
pub struct Lan {
    pub hosts: Vec<Netns>,
    _switch: Netns,
}

/// A [`Lan`] of `hosts`: (namespace tag, the host's interface name, its address/prefix if any).
pub fn lan(hosts: &[(&str, &str, Option<&str>)]) -> Lan {
    let sw = Netns::new("sw");
    sw.ip(&["link", "add", "br0", "type", "bridge"]);
    sw.ip(&["link", "set", "br0", "up"]);
    let hosts = hosts
        .iter()
        .enumerate()
        .map(|(k, &(tag, iface, addr))| {
            let ns = Netns::new(tag);
            let port = format!("port{k}");
            veth(&ns, iface, &sw, &port);
            sw.ip(&["link", "set", &port, "master", "br0"]);
            if let Some(a) = addr {
                ns.ip(&["addr", "add", a, "dev", iface]);
            }
            ns
        })
        .collect();
    Lan { hosts, _switch: sw }
}

/// Starts pxe-server with `config` (written to `dir/pxe.toml`) in `ns`, and waits until its
/// DHCP service is up.
pub fn start_pxe_server(ns: &Netns, dir: &Path, config: &str) -> Proc {
    let path = dir.join("pxe.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = ns.command(server_bin().to_str().unwrap());
    cmd.args(["serve", "--config", path.to_str().unwrap()])
        .env("RUST_LOG", "info");
    let mut p = Proc::spawn(cmd, dir, "pxe-server");
    p.wait_for("DHCP service ready");
    p
}

/// Starts dnsmasq in `ns` (foreground, no DNS, no config file, no ping before offering, lease
/// and pid files in `dir`) with `args` (at least `--interface` and a `--dhcp-range`), and
/// waits until its DHCP service (and TFTP, with `--enable-tftp`) is up.
pub fn start_dnsmasq(ns: &Netns, dir: &Path, args: &[&str]) -> Proc {
    let mut cmd = ns.command("dnsmasq");
    cmd.args([
        "--no-daemon",
        "--conf-file=/dev/null",
        "--port=0",
        "--user=root",
        "--bind-interfaces",
        "--no-ping",
        "--dhcp-lease-max=10000",
    ])
    .arg(format!(
        "--dhcp-leasefile={}",
        dir.join("dnsmasq.leases").display()
    ))
    .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
    .args(args);
    let mut p = Proc::spawn(cmd, dir, "dnsmasq");
    p.wait_for("DHCP, IP range");
    if args.contains(&"--enable-tftp") {
        p.wait_for("TFTP root is");
    }
    p
}

/// A background process, killed and reaped on drop; stderr goes to a file.
pub struct Proc {
    pub child: Child,
    pub stderr: PathBuf,
}

impl Proc {
    pub fn spawn(mut cmd: Command, dir: &Path, tag: &str) -> Proc {
        let stderr = dir.join(format!("{tag}.err"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(dir.join(format!("{tag}.out"))).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| cannot_run(&format!("spawning {cmd:?}: {e}")));
        Proc { child, stderr }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits (at most 15 s) until the log contains `what`.
    pub fn wait_for(&mut self, what: &str) {
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if self.log().contains(what) {
                return;
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("process exited ({s}) before {what:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no {what:?} within 15 s:\n{}", self.log());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` (a pxe-bench subcommand with `--json`), killing it and failing the test if it
/// has not finished within `limit`; returns its exit status and its JSON report (a missing or
/// unparsable report fails the test, with both output streams).
pub fn run_json(mut cmd: Command, what: &str, limit: Duration) -> (ExitStatus, serde_json::Value) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| cannot_run(&format!("spawning {what}: {e}")));
    let end = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&stdout);
    let report: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{what}: no JSON report ({e}), status {status}:\n{text}\n{}",
            String::from_utf8_lossy(&stderr)
        )
    });
    (status, report)
}
