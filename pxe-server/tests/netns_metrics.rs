//! `/metrics` under a storm, read by a real Prometheus: pxe-server (full DHCP, TFTP, HTTP) in
//! the server namespace of a [`TestNet`], `pxe-bench boot` with 200 clients (DHCP, the boot
//! file over TFTP, kernel and initrd over HTTP) in the client namespace, and Debian's
//! `prometheus` in the server namespace scraping the server's default loopback listener every
//! second. After the storm, the values Prometheus stored (through its query API) must equal
//! what `pxe-server status --json` reports, and `promtool check metrics` must accept the
//! output without a lint.
//!
//! Needs root, `ip netns`, `prometheus` and `promtool` (scripts/install-deps.sh): `#[ignore]`d
//! and run by scripts/test.sh. Run without them it fails loudly.

use std::net::SocketAddr;
use std::time::Duration;

use pxe_testkit::peers::prometheus::Prometheus;
use pxe_testkit::testnet::{Engine, Server, TestNet};
use pxe_testkit::{bench_bin, require_program, wait_until};

const CLIENTS: usize = 200;
/// The server's default `[metrics] listen`, on the server namespace's own loopback.
const METRICS: &str = "127.0.0.1:9469";
const PROMETHEUS: &str = "127.0.0.1:9090";
/// How long the stored values may take to catch up with the server's after the storm: a
/// few 1 s scrapes. A failure-detection bound, not a speed target.
const CATCH_UP: Duration = Duration::from_secs(30);

#[test]
#[ignore = "needs root + network namespaces + prometheus (run by scripts/test.sh)"]
fn prometheus_scrapes_a_storm_and_stores_the_status_values() {
    require_program("prometheus");
    require_program("promtool");
    let net = TestNet::new();
    let base = u32::from(net.server_ip) & 0xffff_ff00;
    let ip = |host: u32| std::net::Ipv4Addr::from(base | host);
    let extra = format!(
        "max_sessions_per_client = 1000\n\
         [http]\nenabled = true\nlisten = [\"{srv}:80\"]\nmax_connections_per_client = 1000\n\
         [dhcp]\nenabled = true\nmode = \"full\"\ninterfaces = [\"eth0\"]\n\
         lease_db = \"LEASES\"\n\
         [[dhcp.subnets]]\nsubnet = \"{net}/24\"\nrange_start = \"{first}\"\nrange_end = \"{last}\"\n\
         [boot]\nbios = \"undionly.kpxe\"\nuefi_x64 = \"snponly.efi\"\nipxe_script = \"boot.ipxe\"\n",
        srv = net.server_ip,
        net = ip(0),
        first = ip(10),
        last = ip(250),
    );
    let dir = tempfile::tempdir().unwrap();
    let extra = extra.replace(
        "LEASES",
        &dir.path().join("leases.redb").display().to_string(),
    );
    pxe_testkit::data::open_to_all(dir.path());
    let server = Server::start(&net, Engine::Uring, &extra);
    for (name, len) in [
        ("undionly.kpxe", 64 * 1024),
        ("snponly.efi", 64 * 1024),
        ("boot.ipxe", 200),
        ("vmlinuz", 1024 * 1024),
        ("initrd.img", 2 * 1024 * 1024),
    ] {
        server.put(name, &pxe_testkit::test_bytes(len, len as u64));
    }

    let metrics: SocketAddr = METRICS.parse().unwrap();
    let prom = Prometheus::start(
        &net.server,
        dir.path(),
        PROMETHEUS.parse().unwrap(),
        &[metrics],
    );
    // The target is up before the storm: its first scrapes landed.
    assert!(
        wait_until(CATCH_UP, || prom.value("up{job=\"pxe\"}") == Some(1.0)),
        "prometheus never scraped {METRICS}:\n{}",
        prom.log()
    );

    let bench = bench_bin();
    let http_base = format!("http://{}/", net.server_ip);
    let run = net.in_client(
        &[
            bench.to_str().unwrap(),
            "boot",
            "--clients",
            &CLIENTS.to_string(),
            "--interface",
            "eth0",
            "--kernel",
            "vmlinuz",
            "--initrd",
            "initrd.img",
            "--http-base",
            &http_base,
            "--verify-dir",
            server.root.to_str().unwrap(),
            "--deadline-s",
            "120",
            "--no-progress",
            "--json",
        ],
        Duration::from_secs(180),
    );
    assert!(
        run.success(),
        "pxe-bench boot failed: {run}\n{}",
        server.log_text()
    );

    // Counter name in Prometheus, and its value in the status document.
    let pairs: [(&str, &[&str]); 5] = [
        (
            "sum(pxe_tftp_transfers_total{outcome=\"completed\"})",
            &["tftp", "metrics", "sessions_completed"],
        ),
        (
            "sum(pxe_tftp_sent_bytes_total)",
            &["tftp", "metrics", "payload_bytes_sent"],
        ),
        (
            "sum(pxe_dhcp_answers_total{type=\"ack\"})",
            &["dhcp", "metrics", "acks"],
        ),
        (
            "sum(pxe_dhcp_messages_total{type=\"discover\"})",
            &["dhcp", "metrics", "received_discover"],
        ),
        (
            "sum(pxe_http_requests_total)",
            &["http", "metrics", "requests"],
        ),
    ];
    let mut last = Vec::new();
    let caught_up = wait_until(CATCH_UP, || {
        let status = server.status();
        last = pairs
            .iter()
            .map(|(expr, path)| {
                let want = path.iter().fold(&status, |v, k| &v[*k]).as_u64();
                (*expr, want, prom.value(expr))
            })
            .collect();
        last.iter()
            .all(|(_, want, got)| want.is_some() && got.is_some() && *got == want.map(|w| w as f64))
    });
    assert!(
        caught_up,
        "Prometheus's values never matched the status (expr, status, prometheus): {last:#?}"
    );
    // The storm did happen, through every service.
    for (expr, want, _) in &last {
        assert!(want.unwrap() > 0, "{expr} is 0: {last:#?}");
    }
    assert!(last[0].1.unwrap() >= CLIENTS as u64, "{last:#?}");
    assert!(last[2].1.unwrap() >= CLIENTS as u64, "{last:#?}");
    // Leases against the pool, and the process facts read as the service account under the
    // enforced seccomp filter.
    let process = &server.status()["server"]["process"];
    assert_eq!(process["seccomp_mode"], "enforce", "{process}");
    assert_eq!(process["user"], "pxe-server", "{process}");
    assert_eq!(
        prom.value("pxe_dhcp_leases{state=\"bound\"}"),
        Some(CLIENTS as f64)
    );
    assert_eq!(prom.value("sum(pxe_dhcp_pool_addresses)"), Some(241.0));
    for fact in [
        "process_open_fds",
        "process_resident_memory_bytes",
        "process_max_fds",
    ] {
        let v = prom.value(fact);
        assert!(v.is_some_and(|v| v > 0.0), "{fact} = {v:?}");
    }

    // promtool accepts the exposition as it is, without a lint.
    let check = net.server.run(
        &[
            "sh",
            "-c",
            &format!("curl -sf http://{METRICS}/metrics | promtool check metrics"),
        ],
        Duration::from_secs(30),
    );
    assert!(check.success(), "promtool check metrics failed: {check}");
    assert_eq!(check.all().trim(), "", "promtool lints: {check}");
}
