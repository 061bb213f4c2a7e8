//! The real DHCP clients the tests run: ISC dhclient, and the report of ISC's perfdhcp.

use std::path::Path;
use std::time::Duration;

use crate::Signal;
use crate::netns::Netns;
use crate::process::{Run, run, signal_pid};

/// One `dhclient -1 -v` exchange on `iface` in `ns` (with the config file `conf`, if any), its
/// leases in `<dir>/<tag>.leases`, its output in `<dir>/<tag>.out|.err`, bounded by `timeout`.
/// dhclient forks into the background once bound (the parent's exit ends the run); that
/// daemon is killed before this returns.
pub fn dhclient(
    ns: &Netns,
    dir: &Path,
    tag: &str,
    conf: Option<&Path>,
    iface: &str,
    timeout: Duration,
) -> Run {
    let pid_file = dir.join(format!("{tag}.pid"));
    let mut cmd = ns.command("dhclient");
    cmd.args(["-1", "-v"]);
    if let Some(conf) = conf {
        cmd.arg("-cf").arg(conf);
    }
    cmd.arg("-lf")
        .arg(dir.join(format!("{tag}.leases")))
        .arg("-pf")
        .arg(&pid_file)
        .args(["-sf", "/bin/true", iface]);
    let r = run(cmd, dir, tag, timeout);
    if let Ok(pid) = std::fs::read_to_string(&pid_file)
        && let Ok(pid) = pid.trim().parse::<u32>()
    {
        signal_pid(pid, Signal::KILL);
    }
    r
}

/// The value of `key` (`"fixed-address "`, `"option routers "`, ...) in a lease file dhclient
/// wrote, without its `;`. Fails the test, showing the file, when the key is missing.
pub fn dhclient_lease_field(lease: &str, key: &str) -> String {
    lease
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in the lease:\n{lease}"))
        .trim_end_matches(';')
        .trim()
        .to_owned()
}

/// The counts (sent, received, drops) of one perfdhcp statistics block ("DISCOVER-OFFER" or
/// "REQUEST-ACK").
pub fn perfdhcp_block(out: &str, name: &str) -> (u64, u64, u64) {
    let start = out
        .find(&format!("Statistics for: {name}"))
        .unwrap_or_else(|| panic!("no {name} statistics in:\n{out}"));
    let block = &out[start..];
    let get = |key: &str| -> u64 {
        block
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in:\n{block}"))
            .trim()
            .parse()
            .unwrap()
    };
    (
        get("sent packets:"),
        get("received packets:"),
        get("drops:"),
    )
}
