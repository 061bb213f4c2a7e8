//! An HTTP request head through the HTTP service's router (`pxe_server::http::router::route`),
//! over an `ImageStore` on a temporary directory holding a few files, symlinks that stay inside
//! the root and symlinks that leave it.
//!
//! Input: a request head as a client sends it. It is parsed with `httparse` (what hyper uses)
//! into a method, a request target and headers; a head hyper would refuse is not routed. In
//! header values, `{etag}` and `{date}` stand for the `ETag` and `Last-Modified` the same path
//! gets from a plain GET, so that `If-None-Match`, `If-Modified-Since` and `If-Range` can match.
//!
//! Checks (what must hold, not only "no panic"):
//! - every name the router hands to the store is relative, without NUL, backslash or an empty,
//!   `.` or `..` segment, and when the store serves it, it resolves (symlinks followed) to a
//!   regular file inside the root;
//! - an answer with the file (200, 206, 304) is for GET or HEAD, for a path that names a file
//!   inside the root, and carries exactly that file: the whole of it for 200 (Content-Length
//!   too, an empty body for HEAD), for 206 the bytes of its `Content-Range`, which stays inside
//!   the file and whose length is the body's and the Content-Length's; 416 names the file's
//!   length; 304 needs a validator header; nothing outside the root is ever in a body;
//! - no 5xx; any other method gets 405;
//! - `path::file_name` and `pxe_proto::uri::percent_decode` on the path: a decoded name has no
//!   `..`, `.` or empty segment; decoding only shrinks, is the identity without `%`, and undoes
//!   a full `%XX` encoding;
//! - `range::evaluate` on every `Range` line against files of other lengths: a partial answer
//!   is a non-empty range inside the file.
#![no_main]

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, UNIX_EPOCH};

use hyper::body::{Body as _, Bytes};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use libfuzzer_sys::fuzz_target;
use pxe_server::http::path as http_path;
use pxe_server::http::range::{self, RangeAnswer};
use pxe_server::http::router::{self, Body, State};
use pxe_server::http::{HttpMetrics, ImageSource, MAX_HEADERS};
use pxe_server::images::{Image, ImageStore, OpenError};

/// What lies outside the root; no body may ever hold it.
const SECRET: &[u8] = b"SECRET: this file is outside the root";

/// The served tree: (name, contents) of the regular files beneath the root.
const FILES: &[(&str, &[u8])] = &[
    ("file", b"0123456789"),
    ("empty", b""),
    ("boot/ipxe.efi", b"MZ fake EFI program for the fuzzer"),
    ("boot/grub/grub.cfg", b"set timeout=1\nmenuentry x {}\n"),
    ("sp ace%41.img", b"a name with a space and a percent sign"),
];

struct Fixture {
    /// The root as the store was given it, and with every symlink resolved.
    real_root: PathBuf,
    state: State,
}

/// The store, checking every name the router opens with it.
struct Watched {
    store: ImageStore,
    real_root: PathBuf,
}

impl ImageSource for Watched {
    fn open_image(&self, name: &[u8]) -> Result<Arc<Image>, OpenError> {
        check_name(name);
        let opened = self.store.open(name);
        if opened.is_ok() {
            let path = self.store.root().join(std::ffi::OsStr::from_bytes(name));
            let real = std::fs::canonicalize(&path)
                .unwrap_or_else(|e| panic!("served {path:?}, which does not resolve: {e}"));
            assert!(
                real.starts_with(&self.real_root),
                "served {path:?}, which resolves to {real:?}, outside the root"
            );
            assert!(real.is_file(), "served {real:?}, not a regular file");
        }
        opened
    }
}

