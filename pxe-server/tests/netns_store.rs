//! Several pxe-server instances sharing one PostgreSQL (`[store] backend = "postgres"`), each in
//! its own namespace on one bridged segment with its own address, against simulated PXE ROMs
//! (`pxe-bench dhcp-storm` and `pxe-bench boot`), dhclient and iPXE in QEMU:
//!
//! - 3 instances, a 2,000-client storm: every client gets an address, every ACK on the wire is
//!   checked (no address bound to two MACs at once), the database holds each client's lease,
//!   every instance answered its share (RFC 3074 buckets), and `pxe-bench boot` then boots
//!   through the same site over TFTP;
//! - `kill -9` of one instance mid-storm: the survivors take its buckets over and the clients
//!   complete within the PXE retransmission schedule;
//! - PostgreSQL stopped and started again mid-storm: no ACK while it is down, answers resume
//!   by themselves, nothing lost or doubled;
//! - dhclient, and SeaBIOS + iPXE in QEMU, through a two-instance site.
//!
//! Root only (scripts/test.sh runs them). Each test uses its own namespaces and 10.8N.0.0/16.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pxe_testkit::capture::{Capture, DHCPACK, DhcpReply, acks_in_pcap, dhcp_replies, read_pcap};
use pxe_testkit::{
    Netns, Proc, Signal, Site, SiteSpec, SiteStore, bench_bin, dhclient, dhclient_lease_field,
    run_command, run_json, test_bytes, workspace_root,
};

/// Instances answer within the PXE ROM's real schedule (4, 8, 16, 32 s): a storm's deadline
/// covers all of it.
const STORM_DEADLINE_S: u64 = 120;

/// The config every instance shares: full DHCP on `ds` with one /16 pool of 3,070 addresses,
/// TFTP on the instance's own address from the site's `tftp` directory.
fn template(net: u8) -> String {
    format!(
        "[tftp]\nroot = \"@SITE@/tftp\"\nlisten = [\"@IP@:69\"]\nthreads = 1\n\
         [dhcp]\nenabled = true\nmode = \"full\"\ninterfaces = [\"ds\"]\nserver_ip = \"@IP@\"\n\
         lease_db = \"@DIR@/leases.redb\"\n\
         [[dhcp.subnets]]\nsubnet = \"10.{net}.0.0/16\"\nrange_start = \"10.{net}.1.1\"\n\
         range_end = \"10.{net}.12.255\"\nrouter = \"10.{net}.0.1\"\nlease_time_secs = 3600\n\
         [boot]\nbios = \"undionly.kpxe\"\nuefi_x64 = \"snponly.efi\"\nipxe_script = \"boot.ipxe\"\n"
    )
}

/// The served files of the simulated boots (random contents, seeded by the position).
const FILES: [(&str, usize); 3] = [
    ("undionly.kpxe", 64 * 1024 + 123),
    ("snponly.efi", 160 * 1024 + 7),
    ("boot.ipxe", 900),
];

/// A site of `instances` on PostgreSQL; heartbeats every 200 ms and a peer silent for 1 s
/// loses its buckets (the contract's smallest useful values: the failover test stays short).
fn pg_site(net: u8, instances: usize) -> Site {
    let mut spec = SiteSpec::new(net, instances, SiteStore::Postgres, &template(net));
    spec.store_keys = "heartbeat_ms = 200\nfailover_ms = 1000\n".into();
    start(spec)
}

fn start(mut spec: SiteSpec) -> Site {
    for (k, (name, size)) in FILES.iter().enumerate() {
        spec.files
            .push((format!("tftp/{name}"), test_bytes(*size, k as u64 + 1)));
    }
    Site::start(spec)
}

/// `pxe-bench dhcp-storm` of `clients` PXE ROMs from the client namespace, `arrival` as
/// pxe-bench takes it (`storm`, `rate:N/s`), at the ROMs' real retransmission schedule.
/// Spawned, not waited for: the caller may act mid-storm, then calls [`storm_report`].
fn spawn_storm(site: &Site, clients: u64, arrival: &str, mac_base: &str) -> Proc {
    let mut cmd = site.client().command(bench_bin().to_str().unwrap());
    cmd.args(["dhcp-storm", "--clients", &clients.to_string()])
        .args(["--mode", "full", "--interface", "dc", "--arrival", arrival])
        .args(["--mac-base", mac_base, "--timeout-scale", "1"])
        .args(["--deadline-s", &STORM_DEADLINE_S.to_string(), "--json"]);
    Proc::spawn(cmd, site.dir(), "dhcp-storm")
}

