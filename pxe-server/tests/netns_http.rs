//! The real `pxe-server` binary with `[http] enabled` in a network namespace, fetched from by
//! `curl` (and python3 raw clients: slowloris, slow readers) in a second namespace over a veth
//! pair.
//!
//! Needs root and `ip netns`: the tests are `#[ignore]`d and run by scripts/test.sh. Run as
//! non-root they fail loudly.

use std::path::Path;
use std::time::Duration;

use pxe_testkit::testnet::{Engine, Server, TestNet};
use pxe_testkit::{Proc, Run, run_bounded, sha256, sha256_file, test_bytes};

const LIMIT: Duration = Duration::from_secs(120);

/// Starts the server with HTTP on port 80 of the server address; `http_extra` goes into `[http]`.
fn start(net: &TestNet, http_extra: &str) -> Server {
    let extra = format!(
        "\n[http]\nenabled = true\nlisten = [\"{}:80\"]\n{http_extra}\n",
        net.server_ip
    );
    Server::start(net, Engine::Portable, &extra)
}

fn url(server: &Server, path: &str) -> String {
    format!("http://{}{path}", server.ip)
}

fn http_counter(server: &Server, name: &str) -> u64 {
    let s = server.status();
    s["http"]["metrics"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no http.metrics.{name} in the status: {s}"))
}

/// `curl` in the client namespace writing the body to `out`; returns the HTTP status code.
fn curl_to(net: &TestNet, out: &Path, args: &[&str]) -> (u16, Run) {
    let out = out.to_str().expect("utf-8 path");
    let mut argv = vec![
        "curl",
        "-sS",
        "--max-time",
        "100",
        "-o",
        out,
        "-w",
        "%{http_code}",
    ];
    argv.extend_from_slice(args);
    let run = net.in_client(&argv, LIMIT);
    assert!(
        run.status.is_some(),
        "curl {args:?} did not finish in time: {run}"
    );
    let code = run.stdout.trim().parse().unwrap_or(0);
    (code, run)
}

/// GETs `path` and asserts status 200 and an exact body.
fn get_exact(net: &TestNet, server: &Server, path: &str, want: &str) {
    let out = server.scratch().join("get.out");
    let _ = std::fs::remove_file(&out);
    let (code, run) = curl_to(net, &out, &[&url(server, path)]);
    assert!(run.success() && code == 200, "GET {path}: {code} {run}");
    assert_eq!(sha256_file(&out).unwrap(), want, "GET {path}: body differs");
}

#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn curl_files_head_ranges_keep_alive_and_refusals() {
    let net = TestNet::new();
    let server = start(&net, "");
    // Whole files, sha256-exact.
    let files: Vec<(String, Vec<u8>)> = [0usize, 1, (1 << 20) + 1, 100 << 20]
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("size-{n}.bin"), test_bytes(n, 500 + i as u64)))
        .collect();
    for (name, data) in &files {
        let sum = server.put(name, data);
        get_exact(&net, &server, &format!("/{name}"), &sum);
    }
    let (_, mib) = &files[2];
    let mib_len = mib.len();

    // HEAD: the length, and nothing after the head (read to the close, raw).
    let script = format!(
        "import socket\ns = socket.create_connection(('{ip}', 80), timeout=10)\n\
         s.sendall(b'HEAD /size-{mib_len}.bin HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')\n\
         data = b''\nwhile True:\n    b = s.recv(65536)\n    if not b:\n        break\n    data += b\n\
         print(repr(data))\n",
        ip = server.ip
    );
    let run = net.in_client(&["python3", "-c", &script], Duration::from_secs(30));
    assert!(run.success(), "raw HEAD: {run}");
    let raw = run.stdout.trim();
    assert!(raw.starts_with("b'HTTP/1.1 200 OK\\r\\n"), "{raw}");
    assert!(
        raw.to_ascii_lowercase()
            .contains(&format!("content-length: {mib_len}\\r\\n")),
        "{raw}"
    );
    assert!(
        raw.ends_with("\\r\\n\\r\\n'"),
        "HEAD answer has bytes after its head: {raw}"
    );
    // And with curl -I.
    let run = net.in_client(
        &[
            "curl",
            "-sS",
            "-I",
            "--max-time",
            "10",
            &url(&server, &format!("/size-{mib_len}.bin")),
        ],
        LIMIT,
    );
    assert!(run.success(), "{run}");
    let lower = run.stdout.to_ascii_lowercase();
    assert!(
        lower.contains(&format!("content-length: {mib_len}")),
        "{run}"
    );
    assert!(lower.contains("accept-ranges: bytes"), "{run}");

    // Ranges.
    let path = format!("/size-{mib_len}.bin");
    let out = server.scratch().join("range.out");
    for (range, want, content_range) in [
        ("0-99", &mib[..100], format!("bytes 0-99/{mib_len}")),
        (
            "100-",
            &mib[100..],
            format!("bytes 100-{}/{mib_len}", mib_len - 1),
        ),
        (
            "-100",
            &mib[mib_len - 100..],
            format!("bytes {}-{}/{mib_len}", mib_len - 100, mib_len - 1),
        ),
    ] {
        let headers = server.scratch().join("range.headers");
        let (code, run) = curl_to(
            &net,
            &out,
            &[
                "-r",
                range,
                "-D",
                headers.to_str().unwrap(),
                &url(&server, &path),
            ],
        );
        assert_eq!(code, 206, "range {range}: {run}");
        assert_eq!(
            sha256_file(&out).unwrap(),
            sha256(want),
            "range {range}: wrong bytes"
        );
        let h = std::fs::read_to_string(&headers)
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            h.contains(&format!("content-range: {content_range}")),
            "range {range}: {h}"
        );
    }
    let (code, run) = curl_to(
        &net,
        &out,
        &["-r", &format!("{mib_len}-"), &url(&server, &path)],
    );
    assert_eq!(code, 416, "unsatisfiable range: {run}");

    // Keep-alive: two URLs on one connection.
    let run = net.in_client(
        &[
            "curl",
            "-v",
            "-sS",
            "--max-time",
            "30",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            &url(&server, "/size-1.bin"),
            &url(&server, &path),
        ],
        LIMIT,
    );
    assert!(run.success(), "{run}");
    assert!(
        run.stderr.contains("Re-using existing connection"),
        "curl did not reuse the connection: {run}"
    );

    // Caching validators as curl uses them: --etag-save / --etag-compare (If-None-Match), and
    // -R (the local copy gets Last-Modified as its mtime) then -z FILE (If-Modified-Since).
    let etag_file = server.scratch().join("etag");
    let copy = server.scratch().join("copy.out");
    let (code, run) = curl_to(
        &net,
        &copy,
        &[
            "-R",
            "--etag-save",
            etag_file.to_str().unwrap(),
            &url(&server, &path),
        ],
    );
    assert_eq!(code, 200, "{run}");
    let etag = std::fs::read_to_string(&etag_file).unwrap();
    assert!(etag.trim().starts_with('"'), "no ETag saved: {etag:?}");
    let before_304 = http_counter(&server, "responses_304");
    let again = server.scratch().join("again.out");
    for args in [
        vec!["--etag-compare", etag_file.to_str().unwrap()],
        vec!["-z", copy.to_str().unwrap()],
    ] {
        let _ = std::fs::remove_file(&again);
        let mut a = args.clone();
        let u = url(&server, &path);
        a.push(&u);
        let (code, run) = curl_to(&net, &again, &a);
        assert_eq!(code, 304, "{args:?}: {run}");
        assert_eq!(std::fs::metadata(&again).map_or(0, |m| m.len()), 0);
    }
    let (code, run) = curl_to(&net, &again, &["-z", "1 Jan 2000", &url(&server, &path)]);
    assert_eq!(code, 200, "{run}");
    assert_eq!(sha256_file(&again).unwrap(), sha256(mib));
    assert_eq!(http_counter(&server, "responses_304"), before_304 + 2);

    // Hostile paths: 4xx, counted, never the outside file.
    std::fs::write(server.outside_root().join("secret"), b"TOP SECRET\n").unwrap();
    std::os::unix::fs::symlink("../secret", server.root.join("escape")).unwrap();
    let before = http_counter(&server, "refused_traversal");
    for (path, want) in [
        ("/../etc/passwd", 403),
        ("/%2e%2e/%2e%2e/etc/passwd", 403),
        ("/../secret", 403),
        ("/escape", 403),
        ("/a%00b", 400),
        ("/missing", 404),
    ] {
        let out = server.scratch().join("hostile.out");
        let (code, run) = curl_to(&net, &out, &["--path-as-is", &url(&server, path)]);
        assert_eq!(code, want, "{path}: {run}");
        let body = std::fs::read(&out).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&body).contains("SECRET")
                && !String::from_utf8_lossy(&body).contains("root:"),
            "{path} leaked a file"
        );
    }
    let run = net.in_client(
        &[
            "curl",
            "-sS",
            "-X",
            "POST",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url(&server, &path),
        ],
        LIMIT,
    );
    assert_eq!(run.stdout.trim(), "405", "{run}");

    let s = server.status();
    let m = &s["http"]["metrics"];
    assert_eq!(m["refused_traversal"].as_u64().unwrap(), before + 4, "{s}");
    assert!(m["refused_bad_path"].as_u64().unwrap() >= 1, "{s}");
    assert!(m["refused_not_found"].as_u64().unwrap() >= 1, "{s}");
    assert!(m["refused_method"].as_u64().unwrap() >= 1, "{s}");
    assert!(m["responses_206"].as_u64().unwrap() >= 3, "{s}");
    assert!(m["ranges_unsatisfiable"].as_u64().unwrap() >= 1, "{s}");
    assert!(
        m["bytes_sent"].as_u64().unwrap() > (100 << 20) + (1 << 20),
        "{s}"
    );
    assert_eq!(
        s["http"]["listen"][0].as_str().unwrap(),
        format!("{}:80", server.ip)
    );
}

