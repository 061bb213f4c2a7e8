//! Requests to responses. Synchronous (it may snapshot a file), so the server runs it on the
//! blocking pool; it never reads a request body.
//!
//! Generated documents come first: the install routes (`/boot.ipxe`, `/install/...`,
//! `/done/...`, see [`crate::install`]); every other path is a file.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::conditional::{self, Validators};
use super::path::{self, PathRefusal};
use super::range::{self, RangeAnswer};
use super::{HttpMetrics, ImageSource};
use crate::images::{Image, OpenError};
use crate::journey::{ErrorKind, Now, Protocol, Transfer};
use crate::metrics;

/// Every response body: one frame, shared bytes (a file is a slice of its image, not a copy).
pub type Body = Full<Bytes>;

/// What the router works with.
pub struct State {
    pub images: Arc<dyn ImageSource>,
    pub metrics: Arc<HttpMetrics>,
    /// The install routes, when the server has them.
    pub install: Option<Arc<crate::install::InstallSlot>>,
    /// Where files served, install routes answered and errors sent are recorded.
    pub journeys: Option<Arc<crate::journey::Journeys>>,
}

/// The local address a request came to (set by the connection), for `server_url`.
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub std::net::SocketAddr);

/// The address a request came from (set by the connection): the install routes give a host's
/// secrets only to its own address.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// The `Allow` header of a 405.
const ALLOW: &str = "GET, HEAD";

/// Answers one request (its body, if any, is ignored) and counts the response.
pub fn route(state: &State, req: &Request<()>) -> Response<Body> {
    let m = &state.metrics;
    if let Some(resp) = install_route(state, req) {
        count_response(m, Route::of_install(req.uri().path()), resp.status());
        if let (Some(j), Some(PeerAddr(peer))) =
            (&state.journeys, req.extensions().get::<PeerAddr>())
        {
            let (path, query) = (req.uri().path(), req.uri().query());
            j.install_route(
                Now::current(),
                path,
                query,
                peer.ip(),
                resp.status().as_u16(),
            );
        }
        return resp;
    }
    let resp = if req.method() != Method::GET && req.method() != Method::HEAD {
        metrics::inc(&m.refused_method);
        let mut r = error(StatusCode::METHOD_NOT_ALLOWED);
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(ALLOW));
        r
    } else {
        // Generated routes go here, before the files, e.g.
        //   "/boot.ipxe" => boot_script(state, req),
        let resp = serve_file(state, req);
        return counted(state, req, Route::File, resp);
    };
    counted(state, req, Route::Other, resp)
}

/// Counts the response under `route` and records an error status in the peer's journey.
fn counted(state: &State, req: &Request<()>, route: Route, resp: Response<Body>) -> Response<Body> {
    count_response(&state.metrics, route, resp.status());
    if resp.status().as_u16() >= 400
        && let (Some(j), Some(PeerAddr(peer))) =
            (&state.journeys, req.extensions().get::<PeerAddr>())
    {
        let (kind, code) = (ErrorKind::HttpStatus, resp.status().as_u16());
        j.error_to(Now::current(), peer.ip(), kind, code, req.uri().path());
    }
    resp
}

/// What a request was for, as `/metrics` labels it (`route`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A boot file (any GET/HEAD that no install route took).
    File = 0,
    /// `/boot.ipxe`, a host's iPXE script.
    IpxeScript = 1,
    /// `/install/HOST/TOKEN/NAME`, a rendered template.
    Install = 2,
    /// `/done/HOST/TOKEN`, the installer's callback.
    Done = 3,
    /// Anything else: other methods, unparsable or oversized heads.
    Other = 4,
}

