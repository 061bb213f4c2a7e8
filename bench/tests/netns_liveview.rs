//! The live view in a real browser: headless Chromium opens pxe-server's page
//! (`[metrics] listen`, in the server's namespace) while `pxe-bench boot` runs a storm of 1,000
//! clients (DHCP, boot file, kernel, initrd) of which one stops after its kernel. The page must
//! show live numbers during the storm, reach the server's final counts (boots completed, hosts
//! per phase), and show the stalled client as stuck, with its MAC, in the table filtered to
//! stuck hosts. Screenshots (mid-storm and at the end) are kept in
//! `target/test-output/liveview/`.
//!
//! Root only (scripts/test.sh runs it with PXE_REQUIRE_PRIVILEGED=1); without Chromium
//! (`scripts/install-deps.sh` installs it) it fails, naming what is missing.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pxe_testkit::peers::chromium::{Step, browse};
use pxe_testkit::{
    Netns, PxeServer, bench_bin, netns, require_root, run_json, test_bytes, workspace_root,
};

const CLIENTS: u64 = 1000;
const STALLED: u64 = 1;
/// The DHCP pool, every address of which is on the client namespace's interface: each
/// simulated machine fetches from the address it was leased (`--source-from-lease`), so the
/// server ties its transfers to its journey as it does a real machine's.
const POOL_FIRST: Ipv4Addr = Ipv4Addr::new(10, 206, 8, 1);
const POOL_SIZE: u32 = 1024;
/// Seconds without progress after which a host is stuck (short, for the test).
const STUCK_AFTER_S: u64 = 4;

const FILES: [(&str, usize); 4] = [
    ("undionly.kpxe", 64 * 1024 + 123),
    ("snponly.efi", 96 * 1024 + 7),
    ("vmlinuz", 256 * 1024),
    ("initrd.img", 512 * 1024),
];

fn server(ns: &Netns, dir: &Path) -> PxeServer {
    let root = dir.join("tftp");
    std::fs::create_dir_all(&root).unwrap();
    for (k, (name, size)) in FILES.iter().enumerate() {
        std::fs::write(root.join(name), test_bytes(*size, k as u64 + 1)).unwrap();
    }
    let config = format!(
        "[tftp]\nroot = \"{r}\"\nlisten = [\"10.206.0.1:69\"]\n\
         [dhcp]\nenabled = true\nmode = \"full\"\ninterfaces = [\"ls\"]\n\
         lease_db = \"{d}/leases.redb\"\n\
         [[dhcp.subnets]]\nsubnet = \"10.206.0.0/16\"\nrange_start = \"{first}\"\n\
         range_end = \"{last}\"\nrouter = \"10.206.0.1\"\n\
         [boot]\nbios = \"undionly.kpxe\"\nuefi_x64 = \"snponly.efi\"\n\
         kernel = \"vmlinuz\"\ninitrd = \"initrd.img\"\n\
         [metrics]\nlisten = [\"127.0.0.1:9469\"]\n\
         [journeys]\nstuck_after_secs = {STUCK_AFTER_S}\n",
        r = root.display(),
        d = dir.display(),
        first = POOL_FIRST,
        last = Ipv4Addr::from(u32::from(POOL_FIRST) + POOL_SIZE - 1),
    );
    PxeServer::start(ns, dir, &config)
}

/// Where the screenshots are kept after the test.
fn output_dir() -> PathBuf {
    let d = workspace_root().join("target/test-output/liveview");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `GET url` inside `ns` with curl, as JSON.
fn get_json(ns: &Netns, url: &str) -> serde_json::Value {
    let r = ns.run(
        &["curl", "-sS", "--max-time", "10", url],
        Duration::from_secs(15),
    );
    assert!(r.success(), "GET {url}: {r}");
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("GET {url}: {e}: {}", r.stdout))
}

fn text_of(id: &str) -> String {
    format!("(document.getElementById('{id}') || {{}}).textContent")
}

