//! The configuration's tests: the sample file, the error locator, loading, reloads; one file
//! per section beside this one.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use super::locate::{key_line, line_at};
use super::*;
use crate::dhcp::{DhcpMode, UnknownHosts};
use crate::engine::EngineChoice;
use crate::hosts::NextBoot;
use crate::xdp::XdpChoice;

mod dhcp;
mod http;
mod install;
mod journeys;
mod tftp;
mod xdp;

const SAMPLE: &str = include_str!("../../../../config/pxe-server.toml");

#[test]
fn the_sample_config_shows_the_defaults() {
    let c = Config::parse(SAMPLE, Path::new("config/pxe-server.toml")).unwrap();
    assert_eq!(c, Config::default());
}

/// The sample's commented examples (`# key = value` and table headers) form a valid file
/// once uncommented, and each lands where it says.
#[test]
fn the_sample_config_examples_are_valid() {
    let mut text = String::new();
    for line in SAMPLE.lines() {
        let ex = line.strip_prefix("# ").filter(|l| {
            l.starts_with('[') && l.ends_with(']')
                || l.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                })
        });
        match ex {
            Some(l) => text.push_str(l),
            // The empty pool list gives way to the [[dhcp.subnets]] example.
            None if line == "subnets = []" => {}
            None => text.push_str(line),
        }
        text.push('\n');
    }
    // The HTTP root must exist.
    let f = fixture();
    let text = text.replace("\"/srv/http\"", &format!("{:?}", f.root));
    let c = match Config::parse(&text, Path::new("uncommented.toml")) {
        Ok(c) => c,
        Err(e) => panic!("{e}\n{text}"),
    };
    assert_eq!(c.dhcp.subnets.len(), 1);
    assert_eq!(c.dhcp.server_ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(
        c.boot.uefi_http.as_deref(),
        Some("http://10.0.0.1/ipxe.efi")
    );
    assert_eq!(c.boot.arm64.as_deref(), Some("ipxe-arm64.efi"));
    assert!(
        c.boot
            .cmdline
            .as_deref()
            .unwrap()
            .contains("{{ host.install_url }}")
    );
    assert!(!c.install.bind_to_lease);
    assert_eq!(c.http.root, Some(PathBuf::from(&f.root)));
    assert_eq!(c.install.server_url.as_deref(), Some("http://10.0.0.1"));
    assert_eq!(c.install.vars.len(), 2);
    assert_eq!(c.hosts.len(), 1);
    let h = &c.hosts[0];
    assert_eq!(h.hostname.as_deref(), Some("node01"));
    assert!(h.uuid.is_some() && h.mac.is_some());
    assert_eq!(h.next_boot, NextBoot::Install);
    assert_eq!(h.boot.kernel.as_deref(), Some("vmlinuz-6.1"));
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display().to_string();
    Fixture { _dir: dir, root }
}

fn parse_err(text: &str) -> ConfigError {
    match Config::parse(text, Path::new("/etc/pxe.toml")) {
        Err(e) => e,
        Ok(c) => panic!("expected an error for {text:?}, got {c:?}"),
    }
}

fn assert_err(text: &str, line: usize, key: &str, reason_has: &str) {
    let e = parse_err(text);
    assert_eq!((e.line, e.key.as_str()), (line, key), "{e}");
    assert!(e.reason.contains(reason_has), "{e}");
    assert_eq!(e.file, Path::new("/etc/pxe.toml"));
    assert!(
        e.to_string()
            .starts_with(&format!("/etc/pxe.toml:{line}: {key}: ")),
        "{e}"
    );
}

#[test]
fn control_socket_default_and_bad_path() {
    let f = fixture();
    let c = Config::parse(&format!("[tftp]\nroot = \"{}\"\n", f.root), Path::new("x")).unwrap();
    assert_eq!(c.control.socket, Path::new(DEFAULT_CONTROL_SOCKET));
    let long = "a".repeat(120);
    assert_err(
        &format!(
            "[tftp]\nroot = \"{}\"\n[control]\nsocket = \"/{long}\"\n",
            f.root
        ),
        4,
        "control.socket",
        "not a usable socket path",
    );
    assert_err(
        &format!(
            "[tftp]\nroot = \"{}\"\n[control]\nsockett = \"/x\"\n",
            f.root
        ),
        4,
        "control.sockett",
        "unknown field",
    );
}