/// Waits (bounded) for the storm and returns its JSON report.
fn storm_report(mut storm: Proc) -> serde_json::Value {
    let status = storm.wait_timeout(Duration::from_secs(STORM_DEADLINE_S + 60));
    assert!(status.is_some(), "dhcp-storm outlived its deadline");
    let out = storm.stdout();
    let report: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("dhcp-storm report ({e}):\n{out}\n{}", storm.stderr()));
    eprintln!("storm: {report}");
    report
}

/// The storm's clients all succeeded, each with an address of its own.
fn assert_all_leased(report: &serde_json::Value, clients: u64) {
    assert_eq!(report["ok"], clients, "{report:#}");
    assert_eq!(report["failed"], 0, "{report:#}");
    assert_eq!(report["duplicate_addresses"], 0, "{report:#}");
    assert_eq!(report["replies_malformed"], 0, "{report:#}");
    assert_eq!(report["naks"], report["restarts"], "{report:#}");
}

/// Captures DHCP on the client's link (every reply to the ROMs crosses it).
fn capture(site: &Site) -> Capture {
    Capture::start(
        site.client(),
        "dc",
        site.dir(),
        "dhcp",
        "udp port 67 or udp port 68",
    )
}

/// No address was bound to two MACs at overlapping times; returns each MAC's last ACK.
fn check_acks(acks: &[DhcpReply]) -> HashMap<String, DhcpReply> {
    if let Some((a, b)) = pxe_testkit::capture::overlapping_bindings(acks) {
        panic!(
            "{} ACKed to {} ({a:?}) and to {} ({b:?})",
            a.yiaddr, a.mac, b.mac
        );
    }
    let mut last = HashMap::new();
    for a in acks {
        assert!(a.lease_secs.is_some(), "an ACK without a lease time: {a:?}");
        last.insert(a.mac.clone(), a.clone());
    }
    last
}

/// The `leases` table as `ip -> mac` (whatever the column types: `inet`/`text` addresses,
/// `macaddr`/`bytea`/`text` MACs are all read as text).
fn lease_rows(site: &mut Site) -> HashMap<Ipv4Addr, String> {
    let out = site.pg().sql("SELECT ip::text, mac::text FROM leases");
    let mut rows = HashMap::new();
    for line in out.lines().filter(|l| !l.is_empty()) {
        let (ip, mac) = line.split_once('|').unwrap_or_else(|| panic!("{line:?}"));
        let ip: Ipv4Addr = ip
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|e| panic!("lease ip {ip:?}: {e}"));
        assert!(
            rows.insert(ip, normal_mac(mac)).is_none(),
            "two rows for {ip}"
        );
    }
    rows
}

/// `02:42:...`, `\x0242...` or `0242...` as `02:42:...`.
fn normal_mac(s: &str) -> String {
    let hex: String = s
        .trim_start_matches("\\x")
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_lowercase();
    assert_eq!(hex.len(), 12, "not a MAC: {s:?}");
    (0..6)
        .map(|i| &hex[2 * i..2 * i + 2])
        .collect::<Vec<_>>()
        .join(":")
}

/// Every client's last ACK is in the database: the row of its address names its MAC (nothing
/// lost, nothing given to someone else since), and no MAC holds two of the ACKed addresses.
fn assert_leases_stored(site: &mut Site, last: &HashMap<String, DhcpReply>) {
    let rows = lease_rows(site);
    let mut seen = HashSet::new();
    for (mac, ack) in last {
        assert_eq!(
            rows.get(&ack.yiaddr).map(String::as_str),
            Some(mac.as_str()),
            "{mac} was ACKed {} ({ack:?}); the database says {:?}",
            ack.yiaddr,
            rows.get(&ack.yiaddr)
        );
        assert!(
            seen.insert(ack.yiaddr),
            "{} is the last ACK of two MACs",
            ack.yiaddr
        );
    }
}

/// The buckets (of 256) instance `i` owns, as `pxe-server status --json` shows them
/// (`store.buckets`).
fn buckets(site: &Site, i: usize) -> u32 {
    let out = site.servers[i].status_with(&["--json"]);
    let doc: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("status of {} ({e}):\n{out}", Site::name(i)));
    doc["store"]["buckets"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or_else(|| {
            panic!(
                "no store.buckets in the status of {}:\n{out}",
                Site::name(i)
            )
        })
}

