//! TFTP: the wire codec, the sans-IO transfer session, and the service that turns a request
//! into a session. The engines in [`crate::engine`] drive these; nothing here touches a socket.
pub mod packet;
pub mod service;
pub mod session;