#[test]
fn metrics_listener_default_and_bad_lists() {
    let f = fixture();
    let tftp = format!("[tftp]\nroot = \"{}\"\n", f.root);
    let c = Config::parse(&tftp, Path::new("x")).unwrap();
    assert!(c.metrics.enabled);
    assert_eq!(
        c.metrics.listen,
        vec![std::net::SocketAddr::from(([127, 0, 0, 1], 9469))]
    );
    assert_err(
        &format!("{tftp}[metrics]\nlisten = []\n"),
        4,
        "metrics.listen",
        "at least one address",
    );
    assert_err(
        &format!("{tftp}[metrics]\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n"),
        4,
        "metrics.listen",
        "127.0.0.1:1 is listed twice",
    );
    assert_err(
        &format!("{tftp}[metrics]\nlisten = [\"localhost\"]\n"),
        4,
        "metrics.listen[0]",
        "invalid socket address",
    );
    let off = Config::parse(
        &format!("{tftp}[metrics]\nenabled = false\nlisten = []\n"),
        Path::new("x"),
    )
    .unwrap();
    assert!(!off.metrics.enabled);
    // A new listen address waits for a restart.
    let moved = Config::parse(
        &format!("{tftp}[metrics]\nlisten = [\"127.0.0.1:9100\"]\n"),
        Path::new("x"),
    )
    .unwrap();
    let plan = c.reload_plan(&moved);
    assert_eq!(plan.needs_restart, vec!["metrics"]);
    assert_eq!(plan.effective.metrics, c.metrics);
}

#[test]
fn reload_plan_applies_policy_and_keeps_sockets() {
    let f = fixture();
    let base = format!(
        "[tftp]\nroot = \"{}\"\n[dhcp]\nenabled = true\nmode = \"proxy\"\ninterfaces = [\"a\"]\n\
         [xdp]\nmode = \"skb\"\nrate_per_sec = 5\n",
        f.root
    );
    let old = Config::parse(&base, Path::new("x")).unwrap();
    // Same file: nothing to restart, nothing changes.
    let same = old.reload_plan(&old);
    assert_eq!(same.effective, old);
    assert!(same.needs_restart.is_empty());

    let changed = base
        .replace("rate_per_sec = 5", "rate_per_sec = 9\ndrop_non_pxe = true")
        .replace("[\"a\"]", "[\"a\", \"b\"]")
        .replace("mode = \"skb\"", "mode = \"driver\"")
        .replace("[xdp]", "[boot]\nbios = \"new.kpxe\"\n[xdp]")
        + "[[hosts]]\nmac = \"02:00:00:00:00:01\"\n[control]\nsocket = \"/run/other.sock\"\n";
    let new = Config::parse(&changed, Path::new("x")).unwrap();
    let plan = old.reload_plan(&new);
    assert_eq!(
        plan.needs_restart,
        vec!["control", "dhcp.interfaces", "xdp.mode/xdp.interfaces"]
    );
    let e = &plan.effective;
    // Applied now:
    assert_eq!((e.xdp.rate_per_sec, e.xdp.drop_non_pxe), (9, true));
    assert_eq!(e.boot.bios.as_deref(), Some("new.kpxe"));
    assert_eq!(e.hosts.len(), 1);
    // Kept until a restart:
    assert_eq!(e.dhcp.interfaces, vec!["a".to_owned()]);
    assert_eq!(e.xdp.mode, XdpChoice::Skb);
    assert_eq!(e.control, old.control);
    assert_eq!(e.tftp, old.tftp);
}

