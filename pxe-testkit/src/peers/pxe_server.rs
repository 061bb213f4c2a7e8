//! The pxe-server binary under test, started in a namespace with a config of the test's; and a
//! site of several instances on one segment, sharing a PostgreSQL store ([`Site`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::Signal;
use crate::bins::server_bin;
use crate::netns::{Lan, Netns, exec_in, lan};
use crate::peers::postgres::Postgres;
use crate::process::{Proc, run_command, wait_until};

/// How to start pxe-server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The server's `RUST_LOG`.
    pub rust_log: String,
    /// Arguments after `serve --config FILE`.
    pub args: Vec<String>,
    /// Log lines to wait for (each at most [`crate::process::LOG_WAIT`]) before the start
    /// returns.
    pub ready: Vec<String>,
    /// A command the server runs under (`setpriv ...`), its arguments before the binary.
    pub prefix: Vec<String>,
    /// The uid and gid to give the test directory to, for a server started unprivileged
    /// (it creates its control socket there).
    pub dir_owner: Option<(u32, u32)>,
}

impl Default for ServeOptions {
    /// `RUST_LOG=info`, and the start waits for the DHCP service.
    fn default() -> Self {
        ServeOptions {
            rust_log: "info".into(),
            args: vec![],
            ready: vec!["DHCP service ready".into()],
            prefix: vec![],
            dir_owner: None,
        }
    }
}

impl ServeOptions {
    /// The defaults, with pxe-server's own debug lines in the log.
    pub fn debug() -> Self {
        ServeOptions {
            rust_log: "info,pxe_server=debug".into(),
            ..ServeOptions::default()
        }
    }
}

/// `pxe-server serve` running in a namespace, killed on drop (which prints its log if the test
/// is failing).
pub struct PxeServer {
    proc: Proc,
    config: PathBuf,
    dir: PathBuf,
    ns: String,
    opts: ServeOptions,
    starts: u32,
}

impl PxeServer {
    /// [`PxeServer::start_with`] the default [`ServeOptions`].
    pub fn start(ns: &Netns, dir: &Path, config: &str) -> PxeServer {
        Self::start_with(ns, dir, config, ServeOptions::default())
    }

    /// Writes `config` to `<dir>/pxe.toml` (plus a `[control]` socket in `dir`: the default
    /// one is host-wide, so `config` has no `[control]` section), starts `pxe-server serve`
    /// in `ns` with its output in `<dir>/pxe-server-0.out|.err`, and waits for the
    /// `opts.ready` lines.
    pub fn start_with(ns: &Netns, dir: &Path, config: &str, opts: ServeOptions) -> PxeServer {
        let path = dir.join("pxe.toml");
        write_config(&path, dir, config);
        if let Some((uid, gid)) = opts.dir_owner {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", dir.display()));
        }
        let mut s = PxeServer {
            proc: spawn(ns.name(), dir, &path, &opts, 0),
            config: path,
            dir: dir.to_owned(),
            ns: ns.name().to_owned(),
            opts,
            starts: 0,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&mut self) {
        for line in self.opts.ready.clone() {
            self.proc.wait_for(&line);
        }
    }

    /// The config file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// The log so far (the server logs to stderr).
    pub fn log(&self) -> String {
        self.proc.stderr()
    }

    /// The process.
    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// Whether the server still runs.
    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Waits (bounded) for `line` in the log.
    pub fn wait_for(&mut self, line: &str) {
        self.proc.wait_for(line);
    }

    /// `kill -9`, then a new server on the same config (and so the same databases), started
    /// as the first one was.
    pub fn kill9_and_restart(&mut self) {
        self.proc.signal(Signal::KILL);
        assert!(
            self.proc.wait_timeout(Duration::from_secs(5)).is_some(),
            "pxe-server survived SIGKILL"
        );
        self.starts += 1;
        self.proc = spawn(&self.ns, &self.dir, &self.config, &self.opts, self.starts);
        self.wait_ready();
    }

    /// SIGTERM and a bounded wait for the exit; returns the log.
    pub fn stop(&mut self) -> String {
        self.proc.signal(Signal::TERM);
        let status = self.proc.wait_timeout(Duration::from_secs(10));
        let log = self.log();
        assert!(status.is_some(), "pxe-server ignored SIGTERM:\n{log}");
        log
    }

    /// `pxe-server status --json` against this server's control socket.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.status_with(&["--json"])).expect("status is JSON")
    }

    /// `pxe-server status --hosts --json ARGS` (`--phase P`, `--stuck`): the hosts document.
    pub fn hosts(&self, args: &[&str]) -> serde_json::Value {
        let out = self.status_with(&[&["--hosts", "--json"][..], args].concat());
        serde_json::from_str(&out).expect("the hosts document is JSON")
    }

