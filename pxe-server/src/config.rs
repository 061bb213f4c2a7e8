//! The TOML configuration file.
//!
//! `Config::load` refuses a bad file with an error naming the file, the
//! line and the key; every setting has a default so a file with just `[tftp] root = "..."` serves.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use pxe_proto::Ipv4Cidr;
use pxe_proto::MacAddr;

use crate::hosts::{BootProfile, HostConfig, NextBoot};

/// Which TFTP engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    /// io_uring when the kernel allows it, the portable engine otherwise.
    #[default]
    Auto,
    Uring,
    Portable,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub tftp: TftpConfig,
    /// The HTTP boot file service.
    pub http: HttpConfig,
    pub dhcp: DhcpConfig,
    /// The default boot profile (what a client that matches no `[[hosts]]` entry gets).
    pub boot: BootProfile,
    /// Known machines, by MAC and/or client UUID.
    pub hosts: Vec<HostConfig>,
    /// The DHCP discovery filter: XDP fast path and userspace fallback.
    pub xdp: XdpConfig,
    /// The local control socket (`pxe-server status`).
    pub control: ControlConfig,
    /// Install templates and their values.
    pub install: InstallConfig,
}

/// Default path of the control socket.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/pxe-server.sock";

/// `[control]`: where the running server answers `pxe-server status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Unix socket path (created mode 0600; a stale one is replaced, a live one refuses the
    /// start). Two servers on one host need different paths.
    pub socket: PathBuf,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
        }
    }
}

/// What a reload (SIGHUP) can change in a running server, and what needs a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadPlan {
    /// `new`, with every setting that needs a restart kept as it runs now.
    pub effective: Config,
    /// The sections/keys that changed but need a restart (they keep their running values).
    pub needs_restart: Vec<&'static str>,
}

impl Config {
    /// Splits a reload from `self` (running) to `new`: [[hosts]], [boot], the DHCP answer
    /// settings (lease times, subnets, unknown hosts, addresses handed out) and the [xdp]
    /// policy apply at once; sockets, modes, the TFTP engine and the lease database need a
    /// restart.
    pub fn reload_plan(&self, new: &Config) -> ReloadPlan {
        let mut effective = new.clone();
        let mut needs_restart = Vec::new();
        if effective.tftp != self.tftp {
            needs_restart.push("tftp");
            effective.tftp = self.tftp.clone();
        }
        if effective.http != self.http {
            needs_restart.push("http");
            effective.http = self.http.clone();
        }
        if effective.control != self.control {
            needs_restart.push("control");
            effective.control = self.control.clone();
        }
        let (d, e) = (&self.dhcp, &mut effective.dhcp);
        macro_rules! keep {
            ($($field:ident),*) => {$(
                if e.$field != d.$field {
                    needs_restart.push(concat!("dhcp.", stringify!($field)));
                    e.$field = d.$field.clone();
                }
            )*};
        }
        keep!(enabled, mode, interfaces, lease_db);
        let x = (&self.xdp, &mut effective.xdp);
        if x.1.mode != x.0.mode || x.1.interfaces != x.0.interfaces {
            needs_restart.push("xdp.mode/xdp.interfaces");
            x.1.mode = x.0.mode;
            x.1.interfaces = x.0.interfaces.clone();
        }
        ReloadPlan {
            effective,
            needs_restart,
        }
    }
}

/// Where the DHCP discovery filter runs on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpChoice {
    /// XDP in driver mode, else SKB (generic) mode, else the userspace fallback; the log says
    /// which and why.
    Auto,
    /// XDP in driver mode, else the userspace fallback.
    Driver,
    /// XDP in SKB (generic) mode, else the userspace fallback.
    Skb,
    /// No XDP program: the policy runs in the daemon only (userspace fallback).
    #[default]
    Off,
}

/// `[xdp]`: the policy applied to DHCP before the responder sees it. The default passes
/// everything and attaches nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XdpConfig {
    /// Mode for every interface in `dhcp.interfaces` (XDP needs named interfaces).
    pub mode: XdpChoice,
    /// Per-interface overrides, `{ eth1 = "skb" }`; an interface named only here is attached
    /// too.
    pub interfaces: std::collections::BTreeMap<String, XdpChoice>,
    /// Drop DHCP that is not from a PXE/HTTP-boot client (proxy mode on a segment where
    /// another DHCP server answers the rest). Keep false on a host whose other DHCP server
    /// needs those packets.
    pub drop_non_pxe: bool,
    /// Per-MAC DISCOVER/REQUEST rate (tokens per second); 0 = no rate limit.
    pub rate_per_sec: u32,
    /// Per-MAC burst (bucket size).
    pub burst: u32,
    /// Only MACs listed in `[[hosts]]` may boot.
    pub allow_list: bool,
    /// MACs that are always dropped.
    pub deny: Vec<MacAddr>,
}

impl Default for XdpConfig {
    fn default() -> Self {
        Self {
            mode: XdpChoice::Off,
            interfaces: std::collections::BTreeMap::new(),
            drop_non_pxe: false,
            rate_per_sec: 0,
            burst: 10,
            allow_list: false,
            deny: Vec::new(),
        }
    }
}

impl XdpConfig {
    /// The interfaces to attach to, with their mode (`Off` ones included, for the log).
    pub fn attach_list(&self, dhcp_interfaces: &[String]) -> Vec<(String, XdpChoice)> {
        let mut out: Vec<(String, XdpChoice)> = dhcp_interfaces
            .iter()
            .map(|i| (i.clone(), *self.interfaces.get(i).unwrap_or(&self.mode)))
            .collect();
        for (i, m) in &self.interfaces {
            if !dhcp_interfaces.contains(i) {
                out.push((i.clone(), *m));
            }
        }
        out
    }
}

/// How the DHCP service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// ProxyDHCP (PXE 2.1): boot information only, to PXE/HTTP boot clients; another server
    /// gives the addresses.
    #[default]
    Proxy,
    /// A DHCP server: addresses from `[[dhcp.subnets]]`, and boot information.
    Full,
}

/// What a client that matches no `[[hosts]]` entry gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnknownHosts {
    /// The default `[boot]` profile (and, in full mode, a pool address).
    #[default]
    Default,
    /// No answer at all.
    Ignore,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DhcpConfig {
    /// The DHCP service runs (off by default: a file with only `[tftp]` serves TFTP only).
    pub enabled: bool,
    pub mode: DhcpMode,
    /// Interfaces the service binds to (by name); empty = all.
    pub interfaces: Vec<String>,
    /// Our address (server identifier, option 54). Unset: the address of the interface the
    /// request came in on.
    pub server_ip: Option<Ipv4Addr>,
    /// siaddr / next-server (the TFTP server). Unset: the server identifier.
    pub next_server: Option<Ipv4Addr>,
    /// Also answer PXE boot server requests on port 4011.
    pub pxe_port_4011: bool,
    pub unknown_hosts: UnknownHosts,
    /// The lease database (full mode), one redb file.
    pub lease_db: PathBuf,
    /// Lease time granted when the client asks for none, in seconds (full mode).
    pub lease_time_secs: u32,
    /// Longest lease granted, in seconds.
    pub max_lease_time_secs: u32,
    /// How long an offered address is held for the client's REQUEST, in seconds.
    pub offer_hold_secs: u32,
    /// How long a declined address stays unusable, in seconds.
    pub decline_hold_secs: u32,
    /// Address pools (full mode).
    pub subnets: Vec<SubnetConfig>,
}

