//! The HTTP/1.1 service: boot files from the same image store as TFTP (hyper on its own tokio
//! runtime).
//!
//! - **Files** come from [`ImageSource`] (the TFTP service's own store when the roots are the
//!   same, so both protocols share one sealed snapshot per file): a body is a `Bytes` slice of
//!   the image's mapping, never a copy; hyper writes it with vectored writes.
//! - **Requests**: `GET` and `HEAD`, one `Range` (206 / 416), keep-alive; other methods get
//!   405 with `Allow`. Files carry a strong `ETag` and `Last-Modified` from their snapshot's
//!   version; `If-None-Match` / `If-Modified-Since` give 304, `If-Range` is honoured
//!   ([`conditional`]). Paths are percent-decoded and then checked ([`path`]); the store's
//!   `RESOLVE_BENEATH` open refuses symlinks leaving the root. See [`router`].
//! - **Bounds**: a request head is at most [`MAX_HEAD_BYTES`] (hyper answers 431 beyond) and
//!   [`MAX_HEADERS`] lines; it must arrive within `header_timeout_ms`, a connection with no
//!   traffic for `idle_timeout_ms` is closed, and a client that reads its response at less
//!   than `min_send_rate_bytes_per_sec` (over windows of `send_rate_window_ms` of waiting for
//!   it) is cut ([`conn`]), counted (`send_rate_cuts`) and logged (one warning per
//!   [`REFUSAL_LOG_INTERVAL`] naming the client and both settings). Per connection: the read buffer, the response head and references
//!   to shared image bytes.
//! - **Slots** ([`slots`]): beyond `max_connections` open connections, or
//!   `max_connections_per_client` from one client address, a new connection gets a fixed 503
//!   and is closed; each refusal is counted, and a rate-limited warning names the client, the
//!   limit and the setting to raise. So one address cannot take every slot, and a slow reader
//!   cannot keep one.
//! - **Open files**: each connection is a descriptor, and so is each TFTP transfer. At start the
//!   soft `RLIMIT_NOFILE` is raised to the hard limit; if `max_connections` does not fit next
//!   to TFTP's `max_sessions` and [`RESERVED_FDS`], it is lowered with a warning
//!   ([`fit_fd_limit`]), so a storm meets the 503 rather than failing `accept()` (EMFILE). The
//!   limit belongs to the serving process (systemd's `LimitNOFILE`, a container's ulimit), not
//!   to the config file, so `check` does not refuse a config for it.

pub mod conditional;
pub mod conn;
pub mod path;
pub mod range;
pub mod router;
pub mod slots;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::images::{Image, ImageStore, OpenError};
use crate::journey::Now;
use crate::metrics::{self, LogLimiter, counters};
use crate::tftp::service::{REFUSAL_LOG_INTERVAL, RESERVED_FDS};
use conn::{ConnShared, EXPIRED_HEADER, EXPIRED_IDLE, EXPIRED_SEND_RATE, Guarded, SendPace};
use router::{Body, Route, State};
use slots::{Slot, Slots};

/// Largest request head (request line + headers) read; hyper answers 431 beyond it.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines in a request head (hyper answers 431 beyond).
pub const MAX_HEADERS: usize = 64;
/// Threads of the blocking pool that opens (and on first use snapshots) files.
const BLOCKING_THREADS: usize = 16;
/// How often the accept loop looks at the shutdown flag.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);
/// Pause after a failed accept (EMFILE ...), so the loop cannot spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// The answer to a connection beyond `max_connections` or `max_connections_per_client`.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n";

