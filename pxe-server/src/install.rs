//! The install routes of the HTTP service, sans-IO: a request (method, path, query) in, a
//! rendered reply out. The HTTP server calls [`InstallService::handle`] before looking for a
//! file; `None` means "not an install route".
//!
//! - `GET /boot.ipxe`: a one-line script chaining to itself with `?mac=${net0/mac:hexhyp}&
//!   uuid=${uuid}` (so `[boot] ipxe_script = "http://SERVER/boot.ipxe"` is all DHCP needs).
//! - `GET /boot.ipxe?mac=52-54-00-12-34-56` (or `uuid=...`, or both): the host's iPXE script: `ipxe/install.ipxe` rendered for
//!   it when its next boot is `install`, else `ipxe/local.ipxe`. A machine with no
//!   `[[hosts]]` entry gets the local-boot script: nothing unknown is ever reinstalled.
//! - `GET /install/KEY/NAME`: template NAME rendered for the host KEY (`mac:...`, `uuid:...`
//!   or a bare MAC), e.g. the kickstart the install command line points to.
//! - `GET` or `POST /done/KEY`: the installer's callback (from `%post`, `late-command`,
//!   cloud-init's `phone_home`, ...): the host's next boot becomes `local`, durably, before
//!   the answer. It can only switch a host to the local disk, never to an install.

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::hosts::{HostConfig, HostIndex, NextBoot};
use crate::metrics;
use crate::nextboot::NextBootStore;
use crate::templates::{self, Templates};
use pxe_proto::{ClientUuid, MacAddr};

/// What the HTTP layer sends back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

metrics::counters! {
    InstallMetrics, InstallSnapshot, "install routes";
    /// iPXE scripts that installed (next boot `install`).
    scripts_install,
    /// iPXE scripts that boot the local disk.
    scripts_local,
    templates_rendered,
    /// Installer callbacks recorded.
    callbacks,
    /// Requests naming no `[[hosts]]` entry.
    unknown_hosts,
    /// Answers with a status of 400 or more.
    errors,
}

/// The install service in effect, replaced whole by a configuration reload; the HTTP router
/// takes the current one for each request.
#[derive(Default)]
pub struct InstallSlot(std::sync::RwLock<Option<Arc<InstallService>>>);

impl InstallSlot {
    pub fn new(service: InstallService) -> Self {
        InstallSlot(std::sync::RwLock::new(Some(Arc::new(service))))
    }

    pub fn get(&self) -> Option<Arc<InstallService>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, service: InstallService) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(service));
    }
}

/// What the install routes render with (converted from `[install]`, `[boot]` and
/// `[[hosts]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct InstallSettings {
    /// How clients reach the HTTP service; unset: the address each request came to.
    pub server_url: Option<String>,
    /// The default boot profile.
    pub boot: crate::hosts::BootProfile,
    /// Site-wide template values.
    pub vars: toml::Table,
    /// The known hosts (shared with the DHCP responder).
    pub hosts: Arc<HostIndex>,
}

/// Everything the install routes read: the settings and templates in effect (a reload swaps
/// the whole service), the next-boot store, and the lease database for addresses.
pub struct InstallService {
    settings: Arc<InstallSettings>,
    templates: Arc<Templates>,
    next_boot: Option<Arc<NextBootStore>>,
    db: Option<Arc<redb::Database>>,
    metrics: Arc<InstallMetrics>,
}

impl InstallService {
    pub fn new(
        settings: Arc<InstallSettings>,
        templates: Arc<Templates>,
        next_boot: Option<Arc<NextBootStore>>,
        db: Option<Arc<redb::Database>>,
        metrics: Arc<InstallMetrics>,
    ) -> Self {
        InstallService {
            settings,
            templates,
            next_boot,
            db,
            metrics,
        }
    }

    pub fn metrics(&self) -> &Arc<InstallMetrics> {
        &self.metrics
    }

