//! Engine selection where io_uring is unavailable: the real binary runs under a seccomp filter
//! that refuses `io_uring_setup` with EPERM (what a container runtime's default profile does).
//! `--engine auto` must log why it falls back and serve with the portable engine;
//! `--engine uring` must refuse to start with a clear error.
//!
//! Needs python3-seccomp (installed by scripts/install-deps.sh), hence ignored by default and run
//! by scripts/test.sh with the other system tests.

mod common;

use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{FetchOptions, fetch, sha256, test_bytes};

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
    assert!(
        ok,
        "SYSTEM TEST CANNOT RUN: python3-seccomp is missing (run scripts/install-deps.sh as root)"
    );
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

struct Server {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
            "[tftp]\nroot = \"{}\"\nlisten = [\"127.0.0.1:{port}\"]\nthreads = 1\n[control]\nsocket = \"{}/control.sock\"\n",
            root.display(),
            dir.path().display()
        ),
    )
    .expect("config");
    let child = Command::new("/usr/bin/python3")
        .args([
            "-c",
            SECCOMP_EXEC,
            env!("CARGO_BIN_EXE_pxe-server"),
            "serve",
            "--config",
        ])
        .arg(&config)
        .args(["--engine", engine])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pxe-server under seccomp");
    Server { child, _dir: dir }
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

    let _ = server.child.kill();
    let _ = server.child.wait();
    let mut log = String::new();
    if let Some(mut err) = server.child.stderr.take() {
        let _ = err.read_to_string(&mut log);
    }
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
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "pxe-server --engine uring kept running without io_uring"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut log = String::new();
    if let Some(mut err) = server.child.stderr.take() {
        let _ = err.read_to_string(&mut log);
    }
    assert!(
        !status.success(),
        "exit status {status} should be a failure"
    );
    assert!(
        log.contains("io_uring unavailable"),
        "no clear error in:\n{log}"
    );
}