/// A name as the router may hand it to the store.
fn check_name(name: &[u8]) {
    assert!(!name.is_empty(), "an empty name reached the store");
    assert!(!name.contains(&0), "NUL in {name:?}");
    assert!(!name.contains(&b'\\'), "backslash in {name:?}");
    for segment in name.split(|&b| b == b'/') {
        assert!(
            !matches!(segment, b"" | b"." | b".."),
            "segment {segment:?} in {:?}",
            String::from_utf8_lossy(name)
        );
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let base = pxe_server_fuzz::scratch_dir("http");
        let root = base.join("root");
        std::fs::create_dir_all(root.join("boot/grub")).unwrap();
        std::fs::write(base.join("secret"), SECRET).unwrap();
        // Old enough that Last-Modified is a strong validator (If-Range by date works).
        let mtime = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for (name, contents) in FILES {
            let path = root.join(name);
            std::fs::write(&path, contents).unwrap();
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(mtime).unwrap();
        }
        let link = |target: &Path, name: &str| {
            std::os::unix::fs::symlink(target, root.join(name)).unwrap();
        };
        link(Path::new("file"), "link"); // inside: served
        link(Path::new("../file"), "boot/up"); // inside, through ..: served
        link(Path::new("grub"), "boot/g"); // a directory inside
        link(Path::new("../secret"), "escape"); // leaves the root
        link(Path::new(".."), "parent"); // a directory outside
        link(&base.join("secret"), "absolute"); // absolute, outside
        link(&root.join("file"), "absolute-inside"); // absolute, inside (refused all the same)
        link(Path::new("missing"), "dangling");
        let real_root = std::fs::canonicalize(&root).unwrap();
        let store = ImageStore::new(root).unwrap();
        Fixture {
            real_root: real_root.clone(),
            state: State {
                images: Arc::new(Watched { store, real_root }),
                metrics: Arc::new(HttpMetrics::default()),
                install: None,
                // Journeys on, as a default config has them: recording must not panic on
                // any request either.
                journeys: Some(Arc::new(pxe_server::journey::Journeys::default())),
            },
        }
    })
}

/// The bytes of a response body (one frame, ready at once).
fn body_bytes(r: Response<Body>) -> Bytes {
    let mut body = r.into_body();
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(&mut body).poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        Poll::Ready(None) => Bytes::new(),
        Poll::Ready(Some(Err(e))) => match e {},
        Poll::Pending => panic!("a body that is not ready"),
    }
}

