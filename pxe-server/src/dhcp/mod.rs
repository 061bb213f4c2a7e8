//! DHCP for PXE: a sans-IO responder (proxy and full mode), the lease store, and the server
//! that owns the sockets. The wire decoder is `pxe_proto::dhcp`. An engine feeds datagrams to
//! [`responder::Responder::handle`] and sends what it returns.
pub mod balance;
pub mod learned;
pub mod leases;
pub mod metrics;
pub mod responder;
pub mod server;

use std::net::Ipv4Addr;
use std::sync::Arc;

use pxe_proto::Ipv4Cidr;
use serde::{Deserialize, Serialize};

use crate::hosts::{BootProfile, HostIndex};

/// How the DHCP service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// ProxyDHCP (PXE 2.1): boot information only, to PXE/HTTP boot clients; another server
    /// gives the addresses.
    #[default]
    Proxy,
    /// A DHCP server: addresses from `[[dhcp.subnets]]`, and boot information.
    Full,
}

/// What a client that matches no `[[hosts]]` entry gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnknownHosts {
    /// The default `[boot]` profile (and, in full mode, a pool address).
    #[default]
    Default,
    /// No answer at all.
    Ignore,
}

/// One address pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub subnet: Ipv4Cidr,
    /// First and last address handed out (inclusive).
    pub range_start: Ipv4Addr,
    pub range_end: Ipv4Addr,
    /// Option 3.
    pub router: Option<Ipv4Addr>,
    /// Option 6.
    pub dns: Vec<Ipv4Addr>,
    /// Option 15.
    pub domain: Option<String>,
    /// Lease time of this pool (else the service's).
    pub lease_time_secs: Option<u32>,
    /// Most leases of this pool one link (relay address or interface) may hold; 0: no bound.
    /// The subnet's `max_leases_per_link`, else `[dhcp]`'s.
    pub max_leases_per_link: u32,
}

/// What the DHCP service answers with (converted from `[dhcp]`, `[boot]` and `[[hosts]]`;
/// replaced whole on reload).
#[derive(Debug, Clone, PartialEq)]
pub struct DhcpSettings {
    pub mode: DhcpMode,
    /// Interfaces the sockets bind to (by name); empty = all.
    pub interfaces: Vec<String>,
    /// Our address (server identifier, option 54); unset: the arrival interface's address.
    pub server_ip: Option<Ipv4Addr>,
    /// siaddr / next-server; unset: the server identifier.
    pub next_server: Option<Ipv4Addr>,
    /// Answer PXE boot server requests on port 4011.
    pub pxe_port_4011: bool,
    pub unknown_hosts: UnknownHosts,
    /// The lease database (full mode), when the caller has not opened it.
    pub lease_db: std::path::PathBuf,
    /// Lease time granted when the client asks for none (full mode).
    pub lease_time_secs: u32,
    /// Longest lease granted.
    pub max_lease_time_secs: u32,
    /// How long an offered address is held for the client's REQUEST.
    pub offer_hold_secs: u32,
    /// How long a declined address stays unusable.
    pub decline_hold_secs: u32,
    /// Address pools (full mode).
    pub subnets: Vec<Subnet>,
    /// The default boot profile.
    pub boot: BootProfile,
    /// The known hosts (shared with the install routes and the next-boot commands).
    pub hosts: Arc<HostIndex>,
}

/// A reload for the running DHCP service: new answer settings and the userspace filter's new
/// policy, applied between two batches (the sockets stay as they are).
#[derive(Debug, Clone)]
pub struct DhcpReload {
    pub settings: Arc<DhcpSettings>,
    pub policy: crate::xdp::PolicySet,
}
