//! The XDP program on a veth inside a namespace, in driver and in SKB mode: DHCP frames crafted
//! with scapy in the peer namespace (PXE DISCOVERs from many MACs, non-PXE DISCOVERs, one MAC's
//! flood, a non-DHCP datagram), then the program's per-CPU counters and a UDP socket on port 67
//! behind it show what was dropped and that dropped frames never reached userspace. Then the
//! daemon: its status and SIGHUP reloads, a leftover program replaced, and real clients
//! (perfdhcp, dhclient) answered while a flood of plain and same-MAC DISCOVERs runs.
//!
//! Root only (scripts/test.sh runs it). Uses its own namespaces and 10.79.N.0/24.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use pxe_ebpf::{COUNTER_COUNT, Counter, POLICY_DROP_NON_PXE, POLICY_RATE_LIMIT, Policy};
use pxe_server::xdp::XdpChoice;
use pxe_server::xdp::{Placement, PolicySet, XdpFilter};
use pxe_testkit::{
    Netns, Proc, PxeServer, ServeOptions, Signal, dhclient, pair, perfdhcp_block, require_root,
    veth, wait_until,
};

const PXE_MACS: usize = 20;
const NON_PXE: usize = 30;
const FLOOD: usize = 60;
const BURST: u32 = 5;
/// Plain (non-PXE) DISCOVERs with one 802.1Q tag, and as many with two (802.1ad + 802.1Q).
const VLAN_EACH: usize = 8;

/// Sends the frames from `iface`: PXE DISCOVERs from PXE_MACS MACs, NON_PXE plain DISCOVERs,
/// FLOOD PXE DISCOVERs from one MAC, VLAN_EACH plain DISCOVERs with one VLAN tag and VLAN_EACH
/// with two (the program must parse through the tags to drop them as not PXE), and one UDP
/// datagram to port 68 (not DHCP to a server).
const SCAPY: &str = r#"
import sys
from scapy.all import Ether, Dot1Q, Dot1AD, IP, UDP, BOOTP, DHCP, sendp
iface, n_pxe, n_plain, n_flood = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
n_vlan = int(sys.argv[5])
def frame(mac, vendor, xid, tags=()):
    opts = [("message-type", "discover")]
    if vendor:
        opts.append(("vendor_class_id", vendor))
    opts.append("end")
    raw = bytes.fromhex(mac.replace(":", ""))
    l2 = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff")
    for t in tags:
        l2 = l2 / t
    return (l2 / IP(src="0.0.0.0", dst="255.255.255.255")
            / UDP(sport=68, dport=67) / BOOTP(op=1, chaddr=raw + bytes(10), xid=xid)
            / DHCP(options=opts))
pxe = b"PXEClient:Arch:00000:UNDI:002001"
frames = [frame("02:00:00:00:01:%02x" % i, pxe, i) for i in range(n_pxe)]
frames += [frame("02:00:00:00:02:%02x" % i, None, 1000 + i) for i in range(n_plain)]
frames += [frame("02:00:00:00:03:01", pxe, 2000 + i) for i in range(n_flood)]
frames += [frame("02:00:00:00:05:%02x" % i, None, 3000 + i, (Dot1Q(vlan=100),))
           for i in range(n_vlan)]
frames += [frame("02:00:00:00:06:%02x" % i, None, 4000 + i, (Dot1AD(vlan=10), Dot1Q(vlan=20)))
           for i in range(n_vlan)]
frames.append(Ether(src="02:00:00:00:04:01", dst="ff:ff:ff:ff:ff:ff")
              / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=67, dport=68) / (b"x" * 300))
sendp(frames, iface=iface, verbose=False)
print("sent", len(frames))
"#;

