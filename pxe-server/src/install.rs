//! The install routes of the HTTP service, sans-IO: a request (method, path, query, the
//! peer's address) in, a rendered reply out. The HTTP server calls [`InstallService::handle`]
//! before looking for a file; `None` means "not an install route".
//!
//! - `GET /boot.ipxe`: a one-line script chaining to itself with `?mac=${net0/mac:hexhyp}&
//!   uuid=${uuid}` (so `[boot] ipxe_script = "http://SERVER/boot.ipxe"` is all DHCP needs).
//! - `GET /boot.ipxe?mac=52-54-00-12-34-56` (or `uuid=...`, or both): the host's iPXE script:
//!   `ipxe/install.ipxe` rendered for it when its next boot is `install`, else
//!   `ipxe/local.ipxe`. It carries the host's install token (in its command line's URLs), so
//!   it goes only to the host's own address: its `[[hosts]] address`, else its lease (full
//!   mode), else the address its own DHCP requests named (proxy mode, see
//!   [`crate::dhcp::learned`]). Anyone else, and everyone when no address is known, gets
//!   what a machine without an entry gets: the local-boot script, rendered with no host and
//!   no secret (counted as `scripts_withheld` and logged, rate-limited). A machine with no
//!   `[[hosts]]` entry gets the local-boot script: nothing unknown is ever reinstalled.
//! - `GET /install/KEY/TOKEN/NAME`: template NAME rendered for the host KEY (`mac:...`,
//!   `uuid:...` or a bare MAC), e.g. the kickstart the install command line points to.
//! - `POST /done/KEY/TOKEN`: the installer's callback (from `%post`, `late-command`,
//!   cloud-init's `phone_home`, ...): the host's next boot becomes `local`, durably, before
//!   the answer. Idempotent, and it can only switch a host to the local disk, never to an
//!   install. Any other method: 405 with `Allow: POST`.
//!
//! A wrong token, an unknown host and a malformed key or path all get the same 404 with the
//! same body as a missing file; the token is compared in constant time (see
//! [`crate::nextboot::Token`]), against a throw-away one when the host is unknown. With
//! `[install] bind_to_lease`, a request for a host from another address than its own gets
//! that 404 too. Every refusal is counted (`refused_token`, `refused_address`) and logged
//! with the peer's address, at most once per [`REFUSAL_LOG_INTERVAL`].

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use crate::dhcp::learned::LearnedAddresses;
use crate::hosts::{HostConfig, HostIndex, NextBoot};
use crate::metrics::{self, LogLimiter};
use crate::nextboot::{NextBootStore, Token};
use crate::templates::{self, Templates};
use pxe_proto::{ClientUuid, MacAddr};

/// At most one warning per interval and kind of refusal (each is counted).
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What the HTTP layer sends back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            allow: None,
        }
    }

    /// The one answer to a wrong token, an unknown host, a malformed key and a path that is
    /// no route: the file router's 404, byte for byte.
    fn not_found() -> Reply {
        Reply::text(404, "Not Found\n")
    }

    fn method_not_allowed(allow: &'static str) -> Reply {
        Reply {
            allow: Some(allow),
            ..Reply::text(405, "Method Not Allowed\n")
        }
    }
}

metrics::counters! {
    InstallMetrics, InstallSnapshot, "install routes";
    /// iPXE scripts that installed (next boot `install`).
    scripts_install,
    /// iPXE scripts that boot the local disk.
    scripts_local,
    /// Requests for a host's iPXE script from an address that is not the host's (or while
    /// none is known): answered with the script of a machine without an entry, no token.
    scripts_withheld,
    templates_rendered,
    /// Installer callbacks recorded.
    callbacks,
    /// Requests naming no `[[hosts]]` entry.
    unknown_hosts,
    /// Template and callback requests refused for their token: wrong, missing, or for an
    /// unknown host or a malformed key (all the same 404).
    refused_token,
    /// Template and callback requests with the right token from another address than the
    /// host's (`[install] bind_to_lease`).
    refused_address,
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
    /// Templates and callbacks only from the host's own address (`[install] bind_to_lease`).
    pub bind_to_lease: bool,
}

/// One request to the install routes.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path, still percent-encoded.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// What the templates get when `[install] server_url` is unset: the scheme, address and
    /// port the request came to.
    pub server_url: &'a str,
    /// Who sent it (`None`: not known, which matches no host's address).
    pub peer: Option<IpAddr>,
    pub now_unix: u64,
}