counters! {
    HttpMetrics, HttpSnapshot, "HTTP service";
    /// Connections served.
    connections_accepted,
    /// Connections answered 503 and closed because `max_connections` were open.
    connections_refused,
    /// Connections answered 503 and closed because their client address had
    /// `max_connections_per_client` open.
    connections_refused_per_client,
    /// Connections open now (a gauge).
    connections_open: gauge,
    /// The `max_connections` in force: the configured one, or less to fit the open-file limit
    /// (a setting, not a count).
    connections_limit: gauge,
    /// Requests handed to the router.
    requests,
    /// 2xx other than 206.
    responses_2xx,
    responses_206,
    /// 304 Not Modified (a conditional GET or HEAD whose validator still matches).
    responses_304,
    /// 4xx, including the 400 and 431 hyper sends for unparsable or oversized heads.
    responses_4xx,
    responses_5xx,
    /// Bytes written to client sockets (heads and bodies).
    bytes_sent,
    /// `..` in the path (plain or encoded) or a symlink leaving the root: 403.
    refused_traversal,
    /// Broken percent-encoding, NUL, backslash, not an origin-form path: 400.
    refused_bad_path,
    refused_not_found,
    /// Directories, devices, FIFOs, unreadable files: 403.
    refused_access,
    /// Methods other than GET and HEAD: 405.
    refused_method,
    /// 416 answers.
    ranges_unsatisfiable,
    /// Connections cut because a request head was not complete in `header_timeout_ms`.
    header_timeouts,
    /// Connections closed after `idle_timeout_ms` without traffic.
    idle_timeouts,
    /// Connections cut because the client took less than `min_send_rate_bytes_per_sec` of a
    /// response over a `send_rate_window_ms` of waiting (a slow reader, see [`conn`]).
    send_rate_cuts,
    /// Request heads over the size or header-count limit (431).
    headers_too_large,
    /// Unparsable request heads (400 from hyper).
    bad_requests,
    /// Connections that ended with another error (reset by the peer ...).
    connection_errors,
    /// Failed accept() calls.
    accept_errors;
    /// Responses by route and status class (for `/metrics`).
    by_route => router::RouteCounts,
}

/// Where the HTTP service gets its files.
pub trait ImageSource: Send + Sync + 'static {
    fn open_image(&self, name: &[u8]) -> Result<Arc<Image>, OpenError>;
}

impl ImageSource for ImageStore {
    fn open_image(&self, name: &[u8]) -> Result<Arc<Image>, OpenError> {
        self.open(name)
    }
}

/// The TFTP service's store: HTTP and TFTP then share each file's snapshot.
impl ImageSource for crate::tftp::service::TftpService {
    fn open_image(&self, name: &[u8]) -> Result<Arc<Image>, OpenError> {
        self.images.open(name)
    }
}

/// What the HTTP service runs with (converted from `[http]`).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// TCP addresses it listens on.
    pub listen: Vec<std::net::SocketAddr>,
    /// Directory served (`[http] root`, else the TFTP root).
    pub root: std::path::PathBuf,
    /// Runtime worker threads.
    pub threads: usize,
    /// Open connections at most (before [`fit_fd_limit`]).
    pub max_connections: usize,
    /// Open connections from one client address at most.
    pub max_connections_per_client: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// Bytes per second a client must take of a response it keeps the server waiting on
    /// (0: no minimum), over windows of `send_rate_window` of waiting ([`conn::SendPace`]).
    pub min_send_rate: u64,
    pub send_rate_window: Duration,
    /// TFTP's `max_sessions`: descriptors left to TFTP when `max_connections` is fitted to the
    /// open-file limit.
    pub tftp_max_sessions: usize,
}

/// Limits applied to each connection.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_timeout: Duration,
    idle_timeout: Duration,
    min_send_rate: u64,
    send_rate_window: Duration,
}

/// The bound HTTP service, ready to run.
pub struct HttpServer {
    listeners: Vec<std::net::TcpListener>,
    state: Arc<State>,
    slots: Arc<Slots>,
    limits: Limits,
    /// One "slow reader cut" warning per [`REFUSAL_LOG_INTERVAL`].
    send_rate_log: Arc<LogLimiter>,
    threads: usize,
}

