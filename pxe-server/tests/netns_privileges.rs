//! Least privilege, on the real binary in a network namespace: started as root, pxe-server
//! binds 69 and 80, then runs as its service account (`[server] user`, created by
//! scripts/install-deps.sh) with no capability, no-new-privileges and its seccomp filter, and
//! still serves; a reload that needs a file the account may not read is refused with the
//! reason; started the way the systemd unit starts it (the service account with ambient
//! capabilities), it drops those too; an account that does not exist stops the start.
//!
//! Needs root and `ip netns`: the tests are `#[ignore]`d and run by scripts/test.sh. Run as
//! non-root they fail loudly.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use pxe_testkit::testnet::{Engine, Server, TestNet};
use pxe_testkit::{Signal, cannot_run, run_bounded, sha256, sha256_file, test_bytes, wait_until};

const LIMIT: Duration = Duration::from_secs(60);

/// The service account's uid and gid (`getent passwd pxe-server`).
fn service_account() -> (u32, u32) {
    let run = run_bounded(&["getent", "passwd", "pxe-server"], LIMIT);
    if !run.success() {
        cannot_run("no account pxe-server (scripts/install-deps.sh creates it)");
    }
    let fields: Vec<&str> = run.stdout.trim().split(':').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

/// A field of `/proc/PID/status`.
fn proc_status(pid: u32, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// The daemon's uid, gid, capabilities, no-new-privileges and seccomp as the kernel reports
/// them: what the docs promise (SECURITY.md, "Privileges").
fn assert_dropped(server: &mut Server, uid: u32, gid: u32) {
    let pid = server.daemon().proc().pid();
    let ids = |key| -> Vec<u32> {
        proc_status(pid, key)
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    assert_eq!(ids("Uid"), vec![uid; 4], "real, effective, saved, fs uid");
    assert_eq!(ids("Gid"), vec![gid; 4], "real, effective, saved, fs gid");
    assert_eq!(proc_status(pid, "Groups"), gid.to_string());
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(proc_status(pid, set), "0000000000000000", "{set}");
    }
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");
    assert_eq!(proc_status(pid, "Seccomp"), "2", "a seccomp filter");
    // Every thread (each has its own capability sets).
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        assert!(
            status.contains("CapEff:\t0000000000000000") && status.contains("Seccomp:\t2"),
            "a thread kept a capability or runs unfiltered:\n{status}"
        );
    }
    // `pxe-server status` says the same.
    let s = server.status();
    let kernel = &s["server"]["process"]["kernel"];
    assert_eq!(kernel["uid"][1], uid, "{s}");
    assert_eq!(kernel["cap_eff"], "0000000000000000", "{s}");
    assert_eq!(kernel["no_new_privs"], true, "{s}");
    assert_eq!(s["server"]["process"]["seccomp_mode"], "enforce", "{s}");
}

/// Fetches `name` over TFTP (curl) and HTTP (curl) and checks the bytes.
fn serves(net: &TestNet, server: &Server, name: &str, sum: &str) {
    let out = server.scratch().join("got");
    for url in [
        format!("tftp://{}/{name}", server.ip),
        format!("http://{}/{name}", server.ip),
    ] {
        let _ = std::fs::remove_file(&out);
        let run = net.in_client(
            &[
                "curl",
                "-sS",
                "--max-time",
                "30",
                "-o",
                out.to_str().unwrap(),
                &url,
            ],
            LIMIT,
        );
        assert!(run.success(), "{url}: {run}\n{}", server.log_text());
        assert_eq!(sha256_file(&out).unwrap(), sum, "{url}");
    }
}

fn http_extra(net: &TestNet) -> String {
    format!(
        "\n[http]\nenabled = true\nlisten = [\"{}:80\"]\n",
        net.server_ip
    )
}

#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn root_start_drops_to_the_service_account_and_serves() {
    let (uid, gid) = service_account();
    let net = TestNet::new();
    let mut server = Server::start(&net, Engine::Uring, &http_extra(&net));
    assert_dropped(&mut server, uid, gid);
    assert!(
        server.log_text().contains("privileges dropped"),
        "{}",
        server.log_text()
    );
    let data = test_bytes(3 << 20, 41);
    let sum = server.put("kernel.img", &data);
    serves(&net, &server, "kernel.img", &sum);

    // A reload that needs a file the account may not read: refused, with the reason, and the
    // running configuration stays.
    let config = server.daemon().config().to_owned();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = server.status()["reload"]["count"].as_u64().unwrap();
    server.daemon().proc().signal(Signal::HUP);
    let mut last = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            let s = server.status();
            last = s["reload"]["last"].clone();
            s["reload"]["count"].as_u64() == Some(before + 1)
        }),
        "no reload after SIGHUP:\n{}",
        server.log_text()
    );
    assert_eq!(last["ok"], false, "{last}");
    let error = last["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("Permission denied")
            && error.contains("runs as pxe-server")
            && error.contains("may not read"),
        "{error}"
    );
    assert!(
        server.log_text().contains("configuration reload refused"),
        "{}",
        server.log_text()
    );
    serves(&net, &server, "kernel.img", &sum);
    // Readable again: the reload goes through.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    server.daemon().proc().signal(Signal::HUP);
    assert!(
        wait_until(Duration::from_secs(10), || {
            server.status()["reload"]["last"]["ok"] == true
        }),
        "{}",
        server.log_text()
    );

    // A file the account may not read is refused (ERROR 2, counted in refused_access).
    let refused = server.status()["tftp"]["metrics"]["refused_access"]
        .as_u64()
        .unwrap();
    std::fs::write(server.root.join("private.img"), b"private\n").unwrap();
    std::fs::set_permissions(
        server.root.join("private.img"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let run = net.in_client(
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            &format!("tftp://{}/private.img", server.ip),
        ],
        LIMIT,
    );
    assert_eq!(run.code(), Some(69), "want TFTP ERROR 2: {run}");
    assert_eq!(
        server.status()["tftp"]["metrics"]["refused_access"].as_u64(),
        Some(refused + 1)
    );
}

