//! Host entries for the tests of the modules that use hosts.

use super::{HostConfig, NextBoot};

/// An entry with only these identities set.
pub(crate) fn host(mac: Option<&str>, uuid: Option<&str>, name: Option<&str>) -> HostConfig {
    HostConfig {
        mac: mac.map(|m| m.parse().unwrap()),
        uuid: uuid.map(|u| u.parse().unwrap()),
        hostname: name.map(str::to_owned),
        address: None,
        boot: Default::default(),
        next_boot: NextBoot::Local,
        vars: toml::Table::new(),
    }
}

pub(crate) const UUID: &str = "4c4c4544-0031-3510-8047-b4c04f4d3232";

pub(crate) fn hosts() -> Vec<HostConfig> {
    vec![
        host(Some("52:54:00:00:00:01"), None, Some("rack1-n01")),
        host(Some("52:54:00:00:00:02"), None, Some("rack1-n02")),
        host(None, Some(UUID), Some("rack2-n01")),
        host(Some("52:54:00:00:00:04"), None, None),
    ]
}
