//! TFTP: the sans-IO transfer session, and the service that turns a request (decoded by
//! `pxe_proto::tftp`) into a session. The engines in [`crate::engine`] drive these; nothing here
//! touches a socket.
pub mod service;
pub mod session;