/// Waits (at most 10 s: a few heartbeats) until the site's instances have shared the 256
/// buckets between them, none left out, and returns each one's share.
fn settled_shares(site: &Site) -> Vec<u32> {
    let n = site.servers.len();
    let mut shares = Vec::new();
    let settled = pxe_testkit::wait_until(Duration::from_secs(10), || {
        shares = (0..n).map(|i| buckets(site, i)).collect();
        shares.iter().sum::<u32>() == 256 && shares.iter().all(|&b| b > 0)
    });
    assert!(
        settled,
        "the instances did not share the buckets: {shares:?}"
    );
    shares
}

/// The ACKs in `acks` per server identifier.
fn acks_per_server(acks: &[DhcpReply]) -> BTreeMap<Ipv4Addr, usize> {
    let mut per = BTreeMap::new();
    for a in acks {
        *per.entry(a.server_id.expect("an ACK names its server"))
            .or_default() += 1;
    }
    per
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn three_instances_one_postgres_storm_of_2000_then_boot_over_tftp() {
    let t0 = Instant::now();
    let mut site = pg_site(81, 3);
    // The instances share the 256 buckets between them, none left out.
    let shares = settled_shares(&site);
    assert_eq!(shares.len(), 3);

    let cap = capture(&site);
    let report = storm_report(spawn_storm(&site, 2000, "storm", "02:81:00:00:00:00"));
    assert_all_leased(&report, 2000);

    // pxe-bench boot through the same site: DHCP from whichever instance owns the client's
    // bucket, then the boot file over TFTP from that instance (next-server), byte-exact.
    // Each simulated machine fetches from an address of its own (outside the pool, in the
    // site's /16), as 60 machines would: one address would meet the per-client session bound.
    for k in 1..=60 {
        site.client()
            .ip(&["addr", "add", &format!("10.81.200.{k}/16"), "dev", "dc"]);
    }
    let mut cmd = site.client().command(bench_bin().to_str().unwrap());
    cmd.args(["boot", "--clients", "60", "--mac-base", "02:81:01:00:00:00"])
        .args(["--source-base", "10.81.200.1", "--source-count", "60"])
        .args([
            "--interface",
            "dc",
            "--deadline-s",
            "90",
            "--json",
            "--no-progress",
        ])
        .arg("--verify-dir")
        .arg(site.dir().join("tftp"));
    let (status, boot) = run_json(cmd, "pxe-bench boot", Duration::from_secs(150));
    eprintln!("boot: {boot}");
    assert!(status.success(), "{boot:#}");
    assert_eq!(boot["ok"], 60, "{boot:#}");
    assert_eq!(boot["failed"], 0, "{boot:#}");
    assert_eq!(boot["phases"]["boot_file"]["count"], 60, "{boot:#}");

    let acks = acks_in_pcap(&cap.stop());
    let last = check_acks(&acks);
    assert_eq!(last.len(), 2060, "{} clients ACKed on the wire", last.len());
    // Every instance answered its share: each is the server of some ACKs, and only they are.
    let per = acks_per_server(&acks);
    let addrs: Vec<Ipv4Addr> = (0..3).map(|i| site.addr(i)).collect();
    assert_eq!(per.keys().copied().collect::<Vec<_>>(), addrs, "{per:?}");
    assert_leases_stored(&mut site, &last);
    eprintln!(
        "3-instance storm: {} ACKs checked, {per:?}, took {:?}",
        acks.len(),
        t0.elapsed()
    );
}

#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn kill9_of_one_instance_mid_storm_its_buckets_are_taken_over() {
    let t0 = Instant::now();
    let mut site = pg_site(82, 3);
    let before = settled_shares(&site);
    let cap = capture(&site);
    // 2,000 ROMs arriving at 200/s: the storm lasts 10 s, the kill comes 3 s in.
    let storm = spawn_storm(&site, 2000, "rate:200/s", "02:82:00:00:00:00");
    std::thread::sleep(Duration::from_secs(3));
    let killed_at = unix_now();
    let dead = site.addr(1);
    {
        let p = site.servers[1].proc();
        p.signal(Signal::KILL);
        assert!(
            p.wait_timeout(Duration::from_secs(5)).is_some(),
            "pxe2 survived SIGKILL"
        );
    }
    // The survivors take the dead instance's buckets (failover_ms = 1 s; bounded wait).
    let taken = pxe_testkit::wait_until(Duration::from_secs(20), || {
        buckets(&site, 0) + buckets(&site, 2) == 256
    });
    let after = (buckets(&site, 0), buckets(&site, 2));
    assert!(taken, "buckets before {before:?}, survivors now {after:?}");
    assert!(
        after.0 > before[0] && after.1 > before[2],
        "{before:?} -> {after:?}"
    );

    let report = storm_report(storm);
    let file = cap.stop();
    let bytes = std::fs::read(&file).unwrap();
    let replies = dhcp_replies(&read_pcap(&bytes));
    let acks: Vec<DhcpReply> = replies
        .iter()
        .filter(|r| r.msg_type == DHCPACK)
        .cloned()
        .collect();
    let last = check_acks(&acks);
    // Every client completed within the ROM's schedule, the dead instance's from the
    // survivors: those it left between its OFFER and its ACK too (their REQUEST names it; the
    // new owner of their bucket ACKs in its name).
    assert_eq!(report["failed"], 0, "{report:#}");
    assert_eq!(report["ok"], 2000, "{report:#}");
    assert_eq!(last.len(), 2000);
    assert_eq!(report["duplicate_addresses"], 0, "{report:#}");
    // After the kill, nothing came from the dead instance, and the survivors served clients
    // that started after it (its buckets included: all 256 are theirs).
    assert!(
        acks.iter().all(|a| a.src != dead || a.at < killed_at + 0.5),
        "an ACK from the killed instance after the kill"
    );
    let taken_over = acks
        .iter()
        .filter(|a| a.server_id == Some(dead) && a.src != dead)
        .count();
    let late = acks.iter().filter(|a| a.at > killed_at + 2.0).count();
    assert!(late > 0, "no ACK after the takeover");
    assert_leases_stored(&mut site, &last);
    eprintln!(
        "kill -9 mid-storm: {} ACKs, {taken_over} in the dead instance's name, \
         {} other replies, buckets {before:?} -> {after:?}, took {:?}",
        acks.len(),
        replies.len() - acks.len(),
        t0.elapsed()
    );
}

