//! `pxe-server`: the command line. `serve` runs the TFTP engine and, when `dhcp.enabled`, the
//! DHCP service in its own thread; `check` validates a config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use pxe_server::config::{Config, EngineChoice};
use pxe_server::dhcp::metrics::DhcpMetrics;
use pxe_server::dhcp::server::DhcpServer;
use pxe_server::engine::{self, EngineParams};
use pxe_server::metrics::TftpMetrics;
use pxe_server::tftp::service::TftpService;
use pxe_server::xdp::{Fallback, FallbackCounters, PolicySet, XdpFilter, format_counters};

/// Exit status for an unusable configuration.
const EXIT_CONFIG: u8 = 2;

/// How often `serve` logs the counters.
const METRICS_INTERVAL: Duration = Duration::from_secs(10);

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
    /// Serve TFTP (and DHCP when `dhcp.enabled`) until SIGINT or SIGTERM.
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
        Command::Serve {
            config,
            engine,
            threads,
        } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match serve(config, engine, threads) {
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

fn check(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn serve(
    mut config: Config,
    engine_flag: Option<EngineChoice>,
    threads_flag: Option<usize>,
) -> anyhow::Result<()> {
    let tftp = &mut config.tftp;
    if let Some(e) = engine_flag {
        tftp.engine = e;
    }
    if let Some(t) = threads_flag {
        tftp.threads = t;
    }
    let threads = match tftp.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };

    let metrics = Arc::new(TftpMetrics::default());
    let service = TftpService::new(tftp, Arc::clone(&metrics))
        .with_context(|| format!("opening TFTP root {}", tftp.root.display()))?;
    let kind = engine::select(tftp.engine)?;

    let shutdown = Arc::new(AtomicBool::new(false));
    install_signal_handlers(&shutdown)?;

    let root = std::fs::canonicalize(&tftp.root).unwrap_or_else(|_| tftp.root.clone());
    for addr in &tftp.listen {
        tracing::info!(listen = %addr, root = %root.display(), "serving TFTP");
    }
    tracing::info!(
        engine = ?kind,
        threads,
        max_sessions = service.max_sessions(),
        max_sessions_per_client = tftp.max_sessions_per_client,
        max_blksize = tftp.max_blksize,
        max_windowsize = tftp.max_windowsize,
        "TFTP service ready"
    );

    let params = EngineParams {
        listen: tftp.listen.clone(),
        threads,
        gso: tftp.gso,
    };
    // DHCP: sockets and the lease database are opened here, so a failure stops the start.
    let dhcp = if config.dhcp.enabled {
        let mut server = DhcpServer::bind(&config).context("starting the DHCP service")?;
        let dhcp_metrics = server.metrics();
        // The discovery filter: XDP where it attaches, the same policy in userspace elsewhere.
        let (xdp, placements) = XdpFilter::start(&config);
        let xdp_ifindexes = xdp
            .as_ref()
            .map(|f| f.attached().iter().map(|a| a.1).collect())
            .unwrap_or_default();
        let fallback = Fallback::new(PolicySet::from_config(&config), xdp_ifindexes);
        let fallback_counters = fallback.counters();
        tracing::info!(placements = ?placements, "DHCP filter ready");
        server.set_filter(fallback);
        tracing::info!(
            mode = ?config.dhcp.mode,
            sockets = ?server.listening(),
            subnets = config.dhcp.subnets.len(),
            hosts = config.hosts.len(),
            "DHCP service ready"
        );
        let handle = spawn_dhcp(server, Arc::clone(&shutdown))?;
        let filter = FilterCounters {
            xdp: xdp.map(|x| Arc::new(Mutex::new(x))),
            fallback: fallback_counters,
        };
        Some((handle, dhcp_metrics, filter))
    } else {
        None
    };
    let reporter = spawn_metrics_reporter(
        Arc::clone(&metrics),
        dhcp.as_ref().map(|d| (Arc::clone(&d.1), d.2.clone())),
        Arc::clone(&shutdown),
    )?;
    let result = engine::run(kind, Arc::new(service), &params, Arc::clone(&shutdown));
    shutdown.store(true, Ordering::Relaxed);
    let mut dhcp_result = Ok(());
    if reporter.join().is_err() {
        tracing::warn!("metrics reporter thread panicked");
    }
    if let Some((handle, dhcp_metrics, filter)) = dhcp {
        dhcp_result = match handle.join() {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("DHCP thread panicked")),
        };
        tracing::info!(metrics = %dhcp_metrics.snapshot(), "DHCP service stopped");
        filter.log();
        // Detaches the XDP program (the reporter, the only other holder, has ended).
        drop(filter);
    }
    tracing::info!(metrics = %metrics.snapshot(), "TFTP service stopped");
    result.context("TFTP engine failed")?;
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

/// SIGINT and SIGTERM set `shutdown` (signal-hook's flag handlers); a second one, once
/// `shutdown` is already set, ends the process at once with status 1.
fn install_signal_handlers(shutdown: &Arc<AtomicBool>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM] {
        // Order matters: the conditional shutdown must see the flag before this signal sets it.
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(shutdown))
            .context("installing a signal handler")?;
        signal_hook::flag::register(sig, Arc::clone(shutdown))
            .context("installing a signal handler")?;
    }
    Ok(())
}

/// The DHCP discovery filter's counters: the XDP program's (where it is attached) and the
/// userspace fallback's, reported together.
#[derive(Clone)]
struct FilterCounters {
    xdp: Option<Arc<Mutex<XdpFilter>>>,
    fallback: Arc<FallbackCounters>,
}

impl FilterCounters {
    fn log(&self) {
        if let Some(x) = &self.xdp {
            let counters = x.lock().unwrap_or_else(|e| e.into_inner()).counters();
            match counters {
                Ok(c) => tracing::info!(counters = %format_counters(&c), "XDP filter counters"),
                Err(e) => tracing::warn!(%e, "XDP counters unreadable"),
            }
        }
        tracing::info!(
            counters = %format_counters(&self.fallback.get()),
            "userspace DHCP filter counters"
        );
    }
}

/// Logs a metrics snapshot every [`METRICS_INTERVAL`] until `shutdown` is set.
fn spawn_metrics_reporter(
    metrics: Arc<TftpMetrics>,
    dhcp: Option<(Arc<DhcpMetrics>, FilterCounters)>,
    shutdown: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let mut next = Instant::now() + METRICS_INTERVAL;
            while !shutdown.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                if Instant::now() >= next {
                    tracing::info!(metrics = %metrics.snapshot(), "TFTP metrics");
                    if let Some((d, filter)) = &dhcp {
                        tracing::info!(metrics = %d.snapshot(), "DHCP metrics");
                        filter.log();
                    }
                    next += METRICS_INTERVAL;
                }
            }
        })
        .context("starting the metrics thread")
}