fn header_str(h: &header::HeaderMap, name: HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// `bytes a-b/len` (`a`, `b`, `len`) or `bytes */len` (`None`, `len`).
fn content_range(v: &str) -> (Option<(u64, u64)>, u64) {
    let rest = v.strip_prefix("bytes ").expect("Content-Range in bytes");
    let (range, len) = rest.split_once('/').expect("Content-Range has a length");
    let len = len.parse().expect("Content-Range length");
    if range == "*" {
        return (None, len);
    }
    let (a, b) = range.split_once('-').expect("Content-Range a-b");
    (Some((a.parse().unwrap(), b.parse().unwrap())), len)
}

/// The regular file inside the root that `path` names, resolved independently of the router:
/// decoded, joined to the root and canonicalized.
fn file_inside(f: &Fixture, name: &[u8]) -> Option<Vec<u8>> {
    let real = std::fs::canonicalize(f.real_root.join(std::ffi::OsStr::from_bytes(name))).ok()?;
    if !real.starts_with(&f.real_root) || !real.is_file() {
        return None;
    }
    Some(std::fs::read(real).unwrap())
}

fn check_percent_decode(raw: &[u8]) {
    let decoded = pxe_proto::uri::percent_decode(raw, false);
    if let Some(d) = &decoded {
        assert!(d.len() <= raw.len());
        if !raw.contains(&b'%') {
            assert_eq!(d, raw, "decoding without an escape changed the bytes");
        }
        // Every byte escaped: decodes back to the same bytes, in a path and in a query.
        let encoded: Vec<u8> = d
            .iter()
            .flat_map(|b| format!("%{b:02X}").into_bytes())
            .collect();
        assert_eq!(
            pxe_proto::uri::percent_decode(&encoded, false).as_ref(),
            Some(d)
        );
        assert_eq!(
            pxe_proto::uri::percent_decode(&encoded, true).as_ref(),
            Some(d)
        );
    } else {
        assert!(
            raw.contains(&b'%'),
            "a path without % refused as broken encoding"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else {
        return;
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let Ok(uri) = target.parse::<hyper::Uri>() else {
        return;
    };
    let path = uri.path().to_owned();

    // The path alone.
    check_percent_decode(path.as_bytes());
    let name = http_path::file_name(&path);
    if let Ok(n) = &name
        && !n.is_empty()
    {
        check_name(n);
    }

    // The validators a plain GET of the same path gets, for the placeholders.
    let plain = router::route(&f.state, &Request::get(uri.clone()).body(()).unwrap());
    let etag = header_str(plain.headers(), header::ETAG)
        .unwrap_or("")
        .to_owned();
    let date = header_str(plain.headers(), header::LAST_MODIFIED)
        .unwrap_or("")
        .to_owned();
    drop(body_bytes(plain));

    let mut builder = Request::builder().method(method.clone()).uri(uri);
    for h in req.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return;
        };
        let value = String::from_utf8_lossy(h.value)
            .replace("{etag}", &etag)
            .replace("{date}", &date);
        let value = if h.value.contains(&b'{') {
            value.into_bytes()
        } else {
            h.value.to_vec()
        };
        let Ok(value) = HeaderValue::from_bytes(&value) else {
            return;
        };
        builder = builder.header(name, value);
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let lines = |n: HeaderName| request.headers().get_all(n).iter().count();

    for value in request.headers().get_all(header::RANGE) {
        for len in [0, 1, 10, 4096, u64::MAX] {
            if let RangeAnswer::Partial { start, end } =
                range::evaluate(std::iter::once(value.as_bytes()), len)
            {
                assert!(start < end && end <= len, "{start}..{end} of {len}");
            }
        }
    }

    let response = router::route(&f.state, &request);
    let status = response.status();
    let headers = response.headers().clone();
    let body = body_bytes(response);
    assert!(!status.is_server_error(), "{status} for {method} {path}");
    assert!(
        !body.windows(SECRET.len()).any(|w| w == SECRET),
        "the file outside the root was served for {path:?}"
    );
    let get_or_head = method == Method::GET || method == Method::HEAD;
    if !get_or_head {
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        return;
    }
    let served = matches!(
        status,
        StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
    );
    if !served && status != StatusCode::RANGE_NOT_SATISFIABLE {
        return;
    }
    let name = name.unwrap_or_else(|e| panic!("{status} for a refused path {path:?}: {e:?}"));
    let contents = file_inside(f, &name)
        .unwrap_or_else(|| panic!("{status} for {path:?}, which names no file inside the root"));
    let len = contents.len() as u64;
    let content_length = header_str(&headers, header::CONTENT_LENGTH).map(|v| v.parse::<u64>());
    match status {
        StatusCode::OK => {
            assert_eq!(content_length, Some(Ok(len)), "Content-Length of {path:?}");
            if method == Method::HEAD {
                assert!(body.is_empty());
            } else {
                assert_eq!(&body[..], &contents[..], "200 body of {path:?}");
            }
        }
        StatusCode::PARTIAL_CONTENT => {
            assert_eq!(method, Method::GET, "206 for HEAD");
            assert_eq!(lines(header::RANGE), 1, "206 without exactly one Range");
            let cr = header_str(&headers, header::CONTENT_RANGE).expect("206 with Content-Range");
            let (range, total) = content_range(cr);
            let (a, b) = range.expect("206 with a range");
            assert_eq!(total, len, "{cr} for a file of {len} bytes");
            assert!(a <= b && b < len, "{cr} leaves the file");
            assert_eq!(body.len() as u64, b - a + 1, "206 body against {cr}");
            assert_eq!(
                content_length,
                Some(Ok(b - a + 1)),
                "Content-Length against {cr}"
            );
            assert_eq!(
                &body[..],
                &contents[a as usize..=b as usize],
                "206 body of {path:?}"
            );
        }
        StatusCode::NOT_MODIFIED => {
            assert!(body.is_empty(), "304 with a body");
            assert!(
                lines(header::IF_NONE_MATCH) + lines(header::IF_MODIFIED_SINCE) > 0,
                "304 without a validator in the request"
            );
        }
        _ => {
            assert_eq!(method, Method::GET, "416 for HEAD");
            assert!(lines(header::RANGE) > 0, "416 without Range");
            let cr = header_str(&headers, header::CONTENT_RANGE).expect("416 with Content-Range");
            assert_eq!(
                content_range(cr),
                (None, len),
                "{cr} for a file of {len} bytes"
            );
        }
    }
});
