//! The programs the tests start next to them: pxe-server, dnsmasq, and the DHCP clients.
//! Each start returns a guard (or runs bounded), so nothing outlives its test.

pub mod dhcp_clients;
pub mod dnsmasq;
pub mod pxe_server;
