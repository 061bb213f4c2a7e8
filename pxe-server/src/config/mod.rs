//! The TOML configuration file: its shape, one file per section ([`tftp`], [`http`], [`dhcp`],
//! [`hosts`] for `[boot]` and `[[hosts]]`, [`xdp`], [`install`], [`control`], [`server`], [`metrics`]), loading with
//! errors that name the file, the line and the key ([`locate`]), the reload plan, and the
//! conversion into each service's runtime settings (`TftpSettings`, `HttpSettings`,
//! `DhcpSettings`, `XdpSettings`, `InstallSettings`): the services never see the file shape.
//!
//! `Config::load` refuses a bad file with `file:line: key: reason`; every setting has a default
//! so a file with just `[tftp] root = "..."` serves.

mod control;
mod dhcp;
mod hosts;
mod http;
mod install;
mod journeys;
mod locate;
mod metrics;
mod reload;
mod server;
mod store;
#[cfg(test)]
mod tests;
mod tftp;
mod xdp;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use control::{ControlConfig, DEFAULT_CONTROL_SOCKET};
pub use dhcp::{DhcpConfig, SubnetConfig};
pub use http::HttpConfig;
pub use install::InstallConfig;
pub use journeys::JourneysConfig;
pub use metrics::{DEFAULT_METRICS_PORT, MetricsConfig};
pub use reload::ReloadPlan;
pub use server::{DEFAULT_USER, ServerConfig};
pub use store::{
    PgSettings, StoreBackend, StoreConfig, StoreSettings, tls_problem, unix_socket_url, url_problem,
};
pub use tftp::TftpConfig;
pub use xdp::XdpConfig;

use crate::dhcp::DhcpSettings;
use crate::hosts::{BootProfile, HostConfig, HostIndex};
use crate::http::HttpSettings;
use crate::install::InstallSettings;
use crate::templates::Templates;
use crate::tftp::TftpSettings;
use crate::xdp::XdpSettings;
use locate::{first_line, key_line, key_path_at, line_at, syntax_key, unknown_field_name};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub tftp: TftpConfig,
    /// The HTTP boot file service.
    pub http: HttpConfig,
    pub dhcp: DhcpConfig,
    /// The default boot profile (what a client that matches no `[[hosts]]` entry gets).
    pub boot: BootProfile,
    /// Known machines, by MAC and/or client UUID.
    pub hosts: Vec<HostConfig>,
    /// The DHCP discovery filter: XDP fast path and userspace fallback.
    pub xdp: XdpConfig,
    /// The local control socket (`pxe-server status`).
    pub control: ControlConfig,
    /// Install templates and their values.
    pub install: InstallConfig,
    /// The account the daemon runs as after start, and its system call filter.
    pub server: ServerConfig,
    /// The operator's listener: `/metrics` for Prometheus.
    pub metrics: MetricsConfig,
    /// Each host's boot journey and its bound.
    pub journeys: JourneysConfig,
    /// Where leases, next-boot actions and tokens live: redb or PostgreSQL.
    pub store: StoreConfig,
}

/// A config file that cannot be used: `file:line: key: reason`.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {key}: {reason}")]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the error is not tied to a line (unreadable file).
    pub line: usize,
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    /// An error about the setting at `path` of `file`, found after the file was accepted (an
    /// account that does not exist on this machine, ...): at the key's line when the file
    /// sets it, else at line 0 with the note that the default is in effect.
    pub fn at_key(file: &Path, path: &[&str], reason: impl Into<String>) -> ConfigError {
        let reason = reason.into();
        let key = path.join(".");
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let line = toml_edit::ImDocument::parse(text.as_str())
            .ok()
            .and_then(|doc| key_line(&doc, &text, path));
        ConfigError {
            file: file.to_path_buf(),
            line: line.unwrap_or(0),
            reason: match line {
                Some(_) => reason,
                None => format!("{reason} (the default; set it in the file)"),
            },
            key,
        }
    }
}

/// A value a section holds that cannot be used: the key path (`hosts[2]` names an entry of an
/// array of tables) and the reason. [`Config::parse`] reports it at the key's line.
#[derive(Debug)]
struct Invalid {
    path: Vec<String>,
    reason: String,
}

