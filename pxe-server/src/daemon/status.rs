//! The status document: the running configuration's key settings and every service's
//! counters, read when asked (the counters are summed then, never locked).

use super::messages::{
    DhcpStatus, FilterCounters, FilterInterface, FilterPolicy, FilterStatus, HttpStatus,
    ProcessStatus, ReloadStatus, ServerStatus, StatusReport, TftpStatus, XdpCounters,
};
use super::{DaemonState, DhcpControl};

impl DaemonState {
    /// What `pxe-server status` prints.
    pub(super) fn status(&self) -> StatusReport {
        let running = &self.running;
        let tftp = &running.tftp;
        StatusReport {
            server: ServerStatus {
                version: env!("CARGO_PKG_VERSION"),
                pid: std::process::id(),
                config: self.config_path.display().to_string(),
                uptime_secs: self.started.elapsed().as_secs(),
                process: ProcessStatus {
                    user: self.privileges.switched_to.clone(),
                    seccomp_mode: self.privileges.seccomp.to_string(),
                    kernel: crate::privilege::ProcessIdentity::current(),
                },
            },
            reload: ReloadStatus {
                count: self.reloads,
                last: self.last_reload.clone(),
            },
            tftp: TftpStatus {
                engine: self.engine.clone(),
                threads: self.threads,
                listen: tftp.listen.iter().map(|a| a.to_string()).collect(),
                root: tftp.root.display().to_string(),
                metrics: self.tftp.snapshot(),
            },
            dhcp: self.dhcp.as_ref().map(|d| DhcpStatus {
                mode: running.dhcp.mode,
                interfaces: running.dhcp.interfaces.clone(),
                metrics: d.metrics.snapshot(),
                learned: self.learned.as_ref().map(|l| l.snapshot()),
            }),
            http: self.http.as_ref().map(|m| HttpStatus {
                listen: running.http.listen.iter().map(|a| a.to_string()).collect(),
                root: running.http.root_or(&tftp.root).display().to_string(),
                metrics: m.snapshot(),
                install: self.install_metrics.snapshot(),
                templates: self.templates.names().to_vec(),
            }),
            filter: self.dhcp.as_ref().map(|d| self.filter_status(d)),
            store: self.db.as_ref().map(|s| s.view()),
        }
    }

    fn filter_status(&self, d: &DhcpControl) -> FilterStatus {
        let xdp = &self.running.xdp;
        FilterStatus {
            policy: FilterPolicy {
                drop_non_pxe: xdp.drop_non_pxe,
                rate_per_sec: xdp.rate_per_sec,
                burst: xdp.burst,
                allow_list: xdp.allow_list,
                deny: xdp.deny.len(),
            },
            interfaces: d
                .placements
                .iter()
                .map(|(name, p)| FilterInterface {
                    name: name.clone(),
                    placement: format!("{p:?}").to_lowercase(),
                })
                .collect(),
            xdp: d.xdp_counters().map(|c| match c {
                Ok(c) => XdpCounters::Read(FilterCounters(c)),
                Err(error) => XdpCounters::Unreadable { error },
            }),
            userspace: FilterCounters(d.fallback.get()),
        }
    }
}
