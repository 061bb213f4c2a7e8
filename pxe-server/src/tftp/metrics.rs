//! The TFTP service's counters, shared by every engine thread.

use super::session::{Outcome, SessionStats};
use crate::metrics::{self, counters};

counters! {
    TftpMetrics, TftpSnapshot, "TFTP service";
    /// Datagrams received on a listening socket.
    requests_received,
    /// Read requests that started a transfer.
    sessions_started,
    /// Transfers whose client asked for a `timeout` above `max_client_timeout_ms` and was
    /// granted the cap (curl's default request of 6 s is one with the default cap of 5 s).
    timeout_capped,
    sessions_completed,
    sessions_timed_out,
    /// Of `sessions_timed_out`: the peer never acknowledged anything (no ACK of the OACK or of
    /// DATA 1 within `unverified_retries` / `unverified_lifetime_ms`): a spoofed request, or a
    /// client that went away at once.
    unverified_expired,
    /// Transfers ended because the service gave their slot to a newer request (see
    /// `evicted_unverified`, `evicted_finished`).
    sessions_evicted,
    /// Transfers ended by an ERROR from the client.
    sessions_client_error,
    /// Transfers we ended with an ERROR.
    sessions_aborted,
    /// Requests refused because of `max_sessions` or `max_sessions_per_client`.
    refused_limit,
    /// Unverified transfers (nothing acknowledged yet) ended to make room for a newer request:
    /// the oldest one when the unverified share or the table was full, or the client's oldest
    /// when its own share was.
    evicted_unverified,
    /// Transfers whose last block was out, ended for a new request from the same client (or,
    /// with the table full, the oldest such): the client has moved on to its next file.
    evicted_finished,
    /// Retransmitted requests from a client whose transfer (same address and port) is running:
    /// ignored, that transfer answers them.
    duplicate_requests,
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

impl TftpSnapshot {
    /// Transfers running at the snapshot: started and not yet ended (every [`Outcome`]).
    pub fn running(&self) -> u64 {
        let ended = self.sessions_completed
            + self.sessions_timed_out
            + self.sessions_client_error
            + self.sessions_aborted
            + self.sessions_evicted;
        self.sessions_started.saturating_sub(ended)
    }
}

impl TftpMetrics {
    /// Counts how a transfer ended and what it sent; both engines call this once per session.
    pub fn record_end(&self, outcome: Outcome, stats: SessionStats) {
        let counter = match outcome {
            Outcome::Completed => &self.sessions_completed,
            Outcome::TimedOut => &self.sessions_timed_out,
            Outcome::ClientError(_) => &self.sessions_client_error,
            Outcome::Aborted(_) => &self.sessions_aborted,
            Outcome::Evicted => &self.sessions_evicted,
        };
        metrics::inc(counter);
        if outcome == Outcome::TimedOut && !stats.acknowledged {
            metrics::inc(&self.unverified_expired);
        }
        metrics::add(&self.packets_sent, stats.packets_sent);
        metrics::add(&self.retransmitted, stats.retransmitted);
        metrics::add(&self.payload_bytes_sent, stats.payload_bytes_sent);
    }
}
