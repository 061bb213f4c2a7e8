//! The operator's HTTP listener (`[metrics]`): `GET /metrics` for Prometheus, and whatever an
//! [`Routes`] extension adds (the live page, `/api/v1/...`).
//!
//! - Its own thread with a current-thread tokio runtime and hyper's HTTP/1.1, apart from the
//!   boot services: a slow scraper or a page left open cannot take their threads.
//! - Bound in `serve` before the privilege drop (a busy port stops the start); it stops when
//!   the server shuts down.
//! - `/metrics` answers the Prometheus text format 0.0.4 (what `promtool` and older scrapers
//!   read), or OpenMetrics 1.0 when the request's `Accept` names
//!   `application/openmetrics-text`. The values are read at each scrape ([`families`],
//!   [`process`]): nothing is counted for it on the hot paths.
//! - Bounds: at most [`MAX_CONNECTIONS`] open connections (beyond, a fixed 503 and close), a
//!   request head within [`HEADER_TIMEOUT`], at most [`MAX_HEAD_BYTES`]. It is an operator
//!   port, loopback by default; the bounds keep a mistaken exposure from becoming a way to
//!   load the server.

pub mod families;
pub mod journeys;
pub mod process;
pub mod store;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

/// Every response body of this listener: a whole document, or a stream (server-sent events).
pub type ObserveBody = BoxBody<Bytes, Infallible>;

/// Routes added to the listener next to `/metrics`. `route` gets the method and the path with
/// its query, and answers `None` for a path it does not serve (then 404).
pub trait Routes: Send + Sync + 'static {
    fn route(&self, method: &Method, path_and_query: &str) -> Option<Response<ObserveBody>>;
}

/// Open connections at most; beyond, a new one gets [`BUSY`] and is closed.
pub const MAX_CONNECTIONS: usize = 64;
/// A request head must arrive within this time (of the connection, or of the last response).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head read (hyper answers 431 beyond it).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// The OpenMetrics media type a scraper asks for in `Accept`.
const OPENMETRICS: &str = "application/openmetrics-text";
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n";
/// How often the accept loop looks at the shutdown flag.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);
/// Pause after a failed accept (EMFILE ...), so the loop cannot spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The bound listener, with what `/metrics` reports.
pub struct MetricsServer {
    listeners: Vec<std::net::TcpListener>,
    registry: Registry,
    routes: Option<Arc<dyn Routes>>,
    header_timeout: Duration,
}

impl MetricsServer {
    /// Binds every address (a busy port is an error naming it).
    pub fn bind(listen: &[SocketAddr]) -> io::Result<MetricsServer> {
        let listeners = listen
            .iter()
            .map(|a| {
                std::net::TcpListener::bind(a)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|e| io::Error::new(e.kind(), format!("metrics listen {a}: {e}")))
            })
            .collect::<io::Result<_>>()?;
        let mut registry = Registry::default();
        registry.register_collector(Box::new(process::ProcessCollector));
        Ok(MetricsServer {
            listeners,
            registry,
            routes: None,
            header_timeout: HEADER_TIMEOUT,
        })
    }

    /// Adds families read at each scrape ([`families::Sources`], [`journeys::JourneyFamilies`]).
    pub fn register(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// Serves `routes` next to `/metrics`.
    pub fn set_routes(&mut self, routes: Arc<dyn Routes>) {
        self.routes = Some(routes);
    }

    /// Another limit than [`HEADER_TIMEOUT`] for a request head.
    pub fn set_header_timeout(&mut self, timeout: Duration) {
        self.header_timeout = timeout;
    }

    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.listeners.iter().map(|l| l.local_addr()).collect()
    }

    /// Serves on its own thread until `shutdown` is set.
    pub fn spawn(self, shutdown: Arc<AtomicBool>) -> io::Result<JoinHandle<io::Result<()>>> {
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || self.run(&shutdown))
    }

    fn run(self, shutdown: &AtomicBool) -> io::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(2)
            .build()?;
        let shared = Arc::new(Shared {
            registry: self.registry,
            routes: self.routes,
            header_timeout: self.header_timeout,
        });
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for l in self.listeners {
                let l = tokio::net::TcpListener::from_std(l)?;
                tasks.spawn(accept_loop(l, Arc::clone(&shared), Arc::clone(&slots)));
            }
            while !shutdown.load(Ordering::Relaxed) {
                tokio::time::sleep(SHUTDOWN_POLL).await;
            }
            tasks.abort_all();
            Ok(())
        })
    }
}

