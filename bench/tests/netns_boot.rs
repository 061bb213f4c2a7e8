//! `pxe-bench boot` (the whole-boot simulator) against real servers in network namespaces the
//! tests create: a storm of 50 clients of mixed architectures (DHCP, boot file, 1 MiB kernel,
//! 3 MiB initrd, each from its own source address) must complete byte-exact against pxe-server
//! (full mode), against dnsmasq (DHCP + TFTP), and against pxe-server in proxy mode next to
//! dnsmasq (addresses only); a storm of 200 against dnsmasq with a tight pool completes even
//! though dnsmasq NAKs clients (they restart, as firmware does); a server path that drops
//! packets must show up as retransmissions, and a server that corrupts a block as failures with
//! exit status 1.
//! With `--http-base`, the kernel and initrd come over HTTP (pxe-server's `[http]`): the same
//! storm completes byte-exact on one keep-alive connection per client, and an HTTP server that
//! misbehaves (short body, 404, silence, nothing listening) shows up as failures by cause.
//!
//! Root only (scripts/test.sh runs them with PXE_REQUIRE_PRIVILEGED=1). A test that cannot run
//! (not root, no namespaces, no server binary, no dnsmasq, no nft, no python3) fails loudly; it
//! never passes.
//!
//! The pxe-server binary is this workspace's `target/debug/pxe-server` (built by
//! `cargo nextest run --workspace`, or `cargo build -p pxe-server`), or `$PXE_SERVER_BIN`.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use pxe_testkit::{
    Netns, Proc, PxeServer, bench_bin, cannot_run, lan, netns, run_json, start_dnsmasq, test_bytes,
};

const CLIENTS: u64 = 50;

/// The served files: name and size (random contents, seeded by the position).
const FILES: [(&str, usize); 5] = [
    ("undionly.kpxe", 64 * 1024 + 123),
    ("snponly.efi", 160 * 1024 + 7),
    ("boot.ipxe", 900),
    ("vmlinuz", 1 << 20),
    ("initrd.img", 3 << 20),
];

fn write_files(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    for (k, (name, size)) in FILES.iter().enumerate() {
        std::fs::write(root.join(name), test_bytes(*size, k as u64 + 1)).unwrap();
    }
}

fn size_of_file(name: &str) -> u64 {
    FILES.iter().find(|f| f.0 == name).unwrap().1 as u64
}

/// The first of the clients' TFTP source addresses (one per client, on the client's `bc`).
const SOURCE_BASE: Ipv4Addr = Ipv4Addr::new(10, 204, 1, 1);

/// Server namespace (`bs` 10.204.0.1/16) and client namespace (`bc` 10.204.0.2/16 plus one
/// address per client from 10.204.1.1) on a veth.
fn pair(clients: u64) -> (Netns, Netns) {
    let (srv, cli) = netns::pair(
        ("srv", "bs", Some("10.204.0.1/16")),
        ("cli", "bc", Some("10.204.0.2/16")),
    );
    cli.add_addresses("bc", SOURCE_BASE, clients as u32, 16);
    (srv, cli)
}

/// Runs `pxe-bench boot` with `CLIENTS` clients in `ns` (bounded); see [`boot_n`].
fn boot(ns: &Netns, args: &[&str]) -> (std::process::ExitStatus, serde_json::Value) {
    boot_n(ns, CLIENTS, args)
}

/// Runs `pxe-bench boot` with `clients` clients in `ns` with `args` (bounded) and returns its
/// exit status and JSON report.
fn boot_n(
    ns: &Netns,
    clients: u64,
    args: &[&str],
) -> (std::process::ExitStatus, serde_json::Value) {
    let mut cmd = ns.command(bench_bin().to_str().unwrap());
    cmd.args(["boot", "--clients", &clients.to_string()])
        .args(["--source-base", &SOURCE_BASE.to_string(), "--source-count"])
        .arg(clients.to_string())
        .args([
            "--interface",
            "bc",
            "--deadline-s",
            "60",
            "--json",
            "--no-progress",
        ])
        .args(args);
    let (status, report) = run_json(cmd, "pxe-bench boot", Duration::from_secs(100));
    eprintln!("boot storm ({args:?}): {report}");
    (status, report)
}