impl Default for DhcpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            mode: DhcpMode::Proxy,
            interfaces: Vec::new(),
            server_ip: None,
            next_server: None,
            pxe_port_4011: true,
            unknown_hosts: UnknownHosts::Default,
            lease_db: PathBuf::from("/var/lib/pxe-server/leases.redb"),
            lease_time_secs: 3600,
            max_lease_time_secs: 86_400,
            offer_hold_secs: 60,
            decline_hold_secs: 600,
            subnets: Vec::new(),
        }
    }
}

/// One address pool, `[[dhcp.subnets]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetConfig {
    /// `10.0.0.0/24`.
    pub subnet: Ipv4Cidr,
    /// First and last address handed out (inclusive).
    pub range_start: Ipv4Addr,
    pub range_end: Ipv4Addr,
    /// Option 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<Ipv4Addr>,
    /// Option 6.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv4Addr>,
    /// Option 15.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Overrides `dhcp.lease_time_secs` for this pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_time_secs: Option<u32>,
}

/// `[install]`: the templates served to installers and iPXE (see `templates`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct InstallConfig {
    /// Directory of templates (minijinja); none = only the built-in iPXE scripts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub templates: Option<PathBuf>,
    /// How clients reach our HTTP service, e.g. `http://10.0.0.1`; by default the address and
    /// port each request came to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    /// Site-wide template values (`vars.*`); a host's `vars` override them.
    #[serde(skip_serializing_if = "toml::Table::is_empty")]
    pub vars: toml::Table,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TftpConfig {
    /// Directory served; every request is resolved beneath it.
    pub root: PathBuf,
    /// Addresses the TFTP listener binds (port 69 by default). `0.0.0.0:69` answers from the
    /// address each request arrived on.
    pub listen: Vec<SocketAddr>,
    pub engine: EngineChoice,
    /// Engine threads; 0 = one per CPU.
    pub threads: usize,
    /// Largest blksize granted (8..=65464).
    pub max_blksize: u16,
    /// Largest windowsize granted (1..=65535).
    pub max_windowsize: u16,
    /// Retransmit timeout in milliseconds when the client asks for none.
    pub timeout_ms: u64,
    /// Retransmissions without progress before a transfer is abandoned.
    pub max_retries: u8,
    /// Block number after 65535: 0 or 1.
    pub rollover: u16,
    /// Simultaneous transfers in all.
    pub max_sessions: usize,
    /// Simultaneous transfers per client IP address.
    pub max_sessions_per_client: usize,
    /// Use UDP GSO for windows when the kernel supports it.
    pub gso: bool,
}

impl Default for TftpConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/srv/tftp"),
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 69))],
            engine: EngineChoice::Auto,
            threads: 0,
            max_blksize: 1468,
            max_windowsize: 64,
            timeout_ms: 1000,
            max_retries: 5,
            rollover: 0,
            max_sessions: 10_000,
            max_sessions_per_client: 32,
            gso: true,
        }
    }
}

/// `[http]`: the HTTP/1.1 service for boot files (off by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// The HTTP service runs.
    pub enabled: bool,
    /// TCP addresses it listens on (port 80 by default).
    pub listen: Vec<SocketAddr>,
    /// Directory served; unset = `tftp.root` (then both services share each file's snapshot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// Runtime worker threads (1..=64).
    pub threads: usize,
    /// Open connections at most; beyond it a new connection gets 503 and is closed. Lowered at
    /// start, with a warning, when it does not fit the open-file limit next to
    /// `tftp.max_sessions` (see `http::fit_fd_limit`).
    pub max_connections: usize,
    /// A request head must arrive within this many milliseconds of its first byte (of the
    /// connection, for the first request).
    pub header_timeout_ms: u64,
    /// A connection with no traffic either way for this many milliseconds is closed.
    pub idle_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 80))],
            root: None,
            threads: 2,
            max_connections: 10_000,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
        }
    }
}

impl HttpConfig {
    /// The directory served: `root`, else `tftp_root`.
    pub fn root_or<'a>(&'a self, tftp_root: &'a Path) -> &'a Path {
        self.root.as_deref().unwrap_or(tftp_root)
    }
}

