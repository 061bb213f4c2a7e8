//! The programs the tests start next to them: pxe-server, dnsmasq, the DHCP clients,
//! PostgreSQL, Prometheus and a headless browser.
//! Each start returns a guard (or runs bounded), so nothing outlives its test.

pub mod chromium;
pub mod dhcp_clients;
pub mod dnsmasq;
pub mod postgres;
pub mod prometheus;
pub mod pxe_server;
