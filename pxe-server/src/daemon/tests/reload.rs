//! SIGHUP reloads against a config file in a temporary directory: what applies now, what
//! waits for a restart, what a bad file changes (nothing), and what the DHCP thread receives.

use super::*;
use crate::engine::EngineChoice;

const DHCP: &str = "[dhcp]\nenabled = true\ninterfaces = [\"eth1\"]\n";

#[test]
fn hosts_and_policy_apply_now_and_sockets_wait_for_a_restart() {
    let f = Fixture::new();
    f.write(DHCP);
    let mut state = f.state(Overrides::default());
    let rx = with_dhcp(&mut state, &[("eth1", Placement::Userspace)]);
    // New: a host, the filter policy and the lease time (now); the TFTP listen address and
    // the DHCP interfaces (at the next start).
    let text = "[dhcp]\nenabled = true\ninterfaces = [\"eth2\"]\nlease_time_secs = 600\n\
                [xdp]\ndrop_non_pxe = true\nrate_per_sec = 5\n\
                [[hosts]]\nmac = \"52:54:00:00:00:01\"\nhostname = \"n1\"\n";
    std::fs::write(
        f.config_path(),
        format!(
            "[tftp]\nroot = {:?}\nlisten = [\"127.0.0.1:7070\"]\n{text}",
            f.path("root")
        ),
    )
    .unwrap();
    state.reload();

    assert_eq!(state.reloads, 1);
    let last = state.last_reload.clone().unwrap();
    assert!(last.ok, "{last:?}");
    assert_eq!(last.error, None);
    assert_eq!(last.needs_restart, ["tftp", "dhcp.interfaces"]);
    // Running: the new answer settings, hosts and policy; the old sockets.
    assert_eq!(
        state.running.tftp.listen,
        ["127.0.0.1:6969".parse().unwrap()]
    );
    assert_eq!(state.running.dhcp.interfaces, ["eth1"]);
    assert_eq!(state.running.dhcp.lease_time_secs, 600);
    assert!(state.running.xdp.drop_non_pxe);
    assert_eq!(state.hosts.len(), 1);
    // The DHCP thread got the same, once.
    let sent = rx.try_recv().unwrap();
    assert!(rx.try_recv().is_err());
    assert_eq!(sent.settings.interfaces, ["eth1"]);
    assert_eq!(sent.settings.lease_time_secs, 600);
    assert_eq!(sent.settings.hosts.len(), 1);
    assert_eq!(sent.policy, state.running.xdp.policy_set(&state.hosts));
    assert_ne!(sent.policy.policy.flags & pxe_ebpf::POLICY_DROP_NON_PXE, 0);
    assert_eq!(sent.policy.policy.rate_per_sec, 5);
    // And the status shows it.
    let status = state.status();
    assert_eq!(status.reload.count, 1);
    assert_eq!(status.reload.last, Some(last));
    assert!(status.filter.unwrap().policy.drop_non_pxe);
}

#[test]
fn a_bad_file_is_refused_and_the_running_config_stays() {
    let f = Fixture::new();
    f.write(DHCP);
    let mut state = f.state(Overrides::default());
    let rx = with_dhcp(&mut state, &[("eth1", Placement::Userspace)]);
    let before = state.running.clone();
    f.write(&format!("{DHCP}[xdp]\nrate_per_sec = \"fast\"\n"));
    state.reload();

    assert_eq!(state.reloads, 1);
    let last = state.last_reload.clone().unwrap();
    assert!(!last.ok);
    let error = last.error.unwrap();
    assert!(
        error.starts_with(&format!(
            "{}:8: xdp.rate_per_sec: ",
            f.config_path().display()
        )),
        "{error}"
    );
    assert!(last.needs_restart.is_empty());
    assert_eq!(state.running, before);
    assert!(rx.try_recv().is_err(), "nothing sent to the DHCP thread");

    // A template error refuses the file as well.
    f.write(&format!(
        "{DHCP}[install]\ntemplates = {:?}\n",
        f.path("no-such-dir")
    ));
    state.reload();
    assert_eq!(state.reloads, 2);
    assert!(!state.last_reload.as_ref().unwrap().ok);
    assert_eq!(state.running, before);

    // The next good file is taken.
    f.write(&format!("{DHCP}[xdp]\nrate_per_sec = 9\n"));
    state.reload();
    assert_eq!(state.reloads, 3);
    assert!(state.last_reload.as_ref().unwrap().ok);
    assert_eq!(state.running.xdp.rate_per_sec, 9);
    assert_eq!(rx.try_recv().unwrap().policy.policy.rate_per_sec, 9);
}

