//! The client side of the control socket: `pxe-server status` and `pxe-server host`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::messages::{HostAnswer, Request};
use super::socket::{self as control, ControlError};
use super::unix_now;
use crate::config::{Config, ConfigError, DEFAULT_CONTROL_SOCKET};
use crate::dhcp::leases::LeaseError;
use crate::nextboot::{self, HostAction, NextBootStore};

/// How long `status` waits for the server.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `host` waits for the server (a change is committed before the answer).
const HOST_TIMEOUT: Duration = Duration::from_secs(10);

/// The control socket `status` asks: `socket`, else the one `config` names, else the default.
pub fn status_socket(
    config: Option<&Path>,
    socket: Option<PathBuf>,
) -> Result<PathBuf, ConfigError> {
    Ok(match (config, socket) {
        (_, Some(s)) => s,
        (Some(c), None) => Config::load(c)?.control.socket,
        (None, None) => PathBuf::from(DEFAULT_CONTROL_SOCKET),
    })
}

/// The status document of the server on `socket`, as the server sent it (so that a newer
/// server's sections print in full).
pub fn status(socket: &Path) -> Result<serde_json::Value, ControlError> {
    control::request_status(socket, STATUS_TIMEOUT)
}

/// The hosts document of the server on `socket` for `filter` (`status --hosts`).
pub fn hosts(
    socket: &Path,
    phase: Option<crate::journey::Phase>,
    stuck: bool,
) -> Result<serde_json::Value, ControlError> {
    let mut query = Vec::new();
    if let Some(p) = phase {
        query.push(format!("phase={}", p.name()));
    }
    if stuck {
        query.push("stuck=1".to_owned());
    }
    let request = Request::Hosts {
        query: query.join("&"),
    };
    control::request(socket, &request.to_string(), STATUS_TIMEOUT)
}

/// A hosts document for a person: one line per host (MAC, address, hostname, phase, time
/// since its last progress, stuck, last error), then the counts; an error answer's text.
pub fn render_hosts_text(doc: &serde_json::Value) -> String {
    if let Some(e) = doc.get("error").and_then(|e| e.as_str()) {
        return format!("error: {e}\n");
    }
    let now = doc["now_ms"].as_u64().unwrap_or(0);
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    let mut out = format!(
        "{:<17}  {:<15}  {:<16}  {:<9}  {:>7}  {:<5}  {}\n",
        "MAC", "ADDRESS", "HOSTNAME", "PHASE", "AGE", "STUCK", "LAST ERROR"
    );
    for h in doc["hosts"].as_array().into_iter().flatten() {
        let age = now.saturating_sub(h["last_progress_ms"].as_u64().unwrap_or(now)) / 1000;
        let error = match &h["last_error"] {
            serde_json::Value::Null => "-".to_owned(),
            e => format!("{} {}", text(&e["kind"]), text(&e["detail"])),
        };
        out.push_str(&format!(
            "{:<17}  {:<15}  {:<16}  {:<9}  {:>6}s  {:<5}  {}\n",
            text(&h["mac"]),
            text(&h["address"]),
            text(&h["hostname"]),
            text(&h["phase"]),
            age,
            if h["stuck"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            error
        ));
    }
    out.push_str(&format!(
        "{} shown, {} matched, {} in the table\n",
        doc["hosts"].as_array().map_or(0, Vec::len),
        doc["matched"].as_u64().unwrap_or(0),
        doc["total"].as_u64().unwrap_or(0)
    ));
    out
}

/// Why a `host` command got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("no server answers on {} and {db} cannot be opened: {source}", socket.display())]
    NoDatabase {
        socket: PathBuf,
        /// The redb file, or the PostgreSQL URL.
        db: String,
        #[source]
        source: Box<crate::store::OpenError>,
    },
    #[error("{}: {source}", db.display())]
    NextBoot {
        db: PathBuf,
        #[source]
        source: Box<LeaseError>,
    },
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("answer from {}: {reason}", socket.display())]
    BadAnswer { socket: PathBuf, reason: String },
}

/// Carries out `action` for the hosts `selector` names: through the running server's control
/// socket; with no server running, on the lease database `config` names (a running server
/// holds its lock, so it is ours to open only then).
pub fn host(config: &Config, action: HostAction, selector: &str) -> Result<HostAnswer, HostError> {
    let socket = &config.control.socket;
    let request = Request::Host {
        action,
        selector: selector.to_owned(),
    };
    match control::request(socket, &request.to_string(), HOST_TIMEOUT) {
        Ok(doc) => serde_json::from_value(doc).map_err(|e| HostError::BadAnswer {
            socket: socket.clone(),
            reason: e.to_string(),
        }),
        Err(ControlError::Io { source, .. })
            if matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            host_offline(config, action, selector)
        }
        Err(e) => Err(e.into()),
    }
}

fn host_offline(
    config: &Config,
    action: HostAction,
    selector: &str,
) -> Result<HostAnswer, HostError> {
    let settings = config.store_settings();
    let db = crate::store::Store::open(&settings).map_err(|source| HostError::NoDatabase {
        socket: config.control.socket.clone(),
        db: match &settings {
            crate::config::StoreSettings::Redb { path } => path.display().to_string(),
            crate::config::StoreSettings::Postgres(p) => p.url.clone(),
        },
        source: Box::new(source),
    })?;
    let store: NextBootStore = db.next_boot().map_err(|source| HostError::NextBoot {
        db: PathBuf::from(db.view().location),
        source: Box::new(source),
    })?;
    Ok(nextboot::host_command(
        &store,
        &config.host_index(),
        action,
        selector,
        unix_now(),
    ))
}

/// A carried-out `host` answer for a person: one line per host (name, key, next boot, and for
/// `show` its install token), then how many changed (unless it was `show`). Empty for a
/// refusal.
pub fn render_host_text(answer: &HostAnswer, action: HostAction) -> String {
    let mut out = String::new();
    if !answer.ok {
        return out;
    }
    for row in answer.hosts.iter().flatten() {
        let line = format!(
            "{:<24} {:<44} {}",
            row.name,
            row.key.as_deref().unwrap_or("-"),
            row.next_boot.name()
        );
        match &row.token {
            // `show`: the install token last (the one secret on the line).
            Some(t) => out.push_str(&format!("{line:<78} token {t}\n")),
            None => out.push_str(&format!("{line}\n")),
        }
    }
    if action != HostAction::Show {
        out.push_str(&format!("{} changed\n", answer.changed.unwrap_or(0)));
    }
    out
}
