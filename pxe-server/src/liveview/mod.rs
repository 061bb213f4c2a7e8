//! The live view: one page (`/`, with `/live.js` and `/live.css`, all compiled in, so it works
//! air-gapped) and the JSON it reads, served on the metrics listener (an operator port,
//! loopback by default).
//!
//! - `GET /api/v1/events[?phase=P&stuck=1&limit=N]`: server-sent events. Once a second a
//!   `frame` event carries a [`Frame`]: the journey summary, the service counters the page
//!   turns into throughput and latency figures, and the first `limit` hosts matching the
//!   query (the page's table filter; a new filter opens a new stream). Every frame is built
//!   from counters summed when read and one pass over the journey table, so a viewer costs the
//!   serving threads nothing and the page does the same work with 10 or 10,000 hosts. At most
//!   [`MAX_EVENT_STREAMS`] streams are open; beyond, a `refused` event says so and the stream
//!   ends. Streams end when the daemon stops.
//! - `GET /api/v1/summary`, `GET /api/v1/hosts[?query]`, `GET /api/v1/hosts/MAC`: the same
//!   documents, once.
//!
//! Everything the page shows that came from the boot segment (MACs, names in errors) is
//! written with `textContent`, and the page's Content-Security-Policy allows only its own
//! script and style, so a crafted file name cannot run script in an operator's browser.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame as BodyFrame;
use hyper::{Method, Response, StatusCode, header};
use serde::Serialize;

use crate::metrics::HistogramSnapshot;

/// Open `/api/v1/events` streams at most.
pub const MAX_EVENT_STREAMS: usize = 32;
/// How often a stream sends a frame.
pub const FRAME_INTERVAL: Duration = Duration::from_secs(1);
/// Hosts per frame when the query names no `limit`.
pub const DEFAULT_TABLE_ROWS: usize = 200;

const INDEX_HTML: &str = include_str!("index.html");
const LIVE_JS: &str = include_str!("live.js");
const LIVE_CSS: &str = include_str!("live.css");
/// Only the page's own script, style and the event stream: no inline script, nothing from
/// elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A response body of the metrics listener: a whole document or an event stream.
pub type LiveBody = BoxBody<Bytes, Infallible>;

/// What the page shows, read when a frame is built.
pub trait LiveData: Send + Sync + 'static {
    /// The journey summary document.
    fn summary(&self) -> serde_json::Value;
    /// The hosts document for a URL query (`phase=kernel&stuck=1&limit=200&offset=0`), or why
    /// the query is refused.
    fn hosts(&self, query: &str) -> Result<serde_json::Value, String>;
    /// One host's document by MAC, `None` if the table does not hold it.
    fn host(&self, mac: &str) -> Option<serde_json::Value>;
    /// The service counters behind the page's tiles.
    fn stats(&self) -> LiveStats;
}

/// Counters and timing figures of one frame.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LiveStats {
    pub tftp_sent_bytes: u64,
    pub http_sent_bytes: u64,
    /// TFTP transfers running now.
    pub tftp_sessions: u64,
    /// HTTP connections open now.
    pub http_connections: u64,
    /// DHCP answer latency, seconds.
    pub dhcp_latency: Quantiles,
    /// Transfer durations (TFTP and HTTP, every file class), seconds.
    pub transfer_duration: Quantiles,
}

/// p50, p90 and p99 of a histogram, seconds (`null` with no observations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Quantiles {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub count: u64,
}

impl Quantiles {
    /// The quantiles of the sum of `snapshots` (histograms over the same bounds: the labels of
    /// one family); snapshots over other bounds than the first one's are left out.
    pub fn of(snapshots: &[HistogramSnapshot]) -> Quantiles {
        let Some(first) = snapshots.first() else {
            return Quantiles::default();
        };
        let mut sum = first.clone();
        for s in &snapshots[1..] {
            if s.bounds != sum.bounds {
                continue;
            }
            for (t, n) in sum.buckets.iter_mut().zip(&s.buckets) {
                *t += n;
            }
            sum.count += s.count;
            sum.sum += s.sum;
        }
        Quantiles {
            p50: sum.quantile(0.5),
            p90: sum.quantile(0.9),
            p99: sum.quantile(0.99),
            count: sum.count,
        }
    }
}

/// One `frame` event.
#[derive(Debug, Serialize)]
pub struct Frame {
    /// The document's version; a change that breaks readers raises it.
    pub version: u32,
    /// Unix time of the frame, milliseconds.
    pub now_ms: u64,
    pub summary: serde_json::Value,
    pub stats: LiveStats,
    pub hosts: serde_json::Value,
}

/// The page's routes, for the metrics listener.
#[derive(Clone)]
pub struct LiveView {
    data: Arc<dyn LiveData>,
    shutdown: Arc<AtomicBool>,
    streams: Arc<AtomicUsize>,
}

impl LiveView {
    pub fn new(data: Arc<dyn LiveData>, shutdown: Arc<AtomicBool>) -> LiveView {
        LiveView {
            data,
            shutdown,
            streams: Arc::default(),
        }
    }

