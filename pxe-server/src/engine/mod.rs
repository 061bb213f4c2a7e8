//! The I/O engines that drive TFTP sessions: io_uring ([`uring`]) and a portable one
//! ([`portable`]). Both take the same [`TftpService`] and the same sockets from here.

pub mod portable;
pub mod uring;

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use pxe_net::Family;

use crate::tftp::service::TftpService;

/// Which TFTP engine runs (`[tftp] engine`, `serve --engine`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    Default,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    /// io_uring when the kernel allows it, the portable engine otherwise.
    #[default]
    Auto,
    Uring,
    Portable,
}

/// What an engine needs besides the service.
#[derive(Debug, Clone)]
pub struct EngineParams {
    pub listen: Vec<SocketAddr>,
    /// Worker threads (>= 1); each has its own listening socket per address (SO_REUSEPORT),
    /// so the kernel shards requests and the sessions they start across threads.
    pub threads: usize,
    pub gso: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Uring,
    Portable,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("io_uring unavailable: {0}")]
    UringUnavailable(String),
    #[error("engine I/O error: {0}")]
    Io(#[from] io::Error),
}

/// Picks the engine: `Auto` probes io_uring and falls back to the portable engine, logging why.
pub fn select(choice: EngineChoice) -> Result<EngineKind, EngineError> {
    match choice {
        EngineChoice::Portable => {
            tracing::info!(
                engine = "portable",
                reason = "selected by configuration",
                "TFTP engine"
            );
            Ok(EngineKind::Portable)
        }
        EngineChoice::Uring => match uring::probe() {
            Ok(()) => {
                tracing::info!(
                    engine = "io_uring",
                    reason = "selected by configuration",
                    "TFTP engine"
                );
                Ok(EngineKind::Uring)
            }
            Err(why) => Err(EngineError::UringUnavailable(why)),
        },
        EngineChoice::Auto => match uring::probe() {
            Ok(()) => {
                tracing::info!(
                    engine = "io_uring",
                    reason = "io_uring probe succeeded",
                    "TFTP engine"
                );
                Ok(EngineKind::Uring)
            }
            Err(why) => {
                tracing::warn!(engine = "portable", reason = %why, "TFTP engine: io_uring unavailable, using the portable engine");
                Ok(EngineKind::Portable)
            }
        },
    }
}

/// Runs the chosen engine on `listeners` until `shutdown` is set.
pub fn run(
    kind: EngineKind,
    service: Arc<TftpService>,
    params: &EngineParams,
    listeners: Listeners,
    shutdown: Arc<AtomicBool>,
) -> Result<(), EngineError> {
    match kind {
        EngineKind::Uring => uring::run_bound(service, params, listeners, shutdown),
        EngineKind::Portable => portable::run_bound(service, listeners, shutdown),
    }
}

/// The TFTP listening sockets of every worker thread: for each of `params.threads` workers,
/// one socket per listen address (SO_REUSEPORT), with that address (a port 0 resolved to
/// the port the first socket got, so that every worker shares it). Bound before the daemon
/// drops its privileges (port 69), and before any worker starts, so that a bad address
/// fails the start.
#[derive(Debug)]
pub struct Listeners {
    pub per_worker: Vec<Vec<(SocketAddr, UdpSocket)>>,
}

impl Listeners {
    pub fn bind(params: &EngineParams) -> Result<Listeners, EngineError> {
        let threads = params.threads.max(1);
        let mut per_worker: Vec<Vec<(SocketAddr, UdpSocket)>> =
            (0..threads).map(|_| Vec::new()).collect();
        for &requested in &params.listen {
            let mut addr = requested;
            for sockets in per_worker.iter_mut() {
                let sock = bind_listener(addr)?;
                if addr.port() == 0 {
                    let bound = sock.local_addr().map_err(|_| EngineError::Bind {
                        addr,
                        source: io::Error::other("bound socket has no inet address"),
                    })?;
                    addr.set_port(bound.port());
                }
                sockets.push((addr, sock));
            }
        }
        Ok(Listeners { per_worker })
    }
}

/// A listening socket for `addr`: SO_REUSEPORT (one per worker thread), IP_PKTINFO on so the
/// engine learns the local address of each request, a 4 MiB receive buffer, non-blocking.
pub fn bind_listener(addr: SocketAddr) -> Result<UdpSocket, EngineError> {
    let bind = || -> io::Result<UdpSocket> {
        let sock = pxe_net::udp_nonblocking(Family::of(&addr))?;
        pxe_net::set_reuse_address(&sock, true)?;
        pxe_net::set_reuse_port(&sock, true)?;
        // Forced (SO_RCVBUFFORCE): the listeners are bound before the daemon drops its
        // privileges, so a storm's burst of RRQs is not capped by net.core.rmem_max.
        let _ = pxe_net::force_recv_buffer(&sock, 4 << 20);
        if addr.is_ipv4() {
            pxe_net::set_pktinfo(&sock, true)?;
        }
        pxe_net::bind(&sock, addr)?;
        Ok(sock)
    };
    bind().map_err(|source| EngineError::Bind { addr, source })
}

/// A transfer socket: a fresh ephemeral port (the new TID) on the address the request arrived
/// on. Not connected, so a datagram from a wrong TID reaches us and gets its ERROR 5.
pub fn bind_transfer_socket(local: IpAddr) -> io::Result<UdpSocket> {
    let addr = SocketAddr::new(local, 0);
    let sock = pxe_net::udp_nonblocking(Family::of(&addr))?;
    let _ = pxe_net::set_send_buffer(&sock, 1 << 20);
    pxe_net::bind(&sock, addr)?;
    Ok(sock)
}
