//! Engine selection where io_uring is unavailable: the real binary runs under a seccomp filter
//! that refuses `io_uring_setup` with EPERM (what a container runtime's default profile does).
//! `--engine auto` must log why it falls back and serve with the portable engine;
//! `--engine uring` must refuse to start with a clear error.
//!
//! Needs python3-seccomp (installed by scripts/install-deps.sh), hence ignored by default and run
//! by scripts/test.sh with the other system tests.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use pxe_testkit::tftp::{FetchOptions, fetch};
use pxe_testkit::{Proc, cannot_run, server_bin, sha256, test_bytes};

/// Runs `argv` with io_uring_setup refused by seccomp.
const SECCOMP_EXEC: &str = r#"
import errno, os, sys, seccomp
f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
f.add_rule(seccomp.ERRNO(errno.EPERM), "io_uring_setup")
f.load()
os.execv(sys.argv[1], sys.argv[1:])
"#;

fn require_seccomp() {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import seccomp"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        cannot_run("python3-seccomp is missing (run scripts/install-deps.sh as root)");
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// pxe-server under seccomp (killed on drop), its log in the temporary directory.
struct Server {
    proc: Proc,
    _dir: tempfile::TempDir,
}

fn start(engine: &str, port: u16, image: &[u8]) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("root dir");
    std::fs::write(root.join("image.bin"), image).expect("image");
    let config = dir.path().join("pxe.toml");
    std::fs::write(
        &config,
        format!(
            "[tftp]\nroot = \"{}\"\nlisten = [\"127.0.0.1:{port}\"]\nthreads = 1\n[control]\nsocket = \"{}/control.sock\"\n[metrics]\nlisten = [\"127.0.0.1:0\"]\n",
            root.display(),
            dir.path().display()
        ),
    )
    .expect("config");
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args(["-c", SECCOMP_EXEC])
        .arg(server_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--engine", engine])
        .env("RUST_LOG", "info");
    let proc = Proc::spawn(cmd, dir.path(), "pxe-server");
    Server { proc, _dir: dir }
}

#[test]
#[ignore = "needs python3-seccomp (run by scripts/test.sh)"]
fn auto_falls_back_to_portable_when_seccomp_refuses_io_uring() {
    require_seccomp();
    let port = free_port();
    let image = test_bytes(3 * 1468 * 100 + 17, 7);
    let mut server = start("auto", port, &image);

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    let opts = FetchOptions {
        blksize: Some(1468),
        windowsize: Some(4),
        tsize: true,
        overall: Duration::from_secs(10),
        ..FetchOptions::default()
    };
    let fetched = loop {
        match fetch(addr, b"image.bin", &opts) {
            Ok(f) => break f,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("no transfer from the fallback engine within 20 s: {e:?}"),
        }
    };
    assert_eq!(sha256(&fetched.data), sha256(&image), "bytes differ");

    server.proc.kill();
    let log = server.proc.stderr();
    assert!(
        log.contains("engine=\"portable\""),
        "the log does not say the portable engine runs:\n{log}"
    );
    assert!(
        log.contains("io_uring unavailable") && log.contains("EPERM") || log.contains("seccomp"),
        "the log does not say why io_uring is unavailable:\n{log}"
    );
}

#[test]
#[ignore = "needs python3-seccomp (run by scripts/test.sh)"]
fn forced_uring_refuses_to_start_when_seccomp_refuses_io_uring() {
    require_seccomp();
    let mut server = start("uring", free_port(), b"x");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.proc.try_status() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "pxe-server --engine uring kept running without io_uring"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = server.proc.stderr();
    assert!(
        !status.success(),
        "exit status {status} should be a failure"
    );
    assert!(
        log.contains("io_uring unavailable"),
        "no clear error in:\n{log}"
    );
}
