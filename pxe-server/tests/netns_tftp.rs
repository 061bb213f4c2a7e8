//! The real `pxe-server` binary in a network namespace, fetched from by real clients (atftp,
//! curl, tftp-hpa) in a second namespace over a veth pair. Every scenario runs once per engine.
//!
//! Needs root and `ip netns`: the tests are `#[ignore]`d and run by scripts/test.sh
//! (`--run-ignored all` / `--include-ignored`). Run as non-root they fail loudly.

use std::path::Path;
use std::time::{Duration, Instant};

use pxe_testkit::testnet::{Client, Engine, Server, TestNet};
use pxe_testkit::tftp::{FetchOptions, fetch};
use pxe_testkit::{Run, sha256, sha256_file, test_bytes};

const LIMIT: Duration = Duration::from_secs(120);
const ROLLOVER_LEN: usize = 100 * 1024 * 1024;

pxe_testkit::both_engines! {
    curl_exact_sizes => case_curl_exact_sizes;
    atftp_exact_sizes => case_atftp_exact_sizes;
    tftp_hpa_exact_sizes => case_tftp_hpa_exact_sizes;
    atftp_windowsizes => case_atftp_windowsizes;
    curl_rollover_100mib => case_curl_rollover;
    atftp_rollover_100mib => case_atftp_rollover;
    loss_5pct_atftp => case_loss_atftp;
    loss_5pct_curl_and_windowed => case_loss_curl_and_windowed;
    refusals => case_refusals;
    client_timeout_capped => case_client_timeout_capped;
    busy_refusals_are_logged => case_busy_refusals_are_logged;
}

/// Fetches `remote` with `client` and asserts the output file's sha256 is `want`.
fn get_exact(net: &TestNet, server: &Server, client: Client, remote: &str, want: &str) {
    let out = server
        .scratch()
        .join(format!("{}.out", remote.replace('/', "_")));
    let _ = std::fs::remove_file(&out);
    let run = client.get(net, remote, &out, LIMIT);
    assert!(
        run.success(),
        "{} failed to fetch {remote} from the {} engine: {run}",
        client.name(),
        server.engine.name()
    );
    let got = sha256_file(&out).unwrap_or_else(|e| {
        panic!(
            "{} reported success but wrote no {out:?}: {e}; {run}",
            client.name()
        )
    });
    assert_eq!(
        got,
        want,
        "{}: {remote} differs from the served file ({} bytes received) [{} engine]",
        client.name(),
        std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0),
        server.engine.name()
    );
}

/// The standard size set: empty, exactly 512, exactly k*1468, and a few odd sizes.
fn sizes() -> Vec<(String, usize)> {
    [0usize, 512, 1468 * 5, 1468 * 5 + 1, 512 * 9, 300_000]
        .iter()
        .map(|&n| (format!("size-{n}.bin"), n))
        .collect()
}

fn put_sizes(server: &Server) -> Vec<(String, String)> {
    sizes()
        .into_iter()
        .enumerate()
        .map(|(i, (name, n))| {
            let sum = server.put(&name, &test_bytes(n, 100 + i as u64));
            (name, sum)
        })
        .collect()
}

fn case_curl_exact_sizes(engine: Engine) {
    let net = TestNet::new();
    let server = Server::start(&net, engine, "");
    let files = put_sizes(&server);
    for client in [
        Client::Curl {
            blksize: Some(1468),
        },
        Client::Curl { blksize: None },
    ] {
        for (name, sum) in &files {
            if name == "size-0.bin" {
                continue; // curl refuses the OACK `tsize 0` of an empty file (see below)
            }
            get_exact(&net, &server, client, name, sum);
        }
    }
    // An empty file and an exact 512 with curl in plain RFC 1350 mode.
    for (name, sum) in &files[..2] {
        get_exact(&net, &server, Client::CurlNoOptions, name, sum);
    }
    // A file in a sub-directory.
    let sum = server.put("pxelinux.cfg/default", b"DEFAULT linux\n");
    get_exact(
        &net,
        &server,
        Client::Curl {
            blksize: Some(1468),
        },
        "pxelinux.cfg/default",
        &sum,
    );
}

fn case_atftp_exact_sizes(engine: Engine) {
    let net = TestNet::new();
    let server = Server::start(&net, engine, "");
    let files = put_sizes(&server);
    for client in [
        Client::Atftp {
            blksize: Some(1468),
            windowsize: None,
        },
        Client::Atftp {
            blksize: None,
            windowsize: None,
        },
    ] {
        for (name, sum) in &files {
            get_exact(&net, &server, client, name, sum);
        }
    }
}

