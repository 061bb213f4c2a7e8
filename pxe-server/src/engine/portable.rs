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
//! `sendmsg`, so nothing is copied or allocated per packet. A transfer whose permit the service
//! revokes (evicted for a newer request) is woken by it and ends at once. Sessions still
//! running at shutdown are dropped with their runtime.

use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pxe_net::RecvMsgBuf;
use rustix::net::{SendAncillaryBuffer, SendFlags};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::LocalSet;

use super::{EngineError, EngineParams, Listeners, bind_transfer_socket};
use crate::metrics;
use crate::tftp::metrics::TftpMetrics;
use crate::tftp::service::{RequestOutcome, SessionPermit, TftpService};
use crate::tftp::session::{Outcome, Received, Session, Transmit};

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

/// Binds the listeners ([`Listeners::bind`]) and runs `params.threads` workers on them until
/// `shutdown` is set; a bind failure is returned here.
pub fn run(
    service: Arc<TftpService>,
    params: &EngineParams,
    shutdown: Arc<AtomicBool>,
) -> Result<(), EngineError> {
    let listeners = Listeners::bind(params)?;
    run_bound(service, listeners, shutdown)
}

/// Runs one worker per entry of `listeners` until `shutdown` is set.
pub fn run_bound(
    service: Arc<TftpService>,
    listeners: Listeners,
    shutdown: Arc<AtomicBool>,
) -> Result<(), EngineError> {
    let per_worker = listeners.per_worker;
    let threads = per_worker.len();
    if let Some(first) = per_worker.first() {
        for (addr, _) in first {
            tracing::info!(listen = %addr, threads, "portable engine listening");
        }
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
    sockets: Vec<(SocketAddr, std::net::UdpSocket)>,
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
            let sock = UdpSocket::from_std(sock)?;
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
    let mut rb = RecvMsgBuf::<LISTEN_BUF>::boxed();
    let mut reply = vec![0u8; CONTROL_BUF].into_boxed_slice();
    loop {
        let (len, peer, local_ip) = match sock
            .async_io(Interest::READABLE, || {
                recv_with_local(&sock, listen_addr, &mut rb)
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
        match service.handle_request(now, peer, &rb.buf[..len], &mut reply) {
            RequestOutcome::Start { session, permit } => {
                start_transfer(&service.metrics, local_ip, session, permit);
            }
            RequestOutcome::Reply { len } => {
                let Some(bytes) = reply.get(..len) else {
                    continue;
                };
                if let Err(e) = sock.send_to(bytes, peer).await {
                    metrics::inc(&service.metrics.send_errors);
                    tracing::debug!(%peer, error = %e, "sending error reply failed");
                }
            }
            RequestOutcome::Drop => {}
        }
    }
}

/// One `recvmsg` on a listening socket: the length, the sender, and the local address the
/// datagram arrived on (from IP_PKTINFO, or the listen address itself when it is specific).
fn recv_with_local<const N: usize>(
    sock: &UdpSocket,
    listen_addr: SocketAddr,
    rb: &mut RecvMsgBuf<N>,
) -> io::Result<Option<(usize, SocketAddr, IpAddr)>> {
    let len = rb.recv(sock)?;
    let Some(peer) = rb.source() else {
        return Ok(None);
    };
    let mut local_ip = listen_addr.ip();
    if local_ip.is_unspecified()
        && let Some(info) = rb.pktinfo()
    {
        // ipi_spec_dst is the local address to answer from (for a broadcast request it is the
        // interface's address, not the broadcast address).
        local_ip = IpAddr::V4(info.local);
    }
    Ok(Some((len, peer, local_ip)))
}

/// Binds the transfer socket and spawns the transfer's task on this worker.
fn start_transfer(
    metrics: &Arc<TftpMetrics>,
    local_ip: IpAddr,
    session: Session,
    permit: SessionPermit,
) {
    let peer = session.peer();
    let sock = bind_transfer_socket(local_ip).and_then(UdpSocket::from_std);
    match sock {
        Ok(sock) => {
            tokio::task::spawn_local(transfer(Arc::clone(metrics), sock, session, permit));
        }
        Err(e) => {
            // The client retries its request; the permit is freed here.
            tracing::warn!(%peer, %local_ip, error = %e, "cannot open a transfer socket");
            metrics::inc(&metrics.sessions_aborted);
        }
    }
}

/// Drives one transfer to its end, then records its outcome and frees its permit.
async fn transfer(
    metrics: Arc<TftpMetrics>,
    sock: UdpSocket,
    mut session: Session,
    // Held until the transfer's end: dropping it frees the session slots.
    mut permit: SessionPermit,
) {
    let peer = session.peer();
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
                    Some(data) => send_data(&sock, peer, &header, data).await,
                    None => Err(io::Error::other("payload range outside the image")),
                },
                Transmit::Control { len } => match control.get(..len) {
                    Some(bytes) => sock.send_to(bytes, peer).await.map(|_| ()),
                    None => Err(io::Error::other("control length beyond the buffer")),
                },
            };
            if let Err(e) = sent {
                // The session retransmits on its timeout; a send error is only counted.
                metrics::inc(&metrics.send_errors);
                tracing::debug!(%peer, error = %e, "send failed");
            }
        }
        permit.observe(&session);
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
                            metrics::inc(&metrics.unknown_tid);
                            // Never answer an ERROR with an ERROR (two confused peers would
                            // ping-pong forever).
                            let is_error = bytes.get(..2) == Some(&[0, 5][..]);
                            if is_error {
                                continue;
                            }
                            if let Err(e) = sock.send_to(UNKNOWN_TID_ERROR, src).await {
                                metrics::inc(&metrics.send_errors);
                                tracing::debug!(%src, error = %e, "sending unknown-TID error failed");
                            }
                        }
                        Received::Malformed => metrics::inc(&metrics.malformed),
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
            // The service gave this transfer's slot to a newer request.
            () = permit.revoked() => break Outcome::Evicted,
        }
    };

    let stats = session.stats();
    metrics.record_end(outcome, stats);
    tracing::debug!(%peer, ?outcome, ?stats, "transfer ended");
}

