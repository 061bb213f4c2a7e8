//! `pxe-server check` / `serve` configuration handling, through the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use pxe_server::config::Config;
use pxe_testkit::{Proc, Signal, server_bin};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(server_bin())
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_prints_the_effective_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pxe.toml");
    std::fs::write(
        &file,
        format!(
            "[tftp]\nroot = \"{}\"\nmax_windowsize = 4\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let (code, stdout, _) = run(&["check", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 0);
    let printed = Config::parse(&stdout, Path::new("stdout")).unwrap();
    assert_eq!(printed, Config::load(&file).unwrap());
    assert_eq!(printed.tftp.max_windowsize, 4);
    assert!(stdout.contains("max_sessions = 10000"), "{stdout}");
}

#[test]
fn bad_config_exits_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pxe.toml");
    std::fs::write(
        &file,
        format!(
            "[tftp]\nroot = \"{}\"\n\ntimeout_ms = 0\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let want = format!("{}:4: tftp.timeout_ms: ", file.display());
    for cmd in ["check", "serve"] {
        let (code, stdout, stderr) = run(&[cmd, "--config", file.to_str().unwrap()]);
        assert_eq!(code, 2, "{cmd}: {stderr}");
        assert!(stdout.is_empty(), "{cmd}: {stdout}");
        assert!(stderr.starts_with(&want), "{cmd}: {stderr}");
    }
    let (code, _, stderr) = run(&["check", "--config", "/nonexistent/pxe.toml"]);
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("/nonexistent/pxe.toml:0: (file): cannot read"),
        "{stderr}"
    );
}

/// `serve` on loopback (TFTP only), then `status` through the control socket: text and JSON;
/// a second server on the same socket is refused; SIGTERM removes the socket. Run as root, the
/// server runs as its service account once started: it created the socket's directory and
/// hands it over to that account, which removes the socket at exit.
/// `serve` with a TFTP-only loopback config in `dir` (opened to the service account) and a
/// control socket, `args` added and `RUST_LOG=log`: (the server, its config file, its control
/// socket, its TFTP port).
fn serve_loopback(dir: &Path, args: &[&str], log: &str) -> (Proc, String, PathBuf, u16) {
    pxe_testkit::data::open_to_all(dir);
    let sock = dir.join("run").join("ctl.sock");
    let file = dir.join("pxe.toml");
    let port = {
        // A free loopback port for TFTP (released before the server binds it).
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    std::fs::write(
        &file,
        format!(
            "[tftp]\nroot = \"{}\"\nlisten = [\"127.0.0.1:{port}\"]\nengine = \"portable\"\n\
             threads = 1\n[control]\nsocket = \"{}\"\n[metrics]\nlisten = [\"127.0.0.1:0\"]\n",
            dir.display(),
            sock.display()
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap().to_owned();
    let mut cmd = Command::new(server_bin());
    cmd.args(["serve", "--config", &f])
        .args(args)
        .env("RUST_LOG", log);
    (Proc::spawn(cmd, dir, "serve"), f, sock, port)
}

/// SIGTERM; the server exits with success (within 30 s).
fn stop(server: &mut Proc) {
    server.signal(Signal::TERM);
    let status = server
        .wait_timeout(std::time::Duration::from_secs(30))
        .expect("pxe-server did not stop on SIGTERM");
    assert!(status.success());
}

/// `status --config FILE`'s text once the server answers (at most 10 s), else empty.
fn status_when_up(config: &str) -> String {
    for _ in 0..100 {
        let (code, out, _) = run(&["status", "--config", config]);
        if code == 0 {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    String::new()
}

#[test]
fn status_reports_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, f, sock, port) = serve_loopback(dir.path(), &[], "off");
    let f = f.as_str();
    let text = status_when_up(f);
    assert!(text.contains("engine: portable"), "{text}");
    assert!(
        text.contains(&format!("listen: 127.0.0.1:{port}")),
        "{text}"
    );
    assert!(text.contains("sessions_started: 0"), "{text}");
    assert!(text.contains("dhcp: -"), "{text}");
    let (code, json, _) = run(&["status", "--json", "--socket", sock.to_str().unwrap()]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["server"]["pid"], server.pid());
    assert_eq!(v["tftp"]["threads"], 1);

    // A second server with the same control socket stops at start, naming it.
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(f)
            .unwrap()
            .replace(&port.to_string(), "0"),
    )
    .unwrap();
    let out = Command::new(server_bin())
        .args(["serve", "--config", other.to_str().unwrap()])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("another pxe-server answers there"), "{err}");
    assert_eq!(run(&["status", "--config", f]).0, 0);

    stop(&mut server);
    assert!(!sock.exists(), "the control socket is removed at exit");
    let (code, _, err) = run(&["status", "--socket", sock.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("is the server running?"), "{err}");
}

/// `serve --log-format json`: every line the server writes on stderr, from start to exit, is one
/// JSON object with a timestamp, a level, a target and the event's fields with its message. A
/// client's file name carrying a newline and a forged log line (logged as an access violation)
/// stays inside its event, escaped.
#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, f, _, port) = serve_loopback(dir.path(), &["--log-format", "json"], "info");
    assert!(!status_when_up(&f).is_empty(), "{}", server.stderr());
    let forged = "../x\n{\"level\":\"FORGED\",\"fields\":{\"message\":\"m\"}}";
    let rrq = [&[0u8, 1][..], forged.as_bytes(), b"\0octet\0"].concat();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(&rrq, ("127.0.0.1", port)).unwrap();
    server.wait_for("access violation");
    stop(&mut server);
    let log = server.stderr();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 2, "{log}");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        for key in ["timestamp", "level", "target"] {
            assert!(v[key].is_string(), "{key} missing: {line}");
        }
        assert!(v["fields"]["message"].is_string(), "no message: {line}");
        assert_ne!(v["level"], "FORGED", "a client forged a log line: {line}");
    }
    assert!(
        log.contains(&serde_json::to_string(forged).unwrap()),
        "the name is in its event, escaped: {log}"
    );
    // The start-up line names the TFTP listener among its fields or in its message.
    assert!(log.contains(&format!("127.0.0.1:{port}")), "{log}");
}

/// A template error stops `check` (and `serve`) with exit status 2, naming the template file
/// and line and the host it failed for.
#[test]
fn template_errors_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let tpl = dir.path().join("templates");
    std::fs::create_dir(&tpl).unwrap();
    std::fs::write(
        tpl.join("ks.cfg"),
        "install\nnetwork --hostname={{ host.hostnme }}\n",
    )
    .unwrap();
    let file = dir.path().join("pxe.toml");
    std::fs::write(
        &file,
        format!(
            "[tftp]\nroot = \"{}\"\n[install]\ntemplates = \"{}\"\n[[hosts]]\nmac = \"52:54:00:00:00:01\"\nhostname = \"n1\"\n",
            dir.path().display(),
            tpl.display()
        ),
    )
    .unwrap();
    for cmd in ["check", "serve"] {
        let (code, _, err) = run(&[cmd, "--config", file.to_str().unwrap()]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(
            err.contains(&format!(
                "{}:2: install.templates: ",
                tpl.join("ks.cfg").display()
            )),
            "{cmd}: {err}"
        );
        assert!(err.contains("undefined") && err.contains("n1"), "{err}");
    }
}
