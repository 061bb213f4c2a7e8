//! Network namespaces the tests create, the veth pairs between them and bridged segments.
//!
//! A [`Netns`] kills whatever still runs inside it and deletes itself on drop (which deletes
//! its end of every veth pair); names are unique per process and call, so tests can run in
//! parallel and never meet a namespace that an earlier run left.

use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rustix::process::Signal;
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

use crate::caps::{cannot_run, require_program, require_root};
use crate::process::{Run, run_bounded, run_command, signal_pid};

/// How long one `ip` command may take.
const IP_LIMIT: Duration = Duration::from_secs(20);

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A network namespace, deleted (after killing what runs in it) on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// A namespace named `pxt<pid>-<seq>-<tag>`, with `lo` up. Fails the test (see
    /// [`cannot_run`]) without root or network namespaces.
    pub fn new(tag: &str) -> Netns {
        require_root();
        require_program("ip");
        let name = format!(
            "pxt{}-{}-{tag}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let add = run_bounded(&["ip", "netns", "add", &name], IP_LIMIT);
        if !add.success() {
            cannot_run(&format!(
                "`ip netns add {name}` failed: {}",
                add.stderr.trim()
            ));
        }
        // From here on, Drop cleans up.
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> ARGS`; fails the test, with ip's message, if ip fails.
    pub fn ip(&self, args: &[&str]) {
        let mut argv = vec!["ip", "-n", self.name.as_str()];
        argv.extend_from_slice(args);
        let run = run_bounded(&argv, IP_LIMIT);
        assert!(run.success(), "`{}` failed: {run}", argv.join(" "));
    }

    /// Adds `n` addresses `first`, `first + 1`, ... (prefix length `prefix`) to `dev`, in one
    /// `ip -batch`.
    pub fn add_addresses(&self, dev: &str, first: Ipv4Addr, n: u32, prefix: u8) {
        let batch: String = (0..n)
            .map(|i| {
                let a = Ipv4Addr::from(u32::from(first) + i);
                format!("addr add {a}/{prefix} dev {dev}\n")
            })
            .collect();
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("addresses.batch");
        File::create(&file)
            .and_then(|mut f| f.write_all(batch.as_bytes()))
            .expect("writing the ip batch");
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name, "-batch"]).arg(&file);
        let run = run_command(cmd, IP_LIMIT);
        assert!(run.success(), "adding {n} addresses to {dev}: {run}");
    }

    /// `program` run inside the namespace (`ip netns exec`). A program that is not installed
    /// fails the test as a missing capability.
    pub fn command(&self, program: &str) -> Command {
        exec_in(&self.name, program)
    }

    /// Runs `argv` inside the namespace to completion, killed after `limit`.
    pub fn run(&self, argv: &[&str], limit: Duration) -> Run {
        let mut cmd = self.command(argv[0]);
        cmd.args(&argv[1..]);
        run_command(cmd, limit)
    }

    /// Runs `f` on a thread that has entered the namespace, so that the sockets it opens live
    /// there (setns(2) changes only the calling thread's namespace).
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .join()
        .expect("the thread inside the namespace panicked")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let pids = run_bounded(&["ip", "netns", "pids", &self.name], IP_LIMIT);
        for pid in pids.stdout.split_whitespace() {
            if let Ok(pid) = pid.parse::<u32>() {
                signal_pid(pid, Signal::KILL);
            }
        }
        let _ = run_bounded(&["ip", "netns", "del", &self.name], IP_LIMIT);
    }
}

/// `program` run inside the namespace named `ns` (see [`Netns::command`]).
pub(crate) fn exec_in(ns: &str, program: &str) -> Command {
    require_program(program);
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// A veth pair with one end in each namespace (created there directly, so the names never
/// clash with the host's), both ends up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// A host of a [`pair`] or a [`lan`]: its namespace's tag, its interface name, and its
/// address/prefix if it has one.
pub type Host<'a> = (&'a str, &'a str, Option<&'a str>);

fn address(ns: &Netns, iface: &str, addr: Option<&str>) {
    if let Some(a) = addr {
        ns.ip(&["addr", "add", a, "dev", iface]);
    }
}

/// Two hosts joined by a veth pair.
pub fn pair(a: Host, b: Host) -> (Netns, Netns) {
    let (na, nb) = (Netns::new(a.0), Netns::new(b.0));
    veth(&na, a.1, &nb, b.1);
    address(&na, a.1, a.2);
    address(&nb, b.1, b.2);
    (na, nb)
}

/// Hosts on one Ethernet segment: a bridge in a namespace of its own, each host joined to it by
/// a veth. Everything is deleted on drop.
pub struct Lan {
    pub hosts: Vec<Netns>,
    _switch: Netns,
}

/// A [`Lan`] of `hosts`.
pub fn lan(hosts: &[Host]) -> Lan {
    let sw = Netns::new("sw");
    sw.ip(&["link", "add", "br0", "type", "bridge"]);
    sw.ip(&["link", "set", "br0", "up"]);
    let hosts = hosts
        .iter()
        .enumerate()
        .map(|(k, &(tag, iface, addr))| {
            let ns = Netns::new(tag);
            let port = format!("port{k}");
            veth(&ns, iface, &sw, &port);
            sw.ip(&["link", "set", &port, "master", "br0"]);
            address(&ns, iface, addr);
            ns
        })
        .collect();
    Lan { hosts, _switch: sw }
}
