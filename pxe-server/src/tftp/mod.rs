//! TFTP: the sans-IO transfer session, and the service that turns a request (decoded by
//! `pxe_proto::tftp`) into a session. The engines in [`crate::engine`] drive these; nothing here
//! touches a socket.
pub mod metrics;
pub mod service;
pub mod session;

use std::path::PathBuf;

use session::SessionConfig;

/// What the TFTP service runs with (converted from `[tftp]`; the engine's sockets and threads
/// are `engine::EngineParams`).
#[derive(Debug, Clone, PartialEq)]
pub struct TftpSettings {
    /// Directory served; every request is resolved beneath it.
    pub root: PathBuf,
    /// Per-transfer limits.
    pub session: SessionConfig,
    /// Simultaneous transfers in all (clamped to the open-file limit at start).
    pub max_sessions: usize,
    /// Simultaneous transfers per client IP address.
    pub max_sessions_per_client: usize,
    /// The share (1..=100 %) of `max_sessions` that transfers whose peer has acknowledged
    /// nothing yet may hold (see `service`).
    pub unverified_share_percent: u8,
    /// The same share of `max_sessions_per_client`.
    pub unverified_share_per_client_percent: u8,
}
