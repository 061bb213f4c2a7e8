//! `[install]`: the install templates and their values, checked against every host at load.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Check, ConfigError, Invalid};
use crate::hosts::{BootProfile, HostConfig, HostIndex, NextBoot};
use crate::install::InstallSettings;
use crate::templates::{self, TemplateError, Templates, host_context};

/// The server URL templates are rendered with when they are checked at load.
const PLACEHOLDER_URL: &str = "http://server";
/// The install token templates are rendered with when they are checked at load (a host's
/// real one is made when it is first needed).
const PLACEHOLDER_TOKEN: &str = "00000000000000000000000000000000";

/// `[install]`: the templates served to installers and iPXE (see `templates`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct InstallConfig {
    /// Directory of templates (minijinja); none = only the built-in iPXE scripts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub templates: Option<PathBuf>,
    /// How clients reach our HTTP service, e.g. `http://10.0.0.1`; by default the address and
    /// port each request came to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    /// Site-wide template values (`vars.*`); a host's `vars` override them.
    #[serde(skip_serializing_if = "toml::Table::is_empty")]
    pub vars: toml::Table,
    /// Every install route of a host (templates, callback) must also come from its address:
    /// its reservation or lease (proxy mode: the address its own DHCP requests named). Off by
    /// default: the token alone is the key.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub bind_to_lease: bool,
}

impl InstallConfig {
    /// The runtime settings of the install routes.
    pub fn settings(&self, boot: &BootProfile, hosts: Arc<HostIndex>) -> InstallSettings {
        InstallSettings {
            server_url: self.server_url.clone(),
            boot: boot.clone(),
            vars: self.vars.clone(),
            hosts,
            bind_to_lease: self.bind_to_lease,
        }
    }

    /// The template context of `host` (or of a machine without an entry) when checked at
    /// load: a placeholder server URL and no address.
    fn context(
        &self,
        boot: &BootProfile,
        host: Option<&HostConfig>,
        next: NextBoot,
    ) -> Result<serde_json::Value, minijinja::Error> {
        let token = host.map(|_| PLACEHOLDER_TOKEN);
        host_context(PLACEHOLDER_URL, boot, &self.vars, host, None, token, next)
    }

    /// Every profile's `cmdline` renders for every host (templates see it through the
    /// context; a bad one is reported at its key).
    pub(super) fn validate_cmdlines(&self, boot: &BootProfile, hosts: &[HostConfig]) -> Check {
        let fail = |at: &[&str], e: minijinja::Error| {
            let reason = match e.detail() {
                Some(d) => format!("template: {}: {d}", e.kind()),
                None => format!("template: {}", e.kind()),
            };
            Err(Invalid::at(at, reason))
        };
        if let Err(e) = host_context(
            PLACEHOLDER_URL,
            boot,
            &self.vars,
            None,
            None,
            None,
            NextBoot::Local,
        ) {
            return fail(&["boot", "cmdline"], e);
        }
        for (i, h) in hosts.iter().enumerate() {
            if let Err(e) = host_context(
                PLACEHOLDER_URL,
                boot,
                &self.vars,
                Some(h),
                None,
                Some(PLACEHOLDER_TOKEN),
                h.next_boot,
            ) {
                return if h.boot.cmdline.is_some() {
                    fail(&[&format!("hosts[{i}]"), "boot", "cmdline"], e)
                } else {
                    fail(&["boot", "cmdline"], e)
                };
            }
        }
        Ok(())
    }

    /// Loads the templates and renders each for every host in both next-boot states (and the
    /// local-boot script for hosts without an entry), so that a template error stops the
    /// start with its file and line.
    pub(super) fn load_templates(
        &self,
        boot: &BootProfile,
        hosts: &[HostConfig],
    ) -> Result<Templates, ConfigError> {
        let t = Templates::load(self.templates.as_deref()).map_err(template_error)?;
        let mut contexts = Vec::new();
        // A host without an entry only ever gets the local-boot script.
        if let Ok(c) = self.context(boot, None, NextBoot::Local) {
            t.render(templates::IPXE_LOCAL, &c)
                .map_err(|mut e| {
                    e.reason = format!("{} (rendering for hosts without an entry)", e.reason);
                    e
                })
                .map_err(template_error)?;
        }
        for h in hosts {
            for nb in [NextBoot::Install, NextBoot::Local] {
                if let Ok(c) = self.context(boot, Some(h), nb) {
                    contexts.push((h.label(), c));
                }
            }
        }
        t.check(contexts.iter().map(|(l, c)| (l.clone(), c)))
            .map_err(template_error)?;
        Ok(t)
    }
}

fn template_error(e: TemplateError) -> ConfigError {
    ConfigError {
        file: e.file,
        line: e.line,
        key: "install.templates".to_owned(),
        reason: e.reason,
    }
}
