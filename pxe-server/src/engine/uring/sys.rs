//! The receive buffer of the io_uring engine: pxe-net's `recvmsg` layout (a `msghdr` and
//! everything it points at, in one place that never moves while a `RecvMsg` is in flight), with
//! room for a TFTP request.

/// Bytes of a datagram a receive buffer holds. TFTP requests and ACK/ERROR packets fit easily;
/// anything longer is reported truncated (`MSG_TRUNC`) and dropped as malformed.
pub(super) const RECV_LEN: usize = 2048;

/// A `RecvMsg` target: sockaddr, one iovec over [`RECV_LEN`] bytes, a control area.
pub(super) type RecvBuf = pxe_net::msg::RecvMsgBuf<RECV_LEN>;