#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn two_hundred_concurrent_downloads() {
    const CLIENTS: usize = 200;
    let net = TestNet::new();
    // 200 machines behind one address (a load tester): the per-client cap must allow them.
    let server = start(&net, "max_connections_per_client = 200");
    let sum = server.put("initrd.img", &test_bytes(8 << 20, 77));
    let dir = server.scratch().join("parallel");
    std::fs::create_dir_all(&dir).unwrap();
    let u = url(&server, "/initrd.img");
    let mut argv: Vec<String> = [
        "curl",
        "-sS",
        "--fail",
        "--parallel",
        "--parallel-immediate",
        "--parallel-max",
        "200",
        "--max-time",
        "100",
    ]
    .map(String::from)
    .to_vec();
    for i in 0..CLIENTS {
        argv.push("-o".into());
        argv.push(dir.join(format!("{i}.out")).display().to_string());
        // A distinct query per URL, so curl cannot treat them as one transfer.
        argv.push(format!("{u}?client={i}"));
    }
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let run = net.in_client(&argv, LIMIT);
    assert!(run.success(), "parallel curl: {run}");
    // sha256sum (C) rather than the test's own sha2, which is slow in a debug build.
    let outs: Vec<String> = (0..CLIENTS)
        .map(|i| dir.join(format!("{i}.out")).display().to_string())
        .collect();
    let mut argv = vec!["sha256sum"];
    argv.extend(outs.iter().map(String::as_str));
    let sums = run_bounded(&argv, LIMIT);
    assert!(sums.success(), "sha256sum: {sums}");
    let lines: Vec<&str> = sums.stdout.lines().collect();
    assert_eq!(lines.len(), CLIENTS, "{sums}");
    for (i, line) in lines.iter().enumerate() {
        assert!(
            line.starts_with(&format!("{sum}  ")) && line.ends_with(&outs[i]),
            "download {i} differs: {line}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    let s = server.status();
    let m = &s["http"]["metrics"];
    eprintln!(
        "{CLIENTS} x 8 MiB in {:.1?}; http metrics: {m}",
        run.elapsed
    );
    assert!(
        m["responses_2xx"].as_u64().unwrap() >= CLIENTS as u64,
        "{s}"
    );
    // --parallel-immediate opens a connection per transfer rather than waiting to reuse one.
    assert!(
        m["connections_accepted"].as_u64().unwrap() >= 100,
        "not concurrent: {s}"
    );
    assert_eq!(m["responses_5xx"].as_u64().unwrap(), 0, "{s}");
}

#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn slowloris_is_cut_and_huge_headers_are_refused() {
    let net = TestNet::new();
    let server = start(&net, "header_timeout_ms = 3000\nidle_timeout_ms = 30000");
    let sum = server.put("vmlinuz", &test_bytes(300_000, 9));
    // One header byte per second; prints how long the server kept the connection.
    let script = format!(
        "import socket, time\nstart = time.monotonic()\n\
         s = socket.create_connection(('{ip}', 80), timeout=20)\n\
         msg = b'GET /vmlinuz HTTP/1.1\\r\\nHost: x\\r\\nX-Slow: ' + b'a' * 100\n\
         closed = None\n\
         for b in msg:\n\
         \x20   try:\n\
         \x20       s.send(bytes([b]))\n\
         \x20   except OSError:\n\
         \x20       closed = 'send'\n\
         \x20       break\n\
         \x20   s.settimeout(1.0)\n\
         \x20   try:\n\
         \x20       d = s.recv(100)\n\
         \x20       if not d:\n\
         \x20           closed = 'eof'\n\
         \x20           break\n\
         \x20   except socket.timeout:\n\
         \x20       pass\n\
         \x20   except OSError:\n\
         \x20       closed = 'reset'\n\
         \x20       break\n\
         \x20   if time.monotonic() - start > 20:\n\
         \x20       break\n\
         print(closed, round(time.monotonic() - start, 2))\n",
        ip = server.ip
    );
    let mut cmd = net.client.command("python3");
    cmd.args(["-c", &script]);
    let mut slow = Proc::spawn(cmd, &server.scratch(), "slowloris");
    // Meanwhile a normal client is served.
    std::thread::sleep(Duration::from_millis(1500));
    get_exact(&net, &server, "/vmlinuz", &sum);
    if slow.wait_timeout(Duration::from_secs(30)).is_none() {
        panic!("the slowloris client was never cut");
    }
    let text = slow.stdout();
    let mut words = text.split_whitespace();
    let (how, secs) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let secs: f64 = secs
        .parse()
        .unwrap_or_else(|_| panic!("slowloris client: {text} {}", slow.stderr()));
    eprintln!("slowloris connection closed ({how}) after {secs} s");
    assert!(
        how != "None",
        "the slowloris connection was not closed: {text}"
    );
    assert!(
        (2.5..6.0).contains(&secs),
        "cut after {secs} s, header timeout is 3 s ({how})"
    );
    assert!(http_counter(&server, "header_timeouts") >= 1);
    // And still serving.
    get_exact(&net, &server, "/vmlinuz", &sum);

    // A 40 kB header: 431 (or a closed connection), counted.
    let big = format!("X-Big: {}", "a".repeat(40_000));
    let out = server.scratch().join("big.out");
    let (code, run) = curl_to(&net, &out, &["-H", &big, &url(&server, "/vmlinuz")]);
    assert!(
        code == 431 || (code == 0 && !run.success()),
        "huge header: {code} {run}"
    );
    let s = server.status();
    assert_eq!(s["http"]["metrics"]["headers_too_large"], 1, "{s}");
    assert_eq!(s["http"]["metrics"]["header_timeouts"], 1, "{s}");
}