/// Sends one DATA packet as header + payload without copying either.
async fn send_data(
    sock: &UdpSocket,
    peer: SocketAddr,
    header: &[u8; 4],
    payload: &[u8],
) -> io::Result<()> {
    sock.async_io(Interest::WRITABLE, || {
        let iov = [IoSlice::new(header), IoSlice::new(payload)];
        let mut no_control = SendAncillaryBuffer::default();
        rustix::net::sendmsg_addr(sock, &peer, &iov, &mut no_control, SendFlags::empty())
            .map_err(io::Error::from)
    })
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::bind_listener;

    #[test]
    fn unknown_tid_error_is_a_well_formed_error_5() {
        assert_eq!(&UNKNOWN_TID_ERROR[..4], &[0, 5, 0, 5]);
        assert_eq!(UNKNOWN_TID_ERROR.last(), Some(&0));
        assert_eq!(
            &UNKNOWN_TID_ERROR[4..UNKNOWN_TID_ERROR.len() - 1],
            b"Unknown transfer ID"
        );
    }

    /// The listener learns the local address of a request sent to a wildcard socket (from
    /// IP_PKTINFO, parsed by pxe-net), and takes a specific listen address as it is.
    #[test]
    fn pktinfo_reports_the_local_address() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            for listen in ["0.0.0.0:0", "127.0.0.1:0"] {
                let listen: SocketAddr = listen.parse().unwrap();
                let sock = bind_listener(listen).unwrap();
                let port = sock.local_addr().unwrap().port();
                let sock = UdpSocket::from_std(sock).unwrap();
                let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                client.send_to(b"hello", ("127.0.0.1", port)).unwrap();
                let mut rb = RecvMsgBuf::<64>::boxed();
                let got = tokio::time::timeout(
                    Duration::from_secs(5),
                    sock.async_io(Interest::READABLE, || {
                        recv_with_local(&sock, listen, &mut rb)
                    }),
                )
                .await
                .expect("datagram within 5 s")
                .unwrap()
                .expect("a source address");
                assert_eq!(got.0, 5);
                assert_eq!(got.1, client.local_addr().unwrap());
                assert_eq!(got.2, IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
                assert_eq!(&rb.buf[..5], b"hello");
            }
        });
    }
}