    /// `pxe-server status ARGS` against this server's control socket; its standard output.
    pub fn status_with(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(server_bin());
        cmd.arg("status")
            .args(args)
            .arg("--socket")
            .arg(self.control_socket());
        let run = run_command(cmd, Duration::from_secs(20));
        assert!(
            run.success(),
            "pxe-server status {args:?} failed: {run}\nserver log:\n{}",
            self.log()
        );
        run.stdout
    }

    /// Rewrites the config file, sends SIGHUP and waits (at most 10 s) until the status shows
    /// the reload; returns the status's `reload.last`.
    pub fn reload(&mut self, config: &str) -> serde_json::Value {
        let before = self.status()["reload"]["count"].as_u64().unwrap();
        write_config(&self.config, &self.dir, config);
        self.proc.signal(Signal::HUP);
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

impl Drop for PxeServer {
    fn drop(&mut self) {
        self.proc.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- pxe-server log ({}) ---\n{}\n--- end of log ---",
                self.config.display(),
                self.log()
            );
        }
    }
}

fn spawn(ns: &str, dir: &Path, config: &Path, opts: &ServeOptions, n: u32) -> Proc {
    let bin = server_bin();
    let bin = bin.to_str().expect("utf-8 path");
    let mut cmd = match opts.prefix.split_first() {
        Some((program, args)) => {
            let mut cmd = exec_in(ns, program);
            cmd.args(args).arg(bin);
            cmd
        }
        None => exec_in(ns, bin),
    };
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .args(&opts.args)
        .env("RUST_LOG", &opts.rust_log);
    Proc::spawn(cmd, dir, &format!("pxe-server-{n}"))
}

/// Writes `config` plus the test's own `[control]` socket in `dir`, and opens `dir` (a
/// temporary directory, mode 0700) to every account: the server reads its config file,
/// templates and served files again as its service account after it dropped root's
/// privileges (`[server] user`).
fn write_config(path: &Path, dir: &Path, config: &str) {
    let config = format!(
        "{config}\n[control]\nsocket = {:?}\n",
        dir.join("control.sock")
    );
    std::fs::write(path, config).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    crate::data::open_to_all(dir);
}

/// Where a [`Site`]'s instances keep their leases and next-boot state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteStore {
    /// Each instance its own redb file (`[dhcp] lease_db`): no `[store]` section.
    Redb,
    /// One PostgreSQL in a namespace of its own on the segment; every instance has a
    /// `[store]` section naming it, its password file and the instance's own name.
    Postgres,
}

/// What a [`Site`] is made of.
#[derive(Debug, Clone)]
pub struct SiteSpec {
    /// The site's network is 10.`net`.0.0/16.
    pub net: u8,
    /// How many pxe-server instances (at most 200).
    pub instances: usize,
    pub store: SiteStore,
    /// The config common to every instance, without `[store]` and `[control]`. Replaced in
    /// it per instance: `@IP@` (the instance's address, its server identifier), `@NAME@`
    /// (`pxe1`, `pxe2`, ...), `@DIR@` (the instance's own directory: its redb file, its
    /// logs) and `@SITE@` (the site's directory, shared: TFTP roots and the like).
    pub template: String,
    /// Lines added to every instance's `[store]` (`heartbeat_ms = 200`, ...), Postgres only.
    pub store_keys: String,
    /// Give the client namespace the address 10.`net`.0.2/16 (else it has none, as a PXE
    /// ROM before its lease).
    pub client_addr: bool,
    pub opts: ServeOptions,
    /// Files written into the site's directory (paths relative to it, readable by all)
    /// before any instance starts: the TFTP root the template names, and the like.
    pub files: Vec<(String, Vec<u8>)>,
}

impl SiteSpec {
    /// `instances` instances on `store` with `template`, the default options, a client without
    /// an address.
    pub fn new(net: u8, instances: usize, store: SiteStore, template: &str) -> SiteSpec {
        SiteSpec {
            net,
            instances,
            store,
            template: template.to_owned(),
            store_keys: String::new(),
            client_addr: false,
            opts: ServeOptions::default(),
            files: Vec::new(),
        }
    }
}

/// A boot site: `instances` pxe-servers, each in its own namespace on one bridged segment with
/// its own address (10.N.0.11, .12, ...; interface `ds`), the PostgreSQL they share (10.N.0.5,
/// its own namespace) when the store is Postgres, and a client namespace (interface `dc`).
/// Everything stops and is deleted on drop: the servers first, then PostgreSQL, then the
/// namespaces and the directory.
pub struct Site {
    /// The instances, `pxe1` first.
    pub servers: Vec<PxeServer>,
    pub pg: Option<Postgres>,
    spec: SiteSpec,
    configs: Vec<String>,
    /// Hosts: the client, the PostgreSQL host, then the instances.
    lan: Lan,
    dir: tempfile::TempDir,
}

