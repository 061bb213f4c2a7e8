//! The running daemon: start-up and shut-down ([`serve`]), the control thread ([`control`]:
//! the periodic metrics log, SIGHUP [`reload`]s, the [`status`] document and the `host`
//! requests), the control socket itself ([`socket`]) and its typed [`messages`], and the client
//! side of `pxe-server status` and `pxe-server host` ([`client`]).
//!
//! The control thread's state is a [`DaemonState`]: the configuration in effect and a handle
//! on each running service. It owns no socket, so reloads and status documents are built and
//! tested without one.

pub mod client;
mod control;
pub mod messages;
mod reload;
mod serve;
pub mod socket;
mod status;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

pub use client::HostError;
pub use serve::{ServeError, serve};

use crate::config::{Config, ConfigError};
use crate::dhcp::DhcpReload;
use crate::dhcp::metrics::DhcpMetrics;
use crate::engine::EngineChoice;
use crate::hosts::HostIndex;
use crate::http::HttpMetrics;
use crate::install::{InstallMetrics, InstallSlot};
use crate::nextboot::NextBootStore;
use crate::templates::Templates;
use crate::tftp::metrics::TftpMetrics;
use crate::xdp::{FallbackCounters, Placement, XdpFilter, format_counters};
use messages::LastReload;

/// The config file and the templates it names, each checked (a template is rendered for every
/// host), or the first error with its file and line.
pub fn load(path: &Path) -> Result<(Config, Arc<Templates>), ConfigError> {
    let config = Config::load(path)?;
    let templates = config.load_templates()?;
    Ok((config, Arc::new(templates)))
}

/// Command-line settings that win over the file's, at start and on every reload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--engine` (`tftp.engine`).
    pub engine: Option<EngineChoice>,
    /// `--threads` (`tftp.threads`).
    pub threads: Option<usize>,
}

impl Overrides {
    pub fn apply(&self, config: &mut Config) {
        if let Some(e) = self.engine {
            config.tftp.engine = e;
        }
        if let Some(t) = self.threads {
            config.tftp.threads = t;
        }
    }
}

/// What the control thread knows of the running daemon: the configuration in effect, a handle
/// on each service (its counters, and what a reload replaces), and the reloads so far.
struct DaemonState {
    config_path: PathBuf,
    overrides: Overrides,
    /// The configuration in effect.
    running: Config,
    /// Its `[[hosts]]` index (replaced by a reload).
    hosts: Arc<HostIndex>,
    /// The install templates in effect (replaced by a reload).
    templates: Arc<Templates>,
    started: Instant,
    /// The TFTP engine running (`uring`, `portable`) and its threads.
    engine: String,
    threads: usize,
    tftp: Arc<TftpMetrics>,
    dhcp: Option<DhcpControl>,
    http: Option<Arc<HttpMetrics>>,
    /// The HTTP install routes (replaced on reload), their counters, and what they read: the
    /// hosts' next-boot actions and the lease database for addresses.
    install: Option<Arc<InstallSlot>>,
    install_metrics: Arc<InstallMetrics>,
    /// With the lease database; absent without one.
    next_boot: Option<Arc<NextBootStore>>,
    db: Option<crate::store::Store>,
    /// Proxy mode: the addresses hosts asked from on port 4011 (the DHCP thread writes them,
    /// the install routes read them; they outlive a reload).
    learned: Option<Arc<crate::dhcp::learned::LearnedAddresses>>,
    /// Each host's boot journey and the timing histograms (the table outlives a reload).
    journeys: Arc<crate::journey::Journeys>,
    reloads: u64,
    last_reload: Option<LastReload>,
    /// What the process gave up at start (the account it runs as, its seccomp mode).
    privileges: crate::privilege::Dropped,
}

/// The DHCP side as the control thread sees it.
struct DhcpControl {
    metrics: Arc<DhcpMetrics>,
    /// Reloaded configurations for the DHCP thread (responder tables, fallback policy).
    reload: crossbeam::channel::Sender<DhcpReload>,
    /// Owned here: the maps are rewritten on reload and the program detaches when this ends.
    xdp: Option<XdpFilter>,
    placements: Vec<(String, Placement)>,
    fallback: Arc<FallbackCounters>,
}

impl DhcpControl {
    fn xdp_counters(&self) -> Option<Result<[u64; pxe_ebpf::COUNTER_COUNT as usize], String>> {
        self.xdp
            .as_ref()
            .map(|x| x.counters().map_err(|e| e.to_string()))
    }

    fn log_filter(&self) {
        match self.xdp_counters() {
            Some(Ok(c)) => tracing::info!(counters = %format_counters(&c), "XDP filter counters"),
            Some(Err(e)) => tracing::warn!(%e, "XDP counters unreadable"),
            None => {}
        }
        tracing::info!(
            counters = %format_counters(&self.fallback.get()),
            "userspace DHCP filter counters"
        );
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