#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn postgres_restarted_mid_storm_answers_pause_and_resume_nothing_lost_or_doubled() {
    let t0 = Instant::now();
    let mut site = pg_site(83, 3);
    let cap = capture(&site);
    let storm = spawn_storm(&site, 2000, "rate:200/s", "02:83:00:00:00:00");
    std::thread::sleep(Duration::from_secs(3));
    site.pg().stop();
    let down_at = unix_now();
    // While it is down the instances say so, and answer nothing that needs a commit.
    let said = pxe_testkit::wait_until(Duration::from_secs(10), || {
        site.servers[0].status_with(&[]).contains("(down")
    });
    assert!(
        said,
        "status does not say the store is down:\n{}",
        site.servers[0].status_with(&[])
    );
    std::thread::sleep(Duration::from_secs(2));
    let up_at = unix_now();
    site.pg().start_again();
    let report = storm_report(storm);
    assert_all_leased(&report, 2000);
    let acks = acks_in_pcap(&cap.stop());
    let last = check_acks(&acks);
    assert_eq!(last.len(), 2000);
    // An ACK goes out only after its commit: none while the database was down (a margin for
    // a commit that completed just before the stop and the capture's timestamps).
    let during: Vec<&DhcpReply> = acks
        .iter()
        .filter(|a| a.at > down_at + 0.2 && a.at < up_at)
        .collect();
    assert!(
        during.is_empty(),
        "ACKs while PostgreSQL was down: {during:?}"
    );
    assert!(
        acks.iter().any(|a| a.at < down_at),
        "no ACK before the stop"
    );
    assert!(
        acks.iter().any(|a| a.at > up_at),
        "no ACK after the restart"
    );
    assert_leases_stored(&mut site, &last);
    for i in 0..3 {
        assert!(
            site.servers[i].is_running(),
            "{} exited:\n{}",
            Site::name(i),
            site.servers[i].log()
        );
    }
    eprintln!(
        "PostgreSQL restart mid-storm: {} ACKs, took {:?}",
        acks.len(),
        t0.elapsed()
    );
}

#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn dhclient_gets_a_lease_through_a_two_instance_site() {
    let mut site = pg_site(84, 2);
    let dir = site.dir().to_owned();
    let r = dhclient(
        site.client(),
        &dir,
        "dhclient",
        None,
        "dc",
        Duration::from_secs(60),
    );
    assert!(r.success(), "dhclient failed:\n{}", r.all());
    let leased = std::fs::read_to_string(dir.join("dhclient.leases")).unwrap();
    let field = |key: &str| dhclient_lease_field(&leased, key);
    let ip: Ipv4Addr = field("fixed-address ").parse().unwrap();
    let server: Ipv4Addr = field("option dhcp-server-identifier ").parse().unwrap();
    assert!(
        (Ipv4Addr::new(10, 84, 1, 1)..=Ipv4Addr::new(10, 84, 12, 255)).contains(&ip),
        "{ip} is outside the pool"
    );
    assert!([site.addr(0), site.addr(1)].contains(&server), "{server}");
    let mac = mac_of(site.client(), "dc");
    let rows = lease_rows(&mut site);
    assert_eq!(rows.get(&ip), Some(&mac), "{rows:?}");
}

