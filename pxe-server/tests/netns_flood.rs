//! The server under a flood, with its default limits: 10,000 TFTP read requests from 1,000
//! spoofed source addresses (addresses that never acknowledge anything), and 2,000 HTTP
//! connections that ask for a file and never read it, all at once, while real clients (atftp,
//! curl over TFTP and over HTTP) in the same client namespace fetch their boot files. Each
//! real client must complete; the test prints the time from the start of the flood until each
//! one's first complete transfer (the time to recovery) and checks that the flood did hit:
//! unverified transfers were evicted and expired, nobody was refused, the slow readers were cut
//! and both kinds of pressure were logged.
//!
//! The spoofed addresses are 1,000 extra addresses of the client namespace (routed from the
//! server through the client), so a flood datagram leaves with a source the server cannot tell
//! from a real machine's; each request comes from a socket that is closed at once, as a
//! spoofer never hears the answer.
//!
//! Needs root and `ip netns`: `#[ignore]`d and run by scripts/test.sh. Run as non-root it
//! fails loudly.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use pxe_testkit::testnet::{Client, Engine, Server, TestNet};
use pxe_testkit::{sha256_file, test_bytes, wait_until};
use rustix::net::{AddressFamily, SocketType, sockopt};

/// Spoofed source addresses, and read requests sent from each.
const FLOOD_ADDRS: u32 = 1000;
const RRQS_PER_ADDR: u32 = 10;
/// HTTP connections that never read, spread over the spoofed addresses (two each, under the
/// per-client cap of 32).
const SLOW_READERS: u32 = 2000;
/// The first spoofed address (the rest follow it).
const FIRST_SPOOFED: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// A failure-detection ceiling, not a speed target: recovery is printed, never compared with
/// a duration of its own.
const CEILING: Duration = Duration::from_secs(60);

pxe_testkit::both_engines! {
    real_clients_boot_through_a_spoofed_rrq_flood_and_slow_readers => case_flood;
}

fn spoofed(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(FIRST_SPOOFED) + i % FLOOD_ADDRS)
}

/// `SLOW_READERS` connections to `server`, each from a spoofed address, each sending one GET
/// for `path` and then reading nothing (a 4 KiB receive buffer, so the server's writes stall
/// at once). Runs inside the client namespace; the sockets are returned open.
fn slow_readers(server: SocketAddrV4, path: &str) -> Vec<TcpStream> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    (0..SLOW_READERS)
        .map(|i| {
            let fd: OwnedFd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None)
                .expect("tcp socket");
            sockopt::set_socket_recv_buffer_size(&fd, 4096).expect("SO_RCVBUF");
            rustix::net::bind(&fd, &SocketAddrV4::new(spoofed(i), 0)).expect("bind");
            rustix::net::connect(&fd, &server).expect("connect");
            let mut s = TcpStream::from(fd);
            s.write_all(request.as_bytes()).expect("send the request");
            s
        })
        .collect()
}

/// Sends `RRQS_PER_ADDR` read requests for `name` from each spoofed address, each from a new
/// socket closed right after its request. Runs inside the client namespace.
fn rrq_flood(server: SocketAddrV4, name: &str) -> u32 {
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(name.as_bytes());
    rrq.extend_from_slice(b"\0octet\0");
    let mut sent = 0;
    for i in 0..FLOOD_ADDRS * RRQS_PER_ADDR {
        let sock = UdpSocket::bind(SocketAddrV4::new(spoofed(i), 0)).expect("bind");
        if sock.send_to(&rrq, server).is_ok() {
            sent += 1;
        }
    }
    sent
}

