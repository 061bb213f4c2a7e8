//! `[boot]` and `[[hosts]]`: the default boot profile and the known machines (their types
//! live in `crate::hosts`).

use super::dhcp::DhcpConfig;
use super::{Check, Invalid};
use crate::dhcp::DhcpMode;
use crate::hosts::{BootProfile, HostConfig};

/// Every boot file is 1 to 255 bytes without NUL (it goes into a DHCP option).
fn check_profile(prefix: &[&str], p: &BootProfile) -> Check {
    for (key, v) in p.files() {
        if let Some(v) = v
            && (v.is_empty() || v.len() > 255 || v.contains('\0'))
        {
            let mut at = prefix.to_vec();
            at.push(key);
            return Err(Invalid::at(&at, "must be 1 to 255 bytes without NUL"));
        }
    }
    Ok(())
}

/// `[boot]`, then each `[[hosts]]` entry: an identity, no value another entry has, a fixed
/// address inside a pool (full mode), a usable hostname and profile.
pub(super) fn validate(boot: &BootProfile, hosts: &[HostConfig], dhcp: &DhcpConfig) -> Check {
    check_profile(&["boot"], boot)?;
    for (i, h) in hosts.iter().enumerate() {
        let at = format!("hosts[{i}]");
        let fail = |key: &str, reason: String| Err(Invalid::at(&[&at, key], reason));
        if h.mac.is_none() && h.uuid.is_none() {
            return Err(Invalid::at(&[&at], "needs a mac or a uuid"));
        }
        for (j, o) in hosts[..i].iter().enumerate() {
            if h.mac.is_some() && h.mac == o.mac {
                return fail("mac", format!("also in hosts[{j}]"));
            }
            if h.uuid.is_some() && h.uuid == o.uuid {
                return fail("uuid", format!("also in hosts[{j}]"));
            }
            if h.address.is_some() && h.address == o.address {
                return fail("address", format!("also in hosts[{j}]"));
            }
        }
        if let Some(a) = h.address
            && dhcp.mode == DhcpMode::Full
            && !dhcp.subnets.iter().any(|s| s.subnet.contains(a))
        {
            return fail("address", format!("{a} is in no dhcp.subnets entry"));
        }
        if let Some(n) = &h.hostname
            && (n.is_empty() || n.len() > 255)
        {
            return fail("hostname", "must be 1 to 255 bytes".into());
        }
        check_profile(&[&at, "boot"], &h.boot)?;
    }
    Ok(())
}
