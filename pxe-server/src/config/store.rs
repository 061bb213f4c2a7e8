//! `[store]`: where leases, next-boot actions and install tokens live: the embedded redb file
//! (`[dhcp] lease_db`, the default: one server, nothing to set up) or a PostgreSQL database
//! that several servers share.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Check, Invalid};

/// `[store] backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Redb,
    Postgres,
}

/// `[store]` as the file has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// `postgres://USER@HOST:PORT/DB` (a Unix socket directory percent-encoded as the host);
    /// no password: that goes in `password_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A file whose first line is the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The CA (PEM) the database server's certificate must chain to: TLS, required and
    /// verified (host name or IP address of the URL), whatever the URL's `sslmode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Connections per instance.
    pub pool_size: usize,
    /// This server's name among its peers; the host name when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub heartbeat_ms: u64,
    pub failover_ms: u64,
    pub connect_timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Redb,
            url: None,
            password_file: None,
            ca_file: None,
            pool_size: 8,
            instance: None,
            heartbeat_ms: 500,
            failover_ms: 3000,
            connect_timeout_ms: 3000,
        }
    }
}

/// The runtime settings of the store.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreSettings {
    /// The redb file (`[dhcp] lease_db`).
    Redb {
        path: PathBuf,
    },
    Postgres(PgSettings),
}

/// A PostgreSQL store's settings (the password is read from `password_file` when the store
/// opens, never kept in the config).
#[derive(Debug, Clone, PartialEq)]
pub struct PgSettings {
    /// As configured: it carries no password, so it may be logged and shown.
    pub url: String,
    pub password_file: Option<PathBuf>,
    /// TLS verified against this CA (read when the store opens); plaintext when `None`.
    pub ca_file: Option<PathBuf>,
    pub pool_size: usize,
    pub instance: String,
    pub heartbeat: Duration,
    pub failover: Duration,
    pub connect_timeout: Duration,
}

/// Why a `url` cannot be used; `None` when it can.
pub fn url_problem(url: &str) -> Option<String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Some("must be a postgres:// URL".into());
    }
    match url.parse::<tokio_postgres::Config>() {
        Err(e) => Some(format!("not a PostgreSQL URL: {e}")),
        Ok(c) if c.get_password().is_some() => Some(
            "carries a password: put it in store.password_file (a URL shows in logs, \
             status and process lists)"
                .into(),
        ),
        Ok(c) if c.get_hosts().is_empty() => Some("names no host".into()),
        Ok(c) if c.get_user().is_none() => Some("names no user (postgres://USER@HOST/DB)".into()),
        Ok(_) => None,
    }
}

/// Whether the URL's only host is a Unix socket directory (never TLS) or a TCP one; `None`
/// for a URL that does not parse or names several hosts.
pub fn unix_socket_url(url: &str) -> Option<bool> {
    let c = url.parse::<tokio_postgres::Config>().ok()?;
    match c.get_hosts() {
        [tokio_postgres::config::Host::Unix(_)] => Some(true),
        [tokio_postgres::config::Host::Tcp(_)] => Some(false),
        _ => None,
    }
}

/// Why the URL's `sslmode` and `ca_file` do not fit together (the key to blame and why).
/// With a CA, TLS is required and verified, so `sslmode=disable` contradicts it and a Unix
/// socket cannot carry it; without one, `sslmode=require` would be TLS that nothing verifies.
pub fn tls_problem(url: &str, ca_file: bool) -> Option<(&'static str, String)> {
    use tokio_postgres::config::SslMode;
    let c = url.parse::<tokio_postgres::Config>().ok()?;
    match (c.get_ssl_mode(), ca_file) {
        (SslMode::Disable, true) => Some((
            "url",
            "sslmode=disable contradicts store.ca_file (with a CA, TLS is required): \
             remove one of them"
                .into(),
        )),
        (SslMode::Require, false) => Some((
            "url",
            "sslmode=require needs store.ca_file (the server's certificate must be verified)"
                .into(),
        )),
        (_, true) if unix_socket_url(url) == Some(true) => Some((
            "ca_file",
            "the URL names a Unix socket, which never uses TLS: remove store.ca_file".into(),
        )),
        _ => None,
    }
}

/// A valid instance name: `[A-Za-z0-9._-]`, 1..=63 characters.
fn valid_instance(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// This machine's host name (the default instance name).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

impl StoreConfig {
    pub(super) fn validate(&self) -> Check {
        let at = |key: &str, reason: String| Err(Invalid::at(&["store", key], reason));
        if self.backend == StoreBackend::Redb {
            return Ok(());
        }
        match &self.url {
            None => return at("backend", "\"postgres\" needs store.url".into()),
            Some(u) => {
                if let Some(reason) = url_problem(u) {
                    return at("url", reason);
                }
            }
        }
        if let Some(p) = &self.password_file
            && p.as_os_str().is_empty()
        {
            return at("password_file", "must name a file".into());
        }
        if let Some(p) = &self.ca_file
            && p.as_os_str().is_empty()
        {
            return at("ca_file", "must name a file".into());
        }
        if let Some(u) = &self.url
            && let Some((key, reason)) = tls_problem(u, self.ca_file.is_some())
        {
            return at(key, reason);
        }
        if !(1..=64).contains(&self.pool_size) {
            return at("pool_size", format!("{} is not in 1..=64", self.pool_size));
        }
        match &self.instance {
            Some(n) if !valid_instance(n) => {
                return at(
                    "instance",
                    format!("{n:?}: letters, digits, '.', '_', '-'; 1..=63 characters"),
                );
            }
            None if !valid_instance(&host_name()) => {
                return at(
                    "instance",
                    format!(
                        "the host name {:?} is not a valid instance name: set one",
                        host_name()
                    ),
                );
            }
            _ => {}
        }
        if !(100..=10_000).contains(&self.heartbeat_ms) {
            return at(
                "heartbeat_ms",
                format!("{} is not in 100..=10000", self.heartbeat_ms),
            );
        }
        if self.failover_ms < 3 * self.heartbeat_ms {
            return at(
                "failover_ms",
                format!(
                    "{} is less than 3 x heartbeat_ms ({})",
                    self.failover_ms,
                    3 * self.heartbeat_ms
                ),
            );
        }
        if !(100..=60_000).contains(&self.connect_timeout_ms) {
            return at(
                "connect_timeout_ms",
                format!("{} is not in 100..=60000", self.connect_timeout_ms),
            );
        }
        Ok(())
    }

    /// The runtime settings; `lease_db` is the redb file.
    pub fn settings(&self, lease_db: &Path) -> StoreSettings {
        match self.backend {
            StoreBackend::Redb => StoreSettings::Redb {
                path: lease_db.to_path_buf(),
            },
            StoreBackend::Postgres => StoreSettings::Postgres(PgSettings {
                url: self.url.clone().unwrap_or_default(),
                password_file: self.password_file.clone(),
                ca_file: self.ca_file.clone(),
                pool_size: self.pool_size,
                instance: self.instance.clone().unwrap_or_else(host_name),
                heartbeat: Duration::from_millis(self.heartbeat_ms),
                failover: Duration::from_millis(self.failover_ms),
                connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            }),
        }
    }
}
