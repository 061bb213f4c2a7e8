//! Before the clock starts: the limits checked, the DHCP sockets opened, the loop's state made
//! with every client waiting, and the clients' identities drawn.

use std::collections::BinaryHeap;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::Instant;

use anyhow::{Context, bail};
use pxe_net::mmsg::{ErrorCounts, SendBatch};
use pxe_net::{Epoll, EventFlags};

use super::report::{HttpStats, Packets, Retransmits, Tally};
use super::sim::{Files, Sim, Stage};
use super::{BootParams, HTTP_READ, TOKEN_DHCP, TOKEN_PROXY};
use crate::dhcp_client::ClientConfig;

/// The loop's state, every socket it starts with open, and each client's identity (taken when
/// the client arrives).
pub(super) fn prepare(p: &BootParams) -> anyhow::Result<(Sim, Vec<Option<ClientConfig>>)> {
    let fd_limit = check_limits(p)?;
    let epoll = Epoll::new(512).context("epoll_create1")?;
    let dhcp_socks = if p.plan.skip_dhcp {
        (None, None)
    } else {
        let (sock, proxy) = p.dhcp.open_sockets()?;
        epoll.add(&sock, TOKEN_DHCP, EventFlags::IN)?;
        if let Some(s) = &proxy {
            epoll.add(s, TOKEN_PROXY, EventFlags::IN)?;
        }
        (Some(sock), proxy)
    };

    // Client identities now, state machines at their arrival.
    let configs = p.dhcp.client_configs();
    let sim = new_sim(p, epoll, dhcp_socks, fd_limit)?;
    Ok((sim, configs))
}

/// A client count one process can simulate, with the open-files limit raised as far as it goes
/// (returned); a warning when the source addresses would overflow the server's neighbour table.
fn check_limits(p: &BootParams) -> anyhow::Result<u64> {
    if p.dhcp.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if p.dhcp.clients >= u32::MAX as usize / 2 {
        bail!("--clients is too large");
    }
    // One socket per concurrent TFTP transfer (at most one per client) plus our own.
    let fd_limit = pxe_net::raise_fd_limit()
        .unwrap_or_else(|_| pxe_net::fd_limit())
        .soft
        .unwrap_or(u64::MAX);
    let need = p.dhcp.clients as u64 + 64;
    if need > fd_limit {
        bail!(
            "--clients {} needs up to {need} open files (one TFTP socket per client at once), \
             but RLIMIT_NOFILE allows {fd_limit} (soft raised to hard): use fewer clients, or \
             run several processes",
            p.dhcp.clients
        );
    }
    // The server answers every source address through its neighbour (ARP) table, whose size
    // limit is global: past gc_thresh3 entries the kernel drops its packets ("neighbor table
    // overflow"), which would show up here as TFTP timeouts that are not the server's doing.
    if let Some(max) = std::fs::read_to_string("/proc/sys/net/ipv4/neigh/default/gc_thresh3")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        && p.sources.len().min(p.dhcp.clients) > max
    {
        eprintln!(
            "warning: {} TFTP source addresses but net.ipv4.neigh.default.gc_thresh3 is {max}: \
             the server's neighbour table will overflow and drop packets; raise \
             net.ipv4.neigh.default.gc_thresh1/2/3 (global sysctls) above the address count",
            p.sources.len().min(p.dhcp.clients)
        );
    }
    Ok(fd_limit)
}

fn new_sim(
    p: &BootParams,
    epoll: Epoll,
    dhcp_socks: (Option<UdpSocket>, Option<UdpSocket>),
    fd_limit: u64,
) -> anyhow::Result<Sim> {
    let mut stage_counts = [0usize; 8];
    stage_counts[0] = p.dhcp.clients;
    Ok(Sim {
        start: Instant::now(),
        clients: (0..p.dhcp.clients).map(|_| None).collect(),
        stage: vec![Stage::Waiting; p.dhcp.clients],
        stage_counts,
        socks: (0..p.dhcp.clients).map(|_| None).collect(),
        open_socks: 0,
        max_open: 0,
        tcp: (0..p.dhcp.clients).map(|_| None).collect(),
        open_tcp: 0,
        http: HttpStats::default(),
        http_buf: vec![0u8; HTTP_READ].into_boxed_slice(),
        armed: vec![None; p.dhcp.clients],
        timers: BinaryHeap::with_capacity(p.dhcp.clients),
        dhcp_fd: dhcp_socks.0.as_ref().map_or(-1, |s| s.as_raw_fd()),
        proxy_fd: dhcp_socks.1.as_ref().map(|s| s.as_raw_fd()),
        dhcp_server: p.dhcp.server_addr(),
        out: SendBatch::new(),
        out_proxy: SendBatch::new(),
        buf: Vec::with_capacity(1500),
        files: Files::new(p.verify_dir.clone()),
        sources: p.sources.clone(),
        source_from_lease: p.source_from_lease,
        interface: p.dhcp.interface.clone(),
        epoll,
        finished: 0,
        recorded: vec![false; p.dhcp.clients],
        tally: Tally::new(p.dhcp.clients)?,
        packets: Packets::default(),
        send_errors: ErrorCounts::new(),
        recv_errors: ErrorCounts::new(),
        bytes: 0,
        retransmits: Retransmits::default(),
        counted: vec![(0, 0, 0); p.dhcp.clients],
        unknown_client: 0,
        stray: 0,
        gro: p.gro,
        fd_limit,
        _dhcp_socks: dhcp_socks,
    })
}