/// Sends the scapy frames from `iface` in `ns`.
fn send_frames(ns: &Netns, iface: &str, vlan_each: usize) {
    let out = ns
        .command("/usr/bin/python3")
        .args([
            "-c",
            SCAPY,
            iface,
            &PXE_MACS.to_string(),
            &NON_PXE.to_string(),
            &FLOOD.to_string(),
            &vlan_each.to_string(),
        ])
        .output()
        .expect("running scapy");
    assert!(
        out.status.success(),
        "scapy failed (is python3-scapy installed? scripts/install-deps.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_mode(choice: XdpChoice, want: Placement, net: u8) {
    require_root();
    let (srv, cli) = pair(
        ("xsrv", "xs", Some(&format!("10.79.{net}.1/24"))),
        ("xcli", "xc", None),
    );
    // A rate far below the flood's: over the flood only the burst (and at most a token or two
    // refilled while it runs) passes.
    let set = PolicySet {
        policy: Policy {
            flags: POLICY_DROP_NON_PXE | POLICY_RATE_LIMIT,
            rate_per_sec: 1,
            burst: BURST,
            _pad: 0,
        },
        ..PolicySet::default()
    };
    let (filter, socket) = srv.enter(move || {
        let mut f = XdpFilter::load(&set).expect("loading the XDP program (verifier)");
        let placement = f.attach("xs", choice);
        assert_eq!(placement, want, "attach in {choice:?}");
        let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 67)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        (f, s)
    });
    send_frames(&cli, "xc", VLAN_EACH);
    let tagged = 2 * VLAN_EACH as u64;
    let total = (PXE_MACS + NON_PXE + FLOOD) as u64 + tagged;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut c = [0u64; COUNTER_COUNT as usize];
    while Instant::now() < deadline {
        c = filter.counters().expect("reading the counters");
        if c[Counter::Seen as usize] >= total {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // What reached the socket behind the program (bounded: stops at the first quiet 300 ms).
    let mut buf = [0u8; 2048];
    let mut received = 0u64;
    for _ in 0..total * 2 {
        match socket.recv_from(&mut buf) {
            Ok(_) => received += 1,
            Err(_) => break,
        }
    }
    drop(filter);
    let [seen, passed, not_pxe, rate, denied, malformed] = c;
    eprintln!(
        "{choice:?}: seen={seen} passed={passed} not_pxe={not_pxe} rate={rate} denied={denied} \
         malformed={malformed} received={received}"
    );
    assert_eq!(
        seen, total,
        "every DHCP frame seen once, the port-68 datagram not at all"
    );
    assert_eq!(
        not_pxe,
        NON_PXE as u64 + tagged,
        "plain DISCOVERs dropped, tagged ones too"
    );
    assert_eq!(denied, 0);
    assert_eq!(malformed, 0);
    let flood_passed = passed - PXE_MACS as u64;
    assert!(
        (u64::from(BURST)..=u64::from(BURST) + 2).contains(&flood_passed),
        "the flood passed {flood_passed}, want the burst of {BURST} (+ a refill)"
    );
    assert_eq!(rate, FLOOD as u64 - flood_passed);
    assert_eq!(passed + not_pxe + rate, seen);
    assert_eq!(
        received, passed,
        "the socket behind the program got exactly what passed"
    );
}

#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn xdp_driver_mode_filters_dhcp() {
    run_mode(XdpChoice::Driver, Placement::Driver, 1);
}

#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn xdp_skb_mode_filters_dhcp() {
    run_mode(XdpChoice::Skb, Placement::Skb, 2);
}