#[test]
fn load_reads_the_file_and_names_it() {
    let f = fixture();
    let path = Path::new(&f.root).join("pxe.toml");
    std::fs::write(
        &path,
        format!("[tftp]\nroot = \"{}\"\nthreads = 2\n", f.root),
    )
    .unwrap();
    assert_eq!(Config::load(&path).unwrap().tftp.threads, 2);
    std::fs::write(&path, "[tftp]\n\nmax_retries = 0\n").unwrap();
    let e = Config::load(&path).unwrap_err();
    assert_eq!(e.file, path);
    let missing = Path::new(&f.root).join("missing.toml");
    let e = Config::load(&missing).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (0, "(file)"));
    assert!(
        e.to_string()
            .starts_with(&format!("{}:0: (file): cannot read", missing.display()))
    );
}

#[test]
fn unknown_keys() {
    let f = fixture();
    let r = &f.root;
    assert_err(
        &format!("[tftp]\nroot = \"{r}\"\n\nbogus = 1\n"),
        4,
        "tftp.bogus",
        "unknown field `bogus`",
    );
    assert_err(
        "# comment\n[dhcpv6]\nx = 1\n",
        2,
        "dhcpv6",
        "unknown field `dhcpv6`",
    );
    assert_err(
        &format!("[tftp]\nroot = \"{r}\"\n[dhcp]\nx = 1\n"),
        4,
        "dhcp.x",
        "unknown field `x`",
    );
    assert_err(
        &format!("tftp.root = \"{r}\"\ntftp.blocksize = 512\n"),
        2,
        "tftp.blocksize",
        "unknown field",
    );
}

#[test]
fn type_errors() {
    let f = fixture();
    let r = &f.root;
    assert_err(
        &format!("[tftp]\nroot = \"{r}\"\n\nmax_blksize = \"big\"\n"),
        4,
        "tftp.max_blksize",
        "invalid type",
    );
    assert_err(
        &format!("[tftp]\nroot = \"{r}\"\nmax_blksize = 70000\n"),
        3,
        "tftp.max_blksize",
        "70000",
    );
    assert_err(
        &format!("[tftp]\nroot = \"{r}\"\nmax_retries = -1\n"),
        3,
        "tftp.max_retries",
        "-1",
    );
    assert_err(
        &format!("[tftp]\nroot = \"{r}\"\nengine = \"fast\"\n"),
        3,
        "tftp.engine",
        "unknown variant `fast`",
    );
    assert_err(
        &format!("[tftp]\nroot = \"{r}\"\nlisten = [\n  \"0.0.0.0:69\",\n  \"nope\",\n]\n"),
        5,
        "tftp.listen[1]",
        "invalid socket address",
    );
    assert_err(
        &format!("[tftp]\nroot = \"{r}\"\ngso = 1\n"),
        3,
        "tftp.gso",
        "expected a boolean",
    );
    assert_err("tftp = 5\n", 1, "tftp", "invalid type");
}

#[test]
fn syntax_errors() {
    let f = fixture();
    let r = &f.root;
    assert_err(
        &format!("[tftp]\nroot = \"{r}\"\nmax_blksize = \n"),
        3,
        "tftp.max_blksize",
        "",
    );
    assert_err(
        &format!("\n[tftp\nroot = \"{r}\"\n"),
        2,
        "tftp",
        "invalid table header",
    );
    assert_err(
        &format!("[tftp]\nroot = \"{r}\"\n[tftp]\n"),
        3,
        "tftp",
        "duplicate key",
    );
    assert_err(
        &format!("[tftp]\nroot = \"{r}\"\nthreads = 1\nthreads = 2\n"),
        4,
        "tftp.threads",
        "duplicate key",
    );
}

#[test]
fn key_lines_are_found_or_absent() {
    let text = "# c\n[tftp]\nthreads = 1\n\n  max_retries = 3\n";
    let doc = toml_edit::ImDocument::parse(text).unwrap();
    assert_eq!(key_line(&doc, text, &["tftp", "threads"]), Some(3));
    assert_eq!(key_line(&doc, text, &["tftp", "max_retries"]), Some(5));
    assert_eq!(key_line(&doc, text, &["tftp", "root"]), None);
    assert_eq!(key_line(&doc, text, &["dhcp", "root"]), None);
    assert_eq!(line_at(text, 0), 1);
    assert_eq!(line_at(text, text.len() + 10), 6);
}
