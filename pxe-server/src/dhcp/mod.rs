//! DHCP for PXE: a sans-IO responder (proxy and full mode), its wire helpers and the lease
//! store. No sockets here: an engine feeds datagrams to [`responder::Responder::handle`] and
//! sends what it returns.
pub mod leases;
pub mod metrics;
pub mod responder;
pub mod server;
