use super::families::{DhcpReadings, HttpReadings, Readings};
use super::*;
use crate::dhcp::leases::LeaseCounts;
use crate::http::router::Route;

/// Readings as a scrape would see them, registered alone.
#[derive(Debug)]
struct Fixed(Readings);

impl Collector for Fixed {
    fn encode(&self, e: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        self.0.encode(e)
    }
}

fn readings() -> Readings {
    let mut r = Readings::default();
    r.tftp.sessions_started = 10;
    r.tftp.sessions_completed = 7;
    r.tftp.sessions_timed_out = 1;
    r.tftp.payload_bytes_sent = 123_456;
    r.tftp.retransmitted = 3;
    r.tftp.refused_limit = 2;
    let mut http = HttpReadings::default();
    http.snapshot.connections_open = 4;
    http.snapshot.bytes_sent = 999;
    http.snapshot.connections_refused = 5;
    http.by_route[Route::File as usize][0] = 20; // file 2xx
    http.by_route[Route::Done as usize][2] = 1; // done 4xx
    r.http = Some(http);
    let mut dhcp = DhcpReadings {
        mode: "full",
        leases: Some(LeaseCounts {
            offered: 1,
            bound: 8,
            declined: 0,
        }),
        pools: vec![("10.0.0.0/24".into(), 200)],
        xdp: Some([12, 9, 3, 0, 0, 0]),
        ..DhcpReadings::default()
    };
    dhcp.snapshot.received_discover = 9;
    dhcp.snapshot.acks = 8;
    dhcp.snapshot.offers = 9;
    dhcp.snapshot.drop_bad_magic = 2;
    dhcp.snapshot.drop_truncated = 1;
    dhcp.snapshot.drop_not_our_bucket = 6;
    dhcp.snapshot.drop_lease_conflict = 1;
    dhcp.snapshot.lease_conflicts = 4;
    dhcp.snapshot.takeovers = 3;
    dhcp.userspace = [5, 4, 0, 1, 0, 0];
    r.dhcp = Some(dhcp);
    r
}

/// `c` alone, encoded as Prometheus text.
fn text_of(c: impl Collector) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(c));
    scrape(&registry, false).unwrap().1
}

fn assert_lines(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(text.lines().any(|l| l == *line), "no {line:?} in\n{text}");
    }
}

fn encoded(openmetrics: bool) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Fixed(readings())));
    scrape(&registry, openmetrics).unwrap().1
}

#[test]
fn a_known_reading_encodes_to_its_series() {
    let text = encoded(false);
    assert_lines(
        &text,
        &[
            "# TYPE pxe_tftp_sessions gauge",
            "pxe_tftp_sessions 2",
            "# TYPE pxe_tftp_transfers_total counter",
            "pxe_tftp_transfers_total{outcome=\"completed\"} 7",
            "pxe_tftp_transfers_total{outcome=\"timed_out\"} 1",
            "pxe_tftp_sent_bytes_total 123456",
            "pxe_tftp_retransmitted_packets_total 3",
            "pxe_tftp_refused_total{cause=\"limit\"} 2",
            "pxe_http_connections 4",
            "pxe_http_requests_total{route=\"file\",status=\"2xx\"} 20",
            "pxe_http_requests_total{route=\"done\",status=\"4xx\"} 1",
            "pxe_http_requests_total{route=\"ipxe_script\",status=\"5xx\"} 0",
            "pxe_http_sent_bytes_total 999",
            "pxe_http_refused_total{cause=\"max_connections\"} 5",
            "pxe_dhcp_messages_total{type=\"discover\",mode=\"full\"} 9",
            "pxe_dhcp_answers_total{type=\"ack\",mode=\"full\"} 8",
            "pxe_dhcp_answers_total{type=\"offer\",mode=\"full\"} 9",
            "pxe_dhcp_dropped_total{cause=\"malformed\"} 3",
            "pxe_dhcp_dropped_total{cause=\"not_our_bucket\"} 6",
            "pxe_dhcp_dropped_total{cause=\"lease_conflict\"} 1",
            "pxe_dhcp_lease_conflicts_total 4",
            "pxe_dhcp_takeovers_total 3",
            "pxe_dhcp_leases{state=\"bound\"} 8",
            "pxe_dhcp_pool_addresses{subnet=\"10.0.0.0/24\"} 200",
            "pxe_filter_verdicts_total{path=\"xdp\",verdict=\"passed\"} 9",
            "pxe_filter_verdicts_total{path=\"xdp\",verdict=\"dropped_not_pxe\"} 3",
            "pxe_filter_verdicts_total{path=\"userspace\",verdict=\"dropped_rate\"} 1",
        ],
    );
    // Every family once, with HELP and TYPE; no OpenMetrics terminator in the 0.0.4 text.
    assert_eq!(text.matches("# TYPE pxe_dhcp_answers_total ").count(), 1);
    assert!(!text.contains("# EOF"));
    assert!(!text.contains("_total_total"));
}