struct Shared {
    registry: Registry,
    routes: Option<Arc<dyn Routes>>,
    header_timeout: Duration,
}

async fn accept_loop(l: tokio::net::TcpListener, shared: Arc<Shared>, slots: Arc<Semaphore>) {
    let limiter = crate::metrics::LogLimiter::new(Duration::from_secs(10));
    loop {
        let (stream, peer) = match l.accept().await {
            Ok(a) => a,
            Err(e) => {
                if let Some(held) = limiter.allow() {
                    tracing::warn!(held_back = held, "metrics listener: accept failed: {e}");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if let Some(held) = limiter.allow() {
                tracing::warn!(
                    client = %peer,
                    limit = MAX_CONNECTIONS,
                    held_back = held,
                    "metrics listener: connection refused (503), {MAX_CONNECTIONS} open; \
                     scrapers and pages beyond that wait"
                );
            }
            // A fresh socket's send buffer takes the few bytes at once; closing follows.
            let _ = stream.try_write(BUSY);
            continue;
        };
        let shared = Arc::clone(&shared);
        let header_timeout = shared.header_timeout;
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(handle(shared, req).await) }
            });
            let result = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(MAX_HEAD_BYTES)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = result {
                tracing::debug!(client = %peer, "metrics connection ended: {e}");
            }
            drop(slot);
        });
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<ObserveBody> {
    let path = req.uri().path();
    if path == "/metrics" {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        }
        let openmetrics = req
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains(OPENMETRICS)));
        let head = req.method() == Method::HEAD;
        // Reading the lease database and /proc may block: off the runtime's thread.
        let scrape = tokio::task::spawn_blocking(move || scrape(&shared.registry, openmetrics));
        return match scrape.await {
            Ok(Ok((content_type, text))) => {
                let body = if head { String::new() } else { text };
                let mut r = Response::new(full(body));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(content_type),
                );
                r
            }
            Ok(Err(e)) => {
                tracing::warn!("/metrics not encoded: {e}");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "metrics not encoded\n")
            }
            Err(e) => {
                tracing::error!("/metrics scrape failed: {e}");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "scrape failed\n")
            }
        };
    }
    let target = req
        .uri()
        .path_and_query()
        .map_or(path, |p| p.as_str())
        .to_owned();
    match shared
        .routes
        .as_ref()
        .and_then(|r| r.route(req.method(), &target))
    {
        Some(r) => r,
        None => plain(StatusCode::NOT_FOUND, "Not Found\n"),
    }
}

/// The registry encoded as OpenMetrics or as Prometheus text 0.0.4, with its content type.
pub fn scrape(
    registry: &Registry,
    openmetrics: bool,
) -> Result<(&'static str, String), std::fmt::Error> {
    let mut out = String::with_capacity(16 * 1024);
    if openmetrics {
        text::encode(&mut out, registry)?;
        Ok((OPENMETRICS_CONTENT_TYPE, out))
    } else {
        prometheus_text::encode(&mut out, registry)?;
        Ok((prometheus_text::CONTENT_TYPE, out))
    }
}

fn full(body: impl Into<Bytes>) -> ObserveBody {
    Full::new(body.into()).boxed()
}

fn plain(status: StatusCode, text: &'static str) -> Response<ObserveBody> {
    let mut r = Response::new(full(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests;
