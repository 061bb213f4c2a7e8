use std::time::Duration;

use super::*;

#[test]
fn http_section_defaults_and_errors() {
    let f = fixture();
    let r = &f.root;
    let head = format!("[tftp]\nroot = \"{r}\"\n");
    let c = Config::parse(&head, Path::new("x")).unwrap();
    assert_eq!(c.http, HttpConfig::default());
    assert!(!c.http.enabled);
    assert_eq!(c.http.listen, vec![SocketAddr::from(([0, 0, 0, 0], 80))]);
    assert_eq!(c.http.root_or(&c.tftp.root), Path::new(r));
    assert_eq!(c.http.max_connections, 10_000);
    assert_eq!(c.http.max_connections_per_client, 32);
    assert_eq!(c.http.min_send_rate_bytes_per_sec, 1024);
    assert_eq!(c.http.send_rate_window_ms, 30_000);
    let s = c.http_settings();
    assert_eq!(
        (
            s.max_connections_per_client,
            s.min_send_rate,
            s.send_rate_window
        ),
        (32, 1024, Duration::from_secs(30))
    );
    let sub = format!("{r}/http");
    std::fs::create_dir(&sub).unwrap();
    let c = Config::parse(
        &format!(
            "{head}[http]\nenabled = true\nlisten = [\"10.0.0.1:8080\", \"[::1]:80\"]\n\
             root = \"{sub}\"\nthreads = 1\nmax_connections = 5\nheader_timeout_ms = 500\n\
             idle_timeout_ms = 9000\nmax_connections_per_client = 3\n\
             min_send_rate_bytes_per_sec = 0\nsend_rate_window_ms = 2500\n"
        ),
        Path::new("x"),
    )
    .unwrap();
    assert!(c.http.enabled);
    assert_eq!(c.http.listen.len(), 2);
    assert_eq!(c.http.root_or(&c.tftp.root), Path::new(&sub));
    assert_eq!(
        (
            c.http.threads,
            c.http.max_connections,
            c.http.header_timeout_ms,
            c.http.idle_timeout_ms
        ),
        (1, 5, 500, 9000)
    );
    assert_eq!(
        (
            c.http.max_connections_per_client,
            c.http.min_send_rate_bytes_per_sec,
            c.http.send_rate_window_ms
        ),
        (3, 0, 2500)
    );
    let s = c.http_settings();
    assert_eq!(
        (
            s.max_connections_per_client,
            s.min_send_rate,
            s.send_rate_window
        ),
        (3, 0, Duration::from_millis(2500))
    );
    let again = Config::parse(&c.to_toml(), Path::new("x")).unwrap();
    assert_eq!(again, c);

    let cases: &[(&str, &str, &str)] = &[
        ("listen = []", "http.listen", "at least one"),
        ("threads = 0", "http.threads", "1..=64"),
        ("max_connections = 0", "http.max_connections", "at least 1"),
        (
            "max_connections_per_client = 0",
            "http.max_connections_per_client",
            "at least 1",
        ),
        (
            "max_connections_per_client = -1",
            "http.max_connections_per_client",
            "invalid value",
        ),
        (
            "min_send_rate_bytes_per_sec = 1000000001",
            "http.min_send_rate_bytes_per_sec",
            "0..=1000000000",
        ),
        (
            "send_rate_window_ms = 0",
            "http.send_rate_window_ms",
            "1..=3600000",
        ),
        (
            "send_rate_window_ms = 3600001",
            "http.send_rate_window_ms",
            "1..=3600000",
        ),
        (
            "header_timeout_ms = 0",
            "http.header_timeout_ms",
            "1..=3600000",
        ),
        (
            "idle_timeout_ms = 3600001",
            "http.idle_timeout_ms",
            "1..=3600000",
        ),
        (
            "root = \"/nonexistent/pxe\"",
            "http.root",
            "/nonexistent/pxe",
        ),
        ("enabled = \"yes\"", "http.enabled", "invalid type"),
        (
            "listen = [\"nope\"]",
            "http.listen[0]",
            "invalid socket address",
        ),
        ("bogus = 1", "http.bogus", "unknown field"),
    ];
    for (line, key, why) in cases {
        assert_err(&format!("{head}[http]\n\n{line}\n"), 5, key, why);
    }
    // A changed [http] section needs a restart.
    let mut new = c.clone();
    new.http.max_connections = 7;
    let plan = c.reload_plan(&new);
    assert_eq!(plan.needs_restart, vec!["http"]);
    assert_eq!(plan.effective.http, c.http);
}
