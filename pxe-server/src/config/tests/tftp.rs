use std::time::Duration;

use super::*;
use crate::tftp::session::SessionConfig;

#[test]
fn minimal_file_gets_defaults() {
    let f = fixture();
    let c = Config::parse(&format!("[tftp]\nroot = \"{}\"\n", f.root), Path::new("x")).unwrap();
    let want = TftpConfig {
        root: PathBuf::from(&f.root),
        ..TftpConfig::default()
    };
    assert_eq!(c.tftp, want);
}

#[test]
fn client_timeout_cap_defaults_to_5_s() {
    let c = TftpConfig::default();
    assert_eq!(c.max_client_timeout_ms, 5000);
    assert_eq!(
        c.settings().session.max_client_timeout,
        Duration::from_secs(5)
    );
    // The session's own default agrees with the file's.
    assert_eq!(c.settings().session, SessionConfig::default());
}

#[test]
fn full_file_and_round_trip() {
    let f = fixture();
    let text = format!(
        "[tftp]\nroot = \"{}\"\nlisten = [\"10.0.0.1:69\", \"[::1]:6969\"]\nengine = \"portable\"\n\
         threads = 3\nmax_blksize = 8192\nmax_windowsize = 16\ntimeout_ms = 250\n\
         max_client_timeout_ms = 2500\nmax_retries = 9\nrollover = 1\nmax_sessions = 100\n\
         max_sessions_per_client = 4\ngso = false\nunverified_retries = 3\n\
         unverified_lifetime_ms = 700\nunverified_share_percent = 25\n\
         unverified_share_per_client_percent = 75\n",
        f.root
    );
    let c = Config::parse(&text, Path::new("x")).unwrap();
    assert_eq!(c.tftp.listen.len(), 2);
    assert_eq!(c.tftp.listen[1], "[::1]:6969".parse().unwrap());
    assert_eq!(c.tftp.engine, EngineChoice::Portable);
    assert_eq!(
        (c.tftp.threads, c.tftp.max_blksize, c.tftp.max_windowsize),
        (3, 8192, 16)
    );
    assert_eq!(
        (c.tftp.timeout_ms, c.tftp.max_retries, c.tftp.rollover),
        (250, 9, 1)
    );
    assert_eq!(c.tftp.max_client_timeout_ms, 2500);
    let session = c.tftp.settings().session;
    assert_eq!(
        (session.default_timeout, session.max_client_timeout),
        (Duration::from_millis(250), Duration::from_millis(2500))
    );
    assert_eq!(
        (c.tftp.max_sessions, c.tftp.max_sessions_per_client),
        (100, 4)
    );
    assert!(!c.tftp.gso);
    assert_eq!(
        (session.unverified_retries, session.unverified_lifetime),
        (3, Duration::from_millis(700))
    );
    let settings = c.tftp.settings();
    assert_eq!(
        (
            settings.unverified_share_percent,
            settings.unverified_share_per_client_percent
        ),
        (25, 75)
    );
    // What `check` prints parses back to the same configuration.
    let again = Config::parse(&c.to_toml(), Path::new("x")).unwrap();
    assert_eq!(again, c);
}

#[test]
fn semantic_errors_name_the_line() {
    let f = fixture();
    let r = &f.root;
    let cases: &[(&str, &str, &str)] = &[
        ("listen = []", "tftp.listen", "at least one"),
        ("max_blksize = 7", "tftp.max_blksize", "8..=65464"),
        ("max_blksize = 65465", "tftp.max_blksize", "8..=65464"),
        ("max_windowsize = 0", "tftp.max_windowsize", "at least 1"),
        ("timeout_ms = 0", "tftp.timeout_ms", "1..=255000"),
        ("timeout_ms = 255001", "tftp.timeout_ms", "1..=255000"),
        (
            "max_client_timeout_ms = 0",
            "tftp.max_client_timeout_ms",
            "1000..=255000",
        ),
        (
            "max_client_timeout_ms = 999",
            "tftp.max_client_timeout_ms",
            "whole seconds",
        ),
        (
            "max_client_timeout_ms = 255001",
            "tftp.max_client_timeout_ms",
            "1000..=255000",
        ),
        ("max_retries = 0", "tftp.max_retries", "at least 1"),
        (
            "unverified_retries = 6",
            "tftp.unverified_retries",
            "more than max_retries (5)",
        ),
        (
            "unverified_lifetime_ms = 99",
            "tftp.unverified_lifetime_ms",
            "100..=60000",
        ),
        (
            "unverified_lifetime_ms = 60001",
            "tftp.unverified_lifetime_ms",
            "100..=60000",
        ),
        (
            "unverified_share_percent = 0",
            "tftp.unverified_share_percent",
            "1..=100",
        ),
        (
            "unverified_share_percent = 101",
            "tftp.unverified_share_percent",
            "1..=100",
        ),
        (
            "unverified_share_per_client_percent = 0",
            "tftp.unverified_share_per_client_percent",
            "1..=100",
        ),
        ("rollover = 2", "tftp.rollover", "neither 0 nor 1"),
        ("max_sessions = 0", "tftp.max_sessions", "at least 1"),
        (
            "max_sessions_per_client = 0",
            "tftp.max_sessions_per_client",
            "at least 1",
        ),
    ];
    for (line, key, why) in cases {
        assert_err(
            &format!("# pxe\n[tftp]\nroot = \"{r}\"\n\n{line}\n"),
            5,
            key,
            why,
        );
    }
    // Edges that are fine.
    for line in [
        "max_blksize = 8",
        "max_blksize = 65464",
        "timeout_ms = 255000",
        "max_client_timeout_ms = 1000",
        "max_client_timeout_ms = 255000",
        "rollover = 1",
        "unverified_retries = 0",
        "unverified_retries = 5",
        "unverified_lifetime_ms = 100",
        "unverified_lifetime_ms = 60000",
        "unverified_share_percent = 1",
        "unverified_share_percent = 100",
        "unverified_share_per_client_percent = 1",
    ] {
        Config::parse(&format!("[tftp]\nroot = \"{r}\"\n{line}\n"), Path::new("x")).unwrap();
    }
    // Dotted keys are found too.
    assert_err(
        &format!("tftp.root = \"{r}\"\n\ntftp.rollover = 7\n"),
        3,
        "tftp.rollover",
        "neither",
    );
}

#[test]
fn root_must_be_an_existing_directory() {
    let f = fixture();
    let missing = format!("{}/missing", f.root);
    assert_err(
        &format!("[tftp]\n\nroot = \"{missing}\"\n"),
        3,
        "tftp.root",
        "missing",
    );
    let file = format!("{}/file", f.root);
    std::fs::write(&file, b"").unwrap();
    assert_err(
        &format!("[tftp]\nroot = \"{file}\"\n"),
        2,
        "tftp.root",
        "not a directory",
    );
}

#[test]
fn defaulted_root_that_does_not_exist_is_line_zero() {
    // The default root is /srv/tftp: which branch runs depends on this machine, both assert.
    match Config::parse("[tftp]\nthreads = 1\n", Path::new("p.toml")) {
        Ok(c) => {
            assert!(Path::new("/srv/tftp").is_dir());
            assert_eq!(c.tftp.root, Path::new("/srv/tftp"));
        }
        Err(e) => {
            assert!(!Path::new("/srv/tftp").is_dir());
            assert_eq!((e.line, e.key.as_str()), (0, "tftp.root"));
            assert!(e.reason.contains("the default"), "{e}");
        }
    }
}