/// Every one of `CLIENTS` clients booted: DHCP, boot file, kernel and initrd, byte-exact
/// (--verify-dir), and the bytes add up.
fn check_complete(status: std::process::ExitStatus, r: &serde_json::Value, boot: &[(&str, &str)]) {
    check_booted(status, r, CLIENTS, boot, &["vmlinuz", "initrd.img"]);
}

/// Every one of `clients` clients booted: DHCP, the boot file of its architecture (`boot`) and
/// then `then` (kernel and initrd, or nothing), byte-exact (--verify-dir), and the bytes add
/// up. Every NAK was followed by a restart (all clients got a lease in the end).
fn check_booted(
    status: std::process::ExitStatus,
    r: &serde_json::Value,
    clients: u64,
    boot: &[(&str, &str)],
    then: &[&str],
) {
    assert!(status.success(), "exit status {status}: {r:#}");
    assert_eq!(r["ok"], clients, "{r:#}");
    assert_eq!(r["failed"], 0, "{r:#}");
    assert_eq!(r["dhcp_naks"], r["dhcp_restarts"], "{r:#}");
    let phases = ["dhcp", "boot_file", "total"]
        .into_iter()
        .chain(["kernel", "initrd"].into_iter().take(then.len()));
    for phase in phases {
        assert_eq!(r["phases"][phase]["count"], clients, "{phase}: {r:#}");
        assert!(
            r["phases"][phase]["p50_us"].as_u64().unwrap() > 0,
            "{phase}"
        );
    }
    let mut expected = 0;
    let mut total = 0;
    for (arch, file) in boot {
        let a = &r["per_arch"][arch];
        let n = a["ok"].as_u64().unwrap_or(0);
        assert!(n > 0, "no {arch} client: {r:#}");
        assert_eq!(a["boot_files"][file], n, "{arch} boot files: {r:#}");
        expected += n * (size_of_file(file) + then.iter().map(|f| size_of_file(f)).sum::<u64>());
        total += n;
    }
    assert_eq!(total, clients);
    assert_eq!(r["bytes"], expected, "payload bytes: {r:#}");
    assert!(r["last_finished_s"].as_f64().unwrap() > 0.0);
    assert!(r["goodput_mbit_s"].as_f64().unwrap() > 0.0);
    assert!(r["cpu_percent"].as_f64().is_some());
}

const BOOT_FILES: [(&str, &str); 3] = [
    ("bios", "undionly.kpxe"),
    ("uefi", "snponly.efi"),
    ("ipxe", "boot.ipxe"),
];

/// pxe-server on 10.204.0.1 (`bs`) serving [`FILES`] over TFTP from `dir/tftp`, with DHCP in
/// full mode (pool 10.204.2.0 - 10.204.4.255) or proxy mode (`full` false: boot files only).
fn pxe_server(ns: &Netns, dir: &Path, full: bool) -> PxeServer {
    pxe_server_with(ns, dir, full, "")
}

/// [`pxe_server`] with `extra` appended to its config (e.g. an `[http]` section).
fn pxe_server_with(ns: &Netns, dir: &Path, full: bool, extra: &str) -> PxeServer {
    let root = dir.join("tftp");
    write_files(&root);
    let mut config = format!(
        "[tftp]\nroot = \"{r}\"\nlisten = [\"10.204.0.1:69\"]\nthreads = 1\n\
         [dhcp]\nenabled = true\nmode = \"{mode}\"\ninterfaces = [\"bs\"]\n\
         lease_db = \"{d}/leases.redb\"\n",
        r = root.display(),
        d = dir.display(),
        mode = if full { "full" } else { "proxy" },
    );
    if full {
        config.push_str(
            "[[dhcp.subnets]]\nsubnet = \"10.204.0.0/16\"\nrange_start = \"10.204.2.0\"\n\
             range_end = \"10.204.4.255\"\nrouter = \"10.204.0.1\"\n",
        );
    }
    config.push_str(&format!(
        "[boot]\nbios = \"undionly.kpxe\"\nuefi_x64 = \"snponly.efi\"\nipxe_script = \"boot.ipxe\"\n\
         {extra}"
    ));
    PxeServer::start(ns, dir, &config)
}

/// dnsmasq on `bs` (DHCP from `range`, `extra` on top: PXE boot files, TFTP).
fn dnsmasq(ns: &Netns, dir: &Path, range: &str, extra: &[&str]) -> Proc {
    let range = format!("--dhcp-range={range},255.255.0.0,1h");
    let mut args = vec!["--interface=bs", range.as_str()];
    args.extend_from_slice(extra);
    start_dnsmasq(ns, dir, &args)
}