    /// Event streams open now.
    pub fn open_streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    /// The answer to `method path?query`, or `None` for a path that is not the page's.
    pub fn route(&self, method: &Method, path_and_query: &str) -> Option<Response<LiveBody>> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let known = matches!(
            path,
            "/" | "/index.html"
                | "/live.js"
                | "/live.css"
                | "/api/v1/summary"
                | "/api/v1/hosts"
                | "/api/v1/events"
        ) || path.starts_with("/api/v1/hosts/");
        if !known {
            return None;
        }
        if method != Method::GET && method != Method::HEAD {
            return Some(plain(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n"));
        }
        Some(match path {
            "/" | "/index.html" => asset(INDEX_HTML, "text/html; charset=utf-8"),
            "/live.js" => asset(LIVE_JS, "text/javascript; charset=utf-8"),
            "/live.css" => asset(LIVE_CSS, "text/css; charset=utf-8"),
            "/api/v1/summary" => json(StatusCode::OK, &self.data.summary()),
            "/api/v1/hosts" => match self.data.hosts(query) {
                Ok(doc) => json(StatusCode::OK, &doc),
                Err(error) => refused(StatusCode::BAD_REQUEST, &error),
            },
            "/api/v1/events" => self.events(query),
            _ => {
                let mac = &path["/api/v1/hosts/".len()..];
                match self.data.host(mac) {
                    Some(doc) => json(StatusCode::OK, &doc),
                    None => refused(StatusCode::NOT_FOUND, "no journey for this MAC"),
                }
            }
        })
    }

    /// Builds the frame for `query` (checked once by [`LiveView::events`]).
    fn frame(data: &dyn LiveData, query: &str) -> Frame {
        let hosts = data
            .hosts(query)
            .unwrap_or_else(|error| serde_json::json!({ "error": error }));
        Frame {
            version: 1,
            now_ms: unix_ms(),
            summary: data.summary(),
            stats: data.stats(),
            hosts,
        }
    }

    fn events(&self, query: &str) -> Response<LiveBody> {
        let query = with_default_limit(query);
        if let Err(error) = self.data.hosts(&query) {
            return refused(StatusCode::BAD_REQUEST, &error);
        }
        let slot = StreamSlot::take(&self.streams);
        let first = match &slot {
            Some(_) => "retry: 2000\n\n".to_owned(),
            None => format!(
                "event: refused\ndata: {}\n\n",
                serde_json::json!({
                    "error": format!("{MAX_EVENT_STREAMS} live views are open; close one")
                })
            ),
        };
        let stream = EventStream {
            data: Arc::clone(&self.data),
            query,
            shutdown: Arc::clone(&self.shutdown),
            tick: None,
            first: Some(Bytes::from(first)),
            slot,
        };
        headed(StatusCode::OK, "text/event-stream", stream.boxed())
    }
}

/// The query with `limit=DEFAULT_TABLE_ROWS` added when it names none.
fn with_default_limit(query: &str) -> String {
    let has_limit = query.split('&').any(|kv| kv.starts_with("limit="));
    match (query.is_empty(), has_limit) {
        (_, true) => query.to_owned(),
        (true, false) => format!("limit={DEFAULT_TABLE_ROWS}"),
        (false, false) => format!("{query}&limit={DEFAULT_TABLE_ROWS}"),
    }
}

/// One of the [`MAX_EVENT_STREAMS`], given back when the stream is dropped.
struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    fn take(open: &Arc<AtomicUsize>) -> Option<StreamSlot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_EVENT_STREAMS).then_some(n + 1)
        })
        .ok()
        .map(|_| StreamSlot(Arc::clone(open)))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `/api/v1/events`: the first chunk, then a frame per tick until shutdown (or, without a
/// slot, nothing more).
struct EventStream {
    data: Arc<dyn LiveData>,
    query: String,
    shutdown: Arc<AtomicBool>,
    /// Made at the first poll (it needs the runtime's timer).
    tick: Option<tokio::time::Interval>,
    first: Option<Bytes>,
    slot: Option<StreamSlot>,
}

impl hyper::body::Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Infallible>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(BodyFrame::data(first))));
        }
        if self.shutdown.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        if self.slot.is_none() {
            return Poll::Ready(None);
        }
        let tick = self
            .tick
            .get_or_insert_with(|| tokio::time::interval(FRAME_INTERVAL));
        if tick.poll_tick(cx).is_pending() {
            return Poll::Pending;
        }
        let frame = LiveView::frame(self.data.as_ref(), &self.query);
        let text = match serde_json::to_string(&frame) {
            Ok(json) => format!("event: frame\ndata: {json}\n\n"),
            Err(e) => format!(
                "event: refused\ndata: {}\n\n",
                serde_json::json!({"error": e.to_string()})
            ),
        };
        Poll::Ready(Some(Ok(BodyFrame::data(Bytes::from(text)))))
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn full(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<LiveBody> {
    headed(status, content_type, Full::new(body).boxed())
}

/// A response with its content type, never cached, never sniffed.
fn headed(status: StatusCode, content_type: &'static str, body: LiveBody) -> Response<LiveBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        h.insert(name, header::HeaderValue::from_static(value));
    }
    response
}

fn asset(text: &'static str, content_type: &'static str) -> Response<LiveBody> {
    let mut response = full(
        StatusCode::OK,
        content_type,
        Bytes::from_static(text.as_bytes()),
    );
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CSP),
    );
    response
}

fn json<T: Serialize>(status: StatusCode, doc: &T) -> Response<LiveBody> {
    match serde_json::to_vec(doc) {
        Ok(body) => full(status, "application/json", Bytes::from(body)),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}

fn refused(status: StatusCode, error: &str) -> Response<LiveBody> {
    json(status, &serde_json::json!({ "ok": false, "error": error }))
}

fn plain(status: StatusCode, text: &str) -> Response<LiveBody> {
    full(
        status,
        "text/plain; charset=utf-8",
        Bytes::copy_from_slice(text.as_bytes()),
    )
}

#[cfg(test)]
mod tests;

impl crate::observe::Routes for LiveView {
    fn route(&self, method: &Method, path_and_query: &str) -> Option<Response<LiveBody>> {
        LiveView::route(self, method, path_and_query)
    }
}
