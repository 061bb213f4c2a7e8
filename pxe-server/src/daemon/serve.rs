//! Start-up and shut-down: bind, attach and open everything first (a busy port, a held
//! control socket or an unreadable root stops the start), drop privileges
//! ([`crate::privilege`]), spawn the DHCP, HTTP and control threads, run the TFTP engine in
//! this one, then stop the others and report in order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use super::socket::{ControlError, ControlSocket};
use super::{DaemonState, DhcpControl, Overrides, control};
use crate::config::{Config, ConfigError};
use crate::dhcp::balance::Balance;
use crate::dhcp::learned::LearnedAddresses;
use crate::dhcp::leases::LeaseError;
use crate::dhcp::server::{DhcpServer, ServerError, ServiceStore};
use crate::engine::{self, EngineError};
use crate::hosts::HostIndex;
use crate::http::{HttpMetrics, HttpServer, ImageSource};
use crate::images::ImageStore;
use crate::install::{InstallMetrics, InstallService, InstallSlot};
use crate::journey::Journeys;
use crate::liveview::LiveView;
use crate::nextboot::NextBootStore;
use crate::observe::MetricsServer;
use crate::observe::families::{DhcpSource, LeaseSource, Sources};
use crate::observe::journeys::{JourneyFamilies, JourneyLive};
use crate::privilege::{self, PrivilegeError, ProcessIdentity};
use crate::store::{LiveCallback, OpenError, PgStore, Store};
use crate::templates::Templates;
use crate::tftp::metrics::TftpMetrics;
use crate::tftp::service::TftpService;
use crate::xdp::{Fallback, XdpFilter};

