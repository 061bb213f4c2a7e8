//! `pxe-bench dhcp-storm` against real DHCP servers in network namespaces the tests create:
//! pxe-server in full mode, dnsmasq in full mode, and pxe-server in proxy mode next to dnsmasq
//! (addresses only). Each storm of 200 simulated ROMs must complete, every client with the boot
//! file of its architecture and an address of its own; a NAK (dnsmasq's "address in use" under a
//! storm) only restarts a client, as it does firmware.
//!
//! Root only (scripts/test.sh runs them with PXE_REQUIRE_PRIVILEGED=1). A test that cannot run
//! (not root, no namespaces, no server binary, no dnsmasq) fails loudly; it never passes.
//!
//! The pxe-server binary is this workspace's `target/debug/pxe-server` (built by
//! `cargo nextest run --workspace`, or `cargo build -p pxe-server`), or `$PXE_SERVER_BIN`.

use std::path::Path;
use std::time::Duration;

use pxe_testkit::{Netns, Proc, PxeServer, bench_bin, lan, netns, run_json, start_dnsmasq};

const CLIENTS: u64 = 200;

/// Runs the storm in `ns` (bounded) and returns its JSON report.
fn storm(ns: &Netns, iface: &str, mode: &str, mac_base: &str) -> serde_json::Value {
    let mut cmd = ns.command(bench_bin().to_str().unwrap());
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
    // Every client got its lease in the end, so every NAK was followed by a fresh DISCOVER.
    assert_eq!(report["naks"], report["restarts"], "{report:#}");
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

/// pxe-server with a `dir/tftp` root.
fn pxe_server(ns: &Netns, dir: &Path, config: &str) -> PxeServer {
    std::fs::create_dir_all(dir.join("tftp")).unwrap();
    PxeServer::start(ns, dir, config)
}

/// dnsmasq handing out 10.203.1.0 - 10.203.4.255 on `iface`, plus `extra`.
fn dnsmasq(ns: &Netns, dir: &Path, iface: &str, extra: &[&str]) -> Proc {
    let iface = format!("--interface={iface}");
    let mut args = vec![
        iface.as_str(),
        "--dhcp-range=10.203.1.0,10.203.4.255,255.255.0.0,1h",
    ];
    args.extend_from_slice(extra);
    start_dnsmasq(ns, dir, &args)
}

/// Server namespace (`ds` 10.203.0.1/16) and client namespace (`dc`, no address) on a veth.
fn pair() -> (Netns, Netns) {
    netns::pair(("srv", "ds", Some("10.203.0.1/16")), ("cli", "dc", None))
}

#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn storm_200_clients_full_mode_pxe_server() {
    let (srv, cli) = pair();
    let dir = tempfile::tempdir().unwrap();
    let server = pxe_server(
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
    let dnsmasq = dnsmasq(
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
    let net = lan(&[
        ("srv", "ds", Some("10.203.0.1/16")),
        ("dnsm", "dd", Some("10.203.0.3/16")),
        ("cli", "dc", Some("10.203.0.2/16")),
    ]);
    let [srv, dns, cli] = &net.hosts[..] else {
        unreachable!()
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dnsmasq = dnsmasq(dns, d, "dd", &[]);
    let server = pxe_server(srv, d, &pxe_server_config(d, "proxy", false));
    let report = storm(cli, "dc", "proxy", "02:42:00:03:00:00");
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