#[test]
fn no_leases_no_pools_no_xdp_leave_those_series_out() {
    let mut r = readings();
    let d = r.dhcp.as_mut().unwrap();
    (d.leases, d.pools, d.xdp) = (None, vec![], None);
    let text = text_of(Fixed(r));
    assert!(!text.contains("pxe_dhcp_leases"), "{text}");
    assert!(!text.contains("pxe_dhcp_pool_addresses"), "{text}");
    assert!(!text.contains("path=\"xdp\""), "{text}");
    assert!(text.contains("path=\"userspace\""), "{text}");
}

#[test]
fn openmetrics_when_asked() {
    let text = encoded(true);
    assert!(text.ends_with("# EOF\n"), "{text}");
    // OpenMetrics names the counter family without _total, its samples with it.
    assert!(
        text.contains("# TYPE pxe_tftp_transfers counter\n"),
        "{text}"
    );
    assert!(text.contains("pxe_tftp_transfers_total{outcome=\"completed\"} 7\n"));
    let registry = Registry::default();
    assert_eq!(
        scrape(&registry, true).unwrap().0,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(
        scrape(&registry, false).unwrap().0,
        "text/plain; version=0.0.4; charset=utf-8"
    );
}

#[test]
fn sources_read_the_live_counters() {
    use crate::dhcp::metrics::DhcpMetrics;
    use crate::http::HttpMetrics;
    use crate::tftp::metrics::TftpMetrics;
    let tftp = Arc::new(TftpMetrics::default());
    let http = Arc::new(HttpMetrics::default());
    let dhcp = Arc::new(DhcpMetrics::default());
    crate::metrics::add(&tftp.payload_bytes_sent, 512);
    crate::http::router::count_response(&http, Route::IpxeScript, StatusCode::OK);
    crate::http::router::count_response(&http, Route::File, StatusCode::PARTIAL_CONTENT);
    crate::http::router::count_response(&http, Route::File, StatusCode::NOT_MODIFIED);
    crate::metrics::inc(&dhcp.naks);
    let sources = families::Sources {
        tftp,
        http: Some(http),
        dhcp: Some(families::DhcpSource {
            metrics: dhcp,
            mode: "proxy",
            leases: None,
            xdp: None,
            userspace: Arc::default(),
        }),
    };
    let text = text_of(sources);
    assert_lines(
        &text,
        &[
            "pxe_tftp_sent_bytes_total 512",
            "pxe_http_requests_total{route=\"ipxe_script\",status=\"2xx\"} 1",
            "pxe_http_requests_total{route=\"file\",status=\"2xx\"} 1",
            "pxe_http_requests_total{route=\"file\",status=\"3xx\"} 1",
            "pxe_dhcp_answers_total{type=\"nak\",mode=\"proxy\"} 1",
        ],
    );
}

#[test]
fn journey_families_encode_cumulative_buckets_and_the_table() {
    use crate::journey::{FileClass, Journeys, LatencyMode, Now, Protocol};
    let j = Arc::new(Journeys::default());
    let full = j.timings().dhcp_latency(LatencyMode::Full);
    full.observe(Duration::from_millis(5));
    full.observe(Duration::from_millis(50));
    full.observe(Duration::from_secs(1));
    let now = Now::current();
    j.dhcp_request(now, "52:54:00:00:00:01".parse().unwrap(), None, true);
    let peer = "10.0.0.9".parse().unwrap();
    let started = now.mono - Duration::from_millis(300);
    assert_eq!(j.transfer_started(now, peer, "vmlinuz"), FileClass::Kernel);
    j.transfer_done(now, peer, Protocol::Tftp, FileClass::Kernel, started);
    let text = text_of(super::journeys::JourneyFamilies { journeys: j });
    assert_lines(
        &text,
        &[
            "# TYPE pxe_dhcp_answer_latency_seconds histogram",
            "pxe_dhcp_answer_latency_seconds_bucket{mode=\"full\",le=\"0.005\"} 1",
            "pxe_dhcp_answer_latency_seconds_bucket{mode=\"full\",le=\"0.05\"} 2",
            "pxe_dhcp_answer_latency_seconds_bucket{mode=\"full\",le=\"2.5\"} 3",
            "pxe_dhcp_answer_latency_seconds_bucket{mode=\"full\",le=\"+Inf\"} 3",
            "pxe_dhcp_answer_latency_seconds_count{mode=\"full\"} 3",
            "pxe_dhcp_answer_latency_seconds_sum{mode=\"full\"} 1.055",
            "pxe_dhcp_answer_latency_seconds_count{mode=\"proxy\"} 0",
            "pxe_transfer_duration_seconds_count{protocol=\"tftp\",class=\"kernel\"} 1",
            "pxe_transfer_duration_seconds_bucket{protocol=\"tftp\",class=\"kernel\",le=\"0.25\"} 0",
            "pxe_transfer_duration_seconds_bucket{protocol=\"tftp\",class=\"kernel\",le=\"0.5\"} 1",
            "pxe_transfer_duration_seconds_count{protocol=\"http\",class=\"initrd\"} 0",
            "# TYPE pxe_journey_hosts gauge",
            "pxe_journey_hosts{phase=\"discover\"} 1",
            "pxe_journey_hosts{phase=\"kernel\"} 0",
            "pxe_journey_stuck_hosts 0",
            "pxe_journey_completed_total 0",
            "pxe_journey_evicted_total 0",
            // The transfer's address belongs to no journey.
            "pxe_journey_unattributed_transfers_total 1",
        ],
    );
}

#[test]
fn process_facts_parse_proc_texts() {
    let stat = "4242 (pxe (server)) S 1 2 3 0 -1 0 1 2 3 4 250 50 0 0 20 0 9 0 12345 0 0";
    let status = "Name:\tpxe-server\nVmRSS:\t   2048 kB\nThreads:\t9\n";
    let limits = "Limit Soft Limit Hard Limit Units\nMax open files 20000 20000 files\n";
    let boot = "cpu 1 2 3\nbtime 1700000000\nprocesses 9\n";
    let p = process::ProcessFacts::parse(stat, status, limits, boot, 17).unwrap();
    assert_eq!(
        p,
        process::ProcessFacts {
            cpu_seconds: 3.0,
            resident_bytes: 2048 * 1024,
            open_fds: 17,
            max_fds: 20000,
            start_time_seconds: 1_700_000_123.45,
        }
    );
    assert_eq!(
        process::ProcessFacts::parse("x", status, limits, boot, 1),
        None
    );
    // This process's own facts read (the files exist and parse).
    let me = process::ProcessFacts::read().unwrap();
    assert!(me.open_fds > 0 && me.resident_bytes > 0 && me.max_fds >= me.open_fds);
}

/// One request over a real connection to a listener on loopback.
fn get(addr: SocketAddr, head: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut out = Vec::new();
    // A refused connection may end in a reset after its 503: keep what arrived.
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

struct Hello;

impl Routes for Hello {
    fn route(&self, method: &Method, target: &str) -> Option<Response<ObserveBody>> {
        (method == Method::GET && target.starts_with("/hello"))
            .then(|| Response::new(full(format!("hello {target}"))))
    }
}

#[test]
fn the_listener_negotiates_routes_and_refuses_beyond_its_bound() {
    let mut server = MetricsServer::bind(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    server.register(Box::new(Fixed(readings())));
    server.set_routes(Arc::new(Hello));
    let addr = server.local_addrs().unwrap()[0];
    let stop = Arc::new(AtomicBool::new(false));
    let handle = server.spawn(Arc::clone(&stop)).unwrap();
    let close = "Connection: close\r\n\r\n";

    let text = get(
        addr,
        &format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{close}"),
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("content-type: text/plain; version=0.0.4"),
        "{text}"
    );
    assert!(text.contains("\npxe_tftp_sessions 2\n"), "{text}");
    assert!(text.contains("\nprocess_open_fds "), "{text}");

    let om = get(
        addr,
        &format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n{close}"
        ),
    );
    assert!(
        om.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{om}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");

    let hello = get(
        addr,
        &format!("GET /hello?x=1 HTTP/1.1\r\nHost: x\r\n{close}"),
    );
    assert!(hello.ends_with("hello /hello?x=1"), "{hello}");
    let missing = get(addr, &format!("GET /nope HTTP/1.1\r\nHost: x\r\n{close}"));
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let post = get(
        addr,
        &format!("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n{close}"),
    );
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");

    // MAX_CONNECTIONS idle connections hold every slot (accepted in order): the next one
    // gets the 503 and is closed, without sending anything.
    let held: Vec<_> = (0..MAX_CONNECTIONS)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let busy = get(addr, "");
    assert!(busy.starts_with("HTTP/1.1 503"), "{busy:?}");
    drop(held);
    // Slots come back when those connections close (the server sees the closes in turn).
    let again = (0..100)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            get(
                addr,
                &format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{close}"),
            )
        })
        .find(|r| r.starts_with("HTTP/1.1 200"));
    assert!(again.is_some(), "slots not given back");

    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap().unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still listening after stop"
    );
}

#[test]
fn a_busy_port_is_an_error_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let e = MetricsServer::bind(&[addr]).err().unwrap();
    assert!(
        e.to_string().contains(&format!("metrics listen {addr}")),
        "{e}"
    );
}

#[test]
fn a_head_that_does_not_arrive_in_time_is_cut() {
    use std::io::{Read, Write};
    let mut server = MetricsServer::bind(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    server.set_header_timeout(Duration::from_millis(300));
    let addr = server.local_addrs().unwrap()[0];
    let stop = Arc::new(AtomicBool::new(false));
    let handle = server.spawn(Arc::clone(&stop)).unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // The rest of the head never comes: the server closes the connection (EOF or reset)
    // long before this read's own limit.
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 512];
    let closed = match s.read(&mut buf) {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    assert!(closed, "a half-sent head kept its connection");
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap().unwrap();
}
