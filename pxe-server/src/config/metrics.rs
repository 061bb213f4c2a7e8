//! `[metrics]`: the operator's HTTP listener for `/metrics` (Prometheus) and the routes added
//! to it.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{Check, Invalid};

/// The default metrics port (9469: unassigned in Prometheus's default port allocations list,
/// next to the exporters of the 94xx block).
pub const DEFAULT_METRICS_PORT: u16 = 9469;

/// `[metrics]`: where Prometheus scrapes the server (on by default, loopback only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// The listener runs.
    pub enabled: bool,
    /// TCP addresses it listens on. Loopback by default: it must not face the boot segment
    /// (see SECURITY.md).
    pub listen: Vec<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: vec![SocketAddr::from(([127, 0, 0, 1], DEFAULT_METRICS_PORT))],
        }
    }
}

impl MetricsConfig {
    pub(super) fn validate(&self) -> Check {
        let fail = |reason: String| Err(Invalid::at(&["metrics", "listen"], reason));
        if self.enabled && self.listen.is_empty() {
            return fail("must name at least one address (or set enabled = false)".into());
        }
        for (i, a) in self.listen.iter().enumerate() {
            if self.listen[..i].contains(a) {
                return fail(format!("{a} is listed twice"));
            }
        }
        Ok(())
    }
}
