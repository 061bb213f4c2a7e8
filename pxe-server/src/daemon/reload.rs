//! SIGHUP: the config file is read again; what can change at run time changes now, the rest
//! waits for a restart, and a bad file changes nothing.

use std::sync::Arc;

use super::messages::LastReload;
use super::{DaemonState, unix_now};
use crate::config::Config;
use crate::dhcp::DhcpReload;
use crate::hosts::HostIndex;
use crate::install::InstallService;

impl DaemonState {
    /// Re-reads the config file and its templates. A bad file is refused (the running config
    /// stays, the error names file and line); otherwise the reload plan's effective config
    /// goes to the DHCP thread, the XDP maps and the install routes, and becomes the running
    /// one. [`LastReload`] records the outcome.
    pub(super) fn reload(&mut self) {
        self.reloads += 1;
        let at_unix = unix_now();
        let (mut new, templates) = match super::load(&self.config_path) {
            Ok(c) => c,
            Err(mut e) => {
                if let Some(why) = self.dropped_privilege(&e.file) {
                    e.reason = format!("{}; {why}", e.reason);
                }
                tracing::error!("configuration reload refused, the running one stays: {e}");
                self.last_reload = Some(LastReload {
                    at_unix,
                    ok: false,
                    error: Some(e.to_string()),
                    needs_restart: Vec::new(),
                });
                return;
            }
        };
        self.overrides.apply(&mut new);
        let plan = self.running.reload_plan(&new);
        if !plan.needs_restart.is_empty() {
            tracing::warn!(
                settings = ?plan.needs_restart,
                "changed settings need a restart; they keep their running values (binding \
                 ports, attaching XDP and opening the database need the privileges the daemon \
                 dropped after start)"
            );
        }
        let config = plan.effective;
        let hosts = config.host_index();
        let error = self.push_dhcp(&config, &hosts);
        self.templates = templates;
        if let Some(slot) = &self.install {
            slot.replace(
                InstallService::new(
                    Arc::new(config.install_settings(&hosts)),
                    Arc::clone(&self.templates),
                    self.next_boot.clone(),
                    self.db.clone(),
                    Arc::clone(&self.install_metrics),
                )
                .with_learned(self.learned.clone()),
            );
        }
        let (journey_settings, classes) = config.journey_settings(&hosts);
        self.journeys
            .reconfigure(&journey_settings, classes, Arc::clone(&hosts));
        self.running = config;
        self.hosts = hosts;
        tracing::info!(
            file = %self.config_path.display(),
            templates = self.templates.names().len(),
            "configuration reloaded"
        );
        self.last_reload = Some(LastReload {
            at_unix,
            ok: error.is_none(),
            error,
            needs_restart: plan.needs_restart,
        });
    }

    /// Why `file` cannot be read again after the start: the daemon runs as an account that
    /// may not read it (`None` when it may, or when the daemon still runs as root).
    fn dropped_privilege(&self, file: &std::path::Path) -> Option<String> {
        let p = &self.privileges;
        if !p.is_unprivileged() {
            return None;
        }
        match rustix::fs::access(file, rustix::fs::Access::READ_OK) {
            Err(e) if e == rustix::io::Errno::ACCESS || e == rustix::io::Errno::PERM => {
                Some(format!(
                    "the daemon runs as {} (uid {}) since it dropped root's privileges after \
                     start, and that account may not read {}: make it readable by that \
                     account (or its group {})",
                    p.switched_to
                        .as_deref()
                        .unwrap_or("an unprivileged account"),
                    p.uid,
                    file.display(),
                    p.gid
                ))
            }
            _ => None,
        }
    }

    /// The new filter policy to the XDP maps, and the answer settings and policy to the DHCP
    /// thread; the error of the last one that did not take them.
    fn push_dhcp(&mut self, config: &Config, hosts: &Arc<HostIndex>) -> Option<String> {
        let d = self.dhcp.as_mut()?;
        let mut error = None;
        let policy = config.xdp.policy_set(hosts);
        if let Some(x) = &mut d.xdp
            && let Err(e) = x.set_policy(&policy)
        {
            tracing::error!(%e, "XDP policy maps not updated");
            error = Some(format!("XDP policy maps not updated: {e}"));
        }
        let reload = DhcpReload {
            settings: Arc::new(config.dhcp_settings(hosts)),
            policy,
        };
        if d.reload.send(reload).is_err() {
            error = Some("the DHCP service has stopped".to_owned());
        }
        error
    }
}
