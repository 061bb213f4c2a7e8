//! Portable engine: tokio, used where io_uring is unavailable (or chosen with `--engine portable`).
//!
//! Shape: `params.threads` worker threads, each with its own current-thread tokio runtime and its
//! own listening socket per listen address (SO_REUSEPORT, so the kernel shards requests across
//! the threads). A request that starts a transfer spawns a task on the same thread with its own
//! transfer socket (a new TID, bound to the address the request arrived on, learned from the
//! IP_PKTINFO control message). The task drives the sans-IO [`Session`]: drain `poll_transmit`,
//! then wait for a datagram or the session's next timeout.
//!
//! DATA packets go out as a two-entry iovec (4-byte header, then a slice of the image) through
//! `sendmsg`, so nothing is copied or allocated per packet. Sessions still running at shutdown
//! are dropped with their runtime.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::LocalSet;

use super::{EngineError, EngineParams, bind_listener, bind_transfer_socket};
use crate::tftp::metrics::TftpMetrics;
use crate::tftp::service::{RequestOutcome, SessionPermit, TftpService};
use crate::tftp::session::{Received, Session, Transmit};

/// How often workers look at the shutdown flag.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

/// Receive buffer of a listening socket: any UDP datagram fits, so nothing is truncated.
const LISTEN_BUF: usize = 65_536;

/// Buffer for the control packets (OACK, ERROR) a session or the service writes.
const CONTROL_BUF: usize = 2_048;

/// Receive buffer of a transfer socket: ACKs are 4 bytes, a client's ERROR a few hundred; a
/// longer datagram is truncated, which the session then treats as whatever the prefix is.
const SESSION_RECV_BUF: usize = 1_536;

/// ERROR 5 for a datagram that reached a transfer socket from the wrong address (RFC 1350 §4).
const UNKNOWN_TID_ERROR: &[u8] = b"\x00\x05\x00\x05Unknown transfer ID\x00";

/// Runs `params.threads` workers until `shutdown` is set.
///
/// All listening sockets are bound before any worker starts, so a bind failure is returned
/// here. A listen address with port 0 is resolved to the port the first socket got, so every
/// worker shares that one port.
pub fn run(
    service: Arc<TftpService>,
    params: &EngineParams,
    shutdown: Arc<AtomicBool>,
) -> Result<(), EngineError> {
    let threads = params.threads.max(1);
    let mut per_worker: Vec<Vec<(SocketAddr, socket2::Socket)>> =
        (0..threads).map(|_| Vec::new()).collect();
    for &requested in &params.listen {
        let mut addr = requested;
        for sockets in per_worker.iter_mut() {
            let sock = bind_listener(addr)?;
            if addr.port() == 0 {
                let bound = sock
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .ok_or_else(|| EngineError::Bind {
                        addr,
                        source: io::Error::other("bound socket has no inet address"),
                    })?;
                addr.set_port(bound.port());
            }
            sockets.push((addr, sock));
        }
        tracing::info!(listen = %addr, threads, "portable engine listening");
    }

    // Stops every worker when the caller asks, or when one worker fails.
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::with_capacity(threads);
    for (index, sockets) in per_worker.into_iter().enumerate() {
        let service = Arc::clone(&service);
        let shutdown = Arc::clone(&shutdown);
        let stop = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name(format!("tftp-portable-{index}"))
            .spawn(move || {
                let result = worker(service, sockets, &shutdown, &stop);
                if result.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                result
            })?;
        handles.push(handle);
    }

    let mut first_error = None;
    for handle in handles {
        let result = handle
            .join()
            .unwrap_or_else(|_| Err(EngineError::Io(io::Error::other("worker thread panicked"))));
        if let Err(e) = result {
            tracing::error!(error = %e, "portable engine worker failed");
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// One worker thread: a current-thread runtime with a listener task per address and a task per
/// running transfer.
fn worker(
    service: Arc<TftpService>,
    sockets: Vec<(SocketAddr, socket2::Socket)>,
    shutdown: &AtomicBool,
    stop: &AtomicBool,
) -> Result<(), EngineError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let local = LocalSet::new();
    let result = local.block_on(&runtime, async {
        for (addr, sock) in sockets {
            let std_sock: std::net::UdpSocket = sock.into();
            let sock = UdpSocket::from_std(std_sock)?;
            tokio::task::spawn_local(listen(Arc::clone(&service), addr, sock));
        }
        while !shutdown.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(SHUTDOWN_POLL).await;
        }
        Ok::<(), EngineError>(())
    });
    // Dropping the LocalSet drops the listener and every running transfer.
    drop(local);
    result
}

/// Receives requests on one listening socket and starts transfers for them.
async fn listen(service: Arc<TftpService>, listen_addr: SocketAddr, sock: UdpSocket) {
    let mut buf = vec![0u8; LISTEN_BUF].into_boxed_slice();
    let mut reply = vec![0u8; CONTROL_BUF].into_boxed_slice();
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
    loop {
        let (len, peer, local_ip) = match sock
            .async_io(Interest::READABLE, || {
                recv_with_local(&sock, listen_addr, &mut buf, &mut cmsg)
            })
            .await
        {
            Ok(Some(got)) => got,
            // A datagram without a usable source address: nothing to answer.
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(listen = %listen_addr, error = %e, "receive on listening socket failed");
                // Never spin on a persistent error.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let now = Instant::now();
        match service.handle_request(now, peer, &buf[..len], &mut reply) {
            RequestOutcome::Start { session, permit } => {
                start_transfer(&service.metrics, local_ip, session, permit);
            }
            RequestOutcome::Reply { len } => {
                let Some(bytes) = reply.get(..len) else {
                    continue;
                };
                if let Err(e) = sock.send_to(bytes, peer).await {
                    TftpMetrics::add(&service.metrics.send_errors, 1);
                    tracing::debug!(%peer, error = %e, "sending error reply failed");
                }
            }
            RequestOutcome::Drop => {}
        }
    }
}

/// One `recvmsg` on a listening socket: the length, the sender, and the local address the
/// datagram arrived on (from IP_PKTINFO, or the listen address itself when it is specific).
fn recv_with_local(
    sock: &UdpSocket,
    listen_addr: SocketAddr,
    buf: &mut [u8],
    cmsg: &mut Vec<u8>,
) -> io::Result<Option<(usize, SocketAddr, IpAddr)>> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = nix::sys::socket::recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(cmsg),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let len = msg.bytes;
    let Some(peer) = msg.address.as_ref().and_then(to_socket_addr) else {
        return Ok(None);
    };
    let mut local_ip = listen_addr.ip();
    if local_ip.is_unspecified()
        && let Ok(cmsgs) = msg.cmsgs()
    {
        for c in cmsgs {
            if let ControlMessageOwned::Ipv4PacketInfo(info) = c {
                // ipi_spec_dst is the local address to answer from (for a broadcast request it
                // is the interface's address, not the broadcast address).
                local_ip = IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr)));
            }
        }
    }
    Ok(Some((len, peer, local_ip)))
}

