use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::*;

/// What a pxe-server exports (text format 0.0.4), with scrape number `n` in the counters.
fn exposition(n: u64) -> String {
    let n = n as f64;
    format!(
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
         # TYPE process_cpu_seconds_total counter\n\
         process_cpu_seconds_total {cpu}\n\
         process_resident_memory_bytes {rss}\n\
         process_open_fds 40\n\
         process_max_fds 20000\n\
         process_start_time_seconds 1.7e9\n\
         # TYPE pxe_tftp_sessions gauge\n\
         pxe_tftp_sessions {sessions}\n\
         pxe_http_connections 3\n\
         pxe_tftp_transfers_total{{outcome=\"ok\"}} 10\n\
         pxe_tftp_sent_bytes_total {tftp}\n\
         pxe_http_sent_bytes_total {http}\n\
         pxe_tftp_refused_total{{cause=\"limit\"}} {n}\n\
         pxe_tftp_refused_total{{cause=\"access\"}} 2\n\
         pxe_http_refused_total{{cause=\"connections\"}} 0\n\
         pxe_dhcp_dropped_total{{cause=\"rate\"}} {drops}\n\
         pxe_dhcp_messages_total{{type=\"discover\",mode=\"full\"}} 100\n\
         pxe_http_requests_total{{route=\"file\",status=\"200\"}} 5\n\
         pxe_dhcp_answer_latency_seconds_bucket{{mode=\"full\",le=\"+Inf\"}} 9\n\
         this line is not a sample\n\
         # EOF\n",
        cpu = 1.0 + 0.5 * n,
        rss = 1_000_000.0 + 4096.0 * n,
        sessions = 7.0 * n,
        tftp = 1000.0 * n,
        http = 500.0 * n,
        drops = 3.0 * n,
    )
}

#[test]
fn a_scrape_yields_the_metrics_the_report_reads() {
    let s = Snapshot::parse(&exposition(2));
    assert_eq!(s.cpu_seconds, Some(2.0));
    assert_eq!(s.rss_bytes, Some(1_008_192.0));
    assert_eq!(s.open_fds, Some(40.0));
    assert_eq!(s.tftp_sessions, Some(14.0));
    assert_eq!(s.http_connections, Some(3.0));
    assert_eq!(s.tftp_sent_bytes, Some(2000.0));
    assert_eq!(s.http_sent_bytes, Some(1000.0));
    let refused: Vec<_> = s
        .refused
        .iter()
        .map(|((a, b), v)| (*a, b.as_str(), *v))
        .collect();
    assert_eq!(
        refused,
        [
            ("dhcp", "rate", 6.0),
            ("http", "connections", 0.0),
            ("tftp", "access", 2.0),
            ("tftp", "limit", 2.0),
        ]
    );
    assert_eq!(s.bad_lines, 1);
    // A family split by a label this report does not read is summed; a missing one is None.
    let s =
        Snapshot::parse("pxe_tftp_sessions{engine=\"a\"} 2\npxe_tftp_sessions{engine=\"b\"} 5\n");
    assert_eq!((s.tftp_sessions, s.cpu_seconds), (Some(7.0), None));
}

#[test]
fn targets() {
    let t = Target::parse("http://10.0.0.1:9469/metrics").unwrap();
    assert_eq!(t.server, "10.0.0.1:9469".parse().unwrap());
    assert_eq!(
        (t.host.as_str(), t.path.as_str()),
        ("10.0.0.1:9469", "/metrics")
    );
    let t = Target::parse("http://127.0.0.1").unwrap();
    assert_eq!((t.server.port(), t.path.as_str()), (80, "/"));
    for bad in [
        "https://10.0.0.1/metrics",
        "http://server/metrics",
        "http://1.2.3.4:0/",
    ] {
        assert!(Target::parse(bad).is_err(), "{bad}");
    }
}

/// How the test server answers each request.
#[derive(Clone, Copy)]
enum Answer {
    /// 200 with a Content-Length (even scrapes) or chunked (odd ones).
    Metrics,
    Status503,
    /// Reads the request and says nothing.
    Silent,
}

/// A tiny HTTP server on loopback: it answers every connection as `answer` says, counting the
/// requests; it stops when dropped.
struct TestServer {
    addr: SocketAddrV4,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start(answer: Answer) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
            unreachable!()
        };
        let served = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, halt) = (Arc::clone(&served), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming().take(10_000) {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => req.extend_from_slice(&buf[..k]),
                    }
                }
                let k = n.fetch_add(1, Ordering::SeqCst);
                let head = String::from_utf8_lossy(&req).into_owned();
                assert!(head.starts_with("GET /metrics HTTP/1.1\r\n"), "{head}");
                assert!(
                    head.contains("\r\nAccept: text/plain;version=0.0.4\r\n"),
                    "{head}"
                );
                let reply = match answer {
                    Answer::Metrics if k % 2 == 0 => {
                        let body = exposition(k);
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                             Content-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    }
                    Answer::Metrics => {
                        let body = exposition(k);
                        let (a, b) = body.split_at(body.len() / 2);
                        format!(
                            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                             {:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                            a.len(),
                            b.len()
                        )
                    }
                    Answer::Status503 => {
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".into()
                    }
                    Answer::Silent => {
                        held.push(conn);
                        continue;
                    }
                };
                let _ = conn.write_all(reply.as_bytes());
            }
        });
        TestServer {
            addr,
            served,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits (at most 5 s) until `n` requests were answered.
    fn wait_served(&self, n: u64) {
        for _ in 0..500 {
            if self.served.load(Ordering::SeqCst) >= n {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn target(&self) -> Target {
        Target::parse(&format!("http://{}/metrics", self.addr)).unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept; the thread sees the flag and ends.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn fetch_reads_both_body_framings_and_names_failures() {
    let srv = TestServer::start(Answer::Metrics);
    let t = srv.target();
    for k in 0..2 {
        let body = fetch(&t, Duration::from_secs(10)).unwrap();
        assert_eq!(body, exposition(k), "scrape {k}");
    }

    let srv = TestServer::start(Answer::Status503);
    assert_eq!(
        fetch(&srv.target(), Duration::from_secs(10)),
        Err("status-503".into())
    );

    let silent = TestServer::start(Answer::Silent);
    assert_eq!(
        fetch(&silent.target(), Duration::from_millis(200)),
        Err("timeout".into())
    );

    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let t = Target::parse(&format!("http://{closed}/metrics")).unwrap();
    assert_eq!(
        fetch(&t, Duration::from_secs(10)),
        Err("connect-refused".into())
    );
}

/// The scraper thread against a server whose counters grow by a fixed step per scrape: the
/// view's totals are exactly the steps between the first and the last scrape.
#[test]
fn the_scraper_runs_until_finished_and_the_view_has_the_deltas() {
    let srv = TestServer::start(Answer::Metrics);
    let start = Instant::now();
    let scraper = Scraper::start(srv.target(), Duration::from_millis(20)).unwrap();
    // At least the baseline, a few ticks and the final scrape (bounded in time).
    srv.wait_served(4);
    let scrapes = scraper.finish();
    assert!(scrapes.failures.is_empty(), "{:?}", scrapes.failures);
    let n = scrapes.points.len() as u64;
    assert!(n >= 5, "{n} scrapes");
    assert_eq!(n, srv.served.load(Ordering::SeqCst));
    let v = ServerView::build("u", scrapes, start, &[], &[]);
    let steps = (n - 1) as f64;
    assert_eq!(v.scrapes, n);
    assert_eq!(v.skipped_lines, n);
    assert_eq!(v.cpu_seconds, Some(0.5 * steps));
    assert_eq!(v.tftp_sent_bytes, Some(1000 * (n - 1)));
    assert_eq!(v.http_sent_bytes, Some(500 * (n - 1)));
    assert_eq!(v.tftp_sessions_max, Some(7 * (n - 1)));
    assert_eq!(v.rss_max_bytes, Some(1_000_000 + 4096 * (n - 1)));
    assert_eq!(v.refusals["tftp"]["limit"], n - 1);
    assert_eq!(v.refusals["tftp"]["access"], 0);
    assert_eq!(v.refusals["dhcp"]["rate"], 3 * (n - 1));
    assert_eq!(v.refusals_total(), 4 * (n - 1));
    assert_eq!(v.series.len() as u64, n);
    assert_eq!(v.series[0].refusals, 0);
    assert_eq!(v.series[0].cpu_percent, None);
    assert!(
        v.series[1..]
            .iter()
            .all(|p| p.cpu_percent.is_some_and(|c| c > 0.0))
    );
    assert!(v.series.windows(2).all(|w| w[0].t_s <= w[1].t_s));
}

/// A server that cannot be scraped costs the run nothing: the failures are counted and the
/// view has no figures.
#[test]
fn failed_scrapes_are_counted_not_fatal() {
    let srv = TestServer::start(Answer::Status503);
    let scraper = Scraper::start(srv.target(), Duration::from_millis(20)).unwrap();
    srv.wait_served(3);
    let scrapes = scraper.finish();
    let failed = scrapes.failures["status-503"];
    assert!(failed >= 4, "{:?}", scrapes.failures);
    let v = ServerView::build("u", scrapes, Instant::now(), &[], &[]);
    assert_eq!(
        (v.scrapes, v.cpu_seconds, v.cpu_percent_mean),
        (0, None, None)
    );
    assert!(v.series.is_empty() && v.refusals.is_empty());
    assert_eq!(v.scrape_failures["status-503"], failed);
}

/// The series sits on the clients' time axis: each point carries the clients booted and
/// failed by its time; rates come from consecutive scrapes; a counter that went down (a
/// restarted server) counts from zero.
#[test]
fn the_series_is_aligned_with_the_clients() {
    let start = Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    let snap = |cpu: f64, sent: f64, limit: f64| Snapshot {
        cpu_seconds: Some(cpu),
        tftp_sent_bytes: Some(sent),
        refused: BTreeMap::from([(("tftp", "limit".to_owned()), limit)]),
        ..Snapshot::default()
    };
    let scrapes = Scrapes {
        points: vec![
            (at(0), snap(10.0, 100.0, 5.0)),
            (at(1000), snap(10.5, 1100.0, 7.0)),
            (at(2000), snap(11.5, 2100.0, 7.0)),
            // Restarted: counters from zero.
            (at(3000), snap(0.25, 300.0, 1.0)),
        ],
        failures: BTreeMap::new(),
    };
    let ok_at = [0.5, 1.5, 1.6, 2.0];
    let v = ServerView::build("u", scrapes, start, &ok_at, &[2.5]);
    let ok: Vec<u64> = v.series.iter().map(|p| p.clients_ok).collect();
    assert_eq!(ok, [0, 1, 4, 4]);
    let failed: Vec<u64> = v.series.iter().map(|p| p.clients_failed).collect();
    assert_eq!(failed, [0, 0, 0, 1]);
    let cpu: Vec<Option<f64>> = v.series.iter().map(|p| p.cpu_percent).collect();
    assert_eq!(cpu, [None, Some(50.0), Some(100.0), Some(25.0)]);
    let sent: Vec<Option<u64>> = v.series.iter().map(|p| p.tftp_sent_bytes).collect();
    assert_eq!(sent, [Some(0), Some(1000), Some(2000), Some(2300)]);
    let refused: Vec<u64> = v.series.iter().map(|p| p.refusals).collect();
    assert_eq!(refused, [0, 2, 2, 3]);
    assert_eq!(v.refusals["tftp"]["limit"], 3);
    assert_eq!(v.tftp_sent_bytes, Some(2300));
    assert_eq!(v.cpu_seconds, Some(1.75));
    assert_eq!(v.cpu_percent_max, Some(100.0));
    assert_eq!(v.http_sent_bytes, None);
}