/// A config file that cannot be used: `file:line: key: reason`.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {key}: {reason}")]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the error is not tied to a line (unreadable file).
    pub line: usize,
    pub key: String,
    pub reason: String,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            key: "(file)".to_owned(),
            reason: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Parse and validate text; `file` only names the source in errors.
    ///
    /// A relative `root` is relative to the working directory of the process.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let err = |line: usize, key: &str, reason: String| ConfigError {
            file: file.to_path_buf(),
            line,
            key: key.to_owned(),
            reason,
        };
        // The span-preserving document locates keys for every error below.
        let doc = match toml_edit::ImDocument::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                let offset = e.span().map_or(0, |s| s.start);
                let reason = e.message().trim().replace('\n', "; ");
                return Err(err(
                    line_at(text, offset),
                    &syntax_key(text, offset),
                    reason,
                ));
            }
        };
        let config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let key = key_path_at(doc.as_table(), offset)
                .or_else(|| unknown_field_name(e.message()))
                .unwrap_or_else(|| "(document)".to_owned());
            err(line_at(text, offset), &key, first_line(e.message()))
        })?;
        config.validate().map_err(|(path, reason)| {
            let key = path.join(".");
            match key_line(&doc, text, &path) {
                Some(line) => err(line, &key, reason),
                None => err(
                    0,
                    &key,
                    format!("{reason} (the default; set it in the file)"),
                ),
            }
        })?;
        Ok(config)
    }

    /// Semantic checks; on failure, the key path (`hosts[2]` names an array-of-tables entry)
    /// and the reason.
    fn validate(&self) -> Result<(), (Vec<String>, String)> {
        self.validate_tftp()
            .map_err(|(p, r)| (p.iter().map(|s| s.to_string()).collect(), r))?;
        self.validate_http()
            .map_err(|(p, r)| (p.iter().map(|s| s.to_string()).collect(), r))?;
        self.validate_dhcp()?;
        self.validate_xdp()?;
        self.validate_control()?;
        self.validate_cmdlines()
    }

    /// Every profile's `cmdline` renders for every host (templates see it through the
    /// context; a bad one is reported at its key).
    fn validate_cmdlines(&self) -> Result<(), (Vec<String>, String)> {
        let placeholder = "http://server";
        let fail = |at: Vec<String>, e: minijinja::Error| {
            let reason = match e.detail() {
                Some(d) => format!("template: {}: {d}", e.kind()),
                None => format!("template: {}", e.kind()),
            };
            Err((at, reason))
        };
        if let Err(e) = crate::templates::host_context(
            placeholder,
            &self.boot,
            &self.install.vars,
            None,
            None,
            NextBoot::Local,
        ) {
            return fail(vec!["boot".into(), "cmdline".into()], e);
        }
        for (i, h) in self.hosts.iter().enumerate() {
            if let Err(e) = crate::templates::host_context(
                placeholder,
                &self.boot,
                &self.install.vars,
                Some(h),
                None,
                h.next_boot,
            ) {
                let at = if h.boot.cmdline.is_some() {
                    vec![format!("hosts[{i}]"), "boot".into(), "cmdline".into()]
                } else {
                    vec!["boot".into(), "cmdline".into()]
                };
                return fail(at, e);
            }
        }
        Ok(())
    }

    /// Loads `[install] templates` and renders each for every host in both next-boot states
    /// (and the local-boot script for hosts without an entry), so that a template error stops
    /// the start with its file and line.
    pub fn load_templates(&self) -> Result<crate::templates::Templates, ConfigError> {
        let t = crate::templates::Templates::load(self.install.templates.as_deref())
            .map_err(template_error)?;
        let mut contexts = Vec::new();
        let none = crate::templates::host_context(
            "http://server",
            &self.boot,
            &self.install.vars,
            None,
            None,
            NextBoot::Local,
        );
        // A host without an entry only ever gets the local-boot script.
        if let Ok(c) = none {
            t.render(crate::templates::IPXE_LOCAL, &c)
                .map_err(|mut e| {
                    e.reason = format!("{} (rendering for hosts without an entry)", e.reason);
                    e
                })
                .map_err(template_error)?;
        }
        for h in &self.hosts {
            for nb in [NextBoot::Install, NextBoot::Local] {
                if let Ok(c) = crate::templates::host_context(
                    "http://server",
                    &self.boot,
                    &self.install.vars,
                    Some(h),
                    None,
                    nb,
                ) {
                    contexts.push((h.label(), c));
                }
            }
        }
        t.check(contexts.iter().map(|(l, c)| (l.clone(), c)))
            .map_err(template_error)?;
        Ok(t)
    }

    fn validate_control(&self) -> Result<(), (Vec<String>, String)> {
        let path = &self.control.socket;
        // sockaddr_un.sun_path holds 108 bytes with the terminating NUL.
        let len = path.as_os_str().len();
        if len == 0 || len > 107 {
            return Err((
                vec!["control".to_owned(), "socket".to_owned()],
                format!(
                    "{} is not a usable socket path (1..=107 bytes)",
                    path.display()
                ),
            ));
        }
        Ok(())
    }

    fn validate_xdp(&self) -> Result<(), (Vec<String>, String)> {
        let x = &self.xdp;
        let fail =
            |key: &str, reason: String| Err((vec!["xdp".to_owned(), key.to_owned()], reason));
        if x.rate_per_sec > pxe_ebpf::MAX_RATE_PER_SEC {
            return fail(
                "rate_per_sec",
                format!("at most {} per second", pxe_ebpf::MAX_RATE_PER_SEC),
            );
        }
        if x.rate_per_sec > 0 && !(1..=pxe_ebpf::MAX_BURST).contains(&x.burst) {
            return fail("burst", format!("must be 1..={}", pxe_ebpf::MAX_BURST));
        }
        if x.allow_list && !self.hosts.iter().any(|h| h.mac.is_some()) {
            return fail(
                "allow_list",
                "no [[hosts]] entry has a mac: every client would be dropped".into(),
            );
        }
        Ok(())
    }

    fn validate_tftp(&self) -> Result<(), (Vec<&'static str>, String)> {
        let t = &self.tftp;
        let fail = |key: &'static str, reason: String| Err((vec!["tftp", key], reason));
        match std::fs::metadata(&t.root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return fail("root", format!("{} is not a directory", t.root.display())),
            Err(e) => return fail("root", format!("{}: {e}", t.root.display())),
        }
        if t.listen.is_empty() {
            return fail("listen", "must name at least one address".into());
        }
        if !(8..=65464).contains(&t.max_blksize) {
            return fail(
                "max_blksize",
                format!("{} is not in 8..=65464", t.max_blksize),
            );
        }
        if t.max_windowsize < 1 {
            return fail("max_windowsize", "must be at least 1".into());
        }
        if !(1..=255_000).contains(&t.timeout_ms) {
            return fail(
                "timeout_ms",
                format!("{} is not in 1..=255000", t.timeout_ms),
            );
        }
        if t.max_retries < 1 {
            return fail("max_retries", "must be at least 1".into());
        }
        if t.rollover > 1 {
            return fail("rollover", format!("{} is neither 0 nor 1", t.rollover));
        }
        if t.max_sessions < 1 {
            return fail("max_sessions", "must be at least 1".into());
        }
        if t.max_sessions_per_client < 1 {
            return fail("max_sessions_per_client", "must be at least 1".into());
        }
        Ok(())
    }

    fn validate_http(&self) -> Result<(), (Vec<&'static str>, String)> {
        let h = &self.http;
        let fail = |key: &'static str, reason: String| Err((vec!["http", key], reason));
        if let Some(root) = &h.root {
            match std::fs::metadata(root) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return fail("root", format!("{} is not a directory", root.display())),
                Err(e) => return fail("root", format!("{}: {e}", root.display())),
            }
        }
        if h.listen.is_empty() {
            return fail("listen", "must name at least one address".into());
        }
        if !(1..=64).contains(&h.threads) {
            return fail("threads", format!("{} is not in 1..=64", h.threads));
        }
        if h.max_connections < 1 {
            return fail("max_connections", "must be at least 1".into());
        }
        for (key, ms) in [
            ("header_timeout_ms", h.header_timeout_ms),
            ("idle_timeout_ms", h.idle_timeout_ms),
        ] {
            if !(1..=3_600_000).contains(&ms) {
                return fail(key, format!("{ms} is not in 1..=3600000"));
            }
        }
        Ok(())
    }

    fn validate_dhcp(&self) -> Result<(), (Vec<String>, String)> {
        let d = &self.dhcp;
        let path = |parts: &[&str]| parts.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let fail = |key: &str, reason: String| Err((path(&["dhcp", key]), reason));
        if d.lease_time_secs < 60 {
            return fail("lease_time_secs", "must be at least 60".into());
        }
        if d.max_lease_time_secs < d.lease_time_secs {
            return fail(
                "max_lease_time_secs",
                format!("must be at least lease_time_secs ({})", d.lease_time_secs),
            );
        }
        if d.offer_hold_secs < 1 {
            return fail("offer_hold_secs", "must be at least 1".into());
        }
        if d.lease_db.as_os_str().is_empty() {
            return fail("lease_db", "must name a file".into());
        }
        if d.enabled && d.mode == DhcpMode::Full && d.subnets.is_empty() {
            return fail(
                "mode",
                "full mode needs at least one [[dhcp.subnets]] entry".into(),
            );
        }
        for (i, s) in d.subnets.iter().enumerate() {
            let at = format!("subnets[{i}]");
            let sfail = |key: &str, reason: String| Err((path(&["dhcp", &at, key]), reason));
            for (key, ip) in [("range_start", s.range_start), ("range_end", s.range_end)] {
                if !s.subnet.contains(ip) || ip == s.subnet.network() || ip == s.subnet.broadcast()
                {
                    return sfail(key, format!("{ip} is not a host address of {}", s.subnet));
                }
            }
            if u32::from(s.range_start) > u32::from(s.range_end) {
                return sfail(
                    "range_end",
                    format!("{} is before range_start", s.range_end),
                );
            }
            if let Some(r) = s.router
                && !s.subnet.contains(r)
            {
                return sfail("router", format!("{r} is not in {}", s.subnet));
            }
            if let Some(t) = s.lease_time_secs
                && t < 60
            {
                return sfail("lease_time_secs", "must be at least 60".into());
            }
            if let Some(j) = d.subnets[..i].iter().position(|o| {
                o.subnet.contains(s.subnet.network()) || s.subnet.contains(o.subnet.network())
            }) {
                return sfail("subnet", format!("overlaps dhcp.subnets[{j}]"));
            }
        }
        let check_profile = |prefix: Vec<String>, p: &BootProfile| {
            for (key, v) in p.files() {
                if let Some(v) = v
                    && (v.is_empty() || v.len() > 255 || v.contains('\0'))
                {
                    let mut at = prefix.clone();
                    at.push(key.to_owned());
                    return Err((at, "must be 1 to 255 bytes without NUL".to_owned()));
                }
            }
            Ok(())
        };
        check_profile(path(&["boot"]), &self.boot)?;
        for (i, h) in self.hosts.iter().enumerate() {
            let at = format!("hosts[{i}]");
            let hfail = |key: &str, reason: String| Err((path(&[&at, key]), reason));
            if h.mac.is_none() && h.uuid.is_none() {
                return Err((path(&[&at]), "needs a mac or a uuid".into()));
            }
            for (j, o) in self.hosts[..i].iter().enumerate() {
                if h.mac.is_some() && h.mac == o.mac {
                    return hfail("mac", format!("also in hosts[{j}]"));
                }
                if h.uuid.is_some() && h.uuid == o.uuid {
                    return hfail("uuid", format!("also in hosts[{j}]"));
                }
                if h.address.is_some() && h.address == o.address {
                    return hfail("address", format!("also in hosts[{j}]"));
                }
            }
            if let Some(a) = h.address
                && d.mode == DhcpMode::Full
                && !d.subnets.iter().any(|s| s.subnet.contains(a))
            {
                return hfail("address", format!("{a} is in no dhcp.subnets entry"));
            }
            if let Some(n) = &h.hostname
                && (n.is_empty() || n.len() > 255)
            {
                return hfail("hostname", "must be 1 to 255 bytes".into());
            }
            check_profile(path(&[&at, "boot"]), &h.boot)?;
        }
        Ok(())
    }

    /// The effective configuration as TOML (what `pxe-server check` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

