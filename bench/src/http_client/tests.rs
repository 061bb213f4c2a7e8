use super::parser::MAX_HEAD;
use super::*;

/// Everything a parser reports for `parts` fed one after another: the final status, the
/// decoded body, whether it completed (and the error, if any).
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    status: Option<u16>,
    body: Vec<u8>,
    done: bool,
    err: Option<HttpFailure>,
    closes: bool,
}

fn parse_parts(parts: &[&[u8]], eof: bool) -> Parsed {
    let mut p = ResponseParser::new();
    let mut out = Parsed {
        status: None,
        body: vec![],
        done: false,
        err: None,
        closes: false,
    };
    let mut steps = 0;
    'feed: for part in parts {
        let mut data = *part;
        loop {
            steps += 1;
            assert!(steps < 100_000, "no progress");
            match p.advance(data) {
                Err(e) => {
                    out.err = Some(e);
                    break 'feed;
                }
                Ok((n, ev)) => {
                    data = &data[n..];
                    match ev {
                        Some(Event::Head(s)) => out.status = Some(s),
                        Some(Event::Body(b)) => out.body.extend_from_slice(b),
                        Some(Event::Done) => {
                            out.done = true;
                            break 'feed;
                        }
                        None if data.is_empty() => break,
                        None => {}
                    }
                }
            }
        }
    }
    if !out.done && out.err.is_none() && eof {
        match p.eof() {
            Ok(done) => out.done = done,
            Err(e) => out.err = Some(e),
        }
    }
    out.closes = p.closes();
    out
}

/// Parses `wire` in one piece, split in two at every byte boundary, and byte by byte; all
/// must give the same result, which is returned.
fn parse_every_split(wire: &[u8], eof: bool) -> Parsed {
    let whole = parse_parts(&[wire], eof);
    for k in 0..=wire.len() {
        let (a, b) = wire.split_at(k);
        assert_eq!(parse_parts(&[a, b], eof), whole, "split at {k}");
    }
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(parse_parts(&bytes, eof), whole, "byte by byte");
    whole
}

#[test]
fn content_length_response_at_every_split() {
    let wire = b"HTTP/1.1 200 OK\r\nServer: x\r\ncOnTeNt-LeNgTh:  11 \r\n\
                 Content-Type: application/octet-stream\r\n\r\nhello world";
    let p = parse_every_split(wire, false);
    assert_eq!(p.status, Some(200));
    assert_eq!(p.body, b"hello world");
    assert!(p.done && p.err.is_none() && !p.closes);
}

#[test]
fn chunked_body_decoded_at_every_split() {
    let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n\
                 5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
    let p = parse_every_split(wire, false);
    assert_eq!(p.body, b"hello 0123456789");
    assert!(p.done && p.err.is_none(), "{p:?}");
    // Transfer-Encoding wins over a Content-Length.
    let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
                 4\r\nabcd\r\n0\r\n\r\n";
    assert_eq!(parse_every_split(wire, false).body, b"abcd");
}

#[test]
fn interim_responses_are_skipped_and_lf_only_lines_accepted() {
    let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n\
                 HTTP/1.1 200 OK\nContent-Length: 2\n\nok";
    let p = parse_every_split(wire, false);
    assert_eq!(
        (p.status, p.body.as_slice(), p.done),
        (Some(200), &b"ok"[..], true)
    );
    let p = parse_parts(&[b"HTTP/1.1 101 Switching Protocols\r\n\r\n"], false);
    assert_eq!(
        p.err,
        Some(HttpFailure::BadResponse("101 switching protocols"))
    );
}