fn case_tftp_hpa_exact_sizes(engine: Engine) {
    let net = TestNet::new();
    let server = Server::start(&net, engine, "");
    for (name, sum) in &put_sizes(&server) {
        get_exact(&net, &server, Client::TftpHpa, name, sum);
    }
}

fn case_atftp_windowsizes(engine: Engine) {
    let net = TestNet::new();
    let server = Server::start(&net, engine, "");
    // 2 MiB + change: many full windows of every size, and a short last window.
    let sum = server.put("win.bin", &test_bytes(2 * 1024 * 1024 + 777, 7));
    let exact = server.put("exact.bin", &test_bytes(1468 * 64 * 3, 8));
    for windowsize in [1u16, 4, 64] {
        let client = Client::Atftp {
            blksize: Some(1468),
            windowsize: Some(windowsize),
        };
        get_exact(&net, &server, client, "win.bin", &sum);
        // Once more with --trace: the OACK must grant exactly this windowsize.
        let out = server.scratch().join("exact.out");
        let run = client.get_with(&net, "exact.bin", &out, LIMIT, &["--trace"]);
        assert!(run.success(), "atftp windowsize {windowsize}: {run}");
        assert_eq!(
            sha256_file(&out).unwrap(),
            exact,
            "atftp windowsize {windowsize}"
        );
        let oack = atftp_oack(&run);
        assert!(
            oack.contains(&format!("windowsize: {windowsize},")) && oack.contains("blksize: 1468"),
            "atftp asked for windowsize {windowsize}, OACK was: {oack}"
        );
    }
}

fn case_curl_rollover(engine: Engine) {
    let net = TestNet::new();
    let server = Server::start(&net, engine, "");
    // 100 MiB at blksize 1468 = 71,431 blocks: the block number wraps past 65535.
    let sum = server.put("initrd.img", &test_bytes(ROLLOVER_LEN, 42));
    get_exact(
        &net,
        &server,
        Client::Curl {
            blksize: Some(1468),
        },
        "initrd.img",
        &sum,
    );
}

fn case_atftp_rollover(engine: Engine) {
    let net = TestNet::new();
    let server = Server::start(&net, engine, "");
    let sum = server.put("initrd.img", &test_bytes(ROLLOVER_LEN, 43));
    let client = Client::Atftp {
        blksize: Some(1468),
        windowsize: Some(4),
    };
    get_exact(&net, &server, client, "initrd.img", &sum);
}

/// Server settings for the loss tests: a retransmit timeout longer than the clients' own
/// (atftp `--tftp-timeout 1`). atftp 0.8 answers only the first duplicate DATA with an extra
/// ACK, and every packet it receives restarts its own timer; if that extra ACK is lost too and
/// the server retransmits faster than atftp's timeout, atftp never re-ACKs and the server gives
/// up. With the server slower than the client, the client's timer fires first and it re-ACKs.
const LOSS_CONFIG: &str = "timeout_ms = 1500\nmax_retries = 10";

fn case_loss_atftp(engine: Engine) {
    let net = TestNet::new();
    let server = Server::start(&net, engine, LOSS_CONFIG);
    net.add_loss(5);
    // Each lost ACK or last-of-window DATA costs a timeout, so the sizes stay moderate.
    let windowed = server.put("windowed.bin", &test_bytes(1024 * 1024 + 5, 11));
    let lockstep = server.put("lockstep.bin", &test_bytes(256 * 1024 + 3, 12));
    let timeout = ["--tftp-timeout", "1"];
    let client = Client::Atftp {
        blksize: Some(1468),
        windowsize: Some(4),
    };
    let out = server.scratch().join("w.out");
    let run = client.get_with(&net, "windowed.bin", &out, LIMIT, &timeout);
    assert!(run.success(), "atftp windowsize 4 under loss: {run}");
    assert_eq!(sha256_file(&out).unwrap(), windowed);
    let client = Client::Atftp {
        blksize: Some(1468),
        windowsize: None,
    };
    let out = server.scratch().join("l.out");
    let run = client.get_with(&net, "lockstep.bin", &out, LIMIT, &timeout);
    assert!(run.success(), "atftp lockstep under loss: {run}");
    assert_eq!(sha256_file(&out).unwrap(), lockstep);
    let dropped = net.dropped();
    assert!(
        dropped >= 10,
        "the loss rule dropped only {dropped} packets"
    );
    eprintln!("loss rule dropped {dropped} packets");
}

