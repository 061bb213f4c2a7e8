//! The status document, built from a daemon state, against the document the untyped code
//! sent (key names, order, nesting, value types, `null` sections).

use serde_json::json;

use super::*;

/// The document as the control socket sends it, with the process-dependent values zeroed.
fn document(state: &DaemonState) -> String {
    let mut report = state.status();
    assert_eq!(report.server.pid, std::process::id());
    report.server.pid = 0;
    report.server.uptime_secs = 0;
    // What the kernel reports of this test process (its own uids and capabilities).
    assert_eq!(
        report.server.process.kernel,
        crate::privilege::ProcessIdentity::current()
    );
    report.server.process.kernel = crate::privilege::ProcessIdentity::default();
    serde_json::to_string(&report).unwrap()
}

/// The `server` section for the fixture's config, as [`document`] leaves it.
fn server(f: &Fixture) -> serde_json::Value {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": 0,
        "config": f.config_path().display().to_string(),
        "uptime_secs": 0,
        "process": {
            "user": null,
            "seccomp_mode": "off",
            "kernel": {
                "uid": [], "gid": [], "cap_eff": "", "cap_prm": "",
                "no_new_privs": false, "seccomp": 0,
            },
        },
    })
}

#[test]
fn tftp_only_status_has_null_sections() {
    let f = Fixture::new();
    f.write("");
    let state = f.state(Overrides::default());
    crate::metrics::add(&state.tftp.sessions_started, 3);
    let want = json!({
        "server": server(&f),
        "reload": { "count": 0, "last": null },
        "tftp": {
            "engine": "portable",
            "threads": 1,
            "listen": ["127.0.0.1:6969"],
            "root": f.path("root").display().to_string(),
            "metrics": state.tftp.snapshot(),
        },
        "dhcp": null,
        "http": null,
        "filter": null,
    });
    assert_eq!(document(&state), want.to_string());
    assert_eq!(
        serde_json::to_value(state.tftp.snapshot()).unwrap()["sessions_started"],
        3
    );
    // What `pxe-server status` prints from it.
    let text = crate::daemon::socket::render_text(&serde_json::to_value(state.status()).unwrap());
    for line in [
        "tftp:\n  engine: portable\n  threads: 1\n  listen: 127.0.0.1:6969\n",
        "    sessions_started: 3\n",
        "reload:\n  count: 0\n  last: -\n",
        "dhcp: -\nhttp: -\nfilter: -\n",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
}

#[test]
fn full_status_has_every_section_in_the_old_shape() {
    let f = Fixture::new();
    f.write(
        "[http]\nenabled = true\nlisten = [\"[::1]:8080\"]\n\
         [dhcp]\nenabled = true\ninterfaces = [\"eth1\", \"eth2\"]\n\
         [xdp]\ndrop_non_pxe = true\nrate_per_sec = 5\nburst = 7\n\
         deny = [\"52:54:00:00:00:99\", \"52:54:00:00:00:98\"]\n",
    );
    let mut state = f.state(Overrides::default());
    let _rx = with_dhcp(
        &mut state,
        &[("eth1", Placement::Skb), ("eth2", Placement::Userspace)],
    );
    with_install(&mut state);
    state.reloads = 1;
    state.last_reload = Some(crate::daemon::messages::LastReload {
        at_unix: 9,
        ok: true,
        error: None,
        needs_restart: vec!["dhcp.interfaces"],
    });
    let dhcp = state.dhcp.as_ref().unwrap();
    crate::metrics::add(&dhcp.metrics.received, 4);
    let http = state.http.as_ref().unwrap();
    crate::metrics::add(&http.requests, 2);
    crate::metrics::inc(&state.install_metrics.callbacks);
    let root = f.path("root").display().to_string();
    let want = json!({
        "server": server(&f),
        "reload": {
            "count": 1,
            "last": { "at_unix": 9, "ok": true, "error": null, "needs_restart": ["dhcp.interfaces"] },
        },
        "tftp": {
            "engine": "portable",
            "threads": 1,
            "listen": ["127.0.0.1:6969"],
            "root": root,
            "metrics": state.tftp.snapshot(),
        },
        "dhcp": {
            "mode": "proxy",
            "interfaces": ["eth1", "eth2"],
            "metrics": dhcp.metrics.snapshot(),
        },
        "http": {
            "listen": ["[::1]:8080"],
            "root": root,
            "metrics": http.snapshot(),
            "install": {
                "scripts_install": 0,
                "scripts_local": 0,
                "scripts_withheld": 0,
                "templates_rendered": 0,
                "callbacks": 1,
                "unknown_hosts": 0,
                "refused_token": 0,
                "refused_address": 0,
                "errors": 0,
            },
            // The built-in iPXE scripts (no `[install] templates` directory).
            "templates": ["ipxe/install.ipxe", "ipxe/local.ipxe"],
        },
        "filter": {
            "policy": {
                "drop_non_pxe": true,
                "rate_per_sec": 5,
                "burst": 7,
                "allow_list": false,
                "deny": 2,
            },
            "interfaces": [
                { "name": "eth1", "placement": "skb" },
                { "name": "eth2", "placement": "userspace" },
            ],
            "xdp": null,
            "userspace": {
                "seen": 0,
                "passed": 0,
                "dropped_not_pxe": 0,
                "dropped_rate": 0,
                "dropped_denied": 0,
                "malformed": 0,
            },
        },
    });
    assert_eq!(document(&state), want.to_string());
    let doc: serde_json::Value = serde_json::from_str(&document(&state)).unwrap();
    assert_eq!(doc["dhcp"]["metrics"]["received"], 4);
    assert_eq!(doc["http"]["metrics"]["requests"], 2);
}

/// Proxy mode: the learned host addresses' counters are in the DHCP section.
#[test]
fn proxy_mode_status_counts_learned_addresses_and_conflicts() {
    let f = Fixture::new();
    f.write("");
    let mut state = f.state(Overrides::default());
    let _rx = with_dhcp(&mut state, &[]);
    let doc = |state: &DaemonState| -> serde_json::Value {
        serde_json::from_str(&state.answer_line("status")).unwrap()
    };
    assert!(doc(&state)["dhcp"].get("learned").is_none());
    let learned = Arc::new(crate::dhcp::learned::LearnedAddresses::default());
    learned.learn("mac:1", "n1", "10.0.0.5".parse().unwrap(), 100);
    learned.learn("mac:1", "n1", "10.0.0.6".parse().unwrap(), 101);
    state.learned = Some(learned);
    let d = doc(&state);
    assert_eq!(d["dhcp"]["learned"]["learned"], 2, "{d}");
    assert_eq!(d["dhcp"]["learned"]["conflicts"], 1, "{d}");
}