/// `curl --parallel --parallel-immediate` of `n` transfers of `path` at once from `from` (one
/// of the client namespace's addresses), each read at 32 kB/s and given up after `hold_s`
/// seconds, so that the ones served hold their connections that long; returns the status code
/// of each transfer, sorted.
fn parallel_codes(
    net: &TestNet,
    server: &Server,
    from: &str,
    path: &str,
    n: usize,
    hold_s: u32,
) -> Vec<u16> {
    let u = url(server, path);
    let (n_text, hold) = (n.to_string(), hold_s.to_string());
    let mut argv: Vec<String> = [
        "curl",
        "-sS",
        "--interface",
        from,
        "--parallel",
        "--parallel-immediate",
        "--parallel-max",
        &n_text,
        "--limit-rate",
        "32k",
        "--max-time",
        &hold,
        "-w",
        "%{http_code}\\n",
    ]
    .map(String::from)
    .to_vec();
    for i in 0..n {
        argv.push("-o".into());
        argv.push("/dev/null".into());
        // A distinct query per URL, so curl cannot treat them as one transfer.
        argv.push(format!("{u}?c={i}"));
    }
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    // The transfers served end by curl's --max-time (exit 28): only the codes matter.
    let run = net.in_client(&argv, LIMIT);
    let mut codes: Vec<u16> = run
        .stdout
        .lines()
        .map(|l| l.trim().parse().unwrap_or(0))
        .collect();
    codes.sort_unstable();
    assert_eq!(codes.len(), n, "{run}");
    codes
}