/// Runs `fetch` until it succeeds, at most until `CEILING` after `start`; returns the time from
/// `start` to the end of the successful run and the number of attempts.
fn until_fetched(start: Instant, what: &str, mut fetch: impl FnMut() -> bool) -> (Duration, u32) {
    let mut attempts = 0;
    loop {
        attempts += 1;
        if fetch() {
            return (start.elapsed(), attempts);
        }
        assert!(
            start.elapsed() < CEILING,
            "{what} did not get its file within {CEILING:?} of the flood ({attempts} attempts)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn counter(server: &Server, service: &str, name: &str) -> u64 {
    let s = server.status();
    s[service]["metrics"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {service}.metrics.{name} in the status: {s}"))
}

fn case_flood(engine: Engine) {
    pxe_net::raise_fd_limit().expect("raise the open-file limit");
    let net = TestNet::new();
    // The defaults, except a TFTP table smaller than the flood (4,000 of 10,000 by default: a
    // flood of exactly the table's size would fill it only if no request were lost on the way,
    // and the point is a table under pressure), and a 2 s send-rate window (30 s by default)
    // so the slow readers are cut within the test's time.
    let extra = format!(
        "max_sessions = 4000\n\n[http]\nenabled = true\nlisten = [\"{}:80\"]\n\
         send_rate_window_ms = 2000\n",
        net.server_ip
    );
    let server = Server::start(&net, engine, &extra);
    let boot = server.put("boot.bin", &test_bytes(1 << 20, 71));
    server.put("big.bin", &test_bytes(8 << 20, 72));
    net.client
        .add_addresses("eth0", FIRST_SPOOFED, FLOOD_ADDRS, 32);
    net.server.ip(&[
        "route",
        "add",
        "10.200.0.0/16",
        "via",
        &net.client_ip.to_string(),
    ]);
    let tftp = SocketAddrV4::new(net.server_ip, 69);
    let http = SocketAddrV4::new(net.server_ip, 80);

    let readers = net.client.enter(move || slow_readers(http, "/big.bin"));
    assert_eq!(readers.len(), SLOW_READERS as usize);
    let held = wait_until(Duration::from_secs(30), || {
        counter(&server, "http", "connections_accepted") >= u64::from(SLOW_READERS)
    });
    assert!(
        held,
        "the slow readers were not all accepted: {}",
        server.status()
    );

    let out = server.scratch();
    let started = Instant::now();
    let (sent, atftp, curl_tftp, curl_http) = std::thread::scope(|s| {
        let flood = s.spawn(|| net.client.enter(move || rrq_flood(tftp, "boot.bin")));
        let atftp = s.spawn(|| {
            let file = out.join("atftp.out");
            let client = Client::Atftp {
                blksize: Some(1468),
                windowsize: None,
            };
            until_fetched(started, "atftp", || {
                let run = client.get(&net, "boot.bin", &file, Duration::from_secs(20));
                run.success() && sha256_file(&file).ok().as_deref() == Some(boot.as_str())
            })
        });
        let curl_tftp = s.spawn(|| {
            let file = out.join("curl-tftp.out");
            let client = Client::Curl {
                blksize: Some(1468),
            };
            until_fetched(started, "curl (TFTP)", || {
                let run = client.get(&net, "boot.bin", &file, Duration::from_secs(20));
                run.success() && sha256_file(&file).ok().as_deref() == Some(boot.as_str())
            })
        });
        let curl_http = s.spawn(|| {
            let file = out.join("curl-http.out");
            let url = format!("http://{}/boot.bin", net.server_ip);
            let path = file.to_str().expect("utf-8 path").to_owned();
            until_fetched(started, "curl (HTTP)", || {
                let argv = ["curl", "-sS", "--max-time", "20", "-o", &path, &url];
                let run = net.in_client(&argv, Duration::from_secs(25));
                run.success() && sha256_file(&file).ok().as_deref() == Some(boot.as_str())
            })
        });
        (
            flood.join().expect("flood thread"),
            atftp.join().expect("atftp thread"),
            curl_tftp.join().expect("curl tftp thread"),
            curl_http.join().expect("curl http thread"),
        )
    });
    let flood_rrqs = FLOOD_ADDRS * RRQS_PER_ADDR;
    assert_eq!(sent, flood_rrqs, "the flood was not sent whole");
    eprintln!(
        "[{}] time to recovery from the start of the flood ({flood_rrqs} spoofed RRQs from \
         {FLOOD_ADDRS} addresses, {SLOW_READERS} slow HTTP readers): atftp {:.2?} ({} attempts), \
         curl TFTP {:.2?} ({} attempts), curl HTTP {:.2?} ({} attempts)",
        engine.name(),
        atftp.0,
        atftp.1,
        curl_tftp.0,
        curl_tftp.1,
        curl_http.0,
        curl_http.1
    );

    // The flood hit: most requests reached the server and the unverified share overflowed, so
    // the oldest unacknowledged transfers were evicted; nobody got "server busy".
    let status = server.status();
    let m = &status["tftp"]["metrics"];
    let get = |k: &str| {
        m[k].as_u64()
            .unwrap_or_else(|| panic!("no tftp {k}: {status}"))
    };
    assert!(
        get("requests_received") >= u64::from(flood_rrqs) / 2,
        "the flood did not reach the server: {status}"
    );
    assert!(get("evicted_unverified") > 0, "no eviction: {status}");
    assert_eq!(get("refused_limit"), 0, "{status}");
    eprintln!("[{}] tftp after the flood: {m}", engine.name());
    // Every flood transfer ends unacknowledged within the unverified lifetime: the table
    // drains to nothing.
    let drained = wait_until(Duration::from_secs(20), || {
        let s = server.status();
        let m = &s["tftp"]["metrics"];
        let n = |k: &str| m[k].as_u64().unwrap_or(0);
        let ended = [
            "completed",
            "timed_out",
            "client_error",
            "aborted",
            "evicted",
        ]
        .iter()
        .map(|o| n(&format!("sessions_{o}")))
        .sum::<u64>();
        ended == n("sessions_started")
    });
    assert!(drained, "flood transfers still held: {}", server.status());
    let m = server.status()["tftp"]["metrics"].clone();
    assert!(
        m["unverified_expired"].as_u64() > Some(0),
        "no flood transfer expired unverified: {m}"
    );
    // Every evicted transfer was ended by its engine as evicted, not left to run out its
    // retransmissions.
    let evicted =
        m["evicted_unverified"].as_u64().unwrap_or(0) + m["evicted_finished"].as_u64().unwrap_or(0);
    assert_eq!(m["sessions_evicted"].as_u64(), Some(evicted), "{m}");

    // The slow readers are cut by the send rate (two 2 s windows of waiting), counted, and
    // logged once per 10 s.
    let cut = wait_until(Duration::from_secs(30), || {
        counter(&server, "http", "send_rate_cuts") >= u64::from(SLOW_READERS)
    });
    assert!(cut, "slow readers not all cut: {}", server.status());
    drop(readers);
    let log = server.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("TFTP transfer evicted before its first ACK")),
        "no eviction warning:\n{log}"
    );
    let cuts = log
        .lines()
        .filter(|l| l.contains("HTTP connection cut"))
        .count();
    assert!(
        (1..=1 + CEILING.as_secs() as usize / 10).contains(&cuts),
        "{cuts} send-rate warnings:\n{log}"
    );
}