impl HttpServer {
    /// Binds every `[http] listen` address (so a busy port stops the start, before anything
    /// serves). `images` serves the files (see [`ImageSource`]).
    pub fn bind(
        h: &HttpSettings,
        images: Arc<dyn ImageSource>,
        metrics: Arc<HttpMetrics>,
        install: Option<Arc<crate::install::InstallSlot>>,
    ) -> io::Result<HttpServer> {
        let mut listeners = Vec::with_capacity(h.listen.len());
        for addr in &h.listen {
            listeners.push(
                listen(*addr)
                    .map_err(|e| io::Error::new(e.kind(), format!("HTTP listen {addr}: {e}")))?,
            );
        }
        let soft = crate::tftp::service::raise_nofile_limit();
        let fit = fit_fd_limit(h.max_connections as u64, h.tftp_max_sessions as u64, soft);
        match fit {
            FdFit::Fits(_) => {}
            FdFit::Lowered { to, tftp_sessions } => tracing::warn!(
                configured = h.max_connections,
                effective = to,
                rlimit_nofile = soft,
                tftp_sessions,
                reserved = RESERVED_FDS,
                "[http] max_connections lowered to fit the open-file limit (one descriptor per \
                 connection, next to one per TFTP transfer); raise the hard limit \
                 (LimitNOFILE=) or lower max_connections or tftp.max_sessions"
            ),
            FdFit::Shared { to, tftp_sessions } => tracing::warn!(
                configured = h.max_connections,
                effective = to,
                rlimit_nofile = soft,
                tftp_sessions,
                reserved = RESERVED_FDS,
                "[http] max_connections lowered to a quarter of the open-file limit; with TFTP \
                 at its max_sessions as well the process can run out of descriptors (failed \
                 accepts and TFTP requests); raise the hard limit (LimitNOFILE=) or lower \
                 tftp.max_sessions"
            ),
        }
        let limits = Limits {
            header_timeout: h.header_timeout,
            idle_timeout: h.idle_timeout,
            min_send_rate: h.min_send_rate,
            send_rate_window: h.send_rate_window,
        };
        let slots = Arc::new(Slots::new(
            fit.connections(),
            h.max_connections_per_client,
            Arc::clone(&metrics),
        ));
        metrics
            .connections_limit
            .store(slots.max_connections(), Ordering::Relaxed);
        let threads = h.threads.max(1);
        Ok(HttpServer {
            listeners,
            state: Arc::new(State {
                images,
                metrics,
                install,
                journeys: None,
            }),
            slots,
            limits,
            send_rate_log: Arc::new(LogLimiter::new(REFUSAL_LOG_INTERVAL)),
            threads,
        })
    }

    /// The `max_connections` in force (see [`fit_fd_limit`]).
    pub fn max_connections(&self) -> u64 {
        self.slots.max_connections()
    }

    /// The `max_connections_per_client` in force.
    pub fn max_connections_per_client(&self) -> u32 {
        self.slots.max_per_client()
    }

    /// The bound addresses (with the actual ports when the config said port 0).
    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.listeners.iter().map(|l| l.local_addr()).collect()
    }

    pub fn metrics(&self) -> Arc<HttpMetrics> {
        Arc::clone(&self.state.metrics)
    }

    /// Records files served, install routes and error statuses in `journeys` (before
    /// [`HttpServer::run`]).
    pub fn set_journeys(&mut self, journeys: Arc<crate::journey::Journeys>) {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.journeys = Some(journeys);
        }
    }

    /// Serves until `shutdown` is set, on a tokio runtime of `[http] threads` workers; open
    /// connections are dropped at the end.
    pub fn run(self, shutdown: &AtomicBool) -> io::Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.threads)
            .max_blocking_threads(BLOCKING_THREADS)
            .thread_name("http-worker")
            .enable_all()
            .build()?;
        let result = rt.block_on(async {
            let mut tasks = Vec::new();
            for l in self.listeners {
                let listener = tokio::net::TcpListener::from_std(l)?;
                tasks.push(tokio::spawn(accept_loop(
                    listener,
                    Arc::clone(&self.state),
                    Arc::clone(&self.slots),
                    self.limits,
                    Arc::clone(&self.send_rate_log),
                )));
            }
            while !shutdown.load(Ordering::Relaxed) {
                tokio::time::sleep(SHUTDOWN_POLL).await;
            }
            for t in &tasks {
                t.abort();
            }
            Ok(())
        });
        rt.shutdown_timeout(Duration::from_secs(1));
        result
    }
}

/// How `max_connections` fits the open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdFit {
    /// As configured (or no limit).
    Fits(u64),
    /// Lowered to what is left after TFTP's sessions and [`RESERVED_FDS`].
    Lowered { to: u64, tftp_sessions: u64 },
    /// Almost nothing was left after TFTP's sessions: HTTP keeps a quarter of the limit (minus
    /// the reserve), and the two together can exceed it at full load.
    Shared { to: u64, tftp_sessions: u64 },
}

impl FdFit {
    pub fn connections(self) -> u64 {
        match self {
            FdFit::Fits(n) | FdFit::Lowered { to: n, .. } | FdFit::Shared { to: n, .. } => n,
        }
    }
}