/// dnsmasq as the whole boot infrastructure (DHCP with the boot file per architecture, and
/// TFTP of `root`).
fn dnsmasq_with_tftp(ns: &Netns, dir: &Path, range: &str, root: &Path) -> Proc {
    let tftp_root = format!("--tftp-root={}", root.display());
    dnsmasq(
        ns,
        dir,
        range,
        &[
            "--enable-tftp",
            &tftp_root,
            "--tftp-max=1000",
            "--dhcp-match=set:efi64,option:client-arch,7",
            "--dhcp-userclass=set:ipxe,iPXE",
            "--dhcp-boot=tag:!efi64,tag:!ipxe,undionly.kpxe",
            "--dhcp-boot=tag:efi64,snponly.efi",
            "--dhcp-boot=tag:ipxe,boot.ipxe",
        ],
    )
}

fn full_storm_args(root: &Path) -> Vec<String> {
    vec![
        "--kernel".into(),
        "vmlinuz".into(),
        "--initrd".into(),
        "initrd.img".into(),
        "--verify-dir".into(),
        root.display().to_string(),
        "--timeout-scale".into(),
        "0.25".into(),
        "--mac-base".into(),
        "02:42:00:05:00:00".into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn storm_50_clients_pxe_server_byte_exact() {
    let (srv, cli) = pair(CLIENTS);
    let dir = tempfile::tempdir().unwrap();
    let server = pxe_server(&srv, dir.path(), true);
    let args = full_storm_args(&dir.path().join("tftp"));
    let (status, r) = boot(&cli, &strs(&args));
    check_complete(status, &r, &BOOT_FILES);
    drop(server);
}

/// `--stall-after kernel --stall-clients 5`: five clients fetch their boot file and kernel and
/// stop there; they are reported apart, not as failures, and the run succeeds. A metrics URL
/// nobody answers costs the run nothing: its failed scrapes are counted.
#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn stalled_clients_are_reported_apart_and_a_dead_metrics_url_is_not_fatal() {
    let (srv, cli) = pair(CLIENTS);
    let dir = tempfile::tempdir().unwrap();
    let server = pxe_server(&srv, dir.path(), true);
    let mut args = full_storm_args(&dir.path().join("tftp"));
    args.extend(
        [
            "--stall-after",
            "kernel",
            "--stall-clients",
            "5",
            "--metrics-url",
            "http://10.204.0.1:9469/metrics",
            "--metrics-interval-ms",
            "200",
        ]
        .map(String::from),
    );
    let (status, r) = boot(&cli, &strs(&args));
    assert!(status.success(), "exit status {status}: {r:#}");
    assert_eq!(r["stalled"], 5, "{r:#}");
    assert_eq!(r["stalled_after"], "kernel");
    assert_eq!(r["ok"], CLIENTS - 5, "{r:#}");
    assert_eq!(r["failed"], 0, "{r:#}");
    assert_eq!(
        r["phases"]["kernel"]["count"], CLIENTS,
        "the stalled did fetch the kernel"
    );
    assert_eq!(r["phases"]["initrd"]["count"], CLIENTS - 5);
    let s = &r["server"];
    assert_eq!(s["scrapes"], 0, "{s:#}");
    assert!(
        s["scrape_failures"]["connect-refused"].as_u64() >= Some(2),
        "{s:#}"
    );
    drop(server);
}

/// pxe-server sends a TFTP window as one UDP GSO burst; the simulator's GRO sockets take each
/// burst as one receive and split it back into blocks (byte-exact). With `--no-gro` every
/// block is a receive of its own.
#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn windows_arrive_as_one_receive_with_gro() {
    let (srv, cli) = pair(CLIENTS);
    let dir = tempfile::tempdir().unwrap();
    let server = pxe_server(&srv, dir.path(), true);
    let mut per_receive = vec![];
    for gro in [true, false] {
        let mut args = full_storm_args(&dir.path().join("tftp"));
        args.extend(["--windowsize".into(), "16".into()]);
        if !gro {
            args.push("--no-gro".into());
        }
        let (status, r) = boot(&cli, &strs(&args));
        check_complete(status, &r, &BOOT_FILES);
        assert_eq!(r["gro"], gro, "{r:#}");
        let p = &r["packets"];
        let received = p["tftp_received"].as_u64().unwrap();
        let receives = p["tftp_receives"].as_u64().unwrap();
        assert!(receives > 0 && received >= receives, "{p}");
        per_receive.push(received as f64 / receives as f64);
    }
    // 4 MiB per client in blocks of 1432/1468 bytes and windows of 16: most receives carry a
    // whole window with GRO; without it, one datagram each.
    assert!(
        per_receive[0] > 4.0,
        "datagrams per receive with GRO: {per_receive:?}"
    );
    assert_eq!(per_receive[1], 1.0, "without GRO: {per_receive:?}");
    drop(server);
}