impl Invalid {
    fn at(path: &[&str], reason: impl Into<String>) -> Invalid {
        Invalid {
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            reason: reason.into(),
        }
    }
}

/// What each section's semantic check returns.
type Check = Result<(), Invalid>;

/// `path` is an existing directory (a served root); else the reason.
fn directory(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("{} is not a directory", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            key: "(file)".to_owned(),
            reason: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Parse and validate text; `file` only names the source in errors.
    ///
    /// A relative `root` is relative to the working directory of the process.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let err = |line: usize, key: &str, reason: String| ConfigError {
            file: file.to_path_buf(),
            line,
            key: key.to_owned(),
            reason,
        };
        // The span-preserving document locates keys for every error below.
        let doc = match toml_edit::ImDocument::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                let offset = e.span().map_or(0, |s| s.start);
                let reason = e.message().trim().replace('\n', "; ");
                return Err(err(
                    line_at(text, offset),
                    &syntax_key(text, offset),
                    reason,
                ));
            }
        };
        let config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let key = key_path_at(doc.as_table(), offset)
                .or_else(|| unknown_field_name(e.message()))
                .unwrap_or_else(|| "(document)".to_owned());
            err(line_at(text, offset), &key, first_line(e.message()))
        })?;
        config.validate().map_err(|Invalid { path, reason }| {
            let key = path.join(".");
            match key_line(&doc, text, &path) {
                Some(line) => err(line, &key, reason),
                None => err(
                    0,
                    &key,
                    format!("{reason} (the default; set it in the file)"),
                ),
            }
        })?;
        Ok(config)
    }

    /// Semantic checks, section by section.
    fn validate(&self) -> Check {
        self.tftp.validate()?;
        self.http.validate()?;
        self.dhcp.validate()?;
        hosts::validate(&self.boot, &self.hosts, &self.dhcp)?;
        self.xdp.validate(&self.hosts)?;
        self.control.validate()?;
        self.server.validate()?;
        self.metrics.validate()?;
        self.journeys.validate()?;
        self.store.validate()?;
        self.install.validate_cmdlines(&self.boot, &self.hosts)
    }

    /// Loads `[install] templates` and renders each for every host (see
    /// [`InstallConfig`]), so that a template error stops the start with its file and line.
    pub fn load_templates(&self) -> Result<Templates, ConfigError> {
        self.install.load_templates(&self.boot, &self.hosts)
    }

    /// The effective configuration as TOML (what `pxe-server check` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// The index of `[[hosts]]`, shared by the DHCP responder, the install routes and the
    /// next-boot commands.
    pub fn host_index(&self) -> Arc<HostIndex> {
        Arc::new(HostIndex::new(self.hosts.clone()))
    }

    pub fn tftp_settings(&self) -> TftpSettings {
        self.tftp.settings()
    }

    pub fn http_settings(&self) -> HttpSettings {
        self.http.settings(&self.tftp)
    }

    pub fn dhcp_settings(&self, hosts: &Arc<HostIndex>) -> DhcpSettings {
        self.dhcp.settings(&self.boot, Arc::clone(hosts))
    }

    pub fn xdp_settings(&self, hosts: &HostIndex) -> XdpSettings {
        self.xdp.settings(&self.dhcp.interfaces, hosts)
    }

    /// The journeys' settings and the file classes of this configuration.
    pub fn journey_settings(
        &self,
        hosts: &Arc<HostIndex>,
    ) -> (crate::journey::JourneySettings, crate::journey::FileClasses) {
        (
            self.journeys.settings(),
            self.journeys.classes(&self.boot, hosts),
        )
    }

    /// The store's settings (`[store]`, with `[dhcp] lease_db` as the redb file).
    pub fn store_settings(&self) -> StoreSettings {
        self.store.settings(&self.dhcp.lease_db)
    }

    pub fn install_settings(&self, hosts: &Arc<HostIndex>) -> InstallSettings {
        self.install.settings(&self.boot, Arc::clone(hosts))
    }
}