#[test]
#[ignore = "needs root, network namespaces and chromium (scripts/test.sh runs it)"]
fn the_page_follows_a_storm_to_its_final_counts_and_shows_the_stuck_host() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (srv, cli) = netns::pair(
        ("lvs", "ls", Some("10.206.0.1/16")),
        ("lvc", "lc", Some("10.206.0.2/16")),
    );
    cli.add_addresses("lc", POOL_FIRST, POOL_SIZE, 16);
    let mut server = server(&srv, dir.path());
    let out = output_dir();

    // The storm runs in its own thread; the browser watches from the server's namespace.
    let storm = {
        let mut cmd = cli.command(bench_bin().to_str().unwrap());
        cmd.args(["boot", "--clients", &CLIENTS.to_string()])
            .arg("--source-from-lease")
            .args([
                "--interface",
                "lc",
                "--deadline-s",
                "120",
                "--json",
                "--no-progress",
            ])
            .args(["--kernel", "vmlinuz", "--initrd", "initrd.img"])
            .args([
                "--stall-after",
                "kernel",
                "--stall-clients",
                &STALLED.to_string(),
            ])
            .args(["--metrics-url", "http://127.0.0.1:9469/metrics"]);
        std::thread::spawn(move || run_json(cmd, "pxe-bench boot", Duration::from_secs(200)))
    };

    let booted = CLIENTS - STALLED;
    let num = |id: &str| format!("Number({}.replace(/,/g, ''))", text_of(id));
    let steps = [
        // Live during the storm: frames arrive and hosts appear before the storm ends.
        Step::Wait {
            expr: format!("{} > 0", num("hosts")),
            timeout: Duration::from_secs(60),
            explain: Some(text_of("conn")),
        },
        Step::Eval(format!("[{}, {}]", num("hosts"), num("completed"))),
        Step::Screenshot(out.join("mid-storm.png")),
        // The final counts: every client but the stalled one booted, and it is stuck.
        Step::Wait {
            expr: format!(
                "{} === {booted} && {} === {STALLED} && \
                 document.querySelector('#completed-chart polyline') instanceof SVGPolylineElement",
                num("completed"),
                num("stuck")
            ),
            timeout: Duration::from_secs(150),
            explain: Some(format!("[{}, {}, {}]", text_of("completed"), text_of("stuck"), text_of("conn"))),
        },
        Step::Eval(
            "Object.fromEntries([...document.querySelectorAll('#phases .phase')]\
             .map(e => [e.id.slice(6), Number(e.dataset.count)]))"
                .into(),
        ),
        // Filter the table to stuck hosts (a new event stream with ?stuck=1).
        Step::Eval("document.getElementById('filter-stuck').click(), true".into()),
        Step::Wait {
            expr: "(() => { const r = document.querySelectorAll('#hosts-table tbody tr.host'); \
                   return r.length === 1 && r[0].dataset.stuck === 'true' ? [r[0].dataset.mac, r[0].dataset.phase] : null; })()"
                .into(),
            timeout: Duration::from_secs(20),
            explain: Some("document.querySelector('#hosts-table tbody').textContent".into()),
        },
        Step::Screenshot(out.join("stuck.png")),
    ];
    let results = browse(
        &srv,
        dir.path(),
        "http://127.0.0.1:9469/",
        &steps,
        Duration::from_secs(300),
    );

    let (status, report) = storm.join().expect("storm thread");
    eprintln!("storm: {report}");
    // The stalled client is not a failure of the storm.
    assert!(status.success(), "pxe-bench boot: {report:#}");
    assert_eq!(report["ok"], booted, "{report:#}");

    // Mid-storm the page showed hosts (the numbers were live, not only the end state).
    let mid = results[1].as_array().unwrap();
    assert!(mid[0].as_u64().unwrap() > 0, "{mid:?}");

    // The page's final numbers are the server's.
    let summary = get_json(&srv, "http://127.0.0.1:9469/api/v1/summary");
    assert_eq!(summary["version"], 1);
    assert_eq!(summary["completed"], booted, "{summary:#}");
    assert_eq!(summary["stuck"], STALLED, "{summary:#}");
    let phases = &results[4];
    for (phase, n) in summary["phases"].as_object().unwrap() {
        assert_eq!(
            &phases[phase], n,
            "phase {phase}: page {phases} server {summary}"
        );
    }

    // The stuck row is the host the server reports stuck, stopped after its kernel.
    let stuck = get_json(&srv, "http://127.0.0.1:9469/api/v1/hosts?stuck=1");
    assert_eq!(stuck["matched"], STALLED, "{stuck:#}");
    let host = &stuck["hosts"][0];
    let row = results[6].as_array().unwrap();
    assert_eq!(row[0], host["mac"], "{stuck:#}");
    assert_eq!(row[1], "kernel");
    assert_eq!(host["phase"], "kernel");
    for shot in ["mid-storm.png", "stuck.png"] {
        let png = std::fs::read(out.join(shot)).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{shot}");
    }
    server.stop();
}