fn case_loss_curl_and_windowed(engine: Engine) {
    let net = TestNet::new();
    // curl names its own timeout (below); the test's client re-ACKs after 150 ms of silence,
    // so a 300 ms server timeout keeps the windowed transfers quick. It matters because the
    // loss of the FIRST block of a window is only repaired by the server's timeout: the
    // client's gap ACK then repeats the ACK that opened the window, and the session ignores a
    // duplicate ACK (no Sorcerer's Apprentice bursts).
    let server = Server::start(&net, engine, "timeout_ms = 300\nmax_retries = 10");
    net.add_loss(5);
    // curl asks for `timeout` = its retry time: --connect-timeout 3 makes that 1 s (the
    // default would be 6 s per lost packet).
    let small = server.put("small.bin", &test_bytes(256 * 1024 + 1, 13));
    let out = server.scratch().join("c.out");
    let run = Client::Curl {
        blksize: Some(1468),
    }
    .get_with(&net, "small.bin", &out, LIMIT, &["--connect-timeout", "3"]);
    assert!(run.success(), "curl under loss: {run}");
    eprintln!("curl under loss: {:.1?}", run.elapsed);
    assert_eq!(sha256_file(&out).unwrap(), small);

    // 4 MiB at windowsize 4 and 64 through the test's own client (which re-ACKs every
    // duplicate and after 500 ms of silence), from a thread inside the client namespace.
    let bytes = test_bytes(LOSS_LEN, 14);
    let want = server.put("lossy.bin", &bytes);
    let addr = std::net::SocketAddr::from((server.ip, 69));
    for windowsize in [4u16, 64] {
        let start = std::time::Instant::now();
        let got = net.client.enter(move || {
            fetch(
                addr,
                b"lossy.bin",
                &FetchOptions {
                    blksize: Some(1468),
                    windowsize: Some(windowsize),
                    retry: Duration::from_millis(150),
                    overall: Duration::from_secs(150),
                    ..Default::default()
                },
            )
        });
        let got = got.unwrap_or_else(|e| panic!("windowsize {windowsize} under loss: {e:?}"));
        assert_eq!(
            sha256(&got.data),
            want,
            "windowsize {windowsize} under loss"
        );
        eprintln!(
            "windowsize {windowsize} under loss: {:.1?}",
            start.elapsed()
        );
    }
    let dropped = net.dropped();
    assert!(
        dropped >= 30,
        "the loss rule dropped only {dropped} packets"
    );
    eprintln!("loss rule dropped {dropped} packets");
}

const LOSS_LEN: usize = 4 * 1024 * 1024;

/// A client that asks for `timeout 255` is granted `max_client_timeout_ms` (5 s by default),
/// the OACK says so, and the real clients accept the smaller value and finish the transfer.
fn case_client_timeout_capped(engine: Engine) {
    let net = TestNet::new();
    let server = Server::start(&net, engine, "");
    let sum = server.put("capped.bin", &test_bytes(300_000, 21));
    let out = server.scratch().join("capped.out");

    // atftp asks for exactly what --option says; its trace shows the OACK it received.
    let atftp = Client::Atftp {
        blksize: Some(1468),
        windowsize: None,
    };
    let run = atftp.get_with(
        &net,
        "capped.bin",
        &out,
        LIMIT,
        &["--option", "timeout 255", "--trace"],
    );
    assert!(run.success(), "atftp asking for timeout 255: {run}");
    assert_eq!(
        sha256_file(&out).unwrap(),
        sum,
        "atftp asking for timeout 255"
    );
    let oack = atftp_oack(&run);
    assert!(
        oack.contains("timeout: 5,") && oack.contains("blksize: 1468"),
        "atftp asked for timeout 255, OACK was: {oack}"
    );
    assert_eq!(tftp_counter(&server, "timeout_capped"), 1);

    // curl asks for its retry time: 6 s when its connect timeout is the default 300 s (a
    // --max-time below that shortens it, hence the long one here). -v shows what it asked
    // and what it read; it reads the OACK's timeout and keeps its own retry time.
    let _ = std::fs::remove_file(&out);
    let run = Client::Curl {
        blksize: Some(1468),
    }
    .get_with(
        &net,
        "capped.bin",
        &out,
        LIMIT,
        &["--max-time", "600", "-v"],
    );
    assert!(run.success(), "curl asking for timeout 6: {run}");
    assert_eq!(sha256_file(&out).unwrap(), sum, "curl asking for timeout 6");
    assert!(
        run.stderr.contains("retry 6 maxtry")
            && run.stderr.contains("got option=(timeout) value=(5)"),
        "curl's default request of 6 s should be granted 5: {run}"
    );
    assert_eq!(tftp_counter(&server, "timeout_capped"), 2);
}