fn to_socket_addr(ss: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = ss.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    if let Some(v6) = ss.as_sockaddr_in6() {
        return Some(SocketAddr::V6(SocketAddrV6::from(*v6)));
    }
    None
}

/// Binds the transfer socket and spawns the transfer's task on this worker.
fn start_transfer(
    metrics: &Arc<TftpMetrics>,
    local_ip: IpAddr,
    session: Session,
    permit: SessionPermit,
) {
    let peer = session.peer();
    let sock = bind_transfer_socket(local_ip)
        .map(std::net::UdpSocket::from)
        .and_then(UdpSocket::from_std);
    match sock {
        Ok(sock) => {
            tokio::task::spawn_local(transfer(Arc::clone(metrics), sock, session, permit));
        }
        Err(e) => {
            // The client retries its request; the permit is freed here.
            tracing::warn!(%peer, %local_ip, error = %e, "cannot open a transfer socket");
            TftpMetrics::add(&metrics.sessions_aborted, 1);
        }
    }
}

/// Drives one transfer to its end, then records its outcome and frees its permit.
async fn transfer(
    metrics: Arc<TftpMetrics>,
    sock: UdpSocket,
    mut session: Session,
    // Held until the transfer's end: dropping it frees the session slots.
    _permit: SessionPermit,
) {
    let peer = session.peer();
    let peer_ss = SockaddrStorage::from(peer);
    // Both buffers are allocated once per transfer, never per packet.
    let mut control = vec![0u8; CONTROL_BUF].into_boxed_slice();
    let mut recv_buf = vec![0u8; SESSION_RECV_BUF].into_boxed_slice();
    let timer = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(timer);

    let outcome = loop {
        let now = Instant::now();
        while let Some(t) = session.poll_transmit(now, &mut control) {
            let sent = match t {
                Transmit::Data { header, payload } => match session.payload().get(payload) {
                    Some(data) => send_data(&sock, &peer_ss, &header, data).await,
                    None => Err(io::Error::other("payload range outside the image")),
                },
                Transmit::Control { len } => match control.get(..len) {
                    Some(bytes) => sock.send_to(bytes, peer).await.map(|_| ()),
                    None => Err(io::Error::other("control length beyond the buffer")),
                },
            };
            if let Err(e) = sent {
                // The session retransmits on its timeout; a send error is only counted.
                TftpMetrics::add(&metrics.send_errors, 1);
                tracing::debug!(%peer, error = %e, "send failed");
            }
        }
        if let Some(outcome) = session.outcome() {
            break outcome;
        }
        let deadline = session.poll_timeout();
        if let Some(d) = deadline {
            timer.as_mut().reset(tokio::time::Instant::from_std(d));
        }
        tokio::select! {
            r = sock.recv_from(&mut recv_buf) => match r {
                Ok((n, src)) => {
                    let bytes = recv_buf.get(..n).unwrap_or(&[]);
                    match session.handle_datagram(Instant::now(), src, bytes) {
                        Received::ForeignTid => {
                            TftpMetrics::add(&metrics.unknown_tid, 1);
                            // Never answer an ERROR with an ERROR (two confused peers would
                            // ping-pong forever).
                            let is_error = bytes.get(..2) == Some(&[0, 5][..]);
                            if is_error {
                                continue;
                            }
                            if let Err(e) = sock.send_to(UNKNOWN_TID_ERROR, src).await {
                                TftpMetrics::add(&metrics.send_errors, 1);
                                tracing::debug!(%src, error = %e, "sending unknown-TID error failed");
                            }
                        }
                        Received::Malformed => TftpMetrics::add(&metrics.malformed, 1),
                        Received::Progress | Received::Ignored => {}
                    }
                }
                Err(e) => {
                    // E.g. an ICMP error reported on the socket; the timeout logic copes.
                    tracing::debug!(%peer, error = %e, "receive on transfer socket failed");
                }
            },
            () = &mut timer, if deadline.is_some() => {
                session.handle_timeout(Instant::now());
            }
        }
    };

    let stats = session.stats();
    metrics.record_end(outcome, stats);
    tracing::debug!(%peer, ?outcome, ?stats, "transfer ended");
}