impl Route {
    pub const ALL: [Route; 5] = [
        Route::File,
        Route::IpxeScript,
        Route::Install,
        Route::Done,
        Route::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Route::File => "file",
            Route::IpxeScript => "ipxe_script",
            Route::Install => "install",
            Route::Done => "done",
            Route::Other => "other",
        }
    }

    /// The route of a request the install service answered, by its path.
    fn of_install(path: &str) -> Route {
        if path == "/boot.ipxe" {
            Route::IpxeScript
        } else if path.starts_with("/install/") {
            Route::Install
        } else if path.starts_with("/done/") {
            Route::Done
        } else {
            Route::Other
        }
    }
}

/// Status classes counted per route (`status` label); index = class - 2.
pub const STATUS_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// Responses by [`Route`] and status class ([`STATUS_CLASSES`]).
#[derive(Debug, Default)]
pub struct RouteCounts([[metrics::Counter; STATUS_CLASSES.len()]; Route::ALL.len()]);

impl RouteCounts {
    /// The count for `route` and the class at `class` in [`STATUS_CLASSES`].
    pub fn get(&self, route: Route, class: usize) -> u64 {
        self.0[route as usize][class].get()
    }
}

/// An install route's answer, or `None` for a file path.
fn install_route(state: &State, req: &Request<()>) -> Option<Response<Body>> {
    let service = state.install.as_ref()?.get()?;
    let url = match req.extensions().get::<LocalAddr>() {
        Some(LocalAddr(a)) => format!("http://{a}"),
        None => "http://localhost".to_owned(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let reply = service.handle(&crate::install::Request {
        method: req.method().as_str(),
        path: req.uri().path(),
        query: req.uri().query(),
        server_url: &url,
        peer: req.extensions().get::<PeerAddr>().map(|p| p.0.ip()),
        now_unix: now,
    })?;
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = Response::new(Full::new(Bytes::from(reply.body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    // Generated per request: never cached by a proxy between us and the machines.
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(allow) = reply.allow {
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    Some(r)
}

/// Counts a response by its status class, and by route and class.
pub fn count_response(m: &HttpMetrics, route: Route, status: StatusCode) {
    if let class @ 2..=5 = status.as_u16() / 100 {
        metrics::inc(&m.by_route.0[route as usize][usize::from(class - 2)]);
    }
    let counter = match status.as_u16() {
        206 => &m.responses_206,
        304 => &m.responses_304,
        200..=299 => &m.responses_2xx,
        400..=499 => &m.responses_4xx,
        500..=599 => &m.responses_5xx,
        _ => return,
    };
    metrics::inc(counter);
}

/// A short text response for an error status.
pub fn error(status: StatusCode) -> Response<Body> {
    let text = match status {
        StatusCode::BAD_REQUEST => "Bad Request\n",
        StatusCode::FORBIDDEN => "Forbidden\n",
        StatusCode::NOT_FOUND => "Not Found\n",
        StatusCode::METHOD_NOT_ALLOWED => "Method Not Allowed\n",
        StatusCode::RANGE_NOT_SATISFIABLE => "Range Not Satisfiable\n",
        _ => "Internal Server Error\n",
    };
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// An image as the owner of a `Bytes`: the mapping lives as long as any slice of it. With a
/// [`Transfer`], the transfer ends when the connection lets go of the body: all of it
/// written, or the connection gone.
struct ImageBytes(Arc<Image>, Option<Transfer>);

impl AsRef<[u8]> for ImageBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.octets()
    }
}

impl Drop for ImageBytes {
    fn drop(&mut self) {
        if let Some(t) = &mut self.1 {
            t.done(std::time::Instant::now());
        }
    }
}

fn serve_file(state: &State, req: &Request<()>) -> Response<Body> {
    let m = &state.metrics;
    let name = match path::file_name(req.uri().path()) {
        Ok(name) => name,
        Err(PathRefusal::BadPath(why)) => {
            metrics::inc(&m.refused_bad_path);
            tracing::debug!(path = req.uri().path(), why, "HTTP request refused");
            return error(StatusCode::BAD_REQUEST);
        }
        Err(PathRefusal::Traversal) => {
            metrics::inc(&m.refused_traversal);
            tracing::debug!(path = req.uri().path(), "HTTP path traversal refused");
            return error(StatusCode::FORBIDDEN);
        }
    };
    if name.is_empty() {
        metrics::inc(&m.refused_not_found);
        return error(StatusCode::NOT_FOUND);
    }
    let image = match state.images.open_image(&name) {
        Ok(image) => image,
        Err(OpenError::NotFound) => {
            metrics::inc(&m.refused_not_found);
            return error(StatusCode::NOT_FOUND);
        }
        Err(e @ (OpenError::AccessViolation(_) | OpenError::LeavesRoot)) => {
            // A path that the kernel resolved out of the root (through a symlink) is counted
            // as a traversal, not as a plain access refusal.
            let counter = if matches!(e, OpenError::LeavesRoot) {
                &m.refused_traversal
            } else {
                &m.refused_access
            };
            metrics::inc(counter);
            tracing::debug!(
                path = req.uri().path(),
                why = e.refusal(),
                "HTTP request refused"
            );
            return error(StatusCode::FORBIDDEN);
        }
        Err(OpenError::Io(e)) => {
            tracing::warn!(
                client = ?req.extensions().get::<PeerAddr>().map(|p| p.0.ip()),
                path = req.uri().path(),
                setting = "http.root (else tftp.root)",
                "HTTP: cannot read the file: {e}"
            );
            return error(StatusCode::INTERNAL_SERVER_ERROR);
        }
    };
    let len = image.len() as u64;
    let head = req.method() == Method::HEAD;
    let validators = image
        .version()
        .map(|v| Validators::of(&v, std::time::SystemTime::now()));
    let lines = |name: header::HeaderName| {
        req.headers()
            .get_all(name)
            .into_iter()
            .map(HeaderValue::as_bytes)
    };
    if conditional::not_modified(
        validators.as_ref(),
        lines(header::IF_NONE_MATCH),
        lines(header::IF_MODIFIED_SINCE),
    ) {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        add_validators(r.headers_mut(), validators.as_ref());
        return r;
    }
    // Range applies to GET only (RFC 9110 §14.2), and under an If-Range only while the file
    // is still the version the client names (else the whole file, 200).
    let answer =
        if head || !conditional::if_range_holds(validators.as_ref(), lines(header::IF_RANGE)) {
            RangeAnswer::Full
        } else {
            range::evaluate(lines(header::RANGE), len)
        };
    let (status, start, end) = match answer {
        RangeAnswer::Full => (StatusCode::OK, 0, len),
        RangeAnswer::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        RangeAnswer::Unsatisfiable => {
            metrics::inc(&m.ranges_unsatisfiable);
            let mut r = error(StatusCode::RANGE_NOT_SATISFIABLE);
            if let Ok(v) = HeaderValue::try_from(format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let body = if head {
        Bytes::new()
    } else {
        let transfer = match (&state.journeys, req.extensions().get::<PeerAddr>()) {
            (Some(j), Some(PeerAddr(peer))) => {
                let name = std::str::from_utf8(&name).unwrap_or("");
                Some(Transfer::start(
                    j,
                    Now::current(),
                    Protocol::Http,
                    peer.ip(),
                    name,
                ))
            }
            _ => None,
        };
        // Both bounds are within the image (`start < end <= len`): a zero-copy slice.
        Bytes::from_owner(ImageBytes(image, transfer)).slice(start as usize..end as usize)
    };
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&name)),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    add_validators(h, validators.as_ref());
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::try_from(format!("bytes {start}-{}/{len}", end - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    r
}

/// `ETag` and `Last-Modified`, when the image's version is known.
fn add_validators(h: &mut header::HeaderMap, v: Option<&Validators>) {
    let Some(v) = v else { return };
    if let Ok(tag) = HeaderValue::try_from(v.etag()) {
        h.insert(header::ETAG, tag);
    }
    if let Some(date) = v
        .last_modified()
        .and_then(|d| HeaderValue::try_from(d).ok())
    {
        h.insert(header::LAST_MODIFIED, date);
    }
}

/// `application/efi` for EFI programs (what UEFI HTTP boot looks for first, before it falls
/// back to the URL's extension), else plain bytes.
fn content_type(name: &[u8]) -> &'static str {
    let efi = name.len() >= 4 && name[name.len() - 4..].eq_ignore_ascii_case(b".efi");
    if efi {
        "application/efi"
    } else {
        "application/octet-stream"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::ImageStore;
    use http_body_util::BodyExt;

    fn state() -> (tempfile::TempDir, State) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("file"), b"0123456789").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink("../secret", root.join("escape")).unwrap();
        std::fs::create_dir(root.join("dir")).unwrap();
        let state = State {
            images: Arc::new(ImageStore::new(root).unwrap()),
            metrics: Arc::new(HttpMetrics::default()),
            install: None,
            journeys: None,
        };
        (dir, state)
    }

    fn get(state: &State, method: Method, uri: &str, headers: &[(&str, &str)]) -> Response<Body> {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        route(state, &b.body(()).unwrap())
    }

    fn body(r: Response<Body>) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(r.into_body().collect())
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    fn hdr(r: &Response<Body>, name: header::HeaderName) -> &str {
        r.headers().get(name).unwrap().to_str().unwrap()
    }

    /// Files served, error statuses and the install routes land in the journey of the host
    /// at the peer's address; a file's transfer ends when its body is let go.
    #[test]
    fn journeys_see_files_errors_and_install_routes() {
        use crate::journey::{DhcpAnswer, FileClass, Journeys, Phase, Protocol};
        let (d, mut s) = state();
        std::fs::write(d.path().join("root/vmlinuz"), b"kernel").unwrap();
        let j = Arc::new(Journeys::default());
        s.journeys = Some(Arc::clone(&j));
        let mac = pxe_proto::MacAddr([2, 0, 0, 0, 0, 1]);
        let peer: std::net::SocketAddr = "10.0.0.5:40000".parse().unwrap();
        let now = Now::current();
        j.with(|t| t.dhcp_answer(now, mac, DhcpAnswer::Ack, Some([10, 0, 0, 5].into())));
        let at = |uri: &str| {
            let mut r = Request::builder().uri(uri).body(()).unwrap();
            r.extensions_mut().insert(PeerAddr(peer));
            route(&s, &r)
        };
        let r = at("/vmlinuz");
        assert_eq!(r.status(), StatusCode::OK);
        let phase = |j: &Journeys| j.with(|t| t.get(&mac).unwrap().phase).flatten();
        assert_eq!(phase(&j), Some(Phase::Kernel));
        let kernels = || {
            j.timings()
                .transfer(Protocol::Http, FileClass::Kernel)
                .snapshot()
        };
        assert_eq!(kernels().count, 0, "not done while the body is held");
        assert_eq!(body(r), b"kernel");
        assert_eq!(kernels().count, 1);
        assert_eq!(at("/initrd.img").status(), StatusCode::NOT_FOUND);
        let e = j
            .with(|t| t.get(&mac).unwrap().last_error)
            .flatten()
            .unwrap();
        assert_eq!((e.code, e.detail()), (404, "/initrd.img"));
        let reached = |p: Phase| j.with(|t| t.get(&mac).unwrap().reached(p)).unwrap();
        let q = Some("mac=02-00-00-00-00-01");
        j.install_route(Now::current(), "/boot.ipxe", q, peer.ip(), 200);
        assert!(reached(Phase::Script));
        // An install route that failed (a bad token) is an error, not a phase.
        j.install_route(Now::current(), "/install/k/t/ks.cfg", None, peer.ip(), 404);
        assert!(!reached(Phase::Template));
        j.install_route(Now::current(), "/install/k/t/ks.cfg", None, peer.ip(), 200);
        assert!(reached(Phase::Template));
        assert_eq!(phase(&j), Some(Phase::Template));
    }

    #[test]
    fn get_head_and_ranges() {
        let (_d, s) = state();
        let r = get(&s, Method::GET, "/file", &[]);
        assert_eq!(r.status(), 200);
        assert_eq!(hdr(&r, header::CONTENT_LENGTH), "10");
        assert_eq!(hdr(&r, header::ACCEPT_RANGES), "bytes");
        assert_eq!(body(r), b"0123456789");

        let r = get(&s, Method::HEAD, "/file", &[("range", "bytes=0-1")]);
        assert_eq!(r.status(), 200);
        assert_eq!(hdr(&r, header::CONTENT_LENGTH), "10");
        assert!(body(r).is_empty());

        let r = get(&s, Method::GET, "/file", &[("range", "bytes=2-4")]);
        assert_eq!(r.status(), 206);
        assert_eq!(hdr(&r, header::CONTENT_RANGE), "bytes 2-4/10");
        assert_eq!(hdr(&r, header::CONTENT_LENGTH), "3");
        assert_eq!(body(r), b"234");

        let r = get(&s, Method::GET, "/file", &[("range", "bytes=-3")]);
        assert_eq!(hdr(&r, header::CONTENT_RANGE), "bytes 7-9/10");
        assert_eq!(body(r), b"789");

        let r = get(&s, Method::GET, "/file", &[("range", "bytes=10-")]);
        assert_eq!(r.status(), 416);
        assert_eq!(hdr(&r, header::CONTENT_RANGE), "bytes */10");

        // If-Range without validators, and multi-range: the whole file.
        for h in [
            [("range", "bytes=2-4"), ("if-range", "\"x\"")],
            [("range", "bytes=0-1,3-4"), ("x-other", "1")],
        ] {
            let r = get(&s, Method::GET, "/file", &h);
            assert_eq!(r.status(), 200);
            assert_eq!(body(r), b"0123456789");
        }
        let snap = s.metrics.snapshot();
        assert_eq!(
            (
                snap.responses_2xx,
                snap.responses_206,
                snap.responses_4xx,
                snap.ranges_unsatisfiable
            ),
            (4, 2, 1, 1)
        );
    }

    #[test]
    fn validators_and_conditional_requests() {
        let (d, s) = state();
        let r = get(&s, Method::GET, "/file", &[]);
        assert_eq!(r.status(), 200);
        let etag = hdr(&r, header::ETAG).to_owned();
        let modified = hdr(&r, header::LAST_MODIFIED).to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        assert!(modified.ends_with(" GMT"), "{modified}");
        // The same validators on HEAD and on a 206.
        for (method, range) in [(Method::HEAD, None), (Method::GET, Some("bytes=1-2"))] {
            let h: Vec<_> = range.map(|v| ("range", v)).into_iter().collect();
            let r = get(&s, method, "/file", &h);
            assert_eq!(hdr(&r, header::ETAG), etag);
            assert_eq!(hdr(&r, header::LAST_MODIFIED), modified);
        }

        // A matching If-None-Match or a not-older If-Modified-Since: 304, no body.
        let listed = format!("\"zz\", W/{etag}");
        for (method, name, value) in [
            (Method::GET, "if-none-match", etag.as_str()),
            (Method::HEAD, "if-none-match", listed.as_str()),
            (Method::GET, "if-modified-since", modified.as_str()),
        ] {
            let r = get(&s, method, "/file", &[(name, value)]);
            assert_eq!(r.status(), 304, "{name}: {value}");
            assert_eq!(hdr(&r, header::ETAG), etag);
            assert!(r.headers().get(header::CONTENT_LENGTH).is_none());
            assert!(body(r).is_empty());
        }
        // Another tag: the file, even with a matching If-Modified-Since (If-None-Match wins).
        let r = get(
            &s,
            Method::GET,
            "/file",
            &[
                ("if-none-match", "\"old\""),
                ("if-modified-since", &modified),
            ],
        );
        assert_eq!(r.status(), 200);
        assert_eq!(body(r), b"0123456789");
        let r = get(
            &s,
            Method::GET,
            "/file",
            &[("if-modified-since", "Thu, 01 Jan 1970 00:00:01 GMT")],
        );
        assert_eq!(r.status(), 200);

        // If-Range with the current tag: the range; with another tag: the whole file.
        let r = get(
            &s,
            Method::GET,
            "/file",
            &[("range", "bytes=2-4"), ("if-range", &etag)],
        );
        assert_eq!(r.status(), 206);
        assert_eq!(body(r), b"234");
        let r = get(
            &s,
            Method::GET,
            "/file",
            &[("range", "bytes=2-4"), ("if-range", "\"old\"")],
        );
        assert_eq!(r.status(), 200);
        assert_eq!(body(r), b"0123456789");

        // Replaced by rename: a new tag, and the old one no longer gives 304.
        let root = d.path().join("root");
        std::fs::write(root.join("file.new"), b"new content").unwrap();
        std::fs::rename(root.join("file.new"), root.join("file")).unwrap();
        let r = get(&s, Method::GET, "/file", &[("if-none-match", &etag)]);
        assert_eq!(r.status(), 200);
        assert_ne!(hdr(&r, header::ETAG), etag);
        assert_eq!(body(r), b"new content");

        let m = s.metrics.snapshot();
        assert_eq!((m.responses_304, m.responses_206), (3, 2), "{m}");
    }

    #[test]
    fn efi_programs_are_application_efi() {
        let (d, s) = state();
        std::fs::write(d.path().join("root/ipxe.EFI"), b"MZ").unwrap();
        let r = get(&s, Method::GET, "/ipxe.EFI", &[]);
        assert_eq!(hdr(&r, header::CONTENT_TYPE), "application/efi");
        let r = get(&s, Method::GET, "/file", &[]);
        assert_eq!(hdr(&r, header::CONTENT_TYPE), "application/octet-stream");
    }

    #[test]
    fn refusals_are_classified_and_counted() {
        let (_d, s) = state();
        let cases: &[(&str, u16)] = &[
            ("/../secret", 403),
            ("/%2e%2e/secret", 403),
            ("/escape", 403),
            ("/a%00b", 400),
            ("/a\\b", 400),
            ("/%zz", 400),
            ("/missing", 404),
            ("/", 404),
            ("/dir", 403),
        ];
        for (uri, status) in cases {
            let r = get(&s, Method::GET, uri, &[]);
            assert_eq!(r.status(), *status, "{uri}");
        }
        let r = get(&s, Method::POST, "/file", &[]);
        assert_eq!(r.status(), 405);
        assert_eq!(hdr(&r, header::ALLOW), "GET, HEAD");
        let m = s.metrics.snapshot();
        assert_eq!(m.refused_traversal, 3, "{m}");
        assert_eq!(m.refused_bad_path, 3, "{m}");
        assert_eq!(m.refused_not_found, 2, "{m}");
        assert_eq!(m.refused_access, 1, "{m}");
        assert_eq!(m.refused_method, 1, "{m}");
        assert_eq!(m.responses_4xx, 10, "{m}");
    }

    #[test]
    fn file_bodies_share_the_image() {
        let (_d, s) = state();
        let image = s.images.open_image(b"file").unwrap();
        let r = get(&s, Method::GET, "/file", &[("range", "bytes=1-")]);
        let data = r.into_body();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt.block_on(data.collect()).unwrap().to_bytes();
        // The body points into the image's own bytes: no copy was made.
        assert_eq!(bytes.as_ptr(), image.octets()[1..].as_ptr());
    }
}
