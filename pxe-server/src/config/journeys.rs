//! `[journeys]`: each host's boot journey (see `journey`).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Check, Invalid};
use crate::hosts::{BootProfile, HostIndex};
use crate::journey::{FileClasses, JourneySettings, classes_for};

/// Most hosts the table may be asked to hold (the memory per host is in ARCHITECTURE.md).
const MAX_HOSTS: usize = 1_000_000;
/// Longest `stuck_after_secs`: a day.
const MAX_STUCK_SECS: u64 = 86_400;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JourneysConfig {
    /// Keep the journey table (`status --hosts`, `/api/v1/hosts`). The timing histograms are
    /// kept either way.
    pub enabled: bool,
    /// Hosts the table holds; when full, the oldest finished journey gives way, else the one
    /// with the oldest progress.
    pub max_hosts: usize,
    /// A journey with no progress for this long (and not finished) is stuck.
    pub stuck_after_secs: u64,
    /// Globs of file names (their last path segment; the whole name when the glob has a `/`)
    /// that are boot files, kernels and initrds, beyond the built-in ones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub boot_file: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kernel: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub initrd: Vec<String>,
}

impl Default for JourneysConfig {
    fn default() -> Self {
        let s = JourneySettings::default();
        JourneysConfig {
            enabled: s.enabled,
            max_hosts: s.max_hosts,
            stuck_after_secs: s.stuck_after.as_secs(),
            boot_file: Vec::new(),
            kernel: Vec::new(),
            initrd: Vec::new(),
        }
    }
}

impl JourneysConfig {
    pub(super) fn validate(&self) -> Check {
        let fail = |key: &str, reason: String| Err(Invalid::at(&["journeys", key], reason));
        if !(1..=MAX_HOSTS).contains(&self.max_hosts) {
            return fail(
                "max_hosts",
                format!("{} is not in 1..={MAX_HOSTS}", self.max_hosts),
            );
        }
        if !(1..=MAX_STUCK_SECS).contains(&self.stuck_after_secs) {
            return fail(
                "stuck_after_secs",
                format!("{} is not in 1..={MAX_STUCK_SECS}", self.stuck_after_secs),
            );
        }
        for (key, globs) in [
            ("boot_file", &self.boot_file),
            ("kernel", &self.kernel),
            ("initrd", &self.initrd),
        ] {
            for g in globs {
                if g.trim_start_matches('/').is_empty() || g.chars().all(|c| c == '*') {
                    return fail(key, format!("{g:?} would match every file"));
                }
                if g.len() > 255 || g.chars().any(char::is_control) {
                    return fail(key, format!("{g:?} is not a usable glob"));
                }
            }
        }
        Ok(())
    }

    pub fn settings(&self) -> JourneySettings {
        JourneySettings {
            enabled: self.enabled,
            max_hosts: self.max_hosts,
            stuck_after: Duration::from_secs(self.stuck_after_secs),
            boot_file_globs: self.boot_file.clone(),
            kernel_globs: self.kernel.clone(),
            initrd_globs: self.initrd.clone(),
        }
    }

    /// The file classes of this configuration.
    pub fn classes(&self, boot: &BootProfile, hosts: &Arc<HostIndex>) -> FileClasses {
        classes_for(boot, hosts, &self.settings())
    }
}
