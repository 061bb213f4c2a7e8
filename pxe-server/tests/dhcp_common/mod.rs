//! Test environment for the DHCP integration tests: network namespaces, veth pairs and
//! bridges, processes that die with the test, and a pxe-server started in a namespace.
//!
//! Everything is RAII: a [`Netns`] deletes its namespace (after killing what still runs in it)
//! on drop, a [`Proc`] kills and reaps its process on drop. Every wait is bounded.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The pxe-server binary under test.
pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_pxe-server");

/// Panics (loudly) unless we are root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (network namespaces, DHCP ports): run it through scripts/test.sh as root"
    );
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A namespace named `pxd<pid>-<seq>-<tag>` (unique per process and call), with `lo` up.
    pub fn new(tag: &str) -> Netns {
        require_root();
        let name = format!(
            "pxd{}-{}-{tag}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("running ip netns add");
        assert!(
            out.status.success(),
            "ip netns add {name} failed: {} (root and network namespaces are required)",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ip(&a);
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: kill(2) with a pid read from the namespace; no memory involved.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A veth pair with one end in each namespace (created there directly, so the names never
/// clash with the host's).
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// A child process killed and reaped on drop; its output goes to files.
pub struct Proc {
    pub child: Child,
    pub what: String,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout/stderr to `<dir>/<tag>.out|.err`.
    pub fn spawn(mut cmd: Command, dir: &Path, tag: &str) -> Proc {
        let stdout = dir.join(format!("{tag}.out"));
        let stderr = dir.join(format!("{tag}.err"));
        let what = format!("{cmd:?}");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
        Proc {
            child,
            what,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits up to `timeout` for the process to exit; `None` if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), sig) };
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The result of [`run`].
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` to completion within `timeout` (else kills it and panics with its output).
pub fn run(cmd: Command, dir: &Path, tag: &str, timeout: Duration) -> Ran {
    let mut p = Proc::spawn(cmd, dir, tag);
    let status = match p.wait_timeout(timeout) {
        Some(s) => s,
        None => {
            let _ = p.child.kill();
            let _ = p.child.wait();
            panic!(
                "{} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                p.what,
                p.stdout(),
                p.stderr()
            );
        }
    };
    Ran {
        status,
        stdout: p.stdout(),
        stderr: p.stderr(),
    }
}

/// Waits until `cond` holds, polling every 50 ms, for at most `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A pxe-server running in a namespace.
pub struct Server {
    pub proc: Proc,
    pub config: PathBuf,
    ns: String,
    dir: PathBuf,
    starts: u32,
}

impl Server {
    /// Writes `config` to `<dir>/pxe.toml`, starts `pxe-server serve` in `ns`, waits (at most
    /// 15 s) for "DHCP service ready".
    pub fn start(ns: &Netns, dir: &Path, config: &str) -> Server {
        let path = dir.join("pxe.toml");
        write_config(&path, dir, config);
        let mut s = Server {
            proc: Self::spawn(ns, dir, &path, 0),
            config: path,
            ns: ns.name.clone(),
            dir: dir.to_owned(),
            starts: 0,
        };
        s.wait_ready();
        s
    }

    fn spawn(ns: &Netns, dir: &Path, config: &Path, n: u32) -> Proc {
        let mut cmd = ns.command(SERVER_BIN);
        cmd.args(["serve", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info,pxe_server=debug");
        Proc::spawn(cmd, dir, &format!("pxe-server-{n}"))
    }

    fn wait_ready(&mut self) {
        let ok = wait_until(Duration::from_secs(15), || {
            self.proc.stderr().contains("DHCP service ready")
                || self.proc.child.try_wait().ok().flatten().is_some()
        });
        let log = self.proc.stderr();
        assert!(
            ok && log.contains("DHCP service ready"),
            "pxe-server did not start:\n{log}"
        );
    }

    /// `kill -9`, then a new server on the same config and lease database.
    pub fn kill9_and_restart(&mut self) {
        self.proc.signal(libc::SIGKILL);
        assert!(
            self.proc.wait_timeout(Duration::from_secs(5)).is_some(),
            "pxe-server survived SIGKILL"
        );
        self.starts += 1;
        let ns = Netns {
            name: self.ns.clone(),
        };
        self.proc = Self::spawn(&ns, &self.dir, &self.config, self.starts);
        std::mem::forget(ns); // not ours to delete
        self.wait_ready();
    }

    /// SIGTERM and a bounded wait; returns the log.
    pub fn stop(&mut self) -> String {
        self.proc.signal(libc::SIGTERM);
        let status = self.proc.wait_timeout(Duration::from_secs(10));
        let log = self.proc.stderr();
        assert!(status.is_some(), "pxe-server ignored SIGTERM:\n{log}");
        log
    }

    pub fn log(&self) -> String {
        self.proc.stderr()
    }

    /// `pxe-server status --json` against this server's control socket.
    pub fn status(&self) -> serde_json::Value {
        let out = Command::new(SERVER_BIN)
            .args(["status", "--json", "--socket"])
            .arg(self.dir.join("control.sock"))
            .output()
            .expect("running pxe-server status");
        assert!(
            out.status.success(),
            "pxe-server status failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).expect("status is JSON")
    }

    /// Rewrites the config file, sends SIGHUP and waits (at most 10 s) until the status shows
    /// the reload; returns the status's `reload.last`.
    pub fn reload(&mut self, config: &str) -> serde_json::Value {
        let before = self.status()["reload"]["count"].as_u64().unwrap();
        write_config(&self.config, &self.dir, config);
        self.proc.signal(libc::SIGHUP);
        let mut last = serde_json::Value::Null;
        let seen = wait_until(Duration::from_secs(10), || {
            let s = self.status();
            last = s["reload"]["last"].clone();
            s["reload"]["count"].as_u64() == Some(before + 1)
        });
        assert!(seen, "no reload after SIGHUP:\n{}", self.log());
        last
    }
}

/// Writes `config` plus this test's own `[control]` socket (the default one is host-wide).
fn write_config(path: &Path, dir: &Path, config: &str) {
    let config = format!(
        "{config}\n[control]\nsocket = {:?}\n",
        dir.join("control.sock")
    );
    std::fs::write(path, config).unwrap();
}

/// The value of `key=N` in the last "DHCP service stopped" / "DHCP metrics" line of `log`.
pub fn metric(log: &str, key: &str) -> Option<u64> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("DHCP service stopped") || l.contains("DHCP metrics"))?;
    let pat = format!("{key}=");
    line.split(|c: char| c.is_whitespace() || c == '"')
        .find_map(|w| w.strip_prefix(&pat))
        .and_then(|v| v.parse().ok())
}

/// The counts of one perfdhcp statistics block ("DISCOVER-OFFER" or "REQUEST-ACK").
pub fn perfdhcp_block(out: &str, name: &str) -> (u64, u64, u64) {
    let start = out
        .find(&format!("Statistics for: {name}"))
        .unwrap_or_else(|| panic!("no {name} statistics in:\n{out}"));
    let block = &out[start..];
    let get = |key: &str| -> u64 {
        block
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in:\n{block}"))
            .trim()
            .parse()
            .unwrap()
    };
    (
        get("sent packets:"),
        get("received packets:"),
        get("drops:"),
    )
}