#[test]
fn connection_close_and_body_until_close() {
    let wire = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\nx";
    let p = parse_every_split(wire, false);
    assert!(p.done && p.closes);
    // No length: the body runs to the close.
    let wire = b"HTTP/1.1 200 OK\r\n\r\nuntil the end";
    let p = parse_every_split(wire, true);
    assert_eq!(p.body, b"until the end");
    assert!(p.done && p.err.is_none());
    let open = parse_parts(&[wire], false);
    assert!(!open.done && open.closes, "not done before the close");
    // HTTP/1.0 closes unless it says keep-alive.
    let p = parse_parts(&[b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"], false);
    assert!(p.done && p.closes);
    let p = parse_parts(
        &[b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"],
        false,
    );
    assert!(p.done && !p.closes);
}

#[test]
fn empty_bodies_complete_at_the_head() {
    for wire in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"[..],
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
    ] {
        let p = parse_every_split(wire, false);
        assert!(p.done && p.body.is_empty(), "{p:?}");
    }
}

#[test]
fn bad_status_lines_and_headers() {
    for wire in [
        &b"HTTP/2 200 OK\r\n\r\n"[..],
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 099 x\r\n\r\n",
        b"HTTP/1.1 abc\r\n\r\n",
        b"HTTP/1.1200 OK\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n",
        b"\r\n",
    ] {
        let p = parse_every_split(wire, true);
        assert_eq!(
            p.err,
            Some(HttpFailure::BadResponse("bad status line")),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
    let cases: [(&[u8], HttpFailure); 7] = [
        (
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            HttpFailure::BadResponse("bad header"),
        ),
        (
            b"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n",
            HttpFailure::BadResponse("bad header"),
        ),
        (
            b"HTTP/1.1 200 OK\r\nBad Name: b\r\n\r\n",
            HttpFailure::BadResponse("bad header"),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            HttpFailure::BadResponse("conflicting content-length"),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            HttpFailure::BadResponse("bad content-length"),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            HttpFailure::Unsupported,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            HttpFailure::BadResponse("bad chunk size"),
        ),
    ];
    for (wire, want) in cases {
        assert_eq!(parse_every_split(wire, true).err, Some(want));
    }
    // Equal duplicate lengths are fine.
    let p = parse_parts(
        &[b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\nx"],
        false,
    );
    assert!(p.done && p.err.is_none());
    // Chunk data must end in CRLF.
    let p = parse_parts(
        &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n"],
        false,
    );
    assert_eq!(
        p.err,
        Some(HttpFailure::BadResponse("no CRLF after chunk data"))
    );
}

#[test]
fn short_body_and_early_close() {
    let p = parse_every_split(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true);
    assert_eq!(
        (p.body.as_slice(), p.err),
        (&b"abc"[..], Some(HttpFailure::ShortBody))
    );
    let p = parse_every_split(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        true,
    );
    assert_eq!(p.err, Some(HttpFailure::ShortBody));
    let p = parse_every_split(b"HTTP/1.1 200 OK\r\nContent-Le", true);
    assert_eq!(p.err, Some(HttpFailure::Closed));
    assert_eq!(parse_parts(&[], true).err, Some(HttpFailure::Closed));
}

#[test]
fn oversized_head_is_refused_within_the_bound() {
    let mut p = ResponseParser::new();
    let mut fed = 0usize;
    let line =
        b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut r = p.advance(b"HTTP/1.1 200 OK\r\n").map(|_| ());
    while r.is_ok() {
        let mut data = &line[..];
        while !data.is_empty() {
            match p.advance(data) {
                Ok((n, _)) => {
                    fed += n;
                    data = &data[n..];
                }
                Err(e) => {
                    r = Err(e);
                    break;
                }
            }
        }
        assert!(fed <= MAX_HEAD + line.len(), "unbounded head");
    }
    assert_eq!(r, Err(HttpFailure::BadResponse("head too large")));
    assert!(p.line.capacity() <= MAX_HEAD * 2);
    // One endless line, too.
    let mut p = ResponseParser::new();
    let junk = [b'a'; 1000];
    let mut err = None;
    for _ in 0..100 {
        if let Err(e) = p.advance(&junk) {
            err = Some(e);
            break;
        }
    }
    assert_eq!(err, Some(HttpFailure::BadResponse("head too large")));
}

#[test]
fn base_url_parsing_and_targets() {
    let b = HttpBase::parse("http://10.1.2.3:8080/boot/x").unwrap();
    assert_eq!(b.server, "10.1.2.3:8080".parse().unwrap());
    assert_eq!(b.prefix, "/boot/x/");
    assert_eq!(b.host(), "10.1.2.3:8080");
    assert_eq!(b.target("vmlinuz"), "/boot/x/vmlinuz");
    assert_eq!(b.target("/a b%.img"), "/boot/x/a%20b%25.img");
    let b = HttpBase::parse("http://10.1.2.3").unwrap();
    assert_eq!((b.server.port(), b.prefix.as_str()), (80, "/"));
    assert_eq!(b.host(), "10.1.2.3");
    assert_eq!(b.to_string(), "http://10.1.2.3:80/");
    for bad in [
        "https://10.1.2.3/",
        "http://server/",
        "http://10.1.2.3:0/",
        "http://10.1.2.3:x/",
        "http://10.1.2.3/a?b",
        "http://10.1.2.3/a b",
    ] {
        assert!(HttpBase::parse(bad).is_err(), "{bad}");
    }
}

fn conn(t0: Instant) -> HttpConn {
    let base = HttpBase::parse("http://10.9.0.1:8080/").unwrap();
    HttpConn::new(Arc::new(base), Duration::from_secs(5), t0)
}

fn response(body: &[u8]) -> Vec<u8> {
    let mut v = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    v.extend_from_slice(body);
    v
}

fn file(n: usize) -> Arc<[u8]> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn two_gets_on_one_keep_alive_connection_verified() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut c = conn(t0);
    let kernel = file(100_000);
    c.get(t0, "vmlinuz", Some(kernel.clone()));
    assert!(c.output().is_empty(), "nothing to write before the connect");
    assert_eq!(c.poll_connect(), Some("10.9.0.1:8080".parse().unwrap()));
    assert_eq!(c.poll_connect(), None);
    assert!(c.wants_socket() && c.is_connecting());
    c.handle_connected(t0 + ms(1));
    let req = String::from_utf8(c.output().to_vec()).unwrap();
    assert!(
        req.starts_with("GET /vmlinuz HTTP/1.1\r\nHost: 10.9.0.1:8080\r\n"),
        "{req}"
    );
    assert!(req.ends_with("\r\n\r\n"));
    c.wrote(t0 + ms(1), 10);
    assert_eq!(c.output(), &req.as_bytes()[10..]);
    c.wrote(t0 + ms(1), req.len() - 10);
    assert!(c.output().is_empty());
    let wire = response(&kernel);
    for (k, chunk) in wire.chunks(4096).enumerate() {
        assert!(c.take_outcome().is_none());
        c.handle_data(t0 + ms(2 + k as u64), chunk);
    }
    let (r, at, n) = c.take_outcome().unwrap();
    assert_eq!(r, Ok(()));
    assert_eq!(n, 100_000);
    assert_eq!(at, Some(t0 + ms(2 + wire.len().div_ceil(4096) as u64 - 1)));
    assert!(c.deadline().is_none(), "idle between requests: no timer");
    // The initrd on the same connection: no new connect.
    let initrd = file(3000);
    c.get(t0 + ms(100), "initrd.img", Some(initrd.clone()));
    assert_eq!(c.poll_connect(), None);
    assert!(c.output().starts_with(b"GET /initrd.img HTTP/1.1\r\n"));
    let len = c.output().len();
    c.wrote(t0 + ms(100), len);
    c.handle_data(t0 + ms(101), &response(&initrd));
    assert_eq!(c.take_outcome().map(|o| o.0), Some(Ok(())));
    assert_eq!(c.connects, 1);
}

#[test]
fn connection_close_means_a_new_connection_for_the_next_get() {
    let t0 = Instant::now();
    let mut c = conn(t0);
    c.get(t0, "a", None);
    c.poll_connect().unwrap();
    c.handle_connected(t0);
    let n = c.output().len();
    c.wrote(t0, n);
    c.handle_data(
        t0,
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    );
    assert_eq!(c.take_outcome().map(|o| (o.0, o.2)), Some((Ok(()), 2)));
    assert!(!c.wants_socket(), "the driver closes the socket");
    c.get(t0, "b", None);
    assert!(c.poll_connect().is_some());
    assert_eq!(c.connects, 2);
    // A body delimited by the close completes at the EOF.
    c.handle_connected(t0);
    c.handle_data(t0, b"HTTP/1.1 200 OK\r\n\r\nabc");
    assert!(c.take_outcome().is_none());
    c.handle_eof(t0);
    assert_eq!(c.take_outcome().map(|o| (o.0, o.2)), Some((Ok(()), 3)));
}

fn fetch(wire: &[u8], expected: Option<Arc<[u8]>>, eof: bool) -> Result<(), HttpFailure> {
    let t0 = Instant::now();
    let mut c = conn(t0);
    c.get(t0, "f", expected);
    c.poll_connect().unwrap();
    c.handle_connected(t0);
    c.handle_data(t0, wire);
    if eof {
        c.handle_eof(t0);
    }
    let (r, _, _) = c.take_outcome().expect("an outcome");
    assert!(!c.wants_socket() || r.is_ok());
    r
}

#[test]
fn failures_status_short_body_mismatch_length() {
    let f = file(5000);
    assert_eq!(
        fetch(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
            None,
            false
        ),
        Err(HttpFailure::Status(404))
    );
    // The announced length is longer than what comes before the close.
    let mut short = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        f.len() + 10
    )
    .into_bytes();
    short.extend_from_slice(&f);
    assert_eq!(
        fetch(&short, Some(f.clone()), true),
        Err(HttpFailure::ShortBody)
    );
    // A flipped byte, found at its offset.
    let mut bad = f.to_vec();
    bad[4321] ^= 1;
    assert_eq!(
        fetch(&response(&bad), Some(f.clone()), false),
        Err(HttpFailure::Mismatch(4321))
    );
    // More than the file: a mismatch where the file ends.
    let mut long = f.to_vec();
    long.push(0);
    assert_eq!(
        fetch(&response(&long), Some(f.clone()), false),
        Err(HttpFailure::Mismatch(5000))
    );
    // Complete but shorter than the file.
    assert_eq!(
        fetch(&response(&f[..4000]), Some(f.clone()), false),
        Err(HttpFailure::Length {
            got: 4000,
            want: 5000
        })
    );
    // Trailing bytes after a complete response (no request asked for them).
    let mut extra = response(&f);
    extra.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    assert_eq!(
        fetch(&extra, Some(f.clone()), false),
        Err(HttpFailure::BadResponse("data after the response"))
    );
    assert_eq!(fetch(b"", None, true), Err(HttpFailure::Closed));
}

#[test]
fn idle_and_connect_timeouts_fail_the_request() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut c = conn(t0);
    c.get(t0, "f", None);
    c.poll_connect().unwrap();
    assert_eq!(c.deadline(), Some(t0 + s(5)));
    c.handle_timeout(t0 + s(5));
    assert_eq!(
        c.take_outcome().map(|o| o.0),
        Some(Err(HttpFailure::ConnectTimeout))
    );
    assert!(!c.wants_socket());

    let mut c = conn(t0);
    c.get(t0, "f", None);
    c.poll_connect().unwrap();
    c.handle_connected(t0 + s(1));
    c.handle_data(
        t0 + s(3),
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc",
    );
    // The timer does not move with every read; when it fires early it re-arms.
    assert_eq!(c.deadline(), Some(t0 + s(5)));
    c.handle_timeout(t0 + s(5));
    assert!(c.take_outcome().is_none());
    assert_eq!(c.deadline(), Some(t0 + s(8)));
    c.handle_timeout(t0 + s(8));
    assert_eq!(
        c.take_outcome().map(|o| o.0),
        Some(Err(HttpFailure::Timeout))
    );
    assert_eq!(c.deadline(), None);
}

#[test]
fn io_errors_fail_the_request_and_drop_the_socket() {
    let t0 = Instant::now();
    let mut c = conn(t0);
    c.get(t0, "f", None);
    c.poll_connect().unwrap();
    c.handle_io_error(t0, HttpFailure::Refused);
    assert_eq!(
        c.take_outcome().map(|o| o.0),
        Some(Err(HttpFailure::Refused))
    );
    assert!(!c.wants_socket());
    assert_eq!(HttpFailure::Refused.cause(), "refused");
    assert_eq!(HttpFailure::Status(404).cause(), "status-404");
    assert_eq!(HttpFailure::ShortBody.cause(), "short-body");
}