/// Six curl downloads at once from one address with `max_sessions_per_client = 2`: two are
/// served, the others get "server busy", each refusal is counted, and the log holds one
/// warning (rate-limited) that names the client, the limit and the setting to raise.
/// Starts a transfer of `name` from a new socket in the client namespace and acknowledges its
/// OACK, so the server holds a verified transfer (until its retries run out, 6 s after DATA 1
/// with the defaults); returns the socket, the client's TID.
fn hold_verified_transfer(net: &TestNet, name: &str) -> std::net::UdpSocket {
    let server = std::net::SocketAddr::from((net.server_ip, 69));
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(name.as_bytes());
    rrq.extend_from_slice(b"\0octet\0blksize\x00512\0");
    net.client.enter(move || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sock.send_to(&rrq, server).expect("send the RRQ");
        let mut buf = [0u8; 600];
        let (n, tid) = sock.recv_from(&mut buf).expect("an answer to the RRQ");
        assert_eq!(&buf[..2], &[0, 6], "expected an OACK: {:?}", &buf[..n]);
        sock.send_to(&[0, 4, 0, 0], tid).expect("send ACK 0");
        let (n, _) = sock.recv_from(&mut buf).expect("DATA 1");
        assert_eq!(
            &buf[..4],
            &[0, 3, 0, 1],
            "expected DATA 1: {:?}",
            &buf[..n.min(8)]
        );
        sock
    })
}

fn case_busy_refusals_are_logged(engine: Engine) {
    let net = TestNet::new();
    let server = Server::start(&net, engine, "max_sessions_per_client = 2");
    server.put("big.bin", &test_bytes(1 << 20, 3));
    // Two verified transfers (acknowledged, far from their last block) fill this address's
    // two slots; an unverified or finishing one would give way instead of a refusal.
    let held = [
        hold_verified_transfer(&net, "big.bin"),
        hold_verified_transfer(&net, "big.bin"),
    ];
    let dir = server.scratch();
    let started = Instant::now();
    let refused: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (net, out) = (&net, dir.join(format!("busy{i}.out")));
                s.spawn(move || Client::Curl { blksize: None }.get(net, "big.bin", &out, LIMIT))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    drop(held);
    for r in &refused {
        assert!(
            !r.success(),
            "a third transfer from the address was served: {r}"
        );
    }
    assert_eq!(tftp_counter(&server, "refused_limit"), refused.len() as u64);
    assert_eq!(tftp_counter(&server, "evicted_unverified"), 0);
    let log = server.log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("TFTP request refused"))
        .collect();
    let allowed = 1 + elapsed.as_secs() as usize / 10;
    assert!(
        !warnings.is_empty() && warnings.len() <= allowed,
        "{} warnings in {elapsed:?} for {} refusals:\n{log}",
        warnings.len(),
        refused.len()
    );
    let w = warnings[0];
    assert!(
        w.contains("WARN")
            && w.contains(&format!("client={}", net.client_ip))
            && w.contains("max_sessions_per_client=2")
            && w.contains("raise [tftp] max_sessions_per_client"),
        "{w}"
    );
}

/// The "received OACK" line of an atftp run with `--trace`.
fn atftp_oack(run: &Run) -> String {
    run.stdout
        .lines()
        .chain(run.stderr.lines())
        .find(|l| l.contains("received OACK"))
        .unwrap_or_else(|| panic!("no OACK in atftp's trace: {run}"))
        .to_string()
}

