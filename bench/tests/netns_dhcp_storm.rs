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

use std::path::Path;
use std::time::Duration;

mod common;

use common::*;
const CLIENTS: u64 = 200;

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
    let (status, report) = run_json(cmd, "dhcp-storm", Duration::from_secs(90));
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