#[test]
fn a_stopped_dhcp_service_is_reported() {
    let f = Fixture::new();
    f.write(DHCP);
    let mut state = f.state(Overrides::default());
    drop(with_dhcp(&mut state, &[]));
    f.write(&format!("{DHCP}[xdp]\nrate_per_sec = 9\n"));
    state.reload();
    let last = state.last_reload.clone().unwrap();
    assert!(!last.ok);
    assert_eq!(last.error.as_deref(), Some("the DHCP service has stopped"));
    // The rest of the server runs with the new file.
    assert_eq!(state.running.xdp.rate_per_sec, 9);
}

#[test]
fn without_dhcp_a_reload_still_applies() {
    let f = Fixture::new();
    f.write("");
    let mut state = f.state(Overrides::default());
    f.write("[[hosts]]\nmac = \"52:54:00:00:00:01\"\n");
    state.reload();
    let last = state.last_reload.clone().unwrap();
    assert!(last.ok && last.error.is_none() && last.needs_restart.is_empty());
    assert_eq!(state.hosts.len(), 1);
}

/// `--engine` and `--threads` hold across reloads: the file's own values do not count as a
/// TFTP change needing a restart.
#[test]
fn command_line_overrides_hold_across_reloads() {
    let f = Fixture::new();
    f.write("engine = \"auto\"\nthreads = 4\n");
    let overrides = Overrides {
        engine: Some(EngineChoice::Portable),
        threads: Some(2),
    };
    let mut state = f.state(overrides);
    assert_eq!(state.running.tftp.threads, 2);
    f.write("engine = \"auto\"\nthreads = 8\n");
    state.reload();
    let last = state.last_reload.clone().unwrap();
    assert!(last.ok);
    assert!(last.needs_restart.is_empty(), "{last:?}");
    assert_eq!(state.running.tftp.engine, EngineChoice::Portable);
    assert_eq!(state.running.tftp.threads, 2);
}

/// The install routes are replaced whole: a host the new file adds is known to them.
#[test]
fn the_install_routes_get_the_new_hosts() {
    let f = Fixture::new();
    f.write("");
    let mut state = f.state(Overrides::default());
    let slot = with_install(&mut state);
    // What iPXE on 52:54:00:00:00:01 asks; an unknown machine is counted.
    let ask = || {
        let reply = slot.get().unwrap().handle(&crate::install::Request {
            method: "GET",
            path: "/boot.ipxe",
            query: Some("mac=52-54-00-00-00-01"),
            server_url: "http://x",
            peer: None,
            now_unix: 1,
        });
        assert_eq!(reply.unwrap().status, 200);
    };
    let unknown_hosts = |state: &DaemonState| state.install_metrics.unknown_hosts.get();
    ask();
    assert_eq!(unknown_hosts(&state), 1);
    let before = slot.get().unwrap();
    f.write("[[hosts]]\nmac = \"52:54:00:00:00:01\"\nhostname = \"n1\"\n");
    state.reload();
    assert!(!Arc::ptr_eq(&before, &slot.get().unwrap()));
    ask();
    assert_eq!(unknown_hosts(&state), 1, "known after the reload");
}
