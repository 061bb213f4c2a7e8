//! `pxe-server`: the command line. `serve` runs the TFTP engine and, when `dhcp.enabled` /
//! `http.enabled`, the DHCP / HTTP services in their own threads; `check` validates a config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use pxe_server::config::{Config, ConfigError};
use pxe_server::control::{self, ControlSocket};
use pxe_server::daemon::messages::{
    Answer, DhcpStatus, ErrorAnswer, FilterCounters, FilterInterface, FilterPolicy, FilterStatus,
    HostAnswer, HttpStatus, LastReload, ReloadStatus, Request, ServerStatus, StatusReport,
    TftpStatus, XdpCounters,
};
use pxe_server::dhcp::DhcpReload;
use pxe_server::dhcp::metrics::DhcpMetrics;
use pxe_server::dhcp::server::DhcpServer;
use pxe_server::engine::{self, EngineChoice};
use pxe_server::hosts::HostIndex;
use pxe_server::http::{HttpMetrics, HttpServer, ImageSource};
use pxe_server::images::ImageStore;
use pxe_server::install::{InstallMetrics, InstallService, InstallSlot};
use pxe_server::nextboot;
use pxe_server::templates::Templates;
use pxe_server::tftp::metrics::TftpMetrics;
use pxe_server::tftp::service::TftpService;
use pxe_server::xdp::{Fallback, FallbackCounters, Placement, XdpFilter, format_counters};

/// Exit status for an unusable configuration.
const EXIT_CONFIG: u8 = 2;

/// How often `serve` logs the counters.
const METRICS_INTERVAL: Duration = Duration::from_secs(10);
/// How often the control thread looks at SIGHUP and the status socket.
const CONTROL_TICK: Duration = Duration::from_millis(100);