#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn storm_50_clients_dnsmasq_dhcp_and_tftp_byte_exact() {
    let (srv, cli) = pair(CLIENTS);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("tftp");
    write_files(&root);
    let dnsmasq = dnsmasq_with_tftp(&srv, d, "10.204.2.0,10.204.4.255", &root);
    let mut args = full_storm_args(&root);
    args[9] = "02:42:00:06:00:00".into();
    let (status, r) = boot(&cli, &strs(&args));
    check_complete(status, &r, &BOOT_FILES);
    drop(dnsmasq);
}

/// Proxy mode: dnsmasq (10.204.0.3, no PXE options) gives the addresses, pxe-server in proxy
/// mode (10.204.0.1) answers the PXE half on port 67 (and 4011) and serves the files over TFTP,
/// all on one bridged segment. pxe-server's proxy OFFER names the boot file and tells the
/// firmware to boot it (discovery control 8), so clients, like firmware, go straight to TFTP.
#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn proxy_storm_50_clients_pxe_server_next_to_dnsmasq_byte_exact() {
    let net = lan(&[
        ("srv", "bs", Some("10.204.0.1/16")),
        ("dnsm", "bs", Some("10.204.0.3/16")),
        ("cli", "bc", Some("10.204.0.2/16")),
    ]);
    let [srv, dns, cli] = &net.hosts[..] else {
        unreachable!()
    };
    cli.add_addresses("bc", SOURCE_BASE, CLIENTS as u32, 16);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dnsmasq = dnsmasq(dns, d, "10.204.2.0,10.204.4.255", &[]);
    let server = pxe_server(srv, d, false);
    let mut args = full_storm_args(&d.join("tftp"));
    args[9] = "02:42:00:08:00:00".into();
    args.extend(["--mode".into(), "proxy".into()]);
    let (status, r) = boot(cli, &strs(&args));
    check_complete(status, &r, &BOOT_FILES);
    assert_eq!(r["mode"], "proxy", "{r:#}");
    // The addresses came from dnsmasq: its lease file has one per client.
    let leases = std::fs::read_to_string(d.join("dnsmasq.leases")).unwrap_or_default();
    assert_eq!(leases.lines().count() as u64, CLIENTS, "{leases}");
    // pxe-server ran in proxy mode, with its boot server port 4011 open.
    let log = server.log();
    let ready = log.lines().find(|l| l.contains("DHCP service ready"));
    assert!(
        ready.is_some_and(|l| l.contains("Proxy") && l.contains(":4011")),
        "{log}"
    );
    drop((server, dnsmasq));
}