/// The lines of the server log that contain every one of `words`.
fn log_lines(server: &Server, words: &[&str]) -> Vec<String> {
    server
        .log_text()
        .lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .map(String::from)
        .collect()
}

/// `max_connections_per_client = 4`, `max_connections = 6`: seven connections at once from one
/// address get four 200 and three 503; while those four are open a second address is served
/// (two connections) until the global limit refuses its third. Each refusal is counted, each
/// kind is logged once (rate-limited) naming the client, the limit and the setting, and every
/// slot is given back when the transfers end.
#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn one_address_cannot_take_every_connection() {
    let net = TestNet::new();
    let second = std::net::Ipv4Addr::from(u32::from(net.client_ip) + 1);
    net.client.add_addresses("eth0", second, 1, 24);
    let server = start(&net, "max_connections = 6\nmax_connections_per_client = 4");
    // Far more than 32 kB/s reads in the few seconds the transfers are held.
    server.put("big.bin", &test_bytes(4 << 20, 41));
    let (first, second) = (net.client_ip.to_string(), second.to_string());
    let (first_codes, second_codes) = std::thread::scope(|s| {
        let a = s.spawn(|| parallel_codes(&net, &server, &first, "/big.bin", 7, 4));
        // The first address holds its four connections (and got its three refusals).
        let held = pxe_testkit::wait_until(Duration::from_secs(10), || {
            let s = server.status();
            let m = &s["http"]["metrics"];
            m["connections_open"] == 4 && m["connections_refused_per_client"] == 3
        });
        assert!(held, "the first address never held 4: {}", server.status());
        let b = parallel_codes(&net, &server, &second, "/big.bin", 3, 1);
        (a.join().unwrap(), b)
    });
    assert_eq!(first_codes, [200, 200, 200, 200, 503, 503, 503]);
    // Two served beside the first address's four: the third is refused by the global limit
    // (which also shows that the first address still held its four then).
    assert_eq!(second_codes, [200, 200, 503]);
    let s = server.status();
    let m = &s["http"]["metrics"];
    assert_eq!(m["connections_refused_per_client"], 3, "{s}");
    assert_eq!(m["connections_refused"], 1, "{s}");
    assert_eq!(m["connections_accepted"], 6, "{s}");
    let released = pxe_testkit::wait_until(Duration::from_secs(5), || {
        http_counter(&server, "connections_open") == 0
    });
    assert!(released, "slots not given back: {}", server.status());

    let refused = "HTTP connection refused (503)";
    let per_client = log_lines(&server, &[refused, "max_connections_per_client="]);
    assert_eq!(per_client.len(), 1, "{per_client:?}");
    let w = &per_client[0];
    assert!(
        w.contains("WARN")
            && w.contains(&format!("client={first} "))
            && w.contains("max_connections_per_client=4")
            && w.contains("raise [http] max_connections_per_client"),
        "{w}"
    );
    let global = log_lines(&server, &[refused, " max_connections=6"]);
    assert_eq!(global.len(), 1, "{global:?}");
    let w = &global[0];
    assert!(
        w.contains("WARN")
            && w.contains(&format!("client={second} "))
            && w.contains("raise [http] max_connections "),
        "{w}"
    );
}

