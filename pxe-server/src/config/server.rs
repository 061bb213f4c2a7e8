//! `[server]`: the process itself: the account it runs as once everything is bound, and its
//! system call filter.

use serde::{Deserialize, Serialize};

use super::{Check, Invalid};
use crate::privilege::{PrivilegeSettings, SeccompMode};

/// Default service account (scripts/install-deps.sh creates it: a system user with no shell
/// and no home).
pub const DEFAULT_USER: &str = "pxe-server";

/// `[server]`: what the daemon gives up after start. Started as root, it binds its ports,
/// attaches XDP and opens the database, then runs as `user` with no capability, with
/// no-new-privileges and the `seccomp` filter. Changes need a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The account to run as after start (when started as root). `"root"` keeps root, with a
    /// warning at every start.
    pub user: String,
    /// The system call allow-list: `enforce` (a call outside it kills the process, the
    /// kernel logs which), `log` (allowed, and the kernel logs it: to find a missing entry),
    /// `off`.
    pub seccomp: SeccompMode,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            user: DEFAULT_USER.to_owned(),
            seccomp: SeccompMode::Enforce,
        }
    }
}

impl ServerConfig {
    pub(super) fn validate(&self) -> Check {
        // What useradd accepts (Debian's NAME_REGEX, relaxed): no path or shell characters.
        let u = &self.user;
        let ok = !u.is_empty()
            && u.len() <= 32
            && !u.starts_with('-')
            && u.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ok {
            return Err(Invalid::at(
                &["server", "user"],
                format!("{u:?} is not an account name (letters, digits, '_', '-', '.'; 1..=32)"),
            ));
        }
        Ok(())
    }

    /// The settings, with the directories the daemon created at start that the service
    /// account must own.
    pub fn settings(&self, hand_over: Vec<std::path::PathBuf>) -> PrivilegeSettings {
        PrivilegeSettings {
            user: self.user.clone(),
            seccomp: self.seccomp,
            hand_over,
        }
    }
}
