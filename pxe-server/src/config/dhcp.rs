//! `[dhcp]` and its `[[dhcp.subnets]]`.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use pxe_proto::Ipv4Cidr;
use serde::{Deserialize, Serialize};

use super::{Check, Invalid};
use crate::dhcp::{DhcpMode, DhcpSettings, Subnet, UnknownHosts};
use crate::hosts::{BootProfile, HostIndex};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DhcpConfig {
    /// The DHCP service runs (off by default: a file with only `[tftp]` serves TFTP only).
    pub enabled: bool,
    pub mode: DhcpMode,
    /// Interfaces the service binds to (by name); empty = all.
    pub interfaces: Vec<String>,
    /// Our address (server identifier, option 54). Unset: the address of the interface the
    /// request came in on.
    pub server_ip: Option<Ipv4Addr>,
    /// siaddr / next-server (the TFTP server). Unset: the server identifier.
    pub next_server: Option<Ipv4Addr>,
    /// Also answer PXE boot server requests on port 4011.
    pub pxe_port_4011: bool,
    pub unknown_hosts: UnknownHosts,
    /// The lease database (full mode), one redb file.
    pub lease_db: PathBuf,
    /// Lease time granted when the client asks for none, in seconds (full mode).
    pub lease_time_secs: u32,
    /// Longest lease granted, in seconds.
    pub max_lease_time_secs: u32,
    /// How long an offered address is held for the client's REQUEST, in seconds.
    pub offer_hold_secs: u32,
    /// How long a declined address stays unusable, in seconds.
    pub decline_hold_secs: u32,
    /// Full mode: most leases (offered, bound or declined) of a pool that one link may hold:
    /// one relay address (giaddr), or one interface for clients on it directly. Past it, new
    /// clients from that link get no answer; clients that hold a lease keep and renew it.
    /// 0 (the default): no bound.
    pub max_leases_per_link: u32,
    /// Address pools (full mode).
    pub subnets: Vec<SubnetConfig>,
}

impl Default for DhcpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            mode: DhcpMode::Proxy,
            interfaces: Vec::new(),
            server_ip: None,
            next_server: None,
            pxe_port_4011: true,
            unknown_hosts: UnknownHosts::Default,
            lease_db: PathBuf::from("/var/lib/pxe-server/leases.redb"),
            lease_time_secs: 3600,
            max_lease_time_secs: 86_400,
            offer_hold_secs: 60,
            decline_hold_secs: 600,
            max_leases_per_link: 0,
            subnets: Vec::new(),
        }
    }
}

/// One address pool, `[[dhcp.subnets]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetConfig {
    /// `10.0.0.0/24`.
    pub subnet: Ipv4Cidr,
    /// First and last address handed out (inclusive).
    pub range_start: Ipv4Addr,
    pub range_end: Ipv4Addr,
    /// Option 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<Ipv4Addr>,
    /// Option 6.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv4Addr>,
    /// Option 15.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Overrides `dhcp.lease_time_secs` for this pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_time_secs: Option<u32>,
    /// Overrides `dhcp.max_leases_per_link` for this pool (0: no bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_leases_per_link: Option<u32>,
}

impl DhcpConfig {
    /// The full-mode address server runs (the lease database is opened for it).
    pub fn is_full(&self) -> bool {
        self.enabled && self.mode == DhcpMode::Full
    }

    /// The runtime settings of the DHCP service, answering with `boot` and `hosts`.
    pub fn settings(&self, boot: &BootProfile, hosts: Arc<HostIndex>) -> DhcpSettings {
        DhcpSettings {
            mode: self.mode,
            interfaces: self.interfaces.clone(),
            server_ip: self.server_ip,
            next_server: self.next_server,
            pxe_port_4011: self.pxe_port_4011,
            unknown_hosts: self.unknown_hosts,
            lease_db: self.lease_db.clone(),
            lease_time_secs: self.lease_time_secs,
            max_lease_time_secs: self.max_lease_time_secs,
            offer_hold_secs: self.offer_hold_secs,
            decline_hold_secs: self.decline_hold_secs,
            subnets: self
                .subnets
                .iter()
                .map(|s| s.subnet(self.max_leases_per_link))
                .collect(),
            boot: boot.clone(),
            hosts,
        }
    }

    pub(super) fn validate(&self) -> Check {
        let fail = |key: &str, reason: String| Err(Invalid::at(&["dhcp", key], reason));
        if self.lease_time_secs < 60 {
            return fail("lease_time_secs", "must be at least 60".into());
        }
        if self.max_lease_time_secs < self.lease_time_secs {
            return fail(
                "max_lease_time_secs",
                format!(
                    "must be at least lease_time_secs ({})",
                    self.lease_time_secs
                ),
            );
        }
        if self.offer_hold_secs < 1 {
            return fail("offer_hold_secs", "must be at least 1".into());
        }
        if self.lease_db.as_os_str().is_empty() {
            return fail("lease_db", "must name a file".into());
        }
        if self.is_full() && self.subnets.is_empty() {
            return fail(
                "mode",
                "full mode needs at least one [[dhcp.subnets]] entry".into(),
            );
        }
        for (i, s) in self.subnets.iter().enumerate() {
            let at = format!("subnets[{i}]");
            let sfail = |key: &str, reason: String| Err(Invalid::at(&["dhcp", &at, key], reason));
            for (key, ip) in [("range_start", s.range_start), ("range_end", s.range_end)] {
                if !s.subnet.contains(ip) || ip == s.subnet.network() || ip == s.subnet.broadcast()
                {
                    return sfail(key, format!("{ip} is not a host address of {}", s.subnet));
                }
            }
            if u32::from(s.range_start) > u32::from(s.range_end) {
                return sfail(
                    "range_end",
                    format!("{} is before range_start", s.range_end),
                );
            }
            if let Some(r) = s.router
                && !s.subnet.contains(r)
            {
                return sfail("router", format!("{r} is not in {}", s.subnet));
            }
            if let Some(t) = s.lease_time_secs
                && t < 60
            {
                return sfail("lease_time_secs", "must be at least 60".into());
            }
            let size = u32::from(s.range_end) - u32::from(s.range_start) + 1;
            if let Some(n) = s.max_leases_per_link
                && n > size
            {
                return sfail(
                    "max_leases_per_link",
                    format!(
                        "{n} is more than the {size} addresses of the range (0 turns the bound off)"
                    ),
                );
            }
            if let Some(j) = self.subnets[..i].iter().position(|o| {
                o.subnet.contains(s.subnet.network()) || s.subnet.contains(o.subnet.network())
            }) {
                return sfail("subnet", format!("overlaps dhcp.subnets[{j}]"));
            }
        }
        Ok(())
    }
}

impl SubnetConfig {
    /// The runtime pool; `max_leases_per_link` is `[dhcp]`'s unless the subnet sets its own.
    fn subnet(&self, max_leases_per_link: u32) -> Subnet {
        Subnet {
            subnet: self.subnet,
            range_start: self.range_start,
            range_end: self.range_end,
            router: self.router,
            dns: self.dns.clone(),
            domain: self.domain.clone(),
            lease_time_secs: self.lease_time_secs,
            max_leases_per_link: self.max_leases_per_link.unwrap_or(max_leases_per_link),
        }
    }
}