/// 200 clients storm dnsmasq (DHCP + TFTP of the boot file) with a pool a little larger than
/// the storm (256 addresses). dnsmasq starts its search for a free address at a hash of the
/// MAC and does not remember what it offered, so under a storm it offers one address to
/// several clients and NAKs all but the first REQUEST ("address in use"); the MAC range here
/// crosses a byte boundary, which makes those hashes collide (about 70 NAKs per run here). A
/// NAKed client restarts at DISCOVER, as firmware does, so every client still boots,
/// byte-exact, and the NAKs are reported.
#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn storm_200_clients_dnsmasq_all_boot_despite_naks() {
    const STORM: u64 = 200;
    let (srv, cli) = pair(STORM);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("tftp");
    write_files(&root);
    let dnsmasq = dnsmasq_with_tftp(&srv, d, "10.204.2.0,10.204.2.255", &root);
    let root_s = root.display().to_string();
    let args = [
        "--verify-dir",
        &root_s,
        "--timeout-scale",
        "0.25",
        "--mac-base",
        // Clients 0-127 end in ff:80-ff:ff, 128-199 in 00:00-00:47 of the next prefix.
        "02:42:00:09:ff:80",
    ];
    let (status, r) = boot_n(&cli, STORM, &args);
    eprintln!(
        "dnsmasq storm: {} NAKs, {} restarts, DHCP p50 {} us max {} us",
        r["dhcp_naks"],
        r["dhcp_restarts"],
        r["phases"]["dhcp"]["p50_us"],
        r["phases"]["dhcp"]["max_us"]
    );
    check_booted(status, &r, STORM, &BOOT_FILES, &[]);
    assert!(
        r["dhcp_naks"].as_u64().unwrap() > 0,
        "no NAK from dnsmasq: the restart path was not exercised (did dnsmasq's address \
         choice change?): {r:#}"
    );
    // Every client holds an address of its own.
    let leases = std::fs::read_to_string(d.join("dnsmasq.leases")).unwrap();
    let addrs: std::collections::HashSet<&str> = leases
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(addrs.len() as u64, STORM, "{leases}");
    drop(dnsmasq);
}

/// nftables in the server namespace drops one UDP datagram in 200 leaving the TFTP server (not
/// DHCP): every client still boots byte-exact, and the losses show up as TFTP retransmissions.
#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn dropped_packets_show_up_as_retransmissions() {
    let (srv, cli) = pair(CLIENTS);
    let dir = tempfile::tempdir().unwrap();
    let server = pxe_server(&srv, dir.path(), true);
    let rules = "table inet lossy {\n chain out {\n  type filter hook output priority 0;\n  \
                 udp sport != 67 numgen random mod 200 == 0 counter drop\n }\n}\n";
    let path = dir.path().join("lossy.nft");
    std::fs::write(&path, rules).unwrap();
    match srv
        .command("nft")
        .args(["-f", path.to_str().unwrap()])
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => cannot_run(&format!("nft -f: {}", String::from_utf8_lossy(&o.stderr))),
        Err(e) => cannot_run(&format!("running nft: {e}")),
    }
    let mut args = full_storm_args(&dir.path().join("tftp"));
    args[9] = "02:42:00:07:00:00".into();
    // Short client timeouts keep the test quick; the deadline covers the retries.
    args.extend([
        "--tftp-timeout-ms".into(),
        "200".into(),
        "--tftp-retries".into(),
        "12".into(),
    ]);
    let (status, r) = boot(&cli, &strs(&args));
    let out = srv
        .command("nft")
        .args(["list", "table", "inet", "lossy"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    eprintln!("{listing}");
    assert!(
        !listing.contains("packets 0 "),
        "nft dropped nothing: {listing}"
    );
    check_complete(status, &r, &BOOT_FILES);
    assert!(
        r["retransmits"]["tftp"].as_u64().unwrap() > 0,
        "losses must show up as TFTP retransmissions: {r:#}"
    );
    drop(server);
}

/// A TFTP server (a tiny Python one) that flips a byte of block 3 of every transfer: every
/// client fails with verify-mismatch-boot_file, and the exit status is 1. A second run against
/// it asks for a file it answers with ERROR 1: tftp-error-1-boot_file.
#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn corrupting_server_is_reported_as_failures() {
    let (srv, cli) = pair(CLIENTS);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("tftp");
    write_files(&root);
    let script = d.join("bad_tftp.py");
    std::fs::write(&script, BAD_TFTP).unwrap();
    let mut cmd = srv.command("python3");
    cmd.arg(&script).arg(&root).arg("10.204.0.1");
    let mut server = Proc::spawn(cmd, d, "bad-tftp");
    server.wait_for("serving");
    let root_s = root.display().to_string();
    let base = [
        "--skip-dhcp",
        "--tftp-server",
        "10.204.0.1",
        "--verify-dir",
        &root_s,
        "--tftp-timeout-ms",
        "300",
        "--tftp-retries",
        "3",
    ];
    let mut args = base.to_vec();
    args.extend(["--boot-file", "undionly.kpxe"]);
    let (status, r) = boot(&cli, &args);
    assert_eq!(
        status.code(),
        Some(1),
        "failures must give exit status 1: {r:#}"
    );
    assert_eq!(r["ok"], 0, "{r:#}");
    assert_eq!(r["failed"], CLIENTS, "{r:#}");
    assert_eq!(r["failures"]["verify-mismatch-boot_file"], CLIENTS, "{r:#}");
    assert_eq!(r["phases"]["total"]["count"], 0, "{r:#}");

    // Without --verify-dir (the file is in no verify directory either).
    let mut args = base.to_vec();
    args.drain(3..5);
    args.extend(["--boot-file", "missing.bin"]);
    let (status, r) = boot(&cli, &args);
    assert_eq!(status.code(), Some(1), "{r:#}");
    assert_eq!(r["failures"]["tftp-error-1-boot_file"], CLIENTS, "{r:#}");
    drop(server);
}