    /// Answers an install route, or `None` for any other path. `server_url` is what the
    /// templates get when `[install] server_url` is unset (the scheme, address and port the
    /// request came to).
    pub fn handle(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        server_url: &str,
        now_unix: u64,
    ) -> Option<Reply> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let reply = match segments.as_slice() {
            ["boot.ipxe"] => self.only_get(method, || self.script(query, server_url, now_unix)),
            ["install", key, rest @ ..] if !rest.is_empty() => {
                let name = rest.join("/");
                self.only_get(method, || self.template(key, &name, server_url, now_unix))
            }
            ["done", key] => {
                if method == "GET" || method == "POST" {
                    self.done(key, now_unix)
                } else {
                    Reply::text(405, "GET or POST\n")
                }
            }
            _ => return None,
        };
        if reply.status >= 400 {
            metrics::inc(&self.metrics.errors);
        }
        Some(reply)
    }

    fn only_get(&self, method: &str, f: impl FnOnce() -> Reply) -> Reply {
        if method == "GET" || method == "HEAD" {
            f()
        } else {
            Reply::text(405, "GET only\n")
        }
    }

    fn url<'a>(&'a self, from_request: &'a str) -> &'a str {
        self.settings.server_url.as_deref().unwrap_or(from_request)
    }

    fn find(&self, mac: Option<MacAddr>, uuid: Option<ClientUuid>) -> Option<&HostConfig> {
        let hosts = &self.settings.hosts;
        Some(hosts.get(hosts.find(mac.as_ref(), uuid.as_ref())?))
    }

    /// A host by its key in a URL path segment (percent-encoded; see [`HostIndex::by_key`]).
    fn by_key(&self, key: &str) -> Option<&HostConfig> {
        let hosts = &self.settings.hosts;
        Some(hosts.get(hosts.by_key(&percent_decode(key)?)?))
    }

    fn action(&self, host: &HostConfig) -> NextBoot {
        match &self.next_boot {
            Some(s) => s.action(host),
            None => host.next_boot,
        }
    }

    fn address(&self, host: &HostConfig, now_unix: u64) -> Option<Ipv4Addr> {
        host.address.or_else(|| {
            let (db, mac) = (self.db.as_ref()?, host.mac?);
            crate::dhcp::leases::bound_address(db, &mac, now_unix)
        })
    }

    fn render(
        &self,
        name: &str,
        host: Option<&HostConfig>,
        next: NextBoot,
        server_url: &str,
        now_unix: u64,
    ) -> Reply {
        let address = host.and_then(|h| self.address(h, now_unix));
        let ctx = templates::host_context(
            self.url(server_url),
            &self.settings.boot,
            &self.settings.vars,
            host,
            address,
            next,
        );
        let rendered = ctx
            .map_err(|e| e.to_string())
            .and_then(|c| self.templates.render(name, &c).map_err(|e| e.to_string()));
        match rendered {
            Ok(body) => Reply::text(200, body),
            Err(e) => {
                // Checked at load for every host; what is left are runtime values (an
                // address that no template expected to be missing, ...).
                tracing::warn!(template = name, error = %e, "template rendering failed");
                Reply::text(500, format!("template {name} failed: {e}\n"))
            }
        }
    }

    fn script(&self, query: Option<&str>, server_url: &str, now_unix: u64) -> Reply {
        let asked = query.unwrap_or("");
        if !asked
            .split('&')
            .any(|p| p.starts_with("mac=") || p.starts_with("uuid="))
        {
            // iPXE does not expand settings in a DHCP file name: the plain URL answers with
            // a script that asks again with the machine's identity filled in.
            return Reply::text(
                200,
                format!(
                    "#!ipxe\nchain {}/boot.ipxe?mac=${{net0/mac:hexhyp}}&uuid=${{uuid}}\n",
                    self.url(server_url).trim_end_matches('/')
                ),
            );
        }
        let (mut mac, mut uuid) = (None, None);
        for pair in query.unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let Some(v) = percent_decode(v) else {
                return Reply::text(400, "bad percent-encoding in the query\n");
            };
            match k {
                "mac" => mac = v.replace('-', ":").parse::<MacAddr>().ok(),
                "uuid" => uuid = v.parse::<ClientUuid>().ok(),
                _ => {}
            }
        }
        let host = self.find(mac, uuid);
        let next = host.map_or(NextBoot::Local, |h| self.action(h));
        let name = match next {
            NextBoot::Install => {
                metrics::inc(&self.metrics.scripts_install);
                templates::IPXE_INSTALL
            }
            NextBoot::Local => {
                metrics::inc(&self.metrics.scripts_local);
                templates::IPXE_LOCAL
            }
        };
        if host.is_none() {
            metrics::inc(&self.metrics.unknown_hosts);
        }
        self.render(name, host, next, server_url, now_unix)
    }

    fn template(&self, key: &str, name: &str, server_url: &str, now_unix: u64) -> Reply {
        let Some(host) = self.by_key(key) else {
            metrics::inc(&self.metrics.unknown_hosts);
            return Reply::text(404, format!("no [[hosts]] entry {key}\n"));
        };
        let Some(name) = percent_decode(name) else {
            return Reply::text(400, "bad percent-encoding\n");
        };
        if !self.templates.has(&name) {
            return Reply::text(404, format!("no template {name}\n"));
        }
        metrics::inc(&self.metrics.templates_rendered);
        self.render(&name, Some(host), self.action(host), server_url, now_unix)
    }

    fn done(&self, key: &str, now_unix: u64) -> Reply {
        let Some(host) = self.by_key(key) else {
            metrics::inc(&self.metrics.unknown_hosts);
            return Reply::text(404, format!("no [[hosts]] entry {key}\n"));
        };
        let Some(store) = &self.next_boot else {
            return Reply::text(
                503,
                "no host state here (it needs the lease database: [dhcp] full mode)\n",
            );
        };
        match store.set(&[host], NextBoot::Local, now_unix) {
            Ok(changed) => {
                metrics::inc(&self.metrics.callbacks);
                tracing::info!(host = %host.label(), changed,
                    "installer callback: next boot local");
                Reply::text(200, "ok: next boot local\n")
            }
            Err(e) => {
                tracing::error!(host = %host.label(), %e,
                    "installer callback not recorded");
                Reply::text(500, format!("not recorded: {e}\n"))
            }
        }
    }
}

/// A URL component as text: percent- and form-decoded (`+` is a space), `None` when an escape
/// is broken or the result is not UTF-8 or holds a NUL.
fn percent_decode(s: &str) -> Option<String> {
    let s = String::from_utf8(pxe_proto::uri::percent_decode(s.as_bytes(), true)?).ok()?;
    (!s.contains('\0')).then_some(s)
}

#[cfg(test)]
mod tests;
