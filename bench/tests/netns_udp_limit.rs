//! `pxe-bench udp-limit` across a veth pair between two network namespaces the test creates
//! (10.204.0.1 sends, 10.204.0.2 receives, one port per thread): it must measure a non-zero received rate, never
//! more received than sent, with and without UDP GSO, with one and two threads.
//!
//! Root only (scripts/test.sh runs it with PXE_REQUIRE_PRIVILEGED=1). A test that cannot run
//! (not root, no namespaces) fails loudly; it never passes.

use std::process::Command;
use std::time::{Duration, Instant};

use pxe_testkit::{Netns, bench_bin, cannot_run, netns, require_root, run_json};

/// Sender (`us` 10.204.0.1/24) and receiver (`ur` 10.204.0.2/24) on a veth.
fn pair() -> (Netns, Netns) {
    netns::pair(
        ("snd", "us", Some("10.204.0.1/24")),
        ("rcv", "ur", Some("10.204.0.2/24")),
    )
}

/// Runs udp-limit (bounded: killed after 30 s) and returns its JSON report.
fn udp_limit(snd: &Netns, rcv: &Netns, gso: u16, threads: u16) -> serde_json::Value {
    let mut cmd = Command::new(bench_bin());
    cmd.args([
        "udp-limit",
        "--send-netns",
        snd.name(),
        "--recv-netns",
        rcv.name(),
    ])
    .args([
        "--dest",
        "10.204.0.2:9000",
        "--size",
        "1472",
        "--duration-s",
        "1",
    ])
    .args(["--gso-segments", &gso.to_string()])
    .args(["--threads", &threads.to_string(), "--json"]);
    let (status, r) = run_json(cmd, "udp-limit", Duration::from_secs(30));
    assert!(status.success(), "udp-limit failed ({status}): {r:#}");
    eprintln!("gso {gso}, {threads} threads: {r}");
    r
}

fn check(r: &serde_json::Value, gso: u64, threads: u64) {
    let sent = r["sent_datagrams"].as_u64().unwrap();
    let received = r["received_datagrams"].as_u64().unwrap();
    assert!(sent > 1000, "{r:#}");
    assert!(received > 0 && received <= sent, "{r:#}");
    assert!(r["received_mbit_s"].as_f64().unwrap() > 10.0, "{r:#}");
    assert!(r["received_pps"].as_f64().unwrap() > 0.0, "{r:#}");
    let loss = r["loss_percent"].as_f64().unwrap();
    assert!((0.0..100.0).contains(&loss), "{r:#}");
    assert!(r["sender_cpu_percent"].as_f64().unwrap() > 0.0, "{r:#}");
    assert_eq!(r["size"], 1472);
    assert_eq!(r["threads"], threads);
    // 44 segments of 1472 bytes is the most one UDP message holds (GSO on a veth is supported).
    assert_eq!(r["gso_segments"], gso, "{r:#}");
    // One port per thread: every receiver has a flow.
    let per = r["received_per_thread"].as_array().unwrap();
    assert_eq!(per.len() as u64, threads);
    assert!(per.iter().all(|n| n.as_u64().unwrap() > 0), "{r:#}");
    let secs = r["seconds"].as_f64().unwrap();
    assert!((0.9..5.0).contains(&secs), "{r:#}");
}

#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn udp_limit_over_veth_with_and_without_gso() {
    let (snd, rcv) = pair();
    check(&udp_limit(&snd, &rcv, 0, 1), 0, 1);
    check(&udp_limit(&snd, &rcv, 64, 1), 44, 1);
    check(&udp_limit(&snd, &rcv, 64, 2), 44, 2);
}

#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn udp_limit_fails_clearly_without_the_namespace() {
    require_root();
    for side in ["--send-netns", "--recv-netns"] {
        let t0 = Instant::now();
        let out = Command::new(bench_bin())
            .args(["udp-limit", side, "pxu-no-such-namespace"])
            .args(["--dest", "127.0.0.1:9", "--duration-s", "3"])
            .output()
            .unwrap_or_else(|e| cannot_run(&format!("spawning pxe-bench: {e}")));
        assert!(!out.status.success(), "{side}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("/var/run/netns/pxu-no-such-namespace"),
            "{side}: {err}"
        );
        // Refused at the start, not after the measurement.
        assert!(t0.elapsed() < Duration::from_secs(2), "{side}");
    }
}
