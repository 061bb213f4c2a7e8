//! `pxe-bench dhcp-storm` against real DHCP servers in network namespaces the tests create:
//! pxe-server in full mode, dnsmasq in full mode, and pxe-server in proxy mode next to dnsmasq
//! (addresses only). Each storm of 200 simulated ROMs must complete, every client with the boot
//! file of its architecture and an address of its own.
//!
//! Root only (scripts/test.sh runs them with PXE_REQUIRE_PRIVILEGED=1). A test that cannot run
//! (not root, no namespaces, no server binary, no dnsmasq) fails loudly; it never passes.
//!
//! The pxe-server binary is this workspace's `target/debug/pxe-server` (built by
//! `cargo nextest run --workspace`, or `cargo build -p pxe-server`), or `$PXE_SERVER_BIN`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const BENCH_BIN: &str = env!("CARGO_BIN_EXE_pxe-bench");
const CLIENTS: u64 = 200;

/// Fails the test, loudly, when something it needs is missing.
fn cannot_run(why: &str) -> ! {
    let required = std::env::var("PXE_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
    panic!(
        "\n\n*** THIS TEST CANNOT RUN: {why}. It needs root, network namespaces, dnsmasq and a \
         built pxe-server; run it through scripts/test.sh as root. It must never pass silently \
         (PXE_REQUIRE_PRIVILEGED={}). ***\n\n",
        if required { "1" } else { "unset" }
    );
}

fn server_bin() -> PathBuf {
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

fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        cannot_run("not root");
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A network namespace, deleted (after killing what runs in it) on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
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

    fn ip(&self, args: &[&str]) {
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

    fn command(&self, program: &str) -> Command {
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

fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// A background process, killed and reaped on drop; stderr goes to a file.
struct Proc {
    child: Child,
    stderr: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, dir: &Path, tag: &str) -> Proc {
        let stderr = dir.join(format!("{tag}.err"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(dir.join(format!("{tag}.out"))).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| cannot_run(&format!("spawning {cmd:?}: {e}")));
        Proc { child, stderr }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits (at most 15 s) until the log contains `what`.
    fn wait_for(&mut self, what: &str) {
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

/// Runs the storm in `ns` (bounded) and returns its JSON report.
fn storm(ns: &Netns, iface: &str, mode: &str, mac_base: &str) -> serde_json::Value {
    let mut cmd = ns.command(BENCH_BIN);
    cmd.args([
        "dhcp-storm",
        "--clients",
        &CLIENTS.to_string(),
        "--mode",
        mode,
        "--interface",
        iface,
        "--mac-base",
        mac_base,
        "--timeout-scale",
        "0.25",
        "--deadline-s",
        "60",
        "--json",
    ]);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| cannot_run(&format!("spawning pxe-bench: {e}")));
    let end = Instant::now() + Duration::from_secs(90);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dhcp-storm did not finish within 90 s");
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
            "no JSON report ({e}), status {status}:\n{text}\n{}",
            String::from_utf8_lossy(&stderr)
        )
    });
    eprintln!("{mode} storm: {report}");
    assert!(status.success(), "dhcp-storm failed ({status}): {report:#}");
    report
}

/// Every client succeeded, each with an address of its own and the boot file of its arch.
fn check(report: &serde_json::Value, boot: &[(&str, &str)]) {
    assert_eq!(report["ok"], CLIENTS, "{report:#}");
    assert_eq!(report["failed"], 0, "{report:#}");
    assert_eq!(report["duplicate_addresses"], 0, "{report:#}");
    assert_eq!(report["replies_malformed"], 0, "{report:#}");
    assert_eq!(report["dhcp_total"]["count"], CLIENTS, "{report:#}");
    assert!(report["packets_received"].as_u64().unwrap() >= 2 * CLIENTS);
    let mut total = 0;
    for (arch, file) in boot {
        let a = &report["per_arch"][arch];
        let n = a["ok"].as_u64().unwrap_or(0);
        assert!(n > 0, "no {arch} client: {report:#}");
        assert_eq!(a["boot_files"][file], n, "{arch} boot files: {report:#}");
        total += n;
    }
    assert_eq!(total, CLIENTS);
}

fn pxe_server_config(dir: &Path, mode: &str, pool: bool) -> String {
    let mut c = format!(
        "[tftp]\nroot = \"{d}/tftp\"\nlisten = [\"10.203.0.1:69\"]\nthreads = 1\n\
         [dhcp]\nenabled = true\nmode = \"{mode}\"\ninterfaces = [\"ds\"]\n\
         lease_db = \"{d}/leases.redb\"\n",
        d = dir.display()
    );
    if pool {
        c.push_str(
            "[[dhcp.subnets]]\nsubnet = \"10.203.0.0/16\"\nrange_start = \"10.203.1.0\"\n\
             range_end = \"10.203.4.255\"\nrouter = \"10.203.0.1\"\n",
        );
    }
    c.push_str(
        "[boot]\nbios = \"undionly.kpxe\"\nuefi_x64 = \"snponly.efi\"\n\
         ipxe_script = \"http://10.203.0.1/boot.ipxe\"\n",
    );
    c
}

fn start_pxe_server(ns: &Netns, dir: &Path, config: &str) -> Proc {
    std::fs::create_dir_all(dir.join("tftp")).unwrap();
    let path = dir.join("pxe.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = ns.command(server_bin().to_str().unwrap());
    cmd.args(["serve", "--config", path.to_str().unwrap()])
        .env("RUST_LOG", "info");
    let mut p = Proc::spawn(cmd, dir, "pxe-server");
    p.wait_for("DHCP service ready");
    p
}

fn start_dnsmasq(ns: &Netns, dir: &Path, iface: &str, extra: &[&str]) -> Proc {
    let mut cmd = ns.command("dnsmasq");
    cmd.args([
        "--no-daemon",
        "--conf-file=/dev/null",
        "--port=0",
        "--user=root",
        "--bind-interfaces",
        "--no-ping",
        "--dhcp-lease-max=10000",
        "--dhcp-range=10.203.1.0,10.203.4.255,255.255.0.0,1h",
    ])
    .arg(format!("--interface={iface}"))
    .arg(format!(
        "--dhcp-leasefile={}",
        dir.join("dnsmasq.leases").display()
    ))
    .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
    .args(extra);
    let mut p = Proc::spawn(cmd, dir, "dnsmasq");
    p.wait_for("DHCP, IP range");
    p
}

/// Server namespace (`ds` 10.203.0.1/16) and client namespace (`dc`, no address) on a veth.
fn pair() -> (Netns, Netns) {
    let srv = Netns::new("srv");
    let cli = Netns::new("cli");
    veth(&srv, "ds", &cli, "dc");
    srv.ip(&["addr", "add", "10.203.0.1/16", "dev", "ds"]);
    (srv, cli)
}

#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn storm_200_clients_full_mode_pxe_server() {
    let (srv, cli) = pair();
    let dir = tempfile::tempdir().unwrap();
    let server = start_pxe_server(
        &srv,
        dir.path(),
        &pxe_server_config(dir.path(), "full", true),
    );
    let report = storm(&cli, "dc", "full", "02:42:00:01:00:00");
    check(
        &report,
        &[
            ("bios", "undionly.kpxe"),
            ("uefi", "snponly.efi"),
            ("ipxe", "http://10.203.0.1/boot.ipxe"),
        ],
    );
    drop(server);
}

#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn storm_200_clients_full_mode_dnsmasq() {
    let (srv, cli) = pair();
    let dir = tempfile::tempdir().unwrap();
    let dnsmasq = start_dnsmasq(
        &srv,
        dir.path(),
        "ds",
        &[
            "--dhcp-match=set:efi64,option:client-arch,7",
            "--dhcp-userclass=set:ipxe,iPXE",
            "--dhcp-boot=tag:!efi64,tag:!ipxe,undionly.kpxe",
            "--dhcp-boot=tag:efi64,snponly.efi",
            "--dhcp-boot=tag:ipxe,boot.ipxe",
        ],
    );
    let report = storm(&cli, "dc", "full", "02:42:00:02:00:00");
    check(
        &report,
        &[
            ("bios", "undionly.kpxe"),
            ("uefi", "snponly.efi"),
            ("ipxe", "boot.ipxe"),
        ],
    );
    drop(dnsmasq);
}

/// dnsmasq hands out addresses (no PXE); pxe-server in proxy mode answers the PXE half. A
/// bridge joins the three namespaces. The client needs an address of its own for the unicast
/// REQUESTs to port 4011.
#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn storm_200_clients_proxy_mode_pxe_server_next_to_dnsmasq() {
    let sw = Netns::new("sw");
    let srv = Netns::new("srv");
    let dns = Netns::new("dnsm");
    let cli = Netns::new("cli");
    sw.ip(&["link", "add", "br0", "type", "bridge"]);
    sw.ip(&["link", "set", "br0", "up"]);
    for (ns, inner, outer) in [(&srv, "ds", "bs"), (&dns, "dd", "bd"), (&cli, "dc", "bc")] {
        veth(ns, inner, &sw, outer);
        sw.ip(&["link", "set", outer, "master", "br0"]);
    }
    srv.ip(&["addr", "add", "10.203.0.1/16", "dev", "ds"]);
    dns.ip(&["addr", "add", "10.203.0.3/16", "dev", "dd"]);
    cli.ip(&["addr", "add", "10.203.0.2/16", "dev", "dc"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dnsmasq = start_dnsmasq(&dns, d, "dd", &[]);
    let server = start_pxe_server(&srv, d, &pxe_server_config(d, "proxy", false));
    let report = storm(&cli, "dc", "proxy", "02:42:00:03:00:00");
    check(
        &report,
        &[
            ("bios", "undionly.kpxe"),
            ("uefi", "snponly.efi"),
            ("ipxe", "http://10.203.0.1/boot.ipxe"),
        ],
    );
    drop((server, dnsmasq));
}
