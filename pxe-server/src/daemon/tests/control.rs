//! The control thread's answers, by request, and the `host` client against them: through a
//! control socket in a temporary directory, and on the database directly with no server.

use std::time::Duration;

use super::*;
use crate::config::Config;
use crate::daemon::socket::ControlSocket;
use crate::hosts::NextBoot;
use crate::nextboot::HostAction;

const HOSTS: &str = "[[hosts]]\nmac = \"52:54:00:00:00:01\"\nhostname = \"n1\"\n\
                     [[hosts]]\nmac = \"52:54:00:00:00:02\"\nhostname = \"n2\"\n";

#[test]
fn requests_are_answered_with_the_old_documents() {
    let f = Fixture::new();
    f.write(HOSTS);
    let state = f.state(Overrides::default());
    let cases = [
        (
            "bogus",
            r#"{"ok":false,"error":"unknown request \"bogus\""}"#,
        ),
        (
            "status please",
            r#"{"ok":false,"error":"unknown request \"status please\""}"#,
        ),
        (
            "host wipe all",
            r#"{"ok":false,"error":"unknown host action \"wipe\" (reinstall, local, show)"}"#,
        ),
        // Without the lease database there is no host state to show or set.
        (
            "host show all",
            r#"{"ok":false,"error":"this server keeps no host state (it needs the lease database: [dhcp] enabled in full mode)"}"#,
        ),
    ];
    for (request, answer) in cases {
        assert_eq!(state.answer_line(request), answer, "{request}");
    }
    let status: serde_json::Value = serde_json::from_str(&state.answer_line("status")).unwrap();
    let keys: Vec<&str> = status
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["server", "reload", "tftp", "dhcp", "http", "filter"]);
    // The journeys: the hosts document, a bad query refused with its key.
    let hosts: serde_json::Value = serde_json::from_str(&state.answer_line("hosts")).unwrap();
    assert_eq!(
        (hosts["version"].as_u64(), hosts["total"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(
        state.answer_line("hosts phase=nope"),
        r#"{"ok":false,"error":"hosts query: phase: unknown phase \"nope\" (one of discover, offer, ack, boot_file, script, kernel, initrd, template, callback)"}"#
    );
}

/// The config `pxe-server host --config` reads: the fixture's file with its own control
/// socket and lease database.
fn client_config(f: &Fixture) -> Config {
    f.write(&format!(
        "{HOSTS}[dhcp]\nlease_db = {:?}\n[control]\nsocket = {:?}\n",
        f.path("leases.redb"),
        f.path("ctl.sock")
    ));
    Config::load(&f.config_path()).unwrap()
}

#[test]
fn host_commands_through_the_server_and_offline() {
    let f = Fixture::new();
    let config = client_config(&f);
    let mut state = f.state(Overrides::default());
    with_next_boot(&mut state, &f.path("leases.redb"));
    let socket = ControlSocket::bind(&config.control.socket).unwrap();
    let client = std::thread::spawn({
        let config = config.clone();
        move || {
            let set = client::host(&config, HostAction::Reinstall, "n2").unwrap();
            let unknown = client::host(&config, HostAction::Local, "n9").unwrap();
            (set, unknown)
        }
    });
    let mut served = 0;
    for _ in 0..500 {
        served += socket.serve_pending(|line| state.answer_line(line));
        if served == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (set, unknown) = client.join().unwrap();
    assert!(set.ok, "{set:?}");
    assert_eq!(set.changed, Some(1));
    let row = &set.hosts.as_ref().unwrap()[0];
    assert_eq!(
        (row.name.as_str(), row.key.as_deref(), row.next_boot),
        ("n2", Some("mac:52:54:00:00:00:02"), NextBoot::Install)
    );
    assert!(row.changed_unix.is_some());
    assert!(!unknown.ok);
    assert!(
        unknown.error.as_deref().unwrap().contains("n9"),
        "{unknown:?}"
    );
    assert_eq!(client::render_host_text(&unknown, HostAction::Local), "");

    // The server stops: its socket goes, the database is free, the client opens it.
    drop(socket);
    drop(state);
    let shown = client::host(&config, HostAction::Show, "all").unwrap();
    let boots: Vec<NextBoot> = shown
        .hosts
        .as_ref()
        .unwrap()
        .iter()
        .map(|r| r.next_boot)
        .collect();
    assert_eq!(boots, [NextBoot::Local, NextBoot::Install]);
    // `show` gives each host's install token (made now for hosts that had none).
    let tokens: Vec<&str> = shown
        .hosts
        .as_ref()
        .unwrap()
        .iter()
        .map(|r| r.token.as_deref().unwrap())
        .collect();
    assert!(tokens.iter().all(|t| t.len() == 32), "{tokens:?}");
    assert_eq!(
        client::render_host_text(&shown, HostAction::Show),
        format!(
            "{:<78} token {}\n{:<78} token {}\n",
            format!("{:<24} {:<44} local", "n1", "mac:52:54:00:00:00:01"),
            tokens[0],
            format!("{:<24} {:<44} install", "n2", "mac:52:54:00:00:00:02"),
            tokens[1],
        )
    );
    // Only `show` carries tokens.
    assert!(set.hosts.as_ref().unwrap()[0].token.is_none());
    // n1 had no record yet, n2 was to install: both get one.
    let set = client::host(&config, HostAction::Local, "n*").unwrap();
    let text = client::render_host_text(&set, HostAction::Local);
    assert!(text.ends_with(" local\n2 changed\n"), "{text}");
}

#[test]
fn host_without_server_or_database_names_both() {
    let f = Fixture::new();
    let mut config = client_config(&f);
    // Its directory is a file: the database cannot be created.
    std::fs::write(f.path("plain"), b"").unwrap();
    config.dhcp.lease_db = f.path("plain/leases.redb");
    let e = client::host(&config, HostAction::Show, "all").unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "no server answers on {} and {} cannot be opened: ",
            f.path("ctl.sock").display(),
            config.dhcp.lease_db.display()
        )),
        "{text}"
    );
}

/// In a running daemon, `host ... show` gives the token the install routes take, and
/// `host ... reinstall` replaces it: the old one gets the 404 from the next request on.
#[test]
fn reinstall_in_a_running_daemon_kills_the_old_token_at_once() {
    let f = Fixture::new();
    f.write(&format!(
        "{HOSTS}[boot]\nkernel = \"k\"\ninitrd = \"i\"\ncmdline = \"ks={{{{ host.install_url }}}}/x\"\n"
    ));
    let mut state = f.state(Overrides::default());
    with_next_boot(&mut state, &f.path("leases.redb"));
    let slot = with_install(&mut state);
    let ask = |line: &str| -> serde_json::Value {
        serde_json::from_str(&state.answer_line(line)).unwrap()
    };
    let token_of_n1 =
        |doc: serde_json::Value| doc["hosts"][0]["token"].as_str().unwrap().to_owned();
    let old = token_of_n1(ask("host show n1"));
    let done = |token: &str| {
        let path = format!("/done/mac:52:54:00:00:00:01/{token}");
        let reply = slot.get().unwrap().handle(&crate::install::Request {
            method: "POST",
            path: &path,
            query: None,
            server_url: "http://x",
            peer: None,
            now_unix: 1,
        });
        reply.unwrap().status
    };
    assert_eq!(done(&old), 200);
    assert_eq!(ask("host reinstall n1")["ok"], true);
    assert_eq!(done(&old), 404);
    let new = token_of_n1(ask("host show n1"));
    assert_ne!(new, old);
    assert_eq!(done(&new), 200);
}
