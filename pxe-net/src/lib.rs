//! The socket layer of the PXE server (`pxe-server`) and of its load generator (`pxe-bench`):
//! sockets and their options, `IP_PKTINFO` and the other control messages, batched UDP I/O,
//! waiting on descriptors, and the process limits both size themselves by. The simulator must
//! not depend on the daemon, so what both need lives here, once.
//!
//! - [`socket`]: UDP and TCP sockets with the options the project uses (address and port reuse,
//!   broadcast, bound to a device, buffers forced past the sysctl caps when permitted, read
//!   back), `IP_PKTINFO` on, UDP GSO (`UDP_SEGMENT`) probed and set, UDP GRO enabled,
//!   `if_nametoindex` and `if_indextoname`.
//! - [`cmsg`]: one walker over a raw control buffer, the `IP_PKTINFO` parser and builder, the
//!   `UDP_SEGMENT` builder and the `UDP_GRO` parser, for every receive and send path (the
//!   batches here, the portable engine's `recvmsg`, the io_uring engine's `RecvMsg`/`SendMsg`).
//! - [`mmsg`]: `recvmmsg`/`sendmmsg` batches, with `IP_PKTINFO` for the DHCP server and GRO
//!   segments for the simulator; [`msg`]: the buffer of one `recvmsg` with its control
//!   messages, received by a call (portable engine) or by io_uring.
//! - [`sockaddr`]: addresses in the kernel's layouts.
//! - [`poll`]: `poll` and a level-triggered `epoll` set.
//! - [`limits`]: the open-file limit; [`cpu`]: CPU time; [`netns`]: entering a network
//!   namespace.
//!
//! # Syscall crate policy
//!
//! **rustix** is the project's syscall crate: every call it wraps safely is made through it
//! (files, memfd and seals, sendfile, rlimits, uids, sockets and socket options such as
//! `SO_RCVBUFFORCE` and `SO_REUSEPORT`, poll and epoll, clocks, setns), by this crate and by
//! the others.
//!
//! **libc** is used only for what rustix (1.1) does not wrap, and only here and in the daemon's
//! io_uring engine (`pxe-server/src/engine/uring/`, whose kernel structs the ring reads and
//! writes): `recvmmsg`; `IP_PKTINFO` (the option and its control messages); `UDP_SEGMENT` and
//! `UDP_GRO`; `SO_BINDTODEVICE` and `SO_NO_CHECK`; `sendmmsg` and `recvmsg` with control
//! messages of those kinds (rustix's ancillary buffers carry only file descriptors,
//! credentials and transmit times); `getrusage`. Every `unsafe` block states its invariant in a
//! `// SAFETY:` comment.
//!
//! Why: rustix is a well-kept safe wrapper that already covers most of what we call, so the
//! raw calls left are few and in one place. nix duplicated rustix (its socket options, `setns`,
//! `recvmsg`/`sendmsg`, `if_nametoindex`), and socket2 duplicated rustix's socket calls; both
//! are gone from the project's own dependencies (they may remain in `Cargo.lock` through
//! tokio and others).

#![deny(unsafe_op_in_unsafe_fn)]

pub mod cmsg;
pub mod cpu;
pub mod limits;
pub mod mmsg;
pub mod msg;
pub mod netns;
pub mod poll;
pub mod sockaddr;
pub mod socket;

pub use cmsg::{CmsgBuf, PktInfo};
pub use cpu::{cpu_time, thread_cpu_time};
pub use limits::{FdLimit, fd_limit, raise_fd_limit};
pub use mmsg::{ErrorCounts, RecvBatch, Retry, SendBatch, errno_name};
pub use msg::RecvMsgBuf;
pub use netns::enter_netns;
pub use poll::{Epoll, EventFlags, wait_readable};
pub use socket::*;

/// rustix's errno type, for callers that match on what a call returned.
pub use rustix::io::Errno;
