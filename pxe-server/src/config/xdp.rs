//! `[xdp]`: the DHCP discovery filter.

use std::collections::BTreeMap;

use pxe_ebpf::Policy;
use pxe_proto::MacAddr;
use serde::{Deserialize, Serialize};

use super::{Check, Invalid};
use crate::hosts::HostIndex;
use crate::xdp::{PolicySet, XdpChoice, XdpSettings};

/// `[xdp]`: the policy applied to DHCP before the responder sees it. The default passes
/// everything and attaches nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XdpConfig {
    /// Mode for every interface in `dhcp.interfaces` (XDP needs named interfaces).
    pub mode: XdpChoice,
    /// Per-interface overrides, `{ eth1 = "skb" }`; an interface named only here is attached
    /// too.
    pub interfaces: BTreeMap<String, XdpChoice>,
    /// Drop DHCP that is not from a PXE/HTTP-boot client (proxy mode on a segment where
    /// another DHCP server answers the rest). Keep false on a host whose other DHCP server
    /// needs those packets.
    pub drop_non_pxe: bool,
    /// Per-MAC DISCOVER/REQUEST rate (tokens per second); 0 = no rate limit.
    pub rate_per_sec: u32,
    /// Per-MAC burst (bucket size).
    pub burst: u32,
    /// Only MACs listed in `[[hosts]]` may boot.
    pub allow_list: bool,
    /// MACs that are always dropped.
    pub deny: Vec<MacAddr>,
}

impl Default for XdpConfig {
    fn default() -> Self {
        Self {
            mode: XdpChoice::Off,
            interfaces: BTreeMap::new(),
            drop_non_pxe: false,
            rate_per_sec: 0,
            burst: 10,
            allow_list: false,
            deny: Vec::new(),
        }
    }
}

impl XdpConfig {
    /// The interfaces to attach to, with their mode (`Off` ones included, for the log).
    pub fn attach_list(&self, dhcp_interfaces: &[String]) -> Vec<(String, XdpChoice)> {
        let mut out: Vec<(String, XdpChoice)> = dhcp_interfaces
            .iter()
            .map(|i| (i.clone(), *self.interfaces.get(i).unwrap_or(&self.mode)))
            .collect();
        for (i, m) in &self.interfaces {
            if !dhcp_interfaces.contains(i) {
                out.push((i.clone(), *m));
            }
        }
        out
    }

    /// The policy and lists the filter applies: these flags and limits, the MACs of `hosts`
    /// as the allow-list, `deny` as the deny-list.
    pub fn policy_set(&self, hosts: &HostIndex) -> PolicySet {
        let mut flags = 0;
        if self.drop_non_pxe {
            flags |= pxe_ebpf::POLICY_DROP_NON_PXE;
        }
        if self.rate_per_sec > 0 {
            flags |= pxe_ebpf::POLICY_RATE_LIMIT;
        }
        if self.allow_list {
            flags |= pxe_ebpf::POLICY_ALLOW_LIST;
        }
        if !self.deny.is_empty() {
            flags |= pxe_ebpf::POLICY_DENY_LIST;
        }
        PolicySet {
            policy: Policy {
                flags,
                rate_per_sec: self.rate_per_sec,
                burst: self.burst,
                _pad: 0,
            },
            allow: hosts
                .hosts()
                .iter()
                .filter_map(|h| h.mac)
                .map(|m| m.0)
                .collect(),
            deny: self.deny.iter().map(|m| m.0).collect(),
        }
    }

    /// The runtime settings of the filter, on the DHCP service's `dhcp_interfaces`.
    pub fn settings(&self, dhcp_interfaces: &[String], hosts: &HostIndex) -> XdpSettings {
        XdpSettings {
            attach: self.attach_list(dhcp_interfaces),
            mode_without_interfaces: self.mode != XdpChoice::Off && dhcp_interfaces.is_empty(),
            policy: self.policy_set(hosts),
        }
    }

    pub(super) fn validate(&self, hosts: &[crate::hosts::HostConfig]) -> Check {
        let fail = |key: &str, reason: String| Err(Invalid::at(&["xdp", key], reason));
        if self.rate_per_sec > pxe_ebpf::MAX_RATE_PER_SEC {
            return fail(
                "rate_per_sec",
                format!("at most {} per second", pxe_ebpf::MAX_RATE_PER_SEC),
            );
        }
        if self.rate_per_sec > 0 && !(1..=pxe_ebpf::MAX_BURST).contains(&self.burst) {
            return fail("burst", format!("must be 1..={}", pxe_ebpf::MAX_BURST));
        }
        if self.allow_list && !hosts.iter().any(|h| h.mac.is_some()) {
            return fail(
                "allow_list",
                "no [[hosts]] entry has a mac: every client would be dropped".into(),
            );
        }
        Ok(())
    }
}
