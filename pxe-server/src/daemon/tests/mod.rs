//! The daemon's tests: the typed messages, status documents, reloads and the control thread's
//! answers, on a [`DaemonState`] built here (no service threads, no sockets but where a test
//! says so); one file per part beside this one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::dhcp::DhcpReload;
use crate::xdp::Placement;

mod control;
mod messages;
mod reload;
mod status;

/// A temporary directory with the TFTP root `root/` and the config file `pxe.toml`.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("root")).unwrap();
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config_path(&self) -> PathBuf {
        self.path("pxe.toml")
    }

    /// Writes the config file: a TFTP section on this root, then `rest`.
    fn write(&self, rest: &str) {
        let text = format!(
            "[tftp]\nroot = {:?}\nlisten = [\"127.0.0.1:6969\"]\n{rest}",
            self.path("root")
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// The state of a daemon started on the config file as it is now, with `overrides`: TFTP
    /// only (no DHCP, HTTP or install routes; see [`with_dhcp`] and [`with_install`]).
    fn state(&self, overrides: Overrides) -> DaemonState {
        let (mut running, templates) = load(&self.config_path()).unwrap();
        overrides.apply(&mut running);
        DaemonState {
            config_path: self.config_path(),
            overrides,
            hosts: running.host_index(),
            running,
            templates,
            started: Instant::now(),
            engine: "portable".to_owned(),
            threads: 1,
            tftp: Arc::default(),
            dhcp: None,
            http: None,
            install: None,
            install_metrics: Arc::default(),
            next_boot: None,
            db: None,
            learned: None,
            journeys: Arc::default(),
            reloads: 0,
            last_reload: None,
            privileges: crate::privilege::Dropped {
                switched_to: None,
                uid: 0,
                gid: 0,
                seccomp: crate::privilege::SeccompMode::Off,
            },
        }
    }
}

/// Gives `state` a DHCP side whose thread is the test: it holds the receiver of the reloads.
fn with_dhcp(
    state: &mut DaemonState,
    placements: &[(&str, Placement)],
) -> crossbeam::channel::Receiver<DhcpReload> {
    let (tx, rx) = crossbeam::channel::unbounded();
    state.dhcp = Some(DhcpControl {
        metrics: Arc::default(),
        reload: tx,
        xdp: None,
        placements: placements
            .iter()
            .map(|(name, p)| ((*name).to_owned(), *p))
            .collect(),
        fallback: Arc::default(),
    });
    rx
}

/// Gives `state` install routes (as with `[http] enabled`), built from its running config.
fn with_install(state: &mut DaemonState) -> Arc<InstallSlot> {
    let slot = Arc::new(InstallSlot::new(crate::install::InstallService::new(
        Arc::new(state.running.install_settings(&state.hosts)),
        Arc::clone(&state.templates),
        state.next_boot.clone(),
        state.db.clone(),
        Arc::clone(&state.install_metrics),
    )));
    state.install = Some(Arc::clone(&slot));
    state.http = Some(Arc::default());
    slot
}

/// A next-boot store in `dir` (the lease database's file), as a server in full mode has.
fn with_next_boot(state: &mut DaemonState, path: &Path) {
    let db = crate::dhcp::leases::open_database(path).unwrap();
    state.next_boot = Some(Arc::new(NextBootStore::open(Arc::clone(&db)).unwrap()));
    state.db = Some(crate::store::Store::Redb {
        db,
        path: path.to_path_buf(),
    });
}