/// The systemd unit's way (dist/pxe-server.service): the service account with the start-up
/// capabilities as ambient ones; the daemon drops them once bound.
#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn ambient_capabilities_are_dropped_after_start() {
    let (uid, gid) = service_account();
    let net = TestNet::new();
    let caps = "+net_bind_service,+net_raw,+net_admin,+bpf";
    let prefix: Vec<String> = [
        "setpriv",
        "--reuid=pxe-server",
        "--regid=pxe-server",
        "--init-groups",
        &format!("--inh-caps={caps}"),
        &format!("--ambient-caps={caps}"),
        "--",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut server = Server::start_under(
        &net,
        Engine::Uring,
        &http_extra(&net),
        prefix,
        Some((uid, gid)),
    );
    assert_dropped(&mut server, uid, gid);
    let sum = server.put("initrd.img", &test_bytes(1 << 20, 42));
    serves(&net, &server, "initrd.img", &sum);
    assert_eq!(sum, sha256(&test_bytes(1 << 20, 42)));
}

/// An account that does not exist stops the start, naming the file, the line and the key.
#[test]
#[ignore = "needs root + network namespaces (run by scripts/test.sh)"]
fn a_missing_account_stops_the_start() {
    pxe_testkit::require_root();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let config = dir.path().join("pxe.toml");
    let text = format!(
        "[tftp]\nroot = {root:?}\nlisten = [\"127.0.0.1:0\"]\n[control]\nsocket = {:?}\n\
         [server]\nuser = \"pxe-no-such-account\"\n[metrics]\nlisten = [\"127.0.0.1:0\"]\n",
        dir.path().join("control.sock")
    );
    let line = 1 + text.lines().position(|l| l.starts_with("user =")).unwrap();
    std::fs::write(&config, text).unwrap();
    let bin = pxe_testkit::server_bin();
    let run = run_bounded(
        &[
            bin.to_str().unwrap(),
            "serve",
            "--config",
            config.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert!(!run.success(), "{run}");
    let want = format!(
        "{}:{line}: server.user: no account \"pxe-no-such-account\"",
        config.display()
    );
    assert!(run.all().contains(&want), "want {want:?} in: {run}");
}
