//! `[control]`: the local control socket (`pxe-server status`, `pxe-server host`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Check, Invalid};

/// Default path of the control socket.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/pxe-server/control.sock";

/// `[control]`: where the running server answers `pxe-server status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Unix socket path (created mode 0600; a stale one is replaced, a live one refuses the
    /// start). Two servers on one host need different paths.
    pub socket: PathBuf,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
        }
    }
}

impl ControlConfig {
    pub(super) fn validate(&self) -> Check {
        // sockaddr_un.sun_path holds 108 bytes with the terminating NUL.
        let len = self.socket.as_os_str().len();
        if len == 0 || len > 107 {
            return Err(Invalid::at(
                &["control", "socket"],
                format!(
                    "{} is not a usable socket path (1..=107 bytes)",
                    self.socket.display()
                ),
            ));
        }
        Ok(())
    }
}