/// Index of the client and of the PostgreSQL host in the site's [`Lan`].
const CLIENT: usize = 0;
const PG_HOST: usize = 1;

impl Site {
    /// Builds the segment, starts PostgreSQL (Postgres store) and then every instance, each
    /// waiting for `spec.opts.ready`.
    pub fn start(spec: SiteSpec) -> Site {
        assert!(
            (1..=200).contains(&spec.instances),
            "a site has 1 to 200 instances"
        );
        let net = spec.net;
        let cli_addr = format!("10.{net}.0.2/16");
        let pg_addr = format!("10.{net}.0.5/16");
        let addrs: Vec<String> = (0..spec.instances)
            .map(|i| format!("{}/16", Self::addr_of(net, i)))
            .collect();
        let tags: Vec<String> = (0..spec.instances).map(Self::name).collect();
        let mut hosts: Vec<crate::netns::Host> = vec![
            ("cli", "dc", spec.client_addr.then_some(cli_addr.as_str())),
            ("pg", "dp", Some(pg_addr.as_str())),
        ];
        hosts.extend(
            tags.iter()
                .zip(&addrs)
                .map(|(t, a)| (t.as_str(), "ds", Some(a.as_str()))),
        );
        let lan = lan(&hosts);
        let dir = tempfile::tempdir().expect("temp dir");
        for (path, bytes) in &spec.files {
            let p = dir.path().join(path);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)
                    .unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
            }
            std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        crate::data::open_to_all(dir.path());
        let pg = (spec.store == SiteStore::Postgres).then(|| {
            Postgres::start_in(
                Some(&lan.hosts[PG_HOST]),
                dir.path(),
                Some(Ipv4Addr::new(10, net, 0, 5)),
            )
        });
        let mut site = Site {
            servers: Vec::new(),
            pg,
            spec,
            configs: Vec::new(),
            lan,
            dir,
        };
        for i in 0..site.spec.instances {
            let config = site.config_of(i);
            let idir = site.instance_dir(i);
            std::fs::create_dir_all(&idir).unwrap_or_else(|e| panic!("{}: {e}", idir.display()));
            let server = PxeServer::start_with(
                &site.lan.hosts[2 + i],
                &idir,
                &config,
                site.spec.opts.clone(),
            );
            site.configs.push(config);
            site.servers.push(server);
        }
        site
    }

    fn addr_of(net: u8, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, net, 0, 11 + i as u8)
    }

    /// The name of instance `i` (`pxe1` for 0).
    pub fn name(i: usize) -> String {
        format!("pxe{}", i + 1)
    }

    /// The address of instance `i` (its server identifier).
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        Self::addr_of(self.spec.net, i)
    }

    /// The site's directory (shared files; each instance has `<dir>/pxeN`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The directory of instance `i`.
    pub fn instance_dir(&self, i: usize) -> PathBuf {
        self.dir().join(Self::name(i))
    }

    /// The client namespace (interface `dc`).
    pub fn client(&self) -> &Netns {
        &self.lan.hosts[CLIENT]
    }

    /// The namespace of instance `i` (interface `ds`).
    pub fn server_ns(&self, i: usize) -> &Netns {
        &self.lan.hosts[2 + i]
    }

    /// The PostgreSQL of a Postgres site.
    pub fn pg(&mut self) -> &mut Postgres {
        self.pg.as_mut().expect("this site keeps its state in redb")
    }

    /// The config instance `i` was started with (before the harness's `[control]`).
    pub fn config(&self, i: usize) -> &str {
        &self.configs[i]
    }

    /// The template with instance `i`'s values, plus its `[store]` on a Postgres site.
    fn config_of(&self, i: usize) -> String {
        let mut c = self
            .spec
            .template
            .replace("@IP@", &self.addr(i).to_string())
            .replace("@NAME@", &Self::name(i))
            .replace("@DIR@", &self.instance_dir(i).display().to_string())
            .replace("@SITE@", &self.dir().display().to_string());
        if let Some(pg) = &self.pg {
            c.push_str(&format!(
                "\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\npassword_file = {:?}\n\
                 instance = \"{}\"\n{}\n",
                pg.tcp_url(),
                pg.password_file(),
                Self::name(i),
                self.spec.store_keys
            ));
        }
        c
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_come_from_the_last_metrics_line() {
        let log = "x DHCP metrics offers=1 acks=0\n\
                   y DHCP service stopped offers=3 acks=2 msg=\"a b\" send_errors=0\n";
        assert_eq!(metric(log, "offers"), Some(3));
        assert_eq!(metric(log, "send_errors"), Some(0));
        assert_eq!(metric(log, "missing"), None);
        assert_eq!(metric("nothing here", "offers"), None);
    }
}