#[derive(Debug, Parser)]
#[command(
    name = "pxe-server",
    version,
    about = "High-throughput PXE boot server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve TFTP (and DHCP / HTTP when enabled) until SIGINT or SIGTERM.
    Serve {
        /// The TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// TFTP engine (overrides `tftp.engine`).
        #[arg(long, value_enum)]
        engine: Option<EngineChoice>,
        /// Engine threads, 0 = one per CPU (overrides `tftp.threads`).
        #[arg(long, value_name = "N")]
        threads: Option<usize>,
    },
    /// Print a running server's status (counters, XDP placement, last reload) from its
    /// control socket.
    Status {
        /// The server's config file (for `[control] socket`).
        #[arg(long, value_name = "FILE", conflicts_with = "socket")]
        config: Option<PathBuf>,
        /// The control socket (default: /run/pxe-server.sock).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Print the JSON document as the server sent it.
        #[arg(long)]
        json: bool,
    },
    /// Show or set what hosts boot next: `reinstall` (the installer once, then the local
    /// disk), `local`, or `show`. SELECTOR: `all`, or comma-separated hostnames, MACs, UUIDs
    /// and globs over hostnames (`rack1-*`). Goes through the running server's control
    /// socket; with no server running, changes the database named in the config directly.
    Host {
        /// Which hosts.
        selector: String,
        /// reinstall | local | show
        action: nextboot::HostAction,
        /// The server's config file ([[hosts]], [control] socket, dhcp.lease_db).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Validate a configuration file and print the effective configuration.
    Check {
        /// The TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Host {
            selector,
            action,
            config,
            json,
        } => host(&selector, action, &config, json),
        Command::Status {
            config,
            socket,
            json,
        } => status(config.as_deref(), socket, json),
        Command::Serve {
            config: config_path,
            engine,
            threads,
        } => {
            let (config, templates) = match load_all(&config_path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match serve(config, templates, config_path, engine, threads) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The config file and the templates it names, each checked (a template is rendered for every
/// host), or the first error with its file and line.
fn load_all(path: &Path) -> Result<(Config, Arc<Templates>), ConfigError> {
    let config = Config::load(path)?;
    let templates = config.load_templates()?;
    Ok((config, Arc::new(templates)))
}

fn check(path: &Path) -> ExitCode {
    match load_all(path) {
        Ok((config, _)) => {
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn status(config: Option<&Path>, socket: Option<PathBuf>, json: bool) -> ExitCode {
    let path = match (config, socket) {
        (_, Some(s)) => s,
        (Some(c), None) => match Config::load(c) {
            Ok(c) => c.control.socket,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        (None, None) => PathBuf::from(pxe_server::config::DEFAULT_CONTROL_SOCKET),
    };
    match control::request_status(&path, Duration::from_secs(5)) {
        Ok(v) if json => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(v) => {
            print!("{}", control::render_text(&v));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pxe-server status: {e} (is the server running?)");
            ExitCode::FAILURE
        }
    }
}

fn host(selector: &str, action: nextboot::HostAction, path: &Path, json: bool) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let request = Request::Host {
        action,
        selector: selector.to_owned(),
    };
    let answer: HostAnswer = match control::request(
        &config.control.socket,
        &request.to_string(),
        Duration::from_secs(10),
    ) {
        Ok(v) => match serde_json::from_value(v) {
            Ok(a) => a,
            Err(e) => {
                eprintln!(
                    "pxe-server host: answer from {}: {e}",
                    config.control.socket.display()
                );
                return ExitCode::FAILURE;
            }
        },
        Err(control::ControlError::Io { source, .. })
            if matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            // No server: the database is ours to open (a running server holds its lock).
            let db = match pxe_server::dhcp::leases::open_database(&config.dhcp.lease_db) {
                Ok(db) => db,
                Err(e) => {
                    eprintln!(
                        "pxe-server host: no server answers on {} and {} cannot be opened: {e}",
                        config.control.socket.display(),
                        config.dhcp.lease_db.display()
                    );
                    return ExitCode::FAILURE;
                }
            };
            match nextboot::NextBootStore::open(db) {
                Ok(store) => nextboot::host_command(
                    &store,
                    &HostIndex::new(config.hosts),
                    action,
                    selector,
                    unix_now(),
                ),
                Err(e) => {
                    eprintln!("pxe-server host: {}: {e}", config.dhcp.lease_db.display());
                    return ExitCode::FAILURE;
                }
            }
        }
        Err(e) => {
            eprintln!("pxe-server host: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        match serde_json::to_string(&answer) {
            Ok(doc) => println!("{doc}"),
            Err(e) => eprintln!("pxe-server host: {e}"),
        }
    } else if answer.ok {
        for r in answer.hosts.iter().flatten() {
            println!(
                "{:<24} {:<44} {}",
                r.name,
                r.key.as_deref().unwrap_or("-"),
                r.next_boot.name()
            );
        }
        if action != nextboot::HostAction::Show {
            println!("{} changed", answer.changed.unwrap_or(0));
        }
    }
    if answer.ok {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "pxe-server host: {}",
            answer.error.as_deref().unwrap_or("refused")
        );
        ExitCode::FAILURE
    }
}

fn serve(
    mut config: Config,
    templates: Arc<Templates>,
    config_path: PathBuf,
    engine_flag: Option<EngineChoice>,
    threads_flag: Option<usize>,
) -> anyhow::Result<()> {
    if let Some(e) = engine_flag {
        config.tftp.engine = e;
    }
    if let Some(t) = threads_flag {
        config.tftp.threads = t;
    }
    let tftp = &config.tftp_settings();
    let params = config.tftp.engine_params();
    let threads = params.threads;
    let hosts = config.host_index();

    let metrics = Arc::new(TftpMetrics::default());
    let service = Arc::new(
        TftpService::new(tftp, Arc::clone(&metrics))
            .with_context(|| format!("opening TFTP root {}", tftp.root.display()))?,
    );
    let kind = engine::select(config.tftp.engine)?;

    let shutdown = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    install_signal_handlers(&shutdown, &reload)?;
    // Bound before anything serves: a second server with the same socket stops here.
    let socket = ControlSocket::bind(&config.control.socket)?;

    let root = std::fs::canonicalize(&tftp.root).unwrap_or_else(|_| tftp.root.clone());
    for addr in &params.listen {
        tracing::info!(listen = %addr, root = %root.display(), "serving TFTP");
    }
    tracing::info!(
        engine = ?kind,
        threads,
        max_sessions = service.max_sessions(),
        max_sessions_per_client = tftp.max_sessions_per_client,
        max_blksize = tftp.session.max_blksize,
        max_windowsize = tftp.session.max_windowsize,
        "TFTP service ready"
    );

    // The lease database (full mode; or HTTP with [[hosts]], whose next-boot actions live
    // there): leases and next-boot actions share its file.
    let full_dhcp = config.dhcp.is_full();
    let db = if full_dhcp || (config.http.enabled && !config.hosts.is_empty()) {
        Some(
            pxe_server::dhcp::leases::open_database(&config.dhcp.lease_db).with_context(|| {
                format!(
                    "opening the lease database {}",
                    config.dhcp.lease_db.display()
                )
            })?,
        )
    } else {
        None
    };
    let next_boot = match &db {
        Some(db) => Some(Arc::new(
            nextboot::NextBootStore::open(Arc::clone(db)).context("opening the next-boot table")?,
        )),
        None => None,
    };
    // HTTP: listening sockets bound here, so a busy port stops the start.
    let install_metrics = Arc::new(InstallMetrics::default());
    let mut install_slot = None;
    let http = if config.http.enabled {
        let h = &config.http_settings();
        let images: Arc<dyn ImageSource> = if h.root != tftp.root {
            Arc::new(
                ImageStore::new(h.root.clone())
                    .with_context(|| format!("opening HTTP root {}", h.root.display()))?,
            )
        } else {
            Arc::clone(&service) as Arc<dyn ImageSource>
        };
        let slot = Arc::new(InstallSlot::new(InstallService::new(
            Arc::new(config.install_settings(&hosts)),
            Arc::clone(&templates),
            next_boot.clone(),
            db.clone(),
            Arc::clone(&install_metrics),
        )));
        install_slot = Some(Arc::clone(&slot));
        let server = HttpServer::bind(h, images, Arc::default(), Some(slot))
            .context("starting the HTTP service")?;
        let http_metrics = server.metrics();
        tracing::info!(
            listen = ?server.local_addrs()?,
            root = %h.root.display(),
            threads = h.threads,
            max_connections = server.max_connections(),
            "HTTP service ready"
        );
        Some((server, http_metrics))
    } else {
        None
    };
    // DHCP: sockets and the lease database are opened here, so a failure stops the start.
    let dhcp = if config.dhcp.enabled {
        let mut server = DhcpServer::bind(&config.dhcp_settings(&hosts), db.clone())
            .context("starting the DHCP service")?;
        let dhcp_metrics = server.metrics();
        // The discovery filter: XDP where it attaches, the same policy in userspace elsewhere.
        let xdp_settings = config.xdp_settings(&hosts);
        let (xdp, placements) = XdpFilter::start(&xdp_settings);
        let xdp_ifindexes = xdp
            .as_ref()
            .map(|f| f.attached().iter().map(|a| a.1).collect())
            .unwrap_or_default();
        let fallback = Fallback::new(xdp_settings.policy, xdp_ifindexes);
        let fallback_counters = fallback.counters();
        tracing::info!(placements = ?placements, "DHCP filter ready");
        server.set_filter(fallback);
        let reload_tx = server.reload_channel();
        tracing::info!(
            mode = ?config.dhcp.mode,
            sockets = ?server.listening(),
            subnets = config.dhcp.subnets.len(),
            hosts = config.hosts.len(),
            "DHCP service ready"
        );
        let handle = spawn_dhcp(server, Arc::clone(&shutdown))?;
        let control = DhcpControl {
            metrics: Arc::clone(&dhcp_metrics),
            reload: reload_tx,
            xdp,
            placements,
            fallback: fallback_counters,
        };
        Some((handle, dhcp_metrics, control))
    } else {
        None
    };
    let (http_handle, http_metrics) = match http {
        Some((server, m)) => (Some(spawn_http(server, Arc::clone(&shutdown))?), Some(m)),
        None => (None, None),
    };
    let (dhcp_handle, dhcp_metrics, dhcp_control) = match dhcp {
        Some((h, m, c)) => (Some(h), Some(m), Some(c)),
        None => (None, None, None),
    };
    tracing::info!(socket = %socket.path().display(), "control socket ready (pxe-server status)");
    let control = Control {
        config_path,
        overrides: (engine_flag, threads_flag),
        running: config,
        hosts,
        started: Instant::now(),
        engine: format!("{kind:?}").to_lowercase(),
        threads,
        tftp: Arc::clone(&metrics),
        dhcp: dhcp_control,
        next_boot,
        templates,
        http: http_metrics.clone(),
        install: install_slot,
        install_metrics,
        db,
        socket,
        reloads: 0,
        last_reload: None,
    };
    let control = spawn_control(control, Arc::clone(&shutdown), reload)?;
    let result = engine::run(kind, service, &params, Arc::clone(&shutdown));
    shutdown.store(true, Ordering::Relaxed);
    let mut dhcp_result = Ok(());
    // The control thread logs the filter counters and detaches the XDP program as it ends.
    if control.join().is_err() {
        tracing::warn!("control thread panicked");
    }
    if let Some(handle) = dhcp_handle {
        dhcp_result = match handle.join() {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("DHCP thread panicked")),
        };
    }
    if let Some(m) = dhcp_metrics {
        tracing::info!(metrics = %m.snapshot(), "DHCP service stopped");
    }
    let mut http_result = Ok(());
    if let Some(handle) = http_handle {
        http_result = match handle.join() {
            Ok(r) => r.map_err(anyhow::Error::from),
            Err(_) => Err(anyhow::anyhow!("HTTP thread panicked")),
        };
    }
    if let Some(m) = http_metrics {
        tracing::info!(metrics = %m.snapshot(), "HTTP service stopped");
    }
    tracing::info!(metrics = %metrics.snapshot(), "TFTP service stopped");
    result.context("TFTP engine failed")?;
    http_result.context("HTTP service failed")?;
    dhcp_result.context("DHCP service failed")
}

/// Runs the DHCP service until `shutdown`; if it fails, it sets `shutdown` so that the whole
/// server stops (a PXE server that cannot answer DHCP must not look healthy).
fn spawn_dhcp(
    mut server: DhcpServer<pxe_server::dhcp::server::ServiceStore>,
    shutdown: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    std::thread::Builder::new()
        .name("dhcp".into())
        .spawn(move || {
            let r = server.run(&shutdown);
            if let Err(e) = &r {
                tracing::error!("DHCP service failed: {e}");
                shutdown.store(true, Ordering::Relaxed);
            }
            r.map_err(anyhow::Error::from)
        })
        .context("starting the DHCP thread")
}

/// Runs the HTTP service until `shutdown`; if it fails, it sets `shutdown` (as DHCP does).
fn spawn_http(
    server: HttpServer,
    shutdown: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<std::io::Result<()>>> {
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            let r = server.run(&shutdown);
            if let Err(e) = &r {
                tracing::error!("HTTP service failed: {e}");
                shutdown.store(true, Ordering::Relaxed);
            }
            r
        })
        .context("starting the HTTP thread")
}

/// SIGINT and SIGTERM set `shutdown` (signal-hook's flag handlers); a second one, once
/// `shutdown` is already set, ends the process at once with status 1. SIGHUP sets `reload`.
fn install_signal_handlers(
    shutdown: &Arc<AtomicBool>,
    reload: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM] {
        // Order matters: the conditional shutdown must see the flag before this signal sets it.
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(shutdown))
            .context("installing a signal handler")?;
        signal_hook::flag::register(sig, Arc::clone(shutdown))
            .context("installing a signal handler")?;
    }
    signal_hook::flag::register(SIGHUP, Arc::clone(reload))
        .context("installing the SIGHUP handler")?;
    Ok(())
}

/// The DHCP side as the control thread sees it.
struct DhcpControl {
    metrics: Arc<DhcpMetrics>,
    /// Reloaded configurations for the DHCP thread (responder tables, fallback policy).
    reload: crossbeam::channel::Sender<DhcpReload>,
    /// Owned here: the maps are rewritten on reload and the program detaches when this ends.
    xdp: Option<XdpFilter>,
    placements: Vec<(String, Placement)>,
    fallback: Arc<FallbackCounters>,
}

impl DhcpControl {
    fn xdp_counters(&self) -> Option<Result<[u64; pxe_ebpf::COUNTER_COUNT as usize], String>> {
        self.xdp
            .as_ref()
            .map(|x| x.counters().map_err(|e| e.to_string()))
    }

    fn log_filter(&self) {
        match self.xdp_counters() {
            Some(Ok(c)) => tracing::info!(counters = %format_counters(&c), "XDP filter counters"),
            Some(Err(e)) => tracing::warn!(%e, "XDP counters unreadable"),
            None => {}
        }
        tracing::info!(
            counters = %format_counters(&self.fallback.get()),
            "userspace DHCP filter counters"
        );
    }
}

/// The control thread's state: periodic metrics log, SIGHUP reloads, the status socket.
struct Control {
    config_path: PathBuf,
    /// Command-line overrides of the TFTP settings, applied to every reloaded file too.
    overrides: (Option<EngineChoice>, Option<usize>),
    /// The configuration in effect.
    running: Config,
    /// Its `[[hosts]]` index (replaced by a reload).
    hosts: Arc<HostIndex>,
    started: Instant,
    engine: String,
    threads: usize,
    tftp: Arc<TftpMetrics>,
    dhcp: Option<DhcpControl>,
    /// The hosts' next-boot actions (with the lease database; absent without one).
    next_boot: Option<Arc<nextboot::NextBootStore>>,
    /// The install templates in effect (replaced by a reload).
    templates: Arc<Templates>,
    http: Option<Arc<HttpMetrics>>,
    /// The HTTP install routes (replaced on reload), their counters, and the database they
    /// read addresses from.
    install: Option<Arc<InstallSlot>>,
    install_metrics: Arc<InstallMetrics>,
    db: Option<Arc<redb::Database>>,
    socket: ControlSocket,
    reloads: u64,
    last_reload: Option<LastReload>,
}

impl Control {
    /// Re-reads the config file: a bad file is refused (the running config stays, the error
    /// names file and line); otherwise what can change at run time changes now.
    fn reload(&mut self) {
        self.reloads += 1;
        let at_unix = unix_now();
        let (mut new, templates) = match load_all(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("configuration reload refused, the running one stays: {e}");
                self.last_reload = Some(LastReload {
                    at_unix,
                    ok: false,
                    error: Some(e.to_string()),
                    needs_restart: Vec::new(),
                });
                return;
            }
        };
        if let Some(e) = self.overrides.0 {
            new.tftp.engine = e;
        }
        if let Some(t) = self.overrides.1 {
            new.tftp.threads = t;
        }
        let plan = self.running.reload_plan(&new);
        if !plan.needs_restart.is_empty() {
            tracing::warn!(
                settings = ?plan.needs_restart,
                "changed settings need a restart; they keep their running values"
            );
        }
        let config = plan.effective;
        let hosts = config.host_index();
        let mut error = None;
        if let Some(d) = &mut self.dhcp {
            let policy = config.xdp.policy_set(&hosts);
            if let Some(x) = &mut d.xdp
                && let Err(e) = x.set_policy(&policy)
            {
                tracing::error!(%e, "XDP policy maps not updated");
                error = Some(format!("XDP policy maps not updated: {e}"));
            }
            let reload = DhcpReload {
                settings: Arc::new(config.dhcp_settings(&hosts)),
                policy,
            };
            if d.reload.send(reload).is_err() {
                error = Some("the DHCP service has stopped".to_owned());
            }
        }
        self.templates = templates;
        if let Some(slot) = &self.install {
            slot.replace(InstallService::new(
                Arc::new(config.install_settings(&hosts)),
                Arc::clone(&self.templates),
                self.next_boot.clone(),
                self.db.clone(),
                Arc::clone(&self.install_metrics),
            ));
        }
        self.running = config;
        self.hosts = hosts;
        tracing::info!(
            file = %self.config_path.display(),
            templates = self.templates.names().len(),
            "configuration reloaded"
        );
        self.last_reload = Some(LastReload {
            at_unix,
            ok: error.is_none(),
            error,
            needs_restart: plan.needs_restart,
        });
    }

    /// The document `pxe-server status` prints.
    fn status(&self) -> StatusReport {
        let running = &self.running;
        let tftp = &running.tftp;
        StatusReport {
            server: ServerStatus {
                version: env!("CARGO_PKG_VERSION"),
                pid: std::process::id(),
                config: self.config_path.display().to_string(),
                uptime_secs: self.started.elapsed().as_secs(),
            },
            reload: ReloadStatus {
                count: self.reloads,
                last: self.last_reload.clone(),
            },
            tftp: TftpStatus {
                engine: self.engine.clone(),
                threads: self.threads,
                listen: tftp.listen.iter().map(|a| a.to_string()).collect(),
                root: tftp.root.display().to_string(),
                metrics: self.tftp.snapshot(),
            },
            dhcp: self.dhcp.as_ref().map(|d| DhcpStatus {
                mode: running.dhcp.mode,
                interfaces: running.dhcp.interfaces.clone(),
                metrics: d.metrics.snapshot(),
            }),
            http: self.http.as_ref().map(|m| HttpStatus {
                listen: running.http.listen.iter().map(|a| a.to_string()).collect(),
                root: running.http.root_or(&tftp.root).display().to_string(),
                metrics: m.snapshot(),
                install: self.install_metrics.snapshot(),
                templates: self.templates.names().to_vec(),
            }),
            filter: self.dhcp.as_ref().map(|d| self.filter_status(d)),
        }
    }

    fn filter_status(&self, d: &DhcpControl) -> FilterStatus {
        let xdp = &self.running.xdp;
        FilterStatus {
            policy: FilterPolicy {
                drop_non_pxe: xdp.drop_non_pxe,
                rate_per_sec: xdp.rate_per_sec,
                burst: xdp.burst,
                allow_list: xdp.allow_list,
                deny: xdp.deny.len(),
            },
            interfaces: d
                .placements
                .iter()
                .map(|(name, p)| FilterInterface {
                    name: name.clone(),
                    placement: format!("{p:?}").to_lowercase(),
                })
                .collect(),
            xdp: d.xdp_counters().map(|c| match c {
                Ok(c) => XdpCounters::Read(FilterCounters(c)),
                Err(error) => XdpCounters::Unreadable { error },
            }),
            userspace: FilterCounters(d.fallback.get()),
        }
    }

    /// The JSON document answering one request line.
    fn answer_line(&self, line: &str) -> String {
        let answer = match Request::parse(line) {
            Ok(request) => self.handle(&request),
            Err(e) => Answer::Error(ErrorAnswer::new(e.to_string())),
        };
        serde_json::to_string(&answer).unwrap_or_else(|e| {
            // Not expected: every answer is plain data with string keys.
            let error = ErrorAnswer::new(format!("answer not encoded: {e}"));
            serde_json::to_string(&error).unwrap_or_default()
        })
    }

    /// Answers one request.
    fn handle(&self, request: &Request) -> Answer {
        match request {
            Request::Status => Answer::Status(Box::new(self.status())),
            Request::Host { action, selector } => Answer::Host(self.host(*action, selector)),
        }
    }

    fn host(&self, action: nextboot::HostAction, selector: &str) -> HostAnswer {
        let Some(store) = &self.next_boot else {
            return HostAnswer::refused(
                "this server keeps no host state (it needs the lease database: [dhcp] \
                 enabled in full mode)",
            );
        };
        let answer = nextboot::host_command(store, &self.hosts, action, selector, unix_now());
        if let Some(changed @ 1..) = answer.changed {
            tracing::info!(%selector, ?action, changed, "next boot changed");
        }
        answer
    }

    fn log_metrics(&self) {
        tracing::info!(metrics = %self.tftp.snapshot(), "TFTP metrics");
        if let Some(m) = &self.http {
            tracing::info!(metrics = %m.snapshot(), "HTTP metrics");
        }
        if let Some(d) = &self.dhcp {
            tracing::info!(metrics = %d.metrics.snapshot(), "DHCP metrics");
            d.log_filter();
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs the control loop until `shutdown`: every [`CONTROL_TICK`] it applies a pending SIGHUP,
/// answers status clients, and every [`METRICS_INTERVAL`] logs the counters. At the end it
/// logs the filter counters once more and detaches the XDP program.
fn spawn_control(
    mut control: Control,
    shutdown: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let mut next = Instant::now() + METRICS_INTERVAL;
            while !shutdown.load(Ordering::Relaxed) {
                std::thread::sleep(CONTROL_TICK);
                if reload.swap(false, Ordering::Relaxed) {
                    control.reload();
                }
                control
                    .socket
                    .serve_pending(|request| control.answer_line(request));
                if Instant::now() >= next {
                    control.log_metrics();
                    next += METRICS_INTERVAL;
                }
            }
            if let Some(d) = &control.dhcp {
                d.log_filter();
            }
        })
        .context("starting the control thread")
}