fn tftp_counter(server: &Server, name: &str) -> u64 {
    let s = server.status();
    s["tftp"]["metrics"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no tftp.metrics.{name} in the status: {s}"))
}

fn case_refusals(engine: Engine) {
    let net = TestNet::new();
    let server = Server::start(&net, engine, "");
    let secret = b"top secret, outside the root\n";
    std::fs::write(server.outside_root().join("secret.txt"), secret).unwrap();
    let out_dir = server.scratch();

    let refused = |client: Client, remote: &str, out: &Path| {
        let _ = std::fs::remove_file(out);
        let run = client.get(&net, remote, out, Duration::from_secs(30));
        assert!(
            !run.success() || client_reported_error(&run),
            "{} fetching {remote:?} should fail: {run}",
            client.name()
        );
        assert!(
            run.status.is_some(),
            "{} hung on {remote:?}: {run}",
            client.name()
        );
        // Whatever the client left behind, it holds none of the file outside the root.
        let left = std::fs::read(out).unwrap_or_default();
        assert!(
            !left.windows(10).any(|w| secret.windows(10).any(|s| s == w))
                && !String::from_utf8_lossy(&left).contains("root:"),
            "{} got content for {remote:?}: {left:?}",
            client.name()
        );
        run
    };

    let outside = ["../secret.txt", "../../../../../etc/passwd", "/etc/passwd"];
    for remote in outside {
        // curl maps the TFTP error codes to exit codes: 69 = access violation (ERROR 2).
        let run = refused(
            Client::Curl {
                blksize: Some(1468),
            },
            remote,
            &out_dir.join("c"),
        );
        if !remote.starts_with('/') {
            assert_eq!(
                run.code(),
                Some(69),
                "curl {remote}: want TFTP error 2 (exit 69): {run}"
            );
        }
        let run = refused(Client::TftpHpa, remote, &out_dir.join("h"));
        assert!(
            client_said(&run, "Error code 2"),
            "tftp-hpa {remote}: {run}"
        );
        refused(
            Client::Atftp {
                blksize: Some(1468),
                windowsize: None,
            },
            remote,
            &out_dir.join("a"),
        );
    }
    // Files the daemon must not serve: a private file under the root, and a hard link under
    // the root to the private file outside it (no path rule sees it). The daemon runs as its
    // service account ([server] user), so the kernel refuses the open; started as root
    // without the switch, the world-readable rule refuses them (images::tests).
    use std::os::unix::fs::PermissionsExt;
    let private = |p: &Path| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o640)).unwrap();
    };
    private(&server.outside_root().join("secret.txt"));
    std::fs::write(server.root.join("private.txt"), secret).unwrap();
    private(&server.root.join("private.txt"));
    std::fs::hard_link(
        server.outside_root().join("secret.txt"),
        server.root.join("linked.txt"),
    )
    .unwrap();
    let counted = tftp_counter(&server, "refused_access");
    for remote in ["private.txt", "linked.txt"] {
        let run = refused(Client::Curl { blksize: None }, remote, &out_dir.join("c"));
        assert_eq!(run.code(), Some(69), "curl {remote}: want ERROR 2: {run}");
        let run = refused(Client::TftpHpa, remote, &out_dir.join("h"));
        assert!(
            client_said(&run, "Error code 2"),
            "tftp-hpa {remote}: {run}"
        );
    }
    assert_eq!(tftp_counter(&server, "refused_access"), counted + 4);
    assert!(
        server.log_text().contains("permission denied"),
        "{}",
        server.log_text()
    );

    // Missing file: curl exit 68 = TFTP error 1 (file not found).
    let run = refused(
        Client::Curl { blksize: None },
        "no/such/file",
        &out_dir.join("c"),
    );
    assert_eq!(run.code(), Some(68), "curl missing file: {run}");
    let run = refused(Client::TftpHpa, "no-such-file", &out_dir.join("h"));
    assert!(
        client_said(&run, "Error code 1"),
        "tftp-hpa missing file: {run}"
    );
    refused(
        Client::Atftp {
            blksize: None,
            windowsize: None,
        },
        "no-such-file",
        &out_dir.join("a"),
    );

    // The server is still serving afterwards.
    let sum = server.put("after.bin", &test_bytes(5000, 1));
    get_exact(
        &net,
        &server,
        Client::Curl {
            blksize: Some(1468),
        },
        "after.bin",
        &sum,
    );
}

/// tftp-hpa exits 0 even when the transfer failed; its message (on stdout) is the signal.
fn client_reported_error(run: &Run) -> bool {
    client_said(run, "Error code")
}

fn client_said(run: &Run, what: &str) -> bool {
    run.stderr.contains(what) || run.stdout.contains(what)
}