fn mac_of(ns: &Netns, dev: &str) -> String {
    let r = ns.run(
        &["cat", &format!("/sys/class/net/{dev}/address")],
        Duration::from_secs(5),
    );
    assert!(r.success(), "{r}");
    r.stdout.trim().to_owned()
}

/// scripts/qemu-assets.sh: iPXE's undionly.kpxe, the boot script, Debian's kernel and the
/// test initrd that prints `PXE-BOOT-OK bios|uefi`.
fn qemu_assets() -> PathBuf {
    let mut cmd = Command::new("bash");
    cmd.arg(workspace_root().join("scripts/qemu-assets.sh"))
        .arg(workspace_root().join("target/qemu-assets"));
    let r = run_command(cmd, Duration::from_secs(600));
    assert!(r.success(), "qemu-assets.sh failed: {r}");
    PathBuf::from(
        r.stdout
            .lines()
            .last()
            .expect("the assets directory")
            .trim(),
    )
}

/// SeaBIOS with QEMU's iPXE option ROM on a tap bridged to the site's segment: iPXE gets its
/// address and script from the site (whichever instance owns its bucket), the kernel and
/// initrd over TFTP from that instance, and the initrd prints its marker. Runs under the lock
/// of scripts/qemu-boot.sh (one TCG guest at a time).
#[test]
#[ignore = "needs root, network namespaces and QEMU (run by scripts/test.sh)"]
fn ipxe_in_qemu_boots_through_a_two_instance_site() {
    let assets = qemu_assets();
    let net = 85;
    let tpl = template(net).replace("root = \"@SITE@/tftp\"", &format!("root = {assets:?}"));
    let mut spec = SiteSpec::new(net, 2, SiteStore::Postgres, &tpl);
    spec.store_keys = "heartbeat_ms = 200\nfailover_ms = 1000\n".into();
    let mut site = Site::start(spec);
    let cli = site.client();
    // The VM's tap and the client's link on one bridge inside the client namespace.
    cli.ip(&["link", "add", "br0", "type", "bridge"]);
    cli.ip(&[
        "link",
        "set",
        "br0",
        "type",
        "bridge",
        "stp_state",
        "0",
        "forward_delay",
        "0",
    ]);
    cli.ip(&["tuntap", "add", "tap0", "mode", "tap"]);
    for dev in ["dc", "tap0"] {
        cli.ip(&["link", "set", dev, "master", "br0"]);
        cli.ip(&["link", "set", dev, "up"]);
    }
    cli.ip(&["link", "set", "br0", "up"]);
    let dir: &Path = site.dir();
    let serial = dir.join("serial.log");
    std::fs::write(dir.join("sercon-port"), [0xf8, 0x03]).unwrap();
    let mut cmd = cli.command("flock");
    cmd.args([
        "-w",
        "900",
        "/run/pxe-server-qemu-boot.lock",
        "qemu-system-x86_64",
    ])
    .args([
        "-name",
        "pxe-store-site",
        "-accel",
        "tcg",
        "-m",
        "512",
        "-smp",
        "1",
    ])
    .args(["-display", "none", "-monitor", "none", "-no-reboot"])
    .arg("-serial")
    .arg(format!("file:{}", serial.display()))
    .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
    .args(["-machine", "pc", "-vga", "none", "-fw_cfg"])
    .arg(format!(
        "name=etc/sercon-port,file={}",
        dir.join("sercon-port").display()
    ))
    .args([
        "-device",
        "virtio-net-pci,netdev=n0,mac=52:54:00:85:00:10,bootindex=0",
    ]);
    let mut qemu = Proc::spawn(cmd, dir, "qemu");
    let booted = pxe_testkit::wait_until(Duration::from_secs(900 + 240), || {
        assert!(
            qemu.is_running() || marker(&serial),
            "QEMU exited:\n{}",
            qemu.stderr()
        );
        marker(&serial)
    });
    qemu.kill();
    let console = String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
    assert!(booted, "no PXE-BOOT-OK bios on the console:\n{console}");
    // The VM's lease is in the shared database.
    let rows = lease_rows(&mut site);
    assert!(rows.values().any(|m| m == "52:54:00:85:00:10"), "{rows:?}");
}

fn marker(serial: &Path) -> bool {
    std::fs::read(serial)
        .map(|b| String::from_utf8_lossy(&b).contains("PXE-BOOT-OK bios"))
        .unwrap_or(false)
}