/// Fits `configured` connections into the soft open-file limit `soft` (`None` = unlimited),
/// next to [`RESERVED_FDS`] descriptors (listeners, DHCP sockets, the lease database, the
/// control socket, files being snapshotted) and TFTP's sessions (one socket each; TFTP clamps
/// its `max_sessions` to the limit minus the reserve, as it is done here).
pub fn fit_fd_limit(configured: u64, tftp_max_sessions: u64, soft: Option<u64>) -> FdFit {
    let Some(soft) = soft else {
        return FdFit::Fits(configured);
    };
    let usable = soft.saturating_sub(RESERVED_FDS);
    let tftp_sessions = tftp_max_sessions.min(usable);
    let left = usable - tftp_sessions;
    if configured <= left {
        return FdFit::Fits(configured);
    }
    let floor = (usable / 4).max(1);
    if left >= floor {
        FdFit::Lowered {
            to: left,
            tftp_sessions,
        }
    } else {
        FdFit::Shared {
            to: configured.min(floor),
            tftp_sessions,
        }
    }
}

/// A non-blocking listening socket with `SO_REUSEADDR` and a deep backlog (boot storms).
fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    pxe_net::tcp_listener(addr, 4096)
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    slots: Arc<Slots>,
    limits: Limits,
    send_rate_log: Arc<LogLimiter>,
) {
    let m = &state.metrics;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                metrics::inc(&m.accept_errors);
                if m.accept_errors.get() % 1000 == 1 {
                    tracing::warn!("HTTP accept failed: {e}");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let slot = match slots.take(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                // Best effort, never waits: a full socket buffer just loses the 503.
                let _ = stream.try_write(BUSY);
                drop(stream);
                if let Some(j) = &state.journeys {
                    let setting = match refusal {
                        slots::Refusal::ServerFull => "http.max_connections",
                        slots::Refusal::ClientFull => "http.max_connections_per_client",
                    };
                    let (kind, now) = (crate::journey::ErrorKind::Refused, Now::current());
                    j.error_to(now, peer.ip(), kind, 503, setting);
                }
                slots.refused(refusal, peer.ip());
                continue;
            }
        };
        metrics::inc(&m.connections_accepted);
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            stream,
            peer,
            Arc::clone(&state),
            limits,
            Arc::clone(&send_rate_log),
            slot,
        ));
    }
}

/// Serves one connection; `_slot` is given back when it ends, however it ends (or when the
/// task is dropped).
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    limits: Limits,
    send_rate_log: Arc<LogLimiter>,
    _slot: Slot,
) {
    let m = Arc::clone(&state.metrics);
    let local = stream.local_addr().ok();
    let shared = Arc::new(ConnShared::default());
    let io = TokioIo::new(Guarded::new(
        stream,
        Arc::clone(&shared),
        Arc::clone(&m),
        limits.header_timeout,
        limits.idle_timeout,
        SendPace::new(limits.min_send_rate, limits.send_rate_window),
    ));
    let service = {
        let shared = Arc::clone(&shared);
        service_fn(move |mut req| {
            shared.head_done.store(true, Ordering::Relaxed);
            if let Some(a) = local {
                req.extensions_mut().insert(router::LocalAddr(a));
            }
            req.extensions_mut().insert(router::PeerAddr(peer));
            handle(Arc::clone(&state), req)
        })
    };
    let result = http1::Builder::new()
        .keep_alive(true)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .writev(true)
        // The deadlines are kept by `Guarded` (see `conn`).
        .header_read_timeout(None)
        .serve_connection(io, service)
        .await;
    // hyper ends a connection whose deadline expired before any byte of a request with Ok
    // (it looks like a client closing an idle connection): look at the deadline first.
    let counter = match (shared.expired.load(Ordering::Relaxed), &result) {
        (EXPIRED_HEADER, _) => &m.header_timeouts,
        (EXPIRED_IDLE, _) => &m.idle_timeouts,
        (EXPIRED_SEND_RATE, _) => {
            warn_send_rate_cut(&send_rate_log, peer, &limits);
            &m.send_rate_cuts
        }
        (_, Ok(())) => return,
        (_, Err(e)) if e.is_parse_too_large() => {
            router::count_response(
                &m,
                Route::Other,
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            );
            &m.headers_too_large
        }
        (_, Err(e)) if e.is_parse() => {
            router::count_response(&m, Route::Other, StatusCode::BAD_REQUEST);
            &m.bad_requests
        }
        (_, Err(_)) => &m.connection_errors,
    };
    metrics::inc(counter);
    if let Err(e) = result {
        tracing::debug!("HTTP connection ended: {e}");
    }
}