/// A deliberately broken TFTP server: OACK with what was asked (blksize, tsize, windowsize),
/// then the file with the first byte of block 3 flipped; ERROR 1 for a missing file. One thread,
/// one socket per transfer, bounded lifetime (120 s).
const BAD_TFTP: &str = r#"
import os, select, socket, struct, sys, time
root, addr = sys.argv[1], sys.argv[2]
ls = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ls.bind((addr, 69))
print("serving", file=sys.stderr, flush=True)
xfers = {}  # socket -> dict
end = time.time() + 120
def opts(parts):
    o = {}
    for i in range(0, len(parts) - 1, 2):
        o[parts[i].decode().lower()] = parts[i + 1].decode()
    return o
def send_window(x):
    blk, win = x["blksize"], x["win"]
    for b in range(x["acked"] + 1, min(x["acked"] + win, x["nblocks"]) + 1):
        data = bytearray(x["data"][(b - 1) * blk:b * blk])
        if b == 3 and data:
            data[0] ^= 0xff
        x["sock"].sendto(struct.pack("!HH", 3, b & 0xffff) + bytes(data), x["peer"])
while time.time() < end:
    r, _, _ = select.select([ls] + list(xfers), [], [], 1.0)
    for s in r:
        pkt, peer = s.recvfrom(2048)
        if s is ls:
            if len(pkt) < 4 or struct.unpack("!H", pkt[:2])[0] != 1:
                continue
            parts = pkt[2:].split(b"\0")
            name, o = parts[0].decode(), opts(parts[2:])
            path = os.path.join(root, name)
            t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            t.bind((addr, 0))
            if not os.path.isfile(path):
                t.sendto(struct.pack("!HH", 5, 1) + b"not found\0", peer)
                t.close()
                continue
            data = open(path, "rb").read()
            blk = int(o.get("blksize", 512))
            x = {"sock": t, "peer": peer, "data": data, "blksize": blk,
                 "win": int(o.get("windowsize", 1)), "acked": 0,
                 "nblocks": len(data) // blk + 1}
            oack = b""
            for k in ("blksize", "tsize", "windowsize"):
                if k in o:
                    v = str(len(data)) if k == "tsize" else o[k]
                    oack += k.encode() + b"\0" + v.encode() + b"\0"
            xfers[t] = x
            t.sendto(struct.pack("!H", 6) + oack, peer)
        else:
            x = xfers[s]
            if len(pkt) < 4 or struct.unpack("!H", pkt[:2])[0] != 4:
                continue
            blk = struct.unpack("!H", pkt[2:4])[0]
            if blk < x["acked"] & 0xffff and blk + 65536 - (x["acked"] & 0xffff) < 1000:
                blk += 65536
            x["acked"] = (x["acked"] & ~0xffff) | blk
            if x["acked"] >= x["nblocks"]:
                s.close()
                del xfers[s]
            else:
                send_window(x)
"#;

/// DHCP and the boot file over TFTP, then the kernel and the initrd over HTTP from pxe-server's
/// `[http]` service: all 50 clients boot byte-exact, each on one keep-alive connection.
#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn storm_50_clients_kernel_and_initrd_over_http_byte_exact() {
    let (srv, cli) = pair(CLIENTS);
    let dir = tempfile::tempdir().unwrap();
    let http = "[http]\nenabled = true\nlisten = [\"10.204.0.1:80\"]\n";
    let mut server = pxe_server_with(&srv, dir.path(), true, http);
    server.wait_for("HTTP service ready");
    let mut args = full_storm_args(&dir.path().join("tftp"));
    args[9] = "02:42:00:08:00:00".into();
    args.extend(["--http-base".into(), "http://10.204.0.1/".into()]);
    let (status, r) = boot(&cli, &strs(&args));
    check_complete(status, &r, &BOOT_FILES);
    let t = &r["transports"];
    assert_eq!(
        (&t["dhcp"], &t["boot_file"], &t["kernel"], &t["initrd"]),
        (
            &"dhcp".into(),
            &"tftp".into(),
            &"http".into(),
            &"http".into()
        ),
        "{r:#}"
    );
    assert_eq!(r["http"]["requests"], 2 * CLIENTS, "{r:#}");
    assert_eq!(
        r["http"]["connections"], CLIENTS,
        "kernel and initrd on one keep-alive connection per client: {r:#}"
    );
    drop(server);
}