/// A python3 client that GETs `path` from `ip` with a 16 KiB receive buffer and reads it at
/// `rate` bytes per second; prints the status code, the body's sha256 and the seconds taken.
fn paced_reader_script(ip: std::net::Ipv4Addr, path: &str, rate: u32) -> String {
    format!(
        "import hashlib, socket, time\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)\n\
         s.settimeout(20)\n\
         s.connect(('{ip}', 80))\n\
         s.sendall(b'GET {path} HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')\n\
         start = time.monotonic()\n\
         data = b''\n\
         while True:\n\
         \x20   d = s.recv(4096)\n\
         \x20   if not d:\n\
         \x20       break\n\
         \x20   data += d\n\
         \x20   ahead = len(data) / {rate} - (time.monotonic() - start)\n\
         \x20   if ahead > 0:\n\
         \x20       time.sleep(ahead)\n\
         head, _, body = data.partition(b'\\r\\n\\r\\n')\n\
         print(head.split()[1].decode(), hashlib.sha256(body).hexdigest(), \
         round(time.monotonic() - start, 2))\n"
    )
}

/// `min_send_rate_bytes_per_sec = 262144` over 1 s windows: a raw client with a 4 KiB receive
/// buffer that reads one byte a second (so the idle timeout never fires) is cut within two
/// windows of its request, with a reset, counted as a send-rate cut, and its slot is given
/// back; meanwhile a full-speed curl of 32 MiB, and a client reading 2 MiB at 512 KiB/s (twice
/// the minimum: slow but healthy, and far more than the socket buffers hold), both get their
/// files whole.
#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn a_slow_reader_is_cut_and_healthy_downloads_finish() {
    let net = TestNet::new();
    let server = start(
        &net,
        "min_send_rate_bytes_per_sec = 262144\nsend_rate_window_ms = 1000\nidle_timeout_ms = 30000",
    );
    let big = server.put("big.bin", &test_bytes(32 << 20, 51));
    let medium = server.put("medium.bin", &test_bytes(2 << 20, 52));
    // Says "requested" on stderr once its request is sent, then reads one byte a second for
    // 20 s, and says "tcp state N" when its socket leaves ESTABLISHED (7: CLOSE, reset). The
    // kernel still hands it the bytes it had buffered after a reset, so reads alone would not
    // tell.
    let script = format!(
        "import socket, sys, time\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)\n\
         s.connect(('{ip}', 80))\n\
         s.sendall(b'GET /big.bin HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n\
         print('requested', file=sys.stderr, flush=True)\n\
         start = time.monotonic()\n\
         s.settimeout(2.0)\n\
         got, said = 0, False\n\
         while time.monotonic() - start < 20:\n\
         \x20   state = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]\n\
         \x20   if state != 1 and not said:\n\
         \x20       print('tcp state', state, file=sys.stderr, flush=True)\n\
         \x20       said = True\n\
         \x20   try:\n\
         \x20       if not s.recv(1):\n\
         \x20           break\n\
         \x20       got += 1\n\
         \x20   except socket.timeout:\n\
         \x20       continue\n\
         \x20   except OSError:\n\
         \x20       break\n\
         \x20   time.sleep(1.0)\n\
         print(got, flush=True)\n",
        ip = server.ip
    );
    let mut cmd = net.client.command("python3");
    cmd.args(["-c", &script]);
    let mut slow = Proc::spawn(cmd, &server.scratch(), "slow-reader");
    slow.wait_for_within("requested", Duration::from_secs(10));
    let requested = std::time::Instant::now();
    let fast_out = server.scratch().join("big.out");
    let paced = paced_reader_script(server.ip, "/medium.bin", 512 << 10);
    let cut_after = std::thread::scope(|s| {
        // Meanwhile: full speed, and slow but twice the minimum.
        let fast = s.spawn(|| curl_to(&net, &fast_out, &[&url(&server, "/big.bin")]));
        let healthy = s.spawn(|| net.in_client(&["python3", "-c", &paced], LIMIT));
        let cut = pxe_testkit::wait_until(Duration::from_secs(15), || {
            http_counter(&server, "send_rate_cuts") >= 1
        });
        let cut_after = requested.elapsed();
        assert!(cut, "the slow reader was never cut: {}", server.status());
        let (code, run) = fast.join().unwrap();
        assert!(
            run.success() && code == 200,
            "full-speed curl: {code} {run}"
        );
        eprintln!("full-speed curl of 32 MiB took {:.1?}", run.elapsed);
        let run = healthy.join().unwrap();
        assert!(run.success(), "paced reader: {run}");
        let out: Vec<&str> = run.stdout.split_whitespace().collect();
        assert_eq!(out[..2], ["200", medium.as_str()], "paced reader: {run}");
        let secs: f64 = out[2].parse().unwrap();
        eprintln!("paced reader (512 KiB/s) took {secs} s for 2 MiB");
        assert!(secs >= 3.0, "the paced reader was not slow: {secs} s");
        cut_after
    });
    eprintln!("slow reader cut {cut_after:.1?} after its request");
    // Two windows of waiting, and the status polls' own time.
    assert!(
        cut_after < Duration::from_millis(3500),
        "cut {cut_after:?} after the request, windows are 1 s"
    );
    assert!(
        slow.is_running(),
        "the slow reader stopped by itself: {} {}",
        slow.stdout(),
        slow.stderr()
    );
    // The cut is a reset: the server keeps neither the bytes the reader did not take nor a
    // FIN queued behind them (it checks its state once a second).
    slow.wait_for_within("tcp state 7", Duration::from_secs(3));
    assert_eq!(
        sha256_file(&fast_out).unwrap(),
        big,
        "full-speed body differs"
    );
    let s = server.status();
    let m = &s["http"]["metrics"];
    assert_eq!(m["send_rate_cuts"], 1, "{s}");
    assert_eq!(m["idle_timeouts"], 0, "{s}");
    assert_eq!(m["responses_2xx"], 3, "{s}");
    // The cut is logged, naming the reader and the settings to change.
    let log = server.log_text();
    let cuts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("HTTP connection cut"))
        .collect();
    assert_eq!(cuts.len(), 1, "{log}");
    assert!(
        cuts[0].contains("WARN")
            && cuts[0].contains(&format!("client={}", net.client_ip))
            && cuts[0].contains("min_send_rate_bytes_per_sec=262144")
            && cuts[0].contains("send_rate_window_ms=1000")
            && cuts[0].contains("[http] min_send_rate_bytes_per_sec"),
        "{}",
        cuts[0]
    );
    let released = pxe_testkit::wait_until(Duration::from_secs(5), || {
        http_counter(&server, "connections_open") == 0
    });
    assert!(released, "slots not given back: {}", server.status());
}
