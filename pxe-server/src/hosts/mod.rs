//! The machines the server knows: their entries (`[[hosts]]`, [`HostConfig`]), the boot
//! profiles ([`BootProfile`], `[boot]` and each host's overrides), what each boots next
//! ([`NextBoot`]), their keys and labels, and [`HostIndex`]: the one index by MAC, UUID and
//! reserved address that the DHCP responder, the install routes and the next-boot commands
//! share (built once per configuration, swapped whole on reload).
//!
//! Hosts are keyed by MAC (`mac:52:54:00:12:34:56`), else by UUID (`uuid:...`): the identity
//! the DHCP side matches them by.

use std::net::Ipv4Addr;

use pxe_proto::{ClientUuid, MacAddr};
use serde::{Deserialize, Serialize};

mod index;
mod select;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use index::HostIndex;
pub use select::SelectError;

/// What a host boots next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NextBoot {
    /// The installer (kernel, initrd and install template of the host's profile).
    Install,
    /// The local disk.
    #[default]
    Local,
}

impl NextBoot {
    pub fn name(self) -> &'static str {
        match self {
            NextBoot::Install => "install",
            NextBoot::Local => "local",
        }
    }
}

/// Boot files and OS parameters. In `[boot]` it is the default profile; in a `[hosts.boot]`
/// table each field set overrides the default one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BootProfile {
    /// Option 93 arch 0 (BIOS), e.g. `undionly.kpxe`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bios: Option<String>,
    /// Arch 6 (UEFI IA32).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uefi_ia32: Option<String>,
    /// Arch 7 and 9 (UEFI x64), e.g. `snponly.efi`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uefi_x64: Option<String>,
    /// Arch 11 (UEFI ARM64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arm64: Option<String>,
    /// Arch 16 (UEFI x64 HTTP boot): a full URL, `http://10.0.0.1/ipxe.efi`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uefi_http: Option<String>,
    /// What iPXE gets instead of a chainloader (an URL or a file name), so it never loops.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipxe_script: Option<String>,
    /// Kernel, initrd and command line for the HTTP/iPXE side (stored, used by `http`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

impl BootProfile {
    /// `self` with every unset field taken from `default`.
    pub fn or(&self, default: &BootProfile) -> BootProfile {
        let pick = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
        BootProfile {
            bios: pick(&self.bios, &default.bios),
            uefi_ia32: pick(&self.uefi_ia32, &default.uefi_ia32),
            uefi_x64: pick(&self.uefi_x64, &default.uefi_x64),
            arm64: pick(&self.arm64, &default.arm64),
            uefi_http: pick(&self.uefi_http, &default.uefi_http),
            ipxe_script: pick(&self.ipxe_script, &default.ipxe_script),
            kernel: pick(&self.kernel, &default.kernel),
            initrd: pick(&self.initrd, &default.initrd),
            cmdline: pick(&self.cmdline, &default.cmdline),
        }
    }

    /// The boot file fields with their keys, for validation.
    pub fn files(&self) -> [(&'static str, &Option<String>); 6] {
        [
            ("bios", &self.bios),
            ("uefi_ia32", &self.uefi_ia32),
            ("uefi_x64", &self.uefi_x64),
            ("arm64", &self.arm64),
            ("uefi_http", &self.uefi_http),
            ("ipxe_script", &self.ipxe_script),
        ]
    }
}

/// A known machine, `[[hosts]]`: matched by `mac`, else by `uuid` (option 97, written as
/// `dmidecode -s system-uuid` prints it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<ClientUuid>,
    /// Option 12 in full mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// A fixed address (full mode); it must lie in a `[[dhcp.subnets]]` subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    #[serde(default)]
    pub boot: BootProfile,
    /// What the host boots while no `pxe-server host` command or installer callback has
    /// recorded an action for it (see `nextboot`).
    #[serde(default)]
    pub next_boot: NextBoot,
    /// Values for the install templates (`vars.*`), over `[install] vars`.
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub vars: toml::Table,
}

impl HostConfig {
    /// The stable key of a host: its MAC, else its UUID; `None` for an entry with neither (the
    /// config refuses those).
    pub fn key(&self) -> Option<String> {
        if let Some(m) = self.mac {
            return Some(format!("mac:{m}"));
        }
        self.uuid.map(|u| format!("uuid:{u}"))
    }

    /// A host's name for people: its hostname, else its key.
    pub fn label(&self) -> String {
        self.hostname
            .clone()
            .or_else(|| self.key())
            .unwrap_or_else(|| "(unnamed)".to_owned())
    }
}