fn template_error(e: crate::templates::TemplateError) -> ConfigError {
    ConfigError {
        file: e.file,
        line: e.line,
        key: "install.templates".to_owned(),
        reason: e.reason,
    }
}

/// 1-based line of a byte offset.
fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn first_line(msg: &str) -> String {
    msg.trim().lines().next().unwrap_or("").to_owned()
}

/// The line of the key at `path`, if the file sets it. An element `name[i]` steps into entry
/// `i` of an array of tables (or inline array of tables); a path that ends at such an entry
/// names the line where the entry starts.
fn key_line<S: AsRef<str>>(
    doc: &toml_edit::ImDocument<&str>,
    text: &str,
    path: &[S],
) -> Option<usize> {
    fn indexed(p: &str) -> Option<(&str, usize)> {
        let (name, rest) = p.split_once('[')?;
        Some((name, rest.strip_suffix(']')?.parse().ok()?))
    }
    fn entry<'a>(
        table: &'a dyn toml_edit::TableLike,
        name: &str,
        i: usize,
    ) -> Option<(Option<usize>, &'a dyn toml_edit::TableLike)> {
        let item = table.get(name)?;
        if let Some(aot) = item.as_array_of_tables() {
            let t = aot.get(i)?;
            return Some((t.span().map(|s| s.start), t));
        }
        let v = item.as_array()?.get(i)?;
        Some((v.span().map(|s| s.start), v.as_inline_table()?))
    }
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let (last, parents) = path.split_last()?;
    for p in parents {
        let p = p.as_ref();
        table = match indexed(p) {
            Some((name, i)) => entry(table, name, i)?.1,
            None => table.get(p)?.as_table_like()?,
        };
    }
    let last = last.as_ref();
    if let Some((name, i)) = indexed(last) {
        return Some(line_at(text, entry(table, name, i)?.0?));
    }
    let (key, item) = table.get_key_value(last)?;
    let offset = key.span().or_else(|| item.span())?.start;
    Some(line_at(text, offset))
}

/// The dotted path (`tftp.listen[1]`) of the deepest key or value whose span holds `offset`.
fn key_path_at(table: &dyn toml_edit::TableLike, offset: usize) -> Option<String> {
    let contains = |span: Option<std::ops::Range<usize>>| {
        span.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
    };
    for (name, _) in table.iter() {
        let Some((key, item)) = table.get_key_value(name) else {
            continue;
        };
        let here = name.to_owned();
        if let Some(p) = item
            .as_table_like()
            .and_then(|inner| key_path_at(inner, offset))
        {
            return Some(format!("{here}.{p}"));
        }
        if let Some(aot) = item.as_array_of_tables() {
            for (i, t) in aot.iter().enumerate() {
                if let Some(p) = key_path_at(t, offset) {
                    return Some(format!("{here}[{i}].{p}"));
                }
            }
        }
        if let Some(arr) = item.as_array() {
            for (i, v) in arr.iter().enumerate() {
                if contains(v.span()) {
                    return Some(format!("{here}[{i}]"));
                }
            }
        }
        if contains(key.span()) || contains(item.span()) {
            return Some(here);
        }
    }
    None
}

/// serde's "unknown field `x`, expected ..." names the key when no span does.
fn unknown_field_name(msg: &str) -> Option<String> {
    let rest = msg.split("unknown field `").nth(1)?;
    Some(rest.split('`').next()?.to_owned())
}

/// Best guess at the key a syntax error is about: `table.key` from the last `[table]` header
/// before the error and the bare key starting the error's line.
fn syntax_key(text: &str, offset: usize) -> String {
    let end = offset.min(text.len());
    let before = &text[..end];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    if let Some(header) = line.trim_start().strip_prefix('[') {
        let name = header
            .trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or("")
            .trim();
        return if name.is_empty() {
            "(syntax)".to_owned()
        } else {
            name.to_owned()
        };
    }
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    let key = line.split_once('=').map(|(k, _)| k.trim()).filter(|k| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    });
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (None, Some(k)) => k.to_owned(),
        (Some(t), None) => t,
        (None, None) => "(syntax)".to_owned(),
    }
}