/// The rate-limited warning for a connection cut for reading too slowly: who, the limit, and
/// the settings to change.
fn warn_send_rate_cut(log: &LogLimiter, peer: SocketAddr, limits: &Limits) {
    let Some(held_back) = log.allow() else {
        return;
    };
    tracing::warn!(
        client = %peer.ip().to_canonical(),
        min_send_rate_bytes_per_sec = limits.min_send_rate,
        send_rate_window_ms = limits.send_rate_window.as_millis() as u64,
        cuts_not_logged = held_back,
        "HTTP connection cut: the client read its response more slowly than \
         min_send_rate_bytes_per_sec over a send_rate_window_ms of waiting (a slow reader \
         holding a slot); if real clients on slow links are cut, lower \
         [http] min_send_rate_bytes_per_sec or raise send_rate_window_ms"
    );
}

async fn handle(
    state: Arc<State>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    metrics::inc(&state.metrics.requests);
    // The body is never read: dropping it lets hyper discard it or close the connection.
    let (parts, _body) = req.into_parts();
    let req = Request::from_parts(parts, ());
    let metrics = Arc::clone(&state.metrics);
    match tokio::task::spawn_blocking(move || router::route(&state, &req)).await {
        Ok(resp) => Ok(resp),
        Err(e) => {
            tracing::error!("HTTP request handler failed: {e}");
            router::count_response(&metrics, Route::Other, StatusCode::INTERNAL_SERVER_ERROR);
            Ok(router::error(StatusCode::INTERNAL_SERVER_ERROR))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connections_fits_the_open_file_limit() {
        // No limit, or room for everything: as configured.
        assert_eq!(fit_fd_limit(10_000, 10_000, None), FdFit::Fits(10_000));
        assert_eq!(
            fit_fd_limit(10_000, 10_000, Some(20_256)),
            FdFit::Fits(10_000)
        );
        // This machine's hard limit (20000) with both defaults: HTTP gets what TFTP leaves.
        assert_eq!(
            fit_fd_limit(10_000, 10_000, Some(20_000)),
            FdFit::Lowered {
                to: 9_744,
                tftp_sessions: 10_000
            }
        );
        assert_eq!(
            fit_fd_limit(1_000, 100, Some(400)),
            FdFit::Lowered {
                to: 44,
                tftp_sessions: 100
            }
        );
        // TFTP takes (nearly) everything: HTTP keeps a quarter of the usable descriptors.
        assert_eq!(
            fit_fd_limit(10_000, 10_000, Some(1_024)),
            FdFit::Shared {
                to: 192,
                tftp_sessions: 768
            }
        );
        assert_eq!(
            fit_fd_limit(100, 10_000, Some(1_024)),
            FdFit::Shared {
                to: 100,
                tftp_sessions: 768
            }
        );
        // A limit below the reserve: one connection, never zero.
        assert_eq!(fit_fd_limit(10, 10, Some(100)).connections(), 1);
    }

    #[test]
    fn bind_raises_the_soft_limit_and_records_the_limit_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let settings = HttpSettings {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            root: dir.path().to_path_buf(),
            threads: 2,
            max_connections: 7,
            max_connections_per_client: 3,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            min_send_rate: 1024,
            send_rate_window: Duration::from_secs(30),
            tftp_max_sessions: 10_000,
        };
        let images = Arc::new(ImageStore::new(dir.path().to_path_buf()).unwrap());
        let server = HttpServer::bind(&settings, images, Arc::default(), None).unwrap();
        let lim = pxe_net::fd_limit();
        assert_eq!(lim.soft, lim.hard, "soft limit not raised to the hard one");
        let want = fit_fd_limit(7, 10_000, lim.soft).connections();
        assert_eq!(server.max_connections(), want);
        assert_eq!(server.max_connections_per_client(), 3);
        assert_eq!(server.metrics().snapshot().connections_limit, want);
    }
}