/// `name=N` in the last log line that contains `marker`.
fn counter(log: &str, marker: &str, name: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no {marker:?} line in the log:\n{log}"));
    let pat = format!("{name}=");
    let at = line
        .match_indices(&pat)
        .find(|(i, _)| {
            *i == 0
                || !line.as_bytes()[i - 1].is_ascii_alphanumeric() && line.as_bytes()[i - 1] != b'_'
        })
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        .0;
    line[at + pat.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// The daemon with `[xdp]`: the same frames, filtered by XDP (SKB mode) or by the userspace
/// fallback (`mode = "off"`); either way the responder receives only what passed. Then a
/// SIGHUP with `drop_non_pxe = false` changes the policy in place (the XDP maps or the
/// fallback), and the same frames again let the plain DISCOVERs through. Counters are read
/// with `pxe-server status` while it runs and from the log at exit.
fn daemon(mode: &str, net: u8) {
    require_root();
    let (srv, cli) = pair(
        ("dsrv", "xs", Some(&format!("10.79.{net}.1/24"))),
        ("dcli", "xc", None),
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::create_dir_all(dir.path().join("tftp")).unwrap();
    let config = |drop_non_pxe: bool| {
        format!(
            "[tftp]\nroot = \"{d}/tftp\"\nlisten = [\"10.79.{net}.1:69\"]\nthreads = 1\n\
             [dhcp]\nenabled = true\nmode = \"proxy\"\ninterfaces = [\"xs\"]\n\
             [boot]\nbios = \"undionly.kpxe\"\n\
             [xdp]\nmode = \"{mode}\"\ndrop_non_pxe = {drop_non_pxe}\nrate_per_sec = 1\nburst = {BURST}\n"
        )
    };
    let mut server = PxeServer::start_with(&srv, dir.path(), &config(true), ServeOptions::debug());
    let (key, want_placement) = if mode == "off" {
        ("userspace", "userspace")
    } else {
        assert!(server.log().contains("XDP attached"), "{}", server.log());
        ("xdp", mode)
    };
    let status = server.status();
    assert_eq!(
        status["filter"]["interfaces"][0]["placement"], want_placement,
        "{status:#}"
    );
    // No tagged frames here: they never reach a socket (no VLAN interface), so the
    // responder's count could not equal what passed once plain DHCP is let through.
    let first_round = Instant::now();
    send_frames(&cli, "xc", 0);
    let total = (PXE_MACS + NON_PXE + FLOOD) as u64;
    let filter_counter = |s: &serde_json::Value, name: &str| -> u64 {
        s["filter"][key][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no filter.{key}.{name} in {s:#}"))
    };
    // The status while it runs: every frame judged, and the responder got what passed.
    let mut s = serde_json::Value::Null;
    let settled = wait_until(Duration::from_secs(10), || {
        s = server.status();
        filter_counter(&s, "seen") == total
            && s["dhcp"]["metrics"]["received"].as_u64() == Some(filter_counter(&s, "passed"))
    });
    assert!(settled, "counters did not settle: {s:#}");
    assert_eq!(filter_counter(&s, "dropped_not_pxe"), NON_PXE as u64);
    let passed = filter_counter(&s, "passed");
    let rate = filter_counter(&s, "dropped_rate");
    assert_eq!(passed + rate + NON_PXE as u64, total);
    let first_pass = PXE_MACS as u64 + u64::from(BURST);
    assert!((first_pass..=first_pass + 2).contains(&passed), "{s:#}");

    // Reload: plain DHCP now passes; the rate limit (and the buckets) stay.
    let last = server.reload(&config(false));
    assert_eq!(last["ok"], true, "{last:#}");
    assert_eq!(last["needs_restart"], serde_json::json!([]), "{last:#}");
    assert!(server.log().contains("configuration reloaded"));
    send_frames(&cli, "xc", 0);
    // The flood MAC's bucket refills at 1/s (up to BURST) between the rounds: how long that
    // was depends on the machine (each round starts a Python interpreter), so it is measured.
    let refill = (first_round.elapsed().as_secs_f64().ceil() as u64).min(u64::from(BURST));
    let settled = wait_until(Duration::from_secs(10), || {
        s = server.status();
        filter_counter(&s, "seen") == 2 * total
            && s["dhcp"]["metrics"]["received"].as_u64() == Some(filter_counter(&s, "passed"))
    });
    assert!(settled, "counters did not settle after the reload: {s:#}");
    assert_eq!(
        filter_counter(&s, "dropped_not_pxe"),
        NON_PXE as u64,
        "no plain DISCOVER dropped after the reload: {s:#}"
    );
    // Second round: every PXE MAC and every plain MAC has tokens; the flood MAC only what
    // refilled (1/s) since the first round (one more for a token that refilled during it).
    let second = filter_counter(&s, "passed") - passed;
    let base = (PXE_MACS + NON_PXE) as u64;
    assert!(
        (base..=base + refill + 1).contains(&second),
        "{second} passed ({refill} s of refill): {s:#}"
    );

    // A bad file is refused with its line, and the running policy stays.
    let last = server.reload("[xdp]\nrate_per_sec = \"fast\"\n");
    assert_eq!(last["ok"], false, "{last:#}");
    let err = last["error"].as_str().unwrap();
    assert!(err.contains("pxe.toml:2: xdp.rate_per_sec"), "{err}");
    assert_eq!(server.status()["filter"]["policy"]["drop_non_pxe"], false);

    let log = server.stop();
    let marker = if mode == "off" {
        "userspace DHCP filter counters"
    } else {
        "XDP filter counters"
    };
    assert_eq!(counter(&log, marker, "seen"), 2 * total, "{log}");
    // The responder saw exactly what passed.
    assert_eq!(
        counter(&log, "DHCP service stopped", "received"),
        counter(&log, marker, "passed"),
        "{log}"
    );
}

#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn daemon_filters_with_xdp() {
    daemon("skb", 3);
}

#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn daemon_filters_in_userspace() {
    daemon("off", 4);
}

/// The shared table of frames through the verified program in the kernel
/// (`BPF_PROG_TEST_RUN`): every frame gets the verdict the host's `classify_frame` gives it and
/// the table expects, and the counters add up.
#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn xdp_program_agrees_with_the_host_on_the_shared_table() {
    use pxe_ebpf::vectors::{DENIED_MAC, TABLE_POLICY_FLAGS, expected_for_table, table};
    require_root();
    let mut set = PolicySet {
        policy: Policy {
            flags: TABLE_POLICY_FLAGS,
            ..Policy::default()
        },
        ..PolicySet::default()
    };
    set.deny.insert(DENIED_MAC);
    let filter = XdpFilter::load(&set).expect("loading the XDP program (verifier)");
    let mut host = pxe_server::xdp::Fallback::new(set.clone(), vec![]);
    let (mut runs, mut drops) = (0u64, 0u64);
    let mut want = [0u64; COUNTER_COUNT as usize];
    for (name, frame) in table() {
        if frame.len() < 14 {
            continue; // the kernel refuses test runs shorter than an Ethernet header
        }
        let action = filter
            .test_run(&frame)
            .unwrap_or_else(|e| panic!("{name}: BPF_PROG_TEST_RUN: {e}"));
        let host_verdict = host.classify_frame(&frame);
        let expected = expected_for_table(&name);
        if let Some(e) = expected {
            assert_eq!(host_verdict, e, "{name}: host");
        }
        let want_action = if host_verdict.is_drop() { 1 } else { 2 };
        assert_eq!(
            action, want_action,
            "{name}: kernel action vs host {host_verdict:?}"
        );
        runs += 1;
        drops += u64::from(action == 1);
        if let Some(c) = host_verdict.counter() {
            want[Counter::Seen as usize] += 1;
            want[c as usize] += 1;
        }
    }
    let got = filter.counters().unwrap();
    eprintln!("{runs} frames, {drops} dropped; counters {got:?}");
    assert!(runs > 600 && drops > 0);
    assert_eq!(got, want, "the kernel's counters match the host's verdicts");
}

/// The XDP program (id, name) attached to `iface` in `ns`, from `ip -d link show`.
fn attached_program(ns: &Netns, iface: &str) -> Option<(u32, String)> {
    let out = ns
        .command("ip")
        .args(["-d", "link", "show", "dev", iface])
        .output()
        .expect("ip link show");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let at = text.find("prog/xdp id ")?;
    let mut words = text[at + "prog/xdp id ".len()..].split_whitespace();
    let id = words.next()?.parse().ok()?;
    let name = match (words.next(), words.next()) {
        (Some("name"), Some(n)) => n.to_owned(),
        _ => String::new(),
    };
    Some((id, name))
}

/// A bpffs mounted on a temporary directory, unmounted on drop.
struct Bpffs(tempfile::TempDir);

impl Bpffs {
    fn mount() -> Bpffs {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot mount a bpffs on {}", dir.path().display());
        Bpffs(dir)
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

/// A program from a crashed run, attached the old way (netlink, `ip link set ... xdpgeneric`):
/// the daemon replaces it instead of stacking its own, and leaves nothing behind at exit.
#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn daemon_replaces_a_leftover_program() {
    require_root();
    let (srv, _cli) = pair(("lsrv", "xs", Some("10.79.5.1/24")), ("lcli", "xc", None));
    let fs = Bpffs::mount();
    let pin = fs.0.path().join("leftover");
    {
        let mut old = XdpFilter::load(&PolicySet::default()).expect("loading the XDP program");
        old.pin(&pin).expect("pinning");
        srv.ip(&[
            "link",
            "set",
            "dev",
            "xs",
            "xdpgeneric",
            "pinned",
            pin.to_str().unwrap(),
        ]);
        // `old` drops here: the netlink attachment keeps the program alive, like a crash would.
    }
    std::fs::remove_file(&pin).unwrap();
    let (old_id, name) = attached_program(&srv, "xs").expect("leftover attached");
    assert_eq!(name, "pxe_xdp");

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::create_dir_all(dir.path().join("tftp")).unwrap();
    let config = format!(
        "[tftp]\nroot = \"{d}/tftp\"\nlisten = [\"10.79.5.1:69\"]\nthreads = 1\n\
         [dhcp]\nenabled = true\nmode = \"proxy\"\ninterfaces = [\"xs\"]\n\
         [boot]\nbios = \"undionly.kpxe\"\n[xdp]\nmode = \"skb\"\ndrop_non_pxe = true\n"
    );
    let mut server = PxeServer::start_with(&srv, dir.path(), &config, ServeOptions::debug());
    let log = server.log();
    assert!(log.contains("XDP attached"), "{log}");
    assert!(log.contains("replaced a leftover pxe_xdp program"), "{log}");
    let (new_id, name) = attached_program(&srv, "xs").expect("our program attached");
    assert_eq!(name, "pxe_xdp");
    assert_ne!(new_id, old_id, "the leftover was replaced, not kept");
    assert_eq!(
        server.status()["filter"]["interfaces"][0]["placement"],
        "skb"
    );
    server.stop();
    assert_eq!(attached_program(&srv, "xs"), None, "detached at exit");
}

/// A DHCP flood from one UDP socket until SIGTERM: plain DISCOVERs (no vendor class) from
/// 4096 MACs in turn, interleaved with PXE DISCOVERs of one MAC, `pps` pairs per second.
/// Prints "plain same errors" when it stops.
const FLOOD_PY: &str = r#"
import signal, socket, struct, sys, time
iface, seconds, pps = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
s.bind(("0.0.0.0", 1068))
def discover(mac, xid, pxe):
    b = bytearray(236)
    b[0:3] = bytes([1, 1, 6])
    b[4:8] = struct.pack("!I", xid)
    b[10] = 0x80
    b[28:34] = mac
    opts = bytes([99, 130, 83, 99, 53, 1, 1])
    if pxe:
        v = b"PXEClient:Arch:00000:UNDI:002001"
        opts += bytes([60, len(v)]) + v + bytes([93, 2, 0, 0])
    return bytes(b) + opts + bytes([255])
plain = [discover(bytes([2, 0, 0, 7, i >> 8, i & 255]), 0x100000 + i, False) for i in range(4096)]
same = discover(bytes([2, 0, 0, 8, 0, 1]), 0x200000, True)
n_plain = n_same = errors = 0
start = time.time()
i = 0
while not stop and time.time() - start < seconds:
    for p in (plain[i % 4096], same):
        try:
            s.sendto(p, ("255.255.255.255", 67))
            if p is same:
                n_same += 1
            else:
                n_plain += 1
        except OSError:
            errors += 1
    i += 1
    ahead = start + i / pps - time.time()
    if ahead > 0:
        time.sleep(ahead)
print(n_plain, n_same, errors, flush=True)
"#;

/// Real clients while a flood runs, with the daemon's XDP program in `mode`: two veth pairs
/// (perfdhcp as a relay of 20 PXE clients and the flood on one, dhclient on the other); the
/// flood's plain DISCOVERs and its one MAC's excess are dropped in XDP, a plain dhclient gets
/// nothing, and every PXE client (perfdhcp's 20, a dhclient sending the PXE vendor class) is
/// answered; what reached the responder is exactly what XDP passed.
fn real_clients_under_flood(mode: &str, net: u8) {
    require_root();
    let (srv, cli) = pair(("fsrv", "xs", None), ("fcli", "xc", None));
    veth(&srv, "ys", &cli, "yc");
    let (a, b) = (format!("10.79.{net}"), format!("10.79.{}", net + 100));
    srv.ip(&["addr", "add", &format!("{a}.1/24"), "dev", "xs"]);
    srv.ip(&["addr", "add", &format!("{b}.1/24"), "dev", "ys"]);
    cli.ip(&["addr", "add", &format!("{a}.2/24"), "dev", "xc"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::create_dir_all(dir.path().join("tftp")).unwrap();
    let (rate, burst) = (2u64, 4u64);
    let config = format!(
        "[tftp]\nroot = \"{d}/tftp\"\nlisten = [\"{a}.1:69\"]\nthreads = 1\n\
         [dhcp]\nenabled = true\nmode = \"full\"\ninterfaces = [\"xs\", \"ys\"]\n\
         lease_db = \"{d}/leases.redb\"\n\
         [[dhcp.subnets]]\nsubnet = \"{a}.0/24\"\nrange_start = \"{a}.100\"\nrange_end = \"{a}.149\"\n\
         [[dhcp.subnets]]\nsubnet = \"{b}.0/24\"\nrange_start = \"{b}.100\"\nrange_end = \"{b}.149\"\n\
         [boot]\nbios = \"undionly.kpxe\"\n\
         [xdp]\nmode = \"{mode}\"\ndrop_non_pxe = true\nrate_per_sec = {rate}\nburst = {burst}\n"
    );
    let mut server = PxeServer::start_with(&srv, dir.path(), &config, ServeOptions::debug());
    let status = server.status();
    for i in 0..2 {
        assert_eq!(
            status["filter"]["interfaces"][i]["placement"], mode,
            "{status:#}"
        );
    }
    let started = Instant::now();
    let mut flood_cmd = cli.command("/usr/bin/python3");
    flood_cmd.args(["-c", FLOOD_PY, "xc", "60", "5000"]);
    let mut flood = Proc::spawn(flood_cmd, dir.path(), "flood");
    std::thread::sleep(Duration::from_millis(500));

    // perfdhcp: 20 PXE clients through a relay address, DORA each, no drop allowed.
    let class_hex: String = b"PXEClient:Arch:00000:UNDI:002001"
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut cmd = cli.command("perfdhcp");
    cmd.args([
        "-4", "-r", "10", "-n", "20", "-R", "20", "-l", "xc", "-W", "2000000",
    ])
    .args(["-o", &format!("60,{class_hex}"), "-o", "93,0000"]);
    let perf = Proc::spawn(cmd, dir.path(), "perfdhcp");
    // A plain dhclient (dropped as not PXE), then one sending the PXE vendor class.
    let dhclient = |tag: &str, conf: &str| {
        let cf = dir.path().join(format!("{tag}.conf"));
        std::fs::write(&cf, conf).unwrap();
        dhclient(
            &cli,
            dir.path(),
            tag,
            Some(&cf),
            "yc",
            Duration::from_secs(40),
        )
    };
    let plain = dhclient("plain", "timeout 4;\n");
    let pxe = dhclient(
        "pxe",
        "timeout 20;\nsend vendor-class-identifier \"PXEClient:Arch:00000:UNDI:002001\";\n",
    );
    let mut perf = perf;
    let perf_status = perf.wait_timeout(Duration::from_secs(60));
    flood.signal(Signal::TERM);
    assert!(
        flood.wait_timeout(Duration::from_secs(10)).is_some(),
        "flood did not stop"
    );
    let elapsed = started.elapsed().as_secs();
    let flood_out = flood.stdout();
    let counts: Vec<u64> = flood_out
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    let [sent_plain, sent_same, _errors] = counts[..] else {
        panic!("flood output {flood_out:?}: {}", flood.stderr());
    };
    eprintln!("{mode}: flood sent {sent_plain} plain + {sent_same} same-MAC in {elapsed}s");

    let perf_out = format!("{}\n{}", perf.stdout(), perf.stderr());
    assert!(
        perf_status.is_some_and(|s| s.success()),
        "perfdhcp:\n{perf_out}"
    );
    assert_eq!(
        perfdhcp_block(&perf_out, "DISCOVER-OFFER"),
        (20, 20, 0),
        "{perf_out}"
    );
    assert_eq!(
        perfdhcp_block(&perf_out, "REQUEST-ACK"),
        (20, 20, 0),
        "{perf_out}"
    );
    assert!(
        !plain.all().contains("DHCPOFFER of"),
        "a plain client was answered:\n{}",
        plain.all()
    );
    assert!(
        pxe.all().contains(&format!("DHCPACK of {b}.")),
        "the PXE dhclient got no lease:\n{}",
        pxe.all()
    );

    // Counters: the flood was judged in XDP, and the responder got exactly what passed.
    let mut s = serde_json::Value::Null;
    let xdp = |s: &serde_json::Value, name: &str| s["filter"]["xdp"][name].as_u64().unwrap();
    let settled = wait_until(Duration::from_secs(10), || {
        s = server.status();
        s["dhcp"]["metrics"]["received"].as_u64() == Some(xdp(&s, "passed"))
    });
    assert!(settled, "responder and XDP disagree: {s:#}");
    eprintln!("{mode}: {}", s["filter"]);
    assert!(xdp(&s, "seen") >= sent_plain + sent_same, "{s:#}");
    assert!(
        xdp(&s, "dropped_not_pxe") > sent_plain,
        "every plain flood frame and the plain dhclient dropped: {s:#}"
    );
    let same_allowed = burst + rate * (elapsed + 1);
    assert!(
        xdp(&s, "dropped_rate") + same_allowed >= sent_same,
        "the same-MAC flood is held to {rate}/s: {s:#}"
    );
    assert_eq!(
        s["filter"]["userspace"]["seen"], 0,
        "interfaces with XDP are not judged twice: {s:#}"
    );
    server.stop();
}

#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn real_clients_under_flood_driver_mode() {
    real_clients_under_flood("driver", 6);
}

#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn real_clients_under_flood_skb_mode() {
    real_clients_under_flood("skb", 7);
}
