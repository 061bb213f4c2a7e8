use super::*;
use crate::metrics::Histogram;

/// A table with two hosts; refuses any query naming `phase=bogus`.
struct Fake;

impl LiveData for Fake {
    fn summary(&self) -> serde_json::Value {
        serde_json::json!({"version": 1, "hosts": 2, "completed": 1, "stuck": 1})
    }
    fn hosts(&self, query: &str) -> Result<serde_json::Value, String> {
        if query.contains("phase=bogus") {
            return Err("phase: unknown phase \"bogus\"".into());
        }
        Ok(serde_json::json!({"version": 1, "query": query, "hosts": []}))
    }
    fn host(&self, mac: &str) -> Option<serde_json::Value> {
        (mac == "52:54:00:00:00:01").then(|| serde_json::json!({"mac": mac}))
    }
    fn stats(&self) -> LiveStats {
        LiveStats {
            tftp_sent_bytes: 7,
            ..LiveStats::default()
        }
    }
}

fn view() -> LiveView {
    LiveView::new(Arc::new(Fake), Arc::default())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// The whole body of a finite response.
fn body(r: Response<LiveBody>) -> (StatusCode, String) {
    let status = r.status();
    let bytes = runtime()
        .block_on(r.into_body().collect())
        .unwrap()
        .to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

/// The next `n` chunks of an event stream.
fn chunks(r: Response<LiveBody>, n: usize) -> Vec<String> {
    let mut b = r.into_body();
    runtime().block_on(async move {
        let mut out = Vec::new();
        while out.len() < n {
            let Some(frame) = b.frame().await else { break };
            let data = frame.unwrap().into_data().unwrap();
            out.push(String::from_utf8(data.to_vec()).unwrap());
        }
        out
    })
}

#[test]
fn page_and_assets_are_served_with_a_strict_policy_and_nothing_external() {
    let v = view();
    for (path, ty) in [
        ("/", "text/html"),
        ("/live.js", "text/javascript"),
        ("/live.css", "text/css"),
    ] {
        let r = v.route(&Method::GET, path).unwrap();
        let h = r.headers();
        assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(ty));
        assert!(
            h[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        let (status, text) = body(r);
        assert_eq!(status, StatusCode::OK);
        // Air-gapped: no URL to anywhere else (the SVG namespace is a name, never fetched),
        // and no inline event handler or innerHTML.
        let text = text.replace("\"http://www.w3.org/2000/svg\"", "SVG_NS");
        for banned in ["http://", "https://", "//cdn", "innerHTML", "onclick="] {
            assert!(!text.contains(banned), "{path} contains {banned}");
        }
    }
    assert!(v.route(&Method::GET, "/metrics").is_none());
    assert!(v.route(&Method::GET, "/nothing").is_none());
    let (status, _) = body(v.route(&Method::POST, "/api/v1/hosts").unwrap());
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn documents_pass_queries_through_and_refuse_bad_ones() {
    let v = view();
    let (status, text) = body(v.route(&Method::GET, "/api/v1/hosts?stuck=1").unwrap());
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains(r#""query":"stuck=1""#), "{text}");
    let (status, text) = body(v.route(&Method::GET, "/api/v1/hosts?phase=bogus").unwrap());
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("unknown phase"), "{text}");
    let (status, _) = body(
        v.route(&Method::GET, "/api/v1/hosts/52:54:00:00:00:01")
            .unwrap(),
    );
    assert_eq!(status, StatusCode::OK);
    let (status, _) = body(
        v.route(&Method::GET, "/api/v1/hosts/52:54:00:00:00:02")
            .unwrap(),
    );
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, text) = body(v.route(&Method::GET, "/api/v1/summary").unwrap());
    assert!(text.contains(r#""completed":1"#));
    let (status, _) = body(v.route(&Method::GET, "/api/v1/events?phase=bogus").unwrap());
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[test]
fn events_push_frames_with_the_filtered_hosts_and_end_at_shutdown() {
    let shutdown = Arc::new(AtomicBool::new(false));
    let v = LiveView::new(Arc::new(Fake), Arc::clone(&shutdown));
    let r = v
        .route(&Method::GET, "/api/v1/events?phase=kernel")
        .unwrap();
    assert_eq!(r.headers()[header::CONTENT_TYPE], "text/event-stream");
    assert_eq!(v.open_streams(), 1);
    let got = chunks(r, 3);
    assert_eq!(got[0], "retry: 2000\n\n");
    for frame in &got[1..] {
        let json = frame
            .strip_prefix("event: frame\ndata: ")
            .and_then(|f| f.strip_suffix("\n\n"))
            .unwrap();
        let doc: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(doc["version"], 1);
        assert_eq!(doc["stats"]["tftp_sent_bytes"], 7);
        assert_eq!(doc["summary"]["stuck"], 1);
        // The table's filter, with the default row limit added.
        assert_eq!(doc["hosts"]["query"], "phase=kernel&limit=200");
    }
    // The stream was dropped with its body: its slot is free again.
    assert_eq!(v.open_streams(), 0);
    let r = v.route(&Method::GET, "/api/v1/events").unwrap();
    shutdown.store(true, Ordering::Relaxed);
    assert_eq!(chunks(r, 10), vec!["retry: 2000\n\n".to_owned()]);
}

#[test]
fn streams_beyond_the_cap_are_refused_with_a_reason() {
    let v = view();
    let held: Vec<_> = (0..MAX_EVENT_STREAMS)
        .map(|_| v.route(&Method::GET, "/api/v1/events").unwrap())
        .collect();
    assert_eq!(v.open_streams(), MAX_EVENT_STREAMS);
    let got = chunks(v.route(&Method::GET, "/api/v1/events").unwrap(), 10);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("event: refused\n"), "{got:?}");
    assert!(got[0].contains("live views are open"));
    drop(held);
    assert_eq!(v.open_streams(), 0);
}

#[test]
fn quantiles_sum_the_labels_of_one_family() {
    let a = Histogram::new(crate::metrics::LATENCY_BOUNDS);
    let b = Histogram::new(crate::metrics::LATENCY_BOUNDS);
    for _ in 0..99 {
        a.observe(Duration::from_micros(200));
    }
    b.observe(Duration::from_secs(3));
    let q = Quantiles::of(&[a.snapshot(), b.snapshot()]);
    assert_eq!(q.count, 100);
    assert!(q.p50.unwrap() <= 0.00025);
    assert!(q.p99.unwrap() <= 0.00025);
    assert!(q.p90.unwrap() <= 0.00025);
    let q = Quantiles::of(&[b.snapshot()]);
    assert!(q.p50.unwrap() > 2.5);
    assert_eq!(Quantiles::of(&[]), Quantiles::default());
}
