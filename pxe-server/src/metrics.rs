//! Process-wide counters, shared by every engine thread. Relaxed atomics: they are statistics.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Counters of the TFTP service.
        #[derive(Debug, Default)]
        pub struct TftpMetrics { $($(#[$doc])* pub $name: AtomicU64,)* }

        /// A point-in-time copy of [`TftpMetrics`].
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct TftpSnapshot { $(pub $name: u64,)* }

        impl TftpMetrics {
            pub fn snapshot(&self) -> TftpSnapshot {
                TftpSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl std::fmt::Display for TftpSnapshot {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut first = true;
                $(
                    if !first { f.write_str(" ")?; }
                    first = false;
                    write!(f, "{}={}", stringify!($name), self.$name)?;
                )*
                let _ = first;
                Ok(())
            }
        }
    };
}

counters! {
    /// Datagrams received on a listening socket.
    requests_received,
    /// Read requests that started a transfer.
    sessions_started,
    sessions_completed,
    sessions_timed_out,
    /// Transfers ended by an ERROR from the client.
    sessions_client_error,
    /// Transfers we ended with an ERROR.
    sessions_aborted,
    /// Requests refused because of `max_sessions` or `max_sessions_per_client`.
    refused_limit,
    /// Write requests refused (the server is read-only).
    refused_write,
    refused_not_found,
    refused_access,
    /// Datagrams that did not parse (on listeners or session sockets).
    malformed,
    /// Datagrams on a session socket from an address other than the peer.
    unknown_tid,
    packets_sent,
    retransmitted,
    payload_bytes_sent,
    /// Send failures reported by the kernel.
    send_errors,
}

impl TftpMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