/// Refusals logged at most once per interval, by kind.
struct RefusalLogs {
    token: LogLimiter,
    address: LogLimiter,
    script: LogLimiter,
}

/// Everything the install routes read: the settings and templates in effect (a reload swaps
/// the whole service), the next-boot and token store, the lease database and the learned
/// addresses (proxy mode) for where each host is.
pub struct InstallService {
    settings: Arc<InstallSettings>,
    templates: Arc<Templates>,
    next_boot: Option<Arc<NextBootStore>>,
    db: Option<crate::store::Store>,
    learned: Option<Arc<LearnedAddresses>>,
    metrics: Arc<InstallMetrics>,
    logs: RefusalLogs,
    /// What a token for an unknown host is compared with (never handed out).
    decoy: Option<Token>,
}

impl InstallService {
    pub fn new(
        settings: Arc<InstallSettings>,
        templates: Arc<Templates>,
        next_boot: Option<Arc<NextBootStore>>,
        db: Option<crate::store::Store>,
        metrics: Arc<InstallMetrics>,
    ) -> Self {
        InstallService {
            settings,
            templates,
            next_boot,
            db,
            learned: None,
            metrics,
            logs: RefusalLogs {
                token: LogLimiter::new(REFUSAL_LOG_INTERVAL),
                address: LogLimiter::new(REFUSAL_LOG_INTERVAL),
                script: LogLimiter::new(REFUSAL_LOG_INTERVAL),
            },
            decoy: Token::random().ok(),
        }
    }

    /// The addresses hosts' DHCP requests named (proxy mode), filled by the DHCP service.
    pub fn with_learned(mut self, learned: Option<Arc<LearnedAddresses>>) -> Self {
        self.learned = learned;
        self
    }

    pub fn metrics(&self) -> &Arc<InstallMetrics> {
        &self.metrics
    }