/// A deliberately broken HTTP server: `/stall` sends a head and 3 bytes of 1000, then nothing;
/// any other existing file is announced whole (Content-Length) but only its first half is sent
/// before the close; a missing file gets 404. 30 s per connection at most, 120 s in all.
const BAD_HTTP: &str = r#"
import os, socketserver, sys, threading, time
root, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
threading.Timer(120, os._exit, [0]).start()
class H(socketserver.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline(8192)
        while True:
            h = self.rfile.readline(8192)
            if h in (b"\r\n", b"\n", b""):
                break
        parts = line.split()
        name = os.path.basename(parts[1].decode()) if len(parts) > 1 else ""
        path = os.path.join(root, name)
        if name == "stall":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc")
            self.wfile.flush()
            time.sleep(30)
        elif name and os.path.isfile(path):
            data = open(path, "rb").read()
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data)
            self.wfile.write(head + data[: len(data) // 2])
        else:
            self.wfile.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")
class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 256
server = S((addr, port), H)
print("serving", file=sys.stderr, flush=True)
server.serve_forever()
"#;

/// HTTP-only runs (no DHCP, no boot file) against the broken server above: every client fails,
/// by the right cause, with exit status 1: a body shorter than its Content-Length
/// (http-short-body), a 404 (http-status-404), a server that goes silent (http-timeout), and a
/// port where nothing listens (http-refused).
#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn misbehaving_http_server_is_reported_as_failures() {
    let (srv, cli) = pair(CLIENTS);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("tftp");
    write_files(&root);
    let script = d.join("bad_http.py");
    std::fs::write(&script, BAD_HTTP).unwrap();
    let mut cmd = srv.command("python3");
    cmd.arg(&script).arg(&root).args(["10.204.0.1", "8080"]);
    let mut server = Proc::spawn(cmd, d, "bad-http");
    server.wait_for("serving");
    let root_s = root.display().to_string();
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "--http-base",
                "http://10.204.0.1:8080/",
                "--kernel",
                "vmlinuz",
                "--initrd",
                "initrd.img",
                "--verify-dir",
                &root_s,
            ],
            "http-short-body-kernel",
        ),
        (
            &[
                "--http-base",
                "http://10.204.0.1:8080/",
                "--kernel",
                "missing.bin",
            ],
            "http-status-404-kernel",
        ),
        (
            &[
                "--http-base",
                "http://10.204.0.1:8080/",
                "--initrd",
                "stall",
                "--http-timeout-ms",
                "500",
            ],
            "http-timeout-initrd",
        ),
        (
            &[
                "--http-base",
                "http://10.204.0.1:8081/",
                "--kernel",
                "vmlinuz",
            ],
            "http-refused-kernel",
        ),
    ];
    for (extra, cause) in cases {
        let mut args = vec!["--skip-dhcp"];
        args.extend_from_slice(extra);
        let (status, r) = boot(&cli, &args);
        assert_eq!(
            status.code(),
            Some(1),
            "failures must give exit status 1: {r:#}"
        );
        assert_eq!(r["ok"], 0, "{r:#}");
        assert_eq!(r["failures"][cause], CLIENTS, "{cause}: {r:#}");
        assert_eq!(r["phases"]["total"]["count"], 0, "{r:#}");
        assert!(r["transports"].get("boot_file").is_none(), "{r:#}");
        if cause == "http-short-body-kernel" {
            // Half of the kernel per client arrived (and was counted) before the close.
            assert_eq!(r["bytes"], CLIENTS * (size_of_file("vmlinuz") / 2), "{r:#}");
        }
    }
    drop(server);
}