impl TftpConfig {
    pub fn session_config(&self) -> crate::tftp::session::SessionConfig {
        crate::tftp::session::SessionConfig {
            max_blksize: self.max_blksize,
            max_windowsize: self.max_windowsize,
            default_timeout: std::time::Duration::from_millis(self.timeout_ms),
            max_retries: self.max_retries,
            rollover_to: self.rollover,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../config/pxe-server.toml");

    #[test]
    fn the_sample_config_shows_the_defaults() {
        let c = Config::parse(SAMPLE, Path::new("config/pxe-server.toml")).unwrap();
        assert_eq!(c, Config::default());
    }

    /// The sample's commented examples (`# key = value` and table headers) form a valid file
    /// once uncommented, and each lands where it says.
    #[test]
    fn the_sample_config_examples_are_valid() {
        let mut text = String::new();
        for line in SAMPLE.lines() {
            let ex = line.strip_prefix("# ").filter(|l| {
                l.starts_with('[') && l.ends_with(']')
                    || l.split_once(" = ").is_some_and(|(k, _)| {
                        !k.is_empty()
                            && k.chars()
                                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    })
            });
            match ex {
                Some(l) => text.push_str(l),
                // The empty pool list gives way to the [[dhcp.subnets]] example.
                None if line == "subnets = []" => {}
                None => text.push_str(line),
            }
            text.push('\n');
        }
        // The HTTP root must exist.
        let f = fixture();
        let text = text.replace("\"/srv/http\"", &format!("{:?}", f.root));
        let c = match Config::parse(&text, Path::new("uncommented.toml")) {
            Ok(c) => c,
            Err(e) => panic!("{e}\n{text}"),
        };
        assert_eq!(c.dhcp.subnets.len(), 1);
        assert_eq!(c.dhcp.server_ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(
            c.boot.uefi_http.as_deref(),
            Some("http://10.0.0.1/ipxe.efi")
        );
        assert_eq!(c.boot.arm64.as_deref(), Some("ipxe-arm64.efi"));
        assert!(
            c.boot
                .cmdline
                .as_deref()
                .unwrap()
                .contains("{{ host.key }}")
        );
        assert_eq!(c.http.root, Some(PathBuf::from(&f.root)));
        assert_eq!(c.install.server_url.as_deref(), Some("http://10.0.0.1"));
        assert_eq!(c.install.vars.len(), 2);
        assert_eq!(c.hosts.len(), 1);
        let h = &c.hosts[0];
        assert_eq!(h.hostname.as_deref(), Some("node01"));
        assert!(h.uuid.is_some() && h.mac.is_some());
        assert_eq!(h.next_boot, NextBoot::Install);
        assert_eq!(h.boot.kernel.as_deref(), Some("vmlinuz-6.1"));
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        root: String,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        Fixture { _dir: dir, root }
    }

    fn parse_err(text: &str) -> ConfigError {
        match Config::parse(text, Path::new("/etc/pxe.toml")) {
            Err(e) => e,
            Ok(c) => panic!("expected an error for {text:?}, got {c:?}"),
        }
    }

    fn assert_err(text: &str, line: usize, key: &str, reason_has: &str) {
        let e = parse_err(text);
        assert_eq!((e.line, e.key.as_str()), (line, key), "{e}");
        assert!(e.reason.contains(reason_has), "{e}");
        assert_eq!(e.file, Path::new("/etc/pxe.toml"));
        assert!(
            e.to_string()
                .starts_with(&format!("/etc/pxe.toml:{line}: {key}: ")),
            "{e}"
        );
    }

    #[test]
    fn cmdline_and_template_errors_are_located() {
        let f = fixture();
        assert_err(
            &format!(
                "[tftp]\nroot = \"{}\"\n[[hosts]]\nmac = \"52:54:00:00:00:01\"\n\
                 boot = {{ cmdline = \"ks={{{{ vars.nope }}}}\" }}\n",
                f.root
            ),
            5,
            "hosts[0].boot.cmdline",
            "undefined",
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ks.cfg"),
            "ok\n{{ host.hostname | upper }}\n{{ vars.disk }}\n",
        )
        .unwrap();
        let text = format!(
            "[tftp]\nroot = \"{}\"\n[install]\ntemplates = \"{}\"\n[[hosts]]\nmac = \"52:54:00:00:00:01\"\n\
             hostname = \"n1\"\nvars = {{ disk = \"sda\" }}\n",
            f.root,
            dir.path().display()
        );
        let c = Config::parse(&text, Path::new("x")).unwrap();
        let t = c.load_templates().unwrap();
        assert!(t.has("ks.cfg"));
        // A second host without the variable: the template fails for it, at its line.
        let c = Config::parse(
            &format!("{text}[[hosts]]\nmac = \"52:54:00:00:00:02\"\nhostname = \"n2\"\n"),
            Path::new("x"),
        )
        .unwrap();
        let e = c.load_templates().unwrap_err();
        assert_eq!(
            (e.file.clone(), e.line),
            (dir.path().join("ks.cfg"), 3),
            "{e}"
        );
        assert!(e.reason.contains("n2"), "{e}");
    }

    #[test]
    fn http_section_defaults_and_errors() {
        let f = fixture();
        let r = &f.root;
        let head = format!("[tftp]\nroot = \"{r}\"\n");
        let c = Config::parse(&head, Path::new("x")).unwrap();
        assert_eq!(c.http, HttpConfig::default());
        assert!(!c.http.enabled);
        assert_eq!(c.http.listen, vec![SocketAddr::from(([0, 0, 0, 0], 80))]);
        assert_eq!(c.http.root_or(&c.tftp.root), Path::new(r));
        assert_eq!(c.http.max_connections, 10_000);
        let sub = format!("{r}/http");
        std::fs::create_dir(&sub).unwrap();
        let c = Config::parse(
            &format!(
                "{head}[http]\nenabled = true\nlisten = [\"10.0.0.1:8080\", \"[::1]:80\"]\n\
                 root = \"{sub}\"\nthreads = 1\nmax_connections = 5\nheader_timeout_ms = 500\n\
                 idle_timeout_ms = 9000\n"
            ),
            Path::new("x"),
        )
        .unwrap();
        assert!(c.http.enabled);
        assert_eq!(c.http.listen.len(), 2);
        assert_eq!(c.http.root_or(&c.tftp.root), Path::new(&sub));
        assert_eq!(
            (
                c.http.threads,
                c.http.max_connections,
                c.http.header_timeout_ms,
                c.http.idle_timeout_ms
            ),
            (1, 5, 500, 9000)
        );
        let again = Config::parse(&c.to_toml(), Path::new("x")).unwrap();
        assert_eq!(again, c);

        let cases: &[(&str, &str, &str)] = &[
            ("listen = []", "http.listen", "at least one"),
            ("threads = 0", "http.threads", "1..=64"),
            ("max_connections = 0", "http.max_connections", "at least 1"),
            (
                "header_timeout_ms = 0",
                "http.header_timeout_ms",
                "1..=3600000",
            ),
            (
                "idle_timeout_ms = 3600001",
                "http.idle_timeout_ms",
                "1..=3600000",
            ),
            (
                "root = \"/nonexistent/pxe\"",
                "http.root",
                "/nonexistent/pxe",
            ),
            ("enabled = \"yes\"", "http.enabled", "invalid type"),
            (
                "listen = [\"nope\"]",
                "http.listen[0]",
                "invalid socket address",
            ),
            ("bogus = 1", "http.bogus", "unknown field"),
        ];
        for (line, key, why) in cases {
            assert_err(&format!("{head}[http]\n\n{line}\n"), 5, key, why);
        }
        // A changed [http] section needs a restart.
        let mut new = c.clone();
        new.http.max_connections = 7;
        let plan = c.reload_plan(&new);
        assert_eq!(plan.needs_restart, vec!["http"]);
        assert_eq!(plan.effective.http, c.http);
    }

    #[test]
    fn control_socket_default_and_bad_path() {
        let f = fixture();
        let c = Config::parse(&format!("[tftp]\nroot = \"{}\"\n", f.root), Path::new("x")).unwrap();
        assert_eq!(c.control.socket, Path::new(DEFAULT_CONTROL_SOCKET));
        let long = "a".repeat(120);
        assert_err(
            &format!(
                "[tftp]\nroot = \"{}\"\n[control]\nsocket = \"/{long}\"\n",
                f.root
            ),
            4,
            "control.socket",
            "not a usable socket path",
        );
        assert_err(
            &format!(
                "[tftp]\nroot = \"{}\"\n[control]\nsockett = \"/x\"\n",
                f.root
            ),
            4,
            "control.sockett",
            "unknown field",
        );
    }

    #[test]
    fn reload_plan_applies_policy_and_keeps_sockets() {
        let f = fixture();
        let base = format!(
            "[tftp]\nroot = \"{}\"\n[dhcp]\nenabled = true\nmode = \"proxy\"\ninterfaces = [\"a\"]\n\
             [xdp]\nmode = \"skb\"\nrate_per_sec = 5\n",
            f.root
        );
        let old = Config::parse(&base, Path::new("x")).unwrap();
        // Same file: nothing to restart, nothing changes.
        let same = old.reload_plan(&old);
        assert_eq!(same.effective, old);
        assert!(same.needs_restart.is_empty());

        let changed = base
            .replace("rate_per_sec = 5", "rate_per_sec = 9\ndrop_non_pxe = true")
            .replace("[\"a\"]", "[\"a\", \"b\"]")
            .replace("mode = \"skb\"", "mode = \"driver\"")
            .replace("[xdp]", "[boot]\nbios = \"new.kpxe\"\n[xdp]")
            + "[[hosts]]\nmac = \"02:00:00:00:00:01\"\n[control]\nsocket = \"/run/other.sock\"\n";
        let new = Config::parse(&changed, Path::new("x")).unwrap();
        let plan = old.reload_plan(&new);
        assert_eq!(
            plan.needs_restart,
            vec!["control", "dhcp.interfaces", "xdp.mode/xdp.interfaces"]
        );
        let e = &plan.effective;
        // Applied now:
        assert_eq!((e.xdp.rate_per_sec, e.xdp.drop_non_pxe), (9, true));
        assert_eq!(e.boot.bios.as_deref(), Some("new.kpxe"));
        assert_eq!(e.hosts.len(), 1);
        // Kept until a restart:
        assert_eq!(e.dhcp.interfaces, vec!["a".to_owned()]);
        assert_eq!(e.xdp.mode, XdpChoice::Skb);
        assert_eq!(e.control, old.control);
        assert_eq!(e.tftp, old.tftp);
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let f = fixture();
        let c = Config::parse(&format!("[tftp]\nroot = \"{}\"\n", f.root), Path::new("x")).unwrap();
        let want = TftpConfig {
            root: PathBuf::from(&f.root),
            ..TftpConfig::default()
        };
        assert_eq!(c.tftp, want);
    }

    #[test]
    fn full_file_and_round_trip() {
        let f = fixture();
        let text = format!(
            "[tftp]\nroot = \"{}\"\nlisten = [\"10.0.0.1:69\", \"[::1]:6969\"]\nengine = \"portable\"\n\
             threads = 3\nmax_blksize = 8192\nmax_windowsize = 16\ntimeout_ms = 250\nmax_retries = 9\n\
             rollover = 1\nmax_sessions = 100\nmax_sessions_per_client = 4\ngso = false\n",
            f.root
        );
        let c = Config::parse(&text, Path::new("x")).unwrap();
        assert_eq!(c.tftp.listen.len(), 2);
        assert_eq!(c.tftp.listen[1], "[::1]:6969".parse().unwrap());
        assert_eq!(c.tftp.engine, EngineChoice::Portable);
        assert_eq!(
            (c.tftp.threads, c.tftp.max_blksize, c.tftp.max_windowsize),
            (3, 8192, 16)
        );
        assert_eq!(
            (c.tftp.timeout_ms, c.tftp.max_retries, c.tftp.rollover),
            (250, 9, 1)
        );
        assert_eq!(
            (c.tftp.max_sessions, c.tftp.max_sessions_per_client),
            (100, 4)
        );
        assert!(!c.tftp.gso);
        // What `check` prints parses back to the same configuration.
        let again = Config::parse(&c.to_toml(), Path::new("x")).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn load_reads_the_file_and_names_it() {
        let f = fixture();
        let path = Path::new(&f.root).join("pxe.toml");
        std::fs::write(
            &path,
            format!("[tftp]\nroot = \"{}\"\nthreads = 2\n", f.root),
        )
        .unwrap();
        assert_eq!(Config::load(&path).unwrap().tftp.threads, 2);
        std::fs::write(&path, "[tftp]\n\nmax_retries = 0\n").unwrap();
        let e = Config::load(&path).unwrap_err();
        assert_eq!(e.file, path);
        let missing = Path::new(&f.root).join("missing.toml");
        let e = Config::load(&missing).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (0, "(file)"));
        assert!(
            e.to_string()
                .starts_with(&format!("{}:0: (file): cannot read", missing.display()))
        );
    }

    #[test]
    fn unknown_keys() {
        let f = fixture();
        let r = &f.root;
        assert_err(
            &format!("[tftp]\nroot = \"{r}\"\n\nbogus = 1\n"),
            4,
            "tftp.bogus",
            "unknown field `bogus`",
        );
        assert_err(
            "# comment\n[dhcpv6]\nx = 1\n",
            2,
            "dhcpv6",
            "unknown field `dhcpv6`",
        );
        assert_err(
            &format!("[tftp]\nroot = \"{r}\"\n[dhcp]\nx = 1\n"),
            4,
            "dhcp.x",
            "unknown field `x`",
        );
        assert_err(
            &format!("tftp.root = \"{r}\"\ntftp.blocksize = 512\n"),
            2,
            "tftp.blocksize",
            "unknown field",
        );
    }

    #[test]
    fn type_errors() {
        let f = fixture();
        let r = &f.root;
        assert_err(
            &format!("[tftp]\nroot = \"{r}\"\n\nmax_blksize = \"big\"\n"),
            4,
            "tftp.max_blksize",
            "invalid type",
        );
        assert_err(
            &format!("[tftp]\nroot = \"{r}\"\nmax_blksize = 70000\n"),
            3,
            "tftp.max_blksize",
            "70000",
        );
        assert_err(
            &format!("[tftp]\nroot = \"{r}\"\nmax_retries = -1\n"),
            3,
            "tftp.max_retries",
            "-1",
        );
        assert_err(
            &format!("[tftp]\nroot = \"{r}\"\nengine = \"fast\"\n"),
            3,
            "tftp.engine",
            "unknown variant `fast`",
        );
        assert_err(
            &format!("[tftp]\nroot = \"{r}\"\nlisten = [\n  \"0.0.0.0:69\",\n  \"nope\",\n]\n"),
            5,
            "tftp.listen[1]",
            "invalid socket address",
        );
        assert_err(
            &format!("[tftp]\nroot = \"{r}\"\ngso = 1\n"),
            3,
            "tftp.gso",
            "expected a boolean",
        );
        assert_err("tftp = 5\n", 1, "tftp", "invalid type");
    }

    #[test]
    fn syntax_errors() {
        let f = fixture();
        let r = &f.root;
        assert_err(
            &format!("[tftp]\nroot = \"{r}\"\nmax_blksize = \n"),
            3,
            "tftp.max_blksize",
            "",
        );
        assert_err(
            &format!("\n[tftp\nroot = \"{r}\"\n"),
            2,
            "tftp",
            "invalid table header",
        );
        assert_err(
            &format!("[tftp]\nroot = \"{r}\"\n[tftp]\n"),
            3,
            "tftp",
            "duplicate key",
        );
        assert_err(
            &format!("[tftp]\nroot = \"{r}\"\nthreads = 1\nthreads = 2\n"),
            4,
            "tftp.threads",
            "duplicate key",
        );
    }

    #[test]
    fn semantic_errors_name_the_line() {
        let f = fixture();
        let r = &f.root;
        let cases: &[(&str, &str, &str)] = &[
            ("listen = []", "tftp.listen", "at least one"),
            ("max_blksize = 7", "tftp.max_blksize", "8..=65464"),
            ("max_blksize = 65465", "tftp.max_blksize", "8..=65464"),
            ("max_windowsize = 0", "tftp.max_windowsize", "at least 1"),
            ("timeout_ms = 0", "tftp.timeout_ms", "1..=255000"),
            ("timeout_ms = 255001", "tftp.timeout_ms", "1..=255000"),
            ("max_retries = 0", "tftp.max_retries", "at least 1"),
            ("rollover = 2", "tftp.rollover", "neither 0 nor 1"),
            ("max_sessions = 0", "tftp.max_sessions", "at least 1"),
            (
                "max_sessions_per_client = 0",
                "tftp.max_sessions_per_client",
                "at least 1",
            ),
        ];
        for (line, key, why) in cases {
            assert_err(
                &format!("# pxe\n[tftp]\nroot = \"{r}\"\n\n{line}\n"),
                5,
                key,
                why,
            );
        }
        // Edges that are fine.
        for line in [
            "max_blksize = 8",
            "max_blksize = 65464",
            "timeout_ms = 255000",
            "rollover = 1",
        ] {
            Config::parse(&format!("[tftp]\nroot = \"{r}\"\n{line}\n"), Path::new("x")).unwrap();
        }
        // Dotted keys are found too.
        assert_err(
            &format!("tftp.root = \"{r}\"\n\ntftp.rollover = 7\n"),
            3,
            "tftp.rollover",
            "neither",
        );
    }

    #[test]
    fn root_must_be_an_existing_directory() {
        let f = fixture();
        let missing = format!("{}/missing", f.root);
        assert_err(
            &format!("[tftp]\n\nroot = \"{missing}\"\n"),
            3,
            "tftp.root",
            "missing",
        );
        let file = format!("{}/file", f.root);
        std::fs::write(&file, b"").unwrap();
        assert_err(
            &format!("[tftp]\nroot = \"{file}\"\n"),
            2,
            "tftp.root",
            "not a directory",
        );
    }

    #[test]
    fn defaulted_root_that_does_not_exist_is_line_zero() {
        // The default root is /srv/tftp: which branch runs depends on this machine, both assert.
        match Config::parse("[tftp]\nthreads = 1\n", Path::new("p.toml")) {
            Ok(c) => {
                assert!(Path::new("/srv/tftp").is_dir());
                assert_eq!(c.tftp.root, Path::new("/srv/tftp"));
            }
            Err(e) => {
                assert!(!Path::new("/srv/tftp").is_dir());
                assert_eq!((e.line, e.key.as_str()), (0, "tftp.root"));
                assert!(e.reason.contains("the default"), "{e}");
            }
        }
    }

    #[test]
    fn dhcp_defaults_and_full_schema() {
        let f = fixture();
        let r = &f.root;
        // Without [dhcp] the service is off, in proxy mode.
        let c = Config::parse(&format!("[tftp]\nroot = \"{r}\"\n"), Path::new("x")).unwrap();
        assert_eq!(c.dhcp, DhcpConfig::default());
        assert!(!c.dhcp.enabled);
        assert_eq!(c.dhcp.mode, DhcpMode::Proxy);
        assert!(c.hosts.is_empty());
        let text = format!(
            "[tftp]\nroot = \"{r}\"\n[dhcp]\nenabled = true\nmode = \"full\"\ninterfaces = [\"eth1\"]\n\
             server_ip = \"10.0.0.1\"\nunknown_hosts = \"ignore\"\nlease_db = \"/tmp/l.redb\"\n\
             [[dhcp.subnets]]\nsubnet = \"10.0.0.0/24\"\nrange_start = \"10.0.0.100\"\n\
             range_end = \"10.0.0.200\"\nrouter = \"10.0.0.1\"\ndns = [\"10.0.0.2\"]\nlease_time_secs = 600\n\
             [boot]\nbios = \"undionly.kpxe\"\nipxe_script = \"http://10.0.0.1/boot.ipxe\"\n\
             kernel = \"vmlinuz\"\ncmdline = \"console=ttyS0\"\n\
             [[hosts]]\nmac = \"52:54:00:AA:BB:CC\"\nhostname = \"n1\"\naddress = \"10.0.0.10\"\n\
             boot = {{ uefi_x64 = \"special.efi\" }}\n\
             [[hosts]]\nuuid = \"00112233-4455-6677-8899-AABBCCDDEEFF\"\n"
        );
        let c = Config::parse(&text, Path::new("x")).unwrap();
        assert_eq!(c.dhcp.mode, DhcpMode::Full);
        assert_eq!(c.dhcp.unknown_hosts, UnknownHosts::Ignore);
        assert_eq!(c.dhcp.server_ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(c.dhcp.subnets[0].subnet.to_string(), "10.0.0.0/24");
        assert_eq!(c.dhcp.subnets[0].lease_time_secs, Some(600));
        assert_eq!(c.hosts[0].mac.unwrap().to_string(), "52:54:00:aa:bb:cc");
        assert_eq!(
            c.hosts[1].uuid.unwrap().to_string(),
            "00112233-4455-6677-8899-aabbccddeeff"
        );
        let p = c.hosts[0].boot.or(&c.boot);
        assert_eq!(p.uefi_x64.as_deref(), Some("special.efi"));
        assert_eq!(p.bios.as_deref(), Some("undionly.kpxe"));
        assert_eq!(p.cmdline.as_deref(), Some("console=ttyS0"));
        let again = Config::parse(&c.to_toml(), Path::new("x")).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn xdp_section_parses_and_validates() {
        let f = fixture();
        let r = &f.root;
        let head = format!("[tftp]\nroot = \"{r}\"\n");
        let c = Config::parse(
            &format!(
                "{head}[dhcp]\ninterfaces = [\"eth0\", \"eth1\"]\n[xdp]\nmode = \"auto\"\n\
                 interfaces = {{ eth1 = \"skb\", eth2 = \"off\" }}\ndrop_non_pxe = true\n\
                 rate_per_sec = 5\nburst = 20\ndeny = [\"52:54:00:aa:bb:cc\"]\n"
            ),
            Path::new("p.toml"),
        )
        .unwrap();
        assert_eq!(
            c.xdp.attach_list(&c.dhcp.interfaces),
            vec![
                ("eth0".to_owned(), XdpChoice::Auto),
                ("eth1".to_owned(), XdpChoice::Skb),
                ("eth2".to_owned(), XdpChoice::Off),
            ]
        );
        assert_eq!((c.xdp.rate_per_sec, c.xdp.burst), (5, 20));
        assert_eq!(c.xdp.deny.len(), 1);
        // The default attaches nothing and filters nothing.
        let d = XdpConfig::default();
        assert_eq!(d.mode, XdpChoice::Off);
        assert!(!d.drop_non_pxe && d.rate_per_sec == 0 && !d.allow_list);
        assert_err(
            &format!("{head}[xdp]\nmode = \"native\"\n"),
            4,
            "xdp.mode",
            "unknown variant",
        );
        assert_err(
            &format!("{head}[xdp]\nrate_per_sec = 5\nburst = 0\n"),
            5,
            "xdp.burst",
            "must be 1..=",
        );
        assert_err(
            &format!("{head}[xdp]\nrate_per_sec = 2000000\n"),
            4,
            "xdp.rate_per_sec",
            "at most",
        );
        assert_err(
            &format!("{head}[xdp]\nallow_list = true\n"),
            4,
            "xdp.allow_list",
            "no [[hosts]] entry has a mac",
        );
    }

    #[test]
    fn dhcp_errors_name_the_line() {
        let f = fixture();
        let r = &f.root;
        let head = format!("[tftp]\nroot = \"{r}\"\n");
        let sub = "[[dhcp.subnets]]\nsubnet = \"10.0.0.0/24\"\nrange_start = \"10.0.0.10\"\nrange_end = \"10.0.0.20\"\n";
        // Type errors of the new value types.
        assert_err(
            &format!("{head}[dhcp]\nmode = \"relay\"\n"),
            4,
            "dhcp.mode",
            "unknown variant",
        );
        assert_err(
            &format!("{head}[[hosts]]\nmac = \"52:54:00\"\n"),
            4,
            "hosts[0].mac",
            "not a MAC address",
        );
        assert_err(
            &format!("{head}[[hosts]]\nmac = \"52:54:00:aa:bb:cc\"\n[[hosts]]\nuuid = \"nope\"\n"),
            6,
            "hosts[1].uuid",
            "not a UUID",
        );
        assert_err(
            &format!("{head}[[dhcp.subnets]]\nsubnet = \"10.0.0.1/24\"\n"),
            4,
            "dhcp.subnets[0].subnet",
            "host bits",
        );
        assert_err(
            &format!("{head}[[hosts]]\nmac = \"52:54:00:aa:bb:cc\"\nboot = {{ bois = \"x\" }}\n"),
            5,
            "hosts[0].boot.bois",
            "unknown field",
        );
        // Semantic errors.
        assert_err(
            &format!("{head}[dhcp]\nenabled = true\n\nmode = \"full\"\n"),
            6,
            "dhcp.mode",
            "at least one",
        );
        assert_err(
            &format!("{head}[dhcp]\nlease_time_secs = 10\n"),
            4,
            "dhcp.lease_time_secs",
            "at least 60",
        );
        assert_err(
            &format!(
                "{head}[[dhcp.subnets]]\nsubnet = \"10.0.0.0/24\"\nrange_start = \"10.0.1.1\"\nrange_end = \"10.0.0.9\"\n"
            ),
            5,
            "dhcp.subnets[0].range_start",
            "not a host address",
        );
        assert_err(
            &format!(
                "{head}[[dhcp.subnets]]\nsubnet = \"10.0.0.0/24\"\nrange_start = \"10.0.0.9\"\nrange_end = \"10.0.0.8\"\n"
            ),
            6,
            "dhcp.subnets[0].range_end",
            "before range_start",
        );
        assert_err(
            &format!("{head}{sub}{sub}"),
            8,
            "dhcp.subnets[1].subnet",
            "overlaps dhcp.subnets[0]",
        );
        assert_err(
            &format!("{head}\n[[hosts]]\nhostname = \"x\"\n"),
            4,
            "hosts[0]",
            "mac or a uuid",
        );
        assert_err(
            &format!(
                "{head}[[hosts]]\nmac = \"52:54:00:aa:bb:cc\"\n[[hosts]]\nmac = \"52-54-00-AA-BB-CC\"\n"
            ),
            6,
            "hosts[1].mac",
            "also in hosts[0]",
        );
        assert_err(
            &format!(
                "{head}[dhcp]\nmode = \"full\"\n{sub}[[hosts]]\nmac = \"52:54:00:aa:bb:cc\"\naddress = \"10.9.0.1\"\n"
            ),
            11,
            "hosts[0].address",
            "in no dhcp.subnets",
        );
        assert_err(
            &format!("{head}[boot]\nbios = \"\"\n"),
            4,
            "boot.bios",
            "1 to 255 bytes",
        );
        assert_err(
            &format!(
                "{head}[[hosts]]\nmac = \"52:54:00:aa:bb:cc\"\n[hosts.boot]\nuefi_x64 = \"{}\"\n",
                "a".repeat(256)
            ),
            6,
            "hosts[0].boot.uefi_x64",
            "1 to 255 bytes",
        );
    }

    #[test]
    fn key_lines_are_found_or_absent() {
        let text = "# c\n[tftp]\nthreads = 1\n\n  max_retries = 3\n";
        let doc = toml_edit::ImDocument::parse(text).unwrap();
        assert_eq!(key_line(&doc, text, &["tftp", "threads"]), Some(3));
        assert_eq!(key_line(&doc, text, &["tftp", "max_retries"]), Some(5));
        assert_eq!(key_line(&doc, text, &["tftp", "root"]), None);
        assert_eq!(key_line(&doc, text, &["dhcp", "root"]), None);
        assert_eq!(line_at(text, 0), 1);
        assert_eq!(line_at(text, text.len() + 10), 6);
    }
}