/// Why the server did not start, or stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("opening TFTP root {}", path.display())]
    TftpRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("installing {what}")]
    Signals {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Store(#[from] OpenError),
    #[error("opening the next-boot table")]
    NextBoot(#[source] LeaseError),
    #[error("opening HTTP root {}", path.display())]
    HttpRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the HTTP service")]
    Http(#[source] std::io::Error),
    #[error("starting the DHCP service")]
    Dhcp(#[source] ServerError),
    #[error("starting the metrics listener ([metrics] listen)")]
    Metrics(#[source] std::io::Error),
    #[error("starting the {0} thread")]
    Thread(&'static str, #[source] std::io::Error),
    #[error("dropping privileges: {0}")]
    Privileges(String),
    #[error("TFTP engine failed")]
    TftpFailed(#[source] EngineError),
    #[error("HTTP service failed")]
    HttpFailed(#[source] Stopped<std::io::Error>),
    #[error("DHCP service failed")]
    DhcpFailed(#[source] Stopped<ServerError>),
}

/// How a service thread ended badly.
#[derive(Debug, thiserror::Error)]
pub enum Stopped<E: std::error::Error + 'static> {
    #[error(transparent)]
    Failed(E),
    #[error("{0} thread panicked")]
    Panicked(&'static str),
}

/// Serves TFTP (and DHCP / HTTP when enabled) from `config` until SIGINT or SIGTERM;
/// `config_path` is what SIGHUP reloads, with `overrides` applied again.
pub fn serve(
    mut config: Config,
    templates: Arc<Templates>,
    config_path: PathBuf,
    overrides: Overrides,
) -> Result<(), ServeError> {
    overrides.apply(&mut config);
    let tftp = &config.tftp_settings();
    let params = config.tftp.engine_params();
    let threads = params.threads;
    let hosts = config.host_index();
    let (journey_settings, classes) = config.journey_settings(&hosts);
    let journeys = Arc::new(Journeys::new(
        &journey_settings,
        classes,
        Arc::clone(&hosts),
    ));

    let metrics = Arc::new(TftpMetrics::default());
    let service = Arc::new(
        TftpService::new(tftp, Arc::clone(&metrics))
            .map_err(|source| ServeError::TftpRoot {
                path: tftp.root.clone(),
                source,
            })?
            .with_journeys(Arc::clone(&journeys)),
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

    let listeners = engine::Listeners::bind(&params)?;
    let (db, next_boot) = open_host_state(&config)?.unzip();
    let install_metrics = Arc::new(InstallMetrics::default());
    // Proxy mode: the addresses hosts' own DHCP requests name are where their install
    // scripts may go.
    let learned = (config.dhcp.enabled && !config.dhcp.is_full())
        .then(|| Arc::new(LearnedAddresses::default()));
    let http = if config.http.enabled {
        let install = Arc::new(InstallSlot::new(
            InstallService::new(
                Arc::new(config.install_settings(&hosts)),
                Arc::clone(&templates),
                next_boot.clone(),
                db.clone(),
                Arc::clone(&install_metrics),
            )
            .with_learned(learned.clone()),
        ));
        let mut h = bind_http(&config, &service, install)?;
        h.server.set_journeys(Arc::clone(&journeys));
        Some(h)
    } else {
        None
    };
    // Several instances on one PostgreSQL share full-mode DHCP by RFC 3074 buckets: the
    // heartbeat's live instances decide which clients this one answers.
    let balance = match db.as_ref().and_then(Store::postgres) {
        Some(pg) if config.dhcp.enabled && config.dhcp.is_full() => {
            Some(Arc::new(Balance::new(pg.instance())))
        }
        _ => None,
    };
    let dhcp = if config.dhcp.enabled {
        let (mut server, control) = bind_dhcp(&config, &hosts, db.as_ref())?;
        if let Some(l) = &learned {
            server.set_learned(Arc::clone(l));
        }
        server.set_journeys(Arc::clone(&journeys));
        if let Some(balance) = &balance {
            server.set_balance(Arc::clone(balance));
        }
        Some((server, control))
    } else {
        None
    };

    let observe = if config.metrics.enabled {
        Some(bind_metrics(
            &config,
            &metrics,
            http.as_ref().map(|h| &h.metrics),
            dhcp.as_ref().map(|d| &d.1),
            db.as_ref(),
            (&journeys, &shutdown),
        )?)
    } else {
        None
    };

    // Everything is bound, attached and open: the privileges go before any thread starts.
    let hand_over = socket
        .created_dir()
        .map(Path::to_path_buf)
        .into_iter()
        .collect();
    let privileges =
        privilege::drop_privileges(&config.server.settings(hand_over)).map_err(|e| {
            ServeError::Privileges(match e {
                PrivilegeError::NoSuchUser { .. } => {
                    ConfigError::at_key(&config_path, &["server", "user"], e.to_string())
                        .to_string()
                }
                e => e.to_string(),
            })
        })?;
    let id = ProcessIdentity::current();
    tracing::info!(
        user = privileges.switched_to.as_deref().unwrap_or("(unchanged)"),
        uid = privileges.uid,
        gid = privileges.gid,
        cap_eff = %id.cap_eff,
        no_new_privs = id.no_new_privs,
        seccomp = %privileges.seccomp,
        "privileges dropped"
    );

    // The service threads start: the store's first (its connections, heartbeat, follower).
    if let Some(store) = &db {
        let on_live = match (&balance, store.postgres()) {
            (Some(balance), Some(pg)) => balancer(Arc::clone(balance), Arc::clone(pg)),
            _ => live_logger(),
        };
        store
            .start(on_live)
            .map_err(|e| ServeError::Thread("store", e))?;
    }
    let (dhcp_handle, dhcp_metrics, dhcp_control) = match dhcp {
        Some((mut server, control)) => (
            Some(spawn_service("DHCP", Arc::clone(&shutdown), move |stop| {
                server.run(stop)
            })?),
            Some(Arc::clone(&control.metrics)),
            Some(control),
        ),
        None => (None, None, None),
    };
    let (http_handle, http_metrics, install) = match http {
        Some(h) => (
            Some(spawn_service("HTTP", Arc::clone(&shutdown), move |stop| {
                h.server.run(stop)
            })?),
            Some(h.metrics),
            Some(h.install),
        ),
        None => (None, None, None),
    };
    // The metrics listener stops with the server; if it fails, the boot services go on (it
    // logs why).
    let observe_handle = observe
        .map(|o| o.spawn(Arc::clone(&shutdown)))
        .transpose()
        .map_err(|e| ServeError::Thread("metrics", e))?;
    tracing::info!(socket = %socket.path().display(), "control socket ready (pxe-server status)");
    let state = DaemonState {
        config_path,
        overrides,
        running: config,
        hosts,
        templates,
        started: Instant::now(),
        engine: format!("{kind:?}").to_lowercase(),
        threads,
        tftp: Arc::clone(&metrics),
        dhcp: dhcp_control,
        http: http_metrics.clone(),
        install,
        install_metrics,
        next_boot,
        db: db.clone(),
        learned,
        journeys,
        reloads: 0,
        last_reload: None,
        privileges,
    };
    let stop_store = db;
    let control = control::spawn(state, socket, Arc::clone(&shutdown), reload)
        .map_err(|e| ServeError::Thread("control", e))?;

    let result = engine::run(kind, service, &params, listeners, Arc::clone(&shutdown));
    shutdown.store(true, Ordering::Relaxed);
    // The control thread logs the filter counters and detaches the XDP program as it ends.
    if control.join().is_err() {
        tracing::warn!("control thread panicked");
    }
    let dhcp_result = dhcp_handle.map_or(Ok(()), |h| join("DHCP", h));
    if let Some(m) = dhcp_metrics {
        tracing::info!(metrics = %m.snapshot(), "DHCP service stopped");
    }
    let http_result = http_handle.map_or(Ok(()), |h| join("HTTP", h));
    if let Some(m) = http_metrics {
        tracing::info!(metrics = %m.snapshot(), "HTTP service stopped");
    }
    if let Some(Err(e)) = observe_handle.map(|h| join("metrics", h)) {
        tracing::error!("metrics listener failed: {e}");
    }
    if let Some(store) = &stop_store {
        store.stop();
    }
    tracing::info!(metrics = %metrics.snapshot(), "TFTP service stopped");
    result.map_err(ServeError::TftpFailed)?;
    http_result.map_err(ServeError::HttpFailed)?;
    dhcp_result.map_err(ServeError::DhcpFailed)
}

/// The store (`[store]`: redb or PostgreSQL) and the next-boot table in it.
type HostState = (Store, Arc<NextBootStore>);

/// Opens the [`HostState`] in full DHCP mode, or with HTTP and `[[hosts]]` (whose next-boot
/// actions live there). A PostgreSQL store must be reachable: the start does not wait.
fn open_host_state(config: &Config) -> Result<Option<HostState>, ServeError> {
    if !(config.dhcp.is_full() || (config.http.enabled && !config.hosts.is_empty())) {
        return Ok(None);
    }
    let store = Store::open(&config.store_settings())?;
    let next_boot = store.next_boot().map_err(ServeError::NextBoot)?;
    if let Some(pg) = store.postgres() {
        tracing::info!(
            url = pg.url(),
            instance = pg.instance(),
            "PostgreSQL store ready"
        );
    }
    Ok(Some((store, Arc::new(next_boot))))
}

/// The heartbeat's callback in full-mode DHCP on PostgreSQL: the live instances decide this
/// instance's buckets ([`Balance::update`], which logs each change), and the count goes into
/// its heartbeat row for its peers' `status`.
fn balancer(balance: Arc<Balance>, pg: Arc<PgStore>) -> LiveCallback {
    Arc::new(move |live: &[String]| {
        balance.update(live);
        pg.set_owned_buckets(balance.owned());
    })
}

/// The heartbeat's callback where no DHCP is balanced (PostgreSQL holds only next-boot state):
/// logs each change of the live instances.
fn live_logger() -> LiveCallback {
    let last = std::sync::Mutex::new(None::<Vec<String>>);
    Arc::new(move |live: &[String]| {
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_deref() != Some(live) {
            tracing::info!(?live, "live instances in the store");
            *last = Some(live.to_vec());
        }
    })
}

/// The HTTP service, bound, with its counters and the install routes it serves.
struct BoundHttp {
    server: HttpServer,
    metrics: Arc<HttpMetrics>,
    install: Arc<InstallSlot>,
}

/// Binds the HTTP listening sockets (a busy port stops the start). Files come from the TFTP
/// service's store when both serve the same root, so that they share each file's snapshot.
fn bind_http(
    config: &Config,
    tftp: &Arc<TftpService>,
    install: Arc<InstallSlot>,
) -> Result<BoundHttp, ServeError> {
    let h = &config.http_settings();
    let images: Arc<dyn ImageSource> = if h.root != config.tftp.root {
        Arc::new(
            ImageStore::new(h.root.clone()).map_err(|source| ServeError::HttpRoot {
                path: h.root.clone(),
                source,
            })?,
        )
    } else {
        Arc::clone(tftp) as Arc<dyn ImageSource>
    };
    let server = HttpServer::bind(h, images, Arc::default(), Some(Arc::clone(&install)))
        .map_err(ServeError::Http)?;
    tracing::info!(
        listen = ?server.local_addrs().map_err(ServeError::Http)?,
        root = %h.root.display(),
        threads = h.threads,
        max_connections = server.max_connections(),
        max_connections_per_client = server.max_connections_per_client(),
        min_send_rate_bytes_per_sec = h.min_send_rate,
        "HTTP service ready"
    );
    Ok(BoundHttp {
        metrics: server.metrics(),
        server,
        install,
    })
}

/// Binds the `[metrics]` listener (a busy port stops the start) with the families of every
/// service that runs, the journeys' families, and the live view (which ends its event
/// streams at `shutdown`).
fn bind_metrics(
    config: &Config,
    tftp: &Arc<TftpMetrics>,
    http: Option<&Arc<HttpMetrics>>,
    dhcp: Option<&DhcpControl>,
    db: Option<&Store>,
    (journeys, shutdown): (&Arc<Journeys>, &Arc<AtomicBool>),
) -> Result<MetricsServer, ServeError> {
    let mut server = MetricsServer::bind(&config.metrics.listen).map_err(ServeError::Metrics)?;
    let leases = db.filter(|_| config.dhcp.is_full()).map(|db| LeaseSource {
        db: db.clone(),
        pools: config
            .dhcp
            .subnets
            .iter()
            .map(|s| {
                let size = u32::from(s.range_end).saturating_sub(u32::from(s.range_start));
                (s.subnet.to_string(), u64::from(size) + 1)
            })
            .collect(),
    });
    server.register(Box::new(Sources {
        tftp: Arc::clone(tftp),
        http: http.cloned(),
        dhcp: dhcp.map(|d| DhcpSource {
            metrics: Arc::clone(&d.metrics),
            mode: if config.dhcp.is_full() {
                "full"
            } else {
                "proxy"
            },
            leases,
            xdp: d.xdp.as_ref().map(XdpFilter::counter_map),
            userspace: Arc::clone(&d.fallback),
        }),
    }));
    if let Some(store) = db {
        server.register(Box::new(crate::observe::store::StoreFamilies {
            store: store.clone(),
        }));
    }
    server.register(Box::new(JourneyFamilies {
        journeys: Arc::clone(journeys),
    }));
    let live = JourneyLive {
        journeys: Arc::clone(journeys),
        tftp: Arc::clone(tftp),
        http: http.cloned(),
    };
    server.set_routes(Arc::new(LiveView::new(
        Arc::new(live),
        Arc::clone(shutdown),
    )));
    let addrs = server.local_addrs().map_err(ServeError::Metrics)?;
    for a in &addrs {
        if !a.ip().is_loopback() {
            tracing::warn!(
                listen = %a,
                "metrics listener on a non-loopback address: keep it off the boot segment \
                 ([metrics] listen, SECURITY.md)"
            );
        }
    }
    tracing::info!(
        listen = ?addrs,
        "metrics listener ready (GET /metrics; the live view at /, GET /api/v1/hosts)"
    );
    Ok(server)
}

/// Binds the DHCP sockets and starts the discovery filter: XDP where it attaches, the same
/// policy in userspace elsewhere. Returns the server, ready to run, and the control thread's
/// side of it.
fn bind_dhcp(
    config: &Config,
    hosts: &Arc<HostIndex>,
    db: Option<&Store>,
) -> Result<(DhcpServer<ServiceStore>, DhcpControl), ServeError> {
    let mut server =
        DhcpServer::bind(&config.dhcp_settings(hosts), db).map_err(ServeError::Dhcp)?;
    let xdp_settings = config.xdp_settings(hosts);
    let (xdp, placements) = XdpFilter::start(&xdp_settings);
    let xdp_ifindexes = xdp
        .as_ref()
        .map(|f| f.attached().iter().map(|a| a.1).collect())
        .unwrap_or_default();
    let fallback = Fallback::new(xdp_settings.policy, xdp_ifindexes);
    let fallback_counters = fallback.counters();
    tracing::info!(placements = ?placements, "DHCP filter ready");
    server.set_filter(fallback);
    let control = DhcpControl {
        metrics: server.metrics(),
        reload: server.reload_channel(),
        xdp,
        placements,
        fallback: fallback_counters,
    };
    tracing::info!(
        mode = ?config.dhcp.mode,
        sockets = ?server.listening(),
        subnets = config.dhcp.subnets.len(),
        hosts = config.hosts.len(),
        "DHCP service ready"
    );
    Ok((server, control))
}

/// Runs a service (`DHCP`, `HTTP`) in its own thread until `shutdown`; if it fails, it sets
/// `shutdown` so that the whole server stops (a PXE server that cannot answer DHCP must not
/// look healthy).
fn spawn_service<E: std::fmt::Display + Send + 'static>(
    name: &'static str,
    shutdown: Arc<AtomicBool>,
    run: impl FnOnce(&AtomicBool) -> Result<(), E> + Send + 'static,
) -> Result<JoinHandle<Result<(), E>>, ServeError> {
    std::thread::Builder::new()
        .name(name.to_lowercase())
        .spawn(move || {
            let r = run(&shutdown);
            if let Err(e) = &r {
                tracing::error!("{name} service failed: {e}");
                shutdown.store(true, Ordering::Relaxed);
            }
            r
        })
        .map_err(|e| ServeError::Thread(name, e))
}

/// Waits for a service thread; `name` names it if it panicked.
fn join<E: std::error::Error>(
    name: &'static str,
    handle: JoinHandle<Result<(), E>>,
) -> Result<(), Stopped<E>> {
    match handle.join() {
        Ok(r) => r.map_err(Stopped::Failed),
        Err(_) => Err(Stopped::Panicked(name)),
    }
}

/// SIGINT and SIGTERM set `shutdown` (signal-hook's flag handlers); a second one, once
/// `shutdown` is already set, ends the process at once with status 1. SIGHUP sets `reload`.
fn install_signal_handlers(
    shutdown: &Arc<AtomicBool>,
    reload: &Arc<AtomicBool>,
) -> Result<(), ServeError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let handler = |source| ServeError::Signals {
        what: "a signal handler",
        source,
    };
    for sig in [SIGINT, SIGTERM] {
        // Order matters: the conditional shutdown must see the flag before this signal sets it.
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(shutdown))
            .map_err(handler)?;
        signal_hook::flag::register(sig, Arc::clone(shutdown)).map_err(handler)?;
    }
    signal_hook::flag::register(SIGHUP, Arc::clone(reload)).map_err(|source| {
        ServeError::Signals {
            what: "the SIGHUP handler",
            source,
        }
    })?;
    Ok(())
}