/// Sends one DATA packet as header + payload without copying either.
async fn send_data(
    sock: &UdpSocket,
    peer: &SockaddrStorage,
    header: &[u8; 4],
    payload: &[u8],
) -> io::Result<()> {
    sock.async_io(Interest::WRITABLE, || {
        let iov = [IoSlice::new(header), IoSlice::new(payload)];
        nix::sys::socket::sendmsg(sock.as_raw_fd(), &iov, &[], MsgFlags::empty(), Some(peer))
            .map_err(io::Error::from)
    })
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_tid_error_is_a_well_formed_error_5() {
        assert_eq!(&UNKNOWN_TID_ERROR[..4], &[0, 5, 0, 5]);
        assert_eq!(UNKNOWN_TID_ERROR.last(), Some(&0));
        assert_eq!(
            &UNKNOWN_TID_ERROR[4..UNKNOWN_TID_ERROR.len() - 1],
            b"Unknown transfer ID"
        );
    }

    #[test]
    fn socket_addresses_convert_both_families() {
        let v4: SocketAddr = "10.77.1.2:4000".parse().unwrap();
        let v6: SocketAddr = "[fe80::1]:69".parse().unwrap();
        assert_eq!(to_socket_addr(&SockaddrStorage::from(v4)), Some(v4));
        assert_eq!(to_socket_addr(&SockaddrStorage::from(v6)), Some(v6));
    }

    /// The listener learns the local address of a request sent to a wildcard socket.
    #[test]
    fn pktinfo_reports_the_local_address() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listen: SocketAddr = "0.0.0.0:0".parse().unwrap();
            let sock = bind_listener(listen).unwrap();
            let port = sock.local_addr().unwrap().as_socket().unwrap().port();
            let sock = UdpSocket::from_std(sock.into()).unwrap();
            let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            client.send_to(b"hello", ("127.0.0.1", port)).unwrap();
            let mut buf = [0u8; 64];
            let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
            let got = tokio::time::timeout(
                Duration::from_secs(5),
                sock.async_io(Interest::READABLE, || {
                    recv_with_local(&sock, listen, &mut buf, &mut cmsg)
                }),
            )
            .await
            .expect("datagram within 5 s")
            .unwrap()
            .expect("a source address");
            assert_eq!(got.0, 5);
            assert_eq!(got.1, client.local_addr().unwrap());
            assert_eq!(got.2, IpAddr::V4(Ipv4Addr::LOCALHOST));
            assert_eq!(&buf[..5], b"hello");
        });
    }
}
