//! [`HostIndex`]: the configured hosts with their look-ups.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use pxe_proto::{ClientUuid, MacAddr};

use super::HostConfig;
use super::select::{SelectError, select};

/// The `[[hosts]]` entries of one configuration, in config order, indexed by MAC, UUID and
/// reserved address. When two entries share a value (the configuration refuses that), the
/// first one wins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostIndex {
    hosts: Vec<HostConfig>,
    by_mac: HashMap<MacAddr, usize>,
    by_uuid: HashMap<ClientUuid, usize>,
    by_address: HashMap<Ipv4Addr, usize>,
}

impl HostIndex {
    pub fn new(hosts: Vec<HostConfig>) -> HostIndex {
        let mut index = HostIndex::default();
        for (i, h) in hosts.iter().enumerate() {
            if let Some(m) = h.mac {
                index.by_mac.entry(m).or_insert(i);
            }
            if let Some(u) = h.uuid {
                index.by_uuid.entry(u).or_insert(i);
            }
            if let Some(a) = h.address {
                index.by_address.entry(a).or_insert(i);
            }
        }
        index.hosts = hosts;
        index
    }

    /// The entries, in config order; the indices the look-ups return point into this slice.
    pub fn hosts(&self) -> &[HostConfig] {
        &self.hosts
    }

    /// Entry `i` (an index one of the look-ups returned).
    pub fn get(&self, i: usize) -> &HostConfig {
        &self.hosts[i]
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The host with this MAC, else the one with this UUID: how a client is recognised.
    pub fn find(&self, mac: Option<&MacAddr>, uuid: Option<&ClientUuid>) -> Option<usize> {
        mac.and_then(|m| self.by_mac.get(m))
            .or_else(|| uuid.and_then(|u| self.by_uuid.get(u)))
            .copied()
    }

    /// The host whose fixed address is `ip`.
    pub fn reserved(&self, ip: Ipv4Addr) -> Option<usize> {
        self.by_address.get(&ip).copied()
    }

    /// A host by its key ([`HostConfig::key`]: `mac:…`, `uuid:…`) or by a bare MAC (`:` or
    /// `-`, any case) or UUID.
    pub fn by_key(&self, key: &str) -> Option<usize> {
        let raw = key
            .strip_prefix("mac:")
            .or_else(|| key.strip_prefix("uuid:"))
            .unwrap_or(key);
        let mac = raw.replace('-', ":").parse::<MacAddr>().ok();
        let uuid = raw.parse::<ClientUuid>().ok();
        self.find(mac.as_ref(), uuid.as_ref())
    }

    /// The entries (indices, in config order, no duplicates) an operator's selector names:
    /// `all`, or a comma-separated list of hostnames, MACs, UUIDs and globs over hostnames.
    pub fn select(&self, selector: &str) -> Result<Vec<usize>, SelectError> {
        select(&self.hosts, selector)
    }
}
