//! `pxe-bench boot`: thousands of simulated machines network-booting at once (DHCP, then TFTP
//! of the boot file, the kernel and the initrd, or the kernel and initrd over HTTP), from one
//! thread.
//!
//! I/O design: one epoll loop over every socket, one timer heap, no thread or task per client.
//! DHCP from all clients shares one socket on port 68 (plus one for ProxyDHCP's port 4011),
//! sent with `sendmmsg` and received with `recvmmsg`, demultiplexed by chaddr (a client's xid
//! changes when a NAK restarts it; the client checks the xid itself). Each TFTP transfer
//! gets a socket of its own (a real client's TID: servers key transfers by address and port),
//! bound to the client's source address, opened when the transfer starts and closed when it
//! ends; a readable one is drained with `recvmmsg`. TFTP sockets receive with UDP GRO (unless
//! `gro` is off): a window the server sent as one GSO burst stays one receive, split back into
//! its datagrams here, so a windowed transfer costs the simulator one receive per window rather
//! than one per block. With `--http-base`, each client has one non-blocking TCP connection
//! (same source address, same epoll set) for its kernel and initrd; reads from every connection
//! go into one shared buffer and are handed to the client's parser as they come. The
//! per-client logic is the sans-IO [`BootClient`](crate::boot_client::BootClient); this module
//! only moves bytes, keeps time and counts:
//! - [`setup`]: the limits checked, the DHCP sockets opened, the clients' identities drawn;
//! - [`event_loop`]: arrivals, timers and ready sockets until every client has finished;
//! - [`sim`]: the loop's state, and what happens to one client after any of its events;
//! - [`report`]: the tally of finished clients and the report it becomes.
//!
//! Sockets, epoll, the open-files limit and CPU time come from `pxe-net`.

mod event_loop;
mod report;
mod setup;
mod sim;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) use report::{BootReport, human_bytes};

use crate::boot_client::{BootPlan, Step};
use crate::dhcp_storm::DhcpParams;
use crate::server_view::{Scraper, ServerView, Target};

#[derive(Debug, Clone)]
pub(crate) struct BootParams {
    /// The clients, their DHCP and the run's deadline (the DHCP server is `dhcp.server`).
    pub dhcp: DhcpParams,
    pub plan: BootPlan,
    pub verify_dir: Option<PathBuf>,
    /// TFTP source addresses, client i uses `sources[i % len]`; empty: the wildcard.
    pub sources: Vec<Ipv4Addr>,
    /// Transfers leave from the client's leased address (as firmware's do), when it has one.
    pub source_from_lease: bool,
    pub progress: bool,
    /// TFTP sockets receive with UDP GRO: a window the server sent with GSO is one receive.
    pub gro: bool,
    /// Clients 0..N stop after this phase on purpose (never ask for the next file), so that a
    /// server's stuck detection can be checked; reported apart from the failures.
    pub stall: Option<(Step, usize)>,
    /// The server's metrics endpoint, scraped every interval while the storm runs.
    pub metrics: Option<(Target, Duration)>,
}

const TOKEN_DHCP: u64 = u64::MAX;
const TOKEN_PROXY: u64 = u64::MAX - 1;
/// Marks client i's HTTP connection (token `TOKEN_HTTP | i`; TFTP sockets are token i).
const TOKEN_HTTP: u64 = 1 << 40;
/// Bytes of one read from an HTTP connection (the buffer all connections share).
const HTTP_READ: usize = 256 * 1024;

pub(crate) fn run(p: &BootParams) -> anyhow::Result<BootReport> {
    let (mut sim, configs) = setup::prepare(p)?;
    let scraper = match &p.metrics {
        Some((target, every)) => Some(Scraper::start(target.clone(), *every)?),
        None => None,
    };
    let ran = event_loop::run(p, &mut sim, configs);
    let start = sim.start;
    let scrapes = scraper.map(Scraper::finish);
    let mut report = report::build(p, sim, ran);
    if let (Some(scrapes), Some((target, _))) = (scrapes, &p.metrics) {
        let c = &report.curves;
        let view = ServerView::build(&target.url, scrapes, start, &c.completions, &c.failures);
        report.server = Some(view);
    }
    Ok(report)
}