    /// Answers an install route, or `None` for any other path.
    pub fn handle(&self, req: &Request<'_>) -> Option<Reply> {
        let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
        let reply = match segments.as_slice() {
            ["boot.ipxe"] => self.only_get(req.method, || self.script(req)),
            ["install", rest @ ..] if !rest.is_empty() => {
                self.only_get(req.method, || match rest {
                    [key, token, name @ ..] if !name.is_empty() => {
                        self.template(req, key, token, &name.join("/"))
                    }
                    _ => self.refuse_token(req, rest[0]),
                })
            }
            ["done", rest @ ..] if !rest.is_empty() => {
                if req.method != "POST" {
                    Reply::method_not_allowed("POST")
                } else if let [key, token] = rest {
                    self.done(req, key, token)
                } else {
                    self.refuse_token(req, rest[0])
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
            Reply::method_not_allowed("GET, HEAD")
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

    /// Where `host` is: its reservation, else its lease (full mode), else the address of its
    /// DHCP requests (proxy mode).
    fn address(&self, host: &HostConfig, now_unix: u64) -> Option<Ipv4Addr> {
        host.address
            .or_else(|| {
                let (db, mac) = (self.db.as_ref()?, host.mac?);
                db.bound_address(&mac, now_unix)
            })
            .or_else(|| self.learned.as_ref()?.get(&host.key()?, now_unix))
    }

    /// Whether `req` comes from `host`'s own address.
    fn asked_by_host(&self, req: &Request<'_>, host: &HostConfig) -> bool {
        let peer = match req.peer.map(|p| p.to_canonical()) {
            Some(IpAddr::V4(p)) => p,
            _ => return false,
        };
        self.address(host, req.now_unix) == Some(peer)
    }

    /// The host `key` names, if `token` is its install token. Every failure is the same
    /// [`Reply::not_found`], after the same constant-time comparison.
    fn authenticate(
        &self,
        req: &Request<'_>,
        key: &str,
        token: &str,
    ) -> Result<&HostConfig, Reply> {
        let host = self.by_key(key);
        let stored = match (host, &self.next_boot) {
            (Some(h), Some(store)) => store.current_token(h),
            _ => None,
        };
        // A host that never had a token, an unknown host: compared with the decoy, refused.
        let matched = match (stored, self.decoy) {
            (Some(t), _) => t.matches(token),
            (None, Some(d)) => {
                std::hint::black_box(d.matches(token));
                false
            }
            (None, None) => false,
        };
        let Some(host) = host.filter(|_| matched) else {
            if host.is_none() {
                metrics::inc(&self.metrics.unknown_hosts);
            }
            return Err(self.refuse_token(req, key));
        };
        if self.settings.bind_to_lease && !self.asked_by_host(req, host) {
            metrics::inc(&self.metrics.refused_address);
            if let Some(held) = self.logs.address.allow() {
                tracing::warn!(
                    host = %host.label(),
                    peer = ?req.peer,
                    expected = ?self.address(host, req.now_unix),
                    held_back = held,
                    "install route with the right token from another address than the host's: \
                     refused ([install] bind_to_lease = true)"
                );
            }
            return Err(Reply::not_found());
        }
        Ok(host)
    }

    /// Counts and logs a refused token (or key), and gives the one 404.
    fn refuse_token(&self, req: &Request<'_>, key: &str) -> Reply {
        metrics::inc(&self.metrics.refused_token);
        if let Some(held) = self.logs.token.allow() {
            tracing::warn!(
                key = ?key.chars().take(64).collect::<String>(),
                peer = ?req.peer,
                held_back = held,
                "install route refused: wrong token, unknown host or malformed URL (404)"
            );
        }
        Reply::not_found()
    }

    fn render(
        &self,
        name: &str,
        host: Option<&HostConfig>,
        next: NextBoot,
        req: &Request<'_>,
    ) -> Reply {
        let address = host.and_then(|h| self.address(h, req.now_unix));
        let token = match (host, &self.next_boot) {
            (Some(h), Some(store)) => match store.token(h) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(host = %h.label(), %e, "no install token for the host");
                    return Reply::text(500, "no install token\n");
                }
            },
            _ => None,
        };
        let token = token.map(|t| t.hex());
        let ctx = templates::host_context(
            self.url(req.server_url),
            &self.settings.boot,
            &self.settings.vars,
            host,
            address,
            token.as_deref(),
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
                tracing::warn!(
                    template = name,
                    host = ?host.map(HostConfig::label),
                    peer = ?req.peer,
                    setting = "install.templates",
                    error = %e,
                    "template rendering failed (500)"
                );
                Reply::text(500, format!("template {name} failed: {e}\n"))
            }
        }
    }

    fn script(&self, req: &Request<'_>) -> Reply {
        let asked = req.query.unwrap_or("");
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
                    self.url(req.server_url).trim_end_matches('/')
                ),
            );
        }
        let (mut mac, mut uuid) = (None, None);
        for pair in asked.split('&') {
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
        let host = match self.find(mac, uuid) {
            Some(h) if self.asked_by_host(req, h) => Some(h),
            Some(h) => {
                // Not where the host is (or nobody knows where it is): what a machine without
                // an entry gets, so that nothing of the host, least of all its token, leaves.
                metrics::inc(&self.metrics.scripts_withheld);
                if let Some(held) = self.logs.script.allow() {
                    let expected = self.address(h, req.now_unix);
                    tracing::warn!(
                        host = %h.label(),
                        peer = ?req.peer,
                        expected = ?expected,
                        held_back = held,
                        "iPXE script withheld: not asked from the host's address; it got the \
                         local-boot script of a machine without an entry{}",
                        if expected.is_none() {
                            " (no address known for it: set `address` in its [[hosts]] entry; \
                             in proxy mode its address is learned from its DHCP REQUEST when \
                             it boots)"
                        } else {
                            ""
                        }
                    );
                }
                None
            }
            None => {
                metrics::inc(&self.metrics.unknown_hosts);
                None
            }
        };
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
        self.render(name, host, next, req)
    }

    fn template(&self, req: &Request<'_>, key: &str, token: &str, name: &str) -> Reply {
        let host = match self.authenticate(req, key, token) {
            Ok(h) => h,
            Err(reply) => return reply,
        };
        let Some(name) = percent_decode(name).filter(|n| self.templates.has(n)) else {
            return Reply::not_found();
        };
        metrics::inc(&self.metrics.templates_rendered);
        self.render(&name, Some(host), self.action(host), req)
    }

    fn done(&self, req: &Request<'_>, key: &str, token: &str) -> Reply {
        let host = match self.authenticate(req, key, token) {
            Ok(h) => h,
            Err(reply) => return reply,
        };
        let Some(store) = &self.next_boot else {
            return Reply::not_found();
        };
        match store.set(&[host], NextBoot::Local, req.now_unix) {
            Ok(changed) => {
                metrics::inc(&self.metrics.callbacks);
                tracing::info!(host = %host.label(), changed, peer = ?req.peer,
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
