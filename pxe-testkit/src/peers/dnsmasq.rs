//! dnsmasq as a peer: the DHCP (and TFTP) server the tests compare with or run next to.

use std::path::Path;

use crate::netns::Netns;
use crate::process::Proc;

/// Starts dnsmasq in `ns` (foreground, no DNS, no config file, no ping before offering, lease
/// file `<dir>/dnsmasq.leases`, pid file and output in `dir`) with `args` (at least
/// `--interface` and a `--dhcp-range`), and waits until its DHCP service (and TFTP, with
/// `--enable-tftp`) is up.
pub fn start_dnsmasq(ns: &Netns, dir: &Path, args: &[&str]) -> Proc {
    let mut cmd = ns.command("dnsmasq");
    cmd.args([
        "--no-daemon",
        "--conf-file=/dev/null",
        "--port=0",
        "--user=root",
        "--bind-interfaces",
        "--no-ping",
        "--dhcp-lease-max=10000",
    ])
    .arg(format!(
        "--dhcp-leasefile={}",
        dir.join("dnsmasq.leases").display()
    ))
    .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
    .args(args);
    let mut p = Proc::spawn(cmd, dir, "dnsmasq");
    p.wait_for("DHCP, IP range");
    if args.contains(&"--enable-tftp") {
        p.wait_for("TFTP root is");
    }
    p
}
