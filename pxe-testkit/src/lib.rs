//! The namespace harness of the workspace's integration tests, written once.
//!
//! - [`caps`]: the capability policy. A test that lacks root, network namespaces or a peer
//!   program fails loudly, naming what is missing; it never skips and never passes silently.
//! - [`netns`]: network namespaces ([`Netns`], deleted with everything still running inside
//!   on drop), veth pairs, two hosts on a veth ([`pair`]) and hosts on a bridge ([`lan`]).
//! - [`process`]: child processes killed and reaped on drop ([`Proc`]), bounded runs of a
//!   command ([`run_bounded`], [`run_command`], [`run`], [`run_json`]) and [`wait_until`].
//! - [`bins`]: the pxe-server and pxe-bench binaries under test.
//! - [`peers`]: pxe-server ([`PxeServer`]; a site of several instances on one segment sharing
//!   a PostgreSQL, [`Site`]), PostgreSQL, dnsmasq, dhclient and perfdhcp's report.
//! - [`capture`]: tcpdump writing a pcap file, and the DHCP replies read back from it.
//! - [`testnet`]: a server and a client namespace on one veth with pxe-server serving a
//!   temporary root, and the real TFTP clients (atftp, curl, tftp-hpa) that fetch from it.
//! - [`data`]: seeded test bytes and sha256 digests.
//! - [`tftp`]: a small blocking TFTP client with its own codec, written independently of the
//!   workspace's TFTP code so that it checks the server's bytes from the outside.
//!
//! Everything is RAII and every wait is bounded: a test never depends on machine state that an
//! earlier run left behind, and leaves none.

pub mod bins;
pub mod caps;
pub mod capture;
pub mod data;
pub mod netns;
pub mod peers;
pub mod process;
pub mod testnet;
pub mod tftp;

pub use bins::{bench_bin, server_bin, workspace_root};
pub use caps::{NEEDS_ROOT, cannot_run, require_program, require_root};
pub use data::{sha256, sha256_file, test_bytes};
pub use netns::{Host, Lan, Netns, lan, pair, veth};
pub use peers::dhcp_clients::{dhclient, dhclient_lease_field, perfdhcp_block};
pub use peers::dnsmasq::start_dnsmasq;
pub use peers::postgres::{Postgres, make_ca};
pub use peers::pxe_server::{PxeServer, ServeOptions, Site, SiteSpec, SiteStore, metric};
pub use process::{
    Proc, Run, run, run_bounded, run_command, run_command_term, run_json, signal_pid, wait_until,
};
/// The signals a test sends ([`Proc::signal`]).
pub use rustix::process::Signal;
